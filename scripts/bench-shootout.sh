#!/usr/bin/env bash
# Side-by-side broadcast benchmark, in one sitting: the hand-written ceiling-server
# (no channel layer) against the shootout example on our layers, with the same load
# generator.
#
#   scripts/bench-shootout.sh            # everything below, with the defaults
#   RUNS=1 MAXES=16 LADDER= scripts/bench-shootout.sh   # a quick look
#
# Pairs (each ratio compares a row with the ceiling of its own pair):
#   ceiling-local        ceiling-server --mode local, one process
#   shootout-memory      shootout --layer memory, one process
#   ceiling-redis        two ceiling-server --mode redis processes over one redis-server
#   shootout-redis       two shootout --layer redis processes (Redis core layer)
#   shootout-pubsub      two shootout --layer redis-pubsub processes
# For each --max in MAXES, RUNS runs of every configuration, interleaved (run 1 of each,
# then run 2 of each, ...), and the median of each figure. A run that lost or duplicated
# a delivery is INVALID: it is printed, counted, and left out of the medians. Then a
# ladder (LADDER=START,STEP,MAX broadcasts/s, 6 s steps, pass = p99 < 250 ms and nothing
# lost) per configuration. And RUNS runs at a fixed RATE broadcasts/s (40) for latency:
# median p50/p99 and the p99 ratio.
#
# Then, unless IDLE= (empty): IDLE (10000) idle clients per configuration, RSS per connection
# before and after one broadcast. Unless ROUNDTRIP= (empty): the Redis core layer's send +
# receive round trip (criterion) against Python channels_redis's on the same machine.
#
# Environment: CLIENTS (1000) DURATION (10 s) RUNS (3) MAXES ("16 64") RATE (40; empty skips) LADDER
# ("100,100,3000"; empty skips the ladders; MAXES="" runs only the ladders) PROCS (1: loadgen processes for the --max
# runs). PIN=1 pins the servers (and redis-server) to CPU 0 and the load generator to CPU 1, so each
# run line's `core` figures (CPU-seconds per second of the server processes, of the load
# generator) show which side is the bottleneck: a load generator below 1.0 while the server is
# at 1.0 has room to spare. Loopback only; every process it starts is killed on exit; the one redis-server
# is private, on a free port. Results: target/bench-shootout/*.json and summary.txt.
set -euo pipefail
cd "$(dirname "$0")/.."

clients=${CLIENTS:-1000}
seconds=${DURATION:-10}
runs=${RUNS:-3}
maxes=${MAXES-16 64}
ladder=${LADDER-100,100,3000}
rate=${RATE-40}
procs=${PROCS:-1}
pin_server=()
pin_client=()
if [ -n "${PIN:-}" ]; then
    pin_server=(taskset -c 0)
    pin_client=(taskset -c 1)
fi
idle=${IDLE-10000}
roundtrip=${ROUNDTRIP-1}
out=target/bench-shootout
rm -rf "$out"
mkdir -p "$out"

# NO_BUILD=1 uses the release binaries as they are (e.g. while another build holds the lock).
[ -n "${NO_BUILD:-}" ] || cargo build --release -q -p loadgen -p shootout
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

# start NAME CMD...: starts a server printing `listening on ADDR`; appends to $urls and $spids.
start() {
    local name=$1
    shift
    # Created first: the loop below may read it before the server's shell does.
    : >"$out/$name.out"
    "${pin_server[@]}" "$@" >>"$out/$name.out" 2>"$out/$name.err" &
    local pid=$!
    pids+=("$pid")
    for _ in $(seq 100); do
        local addr
        addr=$(sed -n 's/^listening on //p' "$out/$name.out" | head -1)
        if [ -n "$addr" ]; then
            urls+=(--url "ws://$addr/ws")
            spids+=(--pid "$pid")
            return 0
        fi
        sleep 0.1
    done
    echo "bench: $name did not start; see $out/$name.err" >&2
    exit 1
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

redis_port=$(free_port)
"${pin_server[@]}" redis-server --port "$redis_port" --save "" --appendonly no --bind 127.0.0.1 \
    >"$out/redis.log" 2>&1 &
redis_pid=$!
redis_url="redis://127.0.0.1:$redis_port"
for _ in $(seq 50); do
    redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break
    sleep 0.1
done

# servers CONFIG: starts the servers of one configuration (sets $urls and $spids).
servers() {
    urls=()
    spids=()
    case $1 in
    ceiling-local) start "$1" "$bin/ceiling-server" --bind 127.0.0.1:0 --mode local ;;
    shootout-memory) start "$1" "$bin/shootout" --bind 127.0.0.1:0 --layer memory ;;
    ceiling-redis)
        for p in a b; do
            start "$1-$p" "$bin/ceiling-server" --bind 127.0.0.1:0 --mode redis \
                --redis-url "$redis_url"
        done
        ;;
    shootout-redis | shootout-pubsub)
        local layer=redis
        [ "$1" = shootout-pubsub ] && layer=redis-pubsub
        for p in a b; do
            start "$1-$p" "$bin/shootout" --bind 127.0.0.1:0 --layer "$layer" \
                --redis-url "$redis_url"
        done
        ;;
    esac
}

# run NAME CONFIG LOADGEN-ARGS...: one loadgen run against fresh servers; the JSON line
# gets the 1/5/15-minute load average before the run as `loadavg`.
run() {
    local name=$1 config=$2
    shift 2
    redis-cli -p "$redis_port" flushall >/dev/null
    servers "$config"
    local load
    load=$(cut -d' ' -f1-3 /proc/loadavg)
    if "${pin_client[@]}" "$bin/loadgen" "${urls[@]}" "${spids[@]}" --clients "$clients" --mode broadcast \
        --json-only "$@" >"$out/$name.raw" 2>"$out/$name.lgerr"; then
        python3 -c 'import json,sys; r=json.loads(open(sys.argv[1]).read()); r["loadavg"]=sys.argv[2]; print(json.dumps(r))' \
            "$out/$name.raw" "$load" >"$out/$name.json"
    else
        echo "bench: loadgen failed for $name; see $out/$name.lgerr" >&2
    fi
    stop_servers
    if [ -f "$out/$name.json" ]; then
        python3 - "$out/$name.json" "$name" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
lad = r.get("ladder")
# A ladder ends at its first failing step, which may lose: only --max runs must be clean.
ok = "ladder" if lad else "valid" if r["lost"] == 0 and r["duplicated"] == 0 else "INVALID"
extra = f"  passes {lad['highest_passing_rate']}/s" if lad else ""
# CPU-seconds per second of the send window: server processes / load generator.
window = r["duration_s"]
cores = (f"  core {(r['server_cpu_s'] or 0) / window:.2f}/{r['client_cpu_s'] / window:.2f}"
         if window and not lad else "")
print(f"{sys.argv[2]:32} {r['deliveries_per_sec']:>11,.0f}/s  cpu/M {r['server_cpu_s_per_m_deliveries']}  "
      f"lg cpu/M {r['client_cpu_s_per_m_deliveries']}  p99 {r['latency_ms']['p99']:.1f} ms  "
      f"lost {r['lost']} dup {r['duplicated']}  {ok}{cores}  load {r['loadavg']}{extra}", flush=True)
EOF
    fi
}

configs="ceiling-local shootout-memory ceiling-redis shootout-redis shootout-pubsub"
echo "bench: $(nproc) cores, $clients clients, ${seconds}s, $runs runs, --max $maxes, loadgen procs $procs"
for max in $maxes; do
    for i in $(seq "$runs"); do
        for c in $configs; do
            run "max$max-$c-$i" "$c" --max "$max" --duration "$seconds" --warmup 2 \
                --procs "$procs"
        done
    done
done
if [ -n "$rate" ]; then
    for i in $(seq "$runs"); do
        for c in $configs; do
            run "rate$rate-$c-$i" "$c" --rate "$rate" --duration "$seconds" --warmup 2
        done
    done
fi
if [ -n "$ladder" ]; then
    for c in $configs; do
        run "ladder-$c" "$c" --ladder "$ladder" --step-seconds 6 --warmup 1
    done
fi
if [ -n "$idle" ]; then
    # Idle memory: $idle clients connect and stay; RSS per connection before and after one
    # broadcast to all (summed over the configuration's processes).
    for c in $configs; do
        clients=$idle run "idle-$c" "$c" --idle --connect-concurrency 200
    done
fi
# Redis core send + receive round trip on a process-local channel, ours (criterion, its own
# redis-server) against Python channels_redis (interop venv, this sitting's redis-server).
python_bin=target/interop-venv/bin/python
if [ -n "$roundtrip" ] && [ -x "$python_bin" ]; then
    # Removed first: a failed bench must not leave an earlier run's figure to be read.
    rm -f target/criterion/process_local_send_receive/new/estimates.json
    cargo bench -q -p channels-redis --features testing --bench redis_layer -- \
        process_local_send_receive --warm-up-time 1 --measurement-time 3 \
        >"$out/roundtrip-rust.txt" 2>&1 || echo "bench: the criterion round trip failed" >&2
    cp target/criterion/process_local_send_receive/new/estimates.json \
        "$out/roundtrip-rust.json" 2>/dev/null || true
    "$python_bin" interop/bench_channels_redis.py --url "$redis_url" --layer core \
        --seconds 3 --rounds 5 >"$out/roundtrip-python.json" 2>"$out/roundtrip-python.err" ||
        echo "bench: the Python round trip failed; see $out/roundtrip-python.err" >&2
elif [ -n "$roundtrip" ]; then
    echo "bench: no $python_bin (scripts/install-deps.sh makes it); round trip skipped" >&2
fi

python3 - "$out" "$maxes" "$configs" "$rate" <<'EOF' | tee "$out/summary.txt"
import json, pathlib, statistics, sys
out = pathlib.Path(sys.argv[1])
maxes, configs = sys.argv[2].split(), sys.argv[3].split()
ceiling = {"ceiling-local": "ceiling-local", "shootout-memory": "ceiling-local",
           "ceiling-redis": "ceiling-redis", "shootout-redis": "ceiling-redis",
           "shootout-pubsub": "ceiling-redis"}
def load(name):
    p = out / f"{name}.json"
    return json.loads(p.read_text()) if p.exists() else None
def med(rows, f):
    vals = [f(r) for r in rows if f(r) is not None]
    return statistics.median(vals) if vals else None
print(f"{'configuration':18} {'max':>4} {'deliveries/s':>13} {'x ceil':>7} {'cpu-s/M':>8} {'x ceil':>7} "
      f"{'p99 ms':>7} {'x ceil':>7} {'lg cpu-s/M':>10} valid  load avg (1 min) per run")
for max_ in maxes:
    medians = {}
    for c in configs:
        rows = [load(p.stem) for p in sorted(out.glob(f"max{max_}-{c}-*.json"))]
        rows = [r for r in rows if r]
        valid = [r for r in rows if r["lost"] == 0 and r["duplicated"] == 0]
        medians[c] = dict(
            d=med(valid, lambda r: r["deliveries_per_sec"]),
            cpu=med(valid, lambda r: r["server_cpu_s_per_m_deliveries"]),
            p99=med(valid, lambda r: r["latency_ms"]["p99"]),
            lg=med(valid, lambda r: r["client_cpu_s_per_m_deliveries"]),
            n=f"{len(valid)}/{len(rows)}",
            load=" ".join(r["loadavg"].split()[0] for r in rows))
    for c in configs:
        m, b = medians[c], medians[ceiling[c]]
        def ratio(k, inverse=False):
            if m[k] is None or not b[k]:
                return "-"
            return f"{(b[k] / m[k] if inverse else m[k] / b[k]):.2f}x"
        fmt = lambda v, f: "-" if v is None else format(v, f)
        print(f"{c:18} {max_:>4} {fmt(m['d'], ',.0f'):>13} {ratio('d'):>7} {fmt(m['cpu'], '.3f'):>8} "
              f"{ratio('cpu', True):>7} {fmt(m['p99'], '.1f'):>7} {ratio('p99'):>7} {fmt(m['lg'], '.3f'):>10} "
              f"{m['n']:>5}  {m['load']}")
print("x ceil: throughput and p99 as ours/ceiling; cpu-s/M as ceiling/ours (above 1 = cheaper than the ceiling)")
rate = sys.argv[4] if len(sys.argv) > 4 else ""
if rate:
    print()
    print(f"{'at ' + rate + ' broadcasts/s':18} {'p50 ms':>8} {'p99 ms':>8} {'x ceil':>7} valid")
    p99s = {}
    for c in configs:
        rows = [r for r in (load(p.stem) for p in sorted(out.glob(f"rate{rate}-{c}-*.json"))) if r]
        valid = [r for r in rows if r["lost"] == 0 and r["duplicated"] == 0]
        p99s[c] = (med(valid, lambda r: r["latency_ms"]["p50"]), med(valid, lambda r: r["latency_ms"]["p99"]),
                   f"{len(valid)}/{len(rows)}")
    for c in configs:
        p50, p99, n = p99s[c]
        base = p99s[ceiling[c]][1]
        ratio = f"{p99 / base:.2f}x" if p99 and base else "-"
        fmt = lambda v: "-" if v is None else f"{v:.1f}"
        print(f"{c:18} {fmt(p50):>8} {fmt(p99):>8} {ratio:>7} {n:>5}")
lad = {c: load(f"ladder-{c}") for c in configs}
if any(lad.values()):
    print()
    print(f"{'ladder':18} {'passes /s':>10} {'x ceil':>7}  first failing step")
    for c in configs:
        r = lad[c]
        if not r:
            print(f"{c:18} {'-':>10}")
            continue
        best = r["ladder"]["highest_passing_rate"]
        base = (lad[ceiling[c]] or {}).get("ladder", {}).get("highest_passing_rate")
        fail = [s for s in r["ladder"]["steps"] if not s["passed"]]
        f = (f"{fail[0]['rate']:.0f}/s: p99 {fail[0]['latency_ms']['p99']:.0f} ms, lost {fail[0]['lost']}"
             if fail else "none (reached MAX)")
        ratio = f"{best / base:.2f}x" if best and base else "-"
        print(f"{c:18} {best or 0:>10.0f} {ratio:>7}  {f}  load {r['loadavg'].split()[0]}")
idle = {c: load(f"idle-{c}") for c in configs}
if any(idle.values()):
    print()
    print(f"{'idle':18} {'clients':>8} {'B/conn':>8} {'after':>8} {'x ceil':>7}  lost")
    for c in configs:
        r = idle[c]
        if not r:
            print(f"{c:18} {'-':>8}")
            continue
        base = (idle[ceiling[c]] or {}).get("rss_per_connection_bytes")
        per = r["rss_per_connection_bytes"]
        ratio = f"{per / base:.2f}x" if per and base else "-"
        print(f"{c:18} {r['clients']:>8} {per or 0:>8} {r['rss_per_connection_after_traffic_bytes'] or 0:>8} "
              f"{ratio:>7}  {r['lost']}")
    print("x ceil: bytes per connection as ours/ceiling (below 1 = smaller)")
rust_rt, py_rt = out / "roundtrip-rust.json", out / "roundtrip-python.json"
if rust_rt.exists() and py_rt.exists() and py_rt.read_text().strip():
    ours_us = json.loads(rust_rt.read_text())["mean"]["point_estimate"] / 1e3
    python_us = json.loads(py_rt.read_text().splitlines()[0])["round_trip"]["mean_us"]
    print()
    print(f"Redis core send + receive round trip: ours {ours_us:.1f} us, Python channels_redis "
          f"{python_us:.1f} us: {python_us / ours_us:.1f}x")
EOF
