#!/usr/bin/env bash
# Clears the way for the next timed run on a disk's file system: moves DST, the last run's copy, into
# TRASH instead of removing it. Creating files on ext4 soon after many were removed is slow here:
# `cp -a` of the 50,000 small files took 16-41 s right after `rm -rf` of an earlier copy (27 s still
# when `sync` and 65 s of waiting came between), 1.5-1.9 s after it was moved aside (2026-12-03;
# `perf` showed the inode allocator in recently_deleted). run.sh calls this as hyperfine's --prepare,
# outside the timing, and removes TRASH when every corpus is done.
#
#   bench/set_aside.sh DST TRASH ENTRIES KIB BUDGET
#     ENTRIES, KIB  how many entries a copy has and the KiB it takes (counted once by run.sh)
#     BUDGET        the most entries TRASH may hold
# TRASH is emptied when it would hold more than BUDGET entries or the disk would keep less than four
# copies' room, with a warning: the runs just after that are slowed as above.
set -euo pipefail
DST=$1 TRASH=$2 ENTRIES=$3 KIB=$4 BUDGET=$5
mkdir -p "$TRASH"
COUNT=$TRASH/.entries
held=$(cat "$COUNT" 2>/dev/null || echo 0)
if [ -e "$DST" ]; then
  avail=$(df --output=avail -k "$TRASH" | tail -1)
  if [ $((held + ENTRIES)) -gt "$BUDGET" ] || [ "$avail" -lt $((4 * KIB)) ]; then
    echo "set_aside.sh: emptying $TRASH (the next runs may be slower for it)" >&2
    find "$TRASH" -mindepth 1 -maxdepth 1 ! -name .entries -exec rm -rf {} +
    rm -rf "$DST"
    held=0
  else
    mv "$DST" "$TRASH/copy.$(date +%s%N)"
    held=$((held + ENTRIES))
  fi
fi
echo "$held" >"$COUNT"
sync
