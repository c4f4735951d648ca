#include "pcopy/fd.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>
#include <system_error>
#include <vector>

namespace pcopy {

void UniqueFd::reset(int fd) {
  if (fd_ >= 0) ::close(fd_);  // never retried: the descriptor is gone even on EINTR
  fd_ = fd;
}

int UniqueFd::close_checked() {
  if (fd_ < 0) return 0;
  int rc = ::close(std::exchange(fd_, -1));
  return rc == 0 || errno == EINTR ? 0 : errno;
}

Pipe make_pipe(int extra_flags) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC | extra_flags) != 0) throw std::system_error(errno, std::generic_category(), "pipe2");
  return Pipe{UniqueFd(fds[0]), UniqueFd(fds[1])};
}

namespace {
// The files a closed standard descriptor was filled with, where each is a file of its own (an
// empty memfd): what reopens one (/dev/stdin, /dev/fd/0, /proc/self/fd/0, a link to them) is
// told by its inode.
struct Filled {
  bool set = false;
  dev_t dev = 0;
  ino_t ino = 0;
} filled[3];

// An empty file of its own at `fd` (closed), open for the use opposite to the descriptor's; false
// where none can be made (no memfd, no /proc to reopen it by).
bool fill_with_own_file(int fd) {
  int m = ::memfd_create("pcopy-closed-standard-descriptor", 0);  // the lowest number free: fd
  if (m != fd) {
    if (m >= 0) ::close(m);
    return false;
  }
  std::string path = "/proc/self/fd/" + std::to_string(fd);
  int reopened = ::open(path.c_str(), fd == 0 ? O_WRONLY : O_RDONLY);
  struct stat st;
  if (reopened < 0 || ::dup2(reopened, fd) != fd || ::fstat(fd, &st) != 0) {
    if (reopened >= 0 && reopened != fd) ::close(reopened);
    ::close(fd);
    return false;
  }
  ::close(reopened);
  filled[fd] = {true, st.st_dev, st.st_ino};
  return true;
}
}  // namespace

void reserve_standard_fds() {
  for (int fd = 0; fd < 3; ++fd)  // each open takes the lowest free number: the one that is closed
    if (::fcntl(fd, F_GETFD) < 0 && errno == EBADF && !fill_with_own_file(fd))
      ::open("/dev/null", fd == 0 ? O_WRONLY : O_RDONLY);
}

std::string_view closed_standard_stream(const std::string& path) {
  static constexpr std::string_view names[] = {"standard input", "standard output", "standard error"};
  if (!filled[0].set && !filled[1].set && !filled[2].set) return {};
  // O_PATH: what the name leads to, without opening it (a device is not touched).
  UniqueFd fd(::open(path.c_str(), O_PATH | O_CLOEXEC));
  struct stat st;
  if (!fd || ::fstat(fd.get(), &st) != 0) return {};
  for (int i = 0; i < 3; ++i)
    if (filled[i].set && filled[i].dev == st.st_dev && filled[i].ino == st.st_ino) return names[i];
  return {};
}

namespace {
std::vector<int> inherited;  // the descriptors above 2 pcopy started with
}  // namespace

void count_inherited_fds() {
  inherited.clear();
  if (DIR* dir = ::opendir("/proc/self/fd")) {
    int own = ::dirfd(dir);
    while (const dirent* entry = ::readdir(dir)) {
      char* end = nullptr;
      long fd = std::strtol(entry->d_name, &end, 10);
      if (end != entry->d_name && *end == '\0' && fd > 2 && fd != own) inherited.push_back(int(fd));
    }
    ::closedir(dir);
  } else {  // no /proc: asked of each number the limit allows, up to 65,536
    struct rlimit nofile;
    long limit = ::getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur != RLIM_INFINITY ? long(nofile.rlim_cur) : 65536;
    for (int fd = 3; fd < std::min(limit, 65536L); ++fd)
      if (::fcntl(fd, F_GETFD) >= 0) inherited.push_back(fd);
  }
}

long inherited_fds() {
  // Only those numbered below the limit take its room: it caps the numbers a new one may have.
  struct rlimit nofile;
  if (::getrlimit(RLIMIT_NOFILE, &nofile) != 0 || nofile.rlim_cur == RLIM_INFINITY) return long(inherited.size());
  return long(std::count_if(inherited.begin(), inherited.end(), [&](int fd) { return rlim_t(fd) < nofile.rlim_cur; }));
}

void print_stderr(std::string_view line) {
  std::string text(line);
  text.push_back('\n');
  (void)write_all(STDERR_FILENO, text.data(), text.size());
}

int write_all(int fd, const void* data, size_t size) {
  auto* p = static_cast<const char*>(data);
  while (size > 0) {
    ssize_t n = ::write(fd, p, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    p += n;
    size -= static_cast<size_t>(n);
  }
  return 0;
}

int pwrite_all(int fd, const void* data, size_t size, off_t off) {
  auto* p = static_cast<const char*>(data);
  while (size > 0) {
    ssize_t n = ::pwrite(fd, p, size, off);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    p += n;
    off += n;
    size -= static_cast<size_t>(n);
  }
  return 0;
}

ssize_t read_some(int fd, void* data, size_t size) {
  for (;;) {
    ssize_t n = ::read(fd, data, size);
    if (n >= 0) return n;
    if (errno != EINTR) return -errno;
  }
}

ssize_t read_full(int fd, void* data, size_t size) {
  auto* p = static_cast<char*>(data);
  size_t done = 0;
  while (done < size) {
    ssize_t n = read_some(fd, p + done, size - done);
    if (n < 0) return n;
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  return static_cast<ssize_t>(done);
}

void set_nonblocking(int fd, bool on) {
  int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0) return;
  ::fcntl(fd, F_SETFL, on ? flags | O_NONBLOCK : flags & ~O_NONBLOCK);
}

std::string errno_text(int err) { return std::strerror(err); }

}  // namespace pcopy
