#!/bin/sh
# Installs what building and testing sandbox-agent needs on Debian/Ubuntu.
# Run by run-agent.sh and test.sh; does nothing when all is present.
set -eu
SA_PKGS="build-essential cmake pkg-config libev-dev libprotobuf-c-dev protobuf-c-compiler zlib1g-dev libdeflate-dev"
if [ "${1:-}" = "test" ]; then
    SA_PKGS="$SA_PKGS clang python3 python3-protobuf protobuf-compiler util-linux procps lintian file curl"
    SA_PKGS="$SA_PKGS mount e2fsprogs"
    # The Python client's tests (python/tests) and its type check.
    SA_PKGS="$SA_PKGS python3-pytest python3-pytest-asyncio mypy"
fi
missing=""
for p in $SA_PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    echo "installing:$missing" >&2
    $SUDO apt-get update -qq >&2 || true
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >&2
fi

# libFuzzer's runtime for the tests: the unversioned package where the
# distribution has it, else the one matching the installed clang.
if [ "${1:-}" = "test" ] && ! ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-*.a >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    v=$(clang --version | sed -n 's/.*clang version \([0-9]*\).*/\1/p' | head -1)
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends libclang-rt-dev >&2 ||
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "libclang-rt-$v-dev" >&2
fi
