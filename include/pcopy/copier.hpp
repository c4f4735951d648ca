// Copies one entry (a file, a link, a FIFO, a device, a hard link) from a source directory fd to a
// destination directory fd, the way SPEC promises: data by the fastest path that works, metadata in
// coreutils' order (owner, xattrs, mode, times), and the final name only when all of that succeeded.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "pcopy/fd.hpp"
#include "pcopy/options.hpp"
#include "pcopy/protocol.hpp"

namespace pcopy {

// Temporaries are ".pcopy-<pid>-<n>.tmp" in the destination directory: recognisable, so a later run
// can remove what an interrupted one left behind.
inline constexpr std::string_view kTempPrefix = ".pcopy-";
inline constexpr std::string_view kTempSuffix = ".tmp";
bool is_temp_name(std::string_view name);
// Unlinks the temporaries in `dir` (an open directory) for which `which(name)` holds.
void remove_temps(int dir, const std::function<bool(std::string_view name)>& which);

// Opens the directory `rel` ("" = root itself, duplicated) beneath `root` without following
// symbolic links unless `follow`; works for paths longer than PATH_MAX. Returns -errno on failure.
int open_dir_beneath(int root, std::string_view rel, bool follow);

// Per-worker state shared by every copy: options, a data buffer, and what the process may do.
struct FileCopy;

class Copier {
 public:
  explicit Copier(const Options& options);
  Copier(const Copier&) = delete;
  Copier& operator=(const Copier&) = delete;

  using ProgressFn = std::function<void(uint64_t bytes)>;

  // `dst_dir` may be -1 in a dry run whose destination directory does not exist yet.
  // `report` is called with byte deltas while long files copy.
  Result copy(int src_dir, int dst_dir, int dst_root, const Job& job, const ProgressFn& report);

 private:
  Result copy_file(int src_dir, int dst_dir, const Job& job, Result result);
  Result begin_chunked(int src_dir, int dst_dir, const Job& job, Result result);
  Result copy_chunk(int src_dir, int dst_dir, const Job& job, Result result);
  Result end_chunked(int src_dir, int dst_dir, const Job& job, Result result);
  Result copy_special(int src_dir, int dst_dir, const Job& job, Result result);
  Result copy_hard_link(int dst_dir, int dst_root, const Job& job, Result result);
  bool up_to_date(int src_dir, int dst_dir, const Job& job, const struct stat& dst);
  int copy_data(int in, int out, const struct stat& st, FileCopy& fc);
  int copy_range(int in, int out, off_t off, uint64_t len, FileCopy& fc, bool to_eof = false);
  int apply_metadata(int fd, int src_fd, const struct stat& st, bool fresh_mode);
  std::string next_temp_name();
  int hash_file(int fd, class Hasher& hasher);
  int install(int dst_dir, const std::string& tmp, const std::string& target);

  const Options& opt_;
  bool privileged_;    // may chown to anyone and write every xattr namespace
  uid_t euid_;
  gid_t egid_;
  std::string temp_prefix_;
  bool try_reflink_;   // cleared after the file system said no
  bool try_cfr_;       // copy_file_range, cleared after the kernel said no
  std::string buffer_;
  uint64_t temp_counter_ = 0;
  const ProgressFn* report_ = nullptr;
};

}  // namespace pcopy
