//! `--access-log-format`: gunicorn's access log atoms, checked when the
//! configuration is resolved so that a typo fails at startup, not per
//! request.

use std::fmt;

/// gunicorn's default: the Apache combined log format.
pub const DEFAULT_ACCESS_LOG_FORMAT: &str = r#"%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s""#;

/// One `%(...)s` atom (gunicorn's meanings).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Atom {
    /// `h`: remote address.
    RemoteAddr,
    /// `l`: `-`.
    Dash,
    /// `u`: user name (from Basic auth), or `-`.
    User,
    /// `t`: the time, `[10/Oct/2000:13:55:36 -0700]`.
    Time,
    /// `r`: the request line.
    RequestLine,
    /// `s`: the status code.
    Status,
    /// `m`: the request method.
    Method,
    /// `U`: the URL path, without the query string.
    Path,
    /// `q`: the query string.
    Query,
    /// `H`: the protocol, `HTTP/1.1`.
    Protocol,
    /// `b`: response body length, `-` for 0.
    BodyLengthOrDash,
    /// `B`: response body length.
    BodyLength,
    /// `f`: the Referer header.
    Referer,
    /// `a`: the User-Agent header.
    UserAgent,
    /// `T`: request time in whole seconds.
    Seconds,
    /// `D`: request time in microseconds.
    Micros,
    /// `M`: request time in milliseconds.
    Millis,
    /// `L`: request time in decimal seconds.
    DecimalSeconds,
    /// `p`: the worker's pid, `<PID>`.
    Pid,
    /// `{name}i`: a request header.
    RequestHeader(String),
    /// `{name}o`: a response header.
    ResponseHeader(String),
    /// `{NAME}e`: an environment variable.
    Environ(String),
}

impl Atom {
    fn parse(name: &str) -> Option<Atom> {
        Some(match name {
            "h" => Atom::RemoteAddr,
            "l" => Atom::Dash,
            "u" => Atom::User,
            "t" => Atom::Time,
            "r" => Atom::RequestLine,
            "s" => Atom::Status,
            "m" => Atom::Method,
            "U" => Atom::Path,
            "q" => Atom::Query,
            "H" => Atom::Protocol,
            "b" => Atom::BodyLengthOrDash,
            "B" => Atom::BodyLength,
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
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Piece {
    Literal(String),
    Atom(Atom),
}

/// A validated format: its text (for `--print-config`) and its pieces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessLogFormat {
    pub text: String,
    pub pieces: Vec<Piece>,
}

impl AccessLogFormat {
    /// Python `%`-formatting with a mapping: `%(name)s` is an atom, `%%` a
    /// percent sign; any other `%` is an error, as it would be in gunicorn.
    pub fn parse(text: &str) -> Result<AccessLogFormat, String> {
        let mut pieces = Vec::new();
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
            let atom = Atom::parse(name).ok_or_else(|| format!("unknown atom %({name})s"))?;
            if !literal.is_empty() {
                pieces.push(Piece::Literal(std::mem::take(&mut literal)));
            }
            pieces.push(Piece::Atom(atom));
            rest = &inner[close + 2..];
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            pieces.push(Piece::Literal(literal));
        }
        Ok(AccessLogFormat {
            text: text.to_string(),
            pieces,
        })
    }
}

fn prefix(s: &str) -> String {
    s.chars().take(12).collect()
}

impl Default for AccessLogFormat {
    fn default() -> Self {
        // The default is tested below to parse.
        AccessLogFormat::parse(DEFAULT_ACCESS_LOG_FORMAT).unwrap_or(AccessLogFormat {
            text: DEFAULT_ACCESS_LOG_FORMAT.to_string(),
            pieces: Vec::new(),
        })
    }
}

impl fmt::Display for AccessLogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_format() {
        let f = AccessLogFormat::parse(DEFAULT_ACCESS_LOG_FORMAT).unwrap();
        let atoms: Vec<&Atom> = f
            .pieces
            .iter()
            .filter_map(|p| match p {
                Piece::Atom(a) => Some(a),
                Piece::Literal(_) => None,
            })
            .collect();
        assert_eq!(atoms.len(), 9);
        assert_eq!(atoms[0], &Atom::RemoteAddr);
        assert_eq!(atoms[8], &Atom::UserAgent);
        assert_eq!(f.pieces[1], Piece::Literal(" ".into()));
        assert_eq!(AccessLogFormat::default(), f);
    }

    #[test]
    fn every_atom() {
        let text = "%(h)s%(l)s%(u)s%(t)s%(r)s%(s)s%(m)s%(U)s%(q)s%(H)s%(b)s%(B)s%(f)s%(a)s%(T)s%(D)s%(M)s%(L)s%(p)s";
        let f = AccessLogFormat::parse(text).unwrap();
        assert_eq!(f.pieces.len(), 19);
        let f = AccessLogFormat::parse("%({X-Forwarded-For}i)s %({content-type}o)s %({HOME}e)s 100%% done").unwrap();
        assert_eq!(
            f.pieces,
            vec![
                Piece::Atom(Atom::RequestHeader("x-forwarded-for".into())),
                Piece::Literal(" ".into()),
                Piece::Atom(Atom::ResponseHeader("content-type".into())),
                Piece::Literal(" ".into()),
                Piece::Atom(Atom::Environ("HOME".into())),
                Piece::Literal(" 100% done".into()),
            ]
        );
        assert_eq!(
            f.to_string(),
            "%({X-Forwarded-For}i)s %({content-type}o)s %({HOME}e)s 100%% done"
        );
    }

    #[test]
    fn bad_formats_name_the_atom() {
        for (text, reason) in [
            ("%(h)s %(z)s", "unknown atom %(z)s"),
            ("%(host)s", "unknown atom %(host)s"),
            ("%({}i)s", "unknown atom %({}i)s"),
            ("%({x}z)s", "unknown atom %({x}z)s"),
            ("%(h)s %(r", "unterminated atom \"%(r\": atoms are %(name)s"),
            (
                "50% off",
                "a % must start an atom like %(h)s or be doubled (%%), at \"% off\"",
            ),
            ("%(h)d", "unterminated atom \"%(h)d\": atoms are %(name)s"),
        ] {
            assert_eq!(AccessLogFormat::parse(text).unwrap_err(), reason, "{text}");
        }
    }
}
