#!/usr/bin/env bash
# The deploy/docker-compose.yml topology on loopback, without Docker:
# a private redis-server, N channels-server processes (--layer redis, or
# redis-pubsub) on consecutive ports, and nginx (round robin, WebSocket
# upgrade) in front.
# Everything listens on 127.0.0.1 and lives in a state directory (config, pid
# files, logs); `stop` kills exactly the processes recorded there.
#
# Usage: deploy/local-cluster.sh COMMAND [OPTIONS]
#   start                 start redis, the servers and nginx; wait until all are ready
#   status                show each process and its readiness (exit 3 if one is down)
#   stop                  stop everything this state directory started
#   restart-server I      SIGTERM server I (1-based), wait for its drain, start it again
#                         on the same port and wait for /readyz
#   rolling-restart       restart-server for every server in turn
#
# Options (each also an environment variable; `start` records them in the
# state directory, the other commands read them from there):
#   --servers N           CLUSTER_SERVERS      number of channels-server processes (3)
#   --layer L             CLUSTER_LAYER        redis or redis-pubsub (redis)
#   --base-port P         CLUSTER_BASE_PORT    server I listens on P+I-1 (8001)
#   --nginx-port P        CLUSTER_NGINX_PORT   the load balancer (8080)
#   --redis-port P        CLUSTER_REDIS_PORT   the private redis-server (6390)
#   --state-dir DIR       CLUSTER_STATE_DIR    (target/local-cluster)
#   --server-bin PATH     CHANNELS_SERVER_BIN  (target/debug/channels-server, built
#                                              with `cargo build -p channels-server` if missing)
#   --config FILE         CLUSTER_CONFIG       the servers' config file (deploy/channels.toml,
#                                              as in docker-compose.yml and k8s/)
#   --build               run `cargo build -p channels-server` before starting
# Other CHANNELS_* variables (CHANNELS_JWT_SECRET, CHANNELS_PUBLISH_TOKEN, ...)
# reach the servers unchanged and are kept for restarts (in the state
# directory, readable by its owner only); bind, layer and Redis URL are set per
# process and override the config file.
#
# Needs: redis-server (Debian package redis-server), nginx (Debian package nginx;
# installed here with apt-get when missing and running as root), curl.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
proxy_conf="$repo_root/deploy/nginx/channels-proxy.conf"

die() { echo "local-cluster: $*" >&2; exit 1; }
log() { echo "local-cluster: $*" >&2; }

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'; }

command="${1:-}"
[ -n "$command" ] || { usage; exit 2; }
shift

servers="${CLUSTER_SERVERS:-3}"
layer="${CLUSTER_LAYER:-redis}"
base_port="${CLUSTER_BASE_PORT:-8001}"
nginx_port="${CLUSTER_NGINX_PORT:-8080}"
redis_port="${CLUSTER_REDIS_PORT:-6390}"
state_dir="${CLUSTER_STATE_DIR:-$repo_root/target/local-cluster}"
server_bin="${CHANNELS_SERVER_BIN:-}"
config_file="${CLUSTER_CONFIG:-$repo_root/deploy/channels.toml}"
build=0
server_index=""

while [ $# -gt 0 ]; do
    case "$1" in
        --servers|--layer|--base-port|--nginx-port|--redis-port|--state-dir|--server-bin|--config)
            [ $# -ge 2 ] || die "$1 needs a value" ;;
    esac
    case "$1" in
        --servers) servers="$2"; shift 2 ;;
        --layer) layer="$2"; shift 2 ;;
        --base-port) base_port="$2"; shift 2 ;;
        --nginx-port) nginx_port="$2"; shift 2 ;;
        --redis-port) redis_port="$2"; shift 2 ;;
        --state-dir) state_dir="$2"; shift 2 ;;
        --server-bin) server_bin="$2"; shift 2 ;;
        --config) config_file="$2"; shift 2 ;;
        --build) build=1; shift ;;
        -h|--help) usage; exit 0 ;;
        -*) die "unknown option \`$1\` (see --help)" ;;
        *)
            [ -z "$server_index" ] || die "unexpected argument \`$1\`"
            server_index="$1"; shift ;;
    esac
done

mkdir -p "$state_dir"
state_dir="$(cd "$state_dir" && pwd)"
settings="$state_dir/cluster.env"

is_number() { [[ "$1" =~ ^[0-9]+$ ]]; }

# Timeouts (seconds): a server drains for at most 10 s (the server's drain timeout).
readonly ready_timeout=20 stop_timeout=15

# --- process bookkeeping --------------------------------------------------

# pid_alive PIDFILE MARKER: the pid in PIDFILE is running and its command line
# contains MARKER, or one of its lines (so a recycled pid of someone else's
# process never counts).
pid_alive() {
    local file="$1" marker="$2" pid
    [ -s "$file" ] || return 1
    pid="$(cat "$file")"
    is_number "$pid" || return 1
    [ -r "/proc/$pid/cmdline" ] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$marker"
}

# stop_pid NAME PIDFILE MARKER SIGNAL: signal the recorded process, wait for it
# to exit (SIGKILL after stop_timeout), remove the pid file.
stop_pid() {
    local name="$1" file="$2" marker="$3" signal="$4" pid deadline
    if ! pid_alive "$file" "$marker"; then
        rm -f "$file"
        return 0
    fi
    pid="$(cat "$file")"
    kill "-$signal" "$pid" 2>/dev/null || true
    deadline=$((SECONDS + stop_timeout))
    while kill -0 "$pid" 2>/dev/null && pid_alive "$file" "$marker"; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            log "$name (pid $pid) still running after ${stop_timeout}s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.2
            break
        fi
        sleep 0.1
    done
    rm -f "$file"
    log "stopped $name (pid $pid)"
}

port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# running PID: the process exists and is not a zombie. During startup the pid
# is certainly ours (just forked), and its command line may still be this
# script's or setsid's, so only existence is checked there.
running() {
    local state
    state="$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" || return 1
    [ -n "$state" ] && [ "$state" != Z ]
}

# wait_ready DESCRIPTION PIDFILE COMMAND...: poll COMMAND every 0.1 s until it
# succeeds; fail after ready_timeout or as soon as the process exits.
wait_ready() {
    local what="$1" file="$2" deadline pid
    shift 2
    pid="$(cat "$file")"
    deadline=$((SECONDS + ready_timeout))
    until "$@" >/dev/null 2>&1; do
        running "$pid" || { log "$what exited during startup"; return 1; }
        [ "$SECONDS" -lt "$deadline" ] || { log "$what not ready after ${ready_timeout}s"; return 1; }
        sleep 0.1
    done
    log "$what ready"
}

http_ok() { curl -fsS --max-time 1 -o /dev/null "$1"; }

# --- components ------------------------------------------------------------

# Redis rewrites its command line to "redis-server 127.0.0.1:PORT" once up.
redis_marker() { printf '%s\n%s' "--port $redis_port " "redis-server 127.0.0.1:$redis_port"; }
server_port() { echo $((base_port + $1 - 1)); }
server_marker() { echo "--bind 127.0.0.1:$(server_port "$1")"; }
nginx_marker() { echo "$state_dir/nginx.conf"; }

find_nginx() {
    if command -v nginx >/dev/null 2>&1; then command -v nginx; return; fi
    if [ -x /usr/sbin/nginx ]; then echo /usr/sbin/nginx; return; fi
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        log "installing the Debian package nginx"
        apt-get update -qq >&2 || true
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx >&2
        [ -x /usr/sbin/nginx ] && { echo /usr/sbin/nginx; return; }
    fi
    die "nginx not found: install the Debian package \`nginx\` (apt-get install nginx)"
}

start_redis() {
    command -v redis-server >/dev/null 2>&1 \
        || die "redis-server not found: install the Debian package \`redis-server\`"
    # No persistence, loopback only, in the foreground so the pid is ours.
    setsid redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
        --daemonize no --dir "$state_dir" --logfile "" \
        </dev/null >>"$state_dir/redis.log" 2>&1 &
    echo $! >"$state_dir/redis.pid"
    wait_ready "redis on 127.0.0.1:$redis_port" "$state_dir/redis.pid" redis_ping || die "redis did not start (see $state_dir/redis.log)"
}

redis_ping() {
    if command -v redis-cli >/dev/null 2>&1; then
        [ "$(redis-cli -h 127.0.0.1 -p "$redis_port" ping 2>/dev/null)" = PONG ]
    else
        (
            exec 3<>"/dev/tcp/127.0.0.1/$redis_port" && printf 'PING\r\n' >&3 \
                && read -r -t 1 reply <&3 && [ "${reply%$'\r'}" = "+PONG" ]
        )
    fi
}

start_server() {
    local i="$1" port
    port="$(server_port "$i")"
    # Flags win over the config file and any CHANNELS_BIND / CHANNELS_LAYER /
    # CHANNELS_REDIS_URL in the environment, so every process gets its own port
    # and the cluster's Redis. The CHANNELS_* environment of `start` comes back
    # from server.env, so a restart runs with the same secrets.
    (
        # shellcheck disable=SC1091 # written by cmd_start
        [ -f "$state_dir/server.env" ] && . "$state_dir/server.env"
        NO_COLOR=1 exec setsid "$server_bin" --config "$config_file" \
            --bind "127.0.0.1:$port" --layer "$layer" \
            --redis-url "redis://127.0.0.1:$redis_port/0" \
            </dev/null >>"$state_dir/server-$i.log" 2>&1
    ) &
    echo $! >"$state_dir/server-$i.pid"
    wait_ready "server $i on 127.0.0.1:$port" "$state_dir/server-$i.pid" \
        http_ok "http://127.0.0.1:$port/readyz" \
        || die "server $i did not start (see $state_dir/server-$i.log)"
}

write_nginx_conf() {
    local i conf="$state_dir/nginx.conf" tmp="$state_dir/nginx-tmp"
    mkdir -p "$tmp"
    # Workers may run as an unprivileged user when nginx starts as root.
    chmod 0777 "$tmp"
    {
        echo "# Generated by deploy/local-cluster.sh; the compose equivalent is deploy/nginx.conf."
        echo "daemon off;"
        # One worker keeps round robin strictly in turn (the CI test relies on
        # clients spreading over every server).
        echo "worker_processes 1;"
        echo "pid $state_dir/nginx.pid.nginx;"
        echo "error_log $state_dir/nginx-error.log warn;"
        echo "events { worker_connections 4096; }"
        echo "http {"
        echo "    access_log $state_dir/nginx-access.log;"
        echo "    default_type application/octet-stream;"
        for path in client_body proxy fastcgi uwsgi scgi; do
            echo "    ${path}_temp_path $tmp/$path;"
        done
        echo "    map \$http_upgrade \$connection_upgrade { default upgrade; '' close; }"
        echo "    upstream channels {"
        for i in $(seq 1 "$servers"); do
            # A refused connection (server restarting) sets the server aside
            # for 1 s, then it is tried again.
            echo "        server 127.0.0.1:$(server_port "$i") max_fails=1 fail_timeout=1s;"
        done
        echo "    }"
        echo "    server {"
        echo "        listen 127.0.0.1:$nginx_port;"
        # shellcheck disable=SC2028 # nginx itself turns the literal \n into a newline
        echo "        location = /lb-healthz { access_log off; default_type text/plain; return 200 \"ok\\n\"; }"
        echo "        location / {"
        echo "            proxy_pass http://channels;"
        echo "            include $proxy_conf;"
        # Which server answered: tests use it to see where a WebSocket landed.
        echo "            add_header X-Channels-Upstream \$upstream_addr always;"
        echo "        }"
        echo "    }"
        echo "}"
    } >"$conf"
}

start_nginx() {
    local nginx
    nginx="$(find_nginx)"
    write_nginx_conf
    "$nginx" -t -q -e "$state_dir/nginx-error.log" -p "$state_dir" -c "$state_dir/nginx.conf" \
        || die "nginx rejected $state_dir/nginx.conf (see $state_dir/nginx-error.log)"
    setsid "$nginx" -e "$state_dir/nginx-error.log" -p "$state_dir" -c "$state_dir/nginx.conf" \
        </dev/null >>"$state_dir/nginx.log" 2>&1 &
    echo $! >"$state_dir/nginx.pid"
    wait_ready "nginx on 127.0.0.1:$nginx_port" "$state_dir/nginx.pid" \
        http_ok "http://127.0.0.1:$nginx_port/lb-healthz" \
        || die "nginx did not start (see $state_dir/nginx-error.log)"
}

# --- commands ----------------------------------------------------------------

load_settings() {
    [ -s "$settings" ] || die "no cluster recorded in $state_dir (run \`start\` first)"
    # shellcheck disable=SC1090 # written by `start` below
    . "$settings"
}

any_running() {
    local i
    pid_alive "$state_dir/redis.pid" "$(redis_marker)" && return 0
    pid_alive "$state_dir/nginx.pid" "$(nginx_marker)" && return 0
    for i in $(seq 1 "$servers"); do
        pid_alive "$state_dir/server-$i.pid" "$(server_marker "$i")" && return 0
    done
    return 1
}

cmd_start() {
    local i port
    for v in "$servers" "$base_port" "$nginx_port" "$redis_port"; do
        is_number "$v" || die "ports and counts must be numbers, got \`$v\`"
    done
    [ "$servers" -ge 1 ] || die "--servers must be at least 1"
    case "$layer" in
        redis|redis-pubsub) ;;
        *) die "--layer must be redis or redis-pubsub (the processes share groups through Redis), got \`$layer\`" ;;
    esac
    if [ -s "$settings" ]; then
        # shellcheck disable=SC1090
        (. "$settings"; any_running) && die "a cluster from $state_dir is running: stop it first"
    fi
    if [ -z "$server_bin" ]; then
        server_bin="$repo_root/target/debug/channels-server"
        [ -x "$server_bin" ] || build=1
    fi
    if [ "$build" = 1 ]; then
        log "building channels-server"
        (cd "$repo_root" && cargo build --quiet -p channels-server --bin channels-server) >&2
    fi
    [ -x "$server_bin" ] || die "channels-server binary not found at $server_bin"
    server_bin="$(cd "$(dirname "$server_bin")" && pwd)/$(basename "$server_bin")"
    [ -f "$config_file" ] || die "config file $config_file not found"
    config_file="$(cd "$(dirname "$config_file")" && pwd)/$(basename "$config_file")"
    "$server_bin" --config "$config_file" --check-config >&2 \
        || die "$config_file is not a valid channels-server configuration"
    command -v curl >/dev/null 2>&1 || die "curl not found: install the Debian package \`curl\`"

    for port in "$redis_port" "$nginx_port" $(seq "$base_port" $((base_port + servers - 1))); do
        port_in_use "$port" && die "port $port on 127.0.0.1 is in use"
    done

    cat >"$settings" <<EOF
servers=$servers
layer=$layer
base_port=$base_port
nginx_port=$nginx_port
redis_port=$redis_port
server_bin=$(printf '%q' "$server_bin")
config_file=$(printf '%q' "$config_file")
EOF
    (
        umask 077
        for name in $(compgen -e | grep '^CHANNELS_' || true); do
            declare -p "$name"
        done | sed 's/^declare -x /declare -gx /' >"$state_dir/server.env"
    )
    # A failed start leaves nothing running behind it.
    trap 'log "start failed: stopping what was started"; cmd_stop' EXIT
    start_redis
    for i in $(seq 1 "$servers"); do start_server "$i"; done
    start_nginx
    trap - EXIT
    log "cluster up: http://127.0.0.1:$nginx_port/ -> servers on 127.0.0.1:$base_port..$((base_port + servers - 1)), redis on 127.0.0.1:$redis_port"
}

cmd_stop() {
    local i
    trap - EXIT
    [ -s "$settings" ] || { log "nothing recorded in $state_dir"; return 0; }
    # The load balancer first (no new clients), then the servers (they close
    # their sockets with 1001 and drain), Redis last.
    stop_pid nginx "$state_dir/nginx.pid" "$(nginx_marker)" TERM
    for i in $(seq 1 "$servers"); do
        stop_pid "server $i" "$state_dir/server-$i.pid" "$(server_marker "$i")" TERM
    done
    stop_pid redis "$state_dir/redis.pid" "$(redis_marker)" TERM
}

cmd_status() {
    local i port down=0 ready
    printf '%-10s %-8s %-22s %s\n' PROCESS PID ADDRESS STATE
    status_line() {
        local name="$1" file="$2" marker="$3" addr="$4" url="$5"
        if pid_alive "$file" "$marker"; then
            ready="running"
            if [ -n "$url" ]; then
                if http_ok "$url"; then ready="running, ready"; else ready="running, NOT ready"; down=1; fi
            fi
            printf '%-10s %-8s %-22s %s\n' "$name" "$(cat "$file")" "$addr" "$ready"
        else
            printf '%-10s %-8s %-22s %s\n' "$name" - "$addr" stopped
            down=1
        fi
    }
    status_line redis "$state_dir/redis.pid" "$(redis_marker)" "127.0.0.1:$redis_port" ""
    for i in $(seq 1 "$servers"); do
        port="$(server_port "$i")"
        status_line "server-$i" "$state_dir/server-$i.pid" "$(server_marker "$i")" \
            "127.0.0.1:$port" "http://127.0.0.1:$port/readyz"
    done
    status_line nginx "$state_dir/nginx.pid" "$(nginx_marker)" "127.0.0.1:$nginx_port" \
        "http://127.0.0.1:$nginx_port/lb-healthz"
    return $((down * 3))
}

cmd_restart_server() {
    local i="$1"
    is_number "$i" && [ "$i" -ge 1 ] && [ "$i" -le "$servers" ] \
        || die "restart-server needs a server number from 1 to $servers"
    log "restarting server $i (SIGTERM, drain, start on the same port)"
    stop_pid "server $i" "$state_dir/server-$i.pid" "$(server_marker "$i")" TERM
    start_server "$i"
}

case "$command" in
    start) cmd_start ;;
    stop) load_settings; cmd_stop ;;
    status) load_settings; cmd_status ;;
    restart-server) load_settings; cmd_restart_server "$server_index" ;;
    rolling-restart)
        load_settings
        for i in $(seq 1 "$servers"); do cmd_restart_server "$i"; done ;;
    -h|--help|help) usage ;;
    *) usage >&2; exit 2 ;;
esac
