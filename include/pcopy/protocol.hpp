// The messages between the parent and its workers, and their framing on a pipe.
//
// A frame is: u32 payload length (little-endian), u8 type, payload. Strings are u32 length + raw
// bytes, so paths of any length and any byte value travel unchanged; a frame split across reads is
// reassembled by FrameReader. Jobs travel in batches (one directory, many entries) so that a pipe
// write carries hundreds of small files; every job has an id the parent tracks until its result.
#pragma once

#include <sys/stat.h>

#include <array>
#include <cerrno>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <string_view>
#include <vector>

namespace pcopy {

enum class MsgType : uint8_t { Batch = 1, Result = 2, Progress = 3 };

enum class JobKind : uint8_t {
  File = 1,      // regular file: data + metadata, atomically
  Symlink = 2,   // symbolic link, target text unchanged
  Fifo = 3,      // recreated, never opened
  Device = 4,    // character or block device (archive mode, as root)
  HardLink = 5,  // link `name` to the already copied `link_target` (relative to DST)
  // A big file split across workers: Begin creates the temporary (answering its name), Chunks copy
  // [offset, offset+length) into it, End checks the source, sets metadata and renames.
  FileBegin = 6,
  FileChunk = 7,
  FileEnd = 8,
};

// Times as the messages carry them: nanoseconds since the epoch, in 128 bits. The kernel's times
// reach past the years 1677 to 2262 that 64 bits of nanoseconds hold (NTFS's zero time is 1601).
__extension__ typedef __int128 Nanos;
Nanos to_ns(const struct timespec& t);
struct timespec from_ns(Nanos ns);

// What the parent knows from its walk; the worker re-checks what matters on the opened file.
struct Job {
  uint64_t id = 0;
  JobKind kind = JobKind::File;
  // 0 first try; 1 retried alone after a worker died holding it; 2 sent again as it was, its worker
  // dead. After a death the job may have been done already, unreported: -u copies it again rather
  // than find it up to date and call it skipped.
  uint8_t attempt = 0;
  std::string name;     // entry name inside the batch's directory
  std::string dst_name;  // name in the destination directory when it differs (single-file copies)
  uint64_t size = 0;
  Nanos mtime_ns = 0;
  bool known = false;  // size and mtime come from the parent's stat (else the worker looks)
  // -u: the rest of the parent's stat that a skipped entry's metadata is brought up to date from.
  struct Meta {
    uint32_t mode = 0, uid = 0, gid = 0;
    Nanos atime_ns = 0, ctime_ns = 0;
  };
  std::optional<Meta> meta;
  std::string link_target;  // HardLink: DST-relative path of the first copy
  std::string temp;         // FileChunk, FileEnd: the temporary FileBegin created
  uint64_t offset = 0;      // FileChunk
  uint64_t length = 0;      // FileChunk
  // FileChunk: another worker writes a chunk of the same file meanwhile (see Copier::copy_chunk).
  bool shared = false;
  // FileChunk, FileEnd: the identity of the source FileBegin opened, so that a file put in its
  // place (renamed over it, same size and mtime) is not taken for it; 0 when unknown. And of the
  // file it made (or opened, --inplace), which every chunk and the End reopen by name: another
  // file put there meanwhile is not written, nor given the source's owner and mode.
  uint64_t src_dev = 0, src_ino = 0;
  uint64_t dst_dev = 0, dst_ino = 0;
  // HardLink with --manifest, when the group's first copy was not hashed (-u found it up to date):
  // the worker hashes the file it links to, for the link's manifest line.
  bool want_hash = false;
  // -a -u, the name that leads a hard-link group whose copy is in DST: how many of the group's names
  // the walk found to be names of that copy (0: not counted). A copy with more names than that also
  // has names outside the group, which a change of its mode written through the inode would change.
  uint32_t names_in_copy = 0;

  const std::string& target() const { return dst_name.empty() ? name : dst_name; }
  // Takes size (regular files), mtime and, with `meta`, Meta from the parent's stat of the entry.
  void known_from(const struct stat& st, bool meta);
  // The source's stat as far as known: what known_from took (an atime only with Meta).
  struct stat known_stat() const;
};

// What the parent found out about a batch's destination directory as it made or entered it, so
// that workers need not ask again for every directory.
struct DirFacts {
  bool known = false;        // else the worker looks for itself
  bool local = false;        // on a local_fs() (see fs_facts.hpp)
  bool default_acl = false;  // a default ACL, not the mode asked for, shapes what is created there
  // A new directory made under a temporary name (dst_dir) and renamed into place by the parent
  // once everything in it is done: files go straight to their final names inside.
  bool staged = false;
  // Its file system cannot share extents (tmpfs, ext2-4): copy_file_range makes real copies there,
  // so it may serve --reflink=never (elsewhere it may clone, as on XFS and btrfs).
  bool never_shares = false;
  // Others may pass through it but not list it: a file made there under a temporary name (which
  // can be guessed) is made 0600 until it has its final name.
  bool hides_names = false;
  // tmpfs: memory, not a device, is behind it, so copying there is limited by the CPU, and a big
  // file is split for several workers (chunking_helps()).
  bool in_memory = false;
  // An earlier copy of a read-only directory (0555, say), ours: it is made writable (Copier::open_up)
  // only once something is to be written in it, so that an unchanged -u run leaves its ctime alone;
  // the parent gives it its mode back when it is finished.
  bool locked = false;
  // A network file system (NFS, SMB, FUSE not on a block device...): latency is the limit, and a
  // big file is split for several workers (chunking_helps()).
  bool remote = false;
};

struct Batch {
  std::string dir;      // directory relative to SRC/DST ("" = the root)
  std::string dst_dir;  // where it is in DST when that differs (a staged directory)
  DirFacts facts;
  std::vector<Job> jobs;
};

enum class Outcome : uint8_t {
  Copied = 0,
  Replaced = 1,
  Skipped = 2,
  Failed = 3,
  Split = 4,     // File turned out big: its temporary exists, the parent hands out chunks
  Deferred = 5,  // not started: the batch ran long, so the rest goes back to the parent to share
};

// A source gone when its worker came to it (ENOENT): the entry, or the directory of its batch (or
// one above it). Not an error but a warning, as rsync's "file has vanished": what is no longer in
// SRC has nothing to lose, and a live tree (a nightly backup's) always has some.
// DirChanged: the directory of the batch (or one above it) is no longer a directory: a file, or a
// link where links are not followed, took its name. An error, as for an entry that changed type, but
// told once for the directory, as Dir is, not for every entry in it.
enum class Vanished : uint8_t { No = 0, Entry = 1, Dir = 2, DirChanged = 3 };
inline constexpr const char* kVanishedEntry = "vanished from SRC before it was copied";
inline constexpr const char* kVanishedDir = "vanished from SRC before everything in it was copied";
inline constexpr const char* kChangedType = "file changed type as we read it";
// -L: a link of SRC's followed to nothing: an error, not a vanished entry.
inline constexpr const char* kDanglingLink = "symbolic link points to nothing";
// A file the run stopped (a signal, --fail-fast, a full disk) while its copy was under way.
inline constexpr const char* kStoppedBeforeComplete = "not copied: pcopy stopped before it was complete";


// Files at least this big are copied in chunks of kChunkBytes by every worker.
inline constexpr uint64_t kChunkBytes = 64ull << 20;
inline constexpr uint64_t kChunkThreshold = 128ull << 20;
// A file with fewer blocks than its size: it has holes, copied by extents to keep them, never in
// chunks (a chunk writes every byte of its range).
inline bool has_holes(const struct stat& st) { return uint64_t(st.st_blocks) * 512 < uint64_t(st.st_size); }

// A piece of the source's metadata a copy could not be given because the destination refuses
// it (refused_metadata(), below): the copy stands without it, and the run reports it.
struct Unkept {
  std::string what;   // "owner", "mode", "times", "extended attributes"
  std::string value;  // what it should have been: "1000:1000", "4755", the attribute names; or ""
  int32_t err = 0;    // the refusal
  bool operator==(const Unkept&) const = default;
};

// Whether `err`, from giving a copy its source's owner, mode, times or extended attributes, is the
// destination refusing that piece while the data could be written: a chown by root in a user
// namespace (EINVAL) or on FAT, exFAT, CIFS or root-squashed NFS (EPERM), attributes a file system
// does not store (ENOTSUP), a value too big for it (E2BIG, ERANGE), a FUSE file system that does
// not implement the call (ENOSYS). Then the copy stands without it and the run reports it, exit
// status 1, as with cp -a and rsync -a; other errors fail the copy.
inline bool refused_metadata(int err) {
  return err == EPERM || err == EACCES || err == EINVAL || err == ENOTSUP || err == E2BIG || err == ERANGE ||
         err == ENOSYS;
}

struct Result {
  uint64_t id = 0;
  Outcome outcome = Outcome::Copied;
  int32_t err = 0;       // errno when Failed (0 with a detail text for non-OS failures)
  uint64_t bytes = 0;    // data bytes written
  uint64_t size = 0;     // size of the copy
  Nanos mtime_ns = 0;    // mtime of the copy
  std::string detail;    // reason text when err alone does not say it
  Vanished vanished = Vanished::No;  // Failed: because its source is gone
  // Failed with EROFS from a read-only file system mounted inside DST (on the entry, its directory
  // or above), not DST's own: the entry's alone (on_own_mount(), fails_all() in fs_facts.hpp).
  bool own_mount = false;
  std::string temp;      // FileBegin: the temporary created
  uint64_t src_dev = 0, src_ino = 0;  // with `temp`: the identity of the source opened
  uint64_t dst_dev = 0, dst_ino = 0;  // and of `temp`
  std::optional<std::array<uint8_t, 16>> hash;  // XXH3-128 of the contents, when asked for
  // --delete: what was removed (or, in a dry run, would be) for a file to take the place of a
  // directory, as paths from the root.
  std::vector<std::string> deleted;
  std::vector<Unkept> unkept;  // Copied, Replaced, Skipped (-u's refresh): what the copy lacks
};
// `r` as a failure with `err` (an errno, or 0 where `detail` says why).
inline Result fail(Result r, int err, std::string detail = {}) {
  r.outcome = Outcome::Failed;
  r.err = err;
  r.detail = std::move(detail);
  return r;
}

// Bytes written so far in a long file, so the bar moves before the file is done.
struct Progress {
  uint64_t id = 0;
  uint64_t bytes = 0;  // delta since the last report
};

class ProtocolError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Appends whole frames to `out`.
void encode(std::string& out, const Batch& batch);
void encode(std::string& out, const Result& result);
void encode(std::string& out, const Progress& progress);

struct Frame {
  MsgType type;
  std::string payload;
};

Batch decode_batch(std::string_view payload);
Result decode_result(std::string_view payload);
Progress decode_progress(std::string_view payload);

// Collects bytes as they arrive and hands out complete frames.
class FrameReader {
 public:
  void feed(const char* data, size_t size) { buffer_.append(data, size); }
  std::optional<Frame> next();  // throws ProtocolError on a malformed header
  bool empty() const { return buffer_.size() == consumed_; }

 private:
  std::string buffer_;
  size_t consumed_ = 0;
};

}  // namespace pcopy
