#include "pcopy/copier.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <functional>
#include <optional>

#include "pcopy/copier_internal.hpp"
#include "pcopy/fs_facts.hpp"
#include "pcopy/hash.hpp"
#include "pcopy/mirror.hpp"
#include "pcopy/paths.hpp"
#include "pcopy/ring.hpp"
#include "pcopy/temp_names.hpp"

namespace pcopy {

namespace {

// --inplace, or a staged file a dead worker left: `name` opened for writing, a regular file there
// truncated (`existed`; not with `truncate` false: a chunked copy's End cuts it to size, and where
// no chunk has written yet it keeps its data); a symbolic link, FIFO or device there is replaced,
// never written through or opened, and so is the source itself (`src`, its stat), hard-linked
// there by `cp -al`: truncating it would empty the source. So is a file with other links (renamed
// over by a new one under `temp_name()`), or it fails (EPERM where `temp_name()` gives no name:
// an append-only directory): with -a (`archive`) they are what SRC's hard links were, and a link
// broken in SRC would see the new data; on SRC's file system one of them may be another file of
// SRC (a `cp -al` snapshot whose source file was renamed since), which a copy never writes. A
// directory there is an error (EISDIR).
int open_in_place(int dir, const char* name, const struct stat& src, bool& existed, bool archive,
                  const std::function<std::string()>& temp_name, bool truncate) {
  const mode_t mode = src.st_mode & 0777;
  existed = false;
  int fd = ::openat(dir, name, kCreate, mode);
  if (fd >= 0 || errno != EEXIST) return fd;
  struct stat there;
  if (::fstatat(dir, name, &there, AT_SYMLINK_NOFOLLOW) == 0 && (S_ISREG(there.st_mode) || S_ISDIR(there.st_mode)) &&
      !(there.st_dev == src.st_dev && there.st_ino == src.st_ino)) {
    if (S_ISREG(there.st_mode) && there.st_nlink > 1 && (archive || there.st_dev == src.st_dev)) {
      // A new file renamed over it, empty: the name is never missing (another run into DST may
      // be linking it).
      const std::string relink = temp_name();
      if (relink.empty()) {  // an append-only directory: the temporary could be neither renamed nor removed
        errno = EPERM;
        return -1;
      }
      fd = ::openat(dir, relink.c_str(), kCreate, mode);
      if (fd >= 0) {
        if (::renameat(dir, relink.c_str(), dir, name) == 0) return fd;
        int err = errno;
        ::close(fd);
        ::unlinkat(dir, relink.c_str(), 0);
        errno = err;
        return -1;
      }
      // Not replaced (a directory its user may not write, no inode left): the file fails, as a
      // copy by a temporary would. Written through, a name of DST's the group no longer has (or
      // never had: DST's groups may be another's), or of SRC's, would take its data, and keep it.
      return -1;
    }
    const int flags = (kCreate & ~O_EXCL) | (truncate ? O_TRUNC : 0) | O_NONBLOCK;  // NONBLOCK: a FIFO swapped in
    fd = ::openat(dir, name, flags, mode);
    // A read-only file of the user's is written as rsync --inplace writes it: with its owner's
    // write bit added, until the copy's metadata gives it the source's mode.
    mode_t now = there.st_mode & 07777;
    if (fd < 0 && errno == EACCES && there.st_uid == ::geteuid() && !(now & S_IWUSR) &&
        ::fchmodat(dir, name, now | S_IWUSR, AT_SYMLINK_NOFOLLOW) == 0) {
      fd = ::openat(dir, name, flags, mode);
      if (fd < 0) {
        int err = errno;
        ::fchmodat(dir, name, now, AT_SYMLINK_NOFOLLOW);
        errno = err;
      } else {
        now |= S_IWUSR;  // kept: a chunked copy's workers reopen it for writing
      }
    }
    existed = fd >= 0;
    // Until the copy's metadata is set, the new data is not for those whom the old mode lets in
    // and the source's (`src`) keeps out.
    if (mode_t loose = now & 077 & ~src.st_mode; existed && loose) ::fchmod(fd, now & ~loose);
    // Else a link or a FIFO was put there meanwhile; a running program (ETXTBSY) is replaced too.
    if (fd >= 0 || (errno != ELOOP && errno != ENXIO && errno != ETXTBSY)) return fd;
  }
  // What may not be removed (another's link in a sticky directory) fails for its own reason, not
  // for the EEXIST of the open after.
  if (::unlinkat(dir, name, 0) != 0 && errno != ENOENT) return -1;
  return ::openat(dir, name, kCreate, mode);
}

// The source's stat with the mode of a file that is its maker's alone until its metadata is set:
// 0600. A chunked file, for every chunk's worker to reopen it for writing (a read-only source's
// 0444 let no one but root; End gives the real mode); with -a, a named file (a temporary, or
// --inplace's final name), for its owner, group and ACL come after its data: made with the
// source's mode it was root's, or the group's of a set-gid directory, to read meanwhile; in a
// directory others may pass but not list (DirFacts::hides_names), whose names are secrets, a file
// under a temporary name, which can be guessed.
struct stat private_stat(const struct stat& st) {
  struct stat as = st;
  as.st_mode = (st.st_mode & S_IFMT) | kOwnerRw;
  return as;
}

// Whether `name` in `dir` is gone (not even a link to nothing).
bool gone(int dir, const std::string& name) {
  struct stat st;
  return ::fstatat(dir, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0 && errno == ENOENT;
}

}  // namespace

void make_stale(int dir, const std::string& name) {
  struct timespec times[2] = {{0, UTIME_OMIT}, {0, UTIME_NOW}};
  ::utimensat(dir, name.c_str(), times, AT_SYMLINK_NOFOLLOW);
}

int fsync_checked([[maybe_unused]] const Job& job, int fd) {
#ifdef PCOPY_TEST_HOOKS
  if (const char* name = std::getenv("PCOPY_TEST_EIO_FSYNC_NAME"); name && job.name == name) return EIO;
#endif
  return ::fsync(fd) == 0 ? 0 : errno;
}

Copier::Copier(const Options& options)
    : opt_(options),
      privileged_(::geteuid() == 0),
      euid_(::geteuid()),
      egid_(::getegid()),
      pid_(::getpid()),
      try_reflink_(options.reflink != ReflinkMode::Never),
      try_cfr_(options.copy_file_range) {}

void Copier::note_own_mount(Result& r, int dst_dir, const std::string& target) const {
  if (r.outcome == Outcome::Failed && r.err == EROFS) r.own_mount = on_own_mount(dst_root_, dst_dir, target.c_str());
}

Copier::~Copier() {
  for (int fd : later_closes_) ::close(fd);
}

void Copier::enter(int dst_dir) {
  DirFacts facts;
  if (dst_dir >= 0) {
    facts = dir_facts(dst_dir);
    struct stat st;
    facts.hides_names = ::fstat(dst_dir, &st) == 0 && hides_names(dst_dir, st.st_mode);
  }
  enter(dst_dir, facts);
}

void Copier::enter(int dst_dir, const DirFacts& facts) {
  if (!facts.known && dst_dir >= 0) return enter(dst_dir);
  link_dirs_.clear();
  replacing_ = false;
  local_fs_ = dst_dir >= 0 && facts.local;
  in_memory_ = dst_dir >= 0 && facts.in_memory;
  default_acl_ = dst_dir < 0 || facts.default_acl;
  staged_ = dst_dir >= 0 && facts.staged;
  hides_names_ = dst_dir >= 0 && facts.hides_names;
  never_shares_ = dst_dir >= 0 && facts.never_shares;
  locked_ = dst_dir >= 0 && facts.locked;
  append_only_ = -1;
  chunk_ = dst_dir < 0 || chunking_helps_on(facts.remote, facts.in_memory, opt_);
}

// Before the first thing is written in a directory the parent found read-only (DirFacts::locked):
// the owner's bits are added, as the parent did for every such directory when it entered it, which
// changed the ctime of each on every -u run. The parent gives it its mode back when it is finished.
// If chmod fails, so does what is written, and says why.
void Copier::open_up(int dst_dir) {
  if (std::exchange(locked_, false)) open_up_fd(dst_dir);
}

// Whether the directory entered is append-only (chattr +a): asked once, where it matters (a name
// that would be replaced by a rename, or a temporary that could not be removed).
bool Copier::append_only_here(int dst_dir) {
  if (append_only_ < 0) append_only_ = dst_dir >= 0 && append_only(dst_dir);
  return append_only_ == 1;
}

std::string Copier::next_temp_name() {
  return temp_name(pid_, false, hides_names_, ++temp_counter_);
}

Result Copier::copy(int src_dir, int dst_dir, int dst_root, const Job& job, const ProgressFn& report) {
  deleted_.clear();
  unkept_.clear();
  Result r = copy_job(src_dir, dst_dir, dst_root, job, report);
  note_own_mount(r, dst_dir, job.target());
  r.deleted = std::move(deleted_);
  if (r.outcome != Outcome::Failed) r.unkept = std::move(unkept_);
  return r;
}

Result Copier::copy_job(int src_dir, int dst_dir, int dst_root, const Job& job, const ProgressFn& report) {
  report_ = &report;
  report_id_ = job.id;
  Result r = result_for(job);
  if (job.kind == JobKind::FileChunk) return copy_chunk(src_dir, dst_dir, job, r);
  if (job.kind == JobKind::FileEnd) return end_chunked(src_dir, dst_dir, job, r);

  bool need_dst_stat = opt_.update || opt_.ignore_existing || opt_.dry_run;
  if (need_dst_stat && dst_dir >= 0) {
    struct stat dst;
    if (::fstatat(dst_dir, job.target().c_str(), &dst, AT_SYMLINK_NOFOLLOW) == 0) {
      // A directory where SRC has a file: only --delete removes it (see install), and not what
      // the filters exclude in it, as the real run would find.
      if (opt_.dry_run && S_ISDIR(dst.st_mode) && !opt_.ignore_existing) {
        if (opt_.delete_extraneous) make_way(dst_dir, job.target(), true);
        if (deleted_.empty() || deleted_.back() != rel_of(job.target())) return fail(r, EISDIR);
      }
      // A name of a hard link group that is already a name of the group's copy: its inode is
      // the first name's, brought up to date there.
      if (opt_.update && !opt_.ignore_existing && job.kind == JobKind::HardLink && job.attempt == 0 &&
          linked_already(dst_root, job, dst) == 0) {
        r.outcome = Outcome::Skipped;
        return r;
      }
      struct stat src;
      if (opt_.ignore_existing || (opt_.update && job.attempt == 0 && up_to_date(src_dir, dst_dir, job, dst, src) &&
                                   !shared_and_differs(src_dir, dst_dir, job, dst))) {
        r.outcome = Outcome::Skipped;
        if (opt_.update && !opt_.ignore_existing && !opt_.dry_run) {
          // ENOENT: the source gone since it was compared (its attributes read by name), or DST's.
          if (int err = refresh_metadata(src_dir, dst_dir, job, src, dst))
            return err == ENOENT ? source_failed(r, err, src_dir, job.name) : fail(r, err);
        }
        return r;
      }
      r.outcome = Outcome::Replaced;
    } else if (errno != ENOENT) {
      return fail(r, errno);
    }
  }
  if (opt_.dry_run) {
    // A file the real run could not read, the dry run names too.
    if (job.kind == JobKind::File || job.kind == JobKind::FileBegin) {
      UniqueFd in(open_source(src_dir, job.name, opt_.dereference));
      if (!in) return unopened(r, src_dir, job.name);
      // A directory the run would make is on the file system of DST, or of the directory DST
      // would be made in.
      int dst_fs = dst_dir >= 0 ? dst_dir : dst_root >= 0 ? dst_root : dst_fs_;
      if (int err = opt_.reflink == ReflinkMode::Always ? clone_refusal(in.get(), dst_fs) : 0)
        return fail(r, err, "cannot clone it (--reflink=always): " + errno_text(err));
    }
    // Nor can anything replace what is there in an append-only directory (--inplace rewrites a
    // file where it is, but for one with other links, which the dry run does not look at).
    bool rewritten = opt_.inplace && (job.kind == JobKind::File || job.kind == JobKind::FileBegin);
    if (r.outcome == Outcome::Replaced && !rewritten && append_only_here(dst_dir))
      return fail(r, EPERM);
    r.bytes = job.kind == JobKind::File ? job.size : 0;
    return r;
  }
  open_up(dst_dir);
  switch (job.kind) {
    case JobKind::File: return copy_file(src_dir, dst_dir, job, r);
    case JobKind::FileBegin: return begin_chunked(src_dir, dst_dir, job, r);
    case JobKind::HardLink: return copy_hard_link(dst_dir, dst_root, job, r);
    default: return copy_special(src_dir, dst_dir, job, r);
  }
}

// A source that open_source() could not open: O_NOFOLLOW refused a symbolic link where the walk saw
// a file (for a big file's chunks, where its FileBegin opened one).
Result Copier::unopened(Result r, int dir, const std::string& name) const {
  int err = errno;
  if (err == ELOOP && !opt_.dereference) return fail(std::move(r), 0, kChangedType);
  return source_failed(std::move(r), err, dir, name);
}

// A failure `err` to reach the source `name` in `dir` (or something else: ENOENT may be DST's). With
// ENOENT where the source is gone, a vanished entry; where -L follows a link of SRC's that points to
// nothing now, an error, as when the walk finds one.
Result Copier::source_failed(Result r, int err, int dir, const std::string& name) const {
  r = fail(std::move(r), err);
  if (err != ENOENT) return r;
  if (gone(dir, name)) {
    r.vanished = Vanished::Entry;
    return r;
  }
  struct stat st;
  if (opt_.dereference && ::fstatat(dir, name.c_str(), &st, 0) != 0 && errno == ENOENT)
    return fail(std::move(r), 0, kDanglingLink);
  return r;
}

Result Copier::copy_file(int src_dir, int dst_dir, const Job& job, Result r) {
  UniqueFd in(open_source(src_dir, job.name, opt_.dereference));
  if (!in) return unopened(r, src_dir, job.name);
  struct stat st;
  if (::fstat(in.get(), &st) != 0) return fail(r, errno);
  return copy_opened(std::move(in), st, dst_dir, job, r);
}

Result Copier::copy_opened(UniqueFd in, const struct stat& st, int dst_dir, const Job& job, Result r) {
  if (!S_ISREG(st.st_mode)) return fail(r, 0, kChangedType);
  r.size = uint64_t(st.st_size);
  r.mtime_ns = to_ns(st.st_mtim);
  if (r.size >= kAnnounceBytes && directory_in_the_way(dst_dir, job.target())) return fail(r, EISDIR);
  // A file this big may take a while: a progress message of nothing yet sends the results held
  // back first, so that a run interrupted meanwhile, which kills a worker that does not finish
  // in time, still learns of the files done before it (in place, they were in no count).
  if (r.size >= kAnnounceBytes && report_) (*report_)(report_id_, 0);

  std::optional<Hasher> hasher;
  if (opt_.verify || !opt_.manifest.empty()) hasher.emplace();
  // Big, and the parent did not know: to be handed back and copied in chunks by every worker.
  // (Not in an append-only directory: its chunks' temporary could not be renamed into place.)
  bool split = !job.known && !hasher && chunk_ && opt_.jobs > 1 && uint64_t(st.st_size) >= kChunkThreshold &&
               !has_holes(st) && (opt_.inplace || !append_only_here(dst_dir));

  // Where the data goes: an unnamed O_TMPFILE file linked in when complete (nothing to clean up
  // after a crash, and cheaper), a named temporary beside the final name when the file system has
  // no O_TMPFILE, its close may fail (NFS, FUSE: the check must come before the file appears),
  // other workers must open it (split) or --verify rereads it; the final name with --inplace.
  // In a staged directory (hidden until the parent renames it into place) files are written
  // straight to their final names: what appears is the whole directory, complete. Except a file to
  // split: its chunks go to a named temporary, renamed by whoever finishes it, as anywhere else.
  const bool direct = opt_.inplace || (staged_ && !split);
  std::string tmp;
  UniqueFd out;
  // Where files are replaced (replacing_), a named temporary is one system call cheaper: renamed
  // over the old file, where an O_TMPFILE file needs a link to a temporary name first. In an
  // append-only directory a named temporary could be neither renamed into place nor removed: an
  // O_TMPFILE file is linked in there whatever else would want a named one (--verify rereads it
  // through its descriptor; a file system outside local_fs_ whose close may fail is checked only
  // after the link), or the file fails with nothing made.
  const bool unnamed_first = !direct && !split && local_fs_ && !opt_.verify && !replacing_;
  const bool unnamed_only = !direct && !split && !unnamed_first && append_only_here(dst_dir);
  if ((unnamed_first || unnamed_only) && tmpfile_ != Tmpfile::No &&
      (tmpfile_ != Tmpfile::Unknown || probe_tmpfile(dst_dir))) {
    out.reset(::openat(dst_dir, ".", O_TMPFILE | (opt_.verify ? O_RDWR : O_WRONLY) | O_CLOEXEC, st.st_mode & 0777));
    if (!out && (errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL)) tmpfile_ = Tmpfile::No;
  }
  if (!out && unnamed_only)
    return fail(r, EPERM, "an append-only directory takes no rename, and this file system makes no unnamed file "
                          "(O_TMPFILE) to link in");
  // A new file is made with its final mode (umask is 0) unless a default ACL shapes it; with
  // --inplace a file that was there already keeps its own until set.
  bool fresh_mode = !default_acl_;
  // Written in place from its opening to the end of its metadata: the parent names it if this
  // worker dies meanwhile, or is killed while the run stops.
  struct InHand {
    std::atomic<uint64_t>* slot;
    ~InHand() {
      if (slot) slot->store(0, std::memory_order_relaxed);
    }
  } in_hand{opt_.inplace ? in_hand_ : nullptr};
  if (in_hand.slot) in_hand.slot->store(job.id, std::memory_order_relaxed);
  if (!out) {
    tmp = direct ? job.target() : next_temp_name();
    bool existed = false;
    bool private_until_set = split || made_private();
    struct stat as = split ? split_stat(st) : made_private() ? private_stat(st) : st;
    out.reset(direct ? in_place(dst_dir, tmp, as, existed, !split)  // split: End cuts it to size
                     : ::openat(dst_dir, tmp.c_str(), kCreate, as.st_mode & 0777));
    if (!out) return fail(r, errno);
    fresh_mode = fresh_mode && !existed && !private_until_set;
  }
  bool keep = false;
  struct Cleanup {
    int dir;
    const std::string& name;
    bool& keep;
    bool temp;
    ~Cleanup() {
      if (!keep && temp) ::unlinkat(dir, name.c_str(), 0);
    }
  } cleanup{dst_dir, tmp, keep, !opt_.inplace && !tmp.empty()};  // staged: no half file when revealed

  if (split) {
    if (int err = note_made(out.get(), r)) return fail(r, err);
    if (int err = out.close_checked()) return fail(r, err);
    keep = true;
    r.outcome = Outcome::Split;
    r.temp = tmp;
    r.src_dev = st.st_dev;
    r.src_ino = st.st_ino;
    return r;
  }
#ifdef PCOPY_TEST_HOOKS
  // Test builds only: stop half-way through a named file's data (first attempt), so that a test can
  // act while a worker holds a half-written file open.
  if (const char* name = std::getenv("PCOPY_TEST_STOP_MIDWAY_NAME"); name && job.name == name && job.attempt == 0) {
    loff_t a = 0, b = 0;
    (void)::copy_file_range(in.get(), &a, out.get(), &b, size_t(st.st_size) / 2, 0);
    ::raise(SIGSTOP);
  }
#endif
  FileCopy fc;
  fc.hasher = hasher ? &*hasher : nullptr;
  int err = copy_data(in.get(), out.get(), st, fc);
  // The run was abandoned meanwhile (Ctrl-C, --fail-fast): the copy is not put in place, its
  // temporary goes, as if not begun. Installed now, it could be in DST yet in no count nor the
  // manifest: the parent kills a worker that has not answered for a while.
  if (abandoned()) return given_up(r);
  r.bytes = fc.bytes;
  if (fc.generated) r.size = fc.bytes;
  if (err == -1) return fail(r, 0, kChanged);
  if (err && fc.clone_failed) return fail(r, err, "cannot clone it (--reflink=always): " + errno_text(err));
  if (err) return fail(r, err);
#ifdef PCOPY_TEST_HOOKS
  if (const char* name = std::getenv("PCOPY_TEST_CORRUPT_NAME"); name && job.name == name)
    (void)::pwrite(out.get(), "\x5a", 1, 0);
#endif
  if (hasher) r.hash = hasher->digest();
  if (opt_.verify) {
    Hasher check;
    UniqueFd reread(tmp.empty() ? ::fcntl(out.get(), F_DUPFD_CLOEXEC, 0)  // an O_TMPFILE file, open to read too
                                : ::openat(dst_dir, tmp.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
    // A mode that lets others read but not the owner (0044): the user reads the source as one of
    // the others, and owns the copy. Readable for the check; its mode is set again below.
    if (!reread && errno == EACCES && ::fchmod(out.get(), (st.st_mode & 0777) | 0400) == 0) {
      fresh_mode = false;
      reread.reset(::openat(dst_dir, tmp.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
    }
    if (!reread) return fail(r, errno);
    if ((err = hash_file(reread.get(), check))) return fail(r, err);
    if (check.digest() != *r.hash) return fail(r, 0, "verification failed: the written copy differs from the source");
  }
  if (abandoned()) return given_up(r);  // while it was verified
  if ((err = apply_metadata(out.get(), in.get(), st, fresh_mode))) return fail(r, err);
  auto unsafe = [&](int e) {
    if (opt_.inplace) make_stale(dst_dir, tmp);
    return fail(r, e);
  };
  if (opt_.fsync && (err = fsync_checked(job, out.get()))) return unsafe(err);
  if (!direct && !tmp.empty()) start_writeback(out.get());
  // Where close cannot fail, it can wait for the batch's one closing round, after the rename.
  if (!closes_ || !local_fs_) {
    if (!tmp.empty() && (err = out.close_checked())) return unsafe(err);
  }
  if (!direct) {
    err = tmp.empty() ? link_in(out.get(), dst_dir, job.target()) : install(dst_dir, tmp, job.target());
    if (err) return fail(r, err);
  }
  keep = true;
  if (closes_) {
    closes_->push_back(in.release());
    if (out) closes_->push_back(out.release());
  }
  return r;
}

// Renames the finished temporary over the final name. With --delete, a directory standing where
// SRC has a file is removed first, as the mirror would remove it anyway.
int Copier::install(int dst_dir, const std::string& tmp, const std::string& target) {
#ifdef PCOPY_TEST_HOOKS
  // Test builds only: die once with the temporary made, as a worker killed just then would (once:
  // the token file goes with the first death).
  const char* name = std::getenv("PCOPY_TEST_KILL_BEFORE_INSTALL_NAME");
  const char* token = std::getenv("PCOPY_TEST_KILL_BEFORE_INSTALL_TOKEN");
  if (name && token && target == name && ::unlink(token) == 0) ::raise(SIGKILL);
#endif
  if (::renameat(dst_dir, tmp.c_str(), dst_dir, target.c_str()) == 0) return 0;
  int err = errno;
  if (!opt_.delete_extraneous || (err != EISDIR && err != ENOTEMPTY && err != EEXIST)) return err;
  if (int rm = make_way(dst_dir, target, false)) return rm;
  return ::renameat(dst_dir, tmp.c_str(), dst_dir, target.c_str()) == 0 ? 0 : errno;
}

bool Copier::directory_in_the_way(int dst_dir, const std::string& target) const {
  struct stat there;
  return !opt_.delete_extraneous && !opt_.inplace && !staged_ &&
         ::fstatat(dst_dir, target.c_str(), &there, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(there.st_mode);
}

// open_in_place(), and with --delete a directory at `name` removed first, as install() removes
// one for a copy renamed into place.
int Copier::in_place(int dst_dir, const std::string& name, const struct stat& src, bool& existed, bool truncate) {
  // Only where needed; none in an append-only directory, where it could be neither renamed nor removed.
  const std::function<std::string()> temp = [this, dst_dir] {
    return append_only_here(dst_dir) ? std::string() : next_temp_name();
  };
  int fd = open_in_place(dst_dir, name.c_str(), src, existed, opt_.archive, temp, truncate);
  if (fd >= 0 || errno != EISDIR || !opt_.delete_extraneous) return fd;
  if (int err = make_way(dst_dir, name, false)) {
    errno = err;
    return -1;
  }
  return open_in_place(dst_dir, name.c_str(), src, existed, opt_.archive, temp, truncate);
}

// --delete: removes the directory `target` (or, in a dry run, lists what would go) so that a file
// can take its name, keeping what the filters exclude; each path removed goes to deleted_, for the
// parent to count and show. Returns 0 or the first errno.
int Copier::make_way(int dst_dir, const std::string& target, bool dry_run) {
  MirrorCallbacks record;
  record.deleted = [&](const std::string& path) { deleted_.push_back(path); };
  record.failed = [](const std::string&, int) {};
  return remove_tree(dst_dir, target, rel_of(target), dry_run, record, opt_.filters, opt_.one_file_system);
}

// Where `name` in the directory entered is in the tree.
std::string Copier::rel_of(const std::string& name) const { return dir_rel_.empty() ? name : dir_rel_ + "/" + name; }

// Gives the O_TMPFILE file open as `fd` the name `name`.
int Copier::link_fd(int fd, int dir, const std::string& name) {
  if (tmpfile_ == Tmpfile::EmptyPath)
    return ::linkat(fd, "", dir, name.c_str(), AT_EMPTY_PATH) == 0 ? 0 : errno;
  char proc[64];
  std::snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
  return ::linkat(AT_FDCWD, proc, dir, name.c_str(), AT_SYMLINK_FOLLOW) == 0 ? 0 : errno;
}

// Before a copy is renamed over a file (without --fsync): its data is sent to the disk now, not
// up to 30 s later. XFS writes a rename to its log before data written back later: after a power
// cut the old copy had been replaced by an empty file, where ext4 and btrfs start this
// writeback themselves when a rename replaces a file, and cp's rewrite in place gets it from XFS.
// Not waited for, as they do not wait either; --fsync is what waits.
void Copier::start_writeback(int fd) const {
  if (!opt_.fsync && local_fs_ && !in_memory_) ::sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE);
}

// Makes the finished O_TMPFILE file appear as `target`. linkat never replaces: when something is
// there already, the file is linked under a temporary name and renamed over it.
int Copier::link_in(int fd, int dst_dir, const std::string& target) {
  int err = link_fd(fd, dst_dir, target);
  if (err != EEXIST) return err;
  // An append-only directory (chattr +a) takes no rename: the file there stays as it is, and no
  // temporary is linked in that nothing could remove.
  if (append_only_here(dst_dir)) return EPERM;
  // A directory whose files are there already (a run without -u over an earlier copy): the rest
  // of its files go to named temporaries at once (copy_opened), not after a link fails too.
  replacing_ = true;
  std::string tmp = next_temp_name();
  if ((err = link_fd(fd, dst_dir, tmp))) return err;
  start_writeback(fd);
  if ((err = install(dst_dir, tmp, target))) ::unlinkat(dst_dir, tmp.c_str(), 0);
  return err;
}

// Finds out, with an empty O_TMPFILE file, whether and how this worker can link one in.
bool Copier::probe_tmpfile(int dst_dir) {
  tmpfile_ = Tmpfile::No;
  // Where the probe's name could not be removed again (an append-only DST, chattr +a, as backups
  // are kept from being rewritten), the way that needs no privilege is taken on trust.
  if (append_only_here(dst_dir)) {
    if (::access("/proc/self/fd", F_OK) == 0) tmpfile_ = Tmpfile::Proc;
    return tmpfile_ != Tmpfile::No;
  }
  UniqueFd fd(::openat(dst_dir, ".", O_TMPFILE | O_WRONLY | O_CLOEXEC, 0600));
  if (!fd) {
    // Refused here (an immutable directory, one the user may not write, a full disk): that says
    // nothing of the file system, whose next directory is asked again.
    if (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL) tmpfile_ = Tmpfile::Unknown;
    return false;
  }
  std::string name = next_temp_name();
  for (Tmpfile how : {Tmpfile::EmptyPath, Tmpfile::Proc}) {
    tmpfile_ = how;
    if (link_fd(fd.get(), dst_dir, name) == 0) {
      ::unlinkat(dst_dir, name.c_str(), 0);
      return true;
    }
  }
  // A full disk or quota refused the link: asked again in the next directory, as above.
  tmpfile_ = errno == ENOSPC || errno == EDQUOT ? Tmpfile::Unknown : Tmpfile::No;
  return false;
}

// What a file to split is made with (its mode) until its End sets its metadata: its owner's
// alone, and writable for its chunks' workers. With --inplace it is where it belongs from the start,
// as an unsplit copy is: with the source's mode (and its owner's write bit) unless made_private(),
// so that a copy that fails keeps the mode it had, less what the source's keeps out, not 0600.
struct stat Copier::split_stat(const struct stat& st) const {
  if (!opt_.inplace || made_private()) return private_stat(st);
  struct stat as = st;
  as.st_mode |= S_IWUSR;
  return as;
}

}  // namespace pcopy
