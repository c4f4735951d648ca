// Fault injection (issue 4): worker deaths, signals to the parent, a full disk, symlinks planted in the
// destination, extreme paths and names, a tight descriptor limit, refused inputs. Every test checks the
// outcome on disk: whatever is present under a final name is complete and byte-identical to SRC, and no
// temporary (.pcopy-<pid>-<n>.tmp) is left unless the test says so.
//
// Tests that must act while pcopy is mid-copy start it asynchronously (AsyncPcopy) and poll the file
// system and /proc for a condition, bounded by a deadline. To act at a moment that is certainly
// mid-file, the processes are frozen with SIGSTOP, the condition is re-checked while nothing can move,
// and only then is the fault injected; nothing depends on a sleep being long enough.

#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <linux/fs.h>
#include <linux/magic.h>
#include <sys/vfs.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <termios.h>
#include <unistd.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <fstream>
#include <functional>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <regex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "harness.hpp"
#include "pcopy/fd.hpp"

extern char** environ;

namespace pcopy::test {
namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr std::string_view kTempPrefix = ".pcopy-";
constexpr std::string_view kTempSuffix = ".tmp";

// ---------------------------------------------------------------------------------------------------
// Output and small file-system helpers.

size_t count_lines_containing(std::string_view text, std::string_view needle) {
  size_t n = 0;
  for (auto& line : lines_of(text))
    if (line.find(needle) != std::string::npos) ++n;
  return n;
}

std::string base_name(std::string_view rel) {
  size_t slash = rel.rfind('/');
  return std::string(slash == std::string_view::npos ? rel : rel.substr(slash + 1));
}

bool is_temp_name(std::string_view name) {
  return name.size() > kTempPrefix.size() + kTempSuffix.size() && name.starts_with(kTempPrefix) &&
         name.ends_with(kTempSuffix);
}

// The worker pid in ".pcopy-<pid>-<n>.tmp", or -1.
pid_t temp_owner(std::string_view name) {
  if (!is_temp_name(name)) return -1;
  std::string_view rest = name.substr(kTempPrefix.size());
  size_t dash = rest.find('-');
  if (dash == 0 || dash == std::string_view::npos) return -1;
  pid_t pid = 0;
  for (char c : rest.substr(0, dash)) {
    if (c < '0' || c > '9') return -1;
    pid = pid * 10 + (c - '0');
  }
  return pid;
}

// Temporaries anywhere below root (relative paths).
std::vector<std::string> temporaries(const std::string& root) {
  std::vector<std::string> temps;
  for (auto& rel : list_tree(root))
    if (is_temp_name(base_name(rel))) temps.push_back(rel);
  return temps;
}

// Temporaries directly in `dir` (names); cheap enough to poll.
std::vector<std::string> temporaries_in(const std::string& dir) {
  std::vector<std::string> temps;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return temps;
  while (dirent* e = ::readdir(d))
    if (is_temp_name(e->d_name)) temps.emplace_back(e->d_name);
  ::closedir(d);
  return temps;
}

std::string joined(const std::vector<std::string>& items) {
  std::string out;
  for (auto& item : items) out += escape_path(item) + "\n";
  return out;
}

struct stat lstat_or_zero(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) st.st_mode = 0;
  return st;
}

// Empty when the two files have the same bytes; otherwise what differs. Streams, never holds a file.
std::string compare_contents(const std::string& a, const std::string& b) {
  UniqueFd fa(::open(a.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  UniqueFd fb(::open(b.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (!fa || !fb) return fmt::format("cannot open {}", escape_path(!fa ? a : b));
  std::vector<char> ba(1 << 20), bb(1 << 20);
  for (long long offset = 0;;) {
    ssize_t na = read_full(fa.get(), ba.data(), ba.size());
    ssize_t nb = read_full(fb.get(), bb.data(), bb.size());
    if (na < 0 || nb < 0) return "read error";
    if (na != nb || std::memcmp(ba.data(), bb.data(), size_t(na)) != 0) {
      return fmt::format("content differs near byte {} ({} vs {} bytes in this chunk)", offset, na, nb);
    }
    if (na == 0) return "";
    offset += na;
  }
}

// Every regular file under a final name in dst must be complete: a byte-identical copy of its
// counterpart in src. Returns one line per violation.
// Whether `rel` is a temporary or inside one (a staged directory not yet renamed into place).
bool in_temporary(std::string_view rel) {
  for (size_t start = 0; start <= rel.size();) {
    size_t slash = rel.find('/', start);
    if (slash == std::string_view::npos) slash = rel.size();
    if (is_temp_name(rel.substr(start, slash - start))) return true;
    start = slash + 1;
  }
  return false;
}

std::string incomplete_final_files(const std::string& src, const std::string& dst) {
  std::string problems;
  for (auto& rel : list_tree(dst)) {
    if (in_temporary(rel)) continue;
    struct stat d = lstat_or_zero(dst + "/" + rel);
    if (!S_ISREG(d.st_mode)) continue;
    struct stat s = lstat_or_zero(src + "/" + rel);
    if (!S_ISREG(s.st_mode)) {
      problems += escape_path(rel) + ": in DST but not a file in SRC\n";
      continue;
    }
    if (s.st_size != d.st_size) {
      problems += fmt::format("{}: {} bytes, SRC has {}\n", escape_path(rel), d.st_size, s.st_size);
      continue;
    }
    if (std::string diff = compare_contents(src + "/" + rel, dst + "/" + rel); !diff.empty()) {
      problems += escape_path(rel) + ": " + diff + "\n";
    }
  }
  return problems;
}

size_t count_regular_files(const std::string& root) {
  size_t n = 0;
  for (auto& rel : list_tree(root))
    if (S_ISREG(lstat_or_zero(root + "/" + rel).st_mode) && !is_temp_name(base_name(rel))) ++n;
  return n;
}

// A 1 MiB block of noise, shared by every big file; each MiB gets a header naming file and chunk, so
// a chunk written at the wrong offset or into the wrong file is caught.
const std::string& noise_block() {
  static const std::string block = random_bytes(1 << 20, 4242);
  return block;
}

void write_big_file(const std::string& path, size_t mib, unsigned id) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  ASSERT_TRUE(fd) << path << ": " << std::strerror(errno);
  std::string block = noise_block();
  for (size_t i = 0; i < mib; ++i) {
    std::string header = fmt::format("<file {:06} chunk {:06}>", id, i);
    std::memcpy(block.data(), header.data(), header.size());
    ASSERT_EQ(write_all(fd.get(), block.data(), block.size()), 0) << path;
  }
}

// The times of `path`'s parent survive the removal of `path`, so the trees still compare equal.
void remove_keeping_parent_times(const std::string& path) {
  std::string parent = path.substr(0, path.rfind('/'));
  struct stat st = lstat_or_zero(parent);
  ASSERT_EQ(::unlink(path.c_str()), 0) << escape_path(path);
  set_times(parent, st.st_atim.tv_sec * 1'000'000'000LL + st.st_atim.tv_nsec,
            st.st_mtim.tv_sec * 1'000'000'000LL + st.st_mtim.tv_nsec);
}

RunOptions with_timeout(int seconds) {
  RunOptions options;
  options.timeout_s = seconds;
  return options;
}

template <typename Pred>
bool poll_until(Clock::time_point deadline, Pred pred) {
  for (;;) {
    if (pred()) return true;
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(1ms);
  }
}

// ---------------------------------------------------------------------------------------------------
// Processes, seen through /proc.

struct ProcInfo {
  char state = '?';
  pid_t ppid = 0;
  unsigned long long start_time = 0;  // clock ticks after boot: tells a reused pid apart
};

std::optional<ProcInfo> proc_info(pid_t pid) {
  UniqueFd fd(::open(fmt::format("/proc/{}/stat", pid).c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return std::nullopt;
  char buf[1024];
  ssize_t n = read_full(fd.get(), buf, sizeof buf - 1);
  if (n <= 0) return std::nullopt;
  std::string text(buf, size_t(n));
  size_t paren = text.rfind(')');  // the command name may contain anything
  if (paren == std::string::npos) return std::nullopt;
  std::vector<std::string> fields;
  size_t pos = paren + 2;
  while (pos < text.size()) {
    size_t end = std::min(text.find(' ', pos), text.size());
    fields.push_back(text.substr(pos, end - pos));
    pos = end + 1;
  }
  if (fields.size() < 20) return std::nullopt;
  ProcInfo info;
  info.state = fields[0].empty() ? '?' : fields[0][0];
  info.ppid = static_cast<pid_t>(std::stol(fields[1]));
  info.start_time = std::stoull(fields[19]);
  return info;
}

bool is_dead(char state) { return state == 'Z' || state == 'X' || state == 'x'; }

struct Proc {
  pid_t pid;
  unsigned long long start_time;
};

// A process that exists and has not exited (a zombie has exited).
bool alive(const Proc& p) {
  auto info = proc_info(p.pid);
  return info && info->start_time == p.start_time && !is_dead(info->state);
}

// Live children of `parent`: /proc/<pid>/task/<pid>/children when the kernel has it, else a scan.
std::vector<Proc> children_of(pid_t parent) {
  std::vector<pid_t> pids;
  UniqueFd fd(::open(fmt::format("/proc/{}/task/{}/children", parent, parent).c_str(), O_RDONLY | O_CLOEXEC));
  if (fd) {
    std::string text(65536, '\0');
    ssize_t n = read_full(fd.get(), text.data(), text.size());
    text.resize(n > 0 ? size_t(n) : 0);
    size_t pos = 0;
    while (pos < text.size()) {
      size_t end = std::min(text.find(' ', pos), text.size());
      if (end > pos) pids.push_back(static_cast<pid_t>(std::stol(text.substr(pos, end - pos))));
      pos = end + 1;
    }
  } else if (DIR* d = ::opendir("/proc")) {
    while (dirent* e = ::readdir(d)) {
      char* endp = nullptr;
      long pid = std::strtol(e->d_name, &endp, 10);
      if (endp == e->d_name || *endp != '\0') continue;
      if (auto info = proc_info(static_cast<pid_t>(pid)); info && info->ppid == parent) pids.push_back(pid_t(pid));
    }
    ::closedir(d);
  }
  std::vector<Proc> children;
  for (pid_t pid : pids) {
    auto info = proc_info(pid);
    if (info && info->ppid == parent && !is_dead(info->state)) children.push_back({pid, info->start_time});
  }
  return children;
}

// SIGSTOP and wait until the process is really stopped (or gone). True when it is stopped.
bool stop_process(pid_t pid) {
  if (::kill(pid, SIGSTOP) != 0) return false;
  bool stopped = false;
  poll_until(Clock::now() + 5s, [&] {
    auto info = proc_info(pid);
    if (!info || is_dead(info->state)) return true;
    stopped = info->state == 'T' || info->state == 't';
    return stopped;
  });
  return stopped;
}

// Copies of every pipe descriptor `pid` holds (pidfd_getfd, Linux 5.6; none where unavailable), so
// the pipes stay open after it dies.
std::vector<UniqueFd> hold_pipes_of(pid_t pid) {
  std::vector<UniqueFd> held;
  UniqueFd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
  if (!pidfd) return held;
  std::string fd_dir = fmt::format("/proc/{}/fd", pid);
  DIR* d = ::opendir(fd_dir.c_str());
  if (d == nullptr) return held;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    char target[256];
    ssize_t n = ::readlink((fd_dir + "/" + e->d_name).c_str(), target, sizeof target - 1);
    if (n <= 0 || !std::string_view(target, size_t(n)).starts_with("pipe:")) continue;
    int fd = static_cast<int>(::syscall(SYS_pidfd_getfd, pidfd.get(), std::atoi(e->d_name), 0));
    if (fd >= 0) held.emplace_back(fd);
  }
  ::closedir(d);
  return held;
}

// pcopy started without waiting for it; stdout and stderr go to files in `log_dir`, so nothing can
// block on a full pipe while the test looks at the disk (unless `stdout_fifo` names a FIFO for
// stdout, whose reader the test holds). Killed (with its workers) if still running when destroyed.
class AsyncPcopy {
 public:
  // `ignored`: signals pcopy starts with ignored (as under nohup, or a script's `trap ''`). `uid`:
  // run as that user (group 65534), as unprivileged() gives it. `blocked`: signals it starts with
  // blocked (a launcher's mask). `nofile`: its open-file limit, soft and hard; `nproc`, its process
  // limit (`ulimit -u`, which counts every process of the uid).
  AsyncPcopy(const std::vector<std::string>& args, const std::string& log_dir,
             const std::vector<std::string>& extra_env = {}, const std::string& stdout_fifo = "",
             const std::vector<int>& ignored = {}, std::optional<uid_t> uid = {}, const std::vector<int>& blocked = {},
             std::optional<long> nofile = {}, std::optional<long> nproc = {})
      : out_path_(stdout_fifo.empty() ? log_dir + "/stdout" : stdout_fifo),
        err_path_(log_dir + "/stderr"),
        out_fifo_(!stdout_fifo.empty()) {
    std::vector<std::string> argv{pcopy_bin()};
    argv.insert(argv.end(), args.begin(), args.end());
    std::vector<std::string> env;
    for (char** e = environ; *e != nullptr; ++e) env.emplace_back(*e);
    for (auto& entry : extra_env) {
      std::string key = entry.substr(0, entry.find('=') + 1);
      std::erase_if(env, [&](const std::string& e) { return e.starts_with(key); });
      env.push_back(entry);
    }
    std::vector<char*> c_argv, c_env;
    for (auto& a : argv) c_argv.push_back(a.data());
    c_argv.push_back(nullptr);
    for (auto& e : env) c_env.push_back(e.data());
    c_env.push_back(nullptr);
    int in = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    int out = ::open(out_path_.c_str(), O_WRONLY | O_CLOEXEC | (out_fifo_ ? 0 : O_CREAT | O_TRUNC), 0644);
    int err = ::open(err_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (in < 0 || out < 0 || err < 0) throw std::runtime_error("AsyncPcopy: cannot open its files");
    std::fflush(nullptr);
    pid_ = ::fork();
    if (pid_ == 0) {
      // Async-signal-safe calls only until exec.
      if (::dup2(in, 0) < 0 || ::dup2(out, 1) < 0 || ::dup2(err, 2) < 0) ::_exit(127);
      ::close_range(3, ~0U, 0);
      ::setpgid(0, 0);
      sigset_t mask;
      sigemptyset(&mask);
      for (int sig : blocked) sigaddset(&mask, sig);
      ::sigprocmask(SIG_SETMASK, &mask, nullptr);
      for (int sig : {SIGPIPE, SIGINT, SIGTERM}) ::signal(sig, SIG_DFL);
      for (int sig : ignored) ::signal(sig, SIG_IGN);
      rlimit files{rlim_t(nofile.value_or(0)), rlim_t(nofile.value_or(0))};
      if (nofile && ::setrlimit(RLIMIT_NOFILE, &files) != 0) ::_exit(127);
      rlimit procs{rlim_t(nproc.value_or(0)), rlim_t(nproc.value_or(0))};
      if (nproc && ::setrlimit(RLIMIT_NPROC, &procs) != 0) ::_exit(127);
      if (uid && (::setgroups(0, nullptr) != 0 || ::setresgid(65534, 65534, 65534) != 0 ||
                  ::setresuid(*uid, *uid, *uid) != 0))
        ::_exit(127);
      ::execve(c_argv[0], c_argv.data(), c_env.data());
      ::_exit(127);
    }
    ::close(in);
    ::close(out);
    ::close(err);
    if (pid_ < 0) throw std::runtime_error("AsyncPcopy: fork failed");
  }
  ~AsyncPcopy() {
    if (!status_) kill_everything();
  }
  AsyncPcopy(const AsyncPcopy&) = delete;
  AsyncPcopy& operator=(const AsyncPcopy&) = delete;

  pid_t pid() const { return pid_; }

  // False once it has exited (then reaped).
  bool running() {
    if (status_) return false;
    int status = 0;
    pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_) status_ = decode(status);
    return !status_;
  }

  RunResult wait(std::chrono::seconds timeout = 120s) {
    RunResult result;
    bool done = poll_until(Clock::now() + timeout, [&] { return !running(); });
    if (!done) kill_everything();
    result.status = *status_;
    if (!out_fifo_) result.out = read_file(out_path_);
    result.err = read_file(err_path_);
    if (!done) result.err += fmt::format("\ntest: pcopy did not exit within {} s; killed\n", timeout.count());
    return result;
  }

 private:
  static int decode(int status) {
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
    return -1;
  }
  void kill_everything() {
    std::vector<Proc> workers = children_of(pid_);
    ::kill(pid_, SIGKILL);
    ::kill(pid_, SIGCONT);
    for (auto& w : workers) {
      if (alive(w)) {
        ::kill(w.pid, SIGKILL);
        ::kill(w.pid, SIGCONT);
      }
    }
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    status_ = decode(status);
  }

  std::string out_path_, err_path_;
  bool out_fifo_ = false;
  pid_t pid_ = -1;
  std::optional<int> status_;
};

// pcopy and its workers stopped with SIGSTOP: nothing on disk changes while the test looks at it.
struct Frozen {
  pid_t parent = -1;
  std::vector<Proc> workers;
};

// Freezes the parent first (so no worker can be replaced meanwhile), then every worker. Nothing when
// pcopy has already exited.
std::optional<Frozen> freeze(AsyncPcopy& p) {
  if (!p.running() || !stop_process(p.pid())) return std::nullopt;
  Frozen f;
  f.parent = p.pid();
  f.workers = children_of(p.pid());
  for (auto& w : f.workers) stop_process(w.pid);
  return f;
}

// Files the workers of `parent` are writing directly in `dir`: named temporaries (owned by the pid in
// their name), and unnamed O_TMPFILE files, seen as a worker's descriptor "<dir>/#<inode> (deleted)".
struct Writing {
  pid_t worker;
  std::string name;
  std::string path;  // to stat it by: the temporary, or the worker's /proc/<pid>/fd/<n>
};
// What each descriptor of process `pid` points to: its /proc/<pid>/fd/<n> path and the target.
std::vector<std::pair<std::string, std::string>> open_files_of(pid_t pid) {
  std::vector<std::pair<std::string, std::string>> files;
  std::string fds = fmt::format("/proc/{}/fd", pid);
  DIR* d = ::opendir(fds.c_str());
  if (d == nullptr) return files;
  while (dirent* e = ::readdir(d)) {
    std::string link(PATH_MAX, '\0');
    ssize_t n = ::readlink((fds + "/" + e->d_name).c_str(), link.data(), link.size());
    if (n <= 0) continue;
    link.resize(size_t(n));
    files.emplace_back(fds + "/" + e->d_name, std::move(link));
  }
  ::closedir(d);
  return files;
}

std::vector<Writing> writing_in(pid_t parent, const std::string& dir) {
  std::vector<Writing> found;
  for (const std::string& temp : temporaries_in(dir)) found.push_back({temp_owner(temp), temp, dir + "/" + temp});
  for (const Proc& w : children_of(parent)) {
    for (const auto& [fd_path, link] : open_files_of(w.pid)) {
      if (!link.starts_with(dir + "/#") || !link.ends_with(" (deleted)")) continue;
      if (link.find('/', dir.size() + 1) == std::string::npos) found.push_back({w.pid, link.substr(dir.size() + 1), fd_path});
    }
  }
  return found;
}

// Workers of `parent` with a file open inside a staged directory directly under `dir`.
std::vector<pid_t> writing_staged_in(pid_t parent, const std::string& dir) {
  std::vector<pid_t> found;
  for (const Proc& w : children_of(parent)) {
    for (const auto& [fd_path, link] : open_files_of(w.pid)) {
      if (!link.starts_with(dir + "/")) continue;
      std::string rel = link.substr(dir.size() + 1);
      size_t slash = rel.find('/');
      if (slash != std::string::npos && is_temp_name(rel.substr(0, slash)) &&
          rel.find('/', slash + 1) == std::string::npos && !is_temp_name(rel.substr(slash + 1))) {
        found.push_back(w.pid);
        break;
      }
    }
  }
  return found;
}

std::vector<std::string> names_of(const std::vector<Writing>& writing) {
  std::vector<std::string> names;
  for (const Writing& w : writing) names.push_back(w.name);
  return names;
}

void thaw(const Frozen& f) {
  for (auto& w : f.workers)
    if (alive(w)) ::kill(w.pid, SIGCONT);
  ::kill(f.parent, SIGCONT);
}

// Waits (60 s at most) for pcopy to be writing in `dst`, freezes it and shows `act` the frozen run
// and what it is writing there, then thaws it; again, until `act` sets `caught` or pcopy has ended.
// Returns `caught`.
bool catch_writing(AsyncPcopy& p, const std::string& dst,
                   const std::function<void(const Frozen&, const std::vector<Writing>&, bool& caught)>& act) {
  bool caught = false;
  auto deadline = Clock::now() + 60s;
  while (!caught && p.running() && Clock::now() < deadline) {
    if (!poll_until(deadline, [&] { return !writing_in(p.pid(), dst).empty() || !p.running(); })) break;
    auto frozen = freeze(p);
    if (!frozen) break;
    act(*frozen, writing_in(frozen->parent, dst), caught);
    thaw(*frozen);
  }
  return caught;
}

// Where trees with tens of thousands of entries go: a tmpfs when the test may mount one, else a plain
// directory. Removing them from a disk file system mounted with `discard` takes ~1 ms per entry, which
// would dominate the suite's run time; what is tested does not depend on the file system.
class Scratch {
 public:
  Scratch(const std::string& dir, const std::string& size) : path_(dir) {
    if (::geteuid() == 0) mount_.emplace(dir, Mount::Tmpfs{"size=" + size});
    if (!mount_ || !mount_->mounted()) make_dirs(dir);
  }
  std::string operator/(std::string_view rel) const { return path_ + "/" + std::string(rel); }
  // Whether it is a tmpfs: root could mount one.
  bool tmpfs() const {
    struct statfs fs;
    return ::statfs(path_.c_str(), &fs) == 0 && fs.f_type == TMPFS_MAGIC;
  }

 private:
  std::string path_;
  std::optional<Mount> mount_;
};

bool stopped(pid_t pid) {
  auto info = proc_info(pid);
  return info && (info->state == 'T' || info->state == 't');
}

// Waits until a worker of `p` is stopped (a test hook stops it half-way through a file) and
// returns its pid; -1 if pcopy ended first or `deadline` passed.
pid_t stopped_worker(AsyncPcopy& p, Clock::time_point deadline) {
  pid_t worker = -1;
  poll_until(deadline, [&] {
    for (const Proc& w : children_of(p.pid()))
      if (stopped(w.pid)) worker = w.pid;
    return worker > 0 || !p.running();
  });
  return worker;
}

// ---------------------------------------------------------------------------------------------------
// Fixture: every test runs with -j1, -j2 and -j8. Large source trees are built once per suite and
// shared by the three runs (they are only read).

class FaultsByJobs : public ::testing::TestWithParam<int> {
 protected:
  static void TearDownTestSuite() {
    shared_trees_.clear();
    shared_.reset();
  }

  // The tree `name`, built by `build(root)` the first time it is asked for.
  static std::string shared_tree(const std::string& name, const std::function<void(const std::string&)>& build) {
    if (!shared_) shared_ = std::make_unique<TempDir>();
    auto it = shared_trees_.find(name);
    if (it != shared_trees_.end()) return it->second;
    std::string root = *shared_ / name;
    make_dir(root);
    build(root);
    shared_trees_[name] = root;
    return root;
  }

  std::string jobs() const { return fmt::format("-j{}", GetParam()); }

  // SRC with one 2 MiB file, d/big.bin; DST with an earlier copy of it, which is not that file.
  std::string big_file_over_an_earlier_copy() {
    std::string src = shared_tree("one_big", [](const std::string& root) {
      make_dir(root + "/d");
      write_big_file(root + "/d/big.bin", 2, 1);
    });
    make_dirs(dst + "/d");
    write_file(dst + "/d/big.bin", "the copy of an earlier run\n");
    return src;
  }

  // pcopy --inplace --json from `src` to dst, a worker stopping itself half-way through d/`name`,
  // then signal `sig` to pcopy: the worker is killed once its time to finish up is over, and the
  // file, part-written under its name, must be the one error. The run's result.
  RunResult stop_midway_in_place(const std::string& src, const std::string& name, int sig) {
    AsyncPcopy p({jobs(), "--inplace", "--json", src, dst}, logs, {"PCOPY_TEST_STOP_MIDWAY_NAME=" + name});
    bool sent = stopped_worker(p, Clock::now() + 60s) > 0 && p.running() && ::kill(p.pid(), sig) == 0;
    RunResult r = p.wait();
    EXPECT_TRUE(sent) << "no worker stopped in " << name << "\n" << describe(r);
    EXPECT_EQ(r.status, 128 + sig) << describe(r);
    const std::string line = "pcopy: cannot copy 'd/" + name + "': not copied: pcopy stopped before it was complete";
    EXPECT_TRUE(has_line(r.err, line)) << describe(r);
    auto report = nlohmann::json::parse(r.out, nullptr, false);
    EXPECT_FALSE(report.is_discarded()) << describe(r);
    if (report.is_discarded()) return r;
    EXPECT_EQ(report.at("errors").size(), 1u) << describe(r);
    if (report.at("errors").size() == 1) {
      EXPECT_EQ(report["errors"][0].at("path"), "d/" + name);
    }
    EXPECT_EQ(report.at("files_copied").get<size_t>(), 0u);
    return r;
  }

  // pcopy -jN EXTRA FROM TO with the kill-token hook armed: each token (a name, and the text the
  // hook reads from it, see worker.cpp) kills workers. `all_taken`: every token was used up.
  RunResult copy_killing(const std::string& from, const std::string& to, const std::string& extra,
                         const std::map<std::string, std::string>& tokens, bool& all_taken) {
    std::string dir = tmp / "tokens";
    make_dir(dir);
    for (const auto& [name, text] : tokens) write_file(dir + "/" + name, text);
    RunOptions options;
    options.env = {"PCOPY_TEST_KILL_TOKENS=" + dir};
    options.timeout_s = 120;
    RunResult r = copy(from, to, {extra}, options);
    all_taken = list_tree(dir).empty();
    for (const auto& [name, text] : tokens) ::unlink((dir + "/" + name).c_str());
    ::rmdir(dir.c_str());
    return r;
  }

  // pcopy -jN [extra...] SRC DST
  RunResult copy(const std::string& from, const std::string& to, std::vector<std::string> extra = {},
                 const RunOptions& options = {}) {
    std::vector<std::string> args{jobs()};
    args.insert(args.end(), extra.begin(), extra.end());
    args.push_back(from);
    args.push_back(to);
    return run_pcopy(args, options);
  }

  void expect_complete_copy(const RunResult& r, const std::string& from, const std::string& to) {
    EXPECT_EQ(r.status, 0) << describe(r);
    EXPECT_EQ(diff_trees(from, to), "");
    EXPECT_EQ(joined(temporaries(to)), "") << "temporaries left behind";
  }

  // The files written under a final name are complete, and no temporary remains.
  void expect_no_partial_files(const std::string& from, const std::string& to) {
    EXPECT_EQ(incomplete_final_files(from, to), "");
    EXPECT_EQ(joined(temporaries(to)), "") << "temporaries left behind";
  }

  TempDir tmp;
  std::string logs = tmp / "logs";
  std::string dst = tmp / "dst";

  static inline std::unique_ptr<TempDir> shared_;
  static inline std::map<std::string, std::string> shared_trees_;

  void SetUp() override { make_dir(logs); }
};

// A few hundred small files in nested directories.
void make_small_tree(const std::string& root, int dirs, int files_per_dir) {
  for (int d = 0; d < dirs; ++d) {
    std::string dir = root + fmt::format("/dir{:02}", d);
    make_dir(dir);
    if (d % 3 == 0) make_dir(dir + "/sub");
    for (int f = 0; f < files_per_dir; ++f) {
      std::string file = fmt::format("{}{}/f{:03}", dir, f % 4 == 0 && d % 3 == 0 ? "/sub" : "", f);
      write_file(file, random_bytes(size_t(f * 97 % 5000), unsigned(d * 1000 + f)));
    }
  }
}

// 4 x `mib` MiB files at the top (where the test watches for temporaries) and `small` small files in
// 20 subdirectories.
void make_big_tree(const std::string& root, size_t mib, int small) {
  for (unsigned i = 0; i < 4; ++i) write_big_file(root + fmt::format("/big{}.bin", i), mib, i);
  for (int d = 0; d < (small > 0 ? 20 : 0); ++d) {
    std::string dir = root + fmt::format("/small{:02}", d);
    make_dir(dir);
    for (int f = 0; f < small / 20; ++f) write_file(dir + fmt::format("/s{:04}", f), fmt::format("{}:{}\n", d, f));
  }
}

// ---------------------------------------------------------------------------------------------------
// Worker death.

TEST_P(FaultsByJobs, WorkerKilledByHookOnceIsRetriedAndRunSucceeds) {
#ifndef PCOPY_TEST_HOOKS
  GTEST_SKIP() << "needs a build with -DPCOPY_TEST_HOOKS=ON";
#endif
  std::string src = tmp / "src";
  make_dir(src);
  make_small_tree(src, 6, 40);
  // Two jobs named "victim": a small one that travels in a batch with its siblings, and one big enough
  // to travel alone. Each kills its worker on the first attempt only.
  write_file(src + "/dir01/victim", random_bytes(3000, 1));
  write_file(src + "/dir04/victim", random_bytes((5u << 20) + 3, 2));
  RunOptions options;
  options.env = {"PCOPY_TEST_KILL_ONCE_NAME=victim"};
  options.timeout_s = 120;
  RunResult r = copy(src, dst, {}, options);
  expect_complete_copy(r, src, dst);
  EXPECT_EQ(count_lines_containing(r.err, "cannot copy"), 0u) << describe(r);
}

// A worker that dies with an entry's temporary made, before renaming it into place: the parent
// removes what it left, its job done again by another; with --inplace too, whose links, FIFOs and
// devices still go through a temporary. There, the dead worker's temporary stayed in DST after a
// run that said status 0, until the next run.
TEST_P(FaultsByJobs, AWorkerKilledBeforeInstallingLeavesNoTemporary) {
#ifndef PCOPY_TEST_HOOKS
  GTEST_SKIP() << "needs a build with -DPCOPY_TEST_HOOKS=ON";
#endif
  std::string src = tmp / "src";
  make_dir(src);
  make_small_tree(src, 4, 40);
  make_symlink("old-target", src + "/dir01/link");
  write_file(src + "/dir02/file", "old\n");
  for (std::vector<std::string> mode : {std::vector<std::string>{"--inplace"}, std::vector<std::string>{}}) {
    SCOPED_TRACE(mode.empty() ? "default" : mode[0]);
    std::string to = dst + (mode.empty() ? "-default" : mode[0]);
    RunResult first = copy(src, to, mode);
    ASSERT_EQ(first.status, 0) << describe(first);
    // Their directories are there: the new link and file are made under temporaries, then renamed.
    ASSERT_EQ(::unlink((src + "/dir01/link").c_str()), 0);
    make_symlink("new-target", src + "/dir01/link");
    write_file(src + "/dir02/file", "new, and longer\n");
    // (--inplace writes the file at its name: no temporary.)
    std::vector<std::string> victims{"link"};
    if (mode.empty()) victims.push_back("file");
    for (const std::string& victim : victims) {
      SCOPED_TRACE(victim);
      std::string token = tmp / "token";
      write_file(token, "");
      RunOptions options;
      options.env = {fmt::format("PCOPY_TEST_KILL_BEFORE_INSTALL_NAME={}", victim),
                     "PCOPY_TEST_KILL_BEFORE_INSTALL_TOKEN=" + token};
      RunResult r = copy(src, to, mode, options);
      EXPECT_FALSE(exists(token)) << "no worker died before installing '" << victim << "'\n" << describe(r);
      EXPECT_EQ(count_lines_containing(r.err, " died ("), 1u) << describe(r);
      expect_complete_copy(r, src, to);
    }
  }
}

TEST_P(FaultsByJobs, JobThatKillsWorkersTwiceFailsNamingThePath) {
#ifndef PCOPY_TEST_HOOKS
  GTEST_SKIP() << "needs a build with -DPCOPY_TEST_HOOKS=ON";
#endif
  std::string src = tmp / "src";
  make_dir(src);
  make_small_tree(src, 6, 40);
  write_file(src + "/dir00/sub/poison", random_bytes(2000, 3));     // in a batch
  write_file(src + "/dir05/poison", random_bytes((5u << 20) + 1, 4));  // alone in its batch
  RunOptions options;
  options.env = {"PCOPY_TEST_KILL_NAME=poison"};
  options.timeout_s = 120;
  RunResult r = copy(src, dst, {}, options);
  EXPECT_EQ(r.status, 1) << describe(r);
  for (std::string path : {"dir00/sub/poison", "dir05/poison"}) {
    std::string prefix = fmt::format("pcopy: cannot copy '{}': a worker died copying it", path);
    EXPECT_TRUE(has_line_starting(r.err, prefix)) << "expected a line starting with: " << prefix << "\n" << describe(r);
    EXPECT_FALSE(exists(dst + "/" + path));
  }
  EXPECT_EQ(count_lines_containing(r.err, "also on retry"), 2u) << describe(r);
  EXPECT_EQ(count_lines_containing(r.err, "cannot copy"), 2u) << describe(r);
  // Everything else was copied.
  remove_keeping_parent_times(src + "/dir00/sub/poison");
  remove_keeping_parent_times(src + "/dir05/poison");
  EXPECT_EQ(diff_trees(src, dst), "");
  EXPECT_EQ(joined(temporaries(dst)), "");
}

// Ten 3 MiB files travel in one batch; a worker dies (an OOM kill, a `kill -9`: test tokens) while it
// copies one of them, and another while it copies another on its retry. Neither file killed a worker
// twice, and the other eight none at all: everything is copied and the run succeeds.
TEST_P(FaultsByJobs, UnrelatedWorkerDeathsDoNotFailTheFilesTheyInterrupt) {
#ifndef PCOPY_TEST_HOOKS
  GTEST_SKIP() << "needs a build with -DPCOPY_TEST_HOOKS=ON";
#endif
  std::string src = tmp / "src";
  make_dir(src);
  for (unsigned i = 0; i < 10; ++i) write_file(src + fmt::format("/f{}", i), random_bytes(3u << 20, 100 + i));
  for (std::string uring : {"--no-io-uring", "--progress=never"}) {
    SCOPED_TRACE(uring);
    std::string to = tmp / ("dst" + uring);
    bool all_taken = false;
    RunResult r = copy_killing(src, to, uring, {{"f2", ""}, {"f7", ""}}, all_taken);
    EXPECT_TRUE(all_taken) << "both workers should have died\n" << describe(r);
    expect_complete_copy(r, src, to);
    EXPECT_EQ(count_lines_containing(r.err, "cannot copy"), 0u) << describe(r);
  }
}

// A worker dies half-way through a big file that travels with small ones, after it reported progress
// on it, and so does the next worker to copy it: both deaths are the file's, so it fails, naming it,
// after two deaths (not a third, as if the first had been nobody's); the small files are copied.
TEST_P(FaultsByJobs, AFileThatKillsWorkersAfterReportingProgressFailsAfterTwoDeaths) {
#ifndef PCOPY_TEST_HOOKS
  GTEST_SKIP() << "needs a build with -DPCOPY_TEST_HOOKS=ON";
#endif
  std::string src = tmp / "src";
  make_dir(src);
  for (unsigned i = 0; i < 20; ++i) write_file(src + fmt::format("/s{:02}", i), random_bytes(5000, 200 + i));
  write_big_file(src + "/big.bin", 24, 5);
  for (std::string uring : {"--no-io-uring", "--progress=never"}) {
    SCOPED_TRACE(uring);
    std::string to = tmp / ("dst" + uring);
    bool all_taken = false;
    RunResult r = copy_killing(src, to, uring, {{"big.bin@progress", "2"}}, all_taken);
    EXPECT_TRUE(all_taken) << "two workers should have died\n" << describe(r);
    EXPECT_EQ(r.status, 1) << describe(r);
    EXPECT_TRUE(has_line_starting(r.err, "pcopy: cannot copy 'big.bin': a worker died copying it")) << describe(r);
    EXPECT_EQ(count_lines_containing(r.err, "cannot copy"), 1u) << describe(r);
    EXPECT_FALSE(exists(to + "/big.bin"));
    for (unsigned i = 0; i < 20; ++i) EXPECT_EQ(compare_contents(src + fmt::format("/s{:02}", i), to + fmt::format("/s{:02}", i)), "");
    EXPECT_EQ(joined(temporaries(to)), "");
  }
}

// A chunked file's temporary is named after the parent, which outlives every worker: a second run
// into DST after a worker writing it died (the one that made it, say) keeps it as a
// live run's, and the first run ends whole. Named after that worker, it was removed as a leftover
// and the file failed ("No such file or directory").
TEST_P(FaultsByJobs, ASecondRunKeepsTheChunkedTemporaryOfALiveRun) {
  if (GetParam() == 1) GTEST_SKIP() << "one worker never splits a file";
  std::string src = shared_tree("huge_alone", [](const std::string& root) { write_big_file(root + "/huge.bin", 300, 5); });
  AsyncPcopy p({jobs(), src, dst}, logs, {"PCOPY_TEST_CHUNK_LOCAL=1"});
  bool killed = catch_writing(p, dst, [&](const Frozen& frozen, const std::vector<Writing>& writing, bool& caught) {
    for (auto& [owner, name, path] : writing) {
      // Chunks being written: the worker that made the temporary (empty) has reported it, and the
      // parent renamed it before handing out a chunk.
      if (!is_temp_name(name) || lstat_or_zero(path).st_size == 0) continue;
      std::string prefix = fmt::format(".pcopy-{}-", p.pid());
      EXPECT_EQ(name.rfind(prefix, 0), 0u) << name << ": not named after the parent";
      // Its number holds one drawn for the run (10^9 and up), as every temporary's: a run with the
      // same pid (each run is pid 1 in a container) never meets its names.
      EXPECT_GE(std::stoull(name.substr(prefix.size())), 1'000'000'000ULL) << name;
      for (const Proc& w : frozen.workers) {  // a worker writing it (several may be)
        auto files = open_files_of(w.pid);
        if (std::none_of(files.begin(), files.end(), [&](auto& f) { return f.second == dst + "/" + name; })) continue;
        ASSERT_EQ(::kill(w.pid, SIGKILL), 0);
        caught = true;
        break;
      }
      break;
    }
    if (caught) {  // the second run, while the first is stopped
      RunResult second = run_pcopy({"-j2", "-u", src, tmp / "other"}, with_timeout(120));
      EXPECT_EQ(second.status, 0) << describe(second);
      second = run_pcopy({"-j1", "-u", src, dst}, with_timeout(120));  // sweeps leftovers in DST
      EXPECT_EQ(second.status, 0) << describe(second);
    }
  });
  RunResult r = p.wait();
  ASSERT_TRUE(killed) << "no worker could be caught writing a chunk\n" << describe(r);
  expect_complete_copy(r, src, dst);
}

// A worker killed after it installed files, before it said so: sent again, they are found up to
// date by -u. They were this run's copies, but counted as skipped and missing from the manifest.
// Now they are copied again, and counted and listed as copied.
TEST_P(FaultsByJobs, UpdateCountsAsCopiedWhatAWorkerInstalledBeforeItDied) {
  std::string src = tmp / "src";
  make_dir(src);
  for (int f = 0; f < 300; ++f) write_file(src + fmt::format("/f{:03}", f), fmt::format("{}\n", f));
  write_file(src + "/victim", "the worker dies once this is in place\n");
  std::string dir = tmp / "tokens", manifest = tmp / "manifest.jsonl";
  make_dir(dir);
  write_file(dir + "/victim@done", "");
  RunOptions options = with_timeout(120);
  options.env = {"PCOPY_TEST_KILL_TOKENS=" + dir};
  RunResult r = copy(src, dst, {"-u", "--json", "--manifest", manifest}, options);
  EXPECT_TRUE(list_tree(dir).empty()) << "no worker died after copying the victim";
  EXPECT_EQ(r.status, 0) << describe(r);
  auto report = nlohmann::json::parse(r.out);
  EXPECT_EQ(report.at("files_copied"), 301) << r.out;
  EXPECT_EQ(report.at("files_skipped"), 0) << r.out;
  EXPECT_EQ(lines_of(read_file(manifest)).size(), 301u);
  EXPECT_EQ(diff_trees(src, dst), "");
}

// A worker killed with an unsent answer that stops the run (--fail-fast, a full disk): its death
// is still said, as the run met it first. Taking the answer first, which stopped the run, had
// silenced the warning (I13); and nothing is handed out again then, so the warning does not say so.
TEST_P(FaultsByJobs, AWorkerDeathWhoseUnsentAnswerStopsTheRunIsStillSaid) {
#ifndef PCOPY_TEST_HOOKS
  GTEST_SKIP() << "needs a build with -DPCOPY_TEST_HOOKS=ON";
#endif
  if (GetParam() != 1) GTEST_SKIP() << "one worker: the failure and the death are certain to be in one batch";
  std::string src = tmp / "src", tokens = tmp / "tokens";
  make_dir(src);
  for (int f = 0; f < 40; ++f) write_file(src + fmt::format("/f{:02}", f), fmt::format("{}\n", f));
  make_dir(dst);
  write_file(dst + "/f03", "old\n");
  InodeFlags f03(dst + "/f03");
  if (!f03.add(FS_IMMUTABLE_FL)) GTEST_SKIP() << "cannot make a file immutable (root, ext4/XFS/tmpfs)";
  make_dir(tokens);
  write_file(tokens + "/f05@done", "");
  RunOptions options = with_timeout(120);
  // No answer sent by time: f03's must still be unsent when the worker dies after f05.
  options.env = {"PCOPY_TEST_KILL_TOKENS=" + tokens, "PCOPY_TEST_NO_TIMED_FLUSH=1"};
  RunResult r = copy(src, dst, {"--fail-fast"}, options);
  EXPECT_TRUE(list_tree(tokens).empty()) << "no worker died after copying f05\n" << describe(r);
  EXPECT_EQ(r.status, 1) << describe(r);
  EXPECT_TRUE(has_line(r.err, "pcopy: cannot copy 'f03': Operation not permitted")) << describe(r);
  EXPECT_EQ(count_lines_containing(r.err, " died (killed by signal 9 (Killed))"), 1u) << describe(r);
  EXPECT_EQ(count_lines_containing(r.err, "handed out again"), 0u) << describe(r);
}

// -a -u: a name SRC added to a hard-link group whose copy is up to date is linked to that copy and
// hashed for the manifest. Its worker killed once it had linked it, before saying so, the retry
// found the name linked already and answered without a hash: counted as copied, but in no line of
// the manifest (I14).
TEST_P(FaultsByJobs, ANameLinkedByAWorkerThatDiedIsInTheManifest) {
#ifndef PCOPY_TEST_HOOKS
  GTEST_SKIP() << "needs a build with -DPCOPY_TEST_HOOKS=ON";
#endif
  std::string src = tmp / "src", manifest = tmp / "manifest.jsonl";
  make_dir(src);
  write_file(src + "/a", "the group's data\n");
  ASSERT_EQ(run_pcopy({jobs(), "-a", src, dst}).status, 0);
  ASSERT_EQ(::link((src + "/a").c_str(), (src + "/b").c_str()), 0);
  std::string token = tmp / "token";
  write_file(token, "");
  RunOptions options = with_timeout(120);
  options.env = {"PCOPY_TEST_KILL_AFTER_LINK_NAME=b", "PCOPY_TEST_KILL_AFTER_LINK_TOKEN=" + token};
  RunResult r = copy(src, dst, {"-a", "-u", "--json", "--manifest", manifest}, options);
  EXPECT_FALSE(exists(token)) << "no worker died after linking b\n" << describe(r);
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(nlohmann::json::parse(r.out).at("files_copied"), 1) << r.out;
  std::vector<std::string> lines = lines_of(read_file(manifest));
  ASSERT_EQ(lines.size(), 1u) << read_file(manifest);
  EXPECT_EQ(nlohmann::json::parse(lines[0]).at("path"), "b") << lines[0];
  EXPECT_EQ(lstat_or_zero(dst + "/b").st_ino, lstat_or_zero(dst + "/a").st_ino);
}

// A worker killed after it installed a file copied in chunks, before it said so: the End sent again
// finds the file in place, not its temporary, and the copy is a success. It was an error, "No such
// file or directory", for a file copied whole.
TEST_P(FaultsByJobs, AWorkerKilledRightAfterInstallingASplitFileLeavesNoError) {
  if (GetParam() == 1) GTEST_SKIP() << "one worker never splits a file";
  std::string src = shared_tree("huge_alone", [](const std::string& root) { write_big_file(root + "/huge.bin", 300, 5); });
  std::string dir = tmp / "tokens";
  make_dir(dir);
  write_file(dir + "/huge.bin@end", "");
  RunOptions options = with_timeout(120);
  options.env = {"PCOPY_TEST_KILL_TOKENS=" + dir, "PCOPY_TEST_CHUNK_LOCAL=1"};
  RunResult r = copy(src, dst, {"--json"}, options);
  EXPECT_TRUE(list_tree(dir).empty()) << "no worker died after installing huge.bin";
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(nlohmann::json::parse(r.out).at("files_copied"), 1) << r.out;
  EXPECT_EQ(diff_trees(src, dst), "");
}

// On tmpfs, where the CPU and not a device is the limit, a big file is split without being asked
// (no test hook): two workers are caught writing it at once, one at least through a mapping of it
// (Copier::copy_mapped), which takes no lock for the other to wait on. One worker copied it alone,
// as on a disk's file system: -j2 was no faster than cp -a; then two took turns on the file's lock.
TEST_P(FaultsByJobs, OnTmpfsSeveralWorkersWriteOneBigFile) {
  if (GetParam() == 1) GTEST_SKIP() << "one worker never splits a file";
  Scratch scratch(tmp / "scratch", "1g");
  if (!scratch.tmpfs()) GTEST_SKIP() << "needs a tmpfs: root, to mount one";
  std::string from = scratch / "src", to = scratch / "dst";
  make_dir(from);
  write_big_file(from + "/huge.bin", 300, 6);
  AsyncPcopy p({jobs(), from, to}, logs);
  bool shared = catch_writing(p, to, [&](const Frozen& frozen, const std::vector<Writing>& writing, bool& caught) {
    for (const Writing& w : writing) {
      size_t writers = 0, mapping = 0;
      for (const Proc& worker : frozen.workers) {
        auto files = open_files_of(worker.pid);
        writers += std::any_of(files.begin(), files.end(), [&](auto& f) { return f.second == to + "/" + w.name; });
        std::ifstream maps(fmt::format("/proc/{}/maps", worker.pid));
        for (std::string line; std::getline(maps, line);) mapping += line.ends_with(" " + to + "/" + w.name);
      }
      caught = caught || (writers >= 2 && mapping >= 1);
    }
  });
  RunResult r = p.wait();
  EXPECT_TRUE(shared) << "never two workers writing huge.bin at once, one through a mapping\n" << describe(r);
  expect_complete_copy(r, from, to);
}

TEST_P(FaultsByJobs, WorkerKilledExternallyMidRunIsReplaced) {
  std::string src = shared_tree("big64", [](const std::string& root) {
    make_big_tree(root, 64, 2000);
    write_big_file(root + "/huge.bin", 160, 9);  // past 128 MiB: split into chunks across workers (-j2, -j8)
  });
  // Chunks are only handed out where they pay off (not on local file systems): test builds can ask.
  AsyncPcopy p({jobs(), src, dst}, logs, {"PCOPY_TEST_CHUNK_LOCAL=1"});
  // Catch a worker with a big file half-written: freeze everything, check the file is still being
  // written (so its job is in flight), and kill the worker that writes it.
  std::string victim_temp;
  bool killed = catch_writing(p, dst, [&](const Frozen& frozen, const std::vector<Writing>& writing, bool& caught) {
    for (auto& [owner, name, path] : writing) {
      auto it = std::find_if(frozen.workers.begin(), frozen.workers.end(), [&](auto& w) { return w.pid == owner; });
      if (it == frozen.workers.end()) continue;  // only ever kill a child of this pcopy
      ASSERT_EQ(::kill(owner, SIGKILL), 0);
      if (is_temp_name(name)) victim_temp = name;
      caught = true;
      break;
    }
  });
  RunResult r = p.wait();
  ASSERT_TRUE(killed) << "no worker could be caught in the middle of a big file\n" << describe(r);
  expect_complete_copy(r, src, dst);
  EXPECT_EQ(count_lines_containing(r.err, "cannot copy"), 0u) << describe(r);
  // Said all the same (FFF: an OOM kill left no trace).
  EXPECT_EQ(count_lines_containing(r.err, "died (killed by signal 9"), 1u) << describe(r);
  EXPECT_EQ(count_lines_containing(r.err, "pcopy: warning: worker "), 1u) << describe(r);
  if (!victim_temp.empty()) {
    EXPECT_FALSE(exists(dst + "/" + victim_temp));
  }
}

// ---------------------------------------------------------------------------------------------------
// Signals to the parent.

// SIGINT / SIGTERM while big files are half-written.
void interrupt_mid_copy(int sig, int expected_status, const std::string& src, const std::string& dst,
                        const std::string& logs, const std::string& jobs) {
  AsyncPcopy p({jobs, src, dst}, logs);
  std::vector<std::string> temps_seen;
  std::vector<Proc> workers;
  bool sent = catch_writing(p, dst, [&](const Frozen& frozen, const std::vector<Writing>& writing, bool& caught) {
    temps_seen = names_of(writing);
    if (temps_seen.empty()) return;
    ASSERT_EQ(::kill(p.pid(), sig), 0);
    workers = frozen.workers;
    caught = true;
  });
  RunResult r = p.wait();
  ASSERT_TRUE(sent) << "pcopy could not be caught in the middle of a big file\n" << describe(r);
  EXPECT_EQ(r.status, expected_status) << describe(r);
  EXPECT_TRUE(has_line_starting(r.err, "pcopy: interrupted:")) << describe(r);
  EXPECT_EQ(incomplete_final_files(src, dst), "");
  EXPECT_EQ(joined(temporaries(dst)), "") << "temporaries left behind; seen before the signal:\n"
                                           << joined(temps_seen);
  for (auto& w : workers) EXPECT_FALSE(alive(w)) << "worker " << w.pid << " outlived pcopy";

  // A rerun into the same destination finishes the job.
  RunResult again = run_pcopy({jobs, src, dst}, with_timeout(120));
  EXPECT_EQ(again.status, 0) << describe(again);
  EXPECT_EQ(diff_trees(src, dst), "");
  EXPECT_EQ(joined(temporaries(dst)), "");
}

TEST_P(FaultsByJobs, SigintMidCopyOfLargeFilesLeavesNoPartialFiles) {
  std::string src = shared_tree("big128", [](const std::string& root) { make_big_tree(root, 128, 0); });
  interrupt_mid_copy(SIGINT, 130, src, dst, logs, jobs());
}

TEST_P(FaultsByJobs, SigtermMidCopyOfLargeFilesLeavesNoPartialFiles) {
  std::string src = shared_tree("big128", [](const std::string& root) { make_big_tree(root, 128, 0); });
  interrupt_mid_copy(SIGTERM, 143, src, dst, logs, jobs());
}

// A run a signal stops leaves no directory with a mode it had only while it was filled. An ordinary
// user's -u run opened up the copy of a read-only directory to make a new subdirectory in it, and
// left it 0755 (until the next run); the new directory, 0555 in SRC, stayed 0700. Both get SRC's
// mode; what they lack is the next run's. A worker waits at a gate in the new directory meanwhile.
TEST_P(FaultsByJobs, ASignalLeavesNoDirectoryWithTheModeItHadWhileFilled) {
#ifndef PCOPY_TEST_HOOKS
  GTEST_SKIP() << "needs a build with -DPCOPY_TEST_HOOKS=ON";
#endif
  std::string src = tmp / "src", fifo = tmp / "gate";
  make_dir(src);
  make_dir(src + "/ro");
  write_file(src + "/ro/f", "in a read-only directory");
  ASSERT_EQ(::chmod((src + "/ro").c_str(), 0555), 0);
  RunOptions as_user = unprivileged(tmp);
  RunResult r = copy(src, dst, {}, as_user);
  ASSERT_EQ(r.status, 0) << describe(r);
  ASSERT_EQ(lstat_or_zero(dst + "/ro").st_mode & 07777, 0555u);

  ASSERT_EQ(::chmod((src + "/ro").c_str(), 0755), 0);
  make_dir(src + "/ro/new");
  write_file(src + "/ro/new/gate.txt", "the worker taking this waits until the test opens the gate\n");
  ASSERT_EQ(::chmod((src + "/ro/new").c_str(), 0555), 0);
  ASSERT_EQ(::chmod((src + "/ro").c_str(), 0555), 0);
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  if (as_user.uid) {
    chown_tree(src, *as_user.uid, 65534);
    ASSERT_EQ(::chown(fifo.c_str(), *as_user.uid, 65534), 0);
  }
  AsyncPcopy p({jobs(), "-u", src, dst}, logs, {"PCOPY_TEST_GATE_NAME=gate.txt", "PCOPY_TEST_GATE_FIFO=" + fifo}, "",
               {}, as_user.uid);
  UniqueFd gate;  // held open: the worker waits at the gate until it is closed
  bool waiting = poll_until(Clock::now() + 60s, [&] {
    gate.reset(::open(fifo.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC));  // ENXIO until a worker waits
    return gate.valid() || !p.running();
  });
  ASSERT_TRUE(waiting && p.running()) << describe(p.wait());
  ASSERT_EQ(lstat_or_zero(dst + "/ro").st_mode & 07777, 0755u) << "the premise: opened up for the new directory";
  ASSERT_EQ(::kill(p.pid(), SIGTERM), 0);
  r = p.wait();
  EXPECT_EQ(r.status, 143) << describe(r);
  EXPECT_EQ(lstat_or_zero(dst + "/ro").st_mode & 07777, 0555u);
  EXPECT_EQ(lstat_or_zero(dst + "/ro/new").st_mode & 07777, 0555u);
  EXPECT_EQ(joined(temporaries(dst)), "") << "temporaries left behind";

  r = copy(src, dst, {"-u"}, as_user);  // the next night finishes it
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(diff_trees(src, dst), "");
  EXPECT_EQ(lstat_or_zero(dst + "/ro/new").st_mode & 07777, 0555u);
}

// Ctrl-\\ (SIGQUIT) and the other signals whose default would kill pcopy outright end the run as
// Ctrl-C does, with 128 + the signal's number: they left staged directories and temporaries.
TEST_P(FaultsByJobs, SigquitOrSigusr1MidCopyEndTheRunAsCtrlCDoes) {
  std::string src = shared_tree("big128", [](const std::string& root) { make_big_tree(root, 128, 0); });
  bool quit = jobs() != "-j2";  // one signal per worker count, alternately
  interrupt_mid_copy(quit ? SIGQUIT : SIGUSR1, quit ? 131 : 138, src, dst, logs, jobs());
}

// What is in `dst` as far as writing shows: each entry's size and mtime, and the same of every file
// the workers of `parent` write unnamed there (O_TMPFILE).
std::string written_state(pid_t parent, const std::string& dst) {
  std::string state;
  auto add = [&](const std::string& name, const std::string& path) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) return;
    state += fmt::format("{} {} {}.{:09}\n", escape_path(name), st.st_size, st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
  };
  for (auto& rel : list_tree(dst))
    if (S_ISREG(lstat_or_zero(dst + "/" + rel).st_mode)) add(rel, dst + "/" + rel);
  for (const Proc& w : children_of(parent))
    for (const auto& [fd_path, link] : open_files_of(w.pid))
      if (link.starts_with(dst + "/") && link.ends_with(" (deleted)")) add(link, fd_path);
  return state;
}

// Waits until `p` has stopped itself (a test hook) or exited; false if neither by `deadline`.
bool stopped_or_done(AsyncPcopy& p, Clock::time_point deadline) {
  return poll_until(deadline, [&] { return !p.running() || stopped(p.pid()); });
}

// Six 32 MiB files, then (files are listed before subdirectories) z/gate.txt, where a test hook can
// make a worker wait.
void make_job_control_tree(const std::string& root) {
  for (unsigned i = 0; i < 6; ++i) write_big_file(root + fmt::format("/big{}.bin", i), 32, i);
  make_dir(root + "/z");
  write_file(root + "/z/gate.txt", "the copy waits before this file until the test opens the gate\n");
}

// Opens the gate of PCOPY_TEST_GATE_FIFO for writing once a worker waits at it (while `running`),
// and holds it: the worker waits on until the descriptor is closed. Invalid if none came before the
// deadline, or pcopy ended.
template <typename Running>
UniqueFd hold_gate(const std::string& fifo, Clock::time_point deadline, Running running) {
  UniqueFd gate;
  poll_until(deadline, [&] {
    gate.reset(::open(fifo.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC));  // ENXIO until a worker waits
    return gate.valid() || !running();
  });
  return gate;
}

// Opens the gate and lets the worker through at once. False if none came before the deadline.
template <typename Running>
bool open_gate(const std::string& fifo, Clock::time_point deadline, Running running) {
  return hold_gate(fifo, deadline, running).valid() || !running();
}

// Waits until pcopy stops itself at a test hook (SIGSTOP), then sends it `sig` and SIGCONT, so that
// the signal is there when it goes on; its result. Fails the test if it never stopped.
RunResult signal_when_stopped(AsyncPcopy& p, int sig) {
  bool stopped = poll_until(Clock::now() + 60s, [&] {
    auto info = proc_info(p.pid());
    return !p.running() || (info && info->state == 'T');
  });
  EXPECT_TRUE(stopped && p.running()) << "pcopy did not stop at the hook";
  if (p.running()) {
    EXPECT_EQ(::kill(p.pid(), sig), 0);
    EXPECT_EQ(::kill(p.pid(), SIGCONT), 0);
  }
  return p.wait();
}

// Runs pcopy with `args` as uid `uid`, under a process limit (`ulimit -u`) that its workers fill:
// the worker that takes `victim` waits at a gate until another process of the uid holds the last
// place, then dies as the kill token `token` (in a directory of tokens, see PCOPY_TEST_KILL_TOKENS)
// says; with no token, it stops itself half-way through the file and the test kills it. No
// replacement can then be forked. `tmp`, where SRC and DST are, is given to the uid.
RunResult die_with_no_replacement(const TempDir& tmp, uid_t uid, int workers, const std::string& victim,
                                  const std::string& token, const std::vector<std::string>& args,
                                  const std::string& logs) {
  std::string tokens = tmp / "tokens", fifo = tmp / "gate";
  make_dir(tokens);
  if (!token.empty()) write_file(tokens + "/" + token, "");
  EXPECT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  chown_tree(tmp.path(), uid, 65534);
  std::vector<std::string> env{"PCOPY_TEST_KILL_TOKENS=" + tokens, "PCOPY_TEST_GATE_NAME=" + victim,
                               "PCOPY_TEST_GATE_FIFO=" + fifo};
  if (token.empty()) env.push_back("PCOPY_TEST_STOP_MIDWAY_NAME=" + victim);
  // The sanitizer build's leak check runs in a thread of its own at exit, which the limit refuses.
  if (const char* asan = std::getenv("ASAN_OPTIONS"))
    env.push_back(std::string("ASAN_OPTIONS=") + asan + ":detect_leaks=0");
  AsyncPcopy p(args, logs, env, "", {}, uid, {}, {}, 1 + workers);
  UniqueFd gate = hold_gate(fifo, Clock::now() + 60s, [&] { return p.running(); });
  if (!gate) return p.wait();
  // Every worker is forked: a process of the uid more, and a replacement would be one too many.
  int told[2];
  if (::pipe2(told, O_CLOEXEC) != 0) return p.wait();
  pid_t holder = ::fork();
  if (holder == 0) {
    ::close(gate.get());  // the worker waits until every writer of the gate is gone
    if (::setresgid(65534, 65534, 65534) == 0 && ::setresuid(uid, uid, uid) == 0 && ::write(told[1], "u", 1) == 1)
      ::pause();
    ::_exit(0);
  }
  ::close(told[1]);
  char c;
  bool holding = holder > 0 && ::read(told[0], &c, 1) == 1;  // EOF if it could not take the uid
  ::close(told[0]);
  gate.reset();
  if (token.empty()) {
    pid_t worker = stopped_worker(p, Clock::now() + 60s);
    EXPECT_GT(worker, 0) << "no worker stopped half-way through " << victim;
    if (worker > 0) ::kill(worker, SIGKILL);
  }
  RunResult r = p.wait();
  if (holder > 0) {
    ::kill(holder, SIGKILL);
    ::waitpid(holder, nullptr, 0);
  }
  EXPECT_TRUE(holding) << "the holder never took the uid";
  if (!token.empty()) {
    EXPECT_TRUE(list_tree(tokens).empty()) << "no worker died at " << token << "\n" << describe(r);
  }
  return r;
}

// A worker killed with answers unsent (results go in bunches) when no other can be forked
// (`ulimit -u` full): with one worker, the run stops. What the dead worker had put in place was in
// no count or manifest (1 of 16 files reported), and the warning said its jobs were "handed out
// again" to nobody. Its unsent answers are now taken from the memory it shares with the parent.
// With more workers, the rest finish the run, as the warning says.
TEST_P(FaultsByJobs, AWorkerThatDiesWithNoReplacementLeavesWhatItCopiedReported) {
#ifndef PCOPY_TEST_HOOKS
  GTEST_SKIP() << "needs a build with -DPCOPY_TEST_HOOKS=ON";
#endif
  if (::geteuid() != 0) GTEST_SKIP() << "needs root: a uid of its own, so that no other process counts";
  std::string src = tmp / "src", manifest = tmp / "manifest.jsonl";
  make_dir(src);
  for (int f = 0; f < 40; ++f) write_file(src + fmt::format("/f{:02}", f), fmt::format("{}\n", f));
  write_file(src + "/gate.txt", "the worker taking this waits at the gate, and dies once it has copied it\n");
  // RLIMIT_NPROC counts every process of the uid: one per variant.
  RunResult r = die_with_no_replacement(tmp, 61240 + GetParam(), GetParam(), "gate.txt", "gate.txt@done",
                                        {jobs(), "--json", "--manifest", manifest, src, dst}, logs);
  std::vector<std::string> copied;
  for (const std::string& rel : list_tree(dst))
    if (S_ISREG(lstat_or_zero(dst + "/" + rel).st_mode)) {
      copied.push_back(rel);
      EXPECT_EQ(read_file(dst + "/" + rel), read_file(src + "/" + rel)) << rel;
    }
  std::vector<std::string> listed;
  for (const std::string& line : lines_of(read_file(manifest)))
    listed.push_back(nlohmann::json::parse(line).at("path").get<std::string>());
  std::sort(listed.begin(), listed.end());
  EXPECT_EQ(joined(listed), joined(copied)) << "the manifest lists what is in DST\n" << describe(r);
  auto report = nlohmann::json::parse(r.out);
  EXPECT_EQ(report.at("files_copied"), copied.size()) << r.out;
  EXPECT_NE(std::find(copied.begin(), copied.end(), "gate.txt"), copied.end()) << "copied before the death";
  EXPECT_EQ(joined(temporaries(dst)), "") << "temporaries left behind";
  std::string died = " died (killed by signal 9 (Killed))";
  if (GetParam() == 1) {
    EXPECT_EQ(r.status, 1) << describe(r);
    EXPECT_EQ(count_lines_containing(r.err, died), 1u) << describe(r);
    EXPECT_EQ(count_lines_containing(r.err, "handed out again"), 0u) << "no one to hand it to\n" << describe(r);
    EXPECT_TRUE(has_line(r.err, "pcopy: no worker process left: Resource temporarily unavailable: the remaining "
                                "entries were not copied"))
        << describe(r);
  } else {
    EXPECT_EQ(r.status, 0) << describe(r);
    EXPECT_EQ(count_lines_containing(r.err, died + "; what it held is handed out again"), 1u) << describe(r);
    EXPECT_EQ(diff_trees(src, dst), "");
  }
}

// --inplace, one worker, none to replace it: the file it was rewriting when it died holds part of
// the new data under its name, and is named. It went unsaid.
TEST_P(FaultsByJobs, AFileLeftPartWrittenInPlaceByAWorkerNoneReplacesIsNamed) {
#ifndef PCOPY_TEST_HOOKS
  GTEST_SKIP() << "needs a build with -DPCOPY_TEST_HOOKS=ON";
#endif
  if (GetParam() != 1) GTEST_SKIP() << "with more workers, another writes it again";
  if (::geteuid() != 0) GTEST_SKIP() << "needs root: a uid of its own, so that no other process counts";
  std::string src = tmp / "src";
  make_dir(src);
  write_big_file(src + "/big.bin", 24, 1);
  write_file(src + "/small", "small\n");
  ASSERT_EQ(run_pcopy({"-j1", src, dst}).status, 0);
  write_big_file(src + "/big.bin", 24, 2);  // new data, to be written over the old in place
  RunResult r = die_with_no_replacement(tmp, 61239, 1, "big.bin", "", {"-j1", "-u", "--inplace", src, dst}, logs);
  EXPECT_EQ(r.status, 1) << describe(r);
  EXPECT_TRUE(has_line(r.err, "pcopy: cannot copy 'big.bin': not copied: its worker died before it was complete"))
      << describe(r);
  std::string now = read_file(src + "/big.bin");
  EXPECT_EQ(read_file(dst + "/big.bin"), now.substr(0, now.size() / 2)) << "the premise: half of the new data";
}

// A stop with more directories in flight than the open-file limit has room for: every one is put
// in place with what was finished in it and SRC's mode. All of them were opened again and held
// until the end: under `ulimit -n 64` those past the limit were left 0700 (or staged, under their
// temporary names, each a "Too many open files" error) (I8).
TEST_P(FaultsByJobs, ASignalUnderALowOpenFileLimitLeavesNoDirectoryStagedOr0700) {
#ifndef PCOPY_TEST_HOOKS
  GTEST_SKIP() << "needs a build with -DPCOPY_TEST_HOOKS=ON";
#endif
  constexpr int kDepth = 120;  // each directory in flight until the file at the bottom is copied
  std::string src = tmp / "src", fifo = tmp / "gate";
  make_dir(src);
  make_deep_dirs(src, kDepth);
  std::vector<std::string> dirs{src};
  for (int i = 0; i < kDepth; ++i) dirs.push_back(dirs.back() + "/d");
  write_file(dirs.back() + "/gate.txt", "the worker taking this waits until the test opens the gate\n");
  for (auto it = dirs.rbegin(); it != dirs.rend(); ++it) ASSERT_EQ(::chmod(it->c_str(), 0555), 0);
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  AsyncPcopy p({jobs(), src, dst}, logs, {"PCOPY_TEST_GATE_NAME=gate.txt", "PCOPY_TEST_GATE_FIFO=" + fifo}, "", {},
               {}, {}, 64);
  UniqueFd gate = hold_gate(fifo, Clock::now() + 60s, [&] { return p.running(); });
  ASSERT_TRUE(gate.valid()) << describe(p.wait());
  ASSERT_EQ(::kill(p.pid(), SIGTERM), 0);
  RunResult r = p.wait();
  EXPECT_EQ(r.status, 143) << describe(r);
  EXPECT_EQ(r.err.find("Too many open files"), std::string::npos) << describe(r);
  EXPECT_EQ(joined(temporaries(dst)), "") << "temporaries left behind";
  std::string dir = dst;
  for (int level = 0; level <= kDepth; ++level, dir += "/d") {
    EXPECT_EQ(lstat_or_zero(dir).st_mode & 07777, 0555u) << "level " << level;
    if (HasFailure()) break;
  }
  for (const std::string& d : dirs) ASSERT_EQ(::chmod(d.c_str(), 0755), 0);  // for the temporary tree's removal
  r = copy(src, dst, {"-u"});  // the next night finishes it
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(diff_trees(src, dst), "");
}

// -a --manifest: a hard-linked file rewritten in place (same inode) after the walk saw it, before its
// copy. Every name's line gives the size and time of the one copy its hash is of: the name linked to
// it had the walk's size and time, 100,000 bytes beside the hash of 5 (I20).
TEST_P(FaultsByJobs, EveryNameOfAFileRewrittenBeforeItsCopyHasTheCopysLineInTheManifest) {
#ifndef PCOPY_TEST_HOOKS
  GTEST_SKIP() << "needs a build with -DPCOPY_TEST_HOOKS=ON";
#endif
  std::string src = tmp / "src", fifo = tmp / "gate", manifest = tmp / "manifest.jsonl";
  make_dir(src);
  make_dir(src + "/x");
  make_dir(src + "/y");
  write_file(src + "/x/gate.txt", std::string(100'000, 'o'));  // the name copied first waits at the gate
  ASSERT_EQ(::link((src + "/x/gate.txt").c_str(), (src + "/y/gate.txt").c_str()), 0);
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  AsyncPcopy p({jobs(), "-a", "--manifest", manifest, src, dst}, logs,
               {"PCOPY_TEST_GATE_NAME=gate.txt", "PCOPY_TEST_GATE_FIFO=" + fifo});
  UniqueFd gate = hold_gate(fifo, Clock::now() + 60s, [&] { return p.running(); });
  ASSERT_TRUE(gate.valid()) << describe(p.wait());
  write_file(src + "/x/gate.txt", "short");  // O_TRUNC: the same inode, both names
  gate.reset();
  RunResult r = p.wait();
  ASSERT_EQ(r.status, 0) << describe(r);
  struct stat copy = lstat_or_zero(dst + "/x/gate.txt"), source = lstat_or_zero(src + "/x/gate.txt");
  ASSERT_EQ(copy.st_size, 5) << "the copy is of the file as it was when copied";
  ASSERT_EQ(lstat_or_zero(dst + "/y/gate.txt").st_ino, copy.st_ino);
  std::vector<std::string> lines = lines_of(read_file(manifest));
  ASSERT_EQ(lines.size(), 2u) << read_file(manifest);
  for (const std::string& text : lines) {
    nlohmann::json line = nlohmann::json::parse(text);
    EXPECT_EQ(line.at("size"), 5) << text;
    EXPECT_EQ(line.at("mtime_ns").get<long long>(), source.st_mtim.tv_sec * 1'000'000'000LL + source.st_mtim.tv_nsec)
        << text;
    EXPECT_EQ(line.at("xxh128"), nlohmann::json::parse(lines[0]).at("xxh128")) << text;
  }
}

// A worker that sends nothing for a long while (on a hung network mount, or stopped by someone;
// here a test hook holds it before z/gate.txt, with the threshold of 120 s made 0.2 s) is named
// once, with where its unanswered entries begin, and waited for: the run completes when it goes on.
TEST_P(FaultsByJobs, AWorkerSilentForLongIsNamedWithWhatItHolds) {
#ifndef PCOPY_TEST_HOOKS
  GTEST_SKIP() << "needs a build with -DPCOPY_TEST_HOOKS=ON";
#endif
  std::string src = tmp / "src", fifo = tmp / "gate";
  make_dir(src);
  make_dir(src + "/a");
  for (int i = 0; i < 20; ++i) write_file(src + fmt::format("/a/f{:02}", i), "copied before the gate\n");
  make_dir(src + "/z");
  write_file(src + "/z/gate.txt", "the worker taking this waits until the test opens the gate\n");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  AsyncPcopy p({jobs(), src, dst}, logs,
               {"PCOPY_TEST_GATE_NAME=gate.txt", "PCOPY_TEST_GATE_FIFO=" + fifo, "PCOPY_TEST_SILENT_WORKER_S=0.2"});
  bool named = poll_until(Clock::now() + 60s, [&] {
    return read_file(logs + "/stderr").find("from 'z/gate.txt')") != std::string::npos || !p.running();
  });
  bool opened = open_gate(fifo, Clock::now() + 60s, [&] { return p.running(); });
  RunResult r = p.wait();
  EXPECT_TRUE(named && opened) << describe(r);
  bool line = false;
  for (const std::string& l : lines_of(r.err))
    line |= l.starts_with("pcopy: warning: worker ") && l.find(" unanswered, from 'z/gate.txt'); ") != std::string::npos &&
            l.ends_with("; still waiting for it");
  EXPECT_TRUE(line) << describe(r);
  expect_complete_copy(r, src, dst);
}

// Ctrl-Z held past the silence threshold (2 minutes; 2 s here), then `fg`: the time the run was
// stopped is no worker's silence. Every worker holding work was named "has sent nothing ... still
// waiting for it", a warning in the summary and the report, for a pause the user made. The same
// for the whole run frozen from outside (a cgroup freezer, `docker pause`; here every process
// stopped by the test), which pcopy learns of only by its loop coming back long after its wait,
// wherever in the loop it was: here the parent stops itself (a test hook) right after sending the
// gate's job, busy, not waiting in poll, where a freeze once went unseen.
TEST_P(FaultsByJobs, TimeStoppedByJobControlIsNoWorkersSilence) {
#ifndef PCOPY_TEST_HOOKS
  GTEST_SKIP() << "needs a build with -DPCOPY_TEST_HOOKS=ON";
#endif
  std::string src = tmp / "src";
  make_dirs(src + "/z");
  write_file(src + "/z/gate.txt", "the worker taking this waits until the test opens the gate\n");
  for (std::string how : {"Ctrl-Z", "frozen"}) {
    SCOPED_TRACE(how);
    std::string fifo = tmp / ("gate-" + how), to = dst + "-" + how;
    ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
    std::vector<std::string> env{"PCOPY_TEST_GATE_NAME=gate.txt", "PCOPY_TEST_GATE_FIFO=" + fifo,
                                 "PCOPY_TEST_SILENT_WORKER_S=2"};
    if (how == "frozen") env.push_back("PCOPY_TEST_STOP_AFTER_SEND=1");
    AsyncPcopy p({jobs(), "--json", src, to}, logs, env);
    UniqueFd gate;  // held open while stopped: the worker goes on once it is closed
    poll_until(Clock::now() + 60s, [&] {
      gate.reset(::open(fifo.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC));  // ENXIO until a worker waits
      return gate.valid() || !p.running();
    });
    ASSERT_TRUE(gate.valid()) << "no worker came to the gate\n" << describe(p.wait());
    std::vector<pid_t> all{p.pid()};
    if (how == "Ctrl-Z") {
      ASSERT_EQ(::kill(p.pid(), SIGTSTP), 0);
    } else {
      // The parent stops itself after its first send (the hook): once it has, or a SIGCONT below
      // could come before that stop, which nothing would then end (once, under load, for 2 minutes).
      ASSERT_TRUE(poll_until(Clock::now() + 10s, [&] { return stopped(p.pid()); })) << describe(p.wait());
      for (const Proc& w : children_of(p.pid())) all.push_back(w.pid);
      for (pid_t pid : all) ASSERT_EQ(::kill(pid, SIGSTOP), 0);
    }
    ASSERT_TRUE(poll_until(Clock::now() + 10s, [&] { return stopped(p.pid()); })) << describe(p.wait());
    // Stopped past the threshold: what is tested, not a synchronisation. (The threshold leaves the
    // test 2 s from the worker's wait to the stop: 1 s was too little on a loaded machine.)
    std::this_thread::sleep_for(4s);
    for (pid_t pid : all) ASSERT_EQ(::kill(pid, SIGCONT), 0);
    gate.reset();
    RunResult r = p.wait();
    EXPECT_EQ(r.err.find("has sent nothing"), std::string::npos) << describe(r);
    EXPECT_EQ(nlohmann::json::parse(r.out).at("warnings").size(), 0u) << r.out;
    EXPECT_EQ(diff_trees(src, to), "");
  }
}

// Entries that leave SRC after the walk listed them (a live tree: a nightly backup's) are not
// errors but warnings, as rsync's "file has vanished": nothing is lost that SRC still has, and a
// script testing the status would cry wolf every night. A directory found gone is one warning, not
// one per entry in it; and --fail-fast goes on past them.
TEST_P(FaultsByJobs, EntriesThatLeaveSrcDuringTheRunAreWarningsNotErrors) {
#ifndef PCOPY_TEST_HOOKS
  GTEST_SKIP() << "needs a build with -DPCOPY_TEST_HOOKS=ON";
#endif
  if (GetParam() != 1) GTEST_SKIP() << "with one worker the order of the batches is certain";
  std::string src = tmp / "src", fifo = tmp / "gate";
  // SRC's own files go first (files are listed before subdirectories), the gate among them.
  make_dirs(src + "/b");
  write_file(src + "/gate.txt", "the worker taking this waits until the test opens the gate\n");
  for (std::string name : {"x1", "x2", "x3"}) write_file(src + "/" + name, name);
  ASSERT_EQ(::symlink("x1", (src + "/link").c_str()), 0);
  for (int i = 0; i < 40; ++i) write_file(src + fmt::format("/b/f{}", i), "gone with its directory");
  make_dirs(src + "/c");
  write_file(src + "/c/kept.txt", "copied after the rest vanished");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  AsyncPcopy p({jobs(), "--json", "--fail-fast", src, dst}, logs,
               {"PCOPY_TEST_GATE_NAME=gate.txt", "PCOPY_TEST_GATE_FIFO=" + fifo});
  // b and c are staged (made under temporary names) once listed: the walk has seen every entry.
  bool listed = poll_until(Clock::now() + 60s, [&] { return temporaries_in(dst).size() == 2 || !p.running(); });
  ASSERT_TRUE(listed && p.running()) << describe(p.wait());
  for (std::string name : {"x1", "x2", "x3", "link"}) ASSERT_EQ(::unlink((src + "/" + name).c_str()), 0);
  ASSERT_EQ(std::filesystem::remove_all(src + "/b"), 41u);
  ASSERT_TRUE(open_gate(fifo, Clock::now() + 60s, [&] { return p.running(); })) << describe(p.wait());
  RunResult r = p.wait();
  EXPECT_EQ(r.status, 0) << describe(r);
  auto report = nlohmann::json::parse(r.out);
  EXPECT_EQ(report.at("errors").size(), 0u) << r.out;
  EXPECT_EQ(report.at("warnings").size(), 5u) << r.out;
  for (std::string name : {"x1", "x2", "x3", "link"})
    EXPECT_TRUE(has_line_starting(r.err, "pcopy: warning: '" + name + "': vanished from SRC before it was copied"))
        << describe(r);
  EXPECT_TRUE(has_line_starting(r.err, "pcopy: warning: 'b': vanished from SRC before everything in it was copied"))
      << describe(r);
  EXPECT_EQ(r.err.find("cannot copy"), std::string::npos) << describe(r);
  EXPECT_EQ(read_file(dst + "/c/kept.txt"), "copied after the rest vanished");
  EXPECT_FALSE(exists(dst + "/x1")) << "a copy of what SRC no longer had";
  EXPECT_EQ(list_tree(dst + "/b"), std::vector<std::string>{});
  EXPECT_EQ(joined(temporaries(dst)), "") << "temporaries left behind";
}

// A directory the walk listed that a file, or a link, has replaced by the time its entries are
// copied (TTT): one error for it, as for a file that changed type, where it was one per entry in it
// ("Not a directory", "Too many levels of symbolic links": 40 lines for b here). A subdirectory of
// one replaced is not reported apart, and the link is not followed.
TEST_P(FaultsByJobs, ADirectoryReplacedByAFileOrALinkDuringTheRunIsOneError) {
#ifndef PCOPY_TEST_HOOKS
  GTEST_SKIP() << "needs a build with -DPCOPY_TEST_HOOKS=ON";
#endif
  if (GetParam() != 1) GTEST_SKIP() << "with one worker the order of the batches is certain";
  std::string src = tmp / "src", outside = tmp / "outside", fifo = tmp / "gate";
  make_dirs(src + "/b");
  make_dirs(src + "/d/e");
  make_dirs(outside + "/e");
  write_file(src + "/gate.txt", "the worker taking this waits until the test opens the gate\n");
  for (int i = 0; i < 40; ++i) {
    write_file(src + fmt::format("/b/f{}", i), "replaced by a file with its directory");
    write_file(src + fmt::format("/d/f{}", i), "replaced by a link with its directory");
    write_file(src + fmt::format("/d/e/f{}", i), "replaced by a link with the directory above it");
    write_file(outside + fmt::format("/f{}", i), "never to be copied");
    write_file(outside + fmt::format("/e/f{}", i), "never to be copied");
  }
  make_dirs(src + "/c");
  write_file(src + "/c/kept.txt", "copied after the rest changed");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  AsyncPcopy p({jobs(), "--json", src, dst}, logs, {"PCOPY_TEST_GATE_NAME=gate.txt", "PCOPY_TEST_GATE_FIFO=" + fifo});
  // The leaves b, c and d/e are staged once listed: the walk has seen every entry.
  auto listed = [&] { return temporaries_in(dst).size() == 2 && temporaries_in(dst + "/d").size() == 1; };
  ASSERT_TRUE(poll_until(Clock::now() + 60s, [&] { return listed() || !p.running(); }) && p.running())
      << describe(p.wait());
  ASSERT_EQ(std::filesystem::remove_all(src + "/b"), 41u);
  write_file(src + "/b", "a file now\n");
  ASSERT_EQ(std::filesystem::remove_all(src + "/d"), 82u);
  ASSERT_EQ(::symlink(outside.c_str(), (src + "/d").c_str()), 0);
  ASSERT_TRUE(open_gate(fifo, Clock::now() + 60s, [&] { return p.running(); })) << describe(p.wait());
  RunResult r = p.wait();
  EXPECT_EQ(r.status, 1) << describe(r);
  EXPECT_TRUE(has_line(r.err, "pcopy: cannot copy 'b': file changed type as we read it")) << describe(r);
  EXPECT_TRUE(has_line(r.err, "pcopy: cannot copy 'd': file changed type as we read it")) << describe(r);
  EXPECT_EQ(count_lines_containing(r.err, "cannot copy"), 2u) << describe(r);
  auto report = nlohmann::json::parse(r.out);
  EXPECT_EQ(report.at("errors").size(), 2u) << r.out;
  // The walk may not have read the end of d/e's listing when d went (a staged directory is made
  // once its entries are read): d/e is then a directory that vanished while listed, as it did.
  for (auto& w : report.at("warnings"))
    EXPECT_EQ(w.at("reason"), "vanished from SRC before everything in it was copied") << r.out;
  EXPECT_EQ(read_file(dst + "/c/kept.txt"), "copied after the rest changed");
  EXPECT_EQ(list_tree(dst + "/b"), std::vector<std::string>{});
  EXPECT_EQ(list_tree(dst + "/d"), std::vector<std::string>{"e"}) << "what the link leads to was copied";
  EXPECT_EQ(joined(temporaries(dst)), "") << "temporaries left behind";
}

// The same once a worker is in the directory (WWW): the next batch below it is looked up from
// SRC's root again, not through the directory the worker holds, so the file that replaced it is
// found, and nothing is copied from where the directory went. And a directory of DST moved away
// meanwhile is not written into where it went: its entries fail, as when it is removed.
TEST_P(FaultsByJobs, ADirectoryMovedOrReplacedWhileAWorkerIsInItIsNotFollowed) {
#ifndef PCOPY_TEST_HOOKS
  GTEST_SKIP() << "needs a build with -DPCOPY_TEST_HOOKS=ON";
#endif
  if (GetParam() != 1) GTEST_SKIP() << "with one worker the order of the batches is certain";
  std::string away = tmp / "away";
  make_dirs(away);
  for (std::string side : {"src", "dst"}) {
    std::string src = tmp / (side + "-src"), to = tmp / (side + "-dst"), fifo = tmp / (side + "-gate");
    make_dirs(src + "/d/e/h");
    write_file(src + "/d/gate.txt", "the worker taking this waits until the test opens the gate\n");
    write_file(src + "/d/e/g", "below the directory replaced\n");
    write_file(src + "/d/e/h/i", "further below\n");
    ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
    AsyncPcopy p({jobs(), src, to}, logs, {"PCOPY_TEST_GATE_NAME=gate.txt", "PCOPY_TEST_GATE_FIFO=" + fifo});
    // The leaf h is staged once listed: the walk has seen every entry. The worker is in d once it
    // waits at the gate (ENXIO until then), and stays there while the writer's end is held open.
    ASSERT_TRUE(poll_until(Clock::now() + 60s, [&] { return temporaries_in(to + "/d/e").size() == 1 || !p.running(); }) &&
                p.running())
        << describe(p.wait());
    UniqueFd gate;
    ASSERT_TRUE(poll_until(Clock::now() + 60s, [&] {
      gate.reset(::open(fifo.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC));
      return gate.valid() || !p.running();
    }) && p.running())
        << describe(p.wait());
    if (side == "src") {
      ASSERT_EQ(::rename((src + "/d").c_str(), (away + "/d").c_str()), 0);
      write_file(src + "/d", "a file now\n");
    } else {
      ASSERT_EQ(::rename((to + "/d").c_str(), (away + "/d-copy").c_str()), 0);
    }
    gate.reset();
    RunResult r = p.wait();
    EXPECT_EQ(r.status, 1) << side << "\n" << describe(r);
    if (side == "src") {
      EXPECT_TRUE(has_line(r.err, "pcopy: cannot copy 'd': file changed type as we read it")) << describe(r);
      EXPECT_EQ(count_lines_containing(r.err, "cannot copy"), 1u) << describe(r);
      EXPECT_FALSE(exists(to + "/d/e/g")) << "copied from where the directory went";
    } else {
      EXPECT_FALSE(exists(away + "/d-copy/e/g")) << "written where DST's directory went";
      EXPECT_FALSE(exists(away + "/d-copy/e/h/i")) << "written where DST's directory went";
    }
  }
}

// Job control: a stop signal to the parent (a terminal's Ctrl-Z is SIGTSTP to the foreground
// process group, and the workers have groups of their own) stops the workers and then the parent,
// by that signal, so that a shell sees the job stopped; nothing is written meanwhile. SIGCONT (`fg`,
// `bg`) continues them all and the copy completes. A worker waits at a gate (a test hook) before
// z/gate.txt, so the run cannot end before the test has looked (files are listed before
// subdirectories, so the big files go first, even with one worker).
TEST_P(FaultsByJobs, StopSignalsStopTheWorkersTooAndSigcontResumesThem) {
#ifndef PCOPY_TEST_HOOKS
  GTEST_SKIP() << "needs a build with -DPCOPY_TEST_HOOKS=ON";
#endif
  std::string src = shared_tree("job_control", make_job_control_tree);
  for (int sig : {SIGTSTP, SIGTTIN, SIGTTOU}) {
    SCOPED_TRACE(::strsignal(sig));
    std::string to = tmp / fmt::format("dst{}", sig), fifo = tmp / fmt::format("gate{}", sig);
    ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
    AsyncPcopy p({jobs(), src, to}, logs, {"PCOPY_TEST_GATE_NAME=gate.txt", "PCOPY_TEST_GATE_FIFO=" + fifo});
    // While big files are written, if it can be seen in time; the gate keeps the run going anyway.
    poll_until(Clock::now() + 2s, [&] { return !writing_in(p.pid(), to).empty(); });
    ASSERT_TRUE(p.running());
    ASSERT_EQ(::kill(p.pid(), sig), 0);
    std::vector<Proc> workers;
    bool all_stopped = poll_until(Clock::now() + 10s, [&] {
      workers = children_of(p.pid());
      return stopped(p.pid()) && workers.size() == size_t(GetParam()) &&
             std::all_of(workers.begin(), workers.end(), [](const Proc& w) { return stopped(w.pid); });
    });
    std::string states = fmt::format("parent {}:", stopped(p.pid()) ? "stopped" : "running");
    for (const Proc& w : children_of(p.pid())) states += fmt::format(" worker {}", stopped(w.pid) ? "stopped" : "running");
    EXPECT_TRUE(all_stopped) << states;
    if (all_stopped) {
      siginfo_t info{};
      ASSERT_EQ(::waitid(P_PID, id_t(p.pid()), &info, WSTOPPED | WNOHANG | WNOWAIT), 0);
      EXPECT_EQ(info.si_code, CLD_STOPPED);
      EXPECT_EQ(info.si_status, sig) << "the shell should see the job stopped by the signal it sent";
      // A window to look in, not a synchronisation: with every process stopped, nothing may change.
      std::string before = written_state(p.pid(), to);
      std::this_thread::sleep_for(300ms);
      EXPECT_EQ(written_state(p.pid(), to), before) << "written while stopped";
    }
    ASSERT_EQ(::kill(p.pid(), SIGCONT), 0);
    bool opened = open_gate(fifo, Clock::now() + 60s, [&] { return p.running(); });
    RunResult r = p.wait();
    EXPECT_TRUE(opened) << "no worker came to the gate";
    expect_complete_copy(r, src, to);
  }
}

// A signal ignored when pcopy starts stays ignored, as it does for cp: under nohup a closed
// terminal's SIGHUP, for a job a script started with `&` the terminal's Ctrl-C, a script's
// `trap '' INT TERM`; in the workers too. They ended the run, interrupted (129, 130, 143). The
// run is held at a gate while they come; a Ctrl-Z after them, which pcopy does act on (it stops),
// shows they have been read, if they were going to be.
TEST_P(FaultsByJobs, SignalsIgnoredWhenPcopyStartsStayIgnored) {
#ifndef PCOPY_TEST_HOOKS
  GTEST_SKIP() << "needs a build with -DPCOPY_TEST_HOOKS=ON";
#endif
  std::string src = shared_tree("job_control", make_job_control_tree), fifo = tmp / "gate";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  const std::vector<int> ignored{SIGHUP, SIGINT, SIGQUIT, SIGTERM};
  AsyncPcopy p({jobs(), src, dst}, logs, {"PCOPY_TEST_GATE_NAME=gate.txt", "PCOPY_TEST_GATE_FIFO=" + fifo}, "", ignored);
  UniqueFd gate;  // held open: the worker waits at the gate until it is closed
  bool waiting = poll_until(Clock::now() + 60s, [&] {
    gate.reset(::open(fifo.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC));  // ENXIO until a worker waits
    return gate.valid() || !p.running();
  });
  ASSERT_TRUE(waiting && p.running()) << describe(p.wait());
  auto ignores_all = [&](pid_t pid) {
    std::string status = read_file(fmt::format("/proc/{}/status", pid));
    size_t at = status.find("SigIgn:\t");
    if (at == std::string::npos) return false;
    unsigned long long mask = std::stoull(status.substr(at + 8, 16), nullptr, 16);
    return std::all_of(ignored.begin(), ignored.end(), [&](int sig) { return (mask >> (sig - 1)) & 1; });
  };
  EXPECT_TRUE(ignores_all(p.pid())) << "pcopy changed what it inherited";
  for (const Proc& w : children_of(p.pid())) EXPECT_TRUE(ignores_all(w.pid)) << "worker " << w.pid;
  for (int sig : ignored) ASSERT_EQ(::kill(p.pid(), sig), 0);
  ASSERT_EQ(::kill(p.pid(), SIGTSTP), 0);
  bool stopped_itself = poll_until(Clock::now() + 10s, [&] { return stopped(p.pid()) || !p.running(); });
  ASSERT_EQ(::kill(p.pid(), SIGCONT), 0);
  gate.reset();
  RunResult r = p.wait();
  EXPECT_TRUE(stopped_itself) << describe(r);
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_FALSE(has_line_starting(r.err, "pcopy: interrupted")) << describe(r);
  expect_complete_copy(r, src, dst);
}

// Workers that die, one after another, before doing any work: pcopy gives up, says that the rest
// was not copied, and reports it as a full disk's stop is, with no path at fault (it said ".", and
// left files neither copied nor named without a word about them).
TEST_P(FaultsByJobs, WorkersThatKeepDyingEndTheRunSayingTheRestWasNotCopied) {
#ifndef PCOPY_TEST_HOOKS
  GTEST_SKIP() << "needs a build with -DPCOPY_TEST_HOOKS=ON";
#endif
  std::string src = tmp / "src";
  for (int i = 0; i < 30; ++i) {
    make_dirs(src + fmt::format("/d{:02}", i));
    write_file(src + fmt::format("/d{:02}/poison", i), "kills the worker that takes it\n");
  }
  RunOptions options;
  options.env = {"PCOPY_TEST_KILL_NAME=poison"};
  options.timeout_s = 120;
  RunResult r = copy(src, dst, {"--json"}, options);
  EXPECT_EQ(r.status, 1) << describe(r);
  const std::string why =
      "workers die before doing any work (killed by signal 9 (Killed)); giving up: the remaining entries were not copied";
  EXPECT_TRUE(has_line(r.err, "pcopy: " + why)) << describe(r);
  auto errors = nlohmann::json::parse(r.out).at("errors");
  EXPECT_EQ(std::count(errors.begin(), errors.end(), nlohmann::json{{"path", ""}, {"reason", why}}), 1) << r.out;
}

// SIGCHLD ignored when pcopy starts (a wrapper's signal(SIGCHLD, SIG_IGN) survives exec) would have
// the kernel reap dead workers itself: a worker killed was said to have "exited with status 0".
TEST_P(FaultsByJobs, AWorkerKilledIsSaidToBeKilledEvenWithSigchldIgnoredAtStart) {
#ifndef PCOPY_TEST_HOOKS
  GTEST_SKIP() << "needs a build with -DPCOPY_TEST_HOOKS=ON";
#endif
  std::string src = tmp / "src";
  make_dirs(src + "/a");
  for (int i = 0; i < 10; ++i) write_file(src + fmt::format("/a/f{}", i), "a file\n");
  AsyncPcopy p({jobs(), src, dst}, logs, {"PCOPY_TEST_KILL_NAME=f5"}, "", {SIGCHLD});
  RunResult r = p.wait();
  EXPECT_EQ(r.status, 1) << describe(r);
  EXPECT_TRUE(has_line_starting(r.err, "pcopy: cannot copy 'a/f5': a worker died copying it (killed by signal 9"))
      << describe(r);
}

// Ctrl-C (or SIGTERM) once the copy is done and --delete is removing: the removals stop, and the
// run ends as interrupted (130, "interrupted": true), not as a success after deleting everything.
// A hook stops pcopy as the removals begin; the signal is sent while it is stopped.
TEST_P(FaultsByJobs, SigintDuringDeleteStopsTheRemovalsAndEndsInterrupted) {
#ifndef PCOPY_TEST_HOOKS
  GTEST_SKIP() << "needs a build with -DPCOPY_TEST_HOOKS=ON";
#endif
  std::string src = tmp / "src";
  make_dir(src);
  write_file(src + "/kept", "k\n");
  for (int d = 0; d < 5; ++d) {
    make_dirs(dst + fmt::format("/old{}", d));
    for (int f = 0; f < 20; ++f) write_file(dst + fmt::format("/old{}/f{}", d, f), "");
  }
  for (int sig : {SIGINT, SIGTERM}) {
    SCOPED_TRACE(::strsignal(sig));
    AsyncPcopy p({jobs(), "--delete", "--json", src, dst}, logs, {"PCOPY_TEST_STOP_BEFORE_DELETE=1"});
    RunResult r = signal_when_stopped(p, sig);
    EXPECT_EQ(r.status, 128 + sig) << describe(r);
    auto report = nlohmann::json::parse(r.out);
    EXPECT_EQ(report.at("interrupted"), true) << r.out;
    EXPECT_EQ(report.at("files_deleted"), 0) << r.out;
    EXPECT_EQ(list_tree(dst).size(), 1u + 5u * 21u) << "nothing may be deleted after the signal";
    EXPECT_EQ(read_file(dst + "/kept"), "k\n");
  }
}

// A worker killed after its last job, while --delete removes (an OOM kill, `kill -9`): it held
// nothing and the run is whole, but its death is said, as any other is. It went unsaid (I14).
TEST_P(FaultsByJobs, AWorkerKilledWhileTheRemovalsRunIsSaid) {
#ifndef PCOPY_TEST_HOOKS
  GTEST_SKIP() << "needs a build with -DPCOPY_TEST_HOOKS=ON";
#endif
  std::string src = tmp / "src";
  make_dir(src);
  write_file(src + "/kept", "k\n");
  make_dirs(dst + "/old");
  write_file(dst + "/old/f", "extraneous\n");
  AsyncPcopy p({jobs(), "--delete", "--json", src, dst}, logs, {"PCOPY_TEST_STOP_BEFORE_DELETE=1"});
  bool parked = poll_until(Clock::now() + 60s, [&] { return !p.running() || stopped(p.pid()); });
  ASSERT_TRUE(parked && p.running()) << describe(p.wait());
  std::vector<Proc> workers = children_of(p.pid());
  ASSERT_FALSE(workers.empty());
  ASSERT_EQ(::kill(workers.front().pid, SIGKILL), 0);
  bool dead = poll_until(Clock::now() + 60s, [&] { return !alive(workers.front()); });
  ASSERT_TRUE(dead) << "the worker did not die";
  ASSERT_EQ(::kill(p.pid(), SIGCONT), 0);
  RunResult r = p.wait();
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_TRUE(has_line(r.err, fmt::format("pcopy: warning: worker {} died (killed by signal 9 (Killed))",
                                          workers.front().pid)))
      << describe(r);
  EXPECT_EQ(list_tree(dst), std::vector<std::string>{"kept"}) << describe(r);
}

// A signal that comes while DST is made (here the parent stops just before, is signalled, then
// continued) ends the run as one during the copy does: interrupted, with its report, and DST with
// SRC's mode. It killed pcopy: no JSON report, an empty manifest, an empty DST of mode 0700 (HHH).
TEST_P(FaultsByJobs, ASignalWhileDstIsMadeEndsTheRunWithItsReport) {
#ifndef PCOPY_TEST_HOOKS
  GTEST_SKIP() << "needs a build with -DPCOPY_TEST_HOOKS=ON";
#endif
  std::string src = tmp / "src";
  make_dir(src);
  write_file(src + "/f", "f\n");
  ASSERT_EQ(::chmod(src.c_str(), 0750), 0);
  for (int sig : {SIGINT, SIGTERM}) {
    SCOPED_TRACE(::strsignal(sig));
    std::string to = tmp / fmt::format("dst{}", sig), manifest = tmp / fmt::format("m{}.jsonl", sig);
    AsyncPcopy p({jobs(), "--json", "--manifest", manifest, src, to}, logs, {"PCOPY_TEST_STOP_BEFORE_DST=1"});
    RunResult r = signal_when_stopped(p, sig);
    EXPECT_EQ(r.status, 128 + sig) << describe(r);
    auto report = nlohmann::json::parse(r.out);
    EXPECT_EQ(report.at("interrupted"), true) << r.out;
    EXPECT_EQ(lstat_or_zero(to).st_mode & 07777, 0750u);
    EXPECT_EQ(joined(temporaries(to)), "") << "temporaries left behind";
  }
}

// A signal that comes as the run is refused (DST under a file, after the parent stopped at the
// hook) is what it ends with: 143 and "interrupted" in the report, not 2 and a usage error (KKK).
TEST_P(FaultsByJobs, ASignalBeforeARefusalEndsTheRunInterrupted) {
#ifndef PCOPY_TEST_HOOKS
  GTEST_SKIP() << "needs a build with -DPCOPY_TEST_HOOKS=ON";
#endif
  std::string src = tmp / "src", file = tmp / "file";
  make_dir(src);
  write_file(src + "/f", "f\n");
  write_file(file, "DST cannot be made under a file\n");
  AsyncPcopy p({jobs(), "--json", src, file + "/sub"}, logs, {"PCOPY_TEST_STOP_BEFORE_DST=1"});
  RunResult r = signal_when_stopped(p, SIGTERM);
  EXPECT_EQ(r.status, 143) << describe(r);
  EXPECT_TRUE(has_line(r.err, "pcopy: cannot create '" + file + "/sub': Not a directory")) << describe(r);
  auto report = nlohmann::json::parse(r.out);
  EXPECT_EQ(report.at("interrupted"), true) << r.out;
  EXPECT_EQ(report.at("exit_status"), 143) << r.out;
}

// A manifest that is a FIFO no one reads yet holds the run before it starts, as it always did, but
// Ctrl-C or SIGTERM still end it, and Ctrl-Z still stops it: with the signals blocked from the start
// (so that one could not kill pcopy half-way through making DST), the open that waited for a
// reader could be ended only by SIGKILL (KKK).
TEST_P(FaultsByJobs, ARunWaitingForAManifestFifosReaderCanBeStoppedAndEnded) {
  std::string src = tmp / "src", fifo = tmp / "manifest";
  make_dir(src);
  write_file(src + "/f", "f\n");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  auto blocks = [](pid_t pid, int sig) {  // the signal is blocked: pcopy reads it itself
    std::string status = read_file(fmt::format("/proc/{}/status", pid));
    size_t at = status.find("SigBlk:\t");
    return at != std::string::npos && (std::stoull(status.substr(at + 8, 16), nullptr, 16) >> (sig - 1)) & 1;
  };
  auto state = [](pid_t pid) {
    auto info = proc_info(pid);
    return info ? info->state : '?';
  };
  {  // Ctrl-Z, fg, and a reader comes: the run completes. A signal pcopy does not act on, which
     // its launcher blocked, is no end of the wait (a terminal resized: it refused the run).
    AsyncPcopy p({jobs(), "--manifest", fifo, src, dst}, logs, {}, "", {}, {}, {SIGWINCH});
    ASSERT_TRUE(poll_until(Clock::now() + 60s, [&] { return !p.running() || blocks(p.pid(), SIGTSTP); }));
    ASSERT_EQ(::kill(p.pid(), SIGWINCH), 0);
    ASSERT_EQ(::kill(p.pid(), SIGTSTP), 0);
    EXPECT_TRUE(poll_until(Clock::now() + 60s, [&] { return !p.running() || state(p.pid()) == 'T'; }))
        << "not stopped: " << state(p.pid());
    ASSERT_EQ(::kill(p.pid(), SIGCONT), 0);
    UniqueFd reader(::open(fifo.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
    ASSERT_TRUE(reader.valid());
    std::string lines;
    char buf[4096];
    poll_until(Clock::now() + 60s, [&] {  // to its end: no writer, and pcopy gone
      ssize_t n = ::read(reader.get(), buf, sizeof buf);
      if (n > 0) lines.append(buf, size_t(n));
      return n == 0 && !p.running();
    });
    RunResult r = p.wait();
    EXPECT_EQ(r.status, 0) << describe(r);
    EXPECT_NE(lines.find("\"path\":\"f\""), std::string::npos) << lines;
    EXPECT_EQ(read_file(dst + "/f"), "f\n");
  }
  for (int sig : {SIGINT, SIGTERM}) {  // no reader ever: ended by the signal, nothing made
    SCOPED_TRACE(::strsignal(sig));
    std::string to = tmp / fmt::format("dst{}", sig);
    AsyncPcopy p({jobs(), "--json", "--manifest", fifo, src, to}, logs);
    ASSERT_TRUE(poll_until(Clock::now() + 60s, [&] { return !p.running() || blocks(p.pid(), sig); }));
    ASSERT_EQ(::kill(p.pid(), sig), 0);
    RunResult r = p.wait(30s);
    EXPECT_EQ(r.status, 128 + sig) << describe(r);
    EXPECT_TRUE(has_line(r.err, "pcopy: cannot write manifest '" + fifo + "': interrupted while waiting for a reader"))
        << describe(r);
    auto report = nlohmann::json::parse(r.out);
    EXPECT_EQ(report.at("interrupted"), true) << r.out;
    EXPECT_FALSE(exists(to));
  }
}

// --delete decides from what the walk saw, not from a second listing of SRC after the copy (as
// rsync decides from its file list): a directory renamed in SRC while the copy runs keeps its copy
// under the old name, and the new name is copied by the next run. The rename is made while a worker
// waits at a gate (a test hook) before photos/p1.jpg, so after the walk has listed photos.
TEST_P(FaultsByJobs, DeleteKeepsADirectoryRenamedInSourceDuringTheRun) {
#ifndef PCOPY_TEST_HOOKS
  GTEST_SKIP() << "needs a build with -DPCOPY_TEST_HOOKS=ON";
#endif
  std::string src = tmp / "src", to = tmp / "dst", fifo = tmp / "gate";
  make_dirs(src + "/photos");
  for (int i = 1; i <= 3; ++i) write_file(src + fmt::format("/photos/p{}.jpg", i), fmt::format("img{}\n", i));
  write_file(src + "/f.txt", "f\n");
  RunResult r = run_pcopy({jobs(), src, to});
  ASSERT_EQ(r.status, 0) << describe(r);
  write_file(to + "/stale.txt", "extraneous: deleted all the same\n");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);

  AsyncPcopy p({jobs(), "--delete", src, to}, logs, {"PCOPY_TEST_GATE_NAME=p1.jpg", "PCOPY_TEST_GATE_FIFO=" + fifo});
  UniqueFd gate;  // held open while the worker waits: it goes on once this is closed
  bool waiting = poll_until(Clock::now() + 60s, [&] {
    gate.reset(::open(fifo.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC));  // ENXIO until a worker waits
    return gate.valid() || !p.running();
  });
  ASSERT_TRUE(waiting && gate.valid()) << "no worker came to the gate";
  ASSERT_EQ(::rename((src + "/photos").c_str(), (src + "/photos-2025").c_str()), 0);
  gate.reset();
  r = p.wait();
  // A worker that opens photos after the rename finds it gone: that, and only that, is said, as a
  // warning (what SRC no longer has is not lost).
  EXPECT_EQ(r.status, 0) << describe(r);
  for (const std::string& line : lines_of(r.err)) {
    if (!line.starts_with("pcopy: ") || line.starts_with("pcopy: copied ")) continue;
    EXPECT_TRUE(line.starts_with("pcopy: warning: 'photos") && line.find(": vanished from SRC") != std::string::npos)
        << describe(r);
  }
  for (int i = 1; i <= 3; ++i)
    EXPECT_TRUE(exists(to + fmt::format("/photos/p{}.jpg", i))) << "deleted from DST, its new name never copied\n"
                                                                << describe(r);
  EXPECT_FALSE(exists(to + "/stale.txt")) << describe(r);

  r = run_pcopy({jobs(), "--delete", src, to});
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(list_tree(to), (std::vector<std::string>{"f.txt", "photos-2025", "photos-2025/p1.jpg",
                                                     "photos-2025/p2.jpg", "photos-2025/p3.jpg"}));
}

// pcopy on a pseudo-terminal of its own, as an interactive shell runs it: a session leader holds
// the terminal, and pcopy runs in a process group of its own, in the foreground (the leader hands
// it the terminal before it starts) or in the background (`pcopy ... &`), with `stty tostop` or
// without. What the terminal shows is read as it comes, so that writing to it blocks only while
// the test pauses its output. A pcopy that stops (job control) waits, stopped, until the test has
// the leader bring it to the foreground and continue it, as `fg` does.
class OnTerminal {
 public:
  OnTerminal(const std::vector<std::string>& args, const std::vector<std::string>& env_extra, bool foreground,
             bool tostop = false) {
    master_.reset(::posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC));
    if (!master_ || ::grantpt(master_.get()) != 0 || ::unlockpt(master_.get()) != 0) return;
    std::string slave = ::ptsname(master_.get());
    tty_.reset(::open(slave.c_str(), O_RDWR | O_NOCTTY | O_CLOEXEC));
    int report[2], ready[2], fg[2];
    if (!tty_ || ::pipe2(report, O_CLOEXEC) != 0 || ::pipe2(ready, O_CLOEXEC) != 0 || ::pipe2(fg, O_CLOEXEC) != 0)
      return;
    UniqueFd report_out(report[1]), ready_in(ready[0]), ready_out(ready[1]), fg_in(fg[0]);
    report_.reset(report[0]);
    fg_.reset(fg[1]);
    // Everything the children need is made before fork: they make async-signal-safe calls only.
    std::vector<std::string> argv{pcopy_bin()};
    argv.insert(argv.end(), args.begin(), args.end());
    RunOptions options;
    options.env = env_extra;
    std::vector<std::string> env = child_environment(options);
    std::vector<char*> c_argv = c_strings(argv), c_env = c_strings(env);
    std::fflush(nullptr);
    leader_ = ::fork();
    if (leader_ != 0) {
      if (leader_ > 0) reader_ = std::thread([this] { read_screen(); });
      return;
    }
    int tty = -1;
    struct termios t;
    if (::setsid() < 0 || (tty = ::open(slave.c_str(), O_RDWR)) < 0 || ::tcgetattr(tty, &t) != 0) ::_exit(1);
    if (tostop) t.c_lflag |= TOSTOP;
    if (::tcsetattr(tty, TCSANOW, &t) != 0) ::_exit(1);
    pid_t pc = ::fork();
    if (pc == 0) {
      char go;
      int null = ::open("/dev/null", O_RDONLY);
      if (::setpgid(0, 0) != 0 || ::read(ready[0], &go, 1) != 1 || ::dup2(null, 0) < 0 || ::dup2(tty, 1) < 0 ||
          ::dup2(tty, 2) < 0)
        ::_exit(127);
      ::close_range(3, ~0U, 0);
      ::execve(c_argv[0], c_argv.data(), c_env.data());
      ::_exit(127);
    }
    ::setpgid(pc, pc);
    if (foreground) ::tcsetpgrp(tty, pc);
    (void)!::write(ready[1], "g", 1);
    (void)!::write(report[1], &pc, sizeof pc);
    // Then how it stopped (0 if it did not), and its exit status.
    int status = 0;
    ::waitpid(pc, &status, WUNTRACED);
    int how = WIFSTOPPED(status) ? WSTOPSIG(status) : 0;
    (void)!::write(report[1], &how, sizeof how);
    char c;
    if (how && ::read(fg[0], &c, 1) == 1) {
      ::tcsetpgrp(tty, pc);
      ::kill(pc, SIGCONT);
      ::waitpid(pc, &status, 0);
    }
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : WIFSIGNALED(status) ? 128 + WTERMSIG(status) : -1;
    (void)!::write(report[1], &code, sizeof code);
    ::_exit(0);
  }
  ~OnTerminal() {
    if (pid_ > 0 && !code_) ::kill(pid_, SIGKILL);
    if (leader_ > 0) {
      ::kill(leader_, SIGKILL);
      ::waitpid(leader_, nullptr, 0);
    }
    if (tty_) ::tcflow(tty_.get(), TCOON);
    tty_.reset();
    read_again();
    if (reader_.joinable()) reader_.join();
  }
  // pcopy's pid, once it started; -1 if it did not.
  pid_t pid() {
    if (pid_ < 0 && !receive(pid_, 10s)) pid_ = 0;
    return pid_ > 0 ? pid_ : -1;
  }
  int tty() const { return tty_.get(); }
  // The signal that stopped pcopy, if it stopped within `timeout` (0 if it ended instead).
  std::optional<int> stopped(std::chrono::seconds timeout) {
    int how = 0;
    if (!how_ && pid() > 0 && receive(how, timeout)) how_ = how;
    return how_;
  }
  // The terminal is read no more (a stalled ssh connection): once full, it takes nothing. Until
  // read_again() or wait().
  void stop_reading() {
    std::lock_guard<std::mutex> lock(mutex_);
    reading_ = false;
  }
  void read_again() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      reading_ = true;
    }
    read_on_.notify_all();
  }
  // `fg`: the stopped pcopy gets the terminal and is continued.
  void resume_in_foreground() { (void)!::write(fg_.get(), "g", 1); }  // the terminal, as the test holds it: tcflow() is Ctrl-S, Ctrl-Q
  std::string shown() {
    std::lock_guard<std::mutex> lock(mutex_);
    return shown_;
  }
  // pcopy's exit status (128 + N when a signal ended it), if it ended within `timeout`; then all it
  // wrote is in shown(): once the leader is gone and the test's own descriptor closed, the terminal
  // is read to its end.
  std::optional<int> wait(std::chrono::seconds timeout) {
    int code = 0;
    if (code_ || !stopped(timeout) || !receive(code, timeout)) return code_;
    code_ = code;
    ::waitpid(leader_, nullptr, 0);
    leader_ = -1;
    ::tcflow(tty_.get(), TCOON);
    tty_.reset();
    read_again();
    if (reader_.joinable()) reader_.join();
    return code_;
  }

 private:
  void read_screen() {
    char buf[4096];
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mutex_);
        read_on_.wait(lock, [this] { return reading_; });
      }
      ssize_t n = ::read(master_.get(), buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return;  // EIO: no process holds the terminal any more
      std::lock_guard<std::mutex> lock(mutex_);
      shown_.append(buf, size_t(n));
    }
  }
  bool receive(int& value, std::chrono::seconds timeout) {
    pollfd pfd{report_.get(), POLLIN, 0};
    return report_ && ::poll(&pfd, 1, int(std::chrono::milliseconds(timeout).count())) == 1 &&
           read_full(report_.get(), &value, sizeof value) == ssize_t(sizeof value);
  }
  UniqueFd master_, tty_, report_, fg_;
  pid_t leader_ = -1, pid_ = -1;
  std::optional<int> how_, code_;
  std::thread reader_;
  std::mutex mutex_;
  std::condition_variable read_on_;
  bool reading_ = true;
  std::string shown_;
};

// `stty tostop`: a background job that writes to its terminal is stopped by SIGTTOU. pcopy reads
// SIGTTOU from its signalfd, and a blocked SIGTTOU would let it write on: it makes the terminal's
// check itself, and stops its workers and itself. Here pcopy runs in a background process group of
// a session on a pseudo-terminal with tostop set; its first -v line is the first thing it writes
// (no bar is drawn from the background). Brought to the foreground and continued, it completes.
TEST_P(FaultsByJobs, WritingToTheTerminalFromTheBackgroundUnderTostopStopsTheWorkersToo) {
#ifndef PCOPY_TEST_HOOKS
  GTEST_SKIP() << "needs a build with -DPCOPY_TEST_HOOKS=ON";
#endif
  std::string src = shared_tree("job_control", make_job_control_tree);
  std::string to = tmp / "dst", fifo = tmp / "gate";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  OnTerminal term({"-v", jobs(), src, to}, {"PCOPY_TEST_GATE_NAME=gate.txt", "PCOPY_TEST_GATE_FIFO=" + fifo}, false,
                  true);
  pid_t pc = term.pid();
  std::optional<int> how = pc > 0 ? term.stopped(10s) : std::nullopt;
  bool stopped_by_it = how && *how != 0;
  std::vector<Proc> workers;
  bool all_stopped = stopped_by_it && poll_until(Clock::now() + 10s, [&] {
    workers = children_of(pc);
    return workers.size() == size_t(GetParam()) &&
           std::all_of(workers.begin(), workers.end(), [](const Proc& w) { return stopped(w.pid); });
  });
  std::string states;
  for (const Proc& w : children_of(pc)) states += fmt::format(" worker {}", stopped(w.pid) ? "stopped" : "running");
  std::optional<int> code;
  if (stopped_by_it) {
    term.resume_in_foreground();
    bool opened = open_gate(fifo, Clock::now() + 60s, [&] { return proc_info(pc) && !is_dead(proc_info(pc)->state); });
    EXPECT_TRUE(opened) << "no worker came to the gate";
    code = term.wait(60s);
  }
  ASSERT_GT(pc, 0) << "pcopy did not start";
  ASSERT_TRUE(stopped_by_it) << "pcopy was not stopped";
  EXPECT_EQ(*how, SIGTTOU);
  EXPECT_TRUE(all_stopped) << "workers:" << states;
  ASSERT_TRUE(code) << "pcopy did not finish once continued";
  EXPECT_EQ(*code, 0);
  EXPECT_EQ(diff_trees(src, to), "");
  EXPECT_EQ(joined(temporaries(to)), "");
}

// A destination directory moved out of DST while the worker is in it (held at a test hook on the
// first file of its first batch): the batches of it the worker takes next find it gone and fail,
// each file named. The worker kept the directory open from one batch to the next, and filled it
// where it went, the run saying 0 errors (helper I6). The batch under way finishes there.
TEST_P(FaultsByJobs, ADestinationDirectoryMovedAwayMidRunIsNotFilledWhereItWent) {
#ifndef PCOPY_TEST_HOOKS
  GTEST_SKIP() << "needs a build with -DPCOPY_TEST_HOOKS=ON";
#endif
  if (GetParam() != 1) GTEST_SKIP() << "one worker, which takes every batch of the directory";
  std::string src = tmp / "src", to = tmp / "to", aside = tmp / "aside", fifo = tmp / "gate";
  make_dirs(src + "/d");
  constexpr size_t kFiles = 400;  // several batches
  for (size_t i = 0; i < kFiles; ++i) write_file(src + fmt::format("/d/f{:03}", i), "x\n");
  make_dirs(to + "/d");  // there already: merged into, not made under a temporary name
  // The first file the walk meets in d, as the directory lists it: its first batch's first.
  std::string first;
  for (const auto& entry : std::filesystem::directory_iterator(src + "/d")) {
    first = entry.path().filename().string();
    break;
  }
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  AsyncPcopy p({"-j1", src, to}, logs, {"PCOPY_TEST_GATE_NAME=" + first, "PCOPY_TEST_GATE_FIFO=" + fifo});
  UniqueFd gate = hold_gate(fifo, Clock::now() + 60s, [&] { return p.running(); });
  ASSERT_TRUE(gate.valid()) << "no worker came to the gate";
  ASSERT_EQ(::rename((to + "/d").c_str(), aside.c_str()), 0);
  gate.reset();
  RunResult r = p.wait();
  EXPECT_EQ(r.status, 1) << describe(r);
  size_t there = list_tree(aside).size(), failed = 0;
  for (const std::string& line : lines_of(r.err))
    if (line.rfind("pcopy: cannot copy 'd/", 0) == 0 && line.ends_with("': No such file or directory")) ++failed;
  EXPECT_LT(there, kFiles) << "the directory was filled where it went\n" << describe(r);
  EXPECT_EQ(there + failed, kFiles) << "every file copied there, or named as failed\n" << describe(r);
  EXPECT_FALSE(exists(to + "/d"));
}

// Copies (--json, to `to`) a SRC of a file `top` and a directory `a` that is staged: its last file
// held at the gate, `meanwhile` is done with `a` under its temporary name `staged` in `to`.
void copy_with_a_staged_directory_held(const std::string& src, const std::string& to, const std::string& logs,
                                       const std::string& jobs,
                                       const std::function<void(const std::string& staged)>& meanwhile,
                                       RunResult& r) {
  make_dirs(src + "/a");
  for (int i = 0; i < 20; ++i) write_file(src + fmt::format("/a/f{:02}", i), "a file\n");
  write_file(src + "/a/gate.txt", "the worker taking this waits until the test opens the gate\n");
  write_file(src + "/top", "top\n");
  std::string fifo = to + ".gate";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  AsyncPcopy p({jobs, "--json", src, to}, logs, {"PCOPY_TEST_GATE_NAME=gate.txt", "PCOPY_TEST_GATE_FIFO=" + fifo});
  UniqueFd gate = hold_gate(fifo, Clock::now() + 60s, [&] { return p.running(); });
  ASSERT_TRUE(gate.valid()) << "no worker came to the gate";
  std::vector<std::string> staged = temporaries(to);
  ASSERT_EQ(staged.size(), 1u) << "the premise: a is staged under a temporary name";
  ASSERT_FALSE(exists(to + "/a"));
  meanwhile(staged[0]);
  gate.reset();
  r = p.wait();
}

// A staged directory whose name another writer took meanwhile (another run into DST made it) is
// merged into that directory: its files are there and counted, but the directory is not this
// run's, and is not in dirs_created. Both runs counted it (I22).
TEST_P(FaultsByJobs, AStagedDirectoryMergedIntoAnotherWritersIsNotCountedAsCreated) {
#ifndef PCOPY_TEST_HOOKS
  GTEST_SKIP() << "needs a build with -DPCOPY_TEST_HOOKS=ON";
#endif
  std::string src = tmp / "src", to = tmp / "to";
  RunResult r;
  ASSERT_NO_FATAL_FAILURE(
      copy_with_a_staged_directory_held(src, to, logs, jobs(), [&](const std::string&) { make_dir(to + "/a"); }, r));
  ASSERT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(diff_trees(src, to), "");
  EXPECT_EQ(joined(temporaries(to)), "");
  nlohmann::json report = nlohmann::json::parse(r.out);
  EXPECT_EQ(report.at("files_copied"), 22) << r.out;
  EXPECT_EQ(report.at("dirs_created"), 0) << r.out;
}

// A staged directory someone removed before it was put in place (a second run's or a script's
// clean-up of temporaries): nothing in it counts as copied. Its files were counted, as they were
// counted back out only by listing what the directory still held (I22).
TEST_P(FaultsByJobs, NothingOfAStagedDirectorySomeoneRemovedCountsAsCopied) {
#ifndef PCOPY_TEST_HOOKS
  GTEST_SKIP() << "needs a build with -DPCOPY_TEST_HOOKS=ON";
#endif
  std::string src = tmp / "src", to = tmp / "to";
  RunResult r;
  ASSERT_NO_FATAL_FAILURE(copy_with_a_staged_directory_held(
      src, to, logs, jobs(), [&](const std::string& staged) { std::filesystem::remove_all(to + "/" + staged); }, r));
  EXPECT_EQ(r.status, 1) << describe(r);
  EXPECT_TRUE(has_line(r.err, "pcopy: cannot copy 'a': No such file or directory")) << describe(r);
  EXPECT_EQ(list_tree(to), (std::vector<std::string>{"top"}));
  nlohmann::json report = nlohmann::json::parse(r.out);
  EXPECT_EQ(report.at("files_copied"), 1) << r.out;
  EXPECT_EQ(report.at("dirs_created"), 0) << r.out;
  EXPECT_EQ(report.at("bytes_copied"), 4) << r.out;
}

// Output paused at the terminal (Ctrl-S; a stalled ssh connection does the same) holds neither
// the copy nor the signals: the bar is not drawn while the terminal takes nothing, and a SIGTERM
// (`timeout`, systemd) ends the run, the lines it cannot write dropped a second later. pcopy
// waited in the bar's write until output resumed, the copy and the signal with it.
TEST_P(FaultsByJobs, ATerminalWhoseOutputIsPausedHoldsNeitherTheCopyNorSigterm) {
#ifndef PCOPY_TEST_HOOKS
  GTEST_SKIP() << "needs a build with -DPCOPY_TEST_HOOKS=ON";
#endif
  std::string src = shared_tree("job_control", make_job_control_tree);
  std::string to = tmp / "dst", fifo = tmp / "gate";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  OnTerminal term({jobs(), src, to}, {"PCOPY_TEST_GATE_NAME=gate.txt", "PCOPY_TEST_GATE_FIFO=" + fifo}, true);
  pid_t pc = term.pid();
  ASSERT_GT(pc, 0) << "pcopy did not start";
  // The bar is on the screen (a worker waits at the gate), then output is paused, then the gate
  // opens: the copy goes on to its end while the terminal takes nothing.
  bool drawn = poll_until(Clock::now() + 30s, [&] { return term.shown().find('%') != std::string::npos; });
  ASSERT_TRUE(drawn) << "no bar was drawn: " << escape_path(term.shown());
  ASSERT_EQ(::tcflow(term.tty(), TCOOFF), 0);
  EXPECT_TRUE(open_gate(fifo, Clock::now() + 60s, [&] { return !term.wait(0s); })) << "no worker came to the gate";
  size_t entries = list_tree(src).size();
  bool copied = poll_until(Clock::now() + 60s, [&] {
    auto listed = list_tree(to);
    return listed.size() == entries && temporaries(to).empty();
  });
  EXPECT_TRUE(copied) << "the copy stopped while the terminal's output was paused: " << list_tree(to).size() << " of "
                      << entries << " entries";
  const auto signalled = Clock::now();
  ASSERT_EQ(::kill(pc, SIGTERM), 0);
  std::optional<int> code = term.wait(30s);
  ASSERT_TRUE(code) << "SIGTERM did not end pcopy while the terminal's output was paused";
  EXPECT_EQ(*code, 128 + SIGTERM);
  // Its writes wait a second in all for the terminal, not a second each: erasing the bar and the
  // summary took 2 s. (A bound README states, with room for a loaded machine; no measure of speed.)
  EXPECT_LT(Clock::now() - signalled, 1900ms) << "the writes each waited for the paused terminal";
  EXPECT_EQ(diff_trees(src, to), "");
}

// A terminal that takes no more output (a stalled ssh connection, an emulator that reads no more)
// held -v's line in the kernel's write, which the ending signals, blocked for the signalfd, could
// not cut short: SIGTERM went unheard until the terminal read again (I10). The lines wait for it,
// and the copy with them (they must be said), but a SIGTERM ends the run a second later.
TEST_P(FaultsByJobs, VerboseLinesToATerminalThatTakesNothingHoldNoSigterm) {
  std::string src = shared_tree("many_names", [](const std::string& root) {
    for (int d = 0; d < 10; ++d) {
      make_dir(root + fmt::format("/d{}", d));
      for (int f = 0; f < 1000; ++f) write_file(root + fmt::format("/d{}/a-name-a-line-long-{:04}", d, f), "x\n");
    }
  });
  std::string to = tmp / "dst";
  OnTerminal term({"-v", jobs(), src, to}, {}, true);
  pid_t pc = term.pid();
  ASSERT_GT(pc, 0) << "pcopy did not start";
  term.stop_reading();
  // Full: pcopy waits in a write to the terminal, or, where the write was cut short (its timer),
  // for room in it: a poll of two descriptors, the terminal and the signals (the run's own loop
  // polls at least three). Which one a loaded machine shows depends on when the terminal's room ran
  // out; the test once waited a minute for the first.
  auto on_terminal = [&] {
    if (read_file(fmt::format("/proc/{}/wchan", pc)) == "wait_woken") return true;
    std::istringstream call(read_file(fmt::format("/proc/{}/syscall", pc)));
    long nr = -1;
    std::string fds, nfds;
    call >> nr >> fds >> nfds;
    return (nr == SYS_poll || nr == SYS_ppoll) && nfds == "0x2";
  };
  bool full = poll_until(Clock::now() + 60s, [&] { return on_terminal() || term.wait(0s).has_value(); });
  ASSERT_TRUE(full && on_terminal()) << "pcopy never waited for the terminal";
  const auto signalled = Clock::now();
  ASSERT_EQ(::kill(pc, SIGTERM), 0);
  std::optional<int> code = term.wait(30s);
  ASSERT_TRUE(code) << "SIGTERM did not end pcopy while the terminal took nothing";
  EXPECT_EQ(*code, 128 + SIGTERM);
  // (A bound README states, with room for a loaded machine; no measure of speed.)
  EXPECT_LT(Clock::now() - signalled, 1900ms) << "a write waited for the terminal after the signal";
}

// A pcopy sent to the background (`bg`, `&`) without `stty tostop` draws no bar over the shell and
// what is typed there, as pv does: it copies on in silence and says only its lines and summary.
TEST_P(FaultsByJobs, ABackgroundRunDrawsNoBarOverTheShell) {
  std::string src = shared_tree("job_control", make_job_control_tree);
  std::string to = tmp / "dst";
  OnTerminal term({jobs(), src, to}, {}, false);
  ASSERT_GT(term.pid(), 0) << "pcopy did not start";
  std::optional<int> code = term.wait(60s);
  ASSERT_TRUE(code) << "pcopy did not finish";
  EXPECT_EQ(*code, 0);
  std::string shown = term.shown();
  EXPECT_EQ(shown.find('%'), std::string::npos) << escape_path(shown);
  EXPECT_EQ(shown.find("\x1b[K"), std::string::npos) << escape_path(shown);
  EXPECT_TRUE(shown.starts_with("pcopy: copied ")) << escape_path(shown);
  EXPECT_EQ(diff_trees(src, to), "");
}

TEST_P(FaultsByJobs, KilledParentLeavesNoWorkersAndNextRunCleansTemporaries) {
  std::string src = shared_tree("big128", [](const std::string& root) { make_big_tree(root, 128, 0); });
  AsyncPcopy p({jobs(), src, dst}, logs);
  // Mid-copy, the parent is stopped (so it cannot replace a worker between census and kill) and
  // SIGKILLed. The test holds copies of the parent's pipe descriptors meanwhile: a worker that only
  // noticed its parent's death by EOF on its job pipe would then never notice, so the workers must die
  // by the kernel's parent-death signal. (The workers keep running: a stopped one would be killed by
  // the orphaned-process-group SIGHUP and prove nothing.)
  std::vector<Proc> workers;
  std::vector<UniqueFd> held_pipes;
  bool killed = false;
  auto deadline = Clock::now() + 60s;
  if (poll_until(deadline, [&] { return !writing_in(p.pid(), dst).empty() || !p.running(); }) && p.running() &&
      stop_process(p.pid())) {
    workers = children_of(p.pid());
    held_pipes = hold_pipes_of(p.pid());
    ASSERT_EQ(::kill(p.pid(), SIGKILL), 0);
    killed = true;
  }
  auto killed_at = Clock::now();
  RunResult r = p.wait();
  ASSERT_TRUE(killed) << "pcopy finished before it could be killed\n" << describe(r);
  ASSERT_EQ(r.status, 128 + SIGKILL) << describe(r);
  EXPECT_EQ(workers.size(), size_t(GetParam())) << "workers found before the kill";
  poll_until(killed_at + 1s, [&] { return std::none_of(workers.begin(), workers.end(), alive); });
  for (auto& w : workers) EXPECT_FALSE(alive(w)) << "worker " << w.pid << " outlived its parent by more than 1 s";
  held_pipes.clear();
  for (auto& w : workers) {
    if (alive(w)) ::kill(w.pid, SIGKILL);
  }
  // Temporaries may remain; what is under a final name is complete.
  EXPECT_EQ(incomplete_final_files(src, dst), "");

  // The next run into the same destination removes them and completes the copy.
  RunResult again = run_pcopy({jobs(), src, dst}, with_timeout(120));
  expect_complete_copy(again, src, dst);
}

// 50 directories of 100 tiny files.
void make_fifty_dirs(const std::string& root) {
  for (int d = 0; d < 50; ++d) {
    make_dir(root + fmt::format("/d{:02}", d));
    for (int f = 0; f < 100; ++f) write_file(root + fmt::format("/d{:02}/f{:03}", d, f), fmt::format("{} {}\n", d, f));
  }
}

TEST_P(FaultsByJobs, FilesFinishedButUnreadWhenInterruptedAreStillReported) {
  std::string src = shared_tree("fifty_marked", [](const std::string& root) {
    make_fifty_dirs(root);
    write_file(root + "/d10/stop-here", "the parent is stopped before this file is copied\n");
  });
  // The directories exist already, so none is staged: every finished file is in place at once.
  make_dir(dst);
  for (int d = 0; d < 50; ++d) make_dir(dst + fmt::format("/d{:02}", d));
  std::string manifest = tmp / "manifest.jsonl";
  // The worker that takes stop-here stops the parent first (a test hook), then copies it: its result,
  // and those of whatever else the workers finish meanwhile, wait unread in their buffers and pipes
  // when SIGINT comes.
  AsyncPcopy p({jobs(), "--json", "--manifest", manifest, src, dst}, logs, {"PCOPY_TEST_STOP_PARENT_NAME=stop-here"});
  auto deadline = Clock::now() + 60s;
  bool stopped = stopped_or_done(p, deadline);
  bool marked = stopped && p.running() && poll_until(deadline, [&] { return exists(dst + "/d10/stop-here"); });
  if (marked) ::kill(p.pid(), SIGINT);
  ::kill(p.pid(), SIGCONT);
  RunResult r = p.wait();
  ASSERT_TRUE(marked) << "the parent was not stopped with stop-here copied\n" << describe(r);
  EXPECT_EQ(r.status, 130) << describe(r);
  size_t on_disk = count_regular_files(dst);
  EXPECT_LT(on_disk, 5001u) << "interrupted, yet everything was copied";
  auto lines = lines_of(read_file(manifest));
  EXPECT_EQ(lines.size(), on_disk) << "every file copied is in the manifest";
  EXPECT_EQ(nlohmann::json::parse(r.out).at("files_copied").get<size_t>(), on_disk) << describe(r);
  for (const std::string& rel : list_tree(dst)) {
    if (!S_ISREG(lstat_or_zero(dst + "/" + rel).st_mode)) continue;
    std::string entry = fmt::format("\"path\":\"{}\"", rel);
    EXPECT_TRUE(std::any_of(lines.begin(), lines.end(), [&](const std::string& l) { return l.find(entry) != l.npos; }))
        << rel << " is in place but not in the manifest";
  }
}

// A new directory is filled under a temporary name and renamed into place when complete. If its
// name appears meanwhile (a second run into the same destination, a cron job overlapping the
// last), what was staged moves into that directory instead: no error, nothing left behind.
TEST_P(FaultsByJobs, DirectoryMadeByAnotherRunWhileItWasStagedGetsTheFiles) {
  std::string src = tmp / "src";
  make_dirs(src + "/d");
  for (int i = 0; i < 20; ++i) write_file(src + fmt::format("/d/f{:02}", i), fmt::format("file {}\n", i));
  write_file(src + "/d/stop-here", "marked\n");
  set_times(src + "/d", 1'500'000'000'000'000'000LL, 1'500'000'000'000'000'000LL);
  make_dir(dst);
  AsyncPcopy p({jobs(), src, dst}, logs, {"PCOPY_TEST_STOP_PARENT_NAME=stop-here"});
  auto deadline = Clock::now() + 60s;
  bool stopped = stopped_or_done(p, deadline);
  bool staged = stopped && p.running() && !temporaries_in(dst).empty() && !exists(dst + "/d");
  if (staged) {
    make_dir(dst + "/d");  // the other run's
    write_file(dst + "/d/theirs", "theirs\n");
  }
  ::kill(p.pid(), SIGCONT);
  RunResult r = p.wait();
  if (!staged) GTEST_SKIP() << "d was not staged (or the parent never stopped)\n" << describe(r);
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(joined(temporaries(dst)), "");
  EXPECT_EQ(read_file(dst + "/d/theirs"), "theirs\n");
  struct stat st {};
  ASSERT_EQ(::lstat((dst + "/d").c_str(), &st), 0);
  EXPECT_EQ(st.st_mtim.tv_sec, 1'500'000'000) << "the directory has SRC's time";
  ASSERT_EQ(::unlink((dst + "/d/theirs").c_str()), 0);
  set_times(dst + "/d", 1'500'000'000'000'000'000LL, 1'500'000'000'000'000'000LL);
  EXPECT_EQ(diff_trees(src, dst), "");
}

// With --manifest (as with -v) nothing is staged: each line it writes names a file already in place,
// whatever becomes of the run (killed, or another writer taking the directory's name).
TEST_P(FaultsByJobs, ManifestRunsStageNothing) {
#ifndef PCOPY_TEST_HOOKS
  GTEST_SKIP() << "needs a build with -DPCOPY_TEST_HOOKS=ON";
#endif
  std::string src = tmp / "src", fifo = tmp / "gate", manifest = tmp / "manifest.jsonl";
  make_dirs(src + "/d");
  for (int i = 0; i < 5; ++i) write_file(src + fmt::format("/d/f{}", i), fmt::format("file {}\n", i));
  write_file(src + "/d/gate.txt", "held\n");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  AsyncPcopy p({jobs(), "--manifest", manifest, src, dst}, logs,
               {"PCOPY_TEST_GATE_NAME=gate.txt", "PCOPY_TEST_GATE_FIFO=" + fifo});
  // d is made (or staged) before its files are handed out, and the run cannot end before the gate.
  bool made = poll_until(Clock::now() + 60s, [&] { return exists(dst + "/d") || !temporaries_in(dst).empty() || !p.running(); });
  std::vector<std::string> temps = temporaries_in(dst);
  bool visible = exists(dst + "/d");
  bool opened = open_gate(fifo, Clock::now() + 60s, [&] { return p.running(); });
  RunResult r = p.wait();
  EXPECT_TRUE(made && opened) << describe(r);
  EXPECT_EQ(joined(temps), "") << "a directory was staged";
  EXPECT_TRUE(visible);
  expect_complete_copy(r, src, dst);
}

// When the directory made meanwhile has a directory where the staged one has a file, that file
// fails alone (as a copy into an existing directory fails it), counted as failed; the rest join,
// and nothing is left in the staged directory (the rest were left there, unreported, and counted
// as copied).
TEST_P(FaultsByJobs, AStagedFileThatCannotJoinTheDirectoryMadeMeanwhileFailsAlone) {
#ifndef PCOPY_TEST_HOOKS
  GTEST_SKIP() << "needs a build with -DPCOPY_TEST_HOOKS=ON";
#endif
  std::string src = tmp / "src";
  make_dirs(src + "/d");
  for (int i = 0; i < 20; ++i) write_file(src + fmt::format("/d/f{:02}", i), fmt::format("file {}\n", i));
  write_file(src + "/d/stop-here", "marked\n");
  make_dir(dst);
  AsyncPcopy p({jobs(), "--json", src, dst}, logs, {"PCOPY_TEST_STOP_PARENT_NAME=stop-here"});
  bool stopped = stopped_or_done(p, Clock::now() + 60s);
  bool staged = stopped && p.running() && !temporaries_in(dst).empty() && !exists(dst + "/d");
  if (staged) {
    make_dirs(dst + "/d/f03");  // another writer's directory where SRC has a file
    write_file(dst + "/d/f03/theirs", "theirs\n");
  }
  ::kill(p.pid(), SIGCONT);
  RunResult r = p.wait();
  if (!staged) GTEST_SKIP() << "d was not staged (or the parent never stopped)\n" << describe(r);
  EXPECT_EQ(r.status, 1) << describe(r);
  EXPECT_TRUE(has_line(r.err, "pcopy: cannot copy 'd/f03': Is a directory")) << describe(r);
  EXPECT_EQ(nlohmann::json::parse(r.out).at("files_copied"), 20) << describe(r);
  EXPECT_EQ(joined(temporaries(dst)), "");
  EXPECT_EQ(read_file(dst + "/d/f03/theirs"), "theirs\n");
  for (int i = 0; i < 20; ++i) {
    if (i == 3) continue;
    EXPECT_EQ(read_file(dst + fmt::format("/d/f{:02}", i)), fmt::format("file {}\n", i));
  }
  EXPECT_EQ(read_file(dst + "/d/stop-here"), "marked\n");
}

// Whoever can write in DST renames a directory being staged away, puts a symbolic link to some
// file of theirs... or root's at its name, and makes a directory of the final name: pcopy, finding
// the name taken, moves what it staged into that directory. It must not follow the link to make
// the staged directory writable (it changed the victim's mode to 0700); the entries it cannot
// move are reported.
TEST_P(FaultsByJobs, MergingAStagedDirectoryNeverFollowsALinkPutInItsPlace) {
#ifndef PCOPY_TEST_HOOKS
  GTEST_SKIP() << "needs a build with -DPCOPY_TEST_HOOKS=ON";
#endif
  std::string src = tmp / "src", victim = tmp / "victim";
  make_dirs(src + "/d");
  for (int i = 0; i < 5; ++i) write_file(src + fmt::format("/d/f{}", i), fmt::format("file {}\n", i));
  write_file(src + "/d/stop-here", "marked\n");
  write_file(victim, "root:x:0:0\n", 0644);
  make_dir(dst);
  AsyncPcopy p({jobs(), src, dst}, logs, {"PCOPY_TEST_STOP_PARENT_NAME=stop-here"});
  bool stopped = stopped_or_done(p, Clock::now() + 60s);
  std::vector<std::string> staged = stopped && p.running() ? temporaries_in(dst) : std::vector<std::string>{};
  if (staged.size() == 1) {
    std::string name = dst + "/" + staged[0];
    ASSERT_EQ(::rename(name.c_str(), (dst + "/moved").c_str()), 0);
    make_symlink(victim, name);
    make_dir(dst + "/d");
  }
  ::kill(p.pid(), SIGCONT);
  RunResult r = p.wait();
  if (staged.size() != 1) GTEST_SKIP() << "d was not staged (or the parent never stopped)\n" << describe(r);
  struct stat st {};
  ASSERT_EQ(::lstat(victim.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0644u) << "the planted link was followed";
  EXPECT_EQ(read_file(victim), "root:x:0:0\n");
  EXPECT_EQ(r.status, 1) << describe(r);
}

// -v into a file (a CI log): the paths are written as the files are done, not held back until
// the end (or 64 KiB), so a log shows where a slow or hung run stands. Here the run waits at a
// gate in z/ after the files before it are copied; their lines must be in the log meanwhile.
TEST_P(FaultsByJobs, VerboseLinesReachALogFileWhileTheRunGoesOn) {
#ifndef PCOPY_TEST_HOOKS
  GTEST_SKIP() << "needs a build with -DPCOPY_TEST_HOOKS=ON";
#endif
  std::string src = tmp / "src", fifo = tmp / "gate";
  make_dirs(src + "/z");
  for (int i = 0; i < 5; ++i) write_file(src + fmt::format("/f{}", i), "f\n");
  write_file(src + "/z/gate.txt", "g\n");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  AsyncPcopy p({jobs(), "-v", src, dst}, logs, {"PCOPY_TEST_GATE_NAME=gate.txt", "PCOPY_TEST_GATE_FIFO=" + fifo});
  bool logged = poll_until(Clock::now() + 30s, [&] {
    auto lines = lines_of(read_file(logs + "/stdout"));
    std::set<std::string> done(lines.begin(), lines.end());
    return !p.running() || (done.count("f0") && done.count("f4"));
  });
  bool waiting = p.running();
  bool opened = open_gate(fifo, Clock::now() + 60s, [&] { return p.running(); });
  RunResult r = p.wait();
  EXPECT_TRUE(opened && waiting) << "the run did not wait at the gate\n" << describe(r);
  EXPECT_TRUE(logged) << "the paths copied were not in the log while the run went on\n" << describe(r);
  EXPECT_EQ(r.status, 0) << describe(r);
  auto lines = lines_of(r.out);
  EXPECT_EQ(std::set<std::string>(lines.begin(), lines.end()),
            (std::set<std::string>{"f0", "f1", "f2", "f3", "f4", "z/", "z/gate.txt"}))
      << describe(r);
}

// The walk listed a regular file; when a worker comes to open it, it is a FIFO or a symbolic link.
// The open must neither wait for a writer to the FIFO (forever) nor follow the link: the file is
// reported as changed, the rest copied. On both paths: one file at a time, and io_uring batches
// (whose open of a FIFO does not block, and which falls back to the one-file path on a failure).
TEST_P(FaultsByJobs, ASourceFileTurnedIntoAFifoOrALinkIsReportedNeitherOpenedNorFollowed) {
#ifndef PCOPY_TEST_HOOKS
  GTEST_SKIP() << "needs a build with -DPCOPY_TEST_HOOKS=ON";
#endif
  write_file(tmp / "outside", "not part of SRC\n");
  for (std::string kind : {"fifo", "link"}) {
    for (std::string way : {"--no-io-uring", "--progress=never"}) {
      SCOPED_TRACE(kind + " " + way);
      std::string src = tmp / ("src-" + kind + way), to = tmp / ("dst-" + kind + way), fifo = tmp / ("gate-" + kind + way);
      make_dir(src);
      write_file(src + "/a.txt", "a\n");
      write_file(src + "/gate.txt", "a regular file when listed\n");
      ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
      AsyncPcopy p({jobs(), way, src, to}, logs, {"PCOPY_TEST_GATE_NAME=gate.txt", "PCOPY_TEST_GATE_FIFO=" + fifo});
      UniqueFd gate;  // held open while the file is swapped: the worker waits until it is closed
      poll_until(Clock::now() + 60s, [&] {
        gate.reset(::open(fifo.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC));  // ENXIO until a worker waits
        return gate.valid() || !p.running();
      });
      ASSERT_TRUE(gate.valid()) << "no worker came to the gate\n" << describe(p.wait());
      std::string file = src + "/gate.txt";
      ASSERT_EQ(::unlink(file.c_str()), 0);
      if (kind == "fifo") {
        ASSERT_EQ(::mkfifo(file.c_str(), 0644), 0);
      } else {
        make_symlink(tmp / "outside", file);
      }
      // Its name out of the dentry cache, as in a big tree on disk: io_uring then opens it in a
      // kernel thread, which did wait for a writer (where not on tmpfs, which keeps every name).
      if (UniqueFd caches(::open("/proc/sys/vm/drop_caches", O_WRONLY | O_CLOEXEC)); caches) {
        ASSERT_EQ(::write(caches.get(), "2", 1), 1);
      }
      gate.reset();
      RunResult r = p.wait(60s);
      EXPECT_EQ(r.status, 1) << describe(r);
      EXPECT_TRUE(has_line_starting(r.err, "pcopy: cannot copy 'gate.txt': file changed type as we read it")) << describe(r);
      EXPECT_FALSE(exists(to + "/gate.txt"));
      EXPECT_EQ(read_file(to + "/a.txt"), "a\n");
      EXPECT_EQ(joined(temporaries(to)), "");
    }
  }
}

TEST_P(FaultsByJobs, TemporariesOfARunStillGoingAreLeftAlone) {
  std::string src = shared_tree("fifty", make_fifty_dirs);
  // A process that looks like a running pcopy: its temporaries must survive; those of a pcopy that
  // is gone, or of a pid now used by another program (this test), are leftovers.
  int ready[2];
  ASSERT_EQ(::pipe2(ready, O_CLOEXEC), 0);
  pid_t live = ::fork();
  ASSERT_GE(live, 0);
  if (live == 0) {
    ::prctl(PR_SET_NAME, "pcopy");
    (void)!::write(ready[1], "x", 1);
    ::pause();
    ::_exit(0);
  }
  ::close(ready[1]);
  char c;
  ASSERT_EQ(::read(ready[0], &c, 1), 1);
  ::close(ready[0]);
  pid_t gone = ::fork();
  if (gone == 0) ::_exit(0);
  ::waitpid(gone, nullptr, 0);
  make_dir(dst);
  make_dir(dst + "/d00");
  std::string in_use = fmt::format(".pcopy-{}-1.tmp", live), staged = fmt::format(".pcopy-{}-d1.tmp", live);
  write_file(dst + "/d00/" + in_use, "being written");
  make_dir(dst + "/" + staged);
  write_file(dst + "/" + staged + "/f", "being written");
  write_file(dst + fmt::format("/d00/.pcopy-{}-2.tmp", gone), "left over");
  write_file(dst + fmt::format("/.pcopy-{}-3.tmp", ::getpid()), "left over");
  RunResult r = copy(src, dst, {}, with_timeout(120));
  ::kill(live, SIGKILL);
  ::waitpid(live, nullptr, 0);
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(joined(temporaries(dst)), joined({staged, "d00/" + in_use}));
  // Once that run is gone, the next one removes them.
  RunResult again = copy(src, dst, {}, with_timeout(120));
  expect_complete_copy(again, src, dst);
}

// Pids repeat: in a container (a pid namespace) every run is pid 1 and its one worker pid 2. What an
// earlier run with those pids left is a leftover, removed, not this run's own; and the worker's new
// names never meet it (they did: `cannot copy 'f': File exists` on every run after one was killed).
// (Needs the hooks build for the leftover margin; without it the names still never meet.)
TEST(Faults, LeftoversOfAnEarlierRunWithTheSamePidsAreRemoved) {
#ifndef PCOPY_TEST_HOOKS
  GTEST_SKIP() << "needs a build with -DPCOPY_TEST_HOOKS=ON";
#endif
  if (::geteuid() != 0) GTEST_SKIP() << "needs root for a pid namespace (unshare -p)";
  if (!exists("/usr/bin/unshare")) GTEST_SKIP() << "needs unshare (util-linux)";
  TempDir t;
  std::string src = t / "src", to = t / "dst";
  make_dir(src);
  write_file(src + "/f", "f\n");
  make_dir(src + "/new");
  write_file(src + "/new/g", "g\n");
  make_dir(to);
  // The worker's temporaries (names from before runs were numbered, and of another run) and the
  // parent's staged directory, as a killed run in a namespace leaves them.
  for (const char* name : {".pcopy-2-1.tmp", ".pcopy-2-2.tmp", ".pcopy-2-123000000001.tmp"}) write_file(to + "/" + name, "half");
  make_dir(to + "/.pcopy-1-d1.tmp");
  write_file(to + "/.pcopy-1-d1.tmp/g", "half");
  for (const char* verify : {"--verify", "-u"}) {
    SCOPED_TRACE(verify);
    // A leftover has not changed for some seconds before the run (else it may be a live run's, in
    // another pid namespace with the same pids); here, only since before the run began.
    RunOptions options = with_timeout(120);
    options.env = {"PCOPY_TEST_LEFTOVER_MARGIN_S=0"};
    RunResult r = run({"/usr/bin/unshare", "-fp", "--mount-proc", pcopy_bin(), "-j1", verify, src, to}, options);
    EXPECT_EQ(r.status, 0) << describe(r);
    EXPECT_EQ(joined(temporaries(to)), "");
    EXPECT_EQ(diff_trees(src, to), "");
  }
}

// ---------------------------------------------------------------------------------------------------
// Staged directories: a small new leaf directory is made under a temporary name, its files are
// written straight to their final names inside, and it is renamed into place when complete.

// A leaf of 20 small files and one big one, so that a worker can be caught writing inside it.
void make_staged_leaf_tree(const std::string& root) {
  make_dir(root + "/leaf");
  write_big_file(root + "/leaf/big.bin", 96, 7);
  for (int f = 0; f < 20; ++f) write_file(root + fmt::format("/leaf/s{:02}", f), fmt::format("small {}\n", f));
}

// Runs pcopy on `src` and, once a worker writes inside a staged directory, freezes everything and
// calls `act(frozen, writer)`. Returns the run's result and whether `act` was called. The worker that
// copies big.bin stops itself half-way through (a test hook, first attempt only): copying 96 MiB takes
// a few tens of milliseconds, a window polling could miss on a loaded machine.
std::pair<RunResult, bool> catch_writing_staged(const std::vector<std::string>& args, const std::string& dst,
                                                const std::string& logs,
                                                const std::function<void(const Frozen&, pid_t)>& act) {
  AsyncPcopy p(args, logs, {"PCOPY_TEST_STOP_MIDWAY_NAME=big.bin"});
  bool caught = false;
  auto deadline = Clock::now() + 60s;
  pid_t writer = -1;
  auto stopped_writer = [&] {
    for (pid_t w : writing_staged_in(p.pid(), dst)) {
      auto info = proc_info(w);
      if (info && (info->state == 'T' || info->state == 't')) writer = w;
    }
    return writer > 0;
  };
  if (poll_until(deadline, [&] { return stopped_writer() || !p.running(); }) && writer > 0) {
    if (auto frozen = freeze(p)) {
      act(*frozen, writer);
      caught = true;
      thaw(*frozen);
    }
  }
  return {p.wait(), caught};
}

// Runs pcopy with `args`; the worker that copies the file `name` stops itself half-way through its
// data (a test hook, first attempt only), and `act` is called then, before it goes on. Returns the
// run's result and whether the worker stopped.
std::pair<RunResult, bool> act_midway(const std::vector<std::string>& args, const std::string& logs,
                                      const std::string& name, const std::function<void()>& act,
                                      std::vector<std::string> env = {}) {
  env.push_back("PCOPY_TEST_STOP_MIDWAY_NAME=" + name);
  AsyncPcopy p(args, logs, env);
  pid_t worker = stopped_worker(p, Clock::now() + 60s);
  if (worker > 0) {
    act();
    ::kill(worker, SIGCONT);
  }
  return {p.wait(), worker > 0};
}

// Copies SRC into a DST holding last night's version of `name`, the worker that takes `name`
// stopped half-way through it while `change` alters the source: the copy is refused as changed,
// and the previous version stays.
void expect_change_midway_refused(const std::string& jobs, const std::string& src, const std::string& dst,
                                  const std::string& logs, const std::string& name,
                                  const std::function<void()>& change) {
  make_dir(dst);
  write_file(dst + "/" + name, "last night's version\n");
  auto [r, stopped] = act_midway({jobs, src, dst}, logs, name, change);
  ASSERT_TRUE(stopped) << "the worker copying " << name << " never stopped half-way\n" << describe(r);
  EXPECT_EQ(r.status, 1) << describe(r);
  EXPECT_EQ(count_lines_containing(r.err, "pcopy: cannot copy '" + name + "': file changed as we read it"), 1u)
      << describe(r);
  EXPECT_EQ(read_file(dst + "/" + name), "last night's version\n");
  EXPECT_EQ(joined(temporaries(dst)), "");
}

// A FIFO or another file put where a file copied in chunks is being written (its temporary, or its
// final name with --inplace) by anyone who may write in DST: the copy fails with one line, and what
// was put there is left alone. Each chunk and the last step reopened the name: a FIFO blocked the
// run until pcopy was killed, and another's file took the rest of the data, then the source's
// owner and mode (set-uid root with -a), and the run said it succeeded.
TEST_P(FaultsByJobs, AnotherFilePutWhereAChunkedFileIsWrittenFailsItAndIsLeftAlone) {
  if (GetParam() == 1) GTEST_SKIP() << "one worker never splits a file";
  std::string src = shared_tree("huge_alone", [](const std::string& root) { write_big_file(root + "/huge.bin", 300, 5); });
  for (auto [inplace, fifo] : {std::pair{true, true}, {false, true}, {true, false}, {false, false}}) {
    SCOPED_TRACE(fmt::format("{} at {}", fifo ? "a FIFO" : "a file", inplace ? "the final name" : "the temporary"));
    std::string to = tmp / fmt::format("{}{}", inplace ? "inplace" : "temp", fifo ? "-fifo" : "-file");
    std::vector<std::string> args{jobs(), src, to};
    if (inplace) args.insert(args.begin(), "--inplace");
    std::string other = tmp / "other", where;
    auto [r, stopped] = act_midway(
        args, logs, "huge.bin",
        [&] {
          auto temps = temporaries(to);
          where = inplace ? to + "/huge.bin" : temps.empty() ? "" : to + "/" + temps[0];
          if (where.empty()) return;
          if (fifo) {
            ASSERT_EQ(::mkfifo(other.c_str(), 0644), 0);
          } else {
            write_file(other, "theirs\n", 0644);
          }
          ASSERT_EQ(::rename(other.c_str(), where.c_str()), 0);
        },
        {"PCOPY_TEST_CHUNK_LOCAL=1"});
    ASSERT_TRUE(stopped) << describe(r);
    ASSERT_FALSE(where.empty()) << "no temporary to replace\n" << describe(r);
    EXPECT_EQ(r.status, 1) << describe(r);
    EXPECT_EQ(count_lines_containing(r.err, "pcopy: cannot copy 'huge.bin': replaced by another file while it was written"), 1u)
        << describe(r);
    if (inplace && fifo) {
      EXPECT_TRUE(S_ISFIFO(lstat_or_zero(where).st_mode));  // left as it was put there
    } else if (inplace) {
      EXPECT_EQ(read_file(where), "theirs\n");
      EXPECT_EQ(lstat_or_zero(where).st_mode & 07777, 0644u);
    }
    EXPECT_EQ(joined(temporaries(to)), "");  // our temporary's name: what is there goes
  }
}

// A big file of SRC replaced by a symbolic link while its chunks are copied is reported as a file
// that changed type, as one copied whole is, and nothing is installed; the link is not followed.
// The chunks said "Too many levels of symbolic links".
TEST_P(FaultsByJobs, ABigFileTurnedIntoALinkWhileItsChunksAreCopiedChangedType) {
  if (GetParam() == 1) GTEST_SKIP() << "one worker never splits a file";
  std::string from = tmp / "src", link = tmp / "link";
  make_dir(from);
  write_big_file(from + "/huge.bin", 200, 9);
  auto [r, stopped] = act_midway(
      {jobs(), from, dst}, logs, "huge.bin",
      [&] {
        ASSERT_EQ(::symlink("/etc/passwd", link.c_str()), 0);
        ASSERT_EQ(::rename(link.c_str(), (from + "/huge.bin").c_str()), 0);
      },
      {"PCOPY_TEST_CHUNK_LOCAL=1"});
  ASSERT_TRUE(stopped) << describe(r);
  EXPECT_EQ(r.status, 1) << describe(r);
  EXPECT_EQ(count_lines_containing(r.err, "pcopy: cannot copy 'huge.bin': file changed type as we read it"), 1u)
      << describe(r);
  EXPECT_FALSE(exists(dst + "/huge.bin"));
  EXPECT_EQ(joined(temporaries(dst)), "");
}

// --fail-fast stops the run while big files are being begun: each is then whole, absent, or named
// in an error line. One begun as the run stopped had its chunks queued and never sent, and one
// whose chunks were being written was abandoned: with --inplace either was left empty or half
// written under its final name, with no word of it (about one run in three: eight of each).
TEST_P(FaultsByJobs, AFailFastStopLeavesNoBegunBigFileUnreported) {
  if (GetParam() == 1) GTEST_SKIP() << "one worker never splits a file";
  std::string src = shared_tree("fail_first_then_big", [](const std::string& root) {
    write_file(root + "/aa_bad", "its flush fails\n");
    write_big_file(root + "/big1", 140, 11);
    write_big_file(root + "/big2", 140, 12);
  });
  for (int round = 0; round < 16; ++round) {
    std::string how = round % 2 ? "--inplace" : "--no-io-uring";
    SCOPED_TRACE(how);
    std::string to = tmp / fmt::format("{}{}", how, round);
    RunOptions options = with_timeout(120);
    options.env = {"PCOPY_TEST_CHUNK_LOCAL=1", "PCOPY_TEST_EIO_FSYNC_NAME=aa_bad"};
    RunResult r = copy(src, to, {"-a", "--fsync", "--fail-fast", how}, options);
    EXPECT_EQ(r.status, 1) << describe(r);
    for (std::string big : {"big1", "big2"}) {
      bool whole = compare_contents(src + "/" + big, to + "/" + big) == "";
      bool absent = !exists(to + "/" + big);
      bool named = count_lines_containing(r.err, "pcopy: cannot copy '" + big + "'") == 1;
      EXPECT_TRUE(whole || absent || named) << big << "\n" << describe(r);
    }
    // Said once: a big file failed by the stop itself said it again, and the report had the stop
    // twice among its errors (I15).
    EXPECT_EQ(count_lines_containing(r.err, "pcopy: stopping at the first error"), 1u) << describe(r);
    EXPECT_EQ(joined(temporaries(to)), "");
  }
}

// In an append-only directory (chattr +a) no named temporary may be made: it could be neither
// renamed into place nor removed. Each of these made one, failed, and left it there, one more
// every run (I16): a new file with --verify (which rereads the copy; it now goes through an
// O_TMPFILE file too); --inplace over a file with other links (a new file renamed over it: now
// refused before anything is made). And a big file the walk had split (-a) failed there, where
// one it had not was copied; it is copied whole now, as that one is.
TEST_P(FaultsByJobs, AnAppendOnlyDirectoryGetsNoTemporaryWhateverTheWayOfCopying) {
  std::string src = tmp / "src";
  make_dirs(src + "/sub");
  write_file(src + "/sub/linked", "new data\n");
  write_big_file(src + "/sub/big", 130, 31);
  make_dirs(dst + "/sub");
  write_file(dst + "/sub/linked", "old data\n");
  ASSERT_EQ(::link((dst + "/sub/linked").c_str(), (dst + "/other").c_str()), 0);
  InodeFlags sub(dst + "/sub");
  if (!sub.add(FS_APPEND_FL)) GTEST_SKIP() << "cannot make a directory append-only (root, ext4/XFS/tmpfs)";
  RunOptions options = with_timeout(120);
  options.env = {"PCOPY_TEST_CHUNK_LOCAL=1"};
  // Every run fails `linked` (a file there is never replaced) and the directory's times.
  auto expect_only_linked_failed = [&](const RunResult& r) {
    EXPECT_EQ(r.status, 1) << describe(r);
    EXPECT_EQ(count_lines_containing(r.err, "pcopy: cannot copy"), 1u) << describe(r);
    EXPECT_TRUE(has_line(r.err, "pcopy: cannot copy 'sub/linked': Operation not permitted")) << describe(r);
    EXPECT_EQ(read_file(dst + "/other"), "old data\n") << "the other name keeps its data";
    EXPECT_EQ(joined(temporaries(dst)), "") << describe(r);
  };
  for (int run = 0; run < 2; ++run) {
    SCOPED_TRACE(run);
    std::string plain = fmt::format("sub/plain{}", run), verified = fmt::format("sub/verified{}", run);
    write_file(src + "/" + plain, "copied\n");
    RunResult r = copy(src, dst, {jobs(), "-a", "-u"}, options);  // big: split by the walk (-a), copied whole
    expect_only_linked_failed(r);
    EXPECT_EQ(read_file(dst + "/" + plain), "copied\n");
    EXPECT_EQ(compare_contents(src + "/sub/big", dst + "/sub/big"), "") << describe(r);
    write_file(src + "/" + verified, "verified\n");
    r = copy(src, dst, {jobs(), "-a", "-u", "--verify"}, options);
    expect_only_linked_failed(r);
    EXPECT_EQ(read_file(dst + "/" + verified), "verified\n");
    expect_only_linked_failed(copy(src, dst, {jobs(), "--inplace"}, options));
  }
}

// A big file that grows, shrinks or is emptied between the walk and its copy is copied as it is
// then, as a file copied whole is: where the walk had looked at it (-a, the bar), the copy in
// chunks failed it as "changed as we read it" before reading anything (I15). The bar's total
// follows it (I18), and one made sparse meanwhile keeps its holes (I19).
TEST_P(FaultsByJobs, ABigFileChangedBetweenTheWalkAndItsCopyIsCopiedAsItIsThen) {
#ifndef PCOPY_TEST_HOOKS
  GTEST_SKIP() << "needs a build with -DPCOPY_TEST_HOOKS=ON";
#endif
  if (GetParam() == 1) GTEST_SKIP() << "one worker never splits a file";
  for (std::string change : {"grown", "shrunk", "emptied", "made sparse"}) {
    SCOPED_TRACE(change);
    std::string src = tmp / (change + "-src"), to = tmp / (change + "-dst"), fifo = tmp / (change + "-gate");
    make_dirs(src);
    write_big_file(src + "/big.log", 140, 21);
    write_file(src + "/small", "small\n");
    ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
    AsyncPcopy p({jobs(), "-a", "--json", "--progress=always", src, to}, logs,
                 {"PCOPY_TEST_CHUNK_LOCAL=1", "PCOPY_TEST_GATE_NAME=big.log", "PCOPY_TEST_GATE_FIFO=" + fifo});
    UniqueFd gate = hold_gate(fifo, Clock::now() + 60s, [&] { return p.running(); });
    ASSERT_TRUE(gate.valid()) << describe(p.wait());
    if (change == "grown") {
      UniqueFd log(::open((src + "/big.log").c_str(), O_WRONLY | O_APPEND | O_CLOEXEC));
      ASSERT_TRUE(log.valid());
      ASSERT_EQ(::write(log.get(), "one more line\n", 14), 14);
    } else {
      off_t size = change == "shrunk" ? (1 << 20) + 3 : change == "emptied" ? 0 : off_t(256) << 20;
      ASSERT_EQ(::truncate((src + "/big.log").c_str(), size), 0);
    }
    gate.reset();
    RunResult r = p.wait();
    EXPECT_EQ(r.status, 0) << describe(r);
    EXPECT_EQ(compare_contents(src + "/big.log", to + "/big.log"), "") << describe(r);
    EXPECT_EQ(lstat_or_zero(to + "/big.log").st_mtim.tv_nsec, lstat_or_zero(src + "/big.log").st_mtim.tv_nsec);
    // Sparse when its copy began: copied by extents, its hole kept (its chunks filled it, I19).
    if (change == "made sparse") {
      EXPECT_LT(lstat_or_zero(to + "/big.log").st_blocks, (off_t(200) << 20) / 512);
    }
    EXPECT_EQ(nlohmann::json::parse(r.out).at("files_copied"), 2) << r.out;
    EXPECT_EQ(joined(temporaries(to)), "");
    // The total follows the file: the last status line is at 100% (a file that shrank left it at 0%).
    std::string last;
    for (const std::string& line : lines_of(r.err))
      if (line.starts_with("pcopy: ") && line.find('%') != std::string::npos) last = line;
    EXPECT_TRUE(last.starts_with("pcopy: 100% ")) << describe(r);
  }
}

// --inplace over a big file copied in chunks: the old file is not emptied when the copy begins, so
// what no chunk has reached yet keeps its data (a run stopped before a file's turn leaves it as it
// was); the last step cuts it to the source's size. It was emptied first.
TEST_P(FaultsByJobs, InPlaceChunksKeepTheOldDataUntilTheyReachIt) {
  if (GetParam() == 1) GTEST_SKIP() << "one worker never splits a file";
  std::string src = shared_tree("huge_alone", [](const std::string& root) { write_big_file(root + "/huge.bin", 300, 5); });
  make_dir(dst);
  write_big_file(dst + "/huge.bin", 400, 6);  // last night's, bigger
  off_t midway = -1;
  auto [r, stopped] = act_midway({jobs(), "--inplace", src, dst}, logs, "huge.bin",
                                 [&] { midway = lstat_or_zero(dst + "/huge.bin").st_size; }, {"PCOPY_TEST_CHUNK_LOCAL=1"});
  ASSERT_TRUE(stopped) << describe(r);
  EXPECT_EQ(midway, off_t(400) << 20);
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(diff_trees(src, dst), "");
}

// A signal while a big file's chunks rewrite it --inplace: its final name holds part of the new
// data (all of it at -j8, where every chunk was begun and is finished, but End never ran), with the
// mode of a copy being written. It is named, as after --fail-fast; a signal left it unsaid (CCC).
TEST_P(FaultsByJobs, ABigFileASignalLeftHalfRewrittenInPlaceIsNamed) {
  if (GetParam() == 1) GTEST_SKIP() << "one worker never splits a file";
  std::string src = shared_tree("huge_alone", [](const std::string& root) { write_big_file(root + "/huge.bin", 300, 5); });
  make_dir(dst);
  write_big_file(dst + "/huge.bin", 300, 6);
  auto [r, stopped] = act_midway({jobs(), "--inplace", "--json", src, dst}, logs, "huge.bin", [] {
    for (const Proc& pcopy : children_of(::getpid())) ::kill(pcopy.pid, SIGTERM);
  }, {"PCOPY_TEST_CHUNK_LOCAL=1"});
  ASSERT_TRUE(stopped) << describe(r);
  EXPECT_EQ(r.status, 128 + SIGTERM) << describe(r);
  EXPECT_EQ(count_lines_containing(r.err, "'huge.bin': not copied: pcopy stopped before it was complete"), 1u)
      << describe(r);
  nlohmann::json report = nlohmann::json::parse(r.out);
  ASSERT_EQ(report.at("errors").size(), 1u) << report.dump(2);
  EXPECT_EQ(report["errors"][0]["path"], "huge.bin") << report.dump(2);
}

// Big files handed back at once by a worker (it found them big: no -a, no progress display) are
// filled no more than one per worker at a time, as when each worker copied a file whole: when the
// disk is full, the files being filled fail (two at most), not every one begun, and the first two
// have the room for one at least. With -j2 all four were filled at once, and a tmpfs with room for
// two held none of them, with four errors.
TEST_P(FaultsByJobs, AFullDiskFailsOneBigFileNotAllThoseBegun) {
  if (GetParam() != 2) GTEST_SKIP() << "-j2: two files filled at a time, of four that are begun";
  Scratch scratch(tmp / "scratch", "300m");
  if (!scratch.tmpfs()) GTEST_SKIP() << "needs a tmpfs: root, to mount one";
  std::string src = shared_tree("four_names_of_130", [](const std::string& root) {
    write_big_file(root + "/f0", 130, 8);
    for (int i = 1; i < 4; ++i) ASSERT_EQ(::link((root + "/f0").c_str(), (root + fmt::format("/f{}", i)).c_str()), 0);
  });
  std::string to = scratch / "dst";
  RunResult r = copy(src, to, {}, with_timeout(120));
  EXPECT_EQ(r.status, 1) << describe(r);
  size_t whole = 0;
  for (int i = 0; i < 4; ++i) whole += compare_contents(src + fmt::format("/f{}", i), to + fmt::format("/f{}", i)) == "";
  EXPECT_GE(whole, 1u) << describe(r);
  EXPECT_LE(count_lines_containing(r.err, "pcopy: cannot copy"), 2u) << describe(r);
  expect_no_partial_files(src, to);
}

// What others may read of a copy while it is made: no more than SRC lets them, at any moment. The
// tests stop the worker that copies big.bin half-way through its data and look then.
mode_t mode_of(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0 ? st.st_mode & 07777 : 07777;
}

// A private SRC (0700, its files 0644 inside): a DST that pcopy makes, or one that was there open
// to all, is closed to group and others from the start, as cp -a and rsync -a keep it; not only
// once the copy is done, after everything in it was readable to all meanwhile.
TEST_P(FaultsByJobs, ADestinationIsNoMoreOpenThanAPrivateSourceWhileItIsFilled) {
  std::string src = tmp / "src";
  make_dir(src, 0700);
  write_file(src + "/notes", "private\n");
  write_big_file(src + "/big.bin", 8, 3);
  for (bool existed : {false, true}) {
    SCOPED_TRACE(existed ? "into an existing 0755 DST" : "into a new DST");
    std::string to = tmp / (existed ? "existing" : "new");
    if (existed) make_dir(to, 0755);
    mode_t midway = 0;
    auto [r, stopped] = act_midway({jobs(), src, to}, logs, "big.bin", [&] { midway = mode_of(to); });
    ASSERT_TRUE(stopped) << describe(r);
    EXPECT_EQ(midway & 077, 0u) << fmt::format("{:04o}", midway);
    EXPECT_EQ(r.status, 0) << describe(r);
    EXPECT_EQ(mode_of(to), 0700u);
    EXPECT_EQ(diff_trees(src, to), "");
  }
}

// With -a a copy's owner, group and ACL are set after its data: until then it is its maker's
// alone (0600), whether it is a named temporary (--verify) or, with --inplace, the final name; a
// file overwritten in place loses at once what the source's mode takes from its old one.
TEST_P(FaultsByJobs, ACopyIsItsMakersAloneUntilItsMetadataIsSet) {
  std::string src = tmp / "src";
  make_dir(src);
  write_big_file(src + "/big.bin", 8, 4);
  ASSERT_EQ(::chmod((src + "/big.bin").c_str(), 0640), 0);
  struct Case {
    std::vector<std::string> options;
    bool existed;  // DST has a big.bin, 0666
  };
  int n = 0;
  for (const Case& c : {Case{{"-a", "--verify"}, false}, Case{{"-a", "--inplace"}, false},
                        Case{{"--inplace"}, true}, Case{{"-a", "--inplace"}, true}}) {
    std::string label = fmt::format("{}{}", fmt::join(c.options, " "), c.existed ? " over a 0666 file" : "");
    SCOPED_TRACE(label);
    std::string to = tmp / fmt::format("dst{}", n++);
    make_dir(to);
    if (c.existed) write_file(to + "/big.bin", "last night's version\n", 0666);
    std::vector<std::string> args = c.options;
    args.insert(args.end(), {jobs(), src, to});
    std::vector<mode_t> midway;
    auto [r, stopped] = act_midway(args, logs, "big.bin", [&] {
      for (const std::string& name : list_tree(to)) midway.push_back(mode_of(to + "/" + name));
    });
    ASSERT_TRUE(stopped) << describe(r);
    ASSERT_EQ(midway.size(), 1u) << describe(r);
    EXPECT_EQ(midway[0] & (c.existed ? ~0640u & 077 : 077), 0u) << fmt::format("{:04o}", midway[0]);
    EXPECT_EQ(r.status, 0) << describe(r);
    EXPECT_EQ(mode_of(to + "/big.bin"), 0640u);
    EXPECT_EQ(diff_trees(src, to), "");
  }
}

// What the worker finds gone is told by what is gone (OOO): an up-to-date file of -a -u whose
// attributes are brought up to date by name, gone meanwhile, is vanished too, not `cannot copy`;
// with -L a link of SRC's whose target went is an error, "points to nothing", as the walk says of
// one, not a vanished entry (the link is still in SRC).
TEST_P(FaultsByJobs, WhatIsGoneFromSrcIsToldApartFromALinkToNothing) {
#ifndef PCOPY_TEST_HOOKS
  GTEST_SKIP() << "needs a build with -DPCOPY_TEST_HOOKS=ON";
#endif
  if (GetParam() != 1) GTEST_SKIP() << "one worker is enough: the gate holds the one job";
  std::string fifo = tmp / "gate";
  auto gated = [&](const std::vector<std::string>& args, const std::function<void()>& meanwhile) {
    ::unlink(fifo.c_str());
    EXPECT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
    AsyncPcopy p(args, logs, {"PCOPY_TEST_GATE_NAME=f", "PCOPY_TEST_GATE_FIFO=" + fifo});
    UniqueFd gate;
    bool waiting = poll_until(Clock::now() + 60s, [&] {
      gate.reset(::open(fifo.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC));  // ENXIO until a worker waits
      return gate.valid() || !p.running();
    });
    EXPECT_TRUE(waiting && gate.valid()) << "no worker came to the gate";
    meanwhile();
    gate.reset();
    return p.wait();
  };
  {
    SCOPED_TRACE("-a -u, an up-to-date file with attributes");
    std::string src = tmp / "src", to = tmp / "dst";
    make_dir(src);
    write_file(src + "/f", "data\n");
    if (::setxattr((src + "/f").c_str(), "user.tag", "1", 1, 0) != 0) GTEST_SKIP() << "no user.* attributes here";
    RunResult r = run_pcopy({jobs(), "-q", "-a", src, to});
    ASSERT_EQ(r.status, 0) << describe(r);
    r = gated({jobs(), "-a", "-u", src, to}, [&] { ASSERT_EQ(::unlink((src + "/f").c_str()), 0); });
    EXPECT_EQ(r.status, 0) << describe(r);
    EXPECT_TRUE(has_line(r.err, "pcopy: warning: 'f': vanished from SRC before it was copied")) << describe(r);
  }
  {
    SCOPED_TRACE("-L, a link whose target goes");
    std::string src = tmp / "lsrc", to = tmp / "ldst", target = tmp / "target";
    make_dir(src);
    write_file(target, "data\n");
    make_symlink(target, src + "/f");
    RunResult r = gated({jobs(), "-L", src, to}, [&] { ASSERT_EQ(::unlink(target.c_str()), 0); });
    EXPECT_EQ(r.status, 1) << describe(r);
    EXPECT_TRUE(has_line(r.err, "pcopy: cannot copy 'f': symbolic link points to nothing")) << describe(r);
  }
}

// --inplace over a big file copied in chunks that changes meanwhile (NNN): the copy fails, and the
// file keeps its mode less what the source's keeps out (0644 and a 0660 source: 0640), as one
// copied whole keeps it; not 0600, which shut out its group until the next run.
TEST_P(FaultsByJobs, ABigFileThatFailsInPlaceKeepsItsModeLessWhatSrcKeepsOut) {
  if (GetParam() == 1) GTEST_SKIP() << "one worker never splits a file";
  std::string src = tmp / "src";
  make_dir(src);
  write_big_file(src + "/huge.bin", 160, 5);
  ASSERT_EQ(::chmod((src + "/huge.bin").c_str(), 0660), 0);
  make_dir(dst);
  write_big_file(dst + "/huge.bin", 160, 6);
  ASSERT_EQ(::chmod((dst + "/huge.bin").c_str(), 0644), 0);
  mode_t midway = 0;
  auto [r, stopped] = act_midway({jobs(), "--inplace", src, dst}, logs, "huge.bin", [&] {
    midway = mode_of(dst + "/huge.bin");
    std::ofstream(src + "/huge.bin", std::ios::app) << "grown while copied";
  }, {"PCOPY_TEST_CHUNK_LOCAL=1"});
  ASSERT_TRUE(stopped) << describe(r);
  EXPECT_EQ(midway, 0640u) << fmt::format("{:04o}", midway);
  EXPECT_EQ(r.status, 1) << describe(r);
  EXPECT_EQ(count_lines_containing(r.err, "pcopy: cannot copy 'huge.bin': file changed as we read it"), 1u)
      << describe(r);
  EXPECT_EQ(mode_of(dst + "/huge.bin"), 0640u) << fmt::format("{:04o}", mode_of(dst + "/huge.bin"));
}

// --inplace over a big file copied in chunks whose source is removed meanwhile: its final name
// holds part of the new data, so it is an error, not a vanished entry's warning with status 0 (OOO).
TEST_P(FaultsByJobs, ABigFileGoneFromSrcWhileRewrittenInPlaceIsAnError) {
  if (GetParam() == 1) GTEST_SKIP() << "one worker never splits a file";
  std::string src = tmp / "src";
  make_dir(src);
  write_big_file(src + "/huge.bin", 160, 5);
  make_dir(dst);
  write_big_file(dst + "/huge.bin", 160, 6);
  auto [r, stopped] = act_midway({jobs(), "--inplace", src, dst}, logs, "huge.bin",
                                 [&] { ASSERT_EQ(::unlink((src + "/huge.bin").c_str()), 0); },
                                 {"PCOPY_TEST_CHUNK_LOCAL=1"});
  ASSERT_TRUE(stopped) << describe(r);
  EXPECT_EQ(r.status, 1) << describe(r);
  EXPECT_TRUE(has_line(r.err, "pcopy: cannot copy 'huge.bin': No such file or directory")) << describe(r);
  EXPECT_EQ(r.err.find("vanished"), std::string::npos) << describe(r);
}

// With -a, a directory of SRC whose ACL keeps a user out that its mode lets in: its copy keeps
// them out from the start, whether pcopy makes it (0700 until finished) or it was there, made
// before the ACL was set in SRC (given SRC's ACL at once); and a copy whose ACL lets in a user
// SRC's mode keeps out loses it at once.
TEST_P(FaultsByJobs, WithArchiveADirectoryKeepsOutFromTheStartWhomSrcsAclKeepsOut) {
  std::string src = tmp / "src";
  make_dir(src);
  make_dir(src + "/priv", 0755);
  write_big_file(src + "/priv/priv.bin", 8, 5);
  RunResult acl = run({"setfacl", "-m", "u:65534:---", src + "/priv"});
  if (acl.status != 0) GTEST_SKIP() << "no ACLs here: " << describe(acl);
  make_dir(src + "/open", 0750);
  write_big_file(src + "/open/open.bin", 8, 6);
  const std::string kAcl = "system.posix_acl_access";
  std::string to = tmp / "dst";
  for (const char* dir : {"priv", "open"}) {
    for (const char* there : {"nothing", "a copy without the ACL", "a copy with an ACL for 65534"}) {
      SCOPED_TRACE(fmt::format("{}, DST has {}", dir, there));
      ASSERT_EQ(run({"rm", "-rf", to}).status, 0);
      std::string copy = to + "/" + dir;
      if (there != std::string("nothing")) {
        make_dirs(copy);
        ASSERT_EQ(::chmod(copy.c_str(), 0755), 0);
        if (there == std::string("a copy with an ACL for 65534")) {
          ASSERT_EQ(run({"setfacl", "-m", "u:65534:rwx", copy}).status, 0);
        }
      }
      std::optional<std::string> midway;
      mode_t midway_mode = 0;
      auto [r, stopped] = act_midway({"-a", jobs(), src, to}, logs, std::string(dir) + ".bin", [&] {
        midway = get_xattr(copy, kAcl);
        midway_mode = mode_of(copy);
      });
      ASSERT_TRUE(stopped) << describe(r);
      bool kept_out = get_xattr(src + "/" + dir, kAcl) ? (midway_mode & 077) == 0 || midway == get_xattr(src + "/" + dir, kAcl)
                                                      : !midway && (midway_mode & 027) == 0;
      EXPECT_TRUE(kept_out) << fmt::format("{:04o}, ACL {}", midway_mode, midway ? "set" : "none");
      EXPECT_EQ(r.status, 0) << describe(r);
      EXPECT_EQ(get_xattr(copy, kAcl), get_xattr(src + "/" + dir, kAcl));
      EXPECT_EQ(mode_of(copy), mode_of(src + "/" + dir));
    }
  }
}

// A directory of SRC that others may pass through but not list (0711): the names in it are theirs
// only if they know them. A temporary's name can be guessed (a run's names differ by a counter), so
// what is made there under one is no more open than 0700 (a staged directory, without -a) or 0600
// (a named file, with --verify) until it has its final name; a copy of such a directory that pcopy
// makes is 0700 until finished.
TEST_P(FaultsByJobs, ATemporaryGivesAwayNoNameOthersCannotList) {
  std::string src = tmp / "src";
  make_dir(src);
  make_dir(src + "/hidden", 0711);
  make_dir(src + "/hidden/secret-leaf");
  write_big_file(src + "/hidden/secret-leaf/leaf.bin", 8, 7);
  std::string to = tmp / "dst", hidden = to + "/hidden";
  // What another user could reach in DST's copy of hidden midway: "" if nothing.
  auto reachable = [&] {
    mode_t dir = mode_of(hidden);
    if ((dir & 011) == 0) return std::string();
    std::string open;
    for (const std::string& name : list_tree(hidden))
      if (name.rfind(".pcopy-", 0) == 0 && name.find('/') == std::string::npos && (mode_of(hidden + "/" + name) & 077))
        open += fmt::format("{} {:04o} in {:04o}; ", name, mode_of(hidden + "/" + name), dir);
    return open;
  };
  struct Step {
    const char* what;
    std::vector<std::string> options;
    const char* stop;  // the file whose copy stops half-way
  };
  for (const Step& step : {Step{"a new copy", {}, "leaf.bin"}, Step{"a new leaf in the copy", {"-u"}, "leaf2.bin"},
                           Step{"a new file with --verify", {"-u", "--verify"}, "verify.bin"}}) {
    SCOPED_TRACE(step.what);
    if (step.stop == std::string("leaf2.bin")) {
      make_dir(src + "/hidden/secret-leaf2");
      write_big_file(src + "/hidden/secret-leaf2/leaf2.bin", 8, 8);
    } else if (step.stop == std::string("verify.bin")) {
      write_big_file(src + "/hidden/verify.bin", 8, 9);
    }
    std::vector<std::string> args = step.options;
    args.insert(args.end(), {jobs(), src, to});
    std::string midway = "not looked at";
    std::vector<std::string> temps;  // in hidden, midway
    auto [r, stopped] = act_midway(args, logs, step.stop, [&] {
      midway = reachable();
      for (const std::string& name : list_tree(hidden))
        if (name.rfind(".pcopy-", 0) == 0 && name.find('/') == std::string::npos && (mode_of(hidden) & 011))
          temps.push_back(name);
    });
    ASSERT_TRUE(stopped) << describe(r);
    EXPECT_EQ(midway, "");
    // Where others may pass, nor can its name be worked out from another temporary's: its count is
    // drawn at random, not the run's 1, 2, 3... (a count below 1,000 by chance: once in a million).
    for (const std::string& name : temps) {
      std::string digits = name.substr(name.rfind('-') + 1);
      digits = digits.substr(digits[0] == 'd' ? 1 : 0, digits.size() - (digits[0] == 'd' ? 1 : 0) - 4);
      EXPECT_GE(std::stoull(digits) % 1'000'000'000, 1000u) << name;
    }
    EXPECT_EQ(r.status, 0) << describe(r);
    EXPECT_EQ(mode_of(hidden), 0711u);
    EXPECT_EQ(diff_trees(src, to), "");
  }
}

// The same where an ACL, not the mode, lets a user pass through a directory of DST but not list it
// (u:65534:--x on a 0750 copy, as an earlier -a run leaves it): a run without -a stages a new leaf
// there 0700.
TEST_P(FaultsByJobs, ATemporaryGivesAwayNoNameAnAclKeepsFromBeingListed) {
  std::string src = tmp / "src", to = tmp / "dst";
  make_dir(src);
  make_dir(src + "/p", 0750);
  RunResult acl = run({"setfacl", "-m", "u:65534:--x", src + "/p"});
  if (acl.status != 0) GTEST_SKIP() << "no ACLs here: " << describe(acl);
  write_file(src + "/p/known", "k\n");
  ASSERT_EQ(run_pcopy({"-a", jobs(), src, to}).status, 0);
  make_dir(src + "/p/secret-leaf");
  write_big_file(src + "/p/secret-leaf/leaf.bin", 8, 10);
  std::vector<std::string> open;
  // -u, as for the new leaf of the test above: without it `known` is replaced meanwhile, linked
  // whole under a temporary name drawn at random, with its final mode, a moment before its own.
  auto [r, stopped] = act_midway({"-u", jobs(), src, to}, logs, "leaf.bin", [&] {
    for (const std::string& name : list_tree(to + "/p"))
      if (name.rfind(".pcopy-", 0) == 0 && name.find('/') == std::string::npos && (mode_of(to + "/p/" + name) & 077))
        open.push_back(fmt::format("{} {:04o}", name, mode_of(to + "/p/" + name)));
  });
  ASSERT_TRUE(stopped) << describe(r);
  EXPECT_EQ(joined(open), "");
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(diff_trees(src, to), "");
}

// A file rewritten in place at the same size while a worker reads it: a mix of old and new bytes.
TEST_P(FaultsByJobs, SameSizeRewriteDuringTheCopyIsReportedAndKeepsThePreviousVersion) {
  std::string src = tmp / "src";
  make_dir(src);
  write_big_file(src + "/big.bin", 8, 1);
  set_times(src + "/big.bin", 1'600'000'000'000'000'000LL, 1'600'000'000'000'000'000LL);
  expect_change_midway_refused(jobs(), src, dst, logs, "big.bin", [&] {
    UniqueFd fd(::open((src + "/big.bin").c_str(), O_WRONLY | O_CLOEXEC));
    EXPECT_EQ(::pwrite(fd.get(), "REWRITTEN", 9, 0), 9);  // same size, a new mtime
  });
}

// A sparse file cut short in its trailing hole while a worker copies it: nothing read stops short
// (the new end looks like the hole's start), yet it changed.
TEST_P(FaultsByJobs, SparseFileCutShortInAHoleDuringTheCopyIsReported) {
  std::string src = tmp / "src";
  make_dir(src);
  std::string file = src + "/sparse.bin";
  write_file(file, std::string(128 << 10, 'd'));
  ASSERT_EQ(::truncate(file.c_str(), 768 << 10), 0);  // 128 KiB of data, then 640 KiB of hole
  expect_change_midway_refused(jobs(), src, dst, logs, "sparse.bin",
                               [&] { EXPECT_EQ(::truncate(file.c_str(), 512 << 10), 0); });
}

TEST_P(FaultsByJobs, WorkerKilledWritingInAStagedDirectoryIsRetriedAndTheDirectoryAppearsComplete) {
  std::string src = shared_tree("staged", make_staged_leaf_tree);
  auto [r, caught] = catch_writing_staged({jobs(), src, dst}, dst, logs,
                                          [](const Frozen&, pid_t writer) { ASSERT_EQ(::kill(writer, SIGKILL), 0); });
  ASSERT_TRUE(caught) << "no worker could be caught writing in a staged directory\n" << describe(r);
  expect_complete_copy(r, src, dst);
  EXPECT_EQ(count_lines_containing(r.err, "cannot copy"), 0u) << describe(r);
}

TEST_P(FaultsByJobs, SigintWhileWritingInAStagedDirectoryRevealsOnlyCompleteFiles) {
  std::string src = shared_tree("staged", make_staged_leaf_tree);
  auto [r, caught] = catch_writing_staged({jobs(), src, dst}, dst, logs,
                                          [](const Frozen& f, pid_t) { ASSERT_EQ(::kill(f.parent, SIGINT), 0); });
  ASSERT_TRUE(caught) << "no worker could be caught writing in a staged directory\n" << describe(r);
  EXPECT_EQ(r.status, 130) << describe(r);
  // The directory is in place, with what was finished in it and nothing half-written.
  EXPECT_TRUE(exists(dst + "/leaf")) << describe(r);
  EXPECT_EQ(incomplete_final_files(src, dst), "");
  EXPECT_EQ(joined(temporaries(dst)), "");
  RunResult again = run_pcopy({jobs(), src, dst}, with_timeout(120));
  expect_complete_copy(again, src, dst);
}

// Whether `sig` is pending for process `pid`, not yet taken (/proc/PID/status).
bool signal_pending(pid_t pid, int sig) {
  std::ifstream status(fmt::format("/proc/{}/status", pid));
  for (std::string line; std::getline(status, line);)
    if (line.starts_with("ShdPnd:") || line.starts_with("SigPnd:"))
      if (std::stoull(line.substr(7), nullptr, 16) & (1ull << (sig - 1))) return true;
  return false;
}

// Files a worker copied before it took a big one its batch shares with them are reported, though
// the big one keeps it past the time an interrupted run gives (the worker is then killed). Their
// results waited in its buffer: in place, they were in no count and not in the manifest.
TEST_P(FaultsByJobs, FilesDoneBeforeABigOneStillCopyingWhenInterruptedAreReported) {
  std::string src = shared_tree("small_and_big", [](const std::string& root) {
    make_dir(root + "/d");
    write_big_file(root + "/d/big.bin", 2, 1);  // under a batch's bytes: it shares the batch
    for (int f = 0; f < 60; ++f) write_file(root + fmt::format("/d/s{:02}", f), fmt::format("{}\n", f));
  });
  // d/ exists already, so it is not staged: every finished file is in place at once.
  make_dirs(dst + "/d");
  std::string manifest = tmp / "manifest.jsonl";
  AsyncPcopy p({jobs(), "--json", "--manifest", manifest, src, dst}, logs, {"PCOPY_TEST_STOP_MIDWAY_NAME=big.bin"});
  bool sent = stopped_worker(p, Clock::now() + 60s) > 0 && p.running() && ::kill(p.pid(), SIGINT) == 0;
  RunResult r = p.wait();
  ASSERT_TRUE(sent) << "no worker stopped in big.bin\n" << describe(r);
  EXPECT_EQ(r.status, 130) << describe(r);
  size_t on_disk = count_regular_files(dst);
  EXPECT_EQ(nlohmann::json::parse(r.out).at("files_copied").get<size_t>(), on_disk) << describe(r);
  EXPECT_EQ(lines_of(read_file(manifest)).size(), on_disk);
  EXPECT_FALSE(exists(dst + "/d/big.bin"));
}

// --fsync: each file the manifest lists is on disk. Its data was, but its name was flushed only
// with its directory, once that was complete, and its line went out as soon as its result came:
// after a power cut mid-run, files the manifest listed were old or missing (I24). DST is on a
// loop-mounted ext4 whose power is cut (the shutdown ioctl) while one worker is stopped in big.bin
// (a batch of its own: -a gives sizes) and another has answered for the directory's small files.
TEST_P(FaultsByJobs, WithFsyncEveryFileTheManifestListsIsThereAfterAPowerCut) {
  if (GetParam() < 2) GTEST_SKIP() << "needs a second worker to finish the small files";
  std::string srcfs = tmp / "srcfs", image = tmp / "ext4.img", mnt = tmp / "disk";
  Mount src_mount(srcfs, Mount::Tmpfs{"size=32m"});  // lists the newest first: big.bin first
  std::optional<Mount> disk(std::in_place, mnt, Mount::LoopExt4{image, 64, ""});
  if (!src_mount.mounted() || !disk->mounted()) GTEST_SKIP() << src_mount.why() << disk->why();
  std::string src = srcfs + "/src", to = mnt + "/dst", manifest = tmp / "manifest.jsonl";
  make_dirs(src + "/d");
  for (int f = 0; f < 40; ++f) write_file(src + fmt::format("/d/s{:02}", f), "yesterday's\n");
  RunResult r = run_pcopy({"-q", "-a", src, to});
  ASSERT_EQ(r.status, 0) << describe(r);
  ::sync();
  for (int f = 0; f < 40; ++f) write_file(src + fmt::format("/d/s{:02}", f), fmt::format("today's {}\n", f));
  write_big_file(src + "/d/big.bin", 8, 1);  // over a batch's bytes: a batch of its own

  AsyncPcopy p({jobs(), "-a", "--fsync", "--manifest", manifest, src, to}, logs,
               {"PCOPY_TEST_STOP_MIDWAY_NAME=big.bin"});
  bool stopped = stopped_worker(p, Clock::now() + 60s) > 0;
  // The small files' worker answers for them all at the end of its batch: 40 lines.
  bool answered = stopped && poll_until(Clock::now() + 60s, [&] {
                    return exists(manifest) && lines_of(read_file(manifest)).size() >= 40;
                  });
  bool cut = answered && cut_power(mnt);
  int cut_err = errno;
  r = p.wait(0s);  // killed, workers too: the power is off
  ASSERT_TRUE(stopped) << "no worker stopped in big.bin\n" << describe(r);
  ASSERT_TRUE(answered) << "the small files were not all listed\n" << describe(r);
  ASSERT_TRUE(cut) << "shutdown ioctl: " << std::strerror(cut_err);
  disk.reset();
  disk.emplace(mnt, Mount::LoopImage{image});
  ASSERT_TRUE(disk->mounted()) << disk->why();
  for (const std::string& line : lines_of(read_file(manifest))) {
    std::string path = nlohmann::json::parse(line).at("path").get<std::string>();
    EXPECT_TRUE(exists(to + "/" + path) && read_file(to + "/" + path) == read_file(src + "/" + path))
        << path << " is listed, and is not on disk as copied";
  }
}

// A file whose copy ends after the run was interrupted is not put in place: the old copy in DST
// stays as it was. Put in place then, it could be in DST yet in no count nor the manifest: the
// parent kills a worker that has not answered for a short while (G2: on a loaded machine, 1 of
// 60 interrupted runs replaced a 100 MiB file that the manifest did not name).
TEST_P(FaultsByJobs, AFileWhoseCopyEndsAfterAnInterruptIsNotPutInPlace) {
  std::string src = big_file_over_an_earlier_copy();
  std::string manifest = tmp / "manifest.jsonl";
  AsyncPcopy p({jobs(), "--json", "--manifest", manifest, src, dst}, logs, {"PCOPY_TEST_STOP_MIDWAY_NAME=big.bin"});
  auto deadline = Clock::now() + 60s;
  pid_t worker = stopped_worker(p, deadline);
  // The worker, stopped half-way through big.bin, is told to finish up; it goes on only then.
  bool told = worker > 0 && p.running() && ::kill(p.pid(), SIGINT) == 0 &&
              poll_until(deadline, [&] { return signal_pending(worker, SIGUSR1) || !p.running(); }) &&
              signal_pending(worker, SIGUSR1);
  if (worker > 0) ::kill(worker, SIGCONT);
  RunResult r = p.wait();
  ASSERT_TRUE(told) << "no worker stopped in big.bin was told to finish up\n" << describe(r);
  EXPECT_EQ(r.status, 130) << describe(r);
  EXPECT_TRUE(read_file(dst + "/d/big.bin") == "the copy of an earlier run\n") << "big.bin was replaced";
  EXPECT_EQ(read_file(manifest), "");
  EXPECT_EQ(nlohmann::json::parse(r.out).at("files_copied").get<size_t>(), 0u) << describe(r);
  EXPECT_EQ(joined(temporaries(dst)), "");
}

// --inplace writes a file under its final name: one its worker was killed writing (it had not
// finished when the time given to finish up ran out) holds part of the new data, and is named as
// an error, as a big file whose chunks were being written is. It went unnamed (G2).
TEST_P(FaultsByJobs, AFileAWorkerWasKilledWritingInPlaceIsNamed) {
  stop_midway_in_place(big_file_over_an_earlier_copy(), "big.bin", SIGINT);
}

// The same of a small file, which no progress message names: 131,072 bytes of 140,692 were left
// under its name, and the run said 0 errors (helper I9). The worker's slot of shared memory says
// which file it is writing in place.
TEST_P(FaultsByJobs, ASmallFileAWorkerWasKilledWritingInPlaceIsNamed) {
  std::string src = shared_tree("one_small", [](const std::string& root) {
    make_dir(root + "/d");
    write_file(root + "/d/small.bin", random_bytes(140'692, 7));
  });
  make_dirs(dst + "/d");
  write_file(dst + "/d/small.bin", "the copy of an earlier run\n");
  stop_midway_in_place(src, "small.bin", SIGTERM);
  EXPECT_NE(read_file(dst + "/d/small.bin"), read_file(src + "/d/small.bin")) << "the premise: cut short";
  RunResult r = copy(src, dst, {"-u", "--inplace"});  // the next run puts it right
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(diff_trees(src, dst), "");
}

TEST_P(FaultsByJobs, ASecondSignalWhileStoppingDoesNotCutTheReportShort) {
  std::string src = shared_tree("staged", make_staged_leaf_tree);
  // A worker stops itself half-way through big.bin: stopping the run then takes a while (the time
  // pcopy gives a worker to finish the file in hand), and the second SIGINT comes meanwhile, as
  // from `timeout -s INT`, which signals pcopy and then its process group.
  AsyncPcopy p({jobs(), "--json", src, dst}, logs, {"PCOPY_TEST_STOP_MIDWAY_NAME=big.bin"});
  auto deadline = Clock::now() + 60s;
  bool sent = false;
  if (stopped_worker(p, deadline) > 0 && p.running()) {
    ASSERT_EQ(::kill(p.pid(), SIGINT), 0);
    if (poll_until(deadline, [&] { return !signal_pending(p.pid(), SIGINT); }))
      sent = ::kill(p.pid(), SIGINT) == 0;
  }
  RunResult r = p.wait();
  ASSERT_TRUE(sent) << "pcopy could not be caught with a worker stopped\n" << describe(r);
  EXPECT_EQ(r.status, 130) << describe(r);
  EXPECT_TRUE(has_line_starting(r.err, "pcopy: interrupted:")) << describe(r);
  auto report = nlohmann::json::parse(r.out, nullptr, false);
  ASSERT_FALSE(report.is_discarded()) << "no JSON report\n" << describe(r);
  EXPECT_TRUE(report.value("interrupted", false)) << describe(r);
  EXPECT_EQ(incomplete_final_files(src, dst), "");
  EXPECT_EQ(joined(temporaries(dst)), "");
}

TEST_P(FaultsByJobs, KilledParentLeavesAStagedDirectoryThatTheNextRunReplaces) {
  std::string src = shared_tree("staged", make_staged_leaf_tree);
  auto [r, caught] = catch_writing_staged({jobs(), src, dst}, dst, logs, [](const Frozen& f, pid_t) {
    ASSERT_EQ(::kill(f.parent, SIGKILL), 0);
    for (const Proc& w : f.workers) ::kill(w.pid, SIGKILL);
  });
  ASSERT_TRUE(caught) << "no worker could be caught writing in a staged directory\n" << describe(r);
  // Nothing under a final name is incomplete: the half-written file is inside the staged directory.
  EXPECT_FALSE(exists(dst + "/leaf")) << "a staged directory appeared before it was complete";
  EXPECT_EQ(incomplete_final_files(src, dst), "");
  EXPECT_NE(joined(temporaries(dst)), "") << "the staged directory should still be there";
  RunResult again = run_pcopy({jobs(), src, dst}, with_timeout(120));
  expect_complete_copy(again, src, dst);
}

// A reader that follows the manifest (`--manifest >(...)`) gets its lines as files are copied,
// within a fraction of a second, not 64 KiB at a time (here: while a worker waits at a gate).
TEST_P(FaultsByJobs, ManifestLinesReachAReaderAsFilesAreCopied) {
#ifndef PCOPY_TEST_HOOKS
  GTEST_SKIP() << "needs a build with -DPCOPY_TEST_HOOKS=ON";
#endif
  std::string src = tmp / "src", fifo = tmp / "gate", manifest = tmp / "manifest.fifo";
  make_dirs(src + "/z");
  for (int i = 0; i < 20; ++i) write_file(src + fmt::format("/f{:02}", i), "copied before the gate\n");
  write_file(src + "/z/gate.txt", "the worker taking this waits until the test opens the gate\n");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  ASSERT_EQ(::mkfifo(manifest.c_str(), 0600), 0);
  UniqueFd reader(::open(manifest.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
  ASSERT_TRUE(reader.valid());
  AsyncPcopy p({jobs(), "--manifest", manifest, src, dst}, logs,
               {"PCOPY_TEST_GATE_NAME=gate.txt", "PCOPY_TEST_GATE_FIFO=" + fifo});
  std::string got;
  bool twenty = poll_until(Clock::now() + 20s, [&] {
    char buf[4096];
    for (ssize_t n; (n = ::read(reader.get(), buf, sizeof buf)) > 0;) got.append(buf, size_t(n));
    return std::count(got.begin(), got.end(), '\n') >= 20 || !p.running();
  });
  bool held = p.running();
  bool opened = open_gate(fifo, Clock::now() + 60s, [&] { return p.running(); });
  RunResult r = p.wait();
  EXPECT_TRUE(twenty && held) << "lines while the gate held: " << got << describe(r);
  EXPECT_TRUE(opened) << describe(r);
  EXPECT_EQ(r.status, 0) << describe(r);
}

// A reader of -v that stops reading (a stuck pipe, a suspended pager) fills the pipe: SIGTERM still
// ends the run, within a second of giving up on the reader. pcopy sat in a blocking write and
// ended only when the reader read again: never, for one that never does. The same for --manifest
// into a FIFO (`--manifest >(slow-consumer)`), deaf to SIGTERM, Ctrl-C and Ctrl-Z until the reader read.
TEST_P(FaultsByJobs, SigtermEndsARunWhoseOutputNobodyReads) {
  std::string src = shared_tree("five_thousand", [](const std::string& root) {
    for (int d = 0; d < 10; ++d) {
      make_dir(root + fmt::format("/dir{}", d));
      for (int f = 0; f < 500; ++f) write_file(root + fmt::format("/dir{}/file-with-a-longish-name-{:04}", d, f), "x");
    }
  });
  for (std::string what : {"stdout", "manifest"}) {
    SCOPED_TRACE(what);
    std::string fifo = logs + "/" + what + ".fifo", to = dst + "-" + what;
    ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
    UniqueFd reader(::open(fifo.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));  // held, never read
    ASSERT_TRUE(reader.valid());
    std::optional<AsyncPcopy> p;
    if (what == "stdout") {
      p.emplace(std::vector<std::string>{jobs(), "-v", src, to}, logs, std::vector<std::string>{}, fifo);
    } else {
      p.emplace(std::vector<std::string>{jobs(), "--manifest", fifo, src, to}, logs);
    }
    // Full: most of the pipe's 64 KiB queued (pages partly filled hold less), and no more coming.
    int last = -1, same = 0;
    bool full = poll_until(Clock::now() + 60s, [&] {
      int queued = 0;
      if (::ioctl(reader.get(), FIONREAD, &queued) != 0 || !p->running()) return true;
      same = queued == last ? same + 1 : 0;
      last = queued;
      return queued >= 32 * 1024 && same >= 500;  // half a second: pcopy flushes its lines every 0.2 s
    });
    if (!full || !p->running()) FAIL() << "pcopy did not fill the pipe and wait on it\n" << describe(p->wait(30s));
    ASSERT_EQ(::kill(p->pid(), SIGTERM), 0);
    RunResult r = p->wait(30s);
    EXPECT_EQ(r.status, 143) << describe(r);
    if (what == "manifest") {
      EXPECT_TRUE(has_line_starting(r.err, "pcopy: cannot write manifest '" + fifo + "': cut short")) << describe(r);
    }
    EXPECT_EQ(joined(temporaries(to)), "");
  }
}

// ---------------------------------------------------------------------------------------------------
// Full disk (root only: mounts a small tmpfs).

TEST_P(FaultsByJobs, FullDiskReportsErrorRemovesTemporaryAndStops) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to mount a tmpfs";
  std::string src = shared_tree("thirty4mib", [](const std::string& root) {
    for (unsigned i = 0; i < 30; ++i) write_big_file(root + fmt::format("/file{:02}.bin", i), 4, 100 + i);
  });
  Mount mount(tmp / "mnt", Mount::Tmpfs{"size=40m"});
  if (!mount.mounted()) GTEST_SKIP() << mount.why();
  std::string to = tmp / "mnt/dst";
  RunResult r = copy(src, to, {}, with_timeout(120));
  EXPECT_EQ(r.status, 1) << describe(r);
  EXPECT_NE(r.err.find("No space left on device"), std::string::npos) << describe(r);
  EXPECT_EQ(count_lines_containing(r.err, "stopping"), 1u) << "a line saying it stops\n" << describe(r);
  size_t errors = count_lines_containing(r.err, "pcopy: cannot copy");
  EXPECT_EQ(errors, count_lines_containing(r.err, "': No space left on device")) << describe(r);
  EXPECT_GE(errors, 1u);
  size_t copied = count_regular_files(to);
  EXPECT_GE(copied, 1u) << "40 MiB holds several 4 MiB files";
  EXPECT_LT(copied + errors, 30u) << "every file was tried: it did not stop after the disk filled\n" << describe(r);
  expect_no_partial_files(src, to);
}

// A file whose name in DST is a directory fails (only --delete removes it there, and cp -a fails it
// too), and a big one finds that out before its data is copied: it was copied whole, then its
// rename failed, every run of a nightly backup (I21). On a tmpfs with room for neither file, what
// fails them is the directory, not a full disk. With -a the walk knows the big file's size, and the
// worker that begins its chunks looks; without, the worker copying it whole.
TEST_P(FaultsByJobs, ABigFileWhoseNameInDstIsADirectoryFailsBeforeItsDataIsCopied) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to mount a tmpfs";
  std::string src = shared_tree("huge_and_8mib", [](const std::string& root) {
    write_big_file(root + "/huge.bin", 130, 5);  // above kChunkThreshold: split with -j2 and -j8
    write_big_file(root + "/eight.bin", 8, 6);
  });
  Mount mount(tmp / "mnt", Mount::Tmpfs{"size=4m"});
  if (!mount.mounted()) GTEST_SKIP() << mount.why();
  std::string to = tmp / "mnt/dst";
  for (const char* name : {"huge.bin", "eight.bin"}) {
    make_dirs(to + "/" + name);
    write_file(to + "/" + name + "/kept", "kept");
  }
  for (const std::vector<std::string>& options : {std::vector<std::string>{}, {"-a"}}) {
    SCOPED_TRACE(joined(options));
    RunResult r = copy(src, to, options, with_timeout(120));
    EXPECT_EQ(r.status, 1) << describe(r);
    EXPECT_TRUE(has_line(r.err, "pcopy: cannot copy 'huge.bin': Is a directory")) << describe(r);
    EXPECT_TRUE(has_line(r.err, "pcopy: cannot copy 'eight.bin': Is a directory")) << describe(r);
    EXPECT_EQ(r.err.find("No space left on device"), std::string::npos) << describe(r);
    EXPECT_EQ(list_tree(to), (std::vector<std::string>{"eight.bin", "eight.bin/kept", "huge.bin", "huge.bin/kept"}));
  }
}

// One big file on a full tmpfs, written by every worker at once: the workers after the first write
// their chunks through a mapping of it (Copier::copy_mapped), where a full file system must be
// told as it is by a write, not as a bad address or a crash (SIGBUS, a page that cannot be had),
// and nothing of the file is left.
TEST_P(FaultsByJobs, ABigFileEveryWorkerWritesAtOnceMeetsAFullTmpfs) {
  if (GetParam() == 1) GTEST_SKIP() << "one worker never splits a file";
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to mount a tmpfs";
  std::string src = shared_tree("one_of_300", [](const std::string& r) { write_big_file(r + "/huge.bin", 300, 12); });
  Mount mount(tmp / "mnt", Mount::Tmpfs{"size=100m"});
  if (!mount.mounted()) GTEST_SKIP() << mount.why();
  std::string to = tmp / "mnt/dst";
  RunResult r = copy(src, to, {}, with_timeout(120));
  EXPECT_EQ(r.status, 1) << describe(r);
  EXPECT_TRUE(has_line(r.err, "pcopy: cannot copy 'huge.bin': No space left on device")) << describe(r);
  EXPECT_EQ(count_lines_containing(r.err, "pcopy: cannot copy"), 1u) << describe(r);
  EXPECT_EQ(count_lines_containing(r.err, "died"), 0u) << describe(r);
  EXPECT_EQ(list_tree(to), std::vector<std::string>{}) << describe(r);
}

// A file that other workers write too is written through a mapping, which needs it open for
// reading as well. An ordinary user's earlier copy that they may write but not read (0200),
// rewritten --inplace, is written through the buffer instead, as when one worker writes it.
TEST_P(FaultsByJobs, OnTmpfsAUserRewritesInPlaceABigCopyTheyMayWriteButNotRead) {
  if (GetParam() == 1) GTEST_SKIP() << "one worker never splits a file";
  Scratch scratch(tmp / "scratch", "1g");
  if (!scratch.tmpfs()) GTEST_SKIP() << "needs a tmpfs: root, to mount one";
  std::string from = scratch / "src", to = scratch / "dst";
  make_dir(from);
  make_dir(to);
  write_big_file(from + "/huge.bin", 300, 13);
  write_file(to + "/huge.bin", "an earlier copy\n", 0200);
  RunResult r = copy(from, to, {"--inplace"}, unprivileged(tmp));  // the scratch tmpfs is given to the user too
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(lstat_or_zero(to + "/huge.bin").st_mode & 07777, 0644u);
  EXPECT_EQ(compare_contents(from + "/huge.bin", to + "/huge.bin"), "");
}

// A full disk stops the run while the walk is in a new directory, made under a temporary name
// (staged) and filled with final names: it appears, with what is finished in it, as after a
// signal. It stayed under its temporary name (".pcopy-<pid>-d<n>.tmp"), counted among the
// directories made, named by no error.
TEST_P(FaultsByJobs, FullDiskLeavesNoStagedDirectoryUnderItsTemporaryName) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to mount a tmpfs";
  Mount fast(tmp / "fast", Mount::Tmpfs{"size=64m"});  // 6,000 files made in a moment, not on a slow disk
  if (!fast.mounted()) GTEST_SKIP() << fast.why();
  std::string src = tmp / "fast/src";
  for (int d = 0; d < 20; ++d) {  // more than the walk runs ahead of the copy
    make_dirs(src + fmt::format("/d{:02}", d));
    for (int f = 0; f < 300; ++f) write_file(src + fmt::format("/d{:02}/f{:03}", d, f), "a page of tmpfs\n");
  }
  Mount mount(tmp / "mnt", Mount::Tmpfs{"size=1m"});
  if (!mount.mounted()) GTEST_SKIP() << mount.why();
  std::string to = tmp / "mnt/dst";
  RunResult r = copy(src, to, {"--json"}, with_timeout(120));
  EXPECT_EQ(r.status, 1) << describe(r);
  EXPECT_EQ(count_lines_containing(r.err, "stopping: No space left on device"), 1u) << describe(r);
  EXPECT_EQ(joined(temporaries(to)), "");
  size_t dirs = 0;
  struct stat st;
  for (const std::string& rel : list_tree(to)) dirs += ::lstat((to + "/" + rel).c_str(), &st) == 0 && S_ISDIR(st.st_mode);
  EXPECT_EQ(nlohmann::json::parse(r.out).at("dirs_created"), dirs) << r.out;
  expect_no_partial_files(src, to);
}

// A destination mounted read-only: the first file that fails says why, and pcopy stops there, as
// on a full disk; it printed one "Read-only file system" line per entry of the tree. Nor is DST,
// whose times could not be set after the stop, one more line, `cannot copy '.'` (RRR).
TEST_P(FaultsByJobs, ReadOnlyDestinationStopsAtTheFirstFailure) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to mount a tmpfs";
  std::string src = tmp / "src";
  make_dir(src);
  for (int i = 0; i < 2000; ++i) write_file(src + fmt::format("/f{:04}", i), "x");
  Mount mount(tmp / "mnt", Mount::Tmpfs{"size=4m"});
  if (!mount.mounted()) GTEST_SKIP() << mount.why();
  make_dir(tmp / "mnt/dst");
  ASSERT_EQ(::mount(nullptr, (tmp / "mnt").c_str(), nullptr, MS_REMOUNT | MS_RDONLY, nullptr), 0) << std::strerror(errno);
  RunResult r = copy(src, tmp / "mnt/dst", {}, with_timeout(120));
  EXPECT_EQ(r.status, 1) << describe(r);
  EXPECT_EQ(count_lines_containing(r.err, "stopping: Read-only file system"), 1u) << describe(r);
  EXPECT_LT(count_lines_containing(r.err, "pcopy: cannot copy"), 500u) << "it went on through the tree\n" << describe(r);
  // A few files: the walk ends, and DST is finished, once they are listed.
  make_dir(tmp / "few");
  for (int i = 0; i < 5; ++i) write_file(tmp / fmt::format("few/f{}", i), "x");
  RunResult few = copy(tmp / "few", tmp / "mnt/dst", {}, with_timeout(120));
  EXPECT_EQ(few.status, 1) << describe(few);
  EXPECT_EQ(count_lines_containing(few.err, "stopping: Read-only file system"), 1u) << describe(few);
  EXPECT_FALSE(has_line(few.err, "pcopy: cannot copy '.': Read-only file system")) << describe(few);
}

// DST's own ext4 turned read-only by an error (errors=remount-ro): the mount still says rw, and
// statvfs calls it writable, but every entry would fail: pcopy stops at the first, and --delete
// removes nothing (A2: taken for a read-only file system mounted inside DST, 20,000 lines).
// Also below a writable bind mount of that file system inside DST, another mount of the same
// device, which says rw as DST does (C2: taken for a read-only mount inside DST, 4,004 lines).
TEST_P(FaultsByJobs, ADestinationAnErrorMadeReadOnlyStopsTheRun) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to loop-mount ext4";
  std::string src = tmp / "src", dst = tmp / "mnt/dst";
  make_dirs(src + "/photos");
  for (int i = 0; i < 2000; ++i) write_file(src + fmt::format("/photos/f{:04}", i), "x");
  Mount mount(tmp / "mnt", Mount::LoopExt4{tmp / "ext4.img", 32, "errors=remount-ro"});
  if (!mount.mounted()) GTEST_SKIP() << mount.why();
  make_dir(dst);
  make_dir(tmp / "mnt/store");
  Mount bind(dst + "/photos", Mount::Bind{tmp / "mnt/store"});
  if (!bind.mounted()) GTEST_SKIP() << bind.why();
  for (int i = 0; i < 50; ++i) write_file(dst + fmt::format("/extra{}", i), "e");
  RunResult device = run({"findmnt", "-no", "SOURCE", tmp / "mnt"});
  std::string name = std::filesystem::path(device.out.substr(0, device.out.find('\n'))).filename();
  std::string trigger = "/sys/fs/ext4/" + name + "/trigger_fs_error";
  if (!std::filesystem::exists(trigger)) GTEST_SKIP() << "no " << trigger << " in this kernel";
  write_file(trigger, "1");
  if (::mkdir((dst + "/probe").c_str(), 0755) == 0 || errno != EROFS)
    GTEST_SKIP() << "the error did not make the file system read-only: " << std::strerror(errno);
  RunResult r = copy(src, dst, {"--delete"}, with_timeout(120));
  EXPECT_EQ(r.status, 1) << describe(r);
  EXPECT_EQ(count_lines_containing(r.err, "stopping: Read-only file system"), 1u) << describe(r);
  EXPECT_LT(count_lines_containing(r.err, "pcopy: cannot copy"), 500u) << "it went on\n" << describe(r);
  EXPECT_EQ(count_lines_containing(r.err, "cannot delete"), 0u) << describe(r);
  EXPECT_TRUE(std::filesystem::exists(dst + "/extra0"));
}

// A read-only file system mounted inside DST (a snapshot, a read-only bind mount) fails what goes
// into it, not the run: DST itself is writable, so the rest is copied, as with cp -a and rsync -a.
// It stopped the whole run at the first such failure, what was still to come left uncopied.
TEST_P(FaultsByJobs, AReadOnlyMountInsideDestinationFailsOnlyWhatGoesIntoIt) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to mount a tmpfs";
  std::string src = tmp / "src", dst = tmp / "dst";
  make_dirs(src + "/a/ro/sub");
  make_dirs(src + "/z");
  for (int i = 0; i < 300; ++i) {
    write_file(src + fmt::format("/a/ro/f{:03}", i), "r");
    write_file(src + fmt::format("/z/f{:03}", i), "z");
  }
  write_file(src + "/a/ro/sub/g", "g");
  make_dirs(dst + "/a/ro");
  Mount mount(dst + "/a/ro", Mount::Tmpfs{"size=1m"});
  if (!mount.mounted()) GTEST_SKIP() << mount.why();
  ASSERT_EQ(::mount(nullptr, (dst + "/a/ro").c_str(), nullptr, MS_REMOUNT | MS_RDONLY, nullptr), 0)
      << std::strerror(errno);
  RunResult r = copy(src, dst, {"--json"}, with_timeout(120));
  EXPECT_EQ(r.status, 1) << describe(r);
  EXPECT_EQ(count_lines_containing(r.err, "stopping"), 0u) << describe(r);
  EXPECT_TRUE(has_line(r.err, "pcopy: cannot copy 'a/ro/f000': Read-only file system")) << describe(r);
  EXPECT_TRUE(has_line(r.err, "pcopy: cannot copy 'a/ro/sub': Read-only file system")) << describe(r);
  for (int i = 0; i < 300; ++i) ASSERT_EQ(read_file(dst + fmt::format("/z/f{:03}", i)), "z") << describe(r);
  nlohmann::json report = nlohmann::json::parse(r.out);
  EXPECT_EQ(report["files_copied"], 300) << r.out;
  EXPECT_EQ(report["errors"].size(), 302u) << r.out;
}

// Makes the bind mount at `at` read-only: "" or why not.
std::string remount_read_only(const std::string& at) {
  if (::mount(nullptr, at.c_str(), nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY, nullptr) == 0) return "";
  return std::strerror(errno);
}

// A read-only file system mounted on one file of DST (a container's read-only config file), or a
// read-only bind mount of one of DST's own directories: the directory the entry is in is on DST's
// own device, but the failure is that entry's alone (B2: the whole run stopped, most of the tree
// left uncopied). Told by the mount, not only the device.
TEST_P(FaultsByJobs, AReadOnlyBindMountOfAFileOrADirectoryOfDestinationFailsOnlyWhatIsInIt) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to bind-mount";
  std::string src = tmp / "src", dst = tmp / "dst";
  make_dirs(src + "/ro");
  make_dirs(tmp / "rodir");
  write_file(src + "/ro/r", "r\n");
  write_file(tmp / "conf", "mounted\n");
  // A read-only file in every directory, whichever the walk takes first: work is left after it.
  std::vector<std::unique_ptr<Mount>> mounts;
  for (int d = 0; d < 5; ++d) {
    make_dirs(src + fmt::format("/z{}", d));
    make_dirs(dst + fmt::format("/z{}", d));
    for (int i = 0; i < 200; ++i) write_file(src + fmt::format("/z{}/f{:03}", d, i), "z");
    write_file(src + fmt::format("/z{}/conf", d), "new\n");
    write_file(dst + fmt::format("/z{}/conf", d), "old\n");
    mounts.push_back(std::make_unique<Mount>(dst + fmt::format("/z{}/conf", d), Mount::Bind{tmp / "conf"}));
  }
  mounts.push_back(std::make_unique<Mount>(dst + "/ro", Mount::Bind{tmp / "rodir"}));
  for (const auto& m : mounts) {
    if (!m->mounted()) GTEST_SKIP() << m->why();
  }
  for (int d = 0; d < 5; ++d) ASSERT_EQ(remount_read_only(dst + fmt::format("/z{}/conf", d)), "");
  ASSERT_EQ(remount_read_only(dst + "/ro"), "");
  RunResult r = copy(src, dst, {"--inplace"}, with_timeout(120));
  EXPECT_EQ(r.status, 1) << describe(r);
  EXPECT_EQ(count_lines_containing(r.err, "stopping"), 0u) << describe(r);
  for (int d = 0; d < 5; ++d) {
    std::string conf = fmt::format("z{}/conf", d);
    EXPECT_TRUE(has_line(r.err, "pcopy: cannot copy '" + conf + "': Read-only file system")) << describe(r);
    for (int i = 0; i < 200; ++i) ASSERT_EQ(read_file(dst + fmt::format("/z{}/f{:03}", d, i)), "z") << describe(r);
  }
  EXPECT_TRUE(has_line(r.err, "pcopy: cannot copy 'ro/r': Read-only file system")) << describe(r);
  EXPECT_EQ(read_file(tmp / "conf"), "mounted\n");
}

// Two -a runs into one DST at once, hard links everywhere: a name the other run had just linked to
// the same file made this run's rename of its temporary a no-op (a rename between two names of one
// file succeeds and leaves both), and the temporary stayed, an extra link: in half the rounds. And
// once in some 60 rounds a link failed, "No such file or directory", its first name renamed over
// by the other run between its lookup and the link.
TEST(Faults, OverlappingArchiveRunsLeaveNoTemporaryOfAHardLink) {
  TempDir tmp;
  std::string src = tmp / "src", dst = tmp / "dst";
  make_dir(src);
  for (int d = 0; d < 20; ++d) {
    make_dir(src + fmt::format("/d{}", d));
    for (int f = 0; f < 50; ++f) {
      std::string name = src + fmt::format("/d{}/f{}", d, f);
      write_file(name, fmt::format("{} {}\n", d, f));
      ASSERT_EQ(::link(name.c_str(), (src + fmt::format("/d{}/h{}", d, f)).c_str()), 0);
    }
  }
  std::string one = fmt::format("'{}' -q -a -j2 '{}' '{}'", pcopy_bin(), src, dst);
  for (int round = 0; round < 10; ++round) {
    SCOPED_TRACE(round);
    std::filesystem::remove_all(dst);
    RunResult r = run({"sh", "-c", one + " & a=$!; " + one + "; b=$?; wait $a; echo $? $b"});
    EXPECT_EQ(r.out, "0 0\n") << describe(r);
    EXPECT_EQ(joined(temporaries(dst)), "") << describe(r);
    if (HasFailure()) break;
  }
  CompareOptions links;
  links.hardlinks = true;
  EXPECT_EQ(diff_trees(src, dst, links), "");
}

// A staged directory that cannot be put in place (DST made immutable meanwhile here; a file system
// gone read-only or shut down does the same): what it holds is not counted as copied, for none of
// it is at its final name. The summary said "copied 50 files, 1 dir" with nothing in place. The
// next run removes the temporary and copies it all.
TEST(Faults, AStagedDirectoryNotPutInPlaceIsNotCountedAsCopied) {
#ifndef PCOPY_TEST_HOOKS
  GTEST_SKIP() << "needs a build with -DPCOPY_TEST_HOOKS=ON";
#endif
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to make a directory immutable";
  TempDir tmp;
  std::string src = tmp / "src", dst = tmp / "dst", logs = tmp / "logs", fifo = tmp / "gate";
  make_dirs(src + "/sub");
  for (int i = 0; i < 50; ++i) write_file(src + fmt::format("/sub/f{:02}", i), "staged\n");
  write_file(src + "/sub/gate.txt", "the test makes DST immutable before this is copied\n");
  make_dir(dst);
  make_dir(logs);
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  InodeFlags immutable(dst);
  AsyncPcopy p({"-j1", "--json", src, dst}, logs, {"PCOPY_TEST_GATE_NAME=gate.txt", "PCOPY_TEST_GATE_FIFO=" + fifo});
  bool staged = poll_until(Clock::now() + 60s, [&] {
    auto names = list_tree(dst);
    return !p.running() || std::any_of(names.begin(), names.end(), [](auto& n) { return is_temp_name(n); });
  });
  ASSERT_TRUE(staged && p.running()) << "sub was not staged";
  if (!immutable.add(FS_IMMUTABLE_FL))
    GTEST_SKIP() << "this file system has no immutable flag: " << std::strerror(errno);
  EXPECT_TRUE(open_gate(fifo, Clock::now() + 60s, [&] { return p.running(); }));
  RunResult r = p.wait();
  immutable.restore();
  EXPECT_EQ(r.status, 1) << describe(r);
  EXPECT_TRUE(has_line(r.err, "pcopy: cannot copy 'sub': Operation not permitted")) << describe(r);
  auto report = nlohmann::json::parse(r.out);
  EXPECT_EQ(report.at("files_copied"), 0) << r.out;
  EXPECT_EQ(report.at("dirs_created"), 0) << r.out;
  EXPECT_EQ(report.at("bytes_copied"), 0) << r.out;
  EXPECT_NE(r.err.find("copied 0 files, 0 dirs"), std::string::npos) << describe(r);

  r = run_pcopy({"-u", "--json", src, dst});
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(nlohmann::json::parse(r.out).at("files_copied"), 51) << r.out;
  EXPECT_EQ(diff_trees(src, dst), "");
}

// SIGTERM while a worker is stuck in uninterruptible I/O (DST frozen, as a hung NFS server leaves
// it): it is killed, not waited for past a short while, and the parent does no clean-up in DST
// (it would be stuck there too): the run ends with 143, its summary and a warning, and the next
// run removes what was left. The parent waited in waitpid, then in unlinkat, until the thaw.
TEST(Faults, SigtermWithWorkersStuckInIoStillEnds) {
#ifndef PCOPY_TEST_HOOKS
  GTEST_SKIP() << "needs a build with -DPCOPY_TEST_HOOKS=ON";
#endif
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to mount and freeze a file system";
  TempDir tmp;
  std::string src = tmp / "src", mnt = tmp / "mnt", logs = tmp / "logs", fifo = tmp / "gate";
  make_dirs(src + "/sub");
  for (int i = 0; i < 20; ++i) write_file(src + fmt::format("/sub/f{:02}", i), "staged\n");
  write_file(src + "/sub/gate.txt", "written once the file system is frozen\n");
  make_dir(logs);
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  Mount mount(mnt, Mount::LoopExt3Times{tmp / "ext.img"});
  if (!mount.mounted()) GTEST_SKIP() << mount.why();
  std::string dst = mnt + "/dst";
  make_dir(dst);
  struct Freeze {  // thawed before the unmount, whatever the test found
    UniqueFd fd;
    bool frozen = false;
    void thaw() {
      if (std::exchange(frozen, false)) ::ioctl(fd.get(), FITHAW, 0);
    }
    ~Freeze() { thaw(); }
  } freeze{UniqueFd(::open(mnt.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC))};
  AsyncPcopy p({"-j2", "--json", src, dst}, logs, {"PCOPY_TEST_GATE_NAME=gate.txt", "PCOPY_TEST_GATE_FIFO=" + fifo});
  // sub staged, a worker at the gate before gate.txt: the parent has nothing more to write.
  bool staged = poll_until(Clock::now() + 60s, [&] {
    auto names = list_tree(dst);
    return !p.running() || std::any_of(names.begin(), names.end(), [](auto& n) { return is_temp_name(n); });
  });
  ASSERT_TRUE(staged && p.running()) << "sub was not staged";
  if (::ioctl(freeze.fd.get(), FIFREEZE, 0) != 0) GTEST_SKIP() << "cannot freeze: " << std::strerror(errno);
  freeze.frozen = true;
  ASSERT_TRUE(open_gate(fifo, Clock::now() + 60s, [&] { return p.running(); }));
  std::vector<Proc> workers;
  bool stuck = poll_until(Clock::now() + 60s, [&] {
    workers = children_of(p.pid());
    return !p.running() || std::any_of(workers.begin(), workers.end(), [](const Proc& w) {
             auto info = proc_info(w.pid);
             return info && info->state == 'D';
           });
  });
  ASSERT_TRUE(stuck && p.running()) << "no worker stuck writing to the frozen file system";
  ASSERT_EQ(::kill(p.pid(), SIGTERM), 0);
  bool ended = poll_until(Clock::now() + 30s, [&] { return !p.running(); });
  EXPECT_TRUE(ended) << "pcopy waits on the frozen file system until it is thawed";
  freeze.thaw();
  RunResult r = p.wait();
  EXPECT_EQ(r.status, 143) << describe(r);
  EXPECT_NE(r.err.find("pcopy: interrupted: copied "), std::string::npos) << describe(r);
  EXPECT_NE(r.err.find("pcopy: warning: workers stuck in I/O were killed"), std::string::npos) << describe(r);
  EXPECT_EQ(nlohmann::json::parse(r.out).at("interrupted"), true) << r.out;
  // The killed workers end once thawed, finishing the write in hand first: one that did so in the
  // staged directory as the next run removed it kept it there (once in CI).
  bool gone = poll_until(Clock::now() + 60s, [&] {
    return std::all_of(workers.begin(), workers.end(), [](const Proc& w) {
      auto info = proc_info(w.pid);
      return !info || info->state == 'Z' || info->state == 'X';
    });
  });
  ASSERT_TRUE(gone) << "the killed workers did not end once the file system was thawed";

  r = run_pcopy({"-u", src, dst}, with_timeout(120));
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(diff_trees(src, dst, CompareOptions{.times = false}), "") << "and no temporary left";  // times in seconds there
}

// A single file that does not fit: one error line and nothing of "stopping", for nothing was left
// to stop (it said "the remaining entries would fail too"); the JSON report holds the one error.
TEST(Faults, ASingleFileThatDoesNotFitSpeaksOfNoStop) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to mount a tmpfs";
  TempDir tmp;
  write_file(tmp / "big", random_bytes(3 << 20, 7));
  Mount mount(tmp / "mnt", Mount::Tmpfs{"size=1m"});
  if (!mount.mounted()) GTEST_SKIP() << mount.why();
  RunResult r = run_pcopy({"--json", tmp / "big", tmp / "mnt/big"});
  EXPECT_EQ(r.status, 1) << describe(r);
  // Both paths, as given: the line named only 'big', which read as if the source were at fault.
  EXPECT_TRUE(has_line(r.err, "pcopy: cannot copy '" + tmp / "big" + "' to '" + tmp / "mnt/big" +
                                  "': No space left on device"))
      << describe(r);
  EXPECT_EQ(r.err.find("stopping"), std::string::npos) << describe(r);
  nlohmann::json report = nlohmann::json::parse(r.out);
  EXPECT_EQ(report["errors"].size(), 1u) << report.dump(2);
  EXPECT_EQ(list_tree(tmp / "mnt"), std::vector<std::string>{});
  // Given through a link, the copy has the link's name, and so has the report's error (it had the
  // target's, a name the user never gave).
  ASSERT_EQ(::symlink("big", (tmp / "alias").c_str()), 0);
  r = run_pcopy({"--json", tmp / "alias", tmp / "mnt/"});
  EXPECT_EQ(r.status, 1) << describe(r);
  report = nlohmann::json::parse(r.out);
  ASSERT_EQ(report["errors"].size(), 1u) << report.dump(2);
  EXPECT_EQ(report["errors"][0]["path"], "alias") << report.dump(2);
}

// No inode left for the directories: the first that cannot be made stops the run, as a file does
// on a full disk. It printed one line per directory of the tree.
TEST_P(FaultsByJobs, NoRoomForDirectoriesStopsAtTheFirst) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to mount a tmpfs";
  std::string src = tmp / "src";
  make_dir(src);
  for (int d = 0; d < 300; ++d) make_dir(src + fmt::format("/d{:03}", d));
  Mount mount(tmp / "mnt", Mount::Tmpfs{"size=4m,nr_inodes=40"});
  if (!mount.mounted()) GTEST_SKIP() << mount.why();
  RunResult r = copy(src, tmp / "mnt/dst", {}, with_timeout(120));
  EXPECT_EQ(r.status, 1) << describe(r);
  EXPECT_EQ(count_lines_containing(r.err, "stopping: No space left on device"), 1u) << describe(r);
  EXPECT_LT(count_lines_containing(r.err, "pcopy: cannot copy"), 10u) << "it went on through the tree\n" << describe(r);
}

// A mirror full of what SRC no longer has: the copy stops at the full disk, but --delete still
// removes what is gone from SRC, so the next night's run fits (it stopped at the same place every
// night, as rsync --delete does not). The report says why the run stopped.
TEST_P(FaultsByJobs, FullDiskStillDeletesWhatSourceNoLongerHasAndTheNextRunFits) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to mount a tmpfs";
  Mount mount(tmp / "mnt", Mount::Tmpfs{"size=10m"});
  if (!mount.mounted()) GTEST_SKIP() << mount.why();
  std::string src = tmp / "src", to = tmp / "mnt/dst";
  make_dir(src);
  // Two files, 8 MiB: neither fits beside the 7 MiB SRC no longer has, both fit once it is gone.
  // The first to fail stops the run with the other still to do (held by a worker, or queued).
  write_big_file(src + "/new.bin", 4, 1);
  write_big_file(src + "/new2.bin", 4, 3);
  make_dir(to);
  write_big_file(to + "/gone-from-source.bin", 7, 2);
  RunResult r = copy(src, to, {"-a", "-u", "--delete", "--json"}, with_timeout(120));
  EXPECT_EQ(r.status, 1) << describe(r);
  EXPECT_TRUE(has_line_starting(r.err, "pcopy: cannot copy 'new")) << describe(r);
  EXPECT_EQ(count_lines_containing(r.err, "pcopy: stopping: No space left on device"), 1u) << describe(r);
  auto report = nlohmann::json::parse(r.out);
  auto errors = report.at("errors");
  auto stop = std::find_if(errors.begin(), errors.end(), [](const auto& e) { return e.at("path") == ""; });
  ASSERT_NE(stop, errors.end()) << r.out;
  EXPECT_EQ(stop->at("reason"), "stopped: No space left on device: the remaining entries were not copied") << r.out;
  EXPECT_EQ(report.at("files_deleted"), 1) << r.out;
  EXPECT_FALSE(exists(to + "/gone-from-source.bin"));
  RunResult next = copy(src, to, {"-a", "-u", "--delete", "--json"}, with_timeout(120));
  EXPECT_EQ(next.status, 0) << describe(next);
  EXPECT_TRUE(nlohmann::json::parse(next.out).at("errors").empty()) << next.out;
  EXPECT_EQ(diff_trees(src, to), "");
}

TEST_P(FaultsByJobs, FullDiskReplacingCopyKeepsTheOldFile) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to mount a tmpfs";
  Mount mount(tmp / "mnt", Mount::Tmpfs{"size=40m"});
  if (!mount.mounted()) GTEST_SKIP() << mount.why();
  std::string src = tmp / "src";
  make_dir(src);
  // The new version does not fit; at 130 MiB it is split into chunks across workers (-j2, -j8).
  write_big_file(src + "/keep.bin", 130, 1);
  std::string to = tmp / "mnt/dst";
  make_dir(to);
  write_big_file(to + "/keep.bin", 8, 2);  // the old version
  write_big_file(tmp / "mnt/filler", 28, 3);
  std::string old = read_file(to + "/keep.bin");
  RunOptions options = with_timeout(120);
  options.env = {"PCOPY_TEST_CHUNK_LOCAL=1"};  // chunks even on a local file system (test builds)
  RunResult r = copy(src, to, {"--progress=always"}, options);
  EXPECT_EQ(r.status, 1) << describe(r);
  EXPECT_TRUE(has_line_starting(r.err, "pcopy: cannot copy 'keep.bin': No space left on device")) << describe(r);
  EXPECT_TRUE(read_file(to + "/keep.bin") == old) << "the previous version was damaged";
  EXPECT_EQ(joined(temporaries(to)), "");
  // The bytes its chunks wrote stay in the progress's total as in its done ("100.0 MiB/0 B" before).
  auto lines = lines_of(r.err);
  auto last = std::find_if(lines.rbegin(), lines.rend(), [](const std::string& l) { return l.starts_with("pcopy: ") && l.find('%') != l.npos; });
  ASSERT_NE(last, lines.rend()) << describe(r);
  std::smatch m;
  ASSERT_TRUE(std::regex_search(*last, m, std::regex("  (\\S+ \\S+)/(\\S+ \\S+)  "))) << *last;
  EXPECT_EQ(m[1], m[2]) << *last;
}

// ---------------------------------------------------------------------------------------------------
// Hostile destinations.

// DST made by `cp -al SRC DST` holds SRC's very files. --inplace must not truncate them to write
// into them: that empties SRC (both ended 0 bytes, "file changed as we read it"). Each is replaced
// by a copy of its own instead, as without --inplace. Small files, and a big one split in chunks.
TEST_P(FaultsByJobs, InplaceIntoHardLinksOfTheSourceLeavesTheSourceWhole) {
  std::string src = shared_tree("inplace_links", [](const std::string& root) {
    for (int i = 0; i < 5; ++i) write_file(root + fmt::format("/f{}", i), fmt::format("file {}\n", i));
    write_big_file(root + "/big.bin", 130, 7);
  });
  std::string to = tmp / "dst";
  make_dir(to);
  for (const std::string& name : list_tree(src)) ASSERT_EQ(::link((src + "/" + name).c_str(), (to + "/" + name).c_str()), 0);
  RunOptions options = with_timeout(120);
  options.env = {"PCOPY_TEST_CHUNK_LOCAL=1"};  // chunks even on a local file system (test builds)
  RunResult r = copy(src, to, {"--inplace"}, options);
  EXPECT_EQ(r.status, 0) << describe(r);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(read_file(src + fmt::format("/f{}", i)), fmt::format("file {}\n", i));
  EXPECT_EQ(lstat_or_zero(src + "/big.bin").st_size, 130 << 20) << "the source was truncated";
  EXPECT_EQ(diff_trees(src, to), "");
  EXPECT_EQ(joined(temporaries(to)), "");
}

TEST_P(FaultsByJobs, PlantedSymlinkInDestinationIsReplacedNotFollowed) {
  for (bool inplace : {false, true}) {
    SCOPED_TRACE(inplace ? "--inplace" : "default");
    TempDir t;
    std::string src = t / "src", to = t / "dst", outside = t / "outside";
    make_dirs(src + "/dir/nested");
    make_dirs(src + "/dir2");
    write_file(src + "/file", "the new content\n");
    write_file(src + "/dir/inner", "inside the directory\n");
    write_file(src + "/dir/nested/deeper", "deeper\n");
    write_file(src + "/dir2/file", "second\n");
    write_file(src + "/fresh", "must not create the dangling link's target\n");
    make_dirs(outside + "/dir");
    write_file(outside + "/victim", "precious\n");
    write_file(outside + "/victim2", "precious too\n");
    make_dirs(to + "/dir2");
    make_symlink(outside + "/victim", to + "/file");             // a file name
    make_symlink(outside + "/dir", to + "/dir");                 // a directory name
    make_symlink(outside + "/victim2", to + "/dir2/file");       // a file name one level down
    make_symlink(outside + "/created-through-link", to + "/fresh");  // dangling

    std::vector<std::string> extra;
    if (inplace) extra.push_back("--inplace");
    RunResult r = copy(src, to, extra);
    EXPECT_EQ(r.status, 0) << describe(r);
    EXPECT_EQ(diff_trees(src, to), "");
    EXPECT_TRUE(S_ISREG(lstat_or_zero(to + "/file").st_mode));
    EXPECT_TRUE(S_ISDIR(lstat_or_zero(to + "/dir").st_mode));
    EXPECT_TRUE(S_ISREG(lstat_or_zero(to + "/dir2/file").st_mode));
    EXPECT_TRUE(S_ISREG(lstat_or_zero(to + "/fresh").st_mode));
    EXPECT_EQ(read_file(outside + "/victim"), "precious\n");
    EXPECT_EQ(read_file(outside + "/victim2"), "precious too\n");
    EXPECT_EQ(joined(list_tree(outside)), "dir\nvictim\nvictim2\n") << "something was written outside DST";
    EXPECT_EQ(joined(temporaries(to)), "");
  }
}

// ---------------------------------------------------------------------------------------------------
// Limits: long paths, deep trees, every byte value, few descriptors.

// root/<levels names>/..., created with directory fds; returns the relative path.
std::string make_long_path(const std::string& root, int levels, size_t name_len) {
  UniqueFd dir(::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  std::string rel;
  for (int level = 0; level < levels; ++level) {
    std::string name = fmt::format("{:03}", level) + std::string(name_len - 3, char('a' + level % 26));
    if (::mkdirat(dir.get(), name.c_str(), 0755) != 0) ADD_FAILURE() << "mkdirat: " << std::strerror(errno);
    UniqueFd next(::openat(dir.get(), name.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!next) ADD_FAILURE() << "openat: " << std::strerror(errno);
    dir = std::move(next);
    rel += (rel.empty() ? "" : "/") + name;
    if (level == levels / 2) {
      UniqueFd f(::openat(dir.get(), "middle.txt", O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
      EXPECT_EQ(write_all(f.get(), "half way down\n", 14), 0);
    }
  }
  UniqueFd f(::openat(dir.get(), "bottom.bin", O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640));
  std::string content = random_bytes(100'000, 40);
  EXPECT_EQ(write_all(f.get(), content.data(), content.size()), 0);
  return rel;
}

TEST_P(FaultsByJobs, LongPathsBeyondPathMaxCopy) {
  std::string src = tmp / "src";
  make_dir(src);
  std::string rel = make_long_path(src, 40, 200);
  ASSERT_GT(rel.size(), size_t(PATH_MAX) + 3000);  // about 8 KiB
  RunResult r = copy(src, dst);
  expect_complete_copy(r, src, dst);
  EXPECT_EQ(read_file(dst + "/" + rel + "/bottom.bin"), random_bytes(100'000, 40));
}

TEST_P(FaultsByJobs, VeryDeepTreeCopiesWithoutStackOverflow) {
  constexpr size_t kDepth = 10'000;
  Scratch scratch(tmp / "scratch", "256m");
  std::string src = scratch / "src", to = scratch / "dst";
  make_dir(src);
  std::string half;
  for (size_t i = 0; i < kDepth / 2; ++i) half += "d/";
  make_deep_dirs(src, kDepth / 2);
  write_file(src + "/" + half + "middle.txt", "middle\n");
  make_deep_dirs(src + "/" + half.substr(0, half.size() - 1), kDepth / 2);
  write_file(src + "/" + half + half + "bottom.txt", "bottom\n");

  RunResult r = copy(src, to, {}, with_timeout(120));
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(diff_trees(src, to), "");
  EXPECT_EQ(read_file(to + "/" + half + half + "bottom.txt"), "bottom\n");
  EXPECT_EQ(read_file(to + "/" + half + "middle.txt"), "middle\n");
}

// For a run whose peak memory is compared: AddressSanitizer holds freed memory in a quarantine
// (256 MB), which would count as live; without it, its peak is what the program keeps.
RunOptions measuring_memory(RunOptions options = with_timeout(120)) {
  const char* asan = std::getenv("ASAN_OPTIONS");
  options.env.push_back(fmt::format("ASAN_OPTIONS={}{}quarantine_size_mb=0", asan ? asan : "", asan ? ":" : ""));
  return options;
}

// Memory follows the names the walk keeps, not the square of the depth. --delete's listings and
// the filters' paths once kept every level's full path: a chain of 6,000 levels took 860 MB.
TEST(Faults, DeleteAndFiltersOnADeepChainKeepMemoryFlat) {
  constexpr size_t kDepth = 3000;  // 183 KB of path at the bottom: 270 MB per full-path copy kept
  const std::string name(60, 'n');
  TempDir t;
  std::string src = t / "src", dst = t / "dst";
  make_dir(src);
  make_deep_dirs(src, kDepth, name);
  auto bottom = [&](const std::string& root) {
    UniqueFd dir(::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    for (size_t i = 0; i < kDepth && dir; ++i) dir.reset(::openat(dir.get(), name.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    EXPECT_TRUE(dir.valid()) << "cannot reach the bottom of " << root << ": " << std::strerror(errno);
    return dir;
  };
  auto put = [](const UniqueFd& dir, const char* file) {
    UniqueFd f(::openat(dir.get(), file, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
    EXPECT_EQ(write_all(f.get(), file, std::strlen(file)), 0) << file;
  };
  auto there = [](const UniqueFd& dir, const char* file) {
    struct stat st;
    return ::fstatat(dir.get(), file, &st, AT_SYMLINK_NOFOLLOW) == 0;
  };
  put(bottom(src), "keep.txt");
  put(bottom(src), "build.o");
  RunResult first = run_pcopy({"-j2", src, dst}, measuring_memory());
  ASSERT_EQ(first.status, 0) << describe(first);
  put(bottom(dst), "old.txt");  // SRC has no such file: --delete removes it
  put(bottom(src), "new.o");    // excluded: not copied

  RunResult second = run_pcopy({"-j2", "-u", "--delete", "--exclude", "*.o", src, dst}, measuring_memory());
  EXPECT_EQ(second.status, 0) << describe(second);
  UniqueFd low = bottom(dst);
  EXPECT_FALSE(there(low, "old.txt"));
  EXPECT_TRUE(there(low, "keep.txt"));
  EXPECT_TRUE(there(low, "build.o"));  // excluded from --delete too: kept, as rsync keeps it
  EXPECT_FALSE(there(low, "new.o"));
  EXPECT_LT(second.peak_rss_kb, first.peak_rss_kb + 64 * 1024)
      << "peak RSS " << second.peak_rss_kb << " KiB with --delete and a filter, " << first.peak_rss_kb << " KiB without";
}

// Errors are kept packed and the --json report is written as it is made: 30,000 unreadable files
// add a few megabytes to the run, not the 25 MB a JSON tree of them took. (Under AddressSanitizer
// its own bookkeeping of allocations is what the peak measures: there, only the report is checked.)
TEST(Faults, ManyErrorsKeepMemorySmall) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to run as a user who may not read the files";
  constexpr int kDirs = 30, kFiles = 1000;
  TempDir t;
  Scratch scratch(t / "scratch", "64m");
  std::string src = scratch / "src";
  make_dir(src);
  for (int d = 0; d < kDirs; ++d) {
    std::string dir = src + fmt::format("/directory_{:02}", d);
    make_dir(dir);
    for (int f = 0; f < kFiles; ++f) write_file(dir + fmt::format("/unreadable_file_{:04}", f), "", 0);
  }
  RunResult copied = run_pcopy({"-q", "--json", "-j2", src, scratch / "by-root"}, measuring_memory());
  ASSERT_EQ(copied.status, 0) << describe(copied);
  RunOptions as_user = unprivileged(t);
  as_user.timeout_s = 120;
  RunResult r = run_pcopy({"-q", "--json", "-j2", src, scratch / "by-user"}, measuring_memory(as_user));
  EXPECT_EQ(r.status, 1) << describe(r);
  auto report = nlohmann::json::parse(r.out);
  EXPECT_EQ(report.at("errors").size(), size_t(kDirs * kFiles));
  EXPECT_EQ(report.at("errors").at(0).at("reason"), "Permission denied");
#ifndef __SANITIZE_ADDRESS__
  EXPECT_LT(r.peak_rss_kb, copied.peak_rss_kb + 8 * 1024)
      << "peak RSS " << r.peak_rss_kb << " KiB with 30,000 errors, " << copied.peak_rss_kb << " KiB copying the files";
#endif
}

TEST_P(FaultsByJobs, NamesWithEveryByteValueCopy) {
  std::string src = tmp / "src";
  make_dir(src);
  // One directory whose name holds every byte but '/' and NUL (254 bytes), in a scrambled order.
  std::string every;
  for (int i = 0; i < 256; ++i) {
    auto c = static_cast<unsigned char>(i * 37 % 256);
    if (c != 0 && c != '/') every += static_cast<char>(c);
  }
  ASSERT_EQ(every.size(), 254u);
  make_dir(src + "/" + every);
  std::vector<std::string> names;
  for (int b = 1; b < 256; ++b) {
    if (b == '/') continue;
    char c = static_cast<char>(b);
    names.push_back(std::string("n") + c);
    names.push_back(std::string(1, c) + "x" + c);
    if (c != '.') names.push_back(std::string(1, c));  // "." alone is not a name
  }
  names.push_back(std::string(255, 'L'));
  names.push_back(std::string(254, '\xff') + "z");
  for (auto& name : names) {
    write_file(src + "/" + name, "file " + name);
    write_file(src + "/" + every + "/" + name, name);
  }
  make_symlink(every, src + "/link-" + std::string(100, '\n'));
  RunResult r = copy(src, dst);
  expect_complete_copy(r, src, dst);
  EXPECT_EQ(list_tree(dst), list_tree(src));
  EXPECT_EQ(list_tree(dst).size(), names.size() * 2 + 2);
}

TEST_P(FaultsByJobs, TightFdLimitStillCopiesEverything) {
  RunOptions options;
  options.nofile = 64;
  options.timeout_s = 30;
  // One file first: when pcopy cannot work at all under the limit, say so quickly.
  {
    std::string small = tmp / "small";
    make_dir(small);
    write_file(small + "/one", "one file\n");
    RunResult r = copy(small, tmp / "small-copy", {}, options);
    ASSERT_EQ(r.status, 0) << "cannot copy even one file with RLIMIT_NOFILE=64\n" << describe(r);
  }

  Scratch scratch(tmp / "scratch", "1g");
  std::string src = scratch / "src";
  make_dir(src);
  for (int d = 0; d < 40; ++d) {
    std::string dir = src + fmt::format("/dir{:02}", d);
    make_dir(dir);
    for (int f = 0; f < 1000; ++f) write_file(dir + fmt::format("/file{:04}", f), "the same small content\n");
  }
  std::vector<int> job_counts{GetParam()};
  if (GetParam() == 8) job_counts.push_back(4);  // the issue's case, once
  options.timeout_s = 120;
  for (int j : job_counts) {
    SCOPED_TRACE(fmt::format("-j{}", j));
    std::string to = scratch / fmt::format("dst-j{}", j);
    RunResult r = run_pcopy({fmt::format("-j{}", j), src, to}, options);
    EXPECT_EQ(r.status, 0) << describe(r);
    EXPECT_EQ(count_regular_files(to), 40'000u);
    EXPECT_EQ(diff_trees(src, to), "");
    EXPECT_EQ(joined(temporaries(to)), "");
  }
}

// The soft limit on open files is raised to the hard one (as many tools do) before the pool is
// made: workers inherit it.
TEST(Faults, RaisesTheSoftFdLimitToTheHardLimit) {
  TempDir t;
  std::string src = t / "src", logs = t / "logs";
  make_dir(src);
  make_dir(logs);
  write_file(src + "/stop-here", "the worker copying it stops the parent\n");
  struct rlimit saved {};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &saved), 0);
  // A hard limit past the 16,384 pcopy once stopped at, where it may be raised.
  struct rlimit low_soft {64, std::max<rlim_t>(saved.rlim_max, 65536)};
  if (::setrlimit(RLIMIT_NOFILE, &low_soft) != 0) {
    low_soft.rlim_max = saved.rlim_max;
    ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &low_soft), 0);
  }
  AsyncPcopy p({"-j1", src, t / "dst"}, logs, {"PCOPY_TEST_STOP_PARENT_NAME=stop-here"});
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &saved), 0);
  bool stopped = stopped_or_done(p, Clock::now() + 60s);
  std::string limits = stopped && p.running() ? read_file(fmt::format("/proc/{}/limits", p.pid())) : "";
  ::kill(p.pid(), SIGCONT);
  RunResult r = p.wait();
  ASSERT_NE(limits, "") << "the parent was not stopped\n" << describe(r);
  EXPECT_EQ(r.status, 0) << describe(r);
  auto line = limits.find("Max open files");
  ASSERT_NE(line, std::string::npos) << limits;
  std::istringstream fields(limits.substr(line + std::strlen("Max open files")));
  rlim_t soft = 0, hard = 0;
  fields >> soft >> hard;
  EXPECT_EQ(hard, low_soft.rlim_max) << limits;
  EXPECT_EQ(soft, hard) << limits;
}

// Under a low limit on open files, a tree deeper than the walk's usual 16 open levels copies (as
// with cp -a and rsync -a): it keeps as many levels open as the limit leaves room for. The second
// run enters the directories the first one made.
TEST(Faults, DeepTreeCopiesUnderALowFdLimit) {
  TempDir t;
  std::string src = t / "src", dst = t / "dst";
  make_dir(src);
  make_deep_dirs(src, 20);
  std::string dir = src;
  for (int level = 0; level <= 20; ++level, dir += "/d") write_file(dir + "/f", fmt::format("level {}\n", level));
  RunOptions low = with_timeout(60);
  low.nofile = 32;
  for (const char* run : {"first run", "second run"}) {
    SCOPED_TRACE(run);
    RunResult r = run_pcopy({"-j2", src, dst}, low);
    EXPECT_EQ(r.status, 0) << describe(r);
    EXPECT_EQ(diff_trees(src, dst), "");
  }
}

// Under a low limit on open files, many directories whose small subdirectories are staged copy too:
// finishing a staged directory reopens its parent, which may still wait for other jobs, and those
// fds count against the walk's budget rather than pile up, one per directory waiting.
TEST(Faults, WideTreeOfStagedDirectoriesCopiesUnderALowFdLimit) {
  TempDir t;
  Scratch scratch(t / "scratch", "64m");  // tmpfs, where staging is used and the copy is quick
  std::string src = scratch / "src", dst = scratch / "dst";
  make_dir(src);
  for (int d = 0; d < 100; ++d) {
    std::string dir = src + fmt::format("/w{:03}", d);
    make_dir(dir);
    for (const char* sub : {"", "/b", "/c"}) {
      if (*sub) make_dir(dir + sub);
      for (int f = 0; f < 3; ++f) write_file(dir + sub + fmt::format("/f{}", f), fmt::format("{} {}\n", d, f));
    }
  }
  RunOptions low = with_timeout(120);
  low.nofile = 40;
  RunResult r = run_pcopy({"-j8", src, dst}, low);
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(diff_trees(src, dst), "");
}

// More workers than the limit on open files has room for: refused before anything is made, the
// limit named, rather than a failed pipe2 with an empty DST left behind.
TEST(Faults, RefusesMoreWorkersThanTheFdLimitHolds) {
  TempDir t;
  std::string src = t / "src", dst = t / "dst";
  make_dir(src);
  write_file(src + "/f", "f\n");
  RunOptions low = with_timeout(60);
  low.nofile = 32;
  RunResult r = run_pcopy({"-j16", src, dst}, low);
  EXPECT_EQ(r.status, 2) << describe(r);
  auto lines = lines_of(r.err);
  ASSERT_EQ(lines.size(), 1u) << describe(r);
  EXPECT_TRUE(lines[0].starts_with("pcopy: -j 16 needs ") && lines[0].ends_with(" is 32")) << describe(r);
  EXPECT_FALSE(exists(dst)) << describe(r);

  r = run_pcopy({"-j16", "--json", src, dst}, low);
  EXPECT_EQ(r.status, 2) << describe(r);
  auto report = nlohmann::json::parse(r.out, nullptr, false);
  ASSERT_TRUE(report.is_object()) << describe(r);
  EXPECT_EQ(report.at("exit_status"), 2);
  ASSERT_EQ(report.at("errors").size(), 1u) << r.out;
  EXPECT_EQ("pcopy: " + report["errors"][0].at("reason").get<std::string>(), lines[0]);
  EXPECT_FALSE(exists(dst)) << describe(r);
}

// ---------------------------------------------------------------------------------------------------
// A source file that changes while it is copied.

// Caught with its half-written temporary while the worker is frozen, the source shrinks or grows;
// pcopy must report it ("file changed as we read it") or copy what the file now holds — never hang,
// never leave a partial file or a temporary.
void change_source_mid_copy(const std::string& src, const std::string& dst, const std::string& logs,
                            const std::string& jobs, bool grow) {
  const std::string file = src + "/changing.bin";
  write_big_file(file, 256, 7);
  AsyncPcopy p({jobs, src, dst}, logs);
  bool changed = catch_writing(p, dst, [&](const Frozen&, const std::vector<Writing>& writing, bool& caught) {
    for (auto& w : writing) {
      struct stat st {};
      ::stat(w.path.c_str(), &st);
      if (st.st_size >= (256 << 20)) continue;  // all data written already
      if (grow) {
        UniqueFd fd(::open(file.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC));
        ASSERT_EQ(write_all(fd.get(), "more bytes at the end", 21), 0);
      } else {
        ASSERT_EQ(::truncate(file.c_str(), 1 << 20), 0);
      }
      caught = true;
      break;
    }
  });
  RunResult r = p.wait();
  if (!changed) GTEST_SKIP() << "the copy could not be caught half-way";
  if (r.status == 0) {
    EXPECT_EQ(compare_contents(file, dst + "/changing.bin"), "") << "copied, but not what the file holds";
  } else {
    EXPECT_EQ(r.status, 1) << describe(r);
    EXPECT_TRUE(has_line_starting(r.err, "pcopy: cannot copy 'changing.bin': file changed as we read it"))
        << describe(r);
    EXPECT_FALSE(exists(dst + "/changing.bin")) << "a partial file under the final name";
  }
  EXPECT_EQ(joined(temporaries(dst)), "");
}

// A big file replaced by rename while its chunks are copied, by one of the same size and mtime
// (a backup tool's atomic rewrite, `rsync -t` into SRC): no size or time check sees it. Chunks
// started after the rename read the new file, those before the old: installed, the copy was half
// of each. Each chunk and the end now check they read the file the first step opened.
TEST_P(FaultsByJobs, ABigFileReplacedByAnotherOfTheSameSizeAndTimeIsNeverInstalledMixed) {
  if (GetParam() == 1) GTEST_SKIP() << "one worker never splits a file";
  std::string src = tmp / "src", file = src + "/huge.bin", other = tmp / "other.bin";
  make_dir(src);
  write_big_file(file, 320, 3);
  write_big_file(other, 320, 4);
  struct stat st = lstat_or_zero(file);
  const struct timespec times[2] = {st.st_atim, st.st_mtim};
  ASSERT_EQ(::utimensat(AT_FDCWD, other.c_str(), times, 0), 0);
  std::string old_copy = tmp / "old.bin";
  ASSERT_EQ(::link(file.c_str(), old_copy.c_str()), 0);  // the old contents, to compare with
  AsyncPcopy p({jobs(), src, dst}, logs, {"PCOPY_TEST_CHUNK_LOCAL=1"});
  bool replaced = catch_writing(p, dst, [&](const Frozen&, const std::vector<Writing>& writing, bool& caught) {
    for (auto& [owner, name, path] : writing) {
      if (!is_temp_name(name) || lstat_or_zero(path).st_size == 0) continue;  // chunks not yet under way
      ASSERT_EQ(::rename(other.c_str(), file.c_str()), 0);
      caught = true;
      break;
    }
  });
  RunResult r = p.wait();
  ASSERT_TRUE(replaced) << "the chunks could not be caught under way\n" << describe(r);
  if (r.status == 0) {  // every chunk had opened the old file: a whole copy of it
    EXPECT_EQ(compare_contents(old_copy, dst + "/huge.bin"), "") << "installed, but not the old file whole";
  } else {
    EXPECT_EQ(r.status, 1) << describe(r);
    EXPECT_TRUE(has_line_starting(r.err, "pcopy: cannot copy 'huge.bin': file changed as we read it")) << describe(r);
    EXPECT_FALSE(exists(dst + "/huge.bin")) << "a copy made of two files under the final name";
  }
  EXPECT_EQ(joined(temporaries(dst)), "");
}

TEST_P(FaultsByJobs, SourceFileShrinkingDuringCopyIsReportedOrConsistent) {
  std::string src = tmp / "src";
  make_dir(src);
  change_source_mid_copy(src, dst, logs, jobs(), false);
}

TEST_P(FaultsByJobs, SourceFileGrowingDuringCopyIsReportedOrConsistent) {
  std::string src = tmp / "src";
  make_dir(src);
  change_source_mid_copy(src, dst, logs, jobs(), true);
}

INSTANTIATE_TEST_SUITE_P(Faults, FaultsByJobs, ::testing::Values(1, 2, 8),
                         [](const ::testing::TestParamInfo<int>& info) { return fmt::format("j{}", info.param); });

// ---------------------------------------------------------------------------------------------------
// Refused inputs: exit 2, a message, nothing created.

TEST(Faults, RefusedInputsExitTwoAndCreateNothing) {
  TempDir t;
  std::string src = t / "src";
  make_dirs(src + "/a");
  write_file(src + "/a/f", "content\n");
  write_file(t / "file", "a file, not a directory\n");
  make_symlink(src, t / "link-to-src");
  const std::vector<std::string> src_before = list_tree(src);

  struct Case {
    std::string what;
    std::vector<std::string> args;
    std::string must_not_exist;  // empty: nothing to check beyond SRC staying as it was
  };
  const std::vector<Case> cases = {
      {"SRC missing", {t / "missing", t / "d1"}, t / "d1"},
      {"SRC == DST", {src, src}, ""},
      {"SRC == DST spelled differently", {src, src + "/../src/."}, ""},
      {"DST inside SRC", {src, src + "/sub/dst"}, src + "/sub"},
      {"DST inside SRC through a symlink", {src, t / "link-to-src/sub"}, src + "/sub"},
      {"SRC given through a symlink, DST inside it", {t / "link-to-src", src + "/inner"}, src + "/inner"},
      {"SRC a directory, DST an existing file", {src, t / "file"}, ""},
      {"-j 0", {"-j", "0", src, t / "d2"}, t / "d2"},
      {"-j 100000", {"-j", "100000", src, t / "d3"}, t / "d3"},
      {"-j abc", {"-j", "abc", src, t / "d4"}, t / "d4"},
      {"-j -1", {"-j", "-1", src, t / "d5"}, t / "d5"},
      {"--bogus", {"--bogus", src, t / "d6"}, t / "d6"},
  };
  for (auto& c : cases) {
    SCOPED_TRACE(c.what);
    RunResult r = run_pcopy(c.args, with_timeout(60));
    EXPECT_EQ(r.status, 2) << describe(r);
    EXPECT_TRUE(r.err.starts_with("pcopy:")) << "the message must start with 'pcopy:'\n" << describe(r);
    EXPECT_EQ(r.out, "");
    if (!c.must_not_exist.empty()) {
      EXPECT_FALSE(exists(c.must_not_exist)) << escape_path(c.must_not_exist);
    }
    EXPECT_EQ(list_tree(src), src_before) << "SRC was changed";
    EXPECT_EQ(read_file(t / "file"), "a file, not a directory\n");
  }
  EXPECT_EQ(joined(list_tree(t.path())), joined({"file", "link-to-src", "src", "src/a", "src/a/f"}));
}

}  // namespace
}  // namespace pcopy::test
