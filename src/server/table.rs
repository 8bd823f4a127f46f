//! The connection table: every open connection has a slot here, found by its token.
//!
//! A token is `(slot index << 32) | generation`. The generation changes each time a slot is
//! reused, so an epoll event that arrives for a connection already closed (its slot now holds
//! another) is recognised as stale and ignored.
//!
//! A connection is either parked (waiting in epoll, owned by the table) or busy (checked out
//! by a worker, which owns it). The edge-triggered rule lives here and in
//! `Conn::next_request`: a connection is parked only once its socket is drained, and an event
//! that arrives while it is busy is recorded (`pending`), so the worker looks at the socket
//! again before parking it instead of losing the event.

use std::ops::{Deref, DerefMut};
use std::os::fd::RawFd;
use std::sync::{Mutex, MutexGuard};

use crate::context::Context;

/// What the table needs to know of a connection.
pub trait Socket {
    fn fd(&self) -> RawFd;
}

enum Entry<C> {
    Vacant,
    /// Waiting in epoll; owned by the table.
    Parked(C),
    /// Checked out by a worker; the fd is kept so `stop()` can shut it down. `pending`: an
    /// event arrived meanwhile, so the worker must look at the socket again before parking.
    Busy {
        fd: RawFd,
        pending: bool,
    },
}

pub struct Table<C> {
    entries: Vec<(u32, Entry<C>)>,
    free: Vec<u32>,
    open: usize,
    /// Connections checked out by workers; the others are idle in epoll.
    busy: usize,
}

fn split(token: u64) -> (usize, u32) {
    ((token >> 32) as usize, token as u32)
}

impl<C: Socket> Table<C> {
    pub fn new() -> Table<C> {
        Table {
            entries: Vec::new(),
            free: Vec::new(),
            open: 0,
            busy: 0,
        }
    }

    pub fn open(&self) -> usize {
        self.open
    }

    /// Connections parked between requests.
    pub fn idle(&self) -> usize {
        self.open - self.busy
    }

    /// Adds a parked connection and returns its token.
    pub fn insert(&mut self, conn: C) -> u64 {
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.entries.push((0, Entry::Vacant));
                (self.entries.len() - 1) as u32
            }
        };
        let slot = &mut self.entries[index as usize];
        slot.0 = slot.0.wrapping_add(1);
        slot.1 = Entry::Parked(conn);
        self.open += 1;
        (u64::from(index) << 32) | u64::from(slot.0)
    }

    /// Takes a parked connection for a worker. An event for a connection another worker holds
    /// is recorded on it instead; a stale token finds nothing.
    pub fn checkout(&mut self, token: u64) -> Option<C> {
        let (index, gen) = split(token);
        let slot = self.entries.get_mut(index).filter(|s| s.0 == gen)?;
        let fd = match &mut slot.1 {
            Entry::Parked(conn) => conn.fd(),
            Entry::Busy { pending, .. } => {
                *pending = true;
                return None;
            }
            Entry::Vacant => return None,
        };
        self.busy += 1;
        match std::mem::replace(&mut slot.1, Entry::Busy { fd, pending: false }) {
            Entry::Parked(conn) => Some(conn),
            _ => None,
        }
    }

    /// Parks a connection again, unless an event arrived while it was out: then the worker
    /// gets it back to look at the socket again.
    pub fn checkin(&mut self, token: u64, conn: C) -> Option<C> {
        let (index, _) = split(token);
        let entry = &mut self.entries[index].1;
        if let Entry::Busy {
            pending: pending @ true,
            ..
        } = entry
        {
            *pending = false;
            return Some(conn);
        }
        *entry = Entry::Parked(conn);
        self.busy -= 1;
        None
    }

    /// Frees the slot of a connection that is closing (parked or busy).
    pub fn release(&mut self, token: u64) {
        let (index, gen) = split(token);
        let Some(slot) = self.entries.get_mut(index).filter(|s| s.0 == gen) else {
            return;
        };
        match slot.1 {
            Entry::Vacant => return,
            Entry::Busy { .. } => self.busy -= 1,
            Entry::Parked(_) => {}
        }
        slot.1 = Entry::Vacant;
        self.free.push(index as u32);
        self.open -= 1;
    }

    /// Removes the parked connections for which `expired` holds.
    pub fn take_parked(&mut self, mut expired: impl FnMut(&C) -> bool) -> Vec<C> {
        let mut taken = Vec::new();
        for (index, slot) in self.entries.iter_mut().enumerate() {
            if matches!(&slot.1, Entry::Parked(conn) if expired(conn)) {
                if let Entry::Parked(conn) = std::mem::replace(&mut slot.1, Entry::Vacant) {
                    taken.push(conn);
                }
                self.free.push(index as u32);
                self.open -= 1;
            }
        }
        taken
    }

    /// Whether some parked connection satisfies `wanted`.
    pub fn any_parked(&self, mut wanted: impl FnMut(&C) -> bool) -> bool {
        self.entries
            .iter()
            .any(|(_, e)| matches!(e, Entry::Parked(conn) if wanted(conn)))
    }

    /// How many parked connections satisfy `wanted`.
    pub fn count_parked(&self, mut wanted: impl FnMut(&C) -> bool) -> usize {
        self.entries
            .iter()
            .filter(|(_, e)| matches!(e, Entry::Parked(conn) if wanted(conn)))
            .count()
    }

    /// The sockets of the connections workers hold.
    pub fn busy_fds(&self) -> Vec<RawFd> {
        self.entries
            .iter()
            .filter_map(|(_, e)| match e {
                Entry::Busy { fd, .. } => Some(*fd),
                _ => None,
            })
            .collect()
    }
}

/// The table behind its lock. Releasing the lock publishes the idle count to the context, so
/// requests can check the keep-alive limit without taking this lock.
pub struct SharedTable<C> {
    table: Mutex<Table<C>>,
}

pub struct TableGuard<'a, C: Socket> {
    guard: MutexGuard<'a, Table<C>>,
    context: &'a Context,
}

impl<C: Socket> SharedTable<C> {
    pub fn new() -> SharedTable<C> {
        SharedTable {
            table: Mutex::new(Table::new()),
        }
    }

    pub fn lock<'a>(&'a self, context: &'a Context) -> TableGuard<'a, C> {
        TableGuard {
            guard: self
                .table
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
            context,
        }
    }
}

impl<C: Socket> Deref for TableGuard<'_, C> {
    type Target = Table<C>;
    fn deref(&self) -> &Table<C> {
        &self.guard
    }
}

impl<C: Socket> DerefMut for TableGuard<'_, C> {
    fn deref_mut(&mut self) -> &mut Table<C> {
        &mut self.guard
    }
}

impl<C: Socket> Drop for TableGuard<'_, C> {
    fn drop(&mut self) {
        self.context.publish_idle_connections(self.guard.idle());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct Fake(RawFd);

    impl Socket for Fake {
        fn fd(&self) -> RawFd {
            self.0
        }
    }

    #[test]
    fn checkout_and_checkin() {
        let mut t = Table::new();
        let token = t.insert(Fake(7));
        assert_eq!((t.open(), t.idle()), (1, 1));
        let conn = t.checkout(token).unwrap();
        assert_eq!((t.open(), t.idle()), (1, 0));
        assert_eq!(t.busy_fds(), vec![7]);
        // A second event while busy finds nothing but is remembered...
        assert!(t.checkout(token).is_none());
        // ...so checkin hands the connection back instead of parking it.
        let conn = t.checkin(token, conn).unwrap();
        assert!(t.checkin(token, conn).is_none());
        assert_eq!((t.open(), t.idle()), (1, 1));
        assert_eq!(t.checkout(token), Some(Fake(7)));
    }

    #[test]
    fn stale_tokens_find_nothing() {
        let mut t = Table::new();
        let old = t.insert(Fake(1));
        t.release(old);
        assert_eq!(t.open(), 0);
        let new = t.insert(Fake(2));
        assert_ne!(old, new, "a reused slot gets a new generation");
        assert!(t.checkout(old).is_none());
        t.release(old); // stale: must not free the new connection's slot
        assert_eq!(t.open(), 1);
        assert_eq!(t.checkout(new), Some(Fake(2)));
        t.release(new);
        assert_eq!((t.open(), t.idle()), (0, 0));
    }

    #[test]
    fn take_parked_leaves_busy_ones() {
        let mut t = Table::new();
        let a = t.insert(Fake(1));
        let _b = t.insert(Fake(2));
        let _c = t.insert(Fake(3));
        let busy = t.checkout(a).unwrap();
        assert!(t.any_parked(|c| c.0 == 3));
        let taken = t.take_parked(|c| c.0 != 2);
        assert_eq!(taken, vec![Fake(3)]);
        assert_eq!((t.open(), t.idle()), (2, 1));
        assert!(!t.any_parked(|c| c.0 == 3));
        assert!(t.checkin(a, busy).is_none());
        assert_eq!(t.take_parked(|_| true).len(), 2);
        assert_eq!(t.open(), 0);
        // Freed slots are reused.
        t.insert(Fake(4));
        assert_eq!(t.entries.len(), 3);
    }
}
