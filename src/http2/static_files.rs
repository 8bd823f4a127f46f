//! `--static` files answered on an HTTP/2 stream, by the worker that took the stream and
//! without the application: the answer is decided by `crate::static_files::answer`, as for
//! HTTP/1.x (same lookup, validators, ranges, codings, 404 and 405), and sent as frames. A
//! body kept in memory (or small enough to read at once) is queued whole, without waiting for
//! the peer; a larger file is sent by the connection's thread as the window opens
//! (file_body.rs), so no worker waits for a slow reader.

use std::time::Instant;

use bytes::Bytes;

use super::file_body::{FileBody, Handoff};
use super::stream::{self, NewStream, Response, StreamJob};
use crate::context::Context;
use crate::http::response::BodyFrame;
use crate::static_files::{self, BodySource, Logged, Mounts, SMALL_BODY};

/// `%H` in the access log.
const PROTOCOL: &[u8] = b"HTTP/2";

/// Answers a stream whose path is under a mount (`Mounts::covers_head`).
pub fn serve(context: &Context, mounts: &Mounts, job: StreamJob) {
    let started = Instant::now();
    let StreamJob {
        request,
        client,
        files,
        ..
    } = job;
    let NewStream {
        checked, respond, ..
    } = request;
    let mut response = Response::new(respond);
    // Reset before a worker got to it (Rapid Reset): nothing to answer.
    if response.is_reset() {
        return;
    }
    let (head, buf) = (&checked.head, checked.bytes.as_slice());
    let is_head = head.method_is(buf, b"HEAD");
    let answer = static_files::answer(mounts, head, buf, started);
    let timed = answer.is_large();
    let server_name = &context.config.strings().1;
    let (code, declared, built) = answer.head(|app, frame| {
        let len = match frame {
            BodyFrame::Length { len, .. } => Some(len),
            _ => None,
        };
        (app.code, len, stream::response_head(app, len, server_name))
    });
    let body = if is_head || declared.unwrap_or(0) == 0 {
        BodySource::Empty
    } else {
        answer.into_body()
    };
    match built {
        Ok(head) => send(response, head, body, files),
        Err(_) => response.reset(h2::Reason::INTERNAL_ERROR),
    }
    let micros = static_files::micros_since(started, timed);
    let logged = Logged {
        peer: &client.peer,
        head,
        buf,
        protocol: PROTOCOL,
    };
    let sent = if is_head { 0 } else { declared.unwrap_or(0) };
    static_files::account(context, Some(&logged), code, sent, micros);
}

/// Sends the head, then the body: queued whole when it is in memory or small, else handed
/// to the connection's thread. A file that cannot be read as long as it was resets the
/// stream (the HTTP/1.x connection closes instead).
fn send(mut response: Response, head: http::Response<()>, body: BodySource, files: Handoff) {
    let data = match body {
        BodySource::Empty => {
            let _ = response.send_head(head, true);
            return;
        }
        BodySource::Text(text) => Bytes::from_static(text),
        BodySource::Cached(cached) => Bytes::from_owner(cached),
        BodySource::File { file, offset, len } if len <= SMALL_BODY => {
            let mut data = Vec::new();
            if !static_files::read_into(&file, offset, len, &mut data) {
                return response.reset(h2::Reason::INTERNAL_ERROR);
            }
            Bytes::from(data)
        }
        BodySource::File { file, offset, len } => {
            if response.send_head(head, false).is_err() {
                return;
            }
            if let Some(body) = response.into_body() {
                files.hand_over(FileBody::new(body, file, offset, len));
            }
            return;
        }
    };
    if response.send_head(head, false).is_ok() {
        let _ = response.send_now(data, true);
    }
}
