// Measures whether more processes copy ONE big file faster: P processes each copy a contiguous 1/P
// of SRC into the same destination file (made at full size first), in one of four ways:
//   cfr:   copy_file_range over its range;
//   rw:    pread into a 1 MiB buffer, pwrite out (the read half runs outside the file's lock: what
//          pcopy's chunks on a local file system do where one worker writes the file);
//   mmap:  the destination range mapped shared, pread straight into the mapping (no inode lock:
//          a page fault per 4 KiB instead);
//   populate: as mmap, 8 MiB at a time, each slice's pages made first by one
//          madvise(MADV_POPULATE_WRITE) (no inode lock, no fault per page: what pcopy's chunks on
//          tmpfs do where other workers write the same file, Copier::copy_mapped).
// Each way with 1 and with P processes, in alternating rounds; medians. Where the destination's
// writes serialise on its inode lock (tmpfs, ext4), P processes gain only as far as one reads while
// another writes: copy_file_range holds the lock while it reads too, pread does not (2 GiB on tmpfs,
// 2 processes, 2026-12-01: cfr 1.08-1.24x of one process's speed, rw 1.29-1.57x). On this VM most
// of a copy into tmpfs is the first touch of each page, which the host must fault in again (memory
// the guest freed is handed back to it), and a write does that under the lock; populate does it in
// parallel (2026-12-03, two runs: populate 2.29x and 2.49x of one process's speed, rw 1.84x and
// 2.23x; one process took 2.3-3.5 s in every way, where cp -a's fastest runs that morning took
// 0.84-0.93 s).
//   build: gcc -O2 -o one_file_writers bench/one_file_writers.c
//   run:   one_file_writers SRC DST [P [ROUNDS [WAYS]]]   (WAYS: comma list, default
//          cfr,rw,populate; mmap's page faults make one process 1.6x (2026-12-01) to 13x (an
//          earlier session) slower than cfr on this VM: add it by hand)
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what) {
  perror(what);
  _exit(1);
}

// Copies [off, end) of s into d the given way; in a child.
static void copy_range(const char *way, int s, int d, off_t off, off_t end) {
  if (strcmp(way, "cfr") == 0) {
    loff_t in = off, out = off;
    while (in < end)
      if (copy_file_range(s, &in, d, &out, end - in, 0) <= 0) die("copy_file_range");
  } else if (strcmp(way, "rw") == 0) {
    char *buf = malloc(1 << 20);
    for (off_t o = off; o < end;) {
      ssize_t n = pread(s, buf, end - o < (1 << 20) ? end - o : (1 << 20), o);
      if (n <= 0 || pwrite(d, buf, n, o) != n) die("pread/pwrite");
      o += n;
    }
  } else if (strcmp(way, "populate") == 0) {
    const off_t slice = 8 << 20;
    for (off_t o = off; o < end;) {
      off_t n = end - o < slice ? end - o : slice;
      char *map = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_SHARED, d, o);
      if (map == MAP_FAILED) die("mmap");
      if (madvise(map, n, MADV_POPULATE_WRITE) != 0) die("madvise");
      for (off_t k = 0; k < n;) {
        ssize_t got = pread(s, map + k, n - k, o + k);
        if (got <= 0) die("pread");
        k += got;
      }
      munmap(map, n);
      o += n;
    }
  } else {
    char *map = mmap(NULL, end - off, PROT_READ | PROT_WRITE, MAP_SHARED, d, off);
    if (map == MAP_FAILED) die("mmap");
    for (off_t o = off; o < end;) {
      ssize_t n = pread(s, map + (o - off), end - o < (8 << 20) ? end - o : (8 << 20), o);
      if (n <= 0) die("pread");
      o += n;
    }
    munmap(map, end - off);
  }
}

static double copy(const char *src, const char *dst, const char *way, int procs) {
  int s = open(src, O_RDONLY);
  struct stat st;
  if (s < 0 || fstat(s, &st) != 0) die(src);
  unlink(dst);
  int d = open(dst, O_RDWR | O_CREAT | O_EXCL, 0644);
  if (d < 0 || ftruncate(d, st.st_size) != 0) die(dst);
  off_t per = (st.st_size / procs + 4095) & ~(off_t)4095;
  double t0 = now();
  for (int i = 0; i < procs; i++) {
    off_t off = per * i, end = off + per < st.st_size ? off + per : st.st_size;
    pid_t pid = fork();
    if (pid < 0) die("fork");
    if (pid == 0) {
      if (off < end) copy_range(way, s, d, off, end);
      _exit(0);
    }
  }
  int status, failed = 0;
  while (wait(&status) > 0) failed |= !WIFEXITED(status) || WEXITSTATUS(status) != 0;
  double t = now() - t0;
  if (failed) exit(1);
  close(s);
  close(d);
  unlink(dst);
  return t;
}

static int by_value(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: one_file_writers SRC DST [P [ROUNDS [WAYS]]]\n");
    return 2;
  }
  int procs = argc > 3 ? atoi(argv[3]) : 2, rounds = argc > 4 ? atoi(argv[4]) : 5;
  char ways_arg[256];
  snprintf(ways_arg, sizeof ways_arg, "%s", argc > 5 ? argv[5] : "cfr,rw,populate");
  const char *ways[8];
  int nways = 0;
  for (char *w = strtok(ways_arg, ","); w && nways < 8; w = strtok(NULL, ",")) {
    if (strcmp(w, "cfr") != 0 && strcmp(w, "rw") != 0 && strcmp(w, "mmap") != 0 && strcmp(w, "populate") != 0) {
      fprintf(stderr, "one_file_writers: unknown way %s (cfr, rw, mmap, populate)\n", w);
      return 2;
    }
    ways[nways++] = w;
  }
  if (procs < 1 || rounds < 1 || nways == 0) return 2;
  double t[8][2][64];
  if (rounds > 64) rounds = 64;
  for (int r = 0; r < rounds; r++)
    for (int w = 0; w < nways; w++)
      for (int p = 0; p < 2; p++) t[w][p][r] = copy(argv[1], argv[2], ways[w], p ? procs : 1);
  for (int w = 0; w < nways; w++) {
    double m[2];
    for (int p = 0; p < 2; p++) {
      qsort(t[w][p], rounds, sizeof(double), by_value);
      m[p] = t[w][p][rounds / 2];
    }
    printf("%-8s 1 process %.3f s, %d processes %.3f s: %.2fx\n", ways[w], m[0], procs, m[1], m[0] / m[1]);
  }
  return 0;
}
