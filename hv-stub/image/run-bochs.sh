#!/bin/bash
# Boots hv-stub under Bochs, headless, with a deadline.
#   run-bochs.sh [-t SECONDS] [-i IPS] [-c CPUS] [-m MODEL] [-M MEGS]
#                [-k KERNEL -r INITRD [-a CMDLINE]] [-K KEYFILE] [COM1]
# Without -k the guest is hv-stub's observer loop; with -k hv-stub boots
# this Linux bzImage with this initrd as its guest (build-disk.sh), the
# kernel command line being "console=ttyS1,115200" followed by CMDLINE.
# -K KEYFILE: boot a copy of the image holding this key (set-key.sh): hv-stub
# then answers only clients that prove it (docs/SECURITY.md).
# COM1: none (default) | server:PORT (Bochs listens; libpulse "tcp:127.0.0.1:PORT")
#       | client:PORT (Bochs connects to a listener) | term:/dev/pts/N (a raw pty)
# COM1 is hv-stub's debugger link and hidden from the guest.
# Standard output: port 0xE9 (hv-stub's HV lines, the observer's OBS/READY
# lines, anything a guest writes there) and the guest's console on COM2
# (ttyS1), line by line. Defaults: -t 30, -i 1000000 (observer) / 50000000
# (Linux), -c 1 (1 to 8 CPUs, hv-stub runs on each), -m tigerlake (observer)
# / corei7_skylake_x (Linux; Debian's kernel does not boot on tigerlake),
# -M 64 (observer) / 256 (Linux).
# Exit status: 1 as soon as a line starting with "HV ERROR" or "FATAL"
# appeared (Bochs is killed HV_STUB_ERROR_GRACE seconds later, default 2, so
# a debugger can still look); otherwise Bochs's own status (1 after a clean
# shutdown as after a triple fault; 137 when the deadline killed it).
# HV_STUB_PIDFILE=FILE: write Bochs's process-group id there.
# HV_STUB_LOG=FILE: copy bochs.log there. HV_STUB_IMG=FILE: the hv-stub image.
set -u
here=$(cd "$(dirname "$0")" && pwd)
timeout=30
ips=
cpus=1
model=
megs=
kernel=
initrd=
append=
keyfile=
while getopts "t:i:c:m:M:k:r:a:K:" opt; do
    case $opt in
        t) timeout=$OPTARG ;;
        i) ips=$OPTARG ;;
        c) cpus=$OPTARG ;;
        m) model=$OPTARG ;;
        M) megs=$OPTARG ;;
        k) kernel=$OPTARG ;;
        r) initrd=$OPTARG ;;
        a) append=$OPTARG ;;
        K) keyfile=$OPTARG ;;
        *) exit 2 ;;
    esac
done
shift $((OPTIND - 1))
com1=${1:-none}
if [ -n "$kernel" ] || [ -n "$initrd" ]; then
    [ -n "$kernel" ] && [ -n "$initrd" ] || { echo "HV ERROR -k KERNEL and -r INITRD go together" >&2; exit 2; }
    [ -f "$kernel" ] || { echo "HV ERROR kernel $kernel: no such file" >&2; exit 2; }
    [ -f "$initrd" ] || { echo "HV ERROR initrd $initrd: no such file" >&2; exit 2; }
    : "${ips:=50000000}" "${model:=corei7_skylake_x}" "${megs:=256}"
    # Bochs's corei7_skylake_x lacks IA32_MISC_ENABLE (0x1A0), which every
    # Intel CPU has and Linux's verify_cpu reads without a fault handler:
    # let unknown MSRs read 0 as Bochs's default does.
    bad_msrs=1
else
    : "${ips:=1000000}" "${model:=tigerlake}" "${megs:=64}"
    # An MSR the emulated CPU lacks must fault, as on hardware.
    bad_msrs=0
fi
# hv-stub starts and virtualises every CPU, at most percpu::MAX_CPUS (8).
case $cpus in
    [1-8]) ;;
    *) echo "run-bochs.sh: -c $cpus: hv-stub runs on 1 to 8 CPUs" >&2; exit 2 ;;
esac
img=${HV_STUB_IMG:-$here/target/hv-stub.img}
[ -f "$img" ] || img=$("$here/build.sh")
command -v bochs-bin >/dev/null || { echo "bochs-bin not found (apt-get install bochs bochsbios vgabios)" >&2; exit 2; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if [ -n "$keyfile" ]; then
    cp "$img" "$work/keyed.img" || exit 2
    "$here/set-key.sh" "$work/keyed.img" "$keyfile" || exit 2
    img=$work/keyed.img
fi
case $com1 in
    none) com1_line="com1: enabled=0" ;;
    server:*) com1_line="com1: enabled=1, mode=socket-server, dev=localhost:${com1#server:}" ;;
    client:*) com1_line="com1: enabled=1, mode=socket-client, dev=localhost:${com1#client:}" ;;
    term:*) com1_line="com1: enabled=1, mode=term, dev=${com1#term:}" ;;
    *) echo "unknown COM1 mode $com1" >&2; exit 2 ;;
esac
cylinders=1
disk=$img
if [ -n "$kernel" ]; then
    disk=$work/disk.img
    cmdline="console=ttyS1,115200${append:+ $append}"
    cylinders=$(HV_STUB_IMG=$img "$here/build-disk.sh" "$kernel" "$initrd" "$cmdline" "$disk") || exit 2
fi
: >"$work/e9.out"
: >"$work/com2.out"
cat >"$work/bochsrc" <<RC
megs: $megs
romimage: file=/usr/share/bochs/BIOS-bochs-latest
vgaromimage: file=/usr/share/bochs/VGABIOS-lgpl-latest
display_library: term
ata0-master: type=disk, path=$disk, mode=flat, cylinders=$cylinders, heads=16, spt=63
boot: disk
port_e9_hack: enabled=1
log: $work/bochs.log
clock: sync=none
cpu: model=$model, count=$cpus, ips=$ips, reset_on_triple_fault=0, ignore_bad_msrs=$bad_msrs
speaker: enabled=0
sound: driver=dummy
$com1_line
com2: enabled=1, mode=file, dev=$work/com2.out
RC
echo c >"$work/dbg.rc"
# Own process group, so the deadline kill takes Bochs and nothing else.
cd "$work"
setsid env TERM=xterm bochs-bin -q -unlock -f bochsrc -rc dbg.rc </dev/null >"$work/e9.out" &
pid=$!
# Callers that must stop Bochs early kill this process group.
[ -n "${HV_STUB_PIDFILE:-}" ] && echo "$pid" >"$HV_STUB_PIDFILE"
# Both outputs to stdout, whole lines at a time (each line is one write, so
# the two streams never tear each other's lines).
for out in e9.out com2.out; do
    tail -n +1 -F --pid="$pid" "$work/$out" 2>/dev/null | grep --line-buffered -a '' &
done
# Bochs ends by itself, at the deadline, or shortly after an error line.
end=$((SECONDS + timeout))
error=
while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$end" ]; do
    if [ -z "$error" ]; then
        error=$(grep -h -a -m1 -E '^(HV ERROR|FATAL)' "$work/e9.out" "$work/com2.out" 2>/dev/null | head -1)
        [ -n "$error" ] && end=$((SECONDS + ${HV_STUB_ERROR_GRACE:-2}))
    fi
    sleep 0.2
done
kill -KILL -- "-$pid" 2>/dev/null
{ wait "$pid"; } 2>/dev/null
status=$?
[ -n "$error" ] || error=$(grep -h -a -m1 -E '^(HV ERROR|FATAL)' "$work/e9.out" "$work/com2.out" 2>/dev/null | head -1)
# Let the tails print what is left (they end with Bochs).
wait
[ -n "${HV_STUB_LOG:-}" ] && cp "$work/bochs.log" "$HV_STUB_LOG"
if [ -n "$error" ]; then
    echo "run-bochs.sh: $error" >&2
    exit 1
fi
exit $status
