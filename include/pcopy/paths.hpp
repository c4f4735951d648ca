// Directories by fd: listing them, opening them beneath a root without following links, and
// opening up those of ours whose mode keeps us out.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>
#include <functional>
#include <string_view>

namespace pcopy {

// As an ordinary user, a directory of ours whose mode keeps us from listing, entering or changing
// it is opened up first, as rsync does (root needs no permission): whether `name` in `dir` is one
// (`st` its lstat), and open_up_at() opens it up, returning its old mode, or 0 if unchanged.
bool needs_opening_up(int dir, const char* name, struct stat& st);
mode_t open_up_at(int dir, const char* name);
// Whether the open file or directory `fd` is append-only (chattr +a): names may be added to such a
// directory, never removed or renamed.
bool append_only(int fd);
// Adds the owner's bits to the mode of the open directory `dir` where it lacks any (a read-only
// directory of ours that something is about to be written in: DirFacts::locked).
void open_up_fd(int dir);
// Calls `fn` with each entry of `dir` (an open directory; "." and ".." too) and its d_type.
void for_each_entry(int dir, const std::function<void(const char* name, unsigned char type)>& fn);

// Opens the directory `rel` ("" = root itself, duplicated) beneath `root` without following
// symbolic links unless `follow`; works for paths longer than PATH_MAX. Returns -errno on failure.
int open_dir_beneath(int root, std::string_view rel, bool follow);

// renameat2(RENAME_NOREPLACE) of `from` to `to` in `dir`; where the flag or the call is not to be
// had (EINVAL: NFS, FUSE; ENOSYS; EPERM: a seccomp profile that predates it), a look that `to` is
// free, then renameat. Returns 0 or an errno, EEXIST where `to` is taken.
int rename_noreplace(int dir, const char* from, const char* to);

}  // namespace pcopy
