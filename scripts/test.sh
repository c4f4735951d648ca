#!/usr/bin/env bash
# Installs what is missing, builds, and runs the whole suite with ctest: once in an optimised
# build with the test-only fault hooks, then again under AddressSanitizer + UndefinedBehaviorSanitizer.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
ensure_packages "${BUILD_PACKAGES[@]}" "${TEST_PACKAGES[@]}"
jobs=$(nproc)
passed=0
failed=0

# Builds and runs one suite; a failure is counted and the next suite still runs (set -e does not
# act inside a function called with ||, hence the explicit returns).
run_suite() {
  local dir=$1; shift
  echo "== $dir: $*"
  cmake -S . -B "$dir" -DPCOPY_TEST_HOOKS=ON "$@" >/dev/null || { echo "test.sh: $dir: configuring failed" >&2; return 1; }
  cmake --build "$dir" -j"$jobs" || { echo "test.sh: $dir: the build failed" >&2; return 1; }
  local status=0
  (cd "$dir" && ctest --output-on-failure -j"$jobs" --timeout 900) | tee "$dir/ctest.log" || status=$?
  # "N% tests passed, F tests failed out of T"
  local line
  line=$(grep -E 'tests passed, [0-9]+ tests? failed out of [0-9]+' "$dir/ctest.log" | tail -n 1)
  local f t
  f=$(sed -E 's/.* ([0-9]+) tests? failed out of ([0-9]+).*/\1/' <<<"$line")
  t=$(sed -E 's/.* ([0-9]+) tests? failed out of ([0-9]+).*/\2/' <<<"$line")
  passed=$((passed + ${t:-0} - ${f:-0}))
  failed=$((failed + ${f:-0}))
  return "$status"
}

# Every part runs whatever an earlier one gave; the tally, then a non-zero status if any failed.
status=0
run_suite build-test -DCMAKE_BUILD_TYPE=RelWithDebInfo || status=1
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  run_suite build-asan -DCMAKE_BUILD_TYPE=Debug -DPCOPY_SANITIZE=ON || status=1

# The Debian package: build it, install it with apt-get, check the command, man page and completion.
scripts/package.sh || { echo "test.sh: the package check failed" >&2; status=1; }

echo "tests: $passed passed, $failed failed"
exit "$status"
