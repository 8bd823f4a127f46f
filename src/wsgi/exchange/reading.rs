//! The request body's side of an exchange: `wsgi.input` reads, `100 Continue`, and whether
//! the body lets the connection be kept.

use std::time::Instant;

use pyo3::prelude::*;

use super::Exchange;
use crate::conn::{Body, BodyError, BufferedBody, DRAIN_LIMIT};
use crate::http::error::{self, HttpError};
use crate::http::response;

/// What went wrong while the application read `wsgi.input`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputFailure {
    /// Answer with this status (413, 408, 400) if nothing was sent yet.
    Respond(HttpError),
    /// The client is gone: close without answering.
    Gone,
}

/// The request body's side of the exchange.
#[derive(Debug)]
pub(super) enum Reading {
    /// The client waits for `100 Continue` (sent on the first read) before the body.
    AwaitingContinue(Body),
    /// Reading (or done: `Body::Done`).
    Body(Body),
    /// The whole body arrived before the application ran (conn/intake.rs).
    Buffered(BufferedBody),
    /// A read failed; the connection cannot be reused. The framing state of what is left
    /// unread, when known (a body refused as too large is still arriving: the connection
    /// lingers for it), else `Body::Done`.
    Failed(InputFailure, Body),
}

impl Exchange {
    /// Whether the request body lets the connection be reused after the response: read, or
    /// small enough to skip, and not held back waiting for `100 Continue`.
    pub(super) fn body_allows_keep_alive(&self) -> bool {
        match &self.reading {
            Reading::Body(Body::Done) | Reading::AwaitingContinue(Body::Done) => true,
            Reading::Buffered(body) => !body.is_over_limit(),
            Reading::AwaitingContinue(_) | Reading::Failed(..) => false,
            Reading::Body(Body::Length { remaining }) => *remaining <= DRAIN_LIMIT,
            // What has arrived of an unread chunked body may already show it is too large to
            // skip: then the response says `Connection: close` rather than closing after it.
            Reading::Body(body @ Body::Chunked { .. }) => self
                .conn
                .as_deref()
                .is_some_and(|conn| !conn.unread_body_exceeds(body, DRAIN_LIMIT)),
        }
    }

    /// Reads up to `max` body bytes into `out` (0 at the end of the body), sending
    /// `100 Continue` first if the client waits for it. A failure is remembered: the
    /// connection will not be reused, and later reads fail the same way.
    pub fn read_body(
        &mut self,
        py: Python<'_>,
        out: &mut Vec<u8>,
        max: usize,
    ) -> Result<usize, InputFailure> {
        let waiting = matches!(&self.reading, Reading::AwaitingContinue(b) if !b.is_done());
        if waiting && !self.send_continue() {
            self.reading = Reading::Failed(InputFailure::Gone, Body::Done);
        }
        let body = match &mut self.reading {
            Reading::Failed(failure, _) => return Err(*failure),
            Reading::Buffered(buffered) => {
                let result = read_buffered(py, buffered, out, max);
                if let Err(failure) = result {
                    let rest = buffered.take_unread_rest().unwrap_or(Body::Done);
                    self.reading = Reading::Failed(failure, rest);
                }
                return result;
            }
            Reading::Body(body) | Reading::AwaitingContinue(body) => body,
        };
        if body.is_done() {
            return Ok(0);
        }
        let Some(conn) = self.conn.as_deref_mut() else {
            return Err(InputFailure::Gone);
        };
        let config = &self.context.config;
        let (max_body, timeout) = (config.max_body(), config.timeout());
        let result = py.detach(|| conn.read_body(body, out, max, max_body, timeout));
        result.map_err(|e| {
            let failure = match e {
                BodyError::TooLarge => InputFailure::Respond(error::BODY_TOO_LARGE),
                BodyError::TimedOut => InputFailure::Respond(error::HEAD_TIMEOUT),
                BodyError::Framing(err) => InputFailure::Respond(err),
                BodyError::Incomplete | BodyError::Io(_) => InputFailure::Gone,
            };
            self.reading = Reading::Failed(failure, Body::Done);
            failure
        })
    }

    /// The collected body, for reads that copy straight into a Python object (not one that
    /// ends in a failure: those take the general path).
    pub fn buffered_body(&mut self) -> Option<&mut BufferedBody> {
        match &mut self.reading {
            Reading::Buffered(buffered) if !buffered.is_over_limit() => Some(buffered),
            _ => None,
        }
    }

    /// Sends `100 Continue` before the first read of a body the client is holding back.
    fn send_continue(&mut self) -> bool {
        if let Reading::AwaitingContinue(body) =
            std::mem::replace(&mut self.reading, Reading::Body(Body::Done))
        {
            self.reading = Reading::Body(body);
        }
        let mut line = Vec::with_capacity(32);
        response::encode_continue(&mut line, &self.context.config.protocol());
        let timeout = self.context.config.timeout();
        // A held earlier response of this connection (pipelining) must go out first.
        let outbox = self.context.outbox(self.slot);
        if !outbox.flush_before(self.token, timeout) {
            return false;
        }
        let Some(conn) = self.conn.as_deref_mut() else {
            return false;
        };
        conn.write_all(&[&line], Instant::now() + timeout).is_ok()
    }
}

/// Reads from a collected body: a copy from memory, or from its temporary file without the GIL.
fn read_buffered(
    py: Python<'_>,
    buffered: &mut BufferedBody,
    out: &mut Vec<u8>,
    max: usize,
) -> Result<usize, InputFailure> {
    let result = if buffered.is_spooled() {
        py.detach(|| buffered.read(out, max))
    } else {
        buffered.read(out, max)
    };
    match result {
        Ok(0) if buffered.is_over_limit() => Err(InputFailure::Respond(error::BODY_TOO_LARGE)),
        Ok(n) => Ok(n),
        Err(_) => Err(InputFailure::Respond(error::SPOOL_FAILED)),
    }
}
