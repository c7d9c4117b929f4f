#!/usr/bin/env bash
# ctest driver for the real-VMX case: boots hv-stub under Bochs with COM1 on
# a TCP socket, runs a C example against it through libpulse, and passes only
# if the example succeeded AND the observer guest's own RDMSR shows the value.
#   bochs_e2e.sh EXAMPLE REPO_ROOT MSR_HEX VALUE_HEX
# The example must take the transport string as its first argument.
set -u
example=$1 root=$2 msr=$3 value=$4
# Without Bochs: skipped (exit 77 is ctest's SKIP_RETURN_CODE for this test),
# unless PULSE_REQUIRE_BOCHS=1 (scripts/test.sh) makes it a failure.
if ! command -v bochs-bin >/dev/null; then
  why="bochs-bin not found (apt-get install bochs bochs-term bochsbios vgabios)"
  [ "${PULSE_REQUIRE_BOCHS:-0}" = 1 ] && { echo "FAIL: $why; PULSE_REQUIRE_BOCHS=1 requires it"; exit 1; }
  echo "SKIP: $why; this test boots hv-stub under Bochs"
  exit 77
fi
work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cleanup() {
  [ -s "$work/pid" ] && kill -KILL -- "-$(cat "$work/pid")" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
HV_STUB_PIDFILE="$work/pid" "$root/hv-stub/image/run-bochs.sh" -t 60 "server:$port" >"$work/guest.out" 2>&1 &

wait_for() { # PATTERN SECONDS
  local deadline=$((SECONDS + $2))
  until grep -q -- "$1" "$work/guest.out"; do
    [ $SECONDS -ge $deadline ] && { echo "FAIL: no '$1' from the guest within $2 s"; tail -5 "$work/guest.out"; return 1; }
    sleep 0.1
  done
}
# Bochs's socket-server COM1 waits for its one client before it boots, so
# the example connects first; its handshake retries while hv-stub boots.
wait_for "waiting for client" 30 || exit 1
"$example" "tcp:127.0.0.1:$port" || { echo "FAIL: $example exited $?"; exit 1; }
wait_for READY 5 || exit 1
wait_for "OBS $msr $value" 10 || exit 1
echo "PASS: the guest's own RDMSR of MSR 0x$msr shows 0x$value"
