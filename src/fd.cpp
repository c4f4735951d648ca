#include "pcopy/fd.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
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
unsigned filled_standard_fds = 0;  // bit N: descriptor N was closed, and holds /dev/null
}  // namespace

void reserve_standard_fds() {
  for (int fd = 0; fd < 3; ++fd)  // each open takes the lowest free number: the one that is closed
    if (::fcntl(fd, F_GETFD) < 0 && errno == EBADF && ::open("/dev/null", fd == 0 ? O_WRONLY : O_RDONLY) == fd)
      filled_standard_fds |= 1u << fd;
}

std::string_view closed_standard_stream(std::string_view path) {
  static constexpr std::string_view names[] = {"standard input", "standard output", "standard error"};
  int fd = -1;
  if (path == "/dev/stdin") fd = 0;
  if (path == "/dev/stdout") fd = 1;
  if (path == "/dev/stderr") fd = 2;
  std::string own = "/proc/" + std::to_string(::getpid()) + "/fd/";
  for (std::string_view dir : {std::string_view("/dev/fd/"), std::string_view("/proc/self/fd/"),
                               std::string_view("/proc/thread-self/fd/"), std::string_view(own)}) {
    if (path.size() == dir.size() + 1 && path.starts_with(dir) && path.back() >= '0' && path.back() <= '2')
      fd = path.back() - '0';
  }
  return fd >= 0 && (filled_standard_fds & (1u << fd)) ? names[fd] : std::string_view();
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
