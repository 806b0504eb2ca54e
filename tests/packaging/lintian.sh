#!/bin/sh
# The .deb of this build passes Debian's own checker: CPack packs it into a
# scratch directory (nothing is left in the build), then lintian must report
# no error. Usage: lintian.sh BUILD_DIR LINTIAN
set -eu
build=$1
lintian=$2
out=$(mktemp -d /tmp/sa-deb-XXXXXX)
trap 'rm -rf "$out"' EXIT INT TERM
cpack --config "$build/CPackConfig.cmake" -G DEB -B "$out" >"$out/cpack.log" 2>&1 || {
    cat "$out/cpack.log"
    exit 1
}
deb=$(ls "$out"/*.deb)
echo "lintian $(basename "$deb")"
"$lintian" --fail-on error --tag-display-limit 0 "$deb"
