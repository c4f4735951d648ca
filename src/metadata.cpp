// A copy's metadata: owner, extended attributes (ACLs), mode and times, set in coreutils' order on a
// new copy or brought up to date on one -u kept, and what the destination refused of them (Unkept).
#include "pcopy/metadata.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cerrno>

#include "pcopy/copier.hpp"
#include "pcopy/copier_internal.hpp"
#include "pcopy/fd.hpp"
#include "pcopy/up_to_date.hpp"
#include "pcopy/xattrs.hpp"

namespace pcopy {

int chmod_nofollow(int dir, const char* name, mode_t mode) {
  // The kernel's fchmodat2 (Linux 6.6) takes the flag; before it (ENOSYS), or where a container's
  // profile refuses it (EPERM), glibc (before 2.39) emulates it through /proc, which a chroot may
  // lack: then an entry that has the mode already (a FIFO or device made with it) needs nothing,
  // and a FIFO is opened (not blocking: no writer needed) and changed through its descriptor.
  constexpr long kSysFchmodat2 = 452;  // the same number on every architecture
  if (::syscall(kSysFchmodat2, dir, name, mode, AT_SYMLINK_NOFOLLOW) == 0) return 0;
  if (errno != ENOSYS && errno != EPERM) return -1;
  if (::fchmodat(dir, name, mode, AT_SYMLINK_NOFOLLOW) == 0) return 0;
  int err = errno;
  struct stat st {};
  if (::fstatat(dir, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && !S_ISLNK(st.st_mode) && (st.st_mode & 07777) == mode)
    return 0;
  if (S_ISFIFO(st.st_mode)) {
    UniqueFd fifo(::openat(dir, name, O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC));
    struct stat fs;
    if (fifo && ::fstat(fifo.get(), &fs) == 0 && fs.st_ino == st.st_ino && fs.st_dev == st.st_dev)
      return ::fchmod(fifo.get(), mode);
  }
  errno = err;
  return -1;
}

std::string owner_text(const struct stat& st) { return fmt::format("{}:{}", st.st_uid, st.st_gid); }

std::string mode_text(mode_t mode) { return fmt::format("{:04o}", mode & 07777); }

bool give_owner(int dir, const char* name, uid_t uid, gid_t gid, gid_t have_gid) {
  auto chown = [&](uid_t u, gid_t g) {
    return name ? ::fchownat(dir, name, u, g, AT_SYMLINK_NOFOLLOW) : ::fchown(dir, u, g);
  };
  if (chown(uid, gid) == 0) return true;
  int err = errno;
  if ((err == EPERM || err == EINVAL) && gid != have_gid) chown(uid_t(-1), gid);
  errno = err;
  return false;
}

int note_unkept(std::vector<Unkept>& unkept, int err, const char* what, std::string value) {
  if (!refused_metadata(err)) return err;
  unkept.push_back({what, std::move(value), err});
  return 0;
}

void note_unkept(std::vector<Unkept>& unkept, const XattrsRefused& refused) {
  if (refused.err) unkept.push_back({"extended attributes", refused.names, refused.err});
}

// -u skipped the data of `dst`; the rest of what a copy keeps is brought up to date, as rsync -a
// does: with -a the owner and extended attributes (ACLs), then the mode, then the times. Only what
// differs is written, and nothing through a link planted at the name.
int Copier::refresh_metadata(int src_dir, int dst_dir, const Job& job, const struct stat& src,
                             const struct stat& dst) {
  const char* t = job.target().c_str();
  bool owner_kept, chowned = false, xattrs_written = false, opened_up = false;
  if (opt_.archive) {
    owner_kept = src.st_uid == dst.st_uid && src.st_gid == dst.st_gid;
    if (!owner_kept) owner_kept = chowned = give_owner(dst_dir, t, src.st_uid, src.st_gid, dst.st_gid);
    if (!owner_kept && !chown_refused_to_user(errno, privileged_)) {
      int e = errno;
      if (int err = note_unkept(unkept_, e, "owner", owner_text(src))) return err;
    }
    // Attributes are compared whenever either side has any: the source's ctime newer than the
    // copy's is not enough, for the copy's ctime also moves when anything else changes it (its
    // link count, when pcopy replaced a name it shared; an attribute set in DST by hand). And
    // chown has just dropped the copy's file capabilities.
    bool follow = opt_.dereference;
    if (chowned || has_xattrs_at(src_dir, job.name, follow) || has_xattrs_at(dst_dir, job.target(), false)) {
      XattrsRefused refused;
      if (int err = sync_xattrs_at(src_dir, job.name, follow, dst_dir, job.target(), privileged_, xattrs_written, refused))
        return err;
      // A read-only copy of the user's: writable for its user.* attributes (as in apply_metadata),
      // then given its mode below.
      if (refused.read_only && S_ISREG(dst.st_mode) && dst.st_uid == euid_ && (dst.st_mode & kOwnerRw) != kOwnerRw &&
          chmod_nofollow(dst_dir, t, (dst.st_mode & 07777) | kOwnerRw) == 0) {
        opened_up = true;
        refused = {};
        if (int err = sync_xattrs_at(src_dir, job.name, follow, dst_dir, job.target(), privileged_, xattrs_written, refused)) {
          chmod_nofollow(dst_dir, t, dst.st_mode & 07777);  // failed: as it was, not left opened up
          return err;
        }
      }
      note_unkept(unkept_, refused);
    }
  } else {
    owner_kept = src.st_uid == dst.st_uid && src.st_gid == dst.st_gid;  // the copy's, as it is
  }
  if (!S_ISLNK(dst.st_mode)) {
    mode_t mode = mode_for_copy(src.st_mode, owner_kept);
    // chown cleared the set-id bits; an ACL written may have changed the group bits.
    if ((chowned || xattrs_written || opened_up || (dst.st_mode & 07777) != mode) &&
        chmod_nofollow(dst_dir, t, mode) != 0) {
      int e = errno;
      if (int err = note_unkept(unkept_, e, "mode", mode_text(mode))) return err;
    }
  }
  if (!same_mtime_in(dst_dir, dst, to_ns(src.st_mtim))) {  // --checksum: same contents, another time
    struct timespec times[2] = {src.st_atim, src.st_mtim};
    if (::utimensat(dst_dir, t, times, AT_SYMLINK_NOFOLLOW) != 0) return note_unkept(unkept_, errno, "times");
  }
  return 0;
}

// Owner, xattrs, mode, times: coreutils' order, so set-id bits survive chown and the ACL mask.
int Copier::apply_metadata(int fd, int src_fd, const struct stat& st, bool fresh_mode) {
  bool owner_kept;
  if (opt_.archive) {
    owner_kept = give_owner(fd, nullptr, st.st_uid, st.st_gid);
    if (!owner_kept && !chown_refused_to_user(errno, privileged_)) {
      int e = errno;
      if (int err = note_unkept(unkept_, e, "owner", owner_text(st))) return err;
    }
    XattrsRefused refused;
    if (int err = copy_xattrs_fd(src_fd, fd, privileged_, !fresh_mode, refused)) return err;
    // A read-only source (0444) made with its mode (O_TMPFILE), or a read-only copy rewritten: the
    // kernel lets its owner write its user.* attributes only once it is writable, as cp -a makes it.
    // Its mode is set below. (Not the user's: the refusal is reported.)
    struct stat now;
    if (refused.read_only && ::fstat(fd, &now) == 0 && now.st_uid == euid_ && (now.st_mode & kOwnerRw) != kOwnerRw &&
        ::fchmod(fd, (now.st_mode & 07777) | kOwnerRw) == 0) {
      refused = {};
      if (int err = copy_xattrs_fd(src_fd, fd, privileged_, !fresh_mode, refused)) return err;
    }
    note_unkept(unkept_, refused);
  } else {
    owner_kept = st.st_uid == euid_ && st.st_gid == egid_;
    // Made in a set-group-ID directory, the copy has that directory's group, not ours: a set-id
    // bit is kept only where the copy's owner and group are the source's, as looked at.
    struct stat now;
    if (owner_kept && (st.st_mode & (S_ISUID | S_ISGID)) && (::fstat(fd, &now) != 0 || now.st_gid != st.st_gid))
      owner_kept = false;
  }
  mode_t mode = mode_for_copy(st.st_mode, owner_kept);
  if ((!fresh_mode || opt_.archive || (mode & 07000)) && ::fchmod(fd, mode) != 0) {
    int e = errno;
    if (int err = note_unkept(unkept_, e, "mode", mode_text(mode))) return err;
  }
  struct timespec times[2] = {st.st_atim, st.st_mtim};
  if (::futimens(fd, times) != 0) return note_unkept(unkept_, errno, "times");
  return 0;
}

}  // namespace pcopy
