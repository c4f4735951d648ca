// The fixed pool of worker processes: forking them (and forking a replacement when one dies),
// the two pipes each worker owns, and buffered non-blocking writes so the parent never blocks on
// one worker while another has something to say.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "pcopy/fd.hpp"
#include "pcopy/protocol.hpp"

namespace pcopy {

// What a worker shares with the parent in memory (MAP_SHARED), for the parent to read once the
// worker is dead: what its death would otherwise take with it.
struct WorkerShared {
  static constexpr size_t kUnsentBytes = 64 * 1024;
  // The job it is writing under its final name (--inplace), 0 for none: a store per file where a
  // message would be a system call. Read once the worker is dead, it is the file its death left
  // part-written.
  std::atomic<uint64_t> in_hand{0};
  // The first `unsent` bytes of `frames`: whole frames it has encoded and not yet written to its
  // pipe (results go in bunches). They answer jobs whose files are in place; a death before the
  // write would leave those in no count or manifest, and have them copied again.
  std::atomic<uint32_t> unsent{0};
  char frames[kUnsentBytes];
};

struct WorkerSlot {
  pid_t pid = -1;
  UniqueFd jobs;     // parent's write end, non-blocking
  UniqueFd results;  // parent's read end, non-blocking
  std::string out;   // encoded frames not yet written
  FrameReader reader;
  std::unordered_set<uint64_t> held;  // ids of jobs sent and not yet answered
  bool garbled = false;               // it sent a malformed frame: its unsent answers are not taken
};

class Pool {
 public:
  // `worker_main(job_fd, result_fd, shared)` runs in each child; its return value is the exit
  // status. `keep_fds` are the extra descriptors a worker needs (e.g. the SRC and DST roots); in the
  // child they are renumbered 5, 6, … in order, and every other descriptor is closed. `shared` is
  // the worker's memory shared with the parent (null where it could not be mapped): see in_hand()
  // and unsent().
  using WorkerMain = std::function<int(int job_fd, int result_fd, WorkerShared* shared)>;
  // Forks as many of `workers` as the system allows (`ulimit -u`, memory): see live() and
  // start_error().
  Pool(unsigned workers, std::vector<int> keep_fds, WorkerMain worker_main);
  ~Pool();  // kills and reaps whatever is still running
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;

  size_t size() const { return slots_.size(); }
  WorkerSlot& slot(size_t i) { return slots_[i]; }
  const WorkerSlot& slot(size_t i) const { return slots_[i]; }
  // Forks a worker into slot i (replacing a dead one); 0, or the errno of pipe2 or fork, the slot
  // then left empty.
  int spawn(size_t i);
  size_t live() const;
  int start_error() const { return start_error_; }  // why the constructor forked fewer than asked
  // WorkerShared::in_hand of worker i, 0 where there is none. Read once it is dead, and before
  // spawn(i) clears it.
  uint64_t in_hand(size_t i) const { return shared_ ? shared_[i].in_hand.load(std::memory_order_relaxed) : 0; }
  // The frames dead worker i had encoded and not sent (WorkerShared::unsent); before spawn(i).
  std::string_view unsent(size_t i) const;
  // Queues a frame for worker i and writes as much as the pipe takes now.
  void send(size_t i, const std::string& frame);
  // Writes queued bytes to worker i; returns false if the worker is gone.
  bool flush(size_t i);
  // Closes every job pipe: workers finish what they hold and exit.
  void close_jobs();
  // Waits (at most `timeout_ms`) for workers to exit, then SIGKILLs the rest and reaps those that
  // die within kKillWaitMs.
  void shutdown(int timeout_ms);
  static constexpr int kKillWaitMs = 2000;
  // Reaps slot i's process if it has exited; returns its wait status or -1.
  int reap(size_t i, bool block);
  // Waits, at most `timeout_ms`, until every live worker has exited (reap() then takes them).
  void await_deaths(int timeout_ms);
  void signal_all(int sig);

 private:
  void await_exits(int timeout_ms);
  std::vector<WorkerSlot> slots_;
  std::vector<int> keep_fds_;
  int start_error_ = 0;
  WorkerMain worker_main_;
  WorkerShared* shared_ = nullptr;  // one per worker, MAP_SHARED
  size_t shared_bytes_ = 0;
};

// Describes a wait status: "killed by signal 9 (Killed)" or "exited with status 3".
std::string describe_wait_status(int status);

}  // namespace pcopy
