//! Headers a trusted front proxy adds: the client address from
//! `X-Forwarded-For` and the scheme from gunicorn's secure-scheme headers.
//!
//! This module owns what those headers mean and which proxies are trusted
//! ([`TrustedProxies`], gunicorn's `forwarded_allow_ips`). It never decides
//! whether to look at them: the caller must check that the connection's peer
//! is trusted first, because any client can send these headers, and only a
//! proxy we trust overwrites or appends to them honestly. Pure functions, no
//! I/O; the header values are the request parser's (already trimmed, no
//! control characters).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use httparse::Header;

use super::request::trim_ows;

/// A set of trusted peers: CIDRs (IPv4 and IPv6), or `*` for all.
///
/// IPv4-mapped IPv6 addresses (`::ffff:1.2.3.4`, what a dual-stack socket
/// reports for an IPv4 peer) are matched as the IPv4 address they carry, and
/// a mapped entry (`::ffff:10.0.0.0/104`) is stored as the IPv4 one it means
/// (`10.0.0.0/8`), so either spelling matches either kind of peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustedProxies {
    all: bool,
    nets: Vec<Net>,
}

/// A network: the address with its host bits zero, and the prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Net {
    V4(u32, u8),
    V6(u128, u8),
}

impl Net {
    fn contains(self, ip: IpAddr) -> bool {
        match (self, ip) {
            (Net::V4(net, prefix), IpAddr::V4(ip)) => u32::from(ip) & mask_v4(prefix) == net,
            (Net::V6(net, prefix), IpAddr::V6(ip)) => u128::from(ip) & mask_v6(prefix) == net,
            _ => false,
        }
    }
}

fn mask_v4(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn mask_v6(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

impl TrustedProxies {
    /// Parses a comma-separated list of addresses and CIDRs, such as
    /// `"127.0.0.1,::1,10.0.0.0/8"`, or `"*"` to trust every peer. Spaces
    /// around items are ignored; an empty string trusts no one. A CIDR with
    /// host bits set (`10.0.0.1/8`) is refused, as Python's `ip_network` does,
    /// since it is more likely a typo than a network. The error names the
    /// offending item.
    pub fn parse(spec: &str) -> Result<TrustedProxies, String> {
        let mut trusted = TrustedProxies {
            all: false,
            nets: Vec::new(),
        };
        if spec.trim().is_empty() {
            return Ok(trusted);
        }
        for item in spec.split(',').map(str::trim) {
            if item == "*" {
                trusted.all = true;
            } else {
                trusted.nets.push(parse_net(item)?);
            }
        }
        Ok(trusted)
    }

    /// Whether `ip` is in the set.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.all || self.nets.iter().any(|net| net.contains(ip))
    }

    /// Trusts no one.
    pub fn none() -> TrustedProxies {
        TrustedProxies {
            all: false,
            nets: Vec::new(),
        }
    }

    /// Adds every peer `other` trusts (the option may be given repeatedly).
    pub fn merge(&mut self, other: TrustedProxies) {
        self.all |= other.all;
        for net in other.nets {
            if !self.nets.contains(&net) {
                self.nets.push(net);
            }
        }
        if self.all {
            self.nets.clear();
        }
    }
}

/// The form [`TrustedProxies::parse`] reads back.
impl std::fmt::Display for TrustedProxies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.all {
            return f.write_str("*");
        }
        let items: Vec<String> = self
            .nets
            .iter()
            .map(|net| match *net {
                Net::V4(bits, 32) => Ipv4Addr::from(bits).to_string(),
                Net::V4(bits, p) => format!("{}/{p}", Ipv4Addr::from(bits)),
                Net::V6(bits, 128) => Ipv6Addr::from(bits).to_string(),
                Net::V6(bits, p) => format!("{}/{p}", Ipv6Addr::from(bits)),
            })
            .collect();
        f.write_str(&items.join(","))
    }
}

fn parse_net(item: &str) -> Result<Net, String> {
    let bad = |why: String| format!("invalid trusted proxy {item:?}: {why}");
    if item.is_empty() {
        return Err("empty item in the trusted proxy list".to_string());
    }
    let (addr, prefix) = match item.split_once('/') {
        Some((addr, prefix)) => (addr, Some(prefix)),
        None => (item, None),
    };
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| bad("expected an IP address, a CIDR such as 10.0.0.0/8, or *".to_string()))?;
    let max: u8 = if ip.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => max,
        Some(p) => p
            .parse::<u8>()
            .ok()
            .filter(|&n| n <= max && p.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| bad(format!("the prefix length must be a number from 0 to {max}")))?,
    };
    let (net, masked) = match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4) & mask_v4(prefix);
            (Net::V4(bits, prefix), IpAddr::V4(Ipv4Addr::from(bits)))
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & mask_v6(prefix);
            (Net::V6(bits, prefix), IpAddr::V6(Ipv6Addr::from(bits)))
        }
    };
    if masked != ip {
        return Err(bad(format!("host bits are set; the network is {masked}/{prefix}")));
    }
    // `::ffff:a.b.c.d/n` with n >= 96 is the IPv4 network `a.b.c.d/(n - 96)`.
    if let (IpAddr::V6(v6), Some(prefix)) = (ip, prefix.checked_sub(96)) {
        if let Some(v4) = v6.to_ipv4_mapped() {
            return Ok(Net::V4(u32::from(v4), prefix));
        }
    }
    Ok(net)
}

/// The client address from `X-Forwarded-For`, for a request whose peer the
/// caller has already found in `trusted`.
///
/// `values` are the values of every `X-Forwarded-For` line in order; they are
/// read as if joined with commas. Each proxy appends the address it received
/// the request from, so the list is walked from the right, over our trusted
/// proxies, and the first address that is not one of them is the client:
/// everything to its left was written by the client or by proxies we do not
/// trust, and is ignored, since a client can put anything there.
///
/// Entries may carry a port (`1.2.3.4:5678`, `[2001:db8::1]:80`), which is
/// dropped; the address is returned as written (a mapped `::ffff:1.2.3.4`
/// stays IPv6). `None` when there is no entry, or when an entry the walk
/// reaches is not an address (`unknown`, an obfuscated RFC 7239 name, an
/// empty item, garbage): a trusted proxy wrote it, so the chain cannot be
/// followed, and the caller should keep the peer's address. Entries left of
/// the client are never parsed: if garbage there could make this `None`, a
/// client could make itself appear to be our proxy.
///
/// When every entry is a trusted proxy (always so with `*`), the leftmost is
/// returned: the request came from inside the trusted network, and the
/// leftmost hop is the closest thing to its origin.
pub fn client_from_x_forwarded_for(values: &[&[u8]], trusted: &TrustedProxies) -> Option<IpAddr> {
    let mut leftmost = None;
    for value in values.iter().rev() {
        for entry in value.rsplit(|&b| b == b',') {
            let ip = parse_forwarded_entry(entry)?;
            if !trusted.contains(ip) {
                return Some(ip);
            }
            leftmost = Some(ip);
        }
    }
    leftmost
}

/// `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1`, `[2001:db8::1]` or
/// `[2001:db8::1]:80`, with optional spaces or tabs around it.
fn parse_forwarded_entry(entry: &[u8]) -> Option<IpAddr> {
    let entry = std::str::from_utf8(trim_ows(entry)).ok()?;
    if let Some(rest) = entry.strip_prefix('[') {
        let (ip, after) = rest.split_once(']')?;
        let ip: Ipv6Addr = ip.parse().ok()?;
        if !after.is_empty() {
            parse_port(after.strip_prefix(':')?)?;
        }
        return Some(IpAddr::V6(ip));
    }
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip);
    }
    // An unbracketed address with a port can only be IPv4.
    let (ip, port) = entry.split_once(':')?;
    let ip: Ipv4Addr = ip.parse().ok()?;
    parse_port(port)?;
    Some(IpAddr::V4(ip))
}

fn parse_port(port: &str) -> Option<u16> {
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    port.parse().ok()
}

/// Conflicting secure-scheme headers: one says https, another http. gunicorn
/// answers these requests with 400 (`InvalidSchemeHeaders`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("conflicting secure scheme headers")]
pub struct SchemeConflict;

impl SchemeConflict {
    /// The status to answer with.
    pub fn status(&self) -> u16 {
        400
    }

    /// The reason phrase for [`status`](SchemeConflict::status).
    pub fn reason(&self) -> &'static str {
        "Bad Request"
    }
}

/// gunicorn's default `secure_scheme_headers`, with the values that mean
/// https and http. Names and values compare case-insensitively.
const SCHEME_HEADERS: [(&str, &[&str], &[&str]); 3] = [
    ("x-forwarded-proto", &["https"], &["http"]),
    ("x-forwarded-protocol", &["ssl", "https"], &["http"]),
    ("x-forwarded-ssl", &["on"], &["off"]),
];

/// The scheme announced by `X-Forwarded-Proto: https`,
/// `X-Forwarded-Protocol: ssl` or `X-Forwarded-Ssl: on` (and their http
/// counterparts `http`, `http` and `off`), for a request whose peer the
/// caller has already found trusted.
///
/// `Ok(None)` when none of these headers has a recognised value; other values
/// (`wss`, a list like `https, http`) are ignored. `Err(SchemeConflict)` when
/// two recognised values disagree, repeated lines of one header included:
/// which one to believe cannot be known, so gunicorn refuses the request.
/// Names spelled with `_` never match (the WSGI layer drops those headers).
pub fn scheme_from_headers(headers: &[Header<'_>]) -> Result<Option<&'static str>, SchemeConflict> {
    let mut scheme = None;
    for header in headers {
        let Some(this) = header_scheme(header) else {
            continue;
        };
        match scheme {
            None => scheme = Some(this),
            Some(seen) if seen != this => return Err(SchemeConflict),
            Some(_) => {}
        }
    }
    Ok(scheme)
}

fn header_scheme(header: &Header<'_>) -> Option<&'static str> {
    let (_, https, http) = SCHEME_HEADERS
        .iter()
        .find(|(name, _, _)| header.name.eq_ignore_ascii_case(name))?;
    let value = trim_ows(header.value);
    let is = |values: &[&str]| values.iter().any(|v| value.eq_ignore_ascii_case(v.as_bytes()));
    if is(https) {
        Some("https")
    } else if is(http) {
        Some("http")
    } else {
        None
    }
}

#[cfg(test)]
mod display_tests {
    use super::*;

    #[test]
    fn display_reads_back_and_merge_unions() {
        for spec in ["127.0.0.1,::1", "10.0.0.0/8,fd00::/8", "*", ""] {
            let t = TrustedProxies::parse(spec).unwrap();
            assert_eq!(TrustedProxies::parse(&t.to_string()).unwrap(), t, "{spec}");
        }
        let mut a = TrustedProxies::parse("127.0.0.1").unwrap();
        a.merge(TrustedProxies::parse("127.0.0.1,10.0.0.0/8").unwrap());
        assert_eq!(a.to_string(), "127.0.0.1,10.0.0.0/8");
        a.merge(TrustedProxies::parse("*").unwrap());
        assert!(a.contains("8.8.8.8".parse().unwrap()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn trusted_proxies_parse() {
        let ok: &[(&str, &[&str], &[&str])] = &[
            // (spec, trusted, not trusted)
            ("", &[], &["127.0.0.1", "::1", "0.0.0.0"]),
            ("  ", &[], &["127.0.0.1"]),
            (
                "127.0.0.1,::1",
                &["127.0.0.1", "::1", "::ffff:127.0.0.1"],
                &["127.0.0.2", "::2", "10.0.0.1"],
            ),
            (" 127.0.0.1 , ::1 ", &["127.0.0.1", "::1"], &["127.0.0.2"]),
            (
                "10.0.0.0/8",
                &["10.0.0.0", "10.255.255.255", "::ffff:10.1.2.3"],
                &["11.0.0.0", "9.255.255.255", "::a00:1", "fd00::a00:1"],
            ),
            ("192.168.1.0/24", &["192.168.1.77"], &["192.168.2.1"]),
            (
                "0.0.0.0/0",
                &["1.2.3.4", "255.255.255.255", "::ffff:8.8.8.8"],
                &["::1", "2001:db8::1"],
            ),
            ("10.0.0.1/32", &["10.0.0.1"], &["10.0.0.0", "10.0.0.2"]),
            ("10.0.0.1/032", &["10.0.0.1"], &["10.0.0.2"]),
            (
                "fd00::/8",
                &["fd12:3456::1", "fdff::"],
                &["fe00::", "10.0.0.1", "::ffff:253.0.0.1"],
            ),
            ("2001:db8::/32", &["2001:db8:ffff::1"], &["2001:db9::1"]),
            ("::/0", &["::1", "2001:db8::1"], &["1.2.3.4", "::ffff:1.2.3.4"]),
            // Mapped entries mean the IPv4 network they carry.
            ("::ffff:10.0.0.0/104", &["10.9.8.7", "::ffff:10.9.8.7"], &["11.0.0.1"]),
            ("::ffff:192.0.2.1", &["192.0.2.1", "::ffff:192.0.2.1"], &["192.0.2.2"]),
            ("*", &["1.2.3.4", "::1", "::ffff:1.2.3.4", "2001:db8::1"], &[]),
            ("10.0.0.1, *", &["8.8.8.8"], &[]),
        ];
        for &(spec, yes, no) in ok {
            let trusted = TrustedProxies::parse(spec).unwrap_or_else(|e| panic!("{spec:?}: {e}"));
            for &a in yes {
                assert!(trusted.contains(ip(a)), "{spec:?} should contain {a}");
            }
            for &a in no {
                assert!(!trusted.contains(ip(a)), "{spec:?} should not contain {a}");
            }
        }
    }

    #[test]
    fn trusted_proxies_errors_name_the_item() {
        let bad: &[(&str, &str)] = &[
            ("localhost", "\"localhost\""),
            ("127.0.0.1,,::1", "empty item"),
            ("127.0.0.1,", "empty item"),
            ("10.0.0.1/8", "host bits are set; the network is 10.0.0.0/8"),
            ("fd00::1/8", "the network is fd00::/8"),
            ("10.0.0.0/33", "from 0 to 32"),
            ("::/129", "from 0 to 128"),
            ("10.0.0.0/", "\"10.0.0.0/\""),
            ("10.0.0.0/+8", "\"10.0.0.0/+8\""),
            ("10.0.0.0/-1", "\"10.0.0.0/-1\""),
            ("10.0.0.0/8/8", "\"10.0.0.0/8/8\""),
            ("[::1]", "\"[::1]\""),
            ("fe80::1%eth0", "\"fe80::1%eth0\""),
            ("010.0.0.1", "\"010.0.0.1\""),
            ("1.2.3.4:80", "\"1.2.3.4:80\""),
            ("**", "\"**\""),
        ];
        for &(spec, needle) in bad {
            let e = TrustedProxies::parse(spec).expect_err(spec);
            assert!(e.contains(needle), "{spec:?}: {e}");
        }
    }

    #[test]
    fn x_forwarded_for() {
        let cases: &[(&str, &[&str], Option<&str>)] = &[
            // (trusted, header lines, client)
            ("10.0.0.0/8", &["203.0.113.9"], Some("203.0.113.9")),
            ("10.0.0.0/8", &["203.0.113.9, 10.0.0.2"], Some("203.0.113.9")),
            ("10.0.0.0/8", &["203.0.113.9,10.0.0.2,10.0.0.3"], Some("203.0.113.9")),
            // Spoofing: whatever the client wrote left of the first untrusted
            // hop is ignored, even if it claims to be a trusted proxy...
            (
                "10.0.0.0/8",
                &["10.0.0.5, 198.51.100.1, 203.0.113.9, 10.0.0.2"],
                Some("203.0.113.9"),
            ),
            ("10.0.0.0/8", &["127.0.0.1, 203.0.113.9"], Some("203.0.113.9")),
            // ...or garbage, which must not let the client fall back to being
            // the proxy itself.
            ("10.0.0.0/8", &["garbage, 203.0.113.9, 10.0.0.2"], Some("203.0.113.9")),
            ("10.0.0.0/8", &["unknown,,;%, 203.0.113.9"], Some("203.0.113.9")),
            // Several lines are one list, in order.
            (
                "10.0.0.0/8",
                &["198.51.100.1", "203.0.113.9", "10.0.0.2"],
                Some("203.0.113.9"),
            ),
            (
                "10.0.0.0/8",
                &["198.51.100.1, 10.0.0.7", "10.0.0.2"],
                Some("198.51.100.1"),
            ),
            // Ports and brackets.
            ("10.0.0.0/8", &["203.0.113.9:5678, 10.0.0.2:80"], Some("203.0.113.9")),
            ("10.0.0.0/8", &["[2001:db8::1]:443, 10.0.0.2"], Some("2001:db8::1")),
            ("10.0.0.0/8", &["[2001:db8::1]"], Some("2001:db8::1")),
            ("10.0.0.0/8", &[" 2001:db8::1 \t"], Some("2001:db8::1")),
            ("10.0.0.0/8", &["1.2.3.4:0"], Some("1.2.3.4")),
            // IPv6 proxies and clients; mapped hops match IPv4 entries.
            ("fd00::/8", &["2001:db8::7, fd00::2, fd00::1"], Some("2001:db8::7")),
            ("10.0.0.0/8", &["203.0.113.9, ::ffff:10.0.0.2"], Some("203.0.113.9")),
            (
                "10.0.0.0/8",
                &["::ffff:203.0.113.9, 10.0.0.2"],
                Some("::ffff:203.0.113.9"),
            ),
            ("::ffff:10.0.0.0/104", &["203.0.113.9, 10.0.0.2"], Some("203.0.113.9")),
            // Every hop trusted: the leftmost.
            ("10.0.0.0/8", &["10.0.0.9, 10.0.0.2"], Some("10.0.0.9")),
            ("*", &["203.0.113.9, 198.51.100.1, 10.0.0.2"], Some("203.0.113.9")),
            ("*", &["[::1]:80"], Some("::1")),
            // Nothing to go by.
            ("10.0.0.0/8", &[], None),
            ("10.0.0.0/8", &[""], None),
            ("10.0.0.0/8", &["   "], None),
            // Garbage the walk reaches: a trusted proxy wrote it.
            ("10.0.0.0/8", &["203.0.113.9, unknown"], None),
            ("10.0.0.0/8", &["203.0.113.9, 10.0.0.2,"], None),
            ("10.0.0.0/8", &["203.0.113.9", ""], None),
            ("10.0.0.0/8", &["203.0.113.9,,10.0.0.2"], None),
            ("10.0.0.0/8", &["_hidden, 10.0.0.2"], None),
            ("10.0.0.0/8", &["203.0.113.9:99999"], None),
            ("10.0.0.0/8", &["203.0.113.9:"], None),
            ("10.0.0.0/8", &["203.0.113.9:+80"], None),
            ("10.0.0.0/8", &["2001:db8::1]:80"], None),
            ("10.0.0.0/8", &["[2001:db8::1]80"], None),
            ("10.0.0.0/8", &["[203.0.113.9]"], None),
            ("10.0.0.0/8", &["[fe80::1%eth0]"], None),
            ("10.0.0.0/8", &["203.0.113.9 10.0.0.2"], None),
            ("10.0.0.0/8", &["203.0.113.009"], None),
            ("*", &["garbage, 203.0.113.9"], None),
        ];
        for &(spec, lines, expected) in cases {
            let trusted = TrustedProxies::parse(spec).unwrap();
            let values: Vec<&[u8]> = lines.iter().map(|l| l.as_bytes()).collect();
            assert_eq!(
                client_from_x_forwarded_for(&values, &trusted),
                expected.map(ip),
                "{spec:?} {lines:?}"
            );
        }
        // Not UTF-8.
        let trusted = TrustedProxies::parse("*").unwrap();
        assert_eq!(client_from_x_forwarded_for(&[b"1.2.3.4\xff"], &trusted), None);
    }

    /// (header fields, expected scheme)
    type SchemeCase = (
        &'static [(&'static str, &'static str)],
        Result<Option<&'static str>, SchemeConflict>,
    );

    #[test]
    fn scheme() {
        let cases: &[SchemeCase] = &[
            (&[], Ok(None)),
            (&[("Host", "example.com")], Ok(None)),
            (&[("X-Forwarded-Proto", "https")], Ok(Some("https"))),
            (&[("x-forwarded-proto", "HTTPS")], Ok(Some("https"))),
            (&[("X-Forwarded-Proto", "http")], Ok(Some("http"))),
            (&[("X-Forwarded-Protocol", "ssl")], Ok(Some("https"))),
            (&[("X-FORWARDED-PROTOCOL", "SSL")], Ok(Some("https"))),
            (&[("X-Forwarded-Protocol", "https")], Ok(Some("https"))),
            (&[("X-Forwarded-Protocol", "http")], Ok(Some("http"))),
            (&[("X-Forwarded-Ssl", "on")], Ok(Some("https"))),
            (&[("X-Forwarded-Ssl", "On")], Ok(Some("https"))),
            (&[("X-Forwarded-Ssl", "off")], Ok(Some("http"))),
            // Unrecognised values are ignored.
            (&[("X-Forwarded-Proto", "wss")], Ok(None)),
            (&[("X-Forwarded-Proto", "https, http")], Ok(None)),
            (&[("X-Forwarded-Proto", "")], Ok(None)),
            (&[("X-Forwarded-Ssl", "1")], Ok(None)),
            (
                &[("X-Forwarded-Proto", "wss"), ("X-Forwarded-Ssl", "on")],
                Ok(Some("https")),
            ),
            // Underscore spellings are not these headers.
            (&[("X_Forwarded_Proto", "https")], Ok(None)),
            (&[("X-Forwarded-Proto-Foo", "https")], Ok(None)),
            // Agreeing headers.
            (
                &[
                    ("X-Forwarded-Proto", "https"),
                    ("X-Forwarded-Ssl", "on"),
                    ("X-Forwarded-Protocol", "ssl"),
                ],
                Ok(Some("https")),
            ),
            (
                &[("X-Forwarded-Proto", "http"), ("X-Forwarded-Ssl", "off")],
                Ok(Some("http")),
            ),
            (
                &[("X-Forwarded-Proto", "https"), ("X-Forwarded-Proto", "https")],
                Ok(Some("https")),
            ),
            // Conflicts.
            (
                &[("X-Forwarded-Proto", "https"), ("X-Forwarded-Ssl", "off")],
                Err(SchemeConflict),
            ),
            (
                &[("X-Forwarded-Proto", "http"), ("X-Forwarded-Protocol", "ssl")],
                Err(SchemeConflict),
            ),
            (
                &[("X-Forwarded-Proto", "https"), ("X-Forwarded-Proto", "http")],
                Err(SchemeConflict),
            ),
            (
                &[
                    ("X-Forwarded-Ssl", "on"),
                    ("Host", "x"),
                    ("X-Forwarded-Protocol", "http"),
                ],
                Err(SchemeConflict),
            ),
        ];
        for (fields, expected) in cases {
            let headers: Vec<Header<'_>> = fields
                .iter()
                .map(|&(name, value)| Header {
                    name,
                    value: value.as_bytes(),
                })
                .collect();
            assert_eq!(scheme_from_headers(&headers), *expected, "{fields:?}");
        }
        assert_eq!(SchemeConflict.status(), 400);
    }
}
