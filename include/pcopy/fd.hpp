// File descriptors owned by exactly one object, and the EINTR-safe I/O helpers every module uses.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <span>
#include <string>
#include <string_view>
#include <utility>

namespace pcopy {

class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  ~UniqueFd() { reset(); }
  UniqueFd(UniqueFd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) reset(std::exchange(other.fd_, -1));
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  explicit operator bool() const { return valid(); }
  int release() { return std::exchange(fd_, -1); }
  void reset(int fd = -1);
  // Closes and reports close()'s error (0 or an errno); close is never retried on EINTR.
  int close_checked();

 private:
  int fd_ = -1;
};

struct Pipe {
  UniqueFd read;
  UniqueFd write;
};
// pipe2(O_CLOEXEC | extra_flags); throws std::system_error on failure.
Pipe make_pipe(int extra_flags = 0);

// A closed standard descriptor (0-2) would be handed out by the next open, and what is meant for
// stderr written into a manifest: each closed one is filled with an empty file of its own (a memfd;
// /dev/null without /proc) opened against its use (read-only for 1 and 2), so writes to a closed
// stdout or stderr still fail, with EBADF, as gnulib's stdopen does.
void reserve_standard_fds();
// Where `path` leads to a standard descriptor (/dev/stdin, /dev/fd/1, /proc/self/fd/2, any other
// spelling, a link to one) that was closed when pcopy started, reserve_standard_fds() having
// filled it: its name ("standard input"), for an option file given so is missing, not empty.
// Else "".
std::string_view closed_standard_stream(const std::string& path);
// Notes the descriptors above 2 that pcopy was started with (leaked by a CI runner, a daemon, a
// `subprocess` with close_fds=False): those below RLIMIT_NOFILE take its room like pcopy's own.
// Called once, before pcopy opens anything; inherited_fds() counts them (0 if never called).
void count_inherited_fds();
long inherited_fds();
// Writes `line` and a newline to stderr; a failure is ignored (there is nowhere left to say it).
void print_stderr(std::string_view line);

// Full read/write with EINTR retried. write_all returns 0 or an errno. read_some returns bytes read,
// 0 at EOF, or -errno.
int write_all(int fd, const void* data, size_t size);
// write_all at offset `off` (pwrite), the file's position left alone.
int pwrite_all(int fd, const void* data, size_t size, off_t off);
ssize_t read_some(int fd, void* data, size_t size);
// Reads until `size` bytes or EOF; returns bytes read or -errno.
ssize_t read_full(int fd, void* data, size_t size);

void set_nonblocking(int fd, bool on);

// errno as the OS's text ("Permission denied").
std::string errno_text(int err);

}  // namespace pcopy
