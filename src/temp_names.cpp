// Temporary names: what pcopy calls a file or directory until it is complete, the run a name is of,
// and the leftovers of runs that were interrupted.
#include "pcopy/temp_names.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <ctime>

#include "pcopy/fd.hpp"
#include "pcopy/mirror.hpp"
#include "pcopy/paths.hpp"
#include "pcopy/protocol.hpp"

namespace pcopy {

namespace {

constexpr uint64_t kRunScale = 1'000'000'000;  // a temporary's number is run * kRunScale + its count

uint64_t make_run_number() {
  uint32_t r = 0;
  if (::getrandom(&r, sizeof r, GRND_NONBLOCK) != ssize_t(sizeof r)) {
    struct timespec ts {};
    ::clock_gettime(CLOCK_REALTIME, &ts);
    r = uint32_t(ts.tv_nsec) ^ uint32_t(ts.tv_sec) ^ uint32_t(::getpid());
  }
  return 1 + r % (kRunScale - 1);  // never 0, the run of names from before runs were numbered
}

// Drawn before main(), in the parent: its workers inherit it.
const uint64_t g_run = make_run_number();

Nanos now_realtime_ns() {
  struct timespec ts {};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return to_ns(ts);
}

const Nanos g_started_ns = now_realtime_ns();

// How long before this run started a temporary of this run's pids but another run last changed,
// to be a leftover: a few seconds, for a server's clock (a test build may say otherwise).
int64_t leftover_margin_ns() {
#ifdef PCOPY_TEST_HOOKS
  if (const char* s = std::getenv("PCOPY_TEST_LEFTOVER_MARGIN_S")) return int64_t(std::atof(s) * 1e9);
#endif
  return 5'000'000'000;
}

// The latest change (mtime or ctime) to `name` in `dir`, or to an entry of it if it is a directory
// (a staged one, whose files are what changes while it is filled); 0 if it cannot be looked at.
Nanos last_change_ns(int dir, const char* name) {
  struct stat st;
  if (::fstatat(dir, name, &st, AT_SYMLINK_NOFOLLOW) != 0) return 0;
  Nanos last = std::max(to_ns(st.st_mtim), to_ns(st.st_ctim));
  if (!S_ISDIR(st.st_mode)) return last;
  UniqueFd d(::openat(dir, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW));
  if (!d) return last;
  for_each_entry(d.get(), [&](const char* entry, unsigned char) {
    struct stat es;
    if (std::strcmp(entry, ".") != 0 && std::strcmp(entry, "..") != 0 && ::fstatat(d.get(), entry, &es, AT_SYMLINK_NOFOLLOW) == 0)
      last = std::max({last, to_ns(es.st_mtim), to_ns(es.st_ctim)});
  });
  return last;
}

// The value of `digits`, all decimal digits and at least one; saturating at UINT64_MAX.
std::optional<uint64_t> decimal(std::string_view digits) {
  if (digits.empty()) return std::nullopt;
  uint64_t n = 0;
  for (char c : digits) {
    if (c < '0' || c > '9') return std::nullopt;
    n = n > (UINT64_MAX - 9) / 10 ? UINT64_MAX : n * 10 + uint64_t(c - '0');
  }
  return n;
}

}  // namespace

std::string temp_prefix(pid_t pid) { return fmt::format("{}{}-", kTempPrefix, pid); }

std::string temp_name(pid_t pid, bool staged, bool secret, uint64_t count) {
  return fmt::format("{}{}-{}{}{}", kTempPrefix, pid, staged ? "d" : "", temp_number(secret_count(secret, count)),
                     kTempSuffix);
}

std::optional<TempName> parse_temp_name(std::string_view name) {
  if (name.size() <= kTempPrefix.size() + kTempSuffix.size() || !name.starts_with(kTempPrefix) ||
      !name.ends_with(kTempSuffix))
    return std::nullopt;
  name = name.substr(kTempPrefix.size(), name.size() - kTempPrefix.size() - kTempSuffix.size());
  size_t dash = name.find('-');
  if (dash == std::string_view::npos) return std::nullopt;
  TempName parts;
  std::string_view n = name.substr(dash + 1);
  parts.staged = n.starts_with('d');
  if (parts.staged) n.remove_prefix(1);
  auto pid = decimal(name.substr(0, dash));
  auto number = decimal(n);
  if (!pid || !number) return std::nullopt;
  parts.pid = *pid;
  parts.number = *number;
  return parts;
}

bool made_by_this_run(std::string_view temp_name) {
  auto parts = parse_temp_name(temp_name);
  return parts && parts->number / kRunScale == g_run;
}

std::string temp_number(uint64_t count) { return std::to_string(g_run * kRunScale + count % kRunScale); }

uint64_t secret_count(bool secret, uint64_t count) {
  uint64_t drawn;
  return secret && ::getrandom(&drawn, sizeof drawn, GRND_NONBLOCK) == ssize_t(sizeof drawn) ? drawn : count;
}

bool temp_in_use(int dir, std::string_view name) {
  auto parts = parse_temp_name(name);
  if (!parts || parts->pid == 0 || parts->pid >= 100'000'000) return false;  // no pid is that large
  pid_t pid = pid_t(parts->pid);
  // /proc/PID/stat: "pid (comm) state ...". Where it cannot be read, only whether the pid exists:
  // ENOENT says nothing of the process without /proc (a chroot, a container that unmounted it), nor
  // with /proc mounted hidepid=2, which hides other users' processes. A second run took a live
  // run's temporaries for leftovers and removed them.
  UniqueFd fd(::open(fmt::format("/proc/{}/stat", pid).c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return ::kill(pid, 0) == 0 || errno == EPERM;
  char buf[512];
  ssize_t n = ::read(fd.get(), buf, sizeof buf);
  if (n <= 0) return false;
  std::string_view stat(buf, size_t(n));
  size_t open = stat.find('('), close = stat.rfind(')');
  if (open == std::string::npos || close == std::string::npos || close + 2 >= stat.size()) return false;
  char state = stat[close + 2];
  if (stat.substr(open + 1, close - open - 1) != "pcopy" || state == 'Z' || state == 'X') return false;
  // This run's own pid, or a worker's (pids repeat: in a container every run is pid 1 and its
  // worker pid 2), on a temporary this run did not make: left by an earlier process with that pid,
  // or made by a run in another pid namespace whose pids are the same (two containers sharing a
  // volume), which no pid can tell apart. A leftover has not changed since before this run
  // started (its maker was gone by then); a live run's temporary, or staged directory, changes as
  // it is written (its times set, it is renamed: ctime too).
  pid_t ppid = std::atoi(std::string(stat.substr(close + 3, 24)).c_str());
  if ((pid == ::getpid() || ppid == ::getpid()) && parts->number / kRunScale != g_run)
    return last_change_ns(dir, std::string(name).c_str()) >= g_started_ns - leftover_margin_ns();
  return true;
}

void remove_temps(int dir, const std::function<bool(std::string_view name)>& which) {
  for_each_entry(dir, [&](const char* name, unsigned char type) {
    // Asked only of what would be removed: `which` may prepare the directory for it (Walker::open_up).
    if (!is_temp_name(name) || (type == DT_DIR && !is_staged_name(name)) || !which(name)) return;
    if (type != DT_DIR) {
      ::unlinkat(dir, name, 0);
    } else if (is_staged_name(name)) {
      // A staged directory an interrupted run never revealed: its files are copied again.
      remove_quietly(dir, name);
    }
  });
}

}  // namespace pcopy
