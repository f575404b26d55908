#!/bin/sh
# npm packages the test suite opens our output in (speedscope), from
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
npm ci --no-audit --no-fund --loglevel=error
cp package-lock.json node_modules/.installed-from-lock
