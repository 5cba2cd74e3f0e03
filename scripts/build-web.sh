#!/usr/bin/env bash
# Builds the `tidings` npm package's WebAssembly into web/pkg/ (gitignored):
#   cargo (profile wasm-release) -> wasm-bindgen --target web -> wasm-opt -Oz
# and prints the sizes, raw and gzipped. Installs what it needs first.
# Usage: scripts/build-web.sh
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
cd "$ROOT"

scripts/lib/ensure-wasm-tools.sh
if [ ! -x web/node_modules/.bin/wasm-opt ]; then
  # npm's binaryen, never Debian's (it breaks wasm-bindgen's externref table).
  npm --prefix web ci --no-audit --no-fund --loglevel=error
fi

# Keep the target_features section (the root profile strips everything):
# wasm-bindgen reads it, and wasm-opt strips the rest below.
CARGO_PROFILE_WASM_RELEASE_STRIP=debuginfo \
  cargo build -p tidings-wasm --lib --features small-allocator --target wasm32-unknown-unknown --profile wasm-release
target_dir="$(cargo_target_dir)"

out="web/pkg"
rm -rf "$out"
wasm-bindgen --target web --no-typescript --out-dir "$out" \
  "$target_dir/wasm32-unknown-unknown/wasm-release/tidings_wasm.wasm"
web/node_modules/.bin/wasm-opt -Oz --strip-debug --strip-producers \
  --enable-reference-types --enable-bulk-memory --enable-sign-ext \
  --enable-nontrapping-float-to-int --enable-mutable-globals --enable-multivalue \
  "$out/tidings_wasm_bg.wasm" -o "$out/tidings_wasm_bg.wasm"

# What a bundler ships, raw and gzipped (the README's figure comes from here).
scripts/bundle-size.sh
