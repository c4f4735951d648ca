// Many independent system calls for the price of one: a thin io_uring wrapper. On virtual machines a
// system call's entry and exit cost a microsecond, an eighth of a small file's copy, so workers open
// the sources of a batch and close its descriptors in one submission each. Only operations that
// io_uring runs inline are used: creating, renaming and reading go to kernel worker threads there,
// which costs more than it saves.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <vector>

struct io_uring;
struct io_uring_sqe;

namespace pcopy {

class Ring {
 public:
  // Null when the kernel has no io_uring or forbids it (seccomp, kernel.io_uring_disabled).
  static std::unique_ptr<Ring> create(unsigned entries);
  ~Ring();
  Ring(const Ring&) = delete;
  Ring& operator=(const Ring&) = delete;

  // False once the ring failed as a whole: what is queued then is answered -ECANCELED.
  bool usable() const { return usable_; }

  // Queue one operation of the next round (at most `entries` of create() per round); each returns its index in run()'s results. The
  // strings must stay alive until run() returns.
  size_t openat(int dir, const char* path, int flags, mode_t mode);
  size_t close(int fd);

  // Submits the round and waits for all of it. Results are what the system calls would have
  // returned, with -errno for errors. If the ring breaks, unfinished operations read -ECANCELED.
  const std::vector<int>& run();

 private:
  Ring();
  ::io_uring_sqe* next_sqe();

  std::unique_ptr<::io_uring> ring_;
  bool usable_ = true;
  std::vector<int> results_;
  size_t queued_ = 0;
};

}  // namespace pcopy
