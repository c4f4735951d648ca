// The parent's walk of SRC: streams the entries that need a copy job, creates the destination
// directories as it enters them, and applies each directory's own metadata once everything inside
// it is done (so read-only directories and directory times come out right).
//
// It walks with directory fds (openat), never with ever-longer path strings, and iteratively, so
// neither depth nor path length is limited: only the top few levels keep their fds open; a level
// whose fds were closed is reopened through ".." (checked by device and inode) on the way back up.
// Within a directory, entries stream out as they are read; subdirectories wait until the listing
// is over, so only subdirectory names are held in memory (and, with --delete, each directory's
// listing: what the deletions are decided from, see mirror.hpp).
#pragma once

#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

#include "pcopy/fd.hpp"
#include "pcopy/mirror.hpp"
#include "pcopy/options.hpp"
#include "pcopy/protocol.hpp"

namespace pcopy {

struct DirNode {
  DirNode* parent = nullptr;
  std::string name;  // "" for the root
  size_t path_len = 0;  // of its path from SRC (Walker::rel_path), which every batch of it carries
  struct stat st {};  // of the source directory
  UniqueFd dst;       // destination directory, open while it is likely needed (a staged one, maybe never)
  dev_t dst_dev = 0;
  ino_t dst_ino = 0;
  long pending = 1;    // the walk of the directory itself + jobs and subdirectories not yet done
  bool fresh = false;  // created by this run
  bool replaced = false;  // made (or, dry run, would be) in place of a file or link DST had there
  bool mode_set = false;  // created with its final mode: no chmod when finished
  DirFacts facts;      // of the destination directory, for the workers
  dev_t fs_dev = 0;    // its file system, to tell a mount point below it
  bool dst_sgid = false;  // set-group-ID: directories made in it inherit the bit
  // Staged: made under this temporary name and renamed to `name` when finished, so that its files
  // can be written straight to their final names (see Walker::dst_rel_path).
  std::string staged_name;
  std::vector<std::string> forgotten;  // names to remove before it is revealed: failed copies
  bool deferred_fd = false;  // `dst` kept open after the walk left it, counted against a budget
  std::vector<std::pair<std::string, std::string>> xattrs;  // archive mode: applied at the end
  int xattrs_err = 0;  // archive mode: SRC's could not be read (errno): DST's are left as they are
  SrcListings::Id listing = SrcListings::kNone;  // with --delete, once listed to the end
  bool vanish_told = false;  // a worker found it gone from SRC, and a warning said so
  // Staged: its entries the workers reported copied, which are not in place if it never is.
  struct {
    uint64_t files = 0, links = 0, bytes = 0;
  } reported;
};

struct WalkEvent {
  enum class Type {
    Entry,    // a non-directory to copy: `dir` holds one more pending job for it
    Dir,      // entered directory dir/name; `created` when this run made it (or would, dry run)
    Error,    // `err` (errno) or `detail` about dir/name; the walk goes on
    Warning,  // not an error: skipped sockets, devices without privilege
  };
  Type type = Type::Entry;
  DirNode* dir = nullptr;
  std::string name;
  struct stat st {};
  int err = 0;
  std::string detail;
  bool created = false;
  bool replaced = false;  // Dir: created in place of a non-directory (DirNode::replaced)
  bool own_mount = false;  // EROFS from a read-only file system mounted inside DST (Result::own_mount)
};

// Why an entry of this type is not copied (sockets; devices unless -a as root), or null.
const char* skip_reason(mode_t mode, const Options& options, uid_t euid);

// The descriptors the parent needs at the least with `jobs` workers: those it was started with
// (inherited_fds()), its own, two pipes per worker and the walk's first levels. The walk keeps
// more levels, and finished directories, open within what RLIMIT_NOFILE allows beyond that.
long fds_needed(unsigned jobs);

class Walker {
 public:
  // What went wrong with a finished directory of DST.
  struct DirTrouble {
    int err = 0;                 // its metadata failed, or (staged) it could not be put in place
    std::vector<Unkept> unkept;  // without `err`: what of its metadata it stands without
    int flush_err = 0;           // --fsync: it could not be flushed to disk
    // Staged and never put in place: it and what its workers reported copied in it (DirNode::reported)
    // are not in DST. It stays under its temporary name for the next run to remove, unless someone
    // removed it already.
    bool lost = false;
  };
  using DirErrorFn = std::function<void(const DirNode&, const DirTrouble&)>;

  // An entry of a staged directory that could not join the directory of its name another writer
  // made meanwhile (`err`; `st` its lstat): reported, and removed with the staged directory.
  using UnmergedFn = std::function<void(const DirNode&, const std::string& name, int err, const struct stat& st)>;
  // A staged directory whose entries joined the directory of its name another writer made
  // meanwhile: that directory was not made by this run.
  using MergedFn = std::function<void(const DirNode&)>;

  // Without `stat_entries`, non-directories are typed by getdents' d_type alone (no stat per
  // file in the parent); events then carry only st_mode.
  Walker(const Options& options, UniqueFd src_root, UniqueFd dst_root, const struct stat& src_st,
         DirErrorFn on_dir_error, bool stat_entries = true);
  ~Walker();
  Walker(const Walker&) = delete;
  Walker& operator=(const Walker&) = delete;

  void on_unmerged(UnmergedFn fn) { on_unmerged_ = std::move(fn); }
  void on_merged(MergedFn fn) { on_merged_ = std::move(fn); }

  // 0, or the errno of a failure to open SRC's top directory, or DST's (start_error_in_dst), when
  // the walker was made (too many open files): then nothing can be walked, and the run is refused.
  int start_error() const { return start_err_; }
  bool start_error_in_dst() const { return start_err_in_dst_; }

  // The next event, or nullopt when the whole tree has been listed.
  std::optional<WalkEvent> next();
  // One pending job (or subdirectory) of `dir` is over; finishes directories that are complete.
  void release(DirNode* dir);
  void free_node(DirNode* node);  // and forgets it as rel_path()'s last
  // True when next() has nothing more to give: no event waiting, every level listed to the end and
  // its subdirectories entered (a level still being listed may have more).
  bool exhausted() const;
  // True once every directory, the root included, has been finished.
  bool finished() const { return finished_; }
  // Failures to read SRC (not those to make or open a directory in DST).
  int walk_errors() const { return walk_errors_; }
  // With --delete: what the walk saw of each directory it listed to the end.
  const SrcListings& listings() const { return listings_; }

  std::string rel_path(const DirNode* dir) const;
  std::string rel_path(const DirNode* dir, const std::string& name) const;
  // Where `dir` is in DST now: rel_path() with staged directories under their temporary names.
  std::string dst_rel_path(const DirNode* dir) const;
  // A copy into `dir` failed: in a staged directory its name is removed before the directory is
  // revealed (whatever a worker left there half-written).
  void forget(DirNode* dir, const std::string& name);
  // The run is abandoned: every staged directory not finished is revealed as it is, after
  // `unfinished(dir)` (names of its jobs still in flight) and its failed copies are removed; every
  // directory not finished gets SRC's mode (opened up, or made 0700, while it was filled).
  void reveal_abandoned(const std::function<std::vector<std::string>(const DirNode*)>& unfinished);
  int dst_root() const { return dst_root_.get(); }
  int src_root() const { return src_root_.get(); }

 private:
  struct Frame;
  bool read_entries(Frame& frame, std::optional<WalkEvent>& out);
  std::optional<WalkEvent> classify(Frame& frame, const char* name, unsigned char d_type);
  std::optional<WalkEvent> descend(Frame& frame, const std::string& name);
  void pop();
  int open_dst_child(DirNode* parent, DirNode* node, int src_fd, int& err, std::string& detail);
  void evict_fds();
  void close_dst(DirNode* node);
  // Keeps `node`'s destination fd, which the walk has left, within the budget; else closes it.
  void defer_dst(DirNode* node);
  void prepare_existing(DirNode* node, const DirNode* parent, int fd, int src_fd);
  bool open_up(DirNode* dir, int fd);
  bool reopen(Frame& frame, Frame& child);
  void finish_dir(DirNode* dir);
  int apply_dir_metadata(DirNode* dir, DirTrouble& trouble);
  int reveal_or_lose(DirNode* dir, DirTrouble& trouble);
  int reveal(DirNode* dir);
  int merge_staged(int pfd, DirNode* dir);
  bool small_leaf(int src_fd);
  int dst_fd_for(DirNode* dir);

  const Options& opt_;
  const uid_t euid_ = ::geteuid();
  const gid_t egid_ = ::getegid();
  mode_t umask_;
  UniqueFd src_root_;
  UniqueFd dst_root_;
  std::optional<std::pair<dev_t, ino_t>> dst_id_;  // DST's root, never to be descended as part of SRC
  dev_t root_dev_;
  ino_t root_ino_;  // with root_dev_, SRC's root: never written to as a directory of DST
  DirErrorFn on_dir_error_;
  UnmergedFn on_unmerged_;
  MergedFn on_merged_;
  bool stat_entries_;
  int max_open_frames_;   // levels whose fds stay open, within RLIMIT_NOFILE
  int max_deferred_fds_;  // of RLIMIT_NOFILE, for destination fds kept past their listing
  bool can_stage_;        // staging allowed by the options (see descend)
  pid_t pid_;             // in staged directories' names (temp_name)
  uint64_t staged_count_ = 0;
  std::vector<std::unique_ptr<Frame>> stack_;
  std::unordered_set<DirNode*> live_;  // every node not yet finished: freed if the walk is abandoned
  // The path rel_path() gave last, and whose it is: the next is built from it when below it.
  mutable const DirNode* last_path_dir_ = nullptr;
  mutable std::string last_path_;
  // getdents64 buffer of the directory being listed: left uninitialised, so that only the part
  // listings fill is ever touched (a page fault costs ~20 µs on a VM).
  std::unique_ptr<char[]> dents_;
  size_t dents_pos_ = 0, dents_len_ = 0;
  int open_frames_ = 0;
  size_t evicted_ = 0;  // frames of stack_ below this one hold no descriptor (evicted bottom up)
  int deferred_fds_ = 0;
  int walk_errors_ = 0;
  int start_err_ = 0;
  bool start_err_in_dst_ = false;
  bool finished_ = false;
  std::optional<WalkEvent> queued_;  // the next event, already known (see descend)
  // With filters: the path from SRC of the directory being listed (the top frame's), for their
  // matching; each frame keeps only its length, or a chain of D levels would cost D² bytes.
  std::string path_;
  SrcListings listings_;
};

}  // namespace pcopy
