// --delete: after the copy, remove what DST holds and SRC does not (files, links, whole
// directories). What SRC holds is what the walk saw (SrcListings), never a second listing taken
// after the copy: an entry renamed in SRC meanwhile is not deleted from DST before its new name is
// copied (rsync decides from its file list too). DST is walked one directory at a time, entering
// only the directories the walk listed to the end. Excluded entries and our own temporaries are kept.
#pragma once

#include <sys/stat.h>

#include <cstdint>
#include <ctime>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "pcopy/options.hpp"

namespace pcopy {

// What the walk saw of one SRC directory it listed to the end.
struct SrcListing {
  std::string names;  // every entry but "." and ".." the filters keep, each followed by '\0'
  struct timespec atime {}, mtime {};  // the directory's, given back to DST's after removals
};

// Every listing the walk completed, each under its parent's listing and its name, so that memory
// follows the names read, not the depth: a full path per directory made a chain of D levels cost
// D² bytes. A directory missing here (excluded, on another file system with -x, unreadable, not
// made in DST, or below one of those) is not entered: nothing in it is deleted.
class SrcListings {
 public:
  using Id = uint32_t;
  static constexpr Id kNone = UINT32_MAX;

  // Records a listing: `parent` kNone for SRC itself. Returns its id.
  Id add(Id parent, std::string_view name, SrcListing listing);
  // SRC's own listing, or kNone.
  Id root() const { return root_; }
  // The listing of directory `name` inside listing `parent`'s directory, or kNone.
  Id child(Id parent, std::string_view name) const;
  const SrcListing& operator[](Id id) const { return all_[id]; }
  size_t size() const { return all_.size(); }

 private:
  static std::string key(Id parent, std::string_view name);
  std::vector<SrcListing> all_;
  std::unordered_map<std::string, Id> children_;  // key(): parent's id, then the name
  Id root_ = kNone;
};

struct MirrorCallbacks {
  std::function<void(const std::string& rel)> deleted;          // once per entry removed (or to remove)
  std::function<void(const std::string& rel, int err)> failed;  // could not remove or list
  // delete_extraneous: a directory of DST that could not be opened or listed to look for what SRC
  // lacks (not one to remove): what it holds stays. `failed` when unset.
  std::function<void(const std::string& rel, int err)> unlisted;
  // Entries never removed, by their lstat: pcopy's own --manifest and the directories above it.
  std::function<bool(const struct stat& st)> keep;
  // Asked before each entry that may be removed (`removal`), and before each directory of DST to
  // look into: true stops the removals where they are (SIGINT, SIGTERM, --fail-fast).
  std::function<bool(bool removal)> stop;
  // Asked when the open-file limit stops an open: closes one of the caller's descriptors, false if
  // it holds none it can let go.
  std::function<bool()> free_fd;
  // A dry run may not look into a directory of the user's that the real run would open up: what
  // it would delete there is not known (the caller warns).
  std::function<void(const std::string& rel)> unseen;
  // --fsync: a directory whose removals could not be flushed to disk.
  std::function<void(const std::string& rel, int err)> flush_failed;
};

// `dry_run` reports without removing. Directory times changed by removals are restored from SRC.
// With -x, directories on another file system than DST are left alone, mount points included.
void delete_extraneous(const SrcListings& src, int dst_root, const Options& options, const MirrorCallbacks& cb);

// Removes `name` in `dir` and everything below it, iteratively; calls `deleted` for each entry.
// Entries `filters` exclude (`rel` is where `name` is in the tree) are kept, and so are the
// directories holding them, silently, as rsync keeps them; with `one_file_system`, so are
// directories on another file system than `dir`'s. Returns 0 or the first errno.
int remove_tree(int dir, const std::string& name, const std::string& rel, bool dry_run, const MirrorCallbacks& cb,
                const Filters& filters = {}, bool one_file_system = false);
// remove_tree() of what pcopy itself left (a staged directory, an entry of one), reporting nothing.
int remove_quietly(int dir, const std::string& name);

}  // namespace pcopy
