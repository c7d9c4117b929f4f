#!/usr/bin/env bash
# Builds libpulse in release mode and installs it like a C library (what
# `cargo cinstall` would do, without needing cargo-c):
#
#   PREFIX/lib/libpulse.so.X.Y.Z            the shared library, soname libpulse.so.SOVER
#   PREFIX/lib/libpulse.so.SOVER -> ...     the soname link (SOVER: MAJOR, or 0.MINOR before 1.0)
#   PREFIX/lib/libpulse.so -> ...           the development link (-lpulse)
#   PREFIX/lib/libpulse.a                   the static library
#   PREFIX/lib/libpulse-msrdev.so           the msr-tools drop-in (LD_PRELOAD; msrdev/README.md)
#   PREFIX/lib/pkgconfig/pulse.pc           `pkg-config --cflags --libs pulse` (shared)
#   PREFIX/lib/pkgconfig/pulse-static.pc    `pkg-config --static --libs pulse-static` (libpulse.a)
#   PREFIX/lib/cmake/pulse/pulseConfig.cmake (+ pulseConfigVersion.cmake)
#                                           find_package(pulse): pulse::pulse, pulse::pulse_static
#   PREFIX/include/pulse.h
#   PREFIX/bin/pulse                        the command-line tool
#
# Libraries and the tool are installed stripped (no debug information; build
# from source for that, or pass --no-strip). Everything installed is listed
# in PREFIX/lib/cmake/pulse/install-manifest.txt, which --uninstall reads to
# remove exactly those files (and the directories the install created, when
# empty).
#
# Usage: scripts/install.sh [--prefix DIR] [--libdir DIR] [--includedir DIR]
#                           [--bindir DIR] [--destdir DIR] [--no-cli]
#                           [--no-strip] [--uninstall]
# Defaults: --prefix $PREFIX or /usr/local, --libdir PREFIX/lib,
# --includedir PREFIX/include, --bindir PREFIX/bin, --destdir $DESTDIR
# (a staging root for packagers: files go to DESTDIR/PREFIX/..., while
# pulse.pc and pulseConfig.cmake name PREFIX). --uninstall takes the same
# --prefix/--libdir/--destdir as the install. Builds into $CARGO_TARGET_DIR
# when set. docs/ABI.md explains the versioning.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "install.sh: $*" >&2; exit 2; }

prefix=${PREFIX:-/usr/local}
libdir= includedir= bindir=
destdir=${DESTDIR:-}
cli=1 strip=1 uninstall=0
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
    --no-strip) strip=0; shift ;;
    --uninstall) uninstall=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done

# Absolute paths: pulse.pc, the CMake files and the symlinks must not depend on the cwd.
abs() { case $1 in /*) printf '%s\n' "$1" ;; *) printf '%s/%s\n' "$PWD" "$1" ;; esac; }
prefix=$(abs "$prefix")
libdir=$(abs "${libdir:-$prefix/lib}")
includedir=$(abs "${includedir:-$prefix/include}")
bindir=$(abs "${bindir:-$prefix/bin}")
[ -z "$destdir" ] || destdir=$(abs "$destdir")
cmakedir=$libdir/cmake/pulse
manifest=$cmakedir/install-manifest.txt

if [ "$uninstall" = 1 ]; then
  [ -f "$destdir$manifest" ] || die "no $destdir$manifest: nothing installed with these options"
  # Files first (never directories, never anything not listed), then the
  # directories the install created, deepest first, each only if empty.
  removed=0
  dirs=$(sed -n 's/^dir //p' "$destdir$manifest" | sort -r)
  while IFS= read -r line; do
    case $line in
      "file "/*) path=$destdir${line#file }
        if [ -f "$path" ] || [ -L "$path" ]; then rm -f -- "$path"; removed=$((removed + 1)); fi ;;
    esac
  done < "$destdir$manifest"
  while IFS= read -r dir; do
    case $dir in /*) rmdir -- "$destdir$dir" 2>/dev/null || true ;; esac
  done <<< "$dirs"
  echo "uninstalled libpulse from ${destdir}${prefix} ($removed files)"
  exit 0
fi

command -v cargo >/dev/null || die "cargo is required (https://rustup.rs)"
CC=${CC:-cc}
command -v "$CC" >/dev/null || die "a C compiler is required for libpulse-msrdev.so (set CC)"
STRIP=${STRIP:-strip}
[ "$strip" = 0 ] || command -v "$STRIP" >/dev/null || die "'$STRIP' not found (binutils), or pass --no-strip"

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
out=$(abs "${CARGO_TARGET_DIR:-target}")/release
# The system libraries a static link needs, as rustc reports them for this
# toolchain and target (they go to Libs.private). Asking means a build with
# other flags, which the next `cargo build` undoes with a rebuild of its own,
# so the answer is kept beside the build, keyed by what it depends on.
key=$({ rustc -vV; echo "${RUSTFLAGS:-}"; cat Cargo.toml Cargo.lock; } | cksum | cut -d' ' -f1)
native_cache=$out/.pulse-native-static-libs-$key
if [ -s "$native_cache" ]; then
  native_libs=$(cat "$native_cache")
else
  native_libs=$(cargo rustc --release --quiet --lib -- --print native-static-libs 2>&1 \
    | sed -n 's/.*native-static-libs: //p' | tail -n 1)
  [ -n "$native_libs" ] || die "rustc did not report native-static-libs"
  printf '%s\n' "$native_libs" > "$native_cache"
  cargo build --release --quiet --lib   # back to the plain build's fingerprint
fi
for f in libpulse.so libpulse.a; do [ -f "$out/$f" ] || die "missing $out/$f"; done
if command -v readelf >/dev/null; then
  built=$(readelf -d "$out/libpulse.so" | sed -n 's/.*Library soname: \[\(.*\)\]/\1/p')
  [ "$built" = "$soname" ] || die "libpulse.so has soname '$built', expected '$soname' (see build.rs)"
fi
# The drop-in links libpulse by its soname and finds it beside itself ($ORIGIN).
echo "== building libpulse-msrdev.so"
# shellcheck disable=SC2016 # $ORIGIN is for the dynamic loader, not the shell
"$CC" -std=gnu99 -O2 -Wall -Wextra -Werror -fPIC -shared -Iinclude \
  -o "$out/libpulse-msrdev.so" msrdev/msrdev.c -L"$out" -lpulse -ldl -lpthread \
  -Wl,-soname,libpulse-msrdev.so -Wl,-rpath,'$ORIGIN' -Wl,-z,defs

echo "== installing to ${destdir}${prefix}"
installed=() created=()
# Directories this install creates (recorded so --uninstall can remove them).
mkdirs() {
  local d
  for d in "$@"; do
    local missing=() p=$d
    while [ ! -d "$destdir$p" ]; do missing+=("$p"); p=$(dirname "$p"); done
    [ ${#missing[@]} -eq 0 ] || created+=("${missing[@]}")
    install -d "$destdir$d"
  done
}
# put MODE SRC DEST [strip-flag]: install one file, stripped when asked.
put() {
  install -m "$1" "$2" "$destdir$3"
  if [ "$strip" = 1 ] && [ -n "${4:-}" ]; then "$STRIP" "$4" "$destdir$3"; fi
  installed+=("$3")
}
link() { ln -sfn "$1" "$destdir$2"; installed+=("$2"); }

mkdirs "$libdir/pkgconfig" "$cmakedir" "$includedir"
[ "$cli" = 1 ] && mkdirs "$bindir"
put 0755 "$out/libpulse.so" "$libdir/libpulse.so.$release" --strip-unneeded
link "libpulse.so.$release" "$libdir/$soname"
link "$soname" "$libdir/libpulse.so"
put 0644 "$out/libpulse.a" "$libdir/libpulse.a" --strip-debug
put 0755 "$out/libpulse-msrdev.so" "$libdir/libpulse-msrdev.so" --strip-unneeded
put 0644 include/pulse.h "$includedir/pulse.h"
[ "$cli" = 1 ] && put 0755 "$out/pulse" "$bindir/pulse" --strip-all

# ${prefix}-relative paths where possible, so the .pc files can be relocated.
rel() { case $1 in "$prefix"/*) printf '${prefix}/%s\n' "${1#"$prefix"/}" ;; *) printf '%s\n' "$1" ;; esac; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cat > "$tmp/pulse.pc" <<EOF
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
# With both libpulse.so and libpulse.a in libdir, the linker resolves -lpulse
# to the .so even under `pkg-config --static`; this module names the archive.
cat > "$tmp/pulse-static.pc" <<EOF
prefix=$prefix
libdir=$(rel "$libdir")
includedir=$(rel "$includedir")

Name: pulse-static
Description: libpulse, linked statically (libpulse.a)
Version: $version
Libs: \${libdir}/libpulse.a
Libs.private: $native_libs
Cflags: -I\${includedir}
EOF
put 0644 "$tmp/pulse.pc" "$libdir/pkgconfig/pulse.pc"
put 0644 "$tmp/pulse-static.pc" "$libdir/pkgconfig/pulse-static.pc"

# The CMake package. The static target carries the same system libraries
# as Libs.private (without their -l).
cmake_native=$(for l in $native_libs; do printf '%s;' "${l#-l}"; done)
cat > "$tmp/pulseConfig.cmake" <<EOF
# libpulse $version, installed by scripts/install.sh.
#   find_package(pulse REQUIRED)
#   target_link_libraries(app PRIVATE pulse::pulse)          # libpulse.so ($soname)
#   target_link_libraries(app PRIVATE pulse::pulse_static)   # libpulse.a
if(TARGET pulse::pulse)
  return()
endif()
set(pulse_INCLUDE_DIR "$includedir")
set(pulse_LIBRARY "$libdir/libpulse.so.$release")
set(pulse_STATIC_LIBRARY "$libdir/libpulse.a")
foreach(_pulse_file IN ITEMS "\${pulse_INCLUDE_DIR}/pulse.h" "\${pulse_LIBRARY}" "\${pulse_STATIC_LIBRARY}")
  if(NOT EXISTS "\${_pulse_file}")
    set(pulse_FOUND FALSE)
    set(pulse_NOT_FOUND_MESSAGE "libpulse is incomplete: \${_pulse_file} is missing (reinstall with scripts/install.sh)")
    return()
  endif()
endforeach()
add_library(pulse::pulse SHARED IMPORTED)
set_target_properties(pulse::pulse PROPERTIES
  IMPORTED_LOCATION "\${pulse_LIBRARY}"
  IMPORTED_SONAME "$soname"
  INTERFACE_INCLUDE_DIRECTORIES "\${pulse_INCLUDE_DIR}")
add_library(pulse::pulse_static STATIC IMPORTED)
set_target_properties(pulse::pulse_static PROPERTIES
  IMPORTED_LOCATION "\${pulse_STATIC_LIBRARY}"
  IMPORTED_LINK_INTERFACE_LANGUAGES "C"
  INTERFACE_INCLUDE_DIRECTORIES "\${pulse_INCLUDE_DIR}"
  INTERFACE_LINK_LIBRARIES "${cmake_native%;}")
set(pulse_MSRDEV_LIBRARY "$libdir/libpulse-msrdev.so")
EOF
# docs/ABI.md: a program runs on a library with the same major version (for
# 0.x also the same minor) that is at least as new as the one it asks for.
cat > "$tmp/pulseConfigVersion.cmake" <<EOF
set(PACKAGE_VERSION "$version")
set(PACKAGE_VERSION_COMPATIBLE FALSE)
if(NOT CMAKE_SIZEOF_VOID_P STREQUAL "" AND NOT CMAKE_SIZEOF_VOID_P STREQUAL "8")
  set(PACKAGE_VERSION "$version (64-bit)")
  set(PACKAGE_VERSION_UNSUITABLE TRUE)
elseif(PACKAGE_FIND_VERSION STREQUAL "")
  set(PACKAGE_VERSION_COMPATIBLE TRUE)
elseif(PACKAGE_VERSION VERSION_LESS PACKAGE_FIND_VERSION)
elseif(NOT PACKAGE_FIND_VERSION_MAJOR STREQUAL "$major")
elseif("$major" STREQUAL "0" AND NOT PACKAGE_FIND_VERSION_MINOR STREQUAL "$minor")
else()
  set(PACKAGE_VERSION_COMPATIBLE TRUE)
  if(PACKAGE_FIND_VERSION STREQUAL PACKAGE_VERSION)
    set(PACKAGE_VERSION_EXACT TRUE)
  endif()
endif()
EOF
put 0644 "$tmp/pulseConfig.cmake" "$cmakedir/pulseConfig.cmake"
put 0644 "$tmp/pulseConfigVersion.cmake" "$cmakedir/pulseConfigVersion.cmake"

# The manifest: this install's files, plus the directories created by this
# or an earlier install into the same place (a reinstall keeps them).
{
  [ -f "$destdir$manifest" ] && grep '^dir ' "$destdir$manifest" || true
  for d in "${created[@]}"; do echo "dir $d"; done
  for f in "${installed[@]}"; do echo "file $f"; done
  echo "file $manifest"
} | awk '!seen[$0]++' > "$tmp/manifest"
install -m 0644 "$tmp/manifest" "$destdir$manifest"

echo "installed libpulse $version (soname $soname):"
for f in "${installed[@]}"; do echo "  $destdir$f"; done
if [ -z "$destdir" ]; then
  case ":${PKG_CONFIG_PATH:-}:" in
    *":$libdir/pkgconfig:"*) ;;
    *) echo "pkg-config: export PKG_CONFIG_PATH=$libdir/pkgconfig\${PKG_CONFIG_PATH:+:\$PKG_CONFIG_PATH}" ;;
  esac
  echo "CMake: find_package(pulse) with -DCMAKE_PREFIX_PATH=$prefix"
  case $libdir in
    /usr/lib|/usr/lib64|/usr/local/lib|/usr/lib/*-linux-gnu) echo "run ldconfig (as root) so the loader finds $soname" ;;
    *) echo "at run time: -Wl,-rpath,$libdir or LD_LIBRARY_PATH=$libdir" ;;
  esac
fi
