//! The prefork master (`-p N`): the worker count and the signals that change
//! it, rolling replacement (HUP, max requests) without failed requests,
//! dead and hung workers replaced, stops (TERM, INT, a master killed), a
//! worker that cannot load the app, and what fds a worker inherits.
//!
//! Signals go to the master's pid; workers are found as its children in
//! /proc and told apart in the log by the `[PID]` of their lines.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::time::{Duration, Instant};

use crate::util::{
    Client, Load, LoadMode, LoadReport, Server, TempDir, assert_failed, children, describe_status, fd_targets,
    proc_gone, proc_info, wait_until,
};

/// How long workers may take to boot.
const BOOT: Duration = Duration::from_secs(10);

fn start(args: &[&str]) -> Server {
    Server::start("pids:app", args)
}

fn kill(pid: i32, sig: i32) {
    // SAFETY: kill(2) on a worker pid just read from /proc as a live child of
    // our server; a worker is reaped only by the master, which is alive.
    let r = unsafe { libc::kill(pid, sig) };
    assert_eq!(r, 0, "kill({pid}, {sig}): {}", io::Error::last_os_error());
}

/// SIGKILLs, on drop, the workers still alive in the server's process
/// group: once the master itself is gone, the harness no longer kills the
/// group, and a test that fails must not leave workers behind.
struct Leftovers {
    pgrp: i32,
    pids: Vec<i32>,
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        for &pid in &self.pids {
            if proc_info(pid).is_some_and(|p| !p.is_dead() && p.pgrp == self.pgrp) {
                // SAFETY: the pid is alive and in the server's process group,
                // so it is one of our workers, not a reused pid.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

fn leftovers(s: &Server, pids: &[i32]) -> Leftovers {
    Leftovers {
        pgrp: s.pid(),
        pids: pids.to_vec(),
    }
}

/// The pid named by a `pid=N` (or `... pid=N`) answer.
fn pid_in(text: &str) -> i32 {
    text.rsplit("pid=")
        .next()
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no pid in {text:?}"))
}

/// Sends `GET /sleep?s=secs&id=id` on a new connection; once the app runs
/// it, returns the connection and the pid of the worker running it. `None`
/// if it did not start within `within` (every app thread busy).
fn slow_request(s: &Server, secs: f64, id: &str, within: Duration) -> (Client, Option<i32>) {
    let mut c = s.connect();
    c.send(format!("GET /sleep?s={secs}&id={id} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
    let needle = format!("slow-start {id} pid=");
    if !s.wait_for_log(&needle, within) {
        return (c, None);
    }
    let pid = s
        .stderr()
        .lines()
        .find_map(|l| l.strip_prefix(needle.as_str()).map(pid_in_bare))
        .unwrap();
    (c, Some(pid))
}

fn pid_in_bare(s: &str) -> i32 {
    s.trim().parse().unwrap_or_else(|_| panic!("bad pid {s:?}"))
}

/// With one app thread per worker: slow requests until every worker of
/// `pids` runs one; returns them by worker pid, with their ids. (A request
/// that does not start in time queued behind a busy worker; it is dropped.)
fn busy_every_worker(s: &Server, pids: &[i32], secs: f64) -> BTreeMap<i32, (Client, String)> {
    let mut busy = BTreeMap::new();
    for k in 0..pids.len() + 3 {
        if pids.iter().all(|p| busy.contains_key(p)) {
            return busy;
        }
        let id = format!("busy{k}");
        // A request that lands on a busy worker starts when that one ends.
        if let (c, Some(pid)) = slow_request(s, secs, &id, Duration::from_secs(2)) {
            assert!(pids.contains(&pid), "served by {pid}, not one of {pids:?}");
            assert!(
                !busy.contains_key(&pid),
                "worker {pid} ran two requests with one app thread"
            );
            busy.insert(pid, (c, id));
        }
    }
    assert!(
        pids.iter().all(|p| busy.contains_key(p)),
        "could not make every worker of {pids:?} busy: {:?}",
        busy.keys()
    );
    busy
}

/// No request failed, and none met a keep-alive connection closed under it:
/// a stopping worker answers what comes on an idle connection within its
/// grace (`Connection: close`), and the load sends every few milliseconds.
/// (Before that, each stop cost 2-5 such races here.)
fn assert_no_failures(r: &LoadReport) {
    assert_eq!(
        (r.failed, r.retried),
        (0, 0),
        "{} of {} requests failed under load, {} keep-alive races: {:#?}",
        r.failed,
        r.ok + r.failed,
        r.retried,
        r.failures
    );
}

#[test]
fn worker_count_after_start() {
    let s = start(&["-p", "3"]);
    let pids = s.wait_workers(3, BOOT);
    // Every child of the master is a worker, and each serves.
    let kids = children(s.pid());
    assert_eq!(kids.len(), 3, "{kids:?}");
    for p in &pids {
        assert_eq!(
            s.log_lines_of(*p).iter().filter(|l| l.contains("Serving with")).count(),
            1
        );
    }
    let mut served_by = BTreeSet::new();
    for _ in 0..20 {
        let r = s.get("/");
        assert_eq!(r.status, 200);
        served_by.insert(pid_in(&r.text()));
    }
    assert!(
        served_by.is_subset(&pids.iter().copied().collect()),
        "{served_by:?} vs {pids:?}"
    );
    assert_eq!(s.log_count("Booting worker"), 3, "{}", s.stderr());
}

/// Keep-alive connections opened all at once (a proxy filling its pool,
/// wrk starting) are spread over the workers: without accept balancing the
/// worker that woke first accepted nearly all of them (40 connections, 2
/// workers: 31/9, 36/4, 38/2, 37/3, 37/3, 40/0 in six runs).
///
/// A parked worker takes its listeners back when connections sit in the
/// queue for 5 ms with no other worker taking them, which is what happens
/// when the machine is so loaded that the other worker does not run (one
/// run in twelve with three busy loops on this 2-core machine: 35/5). Such
/// a run says so in the log and is tried again on a fresh server; an
/// imbalance without it is a failure at once.
#[test]
fn a_burst_of_connections_is_spread_over_the_workers() {
    const SAFETY_NET: &str = "no other worker takes them: accepting again";
    for _ in 0..3 {
        let s = start(&["-p", "2", "--log-level", "debug"]);
        let pids = s.wait_workers(2, BOOT);
        // Every connection is in the listen queue before a worker wakes.
        let mut clients: Vec<Client> = (0..40).map(|_| s.connect()).collect();
        let mut per_worker: BTreeMap<i32, usize> = pids.iter().map(|&p| (p, 0)).collect();
        for c in &mut clients {
            c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
            let r = c.read_response(false).expect("an answer");
            assert_eq!(r.status, 200);
            *per_worker.get_mut(&pid_in(&r.text())).expect("one of the workers") += 1;
        }
        // Balanced within the allowed slack (2 + an eighth): 18/22, and a
        // few more that the two take at the same moment.
        if per_worker.values().all(|&n| n >= 14) {
            return;
        }
        assert!(
            s.log_count(SAFETY_NET) > 0,
            "connections per worker: {per_worker:?}, and no worker was starved"
        );
        eprintln!("a worker was starved ({per_worker:?}); trying again");
    }
    panic!("three runs in a row where a worker did not get to run for 5 ms");
}

/// Whether `sig` is pending for process `pid` (sent, not yet delivered).
fn signal_pending(pid: i32, sig: i32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let bit = 1u64 << (sig - 1);
    status
        .lines()
        .filter(|l| l.starts_with("ShdPnd:") || l.starts_with("SigPnd:"))
        .filter_map(|l| u64::from_str_radix(l.split_whitespace().nth(1)?, 16).ok())
        .any(|mask| mask & bit != 0)
}

/// Regression (found by review): TTINs delivered before the master's loop
/// read them were merged into one, so four TTINs in a row added fewer
/// workers (it failed 2 runs of 3). Each is sent once the last was
/// delivered (the kernel
/// itself merges a signal still pending), without waiting for the loop.
#[test]
fn ttin_signals_in_a_row_each_add_a_worker() {
    let s = start(&["-p", "1"]);
    s.wait_workers(1, BOOT);
    for _ in 0..4 {
        s.signal(libc::SIGTTIN);
        assert!(
            wait_until(Duration::from_secs(5), || !signal_pending(s.pid(), libc::SIGTTIN)),
            "TTIN not delivered"
        );
    }
    s.wait_workers(5, BOOT);
    s.expect_log("Received SIGTTIN: 5 workers", Duration::from_secs(5));
}

#[test]
fn ttin_adds_and_ttou_removes() {
    let s = start(&["-p", "2"]);
    let first = s.wait_workers(2, BOOT);

    s.signal(libc::SIGTTIN);
    let three = s.wait_workers(3, BOOT);
    assert!(
        first.iter().all(|p| three.contains(p)),
        "TTIN replaced a worker: {first:?} -> {three:?}"
    );
    assert!(s.stderr().contains("Received SIGTTIN: 3 workers"));

    // One signal at a time: the kernel merges a signal sent while the same
    // one is still pending.
    for want in [2, 1] {
        let before = s.log_count("Received SIGTTOU");
        s.signal(libc::SIGTTOU);
        s.expect_log_count_above("Received SIGTTOU", before, Duration::from_secs(5));
        let now = s.wait_workers(want, Duration::from_secs(10));
        assert!(now.iter().all(|p| three.contains(p)), "TTOU started a worker: {now:?}");
    }
    let last = s.workers();

    // Never below one: another TTOU changes nothing, so the TTIN after it
    // brings the count back to two.
    let before = s.log_count("Received SIGTTOU");
    s.signal(libc::SIGTTOU);
    s.expect_log_count_above("Received SIGTTOU", before, Duration::from_secs(5));
    assert_eq!(s.log_count("Received SIGTTOU: 1 workers"), 2, "{}", s.stderr());
    assert_eq!(s.workers(), last);
    assert_eq!(pid_in(&s.get("/").text()), last[0]);
    s.signal(libc::SIGTTIN);
    let two = s.wait_workers(2, BOOT);
    assert!(two.contains(&last[0]), "{two:?}");
    assert!(s.stderr().contains("Received SIGTTIN: 2 workers"), "{}", s.stderr());
    // The removed workers stopped cleanly.
    for p in three.iter().filter(|p| !two.contains(p)) {
        assert!(
            s.stderr().contains(&format!("Worker {p} exited normally")),
            "{}",
            s.stderr()
        );
    }
}

#[test]
fn ttou_lets_the_removed_worker_finish() {
    let s = start(&["-p", "2", "-w", "1"]);
    let pids = s.wait_workers(2, BOOT);
    let mut busy = busy_every_worker(&s, &pids, 2.0);
    s.signal(libc::SIGTTOU);
    s.expect_log("Stopping worker ", Duration::from_secs(5));
    let log = s.stderr();
    let stopped: i32 = log
        .lines()
        .find_map(|l| l.split("Stopping worker ").nth(1))
        .and_then(|r| r.strip_suffix(" gracefully"))
        .map(pid_in_bare)
        .unwrap();
    let kept = *pids.iter().find(|&&p| p != stopped).unwrap();
    // It is still finishing its request, not killed.
    assert!(!proc_gone(stopped), "worker {stopped} died with a request in flight");

    let (mut c, id) = busy.remove(&stopped).unwrap();
    let r = c.response();
    assert_eq!((r.status, r.text()), (200, format!("slept {id} pid={stopped}")));
    assert!(
        wait_until(Duration::from_secs(5), || proc_gone(stopped)),
        "worker {stopped} still alive after its last request"
    );
    s.expect_log(&format!("Worker {stopped} exited normally"), Duration::from_secs(5));
    assert_eq!(s.wait_workers(1, Duration::from_secs(5)), [kept]);
    // The other one was left alone and finishes too.
    let (mut c, id) = busy.remove(&kept).unwrap();
    assert_eq!(c.response().text(), format!("slept {id} pid={kept}"));
}

/// `--chdir` at a symlink a deploy moves (`current -> releases/N`, as
/// Capistrano and friends lay a project out): a HUP after the move serves
/// the new release. Regression: workers put getcwd(), the release the
/// master had started in, first on sys.path and inherited it as their
/// directory, so the reload kept serving the old code.
#[test]
fn hup_follows_a_chdir_symlink_to_the_new_release() {
    let dir = TempDir::new("releases");
    for (release, body) in [("r1", "release one"), ("r2", "release two")] {
        let d = dir.path().join(release);
        std::fs::create_dir(&d).unwrap();
        std::fs::write(d.join("VERSION"), body).unwrap();
        // The app reads a file relative to its directory, and is imported
        // from it.
        std::fs::write(
            d.join("release_app.py"),
            "import os\n\n\ndef app(environ, start_response):\n    \
             body = open('VERSION', 'rb').read() + b' ' + __file__.encode()\n    \
             start_response('200 OK', [('Content-Length', str(len(body)))])\n    \
             return [body]\n",
        )
        .unwrap();
    }
    let current = dir.path().join("current");
    std::os::unix::fs::symlink("r1", &current).unwrap();
    let s = Server::start("release_app:app", &["-p", "1", "--chdir", current.to_str().unwrap()]);
    let old = s.wait_workers(1, BOOT);
    let first = s.get("/").text();
    assert!(first.starts_with("release one "), "{first}");

    // The deploy: a new link renamed over the old one.
    let next = dir.path().join("current.next");
    std::os::unix::fs::symlink("r2", &next).unwrap();
    std::fs::rename(&next, &current).unwrap();
    s.signal(libc::SIGHUP);
    assert!(
        wait_until(BOOT, || {
            let now = s.workers();
            !now.is_empty() && now.iter().all(|w| !old.contains(w) && s.booted(*w))
        }),
        "HUP did not replace {old:?}"
    );
    let now = s.get("/").text();
    assert_eq!(
        now,
        format!("release two {}", current.join("release_app.py").display()),
        "the new worker serves the old release"
    );
}

#[test]
fn hup_replaces_every_worker_with_zero_failed_requests() {
    let s = start(&["-p", "2"]);
    let old = s.wait_workers(2, BOOT);
    let load = Load::start(s.addr(), "/", &[LoadMode::Fresh, LoadMode::KeepAlive]);
    assert!(load.wait_ok(50, Duration::from_secs(5)), "the load did not get going");
    let ok_before = load.ok();
    s.signal(libc::SIGHUP);
    let mut new = Vec::new();
    let replaced = wait_until(Duration::from_secs(10), || {
        new = s.workers();
        old.iter().all(|&p| proc_gone(p)) && new.len() == 2 && new.iter().all(|&p| s.booted(p) && !old.contains(&p))
    });
    let during = load.ok() - ok_before;
    assert!(replaced, "HUP did not replace {old:?} within 10 s; workers now {new:?}");
    // It goes on with the new workers.
    let target = load.ok() + 100;
    assert!(
        load.wait_ok(target, Duration::from_secs(5)),
        "no requests served after the reload"
    );
    let report = load.stop();
    assert_no_failures(&report);
    assert!(during > 0, "nothing served while the workers were replaced: {report:?}");
    assert!(new.iter().any(|p| report.by_pid.contains_key(p)), "{report:?}");
    assert!(old.iter().any(|p| report.by_pid.contains_key(p)), "{report:?}");
    for p in &old {
        assert!(s.stderr().contains(&format!("Worker {p} exited normally")), "{p}");
    }
    eprintln!("HUP under load: {report:?}, {during} served during the reload");
}

#[test]
fn kill_9_of_a_worker_under_load_is_replaced() {
    let s = start(&["-p", "2"]);
    let pids = s.wait_workers(2, BOOT);
    let threads = [LoadMode::Fresh, LoadMode::KeepAlive];
    let load = Load::start(s.addr(), "/", &threads);
    assert!(load.wait_ok(50, Duration::from_secs(5)), "the load did not get going");
    let victim = pids[0];
    kill(victim, libc::SIGKILL);
    let mut now = Vec::new();
    let replaced = wait_until(Duration::from_secs(10), || {
        now = s.workers();
        proc_gone(victim) && now.len() == 2 && now.iter().all(|&p| p != victim && s.booted(p))
    });
    assert!(replaced, "worker {victim} not replaced; workers now {now:?}");
    assert!(now.contains(&pids[1]), "the other worker was replaced too: {now:?}");
    s.expect_log(
        &format!("Worker {victim} was killed by SIGKILL"),
        Duration::from_secs(2),
    );
    let failed_at_kill = load.failed();
    let target = load.ok() + 100;
    assert!(load.wait_ok(target, Duration::from_secs(5)), "the load did not go on");
    let report = load.stop();
    // Only what that worker had in flight may fail, and nothing after.
    assert!(
        report.failed <= 2 * threads.len(),
        "more failures than requests in flight: {report:#?}"
    );
    assert_eq!(
        report.failed, failed_at_kill,
        "failures after the replacement: {report:#?}"
    );
    eprintln!("kill -9 under load: {report:?}");
}

/// A healthy worker beats often enough for a short --timeout. Regression:
/// it beat once a second, so under `--timeout 0.8` every worker was aborted
/// as hung while it served, and replaced, again and again.
#[test]
fn a_short_timeout_leaves_healthy_workers_alone() {
    let s = start(&["-p", "1", "--timeout", "0.8"]);
    let worker = s.wait_workers(1, BOOT)[0];
    // Four timeouts' worth of serving, by the same worker throughout.
    let until = Instant::now() + Duration::from_millis(3200);
    while Instant::now() < until {
        assert_eq!(pid_in(&s.get("/").text()), worker, "{}", s.stderr());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!s.stderr().contains("timed out"), "{}", s.stderr());
}

/// Heartbeats are read by the master's loop, so a master that did not run
/// for longer than --timeout could find every beat stale and abort every
/// healthy worker at once. `group`: the workers are stopped with it (the
/// whole service frozen, as with its container), so no beat waits in their
/// sockets: the regression test (found by review), which aborted both
/// workers before 71d4b2e. Without `group`, the master stopped alone: its
/// poll resumes and reads the beats waiting in the sockets first, so this
/// passed before too, but for the log line. (A master held up elsewhere,
/// a log write blocked on a full pipe, judged before reading; the beats
/// are now read first. That case has no test here.)
fn a_stalled_master_leaves_healthy_workers_alone(group: bool) {
    let s = start(&["-p", "2", "--timeout", "1"]);
    let workers = s.wait_workers(2, BOOT);
    let mut stopped = vec![s.pid()];
    if group {
        stopped.extend(&workers);
    }
    for &pid in &stopped {
        kill(pid, libc::SIGSTOP);
    }
    // The stall itself, three timeouts long (not a wait for an event).
    std::thread::sleep(Duration::from_secs(3));
    for &pid in stopped.iter().rev() {
        kill(pid, libc::SIGCONT);
    }
    // The first check after the stall either aborts the workers (the bug)
    // or says it excluded the stall.
    assert!(
        wait_until(Duration::from_secs(5), || {
            let log = s.stderr();
            log.contains("did not run for") || log.contains("timed out")
        }),
        "{}",
        s.stderr()
    );
    assert!(!s.stderr().contains("timed out"), "{}", s.stderr());
    let served: BTreeSet<i32> = (0..20).map(|_| pid_in(&s.get("/").text())).collect();
    assert!(served.iter().all(|p| workers.contains(p)), "{served:?} vs {workers:?}");
    assert_eq!(s.workers().len(), 2);
    assert!(!s.stderr().contains("timed out"), "{}", s.stderr());
}

#[test]
fn a_stopped_master_leaves_healthy_workers_alone() {
    a_stalled_master_leaves_healthy_workers_alone(false);
}

#[test]
fn a_frozen_service_leaves_healthy_workers_alone() {
    a_stalled_master_leaves_healthy_workers_alone(true);
}

#[test]
fn stopped_worker_is_killed_after_timeout_and_replaced() {
    let s = start(&["-p", "1", "--timeout", "2"]);
    let hung = s.wait_workers(1, BOOT)[0];
    kill(hung, libc::SIGSTOP);
    let stopped_at = Instant::now();
    // Up to 1 s since the last beat + 2 s timeout, then 3 s to SIGKILL.
    let limit = Duration::from_secs(10);
    assert!(
        wait_until(limit, || proc_gone(hung)),
        "the stopped worker {hung} still exists after {limit:?}"
    );
    let took = stopped_at.elapsed();
    assert!(
        took >= Duration::from_secs(3),
        "killed {took:?} after SIGSTOP, before the timeout"
    );
    let log = s.stderr();
    assert!(
        log.contains(&format!("Worker {hung} timed out (no heartbeat); aborting it")),
        "{log}"
    );
    // zibai sent it, and says so (not "out of memory? see dmesg").
    s.expect_log(
        &format!("Worker {hung} was killed by zibai (SIGKILL)"),
        Duration::from_secs(2),
    );
    let fresh = s.wait_workers(1, BOOT)[0];
    assert_ne!(fresh, hung);
    assert_eq!(pid_in(&s.get("/").text()), fresh);
}

#[test]
fn term_with_slow_request_in_flight() {
    let mut s = start(&["-p", "2"]);
    let pids = s.wait_workers(2, BOOT);
    let _guard = leftovers(&s, &pids);
    let (mut slow, pid) = slow_request(&s, 1.5, "term", Duration::from_secs(5));
    let pid = pid.expect("the slow request did not start");
    s.signal(libc::SIGTERM);
    s.expect_log("Received SIGTERM: stopping gracefully", Duration::from_secs(5));
    let r = slow.response();
    assert_eq!((r.status, r.text()), (200, format!("slept term pid={pid}")));
    assert_eq!(r.header("connection"), Some("close"), "{r:?}");
    let st = s.wait_exit(Duration::from_secs(10));
    assert_eq!(st.code(), Some(0), "{}", describe_status(&st));
    for p in &pids {
        assert!(proc_gone(*p), "worker {p} outlived the master");
        assert!(s.stderr().contains(&format!("Worker {p} exited normally")), "{p}");
    }
    assert!(s.stderr().contains("Shutting down: all workers exited"));
}

/// INT and QUIT: the master exits promptly, its workers with it, even with
/// a request in flight that would take a minute.
fn quick_exit(sig: i32) {
    let mut s = start(&["-p", "2"]);
    let pids = s.wait_workers(2, BOOT);
    let _guard = leftovers(&s, &pids);
    let (mut stuck, _) = slow_request(&s, 60.0, "stuck", Duration::from_secs(5));
    let started = Instant::now();
    s.signal(sig);
    let st = s.wait_exit(Duration::from_secs(5));
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "signal {sig} took {took:?}");
    assert_eq!(st.code(), Some(0), "{}", describe_status(&st));
    for p in &pids {
        assert!(proc_gone(*p), "worker {p} outlived the master");
    }
    assert!(stuck.read_to_end(Duration::from_secs(2)).closed());
}

#[test]
fn int_exits_quickly() {
    quick_exit(libc::SIGINT);
}

#[test]
fn quit_exits_quickly() {
    quick_exit(libc::SIGQUIT);
}

#[test]
fn max_requests_recycling_under_load_with_zero_failures() {
    let s = start(&["-p", "2", "--max-requests", "50", "--max-requests-jitter", "10"]);
    let first = s.wait_workers(2, BOOT);
    let load = Load::start(s.addr(), "/", &[LoadMode::Fresh, LoadMode::KeepAlive]);
    // At least two workers replaced (their successors booted before they
    // were stopped), over at least 400 requests.
    let replaced = || s.log_count("reached its max requests; replacing it") >= 2 && s.log_count("exited normally") >= 2;
    let done = wait_until(Duration::from_secs(15), || load.ok() >= 400 && replaced());
    let report = load.stop();
    assert!(
        done,
        "within 15 s: {} requests served, {} workers retired, {} exited",
        report.ok,
        s.log_count("reached its max requests"),
        s.log_count("exited normally")
    );
    assert_no_failures(&report);
    let later: Vec<_> = report.by_pid.keys().filter(|p| !first.contains(p)).collect();
    assert!(
        !later.is_empty(),
        "served by {:?}; first workers {first:?}",
        report.by_pid
    );
    // None retired early (the load is the only traffic).
    for (pid, n) in &report.by_pid {
        if s.stderr().contains(&format!("Worker {pid} reached its max requests")) {
            assert!(
                *n >= 50,
                "worker {pid} retired after {n} requests with --max-requests 50"
            );
        }
    }
    assert!(!s.stderr().contains("killed by"), "{}", s.stderr());
    eprintln!(
        "max-requests under load: {} ok, {} keep-alive races retried",
        report.ok, report.retried
    );
    s.wait_workers(2, BOOT);
    eprintln!("max requests under load: {report:?}");
}

/// Regression: a worker's listeners opened before its control channel
/// started, and max requests was only set with the channel. Requests
/// served in between carried the count past the limit, which was checked
/// for equality, so under load a successor could skip it and never retire
/// (found by review: one served 56,225 requests with --max-requests 3).
#[test]
fn max_requests_retires_every_successor_under_load() {
    let s = start(&["-p", "1", "--max-requests", "1"]);
    s.wait_workers(1, BOOT);
    let load = Load::start_paced(s.addr(), "/", &[LoadMode::Fresh; 8], Duration::from_millis(1));
    let want = 6;
    let retired = wait_until(Duration::from_secs(30), || {
        s.log_count("reached its max requests; replacing it") >= want
    });
    let report = load.stop();
    assert!(
        retired,
        "{} of {want} workers retired within 30 s ({} requests served): {}",
        s.log_count("reached its max requests"),
        report.ok,
        s.stderr()
    );
    assert_no_failures(&report);
    assert!(!s.stderr().contains("early worker deaths"), "{}", s.stderr());
}

#[test]
fn boot_failure_stops_the_master_with_code_4() {
    let done = Server::builder("zibai_missing_module:app")
        .args(["-p", "2"])
        .run_to_exit(Duration::from_secs(10));
    assert_failed(
        &done,
        Some(4),
        &[
            "zibai_missing_module",
            "A worker failed to boot; shutting down (exit code 4)",
        ],
    );
    assert!(done.elapsed < Duration::from_secs(10));
    let boots = done.stderr.matches("Booting worker").count();
    assert!(boots <= 3, "{boots} workers started, a respawn loop:\n{}", done.stderr);
}

/// Regression: a HUP with a deploy that cannot be imported stopped the
/// whole server (the rule for a worker that cannot boot, meant for the
/// start). The old workers now go on serving while the new one is tried
/// again with the back-off, and the reload completes once the app loads.
#[test]
fn a_reload_that_cannot_load_the_app_keeps_the_old_workers_serving() {
    let s = Server::start("broken_deploy:app", &["-p", "2"]);
    let old = s.wait_workers(2, BOOT);
    let marker = s.tmp().join("broken");
    std::fs::write(&marker, "").unwrap();
    s.signal(libc::SIGHUP);
    let failed = "could not load the app; the 2 serving worker(s) go on serving";
    assert!(
        wait_until(BOOT, || s.log_count(failed) >= 2),
        "no second attempt:\n{}",
        s.stderr()
    );
    for _ in 0..4 {
        let pid = pid_in(&s.get("/").text());
        assert!(old.contains(&pid), "served by {pid}, not one of {old:?}");
    }
    assert!(!s.stderr().contains("shutting down"), "{}", s.stderr());
    std::fs::remove_file(&marker).unwrap();
    let mut now = Vec::new();
    let reloaded = wait_until(Duration::from_secs(20), || {
        now = s.workers();
        old.iter().all(|&p| proc_gone(p)) && now.len() == 2 && now.iter().all(|&p| s.booted(p))
    });
    assert!(reloaded, "the reload did not complete: workers {now:?}\n{}", s.stderr());
    assert!(now.contains(&pid_in(&s.get("/").text())));
}

/// Regression (found by review): a worker killed by a signal while loading
/// the app at the start (not an exception, which exits 4) was retried
/// forever with the back-off, and `zibai --daemon` never returned. After
/// five such deaths before anything served, the server stops with code 3.
#[test]
fn workers_killed_while_loading_the_app_at_the_start_stop_the_server() {
    let done = Server::builder("killed_at_import:app")
        .args(["-p", "1"])
        .run_to_exit(Duration::from_secs(20));
    assert_failed(
        &done,
        Some(3),
        &["5 workers died while loading the app, the last one was killed by SIGKILL"],
    );
    let boots = done.stderr.matches("Booting worker").count();
    assert_eq!(boots, 5, "{}", done.stderr);
}

/// Boot deaths at the start count in a row: a worker that boots ends the
/// run. Regression (found by review): they were a running total, so a
/// server whose workers crash now and then at import, with others
/// booting in between, stopped after five in all.
#[test]
fn boot_deaths_at_the_start_count_in_a_row() {
    let s = Server::builder("flaky_every_third:app")
        .args(["-p", "3"])
        .start_without_waiting();
    s.wait_workers(3, Duration::from_secs(20));
    assert!(s.log_count("died while loading") == 0, "{}", s.stderr());
    assert!(s.stderr().matches("exited with code 1").count() >= 5, "{}", s.stderr());
}

/// A master stopped while a worker loads the app does not count the stop
/// against the worker's --boot-timeout.
#[test]
fn a_stopped_master_leaves_a_booting_worker_alone() {
    let s = Server::builder("import_1s:app")
        .args(["-p", "1", "--boot-timeout", "2"])
        .start_without_waiting();
    assert!(
        wait_until(BOOT, || !s.workers().is_empty()),
        "no worker started: {}",
        s.stderr()
    );
    kill(s.pid(), libc::SIGSTOP);
    // The stall itself, longer than the boot timeout (not a wait for an event).
    std::thread::sleep(Duration::from_secs(3));
    kill(s.pid(), libc::SIGCONT);
    s.wait_workers(1, BOOT);
    assert!(!s.stderr().contains("timed out"), "{}", s.stderr());
}

/// Regression (found by review): a reload that changed --timeout applied
/// it to the old workers too, which beat and stop by the values they were
/// started with: lowering it aborted old workers still serving while their
/// successors booted. Here the successors cannot load the app, so the old
/// workers serve on, beating once a second, under a new 0.5 s timeout.
#[test]
fn a_reload_applies_a_new_timeout_to_new_workers_only() {
    let dir = TempDir::new("timeout-reload");
    let conf = dir.path().join("z.toml");
    std::fs::write(&conf, "timeout = 30\n").unwrap();
    let s = Server::start("broken_deploy:app", &["-p", "1", "--config", conf.to_str().unwrap()]);
    let old = s.wait_workers(1, BOOT);
    std::fs::write(s.tmp().join("broken"), "").unwrap();
    std::fs::write(&conf, "timeout = 0.5\n").unwrap();
    s.signal(libc::SIGHUP);
    let failed = "could not load the app; the 1 serving worker(s) go on serving";
    // Five failed boots, with the back-off between them (0, 0.1, 0.2 and
    // 0.4 s, plus the boots): well over a second of the old worker serving
    // under the new configuration.
    assert!(
        wait_until(BOOT, || s.log_count(failed) >= 5),
        "fewer than five attempts:\n{}",
        s.stderr()
    );
    assert!(!s.stderr().contains("timed out"), "{}", s.stderr());
    assert_eq!(pid_in(&s.get("/").text()), old[0]);
}

/// At the start a worker that cannot boot stops the server even when
/// another has booted meanwhile (here the second worker's before_serve
/// cannot take the lock the first holds). It used to be retried forever,
/// with READY sent and N-1 workers.
#[test]
fn a_boot_failure_at_the_start_stops_the_server_even_when_another_worker_booted() {
    let done = Server::builder("hooked:app")
        .args(["-p", "2", "--before-serve", "hooked:lock_hook"])
        .run_to_exit(Duration::from_secs(10));
    assert_failed(&done, Some(3), &["BlockingIOError"]);
}

/// A worker that is told to stop while its before_serve hook runs (a HUP
/// during a HUP makes it obsolete) leaves before it accepts anything. It
/// used to get SIGINT, start serving when the hook returned, and then cut
/// off at once what it had accepted.
#[test]
fn a_worker_stopped_in_its_before_serve_hook_never_serves() {
    let s = Server::start("hooked:app", &["-p", "1", "--before-serve", "hooked:slow_hook"]);
    let old = s.wait_workers(1, BOOT);
    std::fs::write(s.tmp().join("slow-hook"), "").unwrap();
    let load = Load::start(s.addr(), "/", &[LoadMode::Fresh, LoadMode::Fresh, LoadMode::KeepAlive]);
    assert!(load.wait_ok(20, Duration::from_secs(5)), "the load did not get going");
    s.signal(libc::SIGHUP);
    // The new worker is in its 3 s hook: make it obsolete.
    assert!(wait_until(BOOT, || s.log_count("hook-start") >= 2), "{}", s.stderr());
    s.signal(libc::SIGHUP);
    s.expect_log("Asked to stop while loading the app; exiting before serving", BOOT);
    std::fs::remove_file(s.tmp().join("slow-hook")).unwrap();
    let mut now = Vec::new();
    assert!(
        wait_until(Duration::from_secs(20), || {
            now = s.workers();
            old.iter().all(|&p| proc_gone(p)) && now.len() == 1 && s.booted(now[0])
        }),
        "the reload did not complete: {now:?}\n{}",
        s.stderr()
    );
    let target = load.ok() + 20;
    assert!(
        load.wait_ok(target, Duration::from_secs(5)),
        "no answers after the reload"
    );
    let report = load.stop();
    assert_no_failures(&report);
}

#[test]
fn master_sigkill_takes_workers_down() {
    let mut s = start(&["-p", "2"]);
    let pids = s.wait_workers(2, BOOT);
    let _guard = leftovers(&s, &pids);
    s.signal(libc::SIGKILL);
    s.wait_exit(Duration::from_secs(5));
    let limit = Duration::from_secs(5);
    assert!(
        wait_until(limit, || pids.iter().all(|&p| proc_gone(p))),
        "workers still alive {limit:?} after the master was killed: {:?}",
        pids.iter().filter(|&&p| !proc_gone(p)).collect::<Vec<_>>()
    );
}

/// The fds of the test process itself that a child inherits (not
/// close-on-exec), as `(fd, target)`: whatever ran the tests may leave some
/// open, and the server passes on what it was given.
fn inherited_from_us() -> BTreeSet<(i32, String)> {
    fd_targets(std::process::id() as i32)
        .into_iter()
        .filter(|(fd, _)| {
            // SAFETY: F_GETFD on an fd number only reads its flags; one
            // closed since is an error, not undefined behaviour.
            let flags = unsafe { libc::fcntl(*fd, libc::F_GETFD) };
            flags >= 0 && flags & libc::FD_CLOEXEC == 0
        })
        .collect()
}

/// Socket and pipe targets (which name their inode) of `pid`'s fds 3 and up.
fn channels(pid: i32) -> BTreeSet<String> {
    fd_targets(pid)
        .into_iter()
        .filter(|(fd, t)| *fd > 2 && (t.starts_with("socket:") || t.starts_with("pipe:")))
        .map(|(_, t)| t)
        .collect()
}

#[test]
fn no_fd_leaks_into_workers() {
    let s = Server::start("fds:app", &["-p", "2"]);
    let pids = s.wait_workers(2, BOOT);
    let ours = inherited_from_us();
    let ours_targets: BTreeSet<String> = ours.iter().map(|(_, t)| t.clone()).collect();

    // At import time, before serving, every fd but stdio is close-on-exec:
    // nothing reaches what the app may spawn.
    for &pid in &pids {
        let path = s.tmp().join(format!("fds-{pid}.txt"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let fds: Vec<(i32, bool, String)> = crate::util::Kv::parse(&text)
            .all("fd")
            .iter()
            .map(|v| {
                let mut f = v.splitn(3, ',');
                let fd = f.next().unwrap().parse().unwrap();
                let cloexec = f.next().unwrap() == "1";
                (fd, cloexec, f.next().unwrap().to_string())
            })
            .collect();
        let open: Vec<_> = fds
            .iter()
            .filter(|(fd, cloexec, t)| *fd > 2 && !cloexec && !ours.contains(&(*fd, t.clone())))
            .collect();
        assert!(
            open.is_empty(),
            "worker {pid} imports the app with inheritable fds {open:?}; all: {fds:?}"
        );
        // Its listener and its end of the control socket, nothing more.
        let socks: Vec<_> = fds
            .iter()
            .filter(|(_, _, t)| t.starts_with("socket:") && !ours_targets.contains(t))
            .collect();
        assert_eq!(socks.len(), 2, "worker {pid}'s sockets at import: {socks:?}");
    }

    // Now, serving: the only socket or pipe a worker shares with the
    // master or another worker is the listener (not a control socket of
    // another worker, not the master's signal pipe).
    let master: BTreeSet<String> = channels(s.pid()).difference(&ours_targets).cloned().collect();
    let w: Vec<BTreeSet<String>> = pids.iter().map(|&p| channels(p)).collect();
    let shared_0: BTreeSet<_> = master.intersection(&w[0]).cloned().collect();
    let shared_1: BTreeSet<_> = master.intersection(&w[1]).cloned().collect();
    let between: BTreeSet<_> = w[0]
        .intersection(&w[1])
        .filter(|t| !ours_targets.contains(*t))
        .cloned()
        .collect();
    assert_eq!(
        shared_0.len(),
        1,
        "worker {} shares {shared_0:?} with the master {master:?}",
        pids[0]
    );
    assert_eq!(shared_0, shared_1, "the workers share different things with the master");
    assert_eq!(between, shared_0, "the workers share {between:?}");
    assert!(shared_0.iter().all(|t| t.starts_with("socket:")));
    assert_eq!(s.get("/").status, 200);
}

/// A request that reached a worker's accepted connection before its
/// graceful stop began is answered, even if every app thread was busy
/// then: the client sent it on a connection the server had accepted, so for
/// the client it is in flight. (Under load this is a fresh connection
/// accepted by a worker just before HUP, TTOU or max requests stop it.)
#[test]
fn graceful_stop_answers_a_request_waiting_on_an_accepted_connection() {
    let s = start(&["-p", "1", "-w", "2"]);
    let old = s.wait_workers(1, BOOT)[0];
    let sockets = || channels(old).iter().filter(|t| t.starts_with("socket:")).count();
    // One app thread busy, the other waiting for connections.
    let (mut a, pid) = slow_request(&s, 1.5, "a", Duration::from_secs(5));
    assert_eq!(pid, Some(old));
    let base = sockets();
    let mut c = s.connect();
    assert!(
        wait_until(Duration::from_secs(5), || sockets() > base),
        "worker {old} did not accept the connection"
    );
    // The second thread busy too: nothing reads the connection now.
    let (mut b, pid) = slow_request(&s, 1.5, "b", Duration::from_secs(5));
    assert_eq!(pid, Some(old));
    c.send(b"GET /waiting HTTP/1.1\r\nHost: x\r\n\r\n");
    s.signal(libc::SIGHUP);
    s.expect_log(&format!("Stopping worker {old} gracefully"), BOOT);
    assert_eq!(a.response().text(), format!("slept a pid={old}"));
    assert_eq!(b.response().text(), format!("slept b pid={old}"));
    let r = c.read_response(false).unwrap_or_else(|e| {
        let logged = s
            .log_lines_of(old)
            .into_iter()
            .find(|l| l.contains("GET /waiting"))
            .unwrap_or_default();
        panic!("the request sent before HUP got no response ({e}); the server's access line for it: {logged:?}")
    });
    assert_eq!((r.status, r.text()), (200, format!("pid={old}")));
    assert_eq!(r.header("connection"), Some("close"), "{r:?}");
}

/// At the start, an app that does not load within --boot-timeout stops
/// the server (exit 3), as one that cannot be imported does (4). Before,
/// the master aborted and restarted it every --boot-timeout forever, and
/// `--daemon` never returned.
#[test]
fn boot_timeout_at_the_start_stops_the_server() {
    let done = Server::builder("slow_import:app")
        .args(["-p", "1", "--boot-timeout", "1"])
        .run_to_exit(Duration::from_secs(10));
    assert_failed(
        &done,
        Some(3),
        &[
            "timed out (boot); aborting it",
            "was killed by SIGABRT",
            "A worker failed to boot; shutting down (exit code 3)",
        ],
    );
    assert_eq!(done.stderr.matches("Booting worker").count(), 1, "{}", done.stderr);
}

#[test]
fn repeated_early_deaths_back_off() {
    let s = Server::builder("crash_soon:app")
        .args(["-p", "1"])
        .start_without_waiting();
    s.expect_log("early worker deaths in a row; next start in", Duration::from_secs(10));
    // Doubling from 100 ms: within 3 s of the first boot there is room for
    // only a handful of restarts, not a tight loop.
    let started = Instant::now();
    s.expect_log("Booting worker", Duration::from_secs(1));
    while started.elapsed() < Duration::from_secs(3) {
        assert!(s.log_count("Booting worker") < 15, "respawn loop:\n{}", s.stderr());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(s.log_count("exited with code 7") >= 2);
}

/// A run of early deaths ends once a worker has served for 5 s: a later
/// early death starts a new count, with no delay, instead of inheriting the
/// run's (with a longer run, up to 10 s with no worker).
#[test]
fn a_worker_that_served_ends_a_run_of_early_deaths() {
    let s = Server::builder("flaky_import:app")
        .args(["-p", "1"])
        .start_without_waiting();
    s.expect_log("3 early worker deaths in a row", BOOT);
    let first = s.wait_workers(1, BOOT);
    s.expect_log(
        "Workers serve again after 3 early deaths; the back-off starts over",
        BOOT,
    );
    // The next worker dies as soon as it has booted: one early death.
    s.signal(libc::SIGTTIN);
    let mut second = Vec::new();
    assert!(
        wait_until(BOOT, || {
            second = s.workers().into_iter().filter(|p| !first.contains(p)).collect();
            second.len() == 1 && s.booted(second[0])
        }),
        "no second worker"
    );
    let _left = leftovers(&s, &second);
    kill(second[0], libc::SIGKILL);
    s.expect_log(&format!("Worker {} was killed by SIGKILL", second[0]), BOOT);
    s.wait_workers(2, BOOT);
    assert_eq!(s.log_count("early worker deaths in a row"), 2, "{}", s.stderr());
}

#[test]
fn hooks_run_in_every_worker() {
    let mut args = vec!["-p", "2"];
    args.extend(crate::lifecycle::hooks_args());
    let mut s = start(&args);
    s.wait_workers(2, BOOT);
    s.signal(libc::SIGTERM);
    let st = s.wait_exit(Duration::from_secs(10));
    assert_eq!(st.code(), Some(0), "{}", describe_status(&st));
    let log = std::fs::read_to_string(s.tmp().join("hooks.log")).unwrap_or_default();
    for hook in ["before_serve", "before_graceful_exit", "before_died"] {
        assert_eq!(log.lines().filter(|l| *l == hook).count(), 2, "{hook} in:\n{log}");
    }
}

#[test]
fn usr1_is_forwarded_to_every_worker() {
    let s = Server::builder("pids:app")
        .args(["-p", "2"])
        .env("ZIBAI_LOG", "debug")
        .start();
    let pids = s.wait_workers(2, BOOT);
    s.signal(libc::SIGUSR1);
    s.expect_log("Received SIGUSR1: reopening logs", Duration::from_secs(5));
    for p in pids {
        let told = wait_until(Duration::from_secs(5), || {
            s.log_lines_of(p).iter().any(|l| l.contains("reopening logs"))
        });
        assert!(told, "worker {p} was not told to reopen its logs");
    }
}

/// The master never embeds Python: the `zibai` binary does not even map
/// libpython (only `zibai-worker` links it), which keeps the master small.
#[test]
fn the_master_does_not_map_libpython() {
    let s = start(&["-p", "1"]);
    let workers = s.wait_workers(1, BOOT);
    let maps = |pid: i32| std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    assert!(!maps(s.pid()).contains("libpython"), "the master maps libpython");
    assert!(
        maps(workers[0]).contains("libpython"),
        "the check itself: a worker does"
    );
}
