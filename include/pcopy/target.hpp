// Turns SRC and DST as typed into what the run works on: the source root (or the directory of a
// single source file), the destination root, created with its parents; and refuses, before
// anything is written, what SPEC refuses (exit 2).
#pragma once

#include <sys/stat.h>

#include <functional>
#include <string>
#include <variant>
#include <vector>

#include "pcopy/fd.hpp"
#include "pcopy/options.hpp"

namespace pcopy {

struct Target {
  bool single_file = false;
  std::string dst_display;  // DST as the summary names it
  UniqueFd src_root;        // SRC, or the directory holding the single file
  UniqueFd dst_root;        // DST, or the directory receiving the single file; invalid in a dry run
                            // whose destination does not exist, or may not be entered (dst_unseen)
  bool dst_unseen = false;  // a dry run's DST of the user's that the real run would open up
  std::string src_name;     // single file: its name in src_root
  std::string dst_name;     // single file: its name in dst_root
  std::string dst_dir;      // single file: dst_root's path
  std::string dst_file;     // single file: the copy's path, spelt from DST as given
  UniqueFd dst_fs;           // a dry run whose DST does not exist: the nearest directory above it
                            // that does, on whose file system the run would make DST (O_PATH)
  struct stat src_st {};
  UniqueFd manifest;        // --manifest, opened (not yet emptied) before DST is created
  struct Made {
    std::string path;  // empty: nothing made
    dev_t dev = 0;
    ino_t ino = 0;
  } manifest_made;          // the manifest's file, where this run created it (it was not there)
  std::vector<std::string> made_dirs;  // the directories made for DST, outermost first

  // A run refused once it made something leaves nothing: the directories made for DST are removed
  // (those still empty), and a manifest file it created (still the one it created).
  void remove_made();

  // --fsync: the names made outside the tree reach the disk too (the tree flushes its own
  // directories): each directory made for DST in its parent, and a single file in its directory.
  // `failed` hears the path of each directory that could not be flushed, with the errno.
  void flush_outside(const std::function<void(const std::string&, int)>& failed) const;
};

// Why nothing was done: the path concerned and the line to print before exiting with status 2.
struct Refusal {
  std::string path;
  std::string message;  // "pcopy: ..."
};

std::variant<Target, Refusal> prepare_target(const Options& options);

}  // namespace pcopy
