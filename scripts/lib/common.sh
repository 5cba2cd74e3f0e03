# Shared helpers for scripts/*: sourced, not run.
# shellcheck shell=bash

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export ROOT

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
note() { printf '    %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------------------
# Cleanup at exit. Scripts register commands here instead of `trap ... EXIT`
# (a second trap would replace the first, and with it the step summary).
#   on_exit 'kill "$pid" 2>/dev/null'
_exit_hooks=()
on_exit() {
  _exit_hooks+=("$1")
  trap _run_exit_hooks EXIT
}
_run_exit_hooks() {
  local status=$? i
  # Newest first, like nested cleanups; the step summary was registered first.
  for ((i = ${#_exit_hooks[@]} - 1; i >= 0; i--)); do eval "${_exit_hooks[i]}" || true; done
  return "$status"
}

# ---------------------------------------------------------------------------
# Timed steps. `run_step NAME COMMAND [ARGS...]` prints "==> NAME", runs the
# command in this shell (so a function or `source FILE` can export variables),
# then prints how long it took. A failing command stops the script (set -e);
# the step is then reported as failed. The first script that runs a step
# prints a table of every step at exit, including the steps of the scripts it
# calls (they append to the same $TIDINGS_STEPS_FILE). Adding a step is one line:
#   run_step "NATS cluster tests" cargo test -p tidings-server --test nats
# Do not call run_step in a condition (`if run_step`, `run_step ... || x`):
# bash then ignores set -e inside the command.
_step_name=""
_step_started=0
run_step() {
  local name=$1
  shift
  _steps_init
  step "$name"
  _step_name=$name
  _step_started=$(date +%s)
  "$@"
  local secs=$(($(date +%s) - _step_started))
  printf '%s\t%s\tok\n' "$name" "$secs" >>"$TIDINGS_STEPS_FILE"
  _step_name=""
  note "ok in $(_duration "$secs")"
}

_steps_init() {
  [ -n "${_steps_ready:-}" ] && return
  _steps_ready=1
  if [ -z "${TIDINGS_STEPS_FILE:-}" ] || [ ! -w "$TIDINGS_STEPS_FILE" ]; then
    TIDINGS_STEPS_FILE=$(mktemp)
    export TIDINGS_STEPS_FILE
    _steps_owner=1
    _steps_started=$(date +%s)
  fi
  on_exit _steps_finish
}

_steps_finish() {
  if [ -n "$_step_name" ]; then
    printf '%s\t%s\tfailed\n' "$_step_name" "$(($(date +%s) - _step_started))" >>"$TIDINGS_STEPS_FILE"
    printf '\n\033[1;31m==> failed: %s\033[0m\n' "$_step_name" >&2
    _step_name=""
  fi
  [ -n "${_steps_owner:-}" ] || return 0
  local total=$(($(date +%s) - _steps_started)) result=ok
  grep -q $'\tfailed$' "$TIDINGS_STEPS_FILE" && result=failed
  printf 'total (wall clock)\t%s\t%s\n' "$total" "$result" >>"$TIDINGS_STEPS_FILE"
  awk -F'\t' '
    { name[NR] = $1; secs[NR] = $2; res[NR] = $3; if (length($1) > w) w = length($1) }
    END {
      row = "%-" w "s %4d:%02d  %s\n"
      printf "\n\033[1m%-" w "s %7s  %s\033[0m\n", "step", "min:s", "result"
      for (i = 1; i <= NR; i++) {
        if (i == NR) { line = ""; for (j = 0; j < w + 17; j++) line = line "-"; print line }
        printf row, name[i], int(secs[i] / 60), secs[i] % 60, res[i]
      }
    }' "$TIDINGS_STEPS_FILE"
  rm -f "$TIDINGS_STEPS_FILE"
}

_duration() {
  if [ "$1" -ge 60 ]; then printf '%d min %02d s' $(($1 / 60)) $(($1 % 60)); else printf '%d s' "$1"; fi
}

# ---------------------------------------------------------------------------
# The directory cargo builds into (honours CARGO_TARGET_DIR and .cargo/config.toml).
cargo_target_dir() {
  cargo metadata --format-version 1 --no-deps --manifest-path "$ROOT/Cargo.toml" \
    | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p'
}

# apt-get install with one `apt-get update` per run (sudo when not root).
# Waits up to 5 minutes for another apt/dpkg run to finish instead of failing.
apt_install() {
  command -v apt-get >/dev/null || die "need $* but apt-get is missing: install them by hand"
  local sudo="" wait=(-o DPkg::Lock::Timeout=300)
  [ "$(id -u)" = 0 ] || sudo="sudo"
  if [ -z "${TIDINGS_APT_UPDATED:-}" ]; then
    DEBIAN_FRONTEND=noninteractive $sudo apt-get "${wait[@]}" update -qq || die "apt-get update failed"
    export TIDINGS_APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get "${wait[@]}" install -y -qq --no-install-recommends "$@" >/dev/null \
    || die "apt-get install $* failed"
}

# A free TCP port on 127.0.0.1.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}
