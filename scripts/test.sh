#!/usr/bin/env bash
# Runs every test: starts its own Redis and MongoDB wire server (see
# services.sh), then the Rust test suites. Tests start the real processes.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
eval "$(scripts/services.sh test)"
# The console's browser test drives Debian's Chromium.
if [ -z "${CHROMIUM:-}" ] && ! command -v chromium >/dev/null; then
  echo "installing chromium for the console's browser test" >&2
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >&2
fi
# The clock-skew test runs a worker under libfaketime.
if ! command -v faketime >/dev/null; then
  echo "installing faketime for the clock-skew test" >&2
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq faketime >&2
fi
FAKETIME_LIB=$(dpkg -L libfaketime 2>/dev/null | grep 'libfaketimeMT.so.1$' | head -1 || true)
export FAKETIME_LIB
export INTEGRATION_APP_CONFIG_DIR="$root/integration-app"
cargo build --bin contact-sync --bin contact-sync-dev
cargo test --workspace --all-targets -- --test-threads "${TEST_THREADS:-4}"
# The examples in the docs (the workers README opens with one) compile.
cargo test --workspace --doc
