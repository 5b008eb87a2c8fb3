//! Connection reuse and message framing, both directions: keep-alive,
//! HTTP/1.0, pipelining, HEAD, 204/304, chunked and close-delimited
//! responses, wrong app Content-Lengths, Expect: 100-continue, and close()
//! of the response iterable.

use std::time::{Duration, Instant};

use crate::util::{Client, Ending, Server, wait_until};

const CLOSE_WAIT: Duration = Duration::from_secs(5);

#[test]
fn keep_alive_serves_two_requests_on_one_connection() {
    let s = Server::start("echo_app:app", &[]);
    let mut c = s.connect();
    let a = c.get("/first");
    let b = c.get("/second");
    assert_eq!((a.status, b.status), (200, 200));
    assert_eq!(a.kv().at("PATH_INFO"), "/first");
    assert_eq!(b.kv().at("PATH_INFO"), "/second");
    // Same connection: same client port.
    assert_eq!(a.kv().at("REMOTE_PORT"), b.kv().at("REMOTE_PORT"));
    assert_eq!(a.header("connection"), None);
}

#[test]
fn responses_carry_date_and_server_headers() {
    let s = Server::start("echo_app:app", &[]);
    let r = s.get("/");
    assert_eq!(r.version, "HTTP/1.1");
    assert_eq!(r.header("server"), Some("zibai"));
    let date = r.header("date").expect("a Date header");
    // IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT".
    assert_eq!(date.len(), 29, "{date:?}");
    assert!(date.ends_with(" GMT"), "{date:?}");
}

#[test]
fn http10_closes_by_default() {
    let s = Server::start("echo_app:app", &[]);
    let mut c = s.connect();
    let r = c.request(b"GET /one HTTP/1.0\r\nHost: x\r\n\r\n");
    assert_eq!(r.status, 200);
    assert_ne!(
        r.header("connection").map(str::to_ascii_lowercase).as_deref(),
        Some("keep-alive")
    );
    c.expect_closed(CLOSE_WAIT);
}

#[test]
fn http10_keep_alive_when_asked() {
    let s = Server::start("echo_app:app", &[]);
    let mut c = s.connect();
    let req = b"GET /ka HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n";
    let a = c.request(req);
    assert_eq!(a.status, 200);
    assert_eq!(
        a.header("connection").map(str::to_ascii_lowercase).as_deref(),
        Some("keep-alive")
    );
    let b = c.request(req);
    assert_eq!(b.status, 200);
    assert_eq!(a.kv().at("REMOTE_PORT"), b.kv().at("REMOTE_PORT"));
    assert_eq!(b.kv().at("SERVER_PROTOCOL"), "HTTP/1.0");
}

#[test]
fn http11_connection_close_is_honoured() {
    let s = Server::start("echo_app:app", &[]);
    let mut c = s.connect();
    let r = c.request(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("connection"), Some("close"));
    c.expect_closed(CLOSE_WAIT);
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let s = Server::start("echo_app:app", &[]);
    let mut c = s.connect();
    // One write: a GET, a POST with a body, a GET.
    c.send(
        b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n\
          POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
          GET /c?q=1 HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    let a = c.response().kv();
    let b = c.response().kv();
    let cc = c.response().kv();
    assert_eq!(a.at("PATH_INFO"), "/a");
    assert_eq!((b.at("PATH_INFO"), b.at("_body")), ("/b", "hello"));
    assert_eq!((cc.at("PATH_INFO"), cc.at("QUERY_STRING")), ("/c", "q=1"));
    // And the connection is still good afterwards.
    assert_eq!(c.get("/d").kv().at("PATH_INFO"), "/d");
}

#[test]
fn head_has_no_body_and_keeps_the_connection_in_sync() {
    let s = Server::start("stream:app", &[]);
    let mut c = s.connect();
    let r = c.request(b"HEAD /fixed HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("5"));
    // A generator body under HEAD: no body bytes either.
    let r = c.request(b"HEAD /gen?n=3 HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status, 200);
    // If any body byte had been sent, this response would be garbled.
    let r = c.get("/fixed");
    assert_eq!(r.text(), "fixed");
}

/// Regression (found by review): a HEAD response's Content-Length was
/// taken from the body the app returned, and Werkzeug returns none for
/// HEAD, so a streamed Flask route said `Content-Length: 0` to HEAD while
/// its GET had a body (download managers and link checkers size files by
/// HEAD). An empty body tells nothing: no length is said.
#[test]
fn head_with_no_body_from_the_app_claims_no_length() {
    let s = Server::start("stream:app", &[]);
    let mut c = s.connect();
    let r = c.request(b"HEAD /head-empty HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), None, "{r:?}");
    assert_eq!(c.get("/head-empty").text(), "chunk-0;chunk-1;chunk-2;");
}

/// Regression (found by review): a chunk completing the Content-Length
/// was held until the generator ended, so code after the app's last yield
/// (here waiting for another request) delayed a whole response, against
/// PEP 3333's "must not delay the transmission of any block".
#[test]
fn a_complete_body_is_not_held_for_code_after_the_last_yield() {
    let s = Server::start("stream:app", &["-w", "2"]);
    let id = format!("done-{}", crate::util::unique());
    let mut c = s.connect();
    c.set_read_timeout(Duration::from_secs(5));
    c.send(format!("GET /done-then-gated?id={id} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
    let r = c.read_response(false);
    assert_eq!(s.get(&format!("/release?id={id}")).text(), "released");
    let r = r.expect("the complete response waited for the generator to end");
    assert_eq!((r.status, r.text().as_str()), (200, "whole;"));
}

/// Regression: the chunk completing the Content-Length of a body the
/// app's generator produces inside a framework's iterator (Werkzeug's
/// ClosingIterator around stream_with_context) was held until the
/// iteration ended, and every whole body until the iterable's close()
/// returned (Django runs its request_finished handlers there): code after
/// the last yield, or a slow close(), delayed the whole response. Now
/// another thread writes it: another app thread (the watcher or the
/// listener, whichever the pool has then), or the timer thread when the
/// only thread is the one held up (1).
#[test]
fn a_whole_response_is_not_held_while_the_app_finishes() {
    for threads in ["1", "2", "4"] {
        for path in ["/wrapped-done-then-gated", "/close-gated"] {
            let s = Server::start("stream:app", &["-w", threads]);
            let id = format!("held-{}", crate::util::unique());
            let mut c = s.connect();
            c.set_read_timeout(Duration::from_secs(5));
            c.send(format!("GET {path}?id={id} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
            let r = c.read_response(false);
            if threads == "1" {
                // Nothing else can serve /release; the server is killed at the end.
                let r = r.unwrap_or_else(|e| panic!("{path}, 1 thread: {e}"));
                assert_eq!((r.status, r.text().as_str()), (200, "whole;"), "{path}");
                continue;
            }
            assert_eq!(s.get(&format!("/release?id={id}")).text(), "released");
            let r = r.unwrap_or_else(|e| panic!("{path}, {threads} threads: the response waited for the app: {e}"));
            assert_eq!((r.status, r.text().as_str()), (200, "whole;"), "{path}");
            assert_eq!(r.header("connection"), None, "{path}: {r:?}");
            // The connection carries the next request as usual.
            assert_eq!(c.get("/fixed").text(), "fixed", "{path}, {threads} threads");
        }
    }
}

/// PEP 3333: a server "should ... raise an error if the application
/// tries to write() past" its Content-Length. Regression: a write() from
/// code after the last yield of a framework-wrapped body took the room of
/// the chunk that had completed the length, so the client got `oops1`
/// instead of `12345`.
#[test]
fn write_past_the_content_length_raises() {
    let s = Server::start("stream:app", &["-w", "2"]);
    let id = format!("past-{}", crate::util::unique());
    let mut c = s.connect();
    let r = c.get(&format!("/write-past-cl?id={id}"));
    assert_eq!((r.status, r.text().as_str()), (200, "12345"));
    assert_eq!(c.get(&format!("/closed?id={id}:raised")).text(), "yes");
    // Writing nothing is not writing past it.
    assert_eq!(c.get(&format!("/closed?id={id}:empty-ok")).text(), "yes");
}

/// An endless generator under a Content-Length gets its length's worth,
/// then the server stops iterating: it does not hold the thread forever
/// (nor log a line per block). A guard for the change above, which sends
/// such a generator's completing chunk at once instead of holding it.
#[test]
fn an_endless_generator_under_a_content_length_is_cut_at_it() {
    let s = Server::start("stream:app", &["-w", "1"]);
    let mut c = s.connect();
    c.set_read_timeout(Duration::from_secs(5));
    let r = c.get("/endless-gen-cl");
    assert_eq!((r.status, r.text().as_str()), (200, "12345"));
    // The only app thread is free again, and the connection as good as
    // its head said.
    assert_eq!(c.get("/fixed").text(), "fixed");
    // (Captured by a reader thread: waited for, as below.)
    let needle = "the app sent more than its Content-Length";
    s.expect_log_count_above(needle, 0, Duration::from_secs(5));
    assert_eq!(s.log_count(needle), 1, "{}", s.stderr());
}

#[test]
fn status_204_and_304_have_no_body() {
    let s = Server::start("stream:app", &[]);
    let mut c = s.connect();
    for code in [204, 304] {
        let r = c.get(&format!("/status?code={code}"));
        assert_eq!(r.status, code);
        assert!(r.body.is_empty());
        assert_eq!(r.header("transfer-encoding"), None, "{code}: {r:?}");
        // The app's body must not leak into the next response.
        let next = c.get("/fixed");
        assert_eq!((next.status, next.text().as_str()), (200, "fixed"), "after {code}");
    }
}

#[test]
fn generator_body_is_chunked_on_http11() {
    let s = Server::start("stream:app", &[]);
    let mut c = s.connect();
    let r = c.get("/gen?n=3");
    assert!(r.is_chunked(), "{r:?}");
    assert_eq!(r.header("content-length"), None);
    assert_eq!(r.text(), "chunk-0;chunk-1;chunk-2;");
    // The terminating chunk was there: the connection is reusable.
    assert_eq!(c.get("/fixed").text(), "fixed");
}

#[test]
fn generator_body_with_its_content_length() {
    let s = Server::start("stream:app", &[]);
    let mut c = s.connect();
    for n in [1, 3] {
        let r = c.get(&format!("/gen-cl?n={n}"));
        assert!(!r.is_chunked(), "{r:?}");
        let want: String = (0..n).map(|i| format!("chunk-{i};")).collect();
        assert_eq!(r.header("content-length"), Some(want.len().to_string().as_str()));
        assert_eq!(r.text(), want);
    }
    // Every byte was accounted for: the connection is reusable.
    assert_eq!(c.get("/fixed").text(), "fixed");
}

/// A chunk goes out while the generator waits for its next one, with or
/// without a Content-Length: only the chunk that completes a declared
/// length may wait for the end of the body.
#[test]
fn a_stream_is_not_held_while_the_app_waits() {
    let s = Server::start("stream:app", &[]);
    for cl in ["", "&cl=1"] {
        let id = format!("gate-{}", crate::util::unique());
        let mut c = s.connect();
        c.send(format!("GET /gated?id={id}{cl} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
        let mut got = Vec::new();
        read_until(&mut c, &mut got, b"first;", &format!("first chunk held back ({cl:?})"));
        assert!(!got.windows(7).any(|w| w == b"second;"));
        assert_eq!(s.get(&format!("/release?id={id}")).text(), "released");
        read_until(
            &mut c,
            &mut got,
            b"second;",
            &format!("second chunk never came ({cl:?})"),
        );
    }
}

/// Reads from `c` into `got` until it holds `want`, for at most 5 s;
/// panics with `what` at the deadline or if the connection ends first.
fn read_until(c: &mut Client, got: &mut Vec<u8>, want: &[u8], what: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !got.windows(want.len()).any(|w| w == want) {
        assert!(Instant::now() < deadline, "{what}: {:?}", String::from_utf8_lossy(got));
        match c.read_to_end(Duration::from_millis(100)) {
            Ending::Open(b) => got.extend_from_slice(&b),
            // The response may close the connection once it is whole.
            Ending::Eof(b) if [&got[..], &b].concat().windows(want.len()).any(|w| w == want) => {
                got.extend_from_slice(&b)
            }
            other => panic!("{what}: the stream ended: {other:?}"),
        }
    }
}

#[test]
fn empty_generator_body_is_a_valid_chunked_body() {
    let s = Server::start("stream:app", &[]);
    let mut c = s.connect();
    let r = c.get("/gen?n=0");
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    assert_eq!(c.get("/fixed").text(), "fixed");
}

#[test]
fn generator_body_is_close_delimited_on_http10() {
    let s = Server::start("stream:app", &[]);
    let mut c = s.connect();
    c.send(b"GET /gen?n=3 HTTP/1.0\r\nHost: x\r\n\r\n");
    let r = c.response();
    assert!(!r.is_chunked(), "{r:?}");
    assert_eq!(r.header("content-length"), None);
    assert_eq!(r.text(), "chunk-0;chunk-1;chunk-2;");
}

#[test]
fn list_body_gets_a_content_length() {
    // big.py's /small returns [b"small"] without a Content-Length.
    let s = Server::start("big:app", &[]);
    let r = s.get("/small");
    assert_eq!(r.header("content-length"), Some("5"), "{r:?}");
    assert!(!r.is_chunked());
    assert_eq!(r.text(), "small");
}

#[test]
fn write_callable_then_returned_body() {
    let s = Server::start("stream:app", &[]);
    let mut c = s.connect();
    let r = c.get("/write");
    assert_eq!(r.text(), "written-1;written-2;returned");
    assert_eq!(c.get("/fixed").text(), "fixed");
}

#[test]
fn app_content_length_too_short_closes_the_connection() {
    let s = Server::start("stream:app", &[]);
    let mut c = s.connect();
    c.send(b"GET /short HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = c.read_response(false).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("10"));
    // Only 5 bytes came, then the server closed: the body is incomplete.
    assert!(!r.complete, "{r:?}");
    assert_eq!(r.body, b"12345");
    // No desync: a new connection is served normally.
    assert_eq!(s.get("/fixed").text(), "fixed");
    s.expect_log("promised a Content-Length of 10", Duration::from_secs(2));
}

/// Bytes past the app's Content-Length are dropped (and logged); what
/// went out is what the head said, so the connection carries the next
/// request, as gunicorn's does. Regression: it was closed, after a head
/// that had said keep-alive when the excess came after the head was
/// made (a list's second chunk; an iterator's next block), which loses
/// the requests a client pipelined behind it.
#[test]
fn app_content_length_too_long_is_truncated_and_the_connection_kept() {
    let s = Server::start("stream:app", &[]);
    // A list body, then the same bytes from an iterator and from write().
    for path in ["/long", "/long-gen", "/long-write"] {
        let mut c = s.connect();
        c.send(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\nGET /fixed HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
        let r = c.read_response(false).unwrap();
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.body, b"12345", "{path}");
        assert!(r.complete, "{path}");
        assert_eq!(r.header("connection"), None, "{path}: {r:?}");
        // Nothing of the extra bytes: the pipelined request's response
        // comes next.
        let next = c.read_response(false).unwrap();
        assert_eq!(next.text(), "fixed", "{path}");
    }
    // Once per response (write() past it logged each call).
    let needle = "more than its Content-Length of 5";
    s.expect_log_count_above(needle, 2, Duration::from_secs(5));
    assert_eq!(s.log_count(needle), 3, "{}", s.stderr());
}

#[test]
fn expect_100_continue_is_answered_before_the_body() {
    let s = Server::start("echo_app:app", &[]);
    let mut c = s.connect();
    c.send(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n");
    // The body is not sent until the server asks for it.
    let interim = c.read_response(false).unwrap();
    assert_eq!(
        (interim.status, interim.reason.as_str()),
        (100, "Continue"),
        "{interim:?}"
    );
    c.send(b"hello world");
    let r = c.response();
    assert_eq!(r.status, 200);
    assert_eq!(r.kv().at("_body"), "hello world");
    // The connection is still usable.
    assert_eq!(c.get("/after").kv().at("PATH_INFO"), "/after");
}

#[test]
fn expect_100_continue_with_the_body_sent_at_once_keeps_the_connection_in_sync() {
    // Clients may send the body without waiting for the 100.
    let s = Server::start("echo_app:app", &[]);
    let mut c = s.connect();
    c.send(b"POST /eager HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\nhello");
    let r = c.response();
    assert_eq!(r.kv().at("_body"), "hello");
    assert_eq!(c.get("/after").kv().at("PATH_INFO"), "/after");
}

#[test]
fn expect_100_continue_is_not_sent_when_the_app_ignores_the_body() {
    let s = Server::start("echo_app:app", &[]);
    let mut c = s.connect();
    c.send(b"POST /x?read=none HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n");
    let r = c.read_response(false).unwrap();
    assert_eq!(r.status, 200, "the final response comes without a 100 first: {r:?}");
    assert_eq!(r.kv().at("_body"), "");
    // The client may send its body now or never: the connection cannot
    // carry another request, and the head says so (it used to close
    // without a word).
    assert_eq!(r.header("connection"), Some("close"), "{r:?}");
    assert_eq!(c.read_to_end(Duration::from_secs(5)), Ending::Eof(Vec::new()));
}

/// The same with a streamed response (chunked, head sent with the first
/// chunk): it closed without saying so.
#[test]
fn expect_100_continue_unread_body_and_a_streamed_response_say_close() {
    let s = Server::start("stream:app", &[]);
    let mut c = s.connect();
    c.send(b"POST /gen?n=3 HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n");
    let r = c.read_response(false).unwrap();
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "chunk-0;chunk-1;chunk-2;"),
        "{r:?}"
    );
    assert_eq!(r.header("connection"), Some("close"), "{r:?}");
    assert_eq!(c.read_to_end(Duration::from_secs(5)), Ending::Eof(Vec::new()));
}

/// The app starts its response (write()) before it reads the body: the
/// 100 is moot then. Sent anyway, it went out after the head (inside the
/// body) when the head was already written, or before it when the head was
/// still queued for the flusher (regression).
#[test]
fn expect_100_continue_is_not_sent_after_the_response_started() {
    let s = Server::start("stream:app", &[]);
    let mut c = s.connect();
    c.send(b"POST /write-then-read HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
    let mut got = Vec::new();
    read_until(&mut c, &mut got, b"early;", "no response");
    // The app now waits for the body, which the client sends once it has
    // seen the final response begin.
    c.send(b"hello");
    read_until(&mut c, &mut got, b"read:hello", "the body never reached the app");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200 "), "{text:?}");
    assert!(!text.contains("100 Continue"), "a 100 inside the response: {text:?}");
    // The head went out before the client knew whether to send its body.
    assert!(text.contains("\r\nConnection: close\r\n"), "{text:?}");
}

#[test]
fn expect_other_than_100_continue_is_417() {
    let s = Server::start("echo_app:app", &[]);
    let mut c = s.connect();
    let r = c.request(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: something-else\r\n\r\nabc");
    assert_eq!(r.status, 417);
    assert_eq!(s.get("/ok").status, 200);
}

#[test]
fn close_is_called_after_a_normal_generator_and_a_list() {
    let s = Server::start("stream:app", &[]);
    let id = format!("normal-{}", crate::util::unique());
    assert_eq!(s.get(&format!("/tracked?id={id}")).text(), "abc");
    assert!(
        s.poll_until(&format!("/closed?id={id}"), "yes", Duration::from_secs(5)),
        "close() never called"
    );
    let id = format!("list-{}", crate::util::unique());
    assert_eq!(s.get(&format!("/tracked-list?id={id}")).text(), "listed");
    assert!(
        s.poll_until(&format!("/closed?id={id}"), "yes", Duration::from_secs(5)),
        "close() of a list never called"
    );
    // A sanity check of the tracking itself.
    assert_eq!(s.get("/closed?id=never-used").text(), "no");
}

#[test]
fn close_is_called_when_the_client_disconnects_mid_stream() {
    let s = Server::start("stream:app", &[]);
    let id = format!("gone-{}", crate::util::unique());
    {
        let mut c = s.connect();
        c.send(format!("GET /forever?id={id} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
        let mut got = 0;
        let deadline = Instant::now() + Duration::from_secs(5);
        while got < 200_000 {
            assert!(Instant::now() < deadline, "the stream did not start");
            match c.read_to_end(Duration::from_millis(200)) {
                Ending::Open(b) => got += b.len(),
                other => panic!("the stream ended: {:?}", other.bytes().len()),
            }
        }
        // Dropping the client closes the connection.
    }
    assert!(
        s.poll_until(&format!("/closed?id={id}"), "yes", Duration::from_secs(5)),
        "close() not called after the client went away"
    );
    assert_eq!(s.get("/fixed").text(), "fixed");
}

/// An endless body the server cannot send (HEAD; past the app's
/// Content-Length) is not iterated forever: it stopped failing nothing,
/// held its thread for good, and never called close(). Now it stops
/// asking for more and calls close().
#[test]
fn an_endless_body_that_cannot_go_out_is_not_iterated_forever() {
    let s = Server::start("stream:app", &["-w", "2"]);
    let mut c = s.connect();
    let r = c.request(b"HEAD /forever?id=endless-head HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status, 200);
    let mut c = s.connect();
    c.send(b"GET /forever?id=endless-cl&size=7&cl=10 HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = c.response();
    assert_eq!(r.text(), "zzzzzzzzzz");
    // Cut at its length, as its head said: the connection goes on.
    assert_eq!(c.get("/fixed").text(), "fixed");
    for id in ["endless-head", "endless-cl"] {
        assert!(
            wait_until(Duration::from_secs(5), || s.get(&format!("/closed?id={id}")).text()
                == "yes"),
            "close() of {id} was not called"
        );
    }
    // The server's stderr is captured by a reader thread: the line may not
    // be there yet (a run in CI read 0 while it was being written).
    let needle = "the app sent more than its Content-Length";
    s.expect_log_count_above(needle, 0, Duration::from_secs(5));
    assert_eq!(s.log_count(needle), 1, "{}", s.stderr());
}

/// write() from the iterable's close(), after the last piece was framed,
/// raises: its bytes could only go out of order (ahead of what the
/// response still had queued) or be dropped while it said they went.
#[test]
fn write_after_the_body_is_complete_raises() {
    let s = Server::start("stream:app", &[]);
    let r = s.get("/write-in-close?id=late");
    assert_eq!(r.text(), "whole body");
    assert!(
        wait_until(Duration::from_secs(5), || s.get("/closed?id=late:raised").text()
            == "yes"),
        "write() in close() did not raise"
    );
}
