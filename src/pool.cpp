#include "pcopy/pool.hpp"

#include <fcntl.h>
#include <fmt/core.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <system_error>

#include "pcopy/paths.hpp"
#include "pcopy/worker.hpp"

namespace pcopy {

namespace {

// Milliseconds on the monotonic clock.
long now_ms() {
  struct timespec now;
  ::clock_gettime(CLOCK_MONOTONIC, &now);
  return long(now.tv_sec) * 1000 + now.tv_nsec / 1000000;
}

// Closes every descriptor from `first` up where close_range is missing (kernels before 5.9): those
// /proc lists, or without /proc each number below the limit on open files.
void close_from(int first) {
  int dir = ::open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir < 0) {
    struct rlimit limit {};
    rlim_t top = ::getrlimit(RLIMIT_NOFILE, &limit) == 0 ? std::min<rlim_t>(limit.rlim_cur, 1 << 20) : 1024;
    for (rlim_t fd = rlim_t(first); fd < top; ++fd) ::close(int(fd));
    return;
  }
  for_each_entry(dir, [&](const char* name, unsigned char) {
    int fd = std::atoi(name);  // "." and "..": 0
    if (fd >= first && fd != dir) ::close(fd);
  });
  ::close(dir);
}

// In the child: puts `fds` at 3, 4, 5, … and closes everything else above 2. A forked worker
// inherits every descriptor the parent holds (close-on-exec does nothing without exec), and a job
// pipe held open by a sibling would keep EOF from ever arriving.
void renumber_fds(const std::vector<int>& fds) {
  // First lift every wanted fd above the target range (the first free numbers past it: a tight
  // RLIMIT_NOFILE leaves no room for anything higher), then put each in place.
  int base = 3 + int(fds.size());
  std::vector<int> tmp;
  for (int fd : fds) tmp.push_back(fd < 0 ? -1 : ::fcntl(fd, F_DUPFD, base));
  for (size_t i = 0; i < tmp.size(); ++i)
    if (tmp[i] >= 0) ::dup2(tmp[i], 3 + int(i));  // dup2 clears FD_CLOEXEC on the copy
  if (::close_range(unsigned(base), ~0u, 0) != 0) close_from(base);
  for (size_t i = 0; i < tmp.size(); ++i)
    if (tmp[i] < 0) ::close(3 + int(i));
}

// The parent's SIGPIPE (ignored) and SIGCHLD back to their defaults; the signals that end a
// process keep what pcopy inherited (the parent only blocks them): ignored stays ignored.
void reset_signals_in_child() {
  struct sigaction sa {};
  sa.sa_handler = SIG_DFL;
  for (int sig : {SIGCHLD, SIGPIPE}) ::sigaction(sig, &sa, nullptr);
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
}

}  // namespace

Pool::Pool(unsigned workers, std::vector<int> keep_fds, WorkerMain worker_main)
    : slots_(workers), keep_fds_(std::move(keep_fds)), worker_main_(std::move(worker_main)) {
  static_assert(std::atomic<uint64_t>::is_always_lock_free && std::atomic<uint32_t>::is_always_lock_free,
                "memory shared between processes needs no lock");
  shared_bytes_ = std::max<size_t>(workers, 1) * sizeof(WorkerShared);
  void* map = ::mmap(nullptr, shared_bytes_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (map != MAP_FAILED) shared_ = new (map) WorkerShared[std::max<size_t>(workers, 1)];
  for (size_t i = 0; i < slots_.size() && !start_error_; ++i) start_error_ = spawn(i);
}

std::string_view Pool::unsent(size_t i) const {
  if (!shared_) return {};
  size_t n = std::min<size_t>(shared_[i].unsent.load(std::memory_order_acquire), WorkerShared::kUnsentBytes);
  return {shared_[i].frames, n};
}

size_t Pool::live() const {
  return size_t(std::count_if(slots_.begin(), slots_.end(), [](const WorkerSlot& s) { return s.pid > 0; }));
}

Pool::~Pool() {
  close_jobs();
  shutdown(0);
  if (shared_) ::munmap(shared_, shared_bytes_);
}

int Pool::spawn(size_t i) {
  WorkerSlot& s = slots_[i];
  Pipe jobs, results;
  try {
    jobs = make_pipe();
    results = make_pipe();
  } catch (const std::system_error& e) {
    return e.code().value();
  }
  if (shared_) {
    shared_[i].in_hand.store(0, std::memory_order_relaxed);
    shared_[i].unsent.store(0, std::memory_order_relaxed);
  }
  pid_t parent = ::getpid();
  std::fflush(nullptr);  // nothing buffered may be written twice
  pid_t pid = ::fork();
  if (pid < 0) return errno;
  if (pid == 0) {
    // Nothing may escape a forked child: every path ends in _exit.
    int status = kWorkerCrashed;
    try {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(0);  // the parent died before prctl took effect
      ::setpgid(0, 0);                        // a terminal's Ctrl-C reaches only the parent
      reset_signals_in_child();
      std::vector<int> fds{jobs.read.get(), results.write.get()};
      fds.insert(fds.end(), keep_fds_.begin(), keep_fds_.end());
      renumber_fds(fds);
      jobs.read.release(), jobs.write.release(), results.read.release(), results.write.release();
      for (auto& other : slots_) other.jobs.release(), other.results.release();
      status = worker_main_(3, 4, shared_ ? &shared_[i] : nullptr);
    } catch (...) {
    }
    ::_exit(status);
  }
  ::setpgid(pid, pid);  // also from the parent, so it holds before either side runs on
  s.pid = pid;
  s.jobs = std::move(jobs.write);
  s.results = std::move(results.read);
  set_nonblocking(s.jobs.get(), true);
  set_nonblocking(s.results.get(), true);
  s.out.clear();
  s.reader = FrameReader();
  s.held.clear();
  s.garbled = false;
  return 0;
}

void Pool::send(size_t i, const std::string& frame) {
  slots_[i].out += frame;
  flush(i);
}

bool Pool::flush(size_t i) {
  WorkerSlot& s = slots_[i];
  size_t done = 0;
  while (done < s.out.size() && s.jobs) {
    ssize_t n = ::write(s.jobs.get(), s.out.data() + done, s.out.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) break;
      s.out.erase(0, done);
      return false;  // EPIPE: the worker died; its EOF will be seen on the result pipe
    }
    done += size_t(n);
  }
  s.out.erase(0, done);
  return true;
}

void Pool::close_jobs() {
  for (auto& s : slots_) s.jobs.reset();
}

int Pool::reap(size_t i, bool block) {
  WorkerSlot& s = slots_[i];
  if (s.pid <= 0) return -1;
  int status = 0;
  pid_t r;
  do r = ::waitpid(s.pid, &status, block ? 0 : WNOHANG);
  while (r < 0 && errno == EINTR);
  if (r == 0) return -1;
  s.pid = -1;
  return r > 0 ? status : 0;  // ECHILD: already reaped elsewhere
}

void Pool::signal_all(int sig) {
  for (auto& s : slots_)
    if (s.pid > 0) ::kill(s.pid, sig);
}

// Reads the result pipes until each is at EOF (a worker closes its pipe only by exiting) or
// `timeout_ms` has passed.
void Pool::await_exits(int timeout_ms) {
  const long start = now_ms();
  for (;;) {
    std::vector<pollfd> fds;
    for (auto& s : slots_)
      if (s.pid > 0 && s.results) fds.push_back({s.results.get(), POLLIN, 0});
    if (fds.empty()) break;
    long waited = now_ms() - start;
    if (waited >= timeout_ms) break;
    if (::poll(fds.data(), fds.size(), int(timeout_ms - waited)) <= 0) continue;
    for (auto& s : slots_) {
      if (s.pid <= 0 || !s.results) continue;
      char buf[4096];
      ssize_t n = ::read(s.results.get(), buf, sizeof buf);
      if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) s.results.reset();
    }
  }
}

// A worker killed in uninterruptible sleep (I/O to a frozen or unreachable file system) dies only
// when that I/O returns: it is waited for no longer than `timeout_ms`, for the parent never waits
// for ever on a worker. Where the kernel has no pidfd, for as long as it takes.
void Pool::await_deaths(int timeout_ms) {
  std::vector<pollfd> fds;
  for (auto& s : slots_) {
    if (s.pid <= 0) continue;
    int fd = int(::syscall(SYS_pidfd_open, s.pid, 0));
    if (fd >= 0) {
      fds.push_back({fd, POLLIN, 0});
    } else if (errno == ENOSYS) {
      siginfo_t info;
      while (::waitid(P_PID, id_t(s.pid), &info, WEXITED | WNOWAIT) != 0 && errno == EINTR) {
      }
    }
  }
  const long start = now_ms();
  for (size_t left = fds.size(); left > 0;) {
    long waited = now_ms() - start;
    if (waited >= timeout_ms) break;
    if (::poll(fds.data(), fds.size(), int(timeout_ms - waited)) <= 0) continue;
    for (pollfd& p : fds) {
      if (p.fd >= 0 && p.revents) {
        ::close(p.fd);
        p.fd = -1;  // poll passes over it from now on
        --left;
      }
    }
  }
  for (pollfd& p : fds)
    if (p.fd >= 0) ::close(p.fd);
}

void Pool::shutdown(int timeout_ms) {
  await_exits(timeout_ms);
  // Whoever has not exited is killed, and reaped if it dies within kKillWaitMs; else, its parent
  // gone, init reaps it.
  for (auto& s : slots_)
    if (s.pid > 0 && s.results) ::kill(s.pid, SIGKILL);
  await_deaths(kKillWaitMs);
  for (size_t i = 0; i < slots_.size(); ++i) {
    reap(i, false);
    slots_[i].pid = -1;
  }
  for (auto& s : slots_) s.results.reset();
}

std::string describe_wait_status(int status) {
  if (WIFSIGNALED(status))
    return fmt::format("killed by signal {} ({})", WTERMSIG(status), ::strsignal(WTERMSIG(status)));
  if (WIFEXITED(status)) return fmt::format("exited with status {}", WEXITSTATUS(status));
  return "stopped";
}

}  // namespace pcopy
