//! A thin wrapper over one epoll instance shared by all worker threads. Connections are
//! registered edge-triggered (no system call to re-arm them after each request).

use std::io;
use std::os::fd::RawFd;

pub struct Poller {
    epfd: RawFd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interest {
    /// Readable, delivered once until re-armed (the listener, the wake-up descriptor).
    OneShotRead,
    /// Readable, edge-triggered: one event per arrival of new data, no re-arming. Used for
    /// connections; the connection table makes sure one thread at a time handles each.
    EdgeRead,
    /// As `EdgeRead`, and writable: for a connection whose response waits for the client to
    /// read it (an edge comes only when room opens after a write found the socket full).
    EdgeReadWrite,
}

impl Interest {
    fn bits(self) -> u32 {
        match self {
            Interest::OneShotRead => (libc::EPOLLONESHOT | libc::EPOLLIN) as u32,
            Interest::EdgeRead => (libc::EPOLLET | libc::EPOLLRDHUP | libc::EPOLLIN) as u32,
            Interest::EdgeReadWrite => {
                (libc::EPOLLET | libc::EPOLLRDHUP | libc::EPOLLIN | libc::EPOLLOUT) as u32
            }
        }
    }
}

pub type Event = libc::epoll_event;

pub fn empty_events(n: usize) -> Vec<Event> {
    vec![libc::epoll_event { events: 0, u64: 0 }; n]
}

/// An event's token, and whether the peer has closed its side (EOF will follow the data).
pub fn ready_of(ev: &Event) -> (u64, bool) {
    let hup = ev.events & (libc::EPOLLRDHUP | libc::EPOLLHUP) as u32 != 0;
    (ev.u64, hup)
}

impl Poller {
    pub fn new() -> io::Result<Poller> {
        // SAFETY: plain syscall; the result is checked.
        let epfd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if epfd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Poller { epfd })
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: token };
        // SAFETY: `ev` is a valid epoll_event for the duration of the call.
        let rc = unsafe { libc::epoll_ctl(self.epfd, op, fd, &mut ev) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Registers `fd` one-shot for `interest`.
    pub fn add(&self, fd: RawFd, token: u64, interest: Interest) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, interest.bits(), token)
    }

    /// Re-arms a one-shot registration.
    pub fn rearm(&self, fd: RawFd, token: u64, interest: Interest) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, interest.bits(), token)
    }

    /// Registers `fd` level-triggered for reading (wake-up descriptors).
    pub fn add_level(&self, fd: RawFd, token: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, libc::EPOLLIN as u32, token)
    }

    pub fn delete(&self, fd: RawFd) {
        let mut ev = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: as in `ctl`; failure (already closed) is harmless.
        unsafe { libc::epoll_ctl(self.epfd, libc::EPOLL_CTL_DEL, fd, &mut ev) };
    }

    /// Waits for events; returns how many were stored. EINTR counts as zero events.
    pub fn wait(&self, events: &mut [Event], timeout_ms: i32) -> usize {
        // SAFETY: the buffer is valid for `events.len()` entries.
        let n = unsafe {
            libc::epoll_wait(
                self.epfd,
                events.as_mut_ptr(),
                events.len() as i32,
                timeout_ms,
            )
        };
        n.max(0) as usize
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        // SAFETY: we own the descriptor.
        unsafe { libc::close(self.epfd) };
    }
}

/// An eventfd used to wake threads blocked in `epoll_wait`.
pub struct Waker {
    fd: RawFd,
}

impl Waker {
    pub fn new() -> io::Result<Waker> {
        // SAFETY: plain syscall; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Waker { fd })
    }

    pub fn fd(&self) -> RawFd {
        self.fd
    }

    pub fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64.
        unsafe { libc::write(self.fd, &one as *const u64 as *const libc::c_void, 8) };
    }

    pub fn reset(&self) {
        let mut value: u64 = 0;
        // SAFETY: reads 8 bytes into a valid u64.
        unsafe { libc::read(self.fd, &mut value as *mut u64 as *mut libc::c_void, 8) };
    }
}

impl Drop for Waker {
    fn drop(&mut self) {
        // SAFETY: we own the descriptor.
        unsafe { libc::close(self.fd) };
    }
}
