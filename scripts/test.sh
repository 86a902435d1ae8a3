#!/usr/bin/env bash
# Runs every test: starts its own Redis and MongoDB wire server (see
# services.sh), then the Rust test suites. Tests start the real processes.
# The queue crate's suite runs a second time on a 3-master Redis Cluster
# (the app's suite has cluster tests of its own). REDIS_CLUSTER=1 runs
# everything on the cluster.
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
cargo build -p contact-sync -p contact-sync-dev
cargo test --workspace --all-targets -- --test-threads "${TEST_THREADS:-4}"
# integration-app/ against the published Membrane SDK's schemas (the
# contract), and the checker's own proof that it refuses broken elements.
contract="$root/integration-app/contract"
if [ ! -f "$contract/node_modules/@membranehq/sdk/package.json" ]; then
  echo "installing the Membrane contract check's dependencies" >&2
  (cd "$contract" && npm ci --no-audit --no-fund --loglevel=error >&2)
fi
node "$contract/check.mjs"
node "$contract/check.mjs" --self-test
# The examples in the docs (the workers README opens with one) compile.
cargo test --workspace --doc
# What relies on MongoDB's own semantics (unique keys freed and used again,
# the store's statements) runs again on the other SecantusDB server the
# scripts may start: secantusd-rs and the Python server differ where it
# matters (the README, "MongoDB servers").
rs_bin=$(command -v secantusd-rs 2>/dev/null || echo "${CARGO_HOME:-$HOME/.cargo}/bin/secantusd-rs")
second=""
case "$(basename "${MONGO_SERVER_BIN:-}")" in
  secantusd-rs) second=py ;;
  secantusd-py) if [ -x "$rs_bin" ]; then second=rs; else
    echo "secantusd-rs is not installed (scripts/dev.sh builds it): the MongoDB-semantics tests ran on the Python server only" >&2; fi ;;
esac
if [ -n "$second" ]; then
  second_env=$(MONGO_SERVER=$second TEST_MONGO_PORT=${TEST_MONGO_PORT_2:-27032} scripts/services.sh test)
  second_uri=$(echo "$second_env" | sed -n "s/^export MONGODB_URI='\(.*\)'\$/\1/p")
  second_bin=$(echo "$second_env" | sed -n "s/^export MONGO_SERVER_BIN='\(.*\)'\$/\1/p")
  echo "the MongoDB-semantics tests again, on $(basename "$second_bin") at $second_uri" >&2
  MONGODB_URI=$second_uri MONGO_SERVER_BIN=$second_bin \
    cargo test --test unique_keys --test store -- --test-threads "${TEST_THREADS:-4}"
fi
if [ "${REDIS_CLUSTER:-0}" != 1 ]; then
  cluster_url=$(REDIS_CLUSTER=1 scripts/services.sh test | sed -n "s/^export REDIS_URL='\(.*\)'\$/\1/p")
  echo "the queue crate's tests again, on the Redis Cluster at $cluster_url" >&2
  REDIS_URL=$cluster_url cargo test -p workers --tests -- --test-threads "${TEST_THREADS:-4}"
fi
