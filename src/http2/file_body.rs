//! Response bodies read from a file (a large `--static` file), sent by the connection's
//! thread as the peer's window opens, so that no worker waits for a slow reader: the HTTP/2
//! form of the HTTP/1.1 backlog that sendfile(2) writes from the event loop (conn/backlog.rs).
//!
//! A worker sends the head, then leaves the body here (`Handoff::hand_over`); the session
//! (session.rs) polls it with the connection, reading at most what the stream may buffer
//! (the peer's window, bounded by `max_send_buffer_size`) at a time. A peer that stops reading
//! leaves the connection without progress: the sweep closes it after `timeout`, as any stalled
//! HTTP/2 connection (server/http2.rs).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use h2::SendStream;

use super::session::MAX_SEND_BUFFER;

/// Bytes read from the file at a time (at most what the stream may take).
const READ_CHUNK: usize = 64 * 1024;

/// The rest of a response body, in a file.
pub struct FileBody {
    body: SendStream<Bytes>,
    file: File,
    offset: u64,
    left: u64,
}

impl FileBody {
    /// `len` bytes of `file` from `offset`, for the stream whose head went out as `body`.
    pub fn new(body: SendStream<Bytes>, file: File, offset: u64, len: u64) -> FileBody {
        FileBody {
            body,
            file,
            offset,
            left: len,
        }
    }

    /// Sends what the stream can take now; `Ready` once the body ended (sent whole, or
    /// the stream was reset: by the peer, or here for a file that ended early).
    pub fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            if self.left == 0 {
                // An empty body never gets here: the head ended the stream.
                return Poll::Ready(());
            }
            let capacity = self.body.capacity();
            if capacity > 0 {
                if self.send_some(capacity).is_err() {
                    self.body.send_reset(h2::Reason::INTERNAL_ERROR);
                    return Poll::Ready(());
                }
                continue;
            }
            // No more than the stream may buffer: the rest of the connection's window stays
            // for its other streams.
            let wanted = self.left.min(MAX_SEND_BUFFER as u64) as usize;
            self.body.reserve_capacity(wanted);
            match self.body.poll_capacity(cx) {
                Poll::Ready(Some(Ok(_))) => continue,
                Poll::Ready(Some(Err(_)) | None) => return Poll::Ready(()),
                Poll::Pending => {
                    return match self.body.poll_reset(cx) {
                        Poll::Ready(_) => Poll::Ready(()),
                        Poll::Pending => Poll::Pending,
                    }
                }
            }
        }
    }

    /// Reads up to `capacity` bytes and queues them (END_STREAM with the last). An error is a
    /// file that ended early (shorter than it was) or a stream gone.
    fn send_some(&mut self, capacity: usize) -> Result<(), ()> {
        let want = (self.left.min(capacity.min(READ_CHUNK) as u64)) as usize;
        let mut chunk = vec![0u8; want];
        let n = self.file.read_at(&mut chunk, self.offset).map_err(|_| ())?;
        if n == 0 {
            return Err(());
        }
        chunk.truncate(n);
        self.offset += n as u64;
        self.left -= n as u64;
        let end = self.left == 0;
        self.body.send_data(Bytes::from(chunk), end).map_err(|_| ())
    }
}

/// Where the workers leave a connection's file bodies for its thread.
#[derive(Clone)]
pub struct Handoff {
    queue: Arc<Mutex<Vec<FileBody>>>,
    /// The connection's waker: the thread polls it (and so takes the queue) once woken.
    waker: Waker,
}

impl Handoff {
    pub fn new(queue: Arc<Mutex<Vec<FileBody>>>, waker: Waker) -> Handoff {
        Handoff { queue, waker }
    }

    pub fn hand_over(&self, body: FileBody) {
        lock(&self.queue).push(body);
        self.waker.wake_by_ref();
    }
}

/// The queue's lock (a panic while it was held left nothing half-done: a `Vec::push`).
pub fn lock(queue: &Mutex<Vec<FileBody>>) -> std::sync::MutexGuard<'_, Vec<FileBody>> {
    queue.lock().unwrap_or_else(|p| p.into_inner())
}
