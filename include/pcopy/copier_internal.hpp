// What the Copier's source files (copier.cpp and the parts of the copy split from it, each in a file
// named for its concern) share and no other module needs.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>

#include <string>

#include "pcopy/options.hpp"

namespace pcopy {

inline int source_flags(bool follow) { return O_RDONLY | O_CLOEXEC | O_NOCTTY | (follow ? 0 : O_NOFOLLOW); }

// O_NONBLOCK: the walk saw a regular file, but a FIFO put in its place must not block the open
// (it is then found to be no regular file); on a regular file the flag changes nothing, except
// that a lease another process holds fails the open instead of being waited for: then it is.
int open_source(int dir, const std::string& name, bool follow);

// What a file's owner needs to read and write its user.* attributes; a private file's mode.
constexpr mode_t kOwnerRw = S_IRUSR | S_IWUSR;

// chunking_helps() of a file system whose traits are known (DirFacts).
bool chunking_helps_on(bool local, bool in_memory, const Options& options);

}  // namespace pcopy
