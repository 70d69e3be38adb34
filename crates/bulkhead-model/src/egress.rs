//! Egress allow-lists and address classes: the syntax tenants.yaml is validated against and
//! the decisions `bulkhead-egress` enforces (pure logic, no I/O).
//!
//! An entry is a host name (`api.example.com`), a wildcard (`*.example.com`: any name below
//! it, not the name itself), or an address or network (`10.1.2.3`, `10.0.0.0/8`, `[fd00::1]`,
//! `fd00::/8`), each with an optional port (`api.example.com:8443`; without one, 80 and 443).
//! Names reach only public addresses; private, loopback, link-local and other special ranges
//! only when an address entry names them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An address and a prefix length (host bits cleared), as `ipnet` parses and matches them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Net(ipnet::IpNet);

impl Net {
    fn host(addr: IpAddr) -> Self {
        Self(ipnet::IpNet::from(addr))
    }

    /// `a.b.c.d/n` or `v6/n`; `None` when the address or length is wrong.
    fn parse(raw: &str) -> Option<Self> {
        raw.parse::<ipnet::IpNet>().ok().map(|n| Self(n.trunc()))
    }

    fn contains(&self, ip: &IpAddr) -> bool {
        self.0.contains(ip)
    }
}

/// Why an entry does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("egress entry {entry:?}: {reason}")]
pub struct BadEntry {
    pub entry: String,
    pub reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Exact(String),
    /// `*.example.com` → `.example.com`
    Below(String),
    Net(Net),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    target: Target,
    /// `None`: 80 and 443.
    port: Option<u16>,
}

/// One allow-list (a tenant's or an app's). Empty: nothing is allowed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    entries: Vec<Entry>,
    /// `default: allow`: every name (on 80/443) — still never a special address.
    any_name: bool,
}

const DEFAULT_PORTS: [u16; 2] = [80, 443];

fn parse_port(raw: &str, entry: &str) -> Result<u16, BadEntry> {
    raw.parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| BadEntry {
            entry: entry.to_owned(),
            reason: "the port must be 1 to 65535",
        })
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
        // All-numeric names are address spellings (`2130706433`, `0x7f.1`), never names.
        && !name.split('.').all(|l| l.bytes().all(|b| b.is_ascii_digit()))
        && name.parse::<IpAddr>().is_err()
}

impl AllowList {
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, BadEntry> {
        let mut out = Vec::new();
        for raw in entries {
            let raw = raw.as_ref().trim();
            let bad = |reason| BadEntry {
                entry: raw.to_owned(),
                reason,
            };
            // `[v6]:port`, `[v6]`, `v4/len`, `host:port`, `host`.
            let (target, port) = if let Some(rest) = raw.strip_prefix('[') {
                let (addr, tail) = rest.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
                let port = match tail.strip_prefix(':') {
                    Some(p) => Some(parse_port(p, raw)?),
                    None if tail.is_empty() => None,
                    None => return Err(bad("unexpected text after ']'")),
                };
                let ip: Ipv6Addr = addr.parse().map_err(|_| bad("not an IPv6 address"))?;
                (Target::Net(Net::host(IpAddr::V6(ip))), port)
            } else if raw.contains('/') {
                let net = Net::parse(raw).ok_or_else(|| bad("not a network (a.b.c.d/n)"))?;
                (Target::Net(net), None)
            } else if let Ok(ip) = raw.parse::<IpAddr>() {
                (Target::Net(Net::host(ip)), None)
            } else {
                let (host, port) = match raw.rsplit_once(':') {
                    Some((h, p)) => (h, Some(parse_port(p, raw)?)),
                    None => (raw, None),
                };
                let host = host.to_ascii_lowercase();
                if let Ok(ip) = host.parse::<Ipv4Addr>() {
                    (Target::Net(Net::host(IpAddr::V4(ip))), port)
                } else if let Some(suffix) = host.strip_prefix("*.") {
                    if !valid_name(suffix) || !suffix.contains('.') {
                        return Err(bad(
                            "a wildcard needs a domain of two labels or more: *.example.com",
                        ));
                    }
                    (Target::Below(format!(".{suffix}")), port)
                } else if valid_name(&host) {
                    (Target::Exact(host), port)
                } else {
                    return Err(bad(
                        "not a host name, *.domain, address or network (letters, digits, '-' and '.')",
                    ));
                }
            };
            out.push(Entry { target, port });
        }
        Ok(Self {
            entries: out,
            any_name: false,
        })
    }

    /// A `network:` section of tenants.yaml: `default` is `deny` (only `allow` goes out) or
    /// `allow` (any public host on 80/443, plus `allow`).
    pub fn from_network<S: AsRef<str>>(default: &str, allow: &[S]) -> Result<Self, BadEntry> {
        let mut list = Self::parse(allow)?;
        list.any_name = match default {
            "deny" => false,
            "allow" => true,
            other => {
                return Err(BadEntry {
                    entry: other.to_owned(),
                    reason: "network.default is deny or allow",
                });
            }
        };
        Ok(list)
    }

    /// Whether this list lets every name out (`default: allow`).
    pub fn allows_any_name(&self) -> bool {
        self.any_name
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && !self.any_name
    }

    fn port_ok(e: &Entry, port: u16) -> bool {
        match e.port {
            Some(p) => p == port,
            None => DEFAULT_PORTS.contains(&port),
        }
    }

    /// Whether a name entry allows `host:port` (`host` lowercase, no trailing dot).
    pub fn allows_name(&self, host: &str, port: u16) -> bool {
        (self.any_name && DEFAULT_PORTS.contains(&port))
            || self.entries.iter().any(|e| {
                Self::port_ok(e, port)
                    && match &e.target {
                        Target::Exact(h) => h == host,
                        Target::Below(suffix) => host.ends_with(suffix.as_str()),
                        Target::Net(_) => false,
                    }
            })
    }

    /// Whether an address entry names `ip` and allows `port`.
    pub fn allows_address(&self, ip: IpAddr, port: u16) -> bool {
        let ip = canonical(ip);
        self.entries.iter().any(|e| match &e.target {
            Target::Net(net) => net.contains(&ip) && Self::port_ok(e, port),
            _ => false,
        })
    }
}

/// IPv4-mapped and IPv4-compatible IPv6 addresses as the IPv4 address they carry.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                // NAT64 (64:ff9b::/96) embeds an IPv4 address too.
                if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                    IpAddr::V4(Ipv4Addr::from((u32::from(s[6]) << 16) | u32::from(s[7])))
                } else {
                    IpAddr::V6(v6)
                }
            }
        },
        v4 => v4,
    }
}

/// Why an address is not for names to reach; `None` for a public unicast address.
pub fn special_range(ip: IpAddr) -> Option<&'static str> {
    match canonical(ip) {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            if v4.is_loopback() {
                Some("loopback")
            } else if v4.is_link_local() {
                Some("link-local (cloud metadata lives here)")
            } else if v4.is_private() {
                Some("private")
            } else if o[0] == 100 && (o[1] & 0xc0) == 64 {
                Some("shared address space (100.64.0.0/10)")
            } else if o[0] == 0 || v4.is_unspecified() {
                Some("'this network' (0.0.0.0/8)")
            } else if v4.is_multicast() {
                Some("multicast")
            } else if v4.is_broadcast() || o[0] >= 240 {
                Some("reserved")
            } else if v4.is_documentation() || (o[0] == 198 && (o[1] & 0xfe) == 18) {
                Some("documentation or benchmarking")
            } else if o[0] == 192 && o[1] == 0 && o[2] == 0 {
                Some("IETF protocol assignments")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            if v6.is_loopback() || v6.is_unspecified() {
                Some("loopback or unspecified")
            } else if (s[0] & 0xfe00) == 0xfc00 {
                Some("unique local")
            } else if (s[0] & 0xffc0) == 0xfe80 {
                Some("link-local")
            } else if (s[0] & 0xff00) == 0xff00 {
                Some("multicast")
            } else if s[0] == 0x2001 && s[1] == 0x0db8 {
                Some("documentation")
            } else if s[0] == 0x2002 {
                Some("6to4 (embeds an IPv4 address)")
            } else if s[0] == 0 && s[1] == 0 && s[2] == 0 && s[3] == 0 && s[4] == 0 {
                Some("IPv4-compatible or reserved")
            } else if (s[0] & 0xe000) != 0x2000 {
                Some("not global unicast")
            } else {
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_parse_or_say_what_is_wrong() {
        for good in [
            "api.example.com",
            "*.example.com",
            "api.example.com:8443",
            "10.0.0.0/8",
            "192.168.1.10:5432",
            "[fd00::1]:443",
            "fd00::/8",
        ] {
            assert!(AllowList::parse(&[good]).is_ok(), "{good}");
        }
        for bad in [
            "*.com",
            "*",
            "api..example.com",
            "x.com:0",
            "x.com:99999",
            "2130706433",
            "[::1",
            "ex ample.com",
            "http://x.com",
            "https://x.com/",
            "10.0.0.0/33",
        ] {
            let err = AllowList::parse(&[bad]).err();
            assert_eq!(err.map(|e| e.entry), Some(bad.to_owned()), "{bad}");
        }
    }

    #[test]
    fn networks_contain_their_addresses_only() {
        let list =
            AllowList::parse(&["10.20.0.0/16", "fd00::/8", "192.168.1.10"]).unwrap_or_default();
        let ip = |s: &str| {
            s.parse::<IpAddr>()
                .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
        };
        assert!(list.allows_address(ip("10.20.255.1"), 443));
        assert!(!list.allows_address(ip("10.21.0.1"), 443));
        assert!(list.allows_address(ip("fd12::1"), 80));
        assert!(!list.allows_address(ip("fe80::1"), 80));
        assert!(list.allows_address(ip("192.168.1.10"), 80));
        assert!(!list.allows_address(ip("192.168.1.11"), 80));
        assert!(
            list.allows_address(ip("::ffff:10.20.0.1"), 80),
            "mapped forms count as IPv4"
        );
        assert!(
            !list.allows_address(ip("10.20.0.1"), 8080),
            "ports 80 and 443 by default"
        );
        let wild = AllowList::parse(&["*.example.com"]).unwrap_or_default();
        assert!(wild.allows_name("a.b.example.com", 443));
        assert!(!wild.allows_name("example.com", 443));
        assert!(!wild.allows_name("evilexample.com", 443));
        assert!(!wild.allows_name("a.example.com", 8080));
    }
}
