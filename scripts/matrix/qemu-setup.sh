#!/bin/sh
# Let this amd64 host run ARCH binaries (arm64 chroots) through
# qemu-user-static and binfmt_misc. Installs the Debian packages if missing.
set -eu
arch=${1:-arm64}
case $arch in
    arm64) qemu=aarch64 ;;
    *) echo "qemu-setup: unsupported arch $arch" >&2; exit 2 ;;
esac
if ! command -v "qemu-$qemu-static" >/dev/null 2>&1 || ! command -v update-binfmts >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user-static binfmt-support >/dev/null
fi
if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
fi
if [ ! -e "/proc/sys/fs/binfmt_misc/qemu-$qemu" ]; then
    update-binfmts --enable "qemu-$qemu"
fi
