#!/bin/sh
# Debian's real rdmsr/wrmsr (msr-tools), unmodified, through the
# libpulse-msrdev.so drop-in: against `sim` in-process, then against one
# hv-stub-sim debuggee shared by every run (each rdmsr/wrmsr is its own
# process, so a write and its read-back need a debuggee that outlives them).
#
# Usage: msrdev_test.sh LIBPULSE_MSRDEV_SO HV_STUB_SIM
# Exits 77 (ctest SKIP) when msr-tools or hv-stub-sim are missing, unless
# PULSE_REQUIRE_MSR_TOOLS=1 (scripts/test.sh) makes that a failure.
set -u
so=$1 sim=$2
PATH=$PATH:/usr/sbin:/sbin
skip() {
    if [ "${PULSE_REQUIRE_MSR_TOOLS:-0}" = 1 ]; then echo "FAIL: $* (PULSE_REQUIRE_MSR_TOOLS=1)"; exit 1; fi
    echo "SKIP: $*"; exit 77
}
command -v rdmsr >/dev/null && command -v wrmsr >/dev/null || skip "rdmsr/wrmsr not found (apt-get install msr-tools)"
[ -x "$sim" ] || skip "no hv-stub-sim at '$sim' (cargo build --release --workspace)"
[ -f "$so" ] || { echo "FAIL: no $so"; exit 1; }

work=$(mktemp -d)
sim_pids=""
cleanup() { [ -n "$sim_pids" ] && kill $sim_pids 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
failures=0
# expect RC STDOUT STDERR-SUBSTRING COMMAND...: runs COMMAND under the drop-in.
expect() {
    want_rc=$1 want_out=$2 want_err=$3
    shift 3
    LD_PRELOAD=$so "$@" >"$work/out" 2>"$work/err"
    rc=$?
    out=$(cat "$work/out") err=$(cat "$work/err")
    if [ "$rc" != "$want_rc" ] || [ "$out" != "$want_out" ] \
        || { [ -n "$want_err" ] && ! grep -qF -- "$want_err" "$work/err"; } \
        || { [ -z "$want_err" ] && [ -n "$err" ]; }; then
        echo "FAIL: $*: exit $rc (want $want_rc), stdout '$out' (want '$want_out'), stderr '$err' (want '$want_err')"
        failures=$((failures + 1))
    else
        echo "ok: $* -> exit $rc${out:+, '$out'}${err:+, stderr '$err'}"
    fi
}

# start_sim NAME [ARGS...]: a hv-stub-sim process on a free TCP port; its
# transport becomes PULSE_TRANSPORT.
start_sim() {
    name=$1
    shift
    "$sim" --listen 127.0.0.1:0 "$@" >"$work/$name.out" 2>&1 &
    sim_pids="$sim_pids $!"
    i=0
    until grep -q '^listening tcp:' "$work/$name.out"; do
        i=$((i + 1))
        [ $i -le 100 ] || { echo "FAIL: hv-stub-sim ($name) did not start"; cat "$work/$name.out"; exit 1; }
        sleep 0.1
    done
    PULSE_TRANSPORT=$(sed -n 's/^listening //p' "$work/$name.out")
    export PULSE_TRANSPORT
}

# In-process sim (the default transport): the model's IA32_EFER.
(unset PULSE_TRANSPORT; expect 0 d01 "" rdmsr 0xc0000080; exit $failures) || failures=$((failures + 1))

start_sim sim
echo "debuggee: $PULSE_TRANSPORT"

# A write and its read-back, in separate processes; output options of rdmsr.
expect 0 "" "" wrmsr 0xc0000082 0xfffff80012345000
expect 0 fffff80012345000 "" rdmsr 0xc0000082
expect 0 0xFFFFF80012345000 "" rdmsr -p 0 -c -X 0xc0000082
expect 0 5 "" rdmsr -f 15:12 0xc0000082
# SYSENTER_CS is a 32-bit VMCS guest field: the guest reads the low half.
expect 0 "" "" wrmsr -p 0 0x174 0xdeadbeef00000010
expect 0 10 "" rdmsr 0x174
# A refused write: #GP -> EIO, which wrmsr reports as the kernel's; nothing changed.
pat=$(LD_PRELOAD=$so rdmsr 0x277)
expect 4 "" "wrmsr: CPU 0 cannot set MSR 0x00000277 to 0x0202020202020202" wrmsr 0x277 0x0202020202020202
expect 0 "$pat" "" rdmsr 0x277
expect 4 "" "rdmsr: CPU 0 cannot read MSR 0x40001234" rdmsr 0x40001234

# CPUs: -a lists what the debuggee has; one past the last is ENXIO.
cpus=$(LD_PRELOAD=$so rdmsr -a 0xc0000080 | wc -l)
[ "$cpus" -ge 1 ] || { echo "FAIL: rdmsr -a printed no CPU"; failures=$((failures + 1)); }
echo "the debuggee has $cpus CPU(s)"
expect 2 "" "rdmsr: No CPU $cpus" rdmsr -p "$cpus" 0xc0000080
expect 0 "$(seq 0 $((cpus - 1)))" "" ls /dev/cpu
expect 0 "" "" env test -e /dev/cpu/0/msr
expect 0 "" "" wrmsr -a 0xc0000102 0x1234000
for cpu in $(seq 0 $((cpus - 1))); do
    expect 0 1234000 "" rdmsr -p "$cpu" 0xc0000102
done
if [ "$cpus" -ge 2 ]; then
    expect 0 "" "" wrmsr -p 1 0xc0000102 0x5678000
    expect 0 1234000 "" rdmsr -p 0 0xc0000102
    expect 0 5678000 "" rdmsr -p 1 0xc0000102
fi

# Failures of the link: the kernel has no such errno; the drop-in says why on stderr.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
expect 127 "" "rdmsr: open: Connection refused" env PULSE_TRANSPORT=tcp:127.0.0.1:$port rdmsr 0x10
grep -q "libpulse-msrdev: cannot use debuggee .tcp:127.0.0.1:$port.: PULSE_STATUS_CONNECTION_REFUSED" "$work/err" \
    || { echo "FAIL: no libpulse-msrdev explanation: $(cat "$work/err")"; failures=$((failures + 1)); }
# Everything else passes through.
expect 0 "root" "" sh -c 'head -c 4 /etc/passwd'

# An authenticated debuggee: PULSE_KEY_FILE carries the key; a wrong key is
# EACCES, a malformed key file EINVAL, and neither connects without the key.
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$work/key"
echo >>"$work/key"
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$work/wrong"
echo "not a key" >"$work/bad"
start_sim keyed --key-file "$work/key"
PULSE_KEY_FILE=$work/key expect 0 "" "" wrmsr 0xc0000082 0xfffff80000abc000
PULSE_KEY_FILE=$work/key expect 0 fffff80000abc000 "" rdmsr 0xc0000082
# rdmsr reports a failed open other than ENXIO/EIO with perror and exit 127.
expect 127 "" "PULSE_STATUS_ACCESS_DENIED" rdmsr 0xc0000082
PULSE_KEY_FILE=$work/wrong expect 127 "" "Permission denied" rdmsr 0xc0000082
PULSE_KEY_FILE=$work/bad expect 127 "" "PULSE_KEY_FILE $work/bad: not 64 hex digits" rdmsr 0xc0000082

[ "$failures" -eq 0 ] || { echo "FAIL: $failures check(s)"; exit 1; }
echo "PASS: msr-tools work unmodified through libpulse-msrdev.so"
