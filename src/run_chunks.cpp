// Big files copied in chunks by several workers: the parent's side. FileBegin makes the temporary,
// the chunks go out one per batch to idle workers, and FileEnd finishes the file once all are in.
#include "pcopy/runner.hpp"

#include <fmt/core.h>
#include <stdio.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "pcopy/paths.hpp"
#include "pcopy/protocol.hpp"
#include "pcopy/temp_names.hpp"
#include "pcopy/walker.hpp"

namespace pcopy {

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

// Whether a worker other than `w` holds a chunk of the file now.
bool Runner::written_elsewhere(ChunkedFile& cf, int w) {
  chunks_in_flight(cf);
  return std::any_of(cf.sent.begin(), cf.sent.end(), [&](uint64_t id) { return jobs_.at(id).worker != w; });
}

bool Runner::should_chunk(const struct stat& st) const {
  // Hashing (--verify, --manifest) reads the file in order; a sparse file is copied by extents.
  return chunk_ && opt_.jobs > 1 && uint64_t(st.st_size) >= kChunkThreshold && !opt_.dry_run && !opt_.verify &&
         opt_.manifest.empty() && !has_holes(st);
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
    return complete(begin, fail(r, 0, kStoppedBeforeComplete), 0);
  }
  std::string temp = r.temp;
  if (!opt_.inplace) {
    // The temporary is renamed after the parent, which outlives the workers: named after the
    // worker that made it, it would be a leftover to a second run into DST once that worker died,
    // while the others still write it. Its number holds the run's, as every temporary's does.
    bool secret = begin.dir && begin.dir->facts.hides_names;
    temp = temp_name(::getpid(), false, secret, file);
    if (int err = rename_dst_temp(begin.dir, r.temp, temp)) {
      remove_dst_temp(begin.dir, r.temp);
      return complete(begin, fail(r, err), 0);
    }
  }
  // The file as Begin found it, which may have grown or shrunk since the walk.
  resize_total(begin.job.size, r.size);
  begin.job.size = r.size;
  begin.job.mtime_ns = r.mtime_ns;
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
  if (batches.empty()) return queue_end(file);  // emptied since the walk: nothing to write
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
  queue_end(info.file);
}

// Every chunk of the file is in: its End goes first in the queue.
void Runner::queue_end(uint64_t file) {
  ChunkedFile& cf = chunked_.at(file);
  Job end = cf.begin.job;
  end.id = next_id_++;
  end.kind = JobKind::FileEnd;
  end.temp = cf.temp;
  end.attempt = 0;
  JobInfo ei{cf.begin.dir, std::move(end)};
  ei.file = file;
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
  // The NFS client and FUSE file systems without rename2 take no flags (EINVAL), a seccomp profile
  // that predates the call refuses it (EPERM, ENOSYS). The name is this run's own: whatever has it
  // is a leftover of a dead process that had the same pid.
  if (errno != EINVAL && errno != ENOSYS && errno != EPERM) return errno;
  return ::renameat(fd, from.c_str(), fd, to.c_str()) == 0 ? 0 : errno;
}

void Runner::remove_dst_temp(DirNode* dir, const std::string& temp) {
  if (opt_.inplace || temp.empty() || !target_.dst_root) return;
  int fd = open_dir_beneath(target_.dst_root.get(), walker_ ? walker_->dst_rel_path(dir) : std::string(), false);
  if (fd < 0) return;
  ::unlinkat(fd, temp.c_str(), 0);
  ::close(fd);
}

}  // namespace pcopy
