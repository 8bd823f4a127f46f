//! Request bodies collected by the HTTP/2 thread before the application runs, as HTTP/1.1
//! bodies are (conn/intake.rs, docs/http-policy.md "Request bodies"): no worker waits while
//! a slow peer sends, window is given back as DATA arrives, and the bytes go to memory, then
//! to an unlinked temporary file, under the same limits and deadline.

use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use h2::server::SendResponse;
use h2::RecvStream;

use super::head::Checked;
use super::stream::{Incoming, NewStream, RequestBody, Response};
use crate::conn::{Arriving, IntakeError, Rules};
use crate::http::error::{self, HttpError};

/// A stream whose head is checked and whose body is arriving.
pub struct Arrival {
    checked: Checked,
    recv: RecvStream,
    respond: SendResponse<Bytes>,
    body: Arriving,
}

/// What a new stream needs next.
pub enum Admitted {
    /// Ready for a worker.
    Ready(NewStream),
    /// Its body is to be collected first.
    Collecting(Arrival),
    /// Answered by the server itself (a bad head, a body too large).
    Answered,
}

/// Checks a new stream's head and decides whether its body is collected first: when there
/// is one, bodies are buffered (`buffer_request_body`), and the client does not wait for
/// `100 Continue` (the application decides first, as for HTTP/1.1).
pub fn admit(
    request: http::Request<RecvStream>,
    respond: SendResponse<Bytes>,
    rules: &Rules<'_>,
) -> Admitted {
    let (parts, recv) = request.into_parts();
    let head_only = parts.method == http::Method::HEAD;
    let checked = match super::head::check(&parts, rules.limits, rules.max_body) {
        Ok(checked) => checked,
        Err(err) => {
            Response::new(respond).answer(err, head_only);
            return Admitted::Answered;
        }
    };
    match rules.intake {
        Some((intake, gauges)) if !recv.is_end_stream() && !checked.head.expect_continue => {
            Admitted::Collecting(Arrival {
                checked,
                recv,
                respond,
                body: Arriving::new(intake, gauges),
            })
        }
        _ => Admitted::Ready(NewStream {
            checked,
            body: Incoming::Streamed(RequestBody::new(recv)),
            respond,
        }),
    }
}

/// Where an arriving body stands after a poll.
pub enum Progress {
    Waiting(Arrival),
    Complete(NewStream),
    /// Answered (413, 503...) or reset by the peer: nothing more to do.
    Ended,
}

impl Arrival {
    /// Takes what DATA has arrived; `max_body`: `max_request_body_size` (0: none).
    pub fn poll(mut self, cx: &mut Context<'_>, max_body: u64) -> Progress {
        loop {
            match self.recv.poll_data(cx) {
                Poll::Pending => return Progress::Waiting(self),
                Poll::Ready(Some(Err(_))) => return Progress::Ended,
                Poll::Ready(None) => {
                    let Arrival {
                        checked,
                        respond,
                        body,
                        ..
                    } = self;
                    return Progress::Complete(NewStream {
                        checked,
                        body: Incoming::Collected(body.finish()),
                        respond,
                    });
                }
                Poll::Ready(Some(Ok(data))) => {
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    if max_body > 0 && self.body.len() + data.len() as u64 > max_body {
                        return self.refuse(error::BODY_TOO_LARGE);
                    }
                    if let Err(e) = self.body.append(&data) {
                        return self.refuse(refusal(e));
                    }
                }
            }
        }
    }

    /// Whether the body is late: `timeout`, plus a second per `request_body_min_rate` bytes.
    pub fn is_overdue(&self, now: Instant) -> bool {
        now > self.body.deadline()
    }

    /// Answers `err` instead of running the application.
    pub fn refuse(self, err: HttpError) -> Progress {
        let head_only = self.checked.head.method_is(&self.checked.bytes, b"HEAD");
        Response::new(self.respond).answer(err, head_only);
        Progress::Ended
    }
}

fn refusal(e: IntakeError) -> HttpError {
    match e {
        IntakeError::TooLargeToSpool => error::BODY_TOO_LARGE_TO_BUFFER,
        IntakeError::SpoolFull => error::SPOOL_FULL,
        IntakeError::Spool | IntakeError::Body(_) => error::SPOOL_FAILED,
    }
}
