#!/bin/sh
# Builds wrmsr.c against an installed libpulse exactly as a user would,
# through pkg-config, and runs it: once against the shared library (which
# must be recorded by its soname and found in the prefix, not in the build
# tree) and once statically against libpulse.a through pulse-static.pc.
#
# Usage: pkgconfig_test.sh PREFIX EXAMPLES_DIR WORK_DIR VERSION
# (PREFIX filled by scripts/install.sh --prefix PREFIX; run by ctest when
# CMake is given -DPULSE_INSTALL_PREFIX=PREFIX).
set -eu
prefix=$1 src=$2 work=$3 version=$4
CC=${CC:-cc}
PKG_CONFIG=${PKG_CONFIG:-pkg-config}
PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
export PKG_CONFIG_PATH
mkdir -p "$work"

fail() { echo "pkgconfig_test: $*" >&2; exit 1; }

$PKG_CONFIG --exists pulse || fail "pkg-config does not find pulse in $PKG_CONFIG_PATH"
got=$($PKG_CONFIG --modversion pulse)
[ "$got" = "$version" ] || fail "pulse.pc says version $got, Cargo.toml $version"
cflags=$($PKG_CONFIG --cflags pulse)
libs=$($PKG_CONFIG --libs pulse)
libdir=$($PKG_CONFIG --variable=libdir pulse)
echo "pkg-config --cflags --libs pulse: $cflags $libs"
case " $cflags " in *" -I$prefix/include "*) ;; *) fail "cflags '$cflags' do not name $prefix/include" ;; esac
[ -f "$prefix/include/pulse.h" ] || fail "no $prefix/include/pulse.h"

# Shared: the program records the soname and loads it from the prefix.
# shellcheck disable=SC2086
$CC -std=c99 -Wall -Wextra -Werror -pedantic -o "$work/wrmsr_shared" "$src/wrmsr.c" \
    $($PKG_CONFIG --cflags --libs pulse) -Wl,-rpath,"$libdir"
soname=$(readelf -d "$libdir/libpulse.so" | sed -n 's/.*Library soname: \[\(.*\)\]/\1/p')
case $soname in libpulse.so.?*) ;; *) fail "installed libpulse.so has soname '$soname'" ;; esac
[ -e "$libdir/$soname" ] || fail "no $libdir/$soname link"
readelf -d "$work/wrmsr_shared" | grep -q "NEEDED.*\[$soname\]" || fail "wrmsr_shared does not record $soname"
LD_LIBRARY_PATH= ldd "$work/wrmsr_shared" | grep -q "$soname => $libdir/" \
    || fail "wrmsr_shared does not load $soname from $libdir"
"$work/wrmsr_shared"

# PulseAudio's client library is also libpulse.so (soname libpulse.so.0).
# Put a stand-in for it on the compiler's default search path (LIBRARY_PATH
# is searched after -L, as /usr/lib is): a bare -lpulse links theirs and
# fails, the pkg-config line still links ours (docs/TROUBLESHOOTING.md).
fake=$work/pulseaudio
mkdir -p "$fake"
echo 'int pa_context_new(void) { return 0; }' > "$fake/pa.c"
$CC -shared -fPIC -o "$fake/libpulse.so.0" -Wl,-soname,libpulse.so.0 "$fake/pa.c"
ln -sf libpulse.so.0 "$fake/libpulse.so"
if LIBRARY_PATH=$fake $CC -std=c99 -o "$work/wrmsr_bare" "$src/wrmsr.c" -I"$prefix/include" -lpulse \
    2>"$work/bare.log"; then
    fail "a bare -lpulse linked: the PulseAudio stand-in was not picked, this test proves nothing"
fi
grep -q "undefined reference to .EngCreateEngine" "$work/bare.log" \
    || { cat "$work/bare.log"; fail "a bare -lpulse failed for another reason than linking the stand-in"; }
# shellcheck disable=SC2086
LIBRARY_PATH=$fake $CC -std=c99 -o "$work/wrmsr_clash" "$src/wrmsr.c" \
    $($PKG_CONFIG --cflags --libs pulse) -Wl,-rpath,"$libdir" \
    || fail "pkg-config's link picked PulseAudio's libpulse.so"
readelf -d "$work/wrmsr_clash" | grep -q "NEEDED.*\[$soname\]" || fail "wrmsr_clash does not record $soname"
"$work/wrmsr_clash"

# Static: `pkg-config --static --libs pulse-static` names libpulse.a and the
# system libraries of Libs.private. (With the .so beside it, -lpulse from
# pulse.pc would pick the .so whatever --static says.)
$PKG_CONFIG --exists pulse-static || fail "pkg-config does not find pulse-static"
static_libs=$($PKG_CONFIG --static --libs pulse-static)
case " $static_libs " in *" $libdir/libpulse.a "*) ;; *) fail "pulse-static libs '$static_libs' do not name $libdir/libpulse.a" ;; esac
# shellcheck disable=SC2086
$CC -std=c99 -Wall -Wextra -Werror -pedantic -o "$work/wrmsr_static" "$src/wrmsr.c" \
    $($PKG_CONFIG --cflags pulse-static) $static_libs
if readelf -d "$work/wrmsr_static" | grep -q "NEEDED.*libpulse"; then
    fail "wrmsr_static depends on libpulse.so"
fi
"$work/wrmsr_static"
echo "pkg-config builds (shared and static) against $prefix work"
