//! Clients that are slow, idle or stalled must not take app threads from
//! the others, and the header and keep-alive timeouts close them.

use std::time::{Duration, Instant};

use crate::util::{Client, Ending, Server, Stream};

/// A fresh client's `GET path` must complete within `limit`.
fn served_within(s: &Server, path: &str, limit: Duration) {
    let mut c = s.connect();
    c.set_read_timeout(limit + Duration::from_secs(3));
    let started = Instant::now();
    let r = c.request(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes());
    let took = started.elapsed();
    assert_eq!(r.status, 200);
    assert!(took < limit, "a normal request took {took:?} (limit {limit:?})");
}

#[test]
fn slowloris_partial_heads_do_not_starve_app_threads() {
    let s = Server::start("echo_app:app", &["-w", "2"]);
    let mut stalled: Vec<Client> = (0..50)
        .map(|_| {
            let mut c = s.connect();
            c.send(b"GET / HTTP/1.1\r\nHost: x\r\n");
            c
        })
        .collect();
    served_within(&s, "/normal", Duration::from_secs(2));
    // The stalled ones were accepted and are still waiting, not refused.
    let mut last = stalled.pop().unwrap();
    assert!(matches!(last.read_to_end(Duration::from_millis(100)), Ending::Open(ref b) if b.is_empty()));
    // Finishing one of them still works.
    last.send(b"\r\n");
    assert_eq!(last.response().status, 200);
}

#[test]
fn idle_keep_alive_connections_beyond_max_workers_do_not_starve() {
    let s = Server::start("echo_app:app", &["-w", "2"]);
    let idle: Vec<Client> = (0..6)
        .map(|i| {
            let mut c = s.connect();
            assert_eq!(c.get(&format!("/idle{i}")).status, 200);
            c
        })
        .collect();
    served_within(&s, "/normal", Duration::from_secs(2));
    // The idle connections are still usable.
    for mut c in idle {
        assert_eq!(c.get("/again").status, 200);
    }
}

#[test]
fn slow_reader_of_a_big_list_body_does_not_block_others() {
    let s = Server::start("big:app", &["-w", "1"]);
    let mut slow = s.connect();
    slow.send(b"GET /list HTTP/1.1\r\nHost: x\r\n\r\n");
    // Wait until the big response is under way (its access log line is
    // written once the app returned and the tail was parked).
    s.expect_log("\"GET /list HTTP/1.1\" 200", Duration::from_secs(5));
    served_within(&s, "/small", Duration::from_secs(2));
    // The slow reader still gets the whole body when it finally reads.
    let r = slow.response();
    crate::util::assert_same_body(&r.body, &crate::util::big_body(), "parked /list");
}

#[test]
fn header_timeout_closes_a_partial_head() {
    let s = Server::start("echo_app:app", &["--header-timeout", "1"]);
    let mut c = s.connect();
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\n");
    let started = Instant::now();
    let end = c.read_to_end(Duration::from_secs(5));
    assert!(
        end.closed(),
        "still open {:?} after a 1 s header timeout",
        started.elapsed()
    );
    // Not answered as if it were a request.
    assert!(!String::from_utf8_lossy(end.bytes()).contains(" 200 "), "{end:?}");
}

#[test]
fn header_timeout_counts_the_whole_head_not_each_byte() {
    // Trickling one byte at a time does not extend the deadline.
    let s = Server::start("echo_app:app", &["--header-timeout", "1"]);
    let mut c = s.connect();
    c.tcp().set_nodelay(true).unwrap();
    c.send(b"GET / HTTP/1.1\r\n");
    let started = Instant::now();
    let deadline = started + Duration::from_secs(5);
    let mut closed = false;
    while Instant::now() < deadline {
        if c.try_send(b"X-A: b\r\n").is_err() {
            closed = true;
            break;
        }
        if c.read_to_end(Duration::from_millis(200)).closed() {
            closed = true;
            break;
        }
    }
    assert!(
        closed,
        "a head trickled over 5 s was never cut off by a 1 s header timeout"
    );
}

#[test]
fn keep_alive_timeout_closes_an_idle_connection() {
    let s = Server::start("echo_app:app", &["--keep-alive", "1"]);
    let mut c = s.connect();
    assert_eq!(c.get("/").status, 200);
    let started = Instant::now();
    c.expect_closed(Duration::from_secs(5));
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "closed too early: {:?}",
        started.elapsed()
    );
}

#[test]
fn keep_alive_timeout_closes_a_connection_that_never_sent_anything() {
    let s = Server::start("echo_app:app", &["--keep-alive", "1", "--header-timeout", "1"]);
    let mut c = s.connect();
    c.expect_closed(Duration::from_secs(5));
}

/// A streaming response holds its app thread while it writes; a client
/// that stops reading must not hold it past --write-timeout. Blocks of
/// 64 KiB are written by the app thread itself; blocks of 1 KiB go through
/// the flusher until the client is HIGH_WATER behind.
fn write_timeout_frees_the_thread_of_a_stalled_stream(block: usize) {
    let s = Server::start("stream:app", &["-w", "1", "--write-timeout", "1"]);
    let id = format!("stalled-{}", crate::util::unique());
    let mut c = s.connect();
    c.send(format!("GET /forever?id={id}&size={block} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
    match c.read_to_end(Duration::from_millis(500)) {
        Ending::Open(b) if !b.is_empty() => {}
        other => panic!("the stream did not start: {other:?}"),
    }
    // The only app thread now waits for a client that no longer reads. The
    // next request needs that thread: it gets it once the write times out
    // (the default would be 30 s, past the client's 10 s read timeout).
    let started = Instant::now();
    assert!(
        s.poll_until(&format!("/closed?id={id}"), "yes", Duration::from_secs(8)),
        "close() of the stalled stream was not called"
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn write_timeout_frees_the_thread_of_a_stalled_stream_of_large_blocks() {
    write_timeout_frees_the_thread_of_a_stalled_stream(65536);
}

#[test]
fn write_timeout_frees_the_thread_of_a_stalled_stream_of_small_blocks() {
    write_timeout_frees_the_thread_of_a_stalled_stream(1024);
}

/// A client that stops reading a stream of small blocks stalls it (in the
/// flusher, then the app thread waits at the high-water mark); another
/// stream is served meanwhile, and the slow client still gets every byte,
/// in order, when it reads again. (That the flusher itself is not held by
/// a stalled stream is flusher.rs's unit test.)
#[test]
fn a_stream_stalled_by_a_slow_reader_arrives_whole() {
    let s = Server::start("big:app", &["-w", "2"]);
    // Blocks under 64 KiB (all of them the flusher's), about 8.5 MB: more
    // than the socket buffers hold.
    let slow_blocks = 8000;
    let mut slow = Client::from_stream(Stream::Tcp(small_window_connect(s.addr(), 64 * 1024)));
    slow.send(format!("GET /mixed?n={slow_blocks}&small=1 HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
    // Started (peeked, not read: the response is parsed whole below); with
    // a 64 KiB window it stalls within milliseconds and stays stalled.
    let mut first = [0u8; 1];
    assert_eq!(slow.tcp().peek(&mut first).expect("the slow stream did not start"), 1);
    let mut other = s.connect();
    let r = other.get("/mixed?n=100&small=1");
    assert_eq!(r.status, 200);
    let want = crate::util::mixed_body(100, true);
    crate::util::assert_same_body(&r.body, &want, "a stream beside a stalled one");
    let r = slow.response();
    let want = crate::util::mixed_body(slow_blocks, true);
    crate::util::assert_same_body(&r.body, &want, "the stalled stream");
}

/// A fully produced response is parked on the connection; a client that
/// never reads it is cut off after --write-timeout.
#[test]
fn write_timeout_closes_a_parked_response_nobody_reads() {
    let s = Server::builder("big:app")
        .args(["--write-timeout", "1"])
        .env("ZIBAI_LOG", "debug")
        .start();
    // A small receive buffer, set before connecting so the window is
    // negotiated with it, keeps the 10 MiB from fitting in socket buffers.
    let mut c = Client::from_stream(Stream::Tcp(small_window_connect(s.addr(), 64 * 1024)));
    c.send(b"GET /list HTTP/1.1\r\nHost: x\r\n\r\n");
    s.expect_log("\"GET /list HTTP/1.1\" 200", Duration::from_secs(5));
    s.expect_log("past their deadline", Duration::from_secs(5));
    let end = c.read_to_end(Duration::from_secs(5));
    assert!(
        end.closed(),
        "still open after the write timeout: {} bytes",
        end.bytes().len()
    );
    assert!(
        end.bytes().len() < crate::util::big_body().len(),
        "the whole body arrived: it was never cut off"
    );
}

/// Regression: once a parked response tail went out, the connection was
/// labelled idle with the keep-alive deadline, even when the start of a
/// pipelined head was already in its buffer. The keep-alive timeout (and a
/// graceful stop's grace for idle connections) then cut a request whose
/// head was arriving within the header timeout.
#[test]
fn a_pipelined_head_after_a_parked_response_gets_the_header_timeout() {
    let s = Server::start("big:app", &["--keep-alive", "1", "--header-timeout", "10"]);
    let mut c = Client::from_stream(Stream::Tcp(small_window_connect(s.addr(), 64 * 1024)));
    c.send(b"GET /list HTTP/1.1\r\nHost: x\r\n\r\nGET /small HTTP/1.1\r\nHost: x\r\n");
    s.expect_log("\"GET /list HTTP/1.1\" 200", Duration::from_secs(5));
    let r = c.response();
    crate::util::assert_same_body(&r.body, &crate::util::big_body(), "parked /list");
    // Past the keep-alive timeout, well within the header timeout.
    match c.read_to_end(Duration::from_secs(2)) {
        Ending::Open(b) if b.is_empty() => {}
        other => panic!("the half-sent second request was cut: {other:?}"),
    }
    c.send(b"\r\n");
    let r = c.response();
    assert_eq!(r.status, 200);
}

/// A TCP connection whose receive buffer is `rcvbuf` bytes from the start.
pub fn small_window_connect(addr: std::net::SocketAddr, rcvbuf: libc::c_int) -> std::net::TcpStream {
    use std::os::fd::FromRawFd;
    let std::net::SocketAddr::V4(v4) = addr else {
        panic!("IPv4 expected")
    };
    // SAFETY: plain socket calls on a descriptor we create and then hand to
    // TcpStream, which owns it from then on; the sockaddr is fully set.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0);
        let stream = std::net::TcpStream::from_raw_fd(fd);
        let rc = libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&rcvbuf as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        assert_eq!(rc, 0);
        let mut sa: libc::sockaddr_in = std::mem::zeroed();
        sa.sin_family = libc::AF_INET as libc::sa_family_t;
        sa.sin_port = v4.port().to_be();
        sa.sin_addr.s_addr = u32::from(*v4.ip()).to_be();
        let rc = libc::connect(
            fd,
            (&sa as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        assert_eq!(rc, 0, "connect: {}", std::io::Error::last_os_error());
        stream
    }
}

/// Threads waiting inside the app (here in time.sleep, without the GIL)
/// must not stop a free thread from taking a new request: the thread that
/// waits for requests defers only to a thread that is getting through
/// requests, not to one that is stuck in a long one.
#[test]
fn requests_are_served_while_other_threads_wait_in_the_app() {
    let s = Server::start("slow:app", &["-w", "3"]);
    let mut sleepers: Vec<Client> = ["a", "b"]
        .iter()
        .map(|id| {
            let mut c = s.connect();
            c.send(format!("GET /sleep?s=6&id={id} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
            c
        })
        .collect();
    s.expect_log("slow-start a", Duration::from_secs(5));
    s.expect_log("slow-start b", Duration::from_secs(5));
    for _ in 0..3 {
        let mut c = s.connect();
        c.set_read_timeout(Duration::from_secs(10));
        assert_eq!(c.get("/").text(), "fast");
    }
    // All three came back while both sleepers were still in the app.
    for c in &mut sleepers {
        assert_eq!(c.read_to_end(Duration::from_millis(1)), Ending::Open(Vec::new()));
    }
}

/// The quick requests on `fast` are all answered within 1 s of `started`,
/// not behind `sleeper`'s 2 s sleep (`round`'s), which is answered after.
fn quick_ones_come_first(
    s: &Server,
    round: u32,
    started: std::time::Instant,
    fast: &mut [Client],
    sleeper: &mut Client,
) {
    for c in fast {
        c.set_read_timeout(Duration::from_secs(10));
        assert_eq!(c.response().text(), "fast");
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "round {round}: the quick requests took {took:?}, behind a 2 s sleep\n{}",
        s.stderr()
    );
    sleeper.set_read_timeout(Duration::from_secs(10));
    assert_eq!(sleeper.response().text(), format!("slept {round}"));
}

/// With one app thread nobody else can write the responses it deferred
/// (batched writes) when its next request turns out slow: the timer thread
/// does, within milliseconds. It used to at its next 100 ms scan, so the
/// quick responses waited up to 100 ms behind the slow one's sleep. Six
/// quick requests go first, so that the slow one is surely there when the
/// thread has served them. The check is on the median of seven rounds: a
/// round stalled by a busy machine does not fail it. In a single process
/// and under a master (the timer is woken by different means).
#[test]
fn quick_responses_do_not_wait_for_a_slow_request_on_the_only_thread() {
    quick_ones_beside_a_slow_one_on_one_thread(&["-w", "1"]);
    quick_ones_beside_a_slow_one_on_one_thread(&["-w", "1", "-p", "1"]);
}

fn quick_ones_beside_a_slow_one_on_one_thread(args: &[&str]) {
    let s = Server::start("slow:app", args);
    let mut slow = s.connect();
    let mut quick: Vec<Client> = (0..6).map(|_| s.connect()).collect();
    for c in quick.iter_mut().chain([&mut slow]) {
        assert_eq!(c.get("/").text(), "fast");
        c.set_read_timeout(Duration::from_secs(10));
    }
    let mut waits = Vec::new();
    for round in 0..7 {
        let started = std::time::Instant::now();
        for c in &mut quick {
            c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        }
        slow.send(format!("GET /sleep?s=0.3&id={round} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
        for c in &mut quick {
            assert_eq!(c.response().text(), "fast");
        }
        waits.push(started.elapsed());
        assert_eq!(slow.response().text(), format!("slept {round}"));
    }
    let mut sorted = waits.clone();
    sorted.sort();
    assert!(
        sorted[3] < Duration::from_millis(20),
        "{args:?}: the quick responses waited {waits:?} behind 300 ms requests"
    );
}

/// Requests that arrive together may be taken from epoll by one thread in
/// one wait; if the first of them waits in the app, the others must not
/// wait behind it: they are put back for the other threads.
#[test]
fn requests_taken_together_do_not_wait_behind_a_slow_one() {
    let s = Server::start("slow:app", &["-w", "3"]);
    for round in 0..3 {
        let mut sleeper = s.connect();
        let mut fast: Vec<Client> = (0..6).map(|_| s.connect()).collect();
        // Every connection accepted (and idle) before the requests go out.
        assert_eq!(fast[0].get("/").text(), "fast");
        let started = std::time::Instant::now();
        sleeper.send(format!("GET /sleep?s=2&id={round} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
        for c in &mut fast {
            c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        }
        quick_ones_come_first(&s, round, started, &mut fast, &mut sleeper);
    }
}

/// Connections that arrive together are accepted in one batch, and the
/// thread that accepted them reads the first and keeps the others for
/// itself; if the first waits in the app, the others must not wait behind
/// it: they go to epoll for the other threads.
#[test]
fn connections_accepted_together_do_not_wait_behind_a_slow_one() {
    let s = Server::start("slow:app", &["-w", "3"]);
    for round in 0..3 {
        let started = std::time::Instant::now();
        // Requests sent as each connection opens, all queued within
        // microseconds: the worker wakes for the first and finds the rest.
        let mut sleeper = s.connect();
        sleeper.send(format!("GET /sleep?s=2&id={round} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
        let mut fast: Vec<Client> = (0..6)
            .map(|_| {
                let mut c = s.connect();
                c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
                c
            })
            .collect();
        quick_ones_come_first(&s, round, started, &mut fast, &mut sleeper);
    }
}

/// An app that answers without reading a large body (a 404, a refused
/// upload) frees its thread at once: the response goes out and the body is
/// dropped as it arrives, with no thread waiting for it. The server used
/// to drain it on the app thread first, before the response, waiting up to
/// the read timeout for each read: a request head alone held the only
/// thread for 30 s. The connection stays usable once the body has come.
#[test]
fn an_unread_body_holds_neither_the_thread_nor_the_response() {
    let s = Server::start("slow:app", &["-w", "1", "--read-timeout", "20"]);
    let mut uploader = s.connect();
    uploader.set_read_timeout(Duration::from_secs(5));
    let body = vec![b'x'; 100_000];
    uploader.send(
        format!(
            "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    let r = uploader.read_response(false).expect("the answer, before the body");
    assert_eq!((r.status, r.text().as_str()), (200, "fast"));
    // The only app thread serves others meanwhile.
    let mut other = s.connect();
    other.set_read_timeout(Duration::from_secs(5));
    assert_eq!(other.get("/").text(), "fast");
    // The body comes, in two parts, then the next request on the same connection.
    uploader.send(&body[..50_000]);
    assert_eq!(other.get("/").text(), "fast");
    uploader.send(&body[50_000..]);
    assert_eq!(uploader.get("/").text(), "fast");
    // The same for a chunked body, its trailer included.
    let mut chunked = s.connect();
    chunked.set_read_timeout(Duration::from_secs(5));
    chunked.send(b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel");
    assert_eq!(chunked.response().text(), "fast");
    assert_eq!(other.get("/").text(), "fast");
    chunked.send(b"lo\r\n0\r\nX-Trailer: 1\r\n\r\n");
    assert_eq!(chunked.get("/").text(), "fast");
}

/// Regression: a head whose last bytes arrived in time, but waited unread
/// because the only thread was in the app, was cut off at the header
/// deadline; the thread then read it, ran the app, and had no one to answer
/// (a retry ran the request twice). Its bytes waiting now give it another
/// second at a time, until a thread reads them.
#[test]
fn a_head_completed_in_time_while_every_thread_is_busy_is_answered() {
    let s = Server::start("slow:app", &["-w", "1", "--header-timeout", "1"]);
    let mut b = s.connect();
    b.set_read_timeout(Duration::from_secs(10));
    b.send(b"GET /?id=b HTTP/1.1\r\nHost: x\r\n");
    // Connections are served in the order their bytes came: once this one
    // is answered, the thread has read b's half head (its deadline runs).
    assert_eq!(s.connect().get("/").text(), "fast");
    let mut a = s.connect();
    a.set_read_timeout(Duration::from_secs(10));
    a.send(b"GET /sleep?s=3&id=a HTTP/1.1\r\nHost: x\r\n\r\n");
    s.expect_log("slow-start a", Duration::from_secs(5));
    // The rest, well within the header timeout.
    b.send(b"\r\n");
    let r = b
        .read_response(false)
        .unwrap_or_else(|e| panic!("cut off though its head came in time: {e}"));
    assert_eq!((r.status, r.text().as_str()), (200, "fast"));
    assert_eq!(a.response().text(), "slept a");
}

/// A client that uploads a body the server refuses (413 at the head) and
/// reads the answer only after sending it all, as most HTTP clients do
/// (Python's http.client, requests), gets the answer. The server used to
/// close at once with the body coming in: the kernel answered the rest
/// with a reset, the client's send failed with "connection reset by peer"
/// or a broken pipe, and such a client never reads the 413. The server now
/// stops writing and drops what comes until the client is done.
/// Regression: requests pipelined after one that ends the connection
/// (`Connection: close`, HTTP/1.0) were left unread at the close, so the
/// kernel answered them with a reset, which can destroy the response on
/// its way. The close lingers for them too now.
#[test]
fn requests_pipelined_after_the_last_one_do_not_reset_the_connection() {
    let s = Server::start("echo_app:app", &[]);
    for first in [
        &b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"[..],
        b"GET / HTTP/1.0\r\n\r\n",
    ] {
        let mut all = first.to_vec();
        for _ in 0..20_000 {
            all.extend_from_slice(b"GET /more HTTP/1.1\r\nHost: x\r\n\r\n");
        }
        let mut c = s.connect();
        let sent = c.try_send(&all);
        let end = c.read_to_end(Duration::from_secs(10));
        let text = String::from_utf8_lossy(end.bytes()).into_owned();
        assert!(
            sent.is_ok() && matches!(end, Ending::Eof(_)),
            "{:?}: sent {sent:?}, ended with {}",
            String::from_utf8_lossy(first),
            end.kind()
        );
        assert!(
            text.starts_with("HTTP/1.") && text[8..].starts_with(" 200 "),
            "{text:.200}"
        );
        assert_eq!(
            text.matches("Server: zibai\r\n").count(),
            1,
            "served past the last request"
        );
    }
}

#[test]
fn a_refused_upload_gets_its_answer_before_the_close() {
    let s = Server::start("slow:app", &["--max-body-size", "1000"]);
    for round in 0..3 {
        let mut c = s.connect();
        c.set_read_timeout(Duration::from_secs(10));
        let body = vec![b'x'; 8 << 20];
        c.send(format!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes());
        if let Err(e) = c.try_send(&body) {
            panic!("round {round}: the body could not be sent: {e}");
        }
        let r = c
            .read_response(false)
            .unwrap_or_else(|e| panic!("round {round}: no answer: {e}"));
        assert_eq!(r.status, 413, "round {round}");
    }
}
