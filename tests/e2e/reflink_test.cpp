// End-to-end tests of --reflink on a loop-mounted XFS made with reflink (root only; skipped with the
// reason otherwise): auto and always share the source's extents, also with --verify and --manifest;
// never makes real copies, though copy_file_range would clone there; always fails, one line per
// file and nothing left under a final name, where cloning cannot work.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "harness.hpp"
#include "pcopy/fd.hpp"

namespace pcopy::test {
namespace {

// Whether any of the file's extents is shared with another file (FIEMAP_EXTENT_SHARED).
bool shares_extents(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) {
    ADD_FAILURE() << "cannot open " << path;
    return false;
  }
  constexpr unsigned kExtents = 64;
  std::vector<char> buf(sizeof(struct fiemap) + kExtents * sizeof(struct fiemap_extent));
  auto* map = reinterpret_cast<struct fiemap*>(buf.data());
  map->fm_length = FIEMAP_MAX_OFFSET;
  map->fm_flags = FIEMAP_FLAG_SYNC;
  map->fm_extent_count = kExtents;
  if (::ioctl(fd.get(), FS_IOC_FIEMAP, map) != 0) {
    ADD_FAILURE() << "FIEMAP failed on " << path;
    return false;
  }
  for (unsigned i = 0; i < map->fm_mapped_extents; ++i)
    if (map->fm_extents[i].fe_flags & FIEMAP_EXTENT_SHARED) return true;
  return false;
}

// path -> xxh128 of a --manifest file.
std::map<std::string, std::string> manifest_hashes(const std::string& file) {
  std::map<std::string, std::string> hashes;
  for (const std::string& line : lines_of(read_file(file))) {
    auto j = nlohmann::json::parse(line);
    hashes[j.at("path").get<std::string>()] = j.at("xxh128").get<std::string>();
  }
  return hashes;
}

const std::vector<std::string> kFiles = {"big.bin", "small.txt", "sparse.bin", "sub/inner.bin"};

class ReflinkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    xfs_.emplace(tmp / "xfs", Mount::LoopXfs{tmp / "xfs.img"});
    if (!xfs_->mounted()) GTEST_SKIP() << xfs_->why();
    make_dir(src);
    make_dir(src + "/sub");
    write_file(src + "/big.bin", random_bytes(8 << 20, 1));
    write_file(src + "/small.txt", "small\n");
    write_file(src + "/sub/inner.bin", random_bytes(300 << 10, 2));
    // 4 MiB: a hole, then 64 KiB of data at the end.
    write_file(src + "/sparse.bin", "");
    UniqueFd sparse(::open((src + "/sparse.bin").c_str(), O_WRONLY | O_CLOEXEC));
    std::string tail = random_bytes(64 << 10, 3);
    ASSERT_EQ(::pwrite(sparse.get(), tail.data(), tail.size(), (4 << 20) - off_t(tail.size())), ssize_t(tail.size()));
    sparse.reset();
    set_times(src + "/sparse.bin", 1'600'000'000'123'456'789LL, 1'600'000'000'987'654'321LL);
    for (const std::string& f : kFiles) ASSERT_FALSE(shares_extents(src + "/" + f)) << f;
  }

  RunResult copy_to(const std::string& to, std::vector<std::string> args) {
    args.push_back(src);
    args.push_back(to);
    return run_pcopy(args);
  }

  TempDir tmp;
  std::optional<Mount> xfs_;  // after tmp: unmounted before tmp is removed
  std::string src = tmp / "xfs/src";
};

TEST_F(ReflinkTest, AutoAndAlwaysShareTheSourceExtents) {
  for (std::string mode : {"auto", "always"}) {
    SCOPED_TRACE(mode);
    std::string to = tmp / ("xfs/dst-" + mode);
    RunResult r = copy_to(to, {"--reflink=" + mode, "-j2"});
    ASSERT_EQ(r.status, 0) << describe(r);
    EXPECT_EQ(diff_trees(src, to), "");
    for (const char* f : {"big.bin", "sub/inner.bin", "sparse.bin"})
      EXPECT_TRUE(shares_extents(to + "/" + f)) << f << " was copied, not cloned";
  }
}

TEST_F(ReflinkTest, NeverWritesRealCopiesThoughCopyFileRangeWouldClone) {
  std::string to = tmp / "xfs/dst";
  RunResult r = copy_to(to, {"--reflink=never", "-j2"});
  ASSERT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(diff_trees(src, to, CompareOptions{.blocks = true}), "");  // the hole stays a hole
  for (const std::string& f : kFiles) EXPECT_FALSE(shares_extents(to + "/" + f)) << f << " shares extents";
}

// A sparse file written to XFS takes the space of its data, as with cp --sparse=always: XFS kept
// the blocks it allocated ahead of each extent written past the end, so three extents of 4 MiB
// took 24 MiB where the source took 12.
TEST_F(ReflinkTest, SparseFilesTakeNoMoreSpaceThanTheirData) {
  std::string from = tmp / "outside", to = tmp / "xfs/dst";
  make_dir(from);
  write_file(from + "/sparse", "");
  UniqueFd fd(::open((from + "/sparse").c_str(), O_WRONLY | O_CLOEXEC));
  ASSERT_EQ(::ftruncate(fd.get(), 300 << 20), 0);
  for (int mib : {20, 120, 220}) {
    std::string data = random_bytes(4 << 20, unsigned(mib));
    ASSERT_EQ(::pwrite(fd.get(), data.data(), data.size(), off_t(mib) << 20), ssize_t(data.size()));
  }
  fd.reset();
  for (std::string mode : {"--reflink=never", "--reflink=auto"}) {
    SCOPED_TRACE(mode);
    RunResult r = run_pcopy({mode, from, to});
    ASSERT_EQ(r.status, 0) << describe(r);
    EXPECT_EQ(read_file(to + "/sparse"), read_file(from + "/sparse"));
    struct stat source {}, copy {};
    ASSERT_EQ(::stat((from + "/sparse").c_str(), &source), 0);
    ASSERT_EQ(::stat((to + "/sparse").c_str(), &copy), 0);
    EXPECT_LE(copy.st_blocks * 512, source.st_blocks * 512 + (1 << 20)) << "bytes allocated";
    ASSERT_EQ(::unlink((to + "/sparse").c_str()), 0);
  }
}

TEST_F(ReflinkTest, AlwaysStillClonesWithVerifyAndManifest) {
  std::string to = tmp / "xfs/dst", cloned = tmp / "cloned.jsonl", copied = tmp / "copied.jsonl";
  RunResult r = copy_to(to, {"--reflink=always", "--verify", "--manifest", cloned});
  ASSERT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(diff_trees(src, to), "");
  for (const char* f : {"big.bin", "sub/inner.bin"}) EXPECT_TRUE(shares_extents(to + "/" + f)) << f;
  // The hashes of the clones are those of a real copy, hashed as its bytes went by.
  r = copy_to(tmp / "xfs/dst-never", {"--reflink=never", "--manifest", copied});
  ASSERT_EQ(r.status, 0) << describe(r);
  auto hashes = manifest_hashes(cloned);
  EXPECT_EQ(hashes.size(), kFiles.size());
  EXPECT_EQ(hashes, manifest_hashes(copied));
}

TEST_F(ReflinkTest, AlwaysFailsWhereItCannotCloneAndLeavesNoFile) {
  std::string to = tmp / "dst";  // outside the XFS: a clone cannot cross file systems
  RunResult r = copy_to(to, {"--reflink=always", "-j2"});
  EXPECT_EQ(r.status, 1) << describe(r);
  for (const std::string& f : kFiles) {
    std::string line = "pcopy: cannot copy '" + f + "': cannot clone it (--reflink=always): Invalid cross-device link";
    auto lines = lines_of(r.err);
    EXPECT_EQ(std::count(lines.begin(), lines.end(), line), 1) << line << "\n" << describe(r);
  }
  EXPECT_EQ(list_tree(to), std::vector<std::string>{"sub"}) << "no file, no temporary";
  // A dry run into a DST that exists names the same failures (it called them copies, exit 0).
  make_dir(tmp / "dst-dry");
  RunResult dry = copy_to(tmp / "dst-dry", {"--reflink=always", "-j2", "-n"});
  EXPECT_EQ(dry.status, 1) << describe(dry);
  for (const std::string& f : kFiles) {
    std::string line = "pcopy: cannot copy '" + f + "': cannot clone it (--reflink=always): Invalid cross-device link";
    EXPECT_TRUE(has_line(dry.err, line)) << line << "\n" << describe(dry);
  }
  EXPECT_EQ(list_tree(tmp / "dst-dry"), std::vector<std::string>{});
  // auto falls back to copying.
  r = copy_to(tmp / "dst-auto", {"-j2"});
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(diff_trees(src, tmp / "dst-auto"), "");
}

}  // namespace
}  // namespace pcopy::test
