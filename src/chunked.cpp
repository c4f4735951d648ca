// A big file split across workers: its Begin, its chunks and its End (see Copier::copy_opened).
#include "pcopy/copier.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>

#include "pcopy/copier_internal.hpp"
#include "pcopy/up_to_date.hpp"

namespace pcopy {

int note_made(int fd, Result& r) {
  struct stat made;
  if (::fstat(fd, &made) != 0) return errno;
  r.dst_dev = made.st_dev;
  r.dst_ino = made.st_ino;
  return 0;
}

// A big file split across workers. Begin creates the temporary (or opens the final name with
// --inplace, not emptied: End cuts it to size); chunks write their ranges into it; End checks that
// the source did not change, sets the metadata and renames. The parent removes the temporary if
// any part fails.
Result Copier::begin_chunked(int src_dir, int dst_dir, const Job& job, Result r) {
  UniqueFd in(open_source(src_dir, job.name, opt_.dereference));
  if (!in) return unopened(r, src_dir, job.name);
  struct stat st;
  if (::fstat(in.get(), &st) != 0) return fail(r, errno);
  if (!S_ISREG(st.st_mode)) return fail(r, 0, kChangedType);
  // What it holds now is copied, as a file copied whole is: the walk's size and time may be older
  // (a log appended to since). The chunks cover this size, and End checks against it.
  r.size = uint64_t(st.st_size);
  r.mtime_ns = to_ns(st.st_mtim);
  // Copied whole here instead, as a big file the walk did not split is, where splitting does not
  // fit: a file sparse now (the walk saw it whole), which is copied by extents, its holes kept (a
  // chunk writes every byte of its range); and a file in an append-only directory, which takes no
  // rename (nor the unlink of the chunks' temporary). Its answer names no temporary, which tells
  // the parent it is done (settle).
  if (has_holes(st) || (!opt_.inplace && append_only_here(dst_dir))) {
    Job whole = job;
    whole.kind = JobKind::File;
    whole.known = true;  // not to be split
    return copy_opened(std::move(in), st, dst_dir, whole, r);
  }
  if (directory_in_the_way(dst_dir, job.target())) return fail(r, EISDIR);
  r.temp = opt_.inplace ? job.target() : next_temp_name();
  r.src_dev = st.st_dev;
  r.src_ino = st.st_ino;
  bool existed = false;
  struct stat as = split_stat(st);
  UniqueFd out(opt_.inplace ? in_place(dst_dir, r.temp, as, existed, false)
                            : ::openat(dst_dir, r.temp.c_str(), kCreate, as.st_mode & 0777));
  if (!out) return fail(r, errno);
  int err = note_made(out.get(), r);
  if (!err) err = out.close_checked();
  if (err) {
    if (!opt_.inplace) ::unlinkat(dst_dir, r.temp.c_str(), 0);
    return fail(r, err);
  }
  return r;
}

namespace {

// Whether `st` is the source the file's FileBegin opened (when the parent knows which).
bool same_source(const Job& job, const struct stat& st) {
  return !job.src_ino || (uint64_t(st.st_dev) == job.src_dev && uint64_t(st.st_ino) == job.src_ino);
}

}  // namespace

namespace {
const char* const kReplaced = "replaced by another file while it was written";

// Whether `st` is the file the job's FileBegin made or opened (when the parent knows which).
bool same_dst(const Job& job, const struct stat& st) {
  return S_ISREG(st.st_mode) && (!job.dst_ino || (uint64_t(st.st_dev) == job.dst_dev && uint64_t(st.st_ino) == job.dst_ino));
}

// A chunked file's temporary (its final name with --inplace), reopened by name for a chunk or the
// End. Only the file FileBegin made is written: anyone who may write in DST can put another there
// meanwhile, and a FIFO blocked the worker for good, a device would take the data, and a file of
// theirs would be given the source's owner and mode. What is there is looked at before it is
// opened, and again once open (O_NONBLOCK: a FIFO put there in between does not block the open;
// cleared again for the writes). `access`: O_WRONLY, or O_RDWR to map it. Returns the descriptor
// and its stat in `st`; or -1 with errno, or with 0 and `detail` set (kReplaced).
int reopen_chunked(int dir, const Job& job, struct stat& st, const char*& detail, int access = O_WRONLY) {
  auto replaced = [&] {
    detail = kReplaced;
    errno = 0;
    return -1;
  };
  if (::fstatat(dir, job.temp.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) return -1;
  if (!same_dst(job, st)) return replaced();
  int fd = ::openat(dir, job.temp.c_str(), access | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
  if (fd < 0) return errno == ENXIO || errno == ELOOP || errno == EISDIR ? replaced() : -1;
  int err = ::fstat(fd, &st) != 0 ? errno : 0;
  if (!err && !same_dst(job, st)) {
    ::close(fd);
    return replaced();
  }
  if (!err && ::fcntl(fd, F_SETFL, 0) != 0) err = errno;  // O_NONBLOCK off
  if (!err) return fd;
  ::close(fd);
  errno = err;
  return -1;
}
}  // namespace

Result Copier::copy_chunk(int src_dir, int dst_dir, const Job& job, Result r) {
  UniqueFd in(open_source(src_dir, job.name, opt_.dereference));
  if (!in) return unopened(r, src_dir, job.name);
  struct stat st;
  if (::fstat(in.get(), &st) != 0) return fail(r, errno);
  if (!same_source(job, st)) return fail(r, 0, kChanged);  // another file renamed over it
  const char* odd = "";
  struct stat opened;
  // Written through a mapping where another worker writes the file too (copy_mapped), which needs
  // it open for reading as well: not where its mode keeps its owner from reading (a user's copy
  // --inplace of a file they may write but not read).
  bool mapped = job.shared && in_memory_;
  UniqueFd out(reopen_chunked(dst_dir, job, opened, odd, mapped ? O_RDWR : O_WRONLY));
  if (!out && mapped && errno == EACCES) {
    mapped = false;
    out.reset(reopen_chunked(dst_dir, job, opened, odd));
  }
  if (!out) return fail(r, errno, odd);
#ifdef PCOPY_TEST_HOOKS
  // Test builds only: stop half-way through a named file's first chunk (first attempt), as
  // copy_opened does for a file copied whole.
  if (const char* name = std::getenv("PCOPY_TEST_STOP_MIDWAY_NAME");
      name && job.name == name && job.attempt == 0 && job.offset == 0) {
    loff_t a = 0, b = 0;
    (void)::copy_file_range(in.get(), &a, out.get(), &b, size_t(job.length) / 2, 0);
    ::raise(SIGSTOP);
  }
#endif
  // On a local file system copy_file_range is a splice that holds the file's inode lock while it
  // reads as well as while it writes: through the buffer, a worker reads its chunk while another
  // writes theirs (one 2 GiB file on tmpfs, -j2: 1.25x the speed of cp -a, against 1.0x with
  // copy_file_range); through a mapping, no lock is taken at all. Elsewhere copy_file_range may be
  // the server's own copy (NFS).
  FileCopy fc;
  fc.buffered = local_fs_;
  int err = mapped ? copy_mapped(in.get(), out.get(), off_t(job.offset), job.length, fc)
                   : copy_range(in.get(), out.get(), off_t(job.offset), job.length, fc);
  if (abandoned()) return given_up(r);  // the parent removes the file's temporary
  r.bytes = fc.bytes;
  if (!err && fc.bytes != job.length) return fail(r, 0, kChanged);
  if (!err) err = out.close_checked();
  return err ? fail(r, err) : r;
}

namespace {
Result done_ending(Result r, const Job& job, const struct stat& src) {
  r.size = job.size;
  r.mtime_ns = to_ns(src.st_mtim);
  return r;
}

// A FileEnd sent again, its worker dead: whether that worker had installed the file before it died
// (the temporary is gone, and the final name has the source's size and time, which End sets).
bool installed(int dst_dir, const Job& job, const struct stat& src) {
  struct stat there;
  return ::fstatat(dst_dir, job.target().c_str(), &there, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(there.st_mode) &&
         uint64_t(there.st_size) == job.size && same_mtime_in(dst_dir, there, to_ns(src.st_mtim));
}
}  // namespace

Result Copier::end_chunked(int src_dir, int dst_dir, const Job& job, Result r) {
  UniqueFd in(open_source(src_dir, job.name, opt_.dereference));
  if (!in) return unopened(r, src_dir, job.name);
  struct stat st;
  if (::fstat(in.get(), &st) != 0) return fail(r, errno);
  if (uint64_t(st.st_size) != job.size || to_ns(st.st_mtim) != job.mtime_ns || !same_source(job, st))
    return fail(r, 0, kChanged);
  const char* odd = "";
  struct stat written;
  UniqueFd out(reopen_chunked(dst_dir, job, written, odd));
  if (!out && errno == ENOENT && job.attempt > 0 && installed(dst_dir, job, st)) return done_ending(r, job, st);
  if (!out) return fail(r, errno, odd);
  if (uint64_t(written.st_size) != job.size && ::ftruncate(out.get(), off_t(job.size)) != 0) return fail(r, errno);
  if (int err = apply_metadata(out.get(), in.get(), st, false)) return fail(r, err);  // made 0600: private_stat
  int err = opt_.fsync ? fsync_checked(job, out.get()) : 0;
  if (!err) err = out.close_checked();
  if (err) {
    if (opt_.inplace) make_stale(dst_dir, job.temp);
    return fail(r, err);
  }
  if (abandoned()) return given_up(r);  // as in copy_opened: the parent removes the temporary
  if ((err = opt_.inplace ? 0 : install(dst_dir, job.temp, job.target()))) return fail(r, err);
  return done_ending(r, job, st);
}

}  // namespace pcopy
