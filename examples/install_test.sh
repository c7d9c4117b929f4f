#!/bin/sh
# What scripts/install.sh leaves behind: stripped libraries and tool (no
# debug sections), every installed file listed in the manifest, and
# --uninstall removing exactly those files and the directories it created.
#
# Usage: install_test.sh PREFIX REPO_ROOT WORK_DIR
# (PREFIX filled by scripts/install.sh --prefix PREFIX; the uninstall check
# stages a second install with --destdir under WORK_DIR, so PREFIX is kept.)
set -eu
prefix=$1 root=$2 work=$3
fail() { echo "install_test: $*" >&2; exit 1; }

manifest=$prefix/lib/cmake/pulse/install-manifest.txt
[ -f "$manifest" ] || fail "no $manifest"
for f in "$prefix"/lib/libpulse.so.*.*.* "$prefix/lib/libpulse-msrdev.so" "$prefix/bin/pulse" "$prefix/lib/libpulse.a"; do
    [ -f "$f" ] || fail "missing $f"
    if readelf -S -W "$f" | grep '\.debug_' | grep -qv debug_gdb_scripts; then fail "$f has debug sections (not stripped)"; fi
    grep -qx "file $f" "$manifest" || fail "$f is not in the manifest"
done
if readelf -s -W "$prefix/bin/pulse" | grep -q '\.symtab'; then fail "bin/pulse keeps its symbol table"; fi

# Install into an empty staging root, then uninstall: nothing may remain.
rm -rf "$work"
mkdir -p "$work/stage"
"$root/scripts/install.sh" --destdir "$work/stage" --prefix /opt/pulse-test >"$work/install.log" 2>&1 \
    || { cat "$work/install.log"; fail "staged install failed"; }
count=$(find "$work/stage" ! -type d | wc -l)
[ "$count" -ge 10 ] || fail "the staged install has only $count files"
# A file of the user's in an installed directory survives, with its directory.
echo keep > "$work/stage/opt/pulse-test/include/mine.h"
"$root/scripts/install.sh" --destdir "$work/stage" --prefix /opt/pulse-test --uninstall >"$work/uninstall.log" 2>&1 \
    || { cat "$work/uninstall.log"; fail "--uninstall failed"; }
left=$(cd "$work/stage" && find . ! -name . | sort | tr '\n' ' ')
[ "$left" = "./opt ./opt/pulse-test ./opt/pulse-test/include ./opt/pulse-test/include/mine.h " ] \
    || fail "after --uninstall: $left"
rm "$work/stage/opt/pulse-test/include/mine.h"
echo "installed files are stripped; --uninstall removed exactly what was installed"
