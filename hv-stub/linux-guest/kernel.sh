#!/bin/bash
# Finds the installed Debian cloud kernel (linux-image-cloud-amd64).
# Sourced by the build scripts: sets KERNEL_VERSION and KERNEL (the vmlinuz
# path), honouring both if already set. Run on its own: prints KERNEL.
if [ -z "${KERNEL_VERSION:-}" ]; then
    # The newest installed one.
    kernel_path=$(ls -1 /boot/vmlinuz-*-cloud-amd64 2>/dev/null | sort -V | tail -n 1 || true)
    if [ -z "$kernel_path" ]; then
        echo "no /boot/vmlinuz-*-cloud-amd64: apt-get install --no-install-recommends linux-image-cloud-amd64" >&2
        exit 1
    fi
    KERNEL_VERSION=${kernel_path#/boot/vmlinuz-}
fi
KERNEL=${KERNEL:-/boot/vmlinuz-$KERNEL_VERSION}
[ -r "$KERNEL" ] || { echo "cannot read $KERNEL" >&2; exit 1; }
[ "${BASH_SOURCE[0]}" = "$0" ] && echo "$KERNEL"
true
