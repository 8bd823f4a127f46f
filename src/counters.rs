//! The engine's counters: what `server.stats`, `server._engine.stats()` and the Prometheus
//! endpoint report. Written with relaxed atomics on the request path; read as a snapshot.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::conn::BodyGauges;

/// Upper bounds of the latency histogram buckets, in microseconds.
pub const LATENCY_BOUNDS_US: [u64; 12] = [
    1_000, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    5_000_000, 10_000_000,
];

/// Counters shown by `server.stats` and the tests.
#[derive(Default)]
pub struct Counters {
    pub accepts: AtomicU64,
    pub requests: AtomicU64,
    pub socket_errors: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    /// Responses by status class: 1xx to 5xx.
    pub responses: [AtomicU64; 5],
    /// Request durations, one count per bucket of `LATENCY_BOUNDS_US` (the last is +Inf).
    pub latency: [AtomicU64; LATENCY_BOUNDS_US.len() + 1],
    pub latency_sum_us: AtomicU64,
    /// Responses held for a batch write (outbox.rs), and bytes of them the monitor wrote
    /// because their worker was stuck in a slow request.
    pub held_responses: AtomicU64,
    pub held_bytes_rescued: AtomicU64,
    /// Responses whose end was left to epoll because the client was slow to read them.
    pub responses_handed_off: AtomicU64,
    /// Responses of the static-file path (`--static`), which never enter Python.
    pub static_responses: AtomicU64,
    /// Failed accept() calls by reason (`ACCEPT_ERRORS`).
    pub accept_errors: [AtomicU64; ACCEPT_ERRORS.len()],
}

/// Why accept() failed: out of descriptors in the process, in the system, or anything else.
pub const ACCEPT_ERRORS: [&str; 3] = ["emfile", "enfile", "other"];

/// The index in `Counters::accept_errors` of an accept() error number.
pub fn accept_error_index(errno: Option<i32>) -> usize {
    match errno {
        Some(libc::EMFILE) => 0,
        Some(libc::ENFILE) => 1,
        _ => 2,
    }
}

/// What the server adds to the counters in a snapshot: figures kept elsewhere.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gauges<'a> {
    pub open_connections: usize,
    /// Connections whose response waits for the client to read it (no thread held).
    pub responses_sending: usize,
    pub threads: usize,
    pub idle_threads: usize,
    /// Request bodies collected before the application runs (conn/intake.rs).
    pub bodies: Option<&'a BodyGauges>,
    /// HTTP/2 connections (also counted in `open_connections`) and their streams queued or
    /// running (server/http2.rs).
    pub http2_connections: usize,
    pub http2_streams: usize,
}

impl Counters {
    /// Counts one response: its status class and how long the request took.
    pub fn record_response(&self, status: u16, micros: u64) {
        if let Some(class) = self.responses.get((status / 100).wrapping_sub(1) as usize) {
            class.fetch_add(1, Ordering::Relaxed);
        }
        let bucket = LATENCY_BOUNDS_US
            .iter()
            .position(|&b| micros <= b)
            .unwrap_or(LATENCY_BOUNDS_US.len());
        self.latency[bucket].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us.fetch_add(micros, Ordering::Relaxed);
    }

    /// Every statistic by name, in a fixed order: the one definition of the stats keys
    /// (`_core.STAT_KEYS` is `snapshot`'s names).
    pub fn snapshot(&self, gauges: Gauges<'_>) -> Vec<(String, u64)> {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut stats: Vec<(String, u64)> = vec![
            ("accepts".into(), get(&self.accepts)),
            ("requests".into(), get(&self.requests)),
            ("socket_errors".into(), get(&self.socket_errors)),
            ("open_connections".into(), gauges.open_connections as u64),
            ("threads".into(), gauges.threads as u64),
            ("idle_threads".into(), gauges.idle_threads as u64),
            (
                "in_flight".into(),
                gauges.threads.saturating_sub(gauges.idle_threads) as u64,
            ),
            ("bytes_in".into(), get(&self.bytes_in)),
            ("bytes_out".into(), get(&self.bytes_out)),
            ("held_responses".into(), get(&self.held_responses)),
            ("held_bytes_rescued".into(), get(&self.held_bytes_rescued)),
            (
                "responses_handed_off".into(),
                get(&self.responses_handed_off),
            ),
            ("static_responses".into(), get(&self.static_responses)),
        ];
        let no_bodies = BodyGauges::default();
        let bodies = gauges.bodies.unwrap_or(&no_bodies);
        stats.extend([
            ("responses_sending".into(), gauges.responses_sending as u64),
            ("bodies_collecting".into(), get(&bodies.collecting)),
            ("body_bytes_in_memory".into(), get(&bodies.in_memory)),
            ("body_bytes_spooled".into(), get(&bodies.spooled)),
            ("body_spool_refusals".into(), get(&bodies.spool_refusals)),
            ("http2_connections".into(), gauges.http2_connections as u64),
            ("http2_streams".into(), gauges.http2_streams as u64),
        ]);
        for (reason, count) in ACCEPT_ERRORS.iter().zip(&self.accept_errors) {
            stats.push((format!("accept_errors_{reason}"), get(count)));
        }
        for (i, class) in self.responses.iter().enumerate() {
            stats.push((format!("responses_{}xx", i + 1), get(class)));
        }
        // Cumulative, as Prometheus histograms are: bucket i counts durations <= bound i.
        let mut cumulative = 0;
        for (i, bucket) in self.latency.iter().enumerate() {
            cumulative += get(bucket);
            stats.push((format!("latency_bucket_{i}"), cumulative));
        }
        stats.push(("latency_sum_us".into(), get(&self.latency_sum_us)));
        stats
    }

    /// The names `snapshot` reports, in its order.
    pub fn stat_keys() -> Vec<String> {
        Counters::default()
            .snapshot(Gauges::default())
            .into_iter()
            .map(|(key, _)| key)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_buckets_are_cumulative() {
        let c = Counters::default();
        c.record_response(200, 500);
        c.record_response(404, 7_000);
        c.record_response(503, 20_000_000);
        let stats: std::collections::HashMap<_, _> =
            c.snapshot(Gauges::default()).into_iter().collect();
        assert_eq!(stats["latency_bucket_0"], 1);
        assert_eq!(stats["latency_bucket_1"], 1);
        assert_eq!(stats["latency_bucket_2"], 2);
        assert_eq!(stats["latency_bucket_12"], 3);
        assert_eq!(stats["responses_2xx"], 1);
        assert_eq!(stats["responses_4xx"], 1);
        assert_eq!(stats["responses_5xx"], 1);
        assert_eq!(stats["latency_sum_us"], 20_007_500);
    }

    #[test]
    fn keys_are_unique_and_match_the_snapshot() {
        let keys = Counters::stat_keys();
        let mut sorted = keys.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), keys.len());
        assert!(keys.contains(&"in_flight".to_string()));
    }
}
