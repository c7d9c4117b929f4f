#!/bin/bash
# Boots Debian's cloud kernel with the test initramfs under Bochs WITHOUT
# hv-stub (the baseline that hv-stub's Linux guest is measured against).
#   run-bare.sh [-t SECONDS] [-c CPUS] [-m MODEL] [-o CONSOLE_FILE]
# Port 0xE9 (init's LINUX lines) goes to stdout; the kernel console
# (ttyS0 = COM1) to CONSOLE_FILE (default: dropped). Bochs is SIGKILLed
# (its whole process group) after SECONDS (default 300).
# HV_STUB_PIDFILE=FILE: write Bochs's process-group id there.
set -u
here=$(cd "$(dirname "$0")" && pwd)
timeout=300
cpus=1
model=corei7_skylake_x
console=/dev/null
while getopts "t:c:m:o:" opt; do
    case $opt in
        t) timeout=$OPTARG ;;
        c) cpus=$OPTARG ;;
        m) model=$OPTARG ;;
        o) console=$OPTARG ;;
        *) exit 2 ;;
    esac
done
command -v bochs-bin >/dev/null || { echo "bochs-bin not found (apt-get install bochs bochs-term bochsbios vgabios)" >&2; exit 2; }
read -r disk cylinders < <("$here/build-bare-disk.sh") || exit 2
[ -f "$disk" ] || exit 2
case $console in /*) ;; *) console=$PWD/$console ;; esac

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat >"$work/bochsrc" <<RC
megs: 256
romimage: file=/usr/share/bochs/BIOS-bochs-latest
vgaromimage: file=/usr/share/bochs/VGABIOS-lgpl-latest
display_library: term
ata0-master: type=disk, path=$disk, mode=flat, cylinders=$cylinders, heads=16, spt=63
boot: disk
port_e9_hack: enabled=1
log: $work/bochs.log
clock: sync=none
cpu: model=$model, count=$cpus, ips=50000000, reset_on_triple_fault=0
speaker: enabled=0
sound: driver=dummy
com1: enabled=1, mode=file, dev=$console
RC
echo c >"$work/dbg.rc"
cd "$work"
# Own process group, so the deadline kill takes Bochs and nothing else.
setsid env TERM=xterm bochs-bin -q -unlock -f bochsrc -rc dbg.rc </dev/null &
pid=$!
[ -n "${HV_STUB_PIDFILE:-}" ] && echo "$pid" >"$HV_STUB_PIDFILE"
( sleep "$timeout"; kill -KILL -- "-$pid" 2>/dev/null ) &
killer=$!
wait "$pid"
status=$?
kill "$killer" 2>/dev/null
kill -KILL -- "-$pid" 2>/dev/null
[ -n "${HV_STUB_LOG:-}" ] && cp "$work/bochs.log" "$HV_STUB_LOG"
exit $status
