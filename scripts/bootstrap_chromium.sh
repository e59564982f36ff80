#!/usr/bin/env bash
# Chromium for the gallery test (tests/batch: the batch gallery opened in a real headless browser). Installs
# Debian's `chromium` package when it is missing; that needs root (CI runs as root), otherwise it says what to run.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "error: the gallery test needs Chromium; install it with: sudo apt-get install -y chromium" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: the gallery test needs Chromium and this system has no apt-get; install chromium yourself" >&2
    exit 1
fi
echo "installing Debian's chromium (headless browser for the gallery test)"
apt-get update -q >/dev/null
DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null
