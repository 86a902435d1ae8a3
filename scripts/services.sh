#!/usr/bin/env bash
# Makes sure Redis and a MongoDB wire server run, starting local ones where
# needed, and prints the URLs to use as shell assignments:
#   eval "$(scripts/services.sh dev)"    # or: test
# Redis: Debian's redis-server (installed with apt-get when missing).
# MongoDB: $MONGODB_URI if set; else a local `mongod` if installed; else the
# MongoDB-compatible SecantusDB server from PyPI, in a virtualenv under .dev/.
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

# --- MongoDB -----------------------------------------------------------
# The server binary: a local mongod, else SecantusDB in a virtualenv (the
# outage tests start servers of their own with it, so it is installed even
# when a server already listens on the port).
venv="$state/venv"
mongo_server=""
if command -v mongod >/dev/null 2>&1; then
  mongo_server=$(command -v mongod)
elif [ -z "${MONGODB_URI:-}" ] || [ "$mode" = test ]; then
  if [ ! -x "$venv/bin/secantusd-py" ]; then
    log "installing SecantusDB (MongoDB-compatible server) into $venv"
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install -q --disable-pip-version-check SecantusDB >&2
  fi
  mongo_server="$venv/bin/secantusd-py"
fi
if [ -z "${MONGODB_URI:-}" ] || [ "$mode" = test ] && [ -z "${TEST_MONGODB_URI:-}" ]; then
  if ! (exec 3<>"/dev/tcp/127.0.0.1/$mongo_port") 2>/dev/null; then
    if command -v mongod >/dev/null 2>&1; then
      log "starting mongod on 127.0.0.1:$mongo_port"
      mkdir -p "$state/mongod-$mongo_port"
      mongod --bind_ip 127.0.0.1 --port "$mongo_port" --dbpath "$state/mongod-$mongo_port" \
        --replSet rs0 --fork --logpath "$state/mongod-$mongo_port.log" >&2
      wait_port 127.0.0.1 "$mongo_port" mongod
      mongosh --quiet --port "$mongo_port" --eval 'try { rs.status() } catch (e) { rs.initiate() }' >&2 || true
    else
      if [ "$mode" = test ]; then storage=":memory:"; else storage="$state/secantus-$mongo_port"; fi
      log "starting SecantusDB on 127.0.0.1:$mongo_port"
      nohup "$venv/bin/secantusd-py" --host 127.0.0.1 --port "$mongo_port" --storage-path "$storage" \
        --log-level WARNING >"$state/secantus-$mongo_port.log" 2>&1 &
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
