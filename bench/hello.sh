#!/usr/bin/env bash
# First side-by-side figure: examples/hello.py under wrk, zibai vs bjoern,
# one process each, alternating runs. Installs what it needs (wrk and
# libev-dev from Debian, bjoern in bench/venv). Prints one line per run and
# the medians; the full benchmark (more peers and scenarios) is bench/run.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}
DURATION=${DURATION:-5s}
CONNS=${CONNS:-32}
THREADS=${THREADS:-10}

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
if [ ! -x bench/venv/bin/python ] || ! bench/venv/bin/python -c 'import bjoern' 2>/dev/null; then
    dpkg -s libev-dev >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq libev-dev; }
    python3 -m venv bench/venv
    bench/venv/bin/pip install -q bjoern
fi
cargo build --release -q

port=18431
pid=
stop() {
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    pid=
}
trap stop EXIT
wait_port() {
    for _ in $(seq 100); do
        curl -sf "http://127.0.0.1:$port/" >/dev/null && return 0
        sleep 0.1
    done
    echo "server on $port did not come up" >&2; exit 1
}
start() {
    case $1 in
        zibai) target/release/zibai examples.hello:app -l 127.0.0.1:$port --no-access-log -w "$THREADS" 2>/dev/null & ;;
        bjoern) bench/venv/bin/python -c "
import sys; sys.path.insert(0, 'examples')
import bjoern, hello
bjoern.run(hello.app, '127.0.0.1', $port)" & ;;
    esac
    pid=$!
    wait_port
}
declare -A results
for run in $(seq "$RUNS"); do
    for server in zibai bjoern; do
        start $server
        out=$(wrk -t1 -c"$CONNS" -d"$DURATION" --latency "http://127.0.0.1:$port/")
        rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
        p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
        echo "run $run $server: $rps req/s, p99 $p99"
        results[$server]+="$rps "
        stop
    done
done
for server in zibai bjoern; do
    echo "$server median: $(tr ' ' '\n' <<<"${results[$server]}" | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}') req/s"
done
