#!/bin/sh
# Builds cmake_consumer/ against an installed libpulse through
# find_package(pulse) and runs it: app_shared links pulse::pulse (recording
# the soname, loaded from the prefix), app_static links pulse::pulse_static
# (no libpulse.so at run time). Also checks the version file: a request for
# this version or an older compatible one is found, an incompatible one is
# refused (docs/ABI.md).
#
# Usage: cmake_package_test.sh PREFIX EXAMPLES_DIR WORK_DIR VERSION
set -eu
prefix=$1 src=$2 work=$3 version=$4
CMAKE=${CMAKE:-cmake}
fail() { echo "cmake_package_test: $*" >&2; exit 1; }
rm -rf "$work"
mkdir -p "$work"

[ -f "$prefix/lib/cmake/pulse/pulseConfig.cmake" ] || fail "no $prefix/lib/cmake/pulse/pulseConfig.cmake"
[ -f "$prefix/lib/cmake/pulse/pulseConfigVersion.cmake" ] || fail "no pulseConfigVersion.cmake"

"$CMAKE" -S "$src/cmake_consumer" -B "$work/build" -DCMAKE_PREFIX_PATH="$prefix" \
    -DPULSE_WANT_VERSION="$version" >"$work/configure.log" 2>&1 \
    || { cat "$work/configure.log"; fail "find_package(pulse $version) failed"; }
"$CMAKE" --build "$work/build" >"$work/build.log" 2>&1 || { cat "$work/build.log"; fail "build failed"; }

soname=$(readelf -d "$prefix/lib/libpulse.so" | sed -n 's/.*Library soname: \[\(.*\)\]/\1/p')
readelf -d "$work/build/app_shared" | grep -q "NEEDED.*\[$soname\]" || fail "app_shared does not record $soname"
LD_LIBRARY_PATH= ldd "$work/build/app_shared" | grep -q "$soname => $prefix/lib/" \
    || fail "app_shared does not load $soname from $prefix/lib"
"$work/build/app_shared" || fail "app_shared failed"
if readelf -d "$work/build/app_static" | grep -q "NEEDED.*libpulse"; then
    fail "app_static depends on libpulse.so"
fi
"$work/build/app_static" || fail "app_static failed"

# The version file: same major (and, before 1.0, same minor), not older.
major=${version%%.*} rest=${version#*.}
minor=${rest%%.*}
if [ "$major" = 0 ]; then
    compatible="0.$minor" incompatible="0.$((minor + 1))"
else
    compatible="$major" incompatible="$((major + 1))"
fi
for want in "$compatible"; do
    "$CMAKE" -S "$src/cmake_consumer" -B "$work/v-ok" -DCMAKE_PREFIX_PATH="$prefix" \
        -DPULSE_WANT_VERSION="$want" >/dev/null 2>&1 || fail "find_package(pulse $want) refused $version"
done
for want in "$incompatible" "$((major + 1)).0"; do
    rm -rf "$work/v-bad"
    if "$CMAKE" -S "$src/cmake_consumer" -B "$work/v-bad" -DCMAKE_PREFIX_PATH="$prefix" \
        -DPULSE_WANT_VERSION="$want" >"$work/v-bad.log" 2>&1; then
        fail "find_package(pulse $want) accepted $version"
    fi
    grep -q "not compatible\|version" "$work/v-bad.log" || { cat "$work/v-bad.log"; fail "no version message for $want"; }
done
echo "find_package(pulse) builds (pulse::pulse and pulse::pulse_static) against $prefix work"
