// What the workers answer: each job's result counted, told (errors, warnings, -v and -n lines),
// written to the manifest, and its hard-link group or chunked file taken further.
#include "pcopy/runner.hpp"

#include <fcntl.h>
#include <fmt/core.h>
#include <sys/stat.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "pcopy/protocol.hpp"
#include "pcopy/walker.hpp"

namespace pcopy {

std::string Runner::rel(DirNode* dir, const std::string& name) const {
  if (!walker_) return name;
  return walker_->rel_path(dir, name);
}

std::string Runner::rel(const JobInfo& info) const { return rel(info.dir, info.job.name); }

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
  console_.say_error(line);
  stats_.errors.add(path, reason);
  if (opt_.fail_fast && !abandon_) {
    // Said as a full disk's stop is, in the report too: one failed entry is not a tree mostly missing.
    if (work_left()) {
      std::string rest = opt_.delete_extraneous ? "the remaining entries were not copied, and nothing was deleted"
                                                : "the remaining entries were not copied";
      console_.say_error(fmt::format("pcopy: stopping at the first error (--fail-fast): {}", rest));
      stats_.errors.add("", "stopped: --fail-fast: " + rest);
    }
    // Abandoned first: what the stop itself fails (a big file whose chunks it drops) is an error
    // like any other, not a first error that stops the run again.
    abandon_ = true;  // what the workers hold is abandoned: nothing more is copied
    stop_dispatching();
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
  if (path.empty()) path.push_back('.');  // not `= "."`: g++ 12 -O2 warns of it here (-Wrestrict)
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
  if (!opt_.quiet) console_.say_warning(fmt::format("pcopy: warning: '{}': {}", display_path(path), text));
}

void Runner::run_warning(const std::string& text) {
  stats_.warnings.add("", text);
  if (!opt_.quiet) console_.say_warning("pcopy: warning: " + text);
}

void Runner::on_progress(size_t w, const Progress& p) {
  books_[w].reporting = p.id;
  auto it = jobs_.find(p.id);
  if (it == jobs_.end()) return;
  it->second.reported += p.bytes;
  bytes_done_ = add_saturating(bytes_done_, p.bytes);
}

void Runner::on_result(size_t w, const Result& r) {
  auto it = jobs_.find(r.id);
  if (it == jobs_.end()) return;
  pool_->slot(w).held.erase(r.id);
  ++books_[w].answered;
  auto& left = books_[w].batch_left;
  if (!left.empty() && --left.front() == 0) left.pop_front();
  auto& sent = books_[w].sent;
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
  bytes_done_ = add_saturating(bytes_done_, sub_saturating(r.bytes, info.reported));
  if (r.outcome == Outcome::Split) {
    // The worker found the file big: from here on it is copied like a FileBegin.
    resize_total(info.job.size, r.size);
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
      // Begun: its temporary (or, with --inplace, its final name) is there for the chunks. With
      // none, it was copied whole (an append-only directory) and is done as any file is.
      if ((r.outcome == Outcome::Copied || r.outcome == Outcome::Replaced) && !r.temp.empty())
        return start_chunks(info, r);
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

// The final word on one entry: counts, messages, manifest, hard-link group, directory.
void Runner::complete(JobInfo& info, const Result& r, uint64_t bytes) {
  ++files_done_;
  // What is not copied leaves the total: a finished run ends at 100%, and the ETA counts only what
  // is left (-u skips most of a nightly run's bytes).
  if ((r.outcome == Outcome::Skipped || r.outcome == Outcome::Failed) && info.job.kind != JobKind::HardLink)
    bytes_total_ = sub_saturating(bytes_total_, sub_saturating(info.job.size, bytes));
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
      if (opt_.dry_run) console_.out_line("skip " + display_path(dst_path()));
      break;
    case Outcome::Copied:
    case Outcome::Replaced:
      // A file grown or shrunk since the walk counted it: a finished run still ends at 100%.
      if (info.job.known && (info.job.kind == JobKind::File || info.job.kind == JobKind::FileBegin))
        resize_total(info.job.size, r.size);
      if (is_symlink(info)) {
        ++stats_.links_copied;
      } else {
        ++stats_.files_copied;
      }
      stats_.bytes_copied = add_saturating(stats_.bytes_copied, bytes);
      if (info.dir && info.dir->facts.staged) {  // counted back out if it is never put in place
        ++(is_symlink(info) ? info.dir->reported.links : info.dir->reported.files);
        info.dir->reported.bytes = add_saturating(info.dir->reported.bytes, bytes);
      }
      if (opt_.dry_run) {
        console_.out_line((r.outcome == Outcome::Replaced ? "replace " : "copy ") + display_path(dst_path()));
      } else if (opt_.verbose) {
        console_.out_line(display_path(dst_path()));
      }
      if (manifest_.is_open()) {
        std::optional<LinkGroup::Line> line;
        if (r.hash) line = LinkGroup::Line{*r.hash, r.size, r.mtime_ns};
        // A hard link names its group's copy, which the source may have changed since the walk.
        auto group = info.member_of ? links_.find(*info.member_of) : links_.end();
        if (group != links_.end()) {
          if (!group->second.line) group->second.line = line;  // hashed by the worker (want_hash)
          if (!line) line = group->second.line;
        }
        if (line) manifest_.add(dst_path(), line->size, line->mtime_ns, line->hash);
      }
      break;
    case Outcome::Split:
    case Outcome::Deferred: break;  // handled in on_result, never final
  }
  if (info.link_key) finish_link_group(info, r);
  release(info.dir);
}

void Runner::resize_total(uint64_t from, uint64_t to) {
  bytes_total_ = add_saturating(sub_saturating(bytes_total_, from), to);
}

void Runner::note_deleted(const std::string& path) {
  ++stats_.files_deleted;
  if (opt_.dry_run) {
    console_.out_line("delete " + display_path(path));
  } else if (opt_.verbose) {
    console_.out_line("deleted " + display_path(path));
  }
}

}  // namespace pcopy
