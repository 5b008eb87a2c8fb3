"""Shared by bjoern_run.py and meinheld_run.py, which have no process manager of
their own: bind one listening socket, import the app once, then serve it from
this process (PROCS = 1) or from PROCS forked children sharing the socket (the
parent then only waits, forwards TERM/INT to the children and exits when they
are gone).

    RUNNER MODULE:ATTR HOST:PORT PROCS

The current directory is put first on sys.path, as the other servers do.
"""

import importlib
import os
import signal
import socket
import sys


def parse_args(argv):
    if len(argv) != 4:
        sys.exit(f"usage: {argv[0]} MODULE:ATTR HOST:PORT PROCS")
    spec, addr, procs = argv[1:]
    host, _, port = addr.rpartition(":")
    return spec, host, int(port), int(procs)


def load_app(spec):
    module, _, attr = spec.partition(":")
    sys.path.insert(0, os.getcwd())
    return getattr(importlib.import_module(module), attr or "app")


def bind(host, port, backlog=2048):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    sock.setblocking(False)
    return sock


def serve(run_one, procs):
    """run_one() serves forever in the calling process."""
    if procs <= 1:
        run_one()
        return
    children = []
    for _ in range(procs):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                run_one()
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        children.append(pid)

    def forward(signum, _frame):
        for pid in children:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    status = 0
    while children:
        try:
            pid, code = os.wait()
        except ChildProcessError:
            break
        if pid in children:
            children.remove(pid)
            if code and children:
                # One child died on its own: the server is broken, stop the rest.
                status = 1
                forward(signal.SIGTERM, None)
    sys.exit(status)
