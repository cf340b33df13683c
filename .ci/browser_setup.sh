#!/usr/bin/env bash
# Headless Chromium (Debian's package) for the inspector page's browser tests
# (tests/test_inspector.py). README command 1 runs it; a no-op once /usr/bin/chromium exists.
# apt-get runs as root, or through sudo for a user who is not root.
set -euo pipefail
[ -x /usr/bin/chromium ] && exit 0
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "browser_setup: installing chromium needs root or sudo" >&2; exit 1; }
    sudo="sudo"
fi
$sudo apt-get update -qq
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
/usr/bin/chromium --version
