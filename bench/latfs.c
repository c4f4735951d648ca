// latfs: a FUSE pass-through file system that sleeps a fixed time before every request that a network
// file system would send to its server as a round trip (lookup/getattr, open, create, read, write, mkdir,
// setattr, rename, readdir, xattr calls, ...). It stands in for a slow NFS/SMB mount in the latency-bound
// benchmark (bench/latency.sh), because this machine's kernel has neither device-mapper (dm-delay) nor
// netem nor an NFS client. Requests are served by many threads, so N requests in flight overlap exactly
// as N outstanding RPCs do against a real server.
//
//   build: gcc -O2 -Wall -o latfs latfs.c $(pkg-config --cflags --libs fuse3)
//   run:   latfs BACKING_DIR MOUNTPOINT [-f] -o delay_us=500,threads=64 [other FUSE options]
//          (threads: most server threads, i.e. most requests in flight; umount MOUNTPOINT to stop).
//   stats: kill -USR1 <pid> writes the requests served since the last report ("total N", then one
//          "operation N" line each) to stderr; with -o stats=FILE to FILE instead (overwritten).
//
// Not covered by any delay: release/flush/releasedir/statfs (NFSv3 sends no round trip for them).
#define FUSE_USE_VERSION 312
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fuse.h>
#include <fuse_lowlevel.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

static struct {
  char *backing;
  unsigned delay_us;
  unsigned threads;
  char *stats;
} g_opt = {NULL, 500, 64, NULL};

static const struct fuse_opt k_opts[] = {
    {"delay_us=%u", offsetof(__typeof__(g_opt), delay_us), 0},
    {"threads=%u", offsetof(__typeof__(g_opt), threads), 0},
    {"stats=%s", offsetof(__typeof__(g_opt), stats), 0},
    FUSE_OPT_END};

// Requests served, per operation (keyed by the handler's __func__, claimed lock-free on first use).
#define MAX_KINDS 48
static struct {
  const char *name;
  unsigned long count;
} g_kinds[MAX_KINDS];

static void count(const char *fn) {
  for (int i = 0; i < MAX_KINDS; i++) {
    const char *cur = __atomic_load_n(&g_kinds[i].name, __ATOMIC_ACQUIRE);
    if (!cur) {
      const char *expected = NULL;
      if (__atomic_compare_exchange_n(&g_kinds[i].name, &expected, fn, 0, __ATOMIC_ACQ_REL,
                                      __ATOMIC_ACQUIRE))
        cur = fn;
      else
        cur = expected;
    }
    if (cur == fn) {
      __atomic_add_fetch(&g_kinds[i].count, 1, __ATOMIC_RELAXED);
      return;
    }
  }
}

// One simulated round trip.
#define rtt() rtt_(__func__)
static void rtt_(const char *fn) {
  count(fn);
  if (g_opt.delay_us == 0) return;
  struct timespec ts = {g_opt.delay_us / 1000000, (long)(g_opt.delay_us % 1000000) * 1000};
  while (clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, &ts) == EINTR) {
  }
}

// Waits for SIGUSR1 (blocked in every other thread) and then writes the counts since the previous
// report: "total N" and one "operation N" line each, to the stats file or stderr.
static void *stats_thread(void *arg) {
  sigset_t *set = arg;
  for (;;) {
    int sig;
    if (sigwait(set, &sig) != 0) continue;
    char out[4096];
    size_t len = 0;
    unsigned long total = 0, n[MAX_KINDS];
    for (int i = 0; i < MAX_KINDS; i++) {
      n[i] = __atomic_exchange_n(&g_kinds[i].count, 0, __ATOMIC_RELAXED);
      total += n[i];
    }
    len += (size_t)snprintf(out + len, sizeof out - len, "total %lu\n", total);
    for (int i = 0; i < MAX_KINDS && len < sizeof out - 64; i++) {
      const char *name = __atomic_load_n(&g_kinds[i].name, __ATOMIC_ACQUIRE);
      if (name && n[i]) len += (size_t)snprintf(out + len, sizeof out - len, "%s %lu\n", name + 4, n[i]);
    }
    FILE *f = g_opt.stats ? fopen(g_opt.stats, "we") : stderr;
    if (f) {
      fwrite(out, 1, len, f);
      if (f != stderr) fclose(f);
      else fflush(f);
    }
  }
  return NULL;
}

// Backing path of a FUSE path ("/a/b" -> "<backing>/a/b"). Returns -ENAMETOOLONG on overflow.
static int full(char out[PATH_MAX], const char *path) {
  int n = snprintf(out, PATH_MAX, "%s%s", g_opt.backing, path);
  return (n < 0 || n >= PATH_MAX) ? -ENAMETOOLONG : 0;
}
#define FULL(var, path)                 \
  char var[PATH_MAX];                   \
  do {                                  \
    int e_ = full(var, path);           \
    if (e_) return e_;                  \
  } while (0)
#define RET(expr) return (expr) == -1 ? -errno : 0

static void *lat_init(struct fuse_conn_info *conn, struct fuse_config *cfg) {
  // Asked for, as an NFS client would have it, but libfuse 3.14 never passes this flag on to the kernel,
  // which then serializes LOOKUP and READDIR requests within one directory (creates, renames and
  // unlinks in one directory are serialized by the VFS on every file system, NFS included).
  if (conn->capable & FUSE_CAP_PARALLEL_DIROPS) conn->want |= FUSE_CAP_PARALLEL_DIROPS;
  if (conn->capable & FUSE_CAP_READDIRPLUS) conn->want |= FUSE_CAP_READDIRPLUS;
  if (getenv("LATFS_DEBUG"))
    fprintf(stderr, "latfs: capable %#x want %#x\n", conn->capable, conn->want);
  cfg->use_ino = 1;          // report the backing inode numbers (hard-link detection works)
  cfg->nullpath_ok = 1;      // calls on open files may come without a path
  return NULL;
}

static int lat_getattr(const char *path, struct stat *st, struct fuse_file_info *fi) {
  rtt();
  if (fi) RET(fstat((int)fi->fh, st));
  FULL(p, path);
  RET(lstat(p, st));
}

static int lat_readlink(const char *path, char *buf, size_t size) {
  rtt();
  FULL(p, path);
  ssize_t n = readlink(p, buf, size - 1);
  if (n == -1) return -errno;
  buf[n] = '\0';
  return 0;
}

static int lat_mknod(const char *path, mode_t mode, dev_t rdev) {
  rtt();
  FULL(p, path);
  if (S_ISFIFO(mode)) RET(mkfifo(p, mode));
  RET(mknod(p, mode, rdev));
}

static int lat_mkdir(const char *path, mode_t mode) { rtt(); FULL(p, path); RET(mkdir(p, mode)); }
static int lat_unlink(const char *path) { rtt(); FULL(p, path); RET(unlink(p)); }
static int lat_rmdir(const char *path) { rtt(); FULL(p, path); RET(rmdir(p)); }

static int lat_symlink(const char *target, const char *path) {
  rtt();
  FULL(p, path);
  RET(symlink(target, p));
}

static int lat_rename(const char *from, const char *to, unsigned int flags) {
  rtt();
  FULL(a, from);
  FULL(b, to);
  RET(renameat2(AT_FDCWD, a, AT_FDCWD, b, flags));
}

static int lat_link(const char *from, const char *to) {
  rtt();
  FULL(a, from);
  FULL(b, to);
  RET(link(a, b));
}

static int lat_chmod(const char *path, mode_t mode, struct fuse_file_info *fi) {
  rtt();
  if (fi) RET(fchmod((int)fi->fh, mode));
  FULL(p, path);
  RET(chmod(p, mode));
}

static int lat_chown(const char *path, uid_t uid, gid_t gid, struct fuse_file_info *fi) {
  rtt();
  if (fi) RET(fchown((int)fi->fh, uid, gid));
  FULL(p, path);
  RET(lchown(p, uid, gid));
}

static int lat_truncate(const char *path, off_t size, struct fuse_file_info *fi) {
  rtt();
  if (fi) RET(ftruncate((int)fi->fh, size));
  FULL(p, path);
  RET(truncate(p, size));
}

static int lat_utimens(const char *path, const struct timespec ts[2], struct fuse_file_info *fi) {
  rtt();
  if (fi) RET(futimens((int)fi->fh, ts));
  FULL(p, path);
  RET(utimensat(AT_FDCWD, p, ts, AT_SYMLINK_NOFOLLOW));
}

static int lat_open(const char *path, struct fuse_file_info *fi) {
  rtt();
  FULL(p, path);
  int fd = open(p, fi->flags);
  if (fd == -1) return -errno;
  fi->fh = (uint64_t)fd;
  return 0;
}

static int lat_create(const char *path, mode_t mode, struct fuse_file_info *fi) {
  rtt();
  FULL(p, path);
  int fd = open(p, fi->flags, mode);
  if (fd == -1) return -errno;
  fi->fh = (uint64_t)fd;
  return 0;
}

static int lat_read(const char *path, char *buf, size_t size, off_t off, struct fuse_file_info *fi) {
  (void)path;
  rtt();
  ssize_t n = pread((int)fi->fh, buf, size, off);
  return n == -1 ? -errno : (int)n;
}

static int lat_write(const char *path, const char *buf, size_t size, off_t off,
                     struct fuse_file_info *fi) {
  (void)path;
  rtt();
  ssize_t n = pwrite((int)fi->fh, buf, size, off);
  return n == -1 ? -errno : (int)n;
}

static int lat_statfs(const char *path, struct statvfs *st) {
  (void)path;
  RET(statvfs(g_opt.backing, st));
}

static int lat_release(const char *path, struct fuse_file_info *fi) {
  (void)path;
  close((int)fi->fh);
  return 0;
}

static int lat_fsync(const char *path, int datasync, struct fuse_file_info *fi) {
  (void)path;
  rtt();
  RET(datasync ? fdatasync((int)fi->fh) : fsync((int)fi->fh));
}

static int lat_setxattr(const char *path, const char *name, const char *value, size_t size,
                        int flags) {
  rtt();
  FULL(p, path);
  RET(lsetxattr(p, name, value, size, flags));
}

static int lat_getxattr(const char *path, const char *name, char *value, size_t size) {
  rtt();
  FULL(p, path);
  ssize_t n = lgetxattr(p, name, value, size);
  return n == -1 ? -errno : (int)n;
}

static int lat_listxattr(const char *path, char *list, size_t size) {
  rtt();
  FULL(p, path);
  ssize_t n = llistxattr(p, list, size);
  return n == -1 ? -errno : (int)n;
}

static int lat_removexattr(const char *path, const char *name) {
  rtt();
  FULL(p, path);
  RET(lremovexattr(p, name));
}

static int lat_opendir(const char *path, struct fuse_file_info *fi) {
  rtt();
  FULL(p, path);
  DIR *d = opendir(p);
  if (!d) return -errno;
  fi->fh = (uint64_t)(uintptr_t)d;
  return 0;
}

// Entries are numbered from 1 in readdir order and handed out with those offsets, so a large directory
// takes several round trips, as with a real server. When the kernel asks for READDIRPLUS (as an NFS
// client does), every entry comes with its attributes and the kernel fills its dentry cache, so later
// opens of these names need no LOOKUP round trip.
static int lat_readdir(const char *path, void *buf, fuse_fill_dir_t filler, off_t off,
                       struct fuse_file_info *fi, enum fuse_readdir_flags flags) {
  (void)path;
  rtt();
  DIR *d = (DIR *)(uintptr_t)fi->fh;
  rewinddir(d);
  struct dirent *e;
  off_t i = 0;
  while ((e = readdir(d))) {
    if (i++ < off) continue;
    struct stat st;
    memset(&st, 0, sizeof st);
    enum fuse_fill_dir_flags fill = 0;
    if ((flags & FUSE_READDIR_PLUS) && fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0) {
      fill = FUSE_FILL_DIR_PLUS;
    } else {
      st.st_ino = e->d_ino;
      st.st_mode = (mode_t)DTTOIF(e->d_type);
    }
    if (filler(buf, e->d_name, &st, i, fill)) break;
  }
  return 0;
}

static int lat_releasedir(const char *path, struct fuse_file_info *fi) {
  (void)path;
  closedir((DIR *)(uintptr_t)fi->fh);
  return 0;
}

static int lat_access(const char *path, int mask) {
  rtt();
  FULL(p, path);
  RET(access(p, mask));
}

static int lat_fallocate(const char *path, int mode, off_t off, off_t len,
                         struct fuse_file_info *fi) {
  (void)path;
  rtt();
  RET(fallocate((int)fi->fh, mode, off, len));
}

static ssize_t lat_copy_file_range(const char *pin, struct fuse_file_info *fin, off_t oin,
                                   const char *pout, struct fuse_file_info *fout, off_t oout,
                                   size_t len, int flags) {
  (void)pin;
  (void)pout;
  rtt();  // a server-side copy (NFSv4.2 COPY): one round trip
  ssize_t n = copy_file_range((int)fin->fh, &oin, (int)fout->fh, &oout, len, (unsigned)flags);
  return n == -1 ? -errno : n;
}

static off_t lat_lseek(const char *path, off_t off, int whence, struct fuse_file_info *fi) {
  (void)path;
  rtt();
  off_t r = lseek((int)fi->fh, off, whence);
  return r == -1 ? -errno : r;
}

static const struct fuse_operations k_ops = {
    .init = lat_init,
    .getattr = lat_getattr,
    .readlink = lat_readlink,
    .mknod = lat_mknod,
    .mkdir = lat_mkdir,
    .unlink = lat_unlink,
    .rmdir = lat_rmdir,
    .symlink = lat_symlink,
    .rename = lat_rename,
    .link = lat_link,
    .chmod = lat_chmod,
    .chown = lat_chown,
    .truncate = lat_truncate,
    .utimens = lat_utimens,
    .open = lat_open,
    .create = lat_create,
    .read = lat_read,
    .write = lat_write,
    .statfs = lat_statfs,
    .release = lat_release,
    .fsync = lat_fsync,
    .setxattr = lat_setxattr,
    .getxattr = lat_getxattr,
    .listxattr = lat_listxattr,
    .removexattr = lat_removexattr,
    .opendir = lat_opendir,
    .readdir = lat_readdir,
    .releasedir = lat_releasedir,
    .access = lat_access,
    .fallocate = lat_fallocate,
    .copy_file_range = lat_copy_file_range,
    .lseek = lat_lseek,
};

int main(int argc, char **argv) {
  if (argc < 3 || argv[1][0] == '-') {
    fprintf(stderr, "usage: latfs BACKING_DIR MOUNTPOINT [-f] [-o delay_us=N,threads=N,stats=FILE,...] [FUSE options]\n");
    return 2;
  }
  g_opt.backing = realpath(argv[1], NULL);
  if (!g_opt.backing) {
    perror(argv[1]);
    return 2;
  }
  // Drop BACKING_DIR from the arguments libfuse parses.
  for (int i = 1; i + 1 < argc; i++) argv[i] = argv[i + 1];
  argc--;
  struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
  if (fuse_opt_parse(&args, &g_opt, k_opts, NULL) == -1) return 2;
  umask(0);
  // fuse_main() of libfuse 3.14 does not pass max_threads on (it keeps its default of 10 threads), so
  // the loop is set up here with an explicit thread count.
  struct fuse_cmdline_opts cl;
  if (fuse_parse_cmdline(&args, &cl) != 0 || !cl.mountpoint) {
    fprintf(stderr, "latfs: no mount point\n");
    return 2;
  }
  struct fuse *f = fuse_new(&args, &k_ops, sizeof k_ops, NULL);
  if (!f) return 1;
  if (fuse_mount(f, cl.mountpoint) != 0) return 1;
  if (fuse_daemonize(cl.foreground) != 0) return 1;
  // After daemonizing (a fork keeps no threads), before the loop starts its threads (they inherit the
  // blocked SIGUSR1, so only the stats thread receives it).
  static sigset_t usr1;
  sigemptyset(&usr1);
  sigaddset(&usr1, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &usr1, NULL);  // inherited by every thread libfuse starts
  pthread_t st;
  pthread_create(&st, NULL, stats_thread, &usr1);
  struct fuse_session *se = fuse_get_session(f);
  if (fuse_set_signal_handlers(se) != 0) return 1;
  struct fuse_loop_config *lc = fuse_loop_cfg_create();
  fuse_loop_cfg_set_max_threads(lc, g_opt.threads);
  fuse_loop_cfg_set_idle_threads(lc, g_opt.threads);
  int rc = cl.singlethread ? fuse_loop(f) : fuse_loop_mt(f, lc);
  fuse_loop_cfg_destroy(lc);
  fuse_remove_signal_handlers(se);
  fuse_unmount(f);
  fuse_destroy(f);
  free(cl.mountpoint);
  fuse_opt_free_args(&args);
  return rc ? 1 : 0;
}
