//! Response head encoding and the validation of what an application hands
//! us (status line, header names and values). Never does I/O.

use super::request::{is_field_byte, is_tchar};

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    #[error("invalid status {0:?}: expected three digits from 200 up, a space and a reason phrase")]
    Status(String),
    #[error("invalid header name {0:?}")]
    HeaderName(String),
    #[error("invalid header value for {name:?}: {value:?} (CR, LF, NUL and other control characters are not allowed)")]
    HeaderValue { name: String, value: String },
    #[error("invalid Content-Length {0:?}")]
    ContentLength(String),
}

/// Parses `"200 OK"` into its code; the reason phrase may be empty but the
/// space may not be missing.
pub fn parse_status(status: &[u8]) -> Result<u16, ResponseError> {
    let b = status;
    let ok = b.len() >= 4
        && b[..3].iter().all(u8::is_ascii_digit)
        // 1xx are the server's to send (100 Continue when the app reads
        // the body): as an app's final status one would leave the real
        // response to be taken for the next request's.
        && b[0] >= b'2'
        && b[3] == b' '
        && b[4..].iter().all(|&c| c == b'\t' || (c >= b' ' && c != 0x7f));
    if !ok {
        return Err(ResponseError::Status(String::from_utf8_lossy(status).into_owned()));
    }
    Ok(u16::from(b[0] - b'0') * 100 + u16::from(b[1] - b'0') * 10 + u16::from(b[2] - b'0'))
}

/// RFC 9110 token characters (the request parser's table).
pub fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&c| is_tchar(c))
}

/// Refuses anything that could split or smuggle a header: CR, LF, NUL and
/// the other controls except horizontal tab.
pub fn validate_header(name: &str, value: &[u8]) -> Result<(), ResponseError> {
    if !is_token(name.as_bytes()) {
        return Err(ResponseError::HeaderName(name.to_string()));
    }
    if !value.iter().all(|&c| is_field_byte(c)) {
        return Err(ResponseError::HeaderValue {
            name: name.to_string(),
            value: String::from_utf8_lossy(value).into_owned(),
        });
    }
    Ok(())
}

/// Content-Length as the application gave it: digits only.
pub fn parse_content_length(value: &[u8]) -> Result<u64, ResponseError> {
    let v = super::request::trim_ows(value);
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return Err(ResponseError::ContentLength(
            String::from_utf8_lossy(value).into_owned(),
        ));
    }
    // At most 19 digits: below u64::MAX.
    Ok(v.iter().fold(0, |n, &d| n * 10 + u64::from(d - b'0')))
}

/// Hop-by-hop headers an application must not set (PEP 3333); the server
/// owns the connection's framing.
pub fn is_hop_by_hop(name: &str) -> bool {
    const HOP: [&str; 8] = [
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ];
    HOP.iter().any(|h| h.eq_ignore_ascii_case(name))
}

/// How the body of a response is delimited on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body may follow (HEAD, 1xx, 204, 304).
    NoBody,
    /// The application's or our own Content-Length.
    Length(u64),
    Chunked,
    /// HTTP/1.0 without a length: the body ends when we close.
    Close,
}

/// Writes a complete response head. `headers` are already validated; the
/// framing header (Content-Length we computed, Transfer-Encoding) and the
/// connection header are added here so they can never be duplicated.
pub struct HeadWriter<'a> {
    pub buf: &'a mut Vec<u8>,
}

impl HeadWriter<'_> {
    pub fn status_line(&mut self, http11: bool, status: &[u8]) {
        self.buf
            .extend_from_slice(if http11 { b"HTTP/1.1 " } else { b"HTTP/1.0 " });
        self.buf.extend_from_slice(status);
        self.buf.extend_from_slice(b"\r\n");
    }

    pub fn header(&mut self, name: &[u8], value: &[u8]) {
        self.buf.extend_from_slice(name);
        self.buf.extend_from_slice(b": ");
        self.buf.extend_from_slice(value);
        self.buf.extend_from_slice(b"\r\n");
    }

    pub fn content_length(&mut self, n: u64) {
        self.buf.extend_from_slice(b"Content-Length: ");
        // Not write!(): the formatting machinery cost 270 instructions a
        // response (callgrind), itoa a tenth of that.
        self.buf.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
        self.buf.extend_from_slice(b"\r\n");
    }

    pub fn end(&mut self) {
        self.buf.extend_from_slice(b"\r\n");
    }
}

/// `"<hex size>\r\n"` for one chunk; returns the buffer and how much of it is used.
pub fn chunk_size_line(len: usize) -> ([u8; 18], usize) {
    let mut out = [0u8; 18];
    let digits = if len == 0 {
        1
    } else {
        (usize::BITS - len.leading_zeros()).div_ceil(4) as usize
    };
    for (i, slot) in out.iter_mut().take(digits).enumerate() {
        *slot = b"0123456789abcdef"[(len >> (4 * (digits - 1 - i))) & 0xf];
    }
    out[digits] = b'\r';
    out[digits + 1] = b'\n';
    (out, digits + 2)
}

/// A minimal complete response for errors the server answers itself; to a
/// HEAD request, the head alone (RFC 9110 9.3.2: no content, whatever the
/// status).
pub fn simple_response(status: u16, reason: &str, date: &[u8], close: bool, head_request: bool) -> Vec<u8> {
    let body = format!("{status} {reason}\n");
    let mut out = Vec::with_capacity(160);
    let mut w = HeadWriter { buf: &mut out };
    w.status_line(true, format!("{status} {reason}").as_bytes());
    w.header(b"Server", b"zibai");
    w.header(b"Date", date);
    w.header(b"Content-Type", b"text/plain; charset=utf-8");
    w.content_length(body.len() as u64);
    if close {
        w.header(b"Connection", b"close");
    }
    w.end();
    if !head_request {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        assert_eq!(parse_status(b"200 OK"), Ok(200));
        assert_eq!(parse_status(b"404 "), Ok(404));
        assert_eq!(parse_status(b"599 Custom Thing"), Ok(599));
        // Latin-1 reason phrases (obs-text) are allowed.
        assert_eq!(parse_status(b"200 \xc7a va"), Ok(200));
        for bad in [
            &b"200"[..],
            b"200OK",
            b"20 OK",
            b"abc OK",
            b"200 OK\r\nX: y",
            b"099 x",
            b"100 Continue",
            b"101 Switching Protocols",
            b"200 a\nb",
            b"",
        ] {
            assert!(parse_status(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn header_injection_is_refused() {
        assert!(validate_header("X-A", b"b\tc").is_ok());
        for (n, v) in [
            ("X-A", "b\r\nSet-Cookie: x"),
            ("X-A", "b\nc"),
            ("X-A", "b\0"),
            ("X A", "b"),
            ("X-A:", "b"),
            ("", "b"),
            ("X\r\nY", "b"),
        ] {
            assert!(validate_header(n, v.as_bytes()).is_err(), "{n:?} {v:?}");
        }
    }

    #[test]
    fn content_length() {
        assert_eq!(parse_content_length(b"13"), Ok(13));
        assert_eq!(parse_content_length(b" 7 "), Ok(7));
        assert_eq!(
            parse_content_length(b"9999999999999999999"),
            Ok(9_999_999_999_999_999_999)
        );
        for bad in ["", "+3", "-1", "1 2", "0x10", "99999999999999999999", "\u{661}"] {
            assert!(parse_content_length(bad.as_bytes()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn chunk_lines() {
        for (n, want) in [
            (0usize, "0\r\n"),
            (1, "1\r\n"),
            (15, "f\r\n"),
            (16, "10\r\n"),
            (4096, "1000\r\n"),
        ] {
            let (buf, len) = chunk_size_line(n);
            assert_eq!(&buf[..len], want.as_bytes());
        }
        let (buf, len) = chunk_size_line(usize::MAX);
        assert_eq!(&buf[..len], b"ffffffffffffffff\r\n");
    }

    #[test]
    fn head() {
        let mut v = Vec::new();
        let mut w = HeadWriter { buf: &mut v };
        w.status_line(true, b"200 OK");
        w.header(b"A", b"b");
        w.content_length(5);
        w.end();
        assert_eq!(v, b"HTTP/1.1 200 OK\r\nA: b\r\nContent-Length: 5\r\n\r\n");
    }
}
