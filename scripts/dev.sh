#!/usr/bin/env bash
# First run on a fresh machine: start Redis and MongoDB (installing what is
# missing), build, and run api + worker + simulator in one process.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
eval "$(scripts/services.sh dev)"
export INTEGRATION_APP_CONFIG_DIR="$root/integration-app"
cargo build --release -p contact-sync -p contact-sync-dev
exec "${CARGO_TARGET_DIR:-target}/release/contact-sync-dev" dev
