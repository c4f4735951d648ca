// What the user reads at the end: the summary line, the --json report, the --manifest lines, and
// the quoting of raw-byte paths for each of them.
#pragma once

#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "pcopy/fd.hpp"
#include "pcopy/hash.hpp"
#include "pcopy/protocol.hpp"

namespace pcopy {

// Every error (or every warning) of a run, for its count and the --json report, packed: each is
// its path and the number of its reason, since most share a handful ("No space left on device" for
// every entry a full disk refused). 200,000 errors take about 10 MB.
class ErrorLog {
 public:
  // `path` relative to SRC, raw bytes.
  void add(std::string_view path, std::string_view reason);
  size_t size() const { return count_; }
  bool empty() const { return count_ == 0; }
  // fn(path, reason) for each error, in the order they were added.
  template <typename Fn>
  void for_each(Fn&& fn) const {
    for (size_t pos = 0; pos < packed_.size();) {
      uint32_t reason, len;
      packed_.copy(reinterpret_cast<char*>(&reason), sizeof reason, pos);
      packed_.copy(reinterpret_cast<char*>(&len), sizeof len, pos + sizeof reason);
      pos += sizeof reason + sizeof len;
      fn(std::string_view(packed_).substr(pos, len), std::string_view(reasons_[reason]));
      pos += len;
    }
  }

 private:
  std::string packed_;  // per error: its reason's number, its path's length, its path
  std::vector<std::string> reasons_;
  std::unordered_map<std::string, uint32_t> reason_numbers_;
  size_t count_ = 0;
};

// The exit statuses SPEC defines: everything copied; some entries failed (each one printed); a usage
// error, or a run refused before anything was tried; and 128 + N for a run ended by signal N.
inline constexpr int kExitCopied = 0;
inline constexpr int kExitSomeFailed = 1;
inline constexpr int kExitRefused = 2;
inline constexpr int exit_for_signal(int sig) { return 128 + sig; }

struct Stats {
  uint64_t files_copied = 0;  // regular files, hard links, FIFOs, devices
  uint64_t files_skipped = 0;
  uint64_t files_deleted = 0;
  uint64_t dirs_created = 0;
  uint64_t links_copied = 0;  // symbolic links
  uint64_t bytes_copied = 0;
  double elapsed_s = 0;
  unsigned workers = 0;
  bool interrupted = false;
  bool dry_run = false;  // -n: nothing was written; the counts are what a run would do
  int exit_status = 0;
  ErrorLog errors;
  ErrorLog warnings;  // what was left out or is worth a look, the run not failing for it
};

// For terminal and log lines: printable UTF-8 passes, anything else (control bytes, newlines,
// invalid UTF-8, backslashes) becomes a C-style escape, so one path is always one line; so do the
// valid characters a terminal or a reader of lines acts on (DEL, C1 controls, U+2028 and U+2029,
// bidirectional controls), byte by byte.
std::string display_path(std::string_view raw);
// The same for a message that may hold such paths already: its backslashes stay as they are.
std::string display_text(std::string_view raw);
// For JSON strings: valid UTF-8 passes unchanged; otherwise each invalid byte becomes "\xHH" and
// each backslash "\\", so no path is dropped or made unreadable. The report and the manifest mark
// such a path with "path_escaped": true, and write those characters a terminal or a reader of
// lines acts on as \uXXXX (the same string to a parser).
std::string json_path(std::string_view raw);
bool valid_utf8(std::string_view s);

// "copied 10 files, 2 dirs, 1 link, 4.0 KiB in 0:01 (4.0 KiB/s), 4 workers, 0 errors"; a dry run's
// "would copy ..." has no rate: nothing was moved.
std::string summary_line(const Stats& stats, bool show_skipped, bool show_deleted);
// The --json report and its line end, handed to `write` a piece at a time.
void write_json_report(const Stats& stats, const std::function<void(std::string_view)>& write);
std::string json_report(const Stats& stats);  // the report alone, as one string
// A run refused, or given up before it could copy (exit 2): `message` ("pcopy: why") on stderr and,
// with --json, a report on stdout whose one error is `path` (empty when no path is at fault) and
// why, so that a pipeline reading the report learns why nothing was done. No worker ran: 0 workers.
// With `signal`, the run was also interrupted by it (it came while the run was being refused): its
// report says so, with 128 + signal as the exit status.
void print_refusal(const std::string& message, const std::string& path, bool json, int signal = 0,
                   bool dry_run = false);

// --manifest FILE: one JSON object per line for every file copied. Lines are gathered and
// written 64 KiB at a time, and when flush() is called (the run does every 0.2 s), by a writer
// the caller may give (the run writes as it writes stdout: a stuck pipe holds off no signal).
class Manifest {
 public:
  // Writes all of `text` to `fd`: 0 or errno.
  using Writer = std::function<int(int fd, std::string_view text)>;

  Manifest() = default;
  ~Manifest();
  Manifest(const Manifest&) = delete;
  Manifest& operator=(const Manifest&) = delete;
  int open(UniqueFd fd);  // the file, opened for writing (it is emptied first); 0 or errno
  bool is_open() const { return fd_.valid(); }
  bool is_pipe() const { return pipe_; }  // a pipe or socket: see Writer
  void set_writer(Writer writer) { writer_ = std::move(writer); }
  void add(std::string_view rel, uint64_t size, Nanos mtime_ns, const Hash128& hash);
  void flush();  // what add() gathered, written now
  bool pending() const { return !buf_.empty(); }  // gathered, not yet written
  int close();   // flushes and closes: 0, or the first errno of a write or of the close

 private:
  UniqueFd fd_;
  bool pipe_ = false;
  std::string buf_;
  int err_ = 0;
  Writer writer_;
};

}  // namespace pcopy
