# Rust components and targets the build needs: sourced by scripts/test
# (run_step "..." source scripts/lib/ensure-rust.sh).
# shellcheck shell=bash
command -v cargo >/dev/null || die "cargo is missing: install Rust from https://rustup.rs"
if command -v rustup >/dev/null; then
  installed_components=$(rustup component list --installed 2>/dev/null)
  for c in rustfmt clippy; do
    grep -q "^$c" <<<"$installed_components" || rustup component add "$c"
  done
  installed_targets=$(rustup target list --installed)
  for t in wasm32-unknown-unknown thumbv7m-none-eabi; do
    grep -qx "$t" <<<"$installed_targets" || rustup target add "$t"
  done
else
  note "no rustup: assuming the targets are installed"
fi
