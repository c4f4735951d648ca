#!/usr/bin/env bash
# pcopy benchmark suite: one hyperfine run per corpus comparing pcopy with cp -a, rsync -a, tar | tar and
# the system-call floor (../shared/bench/floor.c), plus peak memory of every pcopy variant and a check that
# each pcopy variant's copy is right. See bench/README.md.
#
#   bench/run.sh [--disk] [--base DIR] [CORPUS... | all]
#     CORPUS: small usr_share big4 one2g empty300k latency   (default: small; all = every one of them)
#     --disk       corpora and copies on / (/var/tmp/pcopy-bench) instead of /dev/shm (/dev/shm/pcopy-bench)
#     --base DIR   corpora and copies under DIR
#   env: RUNS (default 5), WARMUP (default 1), ROUNDS (default 1: hyperfine is run ROUNDS times, RUNS
#        runs of each command per round, and the rounds merged: with RUNS=1 ROUNDS=7 the commands take
#        turns, so the VM's drift over minutes falls on all of them alike; the warmup is in the first
#        round only), PCOPY (a pcopy binary to use instead of building
#        build/pcopy), DROP_CACHES=1 (drop the page cache before every timed run; for --disk),
#        WAIT_QUIET=SECONDS (before each corpus, wait up to that long for the machine to be idle),
#        LAT_* for the latency scenario (see bench/latency.sh)
#
# Writes bench/results/<date>/ (hyperfine JSON, memory and check records, results.md) and copies the
# Markdown to bench/results/latest.md.
set -euo pipefail

BENCH=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$BENCH/.." && pwd)
BASE=/dev/shm/pcopy-bench
CORPORA=()
while [ $# -gt 0 ]; do
  case $1 in
    --disk) BASE=/var/tmp/pcopy-bench ;;
    --base) BASE=$2; shift ;;
    --base=*) BASE=${1#--base=} ;;
    -h | --help) sed -n '2,17p' "$0"; exit 0 ;;
    all) CORPORA+=(small usr_share big4 one2g empty300k latency) ;;
    small | usr_share | big4 | one2g | empty300k | latency) CORPORA+=("$1") ;;
    *) echo "run.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[ ${#CORPORA[@]} -gt 0 ] || CORPORA=(small)
RUNS=${RUNS:-5}
WARMUP=${WARMUP:-1}
ROUNDS=${ROUNDS:-1}
DROP_CACHES=${DROP_CACHES:-0}

# Tools: Debian packages installed when missing (scripts/deps.sh does the apt-get).
# shellcheck source=../scripts/deps.sh
source "$REPO/scripts/deps.sh"
ensure_packages hyperfine time rsync tar gcc
command -v python3 >/dev/null || ensure_packages python3

# A private copy of the binaries, so a rebuild during the run (another shell, CI) cannot change them.
BIN=$BENCH/build
mkdir -p "$BIN"
if [ -n "${PCOPY:-}" ]; then
  cp "$PCOPY" "$BIN/pcopy"
else
  "$REPO/scripts/build.sh" >/dev/null
  cp "$REPO/build/pcopy" "$BIN/pcopy"
fi
FLOOR_C=$REPO/../shared/bench/floor.c
HAVE_FLOOR=0
if [ -f "$FLOOR_C" ]; then
  gcc -O2 -o "$BIN/floor" "$FLOOR_C" && HAVE_FLOOR=1
else
  echo "run.sh: $FLOOR_C not found: no floor comparison" >&2
fi

STAMP=$(date +%Y-%m-%d_%H%M%S)
OUT=$BENCH/results/$STAMP
mkdir -p "$OUT"
{
  echo "date=$(date -Iseconds)"
  echo "kernel=$(uname -r)"
  echo "cpus=$(nproc)"
  echo "mem=$(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
  echo "base=$BASE"
  echo "fstype=$(mkdir -p "$BASE" && findmnt -no FSTYPE -T "$BASE")"
  echo "runs=$RUNS"
  echo "rounds=$ROUNDS"
  echo "warmup=$WARMUP"
  echo "drop_caches=$DROP_CACHES"
  echo "hyperfine=$(hyperfine --version | awk '{print $2}')"
  echo "pcopy=$("$BIN/pcopy" --version 2>&1 | head -1)"
  echo "git=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')$( [ -n "$(git -C "$REPO" status --porcelain --untracked-files=no 2>/dev/null)" ] && echo ' (uncommitted changes)')$( [ -n "${PCOPY:-}" ] && echo ", but the binary timed is PCOPY=$PCOPY")"
} >"$OUT/env.txt"

q() { printf '%q' "$1"; }

# Load on the machine at a moment: other work running beside the benchmark skews every number.
load_note() { cut -d' ' -f1-3 /proc/loadavg; }
# Share of CPU time busy over the next 2 seconds, in percent (whole machine).
cpu_busy() {
  local a b
  a=$(awk '/^cpu / {print $2+$3+$4+$7+$8, $5+$6}' /proc/stat); sleep 2
  b=$(awk '/^cpu / {print $2+$3+$4+$7+$8, $5+$6}' /proc/stat)
  echo "$a $b" | awk '{busy = $3 - $1; idle = $4 - $2; printf "%d%%\n", (busy + idle) ? 100 * busy / (busy + idle) : 0}'
}
# With WAIT_QUIET=SECONDS, wait up to that long for the machine to be below 10% busy before timing.
wait_quiet() {
  local limit=${WAIT_QUIET:-0} start=$SECONDS busy
  busy=$(cpu_busy)
  while [ "${busy%\%}" -ge 10 ] && [ $((SECONDS - start)) -lt "$limit" ]; do
    sleep 5; busy=$(cpu_busy)
  done
  echo "$busy"
}

# On a disk's file system, each run's copy is moved here rather than removed before the next run (see
# set_aside.sh), and all of them removed at the end; at most half the inodes left may be held.
TRASH=$BASE/trash
TRASH_BUDGET=

run_corpus() {
  local c=$1 src=$BASE/$1 dst=$BASE/dst-$1
  "$BENCH/corpora.sh" "$BASE" "$c"
  local S D P
  S=$(q "$src"); D=$(q "$dst"); P=$(q "$BIN/pcopy")
  local prep="rm -rf $D && sync"
  # Big files' corpora hold too few entries to matter, and too many bytes to keep.
  if [ "$(stat -f -c %T "$BASE")" != tmpfs ] && [ "$c" != big4 ] && [ "$c" != one2g ]; then
    local entries kib
    entries=$(find "$src" | wc -l)
    kib=$(du -sk "$src" | cut -f1)
    [ -n "$TRASH_BUDGET" ] || TRASH_BUDGET=$(($(df --output=iavail "$BASE" | tail -1) / 2))
    prep="$(q "$BENCH/set_aside.sh") $D $(q "$TRASH") $entries $kib $TRASH_BUDGET"
  fi
  [ "$DROP_CACHES" = 1 ] && prep="$prep && echo 3 > /proc/sys/vm/drop_caches"

  # name | shell command | prepare (tar needs DST to exist); pcopy variants also list their options
  local -a names=() cmds=() preps=() popts=()
  add() { names+=("$1"); cmds+=("$2"); preps+=("${3:-$prep}"); popts+=(""); }
  addp() { names+=("pcopy $1"); cmds+=("$P -q $1 $S $D"); preps+=("$prep"); popts+=("$1"); }
  add "cp -a" "cp -a $S $D"
  add "rsync -a" "rsync -a $S/ $D/"
  add "tar | tar" "tar -C $S -cf - . | tar -C $D -xf -" "$prep && mkdir -p $D"
  addp "-j1"
  addp "-j2"
  addp "-j8"
  addp "-j2 --inplace"
  # floor.c copies only a two-level tree (SRC/dir/file); usr_share is deeper.
  if [ "$HAVE_FLOOR" = 1 ] && [ "$c" != usr_share ]; then
    add "floor 2 tr" "$(q "$BIN/floor") $S $D 2 tr"
  fi

  echo "== $c: checks and peak memory of each pcopy variant (load $(load_note))"
  local i
  : >"$OUT/$c.checks.tsv"
  for i in "${!names[@]}"; do
    [ -n "${popts[$i]}" ] || continue
    local tag=${names[$i]// /_}
    bash -c "${preps[$i]}"
    local status=0 diffs=0 meta=0
    # shellcheck disable=SC2086 # the options are meant to split into words
    python3 "$BENCH/rss.py" "$OUT/$c.rss.$tag.json" -- "$BIN/pcopy" -q ${popts[$i]} "$src" "$dst" || status=$?
    # Contents (diff -r) and metadata pcopy promises by default: mode, times, links (rsync -rlptD
    # itemizes any difference; owner and group are -a's business and not checked).
    diffs=$(diff -r --no-dereference "$src" "$dst" 2>&1 | wc -l) || true
    meta=$(rsync -rlptDni --delete "$src/" "$dst/" 2>&1 | wc -l) || true
    printf '%s\t%s\t%s\t%s\n' "${names[$i]}" "$status" "$diffs" "$meta" >>"$OUT/$c.checks.tsv"
    echo "   ${names[$i]}: exit $status, content differences $diffs, metadata differences $meta"
  done

  echo "== $c: hyperfine, $ROUNDS round(s) of $RUNS runs per command + $WARMUP warmup (load $(load_note))"
  local busy
  busy=$(wait_quiet)
  { echo "busy_before=$busy"; echo "load_start=$(load_note)"; } >"$OUT/$c.load.txt"
  echo "   machine busy before timing: $busy"
  : >"$OUT/$c.hyperfine.txt"
  local round failed=0
  local -a parts=()
  for ((round = 1; round <= ROUNDS; round++)); do
    local json=$OUT/$c.json
    [ "$ROUNDS" -gt 1 ] && json=$OUT/$c.round$round.json
    local -a hf=(hyperfine --warmup "$([ "$round" = 1 ] && echo "$WARMUP" || echo 0)" --runs "$RUNS"
                 --export-json "$json" --style basic)
    for i in "${!names[@]}"; do
      hf+=(--command-name "${names[$i]}" --prepare "${preps[$i]}" "${cmds[$i]}")
    done
    [ "$ROUNDS" -gt 1 ] && echo "-- round $round of $ROUNDS" | tee -a "$OUT/$c.hyperfine.txt"
    if ! "${hf[@]}" | tee -a "$OUT/$c.hyperfine.txt"; then
      echo "hyperfine failed on $c (a command exited non-zero?); see $OUT/$c.hyperfine.txt" | tee "$OUT/$c.failed.txt" >&2
      failed=1
      break
    fi
    parts+=("$json")
  done
  if [ "$ROUNDS" -gt 1 ] && [ "$failed" = 0 ]; then
    python3 "$BENCH/merge_rounds.py" "$OUT/$c.json" "${parts[@]}"
  fi
  echo "load_end=$(load_note)" >>"$OUT/$c.load.txt"
  rm -rf "$dst"
}

for c in "${CORPORA[@]}"; do
  if [ "$c" = latency ]; then
    LAT_BUSY_BEFORE=$(wait_quiet) "$BENCH/latency.sh" "$OUT" "$BASE" "$BIN/pcopy" || echo "latency scenario failed" | tee "$OUT/latency.failed.txt" >&2
  else
    run_corpus "$c"
  fi
done

rm -rf "$TRASH"

python3 "$BENCH/report.py" "$OUT" >"$OUT/results.md"
cp "$OUT/results.md" "$BENCH/results/latest.md"
echo "== results: $OUT/results.md (copied to bench/results/latest.md)"
cat "$OUT/results.md"
