//! Small files kept in memory between requests, so that a hot stylesheet costs no open(2),
//! fstat(2), read(2) and close(2) per request. An entry is trusted for `FRESH_FOR` after it
//! was read, then the file is opened again: a change on disk shows within that time. A path
//! found missing is remembered the same way (a precompressed sibling that does not exist is
//! looked for once a second, not on every request). Larger files are never kept: they are
//! opened for each request and sent by sendfile(2).
//!
//! Bounded: at most `MAX_ENTRIES` paths and `MAX_BYTES` of file bodies per directory; when
//! either is reached the cache starts afresh (requests for random missing paths cannot grow it).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::open::{Dir, OpenFile};
use crate::http::static_files::conditional::Validators;

/// Files up to this size are kept in memory.
pub const MAX_BODY: u64 = 16 * 1024;
/// How long a cached answer is used before the file is looked at again.
pub const FRESH_FOR: Duration = Duration::from_secs(1);
const MAX_ENTRIES: usize = 4096;
const MAX_BYTES: usize = 8 * 1024 * 1024;

/// A small file's bytes and validators, as read.
pub struct Small {
    pub body: Box<[u8]>,
    pub validators: Validators,
}

/// A regular file found under the directory.
pub enum Found {
    Small(Arc<Small>),
    /// Too large to keep: open, to be sent from the descriptor.
    Large(OpenFile),
}

impl Found {
    pub fn size(&self) -> u64 {
        match self {
            Found::Small(small) => small.body.len() as u64,
            Found::Large(open) => open.size,
        }
    }

    pub fn validators(&self) -> &Validators {
        match self {
            Found::Small(small) => &small.validators,
            Found::Large(open) => &open.validators,
        }
    }
}

#[derive(Clone)]
enum Slot {
    Present(Arc<Small>),
    Absent,
}

#[derive(Default)]
struct Slots {
    map: HashMap<Box<[u8]>, (Slot, Instant)>,
    bytes: usize,
}

#[derive(Default)]
pub struct Cache {
    slots: Mutex<Slots>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cache")
    }
}

impl Cache {
    /// The regular file at `rel` under `dir` (see `Dir::open_regular`), from memory while
    /// the entry is fresh.
    pub fn find(&self, dir: &Dir, rel: &[u8], now: Instant) -> Option<Found> {
        if let Some(slot) = self.fresh(rel, now) {
            return match slot {
                Slot::Present(small) => Some(Found::Small(small)),
                Slot::Absent => None,
            };
        }
        let Some(open) = dir.open_regular(rel) else {
            self.store(rel, Slot::Absent, now);
            return None;
        };
        if open.size > MAX_BODY {
            self.forget(rel);
            return Some(Found::Large(open));
        }
        let mut body = vec![0u8; open.size as usize].into_boxed_slice();
        if std::os::unix::fs::FileExt::read_exact_at(&open.file, &mut body, 0).is_err() {
            // Shorter than fstat said (being rewritten): send what the descriptor gives.
            self.forget(rel);
            return Some(Found::Large(open));
        }
        let small = Arc::new(Small {
            body,
            validators: open.validators,
        });
        self.store(rel, Slot::Present(Arc::clone(&small)), now);
        Some(Found::Small(small))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn fresh(&self, rel: &[u8], now: Instant) -> Option<Slot> {
        let slots = self.lock();
        let (slot, read_at) = slots.map.get(rel)?;
        (now.saturating_duration_since(*read_at) < FRESH_FOR).then(|| slot.clone())
    }

    fn store(&self, rel: &[u8], slot: Slot, now: Instant) {
        let size = match &slot {
            Slot::Present(small) => small.body.len(),
            Slot::Absent => 0,
        };
        let mut slots = self.lock();
        let slots = &mut *slots;
        if slots.map.len() >= MAX_ENTRIES || slots.bytes + size > MAX_BYTES {
            slots.map.clear();
            slots.bytes = 0;
        }
        if let Some((Slot::Present(old), _)) = slots.map.insert(rel.into(), (slot, now)) {
            slots.bytes -= old.body.len();
        }
        slots.bytes += size;
    }

    fn forget(&self, rel: &[u8]) {
        let mut slots = self.lock();
        if let Some((Slot::Present(old), _)) = slots.map.remove(rel) {
            slots.bytes -= old.body.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_reused_while_fresh_then_read_again() {
        let base = std::env::temp_dir().join(format!("stogie-cache-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).unwrap();
        std::fs::write(base.join("a.css"), b"one").unwrap();
        std::fs::write(base.join("big"), vec![0u8; MAX_BODY as usize + 1]).unwrap();
        let dir = Dir::open(base.to_str().unwrap()).unwrap();
        let cache = Cache::default();
        let t0 = Instant::now();
        let body = |found: Option<Found>| match found {
            Some(Found::Small(small)) => small.body.to_vec(),
            _ => panic!("not small"),
        };
        assert_eq!(body(cache.find(&dir, b"a.css", t0)), b"one");
        std::fs::write(base.join("a.css"), b"two").unwrap();
        assert_eq!(
            body(cache.find(&dir, b"a.css", t0)),
            b"one",
            "fresh: from memory"
        );
        assert!(cache.find(&dir, b"missing", t0).is_none());
        let later = t0 + FRESH_FOR;
        assert_eq!(body(cache.find(&dir, b"a.css", later)), b"two");
        assert_eq!(cache.lock().bytes, 3);
        assert!(matches!(
            cache.find(&dir, b"big", t0),
            Some(Found::Large(_))
        ));
        assert!(
            !cache.lock().map.contains_key(&b"big"[..]),
            "large files are not kept"
        );
        for i in 0..MAX_ENTRIES + 1 {
            cache.find(&dir, format!("none{i}").as_bytes(), t0);
        }
        assert!(cache.lock().map.len() <= MAX_ENTRIES);
        std::fs::remove_dir_all(base).unwrap();
    }
}
