//! `--forwarded-allow-ips`: which peers are trusted with `X-Forwarded-*`
//! and PROXY protocol headers.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An address block: `addr/prefix`, host bits all zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpNet {
    pub addr: IpAddr,
    pub prefix: u8,
}

/// The IPv4 address an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) stands
/// for: a dual-stack listener shows IPv4 peers that way.
fn unmapped(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u32::from(a) as u128,
        IpAddr::V6(a) => u128::from(a),
    }
}

fn width(ip: IpAddr) -> u8 {
    if ip.is_ipv4() { 32 } else { 128 }
}

fn mask(width: u8, prefix: u8) -> u128 {
    let all = if width == 32 { u32::MAX as u128 } else { u128::MAX };
    if prefix == 0 {
        0
    } else {
        all & (all << (width - prefix))
    }
}

impl IpNet {
    /// `IP` or `IP/PREFIX`. An IPv4-mapped IPv6 block of at least /96 is
    /// stored as the IPv4 block it maps.
    pub fn parse(s: &str) -> Result<IpNet, String> {
        let (ip, prefix) = match s.split_once('/') {
            Some((ip, p)) => (ip, Some(p)),
            None => (s, None),
        };
        let ip: IpAddr = ip
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or CIDR block"))?;
        let w = width(ip);
        let prefix = match prefix {
            None => w,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= w => n,
                _ => return Err(format!("{s:?}: the prefix length must be a number from 0 to {w}")),
            },
        };
        if bits(ip) & !mask(w, prefix) != 0 {
            let net = IpNet {
                addr: from_bits(ip, bits(ip) & mask(w, prefix)),
                prefix,
            };
            return Err(format!("{s:?} has host bits set (did you mean {net}?)"));
        }
        let net = match ip {
            IpAddr::V6(v6) if prefix >= 96 && v6.to_ipv4_mapped().is_some() => IpNet {
                addr: unmapped(ip),
                prefix: prefix - 96,
            },
            _ => IpNet { addr: ip, prefix },
        };
        Ok(net)
    }

    pub fn contains(&self, ip: &IpAddr) -> bool {
        let ip = unmapped(*ip);
        if ip.is_ipv4() != self.addr.is_ipv4() {
            return false;
        }
        let m = mask(width(ip), self.prefix);
        bits(ip) & m == bits(self.addr) & m
    }
}

fn from_bits(like: IpAddr, b: u128) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(b as u32)),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(b)),
    }
}

/// A single address prints bare, a block as `addr/prefix`.
impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.prefix == width(self.addr) {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.prefix)
        }
    }
}

/// Trusted peers: `*` (anyone) or a list of blocks; empty trusts no one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpAllowList {
    pub any: bool,
    pub nets: Vec<IpNet>,
}

impl IpAllowList {
    /// Comma-separated entries (spaces around them allowed): IPs, CIDR
    /// blocks, or `*`.
    pub fn parse(s: &str) -> Result<IpAllowList, String> {
        let mut list = IpAllowList {
            any: false,
            nets: Vec::new(),
        };
        for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            if entry == "*" {
                list.any = true;
            } else {
                let net = IpNet::parse(entry)?;
                if !list.nets.contains(&net) {
                    list.nets.push(net);
                }
            }
        }
        if list.any {
            list.nets.clear();
        }
        Ok(list)
    }

    pub fn contains(&self, ip: &IpAddr) -> bool {
        self.any || self.nets.iter().any(|n| n.contains(ip))
    }
}

/// The form [`IpAllowList::parse`] reads back.
impl fmt::Display for IpAllowList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.any {
            return f.write_str("*");
        }
        let list: Vec<String> = self.nets.iter().map(IpNet::to_string).collect();
        f.write_str(&list.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn default_trusts_loopback_only() {
        let l = IpAllowList::parse("127.0.0.1,::1").unwrap();
        assert!(l.contains(&ip("127.0.0.1")));
        assert!(l.contains(&ip("::1")));
        assert!(
            l.contains(&ip("::ffff:127.0.0.1")),
            "IPv4-mapped peer of a dual-stack socket"
        );
        assert!(!l.contains(&ip("127.0.0.2")));
        assert!(!l.contains(&ip("10.0.0.1")));
        assert!(!l.contains(&ip("::2")));
        assert_eq!(l.to_string(), "127.0.0.1,::1");
    }

    #[test]
    fn blocks() {
        let l = IpAllowList::parse(" 10.0.0.0/8 , 192.168.1.0/24,fd00::/8").unwrap();
        for yes in [
            "10.1.2.3",
            "10.255.255.255",
            "192.168.1.77",
            "fd12::1",
            "::ffff:10.9.9.9",
        ] {
            assert!(l.contains(&ip(yes)), "{yes}");
        }
        for no in ["11.0.0.1", "192.168.2.1", "fe80::1", "::ffff:11.0.0.1", "::a00:1"] {
            assert!(!l.contains(&ip(no)), "{no}");
        }
        assert_eq!(l.to_string(), "10.0.0.0/8,192.168.1.0/24,fd00::/8");
        assert!(IpAllowList::parse("0.0.0.0/0").unwrap().contains(&ip("8.8.8.8")));
        assert!(!IpAllowList::parse("0.0.0.0/0").unwrap().contains(&ip("2001:db8::1")));
        assert!(IpAllowList::parse("::/0").unwrap().contains(&ip("2001:db8::1")));
    }

    #[test]
    fn mapped_blocks_are_ipv4_blocks() {
        let l = IpAllowList::parse("::ffff:10.0.0.0/104").unwrap();
        assert_eq!(l.nets, vec![IpNet::parse("10.0.0.0/8").unwrap()]);
        assert!(l.contains(&ip("10.1.1.1")));
        assert!(l.contains(&ip("::ffff:10.1.1.1")));
        assert_eq!(IpNet::parse("::ffff:1.2.3.4").unwrap().to_string(), "1.2.3.4");
    }

    #[test]
    fn star_and_empty() {
        let any = IpAllowList::parse("*").unwrap();
        assert!(any.contains(&ip("8.8.8.8")) && any.contains(&ip("2001:db8::1")));
        assert_eq!(IpAllowList::parse("10.0.0.1, *").unwrap().to_string(), "*");
        let none = IpAllowList::parse("").unwrap();
        assert!(!none.contains(&ip("127.0.0.1")));
        assert_eq!(none.to_string(), "");
    }

    #[test]
    fn bad_entries() {
        for (s, reason) in [
            (
                "10.0.0.0/33",
                "\"10.0.0.0/33\": the prefix length must be a number from 0 to 32",
            ),
            ("::/129", "\"::/129\": the prefix length must be a number from 0 to 128"),
            (
                "10.0.0.0/x",
                "\"10.0.0.0/x\": the prefix length must be a number from 0 to 32",
            ),
            (
                "10.1.2.3/8",
                "\"10.1.2.3/8\" has host bits set (did you mean 10.0.0.0/8?)",
            ),
            ("localhost", "\"localhost\" is not an IP address or CIDR block"),
            ("10.0.0", "\"10.0.0\" is not an IP address or CIDR block"),
        ] {
            assert_eq!(IpAllowList::parse(s).unwrap_err(), reason);
        }
    }

    #[test]
    fn round_trip() {
        for s in ["127.0.0.1,::1", "10.0.0.0/8,2001:db8::/32,1.2.3.4", "*", ""] {
            assert_eq!(IpAllowList::parse(s).unwrap().to_string(), s);
        }
    }
}
