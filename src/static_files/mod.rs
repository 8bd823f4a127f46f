//! Static files from the engine (`--static PREFIX=DIR`, `server.static`): a request whose path
//! starts with a mount's prefix is answered here, by the worker, without the GIL and without
//! the application. The HTTP rules are pure functions in `http/static_files/`; this module
//! finds the file (`cache.rs` over `open.rs`), writes the head with `http/response.rs` and
//! sends the body: small files are copied from memory into the response buffer (one write
//! with the head, held for a batch write like an application's small response), larger ones
//! go by sendfile(2) on plain connections and are copied through TLS.

mod cache;
mod mounts;
mod open;

pub use mounts::Mounts;

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::access_log;
use crate::conn::{Body, Conn, DRAIN_LIMIT};
use crate::context::Context;
use crate::http::forwarded;
use crate::http::request::{BodyFraming, RequestHead, Version};
use crate::http::response::{self, AppHead, BodyFrame, ConnHeader};
use crate::http::static_files::negotiate::{self, Coding};
use crate::http::static_files::range::ByteRange;
use crate::http::static_files::{self as rules, path, Decision, Preconditions};
use crate::net::io as netio;
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
        content_type: String,
    },
    NotFound,
    MethodNotAllowed,
}

impl Answer {
    fn code(&self) -> u16 {
        match self {
            Answer::File { decision, .. } => match decision {
                Decision::NotModified => 304,
                Decision::Whole => 200,
                Decision::Partial(_) => 206,
                Decision::Unsatisfiable => 416,
            },
            Answer::NotFound => 404,
            Answer::MethodNotAllowed => 405,
        }
    }

    /// The file and the part of it to send: (offset, length).
    fn file_part(&self) -> Option<(&Found, u64, u64)> {
        match self {
            Answer::File { file, decision, .. } => match decision {
                Decision::Whole => Some((file, 0, file.size())),
                Decision::Partial(part) => Some((file, part.start, part.len())),
                _ => None,
            },
            _ => None,
        }
    }
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
    let (app, frame) = response_head(&answer);
    let strings = config.strings();
    response::encode_head(out, &strings.0, &app, frame, conn_header, &strings.1);
    let body_len = match frame {
        BodyFrame::Length { len, .. } => len,
        _ => 0,
    };
    let mut finished = Finished {
        conn: Some(conn),
        token,
        keep_alive,
        body,
        hold: place.hold,
        micros: 0,
    };
    if !is_head {
        send_body(context, &answer, out, &mut finished, place.slot);
    }
    let micros = started.elapsed().as_micros() as u64;
    finished.micros = micros;
    let code = app.code;
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

/// The file (or a precompressed sibling) the path names, and what to send of it.
fn find_file(
    mount: &Mount,
    rest: &[u8],
    head: &RequestHead,
    buf: &[u8],
    now: Instant,
) -> Option<Answer> {
    let rel = path::relative(rest)?;
    let find = |rel: &[u8]| mount.cache.find(&mount.dir, rel, now);
    let plain = find(&rel)?;
    let field = |name: &str| {
        head.fields
            .iter()
            .find(|f| f.name.get(buf).eq_ignore_ascii_case(name.as_bytes()))
            .map(|f| f.value.get(buf))
    };
    let (file, coding) = negotiate::accepted(field("accept-encoding"))
        .find_map(|coding| {
            find(&[rel.as_slice(), coding.suffix()].concat()).map(|f| (f, Some(coding)))
        })
        .unwrap_or((plain, None));
    let pre = Preconditions {
        if_none_match: field("if-none-match"),
        if_modified_since: field("if-modified-since"),
        range: field("range"),
        if_range: field("if-range"),
    };
    Some(Answer::File {
        decision: rules::decide(&pre, file.validators(), file.size()),
        content_type: negotiate::content_type(&rel),
        file,
        coding,
    })
}

/// The status, header lines and framing of the answer.
fn response_head(answer: &Answer) -> (AppHead, BodyFrame) {
    let code = answer.code();
    let mut app = AppHead {
        code,
        status: format!("{code} {}", response::reason_phrase(code)).into_bytes(),
        // Room for the file's fields at once (no regrowth on the request path).
        lines: Vec::with_capacity(256),
        ..AppHead::default()
    };
    let mut line = |name: &str, value: &[u8]| {
        let lines = &mut app.lines;
        lines.extend_from_slice(name.as_bytes());
        lines.extend_from_slice(b": ");
        lines.extend_from_slice(value);
        lines.extend_from_slice(b"\r\n");
    };
    let len = match answer {
        Answer::File {
            file,
            decision,
            coding,
            content_type,
        } => {
            let v = file.validators();
            if *decision != Decision::Unsatisfiable {
                if *decision != Decision::NotModified {
                    line("Content-Type", content_type.as_bytes());
                    line("Accept-Ranges", b"bytes");
                }
                line("ETag", v.etag());
                line("Last-Modified", v.last_modified().as_bytes());
                line("Vary", b"Accept-Encoding");
                if let (Some(coding), false) = (coding, *decision == Decision::NotModified) {
                    line("Content-Encoding", coding.token().as_bytes());
                }
            }
            match decision {
                Decision::NotModified => return (app, BodyFrame::Empty),
                Decision::Whole => file.size(),
                Decision::Partial(ByteRange { start, end }) => {
                    line(
                        "Content-Range",
                        format!("bytes {start}-{end}/{}", file.size()).as_bytes(),
                    );
                    end - start + 1
                }
                Decision::Unsatisfiable => {
                    line(
                        "Content-Range",
                        format!("bytes */{}", file.size()).as_bytes(),
                    );
                    0
                }
            }
        }
        Answer::NotFound => {
            line("Content-Type", b"text/plain");
            NOT_FOUND.len() as u64
        }
        Answer::MethodNotAllowed => {
            line("Allow", b"GET, HEAD");
            line("Content-Type", b"text/plain");
            NOT_ALLOWED.len() as u64
        }
    };
    let frame = BodyFrame::Length {
        len,
        add_header: true,
    };
    (app, frame)
}

/// Sends (or stages in `out`) the body after the head in `out`. A failure closes the
/// connection: `finished.conn` is dropped.
fn send_body(
    context: &Context,
    answer: &Answer,
    out: &mut Vec<u8>,
    finished: &mut Finished,
    slot: usize,
) {
    let text = match answer {
        Answer::NotFound => Some(NOT_FOUND),
        Answer::MethodNotAllowed => Some(NOT_ALLOWED),
        Answer::File { .. } => None,
    };
    if let Some(text) = text {
        out.extend_from_slice(text);
        return;
    }
    let Some((file, offset, len)) = answer.file_part() else {
        return;
    };
    let sent = match file {
        Found::Small(small) => {
            out.extend_from_slice(&small.body[offset as usize..(offset + len) as usize]);
            true
        }
        Found::Large(open) if len <= SMALL_BODY => read_into(&open.file, offset, len, out),
        Found::Large(open) => {
            finished.hold = false;
            send_large(context, finished, out, &open.file, offset, len, slot)
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

/// Writes the head, then the file: sendfile(2) on a plain connection, a copy through TLS.
fn send_large(
    context: &Context,
    finished: &mut Finished,
    out: &mut Vec<u8>,
    file: &File,
    offset: u64,
    len: u64,
    slot: usize,
) -> bool {
    let Some(conn) = finished.conn.as_deref_mut() else {
        return false;
    };
    let timeout = context.config.timeout();
    // Written directly: whatever the worker holds for this connection, and whatever waits in
    // the connection's backlog (conn/backlog.rs), goes first.
    if !context.outbox(slot).flush_before(finished.token, timeout)
        || conn.drain_backlog(Instant::now() + timeout).is_err()
    {
        return false;
    }
    let counters = &context.counters;
    counters
        .bytes_out
        .fetch_add(out.len() as u64, Ordering::Relaxed);
    if conn.write_all(&[out], Instant::now() + timeout).is_err() {
        return false;
    }
    out.clear();
    let sent = match conn.transport().plain_fd() {
        Some(sock) => {
            netio::send_file(sock.as_raw_fd(), file.as_raw_fd(), offset, len, timeout).unwrap_or(0)
        }
        None => copy_through(conn, file, offset, len, timeout),
    };
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
