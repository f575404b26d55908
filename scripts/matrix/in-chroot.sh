#!/bin/sh
# Run the test suite inside a cached matrix chroot (see chroot.sh).
#
#   scripts/matrix/in-chroot.sh NAME PYTHON [PYTEST-ARGS...]
#
# Copies this checkout into the chroot, mounts /proc, /dev, /dev/pts and
# /dev/shm for the run (multiprocessing and fork tests need them) and
# unmounts them on the way out, then runs suite.sh there with a clean
# environment. CI is not passed in: the chroots carry Python and a compiler,
# not the readers (go) that some tests use, and those skip when absent.
# When the chroot's architecture is not the host's (arm64 on amd64, run by
# qemu-user: every instruction translated, 10-50x slower), PYSAMPLER_EMULATED=1
# tells the tests whose timing cannot hold there (tests/helpers.py, EMULATED).
set -eu
name=$1 python=$2
shift 2
cache=${PYSAMPLER_MATRIX_CACHE:-$HOME/.cache/pysampler-matrix}
root=$cache/$name
here=$(cd "$(dirname "$0")/../.." && pwd)
[ -f "$root/.pysampler-base" ] || { echo "no chroot $root: run chroot.sh first" >&2; exit 2; }

rm -rf "$root/opt/pysampler-src"
mkdir -p "$root/opt/pysampler-src"
(cd "$here" && git ls-files -co --exclude-standard -z | xargs -0 tar cf -) |
    tar xf - -C "$root/opt/pysampler-src"
cp /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
# debootstrap leaves no /etc/hosts in some releases (bullseye, bookworm):
# tests bind and connect to "localhost"
[ -s "$root/etc/hosts" ] || printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"
# pip inside trusts what pip outside trusts (a host behind a TLS-inspecting
# proxy names its CA bundle in PIP_CERT or SSL_CERT_FILE)
ca=${PIP_CERT:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}
cp "$ca" "$root/etc/pysampler-host-ca.crt"

emulated=0
if [ "$(chroot "$root" dpkg --print-architecture)" != "$(dpkg --print-architecture)" ]; then
    emulated=1
fi

mounted=""
cleanup() {
    for m in $mounted; do umount "$m" 2>/dev/null || umount -l "$m" || true; done
}
trap cleanup EXIT INT TERM
for m in proc dev dev/pts dev/shm; do
    mkdir -p "$root/$m"
    if mountpoint -q "$root/$m"; then continue; fi
    if [ "$m" = proc ]; then
        mount -t proc proc "$root/proc"
    else
        mount --bind "/$m" "$root/$m"
    fi
    mounted="$root/$m $mounted"
done

chroot "$root" /usr/bin/env -i \
    PATH=/usr/local/bin:/usr/bin:/bin HOME=/root LANG=C.UTF-8 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_CERT=/etc/pysampler-host-ca.crt \
    SSL_CERT_FILE=/etc/pysampler-host-ca.crt PYSAMPLER_EMULATED=$emulated \
    sh /opt/pysampler-src/scripts/matrix/suite.sh "$python" "/opt/matrix/$python" "$@"
