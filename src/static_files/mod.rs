//! Static files from the engine (`--static PREFIX=DIR`, `server.static`): a request whose path
//! starts with a mount's prefix is answered here, by the worker, without the GIL and without
//! the application. The HTTP rules are pure functions in `http/static_files/`; this module
//! finds the file (`cache.rs` over `open.rs`), writes the head with `http/response.rs` and
//! sends the body: small files are copied from memory into the response buffer (one write
//! with the head, held for a batch write like an application's small response), larger ones
//! go by sendfile(2) on plain connections, the part the socket does not take at once from the
//! connection's backlog (written from the event loop, holding no worker), and are copied
//! through TLS.

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
use crate::wsgi::{Finished, Placement};
use cache::Found;
use mounts::Mount;

/// Bodies up to this size are copied into the response buffer and written with the head.
const SMALL_BODY: u64 = cache::MAX_BODY;
/// Read size when copying a file through TLS.
const COPY_CHUNK: usize = 64 * 1024;
const NOT_FOUND: &[u8] = b"Not Found";
const NOT_ALLOWED: &[u8] = b"Method Not Allowed";

/// What the request gets.
enum Answer {
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
/// reusing it, as from `wsgi::serve`; bytes still to write are left in `out`.
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
    let answer = if !is_head && !head.method_is(buf, b"GET") {
        Answer::MethodNotAllowed
    } else {
        mounts
            .find(head.path.get(buf))
            .and_then(|(mount, rest)| find_file(mount, rest, &head, buf, started))
            .unwrap_or(Answer::NotFound)
    };
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
    // Only an answer sent from a descriptor takes measurable time here; the others are
    // recorded as 0 µs (well under one: timing them would cost a second clock read).
    let timed = matches!(
        answer,
        Answer::File {
            file: Found::Large(_),
            ..
        }
    );
    let mut finished = Finished {
        conn: Some(conn),
        token,
        keep_alive,
        body,
        hold: place.hold,
        micros: 0,
    };
    if !is_head {
        send_body(context, answer, out, &mut finished, place.slot);
    }
    let micros = if timed {
        started.elapsed().as_micros() as u64
    } else {
        0
    };
    finished.micros = micros;
    context.counters.record_response(code, micros);
    context
        .counters
        .static_responses
        .fetch_add(1, Ordering::Relaxed);
    if let (Some(log), Some(conn)) = (config.access_log(), finished.conn.as_deref()) {
        let sent = if is_head { 0 } else { body_len };
        record(context, &log, conn, &head, code, sent, micros);
    }
    finished
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

/// The file (or a precompressed sibling) the path names, and what to send of it. `rest` is
/// the path after the prefix, as sent (the cache decodes it on a miss).
fn find_file(
    mount: &Mount,
    rest: &[u8],
    head: &RequestHead,
    buf: &[u8],
    now: Instant,
) -> Option<Answer> {
    let find = |suffix: &[u8]| mount.cache.find(&mount.dir, rest, suffix, now);
    let plain = find(b"")?;
    let content_type = Arc::clone(&plain.meta().content_type);
    let (accept_encoding, pre) = request_fields(head, buf);
    let (file, coding) = negotiate::accepted(accept_encoding)
        .find_map(|coding| find(coding.suffix()).map(|f| (f, Some(coding))))
        .unwrap_or((plain, None));
    Some(Answer::File {
        decision: rules::decide(&pre, &file.meta().validators, file.size()),
        content_type,
        file,
        coding,
    })
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

/// Writes the answer's head into `out`; returns its status code and body length. A `200`
/// with the whole of a file kept in memory uses the head kept with it.
fn encode_head(
    out: &mut Vec<u8>,
    answer: &Answer,
    conn: ConnHeader,
    strings: &(Vec<u8>, Vec<u8>),
) -> (u16, u64) {
    let (protocol, server_name) = (strings.0.as_slice(), strings.1.as_slice());
    if let Answer::File {
        file: Found::Small(small),
        decision: Decision::Whole,
        coding,
        content_type,
    } = answer
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
        response::encode_head(out, protocol, app, frame, conn, server_name);
        return (200, size);
    }
    let (app, frame) = response_head(answer);
    response::encode_head(out, protocol, &app, frame, conn, server_name);
    let len = match frame {
        BodyFrame::Length { len, .. } => len,
        _ => 0,
    };
    (app.code, len)
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
    answer: Answer,
    out: &mut Vec<u8>,
    finished: &mut Finished,
    slot: usize,
) {
    let (file, offset, len) = match answer {
        Answer::NotFound => return out.extend_from_slice(NOT_FOUND),
        Answer::MethodNotAllowed => return out.extend_from_slice(NOT_ALLOWED),
        Answer::File { file, decision, .. } => match decision {
            Decision::Whole => {
                let size = file.size();
                (file, 0, size)
            }
            Decision::Partial(part) => (file, part.start, part.len()),
            Decision::NotModified | Decision::Unsatisfiable => return,
        },
    };
    let sent = match file {
        Found::Small(small) => {
            out.extend_from_slice(&small.body[offset as usize..(offset + len) as usize]);
            true
        }
        Found::Large(large) if len <= SMALL_BODY => read_into(&large.file, offset, len, out),
        Found::Large(large) => {
            finished.hold = false;
            send_large(context, finished, out, large.file, offset, len, slot)
        }
    };
    if !sent {
        // The file shrank or the client went away: the declared length cannot be honoured.
        out.clear();
        finished.conn = None;
        finished.keep_alive = false;
    }
}

/// Appends `len` bytes of `file` from `offset` to `out`.
fn read_into(file: &File, offset: u64, len: u64, out: &mut Vec<u8>) -> bool {
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

/// The access-log line: `%h` is the client after trusted proxy headers, as for the application.
fn record(
    context: &Context,
    log: &access_log::AccessLog,
    conn: &Conn,
    head: &RequestHead,
    status: u16,
    body_bytes: u64,
    micros: u64,
) {
    let buf = conn.head_bytes();
    let fields = || {
        head.fields
            .iter()
            .map(|f| (f.name.get(buf), f.value.get(buf)))
    };
    let remote = context
        .config
        .trusted()
        .filter(|trusted| trusted.trusts_peer(&conn.peer.addr))
        .and_then(|trusted| forwarded::resolve(&trusted, fields()).client)
        .map_or_else(|| conn.peer.addr.clone(), |ip| ip.to_string());
    let header = |name: &str| -> Option<&[u8]> {
        fields()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    };
    log.record(&access_log::Entry {
        remote: &remote,
        peer: &conn.peer.addr,
        method: head.method.get(buf),
        target: head.target.get(buf),
        protocol: head.protocol.get(buf),
        status,
        body_bytes,
        micros,
        header: &header,
    });
}
