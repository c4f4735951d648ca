// Copies one entry (a file, a link, a FIFO, a device, a hard link) from a source directory fd to a
// destination directory fd, the way SPEC promises: data by the fastest path that works, metadata in
// coreutils' order (owner, xattrs, mode, times), and the final name only when all of that succeeded.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <atomic>
#include <csignal>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "pcopy/fd.hpp"
#include "pcopy/options.hpp"
#include "pcopy/protocol.hpp"
#include "pcopy/xattrs.hpp"

namespace pcopy {

// A failure after which the rest of a batch is handed back untried: one that would fail them too
// (fails_all), or any failure with --fail-fast.
bool ends_batch(const Result& r, const Options& options);

// Per-worker state shared by every copy: options, a data buffer, and what the process may do.
struct FileCopy;
class Ring;

class Copier {
 public:
  explicit Copier(const Options& options);
  Copier(const Copier&) = delete;
  Copier& operator=(const Copier&) = delete;

  using ProgressFn = std::function<void(uint64_t id, uint64_t bytes)>;

  // The destination directory of the jobs that follow, until the next call: what its file system
  // allows decides how files are made to appear (see copy_opened), a default ACL whether modes
  // must be set after creation. Without it the copier makes no assumption: named temporaries,
  // closed and checked before the rename, modes set. The second form takes what the parent found
  // out (when known) instead of asking the file system.
  void enter(int dst_dir);
  void enter(int dst_dir, const DirFacts& facts);
  // Where the directory entered is in the tree (relative to its root), for --delete's filters
  // when a directory in DST makes way for a file: what they exclude in it is kept.
  void set_dir_rel(const std::string& rel) { dir_rel_ = rel; }

  // A dry run whose DST does not exist: the nearest directory above it that does, whose file
  // system tells whether --reflink=always could clone there.
  void set_dst_fs(int fd) { dst_fs_ = fd; }

  // DST's root: a failure by a read-only file system mounted inside DST is told from one by DST's
  // own (Result::own_mount).
  void set_dst_root(int fd) { dst_root_ = fd; }

  // A flag a signal handler sets when the run is abandoned: a batch's run of files ends at the next
  // file, so that what it installed is answered at once, not after the rest of the run; a file
  // being copied stops at its next piece, and one whose data is copied by then is not put in
  // place (but with --inplace, where it is written in place and finished).
  void stop_when(const volatile sig_atomic_t* flag) { stop_ = flag; }
  // Where to say which file is being written under its final name (--inplace): the id of its job
  // while it is, 0 after (Pool::in_hand).
  void tell_in_hand(std::atomic<uint64_t>* slot) { in_hand_ = slot; }

  // `dst_dir` may be -1 in a dry run whose destination directory does not exist yet.
  // `report` is called with the job's id and byte deltas while long files copy.
  Result copy(int src_dir, int dst_dir, int dst_root, const Job& job, const ProgressFn& report);

  // Runs of regular files go through copy_batch: the same copy, except that the sources are all
  // opened by one io_uring submission and every descriptor is closed by another, which saves three
  // of the eight system calls a small file costs. batch_limit() is 0 when batching is off or
  // impossible; batchable() says which jobs may be batched. `results` gets one result per job, in
  // order, up to a file that reported progress: the run ends there, so that the worker answers it
  // before it starts another file (the parent charges the worker's death to it until then).
  // `done`, if set, is given each result as soon as it is final, before the batch's closing round.
  ~Copier();
  size_t batch_limit();
  bool batchable(const Job& job) const;
  void copy_batch(int src_dir, int dst_dir, std::span<const Job> jobs, const ProgressFn& report,
                  std::vector<Result>& results, const std::function<void(const Result&)>& done = nullptr);
  // Runs of further names of hard-link groups (linkable(): not in a dry run, nor where the manifest
  // needs a name's file hashed) go through link_batch: each name is linked straight to its group's
  // copy, one system call, where copy_hard_link looks first and checks after (four); a name that
  // was there takes copy()'s way. `results` gets one result per job, in order.
  bool linkable(const Job& job) const;
  void link_batch(int src_dir, int dst_dir, int dst_root, std::span<const Job> jobs, const ProgressFn& report,
                  std::vector<Result>& results);
  // Closes `fd` (a directory the worker is done with) in the next batch's closing round, or at
  // once when there are no batches or enough are waiting.
  void close_later(UniqueFd fd);

 private:
  Result copy_job(int src_dir, int dst_dir, int dst_root, const Job& job, const ProgressFn& report);
  Result copy_file(int src_dir, int dst_dir, const Job& job, Result result);
  Result hashed(int dst_dir, const Job& job, Result r);
  Result copy_opened(UniqueFd in, const struct stat& st, int dst_dir, const Job& job, Result result);
  Result begin_chunked(int src_dir, int dst_dir, const Job& job, Result result);
  Result copy_chunk(int src_dir, int dst_dir, const Job& job, Result result);
  Result end_chunked(int src_dir, int dst_dir, const Job& job, Result result);
  Result copy_special(int src_dir, int dst_dir, const Job& job, Result result);
  Result copy_hard_link(int dst_dir, int dst_root, const Job& job, Result result);
  int linked_already(int dst_root, const Job& job, const struct stat& dst, int* tdir = nullptr,
                     std::string* tname = nullptr);
  int link_target_dir(int dst_root, std::string_view dir);
  int open_link_target(int dst_root, std::string_view target, std::string& name);
  bool up_to_date(int src_dir, int dst_dir, const Job& job, const struct stat& dst, struct stat& src);
  bool shared_and_differs(int src_dir, int dst_dir, const Job& job, const struct stat& dst);
  int refresh_metadata(int src_dir, int dst_dir, const Job& job, const struct stat& src, const struct stat& dst);
  int copy_data(int in, int out, const struct stat& st, FileCopy& fc);
  int cloned(int in, const struct stat& st, FileCopy& fc);
  int make_way(int dst_dir, const std::string& target, bool dry_run);
  int in_place(int dst_dir, const std::string& name, const struct stat& src, bool& existed, bool truncate = true);
  Result unopened(Result r, int dir, const std::string& name) const;
  Result source_failed(Result r, int err, int dir, const std::string& name) const;
  struct stat split_stat(const struct stat& st) const;
  std::string rel_of(const std::string& name) const;
  int copy_generated(int in, int out, const struct stat& st, FileCopy& fc);
  // `make_holes`: blocks of zeros read are not written (the caller sets the size at the end).
  int copy_range(int in, int out, off_t off, uint64_t len, FileCopy& fc, bool to_eof = false, bool make_holes = false);
  int copy_mapped(int in, int out, off_t off, uint64_t len, FileCopy& fc);
  void advance(FileCopy& fc, uint64_t bytes);
  // `fresh_mode`: fd is a file just made with its final mode, which nothing (a default ACL, an
  // earlier copy's own attributes) can have changed.
  int apply_metadata(int fd, int src_fd, const struct stat& st, bool fresh_mode);
  std::string next_temp_name();
  int link_fd(int fd, int dir, const std::string& name);
  int link_in(int fd, int dst_dir, const std::string& target);
  bool probe_tmpfile(int dst_dir);
  int hash_file(int fd, class Hasher& hasher);
  int install(int dst_dir, const std::string& tmp, const std::string& target);
  // Whether a directory has `target`'s name, which fails the copy when it is installed (only
  // --delete removes it there): a big file looks before its data is copied, not after.
  bool directory_in_the_way(int dst_dir, const std::string& target) const;
  void start_writeback(int fd) const;
  // EROFS: sets r.own_mount (on_own_mount) for `target` in `dst_dir`.
  void note_own_mount(Result& r, int dst_dir, const std::string& target) const;
  void open_up(int dst_dir);
  bool append_only_here(int dst_dir);

  const Options& opt_;
  bool privileged_;    // may chown to anyone and write every xattr namespace
  uid_t euid_;
  gid_t egid_;
  pid_t pid_;          // in the names of the temporaries made (temp_name)
  std::string dir_rel_;
  std::vector<std::string> deleted_;  // by make_way, for the job's result
  std::vector<Unkept> unkept_;        // by note_unkept(), for the job's result
  bool try_reflink_;   // cleared after the file system said no
  int dst_fs_ = -1;    // see set_dst_fs
  int dst_root_ = -1;  // see set_dst_root
  const volatile sig_atomic_t* stop_ = nullptr;  // see stop_when
  std::atomic<uint64_t>* in_hand_ = nullptr;     // see tell_in_hand
  bool abandoned() const { return stop_ && *stop_ && !opt_.inplace; }
  bool try_cfr_;       // copy_file_range, cleared after the kernel said no
  std::string buffer_;
  uint64_t temp_counter_ = 0;
  const ProgressFn* report_ = nullptr;
  uint64_t report_id_ = 0;
  std::unique_ptr<Ring> ring_;
  size_t batch_limit_ = SIZE_MAX;      // SIZE_MAX: not decided yet
  bool noatime_ = true;                // O_NOATIME, until the kernel refuses it (files of others)
  std::vector<int>* closes_ = nullptr;  // in a batch: descriptors left for its closing round
  std::vector<int> later_closes_;       // close_later()'s, for the next closing round
  bool local_fs_ = false;              // enter()'s directory is on a local_fs()
  bool chunk_ = true;                  // and big files are split there (chunking_helps())
  bool in_memory_ = false;             // enter()'s directory is on tmpfs (DirFacts)
  bool default_acl_ = true;            // modes of new files must be set (has_default_acl())
  bool staged_ = false;                // a staged directory: final names directly (DirFacts)
  bool never_shares_ = false;          // copy_file_range cannot clone there (DirFacts)
  bool replacing_ = false;             // a link to a final name there failed, EEXIST (link_in)
  bool hides_names_ = false;           // temporaries are made 0600 there (DirFacts)
  bool locked_ = false;                // read-only, made writable by open_up() (DirFacts)
  int append_only_ = -1;               // append_only() of enter()'s directory; -1: not asked yet
  // What is made is its maker's alone (0600) until its metadata is set: with -a (its owner, group
  // and ACL come after it is made) and where a temporary's name is a secret (hides_names_).
  bool made_private() const { return opt_.archive || hides_names_; }
  // The directories of the first names of the last hard-link groups linked to (link_target_dir()):
  // a batch's links mostly go to the files of a few directories. The least recently used goes
  // when a ninth is opened; all are let go by enter().
  struct LinkDir {
    int root = -1;
    std::string path;
    UniqueFd fd;
    uint64_t used = 0;
  };
  std::vector<LinkDir> link_dirs_;
  uint64_t link_dir_uses_ = 0;
  // How an O_TMPFILE file gets its name: linkat(AT_EMPTY_PATH) needs CAP_DAC_READ_SEARCH, the
  // /proc/self/fd path needs /proc. Found out once per worker, on the first file.
  enum class Tmpfile { Unknown, EmptyPath, Proc, No };
  Tmpfile tmpfile_ = Tmpfile::Unknown;
};

}  // namespace pcopy
