//! Request bodies collected before the application runs, so that a client that trickles its
//! body holds no thread: between arrivals the connection waits in epoll like an idle one, and
//! the application is called once the body is complete (docs/http-policy.md, "Request
//! bodies"). A body lives in memory up to `memory_limit` (and while all in-memory bodies
//! together stay under `MEMORY_TOTAL`), beyond that in an unlinked temporary file; the bytes
//! in temporary files across the server are bounded by `spool_limit`.
//!
//! The invariant kept here: every byte a `BufferedBody` holds is counted in `BodyGauges`
//! from the moment it is stored until the body is dropped, so the totals the limits are
//! checked against (and `server.stats` reports) are exact.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::body::{Body, BodyError};
use crate::http::request::RequestHead;

/// All in-memory bodies together stay under this; beyond it, bodies go to temporary files.
pub const MEMORY_TOTAL: u64 = 256 * 1024 * 1024;

/// Decoded bytes written to a temporary file at a time.
const SPOOL_CHUNK: usize = 256 * 1024;

/// How bodies are collected (the server's settings).
#[derive(Debug, Clone, Copy)]
pub struct IntakeRules {
    /// A body stays in memory up to this many bytes.
    pub memory_limit: usize,
    /// Bytes in temporary files across the server; 0: bodies beyond `memory_limit` are refused.
    pub spool_limit: u64,
    /// The slowest a body may arrive, in bytes per second after `grace` (0: no minimum).
    pub min_rate: u64,
    /// How long a body may take before `min_rate` applies (the server's `timeout`).
    pub grace: Duration,
}

/// Server-wide figures of collected bodies, for the limits and `server.stats`.
#[derive(Debug, Default)]
pub struct BodyGauges {
    /// Bytes of bodies held in memory.
    pub in_memory: AtomicU64,
    /// Bytes of bodies in temporary files.
    pub spooled: AtomicU64,
    /// Connections whose body is being collected.
    pub collecting: AtomicU64,
    /// Bodies refused because the spool was full.
    pub spool_refusals: AtomicU64,
}

/// Why a body could not be collected.
#[derive(Debug)]
pub enum IntakeError {
    Body(BodyError),
    /// Temporary files hold `spool_limit` bytes already: try again later.
    SpoolFull,
    /// The body alone is larger than `spool_limit` (or there is no spool): it can never fit.
    TooLargeToSpool,
    /// The temporary file could not be created or written.
    Spool,
}

impl From<BodyError> for IntakeError {
    fn from(e: BodyError) -> Self {
        IntakeError::Body(e)
    }
}

/// Where a buffered body's bytes are.
#[derive(Debug)]
enum Stored {
    Memory(Vec<u8>),
    File { file: File, len: u64 },
}

/// A complete (or growing) request body held by the server: what `wsgi.input` reads when
/// the body was collected before the application ran.
#[derive(Debug)]
pub struct BufferedBody {
    stored: Stored,
    read_pos: u64,
    gauges: Arc<BodyGauges>,
    /// The body went past `max_request_body_size` here: what was collected is read, then
    /// the read fails as a streamed one would (cheroot's `MaxSizeExceeded`, which CherryPy
    /// turns into its own 413). Holds the framing state of the unread rest.
    over_limit: Option<Body>,
}

impl BufferedBody {
    fn new(gauges: Arc<BodyGauges>) -> BufferedBody {
        BufferedBody {
            stored: Stored::Memory(Vec::new()),
            read_pos: 0,
            gauges,
            over_limit: None,
        }
    }

    /// Whether reading ends in a "too large" failure instead of the end of the body.
    pub fn is_over_limit(&self) -> bool {
        self.over_limit.is_some()
    }

    /// The framing state of the part of the body that was never collected.
    pub fn take_unread_rest(&mut self) -> Option<Body> {
        self.over_limit.take()
    }

    pub fn len(&self) -> u64 {
        match &self.stored {
            Stored::Memory(bytes) => bytes.len() as u64,
            Stored::File { len, .. } => *len,
        }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> u64 {
        self.len() - self.read_pos
    }

    pub fn is_spooled(&self) -> bool {
        matches!(self.stored, Stored::File { .. })
    }

    /// The unread bytes, when the body is in memory (for a copy straight into a Python object).
    pub fn unread_in_memory(&self) -> Option<&[u8]> {
        match &self.stored {
            Stored::Memory(bytes) => Some(&bytes[self.read_pos as usize..]),
            Stored::File { .. } => None,
        }
    }

    /// Marks `n` unread bytes as read.
    pub fn advance(&mut self, n: usize) {
        self.read_pos = (self.read_pos + n as u64).min(self.len());
    }

    /// Copies up to `max` unread bytes into `out`. 0 only at the end of the body.
    pub fn read(&mut self, out: &mut Vec<u8>, max: usize) -> io::Result<usize> {
        let want = self.remaining().min(max as u64) as usize;
        if want == 0 {
            return Ok(0);
        }
        match &self.stored {
            Stored::Memory(bytes) => {
                let start = self.read_pos as usize;
                out.extend_from_slice(&bytes[start..start + want]);
            }
            Stored::File { file, .. } => {
                let start = out.len();
                out.resize(start + want, 0);
                file.read_exact_at(&mut out[start..], self.read_pos)?;
            }
        }
        self.read_pos += want as u64;
        Ok(want)
    }

    /// Reads up to `buf.len()` unread bytes into `buf` (a spooled body's reads).
    pub fn read_into(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = self.remaining().min(buf.len() as u64) as usize;
        match &self.stored {
            Stored::Memory(bytes) => {
                let start = self.read_pos as usize;
                buf[..want].copy_from_slice(&bytes[start..start + want]);
            }
            Stored::File { file, .. } => file.read_exact_at(&mut buf[..want], self.read_pos)?,
        }
        self.read_pos += want as u64;
        Ok(want)
    }

    /// How many more bytes may go into memory now.
    fn memory_room(&self, rules: &IntakeRules) -> usize {
        let Stored::Memory(bytes) = &self.stored else {
            return 0;
        };
        let own = rules.memory_limit.saturating_sub(bytes.len());
        let shared = MEMORY_TOTAL.saturating_sub(self.gauges.in_memory.load(Ordering::Relaxed));
        own.min(usize::try_from(shared).unwrap_or(usize::MAX))
    }

    /// Decodes what `input` holds of `body` into memory, as far as there is room.
    fn take_into_memory(
        &mut self,
        body: &mut Body,
        input: &[u8],
        room: usize,
        max_body: u64,
    ) -> Result<usize, IntakeError> {
        let Stored::Memory(bytes) = &mut self.stored else {
            return Ok(0);
        };
        let pumped = body.pump(input, Some(bytes), room, max_body)?;
        self.gauges
            .in_memory
            .fetch_add(pumped.produced as u64, Ordering::Relaxed);
        Ok(pumped.consumed)
    }

    /// Moves the body from memory to a new temporary file.
    fn spill(&mut self, rules: &IntakeRules) -> Result<(), IntakeError> {
        let Stored::Memory(bytes) = &self.stored else {
            return Ok(());
        };
        let len = bytes.len() as u64;
        self.reserve_spool(len, len, rules)?;
        let written =
            tempfile::tempfile().and_then(|mut file| file.write_all(bytes).map(|()| file));
        match written {
            Ok(file) => {
                self.gauges.in_memory.fetch_sub(len, Ordering::Relaxed);
                self.stored = Stored::File { file, len };
                Ok(())
            }
            Err(_) => {
                self.gauges.spooled.fetch_sub(len, Ordering::Relaxed);
                Err(IntakeError::Spool)
            }
        }
    }

    /// Counts `n` more spooled bytes (making this body `body_total` bytes long), unless the
    /// spool would pass its limit.
    fn reserve_spool(
        &self,
        body_total: u64,
        n: u64,
        rules: &IntakeRules,
    ) -> Result<(), IntakeError> {
        if body_total > rules.spool_limit {
            return Err(IntakeError::TooLargeToSpool);
        }
        let spooled = &self.gauges.spooled;
        spooled
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |total| {
                (total + n <= rules.spool_limit).then_some(total + n)
            })
            .map(|_| ())
            .map_err(|_| {
                self.gauges.spool_refusals.fetch_add(1, Ordering::Relaxed);
                IntakeError::SpoolFull
            })
    }

    /// Decodes what `input` holds of `body` into the temporary file.
    fn take_into_file(
        &mut self,
        body: &mut Body,
        input: &[u8],
        max_body: u64,
        rules: &IntakeRules,
    ) -> Result<usize, IntakeError> {
        let mut decoded = Vec::new();
        let pumped = body.pump(input, Some(&mut decoded), SPOOL_CHUNK, max_body)?;
        let n = decoded.len() as u64;
        if n == 0 {
            return Ok(pumped.consumed);
        }
        self.reserve_spool(self.len() + n, n, rules)?;
        let Stored::File { file, len } = &mut self.stored else {
            return Ok(pumped.consumed);
        };
        if file.write_all(&decoded).is_err() {
            self.gauges.spooled.fetch_sub(n, Ordering::Relaxed);
            return Err(IntakeError::Spool);
        }
        *len += n;
        Ok(pumped.consumed)
    }
}

impl Drop for BufferedBody {
    fn drop(&mut self) {
        let (gauge, n) = match &self.stored {
            Stored::Memory(bytes) => (&self.gauges.in_memory, bytes.len() as u64),
            Stored::File { len, .. } => (&self.gauges.spooled, *len),
        };
        gauge.fetch_sub(n, Ordering::Relaxed);
    }
}

/// A request whose head is complete and whose body is still arriving.
#[derive(Debug)]
pub struct Collecting {
    pub head: RequestHead,
    /// A copy of the head's bytes (the connection's buffer is reused for the body).
    pub head_bytes: Vec<u8>,
    body: Body,
    buffered: BufferedBody,
    started: Instant,
    rules: IntakeRules,
    _counted: CountedAsCollecting,
}

/// Counts a connection in `BodyGauges::collecting` while it exists.
#[derive(Debug)]
struct CountedAsCollecting(Arc<BodyGauges>);

impl Drop for CountedAsCollecting {
    fn drop(&mut self) {
        self.0.collecting.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Collecting {
    pub fn new(
        head: RequestHead,
        head_bytes: Vec<u8>,
        body: Body,
        rules: IntakeRules,
        gauges: &Arc<BodyGauges>,
    ) -> Collecting {
        gauges.collecting.fetch_add(1, Ordering::Relaxed);
        Collecting {
            head,
            head_bytes,
            body,
            buffered: BufferedBody::new(Arc::clone(gauges)),
            started: Instant::now(),
            rules,
            _counted: CountedAsCollecting(Arc::clone(gauges)),
        }
    }

    pub fn is_complete(&self) -> bool {
        self.body.is_done()
    }

    /// The body went past `max_request_body_size`: the application gets what was collected
    /// and a failing read after it.
    pub fn finish_over_limit(self) -> (RequestHead, Vec<u8>, BufferedBody) {
        let Collecting {
            head,
            head_bytes,
            body,
            mut buffered,
            ..
        } = self;
        buffered.over_limit = Some(body);
        (head, head_bytes, buffered)
    }

    /// When the body must be complete: `grace` after it started, plus one second for every
    /// `min_rate` bytes received (so a steady upload of any size is never cut, and one byte
    /// per `timeout` cannot hold the connection forever).
    pub fn deadline(&self) -> Instant {
        complete_by(self.started, &self.rules, self.buffered.len())
    }

    /// Decodes body bytes from `input` into the buffer; returns how many input bytes were
    /// used (framing included). Stops at the end of the body.
    pub fn take(&mut self, input: &[u8], max_body: u64) -> Result<usize, IntakeError> {
        let mut used = 0;
        while used < input.len() && !self.body.is_done() {
            let rest = &input[used..];
            let step = if self.buffered.is_spooled() {
                self.buffered
                    .take_into_file(&mut self.body, rest, max_body, &self.rules)?
            } else {
                match self.buffered.memory_room(&self.rules) {
                    0 => {
                        self.buffered.spill(&self.rules)?;
                        continue;
                    }
                    room => self
                        .buffered
                        .take_into_memory(&mut self.body, rest, room, max_body)?,
                }
            };
            if step == 0 {
                break; // a partial chunk header: more input is needed
            }
            used += step;
        }
        Ok(used)
    }

    /// Where a Content-Length body may be read straight from the socket: the memory buffer
    /// and how many bytes it may take now (0: not possible).
    pub fn direct_target(&mut self) -> Option<(&mut Vec<u8>, usize)> {
        let Body::Length { remaining } = self.body else {
            return None;
        };
        let room = self.buffered.memory_room(&self.rules);
        let want = room.min(usize::try_from(remaining).unwrap_or(usize::MAX));
        match &mut self.buffered.stored {
            Stored::Memory(bytes) if want > 0 => Some((bytes, want)),
            _ => None,
        }
    }

    /// Records `n` bytes read straight into the memory buffer (see `direct_target`).
    pub fn took_direct(&mut self, n: usize) {
        self.buffered
            .gauges
            .in_memory
            .fetch_add(n as u64, Ordering::Relaxed);
        if let Body::Length { remaining } = &mut self.body {
            *remaining -= n as u64;
            if *remaining == 0 {
                self.body = Body::Done;
            }
        }
    }

    /// The collected body and the head it belongs to.
    pub fn finish(self) -> (RequestHead, Vec<u8>, BufferedBody) {
        let Collecting {
            head,
            head_bytes,
            buffered,
            ..
        } = self;
        (head, head_bytes, buffered)
    }
}

/// A request body arriving already de-framed (an HTTP/2 stream's DATA), collected before the
/// application runs under the same bounds as `Collecting`: memory, then a temporary file.
#[derive(Debug)]
pub struct Arriving {
    buffered: BufferedBody,
    started: Instant,
    rules: IntakeRules,
    _counted: CountedAsCollecting,
}

impl Arriving {
    pub fn new(rules: IntakeRules, gauges: &Arc<BodyGauges>) -> Arriving {
        gauges.collecting.fetch_add(1, Ordering::Relaxed);
        Arriving {
            buffered: BufferedBody::new(Arc::clone(gauges)),
            started: Instant::now(),
            rules,
            _counted: CountedAsCollecting(Arc::clone(gauges)),
        }
    }

    /// Body bytes received so far.
    pub fn len(&self) -> u64 {
        self.buffered.len()
    }

    /// Adds `data` to the body: in memory while there is room, else in the temporary file.
    pub fn append(&mut self, data: &[u8]) -> Result<(), IntakeError> {
        let mut whole = Body::Length {
            remaining: data.len() as u64,
        };
        let mut used = 0;
        while used < data.len() {
            let rest = &data[used..];
            used += if self.buffered.is_spooled() {
                self.buffered
                    .take_into_file(&mut whole, rest, 0, &self.rules)?
            } else {
                match self.buffered.memory_room(&self.rules) {
                    0 => {
                        self.buffered.spill(&self.rules)?;
                        continue;
                    }
                    room => self.buffered.take_into_memory(&mut whole, rest, room, 0)?,
                }
            };
        }
        Ok(())
    }

    /// When the body must be complete (as `Collecting::deadline`).
    pub fn deadline(&self) -> Instant {
        complete_by(self.started, &self.rules, self.buffered.len())
    }

    pub fn finish(self) -> BufferedBody {
        self.buffered
    }
}

/// `grace` after a body started, plus one second for every `min_rate` bytes received: a
/// steady upload of any size is never cut, and one byte per `timeout` cannot hold a
/// connection forever.
fn complete_by(started: Instant, rules: &IntakeRules, received: u64) -> Instant {
    let mut deadline = started + rules.grace;
    if rules.min_rate > 0 {
        let earned = received as f64 / rules.min_rate as f64;
        deadline += Duration::from_secs_f64(earned.min(1e9));
    } else {
        deadline += Duration::from_secs(1_000_000_000);
    }
    deadline
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::request::{BodyFraming, Limits};

    fn rules(memory_limit: usize, spool_limit: u64) -> IntakeRules {
        IntakeRules {
            memory_limit,
            spool_limit,
            min_rate: 500,
            grace: Duration::from_secs(10),
        }
    }

    fn collecting(
        framing: BodyFraming,
        rules: IntakeRules,
        gauges: &Arc<BodyGauges>,
    ) -> Collecting {
        let raw = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n";
        let head = crate::http::request::parse_head(raw, Limits { max_head: 0 })
            .unwrap()
            .unwrap();
        Collecting::new(head, Vec::new(), Body::for_framing(framing), rules, gauges)
    }

    fn read_all(body: &mut BufferedBody) -> Vec<u8> {
        let mut out = Vec::new();
        while body.read(&mut out, 7).unwrap() > 0 {}
        out
    }

    #[test]
    fn small_body_stays_in_memory_and_is_counted() {
        let gauges = Arc::new(BodyGauges::default());
        let mut c = collecting(BodyFraming::Length(5), rules(100, 1000), &gauges);
        assert_eq!(gauges.collecting.load(Ordering::Relaxed), 1);
        assert_eq!(c.take(b"hel", 0).unwrap(), 3);
        assert_eq!(c.take(b"loGET", 0).unwrap(), 2);
        assert!(c.is_complete());
        let (_, _, mut body) = c.finish();
        assert_eq!(gauges.collecting.load(Ordering::Relaxed), 0);
        assert_eq!(gauges.in_memory.load(Ordering::Relaxed), 5);
        assert!(!body.is_spooled());
        assert_eq!(read_all(&mut body), b"hello");
        drop(body);
        assert_eq!(gauges.in_memory.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn large_chunked_body_spills_to_a_file() {
        let gauges = Arc::new(BodyGauges::default());
        let mut c = collecting(BodyFraming::Chunked, rules(4, 1000), &gauges);
        let input = b"3\r\nabc\r\n5\r\ndefgh\r\n0\r\n\r\n";
        let mut used = 0;
        while !c.is_complete() {
            used += c.take(&input[used..], 0).unwrap();
        }
        assert_eq!(used, input.len());
        let (_, _, mut body) = c.finish();
        assert!(body.is_spooled());
        assert_eq!(gauges.spooled.load(Ordering::Relaxed), 8);
        assert_eq!(gauges.in_memory.load(Ordering::Relaxed), 0);
        assert_eq!(read_all(&mut body), b"abcdefgh");
        drop(body);
        assert_eq!(gauges.spooled.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn the_spool_limit_is_shared() {
        let gauges = Arc::new(BodyGauges::default());
        let mut first = collecting(BodyFraming::Length(8), rules(2, 10), &gauges);
        first.take(b"12345678", 0).unwrap();
        assert!(first.is_complete());
        let mut second = collecting(BodyFraming::Length(8), rules(2, 10), &gauges);
        assert!(matches!(
            second.take(b"12345678", 0),
            Err(IntakeError::SpoolFull)
        ));
        assert_eq!(gauges.spool_refusals.load(Ordering::Relaxed), 1);
        drop(first);
        let mut third = collecting(BodyFraming::Length(8), rules(2, 10), &gauges);
        third.take(b"12345678", 0).unwrap();
        assert!(third.is_complete());
        let mut alone = collecting(BodyFraming::Length(20), rules(2, 10), &gauges);
        assert!(matches!(
            alone.take(&[b'x'; 20], 0),
            Err(IntakeError::TooLargeToSpool) | Err(IntakeError::SpoolFull)
        ));
    }

    #[test]
    fn no_spool_refuses_what_memory_cannot_hold() {
        let gauges = Arc::new(BodyGauges::default());
        let mut c = collecting(BodyFraming::Length(8), rules(4, 0), &gauges);
        assert!(matches!(
            c.take(b"12345678", 0),
            Err(IntakeError::TooLargeToSpool)
        ));
    }

    #[test]
    fn deadline_grows_with_the_bytes_received() {
        let gauges = Arc::new(BodyGauges::default());
        let mut c = collecting(BodyFraming::Length(2000), rules(4096, 0), &gauges);
        let first = c.deadline();
        c.take(&[b'x'; 1000], 0).unwrap();
        assert_eq!(c.deadline() - first, Duration::from_secs(2));
    }
}
