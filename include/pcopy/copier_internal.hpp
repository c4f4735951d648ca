// What the Copier's source files (copier.cpp and the parts of the copy split from it, each in a file
// named for its concern) share and no other module needs: how a source is opened and a new file made,
// a job's result before anything is done and after a failure, and what one regular file's copy has
// done so far.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>

#include <cstdint>
#include <string>
#include <utility>

#include "pcopy/options.hpp"
#include "pcopy/protocol.hpp"

namespace pcopy {

class Hasher;

constexpr uint64_t kAnnounceBytes = 1ull << 20;  // a file from this size is announced (copy_opened)
const char* const kChanged = "file changed as we read it";
constexpr int kCreate = O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW;  // a new file, never through a link

inline int source_flags(bool follow) { return O_RDONLY | O_CLOEXEC | O_NOCTTY | (follow ? 0 : O_NOFOLLOW); }

// O_NONBLOCK: the walk saw a regular file, but a FIFO put in its place must not block the open
// (it is then found to be no regular file); on a regular file the flag changes nothing, except
// that a lease another process holds fails the open instead of being waited for: then it is.
int open_source(int dir, const std::string& name, bool follow);

// --inplace: a file whose data may not have reached the disk (its fsync or close failed after its
// metadata was set) is given the time of now, or -u would take it for up to date from then on.
void make_stale(int dir, const std::string& name);

// fsync(), and in test builds an EIO for the file PCOPY_TEST_EIO_FSYNC_NAME names.
int fsync_checked(const Job& job, int fd);

// What a file's owner needs to read and write its user.* attributes; a private file's mode.
constexpr mode_t kOwnerRw = S_IRUSR | S_IWUSR;

// A job's result before anything is done: what the walk knew of it.
inline Result result_for(const Job& job) {
  Result r;
  r.id = job.id;
  r.size = job.size;
  r.mtime_ns = job.mtime_ns;
  return r;
}

// A big file's FileBegin: the identity of the file it made (or opened), `fd`, for its chunks and End
// to check (Job::dst_ino). 0 or an errno.
int note_made(int fd, Result& r);


// The run was abandoned (Copier::stop_when) before the job's copy was put in place: it goes back
// to the parent as not begun, its temporary removed.
inline Result given_up(Result r) {
  r.outcome = Outcome::Deferred;
  r.bytes = 0;
  return r;
}

// chunking_helps() of a file system whose traits are known (DirFacts).
bool chunking_helps_on(bool remote, bool in_memory, const Options& options);

// What one regular file's copy has done so far.
struct FileCopy {
  Hasher* hasher = nullptr;
  uint64_t bytes = 0;
  uint64_t unreported = 0;
  bool clone_failed = false;  // --reflink=always, and the clone was refused
  bool generated = false;     // read to its end, whatever its size said (copy_generated)
  bool buffered = false;      // through the buffer, never copy_file_range (copy_chunk)
};

}  // namespace pcopy
