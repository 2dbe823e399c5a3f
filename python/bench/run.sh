#!/usr/bin/env bash
# The same Channels consumer (python/bench/shootout, websocket-shootout
# protocol) under uvicorn, and under channels_rust.worker behind
# channels-server, driven by examples/loadgen in one sitting on one private
# redis-server (core layer). Prints one JSON line per run.
#
#   python/bench/run.sh [CLIENTS] [SECONDS] [MAX_IN_FLIGHT] [WORKERS]
#
# Defaults: 1000 clients, 10 s, --max 4, 1 worker process. Loopback only;
# every process it starts is stopped on exit. Needs the interop venv
# (scripts/install-deps.sh) with uvicorn installed into it.
set -euo pipefail
cd "$(dirname "$0")/../.."

clients=${1:-1000}
seconds=${2:-10}
max=${3:-4}
workers=${4:-1}
out=target/bench-asgi
py=${CHANNELS_INTEROP_PYTHON:-$PWD/target/interop-venv/bin/python}
mkdir -p "$out"
"$py" -c "import uvicorn" 2>/dev/null || "$py" -m pip install --quiet uvicorn==0.54.0
cargo build --release -q -p loadgen -p channels-server
bin=target/release

pids=()
stop_all() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    pids=()
}
trap stop_all EXIT

wait_line() { # FILE REGEX: waits up to 30 s for a line
    for _ in $(seq 300); do
        grep -Eq "$2" "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "bench: no '$2' in $1" >&2
    exit 1
}

port() { "$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

redis_port=$(port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no >"$out/redis.log" 2>&1 &
pids+=($!)
wait_line "$out/redis.log" "Ready to accept"
redis_url="redis://127.0.0.1:$redis_port/0"
export BENCH_REDIS_URL=$redis_url BENCH_LAYER=core DJANGO_SETTINGS_MODULE=benchsite.settings
export PYTHONPATH="$PWD/python/bench"

load() { # NAME URL PID...
    local name=$1 url=$2
    shift 2
    local pid_args=()
    for pid in "$@"; do pid_args+=(--pid "$pid"); done
    "$bin/loadgen" --url "$url" --clients "$clients" --mode broadcast --max "$max" \
        --duration "$seconds" --drain 10 --connect-timeout 30 --json-only "${pid_args[@]}" \
        | sed "s/^{/{\"run\":\"$name\",/" | tee -a "$out/results.jsonl"
}

# 1. uvicorn, one process: Python holds the sockets.
uport=$(port)
(cd python/bench && exec "$py" -m uvicorn benchsite.asgi:application --host 127.0.0.1 \
    --port "$uport" --ws websockets --log-level warning) >"$out/uvicorn.log" 2>&1 &
upid=$!
pids+=("$upid")
for _ in $(seq 300); do
    "$py" -c "import socket; socket.create_connection(('127.0.0.1', $uport), 1)" 2>/dev/null && break
    sleep 0.1
done
load uvicorn "ws://127.0.0.1:$uport/shootout/" "$upid"
stop_all
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no >"$out/redis.log" 2>&1 &
pids+=($!)
wait_line "$out/redis.log" "Ready to accept"

# 2. channels-server holds the sockets; the consumer runs in $workers worker(s).
"$bin/channels-server" --bind 127.0.0.1:0 --layer redis --redis-url "$redis_url" \
    --forward-channel bench --channel-capacity 10000 >"$out/server.log" 2>&1 &
spid=$!
pids+=("$spid")
wait_line "$out/server.log" "listening on"
addr=$(sed -n 's/.*listening on \([0-9.:]*\).*/\1/p' "$out/server.log" | head -1)
for i in $(seq "$workers"); do
    (cd python/bench && exec "$py" -m channels_rust.worker benchsite.asgi:application \
        --channel bench --log-level WARNING) >"$out/worker-$i.log" 2>&1 &
    pids+=($!)
done
for _ in $(seq 300); do
    curl -s "http://$addr/metrics" | grep -q "^channels_asgi_workers $workers" && break
    sleep 0.1
done
load "channels-server+${workers}worker" "ws://$addr/shootout/" "$spid"
