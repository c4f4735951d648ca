// Power cuts: the shutdown ioctl on a loop-mounted ext4 stops every write to its device, as a cut
// does; mounted again, its journal is replayed, and what is there is what a crash would have left.
// Root only (loop mounts); skipped elsewhere, with the reason.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "harness.hpp"
#include "pcopy/fd.hpp"

namespace pcopy::test {
namespace {

class PowerCutTest : public ::testing::Test {
 protected:
  void SetUp() override {
    disk_.emplace(mnt_, Mount::LoopExt4{image_, 64, ""});
    if (!disk_->mounted()) GTEST_SKIP() << disk_->why();
    make_dir(src);
  }

  // Cuts the power under DST's file system, then mounts its image again.
  void cut_and_remount() {
    ASSERT_TRUE(cut_power(mnt_)) << "shutdown ioctl: " << std::strerror(errno);
    disk_.reset();
    disk_.emplace(mnt_, Mount::LoopImage{image_});
    ASSERT_TRUE(disk_->mounted()) << disk_->why();
  }

  // Everything written so far reaches the disk (yesterday's backup, long since written).
  void settle() {
    UniqueFd fd(::open(mnt_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    ASSERT_EQ(::syncfs(fd.get()), 0) << std::strerror(errno);
  }

  // ext4 commits its journal, as any program's fsync makes it (or its timer, every 5 s): what the
  // journal holds reaches the disk, data whose blocks are not allocated yet does not.
  void commit_journal() {
    std::string other = mnt_ + "/another-programs-file";
    write_file(other, "x");
    UniqueFd fd(::open(other.c_str(), O_WRONLY | O_CLOEXEC));
    ASSERT_EQ(::fsync(fd.get()), 0) << std::strerror(errno);
  }

  TempDir tmp;
  std::string image_ = tmp / "ext4.img";
  std::string mnt_ = tmp / "disk";
  std::optional<Mount> disk_;  // after tmp: unmounted before tmp is removed
  std::string src = tmp / "src";
  std::string dst = tmp / "disk/dst";
};

// A copy of a file ending in a hole had its size set by ftruncate, which ext4 journals at once,
// its data written back later: after a cut it had the source's size and mtime and held zeros, and
// every -u run after kept it (I24). Now its size on disk moves only with its data.
TEST_F(PowerCutTest, ACopyNeverHasTheSourcesSizeAndTimeWithoutItsData) {
  write_file(src + "/sparse", random_bytes(300'000, 1));
  ASSERT_EQ(::truncate((src + "/sparse").c_str(), 4 << 20), 0);
  write_file(src + "/plain", random_bytes(100'000, 2));
  RunResult r = run_pcopy({"-q", src, dst});
  ASSERT_EQ(r.status, 0) << describe(r);
  commit_journal();
  cut_and_remount();

  for (const std::string name : {"sparse", "plain"}) {
    SCOPED_TRACE(name);
    struct stat s {}, d {};
    ASSERT_EQ(::lstat((src + "/" + name).c_str(), &s), 0);
    if (::lstat((dst + "/" + name).c_str(), &d) != 0) continue;  // not there: the next run copies it
    if (d.st_size == s.st_size && d.st_mtim.tv_sec == s.st_mtim.tv_sec && d.st_mtim.tv_nsec == s.st_mtim.tv_nsec) {
      EXPECT_TRUE(read_file(dst + "/" + name) == read_file(src + "/" + name))
          << "the copy claims the source's size and time, and holds other bytes: -u would keep it";
    }
  }
  // The next night's -u run makes it whole.
  r = run_pcopy({"-q", "-u", src, dst});
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(diff_trees(src, dst), "");
}

// --fsync flushed each directory when its copy was complete, before --delete's removals, which no
// one flushed: after exit 0 and a cut, all that the run reported deleted was back (I24).
TEST_F(PowerCutTest, WithFsyncWhatDeleteRemovedStaysRemoved) {
  make_dirs(src + "/keep");
  make_dirs(src + "/gone/deeper");
  for (int i = 0; i < 3; ++i) {
    write_file(src + "/keep/k" + std::to_string(i), "kept");
    write_file(src + "/keep/old" + std::to_string(i), "removed from SRC");
    write_file(src + "/gone/deeper/g" + std::to_string(i), "removed from SRC");
  }
  RunResult r = run_pcopy({"-q", src, dst});
  ASSERT_EQ(r.status, 0) << describe(r);
  settle();
  std::filesystem::remove_all(src + "/gone");
  for (int i = 0; i < 3; ++i) ASSERT_EQ(::unlink((src + "/keep/old" + std::to_string(i)).c_str()), 0);

  r = run_pcopy({"-q", "--fsync", "--delete", "-u", "--json", src, dst});
  ASSERT_EQ(r.status, 0) << describe(r);
  EXPECT_NE(r.out.find("\"files_deleted\": 8"), std::string::npos) << r.out;  // 3 + 3 + deeper/ and gone/
  cut_and_remount();
  EXPECT_EQ(list_tree(dst), list_tree(src));
}

// Pages of `path` in the page cache not yet written back (cachestat, Linux 6.5); nullopt where
// the kernel cannot tell.
std::optional<uint64_t> dirty_pages(const std::string& path) {
  struct {
    uint64_t off = 0, len = 0;  // len 0: to the end
  } range;
  struct {
    uint64_t nr_cache, nr_dirty, nr_writeback, nr_evicted, nr_recently_evicted;
  } stat {};
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  constexpr long kCachestat = 451;
  if (!fd || ::syscall(kCachestat, fd.get(), &range, &stat, 0) != 0) return std::nullopt;
  return stat.nr_dirty;
}

// XFS writes a rename to its log before data written back up to 30 s later: after a power cut,
// copies a re-run had renamed over good ones were empty (I24; rsync leaves the same, cp's rewrite
// in place does not). pcopy sends a replacing copy's data to the disk before its rename, as ext4
// and btrfs do themselves: when the run ends, none of it is still only in memory.
TEST(PowerCutXfsTest, WhenARunEndsNoCopyItRenamedOverAnotherWaitsInMemory) {
  TempDir tmp;
  std::string src = tmp / "src", dst = tmp / "xfs/dst";
  Mount xfs(tmp / "xfs", Mount::LoopXfs{tmp / "xfs.img"});
  if (!xfs.mounted()) GTEST_SKIP() << xfs.why();
  make_dir(src);
  for (int i = 0; i < 20; ++i) write_file(src + "/f" + std::to_string(i), random_bytes(100'000, unsigned(i)));
  RunResult r = run_pcopy({"-q", src, dst});
  ASSERT_EQ(r.status, 0) << describe(r);
  ::sync();
  for (int i = 0; i < 20; ++i) write_file(src + "/f" + std::to_string(i), random_bytes(120'000, unsigned(100 + i)));
  r = run_pcopy({"-q", src, dst});
  ASSERT_EQ(r.status, 0) << describe(r);
  if (!dirty_pages(dst + "/f0")) GTEST_SKIP() << "no cachestat in this kernel (before 6.5)";
  for (int i = 0; i < 20; ++i) EXPECT_EQ(dirty_pages(dst + "/f" + std::to_string(i)), 0u) << "f" << i;
  EXPECT_EQ(diff_trees(src, dst), "");
}

}  // namespace
}  // namespace pcopy::test
