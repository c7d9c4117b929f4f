#!/usr/bin/env bash
# The main job: build libpulse and run the demo (a write and a read-back of
# guest MSRs) on the simulated debuggee, or on the transport given:
#   scripts/demo.sh [TRANSPORT]      e.g. tcp:127.0.0.1:5555, serial:/dev/ttyS0
set -euo pipefail
case ${1:-} in
  -h|--help)
    cat <<'EOF'
Usage: scripts/demo.sh [TRANSPORT]
Builds libpulse (release) and runs the demo: writes and reads back guest
MSRs and shows what the guest sees, on TRANSPORT (default sim, the
in-process simulated debuggee), e.g. tcp:127.0.0.1:5555 (hv-stub-sim
--listen, or hv-stub under Bochs) or serial:/dev/ttyS0.
EOF
    exit 0 ;;
esac
[ $# -le 1 ] || { echo "demo.sh: one TRANSPORT at most (see --help)" >&2; exit 2; }
cd "$(dirname "$0")/.."
command -v cargo >/dev/null || { echo "demo.sh: cargo is required (https://rustup.rs)" >&2; exit 1; }
exec cargo run --quiet --release --bin pulse-demo -- "${1:-sim}"
