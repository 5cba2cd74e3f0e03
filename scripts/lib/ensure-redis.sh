# A Redis server for the cluster tests: sourced by scripts/test and
# scripts/test-e2e.sh (run_step "..." source scripts/lib/ensure-redis.sh).
# Uses the one on 127.0.0.1:6379 when it answers; otherwise starts a private
# one on a free port (installing Debian's redis-server if missing) and stops
# it when the calling script exits. Exports TIDINGS_TEST_REDIS_URL.
# shellcheck shell=bash
redis_ping() { redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null | grep -q PONG; }
# The Redis-restart tests start their own redis-server, so the binary is
# needed even when a Redis is given.
command -v redis-server >/dev/null && command -v redis-cli >/dev/null || apt_install redis-server redis-tools
if [ -n "${TIDINGS_TEST_REDIS_URL:-}" ]; then
  note "using TIDINGS_TEST_REDIS_URL=$TIDINGS_TEST_REDIS_URL"
else
  if redis_ping 6379; then
    export TIDINGS_TEST_REDIS_URL="redis://127.0.0.1:6379"
    note "using the Redis already on 127.0.0.1:6379"
  else
    REDIS_TEST_PORT=$(free_port)
    REDIS_TEST_DIR=$(mktemp -d)
    redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_TEST_PORT" --save '' --appendonly no \
      --dir "$REDIS_TEST_DIR" --pidfile "$REDIS_TEST_DIR/redis.pid" --logfile "$REDIS_TEST_DIR/redis.log" \
      || die "could not start redis-server"
    for _ in $(seq 50); do redis_ping "$REDIS_TEST_PORT" && break; sleep 0.1; done
    redis_ping "$REDIS_TEST_PORT" || die "redis-server did not answer on port $REDIS_TEST_PORT"
    export TIDINGS_TEST_REDIS_URL="redis://127.0.0.1:$REDIS_TEST_PORT"
    REDIS_TEST_PID=$(cat "$REDIS_TEST_DIR/redis.pid")
    on_exit 'kill "$REDIS_TEST_PID" 2>/dev/null; rm -rf "$REDIS_TEST_DIR"'
    note "started a private Redis at $TIDINGS_TEST_REDIS_URL (pid $REDIS_TEST_PID)"
  fi
fi
