//! HTTP/1.1 request heads: the request line, the header section and the
//! message framing they imply (RFC 9112 sections 2-7).
//!
//! [`parse_request`] owns every decision about what a request head means:
//! whether it is complete, whether it is acceptable, how its body is framed,
//! and whether the connection may be reused. It is strict on purpose: anything
//! two HTTP implementations could read differently (bare LF, obs-fold,
//! whitespace before a colon, a Content-Length that is not plain digits,
//! Content-Length next to Transfer-Encoding, a Transfer-Encoding that is not
//! exactly `chunked`) is refused instead of guessed at, because a front proxy
//! that guesses differently is how requests get smuggled.
//!
//! It never does I/O and never allocates: headers are written into the
//! caller's slice and everything returned borrows from the caller's buffer.
//!
//! Deliberately not refused here: a missing Host (gunicorn serves it, and
//! WSGI falls back to SERVER_NAME), repeated non-framing fields, and names
//! containing `_` (the WSGI layer drops those, since `Content_Length` and
//! `Content-Length` would both become `HTTP_CONTENT_LENGTH`).
//!
//! Why not httparse's `parse`: httparse accepts bare-LF line endings, cannot
//! tell an unsupported version (505) from garbage (400), and does not report
//! per-line sizes, so the limits below could not be enforced exactly. We keep
//! `httparse::Header` as the header type so the rest of the server shares one.

use httparse::Header;

/// The HTTP versions we serve.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

/// Size limits for a request head, and the largest Content-Length accepted.
///
/// The request-line and header-line limits count bytes the way gunicorn's
/// `limit_request_line` and `limit_request_field_size` do, so the same
/// configured number accepts the same requests.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Longest request line, not counting its CRLF. Exceeding it is 414.
    pub max_request_line: usize,
    /// Most header fields in one request. Exceeding it is 431. The effective
    /// limit is also capped by the length of the slice passed to
    /// [`parse_request`].
    pub max_headers: usize,
    /// Longest header line, name through the CRLF that ends it. Exceeding it
    /// is 431.
    pub max_field_size: usize,
    /// Largest whole head, from the first byte (including skipped empty lines)
    /// through the empty line that ends it. Exceeding it is 431.
    pub max_head_size: usize,
    /// Largest Content-Length accepted (413 above it); 0 means unlimited.
    /// The chunked decoder takes the same number.
    pub max_body_size: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_line: 8190,
            max_headers: 100,
            max_field_size: 8190,
            max_head_size: 64 * 1024,
            max_body_size: 1 << 30,
        }
    }
}

/// How the request body is framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyKind {
    /// No body: neither Content-Length nor Transfer-Encoding, or
    /// `Content-Length: 0`. Requests are never close-delimited.
    Empty,
    /// Exactly this many bytes follow the head; always more than 0.
    Length(u64),
    /// A chunked body follows; decode it with `proto::chunked::ChunkedDecoder`.
    Chunked,
}

/// A parsed request head. Everything borrows from the caller's buffer and
/// header slice.
#[derive(Clone, Copy, Debug)]
pub struct Request<'h, 'b> {
    /// A token, case preserved (methods are case-sensitive).
    pub method: &'b str,
    /// The request-target as sent: origin-form `/a?b`, absolute-form
    /// `http://h/p`, authority-form `h:443` (CONNECT only) or `*` (OPTIONS only).
    pub target: &'b str,
    pub version: Version,
    /// Header fields in the order received. Names are tokens (case as sent);
    /// values are trimmed of surrounding spaces and tabs and contain no
    /// control characters other than tab. Names containing `_` are kept here;
    /// they never affect framing.
    pub headers: &'h [Header<'b>],
    pub body: BodyKind,
    /// Whether the connection may carry another request after this one.
    pub keep_alive: bool,
    /// The client sent `Expect: 100-continue` on HTTP/1.1 and waits for an
    /// interim 100 response before sending the body.
    pub expect_continue: bool,
    /// Bytes of the buffer taken by the head, including leading empty lines
    /// and the final CRLF CRLF; the body (or the next request) starts here.
    pub head_len: usize,
}

/// Why a request head was refused. Every error means: answer with
/// [`status`](RequestError::status) and close the connection, because the
/// framing of anything after the refused head cannot be trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// A line ended in LF without CR, or a CR was not followed by LF.
    #[error("line not terminated by CRLF")]
    LineEnding,
    /// The request line is not `method SP target SP version`.
    #[error("malformed request line")]
    RequestLine,
    /// The method is empty or not a token.
    #[error("invalid method")]
    Method,
    /// The request-target is empty, holds a control character, is not UTF-8,
    /// or is not a form allowed for the method.
    #[error("invalid request-target")]
    Target,
    /// The version is not `HTTP/` DIGIT `.` DIGIT.
    #[error("malformed HTTP version")]
    Version,
    /// A well-formed version other than HTTP/1.0 or HTTP/1.1.
    #[error("HTTP version not supported")]
    UnsupportedVersion,
    /// The request line is longer than `Limits::max_request_line`.
    #[error("request line too long")]
    RequestLineTooLong,
    /// A header name is empty, not a token, or followed by whitespace before
    /// the colon.
    #[error("invalid header name")]
    HeaderName,
    /// A header value holds a control character other than tab.
    #[error("invalid header value")]
    HeaderValue,
    /// A header line starts with whitespace (obsolete line folding).
    #[error("obsolete line folding")]
    ObsFold,
    /// A header line is longer than `Limits::max_field_size`.
    #[error("header line too long")]
    HeaderLineTooLong,
    /// More header fields than `Limits::max_headers` (or the header slice).
    #[error("too many header fields")]
    TooManyHeaders,
    /// The head is larger than `Limits::max_head_size`.
    #[error("request head too large")]
    HeadTooLarge,
    /// A Content-Length value that is not 1*DIGIT or does not fit in a u64.
    #[error("invalid Content-Length")]
    ContentLength,
    /// More than one Content-Length field, even with equal values.
    #[error("more than one Content-Length")]
    DuplicateContentLength,
    /// Both Content-Length and Transfer-Encoding (RFC 9112 6.3: a likely
    /// smuggling attempt).
    #[error("both Content-Length and Transfer-Encoding")]
    ContentLengthWithTransferEncoding,
    /// A Transfer-Encoding that is malformed, applies chunked more than once
    /// or not last, or does not end with chunked.
    #[error("invalid Transfer-Encoding")]
    TransferEncoding,
    /// A Transfer-Encoding ending in chunked that also names other codings
    /// (`gzip, chunked`): well-formed, but we decode none of them.
    #[error("transfer coding not implemented")]
    UnsupportedTransferCoding,
    /// Transfer-Encoding in an HTTP/1.0 request (RFC 9112 6.1: the framing is
    /// faulty and the connection must be closed).
    #[error("Transfer-Encoding in an HTTP/1.0 request")]
    TransferEncodingHttp10,
    /// More than one Host field (RFC 9110 7.2 requires a 400).
    #[error("more than one Host")]
    DuplicateHost,
    /// A Host that is not `uri-host [":" port]` (RFC 9112 3.2 requires a
    /// 400): it becomes SERVER_NAME and SERVER_PORT, which apps trust.
    #[error("invalid Host")]
    Host,
    /// A Content-Length above `Limits::max_body_size`.
    #[error("body larger than allowed")]
    BodyTooLarge,
    /// An Expect value other than `100-continue`.
    #[error("unsupported expectation")]
    ExpectationFailed,
}

impl RequestError {
    /// The status to answer with before closing the connection.
    pub fn status(&self) -> u16 {
        use RequestError::*;
        match self {
            RequestLineTooLong => 414,
            HeaderLineTooLong | TooManyHeaders | HeadTooLarge => 431,
            BodyTooLarge => 413,
            UnsupportedTransferCoding => 501,
            UnsupportedVersion => 505,
            ExpectationFailed => 417,
            LineEnding
            | RequestLine
            | Method
            | Target
            | Version
            | HeaderName
            | HeaderValue
            | ObsFold
            | ContentLength
            | DuplicateContentLength
            | ContentLengthWithTransferEncoding
            | TransferEncoding
            | TransferEncodingHttp10
            | DuplicateHost
            | Host => 400,
        }
    }

    /// The reason phrase for [`status`](RequestError::status) (RFC 9110 names).
    pub fn reason(&self) -> &'static str {
        match self.status() {
            413 => "Content Too Large",
            414 => "URI Too Long",
            417 => "Expectation Failed",
            431 => "Request Header Fields Too Large",
            501 => "Not Implemented",
            505 => "HTTP Version Not Supported",
            _ => "Bad Request",
        }
    }
}

/// Parses one request head from the start of `buf`.
///
/// `Ok(None)`: the head is incomplete and within every limit; read more and
/// call again with the longer buffer. `Err(e)`: refuse with `e.status()` and
/// close. Limits are enforced on incomplete input too, so a peer cannot make
/// the caller buffer more than the limits allow, and a request line whose
/// method is already invalid is refused without waiting for its end (so a TLS
/// handshake sent to a plain-text port gets an answer instead of a hang).
///
/// `headers` receives the header fields; at most
/// `min(headers.len(), limits.max_headers)` are accepted.
pub fn parse_request<'h, 'b>(
    buf: &'b [u8],
    headers: &'h mut [Header<'b>],
    limits: &Limits,
) -> Result<Option<Request<'h, 'b>>, RequestError> {
    // RFC 9112 2.2: a server SHOULD ignore at least one empty line before the
    // request line (some clients send CRLF after a POST body).
    let mut pos: usize = 0;
    loop {
        match buf.get(pos..pos.saturating_add(2)) {
            Some(b"\r\n") => pos += 2,
            _ => match buf.get(pos) {
                None | Some(b'\r') if buf.len() - pos < 2 => return Ok(None),
                Some(b'\r' | b'\n') => return Err(RequestError::LineEnding),
                _ => break,
            },
        }
        if pos > limits.max_head_size {
            return Err(RequestError::HeadTooLarge);
        }
    }

    let line_start = pos;
    let (method, target, version) = match find_line(buf, pos) {
        // The method within the length limit first, then the length, in both
        // arms: the first problem by position wins, so a prefix of a request
        // never gets a different answer than the whole request would.
        Line::Partial { len } => {
            check_method_prefix(&buf[line_start..line_start + len.min(limits.max_request_line)])?;
            if len > limits.max_request_line {
                return Err(RequestError::RequestLineTooLong);
            }
            return Ok(None);
        }
        Line::Complete { end, next, crlf } => {
            let line = &buf[line_start..end];
            check_method_prefix(&line[..line.len().min(limits.max_request_line)])?;
            if line.len() > limits.max_request_line {
                return Err(RequestError::RequestLineTooLong);
            }
            if next > limits.max_head_size {
                return Err(RequestError::HeadTooLarge);
            }
            if !crlf {
                return Err(RequestError::LineEnding);
            }
            pos = next;
            parse_request_line(line)?
        }
    };

    let capacity = headers.len().min(limits.max_headers);
    let mut count = 0;
    let head_len = loop {
        match find_line(buf, pos) {
            Line::Partial { len } => {
                // Checked in the same order as for a complete line, so a
                // prefix of a request never gets a different answer than the
                // whole request would.
                if len.saturating_add(2) > limits.max_field_size {
                    return Err(RequestError::HeaderLineTooLong);
                }
                if buf.len() > limits.max_head_size {
                    return Err(RequestError::HeadTooLarge);
                }
                return Ok(None);
            }
            Line::Complete { end, next, crlf } => {
                let line = &buf[pos..end];
                if line.is_empty() && crlf {
                    if next > limits.max_head_size {
                        return Err(RequestError::HeadTooLarge);
                    }
                    break next;
                }
                if line.len().saturating_add(2) > limits.max_field_size {
                    return Err(RequestError::HeaderLineTooLong);
                }
                if next > limits.max_head_size {
                    return Err(RequestError::HeadTooLarge);
                }
                if !crlf {
                    return Err(RequestError::LineEnding);
                }
                if count == capacity {
                    return Err(RequestError::TooManyHeaders);
                }
                headers[count] = parse_header_line(line)?;
                count += 1;
                pos = next;
            }
        }
    };

    let headers: &'h [Header<'b>] = headers;
    let headers = &headers[..count];
    let framing = framing(version, headers, limits)?;
    Ok(Some(Request {
        method,
        target,
        version,
        headers,
        body: framing.body,
        keep_alive: framing.keep_alive,
        expect_continue: framing.expect_continue,
        head_len,
    }))
}

/// A parsed head kept as offsets into the buffer it was parsed from, so a
/// head is parsed once (to learn that it is complete and valid) and read
/// again later (to build the environ) without borrowing the buffer in
/// between. The buffer must not change between [`record`](HeadIndex::record)
/// and [`view`](HeadIndex::view); `view` re-checks every string it hands
/// out, so a changed buffer gives `None`, never a wrong `&str`.
#[derive(Debug, Default)]
pub struct HeadIndex {
    recorded: bool,
    method: (usize, usize),
    target: (usize, usize),
    version: Option<Version>,
    /// (name start, name end, value start, value end) per header.
    headers: Vec<[usize; 4]>,
    body: Option<BodyKind>,
    keep_alive: bool,
    expect_continue: bool,
    head_len: usize,
}

impl HeadIndex {
    /// Remembers `req`, a head parsed from `buf`.
    pub fn record(&mut self, buf: &[u8], req: &Request<'_, '_>) {
        let base = buf.as_ptr() as usize;
        let span = |s: &[u8]| {
            let start = s.as_ptr() as usize - base;
            (start, start + s.len())
        };
        self.method = span(req.method.as_bytes());
        self.target = span(req.target.as_bytes());
        self.version = Some(req.version);
        self.headers.clear();
        self.headers.extend(req.headers.iter().map(|h| {
            let (n0, n1) = span(h.name.as_bytes());
            let (v0, v1) = span(h.value);
            [n0, n1, v0, v1]
        }));
        self.body = Some(req.body);
        self.keep_alive = req.keep_alive;
        self.expect_continue = req.expect_continue;
        self.head_len = req.head_len;
        self.recorded = true;
    }

    /// Forgets the recorded head (the buffer is about to change).
    pub fn clear(&mut self) {
        self.recorded = false;
    }

    /// The recorded head, read from `buf` (the same bytes it was parsed
    /// from) with header storage from the caller; `None` if nothing is
    /// recorded or does not fit.
    pub fn view<'h, 'b>(&self, buf: &'b [u8], storage: &'h mut [Header<'b>]) -> Option<Request<'h, 'b>> {
        if !self.recorded || storage.len() < self.headers.len() || buf.len() < self.head_len {
            return None;
        }
        let text = |(a, b): (usize, usize)| text(buf.get(a..b)?);
        for (slot, &[n0, n1, v0, v1]) in storage.iter_mut().zip(&self.headers) {
            *slot = Header {
                name: text((n0, n1))?,
                value: buf.get(v0..v1)?,
            };
        }
        let headers: &'h [Header<'b>] = storage;
        Some(Request {
            method: text(self.method)?,
            target: text(self.target)?,
            version: self.version?,
            headers: &headers[..self.headers.len()],
            body: self.body?,
            keep_alive: self.keep_alive,
            expect_continue: self.expect_continue,
            head_len: self.head_len,
        })
    }
}

enum Line {
    /// No LF yet; `len` bytes of the line so far, not counting a trailing CR
    /// that may be the start of its CRLF.
    Partial { len: usize },
    /// The line's content ends at `end` (before CR LF, or before a bare LF
    /// when `!crlf`); the next line starts at `next`.
    Complete { end: usize, next: usize, crlf: bool },
}

fn find_line(buf: &[u8], start: usize) -> Line {
    let rest = &buf[start..];
    match rest.iter().position(|&b| b == b'\n') {
        None => {
            let len = rest.len() - usize::from(rest.last() == Some(&b'\r'));
            Line::Partial { len }
        }
        Some(i) => {
            let crlf = i > 0 && rest[i - 1] == b'\r';
            let end = start + i - usize::from(crlf);
            Line::Complete {
                end,
                next: start + i + 1,
                crlf,
            }
        }
    }
}

/// Refuses a request line as soon as its method holds a byte no method may
/// hold, complete line or not.
fn check_method_prefix(line: &[u8]) -> Result<(), RequestError> {
    for (i, &b) in line.iter().enumerate() {
        if b == b' ' && i > 0 {
            return Ok(());
        }
        if !is_tchar(b) {
            return Err(RequestError::Method);
        }
    }
    Ok(())
}

fn parse_request_line(line: &[u8]) -> Result<(&str, &str, Version), RequestError> {
    let method_len = line.iter().position(|&b| !is_tchar(b)).unwrap_or(line.len());
    match line.get(method_len) {
        _ if method_len == 0 => return Err(RequestError::Method),
        Some(b' ') => {}
        None => return Err(RequestError::RequestLine),
        Some(_) => return Err(RequestError::Method),
    }
    let method = &line[..method_len];
    let rest = &line[method_len + 1..];
    let target_len = rest.iter().position(|&b| b == b' ').ok_or(RequestError::RequestLine)?;
    let target = &rest[..target_len];
    if target.is_empty() {
        // Two spaces: no target, and the version would be misread.
        return Err(RequestError::Target);
    }
    // The version first: `PRI * HTTP/2.0` deserves a 505, not a 400 for `*`.
    let version = parse_version(&rest[target_len + 1..])?;
    check_target(method, target)?;

    // Tokens are ASCII, so this cannot fail.
    let method = text(method).ok_or(RequestError::Method)?;
    // WSGI hands the target on as text; a target that is not UTF-8 has no
    // faithful &str form, and no client we care about sends one.
    let target = text(target).ok_or(RequestError::Target)?;
    Ok((method, target, version))
}

fn parse_version(v: &[u8]) -> Result<Version, RequestError> {
    match v {
        b"HTTP/1.1" => Ok(Version::Http11),
        b"HTTP/1.0" => Ok(Version::Http10),
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor] if major.is_ascii_digit() && minor.is_ascii_digit() => {
            Err(RequestError::UnsupportedVersion)
        }
        _ => Err(RequestError::Version),
    }
}

/// RFC 9112 3.2: a target is origin-form, absolute-form, authority-form (only
/// for CONNECT) or `*` (only for OPTIONS); anything else is refused rather
/// than passed to the application as a path it would misread.
fn check_target(method: &[u8], target: &[u8]) -> Result<(), RequestError> {
    // Visible ASCII plus obs-text: raw UTF-8 paths are common in the wild.
    if target.is_empty() || !target.iter().all(|&b| (0x21..=0x7e).contains(&b) || b >= 0x80) {
        return Err(RequestError::Target);
    }
    if method == b"CONNECT" {
        return check_authority(target, true);
    }
    if target == b"*" {
        return if method == b"OPTIONS" {
            Ok(())
        } else {
            Err(RequestError::Target)
        };
    }
    if target[0] == b'/' {
        return Ok(());
    }
    // absolute-form: scheme "://" authority [path-abempty] ["?" query]
    let colon = target.iter().position(|&b| b == b':').ok_or(RequestError::Target)?;
    let scheme = &target[..colon];
    let scheme_ok = scheme.first().is_some_and(u8::is_ascii_alphabetic)
        && scheme
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    let rest = &target[colon..];
    if !scheme_ok || !rest.starts_with(b"://") {
        return Err(RequestError::Target);
    }
    let rest = &rest[3..];
    let authority_end = rest
        .iter()
        .position(|&b| matches!(b, b'/' | b'?' | b'#'))
        .unwrap_or(rest.len());
    check_authority(&rest[..authority_end], false)
}

/// `[userinfo "@"] host [":" port]`; the host must be an IP-literal in
/// brackets or a reg-name, so a stray bracket cannot make two URL parsers
/// disagree about the host. authority-form (CONNECT) has no userinfo and
/// requires the port.
fn check_authority(authority: &[u8], connect: bool) -> Result<(), RequestError> {
    let host_port = match authority.iter().rposition(|&b| b == b'@') {
        Some(_) if connect => return Err(RequestError::Target),
        Some(at) => &authority[at + 1..],
        None => authority,
    };
    let (host, port) = if host_port.first() == Some(&b'[') {
        let close = host_port.iter().position(|&b| b == b']').ok_or(RequestError::Target)?;
        let literal = &host_port[1..close];
        if literal.is_empty() || !literal.iter().all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.') {
            return Err(RequestError::Target);
        }
        match &host_port[close + 1..] {
            [] => (&host_port[..=close], None),
            [b':', port @ ..] => (&host_port[..=close], Some(port)),
            _ => return Err(RequestError::Target),
        }
    } else {
        let (host, port) = match host_port.iter().rposition(|&b| b == b':') {
            Some(colon) => (&host_port[..colon], Some(&host_port[colon + 1..])),
            None => (host_port, None),
        };
        if !host.iter().all(|&b| REG_NAME[usize::from(b)]) {
            return Err(RequestError::Target);
        }
        (host, port)
    };
    let port_ok = match port {
        None => !connect,
        Some(p) => p.iter().all(u8::is_ascii_digit) && !(connect && p.is_empty()),
    };
    if host.is_empty() || !port_ok {
        return Err(RequestError::Target);
    }
    Ok(())
}

fn parse_header_line(line: &[u8]) -> Result<Header<'_>, RequestError> {
    if matches!(line.first(), Some(b' ' | b'\t')) {
        return Err(RequestError::ObsFold);
    }
    let name_len = line.iter().position(|&b| !is_tchar(b)).unwrap_or(line.len());
    if name_len == 0 || line.get(name_len) != Some(&b':') {
        return Err(RequestError::HeaderName);
    }
    let value = &line[name_len + 1..];
    if !value.iter().all(|&b| is_field_byte(b)) {
        return Err(RequestError::HeaderValue);
    }
    // Tokens are ASCII, so this cannot fail.
    let name = text(&line[..name_len]).ok_or(RequestError::HeaderName)?;
    Ok(Header {
        name,
        value: trim_ows(value),
    })
}

struct Framing {
    body: BodyKind,
    keep_alive: bool,
    expect_continue: bool,
}

/// RFC 9112 6 (message body length) and 9.3 (persistence), strictly: every
/// ambiguity is an error, so we never disagree with a proxy in front of us
/// about where this request ends.
fn framing(version: Version, headers: &[Header<'_>], limits: &Limits) -> Result<Framing, RequestError> {
    let mut content_length = None;
    let mut transfer_encoding = false;
    // The last coding seen so far was chunked: any coding after it is an error.
    let mut chunked_last = false;
    let mut other_codings = false;
    let mut close = false;
    let mut keep_alive_token = false;
    let mut expect_continue = false;
    let mut host = false;

    for h in headers {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            if content_length.is_some() {
                return Err(RequestError::DuplicateContentLength);
            }
            content_length = Some(parse_content_length(h.value)?);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // Several fields are one comma-separated list (RFC 9110 5.3).
            transfer_encoding = true;
            for coding in h.value.split(|&b| b == b',') {
                let coding = trim_ows(coding);
                if coding.is_empty() || !coding.iter().all(|&b| is_tchar(b)) || chunked_last {
                    return Err(RequestError::TransferEncoding);
                }
                chunked_last = coding.eq_ignore_ascii_case(b"chunked");
                other_codings |= !chunked_last;
            }
        } else if name.eq_ignore_ascii_case(b"connection") {
            for option in h.value.split(|&b| b == b',') {
                let option = trim_ows(option);
                close |= option.eq_ignore_ascii_case(b"close");
                keep_alive_token |= option.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name.eq_ignore_ascii_case(b"expect") {
            if !h.value.eq_ignore_ascii_case(b"100-continue") {
                return Err(RequestError::ExpectationFailed);
            }
            // RFC 9110 10.1.1: a 100-continue from an HTTP/1.0 client MUST be
            // ignored.
            expect_continue = version == Version::Http11;
        } else if name.eq_ignore_ascii_case(b"host") {
            if host {
                return Err(RequestError::DuplicateHost);
            }
            host = true;
            if !valid_host(h.value) {
                return Err(RequestError::Host);
            }
        }
    }

    let body = if transfer_encoding {
        if content_length.is_some() {
            return Err(RequestError::ContentLengthWithTransferEncoding);
        }
        if version == Version::Http10 {
            return Err(RequestError::TransferEncodingHttp10);
        }
        // RFC 9112 6.3: a request whose final coding is not chunked has no
        // reliable length: 400 and close.
        if !chunked_last {
            return Err(RequestError::TransferEncoding);
        }
        if other_codings {
            return Err(RequestError::UnsupportedTransferCoding);
        }
        BodyKind::Chunked
    } else {
        match content_length {
            Some(n) if limits.max_body_size != 0 && n > limits.max_body_size => {
                return Err(RequestError::BodyTooLarge);
            }
            None | Some(0) => BodyKind::Empty,
            Some(n) => BodyKind::Length(n),
        }
    };
    let keep_alive = !close && (version == Version::Http11 || keep_alive_token);
    Ok(Framing {
        body,
        keep_alive,
        expect_continue,
    })
}

/// `1*DIGIT` and nothing else: Rust's `parse::<u64>` would accept `+3`.
fn parse_content_length(value: &[u8]) -> Result<u64, RequestError> {
    if value.is_empty() {
        return Err(RequestError::ContentLength);
    }
    value.iter().try_fold(0u64, |n, &b| {
        if !b.is_ascii_digit() {
            return Err(RequestError::ContentLength);
        }
        n.checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(b - b'0')))
            .ok_or(RequestError::ContentLength)
    })
}

/// `b` as a `&str` if it is UTF-8, quickly when it is ASCII (as tokens and
/// nearly every target are). `str::from_utf8` costs about 90 instructions
/// even for a 4-byte header name (callgrind: 750 a request, twice the
/// parse of the names themselves); the ASCII check is a few per byte.
pub(crate) fn text(b: &[u8]) -> Option<&str> {
    if b.is_ascii() {
        // SAFETY: ASCII is valid UTF-8.
        Some(unsafe { std::str::from_utf8_unchecked(b) })
    } else {
        std::str::from_utf8(b).ok()
    }
}

/// Trims spaces and tabs only (`str::trim` would also eat other bytes).
pub(crate) fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// RFC 9110 5.6.2 tchar.
pub(crate) fn is_tchar(b: u8) -> bool {
    TCHAR[usize::from(b)]
}

/// A byte allowed in a field value: tab, visible ASCII, space, obs-text.
/// Every other control character (NUL, CR, LF, DEL...) is refused, since some
/// downstream parser will treat it as a separator.
pub(crate) fn is_field_byte(b: u8) -> bool {
    b == b'\t' || (0x20..=0x7e).contains(&b) || b >= 0x80
}

/// A Host field value: empty (a target without an authority), or
/// `uri-host [":" port]` without userinfo. One pass over a table for the
/// usual reg-name or IPv4 host: this runs for every request (a general
/// authority check cost 300 instructions a request, callgrind).
fn valid_host(v: &[u8]) -> bool {
    if v.first() == Some(&b'[') {
        return !v.contains(&b'@') && check_authority(v, false).is_ok();
    }
    let mut i = 0;
    while i < v.len() && REG_NAME[usize::from(v[i])] {
        i += 1;
    }
    match &v[i..] {
        [] => true,
        [b':', port @ ..] => i > 0 && port.iter().all(u8::is_ascii_digit),
        _ => false,
    }
}

/// RFC 3986 reg-name bytes: unreserved, sub-delims and `%` (an IPv4
/// address is one too).
static REG_NAME: [bool; 256] = alphanumeric_and(b"-._~%!$&'()*+,;=");

/// RFC 9110 5.6.2 tchar bytes.
static TCHAR: [bool; 256] = alphanumeric_and(b"!#$%&'*+-.^_`|~");

/// A byte table: ASCII letters and digits, and `extra`.
const fn alphanumeric_and(extra: &[u8]) -> [bool; 256] {
    let mut table = [false; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = (i as u8).is_ascii_alphanumeric();
        i += 1;
    }
    let mut k = 0;
    while k < extra.len() {
        table[extra[k] as usize] = true;
        k += 1;
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use httparse::EMPTY_HEADER;

    fn parse_with(buf: &[u8], limits: &Limits) -> Result<Option<Owned>, RequestError> {
        let mut headers = vec![EMPTY_HEADER; limits.max_headers];
        parse_request(buf, &mut headers, limits).map(|r| r.map(Owned::from))
    }

    fn parse(buf: &[u8]) -> Result<Option<Owned>, RequestError> {
        parse_with(buf, &Limits::default())
    }

    #[test]
    fn head_index_reads_back_what_was_parsed() {
        let buf = b"\r\nPOST /a?b=c HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nX-Y:  z \r\n\r\nabcGET";
        let limits = Limits::default();
        let mut headers = vec![EMPTY_HEADER; limits.max_headers];
        let req = parse_request(buf, &mut headers, &limits).unwrap().unwrap();
        let mut index = HeadIndex::default();
        index.record(buf, &req);
        let want = Owned::from(req);
        let mut storage = [EMPTY_HEADER; 8];
        assert_eq!(index.view(buf, &mut storage).map(Owned::from), Some(want));
        // Too little storage, a shorter buffer, or nothing recorded: None.
        assert!(index.view(buf, &mut storage[..2]).is_none());
        assert!(index.view(&buf[..20], &mut storage).is_none());
        index.clear();
        assert!(index.view(buf, &mut storage).is_none());
    }

    /// An owned copy, so results of different calls can be compared.
    #[derive(Debug, PartialEq)]
    struct Owned {
        method: String,
        target: String,
        version: Version,
        headers: Vec<(String, Vec<u8>)>,
        body: BodyKind,
        keep_alive: bool,
        expect_continue: bool,
        head_len: usize,
    }

    impl From<Request<'_, '_>> for Owned {
        fn from(r: Request<'_, '_>) -> Self {
            Owned {
                method: r.method.to_owned(),
                target: r.target.to_owned(),
                version: r.version,
                headers: r
                    .headers
                    .iter()
                    .map(|h| (h.name.to_owned(), h.value.to_vec()))
                    .collect(),
                body: r.body,
                keep_alive: r.keep_alive,
                expect_continue: r.expect_continue,
                head_len: r.head_len,
            }
        }
    }

    /// Every strict prefix of a valid head is incomplete, never an error and
    /// never a different request.
    fn assert_valid_split(buf: &[u8], limits: &Limits) -> Owned {
        let whole = parse_with(buf, limits)
            .unwrap_or_else(|e| panic!("{:?}: {e:?}", String::from_utf8_lossy(buf)))
            .unwrap_or_else(|| panic!("{:?}: incomplete", String::from_utf8_lossy(buf)));
        for i in 0..whole.head_len {
            assert_eq!(
                parse_with(&buf[..i], limits),
                Ok(None),
                "prefix {i} of {:?}",
                String::from_utf8_lossy(buf)
            );
        }
        // Bytes after the head (a body, a pipelined request) change nothing.
        assert_eq!(
            parse_with(&buf[..whole.head_len], limits).unwrap().as_ref(),
            Some(&whole)
        );
        whole
    }

    /// Every prefix of an invalid head is either incomplete or already
    /// refused with the same error.
    fn assert_invalid_split(buf: &[u8], limits: &Limits, expected: RequestError) {
        assert_eq!(
            parse_with(buf, limits),
            Err(expected),
            "{:?}",
            String::from_utf8_lossy(buf)
        );
        for i in 0..buf.len() {
            let got = parse_with(&buf[..i], limits);
            assert!(
                got == Ok(None) || got == Err(expected),
                "prefix {i} of {:?}: {got:?}, expected Ok(None) or {expected:?}",
                String::from_utf8_lossy(buf)
            );
        }
    }

    /// (input, method, target, version, header count, body, keep_alive,
    /// expect_continue)
    type ValidCase = (
        &'static [u8],
        &'static str,
        &'static str,
        Version,
        usize,
        BodyKind,
        bool,
        bool,
    );

    #[test]
    fn valid_requests() {
        use BodyKind::*;
        use Version::*;
        let cases: &[ValidCase] = &[
            (b"GET / HTTP/1.1\r\n\r\n", "GET", "/", Http11, 0, Empty, true, false),
            (b"GET / HTTP/1.0\r\n\r\n", "GET", "/", Http10, 0, Empty, false, false),
            (b"\r\nGET / HTTP/1.1\r\n\r\n", "GET", "/", Http11, 0, Empty, true, false),
            (
                b"\r\n\r\nGET /a?b=c HTTP/1.1\r\nHost: x\r\n\r\n",
                "GET",
                "/a?b=c",
                Http11,
                1,
                Empty,
                true,
                false,
            ),
            (
                b"POST /p HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
                "POST",
                "/p",
                Http11,
                1,
                Length(5),
                true,
                false,
            ),
            (
                b"POST /p HTTP/1.1\r\ncontent-length:  007 \r\n\r\n",
                "POST",
                "/p",
                Http11,
                1,
                Length(7),
                true,
                false,
            ),
            (
                b"POST /p HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
                "POST",
                "/p",
                Http11,
                1,
                Empty,
                true,
                false,
            ),
            (
                b"POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                "POST",
                "/p",
                Http11,
                1,
                Chunked,
                true,
                false,
            ),
            (
                b"POST /p HTTP/1.1\r\nTransfer-Encoding: CHUNKED\t\r\n\r\n",
                "POST",
                "/p",
                Http11,
                1,
                Chunked,
                true,
                false,
            ),
            (
                b"POST /p HTTP/1.1\r\nTransfer-Encoding:\tchunked\r\n\r\n",
                "POST",
                "/p",
                Http11,
                1,
                Chunked,
                true,
                false,
            ),
            (
                b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
                "GET",
                "/",
                Http11,
                1,
                Empty,
                false,
                false,
            ),
            (
                b"GET / HTTP/1.1\r\nConnection: Upgrade, CLOSE\r\n\r\n",
                "GET",
                "/",
                Http11,
                1,
                Empty,
                false,
                false,
            ),
            (
                b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n",
                "GET",
                "/",
                Http10,
                1,
                Empty,
                true,
                false,
            ),
            (
                b"GET / HTTP/1.0\r\nConnection: foo,keep-alive\r\n\r\n",
                "GET",
                "/",
                Http10,
                1,
                Empty,
                true,
                false,
            ),
            (
                b"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n",
                "GET",
                "/",
                Http10,
                1,
                Empty,
                false,
                false,
            ),
            (
                b"PUT /u HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\n",
                "PUT",
                "/u",
                Http11,
                2,
                Length(3),
                true,
                true,
            ),
            (
                b"PUT /u HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
                "PUT",
                "/u",
                Http10,
                2,
                Length(3),
                false,
                false,
            ),
            (
                b"OPTIONS * HTTP/1.1\r\n\r\n",
                "OPTIONS",
                "*",
                Http11,
                0,
                Empty,
                true,
                false,
            ),
            (
                b"GET http://h:8080/p?q HTTP/1.1\r\n\r\n",
                "GET",
                "http://h:8080/p?q",
                Http11,
                0,
                Empty,
                true,
                false,
            ),
            (
                b"GET http://u:p@[::1]:80 HTTP/1.1\r\n\r\n",
                "GET",
                "http://u:p@[::1]:80",
                Http11,
                0,
                Empty,
                true,
                false,
            ),
            (
                b"CONNECT example.com:443 HTTP/1.1\r\n\r\n",
                "CONNECT",
                "example.com:443",
                Http11,
                0,
                Empty,
                true,
                false,
            ),
            (
                b"CONNECT [::1]:443 HTTP/1.1\r\n\r\n",
                "CONNECT",
                "[::1]:443",
                Http11,
                0,
                Empty,
                true,
                false,
            ),
            (
                b"get //x%20y HTTP/1.1\r\n\r\n",
                "get",
                "//x%20y",
                Http11,
                0,
                Empty,
                true,
                false,
            ),
            (
                "GET /caf\u{e9} HTTP/1.1\r\n\r\n".as_bytes(),
                "GET",
                "/caf\u{e9}",
                Http11,
                0,
                Empty,
                true,
                false,
            ),
            (
                b"GET / HTTP/1.1\r\nX_Forwarded_For: 1\r\nA: \xff\xfe\r\nB:\r\nC: a \t b\r\n\r\n",
                "GET",
                "/",
                Http11,
                4,
                Empty,
                true,
                false,
            ),
        ];
        for &(input, method, target, version, nheaders, body, keep_alive, expect_continue) in cases {
            let r = assert_valid_split(input, &Limits::default());
            let what = String::from_utf8_lossy(input);
            assert_eq!(r.method, method, "{what:?}");
            assert_eq!(r.target, target, "{what:?}");
            assert_eq!(r.version, version, "{what:?}");
            assert_eq!(r.headers.len(), nheaders, "{what:?}");
            assert_eq!(r.body, body, "{what:?}");
            assert_eq!(r.keep_alive, keep_alive, "{what:?}");
            assert_eq!(r.expect_continue, expect_continue, "{what:?}");
            let skip = input.chunks(2).take_while(|c| c == b"\r\n").count() * 2;
            let end = skip + input[skip..].windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
            assert_eq!(r.head_len, end, "{what:?}");
        }
    }

    #[test]
    fn header_values_are_trimmed_of_space_and_tab_only() {
        let r = parse(b"GET / HTTP/1.1\r\nA: \t x y \t\r\nB:\xa0z\xa0\r\nC:   \r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(r.headers[0], ("A".to_owned(), b"x y".to_vec()));
        // 0xA0 is NBSP in Latin-1; str::trim would have removed it in UTF-8.
        assert_eq!(r.headers[1], ("B".to_owned(), b"\xa0z\xa0".to_vec()));
        assert_eq!(r.headers[2], ("C".to_owned(), b"".to_vec()));
    }

    #[test]
    fn valid_hosts() {
        for host in [
            &b""[..],
            b"example.com",
            b"example.com:",
            b"Example.COM.:8080",
            b"127.0.0.1:80",
            b"[::1]",
            b"[::1]:8000",
            b"my_host",
            b"xn--caf-dma.example",
        ] {
            let mut req = b"GET / HTTP/1.1\r\nHost: ".to_vec();
            req.extend_from_slice(host);
            req.extend_from_slice(b"\r\n\r\n");
            assert!(
                matches!(parse(&req), Ok(Some(_))),
                "{:?}",
                String::from_utf8_lossy(host)
            );
        }
    }

    #[test]
    fn invalid_requests() {
        use RequestError::*;
        let cases: &[(&[u8], RequestError)] = &[
            // Line endings.
            (b"GET / HTTP/1.1\n\n", LineEnding),
            (b"GET / HTTP/1.1\r\nHost: x\n\r\n", LineEnding),
            (b"GET / HTTP/1.1\r\nHost: x\r\n\n", LineEnding),
            (b"\nGET / HTTP/1.1\r\n\r\n", LineEnding),
            (b"\r\rGET / HTTP/1.1\r\n\r\n", LineEnding),
            (b"GET / HTTP/1.1\r\nA: b\rc\r\n\r\n", HeaderValue),
            (b"GET\n/\nHTTP/1.1\r\n\r\n", LineEnding),
            // Request line.
            (b"GET HTTP/1.1\r\n\r\n", RequestLine),
            (b"GET\r\n\r\n", RequestLine),
            (b"GET /\r\n\r\n", RequestLine),
            (b"GET  / HTTP/1.1\r\n\r\n", Target),
            (b" GET / HTTP/1.1\r\n\r\n", Method),
            (b"GET: / HTTP/1.1\r\n\r\n", Method),
            (b"G\0T / HTTP/1.1\r\n\r\n", Method),
            (b"G(T / HTTP/1.1\r\n\r\n", Method),
            ("GET\u{df} / HTTP/1.1\r\n\r\n".as_bytes(), Method),
            (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", Method),
            (b"GET /a\tb HTTP/1.1\r\n\r\n", Target),
            (b"GET /a\x7f HTTP/1.1\r\n\r\n", Target),
            (b"GET /\xff HTTP/1.1\r\n\r\n", Target),
            (b"GET * HTTP/1.1\r\n\r\n", Target),
            (b"GET foo/bar HTTP/1.1\r\n\r\n", Target),
            (b"GET example.com:443 HTTP/1.1\r\n\r\n", Target),
            (b"PUT s://]ufd/: HTTP/1.1\r\n\r\n", Target),
            (b"GET http://[::1/ HTTP/1.1\r\n\r\n", Target),
            (b"GET http:///p HTTP/1.1\r\n\r\n", Target),
            (b"GET http://h:8x/ HTTP/1.1\r\n\r\n", Target),
            (b"GET 1http://h/ HTTP/1.1\r\n\r\n", Target),
            (b"CONNECT example.com HTTP/1.1\r\n\r\n", Target),
            (b"CONNECT /p HTTP/1.1\r\n\r\n", Target),
            (b"CONNECT u@h:1 HTTP/1.1\r\n\r\n", Target),
            (b"GET / HTTP/1.1 \r\n\r\n", Version),
            (b"GET / HTTP/1.1x\r\n\r\n", Version),
            (b"GET / HTTX/1.1\r\n\r\n", Version),
            (b"GET / http/1.1\r\n\r\n", Version),
            (b"GET / HTTP/111\r\n\r\n", Version),
            (b"GET / HTTP/0.99\r\n\r\n", Version),
            (b"GET / HTTP/1.10\r\n\r\n", Version),
            (b"GET / FTP/1.1\r\n\r\n", Version),
            (b"GET / HTTP/2.0\r\n\r\n", UnsupportedVersion),
            (b"GET / HTTP/1.2\r\n\r\n", UnsupportedVersion),
            (b"GET / HTTP/0.9\r\n\r\n", UnsupportedVersion),
            (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", UnsupportedVersion),
            // Header lines.
            (b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", HeaderName),
            (b"GET / HTTP/1.1\r\nHost\t: x\r\n\r\n", HeaderName),
            (b"GET / HTTP/1.1\r\n: x\r\n\r\n", HeaderName),
            (b"GET / HTTP/1.1\r\nHost x\r\n\r\n", HeaderName),
            (b"GET / HTTP/1.1\r\nba\0z: x\r\n\r\n", HeaderName),
            (b"GET / HTTP/1.1\r\nHo(st: x\r\n\r\n", HeaderName),
            (
                "GET / HTTP/1.1\r\nContent-Length\u{df}: 3\r\n\r\n".as_bytes(),
                HeaderName,
            ),
            (b"GET / HTTP/1.1\r\nA: b\0c\r\n\r\n", HeaderValue),
            (b"GET / HTTP/1.1\r\nA: b\x07\r\n\r\n", HeaderValue),
            (b"GET / HTTP/1.1\r\nA: b\x7f\r\n\r\n", HeaderValue),
            (b"GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n", ObsFold),
            (b"GET / HTTP/1.1\r\n\tA: b\r\n\r\n", ObsFold),
            // Expect.
            (b"PUT / HTTP/1.1\r\nExpect: 100-continue, x\r\n\r\n", ExpectationFailed),
            (b"PUT / HTTP/1.1\r\nExpect: 200-ok\r\n\r\n", ExpectationFailed),
            (b"PUT / HTTP/1.1\r\nExpect:\r\n\r\n", ExpectationFailed),
            (b"GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n", DuplicateHost),
            // Host: what SERVER_NAME and SERVER_PORT are made of.
            (b"GET / HTTP/1.1\r\nHost: x:abc\r\n\r\n", Host),
            (b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", Host),
            (b"GET / HTTP/1.1\r\nHost: a:b:c\r\n\r\n", Host),
            (b"GET / HTTP/1.1\r\nHost: [::1]x\r\n\r\n", Host),
            (b"GET / HTTP/1.1\r\nHost: [::1\r\n\r\n", Host),
            (b"GET / HTTP/1.1\r\nHost: u@h\r\n\r\n", Host),
            (b"GET / HTTP/1.1\r\nHost: h/p\r\n\r\n", Host),
            (b"GET / HTTP/1.1\r\nHost: :80\r\n\r\n", Host),
            (b"GET / HTTP/1.1\r\nHost: \xc3\xa9.example\r\n\r\n", Host),
        ];
        for &(input, expected) in cases {
            assert_invalid_split(input, &Limits::default(), expected);
        }
    }

    /// Like hyper's `test_decoder_request`: the framing table. Every case
    /// here is one that some implementation has, at some point, read
    /// differently from its peers.
    #[test]
    fn request_smuggling() {
        use RequestError::*;
        let ok = |head: &str, body: BodyKind| {
            let input = format!("POST / HTTP/1.1\r\n{head}\r\n\r\n");
            assert_eq!(
                assert_valid_split(input.as_bytes(), &Limits::default()).body,
                body,
                "{input:?}"
            );
        };
        let err = |version: &str, head: &str, expected: RequestError| {
            let input = format!("POST / HTTP/{version}\r\n{head}\r\n\r\n");
            assert_invalid_split(input.as_bytes(), &Limits::default(), expected);
        };
        ok("Content-Length: 10", BodyKind::Length(10));
        ok("Transfer-Encoding: chunked", BodyKind::Chunked);
        err(
            "1.1",
            "Content-Length: 10\r\nTransfer-Encoding: chunked",
            ContentLengthWithTransferEncoding,
        );
        err(
            "1.1",
            "Transfer-Encoding: chunked\r\nContent-Length: 10",
            ContentLengthWithTransferEncoding,
        );
        err(
            "1.1",
            "Content-Length: 10\r\nTransfer-Encoding: identity",
            ContentLengthWithTransferEncoding,
        );
        err(
            "1.1",
            "Content-Length: 10\r\nContent-Length: 10",
            DuplicateContentLength,
        );
        err(
            "1.1",
            "Content-Length: 10\r\nContent-Length: 11",
            DuplicateContentLength,
        );
        err("1.1", "Content-Length: 10, 10", ContentLength);
        err("1.1", "Content-Length: 10,10", ContentLength);
        err("1.1", "Content-Length: +3", ContentLength);
        err("1.1", "Content-Length: -1", ContentLength);
        err("1.1", "Content-Length: -0", ContentLength);
        err("1.1", "Content-Length: 3 4", ContentLength);
        err("1.1", "Content-Length: 0x3", ContentLength);
        err("1.1", "Content-Length: 0_1", ContentLength);
        err("1.1", "Content-Length: 3.0", ContentLength);
        err("1.1", "Content-Length:", ContentLength);
        err("1.1", "Content-Length: \u{663}", ContentLength);
        err("1.1", "Content-Length: 18446744073709551616", ContentLength);
        err("1.1", "Content-Length: 99999999999999999999999", ContentLength);
        err("1.1", "Content-Length: \x0b3", HeaderValue);
        err("1.1", "Content-Length : 3", HeaderName);
        err("1.1", "Transfer-Encoding: chunked, gzip", TransferEncoding);
        err("1.1", "Transfer-Encoding: chunked, chunked", TransferEncoding);
        err(
            "1.1",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
            TransferEncoding,
        );
        err(
            "1.1",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity",
            TransferEncoding,
        );
        err(
            "1.1",
            "Transfer-Encoding: identity, chunked, identity, chunked",
            TransferEncoding,
        );
        err("1.1", "Transfer-Encoding: gzip", TransferEncoding);
        err("1.1", "Transfer-Encoding: identity", TransferEncoding);
        err("1.1", "Transfer-Encoding: chunk", TransferEncoding);
        err("1.1", "Transfer-Encoding: chunked,", TransferEncoding);
        err("1.1", "Transfer-Encoding: ,chunked", TransferEncoding);
        err("1.1", "Transfer-Encoding:", TransferEncoding);
        err("1.1", "Transfer-Encoding: \"chunked\"", TransferEncoding);
        err("1.1", "Transfer-Encoding: chunked;q=1", TransferEncoding);
        err("1.1", "Transfer-Encoding: chunked\u{ff}", TransferEncoding);
        err("1.1", "Transfer-Encoding: \u{ff}chunked", TransferEncoding);
        err("1.1", "Transfer-Encoding: gzip, chunked", UnsupportedTransferCoding);
        err(
            "1.1",
            "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked",
            UnsupportedTransferCoding,
        );
        err("1.1", "Transfer-Encoding: identity, chunked", UnsupportedTransferCoding);
        err("1.0", "Transfer-Encoding: chunked", TransferEncodingHttp10);
        err("1.1", "Content-Length: 1073741825", BodyTooLarge);
        // A sample of defparam/smuggler's Transfer-Encoding gadgets; the
        // whole list runs in tests/proto_corpus.rs.
        err("1.1", " Transfer-Encoding: chunked", ObsFold);
        err("1.1", "Transfer-Encoding : chunked", HeaderName);
        err("1.1", "Transfer-Encoding\t:\tchunked", HeaderName);
        err("1.1", "Transfer Encoding: chunked", HeaderName);
        err("1.1", "\x01Transfer-Encoding: chunked", HeaderName);
        err("1.1", "Transfer-Encoding:\x0bchunked", HeaderValue);
        err("1.1", "Transfer-Encoding: chunked\x01", HeaderValue);
        err("1.1", "Transfer-Encoding:\x00chunked", HeaderValue);
        err("1.1", "X: X\rTransfer-Encoding: chunked", HeaderValue);
        err("1.1", "X: X\nTransfer-Encoding: chunked", LineEnding);
        err("1.1", "Transfer-Encoding\r\n: chunked", HeaderName);
        err("1.1", "Transfer-Encoding: x\r\n chunked", ObsFold);
        ok("Transfer-Encoding: Chunked", BodyKind::Chunked);
        ok("Transfer-Encoding:  chunked  ", BodyKind::Chunked);
        // Not a Transfer-Encoding field at all, so not framing; the WSGI
        // layer drops names with '_'.
        ok("Transfer_Encoding: chunked", BodyKind::Empty);
        ok("Content_Length: 5", BodyKind::Empty);
        ok("Content_Length: -1E23\r\nContent-Length: 7", BodyKind::Length(7));
    }

    #[test]
    fn body_limit() {
        let limits = Limits {
            max_body_size: 10,
            ..Limits::default()
        };
        let at = b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n";
        assert_eq!(assert_valid_split(at, &limits).body, BodyKind::Length(10));
        let over = b"POST / HTTP/1.1\r\nContent-Length: 11\r\n\r\n";
        assert_invalid_split(over, &limits, RequestError::BodyTooLarge);
        let unlimited = Limits {
            max_body_size: 0,
            ..Limits::default()
        };
        let huge = b"POST / HTTP/1.1\r\nContent-Length: 18446744073709551615\r\n\r\n";
        assert_eq!(assert_valid_split(huge, &unlimited).body, BodyKind::Length(u64::MAX));
    }

    #[test]
    fn request_line_limit() {
        let limits = Limits {
            max_request_line: 20,
            ..Limits::default()
        };
        // "GET /0123456 HTTP/1.1" is 21 bytes.
        assert_valid_split(b"GET /012345 HTTP/1.1\r\n\r\n", &limits);
        assert_invalid_split(
            b"GET /0123456 HTTP/1.1\r\n\r\n",
            &limits,
            RequestError::RequestLineTooLong,
        );
        // Refused before the line ends: the peer cannot make us buffer more.
        assert_eq!(
            parse_with(b"GET /0123456789abcdefg", &limits),
            Err(RequestError::RequestLineTooLong)
        );
        // A trailing CR may be the start of the CRLF, so it does not count yet.
        assert_eq!(parse_with(b"GET /012345 HTTP/1.1\r", &limits), Ok(None));
        assert_eq!(
            parse_with(b"GET /012345 HTTP/1.1x", &limits),
            Err(RequestError::RequestLineTooLong)
        );
        // Leading empty lines do not count against the request line.
        assert_valid_split(b"\r\n\r\nGET /012345 HTTP/1.1\r\n\r\n", &limits);
    }

    /// Found by fuzz/request_head: a bad method byte early in a request line
    /// that is also too long was 400 when read in pieces and 414 whole.
    #[test]
    fn fuzz_bad_method_in_an_overlong_line() {
        let limits = Limits {
            max_request_line: 64,
            ..Limits::default()
        };
        let input = b"CONN\x01\x00T [GET /f::/)\xff\xff(\xff*ZZZZZZZ\x00ZZZZZZZZZZent-Length0 2ZZZZZZZZZZ\r\n";
        assert_invalid_split(input, &limits, RequestError::Method);
        // A method that is fine within the limit: the length decides, whole
        // or in pieces, whatever comes after the limit.
        let mut long = vec![b'A'; 70];
        long.extend_from_slice(b"\x00 / HTTP/1.1\r\n\r\n");
        assert_invalid_split(&long, &limits, RequestError::RequestLineTooLong);
    }

    #[test]
    fn header_limits() {
        let limits = Limits {
            max_headers: 2,
            max_field_size: 10,
            max_head_size: 60,
            ..Limits::default()
        };
        // "A: 123456\r\n" is 11 bytes; "A: 12345\r\n" is 10.
        assert_valid_split(b"GET / HTTP/1.1\r\nA: 12345\r\nB: 1\r\n\r\n", &limits);
        assert_invalid_split(
            b"GET / HTTP/1.1\r\nA: 123456\r\n\r\n",
            &limits,
            RequestError::HeaderLineTooLong,
        );
        assert_eq!(
            parse_with(b"GET / HTTP/1.1\r\nA: 1234567", &limits),
            Err(RequestError::HeaderLineTooLong)
        );
        assert_eq!(parse_with(b"GET / HTTP/1.1\r\nA: 12345\r", &limits), Ok(None));
        assert_invalid_split(
            b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n",
            &limits,
            RequestError::TooManyHeaders,
        );
        // The head limit counts everything, leading empty lines included.
        let head = b"\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\nGET /0123456789abc HTTP/1.1\r\nA: 1\r\nB: 2\r\n\r\n";
        assert_eq!(head.len(), 61);
        assert_invalid_split(head, &limits, RequestError::HeadTooLarge);
        assert_valid_split(&head[2..], &limits);
        assert_eq!(
            parse_with(&[b'\r', b'\n'].repeat(31), &limits),
            Err(RequestError::HeadTooLarge)
        );
        assert_eq!(parse_with(&[b'\r', b'\n'].repeat(30), &limits), Ok(None));

        // A header slice shorter than max_headers caps the count too.
        let mut headers = [EMPTY_HEADER; 1];
        let r = parse_request(
            b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\n\r\n",
            &mut headers,
            &Limits::default(),
        );
        assert_eq!(r.map(|_| ()), Err(RequestError::TooManyHeaders));
    }

    #[test]
    fn statuses_and_reasons() {
        use RequestError::*;
        let cases = [
            (LineEnding, 400, "Bad Request"),
            (ContentLengthWithTransferEncoding, 400, "Bad Request"),
            (BodyTooLarge, 413, "Content Too Large"),
            (RequestLineTooLong, 414, "URI Too Long"),
            (ExpectationFailed, 417, "Expectation Failed"),
            (HeadTooLarge, 431, "Request Header Fields Too Large"),
            (UnsupportedTransferCoding, 501, "Not Implemented"),
            (UnsupportedVersion, 505, "HTTP Version Not Supported"),
        ];
        for (e, status, reason) in cases {
            assert_eq!((e.status(), e.reason()), (status, reason), "{e:?}");
        }
    }

    #[test]
    fn pipelined_requests_parse_one_at_a_time() {
        let buf = b"GET /1 HTTP/1.1\r\n\r\nPOST /2 HTTP/1.1\r\nContent-Length: 2\r\n\r\nhiGET /3 HTTP/1.1\r\n";
        let first = parse(buf).unwrap().unwrap();
        assert_eq!(first.target, "/1");
        let rest = &buf[first.head_len..];
        let second = parse(rest).unwrap().unwrap();
        assert_eq!((second.target.as_str(), second.body), ("/2", BodyKind::Length(2)));
        let rest = &rest[second.head_len + 2..];
        assert_eq!(parse(rest), Ok(None));
    }

    #[test]
    fn trim_ows_trims_space_and_tab_only() {
        assert_eq!(trim_ows(b" \t a b \t "), b"a b");
        assert_eq!(trim_ows(b"\x0ba\x0c"), b"\x0ba\x0c");
        assert_eq!(trim_ows(b"  "), b"");
        assert_eq!(trim_ows(b""), b"");
    }
}
