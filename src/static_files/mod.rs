//! Static files from the engine (`--static PREFIX=DIR`, `server.static`): a request whose path
//! starts with a mount's prefix is answered here, by the worker, without the GIL and without
//! the application. The HTTP rules are pure functions in `http/static_files/`; this module
//! finds the file (`cache.rs` over `open.rs`), writes the head with `http/response.rs` and
//! sends the body: small files are copied from memory into the response buffer (one write
//! with the head, held for a batch write like an application's small response), larger ones
//! go by sendfile(2) on plain connections, the part the socket does not take at once from the
//! connection's backlog (written from the event loop, holding no worker), and are copied
//! through TLS.
//!
//! What is decided is the same for both protocols: `answer` turns a request into an `Answer`,
//! whose `head` (status, header lines, framing) and `into_body` (where the bytes come from)
//! HTTP/1.x writes here and HTTP/2 (http2/static_files.rs) sends as frames.

mod cache;
mod mounts;
mod open;

pub use mounts::Mounts;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use crate::access_log;
use crate::conn::{Body, Conn, DRAIN_LIMIT, HIGH_WATER};
use crate::context::Context;
use crate::http::forwarded;
use crate::http::request::{BodyFraming, RequestHead, Version};
use crate::http::response::{self, AppHead, BodyFrame, ConnHeader};
use crate::http::static_files::conditional::Validators;
use crate::http::static_files::negotiate::{self, Coding};
use crate::http::static_files::range::ByteRange;
use crate::http::static_files::{self as rules, Decision, Preconditions};
use crate::net::listener::Peer;
use crate::wsgi::{Finished, Placement};
use cache::Found;
use mounts::Mount;

/// Bodies up to this size are copied into the response buffer and written with the head.
pub const SMALL_BODY: u64 = cache::MAX_BODY;
/// Read size when copying a file through TLS.
const COPY_CHUNK: usize = 64 * 1024;
const NOT_FOUND: &[u8] = b"Not Found";
const NOT_ALLOWED: &[u8] = b"Method Not Allowed";

/// What the request gets, decided the same way for every protocol.
pub enum Answer {
    File {
        file: Found,
        decision: Decision,
        coding: Option<Coding>,
        /// The type of the file named (a precompressed sibling is sent with it).
        content_type: Arc<str>,
    },
    NotFound,
    MethodNotAllowed,
}

/// Answers a request that `Mounts::covers`. The connection comes back with the verdict on
/// reusing it, as from `wsgi::serve`; bytes still to write are left in `out`. Not inlined
/// into the worker's loop: callgrind counts fewer instructions per request that way.
#[inline(never)]
pub fn serve(
    context: &Context,
    mounts: &Mounts,
    conn: Box<Conn>,
    token: u64,
    head: RequestHead,
    out: &mut Vec<u8>,
    place: Placement,
) -> Finished {
    let started = Instant::now();
    let mut conn = conn;
    let (body, body_allows_keep_alive) = request_body(&mut conn, &head);
    let buf = conn.head_bytes();
    let is_head = head.method_is(buf, b"HEAD");
    let answer = answer(mounts, &head, buf, started);
    let keep_alive = head.keep_alive
        && body_allows_keep_alive
        && !context.is_stopping()
        && context.keep_alive_allowed();
    let config = &context.config;
    let conn_header = ConnHeader {
        keep_alive,
        http10: head.version == Version::Http10 || config.http10(),
        timeout_secs: config.timeout().as_secs().max(1),
    };
    let (code, body_len) = encode_head(out, &answer, conn_header, &config.strings());
    let timed = answer.is_large();
    let mut finished = Finished {
        conn: Some(conn),
        token,
        keep_alive,
        body,
        hold: place.hold,
        micros: 0,
    };
    if !is_head {
        send_body(context, answer.into_body(), out, &mut finished, place.slot);
    }
    let micros = micros_since(started, timed);
    finished.micros = micros;
    let logged = finished.conn.as_deref().map(|conn| {
        let buf = conn.head_bytes();
        Logged {
            peer: &conn.peer,
            head: &head,
            buf,
            protocol: head.protocol.get(buf),
        }
    });
    let sent = if is_head { 0 } else { body_len };
    account(context, logged.as_ref(), code, sent, micros);
    finished
}

/// The answer's time in microseconds when it was `timed` (sent from a descriptor); 0 for the
/// others, well under one (timing them would cost a second clock read).
pub fn micros_since(started: Instant, timed: bool) -> u64 {
    if timed {
        started.elapsed().as_micros() as u64
    } else {
        0
    }
}

/// Counts an answered static request (for every protocol) and logs it when there is an access
/// log; `sent`: the body bytes.
pub fn account(context: &Context, logged: Option<&Logged<'_>>, code: u16, sent: u64, micros: u64) {
    context.counters.record_response(code, micros);
    context
        .counters
        .static_responses
        .fetch_add(1, Ordering::Relaxed);
    if let (Some(log), Some(logged)) = (context.config.access_log(), logged) {
        record(context, &log, logged, code, sent, micros);
    }
}

/// The answer to a request under a mount (`Mounts::covers_head`): 405 for a method other
/// than GET and HEAD, else the file the path names (404 when there is none) and what to send
/// of it. `buf` holds the head's bytes. Built in place and inlined: an `Option<Answer>`
/// unwrapped here, or a call, would cost the HTTP/1.x hot path a copy of the answer.
#[inline(always)]
pub fn answer(mounts: &Mounts, head: &RequestHead, buf: &[u8], now: Instant) -> Answer {
    if !head.method_is(buf, b"HEAD") && !head.method_is(buf, b"GET") {
        return Answer::MethodNotAllowed;
    }
    match mounts.find(head.path.get(buf)) {
        Some((mount, rest)) => find_file(mount, rest, head, buf, now),
        None => Answer::NotFound,
    }
}

/// Where an answer's body comes from.
pub enum BodySource {
    /// No body (304, 416).
    Empty,
    /// The server's own text (404, 405).
    Text(&'static [u8]),
    /// (Part of) a file kept in memory.
    Cached(CachedBody),
    /// `len` bytes of an open file from `offset`.
    File { file: File, offset: u64, len: u64 },
}

/// Bytes of a file kept in memory, shared with the cache (no copy).
pub struct CachedBody {
    small: Arc<cache::Small>,
    start: usize,
    end: usize,
}

impl AsRef<[u8]> for CachedBody {
    fn as_ref(&self) -> &[u8] {
        &self.small.body[self.start..self.end]
    }
}

impl Answer {
    /// Whether the body is sent from a descriptor (the answer's time is measured then).
    pub fn is_large(&self) -> bool {
        matches!(
            self,
            Answer::File {
                file: Found::Large(_),
                ..
            }
        )
    }

    /// Calls `with` with the answer's status and header lines (without `Content-Length`,
    /// `Date` and `Server`: the frame says the first) and its framing, and returns what it
    /// returns. A `200` with the whole of a file kept in memory uses the head kept with it.
    #[inline]
    pub fn head<R>(&self, with: impl FnOnce(&AppHead, BodyFrame) -> R) -> R {
        if let Answer::File {
            file: Found::Small(small),
            decision: Decision::Whole,
            coding,
            content_type,
        } = self
        {
            let size = small.body.len() as u64;
            let app = small.whole_head(coding.is_some(), || {
                let validators = &small.meta.validators;
                file_head(Decision::Whole, validators, content_type, *coding, size).0
            });
            let frame = BodyFrame::Length {
                len: size,
                add_header: true,
            };
            return with(app, frame);
        }
        let (app, frame) = response_head(self);
        with(&app, frame)
    }

    /// The body to send after the head (for a GET). Always inlined: a call would copy the
    /// answer (its validators included) on HTTP/1.x's hot path.
    #[inline(always)]
    pub fn into_body(self) -> BodySource {
        let (file, offset, len) = match self {
            Answer::NotFound => return BodySource::Text(NOT_FOUND),
            Answer::MethodNotAllowed => return BodySource::Text(NOT_ALLOWED),
            Answer::File { file, decision, .. } => match decision {
                Decision::Whole => {
                    let size = file.size();
                    (file, 0, size)
                }
                Decision::Partial(part) => (file, part.start, part.len()),
                Decision::NotModified | Decision::Unsatisfiable => return BodySource::Empty,
            },
        };
        match file {
            Found::Small(small) => BodySource::Cached(CachedBody {
                small,
                start: offset as usize,
                end: (offset + len) as usize,
            }),
            Found::Large(large) => BodySource::File {
                file: large.file,
                offset,
                len,
            },
        }
    }
}

/// The request body's state for the worker to finish (a static response reads none), and
/// whether it lets the connection be kept. A body collected before the request got here
/// (conn/intake.rs) is dropped; one collected only in part (over the limit) is still
/// arriving: close after the response. A body left on the socket is skipped when small, as
/// after an application that did not read it; a chunked one, or one whose client waits for
/// `100 Continue` (none is sent), closes the connection after the response.
fn request_body(conn: &mut Conn, head: &RequestHead) -> (Body, bool) {
    if let Some(mut collected) = conn.take_collected() {
        let complete = !collected.is_over_limit();
        return (collected.take_unread_rest().unwrap_or(Body::Done), complete);
    }
    let reusable = match head.body {
        BodyFraming::None => true,
        BodyFraming::Length(n) => n <= DRAIN_LIMIT && !head.expect_continue,
        BodyFraming::Chunked => false,
    };
    (Body::for_framing(head.body), reusable)
}

/// The file (or a precompressed sibling) the path names, and what to send of it (`NotFound`
/// when there is none). `rest` is the path after the prefix, as sent (the cache decodes it on
/// a miss).
fn find_file(mount: &Mount, rest: &[u8], head: &RequestHead, buf: &[u8], now: Instant) -> Answer {
    let find = |suffix: &[u8]| mount.cache.find(&mount.dir, rest, suffix, now);
    let Some(plain) = find(b"") else {
        return Answer::NotFound;
    };
    let content_type = Arc::clone(&plain.meta().content_type);
    let (accept_encoding, pre) = request_fields(head, buf);
    let (file, coding) = negotiate::accepted(accept_encoding)
        .find_map(|coding| find(coding.suffix()).map(|f| (f, Some(coding))))
        .unwrap_or((plain, None));
    Answer::File {
        decision: rules::decide(&pre, &file.meta().validators, file.size()),
        content_type,
        file,
        coding,
    }
}

/// `Accept-Encoding` and the conditional fields (the first of each), in one pass.
fn request_fields<'b>(head: &RequestHead, buf: &'b [u8]) -> (Option<&'b [u8]>, Preconditions<'b>) {
    let mut accept_encoding = None;
    let mut pre = Preconditions::default();
    for field in &head.fields {
        let name = field.name.get(buf);
        let slot = if name.eq_ignore_ascii_case(b"accept-encoding") {
            &mut accept_encoding
        } else if name.eq_ignore_ascii_case(b"if-none-match") {
            &mut pre.if_none_match
        } else if name.eq_ignore_ascii_case(b"if-modified-since") {
            &mut pre.if_modified_since
        } else if name.eq_ignore_ascii_case(b"range") {
            &mut pre.range
        } else if name.eq_ignore_ascii_case(b"if-range") {
            &mut pre.if_range
        } else {
            continue;
        };
        slot.get_or_insert(field.value.get(buf));
    }
    (accept_encoding, pre)
}

/// Writes the answer's head into `out`; returns its status code and body length.
fn encode_head(
    out: &mut Vec<u8>,
    answer: &Answer,
    conn: ConnHeader,
    strings: &(Vec<u8>, Vec<u8>),
) -> (u16, u64) {
    let (protocol, server_name) = (strings.0.as_slice(), strings.1.as_slice());
    answer.head(|app, frame| {
        response::encode_head(out, protocol, app, frame, conn, server_name);
        let len = match frame {
            BodyFrame::Length { len, .. } => len,
            _ => 0,
        };
        (app.code, len)
    })
}

/// The status, header lines and framing of the answer.
fn response_head(answer: &Answer) -> (AppHead, BodyFrame) {
    let (mut app, len) = match answer {
        Answer::File {
            file,
            decision,
            coding,
            content_type,
        } => {
            let validators = &file.meta().validators;
            return file_head(*decision, validators, content_type, *coding, file.size());
        }
        Answer::NotFound => (status(404), NOT_FOUND.len()),
        Answer::MethodNotAllowed => {
            let mut app = status(405);
            line(&mut app, "Allow", b"GET, HEAD");
            (app, NOT_ALLOWED.len())
        }
    };
    line(&mut app, "Content-Type", b"text/plain");
    let frame = BodyFrame::Length {
        len: len as u64,
        add_header: true,
    };
    (app, frame)
}

/// The status, header lines and framing of a file's answer (`size`: the file's).
fn file_head(
    decision: Decision,
    validators: &Validators,
    content_type: &str,
    coding: Option<Coding>,
    size: u64,
) -> (AppHead, BodyFrame) {
    let code = match decision {
        Decision::NotModified => 304,
        Decision::Whole => 200,
        Decision::Partial(_) => 206,
        Decision::Unsatisfiable => 416,
    };
    let mut app = status(code);
    let app = &mut app;
    if decision != Decision::Unsatisfiable {
        if decision != Decision::NotModified {
            line(app, "Content-Type", content_type.as_bytes());
            line(app, "Accept-Ranges", b"bytes");
        }
        line(app, "ETag", validators.etag());
        line(app, "Last-Modified", validators.last_modified().as_bytes());
        line(app, "Vary", b"Accept-Encoding");
        if let (Some(coding), false) = (coding, decision == Decision::NotModified) {
            line(app, "Content-Encoding", coding.token().as_bytes());
        }
    }
    let len = match decision {
        Decision::NotModified => return (std::mem::take(app), BodyFrame::Empty),
        Decision::Whole => size,
        Decision::Partial(ByteRange { start, end }) => {
            let range = format!("bytes {start}-{end}/{size}");
            line(app, "Content-Range", range.as_bytes());
            end - start + 1
        }
        Decision::Unsatisfiable => {
            line(app, "Content-Range", format!("bytes */{size}").as_bytes());
            0
        }
    };
    let frame = BodyFrame::Length {
        len,
        add_header: true,
    };
    (std::mem::take(app), frame)
}

/// A head with the status line for `code` and no fields yet.
fn status(code: u16) -> AppHead {
    AppHead {
        code,
        status: format!("{code} {}", response::reason_phrase(code)).into_bytes(),
        // Room for a file's fields at once (no regrowth).
        lines: Vec::with_capacity(256),
        ..AppHead::default()
    }
}

fn line(app: &mut AppHead, name: &str, value: &[u8]) {
    let lines = &mut app.lines;
    lines.extend_from_slice(name.as_bytes());
    lines.extend_from_slice(b": ");
    lines.extend_from_slice(value);
    lines.extend_from_slice(b"\r\n");
}

/// Sends (or stages in `out`) the body after the head in `out`. A failure closes the
/// connection: `finished.conn` is dropped.
fn send_body(
    context: &Context,
    body: BodySource,
    out: &mut Vec<u8>,
    finished: &mut Finished,
    slot: usize,
) {
    let sent = match body {
        BodySource::Empty => true,
        BodySource::Text(text) => {
            out.extend_from_slice(text);
            true
        }
        BodySource::Cached(cached) => {
            out.extend_from_slice(cached.as_ref());
            true
        }
        BodySource::File { file, offset, len } if len <= SMALL_BODY => {
            read_into(&file, offset, len, out)
        }
        BodySource::File { file, offset, len } => {
            finished.hold = false;
            send_large(context, finished, out, file, offset, len, slot)
        }
    };
    if !sent {
        // The file shrank or the client went away: the declared length cannot be honoured.
        out.clear();
        finished.conn = None;
        finished.keep_alive = false;
    }
}

/// Appends `len` bytes of `file` from `offset` to `out`; false when it has fewer.
pub fn read_into(file: &File, offset: u64, len: u64, out: &mut Vec<u8>) -> bool {
    let start = out.len();
    out.resize(start + len as usize, 0);
    file.read_exact_at(&mut out[start..], offset).is_ok()
}

/// Sends the head in `out`, then `len` bytes of the file from `offset`. On a plain
/// connection the file goes by sendfile(2) as far as the socket takes it now; the rest waits
/// in the connection's backlog (conn/backlog.rs) and is written from the event loop, so a
/// slow reader of a large file holds no worker. Through TLS the file is copied, waiting.
fn send_large(
    context: &Context,
    finished: &mut Finished,
    out: &mut Vec<u8>,
    file: File,
    offset: u64,
    len: u64,
    slot: usize,
) -> bool {
    let Some(conn) = finished.conn.as_deref_mut() else {
        return false;
    };
    let timeout = context.config.timeout();
    // Whatever the worker holds for this connection goes first.
    if !context.outbox(slot).flush_before(finished.token, timeout) {
        return false;
    }
    let counters = &context.counters;
    counters
        .bytes_out
        .fetch_add(out.len() as u64, Ordering::Relaxed);
    if conn.transport().plain_fd().is_some() {
        // The head joins the backlog's tail if the socket does not take it at once.
        if conn
            .send(&[out], Instant::now() + timeout, HIGH_WATER)
            .is_err()
        {
            return false;
        }
        out.clear();
        counters.bytes_out.fetch_add(len, Ordering::Relaxed);
        // An error here is a closed socket, or a file that ended early (`UnexpectedEof`).
        return conn.send_file_now(file.into(), offset, len).is_ok();
    }
    if conn.write_all(&[out], Instant::now() + timeout).is_err() {
        return false;
    }
    out.clear();
    let sent = copy_through(conn, &file, offset, len, timeout);
    counters.bytes_out.fetch_add(sent, Ordering::Relaxed);
    sent == len
}

/// Copies `len` bytes of `file` to a TLS connection; returns the bytes sent.
fn copy_through(
    conn: &mut Conn,
    file: &File,
    offset: u64,
    len: u64,
    timeout: std::time::Duration,
) -> u64 {
    let mut chunk = vec![0u8; COPY_CHUNK];
    let mut sent = 0u64;
    while sent < len {
        let want = (len - sent).min(COPY_CHUNK as u64) as usize;
        match file.read_at(&mut chunk[..want], offset + sent) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if conn
                    .write_all(&[&chunk[..n]], Instant::now() + timeout)
                    .is_err()
                {
                    break;
                }
                sent += n as u64;
            }
        }
    }
    sent
}

/// A request as the access log names it.
pub struct Logged<'a> {
    pub peer: &'a Peer,
    pub head: &'a RequestHead,
    /// The head's bytes.
    pub buf: &'a [u8],
    /// `%H`: as sent over HTTP/1.x, `HTTP/2` for a stream.
    pub protocol: &'a [u8],
}

/// The access-log line: `%h` is the client after trusted proxy headers, as for the application.
pub fn record(
    context: &Context,
    log: &access_log::AccessLog,
    request: &Logged<'_>,
    status: u16,
    body_bytes: u64,
    micros: u64,
) {
    let Logged {
        peer,
        head,
        buf,
        protocol,
    } = *request;
    let fields = || {
        head.fields
            .iter()
            .map(|f| (f.name.get(buf), f.value.get(buf)))
    };
    let remote = context
        .config
        .trusted()
        .filter(|trusted| trusted.trusts_peer(&peer.addr))
        .and_then(|trusted| forwarded::resolve(&trusted, fields()).client)
        .map_or_else(|| peer.addr.clone(), |ip| ip.to_string());
    let header = |name: &str| -> Option<&[u8]> {
        fields()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    };
    log.record(&access_log::Entry {
        remote: &remote,
        peer: &peer.addr,
        method: head.method.get(buf),
        target: head.target.get(buf),
        protocol,
        status,
        body_bytes,
        micros,
        header: &header,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::request::{parse_head, Limits};

    /// The answer to `request` (a whole HTTP/1.1 head) under `/s/` = `dir`: (status, header
    /// lines, declared length, body source).
    fn decide(dir: &str, request: &[u8]) -> (u16, String, Option<u64>, BodySource) {
        let mounts = Mounts::new(&[("/s/".into(), dir.into())]).expect("mount");
        let head = parse_head(request, Limits { max_head: 0 })
            .expect("valid")
            .expect("complete");
        assert!(mounts.covers_head(&head, request));
        let answer = answer(&mounts, &head, request, Instant::now());
        let (code, lines, len) = answer.head(|app, frame| {
            let len = match frame {
                BodyFrame::Length { len, .. } => Some(len),
                _ => None,
            };
            (
                app.code,
                String::from_utf8_lossy(&app.lines).into_owned(),
                len,
            )
        });
        (code, lines, len, answer.into_body())
    }

    #[test]
    fn one_answer_for_every_protocol() {
        let base = std::env::temp_dir().join(format!("stogie-answer-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).unwrap();
        std::fs::write(base.join("a.css"), b"0123456789").unwrap();
        let big = vec![7u8; SMALL_BODY as usize + 1];
        std::fs::write(base.join("big.bin"), &big).unwrap();
        let dir = base.to_str().unwrap();

        let (code, lines, len, body) = decide(dir, b"GET /s/a.css HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!((code, len), (200, Some(10)));
        assert!(lines.starts_with("Content-Type: text/css; charset=utf-8\r\n"));
        assert!(!lines.contains("Content-Length"), "the frame says it");
        assert!(matches!(&body, BodySource::Cached(c) if c.as_ref() == b"0123456789"));

        let range = b"GET /s/a.css HTTP/1.1\r\nHost: x\r\nRange: bytes=2-4\r\n\r\n";
        let (code, lines, len, body) = decide(dir, range);
        assert_eq!((code, len), (206, Some(3)));
        assert!(lines.contains("Content-Range: bytes 2-4/10\r\n"));
        assert!(matches!(&body, BodySource::Cached(c) if c.as_ref() == b"234"));

        let range = b"GET /s/big.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=5-\r\n\r\n";
        let (code, _, len, body) = decide(dir, range);
        assert_eq!((code, len), (206, Some(SMALL_BODY - 4)));
        assert!(matches!(body, BodySource::File { offset: 5, len, .. } if len == SMALL_BODY - 4));

        let (code, lines, _, body) = decide(dir, b"DELETE /s/a.css HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(code, 405);
        assert!(lines.contains("Allow: GET, HEAD\r\n"));
        assert!(matches!(body, BodySource::Text(NOT_ALLOWED)));

        let (code, _, _, body) = decide(dir, b"GET /s/../a.css HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(code, 404);
        assert!(matches!(body, BodySource::Text(NOT_FOUND)));
        std::fs::remove_dir_all(base).unwrap();
    }
}
