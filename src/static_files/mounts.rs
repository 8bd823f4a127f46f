//! The `--static` mappings: URL prefixes and the directories they serve, held open. A leaf
//! module (the configuration holds a `Mounts`); the serving is in `mod.rs`.

use super::cache::Cache;
use super::open::Dir;
use crate::conn::Conn;
use crate::http::request::RequestHead;

/// One `PREFIX=DIR` mapping.
#[derive(Debug)]
pub(super) struct Mount {
    /// Always ends with `/`.
    prefix: Vec<u8>,
    pub(super) dir: Dir,
    pub(super) cache: Cache,
}

/// The configured mappings, longest prefix first.
#[derive(Debug)]
pub struct Mounts {
    mounts: Vec<Mount>,
}

impl Mounts {
    /// Opens each directory; the prefixes must start with `/` (a `/` is added at the end
    /// when missing) and be distinct.
    pub fn new(pairs: &[(String, String)]) -> Result<Mounts, String> {
        let mut mounts: Vec<Mount> = Vec::with_capacity(pairs.len());
        for (prefix, dir) in pairs {
            if !prefix.starts_with('/') || prefix.contains('\0') {
                return Err(format!("static prefix {prefix:?} must start with '/'"));
            }
            let mut prefix = prefix.clone().into_bytes();
            if !prefix.ends_with(b"/") {
                prefix.push(b'/');
            }
            if mounts.iter().any(|m| m.prefix == prefix) {
                return Err(format!(
                    "static prefix {:?} is given twice",
                    String::from_utf8_lossy(&prefix)
                ));
            }
            mounts.push(Mount {
                prefix,
                dir: Dir::open(dir)?,
                cache: Cache::default(),
            });
        }
        mounts.sort_by_key(|m| std::cmp::Reverse(m.prefix.len()));
        Ok(Mounts { mounts })
    }

    /// The mount whose prefix starts `path` (as sent), and the rest of the path after it.
    pub(super) fn find<'p>(&self, path: &'p [u8]) -> Option<(&Mount, &'p [u8])> {
        self.mounts
            .iter()
            .find(|m| path.starts_with(&m.prefix))
            .map(|m| (m, &path[m.prefix.len()..]))
    }

    /// Whether the request is for a static file (everything under a prefix is, a missing
    /// file included: it gets a 404 here, never the application).
    pub fn covers(&self, conn: &Conn, head: &RequestHead) -> bool {
        self.covers_head(head, conn.head_bytes())
    }

    /// The same for a head whose bytes are `buf` (an HTTP/2 stream's, laid out).
    pub fn covers_head(&self, head: &RequestHead, buf: &[u8]) -> bool {
        !head.is_options_star && self.find(head.path.get(buf)).is_some()
    }

    /// (prefix, canonical directory) of each mount, for messages and tests.
    pub fn describe(&self) -> Vec<(String, String)> {
        self.mounts
            .iter()
            .map(|m| {
                (
                    String::from_utf8_lossy(&m.prefix).into_owned(),
                    m.dir.path().display().to_string(),
                )
            })
            .collect()
    }
}
