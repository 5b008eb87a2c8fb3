//! The WSGI environ as the app sees it (PEP 3333 and the CGI variables),
//! read back through echo_app.py. Values are shown escaped: a latin-1
//! character U+00E9 appears as `\xe9`.

use std::time::Duration;

use crate::util::{Kv, Server};

fn echo(s: &Server, raw: &[u8]) -> Kv {
    let r = s.request(raw);
    assert_eq!(r.status, 200, "{r:?}");
    r.kv()
}

#[test]
fn path_info_is_percent_decoded_latin1() {
    let s = Server::start("echo_app:app", &[]);
    // The UTF-8 bytes of "café" arrive as their latin-1 decoding: two
    // characters, U+00C3 U+00A9.
    let kv = echo(&s, b"GET /caf%C3%A9 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(kv.at("PATH_INFO"), "/caf\\xc3\\xa9");
    // Encoded slashes and spaces decode too; the raw target is kept.
    let kv = echo(
        &s,
        b"GET /a%2Fb%20c?x=%20y&z HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(kv.at("PATH_INFO"), "/a/b c");
    assert_eq!(kv.at("QUERY_STRING"), "x=%20y&z");
    assert_eq!(kv.at("RAW_URI"), "/a%2Fb%20c?x=%20y&z");
    assert_eq!(kv.at("REQUEST_URI"), "/a%2Fb%20c?x=%20y&z");
}

#[test]
fn raw_utf8_in_the_target_is_latin1_decoded() {
    let s = Server::start("echo_app:app", &[]);
    let kv = echo(
        &s,
        "GET /café HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".as_bytes(),
    );
    assert_eq!(kv.at("PATH_INFO"), "/caf\\xc3\\xa9");
}

#[test]
fn query_string_is_raw_and_empty_when_absent() {
    let s = Server::start("echo_app:app", &[]);
    let kv = echo(
        &s,
        b"GET /p?a=1&b=%41+c&a=2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(kv.at("QUERY_STRING"), "a=1&b=%41+c&a=2");
    assert_eq!(kv.at("PATH_INFO"), "/p");
    let kv = echo(&s, b"GET /p HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(kv.at("QUERY_STRING"), "");
}

#[test]
fn absolute_form_target_gives_path_and_query() {
    let s = Server::start("echo_app:app", &[]);
    let kv = echo(
        &s,
        b"GET http://example.com/abs/p?q=1 HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(kv.at("PATH_INFO"), "/abs/p");
    assert_eq!(kv.at("QUERY_STRING"), "q=1");
    assert_eq!(kv.at("RAW_URI"), "http://example.com/abs/p?q=1");
}

/// RFC 9112 3.2.2: with an absolute-form target, the Host field is ignored
/// and the target's authority is the host (it was the other way round). A
/// fragment there is no path (`http://h#x/admin` had the path /admin), and
/// an empty path is `/`.
#[test]
fn absolute_form_authority_wins_over_host() {
    let s = Server::start("echo_app:app", &[]);
    let kv = echo(
        &s,
        b"GET http://u@target.example:8080/p?q=1 HTTP/1.1\r\nHost: other.example\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(kv.at("HTTP_HOST"), "target.example:8080");
    assert_eq!((kv.at("SERVER_NAME"), kv.at("SERVER_PORT")), ("target.example", "8080"));
    assert_eq!(kv.at("PATH_INFO"), "/p");
    let kv = echo(
        &s,
        b"GET http://h#x/admin HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    );
    assert_eq!((kv.at("PATH_INFO"), kv.at("QUERY_STRING")), ("/", ""));
    let kv = echo(&s, b"GET http://h?q=1 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
    assert_eq!((kv.at("PATH_INFO"), kv.at("QUERY_STRING")), ("/", "q=1"));
}

#[test]
fn script_name_from_url_prefix_strips_path_info() {
    let s = Server::start("echo_app:app", &["--url-prefix", "/api"]);
    let kv = echo(
        &s,
        b"GET /api/items?x=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!((kv.at("SCRIPT_NAME"), kv.at("PATH_INFO")), ("/api", "/items"));
    // The prefix alone.
    let kv = echo(&s, b"GET /api HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!((kv.at("SCRIPT_NAME"), kv.at("PATH_INFO")), ("/api", ""));
    // Only a whole path segment is a prefix.
    let kv = echo(&s, b"GET /apix HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(kv.at("PATH_INFO"), "/apix");
    let kv = echo(&s, b"GET /other HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(kv.at("PATH_INFO"), "/other");
}

#[test]
fn script_name_from_environment_variable() {
    let s = Server::builder("echo_app:app").env("SCRIPT_NAME", "/mnt/").start();
    let kv = echo(&s, b"GET /mnt/x/y HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!((kv.at("SCRIPT_NAME"), kv.at("PATH_INFO")), ("/mnt", "/x/y"));
}

#[test]
fn no_prefix_means_empty_script_name() {
    let s = Server::start("echo_app:app", &[]);
    let kv = echo(&s, b"GET /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(kv.at("SCRIPT_NAME"), "");
    assert_eq!(kv.at("PATH_INFO"), "/x");
}

#[test]
fn remote_addr_and_port_are_the_client() {
    let s = Server::start("echo_app:app", &[]);
    let mut c = s.connect();
    let local = c.tcp().local_addr().unwrap();
    let kv = c.get("/").kv();
    assert_eq!(kv.at("REMOTE_ADDR"), "127.0.0.1");
    assert_eq!(kv.at("REMOTE_PORT"), local.port().to_string());
}

#[test]
fn server_name_and_port_come_from_host() {
    let s = Server::start("echo_app:app", &[]);
    let kv = echo(
        &s,
        b"GET / HTTP/1.1\r\nHost: example.com:8080\r\nConnection: close\r\n\r\n",
    );
    assert_eq!((kv.at("SERVER_NAME"), kv.at("SERVER_PORT")), ("example.com", "8080"));
    assert_eq!(kv.at("HTTP_HOST"), "example.com:8080");
    let kv = echo(&s, b"GET / HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n");
    assert_eq!((kv.at("SERVER_NAME"), kv.at("SERVER_PORT")), ("example.com", "80"));
    let kv = echo(&s, b"GET / HTTP/1.1\r\nHost: [::1]:81\r\nConnection: close\r\n\r\n");
    assert_eq!((kv.at("SERVER_NAME"), kv.at("SERVER_PORT")), ("[::1]", "81"));
    // No Host (HTTP/1.0): the listener.
    let kv = echo(&s, b"GET / HTTP/1.0\r\n\r\n");
    assert_eq!(kv.at("SERVER_NAME"), "127.0.0.1");
    assert_eq!(kv.at("SERVER_PORT"), s.addr().port().to_string());
    assert_eq!(kv.get("HTTP_HOST"), None);
}

/// They become SERVER_NAME and SERVER_PORT, which apps trust
/// (`int(environ["SERVER_PORT"])`): RFC 9112 3.2 wants a 400.
#[test]
fn an_invalid_host_is_400() {
    let s = Server::start("echo_app:app", &[]);
    for host in ["x:abc", "a b", "a:b:c", "[::1]x", "u@h"] {
        let r = s.request(format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes());
        assert_eq!(r.status, 400, "Host: {host}: {r:?}");
    }
}

/// A fragment is cut before the path and the query are found (gunicorn's
/// urlsplit does the same); it went into QUERY_STRING before.
#[test]
fn a_fragment_is_in_neither_path_nor_query() {
    let s = Server::start("echo_app:app", &[]);
    let kv = echo(&s, b"GET /p?a=1#frag HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!((kv.at("PATH_INFO"), kv.at("QUERY_STRING")), ("/p", "a=1"));
    let kv = echo(&s, b"GET /p#frag?x=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!((kv.at("PATH_INFO"), kv.at("QUERY_STRING")), ("/p", ""));
}

#[test]
fn url_scheme_https_sets_default_port_443() {
    let s = Server::start("echo_app:app", &["--url-scheme", "https"]);
    let kv = echo(&s, b"GET / HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n");
    assert_eq!(kv.at("wsgi.url_scheme"), "https");
    assert_eq!(kv.at("SERVER_PORT"), "443");
}

#[test]
fn repeated_headers_are_joined_with_commas() {
    let s = Server::start("echo_app:app", &[]);
    let kv = echo(
        &s,
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Multi: a\r\nx-multi: b\r\nX-Other: o\r\nX-MULTI: c\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(kv.at("HTTP_X_MULTI"), "a,b,c");
    assert_eq!(kv.at("HTTP_X_OTHER"), "o");
}

#[test]
fn header_names_with_underscores_are_dropped() {
    let s = Server::start("echo_app:app", &[]);
    let kv = echo(
        &s,
        b"GET / HTTP/1.1\r\nHost: x\r\nX_Forwarded_For: 6.6.6.6\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(kv.get("HTTP_X_FORWARDED_FOR"), None, "{kv:?}");
    // Next to the real header, the underscore one neither replaces nor joins it.
    let kv = echo(
        &s,
        b"GET / HTTP/1.1\r\nHost: x\r\nX_Forwarded_For: 6.6.6.6\r\nX-Forwarded-For: 1.2.3.4\r\n\
          X_Forwarded_For: 6.6.6.7\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(kv.at("HTTP_X_FORWARDED_FOR"), "1.2.3.4");
}

#[test]
fn content_type_and_length_are_not_prefixed() {
    let s = Server::start("echo_app:app", &[]);
    let kv = echo(
        &s,
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: text/x-test\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
    );
    assert_eq!(kv.at("CONTENT_TYPE"), "text/x-test");
    assert_eq!(kv.at("CONTENT_LENGTH"), "3");
    assert_eq!(kv.get("HTTP_CONTENT_TYPE"), None);
    assert_eq!(kv.get("HTTP_CONTENT_LENGTH"), None);
    assert_eq!(kv.at("_body"), "abc");
}

#[test]
fn header_values_are_latin1() {
    let s = Server::start("echo_app:app", &[]);
    let kv = echo(
        &s,
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Name: caf\xc3\xa9 \xff\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(kv.at("HTTP_X_NAME"), "caf\\xc3\\xa9 \\xff");
}

#[test]
fn wsgi_and_cgi_basics() {
    let s = Server::start("echo_app:app", &[]);
    let kv = echo(&s, b"DELETE /thing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(kv.at("REQUEST_METHOD"), "DELETE");
    assert_eq!(kv.at("SERVER_PROTOCOL"), "HTTP/1.1");
    assert!(kv.at("SERVER_SOFTWARE").starts_with("zibai"), "{kv:?}");
    assert_eq!(kv.at("wsgi.version"), "(1, 0)");
    assert_eq!(kv.at("wsgi.url_scheme"), "http");
    assert_eq!(kv.at("wsgi.multithread"), "True");
    assert_eq!(kv.at("wsgi.multiprocess"), "False");
    assert_eq!(kv.at("wsgi.run_once"), "False");
    assert_eq!(kv.at("wsgi.input_terminated"), "True");
    let kv = echo(&s, b"GET / HTTP/1.0\r\n\r\n");
    assert_eq!(kv.at("SERVER_PROTOCOL"), "HTTP/1.0");
}

#[test]
fn one_app_thread_is_not_multithread() {
    let s = Server::start("echo_app:app", &["-w", "1"]);
    s.expect_log("Serving with 1 app threads", Duration::from_secs(1));
    let kv = echo(&s, b"GET / HTTP/1.0\r\n\r\n");
    assert_eq!(kv.at("wsgi.multithread"), "False");
}

#[test]
fn wsgi_errors_goes_to_stderr_and_access_log_is_written() {
    let s = Server::start("echo_app:app", &[]);
    let r = s.get("/logged?y=1&log=hello-from-wsgi-errors");
    assert_eq!(r.status, 200);
    s.expect_log("hello-from-wsgi-errors", Duration::from_secs(5));
    // gunicorn's default format: `%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s ...`
    s.expect_log(
        "\"GET /logged?y=1&log=hello-from-wsgi-errors HTTP/1.1\" 200",
        Duration::from_secs(5),
    );
    let line = s
        .stderr()
        .lines()
        .find(|l| l.contains("GET /logged"))
        .unwrap_or_default()
        .to_string();
    assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
}

#[test]
fn no_access_log_writes_no_access_lines() {
    let s = Server::start("echo_app:app", &["--no-access-log"]);
    let mut c = s.connect();
    assert_eq!(c.get("/first-request").status, 200);
    // Same connection, so the first request's log line (if any) was written
    // before this one started.
    assert_eq!(c.get("/second?log=second-request-marker").status, 200);
    s.expect_log("second-request-marker", Duration::from_secs(5));
    assert!(!s.stderr().contains("/first-request"), "{}", s.stderr());
}

/// The environ template carries a placeholder for every key a request sets,
/// and briefly held spare keys to size its table: none of that may reach
/// the app.
#[test]
fn environ_holds_no_placeholder_or_spare_key() {
    let s = Server::start("echo_app:app", &[]);
    let kv = echo(&s, b"GET /p HTTP/1.1\r\nHost: h:9\r\nConnection: close\r\n\r\n");
    let stray: Vec<_> = kv.0.iter().filter(|(k, _)| k.starts_with("zibai")).collect();
    assert!(stray.is_empty(), "{stray:?}");
    for key in [
        "REQUEST_METHOD",
        "REQUEST_URI",
        "RAW_URI",
        "PATH_INFO",
        "SERVER_PROTOCOL",
        "REMOTE_ADDR",
        "REMOTE_PORT",
        "SERVER_NAME",
        "SERVER_PORT",
    ] {
        assert!(!kv.at(key).is_empty(), "{key} left as its placeholder");
    }
    assert_eq!(kv.at("QUERY_STRING"), "");
    assert_eq!(kv.at("PATH_INFO"), "/p");
}
