#include "pcopy/progress.hpp"

#include <fmt/core.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <string>

using namespace pcopy;

namespace {

constexpr uint64_t KiB = 1024, MiB = KiB * 1024, GiB = MiB * 1024, TiB = GiB * 1024;

bool has_control_bytes(const std::string& s) {
  for (unsigned char c : s)
    if (c < 0x20 || c == 0x7f) return true;
  return false;
}

ProgressState midway() {
  ProgressState s;
  s.files_done = 1234;
  s.files_total = 4936;  // a quarter done, as the bytes are
  s.bytes_done = 3 * GiB / 2;  // 1.5 GiB
  s.bytes_total = 6 * GiB;
  s.elapsed_s = 30;
  s.rate = 50.0 * MiB;
  return s;
}

}  // namespace

// ---- format_bytes -------------------------------------------------------------------------------

TEST(FormatBytes, SmallValuesArePlainBytes) {
  EXPECT_EQ(format_bytes(0), "0 B");
  EXPECT_EQ(format_bytes(1), "1 B");
  EXPECT_EQ(format_bytes(1023), "1023 B");
}

TEST(FormatBytes, LargerValuesUseIecUnitsWithOneDecimal) {
  EXPECT_EQ(format_bytes(1024), "1.0 KiB");
  EXPECT_EQ(format_bytes(1536), "1.5 KiB");
  EXPECT_EQ(format_bytes(3 * MiB / 2), "1.5 MiB");
  EXPECT_EQ(format_bytes(MiB), "1.0 MiB");
  EXPECT_EQ(format_bytes(GiB), "1.0 GiB");
  EXPECT_EQ(format_bytes(5 * GiB / 2), "2.5 GiB");
  EXPECT_EQ(format_bytes(TiB), "1.0 TiB");
  EXPECT_EQ(format_bytes(TiB * 1024), "1.0 PiB");
  EXPECT_EQ(format_bytes(TiB * 1024 * 1024), "1.0 EiB");
  EXPECT_EQ(format_bytes(std::numeric_limits<uint64_t>::max()), "16.0 EiB");
}

TEST(FormatBytes, JustBelowAUnitBoundaryRoundsUpToTheNextUnit) {
  EXPECT_EQ(format_bytes(MiB - 1), "1.0 MiB");
  EXPECT_EQ(format_bytes(GiB - 1), "1.0 GiB");
  EXPECT_EQ(format_bytes(TiB - 1), "1.0 TiB");
  EXPECT_EQ(format_bytes(MiB - 51), "1.0 MiB");     // 1023.950 KiB would round to "1024.0"
  EXPECT_EQ(format_bytes(MiB - 52), "1023.9 KiB");  // 1023.949 KiB
}

TEST(FormatBytes, NeverPrints1024OfAUnit) {
  for (uint64_t unit : {KiB, MiB, GiB, TiB, TiB * 1024}) {
    for (uint64_t delta = 0; delta < 200; ++delta) {
      for (uint64_t v : {unit * 1024 - delta, unit * 1024 - delta * (unit / 64 + 1)}) {
        std::string s = format_bytes(v);
        EXPECT_EQ(s.find("1024"), std::string::npos) << v << " -> " << s;
      }
    }
  }
}

TEST(FormatBytes, NumberPartStaysBelow1024ForEveryPowerOfTwoNeighbourhood) {
  for (int shift = 10; shift < 64; ++shift) {
    for (int64_t d = -3; d <= 3; ++d) {
      uint64_t v = (uint64_t(1) << shift) + uint64_t(d);
      std::string s = format_bytes(v);
      double number = std::stod(s);
      EXPECT_LT(number, 1024.0) << v << " -> " << s;
      EXPECT_GE(number, 1.0) << v << " -> " << s;
    }
  }
}

TEST(FormatRate, IsBytesPerSecond) {
  EXPECT_EQ(format_rate(0), "0 B/s");
  EXPECT_EQ(format_rate(12.5 * MiB), "12.5 MiB/s");
  EXPECT_EQ(format_rate(-5), "0 B/s");
  EXPECT_EQ(format_rate(1e30), "16.0 EiB/s");  // past 2^64: the largest, not a wrapped cast
}

// ---- format_duration / format_count -------------------------------------------------------------

TEST(FormatDuration, MinutesAndSecondsBelowAnHour) {
  EXPECT_EQ(format_duration(0), "0:00");
  EXPECT_EQ(format_duration(7), "0:07");
  EXPECT_EQ(format_duration(59), "0:59");
  EXPECT_EQ(format_duration(60), "1:00");
  EXPECT_EQ(format_duration(754), "12:34");
  EXPECT_EQ(format_duration(3599), "59:59");
}

TEST(FormatDuration, HoursMinutesSecondsFromAnHour) {
  EXPECT_EQ(format_duration(3600), "1:00:00");
  EXPECT_EQ(format_duration(3723), "1:02:03");
  EXPECT_EQ(format_duration(100 * 3600 + 5), "100:00:05");
}

TEST(FormatDuration, RoundsToTheNearestSecondAndClampsNegatives) {
  EXPECT_EQ(format_duration(6.6), "0:07");
  EXPECT_EQ(format_duration(59.6), "1:00");
  EXPECT_EQ(format_duration(3599.7), "1:00:00");
  EXPECT_EQ(format_duration(0.4), "0:00");
  EXPECT_EQ(format_duration(-12), "0:00");
}

TEST(FormatCount, GroupsThousandsWithCommas) {
  EXPECT_EQ(format_count(0), "0");
  EXPECT_EQ(format_count(999), "999");
  EXPECT_EQ(format_count(1000), "1,000");
  EXPECT_EQ(format_count(12345), "12,345");
  EXPECT_EQ(format_count(123456), "123,456");
  EXPECT_EQ(format_count(1234567), "1,234,567");
  EXPECT_EQ(format_count(std::numeric_limits<uint64_t>::max()), "18,446,744,073,709,551,615");
}

// ---- format_bar -----------------------------------------------------------------------------

TEST(FormatBar, NeverExceedsTheWidthForAnyWidthFrom1To200) {
  ProgressState states[5];
  states[0] = midway();
  states[1] = midway();
  states[1].counting = true;
  states[2] = ProgressState{};  // nothing known yet
  states[2].counting = true;
  states[3] = midway();
  states[3].files_done = states[3].files_total = std::numeric_limits<uint64_t>::max();
  states[3].bytes_done = states[3].bytes_total = std::numeric_limits<uint64_t>::max();
  states[3].rate = 1e18;
  states[4] = midway();
  states[4].bytes_done = states[4].bytes_total * 2;  // more than announced: still at most 100%
  for (const ProgressState& s : states) {
    for (int width = 1; width <= 200; ++width) {
      std::string line = format_bar(s, width);
      EXPECT_LE(int(line.size()), width) << "width " << width << ": '" << line << "'";
      EXPECT_FALSE(has_control_bytes(line)) << line;
      // The percentage whole or nothing: cut, "100%" read "10" (RRR).
      std::string head = format_bar(s, 200).substr(0, 4);
      if (width >= 4) EXPECT_EQ(line.substr(0, 4), head) << "width " << width;
      else EXPECT_EQ(line, "") << "width " << width;
    }
  }
}

TEST(FormatBar, ZeroOrNegativeWidthGivesNothing) {
  EXPECT_EQ(format_bar(midway(), 0), "");
  EXPECT_EQ(format_bar(midway(), -5), "");
}

TEST(FormatBar, FullLineAt120ColumnsShowsPercentBarFilesBytesRateAndEta) {
  ProgressState s = midway();
  std::string line = format_bar(s, 120);
  EXPECT_LE(line.size(), 120u);
  EXPECT_EQ(line.substr(0, 4), " 25%") << line;
  EXPECT_NE(line.find('['), std::string::npos) << line;
  EXPECT_NE(line.find(']'), std::string::npos) << line;
  EXPECT_NE(line.find('#'), std::string::npos) << line;
  EXPECT_NE(line.find("1,234/4,936 files"), std::string::npos) << line;
  EXPECT_NE(line.find("1.5 GiB/6.0 GiB"), std::string::npos) << line;
  EXPECT_NE(line.find("50.0 MiB/s"), std::string::npos) << line;
  // 4.5 GiB left at 50 MiB/s: 92.16 s, rounded up.
  EXPECT_NE(line.find("ETA  1:33"), std::string::npos) << line;
  EXPECT_EQ(line.find('+'), std::string::npos) << line;
  EXPECT_EQ(line.find('\r'), std::string::npos);
  EXPECT_EQ(line.find('\x1b'), std::string::npos);
}

// A dry run copies nothing: a rate of bytes per second there (the pace of deciding, "2.0 GiB/s")
// read as a copy under way. Its bar and status lines show how far it has gone and the ETA only.
TEST(FormatBar, ADryRunShowsNoThroughput) {
  ProgressState s = midway();
  s.dry_run = true;
  std::string line = format_bar(s, 120);
  EXPECT_EQ(line.find("/s"), std::string::npos) << line;
  EXPECT_NE(line.find("1,234/4,936 files"), std::string::npos) << line;
  EXPECT_NE(line.find("ETA  1:33"), std::string::npos) << line;
  std::string status = format_status_line(s);
  EXPECT_EQ(status.find("/s"), std::string::npos) << status;
  EXPECT_NE(status.find("1.5 GiB/6.0 GiB  ETA  1:33  elapsed"), std::string::npos) << status;
  s.dry_run = false;
  EXPECT_NE(format_status_line(s).find("50.0 MiB/s  ETA"), std::string::npos) << format_status_line(s);
}

// With work left the ETA is never 0:00 (rounded to the nearest second, 0.3 s left said "done now";
// with a rate that leapt after Ctrl-Z and fg, so did 44% left).
TEST(FormatBar, EtaIsRoundedUpNeverZeroWithWorkLeft) {
  ProgressState s = midway();
  s.files_done = s.files_total;
  s.bytes_done = s.bytes_total - 15 * MiB;  // 0.3 s at 50 MiB/s
  EXPECT_NE(format_bar(s, 120).find("ETA  0:01"), std::string::npos) << format_bar(s, 120);
  EXPECT_NE(format_status_line(s).find("ETA  0:01"), std::string::npos) << format_status_line(s);
  s.bytes_done = s.bytes_total;
  EXPECT_NE(format_bar(s, 120).find("ETA  0:00"), std::string::npos) << format_bar(s, 120);
}

TEST(FormatBar, BarIsFilledInProportionToThePercentage) {
  ProgressState s = midway();
  std::string line = format_bar(s, 120);
  size_t open = line.find('['), close = line.find(']');
  ASSERT_NE(open, std::string::npos);
  ASSERT_NE(close, std::string::npos);
  std::string bar = line.substr(open + 1, close - open - 1);
  size_t hashes = std::count(bar.begin(), bar.end(), '#');
  size_t dashes = std::count(bar.begin(), bar.end(), '-');
  EXPECT_EQ(hashes + dashes, bar.size());
  EXPECT_EQ(hashes, bar.size() * 25 / 100);
}

TEST(FormatBar, WhileCountingTotalsAreMarkedWithPlusAndNoEtaIsGiven) {
  ProgressState s = midway();
  s.counting = true;
  std::string line = format_bar(s, 120);
  EXPECT_LE(line.size(), 120u);
  EXPECT_NE(line.find("1,234/4,936+ files"), std::string::npos) << line;
  EXPECT_NE(line.find("1.5 GiB/6.0 GiB+"), std::string::npos) << line;
  EXPECT_NE(line.find("ETA --:--"), std::string::npos) << line;
  EXPECT_EQ(line.find("ETA  1:33"), std::string::npos) << line;
}

TEST(FormatBar, CompleteCopyShows100Percent) {
  ProgressState s = midway();
  s.files_done = s.files_total;
  s.bytes_done = s.bytes_total;
  std::string line = format_bar(s, 120);
  EXPECT_EQ(line.substr(0, 4), "100%") << line;
  EXPECT_EQ(line.find("-]"), std::string::npos) << line;  // the bar is full
}

TEST(FormatBar, PercentNeverExceeds100) {
  ProgressState s = midway();
  s.bytes_done = s.bytes_total * 3;
  EXPECT_EQ(format_bar(s, 120).substr(0, 4), "100%");
}

// Sparse files make byte counts of exbibytes: a count times 100 no longer fits in 64 bits.
TEST(FormatBar, PercentOfExbibytesIsRight) {
  ProgressState s;
  s.files_done = s.files_total = 2;
  s.bytes_done = s.bytes_total = uint64_t(1) << 60;
  EXPECT_EQ(format_bar(s, 120).substr(0, 4), "100%");
  s.bytes_done = s.bytes_total / 2;
  EXPECT_EQ(format_bar(s, 120).substr(0, 4), " 50%");
  EXPECT_EQ(add_saturating(UINT64_MAX - 1, 5), UINT64_MAX);
  EXPECT_EQ(add_saturating(1, 2), 3u);
}

TEST(FormatBar, NarrowWidthStillStartsWithThePercentage) {
  ProgressState s = midway();
  EXPECT_EQ(format_bar(s, 4), " 25%");
  EXPECT_EQ(format_bar(s, 2), "") << "a cut percentage misleads: 100% read 10";
  std::string line = format_bar(s, 40);
  EXPECT_EQ(line.size(), 40u);  // parts cut to fit, not dropped to nothing
  EXPECT_EQ(line.substr(0, 4), " 25%");
}

// An 80-column terminal (the bar is drawn three columns short) copying tens of thousands of files:
// the bar, the counts and the ETA stay; the rate, then "(counting)", make way for them.
TEST(FormatBar, At80ColumnsTensOfThousandsOfFilesKeepTheBarAndTheEta) {
  ProgressState s = midway();
  s.files_done = 12345;
  s.files_total = 123456;
  s.bytes_done = 123 * MiB + MiB / 3;
  s.bytes_total = 1536 * GiB / 10;
  std::string line = format_bar(s, 77);
  EXPECT_LE(line.size(), 77u);
  EXPECT_NE(line.find(" ["), std::string::npos) << line;
  EXPECT_NE(line.find("12,345/123,456 files"), std::string::npos) << line;
  EXPECT_NE(line.find("123.3 MiB/153.6 GiB"), std::string::npos) << line;
  EXPECT_NE(line.find("ETA "), std::string::npos) << line;
  EXPECT_EQ(line.find("MiB/s"), std::string::npos) << line;  // the rate went first

  // While the walk counts, no ETA is known ("ETA --:--") and the percentage is of a total still
  // growing: they make way for the rate, then the only word on how the copy goes (at 80 columns
  // the line showed neither rate nor ETA until the count ended).
  s.counting = true;
  line = format_bar(s, 77);
  EXPECT_LE(line.size(), 77u);
  EXPECT_EQ(line.find(" ["), std::string::npos) << line;
  EXPECT_NE(line.find("12,345/123,456+ files"), std::string::npos) << line;
  EXPECT_NE(line.find("123.3 MiB/153.6 GiB+"), std::string::npos) << line;
  EXPECT_NE(line.find("50.0 MiB/s"), std::string::npos) << line;
  EXPECT_EQ(line.find("ETA"), std::string::npos) << line;

  // With room, nothing is dropped and the bar is at its widest.
  line = format_bar(s, 200);
  EXPECT_NE(line.find("MiB/s"), std::string::npos) << line;
  EXPECT_NE(line.find("(counting)"), std::string::npos) << line;
  EXPECT_EQ(line.find(']') - line.find('[') - 1, 40u) << line;
}

// The fields keep their widths through a run (only the totals, fixed once counted, set them): a
// count that gains a digit, or an ETA that falls below ten minutes, neither moves the bar nor
// makes it or a field come and go between frames (F2 saw the bar come and go at 30 columns).
TEST(FormatBar, TheLayoutStaysPutAsTheCountsGrow) {
  ProgressState s = midway();
  s.files_total = 123'456;
  s.bytes_total = 20 * GiB;
  for (int width = 1; width <= 160; ++width) {
    std::string first;
    for (uint64_t done : {0ull, 7ull, 99ull, 4'321ull, 99'999ull, 123'456ull}) {
      s.files_done = done;
      s.bytes_done = s.bytes_total / 123'456 * done;
      s.rate = s.work_rate = 0;  // ETA --:--, then from over ten minutes down to 0:00
      if (done > 0) s.rate = double(s.bytes_total - s.bytes_done + 1) / double(700 - done % 700);
      std::string line = format_bar(s, width);
      // Where the bar is, how long the line is, and which fields it holds.
      std::string layout = fmt::format("{} {} {}", line.size(), int(line.find('[')), int(line.find(']')));
      for (const char* field : {" files", "/s", "ETA"}) layout += line.find(field) != line.npos ? field : " -";
      if (first.empty()) first = layout;
      EXPECT_EQ(layout, first) << "width " << width << ", " << done << " files: '" << line << "'";
    }
  }
}

// Each file weighs kFileWork besides its bytes. 60,000 one-byte files, then four of 100 MiB found
// at the end: the bar read 93% while the small ones were copied, then fell to 0% with an ETA of
// four hours, from the byte rate of the small files (III). And a -u run that skips every file
// stood at 0% to its end.
TEST(FormatBar, FilesCountTowardsThePercentageAndTheEta) {
  ProgressState s;
  s.files_done = 59'000;
  s.files_total = 60'004;
  s.bytes_done = 59'000;
  s.bytes_total = 60'000 + 400 * MiB;
  s.rate = 27.0 * 1024;                    // bytes per second: the small files' rate
  s.work_rate = 30'000.0 * kFileWork;      // 30,000 files a second
  std::string line = format_bar(s, 150);
  EXPECT_EQ(line.substr(0, 4), " 81%") << line;  // 1,844 MiB of work done of 2,276 MiB
  EXPECT_NE(line.find("ETA  0:01"), std::string::npos) << line;  // 432 MiB of work left: 0.45 s, rounded up
  EXPECT_EQ(format_status_line(s).rfind("pcopy: 81%", 0), 0u) << format_status_line(s);

  ProgressState skipping;  // -u, nothing to copy: every file skipped, none of their bytes to do
  skipping.files_done = 20'000;
  skipping.files_total = 40'000;
  EXPECT_EQ(format_bar(skipping, 150).substr(0, 4), " 50%");
  // It moves no bytes, yet its files go at a rate: the ETA comes from that, not "--:--" to the end.
  skipping.work_rate = 10'000.0 * kFileWork;  // 10,000 files a second
  EXPECT_NE(format_bar(skipping, 150).find("ETA  0:02"), std::string::npos) << format_bar(skipping, 150);
}

TEST(FormatBar, WithoutRateTheEtaIsUnknown) {
  ProgressState s = midway();
  s.rate = 0;
  std::string line = format_bar(s, 150);
  EXPECT_NE(line.find("ETA --:--"), std::string::npos) << line;
}

TEST(FormatStatusLine, IsOnePlainLineWithTheSameFacts) {
  ProgressState s = midway();
  std::string line = format_status_line(s);
  EXPECT_FALSE(has_control_bytes(line)) << line;
  EXPECT_EQ(line.find('\r'), std::string::npos);
  EXPECT_EQ(line.find('\n'), std::string::npos);
  EXPECT_EQ(line.rfind("pcopy: 25%", 0), 0u) << line;
  EXPECT_NE(line.find("1,234/4,936 files"), std::string::npos) << line;
  EXPECT_NE(line.find("1.5 GiB/6.0 GiB"), std::string::npos) << line;
  EXPECT_NE(line.find("50.0 MiB/s"), std::string::npos) << line;
  EXPECT_NE(line.find("elapsed 0:30"), std::string::npos) << line;
}

TEST(FormatStatusLine, SaysWhenStillCounting) {
  ProgressState s = midway();
  s.counting = true;
  std::string line = format_status_line(s);
  EXPECT_FALSE(has_control_bytes(line)) << line;
  EXPECT_NE(line.find("4,936+ files"), std::string::npos) << line;
  EXPECT_NE(line.find("counting"), std::string::npos) << line;
}

TEST(RateMeter, NeedsTwoSamples) {
  RateMeter m;
  EXPECT_EQ(m.rate(), 0.0);
  m.sample(1.0, 100);
  EXPECT_EQ(m.rate(), 0.0);
}

TEST(RateMeter, IsBytesOverTimeAcrossTheWindow) {
  RateMeter m;
  m.sample(0.0, 0);
  m.sample(1.0, 1000);
  m.sample(2.0, 3000);
  EXPECT_DOUBLE_EQ(m.rate(), 1500.0);
}

TEST(RateMeter, ForgetsSamplesOlderThanTheWindow) {
  RateMeter m;
  m.sample(0.0, 0);
  m.sample(1.0, 1'000'000);  // a burst long ago
  for (int t = 2; t <= 20; ++t) m.sample(double(t), 1'000'000 + uint64_t(t - 1) * 10);
  // Only the last ~5 seconds count: 10 bytes per second.
  EXPECT_NEAR(m.rate(), 10.0, 0.01);
}

// Ctrl-Z for ten seconds, then fg: the stop is no time the copy took. The rate right after read
// 5.3 MiB/s (ETA 2:51) where it was 570 MiB/s before (III).
TEST(RateMeter, TimeStoppedIsSkipped) {
  RateMeter m;
  m.sample(0.0, 0);
  m.sample(0.5, 500);
  m.skip(10.0);
  m.sample(11.0, 1000);
  EXPECT_DOUBLE_EQ(m.rate(), 1000.0);
}

// A worker died: its file's bytes are taken back and counted again from the start. The rate
// starts over; it wrapped around to 16 EiB/s.
TEST(RateMeter, StartsOverWhenTheCountGoesDown) {
  RateMeter m;
  m.sample(0.0, 0);
  m.sample(1.0, 120'000'000);
  m.sample(2.0, 8'000'000);
  EXPECT_EQ(m.rate(), 0.0);
  m.sample(3.0, 10'000'000);
  EXPECT_DOUBLE_EQ(m.rate(), 2'000'000.0);
}
