#!/usr/bin/env bash
# 100,000 WebSocket connections on one machine: 6 shootout processes on the Redis core
# layer over one private redis-server, held by 6 loadgen processes; then one broadcast to
# everyone.
#
#   scripts/bench-100k.sh [CLIENTS] [SERVERS] [LAYER]     # defaults: 100000 6 redis
#
# LAYER: redis (core), redis-pubsub, or ceiling (the hand-written ceiling-server in its
# Redis mode, same read buffer as ours: what this machine does with no layer at all).
#
# Reports (one JSON line, then a summary): connect failures, total server RSS before the
# clients, with every client connected and idle, and after one broadcast reached everyone;
# RSS per connection at both points; the time that broadcast took to reach every client
# (latency max) and its p99; lost and duplicated (both must be 0).
#
# Each process may open 20,000 files here (the hard nofile limit), so each server holds
# CLIENTS/SERVERS connections (`--max-connections` is raised to match) and each loadgen
# process as many. Clients connect from 127.0.0.2..127.0.0.(SERVERS+1), one source
# address per server, so no (source, destination) pair needs more than the ~28,000
# ephemeral ports. Bounded: the load run is killed after 10 minutes; every process the
# script starts is killed on exit. Results: target/bench-100k/.
set -euo pipefail
cd "$(dirname "$0")/.."

clients=${1:-100000}
servers=${2:-6}
layer=${3:-redis}
out=target/bench-100k
rm -rf "$out"
mkdir -p "$out"
per_server=$(((clients + servers - 1) / servers))
ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" -le "$per_server" ]; then
    echo "bench-100k: nofile limit $(ulimit -n) is too low for $per_server connections per process" >&2
    exit 1
fi

# NO_BUILD=1 uses the release binaries as they are (e.g. while another build holds the lock).
[ -n "${NO_BUILD:-}" ] || cargo build --release -q -p loadgen -p shootout
bin=target/release

pids=()
cleanup() {
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
redis-server --port "$port" --save "" --appendonly no --bind 127.0.0.1 --maxclients 1000 \
    >"$out/redis.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do
    redis-cli -p "$port" ping >/dev/null 2>&1 && break
    sleep 0.1
done

args=()
for i in $(seq "$servers"); do
    if [ "$layer" = ceiling ]; then
        # The hand-written ceiling (no layer: one Redis PUBLISH per broadcast), for the
        # hardware's own figure beside ours.
        "$bin/ceiling-server" --bind 127.0.0.1:0 --mode redis \
            --redis-url "redis://127.0.0.1:$port" --read-buffer-bytes 256 \
            >"$out/server-$i.out" 2>"$out/server-$i.err" &
    else
        "$bin/shootout" --bind 127.0.0.1:0 --layer "$layer" --redis-url "redis://127.0.0.1:$port" \
            --max-connections "$((per_server + 100))" --idle-timeout 0 \
            >"$out/server-$i.out" 2>"$out/server-$i.err" &
    fi
    pid=$!
    pids+=("$pid")
    addr=
    for _ in $(seq 100); do
        addr=$(sed -n 's/^listening on //p' "$out/server-$i.out" | head -1)
        [ -n "$addr" ] && break
        sleep 0.1
    done
    if [ -z "$addr" ]; then
        echo "bench-100k: server $i did not start; see $out/server-$i.err" >&2
        exit 1
    fi
    args+=(--url "ws://$addr/ws" --pid "$pid" --source-ip "127.0.0.$((i + 1))")
done

echo "bench-100k: $clients clients, $servers shootout processes (layer $layer), load $(cut -d' ' -f1-3 /proc/loadavg)"
timeout 600 "$bin/loadgen" "${args[@]}" --clients "$clients" --procs "$servers" --idle \
    --connect-concurrency 600 --connect-timeout 30 --drain 60 --json-only \
    >"$out/result.json" 2>"$out/loadgen.err" || {
    echo "bench-100k: loadgen failed (exit $?); see $out/loadgen.err" >&2
    tail -5 "$out/loadgen.err" >&2
    exit 1
}
cat "$out/result.json"
python3 - "$out/result.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
mb = lambda b: f"{b / 1e6:,.0f} MB" if b is not None else "-"
print(f"clients {r['clients']:,} of {r['requested_clients']:,} (connect failures {r['connect_failures']}, "
      f"connect {r['connect_s']:.1f} s, {r['procs']} loadgen processes)")
print(f"server RSS: before {mb(r['rss_before_bytes'])}, idle {mb(r['rss_after_bytes'])} "
      f"({r['rss_per_connection_bytes']} B/conn), after one broadcast {mb(r['rss_after_traffic_bytes'])} "
      f"({r['rss_per_connection_after_traffic_bytes']} B/conn)")
l = r["latency_ms"]
print(f"one broadcast to everyone: {l['max']:.0f} ms to reach all, p50 {l['p50']:.0f} ms, p99 {l['p99']:.0f} ms; "
      f"received {r['received']:,} of {r['expected']:,}, lost {r['lost']}, duplicated {r['duplicated']}")
EOF
