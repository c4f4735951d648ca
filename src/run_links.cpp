// -a: hard links. A group of names of one file is copied once, by the name that leads it, and
// its other names are linked to that copy, batched by directory. With -u into a DST that was there,
// a group waits until its names are met, so that the name whose copy is in DST leads.
#include "pcopy/runner.hpp"

#include <fcntl.h>
#include <fmt/core.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "pcopy/protocol.hpp"
#include "pcopy/up_to_date.hpp"
#include "pcopy/walker.hpp"

namespace pcopy {

// -a: a name of a file with several. Its group's first name met is copied (or, with -u into a DST
// that was there, the group waits, see below); the others are linked to that copy once it is done.
void Runner::add_link_name(WalkEvent& ev, Job job) {
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
      job.want_hash = manifest_.is_open() && !group.line;
      add_job(ev.dir, std::move(job)).member_of = key;
    } else {
      wait(std::move(job));
    }
    return;
  }
  add_job(ev.dir, std::move(job), key);
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

// Whether the entry is a symlink: a hard link's own job says only that it is another name.
bool Runner::is_symlink(const JobInfo& info) const {
  if (info.job.kind == JobKind::Symlink) return true;
  auto group = info.member_of ? links_.find(*info.member_of) : links_.end();
  return group != links_.end() && group->second.symlink;
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
  group.line = r.hash ? std::optional(LinkGroup::Line{*r.hash, r.size, r.mtime_ns}) : std::nullopt;
  for (uint64_t id : waiting) {
    JobInfo parked = std::move(jobs_.at(id));
    jobs_.erase(id);
    parked.job.link_target = group.first;
    parked.job.want_hash = manifest_.is_open() && !group.line;
    add_ready_link(parked.dir, std::move(parked.job), *parked.member_of);
  }
}

}  // namespace pcopy
