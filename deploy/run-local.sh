#!/bin/sh
# `make run`: profstore on ./data with profstore.example.yaml, scraping a demo Go program
# (tests/gotarget, standard library only) on 127.0.0.1:6060 when Go is installed.
set -eu
BIN=${1:-.venv/bin}
demo_pid=""
cleanup() {
    if [ -n "$demo_pid" ]; then kill "$demo_pid" 2>/dev/null || true; fi
}
trap cleanup EXIT INT TERM

# First, so a second `make run` stops at the data directory's lock ("in use by another process (PID …)")
# before it starts a second demo.
"$BIN/profstore" migrate --data-dir ./data

if command -v go >/dev/null 2>&1; then
    echo "building the demo Go service (tests/gotarget) ..."
    (cd tests/gotarget && go build -trimpath -o ../../.venv/gotarget .)
    .venv/gotarget -listen 127.0.0.1:6060 &
    demo_pid=$!
    echo "demo Go service: http://127.0.0.1:6060/debug/pprof/ (pid $demo_pid), scraped every 15 s"
    echo "see it: .venv/bin/profstore targets ; curl -s 'http://127.0.0.1:4040/api/v1/targets'"
    echo "its CPU profiler is busy with profstore's scrapes; for CPU profiles by hand: .venv/gotarget -out DIR (see README)"
else
    echo "Go is not installed, so no demo service runs. To scrape your own Go services, edit"
    echo "profstore.example.yaml: put their host:port under scrape_configs[].static_configs[].targets"
    echo "(they must import net/http/pprof), then run 'make run' again or POST /-/reload."
fi
"$BIN/profstore" serve --config profstore.example.yaml --data-dir ./data --listen 127.0.0.1:4040
