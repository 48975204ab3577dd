#!/usr/bin/env bash
# Installs Debian's chromium for the demo's browser test (tests/test_demo.py), if it is missing.
# Playwright drives this system browser; it never downloads one of its own (no internet here).
# Failure is tolerated: the browser test then skips with the reason.
set -u
if command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ]; then
    echo "install_browser: chromium present ($(/usr/bin/chromium --version 2>/dev/null || echo unknown version))"
    exit 0
fi
if [ "$(id -u)" -ne 0 ] && ! command -v sudo >/dev/null 2>&1; then
    echo "install_browser: chromium missing and not root; the browser test will skip"
    exit 0
fi
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo -n"
if $SUDO apt-get update -qq >/dev/null 2>&1 \
    && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1; then
    echo "install_browser: installed $(/usr/bin/chromium --version 2>/dev/null || echo chromium)"
else
    echo "install_browser: could not install chromium with apt-get; the browser test will skip"
fi
exit 0
