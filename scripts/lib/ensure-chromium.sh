#!/usr/bin/env bash
# Installs Debian's headless-capable Chromium and its chromedriver if missing.
# Usage: scripts/lib/ensure-chromium.sh   (idempotent)
set -euo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
  exit 0
fi
sudo=""
if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update
$sudo apt-get install -y --no-install-recommends chromium chromium-driver
