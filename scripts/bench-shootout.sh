#!/usr/bin/env bash
# Side-by-side broadcast benchmark: the hand-written ceiling-server (no channel
# layer) against the shootout example on our layers, in one sitting, with the
# same load generator. Prints one JSON line per run and the ratios.
#
#   scripts/bench-shootout.sh [CLIENTS] [SECONDS] [MAX_IN_FLIGHT]
#
# Defaults: 1000 clients, 10 s, --max 16. Loopback only; every process it
# starts is killed on exit. Needs redis-server on PATH for the Redis runs.
set -euo pipefail
cd "$(dirname "$0")/.."

clients=${1:-1000}
seconds=${2:-10}
max=${3:-16}
out=target/bench-shootout
mkdir -p "$out"

cargo build --release -q -p loadgen -p shootout
bin=target/release

pids=()
cleanup() {
    stop_servers
}
trap cleanup EXIT

# start NAME CMD...: starts a server printing `listening on ADDR`, sets $addr and $pid.
start() {
    local name=$1
    shift
    "$@" >"$out/$name.out" 2>"$out/$name.err" &
    pid=$!
    pids+=("$pid")
    for _ in $(seq 100); do
        addr=$(sed -n 's/^listening on //p' "$out/$name.out" | head -1)
        [ -n "$addr" ] && return 0
        sleep 0.1
    done
    echo "bench: $name did not start; see $out/$name.err" >&2
    exit 1
}

stop_servers() {
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    pids=()
}

# load NAME URL... -- PID...: runs loadgen and prints its JSON line.
load() {
    local name=$1
    shift
    local args=()
    while [ "$1" != "--" ]; do args+=(--url "$1"); shift; done
    shift
    for pid in "$@"; do args+=(--pid "$pid"); done
    "$bin/loadgen" "${args[@]}" --clients "$clients" --mode broadcast --max "$max" \
        --duration "$seconds" --warmup 2 --json-only >"$out/$name.json"
    printf '%-22s %s\n' "$name" "$(cat "$out/$name.json")"
}

redis_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start ceiling "$bin/ceiling-server" --bind 127.0.0.1:0 --mode local
load ceiling-local "ws://$addr/ws" -- "$pid"
stop_servers

start shootout "$bin/shootout" --bind 127.0.0.1:0 --layer memory
load shootout-memory "ws://$addr/ws" -- "$pid"
stop_servers

port=$(redis_port)
redis-server --port "$port" --save "" --appendonly no --bind 127.0.0.1 >"$out/redis.log" 2>&1 &
redis_pid=$!
trap 'cleanup; kill $redis_pid 2>/dev/null || true' EXIT
sleep 0.5
url="redis://127.0.0.1:$port"

start ceiling-a "$bin/ceiling-server" --bind 127.0.0.1:0 --mode redis --redis-url "$url"
a=$addr pa=$pid
start ceiling-b "$bin/ceiling-server" --bind 127.0.0.1:0 --mode redis --redis-url "$url"
load ceiling-redis-2proc "ws://$a/ws" "ws://$addr/ws" -- "$pa" "$pid"
stop_servers

for layer in redis redis-pubsub; do
    start "shootout-$layer-a" "$bin/shootout" --bind 127.0.0.1:0 --layer "$layer" --redis-url "$url"
    a=$addr pa=$pid
    start "shootout-$layer-b" "$bin/shootout" --bind 127.0.0.1:0 --layer "$layer" --redis-url "$url"
    load "shootout-$layer-2proc" "ws://$a/ws" "ws://$addr/ws" -- "$pa" "$pid"
    stop_servers
done

python3 - "$out" <<'EOF'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
r = {p.stem: json.loads(p.read_text()) for p in out.glob("*.json")}
def line(name, base):
    run, ref = r[name], r[base]
    valid = "valid" if run["lost"] == 0 and run["duplicated"] == 0 else "INVALID (lost/duplicated)"
    print(f"{name:24} {run['deliveries_per_sec']:>12,.0f}/s  {run['deliveries_per_sec'] / ref['deliveries_per_sec']:.2f}x "
          f"{base}  p99 {run['latency_ms']['p99']:.1f} ms  rss/conn {run.get('rss_per_connection_bytes')}  {valid}")
line("ceiling-local", "ceiling-local")
line("shootout-memory", "ceiling-local")
line("ceiling-redis-2proc", "ceiling-redis-2proc")
line("shootout-redis-2proc", "ceiling-redis-2proc")
line("shootout-redis-pubsub-2proc", "ceiling-redis-2proc")
EOF
