#!/bin/sh
# Installs the dependencies, builds, and runs the whole test suite: unit,
# integration and the independent Python client, first in a normal build,
# then again under AddressSanitizer + UndefinedBehaviorSanitizer; then the
# fuzzers for a bounded time (FUZZ_SECONDS each, default 45).
set -eu
cd "$(dirname "$0")/.."
sh scripts/deps.sh test
jobs=$(nproc)

echo "== build and test (RelWithDebInfo)"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$jobs" >/dev/null
(cd build && ctest --output-on-failure -j"$jobs")

echo "== build and test under ASan + UBSan"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DSANDBOX_AGENT_SANITIZE=ON >/dev/null
cmake --build build-asan -j"$jobs" >/dev/null
(cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ctest --output-on-failure -j"$jobs")

echo "== fuzz (clang, libFuzzer, ASan + UBSan)"
CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=Debug -DSANDBOX_AGENT_FUZZ=ON \
    -DSANDBOX_AGENT_SANITIZE=ON -DSANDBOX_AGENT_TESTS=ON >/dev/null
cmake --build build-fuzz -j"$jobs" --target fuzz_frame fuzz_dispatch fuzz_svcfile fuzz_pbscan >/dev/null
for f in fuzz_frame fuzz_dispatch fuzz_svcfile fuzz_pbscan; do
    corpus=$(mktemp -d)
    case $f in
    fuzz_svcfile) seeds=tests/fuzz/corpus_svcfile ;;
    *) seeds=tests/fuzz/corpus_frame ;;
    esac
    ./build-fuzz/tests/$f -max_total_time="${FUZZ_SECONDS:-45}" -print_final_stats=0 \
        -artifact_prefix=build-fuzz/ "$corpus" "$seeds" 2>&1 | tail -1
    rm -rf "$corpus"
done
echo "== all tests passed"
