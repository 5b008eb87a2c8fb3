//! The master's decisions as pure functions, so they can be tested without
//! processes: which workers to start or stop for the desired count, and
//! what a wait status says about how a worker ended.

use nix::sys::signal::Signal;
use nix::sys::wait::WaitStatus;

/// A worker as the decisions see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkerView {
    pub id: u64,
    /// Workers of an older generation are replaced on HUP.
    pub generation: u64,
    pub state: State,
    /// Served its max requests and asked to be replaced.
    pub retiring: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Started, app not loaded yet.
    Booting,
    /// Serving.
    Running,
    /// Told to stop; it no longer counts.
    Stopping,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Spawn,
    /// Stop this worker gracefully.
    Stop(u64),
}

/// What to do so that `desired` up-to-date workers serve, without capacity
/// ever dropping for a replacement: a worker being replaced (old
/// generation, or retiring) is stopped only once its successor has booted,
/// and successors boot one at a time. Ids grow with age.
///
/// A worker of an older generation that is still booting (a HUP during a
/// HUP) never served and is replaced before it does: it is stopped at once
/// and counts neither as capacity nor as a successor. (Counted as capacity,
/// it used to let the only serving worker be stopped while it booted.)
pub fn reconcile(desired: usize, generation: u64, workers: &[WorkerView]) -> Vec<Action> {
    let outgoing = |w: &&WorkerView| w.generation != generation || w.retiring;
    let obsolete = |w: &&WorkerView| w.generation != generation && w.state == State::Booting;
    let live = || {
        workers
            .iter()
            .filter(move |w| w.state != State::Stopping && !obsolete(w))
    };
    let fresh = live().filter(|w| !outgoing(w)).count();
    let replacing = live().filter(outgoing).count();
    let booting = live().filter(|w| w.state == State::Booting).count();
    let mut actions: Vec<Action> = workers
        .iter()
        .filter(|w| w.state != State::Stopping && obsolete(w))
        .map(|w| Action::Stop(w.id))
        .collect();
    if fresh < desired {
        let spawn = if replacing > 0 {
            usize::from(booting == 0)
        } else {
            desired - fresh
        };
        actions.extend(std::iter::repeat_n(Action::Spawn, spawn));
    }
    // Capacity now: running workers, outgoing ones still serving too.
    let fresh_running = live().filter(|w| !outgoing(w) && w.state == State::Running).count();
    let serving = fresh_running + replacing;
    let mut surplus = serving.saturating_sub(desired);
    // Retiring first, then older generations, oldest first, then the newest
    // fresh workers (TTOU).
    let mut order: Vec<&WorkerView> = live().filter(outgoing).collect();
    order.sort_by_key(|w| (!w.retiring, w.id));
    let mut fresh_newest: Vec<&WorkerView> = live().filter(|w| !outgoing(w)).collect();
    fresh_newest.sort_by_key(|w| std::cmp::Reverse(w.id));
    for w in order.into_iter().chain(fresh_newest) {
        if surplus == 0 {
            break;
        }
        actions.push(Action::Stop(w.id));
        surplus -= 1;
    }
    actions
}

/// How a worker ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    Exited(i32),
    Signaled(Signal),
    Other,
}

/// gunicorn's exit codes for a worker that cannot start: they stop the
/// whole server instead of a respawn loop.
pub const WORKER_BOOT_ERROR: i32 = 3;
pub const APP_LOAD_ERROR: i32 = 4;

pub fn classify(status: WaitStatus) -> Ending {
    match status {
        WaitStatus::Exited(_, code) => Ending::Exited(code),
        WaitStatus::Signaled(_, sig, _) => Ending::Signaled(sig),
        _ => Ending::Other,
    }
}

impl Ending {
    /// The server must halt rather than replace this worker.
    pub fn is_boot_failure(&self) -> bool {
        matches!(self, Ending::Exited(WORKER_BOOT_ERROR | APP_LOAD_ERROR))
    }

    /// A line for the log.
    pub fn describe(&self) -> String {
        match self {
            Ending::Exited(0) => "exited normally".to_string(),
            Ending::Exited(APP_LOAD_ERROR) => "exited: the app could not be loaded (code 4)".to_string(),
            Ending::Exited(WORKER_BOOT_ERROR) => "exited: the worker could not boot (code 3)".to_string(),
            Ending::Exited(code) => format!("exited with code {code}"),
            Ending::Signaled(Signal::SIGKILL) => {
                "was killed by SIGKILL (if zibai did not send it: out of memory? see `dmesg`)".to_string()
            }
            Ending::Signaled(sig) => format!("was killed by {sig}"),
            Ending::Other => "ended".to_string(),
        }
    }
}

/// Delay before the next spawn after `crashes` early deaths in a row:
/// nothing for the first, then doubling from 100 ms to at most 10 s.
pub fn backoff(crashes: u32) -> std::time::Duration {
    if crashes <= 1 {
        return std::time::Duration::ZERO;
    }
    let ms = 100u64.saturating_mul(1 << (crashes - 2).min(7));
    std::time::Duration::from_millis(ms.min(10_000))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::unistd::Pid;

    fn w(id: u64, generation: u64, state: State) -> WorkerView {
        WorkerView {
            id,
            generation,
            state,
            retiring: false,
        }
    }

    fn spawns(a: &[Action]) -> usize {
        a.iter().filter(|a| **a == Action::Spawn).count()
    }

    fn stops(a: &[Action]) -> Vec<u64> {
        a.iter()
            .filter_map(|a| match a {
                Action::Stop(id) => Some(*id),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn startup_spawns_all_at_once() {
        assert_eq!(spawns(&reconcile(4, 0, &[])), 4);
        let booting = [w(1, 0, State::Booting), w(2, 0, State::Booting)];
        assert!(reconcile(2, 0, &booting).is_empty());
    }

    #[test]
    fn ttin_and_ttou() {
        let two = [w(1, 0, State::Running), w(2, 0, State::Running)];
        assert_eq!(reconcile(3, 0, &two), vec![Action::Spawn]);
        // One fewer: the newest goes.
        assert_eq!(reconcile(1, 0, &two), vec![Action::Stop(2)]);
        // A stopping worker no longer counts.
        let after = [w(1, 0, State::Running), w(2, 0, State::Stopping)];
        assert!(reconcile(1, 0, &after).is_empty());
    }

    #[test]
    fn a_dead_worker_is_replaced() {
        assert_eq!(reconcile(2, 0, &[w(1, 0, State::Running)]), vec![Action::Spawn]);
    }

    /// A second HUP while the first one's successor boots: the booting
    /// worker is obsolete and stopped, a worker of the new generation takes
    /// its place, and the only serving worker stays until that one booted.
    #[test]
    fn hup_during_hup_keeps_the_serving_worker() {
        // -p 1: worker 1 (generation 0) serves, worker 2 (generation 1)
        // boots; now generation 2.
        let ws = [w(1, 0, State::Running), w(2, 1, State::Booting)];
        assert_eq!(reconcile(1, 2, &ws), vec![Action::Stop(2), Action::Spawn]);
        let ws = [
            w(1, 0, State::Running),
            w(2, 1, State::Stopping),
            w(3, 2, State::Booting),
        ];
        assert!(reconcile(1, 2, &ws).is_empty());
        let ws = [w(1, 0, State::Running), w(3, 2, State::Running)];
        assert_eq!(reconcile(1, 2, &ws), vec![Action::Stop(1)]);
        // -p 2, one old worker already replaced when the second HUP comes.
        let ws = [
            w(2, 0, State::Running),
            w(3, 1, State::Running),
            w(4, 1, State::Booting),
        ];
        assert_eq!(reconcile(2, 2, &ws), vec![Action::Stop(4), Action::Spawn]);
    }

    #[test]
    fn hup_replaces_one_at_a_time_and_never_drops_capacity() {
        // Generation 1 after HUP; two old workers serving.
        let mut ws = vec![w(1, 0, State::Running), w(2, 0, State::Running)];
        let mut next = 3;
        let mut steps = 0;
        loop {
            steps += 1;
            assert!(steps < 20, "no convergence: {ws:?}");
            let actions = reconcile(2, 1, &ws);
            let serving = ws.iter().filter(|w| w.state == State::Running).count();
            assert!(serving >= 2, "capacity dropped: {ws:?}");
            assert!(spawns(&actions) <= 1, "more than one successor at a time");
            if actions.is_empty() {
                // Converged, or waiting for a boot: finish one.
                match ws.iter_mut().find(|w| w.state == State::Booting) {
                    Some(b) => b.state = State::Running,
                    None => break,
                }
                continue;
            }
            for a in actions {
                match a {
                    Action::Spawn => {
                        ws.push(w(next, 1, State::Booting));
                        next += 1;
                    }
                    Action::Stop(id) => {
                        let v = ws.iter_mut().find(|w| w.id == id).unwrap();
                        assert_eq!(v.generation, 0, "stopped a new worker");
                        v.state = State::Stopping;
                    }
                }
            }
            ws.retain(|w| w.state != State::Stopping);
        }
        assert!(ws.iter().all(|w| w.generation == 1 && w.state == State::Running));
        assert_eq!(ws.len(), 2);
    }

    #[test]
    fn a_retiring_worker_is_stopped_once_its_successor_runs() {
        let mut ws = vec![w(1, 0, State::Running), w(2, 0, State::Running)];
        ws[0].retiring = true;
        assert_eq!(reconcile(2, 0, &ws), vec![Action::Spawn]);
        ws.push(w(3, 0, State::Booting));
        assert!(
            reconcile(2, 0, &ws).is_empty(),
            "keep serving while the successor boots"
        );
        ws[2].state = State::Running;
        assert_eq!(stops(&reconcile(2, 0, &ws)), vec![1]);
    }

    #[test]
    fn endings() {
        let pid = Pid::from_raw(42);
        assert!(classify(WaitStatus::Exited(pid, 4)).is_boot_failure());
        assert!(classify(WaitStatus::Exited(pid, 3)).is_boot_failure());
        assert!(!classify(WaitStatus::Exited(pid, 0)).is_boot_failure());
        let killed = classify(WaitStatus::Signaled(pid, Signal::SIGKILL, false));
        assert!(killed.describe().contains("out of memory"));
        assert_eq!(
            classify(WaitStatus::Signaled(pid, Signal::SIGSEGV, true)),
            Ending::Signaled(Signal::SIGSEGV)
        );
    }

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(0), std::time::Duration::ZERO);
        assert_eq!(backoff(1), std::time::Duration::ZERO);
        assert_eq!(backoff(2).as_millis(), 100);
        assert_eq!(backoff(3).as_millis(), 200);
        assert_eq!(backoff(30).as_millis(), 10_000);
    }
}
