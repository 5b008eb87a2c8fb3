//! Signals and hooks: SIGTERM finishes in-flight requests and runs
//! before_graceful_exit then before_died; SIGINT exits at once (before_died
//! still runs).

use std::time::{Duration, Instant};

use crate::util::{Client, Ending, Server, describe_status};

pub fn hooks_args() -> [&'static str; 6] {
    [
        "--before-serve",
        "hooks:before_serve",
        "--before-graceful-exit",
        "hooks:before_graceful_exit",
        "--before-died",
        "hooks:before_died",
    ]
}

fn hooks_log(s: &Server) -> Vec<String> {
    std::fs::read_to_string(s.tmp().join("hooks.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Waits (up to 5 s) until before_graceful_exit has run, after before_serve.
fn wait_for_graceful_exit_hook(s: &Server) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while hooks_log(s).len() < 2 {
        assert!(
            Instant::now() < deadline,
            "before_graceful_exit did not run: {:?}",
            hooks_log(s)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Sends a slow request and returns once the app is running it.
fn in_flight(s: &Server, secs: f64, id: &str) -> Client {
    let mut c = s.connect();
    c.send(format!("GET /sleep?s={secs}&id={id} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
    s.expect_log(&format!("slow-start {id}"), Duration::from_secs(5));
    c
}

#[test]
fn before_serve_runs_before_serving() {
    let s = Server::start("slow:app", &hooks_args());
    // `Serving with` was printed, so before_serve has already run.
    assert_eq!(hooks_log(&s), ["before_serve"]);
    assert_eq!(s.get("/").text(), "fast");
}

#[test]
fn sigterm_finishes_the_in_flight_request_then_runs_hooks_in_order() {
    let mut s = Server::start("slow:app", &hooks_args());
    let mut slow = in_flight(&s, 1.0, "graceful");
    s.signal(libc::SIGTERM);
    // The hook runs once the server stopped accepting.
    wait_for_graceful_exit_hook(&s);
    // New connections are no longer served while the slow one finishes.
    let refused = std::net::TcpStream::connect_timeout(&s.addr(), Duration::from_secs(2))
        .map(|t| {
            let mut c = Client::from_stream(crate::util::Stream::Tcp(t));
            c.set_read_timeout(Duration::from_secs(3));
            let _ = c.try_send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
            c.read_response(false).is_err()
        })
        .unwrap_or(true);
    assert!(refused, "a new request was served after SIGTERM");
    let r = slow.response();
    assert_eq!((r.status, r.text().as_str()), (200, "slept graceful"));
    // It was the last request on that connection, and the response says so.
    assert_eq!(r.header("connection"), Some("close"), "{r:?}");
    slow.expect_closed(Duration::from_secs(5));
    let st = s.wait_exit(Duration::from_secs(5));
    assert_eq!(st.code(), Some(0), "{}", describe_status(&st));
    assert_eq!(hooks_log(&s), ["before_serve", "before_graceful_exit", "before_died"]);
}

#[test]
fn sigterm_closes_idle_keep_alive_connections_promptly() {
    let mut s = Server::start("slow:app", &["--graceful-exit-timeout", "30"]);
    let mut idle = s.connect();
    assert_eq!(idle.get("/").text(), "fast");
    let started = Instant::now();
    s.signal(libc::SIGTERM);
    let st = s.wait_exit(Duration::from_secs(5));
    assert!(st.success(), "{}", describe_status(&st));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    idle.expect_closed(Duration::from_secs(2));
}

/// Regression: a graceful stop closed idle keep-alive connections at once,
/// so a request sent on one as the stop began got no answer (the race that
/// cost 1-2 requests per max-requests recycle under keep-alive load).
#[test]
fn a_request_on_an_idle_keep_alive_connection_during_the_stop_is_answered() {
    let mut s = Server::start("slow:app", &hooks_args());
    let mut idle = s.connect();
    assert_eq!(idle.get("/").text(), "fast");
    s.signal(libc::SIGTERM);
    // The hook runs after the worker stopped accepting, right before it
    // deals with the connections it has.
    wait_for_graceful_exit_hook(&s);
    let r = idle
        .try_send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .and_then(|()| idle.read_response(false))
        .unwrap_or_else(|e| panic!("the idle connection was closed under its request: {e}"));
    assert_eq!((r.status, r.text().as_str()), (200, "fast"));
    assert_eq!(r.header("connection"), Some("close"), "{r:?}");
    idle.expect_closed(Duration::from_secs(2));
    let st = s.wait_exit(Duration::from_secs(5));
    assert_eq!(st.code(), Some(0), "{}", describe_status(&st));
}

/// Regression: a response whose head went out saying keep-alive before
/// the stop began was followed by a close, under the next request its
/// client could already be sending. The server keeps to what it said.
#[test]
fn a_response_that_promised_keep_alive_before_the_stop_is_kept_to_its_word() {
    let mut s = Server::start("slow:app", &[]);
    let mut c = s.connect();
    c.send(b"GET /stream?s=0.5&id=promise HTTP/1.1\r\nHost: x\r\n\r\n");
    // The head and the first part are out; the stop begins before the end.
    s.expect_log("stream-start promise", Duration::from_secs(5));
    s.signal(libc::SIGTERM);
    s.expect_log("Received SIGTERM", Duration::from_secs(5));
    let r = c.response();
    assert_eq!(r.text(), "part one, part two");
    assert_eq!(r.header("connection"), None, "the head went out before the stop: {r:?}");
    let next = c
        .try_send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .and_then(|()| c.read_response(false))
        .unwrap_or_else(|e| panic!("closed under the next request: {e}"));
    assert_eq!((next.status, next.text().as_str()), (200, "fast"));
    assert_eq!(next.header("connection"), Some("close"), "{next:?}");
    c.expect_closed(Duration::from_secs(2));
    let st = s.wait_exit(Duration::from_secs(5));
    assert_eq!(st.code(), Some(0), "{}", describe_status(&st));
}

/// Regression: during a graceful stop, a connection whose client was still
/// sending (here a body the app did not read) was closed without the
/// lingering close, so the kernel answered the rest of the upload with a
/// reset and the client reported that instead of its answer.
#[test]
fn an_upload_answered_during_the_stop_gets_its_answer() {
    let mut s = Server::start("slow:app", &[]);
    let mut c = s.connect();
    let body = vec![b'x'; 8 << 20];
    c.send(
        format!(
            "POST /sleep?s=1&id=upload HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    s.expect_log("slow-start upload", Duration::from_secs(5));
    s.signal(libc::SIGTERM);
    s.expect_log("Received SIGTERM", Duration::from_secs(5));
    // Most clients send the whole body before they read.
    let sent = c.try_send(&body);
    let end = c.read_to_end(Duration::from_secs(10));
    let text = String::from_utf8_lossy(end.bytes()).into_owned();
    assert!(
        sent.is_ok() && matches!(end, Ending::Eof(_)),
        "sent {sent:?}; {}: {text:?}",
        end.kind()
    );
    assert!(
        text.starts_with("HTTP/1.1 200 OK\r\n") && text.ends_with("slept upload"),
        "{text:?}"
    );
    drop(c);
    let st = s.wait_exit(Duration::from_secs(5));
    assert_eq!(st.code(), Some(0), "{}", describe_status(&st));
}

/// Without a master, HUP and the other master signals change nothing: the
/// process says so instead of ignoring them silently, and serves on.
#[test]
fn master_signals_to_a_single_process_are_logged_and_ignored() {
    let s = Server::start("slow:app", &[]);
    for (sig, name) in [
        (libc::SIGHUP, "SIGHUP"),
        (libc::SIGTTIN, "SIGTTIN"),
        (libc::SIGUSR2, "SIGUSR2"),
    ] {
        s.signal(sig);
        s.expect_log(
            &format!("Received {name}: ignored in single-process mode (-p 0)"),
            Duration::from_secs(5),
        );
    }
    assert_eq!(s.get("/").text(), "fast");
}

/// As in Python Zibai, a before_serve hook that raises stops the worker
/// before it serves (it used to be logged, and the worker served without
/// what the hook sets up). At the start, that stops the server: exit 3.
#[test]
fn a_before_serve_hook_that_raises_stops_the_start() {
    for processes in ["0", "1"] {
        // errors:app called with no arguments raises a TypeError.
        let done = Server::builder("echo_app:app")
            .args(["-p", processes, "--before-serve", "errors:app"])
            .run_to_exit(Duration::from_secs(10));
        assert_eq!(
            done.status.code(),
            Some(3),
            "-p {processes}: {}:\n{}",
            describe_status(&done.status),
            done.stderr
        );
        for needle in ["before_serve hook failed", "TypeError"] {
            assert!(
                done.stderr.contains(needle),
                "-p {processes}: {needle:?} not in:\n{}",
                done.stderr
            );
        }
        assert!(!done.stderr.contains("Serving with"), "-p {processes}: {}", done.stderr);
    }
}

/// A single process whose app thread holds the GIL in a C call that never
/// returns could not stop: its hooks wait for the interpreter, and there
/// is no master to kill it. It now exits on its own, 3 s past the stop's
/// deadline.
#[test]
fn a_single_process_stuck_holding_the_gil_still_stops() {
    let mut s = Server::start("gil:app", &[]);
    let mut c = s.connect();
    c.send(b"GET /hold?s=60 HTTP/1.1\r\nHost: x\r\n\r\n");
    s.expect_log("holding", Duration::from_secs(5));
    s.signal(libc::SIGINT);
    let st = s.wait_exit(Duration::from_secs(15));
    assert_eq!(st.code(), Some(1), "{}", describe_status(&st));
    s.expect_log("The stop did not finish within 3s", Duration::from_secs(2));
}

#[test]
fn graceful_exit_timeout_bounds_a_stuck_request() {
    let mut s = Server::start("slow:app", &["--graceful-exit-timeout", "1"]);
    let mut stuck = in_flight(&s, 60.0, "stuck");
    let started = Instant::now();
    s.signal(libc::SIGTERM);
    let _ = s.wait_exit(Duration::from_secs(5));
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "took {:?}",
        started.elapsed()
    );
    stuck.expect_closed(Duration::from_secs(2));
}

#[test]
fn sigint_exits_at_once_and_runs_before_died() {
    let mut s = Server::start("slow:app", &hooks_args());
    let _stuck = in_flight(&s, 60.0, "sigint");
    let started = Instant::now();
    s.signal(libc::SIGINT);
    let st = s.wait_exit(Duration::from_secs(5));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(st.code(), Some(0), "{}", describe_status(&st));
    assert_eq!(hooks_log(&s), ["before_serve", "before_died"]);
}

#[test]
fn a_failing_hook_is_logged_and_does_not_stop_the_exit() {
    let mut s = Server::builder("slow:app")
        .args([
            "--before-graceful-exit",
            "errors:app",
            "--before-died",
            "hooks:before_died",
        ])
        .start();
    s.signal(libc::SIGTERM);
    let st = s.wait_exit(Duration::from_secs(5));
    assert!(st.success(), "{}", describe_status(&st));
    // errors:app called with no arguments raises a TypeError.
    assert!(s.stderr().contains("TypeError"), "{}", s.stderr());
    assert_eq!(hooks_log(&s), ["before_died"]);
}
