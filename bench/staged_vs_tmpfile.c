// Measures two ways to make a directory of new files appear atomically, file by file or all at once:
//   tmpfile: each file an unnamed O_TMPFILE file, written, its times set, linked in with linkat (what
//            pcopy does for a new file on a local file system);
//   staged:  the directory made under a temporary name, each file created under its final name
//            inside it, written, its times set; the directory renamed into place when complete.
// Both also show plain creation under final names (what --inplace does) for reference. Each way
// makes D directories of N files of 4 KiB in DIR, in alternating rounds.
//   build: gcc -O2 -o staged_vs_tmpfile bench/staged_vs_tmpfile.c
//   run:   staged_vs_tmpfile DIR [D [N [ROUNDS]]]    (DIR on the file system to measure: /dev/shm/x)
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static char data[4096];
static const struct timespec times[2] = {{1000000000, 1}, {1100000000, 2}};

static int write_file(int fd) {
  return fd >= 0 && write(fd, data, sizeof data) == sizeof data && futimens(fd, times) == 0 && close(fd) == 0;
}

// Makes DIR/<way><round>/dNNN/fNNN the given way; returns seconds.
static double make_tree(const char *base, const char *way, int round, int dirs, int files) {
  char top[4096], name[64], tmp[64], fname[64];
  snprintf(top, sizeof top, "%s/%s%d", base, way, round);
  mkdir(top, 0755);
  int topfd = open(top, O_RDONLY | O_DIRECTORY);
  double t0 = now();
  for (int d = 0; d < dirs; d++) {
    snprintf(name, sizeof name, "d%03d", d);
    snprintf(tmp, sizeof tmp, ".stage-d%03d", d);
    int staged = way[0] == 's';
    if (mkdirat(topfd, staged ? tmp : name, 0755) != 0) return perror("mkdirat"), -1;
    int dfd = openat(topfd, staged ? tmp : name, O_RDONLY | O_DIRECTORY);
    for (int f = 0; f < files; f++) {
      snprintf(fname, sizeof fname, "f%03d", f);
      int ok;
      if (way[0] == 't') {
        int fd = openat(dfd, ".", O_WRONLY | O_TMPFILE | O_CLOEXEC, 0644);
        ok = fd >= 0 && write(fd, data, sizeof data) == sizeof data && futimens(fd, times) == 0 &&
             linkat(fd, "", dfd, fname, AT_EMPTY_PATH) == 0 && close(fd) == 0;
      } else {
        ok = write_file(openat(dfd, fname, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
      }
      if (!ok) return perror(way), -1;
    }
    if (staged && renameat2(topfd, tmp, topfd, name, RENAME_NOREPLACE) != 0) return perror("renameat2"), -1;
    close(dfd);
  }
  double t = now() - t0;
  close(topfd);
  return t;
}

int main(int argc, char **argv) {
  if (argc < 2) return fprintf(stderr, "usage: %s DIR [D [N [ROUNDS]]]\n", argv[0]), 2;
  int dirs = argc > 2 ? atoi(argv[2]) : 200, files = argc > 3 ? atoi(argv[3]) : 100;
  int rounds = argc > 4 ? atoi(argv[4]) : 3;
  const char *ways[] = {"tmpfile", "staged", "inplace"};
  mkdir(argv[1], 0755);
  for (int r = 0; r < rounds; r++) {
    for (int w = 0; w < 3; w++) {
      double t = make_tree(argv[1], ways[w], r, dirs, files);
      if (t < 0) return 1;
      printf("%-8s %.2f us/file%s", ways[w], t * 1e6 / (dirs * files), w == 2 ? "\n" : "   ");
    }
  }
  return 0;
}
