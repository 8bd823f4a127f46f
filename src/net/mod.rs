//! Sockets: the shared epoll instance, the listening socket and non-blocking I/O with deadlines.

pub mod io;
pub mod listener;
pub mod poller;
