// -u: whether a copy is up to date, its times compared as far as its file system keeps them.
#include "pcopy/up_to_date.hpp"

#include <fcntl.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <optional>

#include "pcopy/copier.hpp"
#include "pcopy/copier_internal.hpp"
#include "pcopy/hash.hpp"
#include "pcopy/metadata.hpp"
#include "pcopy/xattrs.hpp"

namespace pcopy {

namespace {
constexpr int64_t kNsPerSecond = 1'000'000'000;
}  // namespace

// The resolution of a copy's times is read off them (see same_mtime in up_to_date.hpp): their nanoseconds
// are all round only where the file system keeps no more. Only 10 ms and coarser is believed: a
// ctime (which the kernel sets) is a multiple of 10 ms on a file system that keeps nanoseconds once
// in ten million, but a multiple of 100 ns once in a hundred, and a source's own times may be round.
bool same_mtime(const struct stat& dst, Nanos src_ns, bool fat) {
  Nanos dst_ns = to_ns(dst.st_mtim);
  if (dst_ns == src_ns) return true;
  const struct timespec* times[] = {&dst.st_atim, &dst.st_mtim, &dst.st_ctim};
  auto all = [&](auto&& round) { return std::all_of(std::begin(times), std::end(times), round); };
  int64_t resolution = 1;
  while (resolution < kNsPerSecond && all([&](const timespec* t) { return t->tv_nsec % (resolution * 10) == 0; }))
    resolution *= 10;
  if (fat && resolution == kNsPerSecond && all([](const timespec* t) { return t->tv_sec % 2 == 0; })) resolution *= 2;
  if (resolution < kNsPerSecond / 100) return false;
  Nanos cut = src_ns - ((src_ns % resolution) + resolution) % resolution;  // rounded down, also before 1970
  return cut == dst_ns;
}

namespace {
// The whole seconds of a time, rounded down (also before 1970).
Nanos seconds_of(Nanos ns) { return ns / kNsPerSecond - (ns % kNsPerSecond < 0 ? 1 : 0); }
}  // namespace

bool at_range_end(const struct stat& dst, Nanos src_ns) {
  if (dst.st_mtim.tv_nsec != 0) return false;
  Nanos src_s = seconds_of(src_ns);
  for (int64_t end : {int64_t(INT32_MAX), int64_t(15'032'385'535), int64_t(16'299'260'415)})
    if (dst.st_mtim.tv_sec == end && src_s > end) return true;
  return dst.st_mtim.tv_sec == INT32_MIN && src_s < INT32_MIN;
}

namespace {
// Whether the file system of `dir` cuts the time `src_ns` to `end` (seconds): asked of a file
// made for the question (O_TMPFILE, never named), once per file system and end in this process.
// False where it cannot be asked: the copy is then taken to differ, and is copied again.
bool cuts_time_to(int dir, Nanos src_ns, int64_t end) {
  static std::map<std::pair<dev_t, int64_t>, bool> known;
  struct stat dir_st;
  if (::fstat(dir, &dir_st) != 0) return false;
  auto [it, fresh] = known.try_emplace({dir_st.st_dev, end}, false);
  if (!fresh) return it->second;
  UniqueFd probe(::openat(dir, ".", O_TMPFILE | O_WRONLY | O_CLOEXEC, 0600));
  struct timespec t = {time_t(seconds_of(src_ns)), 0};
  struct timespec times[2] = {t, t};
  struct stat got;
  it->second = probe && ::futimens(probe.get(), times) == 0 && ::fstat(probe.get(), &got) == 0 && got.st_mtim.tv_sec == end;
  return it->second;
}
}  // namespace

bool same_mtime_in(int dir, const struct stat& dst, Nanos src_ns) {
  if (to_ns(dst.st_mtim) == src_ns) return true;
  // A time beyond what DST's file system holds was cut to the end of its range when the copy was
  // made (the kernel says nothing, as for cp): the copy has that end. Only where DST's file system
  // does cut that time: elsewhere a copy made at that very second is another time.
  if (at_range_end(dst, src_ns)) return cuts_time_to(dir, src_ns, dst.st_mtim.tv_sec);
  struct statfs fs;
  return same_mtime(dst, src_ns, ::fstatfs(dir, &fs) == 0 && fs.f_type == MSDOS_SUPER_MAGIC);
}

// -u: whether `job`'s data needs no copying to `dst`; `src` is left with the source's stat (the
// walk's, when it came with the job).
bool Copier::up_to_date(int src_dir, int dst_dir, const Job& given, const struct stat& dst, struct stat& src) {
  if (given.kind == JobKind::HardLink) return false;  // cheap to redo, and the group must be right
  Job job = given;
  if (job.known) {  // with Meta whenever refresh_metadata may follow
    src = job.known_stat();
  } else {
    if (::fstatat(src_dir, job.name.c_str(), &src, opt_.dereference ? 0 : AT_SYMLINK_NOFOLLOW) != 0) return false;
    job.size = uint64_t(src.st_size);
    job.mtime_ns = to_ns(src.st_mtim);
  }
  switch (job.kind) {
    case JobKind::File:
      if (!S_ISREG(dst.st_mode) || uint64_t(dst.st_size) != job.size) return false;
      if (!opt_.checksum) return same_mtime_in(dst_dir, dst, job.mtime_ns);
      break;
    case JobKind::Symlink: {
      if (!S_ISLNK(dst.st_mode)) return false;
      std::string a(PATH_MAX, '\0'), b(PATH_MAX, '\0');
      ssize_t n = ::readlinkat(src_dir, job.name.c_str(), a.data(), a.size());
      ssize_t m = ::readlinkat(dst_dir, job.target().c_str(), b.data(), b.size());
      return n >= 0 && n == m && std::memcmp(a.data(), b.data(), size_t(n)) == 0;
    }
    case JobKind::FileBegin:
      if (!S_ISREG(dst.st_mode) || uint64_t(dst.st_size) != job.size) return false;
      if (!opt_.checksum) return same_mtime_in(dst_dir, dst, job.mtime_ns);
      break;
    default: {  // a FIFO or device: of the same type and device number, not any special file
      struct stat s;
      if (::fstatat(src_dir, job.name.c_str(), &s, opt_.dereference ? 0 : AT_SYMLINK_NOFOLLOW) != 0) return false;
      return (dst.st_mode & S_IFMT) == (s.st_mode & S_IFMT) && dst.st_rdev == s.st_rdev && same_mtime_in(dst_dir, dst, job.mtime_ns);
    }
  }
  // --checksum: same size, compare contents.
  std::optional<Hash128> hashes[2];
  int dirs[2] = {src_dir, dst_dir};
  for (int i = 0; i < 2; ++i) {
    UniqueFd fd(open_source(dirs[i], i == 0 ? job.name : job.target(), i == 0 && opt_.dereference));
    if (!fd) return false;
    Hasher h;
    if (hash_file(fd.get(), h) != 0) return false;
    hashes[i] = h.digest();
  }
  return hashes[0] == hashes[1];
}

// -u: whether the up-to-date copy `dst` shares its inode with more names than SRC's file has (a
// hard link SRC no longer has, a snapshot's name linked to it), or with -a than the walk found of
// the group's names on it (Job::names_in_copy: a name SRC broke out of the group while it gave the
// file another, QQQ), while its metadata is to change
// (its mode, its owner where it can be set, its time under --checksum, with -a its attributes and
// ACL): written through the inode, that would change every name's (a file made private in SRC
// would stay readable by all under its old partner's name, or a snapshot's copy become private).
// It is copied anew instead, as cp -a copies it; the group's other names are linked to the new
// copy (-a), and the old inode keeps the names SRC no longer gives it. Not with --inplace, which
// rewrites the file where it is (its other names see the new data), unless it is on SRC's file
// system, where one of them may be a file of SRC (see open_in_place), or with -a, whose copies
// have SRC's links: there it replaces a linked file it rewrites, and a name SRC broke off kept the
// other's metadata, each run writing both in turn through the one inode.
bool Copier::shared_and_differs(int src_dir, int dst_dir, const Job& job, const struct stat& dst) {
  if (!S_ISREG(dst.st_mode) || dst.st_nlink < 2) return false;
  // Looked at anew: the walk's stat, when it came with the job, has no link count (nor, in a dry
  // run, a mode or owner).
  struct stat src;
  if (::fstatat(src_dir, job.name.c_str(), &src, opt_.dereference ? 0 : AT_SYMLINK_NOFOLLOW) != 0 ||
      (opt_.inplace && !opt_.archive && dst.st_dev != src.st_dev) ||
      dst.st_nlink <= (job.names_in_copy ? job.names_in_copy : src.st_nlink))
    return false;
  bool same_owner = src.st_uid == dst.st_uid && src.st_gid == dst.st_gid;
  if (opt_.archive && !same_owner && privileged_) return true;  // only root gives a file to another
  bool owner_kept = same_owner;  // the copy's owner, as it is (see refresh_metadata)
  return (dst.st_mode & 07777) != mode_for_copy(src.st_mode, owner_kept) ||
         !same_mtime_in(dst_dir, dst, to_ns(src.st_mtim)) ||
         (opt_.archive && !same_xattrs_at(src_dir, job.name, opt_.dereference, dst_dir, job.target(), privileged_));
}

}  // namespace pcopy
