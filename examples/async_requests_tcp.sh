#!/bin/sh
# async_requests against an hv-stub-sim process over TCP, which the example
# pauses (SIGSTOP) to hold requests busy and resumes (SIGCONT).
#
# Usage: async_requests_tcp.sh ASYNC_REQUESTS HV_STUB_SIM
# Exits 77 (ctest SKIP) when hv-stub-sim is missing, unless
# PULSE_REQUIRE_HV_STUB_SIM=1 makes that a failure.
set -u
example=$1 sim=$2
if [ ! -x "$sim" ]; then
    [ "${PULSE_REQUIRE_HV_STUB_SIM:-0}" = 1 ] && { echo "FAIL: no hv-stub-sim at '$sim'"; exit 1; }
    echo "SKIP: no hv-stub-sim at '$sim' (cargo build --release --workspace)"
    exit 77
fi
work=$(mktemp -d)
pid=""
cleanup() {
    if [ -n "$pid" ]; then
        kill -CONT "$pid" 2>/dev/null
        kill "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    fi
    rm -rf "$work"
}
trap cleanup EXIT
"$sim" --listen 127.0.0.1:0 >"$work/sim.out" 2>&1 &
pid=$!
i=0
until grep -q '^listening tcp:' "$work/sim.out"; do
    i=$((i + 1))
    [ $i -le 100 ] || { echo "FAIL: hv-stub-sim did not start"; cat "$work/sim.out"; exit 1; }
    sleep 0.1
done
transport=$(sed -n 's/^listening //p' "$work/sim.out")
"$example" "$transport" "$pid"
