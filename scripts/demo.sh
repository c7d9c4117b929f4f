#!/usr/bin/env bash
# The main job: build libpulse and run the demo (a write and a read-back of
# guest MSRs) on the simulated debuggee, or on the transport given:
#   scripts/demo.sh [TRANSPORT]      e.g. tcp:127.0.0.1:5555, serial:/dev/ttyS0
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo >/dev/null || { echo "demo.sh: cargo is required (https://rustup.rs)" >&2; exit 1; }
exec cargo run --quiet --release --bin pulse-demo -- "${1:-sim}"
