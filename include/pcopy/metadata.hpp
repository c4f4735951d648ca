// A copy's owner and mode, and what of its metadata the destination refused to keep (Unkept).
#pragma once

#include <sys/stat.h>
#include <sys/types.h>
#include <cerrno>
#include <string>
#include <vector>

#include "pcopy/protocol.hpp"
#include "pcopy/xattrs.hpp"

namespace pcopy {

// fchmodat(dir, name, mode, AT_SYMLINK_NOFOLLOW): a symbolic link put at `name` meanwhile is not
// followed (EOPNOTSUPP). Returns 0 or -1 with errno.
int chmod_nofollow(int dir, const char* name, mode_t mode);

// How a copy's owner and mode follow the source's, as with cp -a: a chown an ordinary user may not
// make is no error (the copy stays theirs), and set-id bits are kept only along with the owner.
inline bool chown_refused_to_user(int err, bool privileged) { return !privileged && (err == EPERM || err == EINVAL); }
// chown of a copy (`name` in `dir`, not through a link; or the descriptor `dir` itself where `name`
// is null) to `uid`:`gid`. Where the owner may not be given, the group alone is, as cp -a and
// rsync -a give it: an ordinary user may give a group of theirs. Not where the copy has that group
// already (`have_gid`; -1: not known), which would change its ctime on every run. True where both
// were given; false with errno the owner's refusal.
bool give_owner(int dir, const char* name, uid_t uid, gid_t gid, gid_t have_gid = gid_t(-1));
inline mode_t mode_for_copy(mode_t src_mode, bool owner_kept) {
  return src_mode & (owner_kept ? 07777 : 07777 & ~mode_t(S_ISUID | S_ISGID));
}

// How an Unkept names an owner and a mode: "1000:1000", "4755".
std::string owner_text(const struct stat& st);
std::string mode_text(mode_t mode);
// Notes `what` as not kept on a copy when `err` is the destination refusing it (refused_metadata())
// and returns 0; returns any other error, which fails the copy.
int note_unkept(std::vector<Unkept>& unkept, int err, const char* what, std::string value = {});
void note_unkept(std::vector<Unkept>& unkept, const XattrsRefused& refused);

}  // namespace pcopy
