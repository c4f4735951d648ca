// Small helpers shared by the unit tests: a scratch directory, whole-file I/O through fds, and
// counting this process's open file descriptors.
#pragma once

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

namespace pcopy_test {

// Removes a tree of any depth (far past PATH_MAX) holding one directory fd at a time: goes down
// to a directory with no subdirectories, empties it, climbs back through "..", removes it.
inline void remove_tree(const std::string& top) {
  int cur = ::open(top.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
  if (cur < 0) {
    ::unlink(top.c_str());
    return;
  }
  std::vector<std::string> names;  // path from `top` to `cur`
  for (;;) {
    std::string subdir;
    int dup = ::fcntl(cur, F_DUPFD_CLOEXEC, 0);
    DIR* d = dup >= 0 ? ::fdopendir(dup) : nullptr;
    if (!d) break;
    while (struct dirent* e = ::readdir(d)) {
      std::string n = e->d_name;
      if (n == "." || n == "..") continue;
      struct stat st;
      if (::fstatat(cur, n.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
      if (S_ISDIR(st.st_mode)) {
        if (subdir.empty()) subdir = n;
      } else {
        ::unlinkat(cur, n.c_str(), 0);
      }
    }
    ::closedir(d);
    if (!subdir.empty()) {
      int next = ::openat(cur, subdir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
      if (next < 0) break;
      ::close(cur);
      cur = next;
      names.push_back(subdir);
      continue;
    }
    if (names.empty()) break;
    int parent = ::openat(cur, "..", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    ::close(cur);
    if (parent < 0) return;
    cur = parent;
    if (::unlinkat(cur, names.back().c_str(), AT_REMOVEDIR) != 0) break;  // never loop forever
    names.pop_back();
  }
  ::close(cur);
  ::rmdir(top.c_str());
}

// A fresh directory under $TMPDIR (or /tmp), removed with everything in it at the end.
// `in_memory` puts it on /dev/shm when there is one: tests that create and remove thousands of
// directories stay fast on disks mounted with `discard`.
class TempDir {
 public:
  explicit TempDir(bool in_memory = false) {
    const char* base = std::getenv("TMPDIR");
    std::string dir = base && *base ? base : "/tmp";
    if (in_memory && ::access("/dev/shm", W_OK | X_OK) == 0) dir = "/dev/shm";
    std::string templ = dir + "/pcopy-unit-XXXXXX";
    if (!::mkdtemp(templ.data())) throw std::runtime_error("mkdtemp failed");
    path_ = templ;
  }
  ~TempDir() { remove_tree(path_); }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& rel) const { return path_ + "/" + rel; }

 private:
  std::string path_;
};

inline int open_dir(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) throw std::runtime_error("open_dir " + path + ": " + std::strerror(errno));
  return fd;
}

inline void write_at(int dir, const std::string& name, const std::string& data, mode_t mode = 0644) {
  int fd = ::openat(dir, name.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) throw std::runtime_error("create " + name + ": " + std::strerror(errno));
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n <= 0) throw std::runtime_error("write " + name);
    done += size_t(n);
  }
  ::fchmod(fd, mode);
  ::close(fd);
}

inline void write_file(const std::string& path, const std::string& data, mode_t mode = 0644) {
  write_at(AT_FDCWD, path, data, mode);
}

// Contents of a file, or "<errno text>" wrapped in a marker when it cannot be read.
inline std::string read_at(int dir, const std::string& name) {
  int fd = ::openat(dir, name.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return "<cannot open: " + std::string(std::strerror(errno)) + ">";
  std::string out;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) break;
    out.append(buf, size_t(n));
  }
  ::close(fd);
  return out;
}

inline std::string read_file(const std::string& path) { return read_at(AT_FDCWD, path); }

// Names in a directory, without "." and "..".
inline std::set<std::string> list_at(int dir) {
  std::set<std::string> names;
  int fd = ::openat(dir, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return names;
  DIR* d = ::fdopendir(fd);
  if (!d) {
    ::close(fd);
    return names;
  }
  while (struct dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") names.insert(n);
  }
  ::closedir(d);
  return names;
}

inline std::set<std::string> list_dir(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return {};
  auto names = list_at(fd);
  ::close(fd);
  return names;
}

// Open descriptors of this process (the one used to count them excluded).
inline int open_fd_count() {
  DIR* d = ::opendir("/proc/self/fd");
  if (!d) return -1;
  int n = 0;
  while (struct dirent* e = ::readdir(d))
    if (e->d_name[0] != '.') ++n;
  ::closedir(d);
  return n - 1;
}

inline std::string random_bytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng() & 0xff);
  return s;
}

inline int64_t ns_of(const struct timespec& t) { return int64_t(t.tv_sec) * 1'000'000'000 + t.tv_nsec; }

}  // namespace pcopy_test
