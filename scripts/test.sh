#!/usr/bin/env bash
# Runs every test: starts its own Redis and MongoDB wire server (see
# services.sh), then the Rust test suites. Tests start the real processes.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
eval "$(scripts/services.sh test)"
export INTEGRATION_APP_CONFIG_DIR="$root/integration-app"
cargo build --bin contact-sync
cargo test --workspace --all-targets -- --test-threads "${TEST_THREADS:-4}"
