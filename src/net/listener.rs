//! The listening socket (bound by the Python layer, which owns cheroot's bind forms) and accept.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// The peer of an accepted connection, as the environ shows it.
#[derive(Debug, Clone, Default)]
pub struct Peer {
    pub addr: String,
    pub port: String,
    /// UNIX sockets only, when peer credentials are enabled.
    pub creds: Option<PeerCreds>,
}

/// The process at the other end of a UNIX socket (SO_PEERCRED), names resolved on request.
#[derive(Debug, Clone, Default)]
pub struct PeerCreds {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
    pub user: Option<String>,
    pub group: Option<String>,
}

/// Reads SO_PEERCRED; `resolve` also looks up the user and group names.
pub fn peer_creds(fd: RawFd, resolve: bool) -> Option<PeerCreds> {
    // SAFETY: ucred is plain data; getsockopt writes at most `len` bytes into it.
    let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            &mut cred as *mut libc::ucred as *mut libc::c_void,
            &mut len,
        )
    };
    if rc != 0 {
        return None;
    }
    let (user, group) = if resolve {
        (user_name(cred.uid), group_name(cred.gid))
    } else {
        (None, None)
    };
    Some(PeerCreds {
        pid: cred.pid,
        uid: cred.uid,
        gid: cred.gid,
        user,
        group,
    })
}

fn user_name(uid: u32) -> Option<String> {
    let mut buf = vec![0u8; 4096];
    // SAFETY: passwd is plain data; getpwuid_r fills it with pointers into `buf`.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    let rc = unsafe {
        libc::getpwuid_r(
            uid,
            &mut pwd,
            buf.as_mut_ptr() as *mut libc::c_char,
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() {
        return None;
    }
    // SAFETY: on success pw_name points to a NUL-terminated string inside `buf`.
    let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) };
    Some(name.to_string_lossy().into_owned())
}

fn group_name(gid: u32) -> Option<String> {
    let mut buf = vec![0u8; 4096];
    // SAFETY: group is plain data; getgrgid_r fills it with pointers into `buf`.
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::group = std::ptr::null_mut();
    let rc = unsafe {
        libc::getgrgid_r(
            gid,
            &mut grp,
            buf.as_mut_ptr() as *mut libc::c_char,
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() {
        return None;
    }
    // SAFETY: on success gr_name points to a NUL-terminated string inside `buf`.
    let name = unsafe { std::ffi::CStr::from_ptr(grp.gr_name) };
    Some(name.to_string_lossy().into_owned())
}

pub struct Accepted {
    pub fd: OwnedFd,
    pub peer: Peer,
    pub is_unix: bool,
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
            let is_unix = storage.ss_family as libc::c_int == libc::AF_UNIX;
            return Ok(Some(Accepted {
                // SAFETY: accept4 just returned this descriptor; nothing else owns it.
                fd: unsafe { OwnedFd::from_raw_fd(fd) },
                peer: peer_of(&storage),
                is_unix,
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
    let addr_text = match addr {
        SocketAddr::V4(v4) => ipv4_text(v4.ip()),
        SocketAddr::V6(v6) => v6.ip().to_string(),
    };
    Peer {
        addr: addr_text,
        port: itoa::Buffer::new().format(addr.port()).to_owned(),
        creds: None,
    }
}

/// Dotted-quad text of an IPv4 address, without the formatting machinery (this runs for
/// every accepted connection).
fn ipv4_text(ip: &Ipv4Addr) -> String {
    let mut text = String::with_capacity(15);
    let mut digits = itoa::Buffer::new();
    for (i, octet) in ip.octets().iter().enumerate() {
        if i > 0 {
            text.push('.');
        }
        text.push_str(digits.format(*octet));
    }
    text
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_text_matches_display() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.30.40",
            "255.255.255.255",
            "192.168.0.9",
        ] {
            let parsed: Ipv4Addr = ip.parse().expect("valid address");
            assert_eq!(ipv4_text(&parsed), ip);
            assert_eq!(ipv4_text(&parsed), parsed.to_string());
        }
    }
}
