#!/usr/bin/env bash
# What a bundler ships from the npm package `tidings`, in bytes, raw and
# gzipped (gzip -9, each file on its own, unminified: an app's minifier
# makes the JS a little smaller, see web/consumer-test/run.sh):
#   - the WebAssembly module and its wasm-bindgen JS glue (web/pkg/),
#   - the package's own modules (web/src/*.js); those only loaded through a
#     dynamic import() (shared.js, for `shared: true`) are counted apart.
# 1 KB = 1,000 B.
#
#   scripts/bundle-size.sh           print the table (needs web/pkg: scripts/build-web.sh)
#   scripts/bundle-size.sh --check   also fail unless README.md's "browser bundle" row
#                                    states these totals (within 0.5 KB), so it cannot rot
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
cd "$ROOT"

check=false
case "${1:-}" in
  "") ;;
  --check) check=true ;;
  *) die "unknown argument $1 (see the top of scripts/bundle-size.sh)" ;;
esac
[ -f web/pkg/tidings_wasm_bg.wasm ] || die "web/pkg is missing: run scripts/build-web.sh first"

# Modules the package loads only on demand: import("./NAME.js") in web/src.
lazy=" $(grep -ho 'import("\./[^"]*")' web/src/*.js | sed 's/.*"\.\/\(.*\)".*/\1/' | sort -u | tr '\n' ' ')"

raw_eager=0 gz_eager=0 raw_lazy=0 gz_lazy=0
row() { printf '%-44s %9s %9s\n' "$@"; }
row "file" "raw B" "gzip B"
measure() { # FILE LABEL eager|lazy
  local raw gz
  raw=$(wc -c <"$1")
  gz=$(gzip -9 -n -c "$1" | wc -c)
  if [ "$3" = eager ]; then
    raw_eager=$((raw_eager + raw)) gz_eager=$((gz_eager + gz))
  else
    raw_lazy=$((raw_lazy + raw)) gz_lazy=$((gz_lazy + gz))
  fi
  row "$2" "$raw" "$gz"
}
measure web/pkg/tidings_wasm_bg.wasm "pkg/tidings_wasm_bg.wasm" eager
measure web/pkg/tidings_wasm.js "pkg/tidings_wasm.js (wasm-bindgen glue)" eager
for f in web/src/*.js; do
  name=$(basename "$f")
  if [[ "$lazy" == *" $name "* ]]; then
    measure "$f" "src/$name (only with shared: true)" lazy
  else
    measure "$f" "src/$name" eager
  fi
done
row "everything a bundler ships" "$raw_eager" "$gz_eager"
row "  with shared: true" "$((raw_eager + raw_lazy))" "$((gz_eager + gz_lazy))"

kb() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1000 }'; }
claim_row="| browser bundle: all a bundler ships (wasm, JS glue, the package's JS; gzip -9, unminified) | $(kb "$gz_eager") KB gzipped ($(kb $((gz_eager + gz_lazy))) KB with \`shared: true\`) | \`scripts/bundle-size.sh\` |"
$check || exit 0

line=$(grep -m1 '^| browser bundle' README.md) || die "README.md has no '| browser bundle' row in its benchmark table; add: $claim_row"
said=$(sed -n 's/.*| \([0-9.]*\) KB gzipped (\([0-9.]*\) KB with .*/\1 \2/p' <<<"$line")
[ -n "$said" ] || die "cannot read 'N KB gzipped (M KB with ...)' in README.md's row: $line"
read -r said_eager said_all <<<"$said"
off() { awk -v said="$1" -v b="$2" 'BEGIN { d = said - b / 1000; exit !(d > 0.5 || d < -0.5) }'; }
if off "$said_eager" "$gz_eager" || off "$said_all" "$((gz_eager + gz_lazy))"; then
  die "README.md says the browser bundle is $said_eager KB gzipped ($said_all KB with shared: true); the build ships $(kb "$gz_eager") KB ($(kb $((gz_eager + gz_lazy))) KB). Replace its row with:
$claim_row"
fi
note "README.md's browser bundle row ($said_eager KB, $said_all KB with shared: true) matches the build"
