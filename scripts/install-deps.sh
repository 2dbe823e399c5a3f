#!/usr/bin/env bash
# Installs what the test suite needs outside Cargo, when it is missing:
#   - redis-server and redis-sentinel (Debian packages) for the Redis tests,
#   - chromium (+ a font) for the headless browser test of the chat page,
#   - nginx for the local-cluster test of deploy/,
#   - a Python venv with the real channels_redis (and Django, for the gateway's
#     signed tokens) from PyPI for the interop tests, and schemathesis for the
#     HTTP API's contract test (target/interop-venv, pinned by
#     interop/requirements.txt and interop/requirements-api.txt).
# Safe to run again: it only installs what is not there yet.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_install() {
    local sudo=""
    if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq || true
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@"
}

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v redis-sentinel >/dev/null 2>&1 || missing+=(redis-sentinel)
command -v chromium >/dev/null 2>&1 || missing+=(chromium fonts-dejavu-core)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
if [ ${#missing[@]} -gt 0 ]; then
    echo "install-deps: installing ${missing[*]}"
    apt_install "${missing[@]}"
fi

venv=target/interop-venv
stamp="$venv/.requirements"
requirements=(interop/requirements.txt interop/requirements-api.txt)
if ! cat "${requirements[@]}" | cmp -s - "$stamp" 2>/dev/null; then
    echo "install-deps: creating the Python interop venv in $venv"
    mkdir -p target
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
        -r interop/requirements.txt -r interop/requirements-api.txt
    cat "${requirements[@]}" > "$stamp"
fi
# The ASGI worker adapter (python/) from the working tree, and its test tools.
"$venv/bin/pip" install --quiet --disable-pip-version-check pytest==9.2.0 websockets==17.4
"$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps --force-reinstall ./python
