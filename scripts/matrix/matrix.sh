#!/bin/sh
# The test matrix that runs on one Linux amd64 machine (`make matrix`).
#
#   scripts/matrix/matrix.sh [CELL...]      (default: every cell)
#
# Cells (each: build the package from this checkout against that
# interpreter, run the whole suite, then scripts/matrix/rate.py):
#   host        this machine's python3
#   pyenv-X.Y   each CPython 3.9+ under $PYENV_ROOT/versions, when present
#   py3.9       Debian bullseye chroot (python3.9)
#   py3.13 py3.14 py3.15   Debian unstable chroot (python3.X)
#   arm64       Debian bookworm arm64 chroot (python3.11) under qemu-user-static
#
# Chroots and venvs are cached in $PYSAMPLER_MATRIX_CACHE (default
# ~/.cache/pysampler-matrix); the first run downloads ~1 GB from Debian's
# mirror, later runs reuse them. Needs root for debootstrap, chroot and
# binfmt_misc. Prints a table of pass/fail, seconds and delivered rate, and
# keeps it in $PYSAMPLER_MATRIX_CACHE/report.txt. Exit status: failed cells.
set -u
here=$(cd "$(dirname "$0")" && pwd)
cache=${PYSAMPLER_MATRIX_CACHE:-$HOME/.cache/pysampler-matrix}
export PYSAMPLER_MATRIX_CACHE="$cache"
mkdir -p "$cache/logs"

pyenv_root=${PYENV_ROOT:-$HOME/.pyenv}
pyenv_cells=""
for d in "$pyenv_root"/versions/3.*; do
    [ -x "$d/bin/python3" ] || continue
    v=$(basename "$d")
    case $v in 3.[0-8].*) continue ;; esac
    pyenv_cells="$pyenv_cells pyenv-$v"
done

cells=${*:-host $pyenv_cells py3.9 py3.13 py3.14 py3.15 arm64}

run_cell() {
    case $1 in
        host) "$here/suite.sh" python3 "$cache/host" ;;
        pyenv-*) "$here/suite.sh" "$pyenv_root/versions/${1#pyenv-}/bin/python3" "$cache/$1" ;;
        py3.9)
            "$here/chroot.sh" bullseye-amd64 bullseye amd64 python3.9-dev python3.9-venv >/dev/null &&
                "$here/in-chroot.sh" bullseye-amd64 python3.9 ;;
        py3.13 | py3.14 | py3.15)
            "$here/chroot.sh" sid-amd64 sid amd64 \
                python3.13-dev python3.13-venv python3.14-dev python3.14-venv \
                python3.15-dev python3.15-venv >/dev/null &&
                "$here/in-chroot.sh" sid-amd64 "python${1#py}" ;;
        arm64)
            "$here/chroot.sh" bookworm-arm64 bookworm arm64 python3-dev python3-venv >/dev/null &&
                "$here/in-chroot.sh" bookworm-arm64 python3.11 ;;
        *) echo "unknown cell $1" >&2; return 2 ;;
    esac
}

report=$cache/report.txt
new=$(mktemp "$cache/report.XXXXXX")
failed=0
for cell in $cells; do
    log=$cache/logs/$cell.log
    echo "== $cell (log: $log)" >&2
    t0=$(date +%s)
    if run_cell "$cell" >"$log" 2>&1; then status=pass; else status=FAIL; failed=$((failed + 1)); fi
    t1=$(date +%s)
    summary=$(grep -E '^(=+ )?[0-9]+ (passed|failed)|[0-9]+ passed|[0-9]+ failed' "$log" | tail -1 | sed 's/=//g; s/^ *//; s/ *$//')
    rate=$(sed -n 's/^rate: //p' "$log" | tail -1)
    line=$(printf '%-16s %-4s %5ss  %s | %s' "$cell" "$status" "$((t1 - t0))" "$summary" "$rate")
    echo "$line" | tee -a "$new"
    if [ "$status" = FAIL ]; then grep -E '^(FAILED|ERROR)' "$log" | head -10 | sed 's/^/    /' | tee -a "$new"; fi
done
mv "$new" "$report"
echo "report: $report" >&2
exit "$failed"
