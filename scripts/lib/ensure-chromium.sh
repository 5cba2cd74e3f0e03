#!/usr/bin/env bash
# Installs Debian's headless-capable Chromium and its chromedriver if missing.
# Usage: scripts/lib/ensure-chromium.sh   (idempotent)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
  exit 0
fi
note "installing chromium and chromium-driver (Debian packages, about 20 s)"
apt_install chromium chromium-driver
