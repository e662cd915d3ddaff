#!/usr/bin/env bash
# Install Debian's Chromium and chromedriver for the demo's browser test (tests/test_app.py), when missing.
# The test uses the system browser: nothing downloads a browser build of its own. Without root (or password-less
# sudo) or apt-get, this only says what to run; the test then skips, except in CI (CI=true), where it fails.
set -euo pipefail
CHROMIUM="${CHROMIUM_BINARY:-/usr/bin/chromium}"
CHROMEDRIVER="${CHROMEDRIVER:-/usr/bin/chromedriver}"
if [ -x "$CHROMIUM" ] && [ -x "$CHROMEDRIVER" ]; then
    exit 0
fi
PACKAGES="chromium chromium-driver"
if ! command -v apt-get >/dev/null; then
    echo "install_browser.sh: no apt-get here; install Chromium and chromedriver ($PACKAGES on Debian) yourself." >&2
    exit 1
fi
if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
else
    echo "install_browser.sh: run as root: apt-get update && apt-get install -y --no-install-recommends $PACKAGES" >&2
    exit 1
fi
echo "Installing $PACKAGES (Debian packages) for the demo's browser test"
$SUDO apt-get update -qq
# shellcheck disable=SC2086  # word splitting of the package list is intended
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $PACKAGES >/dev/null
