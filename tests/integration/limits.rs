//! The size limits (414, 431, 413) at and just past their boundaries, and
//! 505 for versions we do not speak.

use std::time::Duration;

use crate::util::Server;

/// Sends `raw` and returns the status; when it is an error status, the
/// connection must then be closed.
fn status_of(s: &Server, raw: &[u8]) -> u16 {
    let mut c = s.connect();
    c.send(raw);
    let r = c.read_response(false).unwrap_or_else(|e| panic!("no response: {e}"));
    if r.status >= 400 {
        assert_eq!(r.header("connection"), Some("close"), "{r:?}");
        c.expect_closed(Duration::from_secs(5));
    }
    r.status
}

fn get_with_target(target: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").into_bytes()
}

#[test]
fn request_line_over_limit_is_414() {
    let s = Server::start("echo_app:app", &["--limit-request-line", "100"]);
    // "GET " + target + " HTTP/1.1" is 13 bytes plus the target.
    let at_limit = format!("/{}", "a".repeat(86));
    assert_eq!(format!("GET {at_limit} HTTP/1.1").len(), 100);
    assert_eq!(status_of(&s, &get_with_target(&at_limit)), 200);
    let over = format!("/{}", "a".repeat(87));
    assert_eq!(status_of(&s, &get_with_target(&over)), 414);
}

#[test]
fn default_request_line_limit_is_414_for_a_huge_target() {
    let s = Server::start("echo_app:app", &[]);
    let over = format!("/{}", "a".repeat(9000));
    assert_eq!(status_of(&s, &get_with_target(&over)), 414);
}

fn with_headers(n: usize) -> Vec<u8> {
    with_headers_of(n, 1)
}

/// A GET with `n` header fields, all but the first with `len`-byte values.
fn with_headers_of(n: usize, len: usize) -> Vec<u8> {
    let mut raw = String::from("GET / HTTP/1.1\r\nConnection: close\r\n");
    for i in 1..n {
        raw.push_str(&format!("X-H{i}: {}\r\n", "v".repeat(len)));
    }
    raw.push_str("\r\n");
    raw.into_bytes()
}

#[test]
fn too_many_header_fields_is_431() {
    let s = Server::start("echo_app:app", &["--limit-request-fields", "5"]);
    assert_eq!(status_of(&s, &with_headers(5)), 200);
    assert_eq!(status_of(&s, &with_headers(6)), 431);
}

#[test]
fn header_field_over_size_is_431() {
    let s = Server::start("echo_app:app", &["--limit-request-field-size", "64"]);
    let ok = format!(
        "GET / HTTP/1.1\r\nConnection: close\r\nX-Long: {}\r\n\r\n",
        "v".repeat(40)
    );
    assert_eq!(status_of(&s, ok.as_bytes()), 200);
    let big = format!(
        "GET / HTTP/1.1\r\nConnection: close\r\nX-Long: {}\r\n\r\n",
        "v".repeat(100)
    );
    assert_eq!(status_of(&s, big.as_bytes()), 431);
}

#[test]
fn head_over_size_is_431() {
    let s = Server::start("echo_app:app", &["--limit-request-head-size", "1024"]);
    let small = with_headers_of(10, 50);
    assert!(small.len() < 1024);
    assert_eq!(status_of(&s, &small), 200);
    // 10 fields of ~200 bytes: ~2 KiB of head, every field within its limits.
    let big = with_headers_of(10, 200);
    assert!(big.len() > 1024);
    assert_eq!(status_of(&s, &big), 431);
}

#[test]
fn h11_max_incomplete_event_size_alias_limits_the_head() {
    let s = Server::start("echo_app:app", &["--h11-max-incomplete-event-size", "1024"]);
    assert_eq!(status_of(&s, &with_headers_of(10, 50)), 200);
    assert_eq!(status_of(&s, &with_headers_of(10, 200)), 431);
}

#[test]
fn head_limit_applies_before_the_head_is_complete() {
    // A head that never ends must be refused once it is too large, not
    // buffered forever.
    let s = Server::start("echo_app:app", &["--limit-request-head-size", "1024"]);
    let mut c = s.connect();
    let mut raw = String::from("GET / HTTP/1.1\r\n");
    for i in 0..20 {
        raw.push_str(&format!("X-H{i}: {}\r\n", "v".repeat(100)));
    }
    c.send(raw.as_bytes());
    let r = c.read_response(false).unwrap();
    assert_eq!(r.status, 431);
}

#[test]
fn content_length_over_max_body_size_is_413() {
    let s = Server::start("echo_app:app", &["--max-body-size", "10"]);
    let ok = b"POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 10\r\n\r\n0123456789";
    assert_eq!(status_of(&s, ok), 200);
    let big = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n01234567890";
    assert_eq!(status_of(&s, big), 413);
}

#[test]
fn chunked_body_over_max_body_size_is_413() {
    let s = Server::start("echo_app:app", &["--max-body-size", "10"]);
    let ok = b"POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n01234\r\n5\r\n56789\r\n0\r\n\r\n";
    assert_eq!(status_of(&s, ok), 200);
    let big = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n01234\r\n6\r\n567890\r\n0\r\n\r\n";
    assert_eq!(status_of(&s, big), 413);
}

#[test]
fn http_2_0_and_1_2_are_505() {
    let s = Server::start("echo_app:app", &[]);
    assert_eq!(status_of(&s, b"GET / HTTP/2.0\r\nHost: x\r\n\r\n"), 505);
    assert_eq!(status_of(&s, b"GET / HTTP/1.2\r\nHost: x\r\n\r\n"), 505);
    assert_eq!(status_of(&s, b"GET / HTTP/0.9\r\nHost: x\r\n\r\n"), 505);
    // Not a version at all is a 400.
    assert_eq!(status_of(&s, b"GET / HTTX/1.1\r\nHost: x\r\n\r\n"), 400);
}
