// What a destination's file system and directories allow and need: local or remote, memory or
// disk, shared extents, default ACLs, secret names, read-only mounts inside DST (DirFacts).
#pragma once

#include <sys/types.h>
#include <cerrno>

#include "pcopy/options.hpp"
#include "pcopy/protocol.hpp"

namespace pcopy {

// tmpfs, ext2-4, XFS, btrfs: close() has no flush step there and cannot report an error, and
// writes to one file serialise on its inode lock.
bool local_fs(int dir);
// What FICLONE of the open file `src` into directory `dst_dir` would certainly fail with (a dry run's
// prediction for --reflink=always): EXDEV across file systems, EOPNOTSUPP where extents are never
// shared (tmpfs, ext4); 0 when it may work, or `src` is empty.
int clone_refusal(int src, int dst_dir);
// tmpfs, ext2-4: no extent is ever shared, so copy_file_range cannot clone (see DirFacts).
bool never_shares_extents(int dir);
// tmpfs: memory, not a device, behind it (see DirFacts).
bool in_memory_fs(int dir);
// Whether a default ACL in `dir` decides the modes of what is created there (then they must be
// set explicitly). True when it cannot be told.
bool has_default_acl(int dir);
// Whether a file or directory has an access ACL (true where that cannot be told).
bool has_access_acl(int fd);
// What workers need to know of destination directory `dir` (DirFacts, not staged): its default ACL,
// and its file system's traits, taken from `same_fs` when given (a directory on the same one).
DirFacts dir_facts(int dir, const DirFacts* same_fs = nullptr);
// Whether splitting big files into chunks for several workers pays off in `dst_dir`: where latency
// is the limit (a network file system, DirFacts::remote), and where the CPU is (in_memory_fs():
// there workers read their chunks outside the file's inode lock, which only writes take). Not on a
// disk's file system, whose device is the limit; and not with --reflink=always, as chunks are
// copied, not cloned.
bool chunking_helps(int dst_dir, const Options& options);

// Whether EROFS for `name` in `dir` came from a read-only file system mounted inside DST: on the
// entry itself (a read-only file bind-mounted there), on its directory or above it (a tmpfs, a
// read-only bind mount of one of DST's own directories), told by a device that is not DST's root's
// (`dst_root`), or a mount that is not and says read-only. Whether DST's own file system is
// read-only cannot be asked of the kernel: ext4 after an error, an NFS export its server made
// read-only say EROFS from every mount of it, which statvfs calls writable.
bool on_own_mount(int dst_root, int dir, const char* name);

// Whether a failure with `err` would fail every other entry too: a full disk (ENOSPC), quota
// (EDQUOT), or DST read-only (EROFS), but not EROFS of a file system mounted inside DST. pcopy then
// stops handing out work.
inline bool fails_all(int err, bool own_mount) {
  return err == ENOSPC || err == EDQUOT || (err == EROFS && !own_mount);
}

// A directory's mode lets group or others pass through it but not list it (so may an access ACL:
// see has_access_acl()): its names are secrets, and what is made there under a temporary name is
// no more open than 0700 (0600) while it is filled, and its name is drawn at random
// (DirFacts::hides_names).
inline bool hides_names(mode_t mode) { return ((mode & 010) && !(mode & 040)) || ((mode & 001) && !(mode & 004)); }
// The same of directory `dir`, whose mode is `mode`, by its mode or its access ACL.
inline bool hides_names(int dir, mode_t mode) { return hides_names(mode) || has_access_acl(dir); }

}  // namespace pcopy
