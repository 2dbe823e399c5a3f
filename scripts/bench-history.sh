#!/usr/bin/env bash
# What group histories cost (docs/protocol.md, "History and recovery"), in one sitting:
#
#   scripts/bench-history.sh                     # everything below, with the defaults
#   RUNS=1 MESSAGES=500 scripts/bench-history.sh # a quick look
#   PARTS=recovery scripts/bench-history.sh      # one part (of "throughput memory recovery")
#
# 1. throughput: CLIENTS subscribers of one group on one channels-server process, one publisher
#    keeping IN_FLIGHT publishes in flight, MESSAGES messages of 100 bytes; on the memory layer
#    and the Redis core layer, each with --history-size 0 and --history-size HISTORY. RUNS runs
#    of each, alternating (memory without, memory with, redis without, redis with, then again);
#    medians of deliveries/s, p50/p99 and server (and redis-server) CPU-s per million
#    deliveries, and the ratio with/without. A run that lost, duplicated or skipped an offset
#    is INVALID: printed, and left out of the medians.
# 2. memory: one subscriber, MEM_MESSAGES messages of each size in MEM_SIZES bytes to a group
#    keeping MEM_MESSAGES; bytes per kept message from Redis used_memory (and MEMORY USAGE of
#    the history keys), and from the server's RSS on the memory layer (coarse).
# 3. recovery: REC_CLIENTS clients over two channels-server processes on the Redis core layer
#    record their last offset and close; REC_PUBLICATIONS messages are published; all reconnect
#    at once, each to the other process, with `recover`. RUNS runs; time to `subscribed` and
#    the CPU used; every answer must be recovered: true with exactly the missed messages.
#
# Loopback only; every process it starts is killed on exit; redis-server is private, on a
# free port. NO_BUILD=1 uses the release binaries as they are. Results: target/bench-history/
# (one JSON line per run in runs.jsonl, the table in summary.txt).
set -euo pipefail
cd "$(dirname "$0")/.."

clients=${CLIENTS:-1000}
messages=${MESSAGES:-2000}
in_flight=${IN_FLIGHT:-16}
history=${HISTORY:-1000}
runs=${RUNS:-3}
mem_messages=${MEM_MESSAGES:-10000}
mem_sizes=${MEM_SIZES:-100 1000}
rec_clients=${REC_CLIENTS:-1000}
rec_publications=${REC_PUBLICATIONS:-100}
parts=" ${PARTS:-throughput memory recovery} "
out=target/bench-history
rm -rf "$out"
mkdir -p "$out"

if [ -z "${NO_BUILD:-}" ]; then
    cargo build --release -q -p channels-server --bin channels-server
    cargo build --release -q -p loadgen --bin history-bench
fi
bin=target/release

pids=()
redis_pid=
stop_servers() {
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    pids=()
}
cleanup() {
    stop_servers
    if [ -n "$redis_pid" ]; then
        kill "$redis_pid" 2>/dev/null || true
        wait "$redis_pid" 2>/dev/null || true
    fi
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

redis_port=$(free_port)
redis-server --port "$redis_port" --save "" --appendonly no --bind 127.0.0.1 \
    >"$out/redis.log" 2>&1 &
redis_pid=$!
redis_url="redis://127.0.0.1:$redis_port"
for _ in $(seq 50); do
    redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break
    sleep 0.1
done

# server NAME LAYER HISTORY: starts one channels-server on a free port; appends to $urls, $spids.
server() {
    local name=$1 layer=$2 size=$3
    : >"$out/$name.log" # the background job opens it later; sed must find it at once
    "$bin/channels-server" --bind 127.0.0.1:0 --layer "$layer" --redis-url "$redis_url" \
        --client-rate-limit 0 --history-size "$size" >"$out/$name.log" 2>&1 &
    local pid=$!
    pids+=("$pid")
    for _ in $(seq 100); do
        local addr
        addr=$(sed -n 's/.*listening on \([0-9.]*:[0-9]*\).*/\1/p' "$out/$name.log" | head -1)
        if [ -n "$addr" ]; then
            urls+=(--url "ws://$addr/ws")
            spids+=(--pid "$pid")
            return 0
        fi
        sleep 0.1
    done
    echo "bench: $name did not start; see $out/$name.log" >&2
    exit 1
}

# bench NAME PART ARGS...: one history-bench run; its JSON line goes to runs.jsonl.
bench() {
    local name=$1
    shift
    local load
    load=$(cut -d' ' -f1 /proc/loadavg)
    if "$bin/history-bench" "$@" "${urls[@]}" "${spids[@]}" --redis-pid "$redis_pid" \
        --label "$name" >"$out/$name.json" 2>"$out/$name.err"; then
        python3 - "$out/$name.json" "$load" >>"$out/runs.jsonl" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1])); r["loadavg"] = float(sys.argv[2]); print(json.dumps(r))
EOF
        python3 - "$out/$name.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
if r["part"] == "throughput":
    bad = r["lost"] or r["duplicated"] or r["offset_gaps"] or r["connect_failures"] or r["lost_notices"] or r["disconnects"]
    print(f"{r['label']:24} {r['deliveries_per_sec']:>10,.0f}/s  p50 {r['latency_ms']['p50']:.1f} "
          f"p99 {r['latency_ms']['p99']:.1f} ms  cpu/M {r['server_cpu_s_per_m_deliveries']} "
          f"redis/M {r['redis_cpu_s_per_m_deliveries']}  lost {r['lost']} dup {r['duplicated']} "
          f"gaps {r['offset_gaps']} lost notices {r['lost_notices']} disconnects {r['disconnects']}  {'INVALID' if bad else 'valid'}"
          f"{'  first notice: ' + r['first_lost_notice'] if r['first_lost_notice'] else ''}", flush=True)
elif r["part"] == "memory":
    print(f"{r['label']:24} delivered {r['delivered']} span {r['offset_span']}  redis B/msg "
          f"{r['redis_bytes_per_message']} keys B/msg {r['redis_key_bytes_per_message']}  "
          f"rss B/msg {r['rss_bytes_per_message']}", flush=True)
else:
    print(f"{r['label']:24} recovered {r['recovered']}/{r['clients']}  p50 "
          f"{r['latency_ms']['p50']:.0f} p99 {r['latency_ms']['p99']:.0f} max "
          f"{r['latency_ms']['max']:.0f} ms  total {r['total_s']} s  cpu {r['server_cpu_s']} s "
          f"redis {r['redis_cpu_s']} s  problems {r['not_recovered']}/{r['wrong_publications']}/"
          f"{r['failed']} {r['first_problem'] or ''}", flush=True)
EOF
    else
        echo "bench: $name failed; see $out/$name.err" >&2
        cat "$out/$name.err" >&2
    fi
}

[[ $parts == *" throughput "* ]] &&
    echo "== throughput: $clients subscribers, $messages messages, $in_flight in flight, history $history"
for run in $(seq "$runs"); do
    [[ $parts == *" throughput "* ]] || break
    for layer in memory redis; do
        for size in 0 "$history"; do
            redis-cli -p "$redis_port" flushall >/dev/null
            urls=() spids=()
            server "tp-$layer-$size-$run" "$layer" "$size"
            bench "tp-$layer-h$size-$run" throughput --clients "$clients" \
                --messages "$messages" --in-flight "$in_flight"
            stop_servers
        done
    done
done

[[ $parts == *" memory "* ]] && echo "== memory: $mem_messages kept messages"
for bytes in $mem_sizes; do
    [[ $parts == *" memory "* ]] || break
    for layer in redis memory; do
        redis-cli -p "$redis_port" flushall >/dev/null
        urls=() spids=()
        server "mem-$layer-$bytes" "$layer" "$mem_messages"
        args=()
        [ "$layer" = redis ] && args=(--redis-url "$redis_url")
        bench "mem-$layer-$bytes" memory --messages "$mem_messages" --data-bytes "$bytes" \
            "${args[@]}"
        stop_servers
    done
done

[[ $parts == *" recovery "* ]] &&
    echo "== recovery: $rec_clients clients over two processes, $rec_publications missed"
for run in $(seq "$runs"); do
    [[ $parts == *" recovery "* ]] || break
    redis-cli -p "$redis_port" flushall >/dev/null
    urls=() spids=()
    server "rec-a-$run" redis "$history"
    server "rec-b-$run" redis "$history"
    bench "rec-$run" recovery --clients "$rec_clients" --publications "$rec_publications"
    stop_servers
done

python3 - "$out/runs.jsonl" "$(nproc)" "$(cut -d' ' -f1-3 /proc/loadavg)" <<'EOF' | tee "$out/summary.txt"
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
med = lambda xs: statistics.median(xs) if xs else float("nan")
print(f"\n{sys.argv[2]} cores, load average at the end {sys.argv[3]}")
tp = [r for r in runs if r["part"] == "throughput"]
valid = [r for r in tp if not (r["lost"] or r["duplicated"] or r["offset_gaps"] or r["connect_failures"] or r["lost_notices"] or r["disconnects"])]
print(f"\nthroughput (median of the valid runs; {len(tp) - len(valid)} invalid of {len(tp)})")
print("| layer | history | deliveries/s | ratio | p50 ms | p99 ms | server CPU-s/M | ratio | redis CPU-s/M | runs |")
print("|---|---|---|---|---|---|---|---|---|---|")
for layer in ("memory", "redis"):
    rows = {}
    for r in valid:
        name = r["label"].split("-")
        if name[1] == layer:
            rows.setdefault(name[2], []).append(r)
    base = None
    for key in sorted(rows, key=lambda k: int(k[1:])):
        rs = rows[key]
        d = med([r["deliveries_per_sec"] for r in rs])
        c = med([r["server_cpu_s_per_m_deliveries"] for r in rs])
        rc = med([r["redis_cpu_s_per_m_deliveries"] for r in rs]) if layer == "redis" else None
        ratio = "" if base is None else f"{d / base[0]:.2f}×"
        cratio = "" if base is None else f"{c / base[1]:.2f}×"
        base = base or (d, c)
        print(f"| {layer} | {key[1:]} | {d:,.0f} | {ratio} | {med([r['latency_ms']['p50'] for r in rs]):.1f} "
              f"| {med([r['latency_ms']['p99'] for r in rs]):.1f} | {c:.3f} | {cratio} | "
              f"{'' if rc is None else f'{rc:.3f}'} | {len(rs)} |")
mem = [r for r in runs if r["part"] == "memory"]
print("\nmemory per kept message (bytes)")
print("| layer | data bytes | messages | used_memory Δ/msg | history keys/msg | server RSS Δ/msg |")
print("|---|---|---|---|---|---|")
for r in mem:
    f = lambda v: "" if v is None else f"{v:,.0f}"
    print(f"| {r['label'].split('-')[1]} | {r['data_bytes']} | {r['delivered']} | {f(r['redis_bytes_per_message'])} "
          f"| {f(r['redis_key_bytes_per_message'])} | {f(r['rss_bytes_per_message'])} |")
rec = [r for r in runs if r["part"] == "recovery"]
print("\nrecovery (each run; ms from the start of the reconnect to `subscribed`)")
print("| run | clients | recovered | p50 | p99 | max | total s | server CPU-s | redis CPU-s | problems |")
print("|---|---|---|---|---|---|---|---|---|---|")
for r in rec:
    l = r["latency_ms"]
    print(f"| {r['label']} | {r['clients']} | {r['recovered']} | {l['p50']:.0f} | {l['p99']:.0f} | {l['max']:.0f} "
          f"| {r['total_s']} | {r['server_cpu_s']} | {r['redis_cpu_s']} | "
          f"{r['not_recovered'] + r['wrong_publications'] + r['failed']} |")
EOF
