#!/usr/bin/env bash
# Builds the `tidings` npm package's WebAssembly into web/pkg/ (gitignored):
#   cargo (profile wasm-release) -> wasm-bindgen --target web -> wasm-opt -Oz
# and prints the sizes, raw and gzipped. Installs what it needs first.
# Usage: scripts/build-web.sh
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

scripts/lib/ensure-wasm-tools.sh
if [ ! -x web/node_modules/.bin/wasm-opt ]; then
  # npm's binaryen, never Debian's (it breaks wasm-bindgen's externref table).
  (cd web && npm ci --no-audit --no-fund)
fi

# Keep the target_features section (the root profile strips everything):
# wasm-bindgen reads it, and wasm-opt strips the rest below.
CARGO_PROFILE_WASM_RELEASE_STRIP=debuginfo \
  cargo build -p tidings-wasm --lib --features small-allocator --target wasm32-unknown-unknown --profile wasm-release
target_dir="$(cargo metadata --format-version 1 --no-deps | node -e 'process.stdin.on("data",d=>b+=d);let b="";process.stdin.on("end",()=>console.log(JSON.parse(b).target_directory))')"

out="web/pkg"
rm -rf "$out"
wasm-bindgen --target web --no-typescript --out-dir "$out" \
  "$target_dir/wasm32-unknown-unknown/wasm-release/tidings_wasm.wasm"
web/node_modules/.bin/wasm-opt -Oz --strip-debug --strip-producers \
  --enable-reference-types --enable-bulk-memory --enable-sign-ext \
  --enable-nontrapping-float-to-int --enable-mutable-globals --enable-multivalue \
  "$out/tidings_wasm_bg.wasm" -o "$out/tidings_wasm_bg.wasm"

size() { printf '%-28s %8s B raw %8s B gzip\n' "$(basename "$1")" "$(wc -c <"$1")" "$(gzip -9 -c "$1" | wc -c)"; }
size "$out/tidings_wasm_bg.wasm"
size "$out/tidings_wasm.js"
cat web/src/*.js > "$out/.wrapper.js"
size "$out/.wrapper.js"   # web/src/*.js, the package's own ES module
rm "$out/.wrapper.js"
