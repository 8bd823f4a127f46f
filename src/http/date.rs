//! The `Date` header value, formatted at most once per second per thread.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

thread_local! {
    static CACHE: RefCell<(u64, [u8; 29])> = const { RefCell::new((0, [0; 29])) };
}

/// Appends the current IMF-fixdate (29 bytes, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`) to `out`.
pub fn append_now(out: &mut Vec<u8>) {
    out.extend_from_slice(&now());
}

/// The current IMF-fixdate.
pub fn now() -> [u8; 29] {
    let now = SystemTime::now();
    let secs = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    CACHE.with(|cell| {
        let mut cache = cell.borrow_mut();
        if cache.0 != secs {
            let text = httpdate::fmt_http_date(now);
            if text.len() == 29 {
                cache.1.copy_from_slice(text.as_bytes());
                cache.0 = secs;
            }
        }
        cache.1
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_imf_fixdate() {
        let mut out = Vec::new();
        super::append_now(&mut out);
        assert_eq!(out.len(), 29);
        assert!(out.ends_with(b" GMT"));
        assert!(httpdate::parse_http_date(std::str::from_utf8(&out).unwrap()).is_ok());
    }
}
