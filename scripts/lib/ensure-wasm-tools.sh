#!/usr/bin/env bash
# Installs what building and testing the browser client needs, once:
# the wasm32 target and wasm-bindgen-cli at exactly the `wasm-bindgen`
# version locked in Cargo.lock (a mismatched CLI refuses the module).
# Usage: scripts/lib/ensure-wasm-tools.sh   (idempotent; sourcing works too)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  rustup target add wasm32-unknown-unknown
fi

want="$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' "$root/Cargo.lock")"
if [ -z "$want" ]; then
  echo "ensure-wasm-tools: no wasm-bindgen in Cargo.lock" >&2
  exit 1
fi
have="$(wasm-bindgen --version 2>/dev/null | awk '{ print $2 }' || true)"
if [ "$have" != "$want" ]; then
  echo "    installing wasm-bindgen-cli $want (the version Cargo.lock pins; compiles once, a few minutes)"
  # Not --locked: the CLI's lock file wants a webpki-roots release the
  # registry here lacks (see docs/TOOLCHAIN.md).
  # --no-default-features: without rustls, ring and webpki-roots (10 of its
  # 155 crates, ring's C among the slowest to build). TLS is only for a
  # remote https WebDriver; the tests talk to a local chromedriver over http.
  cargo install wasm-bindgen-cli --version "=$want" --no-default-features --force
fi
