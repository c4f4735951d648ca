// --delete: after the copy, remove what DST holds and SRC does not (files, links, whole
// directories). Both trees are walked side by side one directory at a time, so memory is bounded
// by the largest directory, never by the tree. Excluded entries and our own temporaries are kept.
#pragma once

#include <sys/stat.h>

#include <functional>
#include <string>
#include <vector>

#include "pcopy/options.hpp"

namespace pcopy {

struct MirrorCallbacks {
  std::function<void(const std::string& rel)> deleted;          // once per entry removed (or to remove)
  std::function<void(const std::string& rel, int err)> failed;  // could not remove or list
  // Entries never removed, by their lstat: pcopy's own --manifest and the directories above it.
  std::function<bool(const struct stat& st)> keep;
};

// `dry_run` reports without removing. Directory times changed by removals are restored from SRC.
void delete_extraneous(int src_root, int dst_root, const Options& options, const MirrorCallbacks& cb);

// Removes `name` in `dir` and everything below it, iteratively; calls `deleted` for each entry.
// Entries `filters` exclude (`rel` is where `name` is in the tree) are kept, and so are the
// directories holding them, silently, as rsync keeps them. Returns 0 or the first errno.
int remove_tree(int dir, const std::string& name, const std::string& rel, bool dry_run, const MirrorCallbacks& cb,
                const std::vector<FilterRule>& filters = {});

}  // namespace pcopy
