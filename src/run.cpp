#include "pcopy/run.hpp"

#include <fcntl.h>
#include <fmt/core.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <tuple>
#include <unordered_map>
#include <utility>

#include "pcopy/copier.hpp"
#include "pcopy/mirror.hpp"
#include "pcopy/pool.hpp"
#include "pcopy/progress.hpp"
#include "pcopy/protocol.hpp"
#include "pcopy/report.hpp"
#include "pcopy/target.hpp"
#include "pcopy/walker.hpp"
#include "pcopy/worker.hpp"

namespace pcopy {

namespace {

constexpr size_t kBatchFiles = 128;           // jobs per message: pipes are never the bottleneck
constexpr uint64_t kBatchBytes = 4ull << 20;  // a big file travels alone
// Sent ahead to a worker: two batches (one being worked on, one waiting), or more while they hold
// fewer than a full batch of jobs, so trees of small directories keep the workers busy too.
constexpr size_t kBatchesPerWorker = 2;
constexpr size_t kMaxBatchesPerWorker = 16;
constexpr size_t kLongDirPath = 64 * 1024;     // of a batch's directory: kBatchesPerWorker in flight
constexpr size_t kEarlyBatchFiles = 16;       // enough jobs to send an idle worker before the batch is full
constexpr int kEventsPerPoll = 1024;          // walk at most this much between looks at the pipes
// -a -u: names of hard-link groups waiting for a name with a copy in DST (see handle_walk_event),
// beyond the window; past this many (some 800 bytes each) the oldest group is copied.
constexpr size_t kMaxUndecidedNames = 16384;
// And names of groups that have one, waiting for their other names: past this many the oldest is
// led by it. Few, for those of every file linked from outside SRC (whose other names never come)
// hold the workers back: 16,384 made an unchanged run 25% slower on 20,000 such files.
constexpr size_t kMaxLedNames = 1024;
// And names of groups whose copy there has as many names as SRC's file, the group as the last run
// left it as far as the count tells (most of an unchanged run's): they wait for all their names as
// well, apart, so that thousands of them met between two names of a group SRC relinked do not push
// that group out (LLL).
constexpr size_t kMaxSettledNames = 8192;
constexpr double kBarInterval = 0.1;          // at most ~10 redraws a second
constexpr double kLineInterval = 2.0;         // --progress=always without a terminal
constexpr double kOutInterval = 0.2;          // -v, -n lines into a file or pipe: written at least this often
constexpr int kFinishUpMs = 250;              // abandoned: how long workers may finish the job in hand
constexpr int kStuckReaderMs = 1000;          // interrupted: how long output may wait for its reader
constexpr double kSilentWorkerS = 120;        // a worker holding jobs this long without a word is named

double now_s() {
  struct timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return double(ts.tv_sec) + double(ts.tv_nsec) / 1e9;
}

JobKind kind_of(mode_t mode) {
  if (S_ISREG(mode)) return JobKind::File;
  if (S_ISLNK(mode)) return JobKind::Symlink;
  if (S_ISFIFO(mode)) return JobKind::Fifo;
  return JobKind::Device;
}

// What a job weighs in its batch: a batch of kBatchBytes is sealed, and waits for a worker with room.
uint64_t weight(const Job& job) {
  switch (job.kind) {
    case JobKind::File: return job.size;
    case JobKind::FileBegin: return kBatchBytes;  // a big file's first step travels alone
    case JobKind::FileChunk: return job.length;
    default: return 0;
  }
}

std::string reason_of(const Result& r) {
  if (!r.detail.empty()) return r.detail;
  return errno_text(r.err);
}

struct JobInfo {
  DirNode* dir = nullptr;  // null for a single-file copy
  Job job;
  int worker = -1;
  uint64_t reported = 0;  // bytes already counted through Progress messages
  std::optional<std::pair<dev_t, ino_t>> link_key = {};  // archive mode: first of a hard-link group
  bool alone = false;     // sent as the only job of its batch
  uint8_t deaths = 0;     // workers it certainly killed (see on_worker_gone)
  uint64_t file = 0;      // FileChunk/FileEnd: the id of the FileBegin job of their file
  std::optional<std::pair<dev_t, ino_t>> member_of = {};  // HardLink: its group
};

// A big file being copied in chunks by several workers.
struct ChunkedFile {
  JobInfo begin;     // the FileBegin job: directory, names, size, hard-link group
  Outcome outcome = Outcome::Copied;
  std::string temp;  // the temporary Begin created
  size_t chunks_left = 0;
  uint64_t bytes = 0;
  Result failure;    // the first chunk failure, if any
  bool failed = false;
  std::vector<uint64_t> sent;  // chunks handed to workers, some perhaps done (chunks_in_flight)
  bool started = false;        // a chunk has been handed out: the file is being filled
};

struct PendingBatch {
  DirNode* dir = nullptr;
  std::vector<uint64_t> ids;
  uint64_t bytes = 0;
  bool requeued = false;  // jobs a worker gave back
};

// A group of hard links: the first entry is copied, the others wait and are then linked to it.
struct LinkGroup {
  std::string first;  // DST-relative path of the copy, once done
  bool done = false;
  bool anew = false;  // the first name was copied, not skipped: the others are linked to it again
  bool symlink = false;  // its names are links, counted as such
  // -u into an existing DST: its names wait until all are met, so that the one whose copy is there
  // leads (see handle_walk_event).
  bool undecided = false;
  std::optional<uint64_t> lead;  // the first name met with a copy in DST: its waiting job
  std::pair<dev_t, ino_t> lead_copy{};  // that copy
  bool lead_current = false;  // it looks up to date (size and mtime): -u would skip it
  bool ambiguous = false;  // another name's copy is another file that looks up to date too
  bool settled = false;    // lead_copy has as many names as SRC's file: waits in settled_
  uint32_t names_in_copy = 0;  // names met whose entry in DST is lead_copy
  nlink_t lead_names = 0;      // lead_copy's own number of names
  JobKind kind = JobKind::File;  // its names' kind, for a waiting name that comes to lead
  nlink_t names_left = 0;        // names not met yet (some may be outside SRC)
  std::optional<Hash128> hash;
  std::vector<uint64_t> waiting;  // job ids parked until the first copy exists
};

struct Signals {
  UniqueFd fd;
  int err = 0;  // of a signalfd that could not be made
  sigset_t watched{};  // those read from fd (not those ignored when pcopy started)
};

// The signals that end or stop the run, blocked and read from a signalfd from before DST is made:
// one that came while it was (a CI job cancelled at once) killed pcopy, no report written, and left
// an empty DST of mode 0700.
Signals watch_signals() {
  Signals out;
  sigset_t mask;
  sigemptyset(&mask);
  // Every signal that would end pcopy outright ends the run as Ctrl-C does (temporaries removed,
  // staged directories revealed, the summary marked interrupted), with status 128 + its number.
  // A signal ignored when pcopy started stays ignored, as it does for cp: nohup's SIGHUP, the
  // SIGINT and SIGQUIT of a job a non-interactive shell started with `&`, a script's `trap '' TERM`.
  auto watch = [&](int sig) {
    struct sigaction was;
    if (::sigaction(sig, nullptr, &was) != 0 || was.sa_handler != SIG_IGN) sigaddset(&mask, sig);
  };
  for (int sig : kEndingSignals) watch(sig);
  for (int sig : kStopSignals) watch(sig);
  // SIGCHLD ignored (inherited so) would have the kernel reap the workers, their statuses lost.
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  ::sigaction(SIGCHLD, &dfl, nullptr);
  sigaddset(&mask, SIGCHLD);
  out.watched = mask;
  ::sigprocmask(SIG_BLOCK, &mask, nullptr);  // to the exit (see the end of Runner::run)
  out.fd.reset(::signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK));
  if (!out.fd) out.err = errno;
  ::signal(SIGPIPE, SIG_IGN);  // a dead worker's pipe gives EPIPE, not death
  // Past `ulimit -f`, a write fails with EFBIG ("File too large", reported for the file, the
  // manifest or stdout) instead of killing the process; the workers inherit this.
  ::signal(SIGXFSZ, SIG_IGN);
  return out;
}

bool stops_the_run(int sig) { return std::find(std::begin(kStopSignals), std::end(kStopSignals), sig) != std::end(kStopSignals); }
// What watch_signals reads but SIGCHLD and the stops.
bool ends_the_run(int sig) { return sig != SIGCHLD && !stops_the_run(sig); }

class Runner {
 public:
  Runner(const Options& o, Target& t, Signals signals)
      : opt_(o), target_(t), sigfd_(std::move(signals.fd)), watched_(signals.watched) {}
  int run();

 private:
  int start_pool();
  int refuse_start(const std::string& line, const std::string& path);
  void produce();
  void handle_walk_event(WalkEvent& ev);
  JobInfo& add_job(DirNode* dir, Job job, std::optional<std::pair<dev_t, ino_t>> link_key = {});
  void seal();
  // A hard link whose group's copy is done, gathered with others into the same directory; all go
  // out when the walk is over or a worker is idle (see ready_links_).
  void add_ready_link(DirNode* dir, Job job, std::pair<dev_t, ino_t> group, bool leads = false);
  void flush_ready_links();
  void dispatch();
  // Where in the queue the next batch to send is: the first but for chunks of files that have
  // as many workers as they may (chunk_allowed), or queue_.size().
  size_t next_to_send();
  bool chunk_allowed(const PendingBatch& pb, size_t filling);
  size_t chunks_in_flight(ChunkedFile& cf);
  // The least loaded worker with room for another batch, or -1. A heavy batch (a big file, a
  // chunk) waits for a worker with fewer than two batches: big work is handed out on demand.
  int pick_worker(bool heavy = false) const;
  bool idle_worker() const;
  void poll_once(int timeout_ms);
  void heard_from(size_t w);
  void name_silent_workers();
  void read_worker(size_t w);
  void on_result(size_t w, const Result& r);
  void settle(const Result& r);
  void note_deleted(const std::string& path);
  void on_progress(size_t w, const Progress& p);
  void requeue(JobInfo& info);
  void on_worker_gone(size_t w, bool said = false);
  void replace_worker(size_t w, const std::string& why);
  void handle_frames(size_t w, bool abandoned_too);
  bool drain_results(size_t w);
  void collect_results(int timeout_ms);
  void remove_temps_of(pid_t pid, const std::vector<DirNode*>& dirs);
  void on_signal();
  void suspend(int sig);
  void sample_rates(double t);
  void before_terminal_write(int fd);
  void finish_link_group(const JobInfo& info, const Result& r);
  void lead_with_next(std::pair<dev_t, ino_t> key, LinkGroup& group);
  void decide_link_groups(size_t keep, size_t keep_led, size_t keep_settled);
  bool is_symlink(const JobInfo& info) const;
  void flush_failed(const std::string& path, int err);
  void complete(JobInfo& info, const Result& r, uint64_t bytes);
  bool should_chunk(const struct stat& st) const;
  void start_chunks(JobInfo& begin, const Result& r);
  void chunk_done(const JobInfo& info, const Result& r);
  void end_done(JobInfo& info, const Result& r);
  void fail_chunked(uint64_t file);
  void remove_dst_temp(DirNode* dir, const std::string& temp);
  int rename_dst_temp(DirNode* dir, const std::string& from, const std::string& to);
  void stop_dispatching();
  bool work_left() const;
  void stop_if_all_would_fail(int err, bool own_mount);
  void drop(uint64_t id);
  void release(DirNode* dir) {
    if (walker_) walker_->release(dir);
  }
  std::string rel(const JobInfo& info) const;
  std::string rel(DirNode* dir, const std::string& name) const;

  void error(const std::string& rel, const std::string& reason);
  // A copy that stands without a piece of its source's metadata: an error too (exit status 1).
  void unkept(const std::string& rel, const Unkept& u);
  void report_error(const std::string& line, const std::string& rel, const std::string& reason);
  void warning(const std::string& rel, const std::string& text);
  void vanished(const JobInfo& info, Vanished what);
  std::pair<DirNode*, bool> gone_dir(DirNode* dir) const;
  int say(const std::string& line);  // stderr, above the bar; 0 or the errno of a failed write
  int write_watching(int fd, std::string_view text, bool pipe);
  // Colours a line for a terminal (SGR code, e.g. "31" red), unless NO_COLOR is set.
  std::string paint(const char* sgr, const std::string& line) const {
    return color_ ? fmt::format("\x1b[{}m{}\x1b[0m", sgr, line) : line;
  }
  void out_line(const std::string& line); // stdout; with --json stderr, so the report is all stdout holds
  void flush_out();
  void write_out(std::string_view text);   // to stdout, until a write to it fails
  void tick(bool force);
  ProgressState progress_state() const;
  int timeout_ms() const;
  void run_delete();
  int finish();

  const Options& opt_;
  Target& target_;
  std::optional<Walker> walker_;
  std::optional<Pool> pool_;
  UniqueFd sigfd_;
  sigset_t watched_{};  // the signals read from sigfd_ (not those ignored when pcopy started)

  std::unordered_map<uint64_t, JobInfo> jobs_;  // every job not yet answered: queued or sent
  std::string frame_;                            // dispatch(): a batch's frame, its buffer reused
  // What a worker's pipe gives in one read, fed to its reader at once (not on the stack: a parent
  // under `ulimit -s 64` died of it).
  std::vector<char> read_buf_ = std::vector<char>(64 * 1024);
  std::deque<PendingBatch> queue_;
  PendingBatch current_;
  // Hard links by directory: a group's copy done releases its names into directories all over the
  // tree, and each added alone had made a batch of one (and cut the walk's batch short), at a
  // message, two opened directories and a result each: 200,000 pairs took longer than cp -a.
  std::unordered_map<DirNode*, PendingBatch> ready_links_;
  std::vector<std::deque<size_t>> batch_left_;  // per worker: unanswered jobs of each batch sent, oldest first
  std::vector<std::deque<uint64_t>> sent_;      // per worker: ids in the order it works on them
  std::map<std::pair<dev_t, ino_t>, LinkGroup> links_;
  std::unordered_map<uint64_t, ChunkedFile> chunked_;  // by FileBegin job id
  uint64_t next_id_ = 1;
  size_t window_ = 0;
  bool walk_done_ = false;
  bool stopping_ = false;  // --fail-fast, full disk: no new work
  int interrupted_ = 0;    // the signal that stopped us
  int stop_err_ = 0;      // what stopped it: ENOSPC, EDQUOT (a full disk or quota), EROFS
  bool abandon_ = false;   // interrupted, --fail-fast error, or no worker can run: stop the workers now
  bool dst_stuck_ = false;  // abandoned with workers stuck in I/O: DST is left as it is
  std::vector<uint64_t> answered_;  // per worker: results since it was started
  std::vector<uint64_t> reporting_; // per worker: the job its last Progress message was about
  // Per worker: when it last sent anything, or was given work while it held none; and whether its
  // silence since has been told (see name_silent_workers).
  std::vector<double> heard_;
  std::vector<bool> silence_told_;
  double silent_after_s_ = kSilentWorkerS;
  int startup_deaths_ = 0;          // workers in a row that died before answering anything

  Stats stats_;
  uint64_t files_total_ = 0, bytes_total_ = 0, files_done_ = 0, bytes_done_ = 0;
  double start_ = now_s();
  double last_draw_ = 0;
  double last_out_ = 0;  // when stdout_buf_ was last written
  double last_manifest_ = 0;  // when the manifest's lines were last written
  RateMeter meter_;
  RateMeter work_meter_;  // work_of(files, bytes): for the ETA
  std::optional<BarRenderer> bar_;
  bool status_lines_ = false;
  bool stdout_tty_ = false;
  bool stderr_tty_ = false;
  bool stdout_pipe_ = false;  // a pipe or socket: written PIPE_BUF at a time (write_watching)
  bool stderr_pipe_ = false;
  bool color_ = false;
  bool stat_entries_ = true;
  // -u: workers bring skipped entries' metadata up to date from the walk's stat (Job::Meta).
  const bool refresh_skipped_ = opt_.update && !opt_.ignore_existing && !opt_.dry_run;
  // -a -u into a DST that was there: a hard-link group's first name met may be new (a link added
  // in SRC) while another has its copy in DST already. See handle_walk_event. Not with
  // --ignore-existing, for which what DST has at a name may be anything (finish_link_group).
  bool defer_new_links_ = false;
  std::deque<std::pair<dev_t, ino_t>> undecided_;  // groups in that state, oldest first
  size_t undecided_names_ = 0;  // their names, waiting outside the window (jobs_ holds them)
  std::deque<std::pair<dev_t, ino_t>> led_;  // those of them with a name whose copy is in DST
  size_t led_names_ = 0;  // the names waiting in those
  std::deque<std::pair<dev_t, ino_t>> settled_;  // those whose copy has SRC's number of names
  size_t settled_names_ = 0;
  // The names waiting in groups like `group`, which has a lead: settled_names_ or led_names_.
  size_t& led_count(const LinkGroup& group) { return group.settled ? settled_names_ : led_names_; }
  bool chunk_ = true;  // big files are split for several workers (chunking_helps DST)
  bool in_memory_ = false;  // DST is in_memory_fs(): the CPU is the limit (chunk_allowed)
  size_t cpus_ = 1;         // that this process may run on
  Manifest manifest_;
  std::string stdout_buf_;
  int stdout_err_ = 0;  // the first failed write to stdout: reported at the end, an error of the run
  int lines_err_ = 0;   // the same for -v and -n lines sent to stderr (with --json)
};

std::string Runner::rel(DirNode* dir, const std::string& name) const {
  if (!walker_) return name;
  return walker_->rel_path(dir, name);
}

std::string Runner::rel(const JobInfo& info) const { return rel(info.dir, info.job.name); }

int Runner::say(const std::string& line) {
  flush_out();  // `> log 2>&1`: the paths copied before an error come before it
  if (stderr_tty_) before_terminal_write(STDERR_FILENO);
  if (bar_) bar_->clear();
  std::string text = line + "\n";
  return write_watching(STDERR_FILENO, text, stderr_pipe_);
}

// Writes to stdout or stderr, watching for signals while the reader is slow: a consumer of -v
// lines that stops reading (a stuck pipe, a suspended pager) must not keep Ctrl-C or SIGTERM from
// ending the run, as it would in a blocking write. Once interrupted, a reader that takes no more
// within kStuckReaderMs loses the rest (the summary and report included): the run still ends.
int Runner::write_watching(int fd, std::string_view text, bool pipe) {
  double gave_up_at = 0;
  while (!text.empty()) {
    pollfd fds[2] = {{fd, POLLOUT, 0}, {sigfd_.get(), POLLIN, 0}};
    int timeout = -1;
    if (interrupted_) {
      if (!gave_up_at) gave_up_at = now_s() + kStuckReaderMs / 1000.0;
      timeout = std::max(0, int((gave_up_at - now_s()) * 1000));
    }
    int n = ::poll(fds, sigfd_ ? 2 : 1, timeout);
    if (n < 0 && errno != EINTR) return errno;
    if (n == 0) return EAGAIN;  // interrupted, and the reader took nothing more (said so at the end)
    if (n < 0) continue;
    if (fds[1].revents & POLLIN) on_signal();
    if (!(fds[0].revents & (POLLOUT | POLLERR | POLLHUP))) continue;
    // Into a pipe with room, up to PIPE_BUF bytes go without blocking.
    ssize_t done = ::write(fd, text.data(), pipe ? std::min<size_t>(text.size(), PIPE_BUF) : text.size());
    if (done < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return errno;
    }
    text.remove_prefix(size_t(done));
  }
  return 0;
}

void Runner::write_out(std::string_view text) {
  if (stdout_tty_ && !text.empty()) before_terminal_write(STDOUT_FILENO);
  if (!stdout_err_) stdout_err_ = write_watching(STDOUT_FILENO, text, stdout_pipe_);
}

void Runner::out_line(const std::string& line) {
  if (opt_.json) {  // stdout is for a JSON parser: -v and -n lines would break it
    // Data as much as on stdout: a failed write is an error of the run, as stdout's is.
    if (int err = say(line); err && !lines_err_) lines_err_ = err;
    return;
  }
  // Into a file or a pipe lines are gathered, one write for many, yet written within kOutInterval:
  // a CI log shows them as they happen, and loses little if the job is killed.
  stdout_buf_ += line;
  stdout_buf_ += '\n';
  if (stdout_tty_ || stdout_buf_.size() >= 64 * 1024 || now_s() - last_out_ >= kOutInterval) flush_out();
}

void Runner::flush_out() {
  last_out_ = now_s();
  if (stdout_buf_.empty()) return;
  if (bar_ && stdout_tty_) bar_->clear();
  write_out(stdout_buf_);
  stdout_buf_.clear();
}

// Whether anything is still to be copied: walked or not yet, queued or held by a worker.
bool Runner::work_left() const {
  return (!walk_done_ && !(walker_ && walker_->exhausted())) || !jobs_.empty() || !queue_.empty();
}

// A failure every other entry would share: a full disk (ENOSPC), quota (EDQUOT), or read-only
// DST (EROFS). pcopy stops handing out work, once, and says so, only where something is left.
// EROFS from a read-only file system mounted inside DST (`own_mount`) is that entry's own.
void Runner::stop_if_all_would_fail(int err, bool own_mount) {
  if (!fails_all(err, own_mount) || !work_left()) return;
  if (!stopping_) {
    say(fmt::format("pcopy: stopping: {} (the remaining entries would fail too)", errno_text(err)));
    // In the report too, as an error of its own (no path at fault): a pipeline reading only the
    // JSON learns that entries were never tried, not just that one failed.
    stats_.errors.add("", fmt::format("stopped: {}: the remaining entries were not copied", errno_text(err)));
    stop_err_ = err;
  }
  stop_dispatching();
}

void Runner::error(const std::string& path, const std::string& reason) {
  report_error(fmt::format("pcopy: cannot copy '{}': {}", display_path(path), reason), path, reason);
}

// --fsync: `path` (in the tree, or a directory made for DST) is in place but not on disk.
void Runner::flush_failed(const std::string& path, int err) {
  report_error(fmt::format("pcopy: cannot flush '{}' to disk: {}", display_path(path), errno_text(err)), path,
               fmt::format("cannot flush to disk: {}", errno_text(err)));
}

void Runner::unkept(const std::string& path, const Unkept& u) {
  std::string what = u.value.empty() ? "the " + u.what : fmt::format("the {} ({})", u.what, display_path(u.value));
  std::string shown = path.empty() ? "." : path;
  report_error(fmt::format("pcopy: cannot keep {} of '{}': {}", what, display_path(shown), errno_text(u.err)), shown,
               fmt::format("cannot keep {}: {}", what, errno_text(u.err)));
}

void Runner::report_error(const std::string& line, const std::string& path, const std::string& reason) {
  say(paint("31", line));
  stats_.errors.add(path, reason);
  if (opt_.fail_fast && !abandon_) {
    // Said as a full disk's stop is, in the report too: one failed entry is not a tree mostly missing.
    if (work_left()) {
      std::string rest = opt_.delete_extraneous ? "the remaining entries were not copied, and nothing was deleted"
                                                : "the remaining entries were not copied";
      say(fmt::format("pcopy: stopping at the first error (--fail-fast): {}", rest));
      stats_.errors.add("", "stopped: --fail-fast: " + rest);
    }
    stop_dispatching();
    abandon_ = true;  // and abandon what the workers hold: nothing more is copied
  }
}

// An entry the walk listed but a worker found gone from SRC, or whose directory it found gone or no
// longer a directory: told once, for the directory that went (see gone_dir), not for every entry
// and subdirectory in it. A directory gone is a warning; one that a file or a link replaced, an
// error, also when the worker found nothing there and the file came after.
void Runner::vanished(const JobInfo& info, Vanished what) {
  if (what == Vanished::Entry) return warning(rel(info), kVanishedEntry);
  if (std::exchange(info.dir->vanish_told, true)) return;
  auto [dir, replaced] = gone_dir(info.dir);
  if (dir != info.dir && std::exchange(dir->vanish_told, true)) return;
  std::string path = walker_->rel_path(dir);
  if (path.empty()) path = ".";
  if (what == Vanished::DirChanged || replaced) return error(path, kChangedType);
  warning(path, kVanishedDir);
}

// The directory that went, of `dir` and those above it: the highest one no longer a directory in
// SRC, and whether something else has its name now. `dir` itself when none is found now (put back
// since).
std::pair<DirNode*, bool> Runner::gone_dir(DirNode* dir) const {
  std::vector<DirNode*> up;
  for (DirNode* d = dir; d->parent; d = d->parent) up.push_back(d);
  const int flags = opt_.dereference ? 0 : AT_SYMLINK_NOFOLLOW;
  for (auto d = up.rbegin(); d != up.rend(); ++d) {
    struct stat st;
    bool found = ::fstatat(target_.src_root.get(), walker_->rel_path(*d).c_str(), &st, flags) == 0;
    if (found && !S_ISDIR(st.st_mode)) return {*d, true};
    if (!found && (errno == ENOENT || errno == ENOTDIR)) return {*d, false};
  }
  return {dir, false};
}

void Runner::warning(const std::string& path, const std::string& text) {
  stats_.warnings.add(path, text);
  if (!opt_.quiet) say(paint("33", fmt::format("pcopy: warning: '{}': {}", display_path(path), text)));
}

// A job that will not be tried, once pcopy stops dispatching: forgotten, but accounted for.
void Runner::drop(uint64_t id) {
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return;
  JobInfo info = std::move(it->second);
  jobs_.erase(it);
  if (info.file) {
    ChunkedFile& cf = chunked_.at(info.file);
    if (!cf.started && !opt_.inplace) {
      // Its temporary made, but never filled: dropped as a file never sent is, once the last of
      // its chunks is. (With --inplace its final name was opened, its mode perhaps changed for
      // the copy: that is reported.)
      if (--cf.chunks_left > 0) return;
      DirNode* dir = cf.begin.dir;
      remove_dst_temp(dir, cf.temp);
      chunked_.erase(info.file);
      return release(dir);
    }
    // Part of a chunked file: the file as a whole fails once its last part is accounted for.
    Result r;
    r.outcome = Outcome::Failed;
    r.detail = "not copied: pcopy stopped before it was complete";
    if (info.job.kind == JobKind::FileEnd) {
      chunked_.at(info.file).chunks_left = 1;
      chunked_.at(info.file).failed = false;
    }
    chunk_done(info, r);
    return;
  }
  release(info.dir);
}

void Runner::stop_dispatching() {
  if (stopping_) return;
  stopping_ = true;
  // Drop what was never sent; directories still get their metadata.
  for (auto& b : queue_)
    for (uint64_t id : b.ids) drop(id);
  queue_.clear();
  for (uint64_t id : current_.ids) drop(id);
  current_ = {};
  for (auto& [dir, batch] : ready_links_)
    for (uint64_t id : batch.ids) drop(id);
  ready_links_.clear();
  for (auto& [key, group] : links_) {
    for (uint64_t id : group.waiting) {
      auto it = jobs_.find(id);
      if (it == jobs_.end()) continue;
      DirNode* dir = it->second.dir;
      jobs_.erase(it);
      release(dir);
    }
    group.waiting.clear();
    group.undecided = false;
  }
  undecided_.clear();
  undecided_names_ = 0;
  led_.clear();
  led_names_ = 0;
  settled_.clear();
  settled_names_ = 0;
}

// Forks the workers; 0, or 2 when not one can be (`ulimit -u`): the run is refused and the
// directories made for DST are removed. With fewer than asked, the run goes on with those.
int Runner::start_pool() {
  std::vector<int> keep{target_.src_root.get(), target_.dst_root.get(), target_.dst_fs.get()};
  const Options& opt = opt_;
  bool has_dst = target_.dst_root.valid(), has_fs = target_.dst_fs.valid();
  pool_.emplace(opt_.jobs, keep, [&opt, has_dst, has_fs](int job_fd, int result_fd) {
    return run_worker(opt, job_fd, result_fd, 5, has_dst ? 6 : -1, has_fs ? 7 : -1);
  });
  if (int err = pool_->start_error()) {
    size_t live = pool_->live();
    if (live == 0) {
      pool_.reset();
      target_.remove_made();
      print_refusal(fmt::format("pcopy: cannot start a worker process: {}", errno_text(err)), "", opt_.json, 0,
                    opt_.dry_run);
      return 2;
    }
    std::string text = fmt::format("started {} of {} worker processes: {}", live, opt_.jobs, errno_text(err));
    stats_.warnings.add("", text);
    if (!opt_.quiet) say(paint("33", "pcopy: warning: " + text));
  }
  batch_left_.assign(pool_->size(), {});
  sent_.assign(pool_->size(), {});
  answered_.assign(pool_->size(), 0);
  reporting_.assign(pool_->size(), 0);
  heard_.assign(pool_->size(), now_s());
  silence_told_.assign(pool_->size(), false);
#ifdef PCOPY_TEST_HOOKS
  if (const char* s = std::getenv("PCOPY_TEST_SILENT_WORKER_S")) silent_after_s_ = std::atof(s);
#endif
  window_ = std::max<size_t>(4096, size_t(opt_.jobs) * kBatchFiles * 4);
  defer_new_links_ = opt_.archive && opt_.update && !opt_.ignore_existing && !target_.single_file &&
                     target_.dst_root.valid() && target_.made_dirs.empty();
  jobs_.reserve(window_ + kEventsPerPoll);  // no rehashing as the window fills
  return 0;
}

JobInfo& Runner::add_job(DirNode* dir, Job job, std::optional<std::pair<dev_t, ino_t>> link_key) {
  if (current_.dir != dir && !current_.ids.empty()) seal();
  current_.dir = dir;
  job.id = next_id_++;
  // The bar counts a hard-linked file's data once, by the name copied: the others move none.
  if (job.kind != JobKind::HardLink) bytes_total_ = add_saturating(bytes_total_, job.size);
  uint64_t bytes = weight(job);
  current_.ids.push_back(job.id);
  current_.bytes += bytes;
  JobInfo& info = jobs_.emplace(job.id, JobInfo{dir, std::move(job), -1, 0, link_key}).first->second;
  if (current_.ids.size() >= kBatchFiles || current_.bytes >= kBatchBytes) seal();
  return info;
}

void Runner::seal() {
  if (current_.ids.empty()) return;
  queue_.push_back(std::move(current_));
  current_ = {};
}

// A job of a hard-link group for `dir`, batched with others for it: a name to link, or (`leads`) the
// name that leads a group decided after the walk left its directory (add_job would send it in a
// batch of its own).
void Runner::add_ready_link(DirNode* dir, Job job, std::pair<dev_t, ino_t> group, bool leads) {
  job.id = next_id_++;
  if (leads) bytes_total_ = add_saturating(bytes_total_, job.size);
  PendingBatch& batch = ready_links_[dir];
  batch.dir = dir;
  batch.ids.push_back(job.id);
  batch.bytes += weight(job);
  JobInfo& info = jobs_.emplace(job.id, JobInfo{dir, std::move(job), -1, 0, {}}).first->second;
  if (leads) info.link_key = group;
  else info.member_of = group;  // for its manifest line
  if (batch.ids.size() >= kBatchFiles || batch.bytes >= kBatchBytes) {
    queue_.push_back(std::move(batch));
    ready_links_.erase(dir);
  }
}

void Runner::flush_ready_links() {
  for (auto& [dir, batch] : ready_links_) queue_.push_back(std::move(batch));
  ready_links_.clear();
}

void Runner::handle_walk_event(WalkEvent& ev) {
  switch (ev.type) {
    case WalkEvent::Type::Dir: {
      if (!ev.created) return;
      ++stats_.dirs_created;
      if (opt_.dry_run || opt_.verbose)
        out_line((opt_.dry_run ? "copy " : "") + display_path(rel(ev.dir, ev.name)) + "/");
      return;
    }
    case WalkEvent::Type::Error: {
      std::string path = rel(ev.dir, ev.name);
      error(path.empty() ? "." : path, ev.detail.empty() ? errno_text(ev.err) : ev.detail);
      stop_if_all_would_fail(ev.err, ev.own_mount);  // a directory DST has no room for
      return;
    }
    case WalkEvent::Type::Warning: {
      std::string path = rel(ev.dir, ev.name);
      warning(path.empty() ? "." : path, ev.detail);
      return;
    }
    case WalkEvent::Type::Entry: break;
  }
  Job job;
  job.kind = kind_of(ev.st.st_mode);
  job.name = std::move(ev.name);
  if (stat_entries_) {
    job.known_from(ev.st, refresh_skipped_);
  } else {
    job.size = job.kind == JobKind::File ? uint64_t(ev.st.st_size) : 0;
    job.mtime_ns = to_ns(ev.st.st_mtim);
  }
  if (job.kind == JobKind::File && job.known && should_chunk(ev.st)) job.kind = JobKind::FileBegin;
  ++files_total_;
  if (opt_.archive && ev.st.st_nlink > 1) {
    auto key = std::make_pair(ev.st.st_dev, ev.st.st_ino);
    auto [it, first] = links_.try_emplace(key);
    LinkGroup& group = it->second;
    group.symlink = S_ISLNK(ev.st.st_mode);
    auto wait = [&](Job waiting) {
      waiting.kind = JobKind::HardLink;
      waiting.id = next_id_++;
      group.waiting.push_back(waiting.id);
      JobInfo info{ev.dir, std::move(waiting)};
      info.member_of = key;
      jobs_.emplace(info.job.id, std::move(info));
    };
    // A name of a group may be met before the name whose copy is in DST (a link added in SRC,
    // listed first): copying it would write the data again, as a new inode, and link every other
    // name to that. And a name that SRC made another name of a file may still have its old copy in
    // DST, as a file of its own: if it led, skipped as up to date (the same size and mtime), the
    // copies of the file's other names would be replaced by links to that stale copy. So, with -u
    // into an existing DST, the names of a group wait until all are met (or too many names wait,
    // or the walk ends: decide_link_groups); then the first with a copy in DST leads (skipped if up
    // to date, the others linked to it), or the first met is copied. Groups with a copy in DST wait
    // apart from those with none, at most kMaxLedNames names of them: names of a group further apart
    // are not seen together, and the name whose copy is in DST leads alone. A copy whose inode has
    // as many names as SRC's file, the group as the last run left it as far as the count tells,
    // waits too, in a window of its own (kMaxSettledNames), where it led at once: the count may be
    // a coincidence (QQQ: `ln -f a t`, t's copy linked to b's, a and b of the same size and mtime),
    // and a was linked to b's data, exit 0, for good. Waiting costs an unchanged run on 10,000 files
    // of five names each about 18% more time (0.293 s against 0.249 s).
    if (defer_new_links_ && (first || group.undecided)) {
      struct stat there;
      // A copy there: an entry of the source's type (a directory at the name is no copy of it).
      bool in_dst = ev.dir && !ev.dir->fresh && ev.dir->dst &&
                    ::fstatat(ev.dir->dst.get(), job.target().c_str(), &there, AT_SYMLINK_NOFOLLOW) == 0 &&
                    (there.st_mode & S_IFMT) == (ev.st.st_mode & S_IFMT);
      if (first) {
        group.kind = job.kind;
        group.names_left = ev.st.st_nlink;
        group.undecided = true;
        undecided_.push_back(key);
      }
      --group.names_left;
      wait(std::move(job));
      ++undecided_names_;
      if (group.lead) ++led_count(group);
      if (in_dst) {
        bool current = there.st_size == ev.st.st_size && same_mtime(there, to_ns(ev.st.st_mtim), false);
        std::pair<dev_t, ino_t> copy{there.st_dev, there.st_ino};
        if (!group.lead) {
          group.lead = group.waiting.back();
          group.lead_copy = copy;
          group.lead_current = current;
          group.names_in_copy = 1;
          group.lead_names = there.st_nlink;
          group.settled = there.st_nlink == ev.st.st_nlink;
          led_count(group) += group.waiting.size();
          (group.settled ? settled_ : led_).push_back(key);
        } else if (copy == group.lead_copy) {
          ++group.names_in_copy;
        } else if (current && group.lead_current) {
          group.ambiguous = true;
        }
      }
      if (group.names_left == 0) lead_with_next(key, group);
      decide_link_groups(kMaxUndecidedNames, kMaxLedNames, kMaxSettledNames);
      return;
    }
    if (!first) {
      job.kind = JobKind::HardLink;
      if (group.done) {
        job.link_target = group.first;
        job.want_hash = manifest_.is_open() && !group.hash;
        add_job(ev.dir, std::move(job)).member_of = key;
      } else {
        wait(std::move(job));
      }
      return;
    }
    add_job(ev.dir, std::move(job), key);
    return;
  }
  add_job(ev.dir, std::move(job));
}

// The first name waiting in `group` leads it: copied, the others linked to it. Also when the
// group's first copy failed.
void Runner::lead_with_next(std::pair<dev_t, ino_t> key, LinkGroup& group) {
  if (group.undecided) {
    undecided_names_ -= group.waiting.size();
    if (group.lead) led_count(group) -= group.waiting.size();
  }
  group.undecided = false;
  if (group.waiting.empty()) return;
  // The first name with a copy in DST; but where two names' copies are different files that both
  // look up to date, which holds SRC's data cannot be told without reading them: the first name
  // met is copied anew, as a worker's retry is (Job::attempt), and the others linked to it. So
  // too where the copy that looks up to date has names outside the group while some of the
  // group's are not on it: the name SRC relinked may have left a third file's copy there (SSS:
  // `ln -f a t` with a new, or since rewritten, to t's old file's size and mtime).
  if (group.lead && group.lead_current && group.names_in_copy < group.lead_names &&
      group.waiting.size() > group.names_in_copy)
    group.ambiguous = true;
  auto pos = group.waiting.begin();
  if (group.lead && !group.ambiguous) pos = std::find(group.waiting.begin(), group.waiting.end(), *group.lead);
  if (pos == group.waiting.end()) pos = group.waiting.begin();
  // The copy's names outside the group, if it has more than the group's names met: its mode,
  // owner or attributes, if they are to change, are given to a new copy, not written through.
  uint32_t names_in_copy = group.lead && !group.ambiguous && *pos == *group.lead ? group.names_in_copy : 0;
  uint64_t id = *pos;
  group.waiting.erase(pos);
  JobInfo& next = jobs_.at(id);
  DirNode* dir = next.dir;
  Job job = std::move(next.job);
  jobs_.erase(id);
  job.kind = group.kind;  // a name of the same inode: a file, symlink, FIFO or device
  job.names_in_copy = names_in_copy;
  if (group.ambiguous) job.attempt = 2;
  group.lead.reset();  // taken (a next leader, if this one fails, is the first waiting)
  group.ambiguous = false;
  group.settled = false;
  group.names_in_copy = 0;
  if (dir == current_.dir || job.kind == JobKind::FileBegin) add_job(dir, std::move(job), key);
  else add_ready_link(dir, std::move(job), key, true);
}

// Undecided groups, oldest first, are led as if all their names had been met (see lead_with_next):
// those with a name whose copy is in DST beyond the `keep_led` names waiting in them (`keep_settled`
// in those whose copy has SRC's number of names), the others beyond `keep` (all of them at the
// walk's end).
void Runner::decide_link_groups(size_t keep, size_t keep_led, size_t keep_settled) {
  for (auto [queue, names, keep_names] : {std::tuple{&led_, &led_names_, keep_led},
                                          std::tuple{&settled_, &settled_names_, keep_settled}}) {
    while (*names > keep_names && !queue->empty()) {
      auto key = queue->front();
      queue->pop_front();
      auto it = links_.find(key);
      if (it != links_.end() && it->second.undecided && it->second.lead) lead_with_next(key, it->second);
    }
    if (*names == 0) queue->clear();
  }
  while (undecided_names_ - led_names_ - settled_names_ > keep && !undecided_.empty()) {
    auto key = undecided_.front();
    undecided_.pop_front();
    auto it = links_.find(key);
    if (it != links_.end() && it->second.undecided && !it->second.lead) lead_with_next(key, it->second);
  }
  if (undecided_names_ == 0) undecided_.clear();
}

void Runner::produce() {
  int budget = kEventsPerPoll;
  while (!walk_done_ && !stopping_ && jobs_.size() - undecided_names_ < window_ && budget-- > 0) {
    std::optional<WalkEvent> ev = walker_->next();
    if (!ev) {
      decide_link_groups(0, 0, 0);
      walk_done_ = true;
      break;
    }
    handle_walk_event(*ev);
    // Idle workers get work at once rather than after a full batch, though not one job at a time:
    // a batch has costs of its own (two io_uring submissions, a result message).
    if (queue_.empty() && current_.ids.size() >= kEarlyBatchFiles && idle_worker()) {
      seal();
      dispatch();
    }
  }
  // A partial batch goes out when the walk is over, when it is worth a message, or when a worker
  // has nothing at all; not at every call, or a full window (one job admitted per result) would
  // send one job per batch.
  if (walk_done_ || current_.ids.size() >= kEarlyBatchFiles || idle_worker()) seal();
  if (walk_done_ || idle_worker()) flush_ready_links();
}

int Runner::pick_worker(bool heavy) const {
  int best = -1;
  size_t best_load = SIZE_MAX;
  for (size_t i = 0; i < pool_->size(); ++i) {
    const auto& batches = batch_left_[i];
    size_t load = 0;
    for (size_t n : batches) load += n;
    bool room = batches.size() < kBatchesPerWorker ||
                (!heavy && batches.size() < kMaxBatchesPerWorker && load < kBatchFiles);
    if (pool_->slot(i).pid > 0 && room && load < best_load) {
      best = int(i);
      best_load = load;
    }
  }
  return best;
}

bool Runner::idle_worker() const {
  for (size_t i = 0; i < pool_->size(); ++i)
    if (pool_->slot(i).pid > 0 && batch_left_[i].empty()) return true;
  return false;
}

// Where the CPU is the limit (tmpfs), a file's chunks go to at most twice as many workers at a time
// as there are CPUs, shared between the files begun: writes to one file take turns on its
// inode lock, so while one worker writes, another can only read its chunk, and more workers than
// that only spin on the lock. Measured on 2 CPUs: 4 x 512 MiB with -j8, 0.56 s with two workers on
// each file at once, 0.46 s with one; one 2 GiB file, 0.72 s with two, 0.70 s with four.
//
// And anywhere, no more files are filled at once than there are workers, as when each was copied
// whole: a worker hands back every big file of its batch at once, each with its temporary made, and
// all of them filling together meant a full disk failed them all (the rest, never begun, are
// dropped as any file never sent is). With fewer (as many as CPUs), 4 x 512 MiB with -j8 took
// 0.72 s against 0.56 s.
bool Runner::chunk_allowed(const PendingBatch& pb, size_t filling) {
  const JobInfo& info = jobs_.at(pb.ids[0]);
  if (info.job.kind != JobKind::FileChunk) return true;
  ChunkedFile& cf = chunked_.at(info.file);
  if (!cf.started) return filling < pool_->size();
  if (!in_memory_) return true;
  size_t most = std::max<size_t>(1, 2 * cpus_ / chunked_.size());
  return chunks_in_flight(cf) < most;
}

size_t Runner::chunks_in_flight(ChunkedFile& cf) {
  std::erase_if(cf.sent, [&](uint64_t id) {
    auto it = jobs_.find(id);
    return it == jobs_.end() || it->second.worker < 0 || !pool_->slot(size_t(it->second.worker)).held.contains(id);
  });
  return cf.sent.size();
}

size_t Runner::next_to_send() {
  auto started = [](const auto& kv) { return kv.second.started; };
  size_t filling = size_t(std::count_if(chunked_.begin(), chunked_.end(), started));
  size_t i = 0;
  while (i < queue_.size() && !chunk_allowed(queue_[i], filling)) ++i;
  return i;
}

void Runner::dispatch() {
  while (!queue_.empty() && !abandon_) {
    size_t i = next_to_send();
    if (i == queue_.size()) return;
    // A batch whose directory's path is long (a chain tens of thousands of levels deep) is as
    // heavy as its data: the parent holds the messages in flight, the workers read them whole.
    const PendingBatch& next = queue_[i];
    int w = pick_worker(next.bytes >= kBatchBytes || (next.dir && next.dir->path_len >= kLongDirPath));
    if (w < 0) return;
    PendingBatch pb = std::move(queue_[i]);
    queue_.erase(queue_.begin() + long(i));
    Batch batch;
    batch.dir = walker_ ? walker_->rel_path(pb.dir) : std::string();
    if (walker_ && pb.dir) {
      batch.facts = pb.dir->facts;
      if (pb.dir->facts.staged) batch.dst_dir = walker_->dst_rel_path(pb.dir);
    }
    WorkerSlot& slot = pool_->slot(size_t(w));
    if (slot.held.empty()) heard_from(size_t(w));  // its silence counts from now
    // The jobs are lent to the batch for its encoding, not copied: a copy is a few allocations
    // per file, on the one process that all the workers wait for.
    std::vector<JobInfo*> infos;
    infos.reserve(pb.ids.size());
    batch.jobs.reserve(pb.ids.size());
    for (uint64_t id : pb.ids) {
      JobInfo& info = jobs_.at(id);
      info.worker = w;
      info.alone = pb.ids.size() == 1;
      slot.held.insert(id);
      sent_[size_t(w)].push_back(id);
      if (info.job.kind == JobKind::FileChunk) {
        ChunkedFile& cf = chunked_.at(info.file);
        cf.sent.push_back(id);
        cf.started = true;
      }
      batch.jobs.push_back(std::move(info.job));
      infos.push_back(&info);
    }
    batch_left_[size_t(w)].push_back(pb.ids.size());
    encode(frame_, batch);
    for (size_t i = 0; i < infos.size(); ++i) infos[i]->job = std::move(batch.jobs[i]);
    pool_->send(size_t(w), frame_);
    frame_.clear();
  }
}

// A job a worker gave back unstarted goes to the front of the queue, joined with its neighbours.
void Runner::requeue(JobInfo& info) {
  if (stopping_) return drop(info.job.id);  // given back after a full disk or --fail-fast: not to be tried
  info.worker = -1;
  if (!queue_.empty() && queue_.front().dir == info.dir && queue_.front().ids.size() < kBatchFiles &&
      queue_.front().requeued) {
    queue_.front().ids.push_back(info.job.id);
    return;
  }
  PendingBatch b{info.dir, {info.job.id}, 0};
  b.requeued = true;
  queue_.push_front(std::move(b));
}

void Runner::on_progress(size_t w, const Progress& p) {
  reporting_[w] = p.id;
  auto it = jobs_.find(p.id);
  if (it == jobs_.end()) return;
  it->second.reported += p.bytes;
  bytes_done_ = add_saturating(bytes_done_, p.bytes);
}

void Runner::on_result(size_t w, const Result& r) {
  auto it = jobs_.find(r.id);
  if (it == jobs_.end()) return;
  pool_->slot(w).held.erase(r.id);
  ++answered_[w];
  auto& left = batch_left_[w];
  if (!left.empty() && --left.front() == 0) left.pop_front();
  auto& sent = sent_[w];
  while (!sent.empty() && !pool_->slot(w).held.count(sent.front())) sent.pop_front();
  if (r.outcome == Outcome::Deferred) return requeue(it->second);
  settle(r);
}

// The answer to a job: from its worker, or from the parent for a job that kills workers.
void Runner::settle(const Result& r) {
  auto it = jobs_.find(r.id);
  if (it == jobs_.end()) return;
  for (const std::string& path : r.deleted) note_deleted(path);  // a directory made way for a file
  for (const Unkept& u : r.unkept) unkept(rel(it->second), u);

  JobInfo info = std::move(it->second);
  jobs_.erase(it);
  bytes_done_ = add_saturating(bytes_done_, r.bytes >= info.reported ? r.bytes - info.reported : 0);
  if (r.outcome == Outcome::Split) {
    // The worker found the file big: from here on it is copied like a FileBegin.
    bytes_total_ = add_saturating(bytes_total_, r.size - std::min(r.size, info.job.size));
    info.job.size = r.size;
    info.job.mtime_ns = r.mtime_ns;
    Result begun = r;
    begun.outcome = Outcome::Copied;
    return start_chunks(info, begun);
  }

  switch (info.job.kind) {
    case JobKind::FileChunk: return chunk_done(info, r);
    case JobKind::FileEnd: return end_done(info, r);
    case JobKind::FileBegin:
      if (r.outcome == Outcome::Copied || r.outcome == Outcome::Replaced) return start_chunks(info, r);
      break;
    default: break;
  }
  // -n -u: a worker finds another name of a group linked to the copy already, but the real run
  // copies the first name anew (a new inode), then links this one to it again.
  if (opt_.dry_run && !opt_.ignore_existing && r.outcome == Outcome::Skipped && info.member_of) {
    auto group = links_.find(*info.member_of);
    if (group != links_.end() && group->second.anew) {
      Result relinked = r;
      relinked.outcome = Outcome::Replaced;
      return complete(info, relinked, r.bytes);
    }
  }
  complete(info, r, r.bytes);
}

// Whether the entry is a symlink: a hard link's own job says only that it is another name.
bool Runner::is_symlink(const JobInfo& info) const {
  if (info.job.kind == JobKind::Symlink) return true;
  auto group = info.member_of ? links_.find(*info.member_of) : links_.end();
  return group != links_.end() && group->second.symlink;
}

// The final word on one entry: counts, messages, manifest, hard-link group, directory.
void Runner::complete(JobInfo& info, const Result& r, uint64_t bytes) {
  ++files_done_;
  // What is not copied leaves the total: a finished run ends at 100%, and the ETA counts only what
  // is left (-u skips most of a nightly run's bytes).
  if ((r.outcome == Outcome::Skipped || r.outcome == Outcome::Failed) && info.job.kind != JobKind::HardLink)
    bytes_total_ -= std::min(bytes_total_, info.job.size > bytes ? info.job.size - bytes : 0);
  auto path = [&] { return rel(info); };  // built only when printed: not for every file
  // Where the copy is: not the source's name for a single file copied to another (`pcopy a b`).
  auto dst_path = [&] { return rel(info.dir, info.job.target()); };
  switch (r.outcome) {
    case Outcome::Failed:
      if (walker_ && r.vanished != Vanished::No) {
        vanished(info, r.vanished);
      } else if (!walker_) {  // a single file: both its paths, as either side may be at fault
        report_error(fmt::format("pcopy: cannot copy '{}' to '{}': {}", display_path(opt_.src),
                                 display_path(target_.dst_file), reason_of(r)),
                     dst_path(), reason_of(r));  // the copy's name, as -v and --manifest give it
      } else {
        error(path(), reason_of(r));
      }
      if (walker_) walker_->forget(info.dir, info.job.target());
      stop_if_all_would_fail(r.err, r.own_mount);
      break;
    case Outcome::Skipped:
      ++stats_.files_skipped;
      if (opt_.dry_run) out_line("skip " + display_path(dst_path()));
      break;
    case Outcome::Copied:
    case Outcome::Replaced:
      if (is_symlink(info)) {
        ++stats_.links_copied;
      } else {
        ++stats_.files_copied;
      }
      stats_.bytes_copied = add_saturating(stats_.bytes_copied, bytes);
      if (opt_.dry_run) {
        out_line((r.outcome == Outcome::Replaced ? "replace " : "copy ") + display_path(dst_path()));
      } else if (opt_.verbose) {
        out_line(display_path(dst_path()));
      }
      if (manifest_.is_open()) {
        std::optional<Hash128> hash = r.hash;
        if (!hash && info.member_of) {
          // A hard link has the contents of its group's first copy.
          auto group = links_.find(*info.member_of);
          if (group != links_.end()) {
            if (!group->second.hash) group->second.hash = r.hash;  // hashed by the worker (want_hash)
            hash = group->second.hash;
          }
        }
        if (hash) manifest_.add(dst_path(), r.size, r.mtime_ns, *hash);
      }
      break;
    case Outcome::Split:
    case Outcome::Deferred: break;  // handled in on_result, never final
  }
  if (info.link_key) finish_link_group(info, r);
  release(info.dir);
}

bool Runner::should_chunk(const struct stat& st) const {
  // Hashing (--verify, --manifest) reads the file in order; a sparse file is copied by extents.
  return chunk_ && opt_.jobs > 1 && uint64_t(st.st_size) >= kChunkThreshold && !opt_.dry_run && !opt_.verify &&
         opt_.manifest.empty() && uint64_t(st.st_blocks) * 512 >= uint64_t(st.st_size);
}

// FileBegin made the temporary: hand out the chunks, first in the queue, one per batch, so every
// idle worker takes a piece. With several big files under way their chunks alternate, so that
// workers write different files: writes to one file serialise on its inode lock, and two workers
// contending for it burn twice the CPU for the same bytes.
void Runner::start_chunks(JobInfo& begin, const Result& r) {
  uint64_t file = begin.job.id;
  if (stopping_) {
    // Begun as pcopy stopped (--fail-fast, a full disk): it will not be filled. Its temporary goes
    // and it is dropped, as a file never sent is; with --inplace, whose final name was opened and
    // its mode perhaps changed for the copy, it is reported.
    if (!opt_.inplace) {
      remove_dst_temp(begin.dir, r.temp);
      return release(begin.dir);
    }
    Result failed = r;
    failed.outcome = Outcome::Failed;
    failed.err = 0;
    failed.detail = "not copied: pcopy stopped before it was complete";
    return complete(begin, failed, 0);
  }
  std::string temp = r.temp;
  if (!opt_.inplace) {
    // The temporary is renamed after the parent, which outlives the workers: named after the
    // worker that made it, it would be a leftover to a second run into DST once that worker died,
    // while the others still write it. Its number holds the run's, as every temporary's does.
    bool secret = begin.dir && begin.dir->facts.hides_names;
    temp = fmt::format("{}{}-{}{}", kTempPrefix, ::getpid(), temp_number(secret_count(secret, file)), kTempSuffix);
    if (int err = rename_dst_temp(begin.dir, r.temp, temp)) {
      remove_dst_temp(begin.dir, r.temp);
      Result failed = r;
      failed.outcome = Outcome::Failed;
      failed.err = err;
      return complete(begin, failed, 0);
    }
  }
  begin.job.src_dev = r.src_dev;  // every chunk and the End check that they read this file
  begin.job.src_ino = r.src_ino;
  begin.job.dst_dev = r.dst_dev;  // and write this one
  begin.job.dst_ino = r.dst_ino;
  ChunkedFile& cf = chunked_[file];
  cf.begin = begin;
  cf.outcome = r.outcome;
  cf.temp = temp;
  std::vector<PendingBatch> batches;
  for (uint64_t off = 0; off < begin.job.size; off += kChunkBytes) {
    Job c;
    c.id = next_id_++;
    c.kind = JobKind::FileChunk;
    c.name = begin.job.name;
    c.dst_name = begin.job.dst_name;
    c.temp = temp;
    c.offset = off;
    c.length = std::min(kChunkBytes, begin.job.size - off);
    c.src_dev = begin.job.src_dev;
    c.src_ino = begin.job.src_ino;
    c.dst_dev = begin.job.dst_dev;
    c.dst_ino = begin.job.dst_ino;
    JobInfo ci{begin.dir, std::move(c)};
    ci.file = file;
    batches.push_back(PendingBatch{begin.dir, {ci.job.id}, ci.job.length});
    jobs_.emplace(ci.job.id, std::move(ci));
    ++cf.chunks_left;
  }
  auto is_chunk = [&](const PendingBatch& pb) { return jobs_.at(pb.ids[0]).job.kind == JobKind::FileChunk; };
  size_t pos = 0;
  for (PendingBatch& pb : batches) {
    if (pos < queue_.size() && is_chunk(queue_[pos])) ++pos;  // after the next chunk of another file
    queue_.insert(queue_.begin() + long(pos++), std::move(pb));
  }
}

void Runner::chunk_done(const JobInfo& info, const Result& r) {
  ChunkedFile& cf = chunked_.at(info.file);
  cf.bytes += r.bytes;
  if (r.outcome == Outcome::Failed && !cf.failed) {
    cf.failed = true;
    cf.failure = r;
    // --inplace: its final name holds part of the new data already. Not a vanished source's
    // warning, whose DST is as it was, but an error.
    if (opt_.inplace) cf.failure.vanished = Vanished::No;
  }
  if (--cf.chunks_left > 0) return;
  if (cf.failed) return fail_chunked(info.file);
  Job end = cf.begin.job;
  end.id = next_id_++;
  end.kind = JobKind::FileEnd;
  end.temp = cf.temp;
  end.attempt = 0;
  JobInfo ei{cf.begin.dir, std::move(end)};
  ei.file = info.file;
  queue_.push_front(PendingBatch{ei.dir, {ei.job.id}, 0});
  jobs_.emplace(ei.job.id, std::move(ei));
}

void Runner::end_done(JobInfo& info, const Result& r) {
  ChunkedFile cf = std::move(chunked_.at(info.file));
  chunked_.erase(info.file);
  if (r.outcome == Outcome::Failed) remove_dst_temp(cf.begin.dir, cf.temp);
  Result final = r;
  if (final.outcome != Outcome::Failed) final.outcome = cf.outcome;
  if (opt_.inplace) final.vanished = Vanished::No;  // as in chunk_done
  complete(cf.begin, final, cf.bytes);
}

// Some part of a chunked file failed (or was never sent): drop the temporary, report the file.
void Runner::fail_chunked(uint64_t file) {
  ChunkedFile cf = std::move(chunked_.at(file));
  chunked_.erase(file);
  remove_dst_temp(cf.begin.dir, cf.temp);
  Result r = cf.failure;
  r.outcome = Outcome::Failed;
  complete(cf.begin, r, cf.bytes);  // what its chunks wrote stays in the progress, done and total
}

int Runner::rename_dst_temp(DirNode* dir, const std::string& from, const std::string& to) {
  if (!target_.dst_root) return 0;
  int fd = open_dir_beneath(target_.dst_root.get(), walker_ ? walker_->dst_rel_path(dir) : std::string(), false);
  if (fd < 0) return -fd;
  UniqueFd d(fd);
  if (::renameat2(fd, from.c_str(), fd, to.c_str(), RENAME_NOREPLACE) == 0) return 0;
  // The NFS client and FUSE file systems without rename2 take no flags (EINVAL). The name is this
  // run's own: whatever has it is a leftover of a dead process that had the same pid.
  if (errno != EINVAL) return errno;
  return ::renameat(fd, from.c_str(), fd, to.c_str()) == 0 ? 0 : errno;
}

void Runner::remove_dst_temp(DirNode* dir, const std::string& temp) {
  if (opt_.inplace || temp.empty() || !target_.dst_root) return;
  int fd = open_dir_beneath(target_.dst_root.get(), walker_ ? walker_->dst_rel_path(dir) : std::string(), false);
  if (fd < 0) return;
  ::unlinkat(fd, temp.c_str(), 0);
  ::close(fd);
}

// The first copy of a hard-link group is done: link the others to it, or, if it failed, let the
// next one be copied in its place.
void Runner::finish_link_group(const JobInfo& info, const Result& r) {
  auto it = links_.find(*info.link_key);
  if (it == links_.end()) return;
  LinkGroup& group = it->second;
  std::vector<uint64_t> waiting = std::move(group.waiting);
  group.waiting.clear();
  // With --ignore-existing a first name kept in DST is not SRC's file (it may be anything): the
  // next name is copied in its place, as when the first failed.
  if (r.outcome == Outcome::Failed || (opt_.ignore_existing && r.outcome == Outcome::Skipped)) {
    if (waiting.empty() || stopping_) {
      links_.erase(it);
      return;
    }
    group.kind = info.job.kind;
    group.waiting = std::move(waiting);
    lead_with_next(*info.link_key, group);
    return;
  }
  group.done = true;
  group.anew = r.outcome != Outcome::Skipped;
  group.first = rel(info);
  group.hash = r.hash;
  for (uint64_t id : waiting) {
    JobInfo parked = std::move(jobs_.at(id));
    jobs_.erase(id);
    parked.job.link_target = group.first;
    parked.job.want_hash = manifest_.is_open() && !group.hash;
    add_ready_link(parked.dir, std::move(parked.job), *parked.member_of);
  }
}

void Runner::read_worker(size_t w) {
  WorkerSlot& slot = pool_->slot(w);
  char* buf = read_buf_.data();
  for (;;) {
    ssize_t n = ::read(slot.results.get(), buf, read_buf_.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return;
    if (n < 0) return replace_worker(w, fmt::format("cannot read its results: {}", errno_text(errno)));
    if (n == 0) {
      on_worker_gone(w);
      return;
    }
    heard_from(w);
    slot.reader.feed(buf, size_t(n));
    try {
      handle_frames(w, false);  // after a --fail-fast error, later results wait for drain_results
    } catch (const ProtocolError& e) {
      return replace_worker(w, e.what());
    }
    if (size_t(n) < read_buf_.size() || abandon_) return;
  }
}

// A live worker whose results cannot be had (a failed read of its pipe, a malformed frame): it is
// killed, then gone as a worker that died is, and the run survives it, said as a warning.
void Runner::replace_worker(size_t w, const std::string& why) {
  WorkerSlot& slot = pool_->slot(w);
  std::string text = fmt::format("worker {}: {}; replacing it", slot.pid, why);
  stats_.warnings.add("", text);
  if (!opt_.quiet) say(paint("33", "pcopy: warning: " + text));
  ::kill(slot.pid, SIGKILL);
  on_worker_gone(w, true);
}

// A worker died (EOF on its pipe): reap it, remove its temporaries, start another, and hand out
// again every job it had not answered. A job is charged with the death only when the worker was
// certainly working on it: when it had reported progress and was not answered (a worker answers
// such a job as soon as it is done, before it starts another), or when it was the first unanswered
// job and alone in its batch (a worker answers a batch before it starts the next). A job charged
// twice fails with a message naming it; one charged once is retried, alone.
// Otherwise the death is nobody's certain doing: it may have come from outside (an OOM kill,
// `kill -9`), and results are sent in bunches, so the unanswered jobs of the batch in hand may be
// done, in hand or not started. Each is retried alone and uncharged: if it kills a worker again,
// that death is charged to it. Jobs of later batches, and all but the one charged, had not been
// started or were done: they go out again as they were.
void Runner::on_worker_gone(size_t w, bool said) {
  WorkerSlot& slot = pool_->slot(w);
  pid_t pid = slot.pid;
  int status = pool_->reap(w, true);
  // A death the run survives is still said (a warning): an OOM kill or a crash is the operator's
  // to know of, even where every file came out right.
  if (!said && !interrupted_ && !stopping_ && !abandon_) {
    std::string text = fmt::format("worker {} died ({}); what it held is handed out again", pid,
                                   describe_wait_status(status));
    stats_.warnings.add("", text);
    if (!opt_.quiet) say(paint("33", "pcopy: warning: " + text));
  }
  std::vector<uint64_t> held;
  for (uint64_t id : sent_[w])
    if (slot.held.count(id)) held.push_back(id);
  std::vector<DirNode*> dirs;
  for (uint64_t id : held) dirs.push_back(jobs_.at(id).dir);
  remove_temps_of(pid, dirs);
  uint64_t culprit = 0;
  if (slot.held.count(reporting_[w])) {
    culprit = reporting_[w];
  } else if (!held.empty() && jobs_.at(held.front()).alone) {
    culprit = held.front();
  }
  std::deque<size_t> batches = std::move(batch_left_[w]);  // unanswered jobs of each batch, oldest first
  slot.held.clear();
  slot.results.reset();
  slot.jobs.reset();
  batch_left_[w].clear();
  sent_[w].clear();
  reporting_[w] = 0;
  heard_from(w);
  startup_deaths_ = answered_[w] == 0 ? startup_deaths_ + 1 : 0;
  answered_[w] = 0;
  if (startup_deaths_ > 2 * int(pool_->size()) + 2) {
    // Run-wide, as a full disk's stop is: no path at fault, and what it means for the rest said.
    std::string why = fmt::format("workers die before doing any work ({}); giving up: the remaining entries were "
                                  "not copied",
                                  describe_wait_status(status));
    say("pcopy: " + why);
    stats_.errors.add("", why);
    abandon_ = true;
  }
  if (!abandon_) {
    // A replacement that cannot be forked leaves the others to go on; with none left, nothing can.
    int err = pool_->spawn(w);
    if (err && pool_->live() == 0) {
      std::string why = fmt::format("no worker process left: {}: the remaining entries were not copied", errno_text(err));
      say("pcopy: " + why);
      stats_.errors.add("", why);
      abandon_ = true;
    }
  }
  for (uint64_t id : held) {
    JobInfo& info = jobs_.at(id);
    bytes_done_ -= std::min(bytes_done_, info.reported);
    info.reported = 0;
    info.worker = -1;
  }
  if (abandon_ || held.empty()) return;

  std::deque<PendingBatch> retry;
  uint64_t failed = 0;
  for (size_t i = 0, b = 0; i < held.size(); ++b) {
    size_t n = b < batches.size() ? batches[b] : held.size() - i;
    PendingBatch rest;  // the batch's jobs that go out again as they were
    for (size_t end = std::min(held.size(), i + n); i < end; ++i) {
      JobInfo& info = jobs_.at(held[i]);
      bool suspect = culprit ? held[i] == culprit : b == 0;  // may have been in hand
      // Done by the dead worker, maybe: -u must not then call it up to date (see Job::attempt).
      if (!info.job.attempt) info.job.attempt = 2;
      if (!suspect) {
        rest.dir = info.dir;
        rest.ids.push_back(held[i]);
        rest.bytes += weight(info.job);
        continue;
      }
      if (!rest.ids.empty()) retry.push_back(std::exchange(rest, {}));
      info.job.attempt = 1;
      if (held[i] == culprit && ++info.deaths >= 2) {
        failed = held[i];
      } else {
        retry.push_back(PendingBatch{info.dir, {held[i]}, weight(info.job)});
      }
    }
    if (!rest.ids.empty()) retry.push_back(std::move(rest));
  }
  if (failed) {
    Result r;
    r.id = failed;
    r.outcome = Outcome::Failed;
    r.detail = fmt::format("a worker died copying it ({}), also on retry", describe_wait_status(status));
    settle(r);
  }
  if (stopping_) {
    // Not tried again, but accounted for: a chunk's file fails as a whole, its temporary removed.
    for (auto& b : retry)
      for (uint64_t id : b.ids) {
        JobInfo& info = jobs_.at(id);
        if (walker_ && !info.file) walker_->forget(info.dir, info.job.target());  // what the dead worker left of it
        drop(id);
      }
    return;
  }
  queue_.insert(queue_.begin(), std::make_move_iterator(retry.begin()), std::make_move_iterator(retry.end()));
}

void Runner::remove_temps_of(pid_t pid, const std::vector<DirNode*>& dirs) {
  if (!target_.dst_root || opt_.inplace) return;
  std::string prefix = std::string(kTempPrefix) + std::to_string(pid) + "-";
  std::vector<std::string> seen;
  for (DirNode* dir : dirs) {
    std::string rel_dir = walker_ ? walker_->dst_rel_path(dir) : std::string();
    if (std::find(seen.begin(), seen.end(), rel_dir) != seen.end()) continue;
    seen.push_back(rel_dir);
    int fd = open_dir_beneath(target_.dst_root.get(), rel_dir, false);
    if (fd < 0) continue;
    UniqueFd dfd(fd);
    remove_temps(dfd.get(), [&](std::string_view name) {
      // A chunked file's temporary outlives the worker that created it: others still write it.
      return name.starts_with(prefix) && made_by_this_run(name) &&
             std::none_of(chunked_.begin(), chunked_.end(), [&](const auto& kv) { return kv.second.temp == name; });
    });
  }
}

// Handles the complete messages worker `w` has sent; while the run goes on, or also once it is
// abandoned. Throws ProtocolError.
void Runner::handle_frames(size_t w, bool abandoned_too) {
  WorkerSlot& slot = pool_->slot(w);
  while (abandoned_too || !abandon_) {
    auto frame = slot.reader.next();
    if (!frame) return;
    if (frame->type == MsgType::Result) {
      on_result(w, decode_result(frame->payload));
    } else if (frame->type == MsgType::Progress) {
      on_progress(w, decode_progress(frame->payload));
    } else {
      throw ProtocolError("unexpected message from a worker");
    }
  }
}

// Once the run is abandoned: handles what worker `w` has sent, though abandon_ is set — what it
// finished is reported (counts, manifest, errors) as its files are in place. A frame cut short
// by its death is ignored. False once its pipe is at EOF (or broken), true while it may send more.
bool Runner::drain_results(size_t w) {
  WorkerSlot& slot = pool_->slot(w);
  if (!slot.results) return false;
  char* buf = read_buf_.data();
  for (;;) {
    ssize_t n = ::read(slot.results.get(), buf, read_buf_.size());
    if (n < 0 && errno == EINTR) continue;
    if (n > 0) slot.reader.feed(buf, size_t(n));
    try {
      handle_frames(w, true);
    } catch (const ProtocolError&) {
      return false;
    }
    if (n < 0) return errno == EAGAIN;
    if (n == 0) return false;
  }
}

// Reads and handles results as workers send them, until every pipe reaches EOF or `timeout_ms`.
void Runner::collect_results(int timeout_ms) {
  const double deadline = now_s() + timeout_ms / 1000.0;
  std::vector<bool> open(pool_->size());
  for (size_t i = 0; i < open.size(); ++i) open[i] = pool_->slot(i).pid > 0 && pool_->slot(i).results;
  for (;;) {
    std::vector<pollfd> fds;
    std::vector<size_t> which;
    for (size_t i = 0; i < open.size(); ++i)
      if (open[i]) {
        fds.push_back({pool_->slot(i).results.get(), POLLIN, 0});
        which.push_back(i);
      }
    double left = deadline - now_s();
    if (fds.empty() || left <= 0) return;
    if (::poll(fds.data(), fds.size(), int(left * 1000) + 1) <= 0) continue;
    for (size_t k = 0; k < fds.size(); ++k)
      if (fds[k].revents) open[which[k]] = drain_results(which[k]);
  }
}

void Runner::on_signal() {
  signalfd_siginfo si;
  while (::read(sigfd_.get(), &si, sizeof si) == sizeof si) {
    if (si.ssi_signo == SIGCHLD) continue;  // deaths are seen as EOF on the worker's pipe
    if (stops_the_run(int(si.ssi_signo))) {
      suspend(int(si.ssi_signo));
      continue;
    }
    if (!interrupted_) interrupted_ = int(si.ssi_signo);
    abandon_ = true;
  }
}

// Job control (Ctrl-Z, `kill -TSTP`, a background write under `stty tostop`): the workers, in
// process groups of their own, are out of the terminal's reach, so the parent stops them, then
// itself with the signal it got, as the shell expects; continued (`fg`, `bg`, SIGCONT), it
// continues them. In an orphaned process group the kernel ignores the stop, and the workers are
// continued at once.
void Runner::suspend(int sig) {
  if (!pool_) return;
  if (bar_ && sig == SIGTSTP) bar_->clear();  // from the terminal: the shell's "Stopped" goes on a clean line
  pool_->signal_all(SIGSTOP);
  double stopped_at = now_s();
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, sig);
  ::kill(::getpid(), sig);
  ::sigprocmask(SIG_UNBLOCK, &set, nullptr);  // its default action: stopped here until SIGCONT
  ::sigprocmask(SIG_BLOCK, &set, nullptr);
  pool_->signal_all(SIGCONT);
  // The time stopped is no worker's silence (see name_silent_workers).
  double stopped_for = now_s() - stopped_at;
  for (double& heard : heard_) heard += stopped_for;
  meter_.skip(stopped_for);  // nor is it time the copy took, for the rate and the ETA
  work_meter_.skip(stopped_for);
}

void Runner::sample_rates(double t) {
  meter_.sample(t - start_, bytes_done_);
  work_meter_.sample(t - start_, work_of(files_done_, bytes_done_));
}

// A blocked SIGTTOU (it is read from the signalfd) lets a process write to its terminal from the
// background even under `stty tostop`, where the terminal would stop it: the parent makes the
// terminal's check itself before writing to one, and stops as the terminal would have stopped it.
void Runner::before_terminal_write(int fd) {
  if (!sigismember(&watched_, SIGTTOU)) return;  // ignored: the terminal lets us write
  struct termios t;
  if (::tcgetattr(fd, &t) != 0 || !(t.c_lflag & TOSTOP)) return;
  pid_t fg = ::tcgetpgrp(fd);  // -1 unless it is our controlling terminal, which alone stops us
  if (fg > 0 && fg != ::getpgrp()) suspend(SIGTTOU);
}

ProgressState Runner::progress_state() const {
  ProgressState s;
  s.files_done = files_done_;
  s.files_total = files_total_;
  s.bytes_done = bytes_done_;
  s.bytes_total = bytes_total_;
  s.counting = !walk_done_;
  s.elapsed_s = now_s() - start_;
  s.rate = meter_.rate();
  s.work_rate = work_meter_.rate();
  return s;
}

void Runner::tick(bool force) {
  double t = now_s();
  if (!bar_ && !status_lines_) return;
  double interval = bar_ ? kBarInterval : kLineInterval;
  if (!force && t - last_draw_ < interval) return;
  last_draw_ = t;
  sample_rates(t);
  if (bar_) {
    before_terminal_write(STDERR_FILENO);
    bar_->draw(progress_state());
  } else {
    say(format_status_line(progress_state()));
  }
}

int Runner::timeout_ms() const {
  if (!walk_done_ && !stopping_ && jobs_.size() - undecided_names_ < window_) return 0;
  // Until the next thing due: a redraw or status line, buffered -v lines.
  std::optional<double> due;
  if (bar_ || status_lines_) due = last_draw_ + (bar_ ? kBarInterval : kLineInterval);
  if (!stdout_buf_.empty()) due = std::min(due.value_or(HUGE_VAL), last_out_ + kOutInterval);
  if (manifest_.pending()) due = std::min(due.value_or(HUGE_VAL), last_manifest_ + kOutInterval);
  bool held = false;
  for (size_t w = 0; w < pool_->size(); ++w) {
    if (pool_->slot(w).held.empty()) continue;
    held = true;
    if (!silence_told_[w]) due = std::min(due.value_or(HUGE_VAL), heard_[w] + silent_after_s_);
  }
  // While workers hold work, a wait of a second at most: one that comes back much later tells of
  // the run frozen whole (see poll_once), which no worker's silence should count.
  if (held) due = std::min(due.value_or(HUGE_VAL), now_s() + 1.0);
  if (!due) return -1;
  return std::max(1, int((*due - now_s()) * 1000) + 1);
}

void Runner::heard_from(size_t w) {
  heard_[w] = now_s();
  silence_told_[w] = false;
}

// A worker that holds jobs and has sent nothing for kSilentWorkerS is named, once per silence, with
// what it holds: a file on a hung network mount, a process stopped by someone. It is waited for
// all the same (a slow worker cannot be told from a stuck one, and its jobs may be half done);
// Ctrl-C or SIGTERM ends the run cleanly.
void Runner::name_silent_workers() {
  double t = now_s();
  for (size_t w = 0; w < pool_->size(); ++w) {
    WorkerSlot& slot = pool_->slot(w);
    if (silence_told_[w] || slot.held.empty() || t - heard_[w] < silent_after_s_) continue;
    silence_told_[w] = true;
    // The file it reported progress on is the one it is on; else results come in bunches, and the
    // first unanswered job is only where its unanswered ones begin.
    bool copying = slot.held.count(reporting_[w]);
    uint64_t id = copying ? reporting_[w] : 0;
    for (auto it = sent_[w].begin(); !id && it != sent_[w].end(); ++it)
      if (slot.held.count(*it)) id = *it;
    auto info = jobs_.find(id);
    std::string raw = info == jobs_.end() ? std::string() : rel(info->second), path = display_path(raw);
    size_t n = slot.held.size();
    std::string count = fmt::format("{} {}", format_count(n), n == 1 ? "entry" : "entries");
    std::string what = copying ? fmt::format(" while copying '{}' ({} unanswered)", path, count)
                               : fmt::format(" ({} unanswered, from '{}')", count, path);
    std::string text = fmt::format("worker {} has sent nothing for {}{}; still waiting for it", slot.pid,
                                   format_duration(t - heard_[w]), what);
    stats_.warnings.add(raw, text);
    if (!opt_.quiet) say(paint("33", "pcopy: warning: " + text));
  }
}

void Runner::poll_once(int timeout) {
  std::vector<pollfd> fds;
  fds.push_back({sigfd_.get(), POLLIN, 0});
  for (size_t i = 0; i < pool_->size(); ++i) {
    WorkerSlot& s = pool_->slot(i);
    fds.push_back({s.results.get(), POLLIN, 0});
    fds.push_back({s.out.empty() ? -1 : s.jobs.get(), POLLOUT, 0});
  }
  double before = now_s();
  int n = ::poll(fds.data(), fds.size(), timeout);
  // Back long after its time: the run was frozen, workers and all (a cgroup freezer, `docker
  // pause`), since when within the wait is not known: none of it is any worker's silence.
  if (double waited = now_s() - before; timeout >= 0 && waited > timeout / 1000.0 + 1.0)
    for (double& heard : heard_) heard += waited;
  if (n <= 0) return;
  if (fds[0].revents) on_signal();
  if (abandon_) return;
  for (size_t i = 0; i < pool_->size() && !abandon_; ++i) {
    if (fds[2 + 2 * i].revents & (POLLOUT | POLLERR)) pool_->flush(i);
    if (fds[1 + 2 * i].revents & (POLLIN | POLLHUP | POLLERR)) read_worker(i);
  }
}

void Runner::note_deleted(const std::string& path) {
  ++stats_.files_deleted;
  if (opt_.dry_run) {
    out_line("delete " + display_path(path));
  } else if (opt_.verbose) {
    out_line("deleted " + display_path(path));
  }
}

void Runner::run_delete() {
  // After a full disk (or quota) stopped the copy, the removals still run: they are what makes
  // room for the next run (a mirror full of what SRC no longer has would stop at the same place
  // every night). Only directories the walk listed to the end are looked into.
  const char* const unseen = "a dry run may not look into it (the real run opens it up): what it would delete there "
                             "is not listed";
  if (opt_.delete_extraneous && target_.dst_unseen) warning(".", unseen);
  bool full = stop_err_ != 0 && stop_err_ != EROFS;  // stopped by a full disk or quota
  if (!opt_.delete_extraneous || target_.single_file || abandon_ || (stopping_ && !full) || !target_.dst_root)
    return;
  if (walker_->walk_errors() > 0) {
    // No path at fault (an empty one, as a full disk's stop has), in the words of the line.
    const std::string why =
        "--delete deleted nothing extraneous: reading SRC failed, so nothing in DST is known to be extraneous";
    say("pcopy: " + why);
    stats_.errors.add("", why);
    return;
  }
  MirrorCallbacks cb;
  cb.deleted = [&](const std::string& path) { note_deleted(path); };
  cb.unseen = [&](const std::string& path) { warning(path, unseen); };
  // Out of the poll loop, signals are looked at every 50 ms: Ctrl-C stops the removals (the
  // destructive part, which a user most wants to stop), the run ends as interrupted; Ctrl-Z stops.
  double looked = 0;  // the first entry looks: a signal may have come since the poll loop ended
  bool failed = false;  // --fail-fast: a removal failed, nothing more is removed
  cb.stop = [&](bool removal) {
    if (failed && removal) {
      // Said where a removal is held back (the directories before it are still looked into, not
      // touched), once, as a copy's stop is: where none would have come, there is no stop to tell.
      if (!abandon_) {
        std::string rest = "nothing more was deleted";
        say("pcopy: stopping at the first error (--fail-fast): " + rest);
        stats_.errors.add("", "stopped: --fail-fast: " + rest);
      }
      return abandon_ = true;
    }
    if (double t = now_s(); t - looked >= 0.05) {
      looked = t;
      on_signal();
    }
    return abandon_;
  };
  cb.failed = [&](const std::string& path, int err) {
    std::string reason = fmt::format("cannot delete: {}", errno_text(err));
    say(paint("31", fmt::format("pcopy: cannot delete '{}': {}", display_path(path), errno_text(err))));
    stats_.errors.add(path, reason);
    failed = opt_.fail_fast;
  };
  // A directory of DST not looked into (SRC has it): not itself one to delete.
  cb.unlisted = [&](const std::string& rel, int err) {
    std::string path = rel.empty() ? "." : rel;
    say(paint("31", fmt::format("pcopy: cannot look for entries to delete in '{}': {}", display_path(path),
                                errno_text(err))));
    stats_.errors.add(path, fmt::format("cannot look for entries to delete: {}", errno_text(err)));
    failed = opt_.fail_fast;
  };
  // SRC may be inside DST under another name (a bind mount of a directory of DST, which no path
  // comparison before the run sees): it stays, with the directories above it. So does the
  // manifest being written, with the directories above it.
  std::set<std::pair<dev_t, ino_t>> own{{target_.src_st.st_dev, target_.src_st.st_ino}};
  auto keep_with_parents = [&](const std::string& file) {
    struct stat st;
    if (::stat(file.c_str(), &st) == 0) own.insert({st.st_dev, st.st_ino});
    size_t slash = file.rfind('/');
    std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : file.substr(0, slash);
    UniqueFd fd(::open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    while (fd && ::fstat(fd.get(), &st) == 0 && own.insert({st.st_dev, st.st_ino}).second)
      fd.reset(::openat(fd.get(), "..", O_PATH | O_DIRECTORY | O_CLOEXEC));  // "/.." is "/": the loop ends
  };
  if (!opt_.manifest.empty()) keep_with_parents(opt_.manifest);
  // So do the files stdout and stderr go to (`> DST/report.json 2> DST/log.txt`), as rsync keeps
  // its --log-file.
  for (int fd : {STDOUT_FILENO, STDERR_FILENO}) {
    struct stat st;
    char link[PATH_MAX];
    std::string proc = fmt::format("/proc/self/fd/{}", fd);
    ssize_t n = ::fstat(fd, &st) == 0 && S_ISREG(st.st_mode) ? ::readlink(proc.c_str(), link, sizeof link) : -1;
    if (n > 0 && link[0] == '/') keep_with_parents(std::string(link, size_t(n)));
  }
  cb.keep = [&](const struct stat& st) { return own.count({st.st_dev, st.st_ino}) > 0; };
#ifdef PCOPY_TEST_HOOKS
  if (std::getenv("PCOPY_TEST_STOP_BEFORE_DELETE")) ::raise(SIGSTOP);  // for a test to signal it here
#endif
  delete_extraneous(walker_->listings(), target_.dst_root.get(), opt_, cb);
}

int Runner::run() {
  stderr_tty_ = ::isatty(STDERR_FILENO);
  stdout_tty_ = ::isatty(STDOUT_FILENO);
  auto is_pipe = [](int fd) {
    struct stat st;
    return ::fstat(fd, &st) == 0 && (S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode));
  };
  stderr_pipe_ = is_pipe(STDERR_FILENO);
  stdout_pipe_ = is_pipe(STDOUT_FILENO);
  const char* no_color = std::getenv("NO_COLOR");
  // A dumb terminal moves no cursor and clears no line: it gets plain lines, as a file does.
  const char* term = std::getenv("TERM");
  bool smart = stderr_tty_ && !(term && std::string_view(term) == "dumb");
  color_ = smart && !(no_color && *no_color);
  if (!opt_.quiet && opt_.progress != ProgressMode::Never) {
    if (smart) bar_.emplace(STDERR_FILENO);
    else if (opt_.progress == ProgressMode::Always) status_lines_ = true;
  }
  // The parent stats every entry only when something needs it before the copy: byte totals for
  // the progress display, hard links, -L, a dry run's byte count. Otherwise getdents' d_type is
  // enough, workers look at sizes themselves, and the parent stays off the critical path.
  stat_entries_ = bar_ || status_lines_ || opt_.archive || opt_.dereference || opt_.dry_run;
  chunk_ = !target_.dst_root.valid() || chunking_helps(target_.dst_root.get(), opt_);
  in_memory_ = target_.dst_root.valid() && in_memory_fs(target_.dst_root.get());
  cpu_set_t cpus;
  if (::sched_getaffinity(0, sizeof cpus, &cpus) == 0) cpus_ = size_t(std::max(1, CPU_COUNT(&cpus)));
  if (int status = start_pool()) return status;
  stats_.workers = unsigned(pool_->live());
  const char* skipped = target_.single_file ? skip_reason(target_.src_st.st_mode, opt_, ::geteuid()) : nullptr;
  if (skipped) {  // a socket or device named as SRC: as inside a tree
    warning(opt_.src, skipped);
    walk_done_ = true;
  } else if (target_.single_file) {
    Job job;
    job.kind = kind_of(target_.src_st.st_mode);
    job.name = target_.src_name;
    if (target_.dst_name != target_.src_name) job.dst_name = target_.dst_name;
    job.known_from(target_.src_st, refresh_skipped_);
    if (job.kind == JobKind::File && should_chunk(target_.src_st)) job.kind = JobKind::FileBegin;
    files_total_ = 1;
    add_job(nullptr, std::move(job));
    seal();
    walk_done_ = true;
  } else {
    // Out of descriptors (EMFILE) before the walk begins: nothing can be walked or made.
    auto cannot_open = [&](const std::string& path, int err) {
      return refuse_start(fmt::format("pcopy: cannot open '{}': {}", display_path(path), errno_text(err)), path);
    };
    UniqueFd src(::fcntl(target_.src_root.get(), F_DUPFD_CLOEXEC, 0));
    if (!src) return cannot_open(opt_.src, errno);
    UniqueFd dst(target_.dst_root ? ::fcntl(target_.dst_root.get(), F_DUPFD_CLOEXEC, 0) : -1);
    if (target_.dst_root && !dst) return cannot_open(target_.dst_display, errno);
    walker_.emplace(
        opt_, std::move(src), std::move(dst), target_.src_st,
        [this](const DirNode& dir, const Walker::DirTrouble& trouble) {
          std::string path = walker_->rel_path(&dir);
          // A directory finished after the stop whose mode or times fail for the reason said once
          // (a read-only directory of DST): the stop's line told that nothing more could be written.
          if (trouble.err && !(stopping_ && trouble.err == stop_err_))
            error(path.empty() ? "." : path, errno_text(trouble.err));
          for (const Unkept& u : trouble.unkept) unkept(path, u);
          if (trouble.flush_err) flush_failed(path.empty() ? "." : path, trouble.flush_err);
          // Not in place: neither are the entries its workers reported copied.
          auto take = [](uint64_t& count, uint64_t n) { count -= std::min(count, n); };
          take(stats_.files_copied, trouble.lost.files);
          take(stats_.links_copied, trouble.lost.links);
          take(stats_.dirs_created, trouble.lost.dirs);
          take(stats_.bytes_copied, trouble.lost.bytes);
        },
        stat_entries_);
    if (int err = walker_->start_error()) {
      bool in_dst = walker_->start_error_in_dst();
      walker_.reset();
      return cannot_open(in_dst ? target_.dst_display : opt_.src, err);
    }
    // A staged file that could not join the directory another writer made in its place: it was
    // counted as copied when its worker answered.
    walker_->on_unmerged([this](const DirNode& dir, const std::string& name, int err, const struct stat& st) {
      error(walker_->rel_path(&dir, name), errno_text(err));
      uint64_t& count = S_ISLNK(st.st_mode) ? stats_.links_copied : stats_.files_copied;
      count -= std::min<uint64_t>(count, 1);
      if (S_ISREG(st.st_mode)) stats_.bytes_copied -= std::min(stats_.bytes_copied, uint64_t(st.st_size));
    });
  }

  // Emptied only once the run goes ahead, its walk begun: a run refused leaves it as it was.
  if (target_.manifest) {
    if (int err = manifest_.open(std::move(target_.manifest))) {
      std::string line =
          fmt::format("pcopy: cannot write manifest '{}': {}", display_path(opt_.manifest), errno_text(err));
      return refuse_start(line, opt_.manifest);
    }
    // As stdout is written: a reader that stopped reading (a FIFO, `>(jq ...)`) holds off no signal.
    manifest_.set_writer(
        [this](int fd, std::string_view text) { return write_watching(fd, text, manifest_.is_pipe()); });
  }

  tick(true);
  while (!abandon_) {
    if (walker_) produce();
    dispatch();
    if ((walk_done_ || stopping_) && jobs_.empty()) break;
    poll_once(timeout_ms());
    name_silent_workers();
    tick(false);
    if (!stdout_buf_.empty() && now_s() - last_out_ >= kOutInterval) flush_out();
    // The manifest's lines too, for a reader that follows them (`--manifest >(...)`, `tail -f`).
    if (double t = now_s(); manifest_.pending() && t - last_manifest_ >= kOutInterval) {
      manifest_.flush();
      last_manifest_ = t;
    }
  }
  return finish();
}

// The run cannot begin after all, its workers started: they are sent away, what was made for it
// removed (DST, if made, and the directories above it), and the refusal printed. Status 2.
int Runner::refuse_start(const std::string& line, const std::string& path) {
  pool_->close_jobs();
  pool_->shutdown(5000);
  target_.remove_made();
  print_refusal(line, path, opt_.json, 0, opt_.dry_run);
  return 2;
}

int Runner::finish() {
  if (abandon_) {
    // Abandon the files in flight: no more jobs; each worker finishes the one in hand (a short
    // while at most: then it is killed), sends its results and exits; what they finished is
    // reported. Then the temporaries of what they did not finish are removed.
    pool_->close_jobs();
    pool_->signal_all(SIGUSR1);
    collect_results(kFinishUpMs);
    pool_->signal_all(SIGKILL);
    pool_->await_deaths(Pool::kKillWaitMs);  // one stuck in I/O is not waited for
    std::vector<pid_t> pids;
    std::vector<bool> alive;
    for (size_t w = 0; w < pool_->size(); ++w) {
      pids.push_back(pool_->slot(w).pid);
      alive.push_back(pids.back() > 0 && pool_->reap(w, false) < 0);
    }
    // A worker that even SIGKILL has not ended is stuck in I/O (a frozen or unreachable DST): so
    // would the parent be, in clean-up there. Its temporaries and staged directories are left for
    // the next run, as a killed run's are.
    dst_stuck_ = std::count(alive.begin(), alive.end(), true) > 0;
    for (size_t w = 0; w < pool_->size(); ++w) {
      WorkerSlot& slot = pool_->slot(w);
      drain_results(w);
      if (alive[w]) {  // left for init to reap
        slot.results.reset();
        slot.pid = -1;
      } else if (!dst_stuck_) {
        std::vector<DirNode*> dirs;
        for (uint64_t id : slot.held) dirs.push_back(jobs_.at(id).dir);
        remove_temps_of(pids[w], dirs);
      }
    }
    if (dst_stuck_) {
      std::string text = "workers stuck in I/O were killed and not waited for; what they were writing is left "
                         "in DST for the next run to remove";
      stats_.warnings.add("", text);
      if (!opt_.quiet) say(paint("33", "pcopy: warning: " + text));
    } else {
      for (auto& [id, cf] : chunked_) remove_dst_temp(cf.begin.dir, cf.temp);
    }
    // A big file rewritten --inplace that its chunks had not finished is named, after a signal
    // too: its final name holds part of the new data, its mode that of a copy being written (a
    // file copied whole is finished by its worker, or not begun).
    if (opt_.inplace)
      for (auto& [id, cf] : chunked_) error(rel(cf.begin), "not copied: pcopy stopped before it was complete");
    if (walker_ && !dst_stuck_) {
      // Staged directories appear with what was finished in them, never a half-written file.
      std::unordered_map<const DirNode*, std::vector<std::string>> unfinished;
      for (const auto& [id, info] : jobs_) unfinished[info.dir].push_back(info.job.target());
      walker_->reveal_abandoned([&](const DirNode* dir) {
        auto it = unfinished.find(dir);
        return it == unfinished.end() ? std::vector<std::string>() : it->second;
      });
    }
  } else {
    // Stopped (a full disk, --fail-fast) while the walk was in a staged directory: it appears with
    // what was finished in it, as after a signal, not left under its temporary name.
    if (stopping_ && walker_) walker_->reveal_abandoned([](const DirNode*) { return std::vector<std::string>(); });
    run_delete();
  }
  if (opt_.fsync && !opt_.dry_run && !dst_stuck_) {
    target_.flush_outside([&](const std::string& path, int err) { flush_failed(path, err); });
  }
  pool_->close_jobs();
  pool_->shutdown(5000);

  if (bar_) {
    tick(true);
    bar_->clear();
  } else if (status_lines_) {
    sample_rates(now_s());
    say(format_status_line(progress_state()));
  }
  flush_out();
  if (int err = manifest_.close()) {
    std::string why = err == EAGAIN ? "cut short: its reader took nothing more once interrupted" : errno_text(err);
    say(fmt::format("pcopy: cannot write manifest '{}': {}", display_path(opt_.manifest), why));
    stats_.errors.add(opt_.manifest, why);
  }

  // What a script reads (-v, -n and --json on stdout; with --json, -v and -n on stderr) is
  // incomplete: an error of the run, in the summary's count and the status, as any other.
  auto output_failed = [&](int err, std::string_view where) {
    std::string why = err == EAGAIN ? fmt::format("{} was cut short: its reader took nothing more once interrupted", where)
                                    : fmt::format("cannot write to {}: {}", where, errno_text(err));
    say("pcopy: " + why);
    stats_.errors.add("", why);
  };
  bool stdout_told = stdout_err_ != 0;
  if (stdout_err_) output_failed(stdout_err_, "standard output");
  if (lines_err_) output_failed(lines_err_, opt_.dry_run ? "standard error (the -n lines)" : "standard error (the -v lines)");
  stats_.elapsed_s = now_s() - start_;
  stats_.interrupted = interrupted_ != 0;
  stats_.dry_run = opt_.dry_run;
  stats_.exit_status = interrupted_ ? 128 + interrupted_ : stats_.errors.empty() ? 0 : 1;
  // The report before the summary: one that cannot be written is still counted there.
  if (opt_.json) write_json_report(stats_, [&](std::string_view piece) { write_out(piece); });
  if (stdout_err_ && !stdout_told) {
    output_failed(stdout_err_, "standard output");
    if (stats_.exit_status == 0) stats_.exit_status = 1;
  }
  if (!opt_.quiet) {
    std::string line = summary_line(stats_, opt_.update || opt_.ignore_existing, opt_.delete_extraneous);
    if (opt_.dst.empty()) line += fmt::format(" into '{}'", display_path(target_.dst_display));
    say(line);
  }
  // Signals stay blocked to the exit: a second Ctrl-C, or `timeout` signalling both pcopy and its
  // process group, must not kill it half-way through the report, nor after it, which would end pcopy
  // with another status than the one the report gave. Those that came meanwhile are dropped.
  signalfd_siginfo si;
  while (::read(sigfd_.get(), &si, sizeof si) == sizeof si) {
  }
  return stats_.exit_status;
}

// The soft RLIMIT_NOFILE is often 1024 while the hard one is far higher: a program that needs more
// descriptors is expected to raise its own soft limit, and pcopy takes all it may, as many tools do.
// The walk keeps directory fds open within it, and batches two per file being copied.
void raise_fd_limit() {
  struct rlimit nofile;
  if (::getrlimit(RLIMIT_NOFILE, &nofile) != 0 || nofile.rlim_cur == nofile.rlim_max) return;
  nofile.rlim_cur = nofile.rlim_max;
  ::setrlimit(RLIMIT_NOFILE, &nofile);
}

// Why the pool's pipes cannot all be opened under RLIMIT_NOFILE, or "": said before anything is
// created, not as a failed pipe2 after DST was made.
std::string fd_limit_refusal(unsigned jobs) {
  struct rlimit nofile;
  if (::getrlimit(RLIMIT_NOFILE, &nofile) != 0 || nofile.rlim_cur == RLIM_INFINITY ||
      long(nofile.rlim_cur) >= fds_needed(jobs))
    return "";
  long inherited = inherited_fds();
  std::string held = inherited == 0 ? ""
                     : fmt::format(", and {} of them {} open already when pcopy started", inherited,
                                   inherited == 1 ? "was" : "were");
  return fmt::format("pcopy: -j {} needs at least {} open files; the limit (RLIMIT_NOFILE, ulimit -Hn) is {}{}", jobs,
                     fds_needed(jobs), nofile.rlim_cur, held);
}

}  // namespace

int run(const Options& options) {
  // What pcopy copies gets SRC's modes from pcopy itself; what it makes to work in (DST's parents,
  // the directories it fills, the manifest) must let its owner write and search whatever the
  // umask takes from the owner (0222, 0177), as with cp -a and mkdir -p.
  ::umask(::umask(0) & 077);
  raise_fd_limit();
  Signals signals = watch_signals();
  if (signals.err) {  // Ctrl-C and SIGTERM would go unheard, and stay blocked: nothing is begun
    print_refusal(fmt::format("pcopy: cannot watch for signals: {}", errno_text(signals.err)), "", options.json, 0,
                  options.dry_run);
    return 2;
  }
  if (std::string why = fd_limit_refusal(options.jobs); !why.empty()) {
    print_refusal(why, "", options.json, 0, options.dry_run);
    return 2;
  }
  auto prepared = prepare_target(options);
  if (auto* no = std::get_if<Refusal>(&prepared)) {
    // A signal that came meanwhile (blocked, so it did not end pcopy) is what the run ended with,
    // as it would be a moment later: a CI job that cancelled it is told so, not "usage error".
    int signal = 0;
    for (signalfd_siginfo si; !signal && ::read(signals.fd.get(), &si, sizeof si) == sizeof si;) {
      if (ends_the_run(int(si.ssi_signo))) signal = int(si.ssi_signo);
    }
    print_refusal(no->message, no->path, options.json, signal, options.dry_run);
    return signal ? 128 + signal : 2;
  }
  Runner runner(options, std::get<Target>(prepared), std::move(signals));
  return runner.run();
}

}  // namespace pcopy
