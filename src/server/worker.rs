//! A worker thread: the request path.
//!
//! Each worker loops: find a connection with a complete request (the ready queue, epoll, or
//! the next pipelined request), run the application (`wsgi::serve`, the only part that holds
//! the GIL), then write the response and take the connection on to its next request or park
//! it. Writing response N and looking for request N+1 happen in one stretch without the GIL
//! (`between_requests`), so a request costs one release and one re-acquire of the GIL.
//!
//! Write-behind (outbox.rs): when other requests already wait for this worker, a small
//! response is held and written with the others just before the worker would wait. A held
//! connection stays with its worker (`Batch::held`), not parked, so no other worker can answer
//! its next request first.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pyo3::prelude::*;

use super::pool::{Parked, SlotState};
use super::{Ready, Server, EVENTS_PER_WAIT, KICK_TOKEN, LISTENER_TOKEN, STOP_TOKEN};
use crate::conn::{self, AfterSend, Body, Conn, Next};
use crate::http::request::RequestHead;
use crate::http2::{self, stream::StreamJob};
use crate::net::poller::{self, Interest};
use crate::outbox::HOLD_RESPONSES;
use crate::static_files;
use crate::wsgi;

/// A response is held only if the application answered faster than this: a slow
/// application gains nothing from batching and would make the held responses wait.
const HOLD_APP_LIMIT_US: u64 = 500;

/// A connection with a complete request head, ready for the application.
pub(super) struct Request {
    conn: Box<Conn>,
    token: u64,
    head: RequestHead,
}

/// What a worker does next.
enum Work {
    Request(Request),
    /// An HTTP/2 stream (server/http2.rs).
    Stream(StreamJob),
    Stop,
}

/// A connection whose response sits in its worker's outbox, with the request body state to
/// finish once the batch is written.
struct HeldConn {
    token: u64,
    conn: Box<Conn>,
    body: Body,
}

/// A worker's batch in progress: held connections, and requests found while finishing them.
#[derive(Default)]
struct Batch {
    held: Vec<HeldConn>,
    later: VecDeque<Request>,
}

/// One worker thread's state across requests.
struct Worker<'s> {
    server: &'s Server,
    slot: usize,
    events: Vec<poller::Event>,
    batch: Batch,
    /// The response bytes a request left to write (reused between requests).
    out: Vec<u8>,
    /// The last application call was fast enough for its successors to be held.
    app_fast: bool,
}

impl Server {
    /// The body of a worker thread: attaches to Python once for its whole life.
    pub(super) fn work(self: Arc<Self>, slot: usize) {
        Python::attach(|py| {
            Worker {
                server: &self,
                slot,
                events: poller::empty_events(EVENTS_PER_WAIT),
                batch: Batch::default(),
                out: Vec::with_capacity(4096),
                app_fast: true,
            }
            .run(py)
        });
    }

    /// Marks the worker busy with a request (the monitor watches its progress).
    fn start_request(
        &self,
        slot: usize,
        conn: Box<Conn>,
        token: u64,
        head: RequestHead,
    ) -> Request {
        self.begin_work(slot);
        Request { conn, token, head }
    }

    /// Marks the worker busy with a request or an HTTP/2 stream.
    fn begin_work(&self, slot: usize) {
        self.pool.begin_request(slot);
        if self.monitor.asleep.load(Ordering::Relaxed) {
            self.monitor.wake();
        }
        self.context
            .counters
            .requests
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Takes the connection one step towards its next request; `event`: the socket signalled.
    /// A connection is parked only once drained (the edge-triggered rule, see table.rs).
    fn advance(
        &self,
        slot: usize,
        mut conn: Box<Conn>,
        token: u64,
        event: bool,
    ) -> Option<Request> {
        let config = self.config();
        let mut event = event;
        loop {
            match conn.next_request(&config.rules(), event) {
                Next::Request(head) => return Some(self.start_request(slot, conn, token, head)),
                Next::Wait => match self.table().checkin(token, conn) {
                    Some(back) => {
                        conn = back;
                        event = true;
                    }
                    None => return None,
                },
                Next::Close => {
                    self.close(token, conn);
                    return None;
                }
                Next::Linger(linger) => {
                    self.linger(token, conn, linger);
                    return None;
                }
                Next::Error(err) => {
                    self.fail(token, conn, err);
                    return None;
                }
                Next::Http2 => {
                    self.hand_to_h2(token, conn);
                    return None;
                }
            }
        }
    }
}

impl Worker<'_> {
    fn run(&mut self, py: Python<'_>) {
        let mut finished: Option<wsgi::Finished> = None;
        loop {
            let work = py.detach(|| {
                // A panic here loses only the connections this worker holds (dropped, so
                // closed); the worker goes on.
                std::panic::catch_unwind(AssertUnwindSafe(|| {
                    self.between_requests(finished.take())
                }))
            });
            self.out.clear();
            match work {
                Ok(Work::Stop) => break,
                Ok(Work::Request(request)) => finished = Some(self.serve(py, request)),
                Ok(Work::Stream(job)) => self.serve_stream(py, job),
                Err(payload) => {
                    let state = self.server.config().py_state();
                    wsgi::report(py, &state, &wsgi::panic_error(payload));
                    self.drop_batch();
                }
            }
        }
    }

    /// Runs the application for a request (with the GIL).
    fn serve(&mut self, py: Python<'_>, request: Request) -> wsgi::Finished {
        let Request { conn, token, head } = request;
        let place = wsgi::Placement {
            slot: self.slot,
            hold: self.app_fast && self.may_hold(&conn, &head),
        };
        let context = &self.server.context;
        wsgi::serve(py, context, conn, token, head, &mut self.out, place)
    }

    /// Runs the application for an HTTP/2 stream (with the GIL).
    fn serve_stream(&mut self, py: Python<'_>, job: StreamJob) {
        wsgi::http2::serve(py, &self.server.context, job);
    }

    /// Without the GIL: writes the previous response (or holds it), then finds the next
    /// request. Requests and HTTP/2 streams for static files (`--static`) are answered here,
    /// on the way.
    fn between_requests(&mut self, mut finished: Option<wsgi::Finished>) -> Work {
        loop {
            let request = match self.next_after(finished.take()) {
                Work::Request(request) => request,
                Work::Stream(job) => match self.serve_static_stream(job) {
                    Some(job) => return Work::Stream(job),
                    None => continue,
                },
                other => return other,
            };
            let mounts = self.server.config().static_mounts();
            match mounts.filter(|m| m.covers(&request.conn, &request.head)) {
                Some(mounts) => finished = Some(self.serve_static(&mounts, request)),
                None => return Work::Request(request),
            }
        }
    }

    /// Answers an HTTP/2 stream for a static file (http2/static_files.rs); any other stream
    /// comes back, for the application. Not inlined: the HTTP/1.x loop above stays as small
    /// as it was (callgrind counted 30 more instructions per static request when it was).
    #[inline(never)]
    fn serve_static_stream(&mut self, job: StreamJob) -> Option<StreamJob> {
        let mounts = self.server.config().static_mounts();
        let checked = &job.request.checked;
        match mounts.filter(|m| m.covers_head(&checked.head, &checked.bytes)) {
            Some(mounts) => {
                http2::static_files::serve(&self.server.context, &mounts, job);
                None
            }
            None => Some(job),
        }
    }

    /// Answers a request for a static file, without the application.
    fn serve_static(&mut self, mounts: &static_files::Mounts, request: Request) -> wsgi::Finished {
        let Request { conn, token, head } = request;
        let place = wsgi::Placement {
            slot: self.slot,
            hold: self.may_hold(&conn, &head),
        };
        self.out.clear();
        let context = &self.server.context;
        static_files::serve(context, mounts, conn, token, head, &mut self.out, place)
    }

    fn next_after(&mut self, finished: Option<wsgi::Finished>) -> Work {
        if let Some(done) = finished {
            self.app_fast = done.micros < HOLD_APP_LIMIT_US;
            if let Some(request) = self.finish(done) {
                return Work::Request(request);
            }
        }
        self.next_work()
    }

    /// Whether the response to this request may be held for a batch write: other requests
    /// (or more pipelined ones on this connection) are already waiting for this worker, and
    /// the response is plain HTTP on a connection that stays open.
    fn may_hold(&self, conn: &Conn, head: &RequestHead) -> bool {
        head.keep_alive
            && !conn.is_tls()
            && self.batch.held.len() < HOLD_RESPONSES
            && (conn.has_buffered()
                || !self.batch.later.is_empty()
                || !self.server.ready.is_empty())
            && !self.server.is_stopping()
    }

    /// Writes what the request left in `out` (or holds it for the batch), then keeps the
    /// connection going: a pipelined request already buffered is returned as the next work;
    /// otherwise it is parked.
    fn finish(&mut self, done: wsgi::Finished) -> Option<Request> {
        let server = self.server;
        let counters = &server.context.counters;
        let wsgi::Finished {
            conn,
            token,
            keep_alive,
            body,
            hold,
            ..
        } = done;
        let Some(mut conn) = conn else {
            server.table().release(token);
            return None;
        };
        counters
            .bytes_in
            .fetch_add(conn.take_bytes_in(), Ordering::Relaxed);
        let out = &self.out;
        let outbox = server.context.outbox(self.slot);
        // A response partly waiting in the connection's backlog is never held: its rest must
        // follow the backlog, not be written around it by the batch.
        if hold && keep_alive && !conn.has_backlog() && outbox.has_room(out.len()) {
            counters
                .bytes_out
                .fetch_add(out.len() as u64, Ordering::Relaxed);
            outbox.push(conn.fd(), token, &[out]);
            counters.held_responses.fetch_add(1, Ordering::Relaxed);
            if conn.has_buffered() {
                // Pipelined: the next request is answered at once, its response queued after.
                conn.finish_request(body);
                return self.advance_pipelined(conn, token);
            }
            self.batch.held.push(HeldConn { token, conn, body });
            return None;
        }
        // Whatever is held goes first: it may include this connection's own bytes.
        self.write_batch();
        if !self.out.is_empty() {
            counters
                .bytes_out
                .fetch_add(self.out.len() as u64, Ordering::Relaxed);
            let deadline = Instant::now() + server.config().timeout();
            if conn.send(&[&self.out], deadline, conn::HIGH_WATER).is_err() {
                counters.socket_errors.fetch_add(1, Ordering::Relaxed);
                server.close(token, conn);
                return None;
            }
        }
        let after = if !keep_alive || server.is_stopping() {
            if !body.is_done() {
                // The client may still be sending its body: its unread bytes must not reset
                // the connection before it has read the response.
                AfterSend::Linger(conn::UNREAD_BODY)
            } else if conn.has_buffered() {
                AfterSend::Linger(conn::AFTER_ERROR)
            } else {
                AfterSend::Close
            }
        } else {
            AfterSend::Next(body)
        };
        match conn.start_sending(after) {
            // The client is slow to read: the rest goes out from epoll, without this thread.
            Ok(()) => server.await_writable(self.slot, conn, token),
            Err(AfterSend::Next(body)) => {
                conn.finish_request(body);
                server.advance(self.slot, conn, token, false)
            }
            Err(AfterSend::Linger(linger)) => {
                server.linger(token, conn, linger);
                None
            }
            Err(AfterSend::Close) => {
                server.close(token, conn);
                None
            }
        }
    }

    /// Moves on to the next pipelined request of a connection whose response is held. The
    /// connection must not be parked while its bytes wait in the outbox (another worker could
    /// answer its next request first), so an incomplete request makes it join the batch.
    fn advance_pipelined(&mut self, mut conn: Box<Conn>, token: u64) -> Option<Request> {
        let server = self.server;
        let config = server.config();
        match conn.next_request(&config.rules(), false) {
            Next::Request(head) => Some(server.start_request(self.slot, conn, token, head)),
            Next::Wait => {
                self.batch.held.push(HeldConn {
                    token,
                    conn,
                    body: Body::Done,
                });
                None
            }
            // (Only a connection's first bytes can open HTTP/2, not a pipelined request.)
            Next::Close | Next::Linger(_) | Next::Http2 => {
                self.write_batch();
                server.close(token, conn);
                None
            }
            Next::Error(err) => {
                self.write_batch();
                server.fail(token, conn, err);
                None
            }
        }
    }

    /// Writes the held responses and sends their connections on towards their next request;
    /// requests that arrived meanwhile are kept in `batch.later`.
    fn write_batch(&mut self) {
        let server = self.server;
        let outbox = server.context.outbox(self.slot);
        outbox.flush(server.config().timeout());
        let failed = outbox.take_failed();
        for HeldConn {
            token,
            mut conn,
            body,
        } in std::mem::take(&mut self.batch.held)
        {
            if failed.contains(&token) {
                server
                    .context
                    .counters
                    .socket_errors
                    .fetch_add(1, Ordering::Relaxed);
                server.close(token, conn);
                continue;
            }
            if server.is_stopping() {
                // As in `finish`: once stopping, a connection closes after its response.
                server.close(token, conn);
                continue;
            }
            conn.finish_request(body);
            if let Some(request) = server.advance(self.slot, conn, token, false) {
                self.batch.later.push_back(request);
            }
        }
    }

    /// After a panic: whatever the worker held is lost (the connections are closed).
    fn drop_batch(&mut self) {
        let server = self.server;
        let outbox = server.context.outbox(self.slot);
        outbox.flush(Duration::ZERO);
        outbox.take_failed();
        for held in std::mem::take(&mut self.batch.held) {
            server.close(held.token, held.conn);
        }
        for request in std::mem::take(&mut self.batch.later) {
            server.close(request.token, request.conn);
        }
    }

    fn next_work(&mut self) -> Work {
        let server = self.server;
        loop {
            if let Some(request) = self.batch.later.pop_front() {
                return Work::Request(request);
            }
            server.pool.set_state(self.slot, SlotState::Polling);
            if let Some(job) = self.take_stream() {
                return Work::Stream(job);
            }
            let ready = server.ready.pop();
            if ready.is_none() && !self.batch.held.is_empty() {
                // Nothing else to do now: the held responses go out before any waiting.
                self.write_batch();
                continue;
            }
            let (token, hup) = match ready {
                Some(ready) => (ready.token, ready.hup),
                // Stopping: serve the requests that already arrived, then exit.
                None if server.is_stopping() => match self.pending_after_stop() {
                    Some(ready) => ready,
                    None => return Work::Stop,
                },
                None => {
                    let idle_limit = server.config().thread_idle_timeout();
                    match server
                        .pool
                        .try_park(self.slot, idle_limit, || server.is_stopping())
                    {
                        Parked::Resumed => continue,
                        Parked::Exit => return Work::Stop,
                        Parked::No => {}
                    }
                    let n = server.poller.wait(&mut self.events, 1000);
                    if n == 0 {
                        continue;
                    }
                    if n > 1 {
                        let now = Instant::now();
                        let rest = self.events[1..n].iter().map(|e| Ready::of(e, now));
                        server.ready.lock().extend(rest);
                    }
                    poller::ready_of(&self.events[0])
                }
            };
            match token {
                LISTENER_TOKEN => server.accept_burst(),
                STOP_TOKEN => {}
                KICK_TOKEN => server.reset_kick(),
                token => {
                    let conn = server.table().checkout(token);
                    if let Some(mut conn) = conn {
                        if hup {
                            conn.note_peer_closed();
                        }
                        if let Some(request) = server.advance(self.slot, conn, token, true) {
                            return Work::Request(request);
                        }
                    }
                }
            }
        }
    }

    /// An HTTP/2 stream waiting for a worker, after this worker's held responses are out.
    fn take_stream(&mut self) -> Option<StreamJob> {
        let server = self.server;
        if !server.h2.has_jobs() {
            return None;
        }
        if !self.batch.held.is_empty() {
            self.write_batch();
        }
        let job = server.h2.take_job()?;
        server.begin_work(self.slot);
        Some(job)
    }

    /// After stop(): the next connection event still waiting, if any. A fresh connection
    /// (accepted, no request yet) may still be sending its first request: until the stop
    /// deadline, keep looking. (epoll answers at once here: the stop waker stays readable.)
    fn pending_after_stop(&mut self) -> Option<(u64, bool)> {
        let server = self.server;
        loop {
            let n = server.poller.wait(&mut self.events, 0);
            let now = Instant::now();
            let mut pending = self.events[..n]
                .iter()
                .filter(|e| {
                    !matches!(
                        poller::ready_of(e).0,
                        LISTENER_TOKEN | STOP_TOKEN | KICK_TOKEN
                    )
                })
                .map(|e| Ready::of(e, now));
            if let Some(first) = pending.next() {
                server.ready.lock().extend(pending);
                return Some((first.token, first.hup));
            }
            let in_grace =
                (*super::lock(&server.stop_deadline)).is_some_and(|deadline| now < deadline);
            // Responses still being written to slow readers are finished within the grace too.
            if server.h2.has_jobs() {
                // Back to `next_work`, which takes it.
                return Some((STOP_TOKEN, false));
            }
            let waiting = server.h2.connections() > 0
                || server
                    .table()
                    .any_parked(|c| c.awaits_first_request() || c.is_sending());
            if !in_grace || !waiting {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Server {
    /// Parks a connection whose response waits in its backlog, registered for writability
    /// (once per connection), after trying to write more at once.
    fn await_writable(&self, slot: usize, mut conn: Box<Conn>, token: u64) -> Option<Request> {
        if conn.wants_write_events() {
            let _ = self.poller.rearm(conn.fd(), token, Interest::EdgeReadWrite);
        }
        self.context
            .counters
            .responses_handed_off
            .fetch_add(1, Ordering::Relaxed);
        self.advance(slot, conn, token, true)
    }

    /// The kick waker was used to make a polling worker look at the ready queue.
    pub(super) fn reset_kick(&self) {
        self.kick_waker.reset();
        let _ = self
            .poller
            .rearm(self.kick_waker.fd(), KICK_TOKEN, Interest::OneShotRead);
    }
}
