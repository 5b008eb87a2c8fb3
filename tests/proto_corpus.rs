//! Runs request corpora nobody on this team wrote against `zibai::proto`:
//! gunicorn's parser tests (tests/corpus/gunicorn-requests, MIT, see its
//! README for the `.http` encoding) and defparam/smuggler's obfuscated
//! Transfer-Encoding headers (tests/corpus/smuggler-te-gadgets, MIT).
//!
//! Where our policy deliberately differs from gunicorn's, the case is listed
//! below with the reason; where a case needs a gunicorn feature we do not
//! have, it is skipped with the reason printed. Totals are asserted so the
//! test cannot pass by skipping everything.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use httparse::EMPTY_HEADER;
use zibai::proto::chunked::ChunkedDecoder;
use zibai::proto::request::{BodyKind, Limits, Version, parse_request};

/// Valid in gunicorn, refused by us on purpose: (case, our status, why).
const REFUSED_ON_PURPOSE: &[(&str, u16, &str)] = &[
    (
        "valid/009",
        400,
        "Transfer-Encoding (identity) next to Content-Length: RFC 9112 6.3 makes any \
         CL+TE request an error, whatever the coding",
    ),
    (
        "valid/025",
        501,
        "Transfer-Encoding: gzip + chunked: we decode no coding but chunked, and refuse \
         rather than hand the application a body still gzip-coded",
    ),
    ("valid/025_line", 501, "gzip,chunked: as valid/025"),
    (
        "valid/rfc9112_smuggle_gzip_chunked_01",
        501,
        "gzip, chunked: as valid/025",
    ),
    (
        "valid/029",
        501,
        "identity + chunked: RFC 9112 removed `identity`; we accept exactly `chunked` \
         and nothing else in Transfer-Encoding",
    ),
    ("valid/030", 501, "identity + chunked: as valid/029"),
    (
        "valid/rfc9112_smuggle_te_identity_chunked_01",
        501,
        "identity, chunked: as valid/029",
    ),
];

/// Invalid in gunicorn, accepted by us on purpose: (case, why).
const ACCEPTED_ON_PURPOSE: &[(&str, &str)] = &[
    (
        "invalid/003c",
        "method `-bl`: gunicorn refuses lower-case methods unless \
         permit_unconventional_http_method; RFC 9110 9.1 makes any token a method",
    ),
    (
        "invalid/041",
        "two Content-Type fields: not framing; what a repeated field means is the \
         WSGI layer's decision, not the parser's",
    ),
];

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

/// The `.http` encoding: real newlines mean nothing; `\r`, `\n`, `\t`, `\0`
/// and `\xHH` are escapes.
fn decode_http(raw: &[u8]) -> Vec<u8> {
    let raw: Vec<u8> = raw.iter().copied().filter(|&b| b != b'\n').collect();
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] != b'\\' {
            out.push(raw[i]);
            i += 1;
            continue;
        }
        match raw.get(i + 1) {
            Some(b'r') => out.push(b'\r'),
            Some(b'n') => out.push(b'\n'),
            Some(b't') => out.push(b'\t'),
            Some(b'0') => out.push(0),
            Some(b'x') => {
                let hex = std::str::from_utf8(&raw[i + 2..i + 4]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 2;
            }
            other => panic!("bad escape {other:?} at {i}"),
        }
        i += 2;
    }
    out
}

fn latin1(s: &str) -> Vec<u8> {
    s.chars()
        .map(|c| u8::try_from(u32::from(c)).expect("latin-1 character"))
        .collect()
}

#[derive(Debug)]
struct Parsed {
    method: String,
    target: String,
    version: Version,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
    trailers_len: usize,
    /// Where the head started in the input, and its length.
    start: usize,
    head_len: usize,
    /// Where the chunked body (framing included) lies in the input.
    chunked: Option<std::ops::Range<usize>>,
}

#[derive(Debug, PartialEq)]
enum End {
    /// The last request did not allow another one on the connection.
    Closed,
    /// The rest of the input is an incomplete head (`usize`: its length).
    IncompleteHead(usize),
    /// The input ended inside a body.
    IncompleteBody,
    /// Refused with this status.
    Error(u16, String),
}

/// Parses requests from `buf` the way a connection would: one after the
/// other while the connection stays open.
fn run(buf: &[u8], limits: &Limits) -> (Vec<Parsed>, End) {
    let mut parsed = Vec::new();
    let mut pos = 0;
    loop {
        let mut headers = vec![EMPTY_HEADER; limits.max_headers];
        let request = match parse_request(&buf[pos..], &mut headers, limits) {
            Err(e) => return (parsed, End::Error(e.status(), format!("{e:?}"))),
            Ok(None) => return (parsed, End::IncompleteHead(buf.len() - pos)),
            Ok(Some(r)) => r,
        };
        let mut p = Parsed {
            method: request.method.to_owned(),
            target: request.target.to_owned(),
            version: request.version,
            headers: request
                .headers
                .iter()
                .map(|h| (h.name.to_owned(), h.value.to_vec()))
                .collect(),
            body: Vec::new(),
            trailers_len: 0,
            start: pos,
            head_len: request.head_len,
            chunked: None,
        };
        let keep_alive = request.keep_alive;
        pos += request.head_len;
        match request.body {
            BodyKind::Empty => {}
            BodyKind::Length(n) => {
                let available = buf.len() - pos;
                let take = usize::try_from(n).map_or(available, |n| n.min(available));
                p.body.extend_from_slice(&buf[pos..pos + take]);
                pos += take;
                if (take as u64) < n {
                    parsed.push(p);
                    return (parsed, End::IncompleteBody);
                }
            }
            BodyKind::Chunked => {
                let mut decoder = ChunkedDecoder::new(limits.max_body_size);
                while !decoder.is_done() {
                    match decoder.decode(&buf[pos..]) {
                        Err(e) => {
                            parsed.push(p);
                            return (parsed, End::Error(e.status(), format!("{e:?}")));
                        }
                        Ok(d) if d.consumed == 0 => {
                            parsed.push(p);
                            return (parsed, End::IncompleteBody);
                        }
                        Ok(d) => {
                            p.body.extend_from_slice(&buf[pos..][d.data]);
                            pos += d.consumed;
                        }
                    }
                }
                p.trailers_len = decoder.trailers_len();
                p.chunked = Some(p.start + p.head_len..pos);
            }
        }
        parsed.push(p);
        if !keep_alive {
            return (parsed, End::Closed);
        }
    }
}

struct Case {
    name: String,
    input: Vec<u8>,
    json: json::Value,
}

fn load(kind: &str) -> Vec<Case> {
    let dir = corpus_dir().join("gunicorn-requests").join(kind);
    let mut names: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter_map(|n| n.strip_suffix(".http").map(str::to_owned))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|stem| {
            let input = decode_http(&fs::read(dir.join(format!("{stem}.http"))).unwrap());
            let text = fs::read_to_string(dir.join(format!("{stem}.json"))).unwrap();
            Case {
                name: format!("{kind}/{stem}"),
                input,
                json: json::parse(&text),
            }
        })
        .collect()
}

/// How the case's gunicorn settings map onto ours.
struct Setup {
    limits: Limits,
    /// gunicorn's default `header_map` drops fields whose names hold `_`
    /// (so does our WSGI layer); `dangerous` keeps them. proto always keeps
    /// them, so the comparison applies the mapping.
    keep_underscore_headers: bool,
}

/// Our equivalent of the case's settings, or why the case cannot run.
fn setup(case: &Case) -> Result<Setup, String> {
    let mut setup = Setup {
        limits: Limits {
            // gunicorn's default limit_request_line is 4094 (ours is 8190,
            // gunicorn's maximum); invalid/006 relies on it.
            max_request_line: 4094,
            ..Limits::default()
        },
        keep_underscore_headers: false,
    };
    let Some(settings) = case.json.get("settings") else {
        return Ok(setup);
    };
    for (key, value) in settings.as_object() {
        match (key.as_str(), value) {
            ("limit_request_line", v) => {
                setup.limits.max_request_line = match v.as_usize() {
                    0 => usize::MAX, // gunicorn: 0 is unlimited
                    n => n,
                }
            }
            ("limit_request_fields", v) => setup.limits.max_headers = v.as_usize(),
            // gunicorn counts the line with its CRLF, as we do. Its 0 does not
            // mean "unlimited" here: limit_header_default_01 expects the
            // default 8190 to apply.
            ("limit_request_field_size", v) => {
                setup.limits.max_field_size = match v.as_usize() {
                    0 => 8190,
                    n => n,
                }
            }
            // We accept any token as a method, which is what this permits.
            ("permit_unconventional_http_method", json::Value::Bool(true)) => {}
            ("header_map", json::Value::Str(m)) if m == "dangerous" => setup.keep_underscore_headers = true,
            ("header_map", json::Value::Str(m)) if m == "drop" => {}
            ("header_map", json::Value::Str(m)) if m == "refuse" => {
                return Err("header_map=refuse: we never refuse names with '_' (the WSGI layer drops them)".into());
            }
            ("casefold_http_method", json::Value::Bool(true)) => {
                return Err("casefold_http_method: we never change the case of a method".into());
            }
            ("permit_obsolete_folding", json::Value::Bool(true)) => {
                return Err("permit_obsolete_folding: obs-fold is always refused".into());
            }
            ("strip_header_spaces", json::Value::Bool(true)) => {
                return Err("strip_header_spaces: whitespace before a colon is always refused".into());
            }
            // The setting only matters when the bytes start with a PROXY
            // header; without one gunicorn parses as we do.
            ("proxy_protocol", json::Value::Bool(true)) => {
                let v2_signature = b"\r\n\r\n\0\r\nQUIT\n";
                if case.input.starts_with(b"PROXY ") || case.input.starts_with(v2_signature) {
                    return Err("proxy_protocol: no PROXY protocol support".into());
                }
            }
            ("forwarded_allow_ips", _) => {
                return Err("forwarded_allow_ips: scheme headers from proxies are not proto's".into());
            }
            (key, value) => panic!("{}: unknown setting {key}={value:?}; decide how it maps", case.name),
        }
    }
    Ok(setup)
}

fn describe(input: &[u8]) -> String {
    let text = String::from_utf8_lossy(input);
    if text.len() > 300 {
        format!(
            "{:?}...",
            &text[..text.char_indices().nth(300).map_or(text.len(), |(i, _)| i)]
        )
    } else {
        format!("{text:?}")
    }
}

#[test]
fn gunicorn_valid_requests() {
    let cases = load("valid");
    assert_eq!(cases.len(), 63, "the corpus README says 63 valid cases");
    let (mut matched, mut refused, mut skipped) = (0, 0, 0);
    let mut used_allow_list = Vec::new();
    for case in &cases {
        let setup = match setup(case) {
            Ok(s) => s,
            Err(why) => {
                println!("skipped {}: {why}", case.name);
                skipped += 1;
                continue;
            }
        };
        let (parsed, end) = run(&case.input, &setup.limits);

        if let Some(&(_, status, why)) = REFUSED_ON_PURPOSE.iter().find(|(n, ..)| *n == case.name) {
            assert!(
                parsed.is_empty() && matches!(end, End::Error(s, _) if s == status),
                "{} is listed as refused with {status} ({why}) but gave {parsed:?} {end:?}",
                case.name
            );
            println!("refused on purpose {} with {status}: {why}", case.name);
            used_allow_list.push(case.name.clone());
            refused += 1;
            continue;
        }

        let context = || format!("{}: {}\n  ended with {end:?}", case.name, describe(&case.input));
        match &end {
            End::Closed | End::IncompleteHead(_) => {}
            // Only valid/099 ends inside its body: its Content-Length is larger
            // than the bytes gunicorn stored, and gunicorn's expectation is
            // the bytes there are.
            End::IncompleteBody => assert_eq!(case.name, "valid/099", "{}", context()),
            End::Error(..) => panic!("refused: {}", context()),
        }
        let expected = case.json.get("requests").unwrap().as_array();
        assert_eq!(parsed.len(), expected.len(), "request count: {}", context());
        for (got, want) in parsed.iter().zip(expected) {
            assert_eq!(got.method, want.get("method").unwrap().as_str(), "{}", context());
            assert_eq!(
                got.target.as_bytes(),
                latin1(want.get("uri").unwrap().as_str()),
                "{}",
                context()
            );
            let version = match got.version {
                Version::Http10 => (1, 0),
                Version::Http11 => (1, 1),
            };
            let want_version = want.get("version").unwrap().as_array();
            assert_eq!(
                version,
                (want_version[0].as_usize(), want_version[1].as_usize()),
                "{}",
                context()
            );

            let got_headers: Vec<&(String, Vec<u8>)> = got
                .headers
                .iter()
                .filter(|(name, _)| setup.keep_underscore_headers || !name.contains('_'))
                .collect();
            let want_headers = want.get("headers").unwrap().as_array();
            assert_eq!(
                got_headers.len(),
                want_headers.len(),
                "headers {got_headers:?}: {}",
                context()
            );
            for ((name, value), pair) in got_headers.iter().zip(want_headers) {
                let pair = pair.as_array();
                assert!(
                    name.eq_ignore_ascii_case(pair[0].as_str()),
                    "{name} vs {pair:?}: {}",
                    context()
                );
                assert_eq!(value, &latin1(pair[1].as_str()), "{name}: {}", context());
            }

            assert_eq!(
                got.body,
                latin1(want.get("body_latin1").unwrap().as_str()),
                "body: {}",
                context()
            );
            let want_trailers = want.get("trailers").map_or(0, |t| t.as_array().len());
            assert_eq!(got.trailers_len > 0, want_trailers > 0, "trailers: {}", context());
            check_splits(&case.input, got, &setup.limits);
        }
        matched += 1;
    }
    println!("valid: {matched} matched, {refused} refused on purpose, {skipped} skipped");
    let mut listed: Vec<String> = REFUSED_ON_PURPOSE.iter().map(|(n, ..)| n.to_string()).collect();
    listed.sort();
    used_allow_list.sort();
    assert_eq!(
        used_allow_list, listed,
        "every allow-listed case must exist and behave as listed"
    );
    // Pinned, so a change in policy or corpus shows up here.
    assert_eq!((matched, refused, skipped), (48, 7, 8));
    assert!(matched + refused >= 55);
}

/// The same request read in pieces: every strict prefix of its head is
/// incomplete, and its chunked body split at any byte decodes the same.
fn check_splits(input: &[u8], parsed: &Parsed, limits: &Limits) {
    let head = &input[parsed.start..parsed.start + parsed.head_len];
    let mut headers = vec![EMPTY_HEADER; limits.max_headers];
    for i in 0..head.len() {
        let r = parse_request(&head[..i], &mut headers, limits).map(|r| r.is_some());
        assert_eq!(r, Ok(false), "prefix {i} of {}", describe(head));
    }
    let Some(range) = parsed.chunked.clone() else {
        return;
    };
    let body = &input[range];
    for split in 0..=body.len() {
        let mut decoder = ChunkedDecoder::new(limits.max_body_size);
        let mut payload = Vec::new();
        let mut buf = Vec::new();
        for piece in [&body[..split], &body[split..]] {
            buf.extend_from_slice(piece);
            loop {
                let d = decoder.decode(&buf).unwrap();
                payload.extend_from_slice(&buf[d.data]);
                buf.drain(..d.consumed);
                if d.consumed == 0 {
                    break;
                }
            }
        }
        assert!(
            decoder.is_done() && buf.is_empty(),
            "split at {split}: {}",
            describe(body)
        );
        assert_eq!(payload, parsed.body, "split at {split}: {}", describe(body));
    }
}

/// The statuses a client should see for each gunicorn error (corpus README).
fn acceptable(error: &str, end: &End) -> bool {
    match (error, end) {
        // The request never completed: the connection just ends.
        ("NoMoreData", End::IncompleteHead(n)) => *n > 0,
        ("NoMoreData", End::IncompleteBody) => true,
        // The decoder cannot see EOF: it waits for the terminator, and the
        // worker fails the body when the connection ends first.
        ("ChunkMissingTerminator", End::IncompleteBody) => true,
        ("LimitRequestHeaders", End::Error(431, _)) => true,
        ("LimitRequestLine", End::Error(400 | 414, _)) => true,
        ("InvalidHTTPVersion", End::Error(400 | 505, _)) => true,
        (
            "InvalidRequestLine"
            | "InvalidRequestMethod"
            | "InvalidHeader"
            | "InvalidHeaderName"
            | "InvalidChunkSize"
            | "InvalidChunkExtension"
            | "ChunkMissingTerminator"
            | "ObsoleteFolding",
            End::Error(400, _),
        ) => true,
        (
            "NoMoreData"
            | "ChunkMissingTerminator"
            | "LimitRequestHeaders"
            | "LimitRequestLine"
            | "InvalidHTTPVersion"
            | "InvalidRequestLine"
            | "InvalidRequestMethod"
            | "InvalidHeader"
            | "InvalidHeaderName"
            | "InvalidChunkSize"
            | "InvalidChunkExtension"
            | "ObsoleteFolding",
            _,
        ) => false,
        (other, _) => panic!("unknown gunicorn error {other}: add it to the table"),
    }
}

#[test]
fn gunicorn_invalid_requests() {
    let cases = load("invalid");
    assert_eq!(cases.len(), 74, "the corpus README says 74 invalid cases");
    let (mut matched, mut accepted, mut skipped) = (0, 0, 0);
    let mut used_allow_list = Vec::new();
    for case in &cases {
        let setup = match setup(case) {
            Ok(s) => s,
            Err(why) => {
                println!("skipped {}: {why}", case.name);
                skipped += 1;
                continue;
            }
        };
        let error = case.json.get("error").unwrap().as_str();
        let (parsed, end) = run(&case.input, &setup.limits);
        if let Some(&(_, why)) = ACCEPTED_ON_PURPOSE.iter().find(|(n, _)| *n == case.name) {
            assert!(
                !parsed.is_empty() && !matches!(end, End::Error(..)),
                "{} is listed as accepted ({why}) but gave {end:?}",
                case.name
            );
            println!("accepted on purpose {} (gunicorn: {error}): {why}", case.name);
            used_allow_list.push(case.name.clone());
            accepted += 1;
            continue;
        }
        assert!(
            acceptable(error, &end),
            "{}: gunicorn says {error}, we ended with {end:?} after {} request(s): {}",
            case.name,
            parsed.len(),
            describe(&case.input)
        );
        // A head refused outright is never accepted, nor refused differently,
        // when it arrives in pieces.
        if let (true, End::Error(status, _)) = (parsed.is_empty(), &end) {
            let mut headers = vec![EMPTY_HEADER; setup.limits.max_headers];
            for i in 0..case.input.len() {
                match parse_request(&case.input[..i], &mut headers, &setup.limits) {
                    Ok(None) => {}
                    Err(e) if e.status() == *status => {}
                    other => panic!(
                        "{}: prefix {i} gave {:?}",
                        case.name,
                        other.map(|r| r.map(|r| r.head_len))
                    ),
                }
            }
        }
        matched += 1;
    }
    println!("invalid: {matched} matched, {accepted} accepted on purpose, {skipped} skipped");
    let mut listed: Vec<String> = ACCEPTED_ON_PURPOSE.iter().map(|(n, _)| n.to_string()).collect();
    listed.sort();
    used_allow_list.sort();
    assert_eq!(
        used_allow_list, listed,
        "every allow-listed case must exist and behave as listed"
    );
    assert_eq!((matched, accepted, skipped), (65, 2, 7));
}

/// Every obfuscated Transfer-Encoding in defparam/smuggler either frames the
/// body as exactly `chunked`, is refused, or is not a Transfer-Encoding field
/// at all (e.g. `Transfer_Encoding`), so no body is framed by it. It is never
/// a Transfer-Encoding field that we then ignore.
#[test]
fn smuggler_te_gadgets() {
    let text = fs::read_to_string(corpus_dir().join("smuggler-te-gadgets/te_gadgets.json")).unwrap();
    let gadgets = json::parse(&text);
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    let mut total = 0;
    for (section, value) in gadgets.as_object() {
        let template = value.get("template_header").unwrap().as_str();
        for (name, hex) in value.get("gadgets").unwrap().as_object() {
            total += 1;
            let gadget = from_hex(hex.as_str());
            let what = format!("{section}/{name} {:?}", String::from_utf8_lossy(&gadget));

            // Without Content-Length the gadget is the only possible framing.
            let mut input = b"POST /?cb=1 HTTP/1.1\r\n".to_vec();
            input.extend_from_slice(&gadget);
            input.extend_from_slice(b"\r\nHost: x\r\n\r\n5\r\nhello\r\n0\r\n\r\n");
            let mut headers = [EMPTY_HEADER; 100];
            let outcome = match parse_request(&input, &mut headers, &Limits::default()) {
                Err(_) => "refused",
                Ok(None) => panic!("{what}: incomplete"),
                Ok(Some(r)) => {
                    let te: Vec<&[u8]> = r
                        .headers
                        .iter()
                        .filter(|h| h.name.eq_ignore_ascii_case("transfer-encoding"))
                        .map(|h| h.value)
                        .collect();
                    match r.body {
                        BodyKind::Chunked => {
                            assert!(
                                te.len() == 1 && te[0].eq_ignore_ascii_case(b"chunked"),
                                "{what}: {te:?}"
                            );
                            "exactly chunked"
                        }
                        BodyKind::Empty => {
                            assert!(te.is_empty(), "{what}: Transfer-Encoding {te:?} ignored");
                            "not a Transfer-Encoding field"
                        }
                        BodyKind::Length(_) => panic!("{what}: no Content-Length was sent"),
                    }
                }
            };
            *counts.entry(outcome).or_default() += 1;

            // smuggler's own template also sends Content-Length: the two may
            // never both be in force.
            let mut input = template
                .replace("__METHOD__", "POST")
                .replace("__ENDPOINT__", "/")
                .replace("__RANDOM__", "1")
                .replace("__HOST__", "x")
                .replace("__REPLACE_CL__", "5")
                .into_bytes();
            let at = input.windows(6).position(|w| w == b"GADGET").unwrap();
            input.splice(at..at + 6, gadget.iter().copied());
            input.extend_from_slice(b"\r\nhello");
            if let Ok(Some(r)) = parse_request(&input, &mut headers, &Limits::default()) {
                assert_eq!(r.body, BodyKind::Length(5), "{what} with Content-Length");
                assert!(
                    !r.headers
                        .iter()
                        .any(|h| h.name.eq_ignore_ascii_case("transfer-encoding")),
                    "{what}"
                );
            }
        }
    }
    println!("TE gadgets: {total} in all, {counts:?}");
    assert_eq!(total, 1768, "the corpus README says 1,768 gadgets");
    assert_eq!(counts.values().sum::<usize>(), total);
    assert!(counts["exactly chunked"] > 0 && counts["refused"] > 1000);
}

fn from_hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Just enough JSON for the corpus files (no dependency for a test).
mod json {
    #[derive(Debug, Clone)]
    pub enum Value {
        Null,
        Bool(bool),
        Num(f64),
        Str(String),
        Arr(Vec<Value>),
        Obj(Vec<(String, Value)>),
    }

    impl Value {
        pub fn get(&self, key: &str) -> Option<&Value> {
            self.as_object().iter().find(|(k, _)| k == key).map(|(_, v)| v)
        }
        pub fn as_object(&self) -> &[(String, Value)] {
            match self {
                Value::Obj(o) => o,
                other => panic!("not an object: {other:?}"),
            }
        }
        pub fn as_array(&self) -> &[Value] {
            match self {
                Value::Arr(a) => a,
                other => panic!("not an array: {other:?}"),
            }
        }
        pub fn as_str(&self) -> &str {
            match self {
                Value::Str(s) => s,
                other => panic!("not a string: {other:?}"),
            }
        }
        pub fn as_usize(&self) -> usize {
            match self {
                Value::Num(n) if *n >= 0.0 && n.fract() == 0.0 => *n as usize,
                other => panic!("not a count: {other:?}"),
            }
        }
    }

    pub fn parse(text: &str) -> Value {
        let mut p = Parser {
            s: text.as_bytes(),
            i: 0,
        };
        let v = p.value();
        p.ws();
        assert_eq!(p.i, p.s.len(), "trailing JSON");
        v
    }

    struct Parser<'a> {
        s: &'a [u8],
        i: usize,
    }

    impl Parser<'_> {
        fn ws(&mut self) {
            while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
                self.i += 1;
            }
        }
        fn eat(&mut self, b: u8) {
            self.ws();
            assert_eq!(self.s[self.i], b, "JSON at {}", self.i);
            self.i += 1;
        }
        fn value(&mut self) -> Value {
            self.ws();
            match self.s[self.i] {
                b'{' => {
                    self.i += 1;
                    let mut fields = Vec::new();
                    self.ws();
                    if self.s[self.i] == b'}' {
                        self.i += 1;
                        return Value::Obj(fields);
                    }
                    loop {
                        self.ws();
                        let key = self.string();
                        self.eat(b':');
                        fields.push((key, self.value()));
                        self.ws();
                        self.i += 1;
                        match self.s[self.i - 1] {
                            b',' => continue,
                            b'}' => return Value::Obj(fields),
                            c => panic!("JSON: {:?} in object", c as char),
                        }
                    }
                }
                b'[' => {
                    self.i += 1;
                    let mut items = Vec::new();
                    self.ws();
                    if self.s[self.i] == b']' {
                        self.i += 1;
                        return Value::Arr(items);
                    }
                    loop {
                        items.push(self.value());
                        self.ws();
                        self.i += 1;
                        match self.s[self.i - 1] {
                            b',' => continue,
                            b']' => return Value::Arr(items),
                            c => panic!("JSON: {:?} in array", c as char),
                        }
                    }
                }
                b'"' => Value::Str(self.string()),
                b't' => self.word("true", Value::Bool(true)),
                b'f' => self.word("false", Value::Bool(false)),
                b'n' => self.word("null", Value::Null),
                _ => {
                    let start = self.i;
                    while self.i < self.s.len()
                        && matches!(self.s[self.i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
                    {
                        self.i += 1;
                    }
                    let n = std::str::from_utf8(&self.s[start..self.i]).unwrap();
                    Value::Num(n.parse().unwrap_or_else(|_| panic!("JSON number {n:?}")))
                }
            }
        }
        fn word(&mut self, word: &str, v: Value) -> Value {
            assert!(self.s[self.i..].starts_with(word.as_bytes()));
            self.i += word.len();
            v
        }
        fn hex4(&mut self) -> u32 {
            let h = std::str::from_utf8(&self.s[self.i..self.i + 4]).unwrap();
            self.i += 4;
            u32::from_str_radix(h, 16).unwrap()
        }
        fn string(&mut self) -> String {
            assert_eq!(self.s[self.i], b'"');
            self.i += 1;
            let mut out = String::new();
            loop {
                let start = self.i;
                while self.s[self.i] != b'"' && self.s[self.i] != b'\\' {
                    self.i += 1;
                }
                out.push_str(std::str::from_utf8(&self.s[start..self.i]).unwrap());
                let c = self.s[self.i];
                self.i += 1;
                if c == b'"' {
                    return out;
                }
                let e = self.s[self.i];
                self.i += 1;
                match e {
                    b'"' => out.push('"'),
                    b'\\' => out.push('\\'),
                    b'/' => out.push('/'),
                    b'b' => out.push('\u{8}'),
                    b'f' => out.push('\u{c}'),
                    b'n' => out.push('\n'),
                    b'r' => out.push('\r'),
                    b't' => out.push('\t'),
                    b'u' => {
                        let mut c = self.hex4();
                        if (0xd800..0xdc00).contains(&c) && self.s[self.i..].starts_with(b"\\u") {
                            self.i += 2;
                            let low = self.hex4();
                            c = 0x10000 + ((c - 0xd800) << 10) + (low - 0xdc00);
                        }
                        out.push(char::from_u32(c).expect("JSON \\u escape"));
                    }
                    other => panic!("JSON escape {:?}", other as char),
                }
            }
        }
    }
}
