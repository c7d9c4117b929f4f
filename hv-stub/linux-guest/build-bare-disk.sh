#!/bin/bash
# Builds a bootable disk for the no-hv-stub baseline: a FAT "superfloppy"
# (no partition table) with syslinux, Debian's cloud kernel and the test
# initramfs. Made with mtools and `syslinux --install`: no loop mounts, no
# root-only tools.
#   build-bare-disk.sh [OUT]   (default: target/bare-linux.img here)
# Prints "OUT CYLINDERS" (the geometry is CYLINDERS x 16 heads x 63 sectors,
# what bochsrc's ata0-master must say). Rebuilds only when an input changed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/target/bare-linux.img}
# shellcheck source=kernel.sh
. "$here/kernel.sh"
for tool in mformat mcopy syslinux; do
    command -v "$tool" >/dev/null || {
        echo "build-bare-disk.sh: $tool missing (apt-get install mtools syslinux syslinux-common)" >&2
        exit 1
    }
done
initrd=$("$here/build-initramfs.sh")
# pulse_loops: init measures its busy loop three times (benches/bochs_linux.rs).
cmdline="console=ttyS0,115200 nokaslr tsc=reliable no_timer_check pulse_loops=3"
cylinder=$((16 * 63 * 512))
# Kernel + initramfs + 2 MiB for FAT, syslinux and slack, whole cylinders.
need=$(($(stat -c %s "$KERNEL") + $(stat -c %s "$initrd") + 2 * 1024 * 1024))
cylinders=$(((need + cylinder - 1) / cylinder))

up_to_date() {
    [ -f "$out" ] || return 1
    for dep in "$KERNEL" "$initrd" "$here/build-bare-disk.sh" "$here/kernel.sh"; do
        [ "$dep" -nt "$out" ] && return 1
    done
    [ "$(stat -c %s "$out")" -eq $((cylinders * cylinder)) ]
}
if ! up_to_date; then
    mkdir -p "$(dirname "$out")"
    tmp=$out.tmp
    rm -f "$tmp"
    truncate -s $((cylinders * cylinder)) "$tmp"
    export MTOOLS_SKIP_CHECK=1
    mformat -i "$tmp" -T $((cylinders * 16 * 63)) -h 16 -s 63 ::
    cfg=$(mktemp)
    trap 'rm -f "$cfg"' EXIT
    printf 'DEFAULT linux\nPROMPT 0\nTIMEOUT 0\nLABEL linux\n  KERNEL vmlinuz\n  INITRD initrd.gz\n  APPEND %s\n' \
        "$cmdline" >"$cfg"
    mcopy -i "$tmp" "$KERNEL" ::vmlinuz
    mcopy -i "$tmp" "$initrd" ::initrd.gz
    mcopy -i "$tmp" "$cfg" ::syslinux.cfg
    syslinux --install "$tmp"
    mv "$tmp" "$out"
fi
echo "$out $cylinders"
