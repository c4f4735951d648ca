// The end-to-end harness: temporary trees, running the pcopy binary, and comparing trees.
//
// Trees are walked with directory fds and an explicit stack so that names with any bytes, paths far
// longer than PATH_MAX and trees 10,000 levels deep all work with O(1) descriptors and no deep recursion.

#include "harness.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/fs.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <climits>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <stdexcept>
#include <utility>

#include "pcopy/fd.hpp"

extern char** environ;

namespace pcopy::test {
namespace {

[[noreturn]] void fail(std::string_view what, std::string_view path, int err) {
  throw std::runtime_error(fmt::format("{} '{}': {}", what, escape_path(path), std::strerror(err)));
}

// ---------------------------------------------------------------------------------------------------
// Paths longer than PATH_MAX: resolved component by component to (directory fd, last name).

struct Located {
  UniqueFd owner;  // keeps `dirfd` open when it is not AT_FDCWD
  int dirfd = AT_FDCWD;
  std::string name;
};

Located locate(const std::string& path) {
  Located loc;
  // Leave room for the kernel's own limit; shorter paths go straight to the *at call.
  if (path.size() < PATH_MAX - 1) {
    loc.name = path;
    return loc;
  }
  size_t last_slash = path.find_last_of('/');
  std::string_view dirs(path.data(), last_slash);
  loc.name = path.substr(last_slash + 1);
  if (path[0] == '/') {
    loc.owner.reset(::open("/", O_PATH | O_DIRECTORY | O_CLOEXEC));
    loc.dirfd = loc.owner.get();
  }
  size_t pos = 0;
  while (pos < dirs.size()) {
    size_t end = std::min(dirs.find('/', pos), dirs.size());
    std::string component(dirs.substr(pos, end - pos));
    pos = end + 1;
    if (component.empty()) continue;
    UniqueFd next(::openat(loc.dirfd, component.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!next) fail("cannot resolve", path, errno);
    loc.owner = std::move(next);
    loc.dirfd = loc.owner.get();
  }
  return loc;
}

// ---------------------------------------------------------------------------------------------------
// Directory walking.

struct DirEntry {
  std::string name;
  unsigned char type;  // DT_* from getdents, resolved with fstatat when DT_UNKNOWN
};

// Reads a directory through its own open file description, so the caller's fd keeps its offset.
std::vector<DirEntry> read_dir(int dirfd, std::string_view rel) {
  int fd = ::openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) fail("cannot open directory", rel, errno);
  DIR* dir = ::fdopendir(fd);
  if (dir == nullptr) {
    int err = errno;
    ::close(fd);
    fail("cannot open directory", rel, err);
  }
  std::vector<DirEntry> entries;
  errno = 0;
  while (dirent* d = ::readdir(dir)) {
    std::string_view name(d->d_name);
    if (name == "." || name == "..") continue;
    unsigned char type = d->d_type;
    if (type == DT_UNKNOWN) {
      struct stat st {};
      if (::fstatat(dirfd, d->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0) type = IFTODT(st.st_mode);
    }
    entries.push_back({std::string(name), type});
  }
  int err = errno;
  ::closedir(dir);
  if (err != 0) fail("cannot read directory", rel, err);
  std::sort(entries.begin(), entries.end(), [](auto& x, auto& y) { return x.name < y.name; });
  return entries;
}

// One open directory fd that moves down by name and back up through "..", tracking the relative path.
class TreeCursor {
 public:
  explicit TreeCursor(const std::string& root) {
    Located loc = locate(root);
    fd_.reset(::openat(loc.dirfd, loc.name.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!fd_) fail("cannot open directory", root, errno);
  }
  int fd() const { return fd_.get(); }
  const std::string& rel() const { return rel_; }
  std::string rel_of(std::string_view name) const {
    return rel_.empty() ? std::string(name) : rel_ + "/" + std::string(name);
  }
  std::string_view last_name() const { return std::string_view(rel_).substr(starts_.back()); }

  // 0 or an errno; O_NOFOLLOW so a symlink is never entered.
  int descend(const std::string& name) {
    UniqueFd child(::openat(fd_.get(), name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!child) return errno;
    fd_ = std::move(child);
    starts_.push_back(rel_.empty() ? 0 : rel_.size() + 1);
    rel_ = rel_of(name);
    return 0;
  }
  void ascend() {
    UniqueFd parent(::openat(fd_.get(), "..", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!parent) fail("cannot reopen parent of", rel_, errno);
    fd_ = std::move(parent);
    rel_.resize(starts_.back() == 0 ? 0 : starts_.back() - 1);
    starts_.pop_back();
  }

 private:
  UniqueFd fd_;
  std::string rel_;
  std::vector<size_t> starts_;  // offset in rel_ where each level's name begins
};

// Depth-first walk with an explicit stack. `visit_dir` is called once per directory with the cursor
// inside it and returns the names of the subdirectories to enter; `leave_dir(cursor, name)` runs after a
// subdirectory was left (cursor back in its parent).
template <typename Visit, typename Leave>
void walk(TreeCursor& cursor, Visit visit_dir, Leave leave_dir) {
  std::vector<std::vector<std::string>> pending;  // per level: subdirectories still to enter (reversed)
  pending.push_back(visit_dir(cursor));
  std::reverse(pending.back().begin(), pending.back().end());
  while (!pending.empty()) {
    if (pending.back().empty()) {
      pending.pop_back();
      if (pending.empty()) break;
      std::string name(cursor.last_name());
      cursor.ascend();
      leave_dir(cursor, name);
      continue;
    }
    std::string name = std::move(pending.back().back());
    pending.back().pop_back();
    if (cursor.descend(name) != 0) continue;  // unreadable to us (mode 000 when not root): skipped
    pending.push_back(visit_dir(cursor));
    std::reverse(pending.back().begin(), pending.back().end());
  }
}

// ---------------------------------------------------------------------------------------------------
// Removal.

void warn(std::string_view what, std::string_view path, int err) {
  std::fprintf(stderr, "harness: %.*s '%s': %s\n", static_cast<int>(what.size()), what.data(),
               escape_path(path).c_str(), std::strerror(err));
}

// Unlinks every non-directory and returns the subdirectories, made writable and searchable so they
// can be emptied (tests create read-only and mode-000 directories).
std::vector<std::string> empty_files(TreeCursor& cursor) {
  std::vector<std::string> subdirs;
  for (auto& entry : read_dir(cursor.fd(), cursor.rel())) {
    if (entry.type != DT_DIR && ::unlinkat(cursor.fd(), entry.name.c_str(), 0) == 0) continue;
    if (entry.type != DT_DIR && errno != EISDIR) {
      warn("cannot remove", cursor.rel_of(entry.name), errno);
      continue;
    }
    if (::fchmodat(cursor.fd(), entry.name.c_str(), 0700, 0) != 0) {
      warn("cannot chmod", cursor.rel_of(entry.name), errno);
    }
    subdirs.push_back(std::move(entry.name));
  }
  return subdirs;
}

void remove_tree(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return;
  if (!S_ISDIR(st.st_mode)) {
    if (::unlink(path.c_str()) != 0) warn("cannot remove", path, errno);
    return;
  }
  ::chmod(path.c_str(), 0700);
  TreeCursor cursor(path);
  walk(cursor, empty_files, [](TreeCursor& c, const std::string& name) {
    if (::unlinkat(c.fd(), name.c_str(), AT_REMOVEDIR) != 0) warn("cannot remove", c.rel_of(name), errno);
  });
  if (::rmdir(path.c_str()) != 0) warn("cannot remove", path, errno);
}

// ---------------------------------------------------------------------------------------------------
// Comparison.

std::string type_name(mode_t mode) {
  switch (mode & S_IFMT) {
    case S_IFREG: return "file";
    case S_IFDIR: return "directory";
    case S_IFLNK: return "symlink";
    case S_IFIFO: return "fifo";
    case S_IFSOCK: return "socket";
    case S_IFCHR: return "char device";
    case S_IFBLK: return "block device";
    default: return "unknown";
  }
}

std::string format_ns(const timespec& ts) { return fmt::format("{}.{:09}", ts.tv_sec, ts.tv_nsec); }

std::string read_link_at(int dirfd, const std::string& name) {
  std::string target(256, '\0');
  for (;;) {
    ssize_t n = ::readlinkat(dirfd, name.c_str(), target.data(), target.size());
    if (n < 0) return fmt::format("<readlink failed: {}>", std::strerror(errno));
    if (static_cast<size_t>(n) < target.size()) {
      target.resize(static_cast<size_t>(n));
      return target;
    }
    target.resize(target.size() * 2);
  }
}

// name -> value for every xattr of dirfd/name, without following a final symlink. The /proc/self/fd
// prefix keeps the path short however deep the entry is.
std::map<std::string, std::string> read_xattrs(int dirfd, const std::string& name) {
  std::string path = fmt::format("/proc/self/fd/{}/{}", dirfd, name);
  std::map<std::string, std::string> result;
  std::string names(1024, '\0');
  ssize_t n;
  while ((n = ::llistxattr(path.c_str(), names.data(), names.size())) < 0 && errno == ERANGE) {
    names.resize(names.size() * 4);
  }
  if (n < 0) {
    if (errno != ENOTSUP) result["<error>"] = std::strerror(errno);
    return result;
  }
  for (size_t pos = 0; pos < static_cast<size_t>(n);) {
    std::string key(names.c_str() + pos);
    pos += key.size() + 1;
    std::string value(256, '\0');
    ssize_t len;
    while ((len = ::lgetxattr(path.c_str(), key.c_str(), value.data(), value.size())) < 0 && errno == ERANGE) {
      value.resize(value.size() * 4);
    }
    value.resize(len < 0 ? 0 : static_cast<size_t>(len));
    result[key] = len < 0 ? fmt::format("<error: {}>", std::strerror(errno)) : value;
  }
  return result;
}

class Differ {
 public:
  explicit Differ(const CompareOptions& options) : options_(options), buf_a_(kChunk), buf_b_(kChunk) {}

  std::string run(const std::string& a, const std::string& b) {
    TreeCursor ca(a);
    TreeCursor cb(b);
    if (options_.root) compare_root(ca, cb);
    std::vector<std::vector<std::string>> pending;  // per level: subdirectories still to compare (reversed)
    pending.push_back(compare_dir(ca, cb));
    while (!pending.empty()) {
      if (pending.back().empty()) {
        pending.pop_back();
        if (pending.empty()) break;
        ca.ascend();
        cb.ascend();
        continue;
      }
      std::string name = std::move(pending.back().back());
      pending.back().pop_back();
      if (!descend_both(ca, cb, name)) continue;
      pending.push_back(compare_dir(ca, cb));
    }
    if (lines_ > kMaxLines) out_ += fmt::format("... and {} more differences\n", lines_ - kMaxLines);
    return out_;
  }

 private:
  static constexpr size_t kChunk = 1 << 20;
  static constexpr size_t kMaxLines = 200;
  using InodeKey = std::pair<dev_t, ino_t>;
  struct LinkSeen {
    InodeKey other;
    std::string first_path;
  };

  void note(std::string_view rel, std::string_view what) {
    if (++lines_ <= kMaxLines) out_ += fmt::format("{}: {}\n", escape_path(rel.empty() ? "." : rel), what);
  }

  bool descend_both(TreeCursor& ca, TreeCursor& cb, const std::string& name) {
    if (int err = ca.descend(name); err != 0) {
      note(ca.rel_of(name), fmt::format("cannot enter in a: {}", std::strerror(err)));
      return false;
    }
    if (int err = cb.descend(name); err != 0) {
      note(ca.rel(), fmt::format("cannot enter in b: {}", std::strerror(err)));
      ca.ascend();
      return false;
    }
    return true;
  }

  void compare_root(TreeCursor& ca, TreeCursor& cb) {
    struct stat sa {}, sb {};
    ::fstat(ca.fd(), &sa);
    ::fstat(cb.fd(), &sb);
    compare_metadata(ca.fd(), cb.fd(), ".", "", sa, sb);
  }

  // Compares the entries of the two current directories; returns the subdirectories present in both.
  std::vector<std::string> compare_dir(TreeCursor& ca, TreeCursor& cb) {
    auto names_a = read_dir(ca.fd(), ca.rel());
    auto names_b = read_dir(cb.fd(), cb.rel());
    std::vector<std::string> subdirs;
    size_t i = 0, j = 0;
    while (i < names_a.size() || j < names_b.size()) {
      if (j == names_b.size() || (i < names_a.size() && names_a[i].name < names_b[j].name)) {
        note(ca.rel_of(names_a[i++].name), "missing in b");
      } else if (i == names_a.size() || names_b[j].name < names_a[i].name) {
        note(cb.rel_of(names_b[j++].name), "extra in b (not in a)");
      } else {
        const std::string& name = names_a[i].name;
        if (compare_entry(ca, cb, name)) subdirs.push_back(name);
        ++i;
        ++j;
      }
    }
    std::reverse(subdirs.begin(), subdirs.end());  // taken from the back: differences print in order
    return subdirs;
  }

  // True when both are directories (to be descended).
  bool compare_entry(TreeCursor& ca, TreeCursor& cb, const std::string& name) {
    std::string rel = ca.rel_of(name);
    struct stat sa {}, sb {};
    if (::fstatat(ca.fd(), name.c_str(), &sa, AT_SYMLINK_NOFOLLOW) != 0 ||
        ::fstatat(cb.fd(), name.c_str(), &sb, AT_SYMLINK_NOFOLLOW) != 0) {
      note(rel, fmt::format("cannot lstat: {}", std::strerror(errno)));
      return false;
    }
    if ((sa.st_mode & S_IFMT) != (sb.st_mode & S_IFMT)) {
      note(rel, fmt::format("type {} vs {}", type_name(sa.st_mode), type_name(sb.st_mode)));
      return false;
    }
    compare_data(ca.fd(), cb.fd(), name, rel, sa, sb);
    compare_metadata(ca.fd(), cb.fd(), name, rel, sa, sb);
    if (options_.hardlinks && !S_ISDIR(sa.st_mode) && (sa.st_nlink > 1 || sb.st_nlink > 1)) {
      record_link(links_a_, {sa.st_dev, sa.st_ino}, {sb.st_dev, sb.st_ino}, rel, "in a, not in b");
      record_link(links_b_, {sb.st_dev, sb.st_ino}, {sa.st_dev, sa.st_ino}, rel, "in b, not in a");
    }
    return S_ISDIR(sa.st_mode);
  }

  void compare_data(int fa, int fb, const std::string& name, const std::string& rel, const struct stat& sa,
                    const struct stat& sb) {
    if (S_ISREG(sa.st_mode)) {
      if (sa.st_size != sb.st_size) {
        note(rel, fmt::format("size {} vs {}", sa.st_size, sb.st_size));
      } else {
        compare_content(fa, fb, name, rel, sa.st_size);
      }
      if (options_.blocks) {
        long long diff = (static_cast<long long>(sa.st_blocks) - static_cast<long long>(sb.st_blocks)) * 512;
        if (std::llabs(diff) > (1LL << 20)) {
          note(rel, fmt::format("allocated {} vs {} bytes", sa.st_blocks * 512LL, sb.st_blocks * 512LL));
        }
      }
    } else if (S_ISLNK(sa.st_mode)) {
      std::string ta = read_link_at(fa, name), tb = read_link_at(fb, name);
      if (ta != tb) note(rel, fmt::format("link target '{}' vs '{}'", escape_path(ta), escape_path(tb)));
    } else if ((S_ISCHR(sa.st_mode) || S_ISBLK(sa.st_mode)) && sa.st_rdev != sb.st_rdev) {
      note(rel, fmt::format("device {}:{} vs {}:{}", major(sa.st_rdev), minor(sa.st_rdev), major(sb.st_rdev),
                            minor(sb.st_rdev)));
    }
  }

  // Streams both files (never more than one chunk of each in memory), skipping ranges that are holes
  // in both: tests compare sparse files of a GiB and more. Called only when the sizes are equal.
  void compare_content(int fa, int fb, const std::string& name, const std::string& rel, off_t size) {
    UniqueFd a(::openat(fa, name.c_str(), O_RDONLY | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC));
    UniqueFd b(::openat(fb, name.c_str(), O_RDONLY | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC));
    if (!a || !b) {
      note(rel, fmt::format("cannot open {} to compare: {}", !a ? "a" : "b", std::strerror(errno)));
      return;
    }
    for (off_t offset = 0; offset < size;) {
      off_t data = std::min(next_data(a.get(), offset, size), next_data(b.get(), offset, size));
      if (data > offset) {
        offset = data;
        continue;
      }
      size_t want = static_cast<size_t>(std::min<off_t>(static_cast<off_t>(kChunk), size - offset));
      ssize_t na = pread_full(a.get(), buf_a_.data(), want, offset);
      ssize_t nb = pread_full(b.get(), buf_b_.data(), want, offset);
      if (na != static_cast<ssize_t>(want) || nb != static_cast<ssize_t>(want)) {
        note(rel, fmt::format("cannot read both in full at byte {}", offset));
        return;
      }
      if (std::memcmp(buf_a_.data(), buf_b_.data(), want) != 0) {  // memcmp: fast even in a Debug build
        size_t at = 0;
        while (buf_a_[at] == buf_b_[at]) ++at;
        note(rel, fmt::format("content differs at byte {}", offset + static_cast<off_t>(at)));
        return;
      }
      offset += static_cast<off_t>(want);
    }
  }

  // Where data starts at or after `offset` (size when only a hole follows); `offset` when unknown.
  static off_t next_data(int fd, off_t offset, off_t size) {
    off_t data = ::lseek(fd, offset, SEEK_DATA);
    if (data >= 0) return std::min(data, size);
    return errno == ENXIO ? size : offset;
  }

  static ssize_t pread_full(int fd, char* buf, size_t want, off_t offset) {
    size_t done = 0;
    while (done < want) {
      ssize_t n = ::pread(fd, buf + done, want - done, offset + static_cast<off_t>(done));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      done += static_cast<size_t>(n);
    }
    return static_cast<ssize_t>(done);
  }

  void compare_metadata(int fa, int fb, const std::string& name, std::string_view rel, const struct stat& sa,
                        const struct stat& sb) {
    if (!S_ISLNK(sa.st_mode) && (sa.st_mode & 07777) != (sb.st_mode & 07777)) {
      note(rel, fmt::format("mode {:04o} vs {:04o}", sa.st_mode & 07777, sb.st_mode & 07777));
    }
    bool timed = S_ISREG(sa.st_mode) || S_ISDIR(sa.st_mode) || S_ISLNK(sa.st_mode);
    if (options_.times && timed &&
        (sa.st_mtim.tv_sec != sb.st_mtim.tv_sec || sa.st_mtim.tv_nsec != sb.st_mtim.tv_nsec)) {
      note(rel, fmt::format("mtime {} vs {}", format_ns(sa.st_mtim), format_ns(sb.st_mtim)));
    }
    if (options_.owners && (sa.st_uid != sb.st_uid || sa.st_gid != sb.st_gid)) {
      note(rel, fmt::format("owner {}:{} vs {}:{}", sa.st_uid, sa.st_gid, sb.st_uid, sb.st_gid));
    }
    if (options_.xattrs) compare_xattrs(fa, fb, name, rel);
  }

  void compare_xattrs(int fa, int fb, const std::string& name, std::string_view rel) {
    auto xa = read_xattrs(fa, name), xb = read_xattrs(fb, name);
    for (auto& [key, value] : xa) {
      auto it = xb.find(key);
      if (it == xb.end()) {
        note(rel, fmt::format("xattr {} missing in b", escape_path(key)));
      } else if (it->second != value) {
        note(rel, fmt::format("xattr {} '{}' vs '{}'", escape_path(key), escape_path(value),
                              escape_path(it->second)));
      }
    }
    for (auto& [key, value] : xb) {
      if (!xa.contains(key)) note(rel, fmt::format("xattr {} extra in b", escape_path(key)));
    }
  }

  // Each inode on one side must correspond to exactly one inode on the other.
  void record_link(std::map<InodeKey, LinkSeen>& seen, InodeKey self, InodeKey other, const std::string& rel,
                   std::string_view where) {
    auto [it, inserted] = seen.try_emplace(self, LinkSeen{other, rel});
    if (!inserted && it->second.other != other) {
      note(rel, fmt::format("hard link to '{}' {}", escape_path(it->second.first_path), where));
    }
  }

  CompareOptions options_;
  std::vector<char> buf_a_, buf_b_;
  std::map<InodeKey, LinkSeen> links_a_, links_b_;
  std::string out_;
  size_t lines_ = 0;
};

// ---------------------------------------------------------------------------------------------------
// Running programs.

std::vector<std::string> pty_command(const std::vector<std::string>& argv, int columns) {
  // -onlcr: keep the program's own bytes, so a '\r' in the output is one the program wrote.
  std::string command = fmt::format("stty cols {} rows 24 -onlcr; exec", columns);
  for (auto& arg : argv) command += " " + shell_quote(arg);
  return {"script", "-qfec", command, "/dev/null"};
}

// Only async-signal-safe calls from here to exec: the test process may have threads.
void child_write(const char* text) { (void)!::write(2, text, std::strlen(text)); }

[[noreturn]] void child_fail(const char* what) {
  int err = errno;
  char digits[16];
  int n = 0;
  do digits[n++] = static_cast<char>('0' + err % 10);
  while ((err /= 10) > 0 && n < 15);
  child_write("harness: ");
  child_write(what);
  child_write(" failed, errno ");
  while (n > 0) (void)!::write(2, &digits[--n], 1);
  child_write("\n");
  ::_exit(127);
}

// Installs a seccomp filter under which each of `refused` (number, errno) fails with that errno,
// and everything else runs. No allocation: this runs between fork and exec.
void refuse_syscalls(const std::vector<std::pair<long, int>>& refused) {
  constexpr size_t kMaxRefused = 16;
  if (refused.size() > kMaxRefused) child_fail("refuse_syscalls: too many");
  struct sock_filter prog[4 + 2 * kMaxRefused + 1];
  size_t n = 0;
  prog[n++] = BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch));
  prog[n++] = BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0);
  prog[n++] = BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);  // another ABI: not filtered
  prog[n++] = BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr));
  for (auto [nr, err] : refused) {
    prog[n++] = BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, uint32_t(nr), 0, 1);
    prog[n++] = BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (uint32_t(err) & SECCOMP_RET_DATA));
  }
  prog[n++] = BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
  struct sock_fprog fprog {};
  fprog.len = static_cast<unsigned short>(n);
  fprog.filter = prog;
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) child_fail("prctl(PR_SET_NO_NEW_PRIVS)");
  if (::syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &fprog) != 0) child_fail("seccomp");
}

[[noreturn]] void exec_child(Pipe& in, Pipe& out, Pipe& err, char** argv, char** envp, const RunOptions& options) {
  if (::dup2(in.read.get(), 0) < 0 || ::dup2(out.write.get(), 1) < 0 || ::dup2(err.write.get(), 2) < 0) {
    child_fail("dup2");
  }
  if (!options.stdout_file.empty()) {
    int fd = ::open(options.stdout_file.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0 || ::dup2(fd, 1) < 0) child_fail("open stdout_file");
  }
  if (!options.stderr_file.empty()) {
    int fd = ::open(options.stderr_file.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0 || ::dup2(fd, 2) < 0) child_fail("open stderr_file");
  }
  ::close_range(3, ~0U, 0);  // nothing of the test process leaks in (pcopy's fd-limit tests count them)
  ::setpgid(0, 0);           // its own group, so a timeout can kill pcopy and its workers together
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  ::signal(SIGPIPE, SIG_DFL);  // the harness ignores it, and ignoring survives exec
  for (int i = 0; i < options.leaked_fds; ++i)  // as a careless parent leaves them
    if (::open("/dev/null", O_RDONLY) < 0) child_fail("open /dev/null");
  if (options.nofile) {
    rlimit limit{static_cast<rlim_t>(*options.nofile), static_cast<rlim_t>(*options.nofile)};
    if (::setrlimit(RLIMIT_NOFILE, &limit) != 0) child_fail("setrlimit");
  }
  if (options.nproc) {
    rlimit limit{static_cast<rlim_t>(*options.nproc), static_cast<rlim_t>(*options.nproc)};
    if (::setrlimit(RLIMIT_NPROC, &limit) != 0) child_fail("setrlimit");
  }
  if (!options.cwd.empty()) {  // before the uid drops: it may lie below what the user may search
    if (::chdir("/") != 0) child_fail("chdir");
    std::string_view rest = options.cwd;
    while (!rest.empty()) {  // no allocation after fork: each component copied into a buffer
      std::string_view part = rest.substr(0, rest.find('/'));
      rest.remove_prefix(std::min(rest.size(), part.size() + 1));
      char name[NAME_MAX + 1];
      if (part.empty() || part.size() > NAME_MAX) continue;
      part.copy(name, part.size());
      name[part.size()] = '\0';
      if (::chdir(name) != 0) child_fail("chdir");
    }
  }
  if (options.uid) {
    if (::setgroups(options.groups.size(), options.groups.data()) != 0) child_fail("setgroups");
    if (::setgid(65534) != 0) child_fail("setgid");
    if (::setuid(*options.uid) != 0) child_fail("setuid");
  }
  if (!options.refused_syscalls.empty()) refuse_syscalls(options.refused_syscalls);
  ::execvpe(argv[0], argv, envp);
  child_fail("exec");
}

struct Stream {
  UniqueFd fd;
  std::string* sink;
};

// Feeds stdin and drains stdout/stderr together, so no pipe fills up and blocks the child.
// Returns false on timeout.
bool pump(UniqueFd& input, std::string_view data, Stream (&outputs)[2],
          std::chrono::steady_clock::time_point deadline) {
  size_t written = 0;
  if (data.empty()) input.reset();
  if (input) set_nonblocking(input.get(), true);
  char buf[65536];
  while (outputs[0].fd || outputs[1].fd) {
    pollfd fds[3];
    nfds_t n = 0;
    for (auto& s : outputs) {
      if (s.fd) fds[n++] = {s.fd.get(), POLLIN, 0};
    }
    if (input) fds[n++] = {input.get(), POLLOUT, 0};
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    int ready = ::poll(fds, n, static_cast<int>(std::max<long long>(0, left.count())));
    if (ready < 0 && errno == EINTR) continue;
    if (ready == 0) return false;
    for (nfds_t i = 0; i < n; ++i) {
      if (fds[i].revents == 0) continue;
      if (input && fds[i].fd == input.get()) {
        ssize_t w = ::write(input.get(), data.data() + written, data.size() - written);
        if (w > 0) written += static_cast<size_t>(w);
        if ((w < 0 && errno != EAGAIN && errno != EINTR) || written == data.size()) input.reset();
        continue;
      }
      for (auto& s : outputs) {
        if (s.fd.get() != fds[i].fd) continue;
        ssize_t r = read_some(s.fd.get(), buf, sizeof buf);
        if (r > 0) s.sink->append(buf, static_cast<size_t>(r));
        else if (r != -EAGAIN) s.fd.reset();
      }
    }
  }
  return true;
}

// `peak_rss_kb`, when given: the largest resident set of the child or of any process it reaped.
int wait_status(pid_t pid, int options_flags, long* peak_rss_kb = nullptr) {
  int status = 0;
  pid_t r;
  struct rusage usage {};
  while ((r = ::wait4(pid, &status, options_flags, &usage)) < 0 && errno == EINTR) {
  }
  if (r <= 0) return -1;
  if (peak_rss_kb) *peak_rss_kb = usage.ru_maxrss;
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

}  // namespace

std::vector<std::string> child_environment(const RunOptions& options) {
  std::vector<std::string> extra = options.env;
  if (options.pty) {
    extra.insert(extra.begin(), "SHELL=/bin/sh");                          // what `script -c` runs
    if (std::getenv("TERM") == nullptr) extra.insert(extra.begin(), "TERM=xterm");  // a real terminal's
  }
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) env.emplace_back(*e);
  // NAME=VALUE replaces NAME; a bare NAME (no '=') removes it.
  for (auto& entry : extra) {
    size_t eq = entry.find('=');
    std::string key = (eq == std::string::npos ? entry : entry.substr(0, eq)) + "=";
    std::erase_if(env, [&](const std::string& e) { return e.starts_with(key); });
    if (eq != std::string::npos) env.push_back(entry);
  }
  return env;
}

std::vector<char*> c_strings(std::vector<std::string>& strings) {
  std::vector<char*> result;
  for (auto& s : strings) result.push_back(s.data());
  result.push_back(nullptr);
  return result;
}

// ---------------------------------------------------------------------------------------------------
// Public interface.

// For a command run by a shell (`script`, `sh -c`): single quotes protect every byte but the quote itself.
std::string shell_quote(std::string_view arg) {
  std::string quoted = "'";
  for (char c : arg) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return quoted + "'";
}

std::string escape_path(std::string_view path) {
  std::string out;
  for (unsigned char c : path) {
    if (c == '\\') out += "\\\\";
    else if (c == '\n') out += "\\n";
    else if (c == '\t') out += "\\t";
    else if (c < 0x20 || c >= 0x7f) out += fmt::format("\\x{:02x}", c);
    else out += static_cast<char>(c);
  }
  return out;
}

TempDir::TempDir() {
  const char* base = std::getenv("TMPDIR");
  std::string pattern = std::string(base != nullptr && *base != '\0' ? base : "/tmp") + "/pcopy-e2e-XXXXXX";
  if (::mkdtemp(pattern.data()) == nullptr) fail("cannot create temporary directory", pattern, errno);
  path_ = pattern;
}

TempDir::~TempDir() {
  try {
    remove_tree(path_);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "harness: cannot remove %s: %s\n", escape_path(path_).c_str(), e.what());
  }
}

std::string pcopy_bin() {
  if (const char* env = std::getenv("PCOPY_BIN"); env != nullptr && *env != '\0') return env;
#ifdef PCOPY_BIN
  return PCOPY_BIN;
#else
  return "pcopy";
#endif
}

namespace {

// Whether a user other than the owners can run `path`: every directory above it searchable by
// others, and it executable by them.
bool others_may_run(const std::string& path) {
  struct stat st;
  for (size_t slash = path.find('/', 1); slash != std::string::npos; slash = path.find('/', slash + 1)) {
    if (::stat(path.substr(0, slash).c_str(), &st) != 0 || !(st.st_mode & S_IXOTH)) return false;
  }
  return ::stat(path.c_str(), &st) == 0 && (st.st_mode & S_IXOTH);
}

constexpr std::string_view kBinCopyPrefix = "pcopy-e2e-bin.";

// Removes the copies of pcopy left by test processes that died before they could (killed by
// ctest's timeout): directories named kBinCopyPrefix<pid> whose process is gone.
void remove_orphaned_bin_copies(const std::string& base) {
  DIR* dir = ::opendir(base.c_str());
  if (dir == nullptr) return;
  while (const dirent* entry = ::readdir(dir)) {
    std::string_view name = entry->d_name;
    if (name.substr(0, kBinCopyPrefix.size()) != kBinCopyPrefix) continue;
    std::string_view digits = name.substr(kBinCopyPrefix.size());
    if (digits.empty() || digits.size() > 9 || digits.find_first_not_of("0123456789") != std::string_view::npos) continue;
    pid_t pid = static_cast<pid_t>(std::stol(std::string(digits)));
    if (pid == ::getpid() || ::kill(pid, 0) == 0 || errno != ESRCH) continue;
    try {
      remove_tree(base + "/" + std::string(name));
    } catch (const std::exception&) {  // another test process removing it too
    }
  }
  ::closedir(dir);
}

// pcopy_bin() as the tests that drop to uid 65534 can run it. A build in a directory closed to
// others (a clone in root's 0700 home) is copied, once per test process and only then, into a
// directory of its own under $TMPDIR (or /tmp) that others may enter, named by the process and
// removed at exit, or by a later test process if this one is killed first.
std::string pcopy_bin_for_others() {
  struct Copy {
    std::string dir;
    ~Copy() {
      if (dir.empty()) return;
      try {
        remove_tree(dir);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "harness: cannot remove %s: %s\n", escape_path(dir).c_str(), e.what());
      }
    }
  };
  static Copy copy;
  static const std::string path = [] {
    std::string bin = pcopy_bin();
    if (bin.empty() || bin[0] != '/' || others_may_run(bin)) return bin;
    const char* tmp = std::getenv("TMPDIR");
    std::string base = tmp != nullptr && *tmp != '\0' ? tmp : "/tmp";
    remove_orphaned_bin_copies(base);
    std::string dir = base + "/" + std::string(kBinCopyPrefix) + std::to_string(::getpid());
    if (::access(dir.c_str(), F_OK) == 0) remove_tree(dir);  // an earlier process's, with this pid
    if (::mkdir(dir.c_str(), 0700) != 0) fail("cannot create directory", dir, errno);
    copy.dir = dir;
    std::string file = dir + "/pcopy";
    std::error_code ec;
    std::filesystem::copy_file(bin, file, ec);
    if (ec || ::chmod(dir.c_str(), 0755) != 0 || ::chmod(file.c_str(), 0755) != 0) {
      throw std::runtime_error("harness: cannot copy " + bin + " where uid 65534 may run it: " + ec.message());
    }
    return file;
  }();
  return path;
}

}  // namespace

RunResult run(const std::vector<std::string>& argv, const RunOptions& options) {
  // Writing stdin to a child that has exited must be an EPIPE error, not a SIGPIPE for the test binary.
  static const bool sigpipe_ignored = (::signal(SIGPIPE, SIG_IGN), true);
  (void)sigpipe_ignored;

  std::vector<std::string> command = argv;
  const std::string bin = pcopy_bin(), reachable = options.uid ? pcopy_bin_for_others() : bin;
  for (std::string& arg : command) {  // also where a shell's command line names it (`sh -c "'<pcopy>' …"`)
    for (size_t at = arg.find(bin); bin != reachable && at != std::string::npos; at = arg.find(bin, at + reachable.size()))
      arg.replace(at, bin.size(), reachable);
  }
  std::vector<std::string> args = options.pty ? pty_command(command, options.pty_columns) : command;
  std::vector<std::string> env = child_environment(options);
  std::vector<char*> c_args = c_strings(args), c_env = c_strings(env);
  Pipe in = make_pipe(), out = make_pipe(), err = make_pipe();

  RunResult result;
  std::fflush(nullptr);  // nothing buffered may be written twice
  pid_t pid = ::fork();
  if (pid < 0) fail("cannot fork for", argv.empty() ? "" : argv[0], errno);
  if (pid == 0) exec_child(in, out, err, c_args.data(), c_env.data(), options);

  in.read.reset();
  out.write.reset();
  err.write.reset();
  Stream outputs[2] = {{std::move(out.read), &result.out}, {std::move(err.read), &result.err}};
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(options.timeout_s);
  if (!pump(in.write, options.stdin_data, outputs, deadline)) {
    bool exited = wait_status(pid, WNOHANG) >= 0;
    ::kill(-pid, SIGKILL);
    ::kill(pid, SIGKILL);
    if (!exited) wait_status(pid, 0);
    result.err += fmt::format("\nharness: timed out after {} s{}\n", options.timeout_s,
                              exited ? " (the program had exited but something kept its output pipes open)" : "");
    result.status = 128 + SIGKILL;
    return result;
  }
  result.status = wait_status(pid, 0, &result.peak_rss_kb);
  return result;
}

RunResult run_pcopy(const std::vector<std::string>& args, const RunOptions& options) {
  std::vector<std::string> argv{pcopy_bin()};
  argv.insert(argv.end(), args.begin(), args.end());
  return run(argv, options);
}

void write_file(const std::string& path, std::string_view bytes, mode_t mode) {
  Located loc = locate(path);
  UniqueFd fd(::openat(loc.dirfd, loc.name.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!fd) fail("cannot create", path, errno);
  if (int e = write_all(fd.get(), bytes.data(), bytes.size()); e != 0) fail("cannot write", path, e);
  if (::fchmod(fd.get(), mode) != 0) fail("cannot chmod", path, errno);  // exact bits, whatever the umask
  if (int e = fd.close_checked(); e != 0) fail("cannot close", path, e);
}

std::string read_file(const std::string& path) {
  Located loc = locate(path);
  UniqueFd fd(::openat(loc.dirfd, loc.name.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) fail("cannot open", path, errno);
  std::string content;
  char buf[65536];
  ssize_t n;
  while ((n = read_some(fd.get(), buf, sizeof buf)) > 0) content.append(buf, static_cast<size_t>(n));
  if (n < 0) fail("cannot read", path, static_cast<int>(-n));
  return content;
}

void make_dir(const std::string& path, mode_t mode) {
  Located loc = locate(path);
  if (::mkdirat(loc.dirfd, loc.name.c_str(), 0700) != 0) fail("cannot create directory", path, errno);
  if (::fchmodat(loc.dirfd, loc.name.c_str(), mode, 0) != 0) fail("cannot chmod", path, errno);
}

void make_dirs(const std::string& path) {
  // One component at a time from a directory fd, so any length works (and symlinks are followed,
  // as with mkdir -p).
  UniqueFd current;
  int dirfd = AT_FDCWD;
  if (path.starts_with('/')) {
    current.reset(::open("/", O_PATH | O_DIRECTORY | O_CLOEXEC));
    dirfd = current.get();
  }
  size_t pos = 0;
  while (pos < path.size()) {
    size_t end = std::min(path.find('/', pos), path.size());
    std::string component = path.substr(pos, end - pos);
    pos = end + 1;
    if (component.empty()) continue;
    if (::mkdirat(dirfd, component.c_str(), 0755) != 0 && errno != EEXIST) {
      fail("cannot create directory", path.substr(0, end), errno);
    }
    UniqueFd next(::openat(dirfd, component.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!next) fail("cannot enter", path.substr(0, end), errno);
    current = std::move(next);
    dirfd = current.get();
  }
}

void make_symlink(const std::string& target, const std::string& path) {
  Located loc = locate(path);
  if (::symlinkat(target.c_str(), loc.dirfd, loc.name.c_str()) != 0) fail("cannot create symlink", path, errno);
}

void set_times(const std::string& path, long long atime_ns, long long mtime_ns) {
  auto to_timespec = [](long long ns) {
    long long sec = ns / 1'000'000'000LL, rem = ns % 1'000'000'000LL;
    if (rem < 0) {  // floor, so times before 1970 keep tv_nsec in [0, 1e9)
      rem += 1'000'000'000LL;
      --sec;
    }
    return timespec{static_cast<time_t>(sec), static_cast<long>(rem)};
  };
  timespec times[2] = {to_timespec(atime_ns), to_timespec(mtime_ns)};
  Located loc = locate(path);
  if (::utimensat(loc.dirfd, loc.name.c_str(), times, AT_SYMLINK_NOFOLLOW) != 0) fail("cannot set times", path, errno);
}

Mount::Mount(const std::string& dir, const Tmpfs& fs) : dir_(dir) {
  make_dirs(dir);
  mounted_ = ::mount("tmpfs", dir.c_str(), "tmpfs", 0, fs.options.c_str()) == 0;
  if (!mounted_) why_ = "cannot mount a tmpfs: " + std::string(std::strerror(errno));
}

Mount::Mount(const std::string& dir, const Ramfs&) : dir_(dir) {
  make_dirs(dir);
  mounted_ = ::mount("ramfs", dir.c_str(), "ramfs", 0, nullptr) == 0;
  if (!mounted_) why_ = "cannot mount a ramfs: " + std::string(std::strerror(errno));
}

Mount::Mount(const std::string& dir, const Bind& fs) : dir_(dir) {
  if (std::filesystem::is_directory(fs.target)) make_dirs(dir);  // a file is mounted on a file
  mounted_ = ::mount(fs.target.c_str(), dir.c_str(), nullptr, MS_BIND, nullptr) == 0;
  if (!mounted_) why_ = "cannot bind-mount a directory: " + std::string(std::strerror(errno));
}

Mount::Mount(const std::string& dir, const LoopXfs& fs) : dir_(dir) {
  loop_mount(fs.image, fs.size_mib, {"mkfs.xfs", "-q", "-f", "-m", "reflink=1"});
}

Mount::Mount(const std::string& dir, const LoopExt3Times& fs) : dir_(dir) {
  loop_mount(fs.image, fs.size_mib, {"mkfs.ext4", "-q", "-F", "-I", "128"});
}

Mount::Mount(const std::string& dir, const LoopExt4& fs) : dir_(dir) {
  loop_mount(fs.image, fs.size_mib, {"mkfs.ext4", "-q", "-F"},
             {"mount", "-o", fs.options.empty() ? "loop" : "loop," + fs.options});
}

Mount::Mount(const std::string& dir, const LoopImage& fs) : dir_(dir) {
  make_dirs(dir);
  if (::geteuid() != 0) {
    why_ = "needs root to loop-mount a file system image";
    return;
  }
  RunResult r = run({"mount", "-o", "loop", fs.image, dir});
  mounted_ = r.status == 0;
  if (!mounted_) why_ = "mount failed: " + r.err.substr(0, r.err.find('\n'));
}

bool cut_power(const std::string& dir) {
  UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  uint32_t flags = 2;  // XFS_FSOP_GOING_FLAGS_NOLOGFLUSH, EXT4_GOING_FLAGS_NOLOGFLUSH
  return fd && ::ioctl(fd.get(), _IOR('X', 125, uint32_t), &flags) == 0;
}

Mount::Mount(const std::string& dir, const FuseFat& fs) : dir_(dir) {
  if (::access("/dev/fuse", R_OK | W_OK) != 0) {
    make_dirs(dir);
    why_ = "no /dev/fuse here";
    return;
  }
  loop_mount(fs.image, fs.size_mib, {"mkfs.vfat"}, {"fusefat", "-o", "rw+"});
}

Mount::Mount(const std::string& dir, const FuseExfat& fs) : dir_(dir) {
  if (::access("/dev/fuse", R_OK | W_OK) != 0) {
    make_dirs(dir);
    why_ = "no /dev/fuse here";
    return;
  }
  loop_mount(fs.image, fs.size_mib, {"mkfs.exfat"}, {"mount", "-t", "exfat-fuse", "-o", "loop"});
}

Mount::Mount(const std::string& dir, const BindFs& fs) : dir_(dir) {
  make_dirs(dir);
  if (::geteuid() != 0 || ::access("/dev/fuse", R_OK | W_OK) != 0) {
    why_ = "needs root and /dev/fuse to mount through FUSE";
    return;
  }
  RunResult r = run({"bindfs", fs.target, dir});
  mounted_ = r.status == 0;
  if (!mounted_) why_ = "bindfs cannot mount " + fs.target + " (is its package installed?): " + r.err;
}

void Mount::loop_mount(const std::string& image_path, unsigned size_mib, std::vector<std::string> mkfs,
                       std::vector<std::string> mount) {
  make_dirs(dir_);
  if (::geteuid() != 0) {
    why_ = "needs root to loop-mount a file system image";
    return;
  }
  UniqueFd image(::open(image_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!image || ::ftruncate(image.get(), off_t(size_mib) << 20) != 0) {
    why_ = fmt::format("cannot make {}: {}", image_path, std::strerror(errno));
    return;
  }
  image.reset();
  auto first_line = [](const std::string& text) { return text.substr(0, text.find('\n')); };
  std::string tool = mkfs.front();
  mkfs.push_back(image_path);
  RunResult r = run(mkfs);
  if (r.status != 0) {
    why_ = tool + " failed (is its package installed?): " + first_line(r.err);
    return;
  }
  std::string how = mount.front();
  mount.push_back(image_path);
  mount.push_back(dir_);
  r = run(mount);
  mounted_ = r.status == 0;
  if (!mounted_) why_ = how + " cannot mount " + image_path + " (is its package installed?): " + first_line(r.err);
}

Mount::~Mount() {
  if (mounted_ && ::umount2(dir_.c_str(), 0) != 0) ::umount2(dir_.c_str(), MNT_DETACH);
}

std::optional<std::string> get_xattr(const std::string& path, const std::string& name) {
  std::string value(65536, '\0');
  ssize_t n = ::lgetxattr(path.c_str(), name.c_str(), value.data(), value.size());
  if (n < 0) return std::nullopt;
  value.resize(static_cast<size_t>(n));
  return value;
}

bool exists(const std::string& path) {
  Located loc = locate(path);
  struct stat st {};
  return ::fstatat(loc.dirfd, loc.name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0;
}

std::string read_link(const std::string& path) {
  Located loc = locate(path);
  struct stat st {};
  if (::fstatat(loc.dirfd, loc.name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) fail("cannot lstat", path, errno);
  if (!S_ISLNK(st.st_mode)) fail("not a symlink:", path, EINVAL);
  return read_link_at(loc.dirfd, loc.name);
}

std::string random_bytes(size_t n, unsigned seed) {
  // splitmix64: fast even in a Debug build, and the same bytes for the same seed everywhere.
  uint64_t state = seed * 0x9E3779B97F4A7C15ULL + 1;
  std::string bytes(n, '\0');
  for (size_t i = 0; i < n; i += 8) {
    uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z ^= z >> 31;
    std::memcpy(bytes.data() + i, &z, std::min<size_t>(8, n - i));
  }
  return bytes;
}

std::vector<std::string> list_tree(const std::string& root) {
  std::vector<std::string> paths;
  TreeCursor cursor(root);
  walk(
      cursor,
      [&](TreeCursor& c) {
        std::vector<std::string> subdirs;
        for (auto& entry : read_dir(c.fd(), c.rel())) {
          paths.push_back(c.rel_of(entry.name));
          if (entry.type == DT_DIR) subdirs.push_back(entry.name);
        }
        return subdirs;
      },
      [](TreeCursor&, const std::string&) {});
  std::sort(paths.begin(), paths.end());
  return paths;
}

void make_deep_dirs(const std::string& root, size_t depth, const std::string& component) {
  TreeCursor cursor(root);
  for (size_t level = 0; level < depth; ++level) {
    if (::mkdirat(cursor.fd(), component.c_str(), 0755) != 0 && errno != EEXIST) {
      fail("cannot create directory", cursor.rel_of(component), errno);
    }
    if (int err = cursor.descend(component); err != 0) fail("cannot enter", cursor.rel_of(component), err);
  }
}

void chown_tree(const std::string& root, uid_t uid, gid_t gid) {
  if (::lchown(root.c_str(), uid, gid) != 0) fail("cannot chown", root, errno);
  TreeCursor cursor(root);
  walk(
      cursor,
      [&](TreeCursor& c) {
        std::vector<std::string> subdirs;
        for (auto& entry : read_dir(c.fd(), c.rel())) {
          if (::fchownat(c.fd(), entry.name.c_str(), uid, gid, AT_SYMLINK_NOFOLLOW) != 0) {
            fail("cannot chown", c.rel_of(entry.name), errno);
          }
          if (entry.type == DT_DIR) subdirs.push_back(entry.name);
        }
        return subdirs;
      },
      [](TreeCursor&, const std::string&) {});
}

std::string diff_trees(const std::string& a, const std::string& b, const CompareOptions& options) {
  return Differ(options).run(a, b);
}

std::vector<std::string> lines_of(std::string_view text) {
  std::vector<std::string> lines;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = std::min(text.find('\n', start), text.size());
    lines.emplace_back(text.substr(start, end - start));
    start = end + 1;
  }
  return lines;
}

bool has_line(std::string_view text, std::string_view line) {
  auto lines = lines_of(text);
  return std::find(lines.begin(), lines.end(), line) != lines.end();
}

bool has_line_starting(std::string_view text, std::string_view prefix) {
  for (auto& line : lines_of(text))
    if (line.starts_with(prefix)) return true;
  return false;
}

std::string describe(const RunResult& r) {
  auto printable = [](std::string_view text) {
    std::string out;
    for (auto& line : lines_of(text)) {
      if (out.size() > 8000) return out + "...\n";
      out += escape_path(line) + "\n";
    }
    return out;
  };
  return fmt::format("exit status {}\n--- stdout ---\n{}--- stderr ---\n{}", r.status, printable(r.out),
                     printable(r.err));
}

InodeFlags::InodeFlags(const std::string& path) : fd_(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW)) {
  if (fd_ >= 0 && ::ioctl(fd_, FS_IOC_GETFLAGS, &flags_) != 0) {
    ::close(fd_);
    fd_ = -1;
  }
}

InodeFlags::~InodeFlags() {
  restore();
  if (fd_ >= 0) ::close(fd_);
}

bool InodeFlags::add(int flag) {
  int with = 0;
  if (fd_ < 0 || ::ioctl(fd_, FS_IOC_GETFLAGS, &with) != 0) return false;
  with |= flag;
  if (::ioctl(fd_, FS_IOC_SETFLAGS, &with) != 0) return false;
  changed_ = true;
  return true;
}

void InodeFlags::restore() {
  if (std::exchange(changed_, false)) ::ioctl(fd_, FS_IOC_SETFLAGS, &flags_);
}

RunOptions unprivileged(const TempDir& tmp) {
  RunOptions options;
  if (::geteuid() == 0) {
    chown_tree(tmp.path(), 65534, 65534);
    options.uid = 65534;
  }
  return options;
}

}  // namespace pcopy::test
