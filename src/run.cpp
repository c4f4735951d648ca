#include "pcopy/run.hpp"

#include <fcntl.h>
#include <fmt/core.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <new>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>
#include <variant>
#include <vector>

#include "pcopy/fs_facts.hpp"
#include "pcopy/mirror.hpp"
#include "pcopy/runner.hpp"
#include "pcopy/worker.hpp"

namespace pcopy {

int Runner::run() {
  // The parent stats every entry only when something needs it before the copy: byte totals for
  // the progress display, hard links, -L, a dry run's byte count. Otherwise getdents' d_type is
  // enough, workers look at sizes themselves, and the parent stays off the critical path.
  stat_entries_ = console_.bar() || console_.status_lines() || opt_.archive || opt_.dereference || opt_.dry_run;
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
    // Refused as the other failures to begin are, what was made for the run removed (`ulimit -v`:
    // it was left, by "pcopy: Cannot allocate memory" from main).
    try {
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
            if (trouble.lost) {
              stats_.files_copied = sub_saturating(stats_.files_copied, dir.reported.files);
              stats_.links_copied = sub_saturating(stats_.links_copied, dir.reported.links);
              stats_.dirs_created = sub_saturating(stats_.dirs_created, 1);
              stats_.bytes_copied = sub_saturating(stats_.bytes_copied, dir.reported.bytes);
            }
          },
          stat_entries_);
    } catch (const std::bad_alloc&) {
      walker_.reset();
      return refuse_start("pcopy: cannot make room to list directories in: " + errno_text(ENOMEM), "");
    }
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
      count = sub_saturating(count, 1);
      if (S_ISREG(st.st_mode)) stats_.bytes_copied = sub_saturating(stats_.bytes_copied, uint64_t(st.st_size));
    });
    walker_->on_merged([this](const DirNode&) { stats_.dirs_created = sub_saturating(stats_.dirs_created, 1); });
  }

  // Emptied only once the run goes ahead, its walk begun: a run refused leaves it as it was.
  if (target_.manifest) {
    if (int err = manifest_.open(std::move(target_.manifest))) {
      std::string line =
          fmt::format("pcopy: cannot write manifest '{}': {}", display_path(opt_.manifest_shown()), errno_text(err));
      return refuse_start(line, opt_.manifest_shown());
    }
    // As stdout is written: a reader that stopped reading (a FIFO, `>(jq ...)`) holds off no signal,
    // and a terminal (`--manifest /dev/stdout`) gets its lines on a line of their own, not the bar's.
    manifest_.set_writer(
        [this](int fd, std::string_view text) { return console_.write_beside(fd, text, manifest_.is_pipe()); });
  }

  tick(true);
  while (!abandon_) {
    if (walker_) produce();
    dispatch();
    if ((walk_done_ || stopping_) && jobs_.empty()) break;
    poll_once(timeout_ms());
    name_silent_workers();
    tick(false);
    if (auto due = console_.out_due(); due && now_s() >= *due) console_.flush_out();
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
  return kExitRefused;
}

// Forks the workers; 0, or 2 when not one can be (`ulimit -u`): the run is refused and the
// directories made for DST are removed. With fewer than asked, the run goes on with those.
int Runner::start_pool() {
  std::vector<int> keep{target_.src_root.get(), target_.dst_root.get(), target_.dst_fs.get()};
  const Options& opt = opt_;
  bool has_dst = target_.dst_root.valid(), has_fs = target_.dst_fs.valid();
  pool_.emplace(opt_.jobs, keep, [&opt, has_dst, has_fs](int job_fd, int result_fd, WorkerShared* shared) {
    return run_worker(opt, job_fd, result_fd, shared, 5, has_dst ? 6 : -1, has_fs ? 7 : -1);
  });
  if (int err = pool_->start_error()) {
    size_t live = pool_->live();
    if (live == 0) {
      pool_.reset();
      target_.remove_made();
      print_refusal(fmt::format("pcopy: cannot start a worker process: {}", errno_text(err)), "", opt_.json, 0,
                    opt_.dry_run);
      return kExitRefused;
    }
    std::string text = fmt::format("started {} of {} worker processes: {}", live, opt_.jobs, errno_text(err));
    run_warning(text);
  }
  WorkerBook fresh;
  fresh.heard = looked_at_ = now_s();
  books_.assign(pool_->size(), fresh);
#ifdef PCOPY_TEST_HOOKS
  if (const char* s = std::getenv("PCOPY_TEST_SILENT_WORKER_S")) silent_after_s_ = std::atof(s);
#endif
  window_ = std::max<size_t>(4096, size_t(opt_.jobs) * kBatchFiles * 4);
  defer_new_links_ = opt_.archive && opt_.update && !opt_.ignore_existing && !target_.single_file &&
                     target_.dst_root.valid() && target_.made_dirs.empty();
  jobs_.reserve(window_ + kEventsPerPoll);  // no rehashing as the window fills
  return 0;
}

void Runner::poll_once(int timeout) {
  std::vector<pollfd> fds;
  fds.push_back({sigfd_.get(), POLLIN, 0});
  for (size_t i = 0; i < pool_->size(); ++i) {
    WorkerSlot& s = pool_->slot(i);
    fds.push_back({s.results.get(), POLLIN, 0});
    fds.push_back({s.out.empty() ? -1 : s.jobs.get(), POLLOUT, 0});
  }
  polled_for_ = timeout < 0 ? HUGE_VAL : timeout / 1000.0;
  int n = ::poll(fds.data(), fds.size(), timeout);
  if (n <= 0) return;
  if (fds[0].revents) on_signal();
  if (abandon_) return;
  for (size_t i = 0; i < pool_->size() && !abandon_; ++i) {
    if (fds[2 + 2 * i].revents & (POLLOUT | POLLERR)) pool_->flush(i);
    if (fds[1 + 2 * i].revents & (POLLIN | POLLHUP | POLLERR)) read_worker(i);
  }
}

int Runner::timeout_ms() const {
  if (!walk_done_ && !stopping_ && jobs_.size() - undecided_names_ < window_) return 0;
  // Until the next thing due: a redraw or status line, buffered -v lines.
  std::optional<double> due;
  if (console_.bar() || console_.status_lines()) due = last_draw_ + (console_.bar() ? kBarInterval : kLineInterval);
  if (auto out = console_.out_due()) due = std::min(due.value_or(HUGE_VAL), *out);
  if (manifest_.pending()) due = std::min(due.value_or(HUGE_VAL), last_manifest_ + kOutInterval);
  bool held = false;
  for (size_t w = 0; w < pool_->size(); ++w) {
    if (pool_->slot(w).held.empty()) continue;
    held = true;
    if (!books_[w].silence_told) due = std::min(due.value_or(HUGE_VAL), books_[w].heard + silent_after_s_);
  }
  // While workers hold work, a wait of a second at most: one that comes back much later tells of
  // the run frozen whole (see name_silent_workers), which no worker's silence should count.
  if (held) due = std::min(due.value_or(HUGE_VAL), now_s() + 1.0);
  if (!due) return -1;
  return std::max(1, int((*due - now_s()) * 1000) + 1);
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
  if (sig == SIGTSTP) console_.clear_bar();  // from the terminal: the shell's "Stopped" goes on a clean line
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
  for (WorkerBook& book : books_) book.heard += stopped_for;
  meter_.skip(stopped_for);  // nor is it time the copy took, for the rate and the ETA
  work_meter_.skip(stopped_for);
}

int Runner::finish() {
  if (abandon_) {
    // Abandon the files in flight: no more jobs; each worker stops at the file in hand (putting
    // nothing more in place, Copier::stop_when), sends its results and exits (one that answers
    // nothing for a while is killed); what they finished is reported. Then the temporaries of
    // what they did not finish are removed.
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
      if (!alive[w]) take_unsent(w);  // answers a killed worker had not sent
      if (uint64_t writing = part_written(w))
        error(rel(jobs_.at(writing)), kStoppedBeforeComplete);
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
      run_warning(text);
    } else {
      for (auto& [id, cf] : chunked_) remove_dst_temp(cf.begin.dir, cf.temp);
    }
    // A big file rewritten --inplace that its chunks had not finished is named, after a signal
    // too: its final name holds part of the new data, its mode that of a copy being written (a
    // file copied whole is finished by its worker, or not begun).
    if (opt_.inplace)
      for (auto& [id, cf] : chunked_) error(rel(cf.begin), kStoppedBeforeComplete);
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
  // A worker that died after its last job (while the removals ran, say) held nothing, but its death
  // is still said, as any other is: it went unsaid.
  for (size_t w = 0; w < pool_->size() && !interrupted_ && !stopping_ && !abandon_; ++w) {
    pid_t pid = pool_->slot(w).pid;
    int status = pool_->reap(w, false);
    if (status > 0 && WIFSIGNALED(status))
      run_warning(fmt::format("worker {} died ({})", pid, describe_wait_status(status)));
  }
  pool_->close_jobs();
  pool_->shutdown(5000);

  if (console_.bar()) {
    tick(true);
    console_.clear_bar();
  } else if (console_.status_lines()) {
    sample_rates(now_s());
    console_.draw(progress_state());
  }
  console_.flush_out();
  if (int err = manifest_.close()) {
    std::string why = err == EAGAIN ? "cut short: its reader took nothing more once interrupted" : errno_text(err);
    console_.say(fmt::format("pcopy: cannot write manifest '{}': {}", display_path(opt_.manifest_shown()), why));
    stats_.errors.add(opt_.manifest_shown(), why);
  }

  // What a script reads (-v, -n and --json on stdout; with --json, -v and -n on stderr) is
  // incomplete: an error of the run, in the summary's count and the status, as any other.
  auto output_failed = [&](int err, std::string_view where) {
    std::string why = err == EAGAIN
                          ? fmt::format("{} was cut short: its reader took nothing more once interrupted", where)
                          : fmt::format("cannot write to {}: {}", where, errno_text(err));
    console_.say("pcopy: " + why);
    stats_.errors.add("", why);
  };
  bool stdout_told = console_.stdout_err() != 0;
  if (console_.stdout_err()) output_failed(console_.stdout_err(), "standard output");
  if (console_.lines_err())
    output_failed(console_.lines_err(),
                  opt_.dry_run ? "standard error (the -n lines)" : "standard error (the -v lines)");
  stats_.elapsed_s = now_s() - start_;
  stats_.interrupted = interrupted_ != 0;
  stats_.dry_run = opt_.dry_run;
  stats_.exit_status = interrupted_ ? exit_for_signal(interrupted_)
                                    : (stats_.errors.empty() ? kExitCopied : kExitSomeFailed);
  // The report before the summary: one that cannot be written is still counted there.
  if (opt_.json) write_json_report(stats_, [&](std::string_view piece) { console_.write_out(piece); });
  if (console_.stdout_err() && !stdout_told) {
    output_failed(console_.stdout_err(), "standard output");
    if (stats_.exit_status == 0) stats_.exit_status = 1;
  }
  if (!opt_.quiet) {
    std::string line = summary_line(stats_, opt_.update || opt_.ignore_existing, opt_.delete_extraneous);
    if (opt_.dst.empty()) line += fmt::format(" into '{}'", display_path(target_.dst_display));
    console_.say(line);
  }
  // Signals stay blocked to the exit: a second Ctrl-C, or `timeout` signalling both pcopy and its
  // process group, must not kill it half-way through the report, nor after it, which would end pcopy
  // with another status than the one the report gave. Those that came meanwhile are dropped.
  signalfd_siginfo si;
  while (::read(sigfd_.get(), &si, sizeof si) == sizeof si) {
  }
  return stats_.exit_status;
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
    const std::string why = fmt::format(
        "--delete {} nothing extraneous: reading SRC failed, so nothing in DST is known to be extraneous",
        opt_.dry_run ? "would delete" : "deleted");
    console_.say("pcopy: " + why);
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
        console_.say("pcopy: stopping at the first error (--fail-fast): " + rest);
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
    console_.say_error(fmt::format("pcopy: cannot delete '{}': {}", display_path(path), errno_text(err)));
    stats_.errors.add(path, reason);
    failed = opt_.fail_fast;
  };
  cb.flush_failed = [&](const std::string& rel, int err) {
    flush_failed(rel.empty() ? "." : rel, err);
    failed = opt_.fail_fast;
  };
  // A directory of DST not looked into (SRC has it): not itself one to delete.
  cb.unlisted = [&](const std::string& rel, int err) {
    std::string path = rel.empty() ? "." : rel;
    console_.say_error(
        fmt::format("pcopy: cannot look for entries to delete in '{}': {}", display_path(path), errno_text(err)));
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

namespace {

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
    return kExitRefused;
  }
  if (std::string why = fd_limit_refusal(options.jobs); !why.empty()) {
    print_refusal(why, "", options.json, 0, options.dry_run);
    return kExitRefused;
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
    return signal ? exit_for_signal(signal) : kExitRefused;
  }
  // Out of memory (`ulimit -v`) where nothing says more (main() prints it): what was made for the
  // run and is still empty goes, as after a refusal.
  Target& target = std::get<Target>(prepared);
  try {
    Runner runner(options, target, std::move(signals));
    return runner.run();
  } catch (const std::bad_alloc&) {
    target.remove_made();
    throw;
  }
}

}  // namespace pcopy
