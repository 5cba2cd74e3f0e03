#!/usr/bin/env bash
# Tests the browser client: host unit tests of the reconnection rules, the
# Rust API in Chromium (wasm-bindgen-test), and the npm package in Chromium
# (playwright-core) against real tidings-server processes and Redis, then the
# packed tarball in a fresh Vite + TypeScript app. Installs what is missing.
#
#   scripts/test-web.sh                  build what is needed, run everything
#   scripts/test-web.sh --no-host-tests  skip `cargo test -p tidings-wasm`
#                                        (scripts/test ran them in `cargo test --workspace`)
#
# Env: TIDINGS_SERVER_BIN, the tidings-server to test against (otherwise
# `cargo build -p tidings-server` builds one).
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
cd "$ROOT"

host_tests=true
for arg in "$@"; do
  case "$arg" in
    --no-host-tests) host_tests=false ;;
    -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) die "unknown argument $arg (see scripts/test-web.sh --help)" ;;
  esac
done

command -v node >/dev/null && command -v npm >/dev/null || die "Node.js 18+ and npm are missing: install them (e.g. apt-get install nodejs npm)"

browser_tools() {
  scripts/lib/ensure-wasm-tools.sh
  scripts/lib/ensure-chromium.sh
  command -v redis-server >/dev/null || apt_install redis-server
}
run_step "Browser test tools: wasm-bindgen CLI (as locked), Chromium, Redis" browser_tools

if $host_tests; then
  run_step "Browser client: reconnection rules (host unit tests)" cargo test -p tidings-wasm
fi

# A private copy: a concurrent cargo build must not swap the binary mid-run.
tmp="$(mktemp -d)"
on_exit 'rm -rf "$tmp"'
server_for_tests() {
  local bin=${TIDINGS_SERVER_BIN:-}
  if [ -z "$bin" ]; then
    cargo build -p tidings-server
    bin="$(cargo_target_dir)/debug/tidings-server"
  fi
  [ -x "$bin" ] || die "$bin is missing: build it (cargo build -p tidings-server) or unset TIDINGS_SERVER_BIN"
  cp "$bin" "$tmp/tidings-server"
  note "testing against $bin"
}
run_step "tidings-server for the browser tests" server_for_tests

run_step "npm packages (web/)" npm --prefix web ci --no-audit --no-fund --loglevel=error

browser_rust_tests() {
  # The browser cannot start servers: a server and the test proxy run beside it.
  TIDINGS_SERVER_BIN="$tmp/tidings-server" node web/tests/support/serve.mjs "$tmp/proxy" &
  serve_pid=$!
  on_exit 'kill "$serve_pid" 2>/dev/null || true'
  for _ in $(seq 100); do [ -s "$tmp/proxy" ] && break; sleep 0.1; done
  [ -s "$tmp/proxy" ] || die "the test proxy (web/tests/support/serve.mjs) did not start"
  TIDINGS_TEST_PROXY="$(cat "$tmp/proxy")" CHROMEDRIVER="$(command -v chromedriver)" \
    cargo test -p tidings-wasm --target wasm32-unknown-unknown --test browser
  kill "$serve_pid" 2>/dev/null || true
  wait "$serve_pid" 2>/dev/null || true
}
run_step "Browser client: Rust API in Chromium (wasm-bindgen-test)" browser_rust_tests

run_step "npm package build (scripts/build-web.sh: WebAssembly, smallest profile)" scripts/build-web.sh
run_step "README's browser bundle size is what the build ships" scripts/bundle-size.sh --check

run_step "npm package in Chromium (playwright-core)" \
  env -C web TIDINGS_SERVER_BIN="$tmp/tidings-server" \
  node --test --test-concurrency=1 --test-timeout=900000 --test-reporter=spec tests/

# --workspace, not -p: the same features as `cargo test --workspace`, so the
# test binary it built is reused instead of rebuilt (a minute on a new machine).
run_step "The server over HTTPS and HTTP/2 in Chromium (EventSource, fetch)" \
  cargo test --workspace --test tls -- --ignored chromium

run_step "npm package: packed tarball in a fresh Vite + TypeScript app" web/consumer-test/run.sh
