#!/bin/bash
# Boots the hv-stub image under Bochs, headless, with a deadline.
#   run-bochs.sh [-t SECONDS] [-i IPS] [COM1]
# COM1: none (default) | server:PORT (Bochs listens; libpulse "tcp:127.0.0.1:PORT")
#       | client:PORT (Bochs connects to a listener) | term:/dev/pts/N (a raw pty)
# Port 0xE9 output (the guest's OBS lines, READY) goes to stdout.
# HV_STUB_PIDFILE=FILE: write Bochs's process-group id there.
set -u
here=$(cd "$(dirname "$0")" && pwd)
timeout=30
ips=1000000
while getopts "t:i:" opt; do
    case $opt in
        t) timeout=$OPTARG ;;
        i) ips=$OPTARG ;;
        *) exit 2 ;;
    esac
done
shift $((OPTIND - 1))
com1=${1:-none}
img=${HV_STUB_IMG:-$here/target/hv-stub.img}
[ -f "$img" ] || img=$("$here/build.sh")
command -v bochs-bin >/dev/null || { echo "bochs-bin not found (apt-get install bochs bochsbios vgabios)" >&2; exit 2; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
case $com1 in
    none) com1_line="com1: enabled=0" ;;
    server:*) com1_line="com1: enabled=1, mode=socket-server, dev=localhost:${com1#server:}" ;;
    client:*) com1_line="com1: enabled=1, mode=socket-client, dev=localhost:${com1#client:}" ;;
    term:*) com1_line="com1: enabled=1, mode=term, dev=${com1#term:}" ;;
    *) echo "unknown COM1 mode $com1" >&2; exit 2 ;;
esac
cat >"$work/bochsrc" <<RC
megs: 64
romimage: file=/usr/share/bochs/BIOS-bochs-latest
vgaromimage: file=/usr/share/bochs/VGABIOS-lgpl-latest
display_library: term
ata0-master: type=disk, path=$img, mode=flat, cylinders=1, heads=16, spt=63
boot: disk
port_e9_hack: enabled=1
log: $work/bochs.log
clock: sync=none
cpu: model=tigerlake, count=1, ips=$ips, reset_on_triple_fault=0, ignore_bad_msrs=0
speaker: enabled=0
sound: driver=dummy
$com1_line
RC
echo c >"$work/dbg.rc"
# Own process group, so the deadline kill takes Bochs and nothing else.
cd "$work"
setsid env TERM=xterm bochs-bin -q -unlock -f bochsrc -rc dbg.rc </dev/null &
pid=$!
# Callers that must stop Bochs early kill this process group.
[ -n "${HV_STUB_PIDFILE:-}" ] && echo "$pid" >"$HV_STUB_PIDFILE"
( sleep "$timeout"; kill -KILL -- "-$pid" 2>/dev/null ) &
killer=$!
wait "$pid"
status=$?
kill "$killer" 2>/dev/null
kill -KILL -- "-$pid" 2>/dev/null
[ -n "${HV_STUB_LOG:-}" ] && cp "$work/bochs.log" "$HV_STUB_LOG"
exit $status
