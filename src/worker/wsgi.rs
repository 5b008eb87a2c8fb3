//! The WSGI bridge (PEP 3333): building the environ from a parsed request,
//! calling the app, and turning what it returns into a response.

use std::os::fd::{AsFd, BorrowedFd};

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple, PyType};

use super::input::Input;
use super::io::sendfile_all;
use super::python::traceback;
use super::response::{Framed, ParkSpot, StartResponse};
use super::strings::{StrCache, Strings};
use crate::config::Config;
use crate::master::listeners::Local;
use crate::proto::request::{Request, Version};
use crate::proto::response::{Framing, simple_response};

/// Objects made once per worker so a request only copies and fills them.
pub struct Statics {
    /// The environ keys that never change, copied per request.
    template: Py<PyDict>,
    keys: Keys,
    common_headers: Vec<(&'static str, Py<PyString>)>,
    file_wrapper: Py<PyType>,
    /// The default port for a Host header without one, from --url-scheme.
    default_port: &'static str,
}

struct Keys {
    request_method: Py<PyString>,
    path_info: Py<PyString>,
    query_string: Py<PyString>,
    content_type: Py<PyString>,
    content_length: Py<PyString>,
    server_name: Py<PyString>,
    server_port: Py<PyString>,
    server_protocol: Py<PyString>,
    remote_addr: Py<PyString>,
    remote_port: Py<PyString>,
    request_uri: Py<PyString>,
    raw_uri: Py<PyString>,
    wsgi_input: Py<PyString>,
    http10: Py<PyString>,
    /// The usual methods, as interned strings (no new str per request).
    methods: Vec<(&'static str, Py<PyString>)>,
}

const COMMON_METHODS: [&str; 7] = ["GET", "POST", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS"];

/// Request headers common enough to deserve a precomputed environ key.
const COMMON_HEADERS: [&str; 24] = [
    "host",
    "user-agent",
    "accept",
    "accept-encoding",
    "accept-language",
    "connection",
    "cookie",
    "cache-control",
    "referer",
    "origin",
    "authorization",
    "if-none-match",
    "if-modified-since",
    "pragma",
    "upgrade-insecure-requests",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-real-ip",
    "x-requested-with",
    "sec-fetch-mode",
    "sec-fetch-site",
    "sec-fetch-dest",
    "dnt",
];

fn environ_key(header: &str) -> String {
    let mut k = String::with_capacity(5 + header.len());
    k.push_str("HTTP_");
    k.extend(
        header
            .chars()
            .map(|c| if c == '-' { '_' } else { c.to_ascii_uppercase() }),
    );
    k
}

/// A latin-1 `str` from raw bytes, as PEP 3333 wants for everything taken
/// from the request. CPython decodes latin-1 in one pass and makes a compact
/// ASCII string when every byte is below 128 (the usual case), so there is no
/// need to check for ASCII first.
pub fn latin1<'py>(py: Python<'py>, b: &[u8]) -> Bound<'py, PyString> {
    // SAFETY: PyUnicode_DecodeLatin1 reads exactly `len` bytes from a valid
    // slice and returns a new reference or NULL with an exception set; latin-1
    // decoding cannot fail except on memory exhaustion, which panics in
    // from_owned_ptr.
    unsafe {
        let ptr = ffi::PyUnicode_DecodeLatin1(b.as_ptr().cast(), b.len() as ffi::Py_ssize_t, std::ptr::null());
        Bound::from_owned_ptr(py, ptr).cast_into_unchecked()
    }
}

fn percent_decode(path: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if !path.contains(&b'%') {
        return path.into();
    }
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < path.len() {
        if path[i] == b'%'
            && i + 2 < path.len()
            && let (Some(h), Some(l)) = (hex(path[i + 1]), hex(path[i + 2]))
        {
            out.push(h << 4 | l);
            i += 3;
        } else {
            out.push(path[i]);
            i += 1;
        }
    }
    out.into()
}

/// The peer, as REMOTE_ADDR and REMOTE_PORT.
#[derive(Clone, Debug)]
pub struct Peer {
    pub addr: String,
    pub port: String,
    /// `None` for a unix socket peer.
    pub ip: Option<std::net::IpAddr>,
}

impl Peer {
    pub fn from_socket_addr(a: std::net::SocketAddr) -> Peer {
        Peer {
            addr: a.ip().to_string(),
            port: a.port().to_string(),
            ip: Some(a.ip()),
        }
    }
}

/// What a trusted front proxy told us about the client.
#[derive(Clone, Copy, Debug, Default)]
pub struct Forwarded {
    /// From X-Forwarded-For.
    pub client: Option<std::net::IpAddr>,
    /// From X-Forwarded-Proto and its kin.
    pub scheme: Option<&'static str>,
}

pub struct ConnInfo<'a> {
    pub peer: &'a Peer,
    pub local: &'a Local,
    pub forwarded: Forwarded,
}

impl Statics {
    pub fn new(py: Python<'_>, config: &Config, multiprocess: bool) -> PyResult<Statics> {
        let i = |s: &str| PyString::intern(py, s).unbind();
        let template = PyDict::new(py);
        template.set_item("wsgi.version", (1, 0))?;
        template.set_item("wsgi.url_scheme", config.url_scheme.as_str())?;
        template.set_item("wsgi.errors", Bound::new(py, ErrorStream)?)?;
        template.set_item("wsgi.multithread", config.max_workers > 1)?;
        template.set_item("wsgi.multiprocess", multiprocess)?;
        template.set_item("wsgi.run_once", false)?;
        template.set_item("wsgi.input_terminated", true)?;
        let file_wrapper = PyType::new::<FileWrapper>(py);
        template.set_item("wsgi.file_wrapper", &file_wrapper)?;
        template.set_item("SCRIPT_NAME", config.url_prefix.as_deref().unwrap_or(""))?;
        template.set_item("SERVER_SOFTWARE", concat!("zibai/", env!("CARGO_PKG_VERSION")))?;
        // Every request sets these: with a placeholder in the template, each
        // set replaces a value instead of inserting a key.
        for key in [
            "REQUEST_METHOD",
            "REQUEST_URI",
            "RAW_URI",
            "PATH_INFO",
            "QUERY_STRING",
            "SERVER_PROTOCOL",
            "REMOTE_ADDR",
            "REMOTE_PORT",
            "SERVER_NAME",
            "SERVER_PORT",
            "wsgi.input",
        ] {
            template.set_item(i(key), "")?;
        }
        // The usual values, so that a request with them needs no set (a
        // dict set is ~250 instructions, callgrind): GET, no query string,
        // HTTP/1.1.
        template.set_item(i("REQUEST_METHOD"), i("GET"))?;
        template.set_item(i("SERVER_PROTOCOL"), i("HTTP/1.1"))?;
        // Room for the request's headers: a dict copy keeps the source's
        // table (its fast path), and the template's 21 keys fill a table of
        // 32 exactly, so every environ grew and rehashed at its first header
        // (callgrind: a dictresize per request). A few keys added and deleted
        // here grow the table to 64 once. Not more: the fast copy needs at
        // most a third of the entries deleted.
        let spare: Vec<String> = (0..4).map(|n| format!("zibai.spare.{n}")).collect();
        for k in &spare {
            template.set_item(k, 0)?;
        }
        for k in &spare {
            template.del_item(k)?;
        }
        Ok(Statics {
            template: template.unbind(),
            keys: Keys {
                request_method: i("REQUEST_METHOD"),
                path_info: i("PATH_INFO"),
                query_string: i("QUERY_STRING"),
                content_type: i("CONTENT_TYPE"),
                content_length: i("CONTENT_LENGTH"),
                server_name: i("SERVER_NAME"),
                server_port: i("SERVER_PORT"),
                server_protocol: i("SERVER_PROTOCOL"),
                remote_addr: i("REMOTE_ADDR"),
                remote_port: i("REMOTE_PORT"),
                request_uri: i("REQUEST_URI"),
                raw_uri: i("RAW_URI"),
                wsgi_input: i("wsgi.input"),
                http10: i("HTTP/1.0"),
                methods: COMMON_METHODS.iter().map(|m| (*m, i(m))).collect(),
            },
            common_headers: COMMON_HEADERS.iter().map(|h| (*h, i(&environ_key(h)))).collect(),
            file_wrapper: file_wrapper.unbind(),
            default_port: if config.url_scheme == "https" { "443" } else { "80" },
        })
    }

    fn header_key<'py>(&self, py: Python<'py>, name: &str) -> Bound<'py, PyString> {
        for (h, key) in &self.common_headers {
            if h.eq_ignore_ascii_case(name) {
                return key.bind(py).clone();
            }
        }
        PyString::new(py, &environ_key(name))
    }

    /// Builds the environ for `req`. Header names with `_` are dropped: they
    /// would be indistinguishable from `-` once in the environ, a classic
    /// way to smuggle e.g. `X_Forwarded_For` past a proxy.
    pub fn environ<'py>(
        &self,
        py: Python<'py>,
        req: &Request<'_, '_>,
        info: &ConnInfo<'_>,
        script_name: Option<&str>,
        input: Bound<'py, PyAny>,
        strings: &mut Strings,
    ) -> PyResult<Bound<'py, PyDict>> {
        let k = &self.keys;
        let env = self.template.bind(py).copy()?;
        // The template's REQUEST_METHOD is GET, its QUERY_STRING empty and
        // its SERVER_PROTOCOL HTTP/1.1.
        if req.method != "GET" {
            let method = match k.methods.iter().find(|(m, _)| *m == req.method) {
                Some((_, m)) => m.bind(py).clone(),
                None => PyString::new(py, req.method),
            };
            env.set_item(k.request_method.bind(py), method)?;
        }
        let target = req.target.as_bytes();
        let target_str = strings.values.get(py, target, latin1);
        env.set_item(k.request_uri.bind(py), &target_str)?;
        env.set_item(k.raw_uri.bind(py), &target_str)?;
        // A fragment is the client's own (RFC 9110 4.2.5): no part of the
        // authority, the path or the query. Cut first, or `http://h#x/admin`
        // would have the path /admin.
        let target_nofrag = match target.iter().position(|&c| c == b'#') {
            Some(h) => &target[..h],
            None => target,
        };
        // absolute-form: the authority stands for Host (RFC 9112 3.2.2: the
        // Host field is ignored), the rest is the path and query.
        let (authority, origin) = match split_absolute(target_nofrag) {
            Some((authority, origin)) => (Some(authority), origin),
            None => (None, target_nofrag),
        };
        let (path, query) = match origin.iter().position(|&c| c == b'?') {
            Some(q) => (&origin[..q], &origin[q + 1..]),
            None => (origin, &b""[..]),
        };
        // `http://h?q=1`: an empty path is `/`.
        let path: &[u8] = if path.is_empty() { b"/" } else { path };
        let decoded = percent_decode(path);
        let mut path_info: &[u8] = &decoded;
        if let Some(prefix) = script_name {
            let p = prefix.as_bytes();
            if path_info.starts_with(p) && (path_info.len() == p.len() || path_info[p.len()] == b'/') {
                path_info = &path_info[p.len()..];
            }
        }
        // Usually the whole target ("/", "/users/7"): the same str.
        let path_info = if path_info == target {
            target_str
        } else {
            latin1(py, path_info)
        };
        env.set_item(k.path_info.bind(py), path_info)?;
        if !query.is_empty() {
            env.set_item(k.query_string.bind(py), latin1(py, query))?;
        }
        if req.version == Version::Http10 {
            env.set_item(k.server_protocol.bind(py), k.http10.bind(py))?;
        }
        match info.forwarded.client {
            Some(ip) => env.set_item(k.remote_addr.bind(py), ip.to_canonical().to_string())?,
            None => env.set_item(
                k.remote_addr.bind(py),
                strings.values.get(py, info.peer.addr.as_bytes(), latin1),
            )?,
        }
        if let Some(scheme) = info.forwarded.scheme {
            env.set_item(pyo3::intern!(py, "wsgi.url_scheme"), scheme)?;
        }
        env.set_item(k.remote_port.bind(py), latin1(py, info.peer.port.as_bytes()))?;
        let mut host: Option<&[u8]> = None;
        let headers = req.headers;
        for (i, h) in headers.iter().enumerate() {
            let name = h.name;
            if name.contains('_') || headers[..i].iter().any(|p| p.name.eq_ignore_ascii_case(name)) {
                continue;
            }
            let repeats = headers[i + 1..]
                .iter()
                .filter(|p| p.name.eq_ignore_ascii_case(name))
                .count();
            let value = if repeats == 0 {
                strings.values.get(py, h.value, latin1)
            } else {
                let mut joined = h.value.to_vec();
                for p in headers[i + 1..].iter().filter(|p| p.name.eq_ignore_ascii_case(name)) {
                    joined.push(b',');
                    joined.extend_from_slice(p.value);
                }
                latin1(py, &joined)
            };
            if name.eq_ignore_ascii_case("content-type") {
                env.set_item(k.content_type.bind(py), value)?;
            } else if name.eq_ignore_ascii_case("content-length") {
                env.set_item(k.content_length.bind(py), value)?;
            } else {
                if name.eq_ignore_ascii_case("host") {
                    host = Some(h.value);
                }
                let key = strings
                    .header_keys
                    .get(py, name.as_bytes(), |py, _| self.header_key(py, name));
                env.set_item(key, value)?;
            }
        }
        if let Some(authority) = authority {
            host = Some(authority);
            env.set_item(pyo3::intern!(py, "HTTP_HOST"), latin1(py, authority))?;
        }
        let default_port = match info.forwarded.scheme {
            Some("https") => "443",
            Some(_) => "80",
            None => self.default_port,
        };
        let (server_name, server_port) = server_name_port(py, host, info.local, default_port, &mut strings.values);
        env.set_item(k.server_name.bind(py), server_name)?;
        env.set_item(k.server_port.bind(py), server_port)?;
        env.set_item(k.wsgi_input.bind(py), input)?;
        Ok(env)
    }
}

/// An absolute-form target's authority (without userinfo) and the rest
/// (path and query, maybe empty); `None` for any other form.
fn split_absolute(target: &[u8]) -> Option<(&[u8], &[u8])> {
    if target.first() == Some(&b'/') || target == b"*" {
        return None;
    }
    let i = target.iter().position(|&c| c == b':')?;
    let rest = target[i..].strip_prefix(b"://")?;
    let end = rest.iter().position(|&c| c == b'/' || c == b'?').unwrap_or(rest.len());
    let authority = &rest[..end];
    let host = match authority.iter().rposition(|&c| c == b'@') {
        Some(at) => &authority[at + 1..],
        None => authority,
    };
    Some((host, &rest[end..]))
}

/// SERVER_NAME and SERVER_PORT from the Host header (as Apache does with
/// `UseCanonicalName Off`, and gunicorn on a unix socket), else from the
/// listening socket. `default_port` is the scheme's. The request parser
/// has refused a Host that is not `uri-host [":" port]`, so the port is
/// digits.
fn server_name_port<'py>(
    py: Python<'py>,
    host: Option<&[u8]>,
    local: &Local,
    default_port: &str,
    cache: &mut StrCache,
) -> (Bound<'py, PyString>, Bound<'py, PyString>) {
    if let Some(host) = host.filter(|h| !h.is_empty()) {
        let (name, port): (&[u8], &[u8]) = if host.first() == Some(&b'[') {
            match host.iter().position(|&c| c == b']') {
                Some(end) => {
                    let rest = &host[end + 1..];
                    (&host[..=end], rest.strip_prefix(b":").unwrap_or(rest))
                }
                None => (host, b""),
            }
        } else {
            match host.iter().rposition(|&c| c == b':') {
                Some(colon) => (&host[..colon], &host[colon + 1..]),
                None => (host, b""),
            }
        };
        let port = if port.is_empty() { default_port.as_bytes() } else { port };
        return (cache.get(py, name, latin1), cache.get(py, port, latin1));
    }
    match local {
        Local::Tcp(a) => (
            PyString::new(py, &a.ip().to_string()),
            PyString::new(py, &a.port().to_string()),
        ),
        Local::Unix(p) => (PyString::new(py, p), PyString::new(py, "")),
    }
}

/// `wsgi.errors`: text goes to the error log (`--error-log`), as PEP 3333
/// suggests and gunicorn does, so it survives `--daemon`.
#[pyclass(module = "zibai", name = "ErrorStream")]
pub struct ErrorStream;

#[pymethods]
impl ErrorStream {
    fn write(&self, text: &str) -> usize {
        crate::logging::error_raw(text.as_bytes());
        text.chars().count()
    }

    fn writelines(&self, lines: &Bound<'_, PyAny>) -> PyResult<()> {
        for line in lines.try_iter()? {
            let line = line?;
            crate::logging::error_raw(line.cast::<PyString>()?.to_str()?.as_bytes());
        }
        Ok(())
    }

    fn flush(&self) {}

    fn writable(&self) -> bool {
        true
    }
}

/// `wsgi.file_wrapper`: iterates a file-like in blocks; when the server sees
/// it returned with a real file behind it, it uses sendfile(2) instead.
#[pyclass(module = "zibai", name = "FileWrapper")]
pub struct FileWrapper {
    /// Public, as wsgiref's and gunicorn's are (middleware reads them).
    #[pyo3(get)]
    filelike: Py<PyAny>,
    #[pyo3(get)]
    blksize: usize,
}

#[pymethods]
impl FileWrapper {
    #[new]
    #[pyo3(signature = (filelike, blksize=8192))]
    fn new(filelike: Py<PyAny>, blksize: usize) -> Self {
        FileWrapper {
            filelike,
            blksize: blksize.max(1),
        }
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let data = self.filelike.bind(py).call_method1("read", (self.blksize,))?;
        Ok(if data.is_truthy()? { Some(data) } else { None })
    }

    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let f = self.filelike.bind(py);
        if f.hasattr("close")? {
            f.call_method0("close")?;
        }
        Ok(())
    }
}

/// How serving one request ended, for the connection and the access log.
pub struct Outcome {
    pub code: u16,
    pub body_bytes: u64,
    pub close: bool,
    /// The last of the response, written once the GIL is released.
    pub last: Option<Framed>,
}

enum Failure {
    Python(PyErr),
    /// The client went away (or stalled past the write timeout).
    Client,
}

impl From<PyErr> for Failure {
    fn from(e: PyErr) -> Self {
        Failure::Python(e)
    }
}

fn not_started() -> PyErr {
    pyo3::exceptions::PyAssertionError::new_err("the app returned a body before calling start_response")
}

fn chunk_of(item: &Bound<'_, PyAny>) -> PyResult<PyBackedBytes> {
    match item.cast::<PyBytes>() {
        Ok(b) => Ok(PyBackedBytes::from(b.clone())),
        Err(_) => Err(pyo3::exceptions::PyTypeError::new_err(format!(
            "the app must yield bytes, not {}",
            item.get_type().name().map(|n| n.to_string()).unwrap_or_default()
        ))),
    }
}

/// What [`Statics::run_app`] needs of a request besides its environ.
pub struct AppCall<'a, 'py> {
    pub start_response: &'a Bound<'py, StartResponse>,
    pub input: &'a Bound<'py, Input>,
    /// For log lines.
    pub request_line: &'a dyn Fn() -> String,
    /// Where the response's last piece waits while the app finishes.
    pub spot: ParkSpot<'a>,
}

impl Statics {
    /// Calls the app and frames its response. Never lets a Python error
    /// escape: before the head is out it becomes a 500, after it the
    /// connection is closed. The iterable's `close()` is always called.
    pub fn run_app(
        &self,
        py: Python<'_>,
        app: &Py<PyAny>,
        environ: Bound<'_, PyDict>,
        call: &AppCall<'_, '_>,
    ) -> Outcome {
        let AppCall {
            start_response: sr,
            input,
            request_line,
            spot,
        } = call;
        let result = app.bind(py).call1((environ, sr));
        let outcome = match &result {
            Ok(iterable) => {
                let mut r = self.write_body(py, iterable, sr, spot);
                // A list or tuple has no close(); asking would raise and
                // catch an AttributeError per request.
                let plain = iterable.is_exact_instance_of::<PyList>() || iterable.is_exact_instance_of::<PyTuple>();
                if !plain && let Ok(close) = iterable.getattr(pyo3::intern!(py, "close")) {
                    // The response is whole: a slow close() must not hold
                    // it (Django runs its request_finished handlers there).
                    if let Ok(last) = &mut r
                        && let Some(piece) = last.take()
                    {
                        spot.park(piece);
                    }
                    if let Err(e) = close.call0() {
                        log::error!(
                            "close() of the response of {} failed:\n{}",
                            request_line(),
                            traceback(py, &e)
                        );
                    }
                }
                r
            }
            Err(e) => Err(Failure::Python(e.clone_ref(py))),
        };
        // What was parked, possibly written by another thread meanwhile.
        // (Most responses park nothing: they pay for a flag only.)
        let mut outcome = outcome;
        let mut late_last = None;
        if let Some(parked) = spot.take() {
            (outcome, late_last) = match (outcome, parked) {
                (Ok(_), Ok(last)) => (Ok(Some(last)), None),
                (Ok(_) | Err(Failure::Client), Err(_)) => (Err(Failure::Client), None),
                // The app failed after its body was whole (code after its
                // last yield): the body still goes out, then the error ends
                // the connection.
                (Err(e), last) => (Err(e), last.ok()),
            };
        }
        // The app may still be using start_response from a thread of its own.
        let Ok(mut me) = sr.try_borrow_mut() else {
            log::error!(
                "start_response of {} is still in use after the app returned",
                request_line()
            );
            return Outcome {
                code: 0,
                body_bytes: 0,
                close: true,
                last: None,
            };
        };
        let resp = &mut me.resp;
        if matches!(outcome, Err(Failure::Python(_))) {
            // The body is cut short, but what the app produced before it
            // failed still goes out first.
            let _ = resp.drain(py);
        }
        // A body that ended normally took its stream along (`last`); any
        // other lets go of it here, so the connection closes now.
        resp.end_stream();
        match outcome {
            Ok(last) => Outcome {
                code: resp.code(),
                body_bytes: resp.body_sent,
                close: resp.must_close,
                last,
            },
            Err(Failure::Client) => Outcome {
                code: resp.code(),
                body_bytes: resp.body_sent,
                close: true,
                last: None,
            },
            Err(Failure::Python(e)) => {
                // A body the client failed to send is the client's error, not
                // the app's: answer it as such, whatever the app raised.
                let body_failure = input.try_borrow().ok().and_then(|i| {
                    i.reader
                        .as_ref()
                        .and_then(|r| r.failure().map(|f| (f.to_string(), f.status())))
                });
                if let Some((why, status)) = body_failure {
                    log::warn!("{}: {why}", request_line());
                    let last = match status {
                        Some((code, reason)) if !resp.head_sent() => {
                            let msg = simple_response(code, reason, &super::date_now(), true, resp.head_request());
                            return Outcome {
                                code,
                                body_bytes: 0,
                                close: true,
                                last: Some(Framed::raw(msg)),
                            };
                        }
                        _ => late_last,
                    };
                    return Outcome {
                        code: if resp.head_sent() { resp.code() } else { 0 },
                        body_bytes: resp.body_sent,
                        close: true,
                        last,
                    };
                }
                log::error!("error handling {}:\n{}", request_line(), traceback(py, &e));
                if resp.head_sent() {
                    // Too late for a 500: all we can do is cut the body
                    // short (or end the connection after a whole one).
                    return Outcome {
                        code: resp.code(),
                        body_bytes: resp.body_sent,
                        close: true,
                        last: late_last,
                    };
                }
                let msg = simple_response(
                    500,
                    "Internal Server Error",
                    &super::date_now(),
                    true,
                    resp.head_request(),
                );
                Outcome {
                    code: 500,
                    body_bytes: 0,
                    close: true,
                    last: Some(Framed::raw(msg)),
                }
            }
        }
    }

    /// Produces the body; returns its last piece, still to be written,
    /// unless it parked it in `spot`.
    fn write_body(
        &self,
        py: Python<'_>,
        iterable: &Bound<'_, PyAny>,
        sr: &Bound<'_, StartResponse>,
        spot: &ParkSpot<'_>,
    ) -> Result<Option<Framed>, Failure> {
        // The common case: a list (or tuple) of bytes, all produced already.
        let seq = iterable
            .cast::<PyList>()
            .ok()
            .map(|l| l.as_sequence().clone())
            .or_else(|| iterable.cast::<PyTuple>().ok().map(|t| t.as_sequence().clone()));
        if let Some(seq) = seq {
            let mut chunks = Vec::with_capacity(seq.len().unwrap_or(1));
            for item in seq.try_iter()? {
                chunks.push(chunk_of(&item?)?);
            }
            let mut me = sr.try_borrow_mut().map_err(PyErr::from)?;
            if !me.resp.started() {
                return Err(not_started().into());
            }
            return Ok(Some(me.resp.frame(py, chunks, true)));
        }
        if iterable.is_instance(self.file_wrapper.bind(py))? {
            let wrapper = iterable.cast::<FileWrapper>().map_err(PyErr::from)?;
            if let Some(r) = self.try_sendfile(py, &wrapper.borrow(), sr)? {
                return r;
            }
        }
        // A chunk that completes the declared Content-Length is framed as
        // the response's last piece: the body is whole, so it goes out with
        // the response's last write (with the head, for a body of one
        // chunk, as most frameworks send), after the GIL is released. Any
        // other chunk is sent as it comes, so a stream is never held up.
        // The piece is parked (see `Parked`) while the iteration ends: a
        // framework's iterator around a generator runs the generator's code
        // after its last yield then, and another thread writes the piece if
        // that takes long. Not when the body is the app's own generator,
        // whose next step is that code: its piece is sent at once.
        // SAFETY: a type check on a live object.
        let hold = unsafe { pyo3::ffi::PyGen_Check(iterable.as_ptr()) } == 0;
        let mut parked = false;
        for item in iterable.try_iter()? {
            let chunk = item.and_then(|item| chunk_of(&item))?;
            if chunk.is_empty() {
                continue;
            }
            let mut me = sr.try_borrow_mut().map_err(PyErr::from)?;
            if !me.resp.started() {
                return Err(not_started().into());
            }
            // Past the declared Content-Length nothing more can go out.
            // Asking for more would write nothing, so never fail: an endless
            // generator held the thread forever, a log line per block. What
            // went out is what the head said: the connection stays.
            if let Some(cl) = me.resp.content_length().filter(|&cl| me.resp.body_sent >= cl) {
                me.resp.overrun(cl);
                break;
            }
            if hold && me.resp.completes_length(chunk.len()) {
                let last = me.resp.frame(py, vec![chunk], true);
                spot.park(last);
                parked = true;
            } else if me.resp.send(py, vec![chunk]).is_err() {
                return Err(Failure::Client);
            }
            // A response with no body (HEAD, 204, 304) whose head is out
            // wants nothing more: stop iterating, for the same reason.
            if me.resp.head_sent() && me.resp.framing() == Framing::NoBody {
                break;
            }
        }
        let mut me = sr.try_borrow_mut().map_err(PyErr::from)?;
        if !me.resp.started() {
            return Err(not_started().into());
        }
        if me.resp.broken {
            return Err(Failure::Client);
        }
        if parked {
            return Ok(None);
        }
        Ok(Some(me.resp.frame(py, Vec::new(), true)))
    }

    /// sendfile(2) for a wrapper around a regular file; `None` means "not a
    /// real file, iterate it instead".
    fn try_sendfile(
        &self,
        py: Python<'_>,
        wrapper: &FileWrapper,
        sr: &Bound<'_, StartResponse>,
    ) -> PyResult<Option<Result<Option<Framed>, Failure>>> {
        let f = wrapper.filelike.bind(py);
        // Only a plain binary file's bytes are its fd's bytes: a gzip, bz2
        // or lzma file (or any wrapper) also has the fd's fileno() but
        // reads something else, which PEP 3333 says is what to send.
        let io = py.import(pyo3::intern!(py, "io"))?;
        let mut plain = false;
        for kind in [
            pyo3::intern!(py, "FileIO"),
            pyo3::intern!(py, "BufferedReader"),
            pyo3::intern!(py, "BufferedRandom"),
        ] {
            plain = plain || f.is_instance(&io.getattr(kind)?)?;
        }
        if !plain {
            return Ok(None);
        }
        let Ok(fileno) = f.call_method0("fileno").and_then(|n| n.extract::<i32>()) else {
            return Ok(None);
        };
        // Our own descriptor for it, taken before any other Python call:
        // sendfile runs with the GIL released, and another Python thread
        // holding the same file object (a cached static file) could close it
        // meanwhile, and the number be reused by an unrelated file or socket,
        // whose bytes would then be sent. (Not even tell() comes first: it
        // releases the GIL around lseek.)
        // SAFETY: the file object owns `fileno` and we hold the GIL, and no
        // Python code runs between fileno() and this borrow, which ends with
        // the statement (the duplicate is ours).
        let Ok(file) = unsafe { BorrowedFd::borrow_raw(fileno) }.try_clone_to_owned() else {
            return Ok(None);
        };
        let Ok(offset) = f.call_method0("tell").and_then(|n| n.extract::<i64>()) else {
            return Ok(None);
        };
        let Ok(stat) = nix::sys::stat::fstat(&file) else {
            return Ok(None);
        };
        // A size of 0 may be a file whose size the kernel does not know
        // (/proc, /sys): read() tells.
        if stat.st_mode & libc::S_IFMT != libc::S_IFREG || stat.st_size == 0 {
            return Ok(None);
        }
        let mut me = sr.try_borrow_mut().map_err(PyErr::from)?;
        if !me.resp.started() {
            return Err(not_started());
        }
        if me.resp.head_sent() && me.resp.framing() == Framing::Chunked {
            // write() already started a chunked body: sendfile's raw bytes
            // would break its framing.
            return Ok(None);
        }
        // What write() queued goes before the file.
        if me.resp.drain(py).is_err() {
            return Ok(Some(Err(Failure::Client)));
        }
        let available = (stat.st_size as u64).saturating_sub(offset as u64);
        // What the Content-Length leaves after what write() already sent;
        // a file longer than that is cut, as any body longer than its
        // Content-Length.
        let sent = me.resp.body_sent;
        let len = match me.resp.content_length() {
            Some(cl) if cl.saturating_sub(sent) < available => {
                me.resp.overrun(cl);
                cl.saturating_sub(sent)
            }
            _ => available,
        };
        if me.resp.send_head(py, Some(len)).is_err() {
            return Ok(Some(Err(Failure::Client)));
        }
        if me.resp.framing() != Framing::NoBody && len > 0 {
            let Ok(sock) = me.resp.sock() else {
                return Ok(Some(Err(Failure::Client)));
            };
            let timeout = me.resp.write_timeout();
            match py.detach(|| sendfile_all(sock.fd_borrow(), file.as_fd(), offset, len, timeout)) {
                Ok(n) => me.resp.note_sent(n),
                Err(_) => {
                    me.resp.must_close = true;
                    return Ok(Some(Err(Failure::Client)));
                }
            }
        }
        // Checks the promised length and ends the body.
        Ok(Some(Ok(Some(me.resp.frame(py, Vec::new(), true)))))
    }
}
