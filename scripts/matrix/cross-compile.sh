#!/bin/sh
# Cross-compile the C core for the eight wheel targets with `zig cc`
# (the ziglang package from PyPI), from this Linux amd64 machine.
#
# Per target (x86_64 and aarch64 of linux-gnu, linux-musl, macos, windows):
#   1. platform: scripts/matrix/platform_check.c, which uses every function
#      of src/_sampler/platform.h, compiled with -Wall -Werror against the
#      target's own libc/SDK headers as zig ships them (glibc, musl, macOS
#      libSystem, mingw-w64): the per-thread CPU clock, timer thread,
#      waker/bell and sleeping code of that OS compiles warning-free.
#   2. extensions: the Cython-generated _sampler.c (with core.h, pyframes.h,
#      tables.h) and _columns.c compiled with -Werror=implicit-function-declaration
#      -Werror=incompatible-pointer-types against CPython 3.11 headers: the
#      Include/ tree of Debian's python3.11 source and a pyconfig.h for the
#      target (scripts/matrix/pyheaders.sh): Debian's libpython3.11-dev
#      (amd64/arm64) for linux-gnu, the same for linux-musl and macOS (no
#      musl or macOS pyconfig.h is packaged anywhere we can fetch; for our
#      code the differences are HAVE_* probes of libc functions we do not
#      call), PC/pyconfig.h for Windows. Linux and macOS objects are also
#      linked into a shared library with Python's symbols left undefined, as
#      an extension module is; Windows is compiled only (linking needs
#      python311.lib, which no Debian package ships).
# What this does not check: running on those systems, other CPython
# versions' headers (the test matrix and the wheel workflow do that).
set -eu
here=$(cd "$(dirname "$0")/../.." && pwd)
cd "$here"
py=${PYTHON:-python3}
[ -x .venv/bin/python ] && py=.venv/bin/python
zig="$py -m ziglang"
headers=$(scripts/matrix/pyheaders.sh)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

"$py" -m cython -3 src/_sampler.pyx -o "$out/_sampler.c"
"$py" -m cython -3 src/_columns.pyx -o "$out/_columns.c"
echo "zig $($zig version), CPython headers $(sed -n 's/^#define PY_VERSION[ \t]*"\(.*\)"/\1/p' "$headers/include/patchlevel.h")"

fail=0
for target in x86_64-linux-gnu aarch64-linux-gnu x86_64-linux-musl aarch64-linux-musl \
    x86_64-macos aarch64-macos x86_64-windows-gnu aarch64-windows-gnu; do
    case $target in
        x86_64-linux-*) pyconf=$headers/amd64/usr/include/x86_64-linux-gnu/python3.11 ;;
        aarch64-linux-*) pyconf=$headers/arm64/usr/include/aarch64-linux-gnu/python3.11 ;;
        x86_64-macos) pyconf=$headers/amd64/usr/include/x86_64-linux-gnu/python3.11 ;;
        aarch64-macos) pyconf=$headers/arm64/usr/include/aarch64-linux-gnu/python3.11 ;;
        *-windows-*) pyconf=$headers/pc ;;
    esac
    # PC/pyconfig.h derives MS_WIN64 (and with it SIZEOF_VOID_P) from
    # MSVC's own macros; zig's mingw-w64 ABI needs it said, as a 64-bit
    # MSVC build would
    extra=""
    case $target in *-windows-*) extra="-DMS_WIN64" ;; esac
    # 1. platform.h alone, warnings are errors
    if $zig cc -target "$target" -O2 -Wall -Wextra -Werror -Isrc \
        -c scripts/matrix/platform_check.c -o "$out/platform-$target.o" 2>"$out/err"; then
        p=ok
    else
        p=FAIL; fail=1; sed 's/^/    /' "$out/err" | head -20
    fi
    # 2. the extensions
    e=""
    for ext in _sampler _columns; do
        if $zig cc -target "$target" -O2 -Wall -Wno-unused-function -Wno-unreachable-code \
            -Werror=implicit-function-declaration -Werror=incompatible-pointer-types \
            -Werror=int-conversion \
            -fPIC $extra -Isrc -I"$headers/include" -I"$pyconf" \
            -c "$out/$ext.c" -o "$out/$ext-$target.o" 2>"$out/err"; then
            r=compiled
            case $target in
                *-linux-*) link="-shared" ;;
                *-macos) link="-shared -Wl,-undefined,dynamic_lookup" ;;
                *) link="" ;;
            esac
            if [ -n "$link" ]; then
                # shellcheck disable=SC2086
                if $zig cc -target "$target" $link "$out/$ext-$target.o" -o "$out/$ext-$target.so" 2>"$out/err"; then
                    r="compiled+linked"
                else
                    r=LINK-FAIL; fail=1; sed 's/^/    /' "$out/err" | head
                fi
            fi
        else
            r=FAIL; fail=1; sed 's/^/    /' "$out/err" | grep -E "error" | head -20
        fi
        e="$e $ext $r"
    done
    printf '%-22s platform.h: %-4s  extensions:%s\n' "$target" "$p" "$e"
done
exit $fail
