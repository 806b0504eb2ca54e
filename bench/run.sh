#!/bin/sh
# The benchmark, in one command: installs what it needs (the build
# dependencies, qemu-guest-agent and socat), builds sandbox-agent and
# sa-bench in Release, runs every figure against sandbox-agent and its
# references, prints the side-by-side table and writes
# bench/results/latest.json (and latest.md, the table alone).
#
#   sh bench/run.sh              # everything, about 2-3 minutes
#   sh bench/run.sh --quick      # small sizes, to try the harness
#   sh bench/run.sh --only 1,3   # some figures (9: cost as work grows)
#
# BUILD_DIR (default build-bench) picks the build directory. Runs as root
# when it can: qemu-guest-agent needs it, and so do the 1,000 processes of
# figure 6 on machines with a low RLIMIT_NPROC.
set -eu
cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build-bench}

sh scripts/deps.sh
missing=""
command -v socat >/dev/null 2>&1 || missing="$missing socat"
[ -x /usr/sbin/qemu-ga ] || command -v qemu-ga >/dev/null 2>&1 || missing="$missing qemu-guest-agent"
if [ -n "$missing" ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    echo "installing:$missing" >&2
    $SUDO apt-get update -qq >&2 || true
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >&2
fi

cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DSANDBOX_AGENT_SANITIZE=OFF >/dev/null
cmake --build "$build" -j"$(nproc)" --target sa-bench >/dev/null

# The static build too, for the idle RSS it reaches (no shared libc pages).
static=""
if cmake -S . -B "$build-static" -DCMAKE_BUILD_TYPE=Release -DSANDBOX_AGENT_STATIC=ON \
        -DSANDBOX_AGENT_TESTS=OFF >/dev/null 2>&1 &&
    cmake --build "$build-static" -j"$(nproc)" --target sandbox-agent >/dev/null 2>&1; then
    static="--static-agent $build-static/sandbox-agent"
else
    echo "static build unavailable: its idle RSS row is skipped" >&2
fi

mkdir -p bench/results
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if ! git diff --quiet HEAD -- agent 2>/dev/null; then
    commit="$commit+dirty"
fi
out=bench/results/latest
SA_BENCH_COMMIT=$commit "$build/bench/sa-bench" --json "$out.json" $static "$@" | tee "$out.log"
# The table alone, for pasting into the README.
sed -n '/^| # |/,/^results:/p' "$out.log" | sed '/^results:/d' >"$out.md"
