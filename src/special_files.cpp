// The copy of a symbolic link, a FIFO or a device.
#include "pcopy/copier.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "pcopy/copier_internal.hpp"
#include "pcopy/metadata.hpp"
#include "pcopy/xattrs.hpp"

namespace pcopy {

Result Copier::copy_special(int src_dir, int dst_dir, const Job& job, Result r) {
  struct stat st;
  int sflags = opt_.dereference ? 0 : AT_SYMLINK_NOFOLLOW;
  if (::fstatat(src_dir, job.name.c_str(), &st, sflags) != 0) return source_failed(r, errno, src_dir, job.name);
  r.mtime_ns = to_ns(st.st_mtim);
  // Staged: hidden already. Append-only: it takes no rename (nor an unlink), so the entry is made
  // where it belongs, as cp makes it.
  const bool direct = staged_ || append_only_here(dst_dir);
  std::string tmp = direct ? job.target() : next_temp_name();
  const char* t = tmp.c_str();
  std::string target;
  if (S_ISLNK(st.st_mode)) {
    target.resize(size_t(st.st_size) + 1);
    for (;;) {
      ssize_t n = ::readlinkat(src_dir, job.name.c_str(), target.data(), target.size());
      if (n < 0) return errno == EINVAL ? fail(r, 0, kChangedType) : source_failed(r, errno, src_dir, job.name);
      if (size_t(n) < target.size()) {
        target.resize(size_t(n));
        break;
      }
      target.resize(target.size() * 2);
    }
  } else if (!S_ISFIFO(st.st_mode) && !S_ISCHR(st.st_mode) && !S_ISBLK(st.st_mode)) {
    return fail(r, 0, kChangedType);
  }
  // Its maker's alone until its metadata is set, where made_private() says (with -a a device made
  // with SRC's 0660 was the group's of a set-group-ID directory to open), as cp -a makes it.
  const mode_t perm = made_private() ? S_IRUSR | S_IWUSR : st.st_mode & 0777;
  auto make = [&] {
    if (S_ISLNK(st.st_mode)) return ::symlinkat(target.c_str(), dst_dir, t);
    if (S_ISFIFO(st.st_mode)) return ::mkfifoat(dst_dir, t, perm);
    return ::mknodat(dst_dir, t, (st.st_mode & S_IFMT) | perm, st.st_rdev);
  };
  int rc = make();
  // Staged: what is there was left by a worker that died on this very job.
  if (rc != 0 && errno == EEXIST && staged_ && ::unlinkat(dst_dir, t, 0) == 0) rc = make();
  if (rc != 0) {
    int err = errno;
    if (err != EEXIST) ::unlinkat(dst_dir, t, 0);  // a FUSE file system (exFAT) can fail mknod yet make the file
    return fail(r, err == EEXIST && !staged_ && direct ? EPERM : err);  // append-only: it cannot be replaced
  }
  int err = 0;
  bool owner_kept = !opt_.archive ? st.st_uid == euid_ && st.st_gid == egid_
                                  : give_owner(dst_dir, t, st.st_uid, st.st_gid);
  if (opt_.archive && !owner_kept && !chown_refused_to_user(errno, privileged_)) {
    int e = errno;
    err = note_unkept(unkept_, e, "owner", owner_text(st));
  }
  if (!err && opt_.archive) {
    XattrsRefused refused;
    err = copy_xattrs_at(src_dir, job.name, opt_.dereference, dst_dir, tmp, privileged_, default_acl_, refused);
    note_unkept(unkept_, refused);
  }
  mode_t mode = mode_for_copy(st.st_mode, owner_kept);
  if (!err && !S_ISLNK(st.st_mode) && chmod_nofollow(dst_dir, t, mode) != 0) {
    int e = errno;
    err = note_unkept(unkept_, e, "mode", mode_text(mode));
  }
  struct timespec times[2] = {st.st_atim, st.st_mtim};
  if (!err && ::utimensat(dst_dir, t, times, AT_SYMLINK_NOFOLLOW) != 0) err = note_unkept(unkept_, errno, "times");
  if (!err && !direct) err = install(dst_dir, tmp, job.target());
  if (err) {
    ::unlinkat(dst_dir, t, 0);
    return fail(r, err);
  }
  return r;
}

}  // namespace pcopy
