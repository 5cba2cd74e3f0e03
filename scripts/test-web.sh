#!/usr/bin/env bash
# Tests the browser client: host unit tests of the reconnection rules, the
# Rust API in Chromium (wasm-bindgen-test), and the npm package in Chromium
# (playwright-core) against real tidings-server processes and Redis, then the
# packed tarball in a fresh Vite + TypeScript app. Installs what is missing.
# Usage: scripts/test-web.sh
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

scripts/lib/ensure-wasm-tools.sh
scripts/lib/ensure-chromium.sh
if ! command -v redis-server >/dev/null; then
  sudo=""; [ "$(id -u)" != 0 ] && sudo="sudo"
  $sudo apt-get update && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends redis-server
fi

echo "== reconnection rules (host)"
cargo test -p tidings-wasm

cargo build -p tidings-server
# A private copy: a concurrent cargo build must not swap the binary mid-run.
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cp "$root/target/debug/tidings-server" "$tmp/"
(cd web && npm ci --no-audit --no-fund)

echo "== Rust API in Chromium (wasm-bindgen-test)"
# The browser cannot start servers: a server and the test proxy run beside it.
TIDINGS_SERVER_BIN="$tmp/tidings-server" node web/tests/support/serve.mjs "$tmp/proxy" &
serve_pid=$!
trap 'kill "$serve_pid" 2>/dev/null || true; rm -rf "$tmp"' EXIT
for _ in $(seq 100); do [ -s "$tmp/proxy" ] && break; sleep 0.1; done
[ -s "$tmp/proxy" ] || { echo "test proxy did not start" >&2; exit 1; }
TIDINGS_TEST_PROXY="$(cat "$tmp/proxy")" CHROMEDRIVER="$(command -v chromedriver)" \
  cargo test -p tidings-wasm --target wasm32-unknown-unknown --test browser
kill "$serve_pid"; wait "$serve_pid" 2>/dev/null || true

echo "== npm package in Chromium (playwright-core)"
scripts/build-web.sh
(cd web && TIDINGS_SERVER_BIN="$tmp/tidings-server" node --test --test-concurrency=1 --test-timeout=900000 --test-reporter=spec tests/)

echo "== packed tarball in a fresh Vite + TypeScript app"
web/consumer-test/run.sh
