//! The `Date` header value, formatted at most once per second per thread.

use std::cell::RefCell;
use std::time::{Duration, UNIX_EPOCH};

thread_local! {
    static CACHE: RefCell<(u64, [u8; 29])> = const { RefCell::new((0, [0; 29])) };
}

/// Appends the current IMF-fixdate (29 bytes, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`) to `out`.
pub fn append_now(out: &mut Vec<u8>) {
    out.extend_from_slice(&now());
}

/// The current IMF-fixdate.
pub fn now() -> [u8; 29] {
    let secs = unix_seconds();
    CACHE.with(|cell| {
        let mut cache = cell.borrow_mut();
        if cache.0 != secs {
            let text = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs));
            if text.len() == 29 {
                cache.1.copy_from_slice(text.as_bytes());
                cache.0 = secs;
            }
        }
        cache.1
    })
}

/// Seconds since the epoch from the coarse wall clock: the kernel's last tick, read without
/// the TSC (about 9 ns against 40 here, once per response), at most a tick (1-10 ms) behind,
/// which a value in whole seconds can afford.
fn unix_seconds() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec; CLOCK_REALTIME_COARSE exists since Linux 2.6.32.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) };
    if rc == 0 {
        ts.tv_sec.max(0) as u64
    } else {
        std::time::SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_imf_fixdate() {
        let mut out = Vec::new();
        super::append_now(&mut out);
        assert_eq!(out.len(), 29);
        assert!(out.ends_with(b" GMT"));
        let sent = httpdate::parse_http_date(std::str::from_utf8(&out).unwrap()).unwrap();
        let wall = std::time::SystemTime::now();
        let behind = wall.duration_since(sent).unwrap();
        assert!(
            behind < std::time::Duration::from_secs(2),
            "{behind:?} behind"
        );
    }
}
