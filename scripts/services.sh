#!/usr/bin/env bash
# Makes sure Redis and a MongoDB wire server run, starting local ones where
# needed, and prints the URLs to use as shell assignments:
#   eval "$(scripts/services.sh dev)"    # or: test
# Redis: Debian's redis-server (installed with apt-get when missing); with
# REDIS_CLUSTER=1 a 3-master Redis Cluster of it.
# MongoDB: $MONGODB_URI if set; else a local `mongod` if installed; else the
# MongoDB-compatible SecantusDB server (the Rust one, built once, or the
# Python one from PyPI; see below).
# Logs and data go to .dev/ (git-ignored). Safe to run repeatedly.
set -euo pipefail

mode=${1:-dev}
root=$(cd "$(dirname "$0")/.." && pwd)
state="$root/.dev"
mkdir -p "$state"

if [ "$mode" = test ]; then
  redis_port=${TEST_REDIS_PORT:-6391}
  mongo_port=${TEST_MONGO_PORT:-27031}
else
  redis_port=${DEV_REDIS_PORT:-6390}
  mongo_port=${DEV_MONGO_PORT:-27030}
fi

log() { echo "services: $*" >&2; }

wait_port() { # host port what
  for _ in $(seq 1 300); do
    if (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  log "$3 did not start on $1:$2 (see $state/*.log)"
  exit 1
}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# --- Redis -------------------------------------------------------------
if [ -z "${REDIS_URL:-}" ] || [ "$mode" = test ]; then
  if ! command -v redis-server >/dev/null 2>&1; then
    log "installing redis-server (Debian package)"
    as_root apt-get update -qq >&2 && as_root apt-get install -y -qq redis-server >&2
  fi
  if ! (exec 3<>"/dev/tcp/127.0.0.1/$redis_port") 2>/dev/null; then
    log "starting redis on 127.0.0.1:$redis_port"
    if [ "$mode" = test ]; then persist=(--save "" --appendonly no); else persist=(--appendonly yes); fi
    redis-server --daemonize yes --bind 127.0.0.1 --port "$redis_port" \
      --dir "$state" --dbfilename "redis-$redis_port.rdb" --appendfilename "redis-$redis_port.aof" \
      "${persist[@]}" --logfile "$state/redis-$redis_port.log" --pidfile "$state/redis-$redis_port.pid" >&2
    wait_port 127.0.0.1 "$redis_port" redis
  fi
  REDIS_URL="redis://127.0.0.1:$redis_port"
fi

# --- Redis Cluster (REDIS_CLUSTER=1) -----------------------------------
# Three masters on the ports after Redis' (test: 6392-6394), no replicas,
# created once with `redis-cli --cluster create`; REDIS_URL then names them
# all with the redis+cluster:// scheme. Test mode starts them empty.
if [ "${REDIS_CLUSTER:-0}" = 1 ]; then
  nodes=()
  for i in 1 2 3; do
    port=$((redis_port + i))
    nodes+=("127.0.0.1:$port")
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      log "starting redis cluster node on 127.0.0.1:$port"
      dir="$state/redis-cluster-$port"
      if [ "$mode" = test ]; then rm -rf "$dir"; fi
      mkdir -p "$dir"
      if [ "$mode" = test ]; then persist=(--save "" --appendonly no); else persist=(--appendonly yes); fi
      redis-server --daemonize yes --bind 127.0.0.1 --port "$port" --cluster-enabled yes \
        --cluster-node-timeout 2000 --dir "$dir" "${persist[@]}" \
        --logfile "$dir/redis.log" --pidfile "$dir/redis.pid" >&2
      wait_port 127.0.0.1 "$port" "redis cluster node"
    fi
  done
  if ! redis-cli -p $((redis_port + 1)) cluster info | grep -q 'cluster_state:ok'; then
    if [ "$(redis-cli -p $((redis_port + 1)) cluster info | sed -n 's/^cluster_known_nodes:\([0-9]*\).*/\1/p')" = 1 ]; then
      log "creating the redis cluster"
      redis-cli --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes >/dev/null
    fi
    for _ in $(seq 1 100); do
      redis-cli -p $((redis_port + 1)) cluster info | grep -q 'cluster_state:ok' && break
      sleep 0.1
    done
  fi
  REDIS_URL="redis+cluster://$(IFS=,; echo "${nodes[*]}")"
fi

# --- MongoDB -----------------------------------------------------------
# The server binary, first found of:
#  1. a local `mongod`;
#  2. secantusd-rs, the Rust SecantusDB server (MongoDB wire protocol): ~10x
#     the throughput of the Python one. `dev` mode builds it once with
#     `cargo install` into ~/.cargo/bin (about 15-20 minutes on 2 cores,
#     needs Debian's cmake, ninja-build and swig), then reuses it; `test`
#     mode uses it when it is there;
#  3. the Python SecantusDB server from PyPI, in a virtualenv under .dev/
#     (a minute to install). MONGO_SERVER=py picks it outright.
# The outage tests start servers of their own with the binary chosen, so it
# is installed even when a server already listens on the port.
secantus_rs_version=0.5.3-beta.196
venv="$state/venv"
mongo_server=""
want=${MONGO_SERVER:-auto}
if [ "$want" = auto ] && command -v mongod >/dev/null 2>&1; then
  mongo_server=$(command -v mongod)
elif [ -z "${MONGODB_URI:-}" ] || [ "$mode" = test ]; then
  rs_bin=$(command -v secantusd-rs 2>/dev/null || echo "${CARGO_HOME:-$HOME/.cargo}/bin/secantusd-rs")
  if [ "$want" != py ] && [ ! -x "$rs_bin" ] && [ "$mode" = dev ]; then
    log "building secantusd-rs $secantus_rs_version (the fast MongoDB-compatible server), once:"
    log "  about 15-20 minutes on 2 cores; MONGO_SERVER=py skips it for the slower Python server"
    for pkg in cmake ninja-build swig; do
      command -v "${pkg%-build}" >/dev/null 2>&1 || { as_root apt-get update -qq >&2; as_root apt-get install -y -qq cmake ninja-build swig >&2; break; }
    done
    cargo install --quiet --locked secantus-mdb --version "$secantus_rs_version" --ignore-rust-version >&2 \
      || cargo install --quiet secantus-mdb --version "$secantus_rs_version" --ignore-rust-version >&2
  fi
  if [ "$want" != py ] && [ -x "$rs_bin" ]; then
    mongo_server=$rs_bin
  else
    if [ ! -x "$venv/bin/secantusd-py" ]; then
      log "installing SecantusDB (MongoDB-compatible server) into $venv"
      python3 -m venv "$venv" >&2
      "$venv/bin/pip" install -q --disable-pip-version-check SecantusDB >&2
    fi
    mongo_server="$venv/bin/secantusd-py"
  fi
fi
if [ -z "${MONGODB_URI:-}" ] || [ "$mode" = test ] && [ -z "${TEST_MONGODB_URI:-}" ]; then
  if ! (exec 3<>"/dev/tcp/127.0.0.1/$mongo_port") 2>/dev/null; then
    if [ "$(basename "$mongo_server")" = mongod ]; then
      log "starting mongod on 127.0.0.1:$mongo_port"
      mkdir -p "$state/mongod-$mongo_port"
      mongod --bind_ip 127.0.0.1 --port "$mongo_port" --dbpath "$state/mongod-$mongo_port" \
        --replSet rs0 --fork --logpath "$state/mongod-$mongo_port.log" >&2
      wait_port 127.0.0.1 "$mongo_port" mongod
      mongosh --quiet --port "$mongo_port" --eval 'try { rs.status() } catch (e) { rs.initiate() }' >&2 || true
    else
      if [ "$(basename "$mongo_server")" = secantusd-rs ]; then
        storage="$state/secantus-rs-$mongo_port"
        # tests start from an empty database every time the server starts
        if [ "$mode" = test ]; then rm -rf "$storage"; fi
        extra=(--cache-size 512M)
      else
        if [ "$mode" = test ]; then storage=":memory:"; else storage="$state/secantus-$mongo_port"; fi
        extra=()
      fi
      log "starting $(basename "$mongo_server") on 127.0.0.1:$mongo_port"
      nohup "$mongo_server" --host 127.0.0.1 --port "$mongo_port" --storage-path "$storage" \
        --log-level WARNING "${extra[@]}" >"$state/secantus-$mongo_port.log" 2>&1 &
      echo $! >"$state/secantus-$mongo_port.pid"
      wait_port 127.0.0.1 "$mongo_port" SecantusDB
    fi
  fi
  MONGODB_URI="mongodb://127.0.0.1:$mongo_port/?directConnection=true"
elif [ "$mode" = test ]; then
  MONGODB_URI=$TEST_MONGODB_URI
fi

echo "export REDIS_URL='$REDIS_URL'"
echo "export MONGODB_URI='$MONGODB_URI'"
[ -n "$mongo_server" ] && echo "export MONGO_SERVER_BIN='$mongo_server'"
true
