#!/bin/sh
# Installs the dependencies, builds, and starts sandbox-agent in the
# foreground on its default socket (extra arguments go to the agent).
set -eu
cd "$(dirname "$0")/.."
sh scripts/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
echo "built build/sandbox-agent and build/sandboxctl; try: build/sandboxctl ping" >&2
exec build/sandbox-agent "$@"
