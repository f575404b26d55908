#!/bin/sh
# Run the test suite against one Python interpreter, in a venv of its own.
#
#   scripts/matrix/suite.sh PYTHON WORKDIR [PYTEST-ARGS...]
#
# Copies the checkout (tracked and untracked, not ignored files) into
# WORKDIR/src, makes WORKDIR/venv with PYTHON, installs the package from the
# copy (a real, non-editable build against that interpreter's headers) with
# its test extra, and runs pytest there. Used on the host and inside the
# matrix chroots (where the copy sits in the chroot). Prints the delivered
# sampling rate at 1000 Hz with a CPU-bound main thread as a last line.
set -eu
python=$1 work=$2
shift 2
here=$(cd "$(dirname "$0")/../.." && pwd)

mkdir -p "$work"
rm -rf "$work/src"
mkdir -p "$work/src"
if command -v git >/dev/null 2>&1 && [ -e "$here/.git" ]; then
    (cd "$here" && git ls-files -co --exclude-standard -z | xargs -0 tar cf -) | tar xf - -C "$work/src"
else
    # a copy made for a chroot (in-chroot.sh): already clean
    (cd "$here" && tar cf - .) | tar xf - -C "$work/src"
fi

if [ ! -x "$work/venv/bin/python" ]; then
    "$python" -m venv "$work/venv"
fi
py=$work/venv/bin/python
"$py" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
"$py" -m pip install -q "$work/src[test]"
"$py" -c 'import sys, pysampler; print("python", sys.version.split()[0], "pysampler from", pysampler.__file__)'
cd "$work/src"
rc=0
"$py" -m pytest -q -p no:cacheprovider "$@" || rc=$?
"$py" "$here/scripts/matrix/rate.py" || rc=$?
exit $rc
