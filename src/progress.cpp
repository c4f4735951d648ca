#include "pcopy/progress.hpp"

#include <fmt/core.h>

#include <algorithm>
#include <cmath>

namespace pcopy {

std::string format_bytes(uint64_t bytes) {
  static const char* const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  if (bytes < 1024) return fmt::format("{} B", bytes);
  double v = double(bytes);
  int u = 0;
  while (v >= 1024 && u < 6) v /= 1024, ++u;
  if (v >= 1023.95 && u < 6) v /= 1024, ++u;  // never "1024.0 KiB"
  return fmt::format("{:.1f} {}", v, units[u]);
}

std::string format_rate(double bytes_per_s) {
  constexpr double kMax = 18446744073709549568.0;  // the largest double below 2^64
  return format_bytes(bytes_per_s >= kMax ? UINT64_MAX : uint64_t(std::max(0.0, bytes_per_s))) + "/s";
}

std::string format_duration(double seconds) {
  auto s = uint64_t(std::max(0.0, std::round(seconds)));
  if (s >= 3600) return fmt::format("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60);
  return fmt::format("{}:{:02}", s / 60, s % 60);
}

std::string format_count(uint64_t n) {
  std::string digits = std::to_string(n), out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out.push_back(',');
    out.push_back(digits[i]);
  }
  return out;
}

namespace {

int percent(const ProgressState& s) {
  // In long double: a count times 100 overflows 64 bits from 160 PiB (sparse files).
  uint64_t total = work_of(s.files_total, s.bytes_total);
  if (total == 0) return s.counting ? 0 : 100;
  return int(std::min(100.0L, (long double)work_of(s.files_done, s.bytes_done) * 100 / total));
}

std::string eta(const ProgressState& s) {
  // From the work rate where there is one: a -u run that skips every file moves no bytes at all.
  if (s.counting || (s.rate <= 0 && s.work_rate <= 0)) return "ETA --:--";
  uint64_t done = s.bytes_done, total = s.bytes_total;
  double rate = s.rate;
  if (s.work_rate > 0) {
    done = work_of(s.files_done, s.bytes_done);
    total = work_of(s.files_total, s.bytes_total);
    rate = s.work_rate;
  }
  if (total < done) return "ETA --:--";
  // Rounded up, as pv does: "0:00" only at the end, never with work left.
  return fmt::format("ETA {:>5}", format_duration(std::ceil(double(total - done) / rate)));  // as wide as "--:--"
}

std::string totals(const ProgressState& s) {
  const char* more = s.counting ? "+" : "";
  return fmt::format("{}/{}{} files  {}/{}{}", format_count(s.files_done), format_count(s.files_total), more,
                     format_bytes(s.bytes_done), format_bytes(s.bytes_total), more);
}

}  // namespace

std::string format_bar(const ProgressState& s, int width) {
  if (width < 1) return {};
  const char* more = s.counting ? "+" : "";
  // Fixed widths keep the line from jittering as the numbers change: only the totals set them. On
  // a narrow terminal whole fields are dropped rather than cut in the middle, the least telling
  // first: the rate, the ETA, then the bar (which the percentage repeats), then the bytes and the
  // files; the bar comes back into room a dropped field leaves. While the walk is still counting,
  // no ETA is known and the percentage is of a total that grows: "(counting)", the ETA and the bar
  // go before the rate, then the only word on how the copy goes.
  struct Field {
    std::string text;
    int keep;  // fields of lower rank go first
    bool shown = true;
  };
  const std::string total_files = format_count(s.files_total);
  Field fields[] = {
      {fmt::format("{:>{}}/{}{} files", format_count(s.files_done), total_files.size(), total_files, more), 5},
      {fmt::format("{:>10}/{}{}", format_bytes(s.bytes_done), format_bytes(s.bytes_total), more), 4},
      {fmt::format("{:>12}", format_rate(s.rate)), s.counting ? 3 : 1, !s.dry_run},
      {eta(s), s.counting ? 1 : 2},
      {s.counting ? "(counting)" : "", 0, s.counting},
  };
  constexpr int kBarMin = 10, kBarMax = 40, kBarFrame = 3;  // " [" and "]"
  const int bar_rank = s.counting ? 2 : 3;
  int pct = percent(s);
  std::string head = fmt::format("{:3}%", pct);
  if (width < int(head.size())) return {};  // "100%" cut to "10" would say 10%
  auto used = [&](bool with_bar) {
    size_t n = head.size() + (with_bar ? kBarFrame + kBarMin : 0);
    for (const auto& f : fields) n += f.shown ? 2 + f.text.size() : 0;
    return int(n);
  };
  bool bar = true;
  for (int rank = 0; rank <= 5 && used(bar) > width; ++rank) {
    if (rank == bar_rank) bar = false;
    for (auto& f : fields) f.shown = f.shown && f.keep != rank;
  }
  bar = used(true) <= width;  // room left by a field that did not fit either
  std::string line = head;
  if (bar) {
    int len = std::min(width - used(false) - kBarFrame, kBarMax);
    int full = len * pct / 100;
    line += " [" + std::string(size_t(full), '#') + std::string(size_t(len - full), '-') + "]";
  }
  for (const auto& f : fields) {
    if (f.shown) line += "  " + f.text;
  }
  if (int(line.size()) > width) line.resize(size_t(width));
  return line;
}

std::string format_status_line(const ProgressState& s) {
  return fmt::format("pcopy: {}%  {}  {}{}  elapsed {}{}", percent(s), totals(s),
                     s.dry_run ? "" : format_rate(s.rate) + "  ", eta(s), format_duration(s.elapsed_s),
                     s.counting ? "  (still counting)" : "");
}

void RateMeter::sample(double t, uint64_t bytes) {
  // Fewer bytes done than before: a dead worker's file is counted again from its start. The
  // rate starts over rather than go negative.
  if (!samples_.empty() && bytes < samples_.back().second) samples_.clear();
  samples_.emplace_back(t, bytes);
  while (samples_.size() > 2 && samples_.front().first < t - 5.0) samples_.pop_front();
}

void RateMeter::skip(double seconds) {
  for (auto& sample : samples_) sample.first += seconds;
}

double RateMeter::rate() const {
  if (samples_.size() < 2) return 0;
  double dt = samples_.back().first - samples_.front().first;
  return dt <= 0 ? 0 : double(samples_.back().second - samples_.front().second) / dt;
}

}  // namespace pcopy
