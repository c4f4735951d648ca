// The walk's entries become jobs, gathered into batches by directory and handed to the least
// loaded worker with room; and the stop that hands out nothing more (a full disk, --fail-fast).
#include "pcopy/runner.hpp"

#include <fmt/core.h>
#include <sys/stat.h>

#include <algorithm>
#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "pcopy/fs_facts.hpp"
#include "pcopy/protocol.hpp"
#include "pcopy/walker.hpp"

namespace pcopy {

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
    console_.say_error(fmt::format("pcopy: stopping: {} (the remaining entries would fail too)", errno_text(err)));
    // In the report too, as an error of its own (no path at fault): a pipeline reading only the
    // JSON learns that entries were never tried, not just that one failed.
    stats_.errors.add("", fmt::format("stopped: {}: the remaining entries were not copied", errno_text(err)));
    stop_err_ = err;
  }
  stop_dispatching();
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
      if (cf.chunks_left > 0 && --cf.chunks_left > 0) return;  // none left: its End (a file emptied)
      DirNode* dir = cf.begin.dir;
      remove_dst_temp(dir, cf.temp);
      chunked_.erase(info.file);
      return release(dir);
    }
    // Part of a chunked file: the file as a whole fails once its last part is accounted for.
    Result r = fail({}, 0, kStoppedBeforeComplete);
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

void Runner::handle_walk_event(WalkEvent& ev) {
  switch (ev.type) {
    case WalkEvent::Type::Dir: {
      if (!ev.created) return;
      ++stats_.dirs_created;
      if (opt_.dry_run || opt_.verbose)
        console_.out_line((!opt_.dry_run ? "" : ev.replaced ? "replace " : "copy ") +
                          display_path(rel(ev.dir, ev.name)) + "/");
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
  if (opt_.archive && ev.st.st_nlink > 1) return add_link_name(ev, std::move(job));
  add_job(ev.dir, std::move(job));
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
    const auto& batches = books_[i].batch_left;
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
    if (pool_->slot(i).pid > 0 && books_[i].batch_left.empty()) return true;
  return false;
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
      books_[size_t(w)].sent.push_back(id);
      if (info.job.kind == JobKind::FileChunk) {
        ChunkedFile& cf = chunked_.at(info.file);
        info.job.shared = written_elsewhere(cf, w);
        cf.sent.push_back(id);
        cf.started = true;
      }
      batch.jobs.push_back(std::move(info.job));
      infos.push_back(&info);
    }
    books_[size_t(w)].batch_left.push_back(pb.ids.size());
    encode(frame_, batch);
    for (size_t k = 0; k < infos.size(); ++k) infos[k]->job = std::move(batch.jobs[k]);
    pool_->send(size_t(w), frame_);
    frame_.clear();
#ifdef PCOPY_TEST_HOOKS
    // Once, for a test to freeze the run while the parent is busy, not waiting in poll.
    static bool stop_here = std::getenv("PCOPY_TEST_STOP_AFTER_SEND") != nullptr;
    if (std::exchange(stop_here, false)) ::raise(SIGSTOP);
#endif
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

}  // namespace pcopy
