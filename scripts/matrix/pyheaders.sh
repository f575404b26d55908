#!/bin/sh
# Python 3.11 headers for the eight cross-compile targets, from Debian only,
# cached in $PYSAMPLER_MATRIX_CACHE/pyheaders. Prints that directory.
#
#   include/            CPython's Include/ tree (Debian's python3.11 source
#                       package, the same release as the .debs below)
#   pc/pyconfig.h       the Windows pyconfig.h (PC/pyconfig.h of that source;
#                       one file serves x64 and ARM64, it tests _M_ARM64)
#   amd64/, arm64/      Debian's libpython3.11-dev for that architecture:
#                       usr/include/<triplet>/python3.11/pyconfig.h as
#                       configure wrote it for glibc on x86_64 / aarch64
#
# macOS's pyconfig.h is written by configure on macOS and is in no Debian,
# PyPI or npm package; the macOS targets use the glibc one of the same CPU
# (see cross-compile.sh for what that does and does not check).
set -eu
cache=${PYSAMPLER_MATRIX_CACHE:-$HOME/.cache/pysampler-matrix}/pyheaders
if [ -f "$cache/.done" ]; then echo "$cache"; exit 0; fi
rm -rf "$cache"
mkdir -p "$cache/debs" "$cache/apt/lists/partial" "$cache/src"

# a private apt configuration: Debian bookworm binaries for amd64 and arm64
# and its sources, without touching the host's sources or architectures
cat >"$cache/apt/sources.list" <<LIST
deb [arch=amd64,arm64] http://deb.debian.org/debian bookworm main
deb-src http://deb.debian.org/debian bookworm main
LIST
: >"$cache/apt/status"
aptopt="-o Dir::Etc::SourceList=$cache/apt/sources.list -o Dir::Etc::SourceParts=/nonexistent
 -o Dir::State::Lists=$cache/apt/lists -o Dir::State::Status=$cache/apt/status
 -o APT::Architectures::=amd64 -o APT::Architectures::=arm64 -o Debug::NoLocking=1
 -o Dir::Cache::Archives=$cache/debs -o Acquire::Languages=none"
# shellcheck disable=SC2086
apt-get $aptopt -qq update
cd "$cache/debs"
# shellcheck disable=SC2086
apt-get $aptopt -qq download libpython3.11-dev:amd64 libpython3.11-dev:arm64
for a in amd64 arm64; do
    dpkg-deb -x libpython3.11-dev_*_"$a".deb "$cache/$a"
done
cd "$cache/src"
# shellcheck disable=SC2086
apt-get $aptopt -qq source --download-only python3.11
tar xf python3.11_*.orig.tar.* --wildcards '*/Include/*' '*/PC/pyconfig.h'
mv Python-*/Include "$cache/include"
mkdir -p "$cache/pc"
mv Python-*/PC/pyconfig.h "$cache/pc/pyconfig.h"
rm -rf Python-* ./*.tar.* ./*.dsc
rm -rf "$cache/debs" "$cache/apt"
touch "$cache/.done"
echo "$cache"
