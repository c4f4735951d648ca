#!/usr/bin/env bash
# Builds build/pcopy (Release), installing missing Debian build packages first.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
ensure_packages "${BUILD_PACKAGES[@]}"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DPCOPY_BUILD_TESTS=OFF >/dev/null
cmake --build build -j"$(nproc)"
