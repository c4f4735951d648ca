// Extended attributes, POSIX ACLs included (they are the system.posix_acl_* attributes).
// Attributes the caller may not write (trusted.* unprivileged, user.* on links) are left out
// quietly, as cp -a does; a file system without xattr support is not an error either.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace pcopy {

// The attributes a destination refused (refused_metadata(), and user.* ones its mode keeps us from
// writing): their names, ", "-separated, and the first refusal. The rest are written all the same.
struct XattrsRefused {
  std::string names;
  int err = 0;
  // A user.* attribute was refused because the destination's mode keeps even its owner from
  // writing it (EACCES: a read-only file or directory): the caller may open it up and ask again.
  bool read_only = false;
};

// All return 0 or an errno. `prune`: dst may have attributes src lacks (an ACL inherited from
// its directory's default ACL, or its own from before), and they are removed: a copy made with -a
// has its source's ACL, not more.
int copy_xattrs_fd(int src_fd, int dst_fd, bool privileged, bool prune, XattrsRefused& refused);
// By directory and name; `src_follow`: the source is a symbolic link's target (-L), else the entry
// itself (a link's own attributes). The destination is never followed.
int copy_xattrs_at(int src_dir, const std::string& src_name, bool src_follow, int dst_dir, const std::string& dst_name,
                   bool privileged, bool prune, XattrsRefused& refused);
// Makes dst's attributes those of src where they differ, removing those src lacks; `written`
// tells whether anything was changed.
int sync_xattrs_at(int src_dir, const std::string& src_name, bool src_follow, int dst_dir, const std::string& dst_name,
                   bool privileged, bool& written, XattrsRefused& refused);
// Whether dst's attributes are src's, as far as the caller may read them (sync_xattrs_at would
// write nothing).
bool same_xattrs_at(int src_dir, const std::string& src_name, bool src_follow, int dst_dir, const std::string& dst_name,
                    bool privileged);
// Whether the entry `name` in `dir` (followed if a link, with `follow`) has attributes that a copy
// would be given (none that cannot be listed).
bool has_xattrs_at(int dir, const std::string& name, bool follow);
// The attributes of `fd` the caller may read, into `attrs`: 0, or the errno of a failure to list
// or read them (not one the caller may not read, nor one that vanished meanwhile), with `attrs`
// then incomplete.
int read_xattrs_fd(int fd, bool privileged, std::vector<std::pair<std::string, std::string>>& attrs);
// Gives `fd` the attributes `attrs` (read earlier from a source) and, with `prune`, removes those
// it has that `attrs` lacks; `written` tells whether anything was changed.
int set_xattrs_fd(int fd, const std::vector<std::pair<std::string, std::string>>& attrs, bool privileged,
                  bool prune, bool& written, XattrsRefused& refused);

}  // namespace pcopy
