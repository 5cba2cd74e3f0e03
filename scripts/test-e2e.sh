#!/usr/bin/env bash
# Runs the demo's end-to-end tests (web/e2e) in headless Chromium against real
# tidings-server processes (and a real Redis for the cluster test). Installs
# what is missing: Chromium, Redis, the wasm tools, the npm packages.
# Screenshots land in web/e2e/artifacts/ (gitignored).
#
#   scripts/test-e2e.sh                  build, then run every e2e test
#   scripts/test-e2e.sh --no-build       use the built server and web/pkg as they are
#   scripts/test-e2e.sh --readme-shot    also copy the two-player screenshot to docs/demo.png
#   scripts/test-e2e.sh FILE...          only these test files (e.g. web/e2e/orders.test.mjs)
#
# Env: TIDINGS_TEST_REDIS_URL (a Redis to use; otherwise 127.0.0.1:6379 when it
# answers, else a private one is started), TIDINGS_SERVER_BIN (the server to test).
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
cd "$ROOT"

build=true
readme_shot=false
files=()
for arg in "$@"; do
  case "$arg" in
    --no-build) build=false ;;
    --readme-shot) readme_shot=true ;;
    -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    -*) die "unknown option $arg (see scripts/test-e2e.sh --help)" ;;
    *) files+=("$(realpath "$arg")") ;;
  esac
done
[ ${#files[@]} -gt 0 ] || files=("$ROOT"/web/e2e/*.test.mjs)

command -v node >/dev/null && command -v npm >/dev/null || die "Node.js 18+ and npm are missing: install them (e.g. apt-get install nodejs npm)"
run_step "Chromium for the demo's end-to-end tests" scripts/lib/ensure-chromium.sh
run_step "Redis for the demo's cluster test" source scripts/lib/ensure-redis.sh

if $build; then
  build_for_e2e() {
    cargo build -p tidings-server
    scripts/build-web.sh
  }
  run_step "Building tidings-server and the tidings npm package" build_for_e2e
fi
export TIDINGS_SERVER_BIN="${TIDINGS_SERVER_BIN:-$(cargo_target_dir)/debug/tidings-server}"
[ -x "$TIDINGS_SERVER_BIN" ] || die "$TIDINGS_SERVER_BIN is missing: run without --no-build"
[ -f web/pkg/tidings_wasm.js ] || die "web/pkg is missing: run without --no-build"

run_step "npm packages (web/e2e)" npm --prefix web/e2e ci --no-audit --no-fund --loglevel=error

e2e_tests() {
  rm -rf web/e2e/artifacts
  (cd web/e2e && node --test --test-concurrency=1 --test-reporter=spec "${files[@]}")
  note "screenshots: $(find web/e2e/artifacts -name '*.png' | wc -l) in web/e2e/artifacts/"
  if $readme_shot; then
    cp web/e2e/artifacts/quiz-two-players.png docs/demo.png
    note "docs/demo.png updated"
  fi
}
run_step "Demo end-to-end tests in headless Chromium" e2e_tests
