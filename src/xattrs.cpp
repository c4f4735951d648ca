#include "pcopy/xattrs.hpp"

#include <fcntl.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "pcopy/protocol.hpp"

namespace pcopy {
namespace {

// The *xattr calls a copy needs, bound either to fds or to paths under /proc/self/fd.
struct XattrOps {
  ssize_t (*list)(const void* self, char* buf, size_t size);
  ssize_t (*get)(const void* self, const char* name, void* buf, size_t size);
  int (*set)(const void* self, const char* name, const void* buf, size_t size);
  int (*remove)(const void* self, const char* name);
  const void* self;
};

XattrOps fd_ops(const int* fd) {
  return {[](const void* s, char* b, size_t n) { return ::flistxattr(*static_cast<const int*>(s), b, n); },
          [](const void* s, const char* k, void* b, size_t n) {
            return ::fgetxattr(*static_cast<const int*>(s), k, b, n);
          },
          [](const void* s, const char* k, const void* b, size_t n) {
            return ::fsetxattr(*static_cast<const int*>(s), k, b, n, 0);
          },
          [](const void* s, const char* k) { return ::fremovexattr(*static_cast<const int*>(s), k); }, fd};
}

// An entry named by directory and name: the kernel's *xattrat calls (Linux 6.13), else its path
// under /proc/self/fd (no fd can be opened on a link or a device without side effects). `follow`:
// a symbolic link's target (-L), else the link itself.
struct AtEntry {
  int dir;
  const char* name;
  bool follow;
  std::string proc;  // made on the first fallback
};

// The same numbers on every architecture.
constexpr long kSysSetxattrat = 463, kSysGetxattrat = 464, kSysListxattrat = 465, kSysRemovexattrat = 466;
struct XattrArgs {  // struct xattr_args
  uint64_t value;
  uint32_t size;
  uint32_t flags;
};

// Whether the kernel has the *xattrat calls, asked once: not before Linux 6.13, nor under a
// seccomp filter that predates them (EPERM). Else /proc paths.
bool have_at_calls() {
#ifdef PCOPY_TEST_HOOKS
  if (std::getenv("PCOPY_TEST_NO_XATTRAT")) return false;  // to test the older kernels' way
#endif
  static const bool have = ::syscall(kSysListxattrat, AT_FDCWD, "/", 0, nullptr, 0) >= 0;
  return have;
}

// Calls `at()`, or `by_path` with `e`'s path under /proc/self/fd. Without /proc (a chroot) that
// fails ENOENT, taken for a file system without attributes: ENOTSUP.
template <typename At, typename ByPath>
ssize_t at_or_proc(AtEntry& e, At&& at, ByPath&& by_path) {
  if (have_at_calls()) return at();
  if (e.proc.empty()) e.proc = "/proc/self/fd/" + std::to_string(e.dir) + "/" + e.name;
  ssize_t r = by_path(e.proc.c_str());
  if (r < 0 && errno == ENOENT && ::access("/proc/self/fd", F_OK) != 0) errno = ENOTSUP;
  return r;
}

AtEntry& entry_of(const void* self) { return *static_cast<AtEntry*>(const_cast<void*>(self)); }
unsigned at_flags(const AtEntry& e) { return e.follow ? 0 : AT_SYMLINK_NOFOLLOW; }

XattrOps at_ops(AtEntry* entry) {
  return {[](const void* self, char* b, size_t n) -> ssize_t {
            AtEntry& e = entry_of(self);
            return at_or_proc(
                e, [&] { return ::syscall(kSysListxattrat, e.dir, e.name, at_flags(e), b, n); },
                [&](const char* path) { return e.follow ? ::listxattr(path, b, n) : ::llistxattr(path, b, n); });
          },
          [](const void* self, const char* k, void* b, size_t n) -> ssize_t {
            AtEntry& e = entry_of(self);
            XattrArgs args{reinterpret_cast<uintptr_t>(b), uint32_t(std::min<size_t>(n, UINT32_MAX)), 0};
            return at_or_proc(
                e, [&] { return ::syscall(kSysGetxattrat, e.dir, e.name, at_flags(e), k, &args, sizeof args); },
                [&](const char* path) { return e.follow ? ::getxattr(path, k, b, n) : ::lgetxattr(path, k, b, n); });
          },
          [](const void* self, const char* k, const void* b, size_t n) -> int {
            AtEntry& e = entry_of(self);
            XattrArgs args{reinterpret_cast<uintptr_t>(b), uint32_t(n), 0};
            return int(at_or_proc(
                e, [&] { return ::syscall(kSysSetxattrat, e.dir, e.name, at_flags(e), k, &args, sizeof args); },
                [&](const char* path) {
                  return ssize_t(e.follow ? ::setxattr(path, k, b, n, 0) : ::lsetxattr(path, k, b, n, 0));
                }));
          },
          [](const void* self, const char* k) -> int {
            AtEntry& e = entry_of(self);
            return int(at_or_proc(
                e, [&] { return ::syscall(kSysRemovexattrat, e.dir, e.name, at_flags(e), k); },
                [&](const char* path) { return ssize_t(e.follow ? ::removexattr(path, k) : ::lremovexattr(path, k)); }));
          },
          entry};
}

// Reads into `buf`: one call when it fits in 256 bytes (most lists and values; an empty list is
// the common case), else the size is asked for, as often as attributes change between calls.
template <typename Fn>
int read_grow(std::string& buf, Fn&& fn) {
  buf.resize(256);
  for (;;) {
    ssize_t n = fn(buf.data(), buf.size());
    if (n >= 0) {
      buf.resize(size_t(n));
      return 0;
    }
    if (errno != ERANGE) return errno;
    if ((n = fn(nullptr, 0)) < 0) return errno;
    buf.resize(size_t(n) + 1);
  }
}

// Attributes that are not copied, read or removed, as cp -a leaves them (/etc/xattr.conf): XFS
// shows its ACLs and capabilities a second time as trusted.SGI_* (writing or pruning those would
// change the ACL behind system.posix_acl_*'s back), and security.evm only the kernel writes.
bool skipped(std::string_view name) {
  return name.starts_with("trusted.SGI_") || name.starts_with("xfsroot.") || name.starts_with("trusted.overlay.") ||
         name == "security.evm";
}

bool ignorable(int err, bool privileged) {
  return err == ENOTSUP || err == ENODATA || (!privileged && (err == EPERM || err == EACCES));
}

using Attrs = std::map<std::string, std::string>;

bool is_acl(std::string_view name) { return name.starts_with("system.posix_acl_"); }

// A user.* attribute the file's mode keeps even its owner from writing (or reading): EACCES, where
// the other namespaces refuse an ordinary user EPERM (trusted.*) and links refuse user.* EPERM.
bool kept_by_mode(std::string_view name, int err) { return err == EACCES && name.starts_with("user."); }

// Every attribute `ops` may read; one that vanished meanwhile or may not be read is left out, and
// with `unreadable` a user.* one the mode keeps from being read is named there.
int read_all(const XattrOps& ops, bool privileged, Attrs& attrs, std::vector<std::string>* unreadable = nullptr) {
  std::string names, value;
  int err = read_grow(names, [&](char* b, size_t n) { return ops.list(ops.self, b, n); });
  if (err) return ignorable(err, privileged) ? 0 : err;  // none, or none the caller may list
  for (size_t pos = 0; pos < names.size();) {
    std::string name(names.c_str() + pos);
    pos += name.size() + 1;
    if (name.empty() || skipped(name)) continue;
    err = read_grow(value, [&](char* b, size_t n) { return ops.get(ops.self, name.c_str(), b, n); });
    if (err && !ignorable(err, privileged)) return err;
    if (!err) attrs.emplace(std::move(name), value);
    else if (unreadable && kept_by_mode(name, err)) unreadable->push_back(std::move(name));
  }
  return 0;
}

// Writes `want` to dst where it differs and, with `prune`, removes the attributes `want` lacks,
// but those named in `unknown` (the source has them, but they could not be read). ACLs last: an
// ACL written sets the owner's mode bits, which may take back the write permission that a user.*
// attribute asks of its owner (a read-only file opened up for them: XattrsRefused::read_only).
int write_attrs(const Attrs& want, const XattrOps& dst, bool privileged, bool prune, bool& written,
                XattrsRefused& refused, const std::vector<std::string>& unknown = {}) {
  Attrs have;
  auto refuse = [&](const std::string& name, int err) {
    refused.read_only = true;
    if (!refused.err) refused.err = err;
    refused.names += (refused.names.empty() ? "" : ", ") + name;
  };
  if (prune) {
    if (int err = read_all(dst, privileged, have)) return err;
    for (const auto& [name, value] : have) {
      if (want.count(name) || std::find(unknown.begin(), unknown.end(), name) != unknown.end()) continue;
      if (dst.remove(dst.self, name.c_str()) == 0) {
        written = true;
      } else if (!ignorable(errno, privileged)) {
        return errno;
      } else if (kept_by_mode(name, errno)) {
        refuse(name, errno);
      }
    }
  }
  std::vector<const std::pair<const std::string, std::string>*> order;
  for (const auto& attr : want) order.push_back(&attr);
  std::stable_partition(order.begin(), order.end(), [](auto* attr) { return !is_acl(attr->first); });
  for (const auto* attr : order) {
    const auto& [name, value] = *attr;
    auto it = have.find(name);
    if (it != have.end() && it->second == value) continue;
    if (dst.set(dst.self, name.c_str(), value.data(), value.size()) == 0) {
      written = true;
    } else if (!privileged && kept_by_mode(name, errno)) {
      refuse(name, errno);  // reported unless the caller opens the file up and writes it again
    } else if (!privileged && (errno == EPERM || errno == EACCES)) {
      // Not the user's to write (trusted.*, security.*), as cp -a leaves it.
    } else if (refused_metadata(errno) || errno == ENOSPC || errno == EDQUOT) {
      // ENOSPC: no room for the attribute where the data fitted (a value bigger than an ext4
      // block): the copy stands without it, and the run does not stop as for a full disk.
      if (!refused.err) refused.err = errno;
      refused.names += (refused.names.empty() ? "" : ", ") + name;
    } else if (errno != ENODATA) {
      return errno;
    }
  }
  return 0;
}

int write_with(const XattrOps& src, const XattrOps& dst, bool privileged, bool prune, bool& written,
               XattrsRefused& refused) {
  Attrs want;
  std::vector<std::string> unreadable;  // left as the copy has them, not removed
  if (int err = read_all(src, privileged, want, &unreadable)) return err;
  return write_attrs(want, dst, privileged, prune, written, refused, unreadable);
}

}  // namespace

int read_xattrs_fd(int fd, bool privileged, std::vector<std::pair<std::string, std::string>>& attrs) {
  Attrs read;
  int err = read_all(fd_ops(&fd), privileged, read);
  attrs.assign(read.begin(), read.end());
  return err;
}

int set_xattrs_fd(int fd, const std::vector<std::pair<std::string, std::string>>& attrs, bool privileged,
                  bool prune, bool& written, XattrsRefused& refused) {
  return write_attrs(Attrs(attrs.begin(), attrs.end()), fd_ops(&fd), privileged, prune, written, refused);
}

int copy_xattrs_fd(int src_fd, int dst_fd, bool privileged, bool prune, XattrsRefused& refused) {
  bool written = false;
  return write_with(fd_ops(&src_fd), fd_ops(&dst_fd), privileged, prune, written, refused);
}

int copy_xattrs_at(int src_dir, const std::string& src_name, bool src_follow, int dst_dir, const std::string& dst_name,
                   bool privileged, bool prune, XattrsRefused& refused) {
  AtEntry s{src_dir, src_name.c_str(), src_follow, {}}, d{dst_dir, dst_name.c_str(), false, {}};
  bool written = false;
  return write_with(at_ops(&s), at_ops(&d), privileged, prune, written, refused);
}

// listxattrat lists by directory fd and name: 1.6 µs against 5 µs through a /proc path on this VM,
// paid by every file an -a -u run skips.
bool has_xattrs_at(int dir, const std::string& name, bool follow) {
  AtEntry e{dir, name.c_str(), follow, {}};
  XattrOps ops = at_ops(&e);
  std::string names;
  if (read_grow(names, [&](char* b, size_t n) { return ops.list(ops.self, b, n); }) != 0) return false;
  for (size_t pos = 0; pos < names.size(); pos += std::strlen(names.c_str() + pos) + 1)
    if (names[pos] != '\0' && !skipped(names.c_str() + pos)) return true;
  return false;
}

bool same_xattrs_at(int src_dir, const std::string& src_name, bool src_follow, int dst_dir, const std::string& dst_name,
                    bool privileged) {
  AtEntry s{src_dir, src_name.c_str(), src_follow, {}}, d{dst_dir, dst_name.c_str(), false, {}};
  Attrs a, b;
  std::vector<std::string> unreadable;
  if (read_all(at_ops(&s), privileged, a, &unreadable) != 0 || read_all(at_ops(&d), privileged, b) != 0) return true;
  for (const std::string& name : unreadable) b.erase(name);  // not known to differ
  return a == b;
}

int sync_xattrs_at(int src_dir, const std::string& src_name, bool src_follow, int dst_dir, const std::string& dst_name,
                   bool privileged, bool& written, XattrsRefused& refused) {
  AtEntry s{src_dir, src_name.c_str(), src_follow, {}}, d{dst_dir, dst_name.c_str(), false, {}};
  return write_with(at_ops(&s), at_ops(&d), privileged, true, written, refused);
}

}  // namespace pcopy
