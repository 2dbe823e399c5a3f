#!/usr/bin/env bash
# Runs the whole test suite: unit, integration, conformance, Redis, interop and
# end-to-end tests, then the doc tests. Installs what it needs first
# (scripts/install-deps.sh). Tests that need Redis start their own redis-server.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
export CHANNELS_INTEROP_PYTHON="$PWD/target/interop-venv/bin/python"

# The end-to-end and deploy tests run the real binaries; build them once with
# the same features as the tests so nothing is rebuilt from inside a test.
cargo build --workspace --all-features --bins
export CHANNELS_SERVER_BIN="$PWD/target/debug/channels-server"

if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --all-features --no-fail-fast
else
    cargo test --workspace --all-features --no-fail-fast --lib --bins --tests
fi
cargo test --workspace --all-features --doc

# The ASGI worker adapter (python/): the tutorial chat behind the gateway.
"$CHANNELS_INTEROP_PYTHON" -m pytest -q python/tests
