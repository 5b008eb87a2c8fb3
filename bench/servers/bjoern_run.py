"""bjoern with N processes: bjoern has no process manager, so this binds the
socket, imports the app and forks N children that each run bjoern's event loop
on the shared socket (N = 1: serves from this process).

    python bench/servers/bjoern_run.py MODULE:ATTR HOST:PORT PROCS
"""

import sys

import bjoern
from prefork import bind, load_app, parse_args, serve

if __name__ == "__main__":
    spec, host, port, procs = parse_args(sys.argv)
    app = load_app(spec)
    sock = bind(host, port)
    serve(lambda: bjoern.server_run(sock, app), procs)
