//! The monitor thread. Every tick (1 ms while requests run, 100 ms when idle) it:
//! - counts workers stuck in one request since the last tick, writes out the responses they
//!   hold (outbox.rs), and wakes a parked worker or starts a new one when every active worker
//!   is stuck, so a slow application never stalls other connections;
//! - when the pool cannot grow and `accepted_queue_size` is set, accepts and queues on the
//!   workers' behalf, answering 503 to requests that wait too long;
//! - every 100 ms, closes connections silent for longer than `timeout` (408 when a request
//!   was started or never made) and re-arms accepting after a descriptor shortage;
//! - gives the allocator's free memory back to the kernel once the server has been idle
//!   for a second after requests, and when the pool has retired threads (memory.rs).

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{lock, Ready, Server, EVENTS_PER_WAIT, KICK_TOKEN, LISTENER_TOKEN, STOP_TOKEN};
use crate::http::error;
use crate::http::response;
use crate::memory;
use crate::net::poller;

const BUSY_TICK: Duration = Duration::from_millis(1);
const IDLE_TICK: Duration = Duration::from_millis(100);
/// The monitor keeps its busy tick this long after the last request it saw, so that under
/// steady load workers need not wake it (a futex call) each time a request starts.
const BUSY_LINGER: Duration = Duration::from_millis(100);
const SWEEP_EVERY: Duration = Duration::from_millis(100);

impl Server {
    pub(super) fn monitor(self: std::sync::Arc<Self>) {
        let counters = &self.context.counters;
        let mut events = poller::empty_events(EVENTS_PER_WAIT);
        let mut last_seq = vec![0u64; self.pool.capacity()];
        let mut last_pops = 0u64;
        let mut last_sweep = Instant::now();
        let mut last_busy = Instant::now();
        let mut last_requests = 0u64;
        let mut trimmer = memory::Trimmer::new(self.pool.threads());
        while !self.is_stopping() {
            let handling = self.pool.observe(&mut last_seq, |slot| {
                // Its held responses must not wait for the slow request.
                let rescued = self.context.outbox(slot).write_ready();
                counters
                    .held_bytes_rescued
                    .fetch_add(rescued as u64, Ordering::Relaxed);
            });
            let pops = self.ready.pops.load(Ordering::Relaxed);
            let queue_stalled = pops == last_pops && (!self.ready.is_empty() || self.h2.has_jobs());
            last_pops = pops;
            let mut saturated = false;
            if self.pool.all_active_stuck() && !self.pool.unpark_one() {
                saturated = !matches!(self.spawn_worker(), Ok(true));
            } else if queue_stalled {
                self.kick_waker.wake();
            }
            if saturated {
                self.queue_while_saturated(&mut events);
            }
            if last_sweep.elapsed() >= SWEEP_EVERY {
                last_sweep = Instant::now();
                self.sweep();
                if let Some(log) = self.config().access_log() {
                    log.flush();
                }
            }
            let seen = counters.requests.load(Ordering::Relaxed);
            let served = handling > 0 || seen != last_requests;
            if served {
                last_busy = Instant::now();
            }
            last_requests = seen;
            if trimmer.due(served, last_busy.elapsed(), self.pool.threads()) {
                memory::trim();
            }
            self.monitor_sleep(last_busy.elapsed() >= BUSY_LINGER);
        }
        if let Some(log) = self.config().access_log() {
            log.flush();
        }
    }

    /// Sleeps one tick; an idle monitor says so, and a worker starting a request wakes it.
    fn monitor_sleep(&self, idle: bool) {
        let tick = if idle { IDLE_TICK } else { BUSY_TICK };
        let guard = lock(&self.monitor.lock);
        if idle {
            self.monitor.asleep.store(true, Ordering::Relaxed);
        }
        let _ = self.monitor.cv.wait_timeout(guard, tick);
        self.monitor.asleep.store(false, Ordering::Relaxed);
    }

    /// Every thread is busy and the pool cannot grow. With `accepted_queue_size` set, the
    /// monitor keeps accepting and queues what becomes ready; requests waiting beyond the
    /// first `accepted_queue_size` places for `accepted_queue_timeout` get a 503.
    fn queue_while_saturated(&self, events: &mut [poller::Event]) {
        let Some((size, timeout)) = self.config().accepted_queue() else {
            return;
        };
        let n = self.poller.wait(events, 0);
        let now = Instant::now();
        let mut accept = false;
        for ev in &events[..n] {
            match poller::ready_of(ev).0 {
                LISTENER_TOKEN => accept = true,
                STOP_TOKEN => {}
                KICK_TOKEN => self.reset_kick(),
                _ => self.ready.lock().push_back(Ready::of(ev, now)),
            }
        }
        if accept {
            self.accept_burst();
        }
        for token in self.take_overdue(size, timeout, now) {
            let conn = self.table().checkout(token);
            if let Some(mut conn) = conn {
                let mut out = Vec::with_capacity(128);
                response::encode_error(&mut out, &self.config().protocol(), error::OVERLOADED);
                // Only what the socket takes at once: the monitor never waits for a client.
                let _ = conn.write_all(&[&out], Instant::now());
                self.close(token, conn);
            }
        }
    }

    /// Removes from the ready queue the events beyond its first `size` places that waited
    /// `timeout` or longer.
    fn take_overdue(&self, size: usize, timeout: Duration, now: Instant) -> Vec<u64> {
        let mut ready = self.ready.lock();
        if ready.len() <= size {
            return Vec::new();
        }
        let mut kept = VecDeque::with_capacity(ready.len());
        let mut overdue = Vec::new();
        for (place, item) in ready.drain(..).enumerate() {
            if place >= size && now.duration_since(item.since) >= timeout {
                overdue.push(item.token);
            } else {
                kept.push_back(item);
            }
        }
        *ready = kept;
        overdue
    }

    /// Closes connections that waited too long for a request head: 408 when part of a head
    /// arrived or no request was ever made, silently for idle keep-alive connections and
    /// for those whose lingering close is over. The 408 is written only if the socket takes
    /// it at once: the monitor never waits for a client.
    fn sweep(&self) {
        let config = self.config();
        let timeout = config.timeout();
        let now = Instant::now();
        let expired = self.table().take_parked(|c| c.is_expired(now, timeout));
        for mut conn in expired {
            self.poller.delete(conn.fd());
            // A lingering close is over; a slow reader stopped reading its response.
            if conn.is_lingering() || conn.is_sending() {
                continue;
            }
            if conn.is_mid_request() || conn.requests_seen == 0 {
                let mut out = Vec::new();
                response::encode_error(&mut out, &config.protocol(), error::HEAD_TIMEOUT);
                let _ = conn.write_all(&[&out], Instant::now());
            }
        }
        self.resume_accepting_if_due(now);
    }
}
