#!/usr/bin/env bash
# Latency-bound scenario: copying over a slow network file system, where every request to the server costs
# a round trip and only requests in flight at the same time can hide it. Simulated with bench/latfs.c, a
# FUSE pass-through that sleeps LAT_DELAY_US before every request (lookup, getattr, open, create, read,
# write, setattr, mkdir, rename, readdir, xattr calls). SRC and DST are both on the slow mount (a copy
# within one NFS share), and the kernel's caches are dropped before every run, so every run starts cold.
# Like an NFS client, the mount lists directories with READDIRPLUS (names with attributes, so opening a
# listed file needs no LOOKUP) and caches attributes and names for 30 s (NFS: acdirmin=30).
# One difference from NFS: libfuse 3.14 cannot turn on parallel directory operations, so the kernel sends
# LOOKUPs of names not yet cached one at a time per directory (NFS sends them in parallel). Creating,
# renaming and unlinking in one directory are serialized by the VFS on any file system, NFS included.
#
#   bench/latency.sh OUTDIR [BASE] [PCOPY]     usually run as `bench/run.sh latency`
#   env: LAT_DELAY_US (500), LAT_RUNS (3), LAT_WARMUP (0: each command's checked run already warmed it),
#        LAT_JOBS ("1 2 4 8 16"), LAT_THREADS (FUSE server threads, 64)
#
# Writes OUTDIR/latency.json (hyperfine), latency.checks.tsv (exit status, differences, requests sent,
# peak memory per command) and latency.env.txt; bench/report.py renders them.
#
# Why not dm-delay on a loop device: this kernel has no device-mapper (CONFIG_BLK_DEV_DM unset, no module
# tree), no netem qdisc and no NFS client; FUSE is built in, and is what a network file system looks like
# to a copier anyway: each call a request to a server that answers after a while.
set -euo pipefail

BENCH=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$BENCH/.." && pwd)
OUT=${1:?usage: latency.sh OUTDIR [BASE] [PCOPY]}
BASE=${2:-/dev/shm/pcopy-bench}
PCOPY=${3:-$REPO/build/pcopy}
DELAY=${LAT_DELAY_US:-500}
RUNS=${LAT_RUNS:-3}
WARMUP=${LAT_WARMUP:-0}
JOBS=${LAT_JOBS:-1 2 4 8 16}
THREADS=${LAT_THREADS:-64}
mkdir -p "$OUT"

# shellcheck source=../scripts/deps.sh
source "$REPO/scripts/deps.sh"
ensure_packages fuse3 libfuse3-dev pkg-config gcc hyperfine time rsync util-linux

BIN=$BENCH/build
mkdir -p "$BIN"
# shellcheck disable=SC2046 # pkg-config's flags are meant to split
gcc -O2 -Wall -pthread -o "$BIN/latfs" "$BENCH/latfs.c" $(pkg-config --cflags --libs fuse3)

"$BENCH/corpora.sh" "$BASE" lat2k
MNT=$BASE-latfs                   # beside BASE, not inside it (the mount shows all of BASE)
SRC_B=$BASE/lat2k DST_B=$BASE/dst-latency
SRC=$MNT/lat2k DST=$MNT/dst-latency
STATS=$OUT/latfs.stats

mkdir -p "$MNT"
if mountpoint -q "$MNT"; then umount -l "$MNT"; fi
"$BIN/latfs" "$BASE" "$MNT" -f -o "delay_us=$DELAY,threads=$THREADS,stats=$STATS,entry_timeout=30,attr_timeout=30" &
LATPID=$!
cleanup() {
  umount "$MNT" 2>/dev/null || umount -l "$MNT" 2>/dev/null || true
  wait "$LATPID" 2>/dev/null || true
  rm -rf "$DST_B"
}
trap cleanup EXIT
for _ in $(seq 100); do mountpoint -q "$MNT" && break; sleep 0.1; done
mountpoint -q "$MNT" || { echo "latency.sh: latfs did not mount on $MNT" >&2; exit 1; }

# Requests the file system served since the last call: prints the total; with an argument, also keeps
# the count per operation in that file.
requests() {
  rm -f "$STATS"
  kill -USR1 "$LATPID"
  for _ in $(seq 100); do [ -s "$STATS" ] && break; sleep 0.02; done
  [ -n "${1:-}" ] && cp "$STATS" "$1" 2>/dev/null
  awk '$1 == "total" {print $2}' "$STATS" 2>/dev/null | grep . || echo "?"
}

PREP="rm -rf $(printf %q "$DST_B") && sync"
if (echo 3 >/proc/sys/vm/drop_caches) 2>/dev/null; then
  PREP="$PREP && echo 3 > /proc/sys/vm/drop_caches"
  COLD=yes
else
  echo "latency.sh: cannot drop caches (not root?): runs after the first see a warm cache" >&2
  COLD=no
fi

names=("cp -a") cmds=("cp -a $(printf %q "$SRC") $(printf %q "$DST")") opts=("")
for j in $JOBS; do
  names+=("pcopy -j$j")
  cmds+=("$(printf %q "$PCOPY") -q -j$j $(printf %q "$SRC") $(printf %q "$DST")")
  opts+=("-j$j")
done

{
  echo "delay_us=$DELAY"
  echo "fuse_threads=$THREADS"
  echo "files=$(find "$SRC_B" -type f | wc -l)"
  echo "dirs=$(find "$SRC_B" -mindepth 1 -type d | wc -l)"
  echo "cold_caches=$COLD"
  echo "runs=$RUNS"
  echo "warmup=$WARMUP"
} >"$OUT/latency.env.txt"

echo "== latency: one checked run per command (requests served, exit status, differences, memory)"
: >"$OUT/latency.checks.tsv"
for i in "${!names[@]}"; do
  bash -c "$PREP"
  requests >/dev/null
  status=0
  rssf=$OUT/latency.rss.${names[$i]// /_}.json
  if [ -n "${opts[$i]}" ]; then
    python3 "$BENCH/rss.py" "$rssf" -- "$PCOPY" -q "${opts[$i]}" "$SRC" "$DST" || status=$?
  else
    python3 "$BENCH/rss.py" "$rssf" -- cp -a "$SRC" "$DST" || status=$?
  fi
  n=$(requests "$OUT/latency.ops.${names[$i]// /_}.txt")
  diffs=$(diff -r --no-dereference "$SRC_B" "$DST_B" 2>&1 | wc -l) || true
  meta=$(rsync -rlptDni --delete "$SRC_B/" "$DST_B/" 2>&1 | wc -l) || true
  wall=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["wall_s"])' "$rssf")
  printf '%s\t%s\t%s\t%s\t%s\t%.2f\n' "${names[$i]}" "$status" "$diffs" "$meta" "$n" "$wall" >>"$OUT/latency.checks.tsv"
  printf '   %-12s exit %s, content differences %s, metadata differences %s, %s requests, %.1f s\n' \
    "${names[$i]}" "$status" "$diffs" "$meta" "$n" "$wall"
done

echo "== latency: hyperfine, $RUNS runs + $WARMUP warmup per command (load $(cut -d' ' -f1-3 /proc/loadavg))"
hf=(hyperfine --warmup "$WARMUP" --runs "$RUNS" --export-json "$OUT/latency.json" --style basic)
for i in "${!names[@]}"; do hf+=(--command-name "${names[$i]}" --prepare "$PREP" "${cmds[$i]}"); done
{
  [ -n "${LAT_BUSY_BEFORE:-}" ] && echo "busy_before=$LAT_BUSY_BEFORE"
  echo "load_start=$(cut -d' ' -f1-3 /proc/loadavg)"
} >"$OUT/latency.load.txt"
"${hf[@]}" | tee "$OUT/latency.hyperfine.txt"
echo "load_end=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/latency.load.txt"
