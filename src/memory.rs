//! Keeping glibc's malloc from holding on to freed memory in a long-running server.
//!
//! glibc gives each thread that allocates an arena of its own (up to 8 per core) and keeps
//! memory freed in the middle of an arena resident. With ten worker threads each arena grows
//! to its own thread's worst case, so under a mixed load the resident size of a server
//! creeps up for a quarter of an hour (BENCHMARKS.md, "30-minute mixed soak"). Two remedies:
//! - [`limit_arenas`], once per process when a server starts: at most [`ARENA_MAX`] arenas,
//!   unless the operator chose a number (`MALLOC_ARENA_MAX`, or `glibc.malloc.arena_max` in
//!   `GLIBC_TUNABLES`);
//! - [`trim`]: gives the free pages inside every arena back to the kernel; the monitor calls
//!   it when [`Trimmer`] says so (the server has gone idle, or the pool retired threads).
//!
//! glibc only: musl's allocator has no arenas and no `malloc_trim`, so both are no-ops there.

use std::time::Duration;

/// Arenas when the operator did not choose: the main one and one more; glibc hands them out
/// to new threads in turn. Python allocates under the GIL, so two arenas are rarely
/// contended (the measurement is in the commit adding this).
pub const ARENA_MAX: i32 = 2;

/// How long the server must have run no request before the monitor trims.
pub const IDLE_BEFORE_TRIM: Duration = Duration::from_secs(1);

/// Caps glibc's arenas at [`ARENA_MAX`] for the whole process unless the operator chose.
/// Must run before the worker threads allocate: glibc fixes its limit once the ninth arena
/// exists.
pub fn limit_arenas() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if !operator_chose_arenas(|name| std::env::var_os(name)) {
            set_arena_max(ARENA_MAX);
        }
    });
}

/// Whether the environment already sets glibc's arena limit (glibc read it at start-up).
fn operator_chose_arenas(var: impl Fn(&str) -> Option<std::ffi::OsString>) -> bool {
    if var("MALLOC_ARENA_MAX").is_some() {
        return true;
    }
    var("GLIBC_TUNABLES").is_some_and(|t| t.to_string_lossy().contains("glibc.malloc.arena_max="))
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set_arena_max(max: i32) {
    // SAFETY: mallopt only stores the value; glibc reads it when it next creates an arena.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, max);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_arena_max(_max: i32) {}

/// Returns the free memory inside every malloc arena to the kernel (whole pages only; the
/// allocations in use do not move). Takes each arena's lock in turn, so it belongs on the
/// monitor thread when no requests run.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn trim() {
    // SAFETY: malloc_trim takes the arena locks itself and touches only free chunks.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn trim() {}

/// Whether the allocator has anything worth trimming since the last trim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Since {
    /// No request ran since the last trim (or since the server started).
    Quiet,
    /// Requests ran: trim once the server has been idle for [`IDLE_BEFORE_TRIM`].
    Served,
}

/// The monitor's decision when to [`trim`]: once per idle spell that follows requests, and
/// whenever the pool has fewer threads than at the last tick (their arenas' memory is free).
pub struct Trimmer {
    since: Since,
    threads: usize,
}

impl Trimmer {
    pub fn new(threads: usize) -> Trimmer {
        Trimmer {
            since: Since::Quiet,
            threads,
        }
    }

    /// One monitor tick: `served` says whether requests ran since the last tick, `idle_for`
    /// how long ago the last one did, `threads` how many threads the pool has now. True
    /// when the monitor should trim now.
    pub fn due(&mut self, served: bool, idle_for: Duration, threads: usize) -> bool {
        let retired = threads < self.threads;
        self.threads = threads;
        if served {
            self.since = Since::Served;
        }
        let idle_after_requests = self.since == Since::Served && idle_for >= IDLE_BEFORE_TRIM;
        if retired || idle_after_requests {
            self.since = Since::Quiet;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    const BUSY: Duration = Duration::ZERO;
    const IDLE: Duration = IDLE_BEFORE_TRIM;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn operator_choice_is_either_variable() {
        assert!(!operator_chose_arenas(env(&[])));
        assert!(operator_chose_arenas(env(&[("MALLOC_ARENA_MAX", "8")])));
        assert!(operator_chose_arenas(env(&[(
            "GLIBC_TUNABLES",
            "glibc.malloc.tcache_count=0:glibc.malloc.arena_max=4"
        )])));
        assert!(!operator_chose_arenas(env(&[(
            "GLIBC_TUNABLES",
            "glibc.malloc.tcache_count=0"
        )])));
    }

    #[test]
    fn trims_once_per_idle_spell_after_requests() {
        let mut t = Trimmer::new(10);
        assert!(!t.due(false, IDLE * 5, 10), "nothing served yet");
        assert!(!t.due(true, BUSY, 10));
        assert!(!t.due(false, IDLE / 2, 10), "not idle long enough");
        assert!(t.due(false, IDLE, 10));
        assert!(!t.due(false, IDLE * 2, 10), "once per idle spell");
        assert!(!t.due(true, BUSY, 10));
        assert!(t.due(false, IDLE, 10));
    }

    #[test]
    fn trims_when_threads_retire() {
        let mut t = Trimmer::new(10);
        assert!(!t.due(true, BUSY, 14), "the pool grew");
        assert!(t.due(true, BUSY, 12), "two threads retired");
        assert!(!t.due(true, BUSY, 12));
        assert!(t.due(false, IDLE, 12), "requests ran since the last trim");
    }

    #[test]
    fn trim_and_limit_arenas_run() {
        limit_arenas();
        limit_arenas();
        trim();
    }
}
