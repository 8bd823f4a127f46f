//! The PROXY protocol header (HAProxy, cloud load balancers), versions 1 and 2, which a trusted
//! load balancer sends before the first request to give the real client's address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::error::{self, HttpError};

const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
const V1_MAX: usize = 107;

/// The client the balancer speaks for; `None` for a health check (v2 LOCAL, v1 UNKNOWN).
pub type ProxiedClient = Option<(IpAddr, u16)>;

/// Parses a PROXY header at the start of `buf`: `Ok(None)` means incomplete, otherwise the
/// header's length and the client it announces. A missing or malformed header is an error.
pub fn parse(buf: &[u8]) -> Result<Option<(usize, ProxiedClient)>, HttpError> {
    let bad = error::BAD_PROXY_HEADER;
    if buf.len() < V2_SIGNATURE.len() {
        let is_prefix =
            V2_SIGNATURE.starts_with(buf) || b"PROXY ".starts_with(&buf[..buf.len().min(6)]);
        return if is_prefix { Ok(None) } else { Err(bad) };
    }
    if buf.starts_with(V2_SIGNATURE) {
        parse_v2(buf)
    } else if buf.starts_with(b"PROXY ") {
        parse_v1(buf)
    } else {
        Err(bad)
    }
}

fn parse_v1(buf: &[u8]) -> Result<Option<(usize, ProxiedClient)>, HttpError> {
    let bad = error::BAD_PROXY_HEADER;
    let end = match memchr::memmem::find(&buf[..buf.len().min(V1_MAX)], b"\r\n") {
        Some(i) => i,
        None if buf.len() >= V1_MAX => return Err(bad),
        None => return Ok(None),
    };
    let line = std::str::from_utf8(&buf[..end]).map_err(|_| bad)?;
    let parts: Vec<&str> = line.split(' ').collect();
    let client = match parts.as_slice() {
        ["PROXY", "UNKNOWN", ..] => None,
        ["PROXY", family @ ("TCP4" | "TCP6"), src, _dst, sport, _dport] => {
            let ip: IpAddr = src.parse().map_err(|_| bad)?;
            if (*family == "TCP4") != ip.is_ipv4() {
                return Err(bad);
            }
            let port: u16 = sport.parse().map_err(|_| bad)?;
            Some((ip, port))
        }
        _ => return Err(bad),
    };
    Ok(Some((end + 2, client)))
}

fn parse_v2(buf: &[u8]) -> Result<Option<(usize, ProxiedClient)>, HttpError> {
    let bad = error::BAD_PROXY_HEADER;
    if buf.len() < 16 {
        return Ok(None);
    }
    let (ver_cmd, family) = (buf[12], buf[13]);
    let len = u16::from_be_bytes([buf[14], buf[15]]) as usize;
    if ver_cmd >> 4 != 2 {
        return Err(bad);
    }
    if buf.len() < 16 + len {
        return Ok(None);
    }
    let body = &buf[16..16 + len];
    let client = match (ver_cmd & 0xf, family) {
        (0, _) => None,
        (1, 0x11) if body.len() >= 12 => {
            let ip = Ipv4Addr::new(body[0], body[1], body[2], body[3]);
            Some((IpAddr::V4(ip), u16::from_be_bytes([body[8], body[9]])))
        }
        (1, 0x21) if body.len() >= 36 => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&body[..16]);
            Some((
                IpAddr::V6(Ipv6Addr::from(octets)),
                u16::from_be_bytes([body[32], body[33]]),
            ))
        }
        // Other families (UNIX, UDP, unspecified): no usable client address.
        (1, _) => None,
        _ => return Err(bad),
    };
    Ok(Some((16 + len, client)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_tcp4_and_tcp6() {
        let raw = b"PROXY TCP4 192.168.0.1 10.0.0.1 56324 443\r\nGET /";
        let (len, client) = parse(raw).unwrap().unwrap();
        assert_eq!(&raw[len..], b"GET /");
        assert_eq!(client, Some(("192.168.0.1".parse().unwrap(), 56324)));
        let raw = b"PROXY TCP6 2001:db8::1 2001:db8::2 1000 80\r\n";
        assert_eq!(
            parse(raw).unwrap().unwrap().1,
            Some(("2001:db8::1".parse().unwrap(), 1000))
        );
        assert_eq!(parse(b"PROXY UNKNOWN\r\n").unwrap().unwrap(), (15, None));
    }

    #[test]
    fn v1_incomplete_and_invalid() {
        assert_eq!(parse(b"PROX").unwrap(), None);
        assert_eq!(parse(b"PROXY TCP4 1.2.3.4").unwrap(), None);
        for bad in [
            &b"GET / HTTP/1.1\r\n\r\n"[..],
            b"PROXY TCP4 1.2.3.4 5.6.7.8 70000 80\r\n",
            b"PROXY TCP4 ::1 ::1 1 2\r\n",
            b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        assert!(parse(&[b'P', b'R', b'O', b'X', b'Y', b' ', b'A'].repeat(30)).is_err());
    }

    #[test]
    fn v2_proxy_and_local() {
        let mut raw = V2_SIGNATURE.to_vec();
        raw.extend_from_slice(&[
            0x21, 0x11, 0, 12, 10, 0, 0, 7, 10, 0, 0, 1, 0x1f, 0x90, 0, 80,
        ]);
        raw.extend_from_slice(b"GET");
        let (len, client) = parse(&raw).unwrap().unwrap();
        assert_eq!(len, 28);
        assert_eq!(client, Some(("10.0.0.7".parse().unwrap(), 8080)));
        assert_eq!(parse(&raw[..20]).unwrap(), None);
        let mut local = V2_SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0, 0]);
        assert_eq!(parse(&local).unwrap().unwrap(), (16, None));
        let mut bad = V2_SIGNATURE.to_vec();
        bad.extend_from_slice(&[0x31, 0x11, 0, 0]);
        assert!(parse(&bad).is_err());
    }
}
