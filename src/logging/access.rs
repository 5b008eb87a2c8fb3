//! Access log lines: gunicorn's format atoms (`%(h)s %(r)s %(s)s ...`),
//! parsed once at start-up and rendered per request, or one JSON object per
//! line. Pure: no I/O, no clock; the worker fills a [`Record`].

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// gunicorn's default `access_log_format`.
pub const DEFAULT_FORMAT: &str = r#"%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s""#;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Atom {
    Literal(String),
    /// `h`: the client's address.
    Remote,
    /// `l`: always `-` (identd).
    Dash,
    /// `u`: the user of Basic authentication, else `-`.
    User,
    /// `t`: `[21/Nov/2026:10:40:00 +0000]`.
    Time,
    /// `r`: `GET /path?q HTTP/1.1`.
    RequestLine,
    /// `s`
    Status,
    /// `m`
    Method,
    /// `U`: the path without the query.
    Path,
    /// `q`: the query string.
    Query,
    /// `H`: the protocol.
    Protocol,
    /// `b`: body bytes, `-` for none (CLF).
    BytesClf,
    /// `B`: body bytes.
    Bytes,
    /// `f`: Referer.
    Referer,
    /// `a`: User-Agent.
    UserAgent,
    /// `T`: duration in whole seconds.
    Seconds,
    /// `D`: duration in microseconds.
    Micros,
    /// `M`: duration in milliseconds.
    Millis,
    /// `L`: duration in decimal seconds.
    DecimalSeconds,
    /// `p`: the worker's pid.
    Pid,
    /// `{name}i`: a request header.
    RequestHeader(String),
    /// `{name}o`: a response header.
    ResponseHeader(String),
    /// `{NAME}e`: an environ value (Zibai's "environ keys in the log format").
    Environ(String),
}

/// A parsed `--access-log-format`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Format {
    text: String,
    atoms: Vec<Atom>,
}

impl Default for Format {
    fn default() -> Self {
        // Unit-tested to parse; the fallback only keeps this total.
        Format::parse(DEFAULT_FORMAT).unwrap_or(Format {
            text: DEFAULT_FORMAT.to_string(),
            atoms: Vec::new(),
        })
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

fn prefix(s: &str) -> String {
    s.chars().take(12).collect()
}

/// The atom named `name` in `%(name)s`.
fn atom(name: &str) -> Option<Atom> {
    Some(match name {
        "h" => Atom::Remote,
        "l" => Atom::Dash,
        "u" => Atom::User,
        "t" => Atom::Time,
        "r" => Atom::RequestLine,
        "s" => Atom::Status,
        "m" => Atom::Method,
        "U" => Atom::Path,
        "q" => Atom::Query,
        "H" => Atom::Protocol,
        "b" => Atom::BytesClf,
        "B" => Atom::Bytes,
        "f" => Atom::Referer,
        "a" => Atom::UserAgent,
        "T" => Atom::Seconds,
        "D" => Atom::Micros,
        "M" => Atom::Millis,
        "L" => Atom::DecimalSeconds,
        "p" => Atom::Pid,
        _ => {
            let inner = name.strip_prefix('{')?;
            let (key, kind) = inner.rsplit_once('}')?;
            if key.is_empty() {
                return None;
            }
            match kind {
                "i" => Atom::RequestHeader(key.to_ascii_lowercase()),
                "o" => Atom::ResponseHeader(key.to_ascii_lowercase()),
                "e" => Atom::Environ(key.to_string()),
                _ => return None,
            }
        }
    })
}

/// The access log as configured: its format (or JSON), and what a request
/// must collect for it.
#[derive(Clone, Debug)]
pub struct AccessLog {
    pub format: Format,
    pub json: bool,
    pub needs: Needs,
}

impl AccessLog {
    pub fn new(format: Format, json: bool) -> AccessLog {
        let mut needs = format.needs();
        if json {
            // JSON lines always carry these, whatever the format names.
            for h in ["referer", "user-agent"] {
                if !needs.request_headers.iter().any(|n| n == h) {
                    needs.request_headers.push(h.to_string());
                }
            }
        }
        AccessLog { format, json, needs }
    }

    /// The line for `r`, without its newline.
    pub fn line(&self, r: &Record<'_>) -> String {
        let mut out = String::with_capacity(160);
        if self.json {
            self.format.render_json(r, &mut out);
        } else {
            self.format.render(r, &mut out);
        }
        out
    }
}

/// What a request must collect for the format: only these headers and
/// environ keys are looked up.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Needs {
    pub request_headers: Vec<String>,
    pub response_headers: Vec<String>,
    pub environ: Vec<String>,
}

impl Format {
    /// Python `%`-formatting with a mapping, as gunicorn reads it: `%(name)s`
    /// is an atom, `%%` a percent sign; any other `%`, and an unknown atom,
    /// is an error that names it.
    pub fn parse(text: &str) -> Result<Format, String> {
        let mut atoms = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(at) = rest.find('%') {
            literal.push_str(&rest[..at]);
            rest = &rest[at..];
            if let Some(after) = rest.strip_prefix("%%") {
                literal.push('%');
                rest = after;
                continue;
            }
            let Some(inner) = rest.strip_prefix("%(") else {
                return Err(format!(
                    "a % must start an atom like %(h)s or be doubled (%%), at {:?}",
                    prefix(rest)
                ));
            };
            // `{name}` may itself hold a `)`; the atom ends at `)s`.
            let Some(close) = inner.find(")s") else {
                return Err(format!("unterminated atom {:?}: atoms are %(name)s", prefix(rest)));
            };
            let name = &inner[..close];
            let atom = atom(name).ok_or_else(|| format!("unknown atom %({name})s"))?;
            if !literal.is_empty() {
                atoms.push(Atom::Literal(std::mem::take(&mut literal)));
            }
            atoms.push(atom);
            rest = &inner[close + 2..];
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            atoms.push(Atom::Literal(literal));
        }
        Ok(Format {
            text: text.to_string(),
            atoms,
        })
    }

    /// The format as given (for `--print-config`).
    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn needs(&self) -> Needs {
        let mut n = Needs::default();
        for a in &self.atoms {
            match a {
                Atom::RequestHeader(h) => n.request_headers.push(h.clone()),
                Atom::ResponseHeader(h) => n.response_headers.push(h.clone()),
                Atom::Environ(k) => n.environ.push(k.clone()),
                Atom::Referer => n.request_headers.push("referer".into()),
                Atom::UserAgent => n.request_headers.push("user-agent".into()),
                Atom::User => n.request_headers.push("authorization".into()),
                _ => {}
            }
        }
        n.request_headers.dedup();
        n
    }

    /// Appends the line for `r` (without the newline) to `out`.
    pub fn render(&self, r: &Record<'_>, out: &mut String) {
        for a in &self.atoms {
            match a {
                Atom::Literal(s) => out.push_str(s),
                Atom::Remote => escaped(or_dash(Some(r.remote)), out),
                Atom::Dash => out.push('-'),
                Atom::User => escaped(r.user().as_deref().unwrap_or("-"), out),
                Atom::Time => clf_time(r.started, out),
                Atom::RequestLine => {
                    escaped(r.method, out);
                    out.push(' ');
                    escaped(r.target, out);
                    out.push(' ');
                    escaped(r.protocol, out);
                }
                Atom::Status => {
                    let _ = write!(out, "{}", r.status);
                }
                Atom::Method => escaped(r.method, out),
                Atom::Path => escaped(r.path(), out),
                Atom::Query => escaped(r.query(), out),
                Atom::Protocol => escaped(r.protocol, out),
                Atom::BytesClf if r.bytes == 0 => out.push('-'),
                Atom::BytesClf | Atom::Bytes => {
                    let _ = write!(out, "{}", r.bytes);
                }
                Atom::Referer => escaped(or_dash(r.request_header("referer")), out),
                Atom::UserAgent => escaped(or_dash(r.request_header("user-agent")), out),
                Atom::Seconds => {
                    let _ = write!(out, "{}", r.duration.as_secs());
                }
                Atom::Micros => {
                    let _ = write!(out, "{}", r.duration.as_micros());
                }
                Atom::Millis => {
                    let _ = write!(out, "{}", r.duration.as_millis());
                }
                Atom::DecimalSeconds => {
                    let _ = write!(out, "{:.6}", r.duration.as_secs_f64());
                }
                Atom::Pid => {
                    let _ = write!(out, "<{}>", r.pid);
                }
                Atom::RequestHeader(h) => escaped(or_dash(r.request_header(h)), out),
                Atom::ResponseHeader(h) => escaped(or_dash(lookup(&r.response_headers, h)), out),
                Atom::Environ(k) => escaped(or_dash(lookup(&r.environ, k)), out),
            }
        }
    }

    /// One JSON object for `r`: the fixed fields, then every header and
    /// environ value the format asks for.
    pub fn render_json(&self, r: &Record<'_>, out: &mut String) {
        out.push('{');
        let mut first = true;
        let mut field = |out: &mut String, key: &str, value: JsonValue<'_>| {
            if !first {
                out.push(',');
            }
            first = false;
            json_string(key, out);
            out.push(':');
            match value {
                JsonValue::Str(s) => json_string(s, out),
                JsonValue::Num(n) => {
                    let _ = write!(out, "{n}");
                }
                JsonValue::Float(f) => {
                    let _ = write!(out, "{f:.6}");
                }
                JsonValue::Null => out.push_str("null"),
            }
        };
        let mut time = String::new();
        iso_time(r.started, &mut time);
        field(out, "time", JsonValue::Str(&time));
        field(out, "remote_addr", JsonValue::Str(r.remote));
        field(out, "method", JsonValue::Str(r.method));
        field(out, "path", JsonValue::Str(r.path()));
        field(out, "query", JsonValue::Str(r.query()));
        field(out, "protocol", JsonValue::Str(r.protocol));
        field(out, "status", JsonValue::Num(u64::from(r.status)));
        field(out, "bytes", JsonValue::Num(r.bytes));
        field(out, "duration_s", JsonValue::Float(r.duration.as_secs_f64()));
        field(out, "referer", opt_json(r.request_header("referer")));
        field(out, "user_agent", opt_json(r.request_header("user-agent")));
        field(out, "pid", JsonValue::Num(u64::from(r.pid)));
        for a in &self.atoms {
            match a {
                Atom::RequestHeader(h) => field(out, &format!("request_header.{h}"), opt_json(r.request_header(h))),
                Atom::ResponseHeader(h) => field(
                    out,
                    &format!("response_header.{h}"),
                    opt_json(lookup(&r.response_headers, h)),
                ),
                Atom::Environ(k) => field(out, &format!("environ.{k}"), opt_json(lookup(&r.environ, k))),
                _ => {}
            }
        }
        out.push('}');
    }
}

fn opt_json(v: Option<&str>) -> JsonValue<'_> {
    v.map_or(JsonValue::Null, JsonValue::Str)
}

enum JsonValue<'a> {
    Str(&'a str),
    Num(u64),
    Float(f64),
    Null,
}

/// Everything a line can say about one request.
#[derive(Clone, Debug)]
pub struct Record<'a> {
    pub remote: &'a str,
    pub method: &'a str,
    /// The request-target as sent.
    pub target: &'a str,
    pub protocol: &'a str,
    pub status: u16,
    pub bytes: u64,
    pub started: SystemTime,
    pub duration: Duration,
    pub pid: u32,
    /// The request headers `Needs` asked for, names lower-case.
    pub request_headers: Vec<(String, String)>,
    pub response_headers: Vec<(String, String)>,
    pub environ: Vec<(String, String)>,
}

fn lookup<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// Appends what a client (or the app) sent, so that it can neither end the
/// line nor leave its quotes: `"` and `\` get a backslash, control bytes
/// become `\xHH` (as nginx writes them). Without it a Basic-auth user name
/// (base64 hides any byte from the header checks) could forge whole lines
/// or send terminal escapes to whoever reads the log.
fn escaped(s: &str, out: &mut String) {
    if !s.bytes().any(|b| b < 0x20 || b == 0x7f || b == b'"' || b == b'\\') {
        out.push_str(s);
        return;
    }
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02X}", c as u32);
            }
            c => out.push(c),
        }
    }
}

fn or_dash(v: Option<&str>) -> &str {
    match v {
        Some(s) if !s.is_empty() => s,
        _ => "-",
    }
}

impl Record<'_> {
    fn request_header(&self, name: &str) -> Option<&str> {
        lookup(&self.request_headers, name)
    }

    fn path(&self) -> &str {
        self.target.split(['?', '#']).next().unwrap_or("")
    }

    fn query(&self) -> &str {
        self.target.split_once('?').map_or("", |(_, q)| q)
    }

    /// The user name of `Authorization: Basic`, as gunicorn logs it.
    fn user(&self) -> Option<String> {
        let auth = self.request_header("authorization")?;
        let (scheme, token) = auth.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return None;
        }
        let decoded = base64_decode(token.trim())?;
        let text = String::from_utf8(decoded).ok()?;
        text.split_once(':').map(|(user, _)| user.to_string())
    }
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let bytes = s.trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for &c in bytes {
        acc = (acc << 6) | u32::from(val(c)?);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

/// Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn split_time(t: SystemTime) -> (i64, u32, u32, u64, u32) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (y, m, day) = civil((secs / 86_400) as i64);
    (y, m, day, secs % 86_400, d.subsec_millis())
}

/// `[21/Nov/2026:10:40:00 +0000]` (UTC, as servers without a zone database log it).
fn clf_time(t: SystemTime, out: &mut String) {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (y, m, d, s, _) = split_time(t);
    let _ = write!(
        out,
        "[{d:02}/{}/{y}:{:02}:{:02}:{:02} +0000]",
        MONTHS[(m - 1) as usize],
        s / 3600,
        s / 60 % 60,
        s % 60
    );
}

/// `2026-11-21T10:40:00.123Z`
fn iso_time(t: SystemTime, out: &mut String) {
    let (y, m, d, s, ms) = split_time(t);
    let _ = write!(
        out,
        "{y}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    );
}

fn json_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record<'static> {
        Record {
            remote: "10.1.2.3",
            method: "POST",
            target: "/api/items?page=2",
            protocol: "HTTP/1.1",
            status: 201,
            bytes: 512,
            // 2026-11-21T10:40:05.250Z
            started: UNIX_EPOCH + Duration::from_millis(1_795_257_605_250),
            duration: Duration::from_micros(12_345),
            pid: 4242,
            request_headers: vec![
                ("referer".into(), "https://example.com/".into()),
                ("user-agent".into(), "curl/8.0".into()),
                ("x-request-id".into(), "abc-1".into()),
                ("authorization".into(), "Basic YWxpY2U6c2VjcmV0".into()),
            ],
            response_headers: vec![("content-type".into(), "application/json".into())],
            environ: vec![("SCRIPT_NAME".into(), "/api".into())],
        }
    }

    fn render(spec: &str) -> String {
        let mut s = String::new();
        Format::parse(spec).unwrap().render(&record(), &mut s);
        s
    }

    #[test]
    fn gunicorn_default_format() {
        assert_eq!(
            render(DEFAULT_FORMAT),
            r#"10.1.2.3 - alice [21/Nov/2026:10:40:05 +0000] "POST /api/items?page=2 HTTP/1.1" 201 512 "https://example.com/" "curl/8.0""#
        );
    }

    #[test]
    fn every_atom() {
        assert_eq!(
            render("%(m)s|%(U)s|%(q)s|%(H)s|%(s)s|%(B)s|%(T)s|%(D)s|%(M)s|%(L)s|%(p)s"),
            "POST|/api/items|page=2|HTTP/1.1|201|512|0|12345|12|0.012345|<4242>"
        );
        assert_eq!(
            render("%({X-Request-Id}i)s %({Content-Type}o)s %({SCRIPT_NAME}e)s %({missing}i)s"),
            "abc-1 application/json /api -"
        );
    }

    /// What a client sends can neither end the line nor close a quoted
    /// field: a Basic-auth user name with CR, LF, an escape and a quote
    /// (base64: the header checks never see those bytes) used to forge a
    /// second line.
    #[test]
    fn client_text_is_escaped() {
        let mut r = record();
        // base64 of "ev\"il\x1b[31m\nFAKE LINE:pw"
        r.request_headers[3].1 = "Basic ZXYiaWwbWzMxbQpGQUtFIExJTkU6cHc=".into();
        r.request_headers[1].1 = r#"evil" 200 5 "-" "x\"#.into();
        r.target = "/a\"b";
        let mut s = String::new();
        Format::parse(DEFAULT_FORMAT).unwrap().render(&r, &mut s);
        assert_eq!(
            s,
            r#"10.1.2.3 - ev\"il\x1B[31m\x0AFAKE LINE [21/Nov/2026:10:40:05 +0000] "POST /a\"b HTTP/1.1" 201 512 "https://example.com/" "evil\" 200 5 \"-\" \"x\\""#
        );
        assert!(!s.contains('\n'));
    }

    #[test]
    fn empty_body_is_a_dash_for_b_only() {
        let mut r = record();
        r.bytes = 0;
        let mut s = String::new();
        Format::parse("%(b)s %(B)s").unwrap().render(&r, &mut s);
        assert_eq!(s, "- 0");
    }

    #[test]
    fn unknown_atoms_are_named() {
        assert_eq!(Format::parse("%(h)s %(z)s").unwrap_err(), "unknown atom %(z)s");
        assert!(Format::parse("%({x}q)s").unwrap_err().contains("%({x}q)s"));
        assert!(Format::parse("%(h").unwrap_err().contains("unterminated"));
        assert!(Format::parse("50% off").unwrap_err().contains("doubled"));
        assert!(Format::parse("%({}i)s").is_err());
        assert_eq!(render("100%% literal"), "100% literal");
    }

    #[test]
    fn needs_lists_only_what_the_format_uses() {
        let f = Format::parse("%(h)s %(a)s %({X-Id}i)s %({Server}o)s %({REMOTE_USER}e)s").unwrap();
        let n = f.needs();
        assert_eq!(n.request_headers, ["user-agent", "x-id"]);
        assert_eq!(n.response_headers, ["server"]);
        assert_eq!(n.environ, ["REMOTE_USER"]);
    }

    #[test]
    fn json_lines() {
        let mut s = String::new();
        let mut r = record();
        r.request_headers[1].1 = "quote\" and \\ and \n".into();
        Format::parse("%({X-Request-Id}i)s").unwrap().render_json(&r, &mut s);
        assert!(
            s.starts_with(r#"{"time":"2026-11-21T10:40:05.250Z","remote_addr":"10.1.2.3","method":"POST""#),
            "{s}"
        );
        assert!(s.contains(r#""user_agent":"quote\" and \\ and \n""#), "{s}");
        assert!(s.contains(r#""status":201,"bytes":512,"duration_s":0.012345"#), "{s}");
        assert!(
            s.ends_with(r#""pid":4242,"request_header.x-request-id":"abc-1"}"#),
            "{s}"
        );
    }

    /// Regression: JSON lines said null for Referer and User-Agent unless
    /// the format also named them.
    #[test]
    fn json_needs_referer_and_user_agent() {
        let log = AccessLog::new(Format::parse("%({X-Req}i)s").unwrap(), true);
        assert_eq!(log.needs.request_headers, ["x-req", "referer", "user-agent"]);
        assert_eq!(
            AccessLog::new(Format::parse("%({X-Req}i)s").unwrap(), false)
                .needs
                .request_headers,
            ["x-req"]
        );
    }

    #[test]
    fn dates() {
        let mut s = String::new();
        clf_time(UNIX_EPOCH, &mut s);
        assert_eq!(s, "[01/Jan/1970:00:00:00 +0000]");
        s.clear();
        iso_time(UNIX_EPOCH + Duration::from_secs(951_782_400), &mut s);
        assert_eq!(s, "2000-02-29T00:00:00.000Z");
    }
}
