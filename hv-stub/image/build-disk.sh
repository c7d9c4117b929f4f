#!/bin/sh
# Lays out a bootable disk that makes hv-stub boot a Linux kernel as its
# guest:
#   build-disk.sh KERNEL INITRD CMDLINE OUT
# [hv-stub image, 1 cylinder | payload table (LBA 1008) + command line
#  (LBA 1009..1015) | kernel (LBA 1024) | initrd (next 4 KiB boundary)],
# padded to whole cylinders of 16 heads x 63 sectors. Prints the cylinder
# count (run-bochs.sh gives it to Bochs). The hv-stub image is
# $HV_STUB_IMG, else target/hv-stub.img (built if missing).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
[ $# -eq 4 ] || { echo "usage: $0 KERNEL INITRD CMDLINE OUT" >&2; exit 2; }
kernel=$1 initrd=$2 cmdline=$3 out=$4
[ -f "$kernel" ] || { echo "HV ERROR kernel $kernel: no such file" >&2; exit 2; }
[ -f "$initrd" ] || { echo "HV ERROR initrd $initrd: no such file" >&2; exit 2; }
img=${HV_STUB_IMG:-$here/target/hv-stub.img}
[ -f "$img" ] || img=$("$here/build.sh")

cylinder=1008          # sectors per cylinder (16 x 63); boot.s reads LBA 1008
table_lba=1008
cmdline_max=3583       # 7 sectors minus the terminating NUL (src/firmware.rs)
kernel_lba=1024

cmdline_len=$(printf %s "$cmdline" | wc -c)
if [ "$cmdline_len" -gt "$cmdline_max" ]; then
    echo "HV ERROR command line is $cmdline_len bytes, the payload table holds $cmdline_max" >&2
    exit 2
fi
kernel_bytes=$(stat -c %s "$kernel")
initrd_bytes=$(stat -c %s "$initrd")
kernel_sectors=$(( (kernel_bytes + 511) / 512 ))
initrd_sectors=$(( (initrd_bytes + 511) / 512 ))
initrd_lba=$(( (kernel_lba + kernel_sectors + 7) / 8 * 8 ))
end=$(( initrd_lba + initrd_sectors ))
cylinders=$(( (end + cylinder - 1) / cylinder ))

le32() {
    for shift in 0 8 16 24; do
        # shellcheck disable=SC2059
        printf "\\$(printf %03o $(( ($1 >> shift) & 255 )))"
    done
}

cp "$img" "$out.tmp"
truncate -s $(( cylinders * cylinder * 512 )) "$out.tmp"
{
    printf HVLINUX1
    le32 "$kernel_lba"; le32 "$kernel_sectors"; le32 "$kernel_bytes"
    le32 "$initrd_lba"; le32 "$initrd_sectors"; le32 "$initrd_bytes"
    le32 "$cmdline_len"
} | dd of="$out.tmp" bs=512 seek="$table_lba" conv=notrunc status=none
printf %s "$cmdline" | dd of="$out.tmp" bs=512 seek=$(( table_lba + 1 )) conv=notrunc status=none
dd if="$kernel" of="$out.tmp" bs=512 seek="$kernel_lba" conv=notrunc status=none
dd if="$initrd" of="$out.tmp" bs=512 seek="$initrd_lba" conv=notrunc status=none
mv "$out.tmp" "$out"
echo "$cylinders"
