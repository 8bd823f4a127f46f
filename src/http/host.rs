//! The `Host` field and the authority of an absolute-form target: `uri-host [ ":" port ]`
//! (RFC 9110 §4.2.1, §7.2; RFC 3986 §3.2.2), checked without allocating.

/// True when `authority` (`uri-host [ ":" port ]`) has no host at all: empty, or a port only.
pub fn host_is_empty(authority: &[u8]) -> bool {
    matches!(authority.first(), None | Some(b':'))
}

/// `uri-host [ ":" port ]` where uri-host is a non-empty reg-name, an IPv4 address or an
/// `[IP-literal]`. An empty host (an empty value, or `:80`) is invalid for http(s) URIs
/// (RFC 9110 §4.2.1), and so for Host (RFC 9112 §3.2).
pub fn is_valid_host(host: &[u8]) -> bool {
    if host.first() == Some(&b'[') {
        let close = match memchr::memchr(b']', host) {
            Some(i) => i,
            None => return false,
        };
        let literal = &host[1..close];
        if literal.is_empty()
            || !literal
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return false;
        }
        return match &host[close + 1..] {
            [] => true,
            [b':', port @ ..] => port.iter().all(u8::is_ascii_digit),
            _ => false,
        };
    }
    let (name, port) = match memchr::memrchr(b':', host) {
        Some(i) => (&host[..i], &host[i + 1..]),
        None => (host, &host[..0]),
    };
    if name.is_empty() {
        return false;
    }
    let pct_ok = memchr::memchr_iter(b'%', name).all(|i| {
        name.len() > i + 2 && name[i + 1].is_ascii_hexdigit() && name[i + 2].is_ascii_hexdigit()
    });
    let name_ok = pct_ok
        && name.iter().all(|&b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'-' | b'.'
                        | b'_'
                        | b'~'
                        | b'%'
                        | b'!'
                        | b'$'
                        | b'&'
                        | b'\''
                        | b'('
                        | b')'
                        | b'*'
                        | b'+'
                        | b','
                        | b';'
                        | b'='
                )
        });
    name_ok && port.iter().all(u8::is_ascii_digit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        for good in [
            &b"a"[..],
            b"a.b:80",
            b"[::1]",
            b"[::1]:8080",
            b"127.0.0.1:1",
        ] {
            assert!(is_valid_host(good), "{:?}", good);
        }
        for bad in [
            &b""[..],
            b":80",
            b":",
            b"[::1]:x",
            b"a b",
            b"a@b",
            b"[::1",
            b"a:b",
            b"[]",
            b"a/b",
            b"%%%",
            b"a%2",
        ] {
            assert!(!is_valid_host(bad), "{:?}", bad);
        }
    }

    #[test]
    fn empty_hosts() {
        assert!(host_is_empty(b""));
        assert!(host_is_empty(b":80"));
        assert!(!host_is_empty(b"a:80"));
    }
}
