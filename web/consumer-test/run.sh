#!/usr/bin/env bash
# Packs web/ with `npm pack`, installs the tarball into a fresh copy of this
# Vite + TypeScript app, type-checks and builds it, and checks the output
# carries the .wasm. The ```ts examples of README.md and web/README.md are
# extracted into the app first, so `tsc` checks them against the typings too.
# Needs web/pkg (scripts/build-web.sh).
# Usage: web/consumer-test/run.sh
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
web="$(dirname "$here")"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

[ -f "$web/pkg/tidings_wasm_bg.wasm" ] || { echo "run scripts/build-web.sh first" >&2; exit 1; }
tarball="$(cd "$web" && npm pack --silent --pack-destination "$work" | tail -1)"
echo "packed $tarball: $(tar -tzf "$work/$tarball" | tr '\n' ' ')"

mkdir "$work/app"
cp -r "$here/package.json" "$here/tsconfig.json" "$here/index.html" "$here/src" "$work/app/"
cp "$here/readme-helpers.d.ts" "$work/app/src/"
node "$here/extract-readme.mjs" "$work/app/src/readme" "$(dirname "$web")" "$(dirname "$web")/README.md" "$web/README.md"
cd "$work/app"
npm install --no-audit --no-fund --loglevel=error
npm install --no-audit --no-fund --loglevel=error --no-save "$work/$tarball"
npm run build
ls -l dist/assets
ls dist/assets | grep -q '\.wasm$' || { echo "the built app carries no .wasm" >&2; exit 1; }
echo "consumer app built"
