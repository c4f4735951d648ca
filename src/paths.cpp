// Reaching names beneath a root: directories opened without following links and at any depth, listed,
// and opened up where their mode keeps their owner out (or found append-only); a source file opened.
#include "pcopy/paths.hpp"

#include <fcntl.h>
#include <linux/fs.h>
#include <linux/openat2.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>

#include "pcopy/copier_internal.hpp"

namespace pcopy {

namespace {

// Resolves up to PATH_MAX-1 bytes of `rel` in one openat2 call.
int open_segment(int dir, const std::string& seg, bool follow) {
  struct open_how how {};
  how.flags = O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOCTTY;
  how.resolve = follow ? 0 : RESOLVE_NO_SYMLINKS;
  // Kernels before 5.6 (ENOSYS), and containers whose seccomp profile predates the call (EPERM,
  // which openat2 itself never gives for a directory): one component at a time, as safe.
  static bool have_openat2 = true;
  if (have_openat2) {
    long fd = ::syscall(SYS_openat2, dir, seg.c_str(), &how, sizeof how);
    if (fd >= 0 || (errno != ENOSYS && errno != EPERM)) return fd < 0 ? -errno : static_cast<int>(fd);
    have_openat2 = false;
  }
  int cur = ::fcntl(dir, F_DUPFD_CLOEXEC, 0);
  size_t pos = 0;
  while (cur >= 0 && pos < seg.size()) {
    size_t slash = seg.find('/', pos);
    std::string comp = seg.substr(pos, slash - pos);
    pos = slash == std::string::npos ? seg.size() : slash + 1;
    if (comp.empty()) continue;
    int next = ::openat(cur, comp.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC | (follow ? 0 : O_NOFOLLOW));
    int err = errno;
    ::close(cur);
    if (next < 0) return -err;
    cur = next;
  }
  return cur < 0 ? -errno : cur;
}

}  // namespace

int rename_noreplace(int dir, const char* from, const char* to) {
  if (::renameat2(dir, from, dir, to, RENAME_NOREPLACE) == 0) return 0;
  if (errno != EINVAL && errno != ENOSYS && errno != EPERM) return errno;
  struct stat st;
  if (::fstatat(dir, to, &st, AT_SYMLINK_NOFOLLOW) == 0) return EEXIST;
  if (::renameat(dir, from, dir, to) == 0) return 0;
  // Taken between the look and the rename (another writer): as NOREPLACE would say. (An empty
  // directory made in between is replaced: only the atomic call can tell.)
  int err = errno;
  return err == ENOTEMPTY || err == EEXIST || err == ENOTDIR || err == EISDIR ? EEXIST : err;
}

int open_source(int dir, const std::string& name, bool follow) {
  int flags = source_flags(follow) | O_NONBLOCK;
  int fd = ::openat(dir, name.c_str(), flags | O_NOATIME);
  if (fd < 0 && errno == EPERM) fd = ::openat(dir, name.c_str(), flags);  // O_NOATIME needs ownership
  if (fd < 0 && errno == EWOULDBLOCK) fd = ::openat(dir, name.c_str(), flags & ~O_NONBLOCK);
  return fd;
}

void for_each_entry(int dir, const std::function<void(const char* name, unsigned char type)>& fn) {
  struct Dirent64 {  // getdents64's record; the name runs to d_reclen, NUL-terminated
    ino64_t d_ino;
    off64_t d_off;
    unsigned short d_reclen;
    unsigned char d_type;
    char d_name[1];
  };
  std::string buf(32 * 1024, '\0');
  ::lseek(dir, 0, SEEK_SET);
  for (;;) {
    long n = ::syscall(SYS_getdents64, dir, buf.data(), buf.size());
    if (n <= 0) break;
    for (long pos = 0; pos < n;) {
      auto* d = reinterpret_cast<Dirent64*>(buf.data() + pos);
      pos += d->d_reclen;
      fn(d->d_name, d->d_type);
    }
  }
  ::lseek(dir, 0, SEEK_SET);
}

bool needs_opening_up(int dir, const char* name, struct stat& st) {
  static const uid_t euid = ::geteuid();
  return euid != 0 && ::fstatat(dir, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode) &&
         st.st_uid == euid && (st.st_mode & S_IRWXU) != S_IRWXU;
}

mode_t open_up_at(int dir, const char* name) {
  struct stat st;
  if (!needs_opening_up(dir, name, st)) return 0;
  return ::fchmodat(dir, name, (st.st_mode & 07777) | S_IRWXU, AT_SYMLINK_NOFOLLOW) == 0 ? st.st_mode : 0;
}

bool append_only(int fd) {
  int flags = 0;
  return ::ioctl(fd, FS_IOC_GETFLAGS, &flags) == 0 && (flags & FS_APPEND_FL);
}

void open_up_fd(int dir) {
  struct stat st;
  if (::fstat(dir, &st) == 0 && (st.st_mode & S_IRWXU) != S_IRWXU) ::fchmod(dir, (st.st_mode & 07777) | S_IRWXU);
}

int open_dir_beneath(int root, std::string_view rel, bool follow) {
  if (rel.empty()) {
    // A new open file description, not a dup: directory offsets must not be shared. A single
    // file's directory that may be entered but not listed is opened O_PATH (Target).
    int fd = ::openat(root, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 && errno == EACCES) fd = ::openat(root, ".", O_PATH | O_DIRECTORY | O_CLOEXEC);
    return fd < 0 ? -errno : fd;
  }
  // Only ever downwards: no absolute paths, no "..".
  if (rel.front() == '/') return -EXDEV;
  for (size_t pos = 0; pos <= rel.size();) {
    size_t slash = std::min(rel.find('/', pos), rel.size());
    if (rel.substr(pos, slash - pos) == "..") return -EXDEV;
    pos = slash + 1;
  }
  constexpr size_t kMax = PATH_MAX - 1;
  int cur = root;
  bool owned = false;
  while (!rel.empty()) {
    size_t cut = rel.size();
    if (cut > kMax) {
      cut = rel.rfind('/', kMax);
      if (cut == std::string_view::npos || cut == 0) {
        if (owned) ::close(cur);
        return -ENAMETOOLONG;
      }
    }
    int next = open_segment(cur, std::string(rel.substr(0, cut)), follow);
    if (owned) ::close(cur);
    if (next < 0) return next;
    cur = next;
    owned = true;
    rel.remove_prefix(std::min(rel.size(), cut + 1));
  }
  return cur;
}

}  // namespace pcopy
