//! The listening socket (bound by the Python layer, which owns cheroot's bind forms) and accept.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

/// The peer of an accepted connection, as the environ shows it.
#[derive(Debug, Clone, Default)]
pub struct Peer {
    pub addr: String,
    pub port: String,
}

pub struct Accepted {
    pub fd: RawFd,
    pub peer: Peer,
}

/// Accepts one connection, non-blocking and close-on-exec. `Ok(None)`: nothing pending.
pub fn accept(listen_fd: RawFd) -> io::Result<Option<Accepted>> {
    // SAFETY: sockaddr_storage is plain data; zeroed is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    loop {
        // SAFETY: storage and len are valid for the call.
        let fd = unsafe {
            libc::accept4(
                listen_fd,
                &mut storage as *mut _ as *mut libc::sockaddr,
                &mut len,
                libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            )
        };
        if fd >= 0 {
            return Ok(Some(Accepted {
                fd,
                peer: peer_of(&storage),
            }));
        }
        let err = io::Error::last_os_error();
        match err.kind() {
            io::ErrorKind::Interrupted => continue,
            io::ErrorKind::WouldBlock => return Ok(None),
            // The connection died before we took it: try the next one.
            io::ErrorKind::ConnectionAborted => continue,
            _ => return Err(err),
        }
    }
}

fn peer_of(storage: &libc::sockaddr_storage) -> Peer {
    let addr = match storage.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says this is a sockaddr_in.
            let sin = unsafe { &*(storage as *const _ as *const libc::sockaddr_in) };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(sin.sin_port)))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this is a sockaddr_in6.
            let sin6 = unsafe { &*(storage as *const _ as *const libc::sockaddr_in6) };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            SocketAddr::V6(SocketAddrV6::new(ip, u16::from_be(sin6.sin6_port), 0, 0))
        }
        // UNIX sockets: cheroot leaves REMOTE_ADDR and REMOTE_PORT empty.
        _ => return Peer::default(),
    };
    Peer {
        addr: addr.ip().to_string(),
        port: addr.port().to_string(),
    }
}

pub fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor owned by the caller.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
