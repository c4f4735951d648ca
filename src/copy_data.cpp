// A regular file's data: cloned, copied by copy_file_range or through the buffer, holes kept, and
// hashed for --verify and the manifest.
#include "pcopy/copier.hpp"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <utility>
#include <cerrno>
#include <cstring>

#include "pcopy/copier_internal.hpp"
#include "pcopy/hash.hpp"

namespace pcopy {

namespace {

constexpr size_t kBufferSize = 1 << 20;
constexpr size_t kHoleBlock = 4096;  // a run of zeros this long, so aligned, is left a hole (as cp does)
constexpr uint64_t kCfrChunk = 64ull << 20;      // bytes per copy_file_range call: the bar moves
constexpr uint64_t kReportEvery = 8ull << 20;    // bytes between progress messages
constexpr uint64_t kMapSlice = 8ull << 20;      // bytes of a destination mapped at a time (copy_mapped)
constexpr uint64_t kRecheckBytes = 1 << 20;  // from this size the source is stat()ed again after

// 0 when the open file `fd` still has the size and mtime of `st`; -1 when it has not (it changed),
// or the errno of the fstat.
int recheck(int fd, const struct stat& st) {
  struct stat now;
  if (::fstat(fd, &now) != 0) return errno;
  return now.st_size == st.st_size && to_ns(now.st_mtim) == to_ns(st.st_mtim) ? 0 : -1;
}

// EPERM too: seccomp profiles written before copy_file_range existed (Docker's before 19.03)
// refuse it so, as coreutils finds; an immutable destination then fails the plain copy as well.
bool fallback_errno(int err) {
  return err == EXDEV || err == EINVAL || err == ENOSYS || err == EOPNOTSUPP || err == ENOTTY ||
         err == EBADF || err == ETXTBSY || err == EPERM;
}

// The next extent of data in `fd` at or after `pos`: [data, hole), data >= size where none is left.
// ENXIO: the rest is a hole. Any other failure (a file system or sandbox without SEEK_DATA,
// EINVAL), or an answer behind `pos` or an empty extent: the rest is read as data, as cp does.
// Each extent holds data, so a loop over them always moves on.
std::pair<off_t, off_t> next_extent(int fd, off_t pos, off_t size) {
  off_t data = ::lseek(fd, pos, SEEK_DATA);
  if (data < 0 && errno == ENXIO) data = size;
  else if (data < pos) data = pos;
  off_t hole = data < size ? ::lseek(fd, data, SEEK_HOLE) : data;
  if (hole <= data && data < size) hole = size;
  return {data, hole};
}

}  // namespace

// Hashes a file's contents, holes as the zeros they read as, without reading the holes.
int Copier::hash_file(int fd, Hasher& h) {
  struct stat st;
  if (::fstat(fd, &st) != 0) return errno;
  if (buffer_.empty()) buffer_.resize(kBufferSize);
  off_t size = st.st_size, pos = 0;
  while (pos < size) {
    auto [data, hole] = next_extent(fd, pos, size);
    data = std::min(data, size);
    hole = std::max(hole, data);
    h.update_zeros(uint64_t(data - pos));
    for (off_t off = data; off < hole;) {
      ssize_t n = ::pread(fd, buffer_.data(), size_t(std::min<off_t>(hole - off, off_t(buffer_.size()))), off);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return errno;
      if (n == 0) return 0;
      h.update(buffer_.data(), size_t(n));
      off += n;
    }
    pos = hole;
  }
  return 0;
}

int Copier::copy_data(int in, int out, const struct stat& st, FileCopy& fc) {
  uint64_t size = uint64_t(st.st_size);
  if (try_reflink_ && size > 0) {
    if (::ioctl(out, FICLONE, in) == 0) return cloned(in, st, fc);
    int err = errno;
    if (opt_.reflink == ReflinkMode::Always) {
      fc.clone_failed = true;
      return err;
    }
    if (fallback_errno(err)) try_reflink_ = false;
  }
  bool sparse = has_holes(st);
  int err = 0;
  bool as_stated = true;  // the data ended where the size said
  if (!sparse) {
    // Ask for one byte more than the size: getting exactly the size back means EOF without a
    // second call, and getting more means the file grew.
    err = copy_range(in, out, 0, size + 1, fc, true);
    as_stated = fc.bytes == size;
  } else {
    off_t pos = 0;
    std::vector<std::pair<off_t, off_t>> holes;
    while (!err && as_stated && uint64_t(pos) < size) {
      auto [data, hole] = next_extent(in, pos, off_t(size));
      if (fc.hasher) fc.hasher->update_zeros(uint64_t(data - pos));
      if (data > pos) holes.emplace_back(pos, data);
      if (hole > data) {
        // Sparse by its blocks, yet all data by SEEK_DATA/SEEK_HOLE: the file system cannot tell
        // its holes (FUSE, NFSv3). Its zeros are read, and left holes, as cp --sparse=auto does.
        bool blind = data == 0 && hole == off_t(size);
        uint64_t before = fc.bytes;
        err = copy_range(in, out, data, uint64_t(hole - data), fc, false, blind);
        as_stated = fc.bytes - before == uint64_t(hole - data);
      }
      pos = hole;
    }
    // A file that ends in a hole gets its size from a written last byte, not from ftruncate: ext4
    // writes a truncate's size to its journal at once, and the data only later, so a power cut in
    // between left a copy of the source's size and mtime holding zeros, which every -u run after
    // kept. A written byte moves the size on disk only with the data before it. (On ext4 even
    // an ftruncate to the size the file has already journals it: only a longer file is cut.)
    struct stat now {};
    bool ends_in_hole = !err && as_stated && ::fstat(out, &now) == 0 && uint64_t(now.st_size) < size;
    if (ends_in_hole && ::pwrite(out, "", 1, off_t(size) - 1) != 1) err = errno;
    if (!err && as_stated && !ends_in_hole && uint64_t(now.st_size) > size && ::ftruncate(out, off_t(size)) != 0)
      err = errno;
    // XFS keeps blocks it allocated ahead of each write past the end, once the file's end moves
    // past them (the next extent, the final size): twice the source's space for a few extents.
    // They are given back where the copy holds more than the source and that last byte's block, as
    // cp --sparse=always does; not that block, whose hole would give the size to the journal again.
    blkcnt_t tail_blocks = ends_in_hole ? now.st_blksize / 512 : 0;
    if (!err && as_stated && ::fstat(out, &now) == 0 && now.st_blocks > st.st_blocks + tail_blocks) {
      off_t last_block = (off_t(size) - 1) / now.st_blksize * now.st_blksize;
      for (auto [from, to] : holes) {
        to = std::min(to, last_block);
        if (from < to) ::fallocate(out, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, from, to - from);
      }
    }
    fc.bytes = size;  // holes are copied too, as holes: the file's size is what was copied
  }
  // The rest of the bytes travel in the result: no progress message per small file.
  if (err) return err;
  if (!as_stated) return copy_generated(in, out, st, fc);
  // Rewritten while it was read, at the same size: seen by its time, as tar sees it. Not for small
  // files: read in one call, they have hardly a "while", and one more fstat would cost them ~10%.
  // But for every sparse file (they are few): cut short inside a hole, its new end looks like the
  // start of its last hole, and nothing read stops short.
  return sparse || size >= kRecheckBytes ? recheck(in, st) : 0;
}

// The data did not end where the size said: the file changed as it was read (-1), or it is one
// whose contents are made as they are read and whose size says nothing of them (procfs reports 0
// bytes, sysfs 4096), which the read leaves as it was: same size and mtime. Such a file is copied
// as cp copies it: read again from the start, to its end.
int Copier::copy_generated(int in, int out, const struct stat& st, FileCopy& fc) {
  if (int err = recheck(in, st)) return err;
  if (::ftruncate(out, 0) != 0) return errno;
  if (fc.hasher) fc.hasher->reset();
  fc.bytes = 0;
  fc.generated = true;
  return copy_range(in, out, 0, UINT64_MAX, fc);
}

// A clone holds the source as it was at that instant, which must be the file `st` describes; for
// --verify and --manifest the source is read to hash it (--verify then rereads the clone), and must
// not have changed by the end of that either. -1: it changed.
int Copier::cloned(int in, const struct stat& st, FileCopy& fc) {
  if (fc.hasher) {
    if (int err = hash_file(in, *fc.hasher)) return err;
  }
  if (int err = recheck(in, st)) return err;
  fc.bytes = uint64_t(st.st_size);
  return 0;
}

// Copies [off, off+len) of `in` to the same offsets of `out`, stopping early at EOF. With `to_eof`,
// len is the expected size plus one probe byte: reaching the expected size ends the copy.
namespace {
bool all_zeros(const char* p, size_t n) { return n == 0 || (p[0] == 0 && std::memcmp(p, p + 1, n - 1) == 0); }

// Writes `n` bytes of `buf` at `off`, but for the aligned blocks of zeros among them.
int write_skipping_zeros(int out, const char* buf, size_t n, off_t off) {
  for (size_t at = 0; at < n;) {
    auto block = [&](size_t from) { return std::min(n - from, kHoleBlock - size_t(off + off_t(from)) % kHoleBlock); };
    bool zeros = all_zeros(buf + at, block(at));
    size_t end = at + block(at);
    while (end < n && all_zeros(buf + end, block(end)) == zeros) end += block(end);
    if (!zeros) {
      if (int err = pwrite_all(out, buf + at, end - at, off + off_t(at))) return err;
    }
    at = end;
  }
  return 0;
}
}  // namespace

void Copier::advance(FileCopy& fc, uint64_t bytes) {
  fc.bytes += bytes;
  fc.unreported += bytes;
  if (fc.unreported >= kReportEvery) (*report_)(report_id_, std::exchange(fc.unreported, 0));
}

int Copier::copy_range(int in, int out, off_t off, uint64_t len, FileCopy& fc, bool to_eof, bool make_holes) {
  uint64_t left = len;
  auto account = [&](uint64_t n) {
    advance(fc, n);
    left -= std::min(left, n);
  };
  // copy_file_range may clone on file systems that share extents: not with --reflink=never there.
  // Nor for the second reading of a file that ended early: some file systems' copy_file_range
  // says 0 (EOF) for data that read() returns (procfs and sysfs files; FUSE, NFS and CIFS before
  // Linux 5.19), so an early end is read again with read(), as cp does.
  const bool cfr = try_cfr_ && !fc.hasher && !fc.generated && !fc.buffered && !make_holes &&
                   (opt_.reflink != ReflinkMode::Never || never_shares_);
  while (cfr && left > 0) {
    loff_t off_in = off, off_out = off;
    size_t want = size_t(std::min(left, kCfrChunk));
    ssize_t n = ::copy_file_range(in, &off_in, out, &off_out, want, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (!fallback_errno(errno)) return errno;
      try_cfr_ = false;  // fall through to read/write from here on
      break;
    }
    if (n == 0) return 0;  // EOF: the source ended early
    off += n;
    account(uint64_t(n));
    // Exactly the expected size, and the call stopped short of the probe byte: that was EOF.
    if (to_eof && left == 1 && size_t(n) < want) return 0;
    if (abandoned()) return ECANCELED;
  }
  if (buffer_.empty()) buffer_.resize(kBufferSize);
  while (left > 0) {
    ssize_t n;
    size_t want = size_t(std::min<uint64_t>(left, buffer_.size()));
    do n = ::pread(in, buffer_.data(), want, off);
    while (n < 0 && errno == EINTR);
    if (n < 0) return errno;
    if (n == 0) return 0;
    if (fc.hasher) fc.hasher->update(buffer_.data(), size_t(n));
    if (int err = make_holes ? write_skipping_zeros(out, buffer_.data(), size_t(n), off)
                             : pwrite_all(out, buffer_.data(), size_t(n), off))
      return err;
    off += n;
    account(uint64_t(n));
    if (to_eof && left == 1 && size_t(n) < want) return 0;
    if (abandoned()) return ECANCELED;
  }
  return 0;
}

// Copies [off, off+len) of `in` into `out` (open for reading and writing) through a shared mapping
// of `out`, a slice at a time, for a chunk of a file that other workers write meanwhile (on tmpfs).
// A write() holds the file's inode lock while it copies and while it allocates the pages it fills,
// which on this kind of VM is most of the time (memory freed goes back to the host, which faults
// it in again on first touch): two workers writing one file took turns. The space is reserved
// first (fallocate: a full file system says so, as a write would), the pages are made by
// MADV_POPULATE_WRITE and filled by read(), none of which takes that lock. (One 2 GiB file on
// tmpfs, -j2, 2026-12-03, medians of alternating runs: 0.824 s against 0.891 s through the buffer
// in 31 rounds; 1.060 s against 2.374 s in 9 rounds each started 6 s after the last copy was
// removed, when the host had its memory back; README has the rest.) The mapping is never touched
// from user space: a page that cannot be had fails the madvise or the read, never with SIGBUS.
// What cannot be mapped goes through the buffer.
int Copier::copy_mapped(int in, int out, off_t off, uint64_t len, FileCopy& fc) {
  if (::fallocate(out, 0, off, off_t(len)) != 0) {
    if (!fallback_errno(errno)) return errno;
    return copy_range(in, out, off, len, fc);
  }
  while (len > 0) {
    size_t want = size_t(std::min(len, kMapSlice));
    void* map = ::mmap(nullptr, want, PROT_READ | PROT_WRITE, MAP_SHARED, out, off);
    if (map == MAP_FAILED) break;
    size_t got = 0;
    int err = ::madvise(map, want, MADV_POPULATE_WRITE) == 0 ? 0 : -1;
    while (!err && got < want) {
      ssize_t n = ::pread(in, static_cast<char*>(map) + got, want - got, off + off_t(got));
      if (n > 0) got += size_t(n);
      else if (n == 0) break;  // EOF: the source ended early
      else if (errno != EINTR) err = errno == EFAULT ? -1 : errno;
    }
    ::munmap(map, want);
    off += off_t(got);
    len -= got;
    advance(fc, got);
    if (err > 0) return err;
    if (err < 0) break;  // the rest through the buffer, which says why it fails, if it does
    if (got < want) return 0;
    if (abandoned()) return ECANCELED;
  }
  return len > 0 ? copy_range(in, out, off, len, fc) : 0;
}

}  // namespace pcopy
