// -u: whether a copy's mtime is the source's, as far as the copy's file system keeps times.
#pragma once

#include <sys/stat.h>

#include "pcopy/protocol.hpp"

namespace pcopy {

// -u: whether the copy `dst` has the mtime `src_ns`, as far as its file system keeps times: to the
// second on ext3 (and ext4 with small inodes), 10 ms on exFAT, 2 s on FAT, where comparing
// nanoseconds would recopy every file on every run. As coreutils' utimecmp does, that
// resolution is read off the copy's own times; 2 s only where `fat` says DST is FAT (times all
// even happen on any file system that keeps whole seconds, and would hide a change of 1 s).
bool same_mtime(const struct stat& dst, Nanos src_ns, bool fat);
// Whether the copy's mtime is at an end of a file system's range of times (2038, 2446, 2486 or 1901,
// whole seconds) and the source's beyond it: the time the kernel cuts the source's to, where the
// file system holds no more.
bool at_range_end(const struct stat& dst, Nanos src_ns);
// The same as same_mtime for a copy in the directory `dir`, whose file system tells FAT (asked only
// when the times differ), and whether it cuts a time beyond its range to the end the copy has.
bool same_mtime_in(int dir, const struct stat& dst, Nanos src_ns);

}  // namespace pcopy
