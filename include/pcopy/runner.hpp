// The parent's side of a run, as run() drives it: the Runner walks SRC into batches of jobs
// (run_dispatch.cpp), hands them to the pool's workers and reads their results (run_workers.cpp,
// run_results.cpp), copies big files in chunks (run_chunks.cpp) and hard links as groups
// (run_links.cpp), and shows its progress (run_progress.cpp) and everything else it says through
// its Console; run.cpp holds the loop that multiplexes all of it, and the end of the run. Shared by
// those files only: other modules know run() (run.hpp) alone.
#pragma once

#include <signal.h>
#include <sys/stat.h>

#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "pcopy/console.hpp"
#include "pcopy/fd.hpp"
#include "pcopy/options.hpp"
#include "pcopy/pool.hpp"
#include "pcopy/progress.hpp"
#include "pcopy/protocol.hpp"
#include "pcopy/report.hpp"
#include "pcopy/signals.hpp"
#include "pcopy/target.hpp"
#include "pcopy/walker.hpp"

namespace pcopy {

constexpr size_t kBatchFiles = 128;           // jobs per message: pipes are never the bottleneck
constexpr uint64_t kBatchBytes = 4ull << 20;  // a big file travels alone
// Sent ahead to a worker: two batches (one being worked on, one waiting), or more while they hold
// fewer than a full batch of jobs, so trees of small directories keep the workers busy too.
constexpr size_t kBatchesPerWorker = 2;
constexpr size_t kMaxBatchesPerWorker = 16;
constexpr size_t kLongDirPath = 64 * 1024;     // of a batch's directory: kBatchesPerWorker in flight
constexpr size_t kEarlyBatchFiles = 16;       // enough jobs to send an idle worker before the batch is full
constexpr int kEventsPerPoll = 1024;          // walk at most this much between looks at the pipes
// -a -u: names of hard-link groups waiting for a name with a copy in DST (see add_link_name),
// beyond the window; past this many (some 800 bytes each) the oldest group is copied.
constexpr size_t kMaxUndecidedNames = 16384;
// And names of groups that have one, waiting for their other names: past this many the oldest is
// led by it. Few, for those of every file linked from outside SRC (whose other names never come)
// hold the workers back: 16,384 made an unchanged run 25% slower on 20,000 such files.
constexpr size_t kMaxLedNames = 1024;
// And names of groups whose copy there has as many names as SRC's file, the group as the last run
// left it as far as the count tells (most of an unchanged run's): they wait for all their names as
// well, apart, so that thousands of them met between two names of a group SRC relinked do not push
// that group out.
constexpr size_t kMaxSettledNames = 8192;
constexpr double kBarInterval = 0.1;          // at most ~10 redraws a second
constexpr double kLineInterval = 2.0;         // --progress=always without a terminal
constexpr int kFinishUpMs = 1000;             // abandoned: how long a worker may go without answering
constexpr double kSilentWorkerS = 120;        // a worker holding jobs this long without a word is named

inline JobKind kind_of(mode_t mode) {
  if (S_ISREG(mode)) return JobKind::File;
  if (S_ISLNK(mode)) return JobKind::Symlink;
  if (S_ISFIFO(mode)) return JobKind::Fifo;
  return JobKind::Device;
}

// What a job weighs in its batch: a batch of kBatchBytes is sealed, and waits for a worker with room.
inline uint64_t weight(const Job& job) {
  switch (job.kind) {
    case JobKind::File: return job.size;
    case JobKind::FileBegin: return kBatchBytes;  // a big file's first step travels alone
    case JobKind::FileChunk: return job.length;
    default: return 0;
  }
}

inline std::string reason_of(const Result& r) {
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
  // leads (see add_link_name).
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
  // The manifest's line for the copy its names share, from the first of them hashed: every name's
  // line gives that copy's size and time with its hash, not what the walk saw of the name.
  struct Line {
    Hash128 hash;
    uint64_t size;
    Nanos mtime_ns;
  };
  std::optional<Line> line;
  std::vector<uint64_t> waiting;  // job ids parked until the first copy exists
};

class Runner {
 public:
  Runner(const Options& o, Target& t, Signals signals)
      : opt_(o),
        target_(t),
        sigfd_(std::move(signals.fd)),
        watched_(signals.watched),
        console_(o, {sigfd_.get(), watched_, [this] { on_signal(); }, [this] { return interrupted_ != 0; },
                     [this](int sig) { suspend(sig); }}) {}
  int run();

 private:
  int start_pool();
  int refuse_start(const std::string& line, const std::string& path);
  void produce();
  void handle_walk_event(WalkEvent& ev);
  void add_link_name(WalkEvent& ev, Job job);  // -a: a name of a file with several
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
  bool written_elsewhere(ChunkedFile& cf, int w);
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
  void take_unsent(size_t w);
  uint64_t part_written(size_t w) const;
  void collect_results(int timeout_ms);
  void remove_temps_of(pid_t pid, const std::vector<DirNode*>& dirs);
  void on_signal();
  void suspend(int sig);
  void sample_rates(double t);
  void finish_link_group(const JobInfo& info, const Result& r);
  void lead_with_next(std::pair<dev_t, ino_t> key, LinkGroup& group);
  void decide_link_groups(size_t keep, size_t keep_led, size_t keep_settled);
  bool is_symlink(const JobInfo& info) const;
  void flush_failed(const std::string& path, int err);
  void complete(JobInfo& info, const Result& r, uint64_t bytes);
  bool should_chunk(const struct stat& st) const;
  void start_chunks(JobInfo& begin, const Result& r);
  void chunk_done(const JobInfo& info, const Result& r);
  void queue_end(uint64_t file);
  // A file the walk counted at `from` bytes was found at `to` when copied: the total follows.
  void resize_total(uint64_t from, uint64_t to);
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
  // A warning of the run as a whole, of no one path (a worker's death, fewer workers than asked).
  void run_warning(const std::string& text);
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
  Console console_;

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
  // What the parent keeps of each worker, by its slot; a new one (a dead one's replacement) starts
  // with a fresh book.
  struct WorkerBook {
    std::deque<size_t> batch_left;  // unanswered jobs of each batch sent, oldest first
    std::deque<uint64_t> sent;      // ids in the order it works on them
    uint64_t answered = 0;          // results since it was started
    uint64_t reporting = 0;         // the job its last Progress message was about
    // When it last sent anything, or was given work while it held none; and whether its silence
    // since has been told (see name_silent_workers).
    double heard = 0;
    bool silence_told = false;
  };
  std::vector<WorkerBook> books_;
  double silent_after_s_ = kSilentWorkerS;
  double looked_at_ = 0;    // when name_silent_workers last looked
  double polled_for_ = 0;   // the longest the loop's last poll was to wait, in seconds
  int startup_deaths_ = 0;          // workers in a row that died before answering anything

  Stats stats_;
  uint64_t files_total_ = 0, bytes_total_ = 0, files_done_ = 0, bytes_done_ = 0;
  double start_ = now_s();
  double last_draw_ = 0;
  double last_manifest_ = 0;  // when the manifest's lines were last written
  RateMeter meter_;
  RateMeter work_meter_;  // work_of(files, bytes): for the ETA
  bool stat_entries_ = true;
  // -u: workers bring skipped entries' metadata up to date from the walk's stat (Job::Meta).
  const bool refresh_skipped_ = opt_.update && !opt_.ignore_existing && !opt_.dry_run;
  // -a -u into a DST that was there: a hard-link group's first name met may be new (a link added
  // in SRC) while another has its copy in DST already. See add_link_name. Not with
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
};

}  // namespace pcopy
