//! The PROXY protocol, versions 1 and 2, as a pure function over the first
//! bytes of a connection
//! (<https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt>).
//!
//! [`parse`] owns what a PROXY header means: whether it is complete, whether
//! it is acceptable, where it ends (the HTTP request starts right after it),
//! and which client and server addresses it announces. It never does I/O,
//! never allocates, and never looks at a byte after the header.
//!
//! It is strict, because a header is only ever sent by a proxy we were told to
//! trust, and a malformed one means a misconfigured or hostile peer: v1 lines
//! need single spaces, addresses of the announced family, ports without sign
//! or leading zeroes, CRLF, and at most 107 bytes; v2 headers need version 2, a
//! known command, a family byte the spec lists, a length that covers the
//! addresses and at most 4096 bytes, and TLVs that exactly fill the rest. Each
//! of these is checked as soon as the bytes that decide it have arrived, and
//! the first problem by position wins, so a prefix of a header never gets a
//! different answer than the whole header would: waiting for more bytes can
//! only turn `Ok(None)` into an answer, never change an error.
//!
//! What the caller must decide: whether the peer may send a header at all
//! (only trusted proxies may), and what to do with [`ProxyHeader::Local`]
//! (keep the socket's own addresses).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// What a PROXY header announced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyHeader {
    /// The proxy relayed a client connection: its real source and destination.
    Proxied {
        source: SocketAddr,
        destination: SocketAddr,
    },
    /// v1 `PROXY UNKNOWN`, v2 LOCAL (a health check from the proxy itself), or
    /// v2 PROXY with a family we do not serve (UNSPEC, UNIX, UDP): keep the
    /// socket's own addresses.
    Local,
}

/// Why a PROXY header was refused. Every error means: close the connection
/// without answering, since nothing after a bad header can be framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    /// The input starts with neither the v1 nor the v2 signature (a client
    /// talking to a PROXY-protocol port directly, or a misconfigured proxy).
    #[error("not a PROXY protocol header")]
    NotProxy,
    /// A v1 line with a missing or extra field, a separator other than one
    /// space, a protocol other than TCP4, TCP6 or UNKNOWN, or a line not
    /// ended by CRLF.
    #[error("malformed PROXY v1 header")]
    V1Syntax,
    /// A v1 address that is not a valid address of the announced family.
    #[error("invalid address in PROXY v1 header")]
    V1Address,
    /// A v1 port that is not 0-65535 in decimal without sign or leading zero.
    #[error("invalid port in PROXY v1 header")]
    V1Port,
    /// No CRLF within the first 107 bytes.
    #[error("PROXY v1 header longer than 107 bytes")]
    V1TooLong,
    /// A v2 signature followed by a version other than 2.
    #[error("unsupported PROXY v2 version")]
    V2Version,
    /// A v2 command other than LOCAL (0) or PROXY (1).
    #[error("invalid PROXY v2 command")]
    V2Command,
    /// A v2 family/protocol byte the spec does not list.
    #[error("invalid PROXY v2 address family")]
    V2Family,
    /// A v2 length shorter than the address block of its family.
    #[error("PROXY v2 length too short for its addresses")]
    V2Length,
    /// A v2 length above 4096 bytes.
    #[error("PROXY v2 header too long")]
    V2TooLong,
    /// v2 TLVs that do not exactly fill the bytes after the addresses.
    #[error("malformed TLV in PROXY v2 header")]
    V2Tlv,
}

/// The longest header [`parse`] accepts: a v2 header with 4096 bytes of
/// addresses and TLVs (a v1 line is at most 107). `parse` never answers
/// `Ok(None)` to this many bytes, so a buffer of this size always suffices.
pub const MAX_LEN: usize = V2_HEADER_LEN + V2_MAX_LEN;

/// Parses a PROXY header (v1 or v2) from the start of `input`.
///
/// `Ok(None)`: `input` is a prefix of a header that may still be valid; read
/// more and call again with the longer input (never the case once `input`
/// holds [`MAX_LEN`] bytes). `Ok(Some((header, consumed)))`:
/// the first `consumed` bytes are the header and the HTTP request starts
/// right after them. `Err(e)`: close the connection.
pub fn parse(input: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    if let Some(sig) = input.get(..V2_SIGNATURE.len()) {
        if sig == V2_SIGNATURE {
            return parse_v2(input);
        }
    }
    if let Some(sig) = input.get(..V1_SIGNATURE.len()) {
        if sig == V1_SIGNATURE {
            return parse_v1(input);
        }
    }
    // Shorter than a signature: a prefix of one may still become a header.
    if V1_SIGNATURE.starts_with(input) || V2_SIGNATURE.starts_with(input) {
        Ok(None)
    } else {
        Err(ProxyError::NotProxy)
    }
}

const V1_SIGNATURE: &[u8] = b"PROXY";
/// The longest v1 line the spec allows, CRLF included (`PROXY UNKNOWN` with
/// two full-length IPv6 addresses and ports).
const V1_MAX_LEN: usize = 107;

const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
/// Signature, version/command, family/protocol, 16-bit length.
const V2_HEADER_LEN: usize = 16;
/// Most bytes after the fixed header: addresses and TLVs. HAProxy sends a few
/// hundred at most; this bounds what the caller must buffer.
const V2_MAX_LEN: usize = 4096;
/// Source and destination address and port, for AF_INET and AF_INET6.
const V2_INET_LEN: usize = 4 + 4 + 2 + 2;
const V2_INET6_LEN: usize = 16 + 16 + 2 + 2;

/// A v1 field, and what its bytes may be.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Field {
    Protocol,
    Ipv4,
    Ipv6,
    Port,
}

impl Field {
    /// Whether `field` (non-empty, without separator) may be the start of a
    /// valid field of this kind. Cheap, so it runs on every byte: a line that
    /// is already wrong is refused without waiting for its end.
    fn prefix_ok(self, field: &[u8]) -> bool {
        match self {
            Field::Protocol => [&b"TCP4"[..], b"TCP6", b"UNKNOWN"].iter().any(|p| p.starts_with(field)),
            // "255.255.255.255"
            Field::Ipv4 => field.len() <= 15 && field.iter().all(|&b| b.is_ascii_digit() || b == b'.'),
            // "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255"
            Field::Ipv6 => field.len() <= 45 && field.iter().all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.'),
            Field::Port => {
                field.iter().all(u8::is_ascii_digit)
                    && !(field.len() > 1 && field[0] == b'0')
                    && parse_decimal(field).is_some_and(|p| p <= u32::from(u16::MAX))
            }
        }
    }

    fn error(self) -> ProxyError {
        match self {
            Field::Protocol => ProxyError::V1Syntax,
            Field::Ipv4 | Field::Ipv6 => ProxyError::V1Address,
            Field::Port => ProxyError::V1Port,
        }
    }
}

/// Digits only, at most 5 of them; anything else is `None`.
fn parse_decimal(digits: &[u8]) -> Option<u32> {
    if digits.is_empty() || digits.len() > 5 {
        return None;
    }
    digits
        .iter()
        .try_fold(0u32, |n, &b| b.is_ascii_digit().then(|| n * 10 + u32::from(b - b'0')))
}

/// A position in a v1 line.
struct V1<'a> {
    input: &'a [u8],
    pos: usize,
}

impl<'a> V1<'a> {
    /// The byte at the current position; `None` when the input ends there.
    /// A position past the longest allowed line is an error even without
    /// the byte: the line can no longer end in time.
    fn peek(&self) -> Result<Option<u8>, ProxyError> {
        if self.pos >= V1_MAX_LEN {
            return Err(ProxyError::V1TooLong);
        }
        Ok(self.input.get(self.pos).copied())
    }

    /// Consumes exactly `expected`.
    fn expect(&mut self, expected: u8) -> Result<Option<()>, ProxyError> {
        match self.peek()? {
            None => Ok(None),
            Some(b) if b == expected => {
                self.pos += 1;
                Ok(Some(()))
            }
            Some(_) => Err(ProxyError::V1Syntax),
        }
    }

    /// Reads a field and consumes the space or CR that ends it, returned
    /// with it. `None`: the input ends inside the field.
    fn field(&mut self, kind: Field) -> Result<Option<(&'a [u8], u8)>, ProxyError> {
        let start = self.pos;
        loop {
            let Some(b) = self.peek()? else {
                return Ok(None);
            };
            match b {
                b' ' | b'\r' => {
                    let field = &self.input[start..self.pos];
                    self.pos += 1;
                    if field.is_empty() {
                        return Err(ProxyError::V1Syntax);
                    }
                    return Ok(Some((field, b)));
                }
                b'\n' => return Err(ProxyError::V1Syntax),
                _ if kind.prefix_ok(&self.input[start..=self.pos]) => self.pos += 1,
                _ => return Err(kind.error()),
            }
        }
    }

    /// Reads a field that must be followed by `separator`.
    fn field_then(&mut self, kind: Field, separator: u8) -> Result<Option<&'a [u8]>, ProxyError> {
        match self.field(kind)? {
            None => Ok(None),
            Some((field, b)) if b == separator => Ok(Some(field)),
            Some(_) => Err(ProxyError::V1Syntax),
        }
    }

    fn address(&mut self, kind: Field) -> Result<Option<IpAddr>, ProxyError> {
        let Some(field) = self.field_then(kind, b' ')? else {
            return Ok(None);
        };
        // `prefix_ok` let through only ASCII, so this is never the error.
        let text = std::str::from_utf8(field).map_err(|_| ProxyError::V1Address)?;
        // std's parsers refuse leading zeroes in IPv4 octets (no octal) and
        // zone indices in IPv6, as the spec requires.
        let ip = match kind {
            Field::Ipv4 => text.parse::<Ipv4Addr>().map(IpAddr::V4),
            _ => text.parse::<Ipv6Addr>().map(IpAddr::V6),
        };
        ip.map(Some).map_err(|_| ProxyError::V1Address)
    }

    fn port(&mut self, separator: u8) -> Result<Option<u16>, ProxyError> {
        let Some(field) = self.field_then(Field::Port, separator)? else {
            return Ok(None);
        };
        // `field` passed `prefix_ok`: digits, no leading zero, at most 65535.
        let port = parse_decimal(field).and_then(|p| u16::try_from(p).ok());
        port.map(Some).ok_or(ProxyError::V1Port)
    }
}

/// `input` starts with the v1 signature.
fn parse_v1(input: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    let mut line = V1 {
        input,
        pos: V1_SIGNATURE.len(),
    };
    macro_rules! next {
        ($e:expr) => {
            match $e? {
                Some(v) => v,
                None => return Ok(None),
            }
        };
    }
    next!(line.expect(b' '));
    let family = match next!(line.field(Field::Protocol)) {
        (b"TCP4", b' ') => Field::Ipv4,
        (b"TCP6", b' ') => Field::Ipv6,
        (b"UNKNOWN", separator) => {
            // The spec says to ignore everything up to the CRLF; only a stray
            // line ending is refused, since other parsers would end the line
            // there.
            if separator == b' ' {
                loop {
                    match next!(line.peek()) {
                        b'\r' => break,
                        b'\n' => return Err(ProxyError::V1Syntax),
                        _ => line.pos += 1,
                    }
                }
                line.pos += 1;
            }
            next!(line.expect(b'\n'));
            return Ok(Some((ProxyHeader::Local, line.pos)));
        }
        _ => return Err(ProxyError::V1Syntax),
    };
    let source = next!(line.address(family));
    let destination = next!(line.address(family));
    let source_port = next!(line.port(b' '));
    let destination_port = next!(line.port(b'\r'));
    next!(line.expect(b'\n'));
    let header = ProxyHeader::Proxied {
        source: SocketAddr::new(source, source_port),
        destination: SocketAddr::new(destination, destination_port),
    };
    Ok(Some((header, line.pos)))
}

/// What follows the fixed v2 header.
#[derive(Clone, Copy, PartialEq, Eq)]
enum V2Block {
    Inet,
    Inet6,
    /// LOCAL, or a family we fall back from: skipped unread.
    Skip,
}

/// `input` starts with the v2 signature.
fn parse_v2(input: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    let Some(&version_command) = input.get(12) else {
        return Ok(None);
    };
    if version_command >> 4 != 2 {
        return Err(ProxyError::V2Version);
    }
    let local = match version_command & 0x0f {
        0 => true,
        1 => false,
        _ => return Err(ProxyError::V2Command),
    };
    let Some(&family) = input.get(13) else {
        return Ok(None);
    };
    let block = match family {
        // LOCAL: "the receiver must ... discard the protocol block including
        // the family, which is ignored".
        _ if local => V2Block::Skip,
        0x11 => V2Block::Inet,
        0x21 => V2Block::Inet6,
        // UNSPEC, UDP over IPv4 and IPv6, UNIX stream and datagram: valid,
        // but not a TCP client of ours; the spec lets a receiver fall back to
        // UNSPEC, i.e. the socket's own addresses.
        0x00 | 0x12 | 0x22 | 0x31 | 0x32 => V2Block::Skip,
        // "Other values ... must be rejected as invalid by receivers."
        _ => return Err(ProxyError::V2Family),
    };
    let Some(&[hi, lo]) = input.get(14..V2_HEADER_LEN) else {
        return Ok(None);
    };
    let len = usize::from(u16::from_be_bytes([hi, lo]));
    if len > V2_MAX_LEN {
        return Err(ProxyError::V2TooLong);
    }
    let addresses_len = match block {
        V2Block::Inet => V2_INET_LEN,
        V2Block::Inet6 => V2_INET6_LEN,
        V2Block::Skip => 0,
    };
    if len < addresses_len {
        return Err(ProxyError::V2Length);
    }
    let total = V2_HEADER_LEN + len;

    if block != V2Block::Skip {
        // Each TLV is a type byte, a 16-bit length and that many bytes. Walked
        // as far as the input goes, so a bad one is refused when it arrives.
        let mut pos = V2_HEADER_LEN + addresses_len;
        while pos < total {
            if total - pos < 3 {
                return Err(ProxyError::V2Tlv);
            }
            let Some(&[_, hi, lo]) = input.get(pos..pos + 3) else {
                return Ok(None);
            };
            pos += 3 + usize::from(u16::from_be_bytes([hi, lo]));
            if pos > total {
                return Err(ProxyError::V2Tlv);
            }
        }
    }
    let Some(payload) = input.get(V2_HEADER_LEN..total) else {
        return Ok(None);
    };

    let header = match block {
        V2Block::Skip => ProxyHeader::Local,
        V2Block::Inet => {
            let mut b = payload;
            let source = Ipv4Addr::from(take::<4>(&mut b));
            let destination = Ipv4Addr::from(take::<4>(&mut b));
            ProxyHeader::Proxied {
                source: SocketAddr::new(source.into(), u16::from_be_bytes(take(&mut b))),
                destination: SocketAddr::new(destination.into(), u16::from_be_bytes(take(&mut b))),
            }
        }
        V2Block::Inet6 => {
            let mut b = payload;
            let source = Ipv6Addr::from(take::<16>(&mut b));
            let destination = Ipv6Addr::from(take::<16>(&mut b));
            ProxyHeader::Proxied {
                source: SocketAddr::new(source.into(), u16::from_be_bytes(take(&mut b))),
                destination: SocketAddr::new(destination.into(), u16::from_be_bytes(take(&mut b))),
            }
        }
    };
    Ok(Some((header, total)))
}

/// Takes `N` bytes off the front of `bytes`. Only called on a v2 payload,
/// which is at least as long as its address block (checked against the
/// length field above), for exactly that block's fields.
fn take<const N: usize>(bytes: &mut &[u8]) -> [u8; N] {
    let mut out = [0; N];
    out.copy_from_slice(&bytes[..N]);
    *bytes = &bytes[N..];
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const V2: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

    /// A v2 header whose length field says exactly `payload.len()`.
    fn v2(version_command: u8, family: u8, payload: &[u8]) -> Vec<u8> {
        v2_len(version_command, family, payload.len() as u16, payload)
    }

    fn v2_len(version_command: u8, family: u8, len: u16, payload: &[u8]) -> Vec<u8> {
        let mut out = V2.to_vec();
        out.extend_from_slice(&[version_command, family]);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    /// 192.0.2.1:56324 -> 198.51.100.7:443, as a v2 AF_INET block.
    const INET: [u8; 12] = [192, 0, 2, 1, 198, 51, 100, 7, 0xdc, 0x04, 0x01, 0xbb];

    fn inet6() -> Vec<u8> {
        let mut b = "2001:db8::1".parse::<Ipv6Addr>().unwrap().octets().to_vec();
        b.extend_from_slice(&"::ffff:10.0.0.1".parse::<Ipv6Addr>().unwrap().octets());
        b.extend_from_slice(&[0xff, 0xff, 0x00, 0x50]);
        b
    }

    fn proxied(source: &str, destination: &str) -> ProxyHeader {
        ProxyHeader::Proxied {
            source: source.parse().unwrap(),
            destination: destination.parse().unwrap(),
        }
    }

    fn with(mut a: Vec<u8>, b: &[u8]) -> Vec<u8> {
        a.extend_from_slice(b);
        a
    }

    fn valid_cases() -> Vec<(Vec<u8>, ProxyHeader)> {
        let max_tlv = {
            // One TLV filling the block up to the 4096-byte limit.
            let value_len = V2_MAX_LEN - V2_INET_LEN - 3;
            let mut tlv = vec![0x04, (value_len >> 8) as u8, value_len as u8];
            tlv.resize(3 + value_len, 0xaa);
            tlv
        };
        let v4 = proxied("192.0.2.1:56324", "198.51.100.7:443");
        let v6 = proxied("[2001:db8::1]:65535", "[::ffff:10.0.0.1]:80");
        vec![
            (b"PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\r\n".to_vec(), v4),
            (b"PROXY TCP4 0.0.0.0 0.0.0.0 0 0\r\n".to_vec(), proxied("0.0.0.0:0", "0.0.0.0:0")),
            (
                b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n".to_vec(),
                proxied("255.255.255.255:65535", "255.255.255.255:65535"),
            ),
            (b"PROXY TCP6 2001:db8::1 ::ffff:10.0.0.1 65535 80\r\n".to_vec(), v6),
            (b"PROXY TCP6 2001:DB8::1 ::FFFF:10.0.0.1 65535 80\r\n".to_vec(), v6),
            (b"PROXY TCP6 :: ::1 1 2\r\n".to_vec(), proxied("[::]:1", "[::1]:2")),
            (
                b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n"
                    .to_vec(),
                proxied(
                    "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535",
                    "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535",
                ),
            ),
            (b"PROXY UNKNOWN\r\n".to_vec(), ProxyHeader::Local),
            (b"PROXY UNKNOWN 192.0.2.1 garbage \t\0\xff\r\n".to_vec(), ProxyHeader::Local),
            (
                // The longest line the spec allows: 107 bytes.
                b"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n"
                    .to_vec(),
                ProxyHeader::Local,
            ),
            (v2(0x21, 0x11, &INET), v4),
            (v2(0x21, 0x21, &inet6()), v6),
            // TLVs: ALPN "h2", an empty NOOP, an authority.
            (
                v2(0x21, 0x11, &with(INET.to_vec(), b"\x01\x00\x02h2\x04\x00\x00\x02\x00\x0bexample.com")),
                v4,
            ),
            (v2(0x21, 0x21, &with(inet6(), b"\x04\x00\x00")), v6),
            (v2(0x21, 0x11, &with(INET.to_vec(), &max_tlv)), v4),
            // LOCAL: whatever follows is discarded, family included.
            (v2(0x20, 0x00, b""), ProxyHeader::Local),
            (v2(0x20, 0x11, &INET), ProxyHeader::Local),
            (v2(0x20, 0xff, b"\x01\x02\x03"), ProxyHeader::Local),
            // Families we fall back from.
            (v2(0x21, 0x00, b""), ProxyHeader::Local),
            (v2(0x21, 0x00, b"ignored"), ProxyHeader::Local),
            (v2(0x21, 0x12, &INET), ProxyHeader::Local),
            (v2(0x21, 0x22, &inet6()), ProxyHeader::Local),
            (v2(0x21, 0x31, &[0; 216]), ProxyHeader::Local),
            (v2(0x21, 0x32, &[0; 216]), ProxyHeader::Local),
        ]
    }

    #[test]
    fn valid_headers() {
        for (input, expected) in valid_cases() {
            assert_eq!(parse(&input), Ok(Some((expected, input.len()))), "{input:?}");
            // The request after the header is not part of it.
            let with_request = with(input.clone(), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
            assert_eq!(parse(&with_request), Ok(Some((expected, input.len()))), "{input:?}");
        }
    }

    #[test]
    fn split_at_every_byte_is_incomplete() {
        for (input, _) in valid_cases() {
            for end in 0..input.len() {
                assert_eq!(parse(&input[..end]), Ok(None), "{input:?} cut at {end}");
            }
        }
    }

    #[test]
    fn request_after_header_starts_exactly_at_consumed() {
        let mut input = b"PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\r\n".to_vec();
        input.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        let (_, consumed) = parse(&input).unwrap().unwrap();
        assert_eq!(&input[consumed..], b"GET / HTTP/1.1\r\n\r\n");

        // A v2 header may be followed by bytes that look like another one.
        let mut input = v2(0x21, 0x11, &INET);
        let len = input.len();
        input.extend_from_slice(b"PROXY UNKNOWN\r\n");
        assert_eq!(parse(&input).unwrap().unwrap().1, len);
        assert_eq!(&input[len..], b"PROXY UNKNOWN\r\n");
    }

    fn invalid_cases() -> Vec<(Vec<u8>, ProxyError)> {
        use ProxyError::*;
        let v1: &[(&[u8], ProxyError)] = &[
            (b"GET / HTTP/1.1\r\n\r\n", NotProxy),
            (b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", NotProxy),
            (b" PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n", NotProxy),
            (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", NotProxy),
            (b"\r\n\r\n\0\r\nQUIT\r", NotProxy),
            (b"\r\n\r\n\n", NotProxy),
            (b"PROXYTCP4 1.2.3.4 5.6.7.8 1 2\r\n", V1Syntax),
            (b"PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n", V1Syntax),
            (b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", V1Syntax),
            (b"PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n", V1Syntax),
            (b"PROXY TCP 1.2.3.4 5.6.7.8 1 2\r\n", V1Syntax),
            (b"PROXY TCP4\r\n", V1Syntax),
            (b"PROXY TCP4 \r\n", V1Syntax),
            (b"PROXY \r\n", V1Syntax),
            (b"PROXY\r\n", V1Syntax),
            (b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n", V1Syntax),
            (b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", V1Syntax),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8  1 2\r\n", V1Syntax),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1  2\r\n", V1Syntax),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", V1Syntax),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", V1Syntax),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8\r\n", V1Syntax),
            (b"PROXY TCP4 1.2.3.4\r\n", V1Syntax),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", V1Syntax),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n", V1Syntax),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX", V1Syntax),
            (b"PROXY TCP4 1.2.3.4\n5.6.7.8 1 2\r\n", V1Syntax),
            (b"PROXY UNKNOWNX\r\n", V1Syntax),
            (b"PROXY UNKNOWN\n", V1Syntax),
            (b"PROXY UNKNOWN\rX", V1Syntax),
            (b"PROXY UNKNOWN a\nb\r\n", V1Syntax),
            (b"PROXY UNKNOWN a\rb\r\n", V1Syntax),
            (b"PROXY TCP4 1.2.3.4\t5.6.7.8 1 2\r\n", V1Address),
            (b"PROXY TCP4 ::1 ::1 1 2\r\n", V1Address),
            (b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n", V1Address),
            (b"PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n", V1Address),
            (b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", V1Address),
            (b"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n", V1Address),
            (b"PROXY TCP4 1.2.3.4. 5.6.7.8 1 2\r\n", V1Address),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8.9 1 2\r\n", V1Address),
            (b"PROXY TCP4 1111.2.3.4 5.6.7.8 1 2\r\n", V1Address),
            (b"PROXY TCP4 localhost 5.6.7.8 1 2\r\n", V1Address),
            (b"PROXY TCP4 1.2.3.4:5 5.6.7.8 1 2\r\n", V1Address),
            (b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", V1Address),
            (b"PROXY TCP6 [::1] ::1 1 2\r\n", V1Address),
            (b"PROXY TCP6 1:2:3:4:5:6:7:8:9 ::1 1 2\r\n", V1Address),
            (b"PROXY TCP6 ::1 ::g 1 2\r\n", V1Address),
            (b"PROXY TCP6 12345:: ::1 1 2\r\n", V1Address),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", V1Port),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 2\r\n", V1Port),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 123456 2\r\n", V1Port),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 080 2\r\n", V1Port),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 00 2\r\n", V1Port),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 +80 2\r\n", V1Port),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n", V1Port),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 0x50\r\n", V1Port),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2a\r\n", V1Port),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\t\r\n", V1Port),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n", V1Port),
            // One byte over the longest line the spec allows.
            (
                b"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 655355\r\n",
                V1TooLong,
            ),
            // Valid addresses, but too long a line.
            (
                b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255 ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255 1 2\r\n",
                V1TooLong,
            ),
        ];
        let mut cases: Vec<(Vec<u8>, ProxyError)> = v1.iter().map(|&(i, e)| (i.to_vec(), e)).collect();
        let mut no_crlf = b"PROXY UNKNOWN ".to_vec();
        no_crlf.resize(300, b' ');
        cases.push((no_crlf, V1TooLong));

        cases.extend([
            (v2(0x11, 0x11, &INET), V2Version),
            (v2(0x31, 0x11, &INET), V2Version),
            (v2(0x01, 0x11, &INET), V2Version),
            (v2(0xf1, 0x11, &INET), V2Version),
            (v2(0x22, 0x11, &INET), V2Command),
            (v2(0x2f, 0x11, &INET), V2Command),
            (v2(0x21, 0x01, &INET), V2Family),
            (v2(0x21, 0x10, &INET), V2Family),
            (v2(0x21, 0x13, &INET), V2Family),
            (v2(0x21, 0x20, &INET), V2Family),
            (v2(0x21, 0x30, &INET), V2Family),
            (v2(0x21, 0x41, &INET), V2Family),
            (v2(0x21, 0xff, &INET), V2Family),
            (v2(0x21, 0x11, &INET[..11]), V2Length),
            (v2(0x21, 0x11, b""), V2Length),
            (v2(0x21, 0x21, &inet6()[..35]), V2Length),
            (v2(0x21, 0x21, &INET), V2Length),
            (v2_len(0x21, 0x11, 4097, &INET), V2TooLong),
            (v2_len(0x20, 0x00, 0xffff, b""), V2TooLong),
            (v2_len(0x21, 0x00, 0xffff, b""), V2TooLong),
            // A TLV header cut by the length, or a value past it.
            (v2(0x21, 0x11, &with(INET.to_vec(), b"\x04")), V2Tlv),
            (v2(0x21, 0x11, &with(INET.to_vec(), b"\x04\x00")), V2Tlv),
            (v2(0x21, 0x11, &with(INET.to_vec(), b"\x04\x00\x01")), V2Tlv),
            (
                v2(0x21, 0x11, &with(INET.to_vec(), b"\x04\x00\x00\x04\x00\x02x")),
                V2Tlv,
            ),
            (v2(0x21, 0x21, &with(inet6(), b"\x01\xff\xff")), V2Tlv),
        ]);
        cases
    }

    #[test]
    fn invalid_headers() {
        for (input, expected) in invalid_cases() {
            assert_eq!(parse(&input), Err(expected), "{input:?}");
            // More bytes never change an error.
            assert_eq!(parse(&with(input.clone(), b"\r\n")), Err(expected), "{input:?}");
            // A prefix is incomplete or refused the same way.
            for end in 0..input.len() {
                match parse(&input[..end]) {
                    Ok(None) => {}
                    other => assert_eq!(other, Err(expected), "{input:?} cut at {end}"),
                }
            }
        }
    }

    #[test]
    fn errors_come_as_soon_as_they_are_certain() {
        use ProxyError::*;
        let mut v2_long = V2.to_vec();
        v2_long.extend_from_slice(&[0x21, 0x11, 0x10, 0x01]);
        let cases: &[(&[u8], ProxyError)] = &[
            (b"G", NotProxy),
            (b"PROXZ", NotProxy),
            (b"\r\n\r\n\0\r\nQUIX", NotProxy),
            (b"PROXY_", V1Syntax),
            (b"PROXY TCP7", V1Syntax),
            (b"PROXY TCP4 1.2.3.4x", V1Address),
            (b"PROXY TCP4 1.2.3.4.5.6.7.8.9", V1Address),
            (b"PROXY TCP6 ::z", V1Address),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 01", V1Port),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 65536", V1Port),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 00", V1Port),
            (b"\r\n\r\n\0\r\nQUIT\n\x11", V2Version),
            (b"\r\n\r\n\0\r\nQUIT\n\x23", V2Command),
            (b"\r\n\r\n\0\r\nQUIT\n\x21\x14", V2Family),
            (b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0b", V2Length),
            (&v2_long, V2TooLong),
            (b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0d", V2Tlv),
            (b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x10............\x01\x00\x02", V2Tlv),
        ];
        for &(input, expected) in cases {
            assert_eq!(parse(input), Err(expected), "{:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn max_len_bytes_always_get_an_answer() {
        let mut v1 = b"PROXY UNKNOWN ".to_vec();
        v1.resize(MAX_LEN, b'x');
        assert_eq!(parse(&v1), Err(ProxyError::V1TooLong));
        let mut longest = v2_len(0x21, 0x11, V2_MAX_LEN as u16, &INET);
        longest.extend_from_slice(&[0x04, 0x0f, 0xf1]);
        longest.resize(MAX_LEN, 0);
        assert_eq!(parse(&longest[..MAX_LEN - 1]), Ok(None));
        assert_eq!(
            parse(&longest),
            Ok(Some((proxied("192.0.2.1:56324", "198.51.100.7:443"), MAX_LEN)))
        );
    }

    #[test]
    fn incomplete_headers_ask_for_more() {
        let cases: &[&[u8]] = &[
            b"",
            b"P",
            b"PROXY",
            b"PROXY ",
            b"PROXY UNK",
            b"PROXY UNKNOWN",
            b"PROXY UNKNOWN\r",
            b"PROXY UNKNOWN anything",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r",
            b"PROXY TCP6 ::ffff:1.2.3.4",
            b"\r",
            b"\r\n\r\n\0\r\nQUIT",
            b"\r\n\r\n\0\r\nQUIT\n",
            b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00",
            b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c",
            b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x10\x00",
        ];
        for &input in cases {
            assert_eq!(parse(input), Ok(None), "{:?}", String::from_utf8_lossy(input));
        }
    }
}
