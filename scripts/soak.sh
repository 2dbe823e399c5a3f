#!/usr/bin/env bash
# Soak run (a script, not CI): 2 channels-server processes on one private redis-server
# (Redis core layer, group history), CLIENTS clients on one group with churn, a steady
# publisher, and Redis killed with SIGKILL and restarted empty at 1/3 and 2/3 of the run.
#
#   scripts/soak.sh                               # 30 min, 5,000 clients, 20 publishes/s
#   DURATION=120 CLIENTS=500 scripts/soak.sh      # a short run
#
# Env: DURATION (s, 1800), CLIENTS (5000), RATE (publishes/s, 20), CHURN (reconnects/s over
# all clients, 25), REDIS_DOWN (s Redis stays dead, 5), NO_BUILD=1 (use the release binaries
# as they are), BIN_DIR (target/release).
#
# Reports the servers' RSS and open fds (first/last/max, sampled every 10 s), deliveries,
# reconnects, recoveries, lost notices by reason, silent gaps and duplicates (both must be
# 0), and acknowledged publishes some client never got, inside the Redis outage windows (the
# restarts, recorded here as they happen: from the SIGKILL until both servers' /readyz pass
# again, plus 5 s) or outside them (must be 0), and those no client was told about (a `lost`
# or `recovered: false` after the publish; must be 0). Bounded: soak is
# killed DURATION + 5 min after it starts; every process the script starts is killed on
# exit. Results: target/soak/ (soak.jsonl has one sample line per 10 s, then the summary).
set -euo pipefail
cd "$(dirname "$0")/.."

duration=${DURATION:-1800}
clients=${CLIENTS:-5000}
rate=${RATE:-20}
churn=${CHURN:-25}
down=${REDIS_DOWN:-5}
out=target/soak
mkdir -p "$out"
rm -f "$out"/{soak.jsonl,soak.err,summary.json,outages.txt,redis.log,server-1.log,server-2.log,script.log}
ulimit -n "$(ulimit -Hn)"

[ -n "${NO_BUILD:-}" ] || {
    cargo build --release -q -p channels-server --bins
    cargo build --release -q -p loadgen --bin soak
}
bin=${BIN_DIR:-target/release}

pids=()
redis_pid=
cleanup() {
    for pid in "${pids[@]}" $redis_pid; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
}
trap cleanup EXIT
log() { echo "soak.sh: $*" | tee -a "$out/script.log"; }
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
now() { date +%s.%N; }
since() { python3 -c "print(f'{$(now) - $1:.1f}')"; }

redis_port=$(free_port)
start_redis() {
    redis-server --port "$redis_port" --save "" --appendonly no --bind 127.0.0.1 \
        --maxclients 10000 >>"$out/redis.log" 2>&1 &
    redis_pid=$!
    for _ in $(seq 100); do
        redis-cli -p "$redis_port" ping >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    log "redis-server did not start on port $redis_port; see $out/redis.log"
    exit 1
}
start_redis

args=()
ports=()
for i in 1 2; do
    port=$(free_port)
    "$bin/channels-server" --bind "127.0.0.1:$port" --layer redis \
        --redis-url "redis://127.0.0.1:$redis_port" --history-size 2000 --history-ttl 600 \
        --max-connections "$((clients + 1000))" >"$out/server-$i.log" 2>&1 &
    pid=$!
    pids+=("$pid")
    for _ in $(seq 100); do
        curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
        sleep 0.1
    done
    curl -sf "http://127.0.0.1:$port/healthz" >/dev/null || {
        log "server $i did not start; see $out/server-$i.log"
        exit 1
    }
    args+=(--url "ws://127.0.0.1:$port/ws" --pid "$pid")
    ports+=("$port")
done
for i in 2 3 4 5; do
    args+=(--source-ip "127.0.0.$i")
done

log "$clients clients, $rate publishes/s, $churn reconnects/s, ${duration} s; redis on $redis_port; load $(cut -d' ' -f1-3 /proc/loadavg)"
t0=$(now)
timeout "$((duration + 300))" "$bin/soak" "${args[@]}" --clients "$clients" --rate "$rate" \
    --churn "$churn" --duration "$duration" --outage-file "$out/outages.txt" \
    >"$out/soak.jsonl" 2>"$out/soak.err" &
soak_pid=$!
pids+=("$soak_pid")

for k in 1 2; do
    at=$((duration * k / 3))
    while kill -0 "$soak_pid" 2>/dev/null && [ "$(since "$t0" | cut -d. -f1)" -lt "$at" ]; do
        sleep 0.2
    done
    kill -0 "$soak_pid" 2>/dev/null || break
    killed=$(since "$t0")
    kill -KILL "$redis_pid"
    wait "$redis_pid" 2>/dev/null || true
    sleep "$down"
    start_redis
    back=$(since "$t0")
    # The window ends when both servers are ready again (memberships written back).
    for port in "${ports[@]}"; do
        for _ in $(seq 300); do
            curl -sf "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
            sleep 0.1
        done
    done
    ready=$(since "$t0")
    echo "$killed $ready" >>"$out/outages.txt"
    log "redis restart $k: SIGKILL at ${killed} s, back (empty) at ${back} s, both servers ready at ${ready} s"
done

status=0
wait "$soak_pid" || status=$?
tail -1 "$out/soak.jsonl" >"$out/summary.json"
log "soak exit status $status (0 clean, 1 not clean, 2 error, 124 timed out)"
python3 - "$out/summary.json" <<'EOF' | tee -a "$out/script.log"
import json, sys
s = json.load(open(sys.argv[1]))
if s.get("kind") != "summary":
    sys.exit("no summary line; see target/soak/soak.err")
mb = lambda b: f"{b / 1e6:.1f} MB"
for p in s["processes"]:
    r, f = p["rss_bytes"], p["fds"]
    w = lambda span, fmt: fmt(span["warm"]) if span["warm"] is not None else "-"
    gone = f", GONE at {p['gone_at']:.0f} s" if p["gone_at"] is not None else ""
    print(f"server pid {p['pid']}: RSS first {mb(r['first'])} after warm-up {w(r, mb)} last {mb(r['last'])} "
          f"max {mb(r['max'])}; fds first {f['first']} after warm-up {w(f, str)} last {f['last']} max {f['max']} "
          f"({p['samples']} samples{gone})")
t = s["totals"]
print(f"published {t['published']}, acked {t['acked']}, refused {t['refused']}, unanswered {t['unanswered']}; "
      f"deliveries {t['deliveries']:,} (recovered {t['recovered_publications']:,}); reconnects {t['reconnects']:,} "
      f"(churn {t['churn_closes']:,}, dropped {t['dropped']:,}); recoveries {t['recoveries']:,}")
print(f"events: {json.dumps(s['events'])}")
m = s["missing"]
print(f"silent gaps {s['silent_gaps']}, unannounced epoch changes {s['unannounced_epoch_changes']}, "
      f"duplicates {s['duplicates']}, refused but delivered {s['refused_but_delivered']}")
print(f"missing acked (client x seq): inside outage windows {m['inside_windows']}, outside {m['outside_windows']}, "
      f"never told {m['untold']} "
      f"({m['windows_source']} windows {m['declared_windows']}, +{m['grace_s']} s grace; "
      f"derived windows {m['derived_windows']}, outside them {m['outside_derived_windows']})")
e = s["end"]
print(f"end: {e['at_head']} of {e['clients_returned']} clients at the head {e['head']} "
      f"({e['subscribed_at_stop']} subscribed); clean: {s['clean']}")
EOF
exit "$status"
