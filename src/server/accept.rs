//! Accepting connections: a burst of accept4 calls per listener event, each new connection
//! set up (PROXY protocol, TLS session) and parked in the table, registered with epoll.
//!
//! Running out of file descriptors (EMFILE, ENFILE) pauses accepting for 100 ms at a time
//! (clients wait in the listen backlog; no busy loop) and is reported: a WARNING when it
//! starts, at most one more per second while it lasts, an INFO line when accepting resumes.

use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{lock, Server, LISTENER_TOKEN};
use crate::conn::Conn;
use crate::counters::accept_error_index;
use crate::net::listener;
use crate::net::poller::Interest;

const ACCEPTS_PER_EVENT: usize = 64;
/// Accepting pauses this long after running out of file descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// While the shortage lasts, at most one log line per this interval.
const REPORT_EVERY: Duration = Duration::from_secs(1);
const INFO: i32 = 20;
const WARNING: i32 = 30;

/// A shortage of file descriptors in progress.
#[derive(Debug)]
pub(super) struct Shortage {
    since: Instant,
    failures: u64,
    last_report: Instant,
    failures_reported: u64,
    /// Accepting is paused until then.
    resume_at: Option<Instant>,
}

impl Shortage {
    fn elapsed(&self, now: Instant) -> f64 {
        now.duration_since(self.since).as_secs_f64()
    }
}

/// The process's limit on open files (RLIMIT_NOFILE, soft), for the log.
fn open_files_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    ok.then_some(limit.rlim_cur)
}

impl Server {
    /// Accepts what the backlog holds (up to a burst), then re-arms the listener.
    pub(super) fn accept_burst(&self) {
        for _ in 0..ACCEPTS_PER_EVENT {
            match listener::accept(self.listen_fd) {
                Ok(Some(accepted)) => self.admit(accepted),
                Ok(None) => break,
                Err(e) => {
                    let counters = &self.context.counters;
                    counters.socket_errors.fetch_add(1, Ordering::Relaxed);
                    counters.accept_errors[accept_error_index(e.raw_os_error())]
                        .fetch_add(1, Ordering::Relaxed);
                    if matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE)) {
                        // Leave the listener disarmed for a moment; the monitor re-arms it.
                        self.out_of_descriptors(e.raw_os_error() == Some(libc::ENFILE));
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
            .rearm(self.listen_fd, LISTENER_TOKEN, Interest::OneShotRead);
    }

    /// Counts a failed accept for lack of descriptors, pauses accepting, and says so.
    fn out_of_descriptors(&self, system_wide: bool) {
        let now = Instant::now();
        let report = {
            let mut shortage = lock(&self.shortage);
            match shortage.as_mut() {
                None => {
                    *shortage = Some(Shortage {
                        since: now,
                        failures: 1,
                        last_report: now,
                        failures_reported: 1,
                        resume_at: Some(now + ACCEPT_BACKOFF),
                    });
                    self.short_of_descriptors.store(true, Ordering::Relaxed);
                    let which = if system_wide {
                        "too many open files in the system (ENFILE)".to_string()
                    } else {
                        let limit = open_files_limit().map_or("unknown".into(), |n| n.to_string());
                        format!("too many open files (EMFILE; this process may open {limit})")
                    };
                    Some(format!(
                        "cannot accept connections: {which}; accepting pauses, new clients \
                         wait in the listen backlog until descriptors are free"
                    ))
                }
                Some(s) => {
                    s.failures += 1;
                    s.resume_at = Some(now + ACCEPT_BACKOFF);
                    (now.duration_since(s.last_report) >= REPORT_EVERY).then(|| {
                        let message = format!(
                            "still out of file descriptors: {} failed accepts since the last \
                             report, {} in {:.0} s",
                            s.failures - s.failures_reported,
                            s.failures,
                            s.elapsed(now)
                        );
                        s.last_report = now;
                        s.failures_reported = s.failures;
                        message
                    })
                }
            }
        };
        if let Some(message) = report {
            self.context.log(WARNING, &message);
        }
    }

    /// Sets up a new connection and hands it to epoll.
    fn admit(&self, accepted: listener::Accepted) {
        if self.short_of_descriptors.load(Ordering::Relaxed) {
            self.descriptors_back();
        }
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
            Some(tls) => Box::new(Conn::tls(accepted.fd, tls, peer, self.config().http2())),
        };
        if config.proxy_protocol() {
            conn.expect_proxy_header();
        }
        let fd = conn.fd();
        let token = self.table().insert(conn);
        if self.poller.add(fd, token, Interest::EdgeRead).is_err() {
            if let Some(conn) = self.table().checkout(token) {
                self.close(token, conn);
            }
        }
    }

    /// An accept succeeded after a shortage: it is over.
    fn descriptors_back(&self) {
        let Some(shortage) = lock(&self.shortage).take() else {
            return;
        };
        self.short_of_descriptors.store(false, Ordering::Relaxed);
        let now = Instant::now();
        self.context.log(
            INFO,
            &format!(
                "accepting connections again after {:.1} s out of file descriptors ({} failed \
                 accepts)",
                shortage.elapsed(now),
                shortage.failures
            ),
        );
    }

    /// Re-arms the listener once an out-of-descriptors pause is over (called by the monitor).
    pub(super) fn resume_accepting_if_due(&self, now: Instant) {
        let due = {
            let mut shortage = lock(&self.shortage);
            match shortage.as_mut() {
                Some(Shortage {
                    resume_at: resume @ Some(_),
                    ..
                }) if resume.is_some_and(|at| at <= now) => {
                    *resume = None;
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
