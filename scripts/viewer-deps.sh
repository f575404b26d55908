#!/bin/sh
# npm packages the test suite opens our output in (speedscope, memlab), from
# tests/viewers/package.json and its lock file. Skips npm when the
# installed tree already matches the lock file.
set -eu
cd "$(dirname "$0")/../tests/viewers"

if ! command -v npm >/dev/null 2>&1; then
    echo "npm is missing: install Debian's npm (scripts/system-deps.sh does)" >&2
    exit 1
fi
# a copy of the lock file we installed from marks an up-to-date tree
if cmp -s package-lock.json node_modules/.installed-from-lock 2>/dev/null; then
    exit 0
fi
# No install scripts: memlab depends on puppeteer, whose postinstall would
# download a browser (the tests drive Debian's chromium, never a download).
PUPPETEER_SKIP_DOWNLOAD=1 npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
cp package-lock.json node_modules/.installed-from-lock
