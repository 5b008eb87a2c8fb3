//! Every listen form: fd://N, HOST:PORT, [IPv6]:PORT, unix:PATH (with its
//! mode), unix:@abstract, and several listeners at once.

use std::net::TcpListener;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::time::Duration;

use crate::util::{Server, Target, TempDir, describe_status, unique};

const HTTP10: &[u8] = b"GET /probe HTTP/1.0\r\n\r\n";

#[test]
fn fd_inherited_socket_serves() {
    let s = Server::start("echo_app:app", &[]);
    let r = s.request(HTTP10);
    assert_eq!(r.status, 200);
    let kv = r.kv();
    assert_eq!(kv.at("PATH_INFO"), "/probe");
    // Without a Host header the listener's own address is reported.
    assert_eq!(kv.at("SERVER_NAME"), "127.0.0.1");
    assert_eq!(kv.at("SERVER_PORT"), s.addr().port().to_string());
}

#[test]
fn fd_that_is_not_open_is_refused_naming_it() {
    let f = Server::builder("echo_app:app")
        .listen_args(["-l", "fd://987"], None)
        .run_to_exit(Duration::from_secs(10));
    assert!(!f.status.success(), "{}", describe_status(&f.status));
    assert!(f.stderr.contains("fd://987"), "{}", f.stderr);
}

#[test]
fn fd_that_is_not_a_socket_is_refused() {
    // fd 0 is /dev/null in the server.
    let f = Server::builder("echo_app:app")
        .listen_args(["-l", "fd://0"], None)
        .run_to_exit(Duration::from_secs(10));
    assert!(!f.status.success(), "{}", describe_status(&f.status));
    assert!(
        f.stderr.contains("fd://0") && f.stderr.contains("not a socket"),
        "{}",
        f.stderr
    );
}

#[test]
fn explicit_ipv4_port() {
    // Find a free port, release it, and let the server bind it. Another
    // process may take it in between; that rare race gets one retry.
    for attempt in 0..2 {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr = format!("127.0.0.1:{port}");
        let started = Server::builder("echo_app:app")
            .listen_args(["-l", addr.as_str()], Some(Target::Tcp(addr.parse().unwrap())))
            .try_start();
        let s = match started {
            Ok(s) => s,
            Err(e) if attempt == 0 && e.contains("in use") => continue,
            Err(e) => panic!("{e}"),
        };
        s.expect_log(&format!("Listening on http://{addr}"), Duration::from_secs(1));
        let r = s.get("/v4");
        assert_eq!(r.status, 200);
        assert_eq!(r.kv().at("REMOTE_ADDR"), "127.0.0.1");
        return;
    }
}

#[test]
fn ipv6_loopback() {
    if TcpListener::bind("[::1]:0").is_err() {
        eprintln!("skipped: cannot bind [::1] on this machine");
        return;
    }
    let s = Server::builder("echo_app:app")
        .listen_args(["-l", "[::1]:0"], None)
        .start();
    let Target::Tcp(a) = s.target() else { unreachable!() };
    assert!(a.is_ipv6(), "{a}");
    assert_ne!(a.port(), 0);
    let r = s.request(HTTP10);
    assert_eq!(r.status, 200);
    let kv = r.kv();
    assert_eq!(kv.at("REMOTE_ADDR"), "::1");
    assert_eq!(kv.at("SERVER_PORT"), a.port().to_string());
}

#[test]
fn unix_path_with_socket_perms() {
    let dir = TempDir::new("unix");
    let path = dir.path().join("z.sock");
    let s = Server::builder("echo_app:app")
        .listen_args(
            [
                "-l".to_string(),
                format!("unix:{}", path.display()),
                "--unix-socket-perms".into(),
                "640".into(),
            ],
            Some(Target::Unix(path.clone())),
        )
        .start();
    s.expect_log(&format!("Listening on unix:{}", path.display()), Duration::from_secs(1));
    let meta = std::fs::metadata(&path).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o640);
    let r = s.request(HTTP10);
    assert_eq!(r.status, 200);
    let kv = r.kv();
    assert_eq!(kv.at("REMOTE_ADDR"), "");
    assert_eq!(kv.at("REMOTE_PORT"), "");
    // With a Host header the name comes from it, as over TCP.
    let r = s.request(b"GET / HTTP/1.1\r\nHost: example.org:81\r\nConnection: close\r\n\r\n");
    assert_eq!(
        (r.kv().at("SERVER_NAME"), r.kv().at("SERVER_PORT")),
        ("example.org", "81")
    );
}

#[test]
fn unix_socket_default_perms_are_600() {
    let dir = TempDir::new("unix600");
    let path = dir.path().join("z.sock");
    let s = Server::builder("echo_app:app")
        .listen_args(
            ["-l".to_string(), format!("unix:{}", path.display())],
            Some(Target::Unix(path.clone())),
        )
        .start();
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(s.request(HTTP10).status, 200);
}

#[test]
fn unix_stale_socket_file_is_replaced_and_removed_on_exit() {
    let dir = TempDir::new("unixstale");
    let path = dir.path().join("z.sock");
    // A socket file left behind by a previous run (nobody listens on it).
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let mut s = Server::builder("echo_app:app")
        .listen_args(
            ["-l".to_string(), format!("unix:{}", path.display())],
            Some(Target::Unix(path.clone())),
        )
        .start();
    assert_eq!(s.request(HTTP10).status, 200);
    s.signal(libc::SIGTERM);
    let st = s.wait_exit(Duration::from_secs(5));
    assert!(st.success(), "{}", describe_status(&st));
    assert!(
        !path.exists(),
        "the socket file {} is still there after exit",
        path.display()
    );
}

/// A second server started on the same Unix socket path by mistake is
/// refused, and the first keeps its socket (it used to be unlinked and
/// replaced by the second's, which then exited: the first served no one).
#[test]
fn unix_socket_in_use_is_refused_and_left_alone() {
    let dir = TempDir::new("unixinuse");
    let path = dir.path().join("z.sock");
    let listen = || ["-l".to_string(), format!("unix:{}", path.display())];
    let first = Server::builder("echo_app:app")
        .listen_args(listen(), Some(Target::Unix(path.clone())))
        .start();
    assert_eq!(first.request(HTTP10).status, 200);
    let second = Server::builder("echo_app:app")
        .listen_args(listen(), Some(Target::Unix(path.clone())))
        .run_to_exit(Duration::from_secs(10));
    assert!(!second.status.success(), "{second:?}");
    assert!(
        second
            .stderr
            .contains(&format!("a server is already listening on {}", path.display())),
        "{}",
        second.stderr
    );
    assert_eq!(first.request(HTTP10).status, 200);
}

#[test]
fn unix_abstract() {
    let name = format!("zibai-it-{}-{}", std::process::id(), unique());
    let s = Server::builder("echo_app:app")
        .listen_args(
            ["-l".to_string(), format!("unix:@{name}")],
            Some(Target::Abstract(name.clone().into_bytes())),
        )
        .start();
    s.expect_log(&format!("Listening on unix:@{name}"), Duration::from_secs(1));
    let r = s.request(HTTP10);
    assert_eq!(r.status, 200);
    assert_eq!(r.kv().at("REMOTE_ADDR"), "");
}

#[test]
fn several_values_after_one_listen_option() {
    let dir = TempDir::new("multi");
    let path = dir.path().join("m.sock");
    let unix = format!("unix:{}", path.display());
    let s = Server::builder("echo_app:app").extra_listen(&[&unix]).start();
    let over_tcp = s.request(HTTP10);
    assert_eq!(over_tcp.status, 200);
    assert_eq!(over_tcp.kv().at("REMOTE_ADDR"), "127.0.0.1");
    let over_unix = crate::util::Client::connect(&Target::Unix(path.clone())).request(HTTP10);
    assert_eq!(over_unix.status, 200);
    assert_eq!(over_unix.kv().at("REMOTE_ADDR"), "");
}

/// `[::]:PORT` with --dualstack-ipv6 also takes IPv4; without it, only IPv6.
#[test]
fn dualstack_ipv6_accepts_ipv4_too() {
    if TcpListener::bind("[::1]:0").is_err() {
        eprintln!("skipped: cannot bind [::1] on this machine");
        return;
    }
    for attempt in 0..2 {
        let port = TcpListener::bind("[::]:0").unwrap().local_addr().unwrap().port();
        let addr = format!("[::]:{port}");
        let v6: std::net::SocketAddr = format!("[::1]:{port}").parse().unwrap();
        let v4: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let started = Server::builder("echo_app:app")
            .listen_args(["-l", addr.as_str(), "--dualstack-ipv6"], Some(Target::Tcp(v6)))
            .try_start();
        let s = match started {
            Ok(s) => s,
            Err(e) if attempt == 0 && e.contains("in use") => continue,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(s.get("/v6").status, 200);
        let mut c = crate::util::Client::connect(&Target::Tcp(v4));
        let r = c.get("/v4");
        assert_eq!(r.status, 200);
        assert_eq!(r.kv().at("REMOTE_ADDR"), "::ffff:127.0.0.1");
        drop(s);
        // The same address without the option is IPv6 only.
        let s = Server::builder("echo_app:app")
            .listen_args(["-l", addr.as_str()], Some(Target::Tcp(v6)))
            .start();
        assert_eq!(s.get("/v6").status, 200);
        assert!(
            std::net::TcpStream::connect_timeout(&v4, Duration::from_secs(2)).is_err(),
            "IPv4 was accepted without --dualstack-ipv6"
        );
        return;
    }
}

#[test]
fn unusable_socket_path_is_one_clear_line() {
    let f = Server::builder("echo_app:app")
        .listen_args(["-l", "unix:/nonexistent-zibai-dir/s.sock"], None)
        .run_to_exit(Duration::from_secs(10));
    assert!(!f.status.success(), "{}", describe_status(&f.status));
    let lines: Vec<&str> = f.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{}", f.stderr);
    assert!(
        lines[0].contains("cannot listen on unix:/nonexistent-zibai-dir/s.sock")
            && lines[0].contains("No such file or directory"),
        "{}",
        f.stderr
    );
}

/// The listen queue length is what --backlog says (ss shows it as Send-Q).
#[test]
fn backlog_sets_the_listen_queue() {
    if std::process::Command::new("ss").arg("-V").output().is_err() {
        eprintln!("skipped: ss (iproute2) is not installed");
        return;
    }
    let s = Server::builder("echo_app:app")
        .listen_args(["-l", "127.0.0.1:0", "--backlog", "77"], None)
        .start();
    let port = s.addr().port();
    let out = std::process::Command::new("ss")
        .args(["-Hltn", &format!("sport = :{port}")])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    // State Recv-Q Send-Q Local Peer
    let send_q = text.split_whitespace().nth(2);
    assert_eq!(send_q, Some("77"), "{text}");
}
