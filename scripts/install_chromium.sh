#!/usr/bin/env bash
# Install Debian's chromium for the end-to-end browser tests (tests/e2e), if missing.
# Idempotent; runs apt-get as root, or through sudo when not root.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
    echo "chromium already installed: $(/usr/bin/chromium --version 2>/dev/null || echo /usr/bin/chromium)"
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
else
    echo "error: chromium is missing and installing it needs root (no sudo here)." >&2
    echo "       run as root: apt-get update && apt-get install -y chromium" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update
"${SUDO[@]}" apt-get install -y --no-install-recommends chromium
/usr/bin/chromium --version
