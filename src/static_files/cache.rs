//! Small files kept in memory between requests, so that a hot stylesheet costs no open(2),
//! fstat(2), read(2) and close(2) per request, and no path decoding, `Content-Type` lookup
//! or head formatting either: an entry is found by the path as sent and keeps its `200`
//! head once made (`Small::whole_head`). An entry is trusted for `FRESH_FOR` after it
//! was read, then the file is opened again: a change on disk shows within that time. A path
//! found missing is remembered the same way (a precompressed sibling that does not exist is
//! looked for once a second, not on every request). Larger files are never kept: they are
//! opened for each request and sent by sendfile(2).
//!
//! Bounded: at most `MAX_ENTRIES` paths and `MAX_BYTES` of file bodies per directory; when
//! either is reached the cache starts afresh (requests for random missing paths cannot grow it).

use std::collections::HashMap;
use std::fs::File;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::open::{Dir, OpenFile};
use crate::http::response::AppHead;
use crate::http::static_files::conditional::Validators;
use crate::http::static_files::negotiate;
use crate::http::static_files::path;

/// Files up to this size are kept in memory.
pub const MAX_BODY: u64 = 16 * 1024;
/// How long a cached answer is used before the file is looked at again.
pub const FRESH_FOR: Duration = Duration::from_secs(1);
const MAX_ENTRIES: usize = 4096;
const MAX_BYTES: usize = 8 * 1024 * 1024;
/// Longest path (after the prefix, as sent) looked up without an allocation.
const KEY_ON_STACK: usize = 256;

/// What a response says about a file besides its bytes.
pub struct Meta {
    pub validators: Validators,
    /// `Content-Type` by the name's extension.
    pub content_type: Arc<str>,
}

/// A small file's bytes and what is said about them, as read.
pub struct Small {
    pub body: Box<[u8]>,
    pub meta: Meta,
    /// The status and header lines of a `200` with the whole file, made on first use: [0]
    /// as the file named, [1] as a precompressed sibling (`x.css.gz` sent for `x.css`).
    whole: [OnceLock<AppHead>; 2],
}

impl Small {
    /// The head of a `200` with the whole file (`as_sibling`: sent with a content coding for
    /// the name without its `.gz`/`.br`), made by `make` the first time.
    pub fn whole_head(&self, as_sibling: bool, make: impl FnOnce() -> AppHead) -> &AppHead {
        self.whole[usize::from(as_sibling)].get_or_init(make)
    }
}

/// A regular file too large to keep: open, to be sent from the descriptor.
pub struct Large {
    pub file: File,
    pub size: u64,
    pub meta: Meta,
}

/// A regular file found under the directory.
pub enum Found {
    Small(Arc<Small>),
    Large(Large),
}

impl Found {
    pub fn size(&self) -> u64 {
        match self {
            Found::Small(small) => small.body.len() as u64,
            Found::Large(large) => large.size,
        }
    }

    pub fn meta(&self) -> &Meta {
        match self {
            Found::Small(small) => &small.meta,
            Found::Large(large) => &large.meta,
        }
    }
}

#[derive(Clone)]
enum Slot {
    Present(Arc<Small>),
    Absent,
}

/// Entries by the path after the mount's prefix as the client sent it (before decoding), so
/// that a hit costs no decoding; only a path that `path::relative` accepts is ever stored.
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
    /// The regular file that `raw` (the request path after the prefix, as sent) followed by
    /// `suffix` (`b""`, or a precompressed sibling's `.gz`/`.br`) names under `dir`, from
    /// memory while the entry is fresh. `None` for a path `path::relative` refuses and for
    /// anything `Dir::open_regular` does not open.
    pub fn find(&self, dir: &Dir, raw: &[u8], suffix: &[u8], now: Instant) -> Option<Found> {
        let mut on_stack = [0u8; KEY_ON_STACK];
        let on_heap: Vec<u8>;
        let key = if raw.len() + suffix.len() <= KEY_ON_STACK {
            let key = &mut on_stack[..raw.len() + suffix.len()];
            key[..raw.len()].copy_from_slice(raw);
            key[raw.len()..].copy_from_slice(suffix);
            &*key
        } else {
            on_heap = [raw, suffix].concat();
            &on_heap
        };
        if let Some(slot) = self.fresh(key, now) {
            return match slot {
                Slot::Present(small) => Some(Found::Small(small)),
                Slot::Absent => None,
            };
        }
        let rel = path::relative(key)?;
        let Some(OpenFile {
            file,
            size,
            validators,
        }) = dir.open_regular(&rel)
        else {
            self.store(key, Slot::Absent, now);
            return None;
        };
        let meta = Meta {
            content_type: negotiate::content_type(&rel).into(),
            validators,
        };
        if size > MAX_BODY {
            self.forget(key);
            return Some(Found::Large(Large { file, size, meta }));
        }
        let mut body = vec![0u8; size as usize].into_boxed_slice();
        if std::os::unix::fs::FileExt::read_exact_at(&file, &mut body, 0).is_err() {
            // Shorter than fstat said (being rewritten): send what the descriptor gives.
            self.forget(key);
            return Some(Found::Large(Large { file, size, meta }));
        }
        let small = Arc::new(Small {
            body,
            meta,
            whole: Default::default(),
        });
        self.store(key, Slot::Present(Arc::clone(&small)), now);
        Some(Found::Small(small))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn fresh(&self, key: &[u8], now: Instant) -> Option<Slot> {
        let slots = self.lock();
        let (slot, read_at) = slots.map.get(key)?;
        (now.saturating_duration_since(*read_at) < FRESH_FOR).then(|| slot.clone())
    }

    fn store(&self, key: &[u8], slot: Slot, now: Instant) {
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
        if let Some((Slot::Present(old), _)) = slots.map.insert(key.into(), (slot, now)) {
            slots.bytes -= old.body.len();
        }
        slots.bytes += size;
    }

    fn forget(&self, key: &[u8]) {
        let mut slots = self.lock();
        if let Some((Slot::Present(old), _)) = slots.map.remove(key) {
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
        assert_eq!(body(cache.find(&dir, b"a.css", b"", t0)), b"one");
        std::fs::write(base.join("a.css"), b"two").unwrap();
        assert_eq!(
            body(cache.find(&dir, b"a.css", b"", t0)),
            b"one",
            "fresh: from memory"
        );
        assert!(cache.find(&dir, b"missing", b"", t0).is_none());
        let later = t0 + FRESH_FOR;
        assert_eq!(body(cache.find(&dir, b"a.css", b"", later)), b"two");
        assert_eq!(cache.lock().bytes, 3);
        assert!(matches!(
            cache.find(&dir, b"big", b"", t0),
            Some(Found::Large(_))
        ));
        assert!(
            !cache.lock().map.contains_key(&b"big"[..]),
            "large files are not kept"
        );
        // Found by the path as sent: an encoded spelling is an entry of its own, a sibling
        // is the path plus its suffix, and a refused path is never stored.
        assert_eq!(body(cache.find(&dir, b"a%2Ecss", b"", later)), b"two");
        std::fs::write(base.join("a.css.gz"), b"gz").unwrap();
        assert_eq!(body(cache.find(&dir, b"a.css", b".gz", later)), b"gz");
        assert!(cache.find(&dir, b"../a.css", b"", later).is_none());
        assert!(!cache.lock().map.contains_key(&b"../a.css"[..]));
        let long = [b"x/".repeat(KEY_ON_STACK).as_slice(), b"a.css"].concat();
        assert!(
            cache.find(&dir, &long, b"", later).is_none(),
            "no such directory"
        );
        for i in 0..MAX_ENTRIES + 1 {
            cache.find(&dir, format!("none{i}").as_bytes(), b"", t0);
        }
        assert!(cache.lock().map.len() <= MAX_ENTRIES);
        std::fs::remove_dir_all(base).unwrap();
    }
}
