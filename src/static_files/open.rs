//! Opening a file under a static directory without ever leaving it. On Linux 5.6 and later,
//! openat2(2) with `RESOLVE_BENEATH` resolves the path (symlinks included) inside the
//! directory or fails, atomically. Where openat2 is missing (older kernels, or a seccomp
//! filter that refuses it), the canonical path must start with the directory's canonical path.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::http::static_files::conditional::Validators;

/// openat2 failed with ENOSYS or EPERM once: the fallback is used from then on.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// Flags for the files served: O_NONBLOCK so that a FIFO placed in the directory cannot
/// block a worker in open(2) (it is then refused as not a regular file).
const FILE_FLAGS: libc::c_int =
    libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOCTTY | libc::O_NONBLOCK;

/// A static directory, held open.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    /// Canonical (symlinks resolved), for the fallback and for messages.
    path: PathBuf,
}

/// A regular file opened for sending, with what its validators are made of.
pub struct OpenFile {
    pub file: File,
    pub size: u64,
    pub validators: Validators,
}

impl Dir {
    /// Opens the directory `path` (resolving symlinks in it once, now).
    pub fn open(path: &str) -> Result<Dir, String> {
        let path =
            std::fs::canonicalize(path).map_err(|e| format!("static directory {path:?}: {e}"))?;
        if !path.is_dir() {
            return Err(format!("static directory {path:?} is not a directory"));
        }
        let fd = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(&path)
            .map_err(|e| format!("static directory {path:?}: {e}"))?;
        Ok(Dir {
            fd: OwnedFd::from(fd),
            path,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The regular file at `rel` (relative, without `.`/`..` segments: see
    /// `http::static_files::path`), if it exists and stays inside the directory. Directories,
    /// devices, sockets and FIFOs are `None`.
    pub fn open_regular(&self, rel: &[u8]) -> Option<OpenFile> {
        let file = self.open_beneath(rel).ok()?;
        let meta = file.metadata().ok()?;
        if !meta.file_type().is_file() {
            return None;
        }
        let mtime_secs = u64::try_from(meta.mtime()).unwrap_or(0);
        let mtime_nanos = u32::try_from(meta.mtime_nsec()).unwrap_or(0);
        Some(OpenFile {
            size: meta.len(),
            validators: Validators::new(mtime_secs, mtime_nanos, meta.len()),
            file,
        })
    }

    fn open_beneath(&self, rel: &[u8]) -> io::Result<File> {
        if !NO_OPENAT2.load(Ordering::Relaxed) {
            match self.openat2(rel) {
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EPERM)) => {
                    NO_OPENAT2.store(true, Ordering::Relaxed);
                }
                result => return result,
            }
        }
        self.open_checked(rel)
    }

    fn openat2(&self, rel: &[u8]) -> io::Result<File> {
        let name = CString::new(rel).map_err(|_| io::ErrorKind::InvalidInput)?;
        // SAFETY: open_how is plain data; all-zero is its documented "no options" value.
        let mut how: libc::open_how = unsafe { std::mem::zeroed() };
        how.flags = FILE_FLAGS as u64;
        how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS;
        // SAFETY: valid directory descriptor, NUL-terminated path and a correctly sized
        // open_how; the returned descriptor is owned by the File.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                self.fd.as_raw_fd(),
                name.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new descriptor nothing else owns.
        Ok(unsafe { File::from_raw_fd(fd as libc::c_int) })
    }

    /// Without openat2: the canonical path must stay inside the directory; the file is then
    /// opened by that path, refusing a symlink swapped in meanwhile as its last component.
    fn open_checked(&self, rel: &[u8]) -> io::Result<File> {
        let wanted = self.path.join(std::ffi::OsStr::from_bytes(rel));
        let real = std::fs::canonicalize(wanted)?;
        if !real.starts_with(&self.path) {
            return Err(io::ErrorKind::PermissionDenied.into());
        }
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(FILE_FLAGS | libc::O_NOFOLLOW)
            .open(real)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> (PathBuf, Dir) {
        let base = std::env::temp_dir().join(format!(
            "stogie-static-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&base);
        let root = base.join("root");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/a.txt"), b"abc").unwrap();
        std::fs::write(base.join("secret"), b"no").unwrap();
        std::os::unix::fs::symlink("sub/a.txt", root.join("inside")).unwrap();
        std::os::unix::fs::symlink("../secret", root.join("outside")).unwrap();
        std::os::unix::fs::symlink(base.join("secret"), root.join("absolute")).unwrap();
        let dir = Dir::open(root.to_str().unwrap()).unwrap();
        (base, dir)
    }

    #[test]
    fn stays_inside_with_either_opener() {
        let (base, dir) = tree();
        for open in [Dir::openat2, Dir::open_checked] {
            assert!(open(&dir, b"sub/a.txt").is_ok());
            assert!(open(&dir, b"inside").is_ok());
            assert!(open(&dir, b"outside").is_err());
            assert!(open(&dir, b"absolute").is_err());
            assert!(open(&dir, b"missing").is_err());
        }
        let file = dir.open_regular(b"sub/a.txt").unwrap();
        assert_eq!(file.size, 3);
        assert!(dir.open_regular(b"sub").is_none(), "a directory is no file");
        assert!(Dir::open(base.join("secret").to_str().unwrap()).is_err());
        assert!(Dir::open(base.join("none").to_str().unwrap()).is_err());
        std::fs::remove_dir_all(base).unwrap();
    }
}
