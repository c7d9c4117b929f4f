#!/bin/sh
# Writes a pre-shared key into an hv-stub disk image (docs/SECURITY.md):
#   set-key.sh IMAGE KEYFILE
# KEYFILE holds 64 hex digits, optionally followed by a newline (`pulse
# keygen KEYFILE` writes one). The image's key slot ("hv-stub key slot",
# then a flag byte and 32 key bytes; hv-stub/image/src/key.rs) is filled in
# place; hv-stub then answers only clients that prove the key. Anyone who
# can read the image can read the key: keep it as private as the key file.
set -eu
[ $# -eq 2 ] || { echo "usage: $0 IMAGE KEYFILE" >&2; exit 2; }
img=$1
keyfile=$2
[ -r "$keyfile" ] || { echo "key file $keyfile: cannot be read" >&2; exit 2; }
# Exactly 64 hex digits and at most one trailing newline (\n or \r\n).
hex=$(tr -d '\n\r' <"$keyfile")
bytes=$(wc -c <"$keyfile")
case $bytes in 64 | 65 | 66) ;; *) echo "key file $keyfile: not a key: 64 hex digits and an optional newline expected" >&2; exit 2 ;; esac
if [ ${#hex} -ne 64 ] || ! printf '%s' "$hex" | grep -Eq '^[0-9A-Fa-f]{64}$' \
    || [ "$(head -c 64 "$keyfile")" != "$hex" ]; then
    echo "key file $keyfile: not a key: 64 hex digits and an optional newline expected" >&2
    exit 2
fi
[ -w "$img" ] || { echo "image $img: cannot be written" >&2; exit 2; }
offsets=$(grep -obUa 'hv-stub key slot' "$img" | cut -d: -f1)
count=$(printf '%s\n' "$offsets" | grep -c . || true)
[ "$count" -eq 1 ] || { echo "image $img: $count key slots instead of 1" >&2; exit 2; }
# Flag 01, then the key's bytes.
printf '01%s' "$hex" | sed 's/../\\x&/g' | xargs -0 printf '%b' \
    | dd of="$img" bs=1 seek=$((offsets + 16)) conv=notrunc status=none
