#!/usr/bin/env bash
# Builds build/pcopy (Release), installing missing Debian build packages first.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
ensure_packages "${BUILD_PACKAGES[@]}"
# Every option given: a build directory configured before (for the tests, say) keeps its cache.
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DPCOPY_BUILD_TESTS=OFF -DPCOPY_TEST_HOOKS=OFF -DPCOPY_SANITIZE=OFF >/dev/null
cmake --build build -j"$(nproc)"
