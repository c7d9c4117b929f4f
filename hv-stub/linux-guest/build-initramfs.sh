#!/bin/bash
# Builds the test initramfs: /init (init.c, static) and the msr driver of the
# installed Debian cloud kernel, as a gzip'd newc cpio.
#   build-initramfs.sh [OUT]     (default: target/initramfs.cpio.gz here)
# Prints the output path. Rebuilds only when init.c, this script or the
# kernel's msr.ko is newer than OUT.
# KERNEL_VERSION overrides the kernel found under /boot.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/target/initramfs.cpio.gz}
# shellcheck source=kernel.sh
. "$here/kernel.sh"
ko=/lib/modules/$KERNEL_VERSION/kernel/arch/x86/kernel/msr.ko
ko_xz=$ko.xz
if [ ! -f "$ko" ] && [ ! -f "$ko_xz" ]; then
    echo "build-initramfs.sh: no msr.ko for $KERNEL_VERSION" >&2
    exit 1
fi
src=$ko
[ -f "$ko" ] || src=$ko_xz

up_to_date() {
    [ -f "$out" ] || return 1
    for dep in "$here/init.c" "$here/build-initramfs.sh" "$here/kernel.sh" "$src"; do
        [ "$dep" -nt "$out" ] && return 1
    done
    return 0
}
if ! up_to_date; then
    mkdir -p "$(dirname "$out")"
    root=$(mktemp -d)
    trap 'rm -rf "$root"' EXIT
    mkdir -p "$root/dev" "$root/proc"
    gcc -static -O2 -Wall -Wextra -Werror -o "$root/init" "$here/init.c"
    strip "$root/init"
    if [ "$src" = "$ko_xz" ]; then
        xz -dc "$src" >"$root/msr.ko"
    else
        cp "$src" "$root/msr.ko"
    fi
    (cd "$root" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0) |
        gzip -9n >"$out.tmp"
    mv "$out.tmp" "$out"
fi
echo "$out"
