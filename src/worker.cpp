#include "pcopy/worker.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <span>
#include <utility>
#include <vector>

#include "pcopy/copier.hpp"
#include "pcopy/fd.hpp"
#include "pcopy/paths.hpp"
#include "pcopy/pool.hpp"
#include "pcopy/protocol.hpp"

namespace pcopy {

namespace {

constexpr size_t kFlushBytes = 16 * 1024;
constexpr long kFlushMs = 100;  // results of a slow batch still reach the bar promptly
constexpr long kDeferMs = 250;  // a batch running longer gives back what it has not started

// SIGUSR1: the parent abandons the run (interrupted, --fail-fast). Finish the job in hand, send
// every result not yet sent, and exit: what was copied is then reported, not lost in a buffer.
volatile sig_atomic_t g_finish_up = 0;
void on_finish_up(int) { g_finish_up = 1; }

// Milliseconds of the coarse clock (a tick's precision, read without a system call): a flush's and
// a batch's time limits need no more.
long coarse_now_ms() {
  struct timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

// The source and destination directory of the batch being worked on, reused while batches come
// from the same directory and the destination's is still where its path leads.
class DirPair {
 public:
  // Tells `copier` each destination directory it opens (Copier::enter).
  DirPair(const Options& o, int src_root, int dst_root, Copier& copier)
      : opt_(o), src_root_(src_root), dst_root_(dst_root), copier_(copier) {}
  // 0 or an errno.
  // `dst_rel` is where `rel` is in DST, when that differs (a staged directory).
  int open(const std::string& rel, const std::string& dst_rel, const DirFacts& facts) {
    if (open_ && rel == rel_ && dst_rel == dst_rel_ && still_there()) return 0;
    open_ = false;
    src_gone_ = Vanished::No;
    copier_.close_later(std::move(src_));
    copier_.close_later(std::move(dst_));
    int fd = open_dir_beneath(src_root_, rel, opt_.dereference);
    if (fd == -ENOENT) src_gone_ = Vanished::Dir;
    if (fd == -ENOTDIR || (fd == -ELOOP && !opt_.dereference)) src_gone_ = Vanished::DirChanged;
    if (fd < 0) return -fd;
    src_.reset(fd);
    if (dst_root_ >= 0) {
      const std::string& in_dst = dst_rel.empty() ? rel : dst_rel;
      fd = open_dir_beneath(dst_root_, in_dst, false);
      // A dry run's directory may not exist yet, or be a file or a link the real run would replace,
      // or one of the user's that the real run would open up (needs_opening_up), which the dry
      // run may not open or search: unseen, its files are listed as new.
      if (opt_.dry_run && fd >= 0 && ::faccessat(fd, ".", X_OK, AT_EACCESS) != 0) {
        ::close(fd);
        fd = -EACCES;
      }
      struct stat st;
      bool would_make = opt_.dry_run && (fd == -ENOENT || fd == -ENOTDIR || fd == -ELOOP ||
                                         (fd == -EACCES && needs_opening_up(dst_root_, in_dst.c_str(), st)));
      if (fd < 0 && !would_make) return -fd;
      dst_.reset(fd < 0 ? -1 : fd);
      struct stat held;
      if (dst_ && ::fstat(dst_.get(), &held) == 0) dst_dev_ = held.st_dev, dst_ino_ = held.st_ino;
    }
    rel_ = rel;
    dst_rel_ = dst_rel;
    open_ = true;
    copier_.enter(dst_.get(), facts);
    copier_.set_dir_rel(rel);
    return 0;
  }
  int src() const { return src_.get(); }
  int dst() const { return dst_.get(); }
  // Why the last open() failed, if because the source directory (or one above it) is gone or is no
  // longer a directory.
  Vanished src_gone() const { return src_gone_; }

 private:
  // Whether the destination directory held open is still the one its path leads to: one moved away
  // meanwhile (out of DST, say) is not written where it went, as a batch that opened it anew would
  // find. A lookup per level for each batch that reuses it (three system calls; -j1 on 1,000 empty
  // files a directory, in batches of about 30, is where it shows).
  bool still_there() const {
    if (dst_root_ < 0 || !dst_) return true;  // a dry run's directory not made yet
    UniqueFd again;
    int fd = open_dir_beneath(dst_root_, dst_rel_.empty() ? rel_ : dst_rel_, false);
    if (fd < 0) return false;
    again.reset(fd);
    struct stat st;
    return ::fstat(again.get(), &st) == 0 && st.st_dev == dst_dev_ && st.st_ino == dst_ino_;
  }

  const Options& opt_;
  int src_root_, dst_root_;
  std::string rel_, dst_rel_;
  bool open_ = false;
  Vanished src_gone_ = Vanished::No;
  Copier& copier_;
  UniqueFd src_, dst_;
  dev_t dst_dev_ = 0;  // dst_'s identity, for still_there()
  ino_t dst_ino_ = 0;
};

#ifdef PCOPY_TEST_HOOKS
// Test builds only: die on a named file, to exercise the parent's recovery; or stop the parent
// before copying a named file, so that its result is certain to be unread when the parent resumes.
// PCOPY_TEST_KILL_TOKENS names a directory of tokens: the worker that takes a job named like a token
// dies, whatever the attempt, as from an OOM kill or a `kill -9` that could have hit any worker. A
// token "NAME@progress" kills the worker copying NAME once it has reported progress on it. An empty
// token kills one worker and is removed; one holding a number N kills N, one after the other.
bool take_token(const std::string& name) {
  const char* tokens = std::getenv("PCOPY_TEST_KILL_TOKENS");
  if (!tokens) return false;
  std::string path = std::string(tokens) + "/" + name;
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CLOEXEC));
  if (!fd) return false;
  char text[16] = {};
  int left = ::read(fd.get(), text, sizeof text - 1) > 0 ? std::atoi(text) : 1;
  if (left <= 1) return ::unlink(path.c_str()) == 0;
  std::string rest = std::to_string(left - 1);
  return ::ftruncate(fd.get(), 0) == 0 && ::pwrite(fd.get(), rest.data(), rest.size(), 0) == ssize_t(rest.size());
}

void test_hooks(const Job& job) {
  const char* always = std::getenv("PCOPY_TEST_KILL_NAME");
  const char* once = std::getenv("PCOPY_TEST_KILL_ONCE_NAME");
  if ((always && job.name == always) || (once && job.attempt == 0 && job.name == once)) ::raise(SIGKILL);
  if (take_token(job.name)) ::raise(SIGKILL);
  if (const char* name = std::getenv("PCOPY_TEST_STOP_PARENT_NAME"); name && job.name == name && job.attempt == 0)
    ::kill(::getppid(), SIGSTOP);
  // PCOPY_TEST_GATE_NAME: the worker that takes this file waits, before copying it, until the FIFO
  // PCOPY_TEST_GATE_FIFO has been opened for writing and closed, then removes it: the run cannot end
  // before the test lets it, and waits there once (the job may be handed back, and taken again).
  const char* gate = std::getenv("PCOPY_TEST_GATE_NAME");
  const char* fifo = std::getenv("PCOPY_TEST_GATE_FIFO");
  if (gate && fifo && job.name == gate) {
    UniqueFd fd(::open(fifo, O_RDONLY | O_CLOEXEC));
    char c;
    for (ssize_t n = 1; fd && n != 0;) {
      n = ::read(fd.get(), &c, 1);
      if (n < 0 && errno != EINTR) break;
    }
    if (fd) ::unlink(fifo);
  }
}

// Called once a progress message about job `id` of `batch` is sent.
void test_hook_progress(const Batch& batch, uint64_t id) {
  for (const Job& job : batch.jobs)
    if (job.id == id && take_token(job.name + "@progress")) ::raise(SIGKILL);
}

// Called once job `id` of `batch` is done, before its result is sent: a token "NAME@done" kills
// the worker that has just copied NAME, its result unsent; "NAME@end", the one that has just
// installed NAME in chunks (its FileEnd job).
void test_hook_done(const Batch& batch, uint64_t id) {
  for (const Job& job : batch.jobs) {
    if (job.id != id) continue;
    if (take_token(job.name + "@done") || (job.kind == JobKind::FileEnd && take_token(job.name + "@end")))
      ::raise(SIGKILL);
  }
}
#else
void test_hooks(const Job&) {}
void test_hook_progress(const Batch&, uint64_t) {}
void test_hook_done(const Batch&, uint64_t) {}
#endif

}  // namespace

int run_worker(const Options& options, int job_fd, int result_fd, WorkerShared* shared, int src_root,
               int dst_root, int dst_fs) {
  ::umask(0);  // files are created with their final permission bits
  struct sigaction sa {};
  sa.sa_handler = on_finish_up;
  sa.sa_flags = SA_RESTART;  // no system call fails for it
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGUSR1, &sa, nullptr);
  Copier copier(options);
  copier.set_dst_fs(dst_fs);
  copier.set_dst_root(dst_root);
  copier.stop_when(&g_finish_up);
  copier.tell_in_hand(shared ? &shared->in_hand : nullptr);
  DirPair dirs(options, src_root, dst_root, copier);
  FrameReader reader;
  std::string in(64 * 1024, '\0');
  std::string out;
  std::vector<Result> results;
  long last_flush = coarse_now_ms();
#ifdef PCOPY_TEST_HOOKS
  // Test builds only: answers go by size or at a batch's end, never by time, so that a test knows
  // which ones a worker killed mid-batch had not sent (on a loaded machine some had gone).
  const bool timed_flush = !std::getenv("PCOPY_TEST_NO_TIMED_FLUSH");
#else
  const bool timed_flush = true;
#endif
  // After a --fail-fast error every later job is handed back untried: the parent stops the run.
  bool failed_fast = false;
  // The job the last progress message was about. It is answered as soon as it is done, before
  // another is started: until then, the parent charges the worker's death to it.
  uint64_t reporting = 0;
  // What is encoded is in the shared memory too, for the parent to take if this worker dies
  // before writing it (WorkerShared::unsent); a frame too big for it is not, its job copied again.
  size_t shown = 0;
  auto show = [&] {
    if (!shared || out.size() > WorkerShared::kUnsentBytes) return;
    std::copy(out.begin() + ptrdiff_t(shown), out.end(), shared->frames + shown);
    shown = out.size();
    shared->unsent.store(uint32_t(shown), std::memory_order_release);
  };
  // --fsync: each file was flushed before it took its name, and its name is flushed (its
  // directory) before the parent hears of it: a manifest or -v line names only what is on disk.
  // After a power cut files listed were missing or old. A failure is the parent's to tell,
  // when it flushes the directory at its end.
  bool named_since_flush = false;
  auto flush = [&] {
    if (out.empty()) return true;
    if (std::exchange(named_since_flush, false) && dirs.dst() >= 0) ::fsync(dirs.dst());
    if (write_all(result_fd, out.data(), out.size()) != 0) return false;
    out.clear();
    if (shared) {
      shared->unsent.store(0, std::memory_order_relaxed);  // in the pipe (a repeat is ignored)
      std::atomic_signal_fence(std::memory_order_seq_cst);  // before the next frames overwrite these
    }
    shown = 0;
    last_flush = coarse_now_ms();
    return true;
  };

  for (;;) {
    ssize_t n = read_some(job_fd, in.data(), in.size());
    if (n <= 0) return 0;  // the parent closed the pipe: no more work
    reader.feed(in.data(), size_t(n));
    while (auto frame = reader.next()) {
      if (frame->type != MsgType::Batch) return kWorkerBadMessage;
      Batch batch = decode_batch(frame->payload);
      int dir_err = dirs.open(batch.dir, batch.dst_dir, batch.facts);
      long batch_start = coarse_now_ms();
      bool give_back = failed_fast;  // a full disk (or --fail-fast error): the rest would fail too
      auto report = [&](uint64_t id, uint64_t bytes) {
        reporting = id;
        encode(out, Progress{id, bytes});
        flush();
        test_hook_progress(batch, id);
      };
      auto answer = [&](const Result& r) {
        encode(out, r);
        show();
      };
      auto finish = [&](const Result& r, bool answered) {
        bool named = r.outcome == Outcome::Copied || r.outcome == Outcome::Replaced;
        named_since_flush = named_since_flush || (options.fsync && named);
        give_back = give_back || ends_batch(r, options);
        failed_fast = give_back && options.fail_fast;
        if (!answered) answer(r);
        test_hook_done(batch, r.id);
        return (out.size() < kFlushBytes && (!timed_flush || coarse_now_ms() - last_flush < kFlushMs) && !g_finish_up &&
                r.id != reporting) ||
               flush();
      };
      size_t hooked = 0;  // jobs test_hooks() has seen: a run cut short is not seen twice
      for (size_t i = 0; i < batch.jobs.size();) {
        const Job& job = batch.jobs[i];
        Result r;
        r.id = job.id;
        if (give_back || (i > 0 && coarse_now_ms() - batch_start >= kDeferMs)) {
          // Sizes are not always known when batches are cut: a batch that turns out long hands
          // its unstarted jobs back, for whichever worker is idle.
          r.outcome = Outcome::Deferred;
        } else if (dir_err) {
          r.outcome = Outcome::Failed;
          r.err = dir_err;
          r.vanished = dirs.src_gone();
        } else if (size_t limit = copier.batch_limit(); (limit > 1 && copier.batchable(job)) || copier.linkable(job)) {
          // A run of small files: copied together, answered in order (up to a file that reported
          // progress: the run ends there). Or a run of hard links.
          bool files = limit > 1 && copier.batchable(job);
          auto same = [&](const Job& next) { return files ? copier.batchable(next) : copier.linkable(next); };
          size_t end = i + 1;
          while (end < batch.jobs.size() && (!files || end - i < limit) && same(batch.jobs[end])) ++end;
          std::span<const Job> run(batch.jobs.data() + i, end - i);
          for (hooked = std::max(hooked, i); hooked < end; ++hooked) test_hooks(batch.jobs[hooked]);
          // A run's files are answered as each is in place, in the shared memory at least.
          if (files)
            copier.copy_batch(dirs.src(), dirs.dst(), run, report, results, answer);
          else
            copier.link_batch(dirs.src(), dirs.dst(), dst_root, run, report, results);
          for (const Result& done : results)
            if (!finish(done, files)) return kWorkerCannotAnswer;
          if (g_finish_up) return 0;
          i += results.size();
          continue;
        } else {
          if (hooked <= i) {
            test_hooks(job);
            hooked = i + 1;
          }
          r = copier.copy(dirs.src(), dirs.dst(), dst_root, job, report);
        }
        if (!finish(r, false)) return kWorkerCannotAnswer;
        if (g_finish_up) return 0;
        ++i;
      }
      if (!flush()) return kWorkerCannotAnswer;
    }
  }
}

}  // namespace pcopy
