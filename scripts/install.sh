#!/usr/bin/env bash
# Builds libpulse in release mode and installs it like a C library (what
# `cargo cinstall` would do, without needing cargo-c):
#
#   PREFIX/lib/libpulse.so.X.Y.Z            the shared library, soname libpulse.so.SOVER
#   PREFIX/lib/libpulse.so.SOVER -> ...     the soname link (SOVER: MAJOR, or 0.MINOR before 1.0)
#   PREFIX/lib/libpulse.so -> ...           the development link (-lpulse)
#   PREFIX/lib/libpulse.a                   the static library
#   PREFIX/lib/pkgconfig/pulse.pc           for `pkg-config --cflags --libs pulse`
#   PREFIX/include/pulse.h
#   PREFIX/bin/pulse                        the command-line tool
#
# Usage: scripts/install.sh [--prefix DIR] [--libdir DIR] [--includedir DIR]
#                           [--bindir DIR] [--destdir DIR] [--no-cli]
# Defaults: --prefix $PREFIX or /usr/local, --libdir PREFIX/lib,
# --includedir PREFIX/include, --bindir PREFIX/bin, --destdir $DESTDIR
# (a staging root for packagers: files go to DESTDIR/PREFIX/..., while
# pulse.pc names PREFIX). docs/ABI.md explains the versioning.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "install.sh: $*" >&2; exit 2; }

prefix=${PREFIX:-/usr/local}
libdir= includedir= bindir=
destdir=${DESTDIR:-}
cli=1
while [ $# -gt 0 ]; do
  case $1 in
    --prefix|--libdir|--includedir|--bindir|--destdir)
      [ $# -ge 2 ] || die "$1 needs a value"
      case $1 in
        --prefix) prefix=$2 ;; --libdir) libdir=$2 ;; --includedir) includedir=$2 ;;
        --bindir) bindir=$2 ;; --destdir) destdir=$2 ;;
      esac
      shift 2 ;;
    --prefix=*) prefix=${1#*=}; shift ;;
    --libdir=*) libdir=${1#*=}; shift ;;
    --includedir=*) includedir=${1#*=}; shift ;;
    --bindir=*) bindir=${1#*=}; shift ;;
    --destdir=*) destdir=${1#*=}; shift ;;
    --no-cli) cli=0; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
command -v cargo >/dev/null || die "cargo is required (https://rustup.rs)"

# Absolute paths: pulse.pc and the symlinks must not depend on the cwd.
abs() { case $1 in /*) printf '%s\n' "$1" ;; *) printf '%s/%s\n' "$PWD" "$1" ;; esac; }
prefix=$(abs "$prefix")
libdir=$(abs "${libdir:-$prefix/lib}")
includedir=$(abs "${includedir:-$prefix/include}")
bindir=$(abs "${bindir:-$prefix/bin}")

# The version and soname, from Cargo.toml through cargo itself.
version=$(cargo pkgid --quiet -p pulse | sed 's/.*[#@]//')
[[ $version =~ ^([0-9]+)\.([0-9]+)\.([0-9]+) ]] || die "cannot read the version ('$version')"
major=${BASH_REMATCH[1]} minor=${BASH_REMATCH[2]}
if [ "$major" = 0 ]; then sover=0.$minor; else sover=$major; fi
release=${BASH_REMATCH[0]}
soname=libpulse.so.$sover

echo "== building libpulse $version (release)"
cargo build --release --quiet --lib
[ "$cli" = 1 ] && cargo build --release --quiet --bin pulse
# The system libraries a static link needs, as rustc reports them for this
# toolchain and target (they go to Libs.private).
native_libs=$(cargo rustc --release --quiet --lib -- --print native-static-libs 2>&1 \
  | sed -n 's/.*native-static-libs: //p' | tail -n 1)
[ -n "$native_libs" ] || die "rustc did not report native-static-libs"

out=target/release
for f in libpulse.so libpulse.a; do [ -f "$out/$f" ] || die "missing $out/$f"; done
if command -v readelf >/dev/null; then
  built=$(readelf -d "$out/libpulse.so" | sed -n 's/.*Library soname: \[\(.*\)\]/\1/p')
  [ "$built" = "$soname" ] || die "libpulse.so has soname '$built', expected '$soname' (see build.rs)"
fi

echo "== installing to ${destdir}${prefix}"
install -d "$destdir$libdir/pkgconfig" "$destdir$includedir"
install -m 0755 "$out/libpulse.so" "$destdir$libdir/libpulse.so.$release"
ln -sfn "libpulse.so.$release" "$destdir$libdir/$soname"
ln -sfn "$soname" "$destdir$libdir/libpulse.so"
install -m 0644 "$out/libpulse.a" "$destdir$libdir/libpulse.a"
install -m 0644 include/pulse.h "$destdir$includedir/pulse.h"
if [ "$cli" = 1 ]; then
  install -d "$destdir$bindir"
  install -m 0755 "$out/pulse" "$destdir$bindir/pulse"
fi

# ${prefix}-relative paths where possible, so the .pc file can be relocated.
rel() { case $1 in "$prefix"/*) printf '${prefix}/%s\n' "${1#"$prefix"/}" ;; *) printf '%s\n' "$1" ;; esac; }
cat > "$destdir$libdir/pkgconfig/pulse.pc" <<EOF
prefix=$prefix
libdir=$(rel "$libdir")
includedir=$(rel "$includedir")

Name: pulse
Description: libpulse: write and read the MSRs of a debuggee through the hv-stub hypervisor
Version: $version
Libs: -L\${libdir} -lpulse
Libs.private: $native_libs
Cflags: -I\${includedir}
EOF

echo "installed libpulse $version (soname $soname):"
for f in "$libdir/libpulse.so.$release" "$libdir/$soname" "$libdir/libpulse.so" "$libdir/libpulse.a" \
         "$libdir/pkgconfig/pulse.pc" "$includedir/pulse.h"; do
  echo "  $destdir$f"
done
[ "$cli" = 1 ] && echo "  $destdir$bindir/pulse"
if [ -z "$destdir" ]; then
  case ":${PKG_CONFIG_PATH:-}:" in
    *":$libdir/pkgconfig:"*) ;;
    *) echo "pkg-config: export PKG_CONFIG_PATH=$libdir/pkgconfig\${PKG_CONFIG_PATH:+:\$PKG_CONFIG_PATH}" ;;
  esac
  case $libdir in
    /usr/lib|/usr/lib64|/usr/local/lib|/usr/lib/*-linux-gnu) echo "run ldconfig (as root) so the loader finds $soname" ;;
    *) echo "at run time: -Wl,-rpath,$libdir or LD_LIBRARY_PATH=$libdir" ;;
  esac
fi
