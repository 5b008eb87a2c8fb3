//! Apps that get WSGI wrong (errors.py) and apps checked by
//! wsgiref.validate (validated.py). An error before the response head went
//! out is a 500 with the traceback in stderr; after it, the connection is
//! closed. Either way the server keeps serving.

use std::time::Duration;

use crate::util::{Ending, Server};

const LOG_WAIT: Duration = Duration::from_secs(5);

/// GET `path` must be a 500 with `Connection: close`, `needle` must show up
/// in stderr, and the server must still serve /ok.
fn is_500(s: &Server, path: &str, needle: &str) {
    let errors = s.log_count("[ERROR]");
    let mut c = s.connect();
    c.send(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
    let r = c
        .read_response(false)
        .unwrap_or_else(|e| panic!("{path}: no response: {e}"));
    assert_eq!(r.status, 500, "{path}: {r:?}");
    assert_eq!(r.header("connection"), Some("close"), "{path}: {r:?}");
    c.expect_closed(LOG_WAIT);
    s.expect_log(needle, LOG_WAIT);
    s.expect_log_count_above("[ERROR]", errors, LOG_WAIT);
    assert_eq!(s.get("/ok").text(), "ok", "after {path}");
}

#[test]
fn exception_before_start_response_is_500_with_traceback() {
    let s = Server::start("errors:app", &[]);
    is_500(&s, "/before", "RuntimeError: boom-before-start-response");
    s.expect_log("Traceback (most recent call last)", LOG_WAIT);
    // The request that failed is named.
    s.expect_log("/before", LOG_WAIT);
}

#[test]
fn exception_after_start_response_before_body_is_500() {
    let s = Server::start("errors:app", &[]);
    is_500(&s, "/after-start", "RuntimeError: boom-after-start-response");
}

/// The head goes out with the first non-empty chunk: after an empty one a
/// failure can still become a 500.
#[test]
fn exception_after_an_empty_chunk_is_still_500() {
    let s = Server::start("errors:app", &[]);
    is_500(&s, "/empty-then-raise", "RuntimeError: boom-after-an-empty-chunk");
}

/// A HEAD request whose app fails gets the 500's head and no body: the
/// bytes after the head are nothing but the connection's end (they were
/// "500 Internal Server Error\n"). The same for a request the server
/// refuses itself (here a header line without a colon).
#[test]
fn a_failed_head_request_gets_no_body() {
    let s = Server::start("errors:app", &[]);
    for (raw, status) in [
        (&b"HEAD /before HTTP/1.1\r\nHost: x\r\n\r\n"[..], 500),
        (&b"HEAD /ok HTTP/1.1\r\nHost: x\r\nno colon\r\n\r\n"[..], 400),
    ] {
        let mut c = s.connect();
        c.send(raw);
        let r = c.read_response(true).expect("an answer");
        assert_eq!(r.status, status, "{r:?}");
        assert_eq!(c.read_to_end(LOG_WAIT), Ending::Eof(Vec::new()), "{status}");
    }
    assert_eq!(s.get("/ok").text(), "ok");
}

#[test]
fn exception_mid_stream_closes_the_connection() {
    let s = Server::start("errors:app", &[]);
    let mut c = s.connect();
    c.send(b"GET /mid HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = c.read_response(false).unwrap();
    // The head and first chunk were already out: the status cannot change,
    // so the body is cut short instead (no terminating chunk).
    assert_eq!(r.status, 200);
    assert!(!r.complete, "the body must not look complete: {r:?}");
    assert_eq!(r.body, b"first-chunk;");
    s.expect_log("RuntimeError: boom-mid-stream", LOG_WAIT);
    assert_eq!(s.get("/ok").text(), "ok");
}

#[test]
fn str_body_instead_of_bytes_is_500() {
    let s = Server::start("errors:app", &[]);
    is_500(&s, "/str", "TypeError");
}

#[test]
fn bad_status_is_500() {
    let s = Server::start("errors:app", &[]);
    is_500(&s, "/bad-status", "ValueError");
    is_500(&s, "/bad-status-word", "ValueError");
    // An informational status is not a response: its body would be taken
    // for the answer to the next request on the connection.
    is_500(&s, "/status-1xx", "expected three digits from 200 up");
}

/// PEP 3333: the status is a native string, latin-1 on the wire; one
/// outside latin-1 is the app's error. (It went out as UTF-8 before.)
#[test]
fn status_is_latin1_on_the_wire() {
    let s = Server::start("errors:app", &[]);
    let mut c = s.connect();
    c.send(b"GET /status-latin1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let raw = c.read_to_end(LOG_WAIT).bytes().to_vec();
    assert!(
        raw.starts_with(b"HTTP/1.1 200 \xc7a va\r\n"),
        "{:?}",
        String::from_utf8_lossy(&raw)
    );
    is_500(&s, "/status-not-latin1", "is not latin-1");
}

/// The app's Date and Server replace the server's: Date may appear once
/// (RFC 9110 6.6.1), and Werkzeug's send_file sets it.
#[test]
fn the_apps_date_and_server_replace_the_servers() {
    let s = Server::start("errors:app", &[]);
    let mut c = s.connect();
    c.send(b"GET /own-date-server HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let raw = String::from_utf8(c.read_to_end(LOG_WAIT).bytes().to_vec()).unwrap();
    let head = raw.split("\r\n\r\n").next().unwrap().to_ascii_lowercase();
    let dates: Vec<_> = head.lines().filter(|l| l.starts_with("date:")).collect();
    assert_eq!(dates, ["date: tue, 01 jan 2030 00:00:00 gmt"], "{raw}");
    let servers: Vec<_> = head.lines().filter(|l| l.starts_with("server:")).collect();
    assert_eq!(servers, ["server: app/1"], "{raw}");
    assert!(raw.ends_with("\r\n\r\nown"), "{raw}");
    // Without them, the server's own, once each.
    let r = s.get("/ok");
    assert_eq!(r.header("server"), Some("zibai"));
    assert!(r.header("date").is_some_and(|d| d.ends_with(" GMT")), "{r:?}");
}

/// A body the app made whole is as good as sent: start_response with
/// exc_info then re-raises (PEP 3333), and the whole body goes out. It
/// used to replace the head under the held chunk: `500 Oops` with
/// Content-Length 3 and `hel`.
#[test]
fn exc_info_after_a_whole_body_reraises() {
    let s = Server::start("errors:app", &[]);
    let mut c = s.connect();
    c.send(b"GET /exc-info-after-whole-body HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = c.read_response(false).unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "hello"), "{r:?}");
    c.expect_closed(LOG_WAIT);
    s.expect_log("too-late-for-exc-info", LOG_WAIT);
}

/// RFC 9110 15.3.6: a 205 has no content, and says its length is 0 (the
/// framing rules do not make it bodiless). The app's body went out.
#[test]
fn a_205_has_no_body_and_says_so() {
    let s = Server::start("errors:app", &[]);
    let mut c = s.connect();
    let r = c.request(b"GET /205-with-body HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(
        (r.status, r.header("content-length"), r.text().as_str()),
        (205, Some("0"), ""),
        "{r:?}"
    );
    // Nothing of the app's body is taken for the next response.
    assert_eq!(c.get("/ok").text(), "ok");
}

/// RFC 9110 8.6: no Content-Length on a 204, whatever the app says.
#[test]
fn no_content_length_on_a_204() {
    let s = Server::start("errors:app", &[]);
    let mut c = s.connect();
    let r = c.request(b"GET /204-with-length HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status, 204);
    assert_eq!(r.header("content-length"), None, "{r:?}");
    // Nor to HEAD (the server's own count of the empty body went out).
    let r = c.request(b"HEAD /204-with-length HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!((r.status, r.header("content-length")), (204, None), "{r:?}");
    // The connection carries on.
    assert_eq!(c.get("/ok").text(), "ok");
}

/// An app that fails after its body is whole (cleanup after the last
/// yield) still gets its body out: the chunk that completed the
/// Content-Length was held for the last write and lost, or with one chunk
/// the response became a 500.
#[test]
fn a_failure_after_the_last_chunk_still_sends_the_body() {
    let s = Server::start("errors:app", &[]);
    for (path, body, needle) in [
        ("/raise-after-last", "abcdef", "boom-after-the-last-chunk"),
        ("/raise-after-only", "abc", "boom-after-the-only-chunk"),
    ] {
        let mut c = s.connect();
        c.send(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
        let r = c
            .read_response(false)
            .unwrap_or_else(|e| panic!("{path}: no response: {e}"));
        assert_eq!((r.status, r.text().as_str()), (200, body), "{path}");
        // The error is logged, and the connection does not go on.
        c.expect_closed(LOG_WAIT);
        s.expect_log(needle, LOG_WAIT);
    }
}

#[test]
fn crlf_in_header_value_is_500_and_not_injected() {
    let s = Server::start("errors:app", &[]);
    let mut c = s.connect();
    c.send(b"GET /crlf HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = c.read_response(false).unwrap();
    assert_eq!(r.status, 500, "{r:?}");
    assert_eq!(r.header("x-injected"), None);
    assert_eq!(r.header("x-bad"), None);
    s.expect_log("/crlf", LOG_WAIT);
    assert_eq!(s.get("/ok").text(), "ok");
}

#[test]
fn start_response_twice_without_exc_info_is_500() {
    let s = Server::start("errors:app", &[]);
    is_500(&s, "/twice", "start_response called a second time");
}

#[test]
fn returning_none_is_500() {
    let s = Server::start("errors:app", &[]);
    is_500(&s, "/none", "TypeError");
}

#[test]
fn exc_info_before_the_head_replaces_the_response() {
    let s = Server::start("errors:app", &[]);
    let r = s.get("/exc-info");
    assert_eq!((r.status, r.reason.as_str()), (500, "Oops"), "{r:?}");
    assert_eq!(r.text(), "replaced");
}

#[test]
fn exc_info_after_the_head_reraises_and_closes() {
    let s = Server::start("errors:app", &[]);
    let mut c = s.connect();
    c.send(b"GET /exc-info-late HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = c.read_response(false).unwrap();
    assert_eq!(r.status, 200);
    assert!(!r.complete, "{r:?}");
    assert_eq!(r.body, b"already-sent;");
    s.expect_log("ValueError: reraised-by-exc-info", LOG_WAIT);
    assert_eq!(s.get("/ok").text(), "ok");
}

#[test]
fn close_is_called_when_the_iterable_raises() {
    let s = Server::start("stream:app", &[]);
    let id = format!("raise-{}", crate::util::unique());
    let mut c = s.connect();
    c.send(format!("GET /raise-mid?id={id} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
    let r = c.read_response(false).unwrap();
    assert_eq!(r.body, b"first;");
    assert!(!r.complete);
    assert!(
        s.poll_until(&format!("/closed?id={id}"), "yes", LOG_WAIT),
        "close() not called"
    );
}

#[test]
fn many_failures_do_not_break_the_server() {
    let s = Server::start("errors:app", &["-w", "2"]);
    for _ in 0..20 {
        for path in ["/before", "/str", "/twice", "/crlf"] {
            assert_eq!(s.get(path).status, 500, "{path}");
        }
        let mut c = s.connect();
        c.send(b"GET /mid HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(matches!(c.read_to_end(LOG_WAIT), Ending::Eof(_) | Ending::Reset(_)));
    }
    assert_eq!(s.get("/ok").text(), "ok");
}

#[test]
fn validated_app_sees_a_conforming_server() {
    let s = Server::start("validated:application", &[]);
    let mut c = s.connect();
    assert_eq!(c.get("/").text(), "index");
    assert_eq!(c.get("/gen").text(), "part-0;part-1;part-2;");
    assert_eq!(c.get("/query?x=1&y=%20").text(), "x=1&y=%20");
    let r = c.request(
        b"POST /form HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n\r\nhello there",
    );
    assert_eq!((r.status, r.text().as_str()), (200, "HELLO THERE"));
    let r = c.request(b"POST /lines HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nfirst\n\r\n7\r\nsecond\n\r\n5\r\nthird\r\n0\r\n\r\n");
    assert_eq!((r.status, r.text().as_str()), (200, "3|first"));
    assert_eq!(c.get("/write").text(), "written;returned");
    let r = c.request(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(c.get("/empty").status, 204);
    assert_eq!(c.get("/log").text(), "logged");
    s.expect_log("validated-marker", LOG_WAIT);
    let log = s.stderr();
    for bad in [
        "AssertionError",
        "WSGIWarning",
        "Iterator garbage collected",
        "Traceback",
    ] {
        assert!(!log.contains(bad), "{bad:?} in stderr:\n{log}");
    }
}

#[test]
fn validator_is_really_checking() {
    // The control for the test above: a deliberate violation is caught.
    let s = Server::start("validated:application", &[]);
    assert_eq!(s.get("/bad").status, 500);
    s.expect_log("AssertionError", LOG_WAIT);
}
