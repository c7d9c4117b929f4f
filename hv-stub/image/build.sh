#!/bin/sh
# Builds the bootable hv-stub disk image with the stable toolchain:
#   hv-stub/image/build.sh       ->  hv-stub/image/target/hv-stub.img
#   hv-stub/image/build.sh echo  ->  hv-stub/image/target/hv-stub-echo.img
#                                    (a bare COM1 echo loop, for benchmarks)
# (a flat 516096-byte disk: 1 cylinder x 16 heads x 63 sectors). Prints the
# image's path.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
# Flags come from .cargo/config.toml only; never inherit the caller's.
unset RUSTFLAGS CARGO_ENCODED_RUSTFLAGS CARGO_BUILD_TARGET
top="$here/target"
case "${1:-}" in
    "") name=hv-stub; features=""; export CARGO_TARGET_DIR="$top" ;;
    echo) name=hv-stub-echo; features="--features echo"; export CARGO_TARGET_DIR="$top/echo" ;;
    *) echo "usage: $0 [echo]" >&2; exit 2 ;;
esac
out="$CARGO_TARGET_DIR/$name"
mkdir -p "$out"
# One build at a time (tests and scripts run this concurrently): the
# intermediate files below are shared, and interleaved runs produced an
# image without its boot signature.
exec 9>"$top/.build.lock"
flock 9

# shellcheck disable=SC2086
cargo build --release --quiet --target x86_64-unknown-linux-gnu $features
lib="$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release/libhv_stub_image.a"

as --64 -o "$out/boot.o" boot.s
ld -m elf_x86_64 -T link.ld -nostdlib --gc-sections -z noexecstack --no-warn-rwx-segments \
    -o "$out/$name.elf" "$out/boot.o" "$lib"
objcopy -O binary "$out/$name.elf" "$out/$name.bin"

size=$(stat -c %s "$out/$name.bin")
disk=516096
if [ "$size" -gt "$disk" ]; then
    echo "$name.bin is $size bytes, more than the $disk-byte disk" >&2
    exit 1
fi
img="$top/$name.img"
cp "$out/$name.bin" "$img.tmp"
truncate -s "$disk" "$img.tmp"
mv "$img.tmp" "$img"
echo "$img"
