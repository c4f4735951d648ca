// The workers as the parent sees them: their results read from their pipes, a worker that dies
// or misbehaves replaced and what it held handed out again, one that stays silent named.
#include "pcopy/runner.hpp"

#include <fmt/core.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <deque>
#include <iterator>
#include <string>
#include <string_view>
#include <vector>

#include "pcopy/paths.hpp"
#include "pcopy/pool.hpp"
#include "pcopy/protocol.hpp"
#include "pcopy/temp_names.hpp"
#include "pcopy/walker.hpp"

namespace pcopy {

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
  run_warning(text);
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
  // to know of, even where every file came out right. Decided before its unsent results are taken,
  // which may stop the run (a full disk, --fail-fast): the death came first.
  bool tell = !said && !interrupted_ && !stopping_ && !abandon_;
  if (!said) take_unsent(w);  // one killed for what it sent is not taken at its word
  uint64_t writing = part_written(w);  // before spawn() clears the in-hand slot
  std::vector<uint64_t> held;
  for (uint64_t id : books_[w].sent)
    if (slot.held.count(id)) held.push_back(id);
  std::vector<DirNode*> dirs;
  for (uint64_t id : held) dirs.push_back(jobs_.at(id).dir);
  remove_temps_of(pid, dirs);
  uint64_t culprit = 0;
  if (slot.held.count(books_[w].reporting)) {
    culprit = books_[w].reporting;
  } else if (!held.empty() && jobs_.at(held.front()).alone) {
    culprit = held.front();
  }
  std::deque<size_t> batches = std::move(books_[w].batch_left);  // unanswered jobs of each batch, oldest first
  slot.held.clear();
  slot.results.reset();
  slot.jobs.reset();
  startup_deaths_ = books_[w].answered == 0 ? startup_deaths_ + 1 : 0;
  books_[w] = WorkerBook{};
  heard_from(w);
  bool give_up = startup_deaths_ > 2 * int(pool_->size()) + 2;
  // A replacement that cannot be forked leaves the others to go on; with none left, nothing can.
  int no_spawn = abandon_ || give_up ? 0 : pool_->spawn(w);
  bool none_left = no_spawn && pool_->live() == 0;
  if (tell) {
    bool again = !give_up && !none_left && !abandon_ && !stopping_;  // not where the run stops
    std::string text = fmt::format("worker {} died ({}){}", pid, describe_wait_status(status),
                                   again ? "; what it held is handed out again" : "");
    run_warning(text);
  }
  std::string why;
  if (give_up) {
    why = fmt::format("workers die before doing any work ({}); giving up: the remaining entries were not copied",
                      describe_wait_status(status));
  } else if (none_left) {
    why = fmt::format("no worker process left: {}: the remaining entries were not copied", errno_text(no_spawn));
  }
  if (!why.empty()) {
    // Run-wide, as a full disk's stop is: no path at fault, and what it means for the rest said.
    console_.say("pcopy: " + why);
    stats_.errors.add("", why);
    abandon_ = true;
  }
  for (uint64_t id : held) {
    JobInfo& info = jobs_.at(id);
    bytes_done_ = sub_saturating(bytes_done_, info.reported);
    info.reported = 0;
    info.worker = -1;
    // With no worker to write it again (none left, or the run stops), the file it was writing in
    // place stays part-written.
    if ((abandon_ || stopping_) && id == writing)
      error(rel(info), "not copied: its worker died before it was complete");
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
    Result r = fail({}, 0, fmt::format("a worker died copying it ({}), also on retry", describe_wait_status(status)));
    r.id = failed;
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

// --inplace: the job whose file dead worker `w` was writing under its final name, which its death
// left holding part of the new data (as a big file whose chunks were being written is); 0 for
// none. Its shared in-hand slot says which, of any size (a small one sends no progress message);
// or the progress it reported. Read before spawn(w).
uint64_t Runner::part_written(size_t w) const {
  uint64_t writing = pool_->in_hand(w);
  if (!writing) writing = books_[w].reporting;
  auto it = jobs_.find(writing);
  return opt_.inplace && pool_->slot(w).held.count(writing) && it != jobs_.end() && !it->second.file ? writing : 0;
}

// The temporaries worker `pid` left in the directories of the jobs it held. With --inplace too,
// whose links, FIFOs and devices go through a temporary as well.
void Runner::remove_temps_of(pid_t pid, const std::vector<DirNode*>& dirs) {
  if (!target_.dst_root) return;
  std::string prefix = temp_prefix(pid);
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

// The answers dead worker `w` had encoded and not yet sent (WorkerShared::unsent), for files it put
// in place: counted and named as if they had come through its pipe, not copied again. One that had
// come (its death fell between the write and clearing the memory) answers no job it still holds.
void Runner::take_unsent(size_t w) {
  if (pool_->slot(w).garbled) return;  // one that sent a malformed frame is not taken at its word
  FrameReader reader;
  std::string_view frames = pool_->unsent(w);
  reader.feed(frames.data(), frames.size());
  try {
    while (auto frame = reader.next())
      if (frame->type == MsgType::Result) {
        Result r = decode_result(frame->payload);
        if (pool_->slot(w).held.count(r.id)) on_result(w, r);
      }
  } catch (const ProtocolError&) {
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
      slot.garbled = true;  // not taken at its word for what it had not sent either (take_unsent)
      return false;
    }
    if (n < 0) return errno == EAGAIN;
    if (n == 0) return false;
  }
}

// Reads and handles results as workers send them, until every pipe reaches EOF or each worker has
// been `timeout_ms` without answering a job. A worker still sending its answers is not cut off: on a
// loaded machine the parent reads slower than the workers wrote while it was away, and a worker
// killed with answers in its buffer leaves files in place that no count or manifest names.
void Runner::collect_results(int timeout_ms) {
  const double grace = timeout_ms / 1000.0;
  std::vector<bool> open(pool_->size());
  std::vector<double> until(pool_->size(), now_s() + grace);
  for (size_t i = 0; i < open.size(); ++i) open[i] = pool_->slot(i).pid > 0 && pool_->slot(i).results;
  for (;;) {
    std::vector<pollfd> fds;
    std::vector<size_t> which;
    double t = now_s(), last = t;
    for (size_t i = 0; i < open.size(); ++i)
      if (open[i] && until[i] > t) {
        fds.push_back({pool_->slot(i).results.get(), POLLIN, 0});
        which.push_back(i);
        last = std::max(last, until[i]);
      }
    if (fds.empty()) return;
    if (::poll(fds.data(), fds.size(), int((last - t) * 1000) + 1) <= 0) continue;
    for (size_t k = 0; k < fds.size(); ++k) {
      if (!fds[k].revents) continue;
      size_t w = which[k], held = pool_->slot(w).held.size();
      open[w] = drain_results(w);
      if (pool_->slot(w).held.size() < held) until[w] = now_s() + grace;
    }
  }
}

void Runner::heard_from(size_t w) {
  books_[w].heard = now_s();
  books_[w].silence_told = false;
}

// A worker that holds jobs and has sent nothing for kSilentWorkerS is named, once per silence, with
// what it holds: a file on a hung network mount, a process stopped by someone. It is waited for
// all the same (a slow worker cannot be told from a stuck one, and its jobs may be half done);
// Ctrl-C or SIGTERM ends the run cleanly.
void Runner::name_silent_workers() {
  double t = now_s();
  // Here again much later than the loop's wait explains: the run was frozen, workers and all (a
  // cgroup freezer, `docker pause`, SIGSTOP to each), in the wait or anywhere else in the loop;
  // since when is not known, so none of the time since the last look is any worker's silence.
  if (double away = t - looked_at_; away > polled_for_ + 1.0)
    for (WorkerBook& book : books_) book.heard = std::min(t, book.heard + away);
  looked_at_ = t;
  for (size_t w = 0; w < pool_->size(); ++w) {
    WorkerSlot& slot = pool_->slot(w);
    if (books_[w].silence_told || slot.held.empty() || t - books_[w].heard < silent_after_s_) continue;
    books_[w].silence_told = true;
    // The file it reported progress on is the one it is on; else results come in bunches, and the
    // first unanswered job is only where its unanswered ones begin.
    bool copying = slot.held.count(books_[w].reporting);
    uint64_t id = copying ? books_[w].reporting : 0;
    for (auto it = books_[w].sent.begin(); !id && it != books_[w].sent.end(); ++it)
      if (slot.held.count(*it)) id = *it;
    auto info = jobs_.find(id);
    std::string raw = info == jobs_.end() ? std::string() : rel(info->second), path = display_path(raw);
    size_t n = slot.held.size();
    std::string count = fmt::format("{} {}", format_count(n), n == 1 ? "entry" : "entries");
    std::string what = copying ? fmt::format(" while copying '{}' ({} unanswered)", path, count)
                               : fmt::format(" ({} unanswered, from '{}')", count, path);
    std::string text = fmt::format("worker {} has sent nothing for {}{}; still waiting for it", slot.pid,
                                   format_duration(t - books_[w].heard), what);
    stats_.warnings.add(raw, text);
    if (!opt_.quiet) console_.say_warning("pcopy: warning: " + text);
  }
}

}  // namespace pcopy
