// The progress display: pure formatting (testable without a terminal) plus a small renderer that
// decides when to draw. The parent alone draws; workers never touch the terminal.
#pragma once

#include <cstdint>
#include <deque>
#include <string>
#include <utility>

namespace pcopy {

struct ProgressState {
  uint64_t files_done = 0;
  uint64_t files_total = 0;
  uint64_t bytes_done = 0;
  uint64_t bytes_total = 0;
  bool counting = false;  // the walk is still finding entries: totals are lower bounds
  double elapsed_s = 0;
  double rate = 0;  // bytes per second, recent
};

// a + b, or the largest count where that overflows: sparse files of up to 8 EiB each add up
// past 2^64 bytes.
inline uint64_t add_saturating(uint64_t a, uint64_t b) {
  uint64_t sum;
  return __builtin_add_overflow(a, b, &sum) ? UINT64_MAX : sum;
}

std::string format_bytes(uint64_t bytes);      // "0 B", "1023 B", "1.5 KiB", "3.2 GiB"
std::string format_rate(double bytes_per_s);   // "12.5 MiB/s"
std::string format_duration(double seconds);   // "0:07", "12:34", "1:02:03"
std::string format_count(uint64_t n);          // "12,345"

// One terminal line, at most `width` columns (no CR, no escape codes): percent, bar, files,
// bytes, rate, ETA. Parts are dropped from the right, then cut, to fit.
std::string format_bar(const ProgressState& s, int width);
// A plain log line for non-terminals.
std::string format_status_line(const ProgressState& s);

// Recent throughput over a sliding window of samples.
class RateMeter {
 public:
  void sample(double t, uint64_t bytes);
  double rate() const;

 private:
  std::deque<std::pair<double, uint64_t>> samples_;
};

// Draws the bar on a terminal (stderr): redraws only when the text changes, clears itself before
// other lines are printed.
class BarRenderer {
 public:
  explicit BarRenderer(int fd) : fd_(fd) {}
  void draw(const ProgressState& s);
  void clear();  // erase the bar line (before an error line, or at the end)

 private:
  int width() const;
  int fd_;
  std::string shown_;
};

}  // namespace pcopy
