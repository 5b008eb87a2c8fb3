#!/usr/bin/env python3
"""Memory per idle keep-alive connection: starts a server on bench/apps/hello.py
(one process), opens N connections that each make one request and then stay
open, and prints how much the serving process's VmRSS grew per connection.

    bench/idle_conns.py [N]        # N = 3000; zibai, and bjoern if bench/venv has it

Run bench/run --setup (or make bench) once first: it builds zibai and makes
bench/venv. Standard library only; everything on 127.0.0.1.
"""

import os
import resource
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
VENV = BENCH / "venv"
PORT = 18391
REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def servers():
    yield "zibai", [str(ROOT / "target" / "release" / "zibai"), "hello:app", "-p", "1",
                    "-l", f"127.0.0.1:{PORT}", "--no-access-log", "--keep-alive", "300",
                    "--virtualenv", str(VENV)], True
    py = VENV / "bin" / "python"
    if subprocess.run([str(py), "-c", "import bjoern"], capture_output=True).returncode == 0:
        yield "bjoern", [str(py), str(BENCH / "servers" / "bjoern_run.py"), "hello:app",
                         f"127.0.0.1:{PORT}", "1"], False


def rss_kb(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def wait_ready(deadline):
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", PORT), timeout=1) as s:
                s.sendall(REQUEST)
                if s.recv(4096):
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("the server did not answer within its deadline")


def serving_pid(proc, has_master):
    """The process that holds the connections: zibai's one worker, or bjoern itself."""
    if not has_master:
        return proc.pid
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    if len(children) != 1:
        raise RuntimeError(f"expected one worker, found {children}")
    return int(children[0])


def measure(name, argv, has_master, n):
    proc = subprocess.Popen(argv, cwd=BENCH / "apps", stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    conns = []
    try:
        wait_ready(time.monotonic() + 30)
        pid = serving_pid(proc, has_master)
        time.sleep(0.5)  # let the start-up settle before the baseline (not synchronisation)
        before = rss_kb(pid)
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", PORT), timeout=10)
            s.sendall(REQUEST)
            conns.append(s)
        for s in conns:
            got = b""
            while b"Hello" not in got:
                chunk = s.recv(4096)
                if not chunk:
                    raise RuntimeError(f"{name} closed a connection before answering")
                got += chunk
        after = rss_kb(pid)
        print(f"{name:8} {n} idle keep-alive connections: VmRSS {before} -> {after} kB, "
              f"{(after - before) * 1024 / n:,.0f} bytes per connection")
    finally:
        for s in conns:
            s.close()
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = n + 100
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    for name, argv, has_master in servers():
        measure(name, argv, has_master, n)


if __name__ == "__main__":
    main()
