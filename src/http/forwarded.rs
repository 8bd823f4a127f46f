//! Proxy headers from trusted peers: `Forwarded` (RFC 7239) and `X-Forwarded-For/-Proto/-Host`.
//! The client is the rightmost address not itself a trusted proxy, so a client cannot forge
//! its address by sending its own header through the proxy.

use std::net::IpAddr;

/// The peers whose proxy headers are believed (`--forwarded-allow-ips`).
#[derive(Debug, Clone, Default)]
pub struct Trusted {
    all: bool,
    nets: Vec<(IpAddr, u8)>,
}

impl Trusted {
    /// Parses `*`, addresses and CIDR networks (`10.0.0.0/8`, `::1`, `fd00::/8`).
    pub fn parse(items: &[String]) -> Result<Trusted, String> {
        let mut trusted = Trusted::default();
        for item in items.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
            if item == "*" {
                trusted.all = true;
                continue;
            }
            let (addr, bits) = match item.split_once('/') {
                Some((a, b)) => (a, Some(b)),
                None => (item, None),
            };
            let ip: IpAddr = addr
                .parse()
                .map_err(|_| format!("invalid address {item:?}"))?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let bits = match bits {
                Some(b) => b.parse::<u8>().ok().filter(|&b| b <= max),
                None => Some(max),
            }
            .ok_or_else(|| format!("invalid network {item:?}"))?;
            trusted.nets.push((ip, bits));
        }
        Ok(trusted)
    }

    /// `*`: every peer, UNIX-socket peers included.
    pub fn trusts_all(&self) -> bool {
        self.all
    }

    pub fn is_empty(&self) -> bool {
        !self.all && self.nets.is_empty()
    }

    /// Whether a connection's peer (its address as text; empty for a UNIX-socket peer, which
    /// only `*` trusts) may speak for the client.
    pub fn trusts_peer(&self, peer_addr: &str) -> bool {
        match peer_addr.parse::<IpAddr>() {
            Ok(peer) => self.contains(peer),
            Err(_) => peer_addr.is_empty() && self.all,
        }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.all
            || self
                .nets
                .iter()
                .any(|&(net, bits)| in_network(ip, net, bits))
    }
}

fn in_network(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(bits))
            };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(bits))
            };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// What trusted proxy headers say about the original request.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Forwarded {
    pub client: Option<IpAddr>,
    pub proto: Option<String>,
    pub host: Option<String>,
}

/// Reads the proxy headers among `fields` (name, value). `Forwarded` wins over `X-Forwarded-*`.
pub fn resolve<'a>(
    trusted: &Trusted,
    fields: impl Iterator<Item = (&'a [u8], &'a [u8])>,
) -> Forwarded {
    let mut standard: Vec<&[u8]> = Vec::new();
    let (mut xff, mut proto, mut host) = (Vec::new(), None, None);
    for (name, value) in fields {
        if name.eq_ignore_ascii_case(b"forwarded") {
            standard.push(value);
        } else if name.eq_ignore_ascii_case(b"x-forwarded-for") {
            xff.push(value);
        } else if name.eq_ignore_ascii_case(b"x-forwarded-proto") {
            proto = Some(value);
        } else if name.eq_ignore_ascii_case(b"x-forwarded-host") {
            host = Some(value);
        }
    }
    if !standard.is_empty() {
        return from_forwarded(trusted, &standard);
    }
    let hops: Vec<IpAddr> = xff
        .iter()
        .flat_map(|v| v.split(|&b| b == b','))
        .filter_map(|item| parse_node(super::request::trim_ows(item)))
        .collect();
    Forwarded {
        client: pick_client(trusted, &hops),
        proto: proto.and_then(scheme),
        host: host.map(|h| String::from_utf8_lossy(super::request::trim_ows(h)).into_owned()),
    }
}

fn from_forwarded(trusted: &Trusted, values: &[&[u8]]) -> Forwarded {
    let mut hops = Vec::new();
    let mut last = Forwarded::default();
    for element in values.iter().flat_map(|v| v.split(|&b| b == b',')) {
        let mut this = Forwarded::default();
        for pair in element.split(|&b| b == b';') {
            let pair = super::request::trim_ows(pair);
            let Some(eq) = pair.iter().position(|&b| b == b'=') else {
                continue;
            };
            let (key, value) = (&pair[..eq], unquote(&pair[eq + 1..]));
            if key.eq_ignore_ascii_case(b"for") {
                if let Some(ip) = parse_node(value) {
                    hops.push(ip);
                }
            } else if key.eq_ignore_ascii_case(b"proto") {
                this.proto = scheme(value);
            } else if key.eq_ignore_ascii_case(b"host") {
                this.host = Some(String::from_utf8_lossy(value).into_owned());
            }
        }
        last = this;
    }
    Forwarded {
        client: pick_client(trusted, &hops),
        ..last
    }
}

fn unquote(value: &[u8]) -> &[u8] {
    match value {
        [b'"', inner @ .., b'"'] => inner,
        other => other,
    }
}

/// An address as proxies write it: `1.2.3.4`, `1.2.3.4:80`, `[2001:db8::1]:80`, `2001:db8::1`.
fn parse_node(node: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(node).ok()?;
    if let Some(rest) = text.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    text.parse()
        .ok()
        .or_else(|| text.rsplit_once(':')?.0.parse().ok())
}

/// Rightmost address that is not a trusted proxy (the leftmost if all are).
fn pick_client(trusted: &Trusted, hops: &[IpAddr]) -> Option<IpAddr> {
    hops.iter()
        .rev()
        .find(|ip| !trusted.contains(**ip))
        .or(hops.first())
        .copied()
}

fn scheme(value: &[u8]) -> Option<String> {
    let value = super::request::trim_ows(value);
    if value.eq_ignore_ascii_case(b"https") {
        Some("https".into())
    } else if value.eq_ignore_ascii_case(b"http") {
        Some("http".into())
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted(items: &[&str]) -> Trusted {
        Trusted::parse(&items.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn run(t: &Trusted, fields: &[(&str, &str)]) -> Forwarded {
        resolve(t, fields.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())))
    }

    #[test]
    fn networks() {
        let t = trusted(&["10.0.0.0/8", "::1", "fd00::/8"]);
        assert!(t.contains("10.1.2.3".parse().unwrap()));
        assert!(t.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!t.contains("11.0.0.1".parse().unwrap()));
        assert!(t.contains("::1".parse().unwrap()));
        assert!(t.contains("fd12::5".parse().unwrap()));
        assert!(trusted(&["*"]).contains("8.8.8.8".parse().unwrap()));
        assert!(Trusted::parse(&["10.0.0.0/33".into()]).is_err());
        assert!(Trusted::parse(&["nonsense".into()]).is_err());
    }

    #[test]
    fn x_forwarded_headers() {
        let t = trusted(&["10.0.0.0/8"]);
        let f = run(
            &t,
            &[
                ("X-Forwarded-For", "6.6.6.6, 1.2.3.4, 10.0.0.2"),
                ("X-Forwarded-Proto", "HTTPS"),
                ("X-Forwarded-Host", "example.com"),
            ],
        );
        assert_eq!(f.client, Some("1.2.3.4".parse().unwrap()));
        assert_eq!(f.proto.as_deref(), Some("https"));
        assert_eq!(f.host.as_deref(), Some("example.com"));
        assert_eq!(run(&t, &[("X-Forwarded-Proto", "gopher")]).proto, None);
    }

    #[test]
    fn standard_forwarded_wins() {
        let t = trusted(&["10.0.0.0/8"]);
        let f = run(&t, &[
            ("X-Forwarded-For", "9.9.9.9"),
            ("Forwarded", "for=192.0.2.60;proto=http;by=203.0.113.43, for=\"[2001:db8:cafe::17]:4711\";proto=https;host=a.example"),
        ]);
        assert_eq!(f.client, Some("2001:db8:cafe::17".parse().unwrap()));
        assert_eq!(f.proto.as_deref(), Some("https"));
        assert_eq!(f.host.as_deref(), Some("a.example"));
        assert_eq!(
            run(&t, &[("Forwarded", "for=1.2.3.4:80")]).client,
            Some("1.2.3.4".parse().unwrap())
        );
    }
}
