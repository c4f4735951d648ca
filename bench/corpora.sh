#!/usr/bin/env bash
# Generates the benchmark corpora under BASE (default /dev/shm/pcopy-bench), idempotently: a corpus whose
# directory holds its completion marker is left alone; a half-made one (interrupted run) is redone.
#
#   bench/corpora.sh [BASE] [CORPUS...]      CORPUS: small usr_share big4 one2g empty300k lat2k links
#                                            links1 | all (default: all but lat2k, which only the
#                                            latency scenario uses, and links and links1)
#
# Contents are real random bytes (never holes): small files from os.urandom in one python3 process, big
# files with head -c from /dev/urandom.
#
#   small      50,000 x 4 KiB files, 500 directories of 100 (small/dNNN/fNN)
#   usr_share  cp -a of /usr/share (a real mixed tree: deep, symlinks, small and medium files)
#   big4       4 x 512 MiB files, one per directory (big4/dN/file) so floor.c can split them
#   one2g      one 2 GiB file (one2g/d0/file)
#   empty300k  300,000 empty files, 300 directories of 1,000 (empty300k/dNNN/fNNNN)
#   lat2k      2,000 x 4 KiB files, 20 directories of 100 (the latency-bound scenario's tree)
#   links      hard links for -a: 10,000 x 4 KiB files in 100 directories, each with 4 more names in
#              4 other directories (links/dNNN/fN_K), as snapshots of one tree linked to each other
#   links1     60,000 names of one 4 KiB file in one directory (links1/d0/lN): workers that link into
#              one directory take turns on its lock
set -euo pipefail

BASE=${1:-/dev/shm/pcopy-bench}
shift || true
ALL=(small usr_share big4 one2g empty300k)
if [ $# -eq 0 ] || [ "$1" = all ]; then set -- "${ALL[@]}"; fi

# A corpus is complete when BASE/.NAME.complete exists (kept outside the tree, so the tree is only data).

# dirs_of_files DIR NDIRS NFILES SIZE: DIR/dNNN/fNNNN, each file SIZE bytes of random data (one process
# for the whole tree: spawning a process per file or per directory is what makes generators slow).
dirs_of_files() {
  python3 - "$@" <<'PY'
import os, sys
base, ndirs, nfiles, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
width = max(3, len(str(ndirs - 1)))
for i in range(ndirs):
    d = os.path.join(base, "d%0*d" % (width, i))
    os.makedirs(d, exist_ok=True)
    blob = os.urandom(nfiles * size) if size else b""
    for j in range(nfiles):
        fd = os.open(os.path.join(d, "f%04d" % j), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        if size:
            os.write(fd, blob[j * size:(j + 1) * size])
        os.close(fd)
PY
}

# linked_files DIR: the links corpus.
linked_files() {
  python3 - "$1" <<'PY'
import os, sys
root = sys.argv[1]
for d in range(100):
    os.makedirs(f"{root}/d{d:03}", exist_ok=True)
for i in range(10000):
    path = f"{root}/d{i % 100:03}/f{i}"
    with open(path, "wb") as f:
        f.write(os.urandom(4096))
    for k in range(1, 5):
        os.link(path, f"{root}/d{(i + 17 * k) % 100:03}/f{i}_{k}")
PY
}

# one_file_linked DIR: the links1 corpus.
one_file_linked() {
  python3 - "$1" <<'PY'
import os, sys
d = sys.argv[1] + "/d0"
os.makedirs(d, exist_ok=True)
with open(d + "/l0", "wb") as f:
    f.write(os.urandom(4096))
for i in range(1, 60000):
    os.link(d + "/l0", f"{d}/l{i}")
PY
}

# big_file PATH MIB: a file of MIB MiB of random data, written in 1 MiB blocks.
big_file() {
  mkdir -p "$(dirname "$1")"
  head -c "$(($2 * 1024 * 1024))" /dev/urandom >"$1"
}

make_corpus() {
  local name=$1 dir=$BASE/$1 mark=$BASE/.$1.complete
  if [ -e "$mark" ] && [ -d "$dir" ]; then
    echo "corpus $name: present ($dir)"
    return 0
  fi
  rm -rf "$dir" "$mark"
  mkdir -p "$dir"
  echo "corpus $name: generating in $dir ..."
  local t0=$SECONDS
  case $name in
    small) dirs_of_files "$dir" 500 100 4096 ;;
    lat2k) dirs_of_files "$dir" 20 100 4096 ;;
    empty300k) dirs_of_files "$dir" 300 1000 0 ;;
    usr_share) cp -a /usr/share/. "$dir/" ;;
    big4) for i in 0 1 2 3; do big_file "$dir/d$i/file" 512; done ;;
    one2g) big_file "$dir/d0/file" 2048 ;;
    links) linked_files "$dir" ;;
    links1) one_file_linked "$dir" ;;
    *)
      echo "unknown corpus '$name' (known: ${ALL[*]} lat2k links links1)" >&2
      rmdir "$dir"
      return 2
      ;;
  esac
  touch "$mark"
  echo "corpus $name: done in $((SECONDS - t0)) s ($(du -sh "$dir" | cut -f1), $(find "$dir" | wc -l) entries)"
}

for c in "$@"; do make_corpus "$c"; done
