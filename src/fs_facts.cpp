// Facts about where copies go: a file system's type and traits (local, in memory, extents never
// shared, big files worth splitting), ACLs present, and whether a read-only file system met is one
// mounted inside DST.
#include "pcopy/fs_facts.hpp"

#include <fcntl.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>  // ST_RDONLY, also statfs's f_flags
#include <sys/sysmacros.h>
#include <sys/xattr.h>

#include <cerrno>
#include <cstdlib>

#include "pcopy/copier_internal.hpp"
#include "pcopy/fd.hpp"

namespace pcopy {

namespace {
// The file system's magic number (statfs f_type), 0 if it cannot be told.
long fs_type(int dir) {
  struct statfs fs;
  return ::fstatfs(dir, &fs) == 0 ? long(fs.f_type) : 0;
}

bool local_type(long type) {
  switch (type) {
    case TMPFS_MAGIC:
    case EXT4_SUPER_MAGIC:  // also ext2 and ext3
    case XFS_SUPER_MAGIC:
    case BTRFS_SUPER_MAGIC: return true;
    default: return false;
  }
}

bool never_shares_type(long type) { return type == TMPFS_MAGIC || type == EXT4_SUPER_MAGIC; }

// A network file system, where each request waits for a server: NFS, SMB, Ceph, 9P, AFS, Coda,
// and FUSE but on a block device (fuseblk: ntfs-3g, exfat-fuse on a disk, whose device is the
// limit). Not the local ones outside local_type() either (FAT, exFAT, NTFS, F2FS...): a chunk
// written ahead of the end there makes FAT fill the gap with zeros first, on a USB stick twice
// the writes.
bool remote_type(long type, int dir) {
  constexpr long kCifs = 0xFF534D42, kSmb2 = 0xFE534D42, kCeph = 0x00c36400, k9p = 0x01021997;
  constexpr long kAfs = 0x5346414F, kCoda = 0x73757245, kFuse = 0x65735546;
  switch (type) {
    case NFS_SUPER_MAGIC:
    case SMB_SUPER_MAGIC:
    case kCifs:
    case kSmb2:
    case kCeph:
    case k9p:
    case kAfs:
    case kCoda: return true;
    case kFuse: {
      struct stat st;
      return ::fstat(dir, &st) == 0 && major(st.st_dev) == 0;  // no block device behind it
    }
    default: return false;
  }
}

bool in_memory_type(long type) { return type == TMPFS_MAGIC; }
}  // namespace

bool local_fs(int dir) { return local_type(fs_type(dir)); }

int clone_refusal(int src, int dst_dir) {
  struct stat s, d;
  if (dst_dir < 0 || ::fstat(src, &s) != 0 || !S_ISREG(s.st_mode) || s.st_size == 0 || ::fstat(dst_dir, &d) != 0) return 0;
  long from = fs_type(src), to = fs_type(dst_dir);
  if (from != to) return EXDEV;  // two file systems: the kernel refuses before anything else
  if (never_shares_type(to)) return s.st_dev == d.st_dev ? EOPNOTSUPP : EXDEV;
  // Btrfs subvolumes differ in st_dev but share their file system: only the kernel knows.
  return to != BTRFS_SUPER_MAGIC && s.st_dev != d.st_dev ? EXDEV : 0;
}

bool never_shares_extents(int dir) { return never_shares_type(fs_type(dir)); }

bool in_memory_fs(int dir) { return in_memory_type(fs_type(dir)); }

DirFacts dir_facts(int dir, const DirFacts* same_fs) {
  DirFacts f;
  f.known = true;
  f.default_acl = has_default_acl(dir);
  if (same_fs) {
    f.local = same_fs->local;
    f.never_shares = same_fs->never_shares;
    f.in_memory = same_fs->in_memory;
    f.remote = same_fs->remote;
  } else {
    long type = fs_type(dir);
    f.local = local_type(type);
    f.never_shares = never_shares_type(type);
    f.in_memory = in_memory_type(type);
    f.remote = remote_type(type, dir);
  }
  return f;
}

namespace {

// Whether `fd` has the ACL attribute `name`; where that cannot be told, assumed so.
bool has_acl_xattr(int fd, const char* name) {
  if (::fgetxattr(fd, name, nullptr, 0) >= 0) return true;
  return errno != ENODATA && errno != ENOTSUP && errno != EOPNOTSUPP;
}

}  // namespace

bool has_default_acl(int dir) { return has_acl_xattr(dir, "system.posix_acl_default"); }

bool has_access_acl(int fd) { return has_acl_xattr(fd, "system.posix_acl_access"); }

bool chunking_helps_on(bool remote, bool in_memory, const Options& options) {
  if (options.reflink == ReflinkMode::Always) return false;  // chunks are copied, never cloned
#ifdef PCOPY_TEST_HOOKS
  if (std::getenv("PCOPY_TEST_CHUNK_LOCAL")) return true;  // to test chunking on the test machine
#endif
  return remote || in_memory;
}

bool chunking_helps(int dst_dir, const Options& options) {
  long type = fs_type(dst_dir);
  return chunking_helps_on(remote_type(type, dst_dir), in_memory_type(type), options);
}

bool on_own_mount(int dst_root, int dir, const char* name) {
  // Device and mount of `path` at `fd` (the mount where statx has it, from Linux 5.8).
  auto where = [](int fd, const char* path, std::pair<dev_t, uint64_t>& out) {
    struct statx sx;
    if (::statx(fd, path, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW, STATX_MNT_ID, &sx) != 0) return false;
    out = {makedev(sx.stx_dev_major, sx.stx_dev_minor), (sx.stx_mask & STATX_MNT_ID) ? sx.stx_mnt_id : 0};
    return true;
  };
  std::pair<dev_t, uint64_t> root;
  if (dst_root < 0 || dir < 0 || !where(dst_root, "", root)) return false;
  // On another device: another file system, read-only whatever DST's own is. On another mount of
  // DST's own (a bind mount): only where that mount says read-only, for an ext4 made read-only by
  // an error says rw on every mount of it.
  auto own = [&](const char* path) {
    std::pair<dev_t, uint64_t> here;
    if (!where(dir, path, here) || here == root) return false;
    if (here.first != root.first) return true;
    UniqueFd at(*path ? ::openat(dir, path, O_PATH | O_NOFOLLOW | O_CLOEXEC) : -1);
    struct statfs fs;
    return ::fstatfs(*path ? at.get() : dir, &fs) == 0 && (fs.f_flags & ST_RDONLY);
  };
  return own("") || (name && *name && own(name));
}

}  // namespace pcopy
