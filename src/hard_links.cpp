// The further names of a hard-link group, linked to the copy of its first name, one by one or in
// batches.
#include "pcopy/copier.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>

#include "pcopy/copier_internal.hpp"
#include "pcopy/hash.hpp"
#include "pcopy/paths.hpp"

namespace pcopy {

// The directory `dir` beneath `dst_root`, kept open for the next links into it (link_dirs_); a
// negative errno when it cannot be opened.
int Copier::link_target_dir(int dst_root, std::string_view dir) {
  constexpr size_t kLinkDirs = 8;
  auto it = std::find_if(link_dirs_.begin(), link_dirs_.end(),
                         [&](const LinkDir& d) { return d.root == dst_root && d.path == dir; });
  if (it == link_dirs_.end()) {
    int fd = open_dir_beneath(dst_root, dir, false);
    if (fd < 0) return fd;
    if (link_dirs_.size() < kLinkDirs) {
      it = link_dirs_.emplace(link_dirs_.end());
    } else {
      it = std::min_element(link_dirs_.begin(), link_dirs_.end(),
                            [](const LinkDir& a, const LinkDir& b) { return a.used < b.used; });
    }
    *it = LinkDir{dst_root, std::string(dir), UniqueFd(fd)};
  }
  it->used = ++link_dir_uses_;
  return it->fd.get();
}

// The directory of a hard link's target (a path from DST's root), opened by link_target_dir(), and
// the target's name in it; a negative errno for a directory that cannot be opened.
int Copier::open_link_target(int dst_root, std::string_view target, std::string& name) {
  size_t slash = target.rfind('/');
  std::string_view dir = slash == std::string_view::npos ? std::string_view() : target.substr(0, slash);
  name = slash == std::string_view::npos ? target : target.substr(slash + 1);
  return link_target_dir(dst_root, dir);
}

// 0 when `dst` (the stat of `job`'s name in DST, st_ino 0 if none) is already the copy of the
// group's first name (job.link_target, from DST's root); -1 when not, or an errno when that name's
// directory cannot be opened. Leaves that directory (link_target_dir()'s) and name in `tdir` and
// `tname` if given.
int Copier::linked_already(int dst_root, const Job& job, const struct stat& dst, int* tdir, std::string* tname) {
  std::string name;
  int fd = open_link_target(dst_root, job.link_target, name);
  if (fd < 0) return -fd;
  struct stat first;
  bool same = dst.st_ino != 0 && ::fstatat(fd, name.c_str(), &first, AT_SYMLINK_NOFOLLOW) == 0 &&
              first.st_dev == dst.st_dev && first.st_ino == dst.st_ino;
  if (tdir) *tdir = fd;
  if (tname) *tname = std::move(name);
  return same ? 0 : -1;
}

Result Copier::copy_hard_link(int dst_dir, int dst_root, const Job& job, Result r) {
  struct stat b;
  int tdir = -1;
  std::string tname;
  if (::fstatat(dst_dir, job.target().c_str(), &b, AT_SYMLINK_NOFOLLOW) != 0) b.st_ino = 0;
  int linked = linked_already(dst_root, job, b, &tdir, &tname);
  if (linked > 0) return fail(r, linked);
  if (linked == 0) return hashed(dst_dir, job, r);  // already the same file (linked by a worker that died, say)
  // Another run into DST may be writing the same group. It may rename its copy over the first
  // name between this lookup and the link: ENOENT, for the kernel links no inode whose last link
  // is gone; or after the link, and this name then holds the file that copy replaced. Either way
  // the first name, looked up again, is that run's copy of the same file, and is linked again.
  // Where nothing has the name, the link goes straight to it (a link appears whole, as a rename
  // does): two system calls fewer than a temporary renamed into place.
  bool direct = b.st_ino == 0;
  for (int tries = 1;; ++tries) {
    // An append-only directory takes no rename: the name there stays as it is, and no temporary
    // is linked in that nothing could remove.
    if (!direct && append_only_here(dst_dir)) return fail(r, EPERM);
    std::string to = direct ? job.target() : next_temp_name();  // the name, or a temporary
    if (::linkat(tdir, tname.c_str(), dst_dir, to.c_str(), 0) != 0) {
      if (direct && errno == EEXIST) {  // made meanwhile (by another run): replaced by a rename, as any name is
        direct = false;
        --tries;
        continue;
      }
      if (errno == ENOENT && tries < 3) continue;
      return fail(r, errno);
    }
    if (!direct) {
      if (int err = install(dst_dir, to, job.target())) {
        ::unlinkat(dst_dir, to.c_str(), 0);
        return fail(r, err);
      }
      // Where the other run had linked the name to the same file, the rename did nothing (a
      // rename between two names of one file succeeds and leaves both): the temporary goes.
      ::unlinkat(dst_dir, to.c_str(), 0);
    }
    direct = false;  // linked again, if need be, over what it names now
    struct stat first, now;
    if (tries == 3 || ::fstatat(tdir, tname.c_str(), &first, AT_SYMLINK_NOFOLLOW) != 0 ||
        ::fstatat(dst_dir, job.target().c_str(), &now, AT_SYMLINK_NOFOLLOW) != 0 ||
        (first.st_dev == now.st_dev && first.st_ino == now.st_ino))
      break;
  }
#ifdef PCOPY_TEST_HOOKS
  // Test builds only: die once with the name linked, before answering (the token file goes with the
  // first death), as a worker killed just then would.
  const char* name = std::getenv("PCOPY_TEST_KILL_AFTER_LINK_NAME");
  const char* token = std::getenv("PCOPY_TEST_KILL_AFTER_LINK_TOKEN");
  if (name && token && job.target() == name && ::unlink(token) == 0) ::raise(SIGKILL);
#endif
  return hashed(dst_dir, job, r);
}

// With want_hash, the manifest's line for a name linked to its group's copy: the file it names.
Result Copier::hashed(int dst_dir, const Job& job, Result r) {
  if (!job.want_hash) return r;
  UniqueFd fd(::openat(dst_dir, job.target().c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY | O_NONBLOCK));
  struct stat st;
  Hasher h;
  if (fd && ::fstat(fd.get(), &st) == 0 && S_ISREG(st.st_mode) && hash_file(fd.get(), h) == 0) {
    r.hash = h.digest();
    r.size = uint64_t(st.st_size);
    // The source's time, as in every line: the copy's is cut to what DST keeps (whole seconds).
    r.mtime_ns = job.known ? job.mtime_ns : to_ns(st.st_mtim);
  }
  return r;
}

namespace {
// Test builds only: with PCOPY_TEST_REPLACE_LINK_TARGET set, another run into DST renames its own
// copy over the first hard-link group's first name (`name` in `dir`), once, between the links to it
// and their check (see link_batch).
void test_hook_replace_link_target([[maybe_unused]] int dir, [[maybe_unused]] const std::string& name) {
#ifdef PCOPY_TEST_HOOKS
  static bool replaced = false;
  if (replaced || !std::getenv("PCOPY_TEST_REPLACE_LINK_TARGET")) return;
  replaced = true;
  UniqueFd from(::openat(dir, name.c_str(), O_RDONLY | O_CLOEXEC));
  UniqueFd to(::openat(dir, ".other-run-copy", kCreate, 0644));
  char buf[4096];
  for (ssize_t n; from && to && (n = ::read(from.get(), buf, sizeof buf)) > 0;) (void)write_all(to.get(), buf, size_t(n));
  ::renameat(dir, ".other-run-copy", dir, name.c_str());
#endif
}
}  // namespace

// With -u too: a name linked in one call had nothing at it to compare, and one that had (EEXIST)
// takes copy()'s way, which compares. Not with --ignore-existing, which keeps whatever has a name:
// one a dead worker linked, or one linked to a group's copy another run replaced meanwhile, which
// link_batch links again, would be kept as it is.
bool Copier::linkable(const Job& job) const {
  return job.kind == JobKind::HardLink && !opt_.dry_run && !opt_.ignore_existing && !job.want_hash;
}

// Each name is linked straight to its group's copy, which is looked up before the first link to it
// and again after the last of a run of links to it: the same file both times, every link between
// went to it. (A group's copy renamed away and back meanwhile would have kept its links, and no
// other file takes its inode number while they hold it.) A name that was there already, a copy
// that another run into DST replaced meanwhile, and every failure take copy_hard_link's way: it
// looks before it links, and checks after each link.
void Copier::link_batch(int src_dir, int dst_dir, int dst_root, std::span<const Job> jobs, const ProgressFn& report,
                        std::vector<Result>& results) {
  results.clear();
  open_up(dst_dir);
  bool stop = false;  // a failure that ends the batch (ends_batch): the rest go back untried
  auto careful = [&](size_t i) {
    results[i] = copy(src_dir, dst_dir, dst_root, jobs[i], report);
    stop = stop || ends_batch(results[i], opt_);
  };
  std::string_view target;  // the copy linked to, and the names linked to it so far
  int tdir = -1;
  std::string tname;
  struct stat before;
  std::vector<size_t> linked;
  auto check = [&] {
    if (!linked.empty()) test_hook_replace_link_target(tdir, tname);
    struct stat after;
    if (!linked.empty() && (::fstatat(tdir, tname.c_str(), &after, AT_SYMLINK_NOFOLLOW) != 0 ||
                            after.st_dev != before.st_dev || after.st_ino != before.st_ino)) {
      for (size_t i : linked) careful(i);
    }
    linked.clear();
    tdir = -1;
  };
  for (size_t i = 0; i < jobs.size(); ++i) {
    const Job& job = jobs[i];
    results.push_back(result_for(job));
    if (!stop && (tdir < 0 || job.link_target != target)) check();
    if (stop) {
      results[i].outcome = Outcome::Deferred;
      continue;
    }
    if (tdir < 0 || job.link_target != target) {
      target = job.link_target;
      tdir = open_link_target(dst_root, target, tname);
      if (tdir < 0 || ::fstatat(tdir, tname.c_str(), &before, AT_SYMLINK_NOFOLLOW) != 0) {
        tdir = -1;
        careful(i);
        continue;
      }
    }
    if (::linkat(tdir, tname.c_str(), dst_dir, job.target().c_str(), 0) == 0) {
      linked.push_back(i);
    } else {
      careful(i);  // opens no other directory than tdir: the same target
    }
  }
  check();
}

}  // namespace pcopy
