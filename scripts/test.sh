#!/usr/bin/env bash
# Runs every test of libpulse: formatting and lints, the Rust unit and
# integration tests (protocol, hv-stub model, engine over sim/TCP/pty, fault
# relay, C ABI, header), the hv-stub end-to-end tests under Bochs, and the
# C examples under CMake/ctest. Installs what it needs when missing
# (apt packages as root; crates through cargo).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v cmake >/dev/null || need_apt+=(cmake)
command -v pkg-config >/dev/null || need_apt+=(pkg-config)
command -v python3 >/dev/null || need_apt+=(python3)
command -v bochs-bin >/dev/null || need_apt+=(bochs)
# The `term` display library, the only headless one in Debian's build.
dpkg -s bochs-term >/dev/null 2>&1 || need_apt+=(bochs-term)
[ -e /usr/share/bochs/BIOS-bochs-latest ] || need_apt+=(bochsbios)
[ -e /usr/share/bochs/VGABIOS-lgpl-latest ] || need_apt+=(vgabios)
command -v cc >/dev/null || need_apt+=(gcc)
command -v c++ >/dev/null || need_apt+=(g++)
command -v ld >/dev/null || need_apt+=(binutils)
# Debian's rdmsr/wrmsr, run unmodified through libpulse-msrdev.so.
command -v rdmsr >/dev/null || [ -x /usr/sbin/rdmsr ] || need_apt+=(msr-tools)
# The real-Linux guest (hv-stub/linux-guest, tests/bochs_linux.rs): a static
# /init (libc.a), a gzip'd newc cpio, and Debian's cloud kernel with its msr.ko.
[ -e /usr/lib/x86_64-linux-gnu/libc.a ] || need_apt+=(libc6-dev)
command -v cpio >/dev/null || need_apt+=(cpio)
command -v gzip >/dev/null || need_apt+=(gzip)
need_apt_norec=()
compgen -G '/boot/vmlinuz-*-cloud-amd64' >/dev/null || need_apt_norec+=(linux-image-cloud-amd64)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "== installing: ${need_apt[*]}"
  if [ "$(id -u)" -ne 0 ]; then
    echo "test.sh: need root to apt-get install ${need_apt[*]}" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
if [ ${#need_apt_norec[@]} -gt 0 ]; then
  # Without recommends: the kernel's would pull firmware nobody boots here.
  echo "== installing (no recommends): ${need_apt_norec[*]}"
  if [ "$(id -u)" -ne 0 ]; then
    echo "test.sh: need root to apt-get install ${need_apt_norec[*]}" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt_norec[@]}" >/dev/null
fi
for component in rustfmt clippy; do
  cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1 || rustup component add "$component"
done

echo "== cargo fmt --check (workspace, hv-stub image, fuzz targets)"
cargo fmt --all -- --check
cargo fmt --manifest-path hv-stub/image/Cargo.toml -- --check
cargo fmt --manifest-path fuzz/Cargo.toml -- --check
echo "== cargo clippy (workspace, hv-stub image)"
cargo clippy --workspace --all-targets --quiet -- -D warnings
(cd hv-stub/image && cargo clippy --quiet -- -D warnings)
echo "== libpulse without the in-process sim transport (--no-default-features)"
cargo build --quiet -p pulse --no-default-features
cargo clippy --quiet -p pulse --no-default-features --lib -- -D warnings
cargo test --quiet -p pulse --no-default-features --lib
echo "== cargo doc (warnings denied)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet
msrv=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml)
echo "== the declared MSRV, Rust $msrv, builds the workspace"
rustup run "$msrv" rustc --version >/dev/null 2>&1 || rustup toolchain install "$msrv" --profile minimal
CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}/msrv" cargo "+$msrv" check --workspace --quiet
echo "== fuzz targets (built with stable, no sanitizers; cargo +nightly fuzz run TARGET runs one)"
cargo build --quiet --manifest-path fuzz/Cargo.toml --bins
echo "== cargo test"
cargo test --workspace
echo "== C examples (CMake + ctest: examples, ASan/UBSan variants, installed copy via pkg-config, Bochs)"
cargo build --release --quiet --workspace   # hv-stub-sim too, for the msr-tools test
scripts/install.sh --prefix "$PWD/build/prefix" >/dev/null
cmake -S examples -B build/examples -DCMAKE_BUILD_TYPE=Debug -DPULSE_INSTALL_PREFIX="$PWD/build/prefix" >/dev/null
cmake --build build/examples --parallel 2 >/dev/null
# Here the Bochs and msr-tools tests must run, not skip.
PULSE_REQUIRE_BOCHS=1 PULSE_REQUIRE_MSR_TOOLS=1 PULSE_REQUIRE_HV_STUB_SIM=1 ctest --test-dir build/examples --output-on-failure
echo "== all tests passed"
