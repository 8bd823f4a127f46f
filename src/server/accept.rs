//! Accepting connections: a burst of accept4 calls per listener event, each new connection
//! set up (PROXY protocol, TLS session) and parked in the table, registered with epoll.

use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{lock, Server, LISTENER_TOKEN};
use crate::conn::Conn;
use crate::net::listener;
use crate::net::poller::Interest;

const ACCEPTS_PER_EVENT: usize = 64;
/// Accepting pauses this long after running out of file descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

impl Server {
    /// Accepts what the backlog holds (up to a burst), then re-arms the listener.
    pub(super) fn accept_burst(&self) {
        for _ in 0..ACCEPTS_PER_EVENT {
            match listener::accept(self.listen_fd) {
                Ok(Some(accepted)) => self.admit(accepted),
                Ok(None) => break,
                Err(e) => {
                    self.context
                        .counters
                        .socket_errors
                        .fetch_add(1, Ordering::Relaxed);
                    if matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE)) {
                        // Out of descriptors: leave the listener disarmed for a moment; the
                        // monitor re-arms it. Pending clients wait in the backlog.
                        *lock(&self.accept_paused_until) = Some(Instant::now() + ACCEPT_BACKOFF);
                        return;
                    }
                    break;
                }
            }
        }
        self.rearm_listener();
    }

    fn rearm_listener(&self) {
        let _ = self
            .poller
            .rearm(self.listen_fd, LISTENER_TOKEN, Interest::ReadOnce);
    }

    /// Sets up a new connection and hands it to epoll.
    fn admit(&self, accepted: listener::Accepted) {
        let config = self.config();
        self.context
            .counters
            .accepts
            .fetch_add(1, Ordering::Relaxed);
        let mut peer = accepted.peer;
        let (creds, resolve) = config.peercreds();
        if creds && accepted.is_unix {
            peer.creds = listener::peer_creds(accepted.fd.as_raw_fd(), resolve);
        }
        let mut conn = match config.tls() {
            None => Box::new(Conn::plain(accepted.fd, peer)),
            Some(tls) => match tls.accept() {
                Some(session) => Box::new(Conn::tls(accepted.fd, session, peer)),
                None => return,
            },
        };
        if config.proxy_protocol() {
            conn.expect_proxy_header();
        }
        let fd = conn.fd();
        let token = self.table().insert(conn);
        if self.poller.add(fd, token, Interest::ReadEdge).is_err() {
            if let Some(conn) = self.table().checkout(token) {
                self.close(token, conn);
            }
        }
    }

    /// Re-arms the listener once an out-of-descriptors pause is over (called by the monitor).
    pub(super) fn resume_accepting_if_due(&self, now: Instant) {
        let due = {
            let mut paused = lock(&self.accept_paused_until);
            match *paused {
                Some(until) if until <= now => {
                    *paused = None;
                    true
                }
                _ => false,
            }
        };
        if due {
            self.rearm_listener();
        }
    }
}
