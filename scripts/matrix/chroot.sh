#!/bin/sh
# Make (once) and cache a Debian chroot for the test matrix.
#
#   scripts/matrix/chroot.sh NAME SUITE ARCH [DEBIAN-PACKAGE...]
#
# The chroot lives in $PYSAMPLER_MATRIX_CACHE/NAME (default
# ~/.cache/pysampler-matrix/NAME), outside the repository, and is reused by
# later runs: a stamp file records the packages it was made with, and only
# packages missing from it are installed. A foreign ARCH (arm64 on an amd64
# host) runs under qemu-user-static through binfmt_misc. Needs root.
set -eu

name=$1 suite=$2 arch=$3
shift 3
cache=${PYSAMPLER_MATRIX_CACHE:-$HOME/.cache/pysampler-matrix}
root=$cache/$name
mirror=${PYSAMPLER_DEBIAN_MIRROR:-http://deb.debian.org/debian}
mkdir -p "$cache"

host_arch=$(dpkg --print-architecture)
if [ "$arch" != "$host_arch" ]; then
    "$(dirname "$0")/qemu-setup.sh" "$arch"
fi

if [ ! -f "$root/.pysampler-base" ]; then
    echo "chroot $name: debootstrap $suite/$arch into $root" >&2
    rm -rf "$root"
    debootstrap --variant=minbase --arch="$arch" \
        --include=ca-certificates,build-essential \
        "$suite" "$root" "$mirror" >"$cache/$name.debootstrap.log" 2>&1 || {
        tail -20 "$cache/$name.debootstrap.log" >&2
        exit 1
    }
    touch "$root/.pysampler-base"
fi

# resolv.conf for pip inside the chroot
cp /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true

missing=""
for p in "$@"; do
    grep -qx "$p" "$root/.pysampler-base" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "chroot $name: apt-get install$missing" >&2
    # unstable's Release file may be older than its Valid-Until on a
    # machine whose clock runs ahead; the packages are still signed
    chroot "$root" sh -c "apt-get -o Acquire::Check-Valid-Until=false update -qq && \
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        $missing >/dev/null 2>&1 || apt-get install -y --no-install-recommends $missing"
    for p in $missing; do echo "$p" >>"$root/.pysampler-base"; done
fi
echo "$root"
