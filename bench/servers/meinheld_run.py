"""meinheld with N processes, like bjoern_run.py: binds the socket, imports the
app and forks N children running meinheld on it (N = 1: this process).

meinheld's defaults are changed where they would skew the comparison: no access
log (it prints one line per request to stdout otherwise) and keep-alive on with
a 5 s idle timeout (zibai's default; meinheld closes every connection without it).

    python bench/servers/meinheld_run.py MODULE:ATTR HOST:PORT PROCS
"""

import sys

from meinheld import server
from prefork import bind, load_app, parse_args, serve


def run_one(sock, app):
    server.set_access_logger(None)
    server.set_keepalive(5)
    server.set_listen_socket(sock.fileno())
    server.run(app)


if __name__ == "__main__":
    spec, host, port, procs = parse_args(sys.argv)
    app = load_app(spec)
    sock = bind(host, port)
    serve(lambda: run_one(sock, app), procs)
