#!/usr/bin/env bash
# Compares commands with alternating runs: round after round, each command once, in turn, so that the
# machine's drift (±30% over minutes on a shared VM) falls on all of them alike; medians per command.
# hyperfine (run.sh) times one command's runs back to back instead, which is what the tables in
# README.md come from; use this to judge a change, e.g. the binary before it against the one after.
#
#   bench/ab.sh [-n ROUNDS] [--base DIR] [--prep CMD] CORPUS COMMAND...
#     CORPUS   a corpus of bench/corpora.sh (made if missing): small usr_share big4 one2g empty300k links
#     COMMAND  a shell command; $SRC is the corpus, $DST a fresh destination (removed before every
#              run, outside the timing), e.g. 'build/pcopy -q -j2 $SRC $DST' or 'cp -a $SRC $DST'
#     -n       rounds (default 7)
#     --base   where the corpora are (default /dev/shm/pcopy-bench)
#     --prep   a shell command run before every run, outside the timing, after $DST is removed: e.g.
#              'cp -r $SRC $DST' to time runs that replace every file of an earlier copy
#
# Prints, per command, the median and every time in run order, and each median's ratio to the first
# command's.
set -euo pipefail

BENCH=$(cd "$(dirname "$0")" && pwd)
ROUNDS=7
BASE=/dev/shm/pcopy-bench
PREP=
while [ $# -gt 0 ]; do
  case $1 in
    -n) ROUNDS=$2; shift 2 ;;
    --base) BASE=$2; shift 2 ;;
    --prep) PREP=$2; shift 2 ;;
    -h | --help) sed -n '2,17p' "$0"; exit 0 ;;
    *) break ;;
  esac
done
if [ $# -lt 2 ]; then
  echo "ab.sh: need a corpus and at least one command (see --help)" >&2
  exit 2
fi
CORPUS=$1
shift
command -v python3 >/dev/null || { echo "ab.sh: needs python3" >&2; exit 2; }
"$BENCH/corpora.sh" "$BASE" "$CORPUS" >/dev/null
export SRC=$BASE/$CORPUS
export DST=$BASE/ab-dst
TIMES=$(mktemp)
trap 'rm -rf "$DST" "$TIMES"' EXIT

for ((round = 1; round <= ROUNDS; round++)); do
  for ((k = 1; k <= $#; k++)); do
    rm -rf "$DST"
    if [ -n "$PREP" ] && ! bash -c "$PREP" >/dev/null 2>&1; then
      echo "ab.sh: --prep failed: $PREP" >&2
      exit 1
    fi
    sync
    start=$(date +%s.%N)
    if ! bash -c "${!k}" >/dev/null 2>&1; then
      echo "ab.sh: command $k failed: ${!k}" >&2
      exit 1
    fi
    end=$(date +%s.%N)
    echo "$k $start $end" >>"$TIMES"
  done
done

python3 - "$TIMES" "$@" <<'EOF'
import statistics, sys
times = {}
for line in open(sys.argv[1]):
    k, start, end = line.split()
    times.setdefault(int(k), []).append(float(end) - float(start))
commands = sys.argv[2:]
first = statistics.median(times[1])
for k, command in enumerate(commands, 1):
    median = statistics.median(times[k])
    runs = " ".join(f"{t:.3f}" for t in times[k])
    print(f"{median:8.3f} s  {first / median:5.2f}x  {command}\n           runs: {runs}")
EOF
