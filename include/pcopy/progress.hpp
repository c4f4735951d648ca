// The progress display's contents: pure formatting, testable without a terminal, and the rates it
// shows. The parent alone draws it (console.hpp); workers never touch the terminal.
#pragma once

#include <time.h>

#include <algorithm>
#include <cstdint>
#include <deque>
#include <string>
#include <utility>

namespace pcopy {

// Seconds on the monotonic clock: what the bar, its rates and the run's timers count in.
inline double now_s() {
  struct timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return double(ts.tv_sec) + double(ts.tv_nsec) / 1e9;
}

struct ProgressState {
  uint64_t files_done = 0;
  uint64_t files_total = 0;
  uint64_t bytes_done = 0;
  uint64_t bytes_total = 0;
  bool counting = false;  // the walk is still finding entries: totals are lower bounds
  double elapsed_s = 0;
  double rate = 0;  // bytes per second, recent
  double work_rate = 0;  // work (work_of) per second, recent, for the ETA; 0: unknown, bytes are used
  bool dry_run = false;  // nothing is copied: no throughput is shown, only how far the run has gone
};

// a + b, or the largest count where that overflows: sparse files of up to 8 EiB each add up
// past 2^64 bytes.
inline uint64_t add_saturating(uint64_t a, uint64_t b) {
  uint64_t sum;
  return __builtin_add_overflow(a, b, &sum) ? UINT64_MAX : sum;
}

// a - b, or 0 where b is more: a count taken back never wraps round.
inline uint64_t sub_saturating(uint64_t a, uint64_t b) { return a - std::min(a, b); }

// What the percentage and the ETA measure: bytes, and for each file kFileWork more, about what
// copying a file costs beyond its data (some system calls, ~16 us: 32 KiB at 2 GB/s). By bytes
// alone, a run of small files stood at 0% for thousands of files until a big one came, then fell
// back to 0% with an ETA of hours; a -u run that skipped every file stayed at 0% to the end.
inline constexpr uint64_t kFileWork = 32 * 1024;
inline uint64_t work_of(uint64_t files, uint64_t bytes) {
  uint64_t weight;
  return add_saturating(bytes, __builtin_mul_overflow(files, kFileWork, &weight) ? UINT64_MAX : weight);
}

std::string format_bytes(uint64_t bytes);      // "0 B", "1023 B", "1.5 KiB", "3.2 GiB"
std::string format_rate(double bytes_per_s);   // "12.5 MiB/s"
std::string format_duration(double seconds);   // "0:07", "12:34", "1:02:03"
std::string format_count(uint64_t n);          // "12,345"

// One terminal line, at most `width` columns (no CR, no escape codes): percent, bar, files,
// bytes, rate, ETA. Parts are dropped, the least telling first, then cut, to fit.
std::string format_bar(const ProgressState& s, int width);
// A plain log line for non-terminals.
std::string format_status_line(const ProgressState& s);

// Recent throughput over a sliding window of samples.
class RateMeter {
 public:
  void sample(double t, uint64_t bytes);
  double rate() const;
  // The process was stopped for `seconds` (Ctrl-Z): no time of the window, as if the samples
  // before were taken that much later.
  void skip(double seconds);

 private:
  std::deque<std::pair<double, uint64_t>> samples_;
};

}  // namespace pcopy
