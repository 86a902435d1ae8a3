#!/usr/bin/env bash
# Benchmarks: queue throughput and backlog drain of the workers runtime, then
# outbound sync, inbound apply and webhook ingest through the real stack. Uses the services of
# services.sh (a fast MongoDB: set MONGODB_URI to a mongod or secantusd-rs).
#   scripts/bench.sh [JOBS] [CONTACTS]      (SOAK_MINUTES=30 adds the soak)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
eval "$(scripts/services.sh dev)"
jobs=${1:-100000}
contacts=${2:-2000}
export INTEGRATION_APP_CONFIG_DIR="$root/integration-app"
cargo build --release -q -p workers --example queue_bench
cargo build --release -q -p contact-sync -p contact-sync-dev
echo "== queue: $jobs no-op jobs, one process, concurrency 50"
target/release/examples/queue_bench "$jobs" 50 1
echo "== queue: $jobs no-op jobs, two runtimes, concurrency 50 each"
target/release/examples/queue_bench "$jobs" 50 2
echo "== outbound sync: $contacts contacts to hubspot + pipedrive"
RUST_LOG=warn WORKER_CONCURRENCY=${WORKER_CONCURRENCY:-64} target/release/contact-sync-dev bench-sync --contacts "$contacts" --concurrency 32
echo "== inbound apply: $contacts HubSpot changes"
RUST_LOG=warn WORKER_CONCURRENCY=${WORKER_CONCURRENCY:-64} target/release/contact-sync-dev bench-inbound --changes "$contacts"
if ! command -v wrk >/dev/null; then
  echo "installing wrk (Debian package)" >&2
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get install -y -qq wrk >&2 || true
fi
wrk_flag=""; command -v wrk >/dev/null && wrk_flag="--wrk"
echo "== webhook ingest: signed 100-event batches, ${WEBHOOK_RATE:-200}/s for 10 s (api alone)"
RUST_LOG=warn target/release/contact-sync-dev bench-webhooks --rate "${WEBHOOK_RATE:-200}" --seconds 10 $wrk_flag
echo "== fairness: customer A's ${FAIR_PUSHES:-50000} queued pushes against customer B's writes every 100 ms"
RUST_LOG=warn WORKER_CONCURRENCY=${WORKER_CONCURRENCY:-64} target/release/contact-sync-dev bench-fair --pushes "${FAIR_PUSHES:-50000}" --every-ms 100 --max-secs "${FAIR_SECS:-300}"
if [ -n "${SOAK_MINUTES:-}" ]; then
  echo "== soak: steady mixed load for $SOAK_MINUTES min over separate processes"
  target/release/contact-sync-dev bench-soak --minutes "$SOAK_MINUTES"
fi
