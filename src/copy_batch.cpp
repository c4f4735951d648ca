// Runs of regular files copied as one batch: their sources opened by one io_uring submission and
// their descriptors closed by another, and which failure ends a batch.
#include "pcopy/copier.hpp"

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "pcopy/copier_internal.hpp"
#include "pcopy/fs_facts.hpp"
#include "pcopy/ring.hpp"

namespace pcopy {

namespace {

constexpr size_t kBatchFiles = 64;               // files per batch: up to 128 fds open
constexpr unsigned kRingEntries = 256;
constexpr size_t kMaxLaterCloses = 32;  // with a batch's 128, within kRingEntries

}  // namespace

bool ends_batch(const Result& r, const Options& options) {
  return r.outcome == Outcome::Failed && r.vanished == Vanished::No &&
         (fails_all(r.err, r.own_mount) || options.fail_fast);
}

void Copier::close_later(UniqueFd fd) {
  if (!fd) return;
  // Closed now (`fd` going out of scope) where no batch will close it: no batching, a broken ring.
  if (batch_limit_ == 0 || batch_limit_ == SIZE_MAX || later_closes_.size() >= kMaxLaterCloses) return;
  if (!ring_->usable()) return;
  later_closes_.push_back(fd.release());
}

size_t Copier::batch_limit() {
  if (batch_limit_ != SIZE_MAX) return batch_limit_;
  batch_limit_ = 0;
  if (!opt_.io_uring) return 0;
  // A batch keeps two descriptors per file open until its closing round; leave room for the rest.
  struct rlimit nofile;
  size_t limit = kBatchFiles;
  if (::getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur != RLIM_INFINITY)
    limit = std::min<size_t>(limit, nofile.rlim_cur > 64 ? (nofile.rlim_cur - 64) / 2 : 0);
  if (limit < 8) return 0;
  ring_ = Ring::create(kRingEntries);
  if (ring_) batch_limit_ = limit;
  return batch_limit_;
}

bool Copier::batchable(const Job& job) const {
  // The plain copy of a regular file: nothing to look at in the destination first.
  return job.kind == JobKind::File && !opt_.dry_run && !opt_.update && !opt_.ignore_existing && ring_ &&
         ring_->usable();
}

void Copier::copy_batch(int src_dir, int dst_dir, std::span<const Job> jobs, const ProgressFn& report,
                        std::vector<Result>& results, const std::function<void(const Result&)>& done) {
  bool reported = false;
  ProgressFn tell = [&](uint64_t id, uint64_t bytes) {
    reported = true;
    report(id, bytes);
  };
  report_ = &tell;
  results.clear();
  open_up(dst_dir);
  std::vector<UniqueFd> in(jobs.size());
  Ring& ring = *ring_;

  // Round 1: open every source (O_NOATIME needs ownership: asked again without it once refused).
  // O_NONBLOCK as in open_source: a name not in the dentry cache is opened by a kernel thread,
  // which would wait for a writer to a FIFO put in its place; a leased file is left to copy_file.
  const int flags = source_flags(opt_.dereference) | O_NONBLOCK;
  for (int pass = 0; pass < 2; ++pass) {
    int f = flags | (noatime_ && pass == 0 ? O_NOATIME : 0);
    std::vector<size_t> asked;
    for (size_t i = 0; i < jobs.size(); ++i)
      if (!in[i]) {
        ring.openat(src_dir, jobs[i].name.c_str(), f, 0);
        asked.push_back(i);
      }
    const std::vector<int>& res = ring.run();
    bool refused = false;
    for (size_t k = 0; k < asked.size(); ++k) {
      if (res[k] >= 0) in[asked[k]].reset(res[k]);
      refused |= res[k] == -EPERM && (f & O_NOATIME);
    }
    if (!refused) break;
    noatime_ = false;
  }

  // Each file as the one-file path copies it, its descriptors left open for round 2. An abandoned
  // run (stop_when) ends after the file in hand, so that what is in place is answered at once.
  std::vector<int> closes = std::move(later_closes_);
  later_closes_.clear();
  closes_ = &closes;
  bool stop = false;
  for (size_t i = 0; i < jobs.size() && !reported && !(i > 0 && stop_ && *stop_); ++i) {
    const Job& job = jobs[i];
    struct stat st;
    int stat_err = !stop && in[i] && ::fstat(in[i].get(), &st) != 0 ? errno : 0;
    // A big file after others ends the run before it: their results go out before a copy that
    // may take a while (see copy_opened), and it starts the next run.
    if (i > 0 && !stop && in[i] && !stat_err && uint64_t(st.st_size) >= kAnnounceBytes) break;
    Result& r = results.emplace_back(result_for(job));
    report_id_ = job.id;
    deleted_.clear();
    unkept_.clear();
    if (stop) {
      r.outcome = Outcome::Deferred;
    } else if (!in[i]) {
      r = copy_file(src_dir, dst_dir, job, r);  // it says why the open failed, if it fails again
    } else if (stat_err) {
      r = fail(r, stat_err);
    } else {
      r = copy_opened(std::move(in[i]), st, dst_dir, job, r);
    }
    r.deleted = std::move(deleted_);
    if (r.outcome != Outcome::Failed) r.unkept = std::move(unkept_);
    note_own_mount(r, dst_dir, job.target());
    stop = stop || ends_batch(r, opt_);
    if (done) done(r);
  }
  closes_ = nullptr;
  for (size_t i = results.size(); i < jobs.size(); ++i)
    if (in[i]) closes.push_back(in[i].release());  // the run ended early: opened again in the next

  // Round 2: close them all.
  for (int fd : closes) ring.close(fd);
  if (!closes.empty()) {
    const std::vector<int>& res = ring.run();
    for (size_t k = 0; k < closes.size(); ++k)
      // Not closed where the ring broke, or refused the operation: closed here. (Any other failure
      // of a close still released the descriptor.)
      if (res[k] == -ECANCELED || res[k] == -EINVAL || res[k] == -EOPNOTSUPP) ::close(closes[k]);
  }
}

}  // namespace pcopy
