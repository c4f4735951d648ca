// End-to-end tests of the core copy: the real pcopy binary on real trees in a temporary directory,
// checked with diff_trees and explicit assertions on what SPEC.md promises.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/fs.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <climits>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "../acl_util.hpp"
#include "harness.hpp"
#include "pcopy/fd.hpp"
#include "pcopy/fs_facts.hpp"
#include "pcopy/paths.hpp"
#include "pcopy/temp_names.hpp"

namespace pcopy::test {
namespace {

constexpr uid_t kNobody = 65534;

struct stat lstat_of(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) ADD_FAILURE() << "cannot lstat " << escape_path(path);
  return st;
}

long long mtime_ns(const struct stat& st) { return st.st_mtim.tv_sec * 1'000'000'000LL + st.st_mtim.tv_nsec; }
long long atime_ns(const struct stat& st) { return st.st_atim.tv_sec * 1'000'000'000LL + st.st_atim.tv_nsec; }
mode_t mode_bits(const std::string& path) { return lstat_of(path).st_mode & 07777; }

size_t count_regular_files(const std::string& root) {
  auto paths = list_tree(root);
  return static_cast<size_t>(std::count_if(paths.begin(), paths.end(), [&](const std::string& rel) {
    return S_ISREG(lstat_of(root + "/" + rel).st_mode);
  }));
}

// Removes one source entry the copy was expected to miss, keeping its directory's times so the
// rest of the tree still compares equal.
void remove_keeping_parent_times(const std::string& path) {
  std::string parent = path.substr(0, path.rfind('/'));
  struct stat st = lstat_of(parent);
  ASSERT_EQ(::unlink(path.c_str()), 0) << escape_path(path);
  set_times(parent, atime_ns(st), mtime_ns(st));
}

class CopyTest : public SrcDstTest {
 protected:
  void expect_copied(const RunResult& r, const CompareOptions& compare = {}) {
    EXPECT_EQ(r.status, 0) << describe(r);
    EXPECT_EQ(diff_trees(src, dst, compare), "");
  }

  // A usage error: exit 2, a message, and `must_not_exist` never created.
  void expect_refused(const RunResult& r, const std::string& must_not_exist) {
    EXPECT_EQ(r.status, 2) << describe(r);
    EXPECT_NE(r.err, "") << "a refusal must say why";
    EXPECT_FALSE(exists(must_not_exist)) << escape_path(must_not_exist) << " was created\n" << describe(r);
  }

  // Copies SRC twice, once with each set of options: both copies must equal SRC and each other.
  void expect_same_copies(const std::vector<std::string>& first, const std::vector<std::string>& second) {
    std::string a = tmp / "a", b = tmp / "b";
    for (auto [args, to] : {std::pair{first, a}, std::pair{second, b}}) {
      args.push_back(src);
      args.push_back(to);
      RunResult r = run_pcopy(args);
      EXPECT_EQ(r.status, 0) << describe(r);
      EXPECT_EQ(diff_trees(src, to), "");
    }
    EXPECT_EQ(diff_trees(a, b), "");
  }

  // A mixed tree: sizes from 0 to a few hundred KiB, nested directories and links.
  void make_mixed_tree(int files) {
    for (int d = 0; d < 8; ++d) make_dirs(src + fmt::format("/d{}/sub{}", d, d % 3));
    for (int i = 0; i < files; ++i) {
      std::string dir = fmt::format("{}/d{}{}", src, i % 8, i % 2 == 0 ? fmt::format("/sub{}", i % 8 % 3) : "");
      size_t size = static_cast<size_t>(i * i * 37 % 300'000) * (i % 5 == 0 ? 0 : 1);
      write_file(fmt::format("{}/f{}.bin", dir, i), random_bytes(size, static_cast<unsigned>(i)), 0600 + i % 2 * 0044);
      set_times(fmt::format("{}/f{}.bin", dir, i), 1'500'000'000'000'000'000LL + i, 1'600'000'000'000'000'000LL + i);
    }
    make_symlink("../d1/f1.bin", src + "/d0/link-to-f1");
    make_symlink("missing", src + "/d2/dangling");
  }
};

// ---------------------------------------------------------------------------------------------------
// What gets copied.

TEST_F(CopyTest, CopiesEmptySourceDirectory) {
  set_times(src, 1'400'000'000'111'111'111LL, 1'400'000'000'222'222'222LL);
  expect_copied(copy());
  EXPECT_TRUE(list_tree(dst).empty());
}

TEST_F(CopyTest, CopiesEmptyDirectories) {
  make_dirs(src + "/a/b/empty");
  make_dir(src + "/e", 0700);
  expect_copied(copy());
  EXPECT_TRUE(S_ISDIR(lstat_of(dst + "/a/b/empty").st_mode));
  EXPECT_TRUE(S_ISDIR(lstat_of(dst + "/e").st_mode));
}

TEST_F(CopyTest, CopiesEightLevelsDeep) {
  std::string dir = src;
  for (int level = 1; level <= 8; ++level) {
    dir += fmt::format("/level{}", level);
    make_dir(dir);
    write_file(dir + "/file.txt", fmt::format("at level {}\n", level));
  }
  expect_copied(copy());
  EXPECT_EQ(read_file(dst + "/level1/level2/level3/level4/level5/level6/level7/level8/file.txt"), "at level 8\n");
}

TEST_F(CopyTest, CopiesZeroByteFile) {
  write_file(src + "/empty.bin", "", 0600);
  set_times(src + "/empty.bin", 1'300'000'000'000'000'001LL, 1'300'000'000'000'000'002LL);
  expect_copied(copy());
  struct stat st = lstat_of(dst + "/empty.bin");
  EXPECT_TRUE(S_ISREG(st.st_mode));
  EXPECT_EQ(st.st_size, 0);
}

TEST_F(CopyTest, CopiesLargeFileByteExact) {
  const size_t size = (64u << 20) + 1;  // one byte past a power-of-two boundary
  write_file(src + "/large.bin", random_bytes(size, 64));
  expect_copied(copy());
  EXPECT_EQ(lstat_of(dst + "/large.bin").st_size, static_cast<off_t>(size));
}

TEST_F(CopyTest, CopiesTenThousandSmallFiles) {
  for (int d = 0; d < 100; ++d) {
    std::string dir = src + fmt::format("/dir{:03}", d);
    make_dir(dir);
    for (int f = 0; f < 100; ++f) write_file(dir + fmt::format("/file{:03}", f), fmt::format("{}/{}\n", d, f));
  }
  expect_copied(copy());
  EXPECT_EQ(list_tree(dst).size(), 10'100u);
}

TEST_F(CopyTest, CopiesNamesWithArbitraryBytes) {
  const std::vector<std::string> names = {
      "with space",  " leading space", "trailing space ", "new\nline", "-leading-dash", "--double-dash", "-",
      "\xff\xfe",    "tab\there",      "back\\slash",     "quote'\"",  "*glob?[x]",     "\x01\x1b[31m", "na\xc3\xafve",
  };
  make_dir(src + "/-dir\n\xff");
  for (size_t i = 0; i < names.size(); ++i) {
    write_file(src + "/" + names[i], "content of " + names[i]);
    write_file(src + "/-dir\n\xff/" + names[i], std::to_string(i));
  }
  make_symlink("new\nline", src + "/link\nto newline");
  expect_copied(copy());
  EXPECT_EQ(list_tree(dst), list_tree(src));
  EXPECT_EQ(read_file(dst + "/\xff\xfe"), "content of \xff\xfe");
}

TEST_F(CopyTest, CopiesSymlinksWithTargetTextUnchanged) {
  write_file(src + "/file", "data");
  make_dir(src + "/dir");
  make_symlink("../file", src + "/dir/relative");
  make_symlink(src + "/file", src + "/absolute");  // points into SRC: must not be rewritten to DST
  make_symlink("no/such/target", src + "/dangling");
  make_symlink("loop", src + "/loop");
  set_times(src + "/dir/relative", 1'111'111'111'000'000'001LL, 1'222'222'222'000'000'002LL);
  set_times(src + "/absolute", 1'111'111'111'000'000'003LL, 1'222'222'222'000'000'004LL);
  set_times(src + "/dangling", 1'111'111'111'000'000'005LL, 1'222'222'222'000'000'006LL);
  set_times(src + "/dir", 1'111'111'111'000'000'007LL, 1'222'222'222'000'000'008LL);

  expect_copied(copy());
  EXPECT_EQ(read_link(dst + "/dir/relative"), "../file");
  EXPECT_EQ(read_link(dst + "/absolute"), src + "/file");
  EXPECT_EQ(read_link(dst + "/dangling"), "no/such/target");
  EXPECT_EQ(read_link(dst + "/loop"), "loop");
  EXPECT_EQ(mtime_ns(lstat_of(dst + "/dangling")), 1'222'222'222'000'000'006LL);
  EXPECT_EQ(mtime_ns(lstat_of(dst + "/dir/relative")), 1'222'222'222'000'000'002LL);
}

TEST_F(CopyTest, CopiesReadOnlyDirectoryWithItsContents) {
  make_dir(src + "/ro");
  write_file(src + "/ro/inside.txt", "inside");
  make_dir(src + "/ro/sub");
  write_file(src + "/ro/sub/deeper.txt", "deeper");
  ::chmod((src + "/ro").c_str(), 0555);
  write_file(src + "/owner-read-only.txt", "secret", 0400);
  RunOptions options = unprivileged(tmp);  // as root the modes would not stop anything

  expect_copied(copy({}, options));
  EXPECT_EQ(mode_bits(dst + "/ro"), 0555u);
  EXPECT_EQ(read_file(dst + "/ro/sub/deeper.txt"), "deeper");
  EXPECT_EQ(mode_bits(dst + "/owner-read-only.txt"), 0400u);
  EXPECT_EQ(read_file(dst + "/owner-read-only.txt"), "secret");
}

TEST_F(CopyTest, PreservesModeBitsAndNanosecondMtimes) {
  const std::vector<mode_t> file_modes = {0600, 0640, 0644, 0700, 0755, 0444, 0511, 04755, 02755, 06711};
  const std::vector<mode_t> dir_modes = {0700, 0750, 0711, 02775, 01777, 0555};
  for (size_t i = 0; i < dir_modes.size(); ++i) {
    std::string dir = src + fmt::format("/dir{:o}", dir_modes[i]);
    make_dir(dir);
    write_file(dir + "/f", "x");
    ::chmod(dir.c_str(), dir_modes[i]);
    auto n = static_cast<long long>(i);
    set_times(dir, 1'000'000'000'000'000'000LL + n, 1'500'000'000'123'456'700LL + n);
  }
  for (size_t i = 0; i < file_modes.size(); ++i) {
    std::string file = src + fmt::format("/file{:o}", file_modes[i]);
    write_file(file, std::string(i * 100, 'm'), file_modes[i]);
    set_times(file, 1'000'000'000'000'000'000LL, 1'600'000'000'987'654'300LL + static_cast<long long>(i));
  }

  expect_copied(copy());
  EXPECT_EQ(mode_bits(dst + "/file4755"), 04755u);
  EXPECT_EQ(mode_bits(dst + "/dir1777"), 01777u);
  EXPECT_EQ(mtime_ns(lstat_of(dst + "/file644")), 1'600'000'000'987'654'302LL);
  EXPECT_EQ(mtime_ns(lstat_of(dst + "/dir2775")), 1'500'000'000'123'456'703LL);
}

TEST_F(CopyTest, KeepsModesWhenTheDestinationHasADefaultAcl) {
  // A default ACL on DST would give new files and directories group and other r-x at most: the
  // copies get the source's modes all the same, as with cp -a.
  make_dir(dst);
  if (!pcopy_test::set_default_acl(dst)) GTEST_SKIP() << "no POSIX ACLs on " << dst;
  make_dir(src + "/shared");
  ::chmod((src + "/shared").c_str(), 0775);
  write_file(src + "/shared/group-writable", "g", 0664);
  write_file(src + "/shared/everyone", "o", 0777);
  write_file(src + "/plain", "p", 0644);
  for (const std::vector<std::string>& extra : {std::vector<std::string>{"-j1"}, {"-j2"}, {"--inplace"}}) {
    SCOPED_TRACE(extra.front());
    std::string into = dst + "/copy" + extra.front();
    std::vector<std::string> args = extra;
    args.insert(args.end(), {src, into});
    RunResult r = run_pcopy(args);
    EXPECT_EQ(r.status, 0) << describe(r);
    EXPECT_EQ(diff_trees(src, into), "");
    EXPECT_EQ(mode_bits(into + "/shared"), 0775u);
    EXPECT_EQ(mode_bits(into + "/shared/group-writable"), 0664u);
    EXPECT_EQ(mode_bits(into + "/shared/everyone"), 0777u);
    EXPECT_EQ(mode_bits(into + "/plain"), 0644u);
  }
}

TEST_F(CopyTest, PreservesAccessTimes) {
  // Set before pcopy reads the sources (which may itself move their access times).
  make_dir(src + "/dir");
  write_file(src + "/dir/file", "read me");
  set_times(src + "/dir/file", 1'234'567'890'123'456'789LL, 1'334'567'890'000'000'001LL);
  set_times(src + "/dir", 1'234'567'890'000'000'002LL, 1'334'567'890'000'000'003LL);

  RunResult r = copy();
  ASSERT_EQ(r.status, 0) << describe(r);
  // Checked before anything here reads the copies.
  EXPECT_EQ(atime_ns(lstat_of(dst + "/dir/file")), 1'234'567'890'123'456'789LL);
  EXPECT_EQ(atime_ns(lstat_of(dst + "/dir")), 1'234'567'890'000'000'002LL);
}

TEST_F(CopyTest, CopiesTreeDeeperThanPathMax) {
  make_deep_dirs(src, 600, "dddddddd");  // 5,400 bytes of path
  std::string bottom = src;
  for (int level = 0; level < 600; ++level) bottom += "/dddddddd";
  write_file(bottom + "/leaf", "at the bottom");
  expect_copied(copy());
}

TEST_F(CopyTest, FollowsSourceGivenAsSymlink) {
  write_file(src + "/f", "through the link");
  make_symlink(src, tmp / "alias");
  RunResult r = run_pcopy({tmp / "alias", dst});
  expect_copied(r);
  EXPECT_TRUE(S_ISDIR(lstat_of(dst).st_mode));
}

// A link to a file, copied into a directory, takes the name given, as with cp and rsync -L:
// `latest.whl`, not its target's `app-1.2.3.whl`.
TEST_F(CopyTest, FileGivenAsALinkIsCopiedUnderTheLinksName) {
  write_file(src + "/app-1.2.3.whl", "wheel");
  make_symlink("app-1.2.3.whl", src + "/latest.whl");
  make_dir(dst);
  RunResult r = run_pcopy({src + "/latest.whl", dst});
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(list_tree(dst), std::vector<std::string>{"latest.whl"});
  EXPECT_EQ(read_file(dst + "/latest.whl"), "wheel");
}

TEST_F(CopyTest, SecondRunIntoSameDestinationGivesSameTree) {
  make_mixed_tree(100);
  expect_copied(copy());
  write_file(src + "/d3/f3.bin", "changed since the first run");
  write_file(src + "/d4/added", "added since the first run");
  expect_copied(copy());
}

TEST_F(CopyTest, SecondRunUpdatesFilesInsideReadOnlyDirectory) {
  // The first run leaves the copy of a 0555 directory read-only; a nightly re-run must still get in.
  make_dir(src + "/ro");
  write_file(src + "/ro/f", "first");
  ::chmod((src + "/ro").c_str(), 0555);
  RunOptions options = unprivileged(tmp);
  expect_copied(copy({}, options));

  ::chmod((src + "/ro").c_str(), 0755);
  write_file(src + "/ro/f", "second, and longer");
  write_file(src + "/ro/g", "new");
  if (options.uid) chown_tree(src, *options.uid, *options.uid);
  ::chmod((src + "/ro").c_str(), 0555);
  expect_copied(copy({}, options));
  EXPECT_EQ(mode_bits(dst + "/ro"), 0555u);
}

// An append-only DST (chattr +a, as backups are kept from being rewritten) takes new names, but
// none may be removed or renamed there: a new directory is made where it belongs, not under a
// temporary name renamed into place, and no probe's name is left behind. It failed
// "Operation not permitted" for each new directory, and each run left a temporary directory and
// a file per worker that no run could remove (FFF). A file there cannot be replaced (that is a
// rename): it fails, and leaves no temporary either; -u runs skip it. Links and FIFOs are made
// where they belong too, not under a temporary renamed into place (GGG).
TEST_F(CopyTest, AnAppendOnlyDestinationGetsNewFilesAndDirectoriesAndNoLeftovers) {
  make_dir(src + "/sub");
  write_file(src + "/sub/a", "in a new directory");
  write_file(src + "/top", "at the top");
  ASSERT_EQ(::symlink("top", (src + "/link").c_str()), 0);
  ASSERT_EQ(::mkfifo((src + "/fifo").c_str(), 0644), 0);
  make_dir(dst);
  InodeFlags append_only(dst);
  if (!append_only.add(FS_APPEND_FL)) GTEST_SKIP() << "cannot make DST append-only (root, ext4/XFS/tmpfs)";
  for (int run = 0; run < 3; ++run) {
    SCOPED_TRACE(run);
    RunResult r = copy(run == 2 ? std::vector<std::string>{"-j2", "-u"} : std::vector<std::string>{"-j2"});
    // The times of DST itself cannot be set there (cp -a says the same).
    if (run == 1)
      EXPECT_TRUE(has_line(r.err, "pcopy: cannot copy 'top': Operation not permitted")) << describe(r);
    else
      EXPECT_EQ(r.err.find("pcopy: cannot copy"), std::string::npos) << describe(r);
    EXPECT_EQ(read_file(dst + "/sub/a"), "in a new directory");
    EXPECT_EQ(read_file(dst + "/top"), "at the top");
    EXPECT_EQ(read_link(dst + "/link"), "top");
    EXPECT_TRUE(S_ISFIFO(lstat_of(dst + "/fifo").st_mode));
    for (const std::string& name : list_tree(dst)) EXPECT_FALSE(is_temp_name(name)) << name << " left\n" << describe(r);
  }
  // A dry run names what the real run cannot replace there, as run 1 did; it said `replace top` (I18).
  RunResult n = copy({"-n", "-j2"});
  EXPECT_EQ(n.status, 1) << describe(n);
  EXPECT_TRUE(has_line(n.err, "pcopy: cannot copy 'top': Operation not permitted")) << describe(n);
  EXPECT_FALSE(has_line(n.out, "replace top")) << describe(n);
}

// A worker learns whether DST's file system has unnamed temporaries (O_TMPFILE) in the first
// directory it writes to. Where that one refused to be written (an immutable directory, one the
// user may not write), the answer was "no" for the whole run: in an append-only directory after
// it, each new file was then written under a temporary name that could be neither renamed into
// place nor removed, and every run left one more (I11).
TEST_F(CopyTest, AnAppendOnlyDirectoryAfterOneThatRefusesWritesGetsNewFilesAndNoLeftovers) {
  make_dirs(src + "/a/b");
  write_file(src + "/a/new", "refused: a is immutable");
  write_file(src + "/a/b/new", "taken: b is append-only");
  make_dirs(dst + "/a/b");
  InodeFlags b(dst + "/a/b"), a(dst + "/a");  // given back in the other order: a's first
  if (!b.add(FS_APPEND_FL) || !a.add(FS_IMMUTABLE_FL))
    GTEST_SKIP() << "cannot make directories immutable and append-only (root, ext4/XFS/tmpfs)";
  for (int run = 0; run < 2; ++run) {
    SCOPED_TRACE(run);
    RunResult r = copy({"-j1"});
    EXPECT_EQ(r.status, 1) << describe(r);
    EXPECT_TRUE(has_line(r.err, "pcopy: cannot copy 'a/new': Operation not permitted")) << describe(r);
    EXPECT_EQ(read_file(dst + "/a/b/new"), "taken: b is append-only") << describe(r);
    for (const std::string& name : list_tree(dst)) EXPECT_FALSE(is_temp_name(name)) << name << " left\n" << describe(r);
  }
}

TEST_F(CopyTest, OneAndEightWorkersProduceIdenticalTrees) {
  make_mixed_tree(400);
  expect_same_copies({"-j1"}, {"-j", "8"});
}

TEST_F(CopyTest, IoUringBatchesAndOneCallAtATimeProduceIdenticalTrees) {
  make_mixed_tree(400);
  expect_same_copies({"-j2"}, {"-j2", "--no-io-uring"});
}

TEST_F(CopyTest, CopiesFilesOfAnotherOwnerWhenRunUnprivileged) {
  // Opening someone else's file with O_NOATIME is refused (EPERM): the batch asks again without it.
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to make files owned by someone else";
  make_mixed_tree(100);
  RunOptions options = unprivileged(tmp);
  chown_tree(src, 0, 0);
  for (const std::string& rel : list_tree(src)) {
    struct stat st = lstat_of(src + "/" + rel);
    if (S_ISREG(st.st_mode)) ::chmod((src + "/" + rel).c_str(), 0644);
  }
  RunResult r = copy({"-j2"}, options);
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(diff_trees(src, dst), "") << "modes, times and bytes; the owners are nobody's now";
}

// ---------------------------------------------------------------------------------------------------
// Where it goes.

TEST_F(CopyTest, CreatesMissingDestinationAndItsParents) {
  write_file(src + "/f", "f");
  dst = tmp / "new/parents/dst";
  expect_copied(copy());
}

TEST_F(CopyTest, MergesIntoExistingDestination) {
  write_file(src + "/same.txt", "from source");
  make_dir(src + "/sub");
  write_file(src + "/sub/new.txt", "new");
  make_dir(dst);
  write_file(dst + "/keep.txt", "keep me");
  write_file(dst + "/same.txt", "an older and longer version from the destination");
  make_dir(dst + "/sub");
  write_file(dst + "/sub/keep-too.txt", "keep me too");

  RunResult r = copy();
  ASSERT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(read_file(dst + "/keep.txt"), "keep me");
  EXPECT_EQ(read_file(dst + "/sub/keep-too.txt"), "keep me too");
  EXPECT_EQ(read_file(dst + "/same.txt"), "from source");
  EXPECT_EQ(read_file(dst + "/sub/new.txt"), "new");
  EXPECT_EQ(mtime_ns(lstat_of(dst + "/same.txt")), mtime_ns(lstat_of(src + "/same.txt")));
  EXPECT_EQ(list_tree(dst),
            (std::vector<std::string>{"keep.txt", "same.txt", "sub", "sub/keep-too.txt", "sub/new.txt"}));
}

TEST_F(CopyTest, ReplacesSymlinkPlantedInDestinationWithoutWritingThroughIt) {
  write_file(src + "/target.txt", "from source");
  write_file(tmp / "outside.txt", "must stay");
  make_dir(dst);
  make_symlink(tmp / "outside.txt", dst + "/target.txt");

  RunResult r = copy();
  ASSERT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(read_file(tmp / "outside.txt"), "must stay");
  EXPECT_TRUE(S_ISREG(lstat_of(dst + "/target.txt").st_mode));
  EXPECT_EQ(read_file(dst + "/target.txt"), "from source");
}

class SingleFileTest : public CopyTest {
 protected:
  void SetUp() override {
    file = tmp / "one.bin";
    write_file(file, random_bytes(10'000, 1), 0640);
    set_times(file, 1'200'000'000'000'000'001LL, 1'250'000'000'000'000'002LL);
  }
  void expect_same_file(const std::string& copy_path) {
    EXPECT_EQ(read_file(copy_path), read_file(file));
    struct stat st = lstat_of(copy_path);
    EXPECT_TRUE(S_ISREG(st.st_mode));
    EXPECT_EQ(st.st_mode & 07777, 0640u);
    EXPECT_EQ(mtime_ns(st), 1'250'000'000'000'000'002LL);
  }
  std::string file;
};

TEST_F(SingleFileTest, CopiesSingleFileToTargetName) {
  RunResult r = run_pcopy({file, tmp / "copy.bin"});
  ASSERT_EQ(r.status, 0) << describe(r);
  expect_same_file(tmp / "copy.bin");
}

// -n, -v and the manifest name the file as written, not as it was called in SRC: a CI step checks
// the manifest against the staged directory.
TEST_F(SingleFileTest, DryRunVerboseAndManifestNameTheTargetName) {
  RunResult dry = run_pcopy({"-n", file, tmp / "stage/copy.bin"});
  EXPECT_EQ(dry.status, 0) << describe(dry);
  EXPECT_EQ(dry.out, "copy copy.bin\n");
  RunResult r = run_pcopy({"-v", "--manifest", tmp / "manifest.jsonl", file, tmp / "stage/copy.bin"});
  ASSERT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(r.out, "copy.bin\n");
  auto entries = lines_of(read_file(tmp / "manifest.jsonl"));
  ASSERT_EQ(entries.size(), 1u);
  EXPECT_EQ(nlohmann::json::parse(entries[0]).at("path"), "copy.bin");
  expect_same_file(tmp / "stage/copy.bin");
}

TEST_F(SingleFileTest, ReplacesExistingTargetFile) {
  write_file(tmp / "copy.bin", "old contents");
  RunResult r = run_pcopy({file, tmp / "copy.bin"});
  ASSERT_EQ(r.status, 0) << describe(r);
  expect_same_file(tmp / "copy.bin");
}

TEST_F(SingleFileTest, CreatesMissingParentsOfTargetFile) {
  RunResult r = run_pcopy({file, tmp / "new/dir/copy.bin"});
  ASSERT_EQ(r.status, 0) << describe(r);
  expect_same_file(tmp / "new/dir/copy.bin");
}

// A file where a directory above the target should be: the target is named, as for a tree, and as
// cp names it. It said "cannot create 'efile'", as if that were what pcopy tried to make (I10).
TEST_F(SingleFileTest, AFileWhereADirectoryAboveTheTargetShouldBeNamesTheTarget) {
  write_file(tmp / "efile", "a file, not a directory\n");
  RunResult r = run_pcopy({file, tmp / "efile/x/copy.bin"});
  EXPECT_EQ(r.status, 2) << describe(r);
  EXPECT_EQ(r.err, "pcopy: cannot create '" + (tmp / "efile/x/copy.bin") + "': Not a directory\n") << describe(r);
  EXPECT_EQ(read_file(tmp / "efile"), "a file, not a directory\n");
}

TEST_F(SingleFileTest, CopiesSingleFileIntoExistingDirectory) {
  make_dir(tmp / "into");
  RunResult r = run_pcopy({file, tmp / "into"});
  ASSERT_EQ(r.status, 0) << describe(r);
  expect_same_file(tmp / "into/one.bin");
  EXPECT_EQ(list_tree(tmp / "into"), std::vector<std::string>{"one.bin"});
}

// A file in a directory its user may enter but not list (another user's home, 0711), and one into a
// drop box (1733, as /var/spool/cron/crontabs): `cp` copies both, and so does pcopy, where it
// refused both with "cannot open" and status 2 (RRR). --fsync says why the drop box could not be
// flushed.
TEST_F(SingleFileTest, CopiesOutOfAndIntoDirectoriesItsUserMayEnterButNotList) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (directories of another user, pcopy run as nobody)";
  RunOptions as_user = unprivileged(tmp);
  make_dir(tmp / "home", 0711);
  make_dir(tmp / "drop", 01733);
  ASSERT_EQ(::chmod((tmp / "home").c_str(), 0711), 0);
  ASSERT_EQ(::chmod((tmp / "drop").c_str(), 01733), 0);
  ASSERT_EQ(::rename(file.c_str(), (tmp / "home/one.bin").c_str()), 0);
  file = tmp / "home/one.bin";
  RunResult out = run_pcopy({file, tmp / "out/one.bin"}, as_user);
  EXPECT_EQ(out.status, 0) << describe(out);
  expect_same_file(tmp / "out/one.bin");
  for (const std::string& dst_arg : {tmp / "drop/", tmp / "drop/named.bin"}) {
    RunResult in = run_pcopy({"-a", file, dst_arg}, as_user);
    EXPECT_EQ(in.status, 0) << dst_arg << "\n" << describe(in);
  }
  expect_same_file(tmp / "drop/one.bin");
  expect_same_file(tmp / "drop/named.bin");
  RunResult flushed = run_pcopy({"--fsync", file, tmp / "drop/flushed.bin"}, as_user);
  EXPECT_EQ(flushed.status, 1) << describe(flushed);
  EXPECT_TRUE(has_line(flushed.err, "pcopy: cannot flush '" + tmp / "drop" + "' to disk: Permission denied"))
      << describe(flushed);
  expect_same_file(tmp / "drop/flushed.bin");
}

// procfs and sysfs make a file's contents as it is read, and its size says nothing of them (0 bytes
// in /proc, 4096 in /sys, with no blocks, like a sparse file): copied whole, as cp copies them, and
// the manifest records the size copied.
TEST_F(CopyTest, CopiesFilesWhoseContentsAreMadeAsTheyAreRead) {
  std::vector<std::string> files{"/proc/version"};
  ASSERT_TRUE(exists(files[0])) << "no /proc on this machine";
  if (exists("/sys/devices/system/cpu/online")) files.push_back("/sys/devices/system/cpu/online");
  for (const std::string& file : files) {
    SCOPED_TRACE(file);
    std::string expected = read_file(file), copy = tmp / "copied", manifest = tmp / "manifest.jsonl";
    ASSERT_NE(expected, "");
    RunResult r = run_pcopy({"--manifest", manifest, file, copy});
    ASSERT_EQ(r.status, 0) << describe(r);
    EXPECT_EQ(read_file(copy), expected);
    auto entries = lines_of(read_file(manifest));
    ASSERT_EQ(entries.size(), 1u);
    EXPECT_EQ(nlohmann::json::parse(entries[0])["size"], expected.size());
  }
}

TEST_F(CopyTest, DefaultsDestinationToSourceWithCopySuffix) {
  write_file(src + "/f", "f");
  dst = tmp / "src-copy";
  RunResult r = run_pcopy({src});
  expect_copied(r);
  EXPECT_NE(r.err.find("src-copy"), std::string::npos) << "the summary names the destination\n" << describe(r);
}

TEST_F(CopyTest, DefaultDestinationOfSourceWithTrailingSlashIsBesideIt) {
  write_file(src + "/f", "f");
  dst = tmp / "src-copy";
  expect_copied(run_pcopy({src + "/"}));
  EXPECT_FALSE(exists(src + "/-copy"));
}

// "." and ".." name a directory without giving its name: the copy still goes beside it.
TEST_F(CopyTest, DefaultDestinationOfDotOrDotDotIsBesideTheDirectoryItNames) {
  write_file(src + "/f", "f");
  make_dir(src + "/sub");
  dst = tmp / "src-copy";
  for (std::string spelled : {src + "/.", src + "/sub/..", src + "/./"}) {
    SCOPED_TRACE(spelled);
    std::filesystem::remove_all(dst);
    RunResult r = run_pcopy({spelled});
    expect_copied(r);
    EXPECT_NE(r.err.find("src-copy'"), std::string::npos) << "the summary names the destination\n" << describe(r);
  }
}

// An ordinary user's umask that takes the owner's write or search bit (0222 "nothing writable",
// 0100, 0777) is no reason to fail: the copy has SRC's modes, as with cp -a, and the parents made
// for DST are the owner's to enter, as with mkdir -p. Every entry failed with "Permission denied"
// (the directories were made without the owner's write bit), or DST could not be opened.
TEST_F(CopyTest, AUmaskTakingTheOwnersBitsStillGivesACopyWithSrcsModes) {
  make_dirs(src + "/d/sub");
  write_file(src + "/d/f", "hi\n");
  write_file(src + "/d/sub/g", "yo\n", 0600);
  write_file(src + "/t", "top\n", 0640);
  ASSERT_EQ(::chmod((src + "/d").c_str(), 0750), 0);
  RunOptions as_user = unprivileged(tmp);
  for (const char* mask : {"0222", "0100", "0777"}) {
    SCOPED_TRACE(mask);
    std::string top = tmp / fmt::format("dst{}", mask), to = top + "/x/y";
    RunResult r = run({"sh", "-c", fmt::format("umask {} && exec \"$0\" \"$@\"", mask), pcopy_bin(), src, to}, as_user);
    EXPECT_EQ(r.status, 0) << describe(r);
    EXPECT_EQ(diff_trees(src, to), "");
    for (const std::string& parent : {top, top + "/x"}) EXPECT_EQ(lstat_of(parent).st_mode & 0700, 0700u) << parent;
  }
}

// ---------------------------------------------------------------------------------------------------
// Errors while copying.

TEST_F(CopyTest, ReportsUnreadableFileAndCopiesTheRest) {
  write_file(src + "/a.txt", "a");
  make_dir(src + "/sub");
  write_file(src + "/sub/ok.txt", "ok");
  write_file(src + "/sub/secret", "no one may read this", 0000);
  make_dir(src + "/other");
  write_file(src + "/other/b.txt", "b");
  // The dry run says so too (it said the file would be copied, status 0).
  RunResult dry = copy({"-n"}, unprivileged(tmp));
  EXPECT_EQ(dry.status, 1) << describe(dry);
  EXPECT_TRUE(has_line(dry.err, "pcopy: cannot copy 'sub/secret': Permission denied")) << describe(dry);
  EXPECT_FALSE(exists(dst));
  RunResult r = copy({}, unprivileged(tmp));

  EXPECT_EQ(r.status, 1) << describe(r);
  EXPECT_TRUE(has_line(r.err, "pcopy: cannot copy 'sub/secret': Permission denied")) << describe(r);
  EXPECT_FALSE(exists(dst + "/sub/secret"));
  remove_keeping_parent_times(src + "/sub/secret");
  EXPECT_EQ(diff_trees(src, dst), "") << "everything else is copied, and no temporary is left behind";
}

// SRC (or another user's DST) that may be listed but not entered (mode r-- for the user): nothing in
// it can be read, so the run is refused as for an unreadable SRC, with the OS's reason, nothing
// created. A DST of the user's own is opened up, as the directories inside it are, and filled.
TEST_F(CopyTest, RefusesASourceOrAnotherUsersDestinationItCanListButNotEnter) {
  write_file(src + "/a.txt", "a");
  RunOptions options = unprivileged(tmp);
  ASSERT_EQ(::chmod(src.c_str(), 0644), 0);
  RunResult r = copy({}, options);
  ASSERT_EQ(::chmod(src.c_str(), 0755), 0);
  expect_refused(r, dst);
  EXPECT_TRUE(has_line(r.err, "pcopy: cannot open '" + src + "': Permission denied")) << describe(r);

  make_dir(dst);
  options = unprivileged(tmp);
  ASSERT_EQ(::chmod(dst.c_str(), 0644), 0);
  r = copy({}, options);
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(mode_bits(dst), mode_bits(src));
  EXPECT_EQ(read_file(dst + "/a.txt"), "a");

  if (!options.uid) return;  // root's own: root enters it anyway
  std::filesystem::remove_all(dst);
  make_dir(dst);  // root's
  ASSERT_EQ(::chmod(dst.c_str(), 0744), 0);
  r = copy({}, options);
  ASSERT_EQ(::chmod(dst.c_str(), 0755), 0);
  expect_refused(r, dst + "/a.txt");
  EXPECT_TRUE(has_line(r.err, "pcopy: cannot open '" + dst + "': Permission denied")) << describe(r);
}

size_t permission_errors(const RunResult& r) {
  auto lines = lines_of(r.err);
  return static_cast<size_t>(std::count_if(lines.begin(), lines.end(), [](const std::string& line) {
    return line.starts_with("pcopy: cannot copy '") && line.ends_with("': Permission denied");
  }));
}

// A directory the user may not read is made all the same, empty, with its mode and times, and
// reported once; as cp -a and rsync -a make it, so the copy shows what it could not hold.
TEST_F(CopyTest, MakesADirectoryItCannotReadEmptyWithItsModeAndTimes) {
  make_dir(src + "/locked");
  write_file(src + "/locked/inside", "unseen");
  write_file(src + "/open.txt", "open");
  set_times(src + "/locked", 1'000'000'000'000'000'000LL, 1'000'000'123'000'000'000LL);
  RunOptions options = unprivileged(tmp);
  ASSERT_EQ(::chmod((src + "/locked").c_str(), 0), 0);
  RunResult r = copy({}, options);
  ASSERT_EQ(::chmod((src + "/locked").c_str(), 0755), 0);

  EXPECT_EQ(r.status, 1) << describe(r);
  EXPECT_TRUE(has_line(r.err, "pcopy: cannot copy 'locked': Permission denied")) << describe(r);
  EXPECT_EQ(permission_errors(r), 1u) << describe(r);
  EXPECT_EQ(read_file(dst + "/open.txt"), "open");
  struct stat st {};
  ASSERT_EQ(::lstat((dst + "/locked").c_str(), &st), 0) << describe(r);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0u);
  EXPECT_EQ(st.st_mtim.tv_sec, 1'000'000'123);
  ASSERT_EQ(::chmod((dst + "/locked").c_str(), 0755), 0);
  EXPECT_EQ(list_tree(dst + "/locked"), std::vector<std::string>{}) << "nothing could be read in it";
}

// 2,000 files of which every tenth is unreadable.
class FailingTreeTest : public CopyTest {
 protected:
  void SetUp() override {
    CopyTest::SetUp();
    for (int d = 0; d < 20; ++d) {
      make_dir(src + fmt::format("/d{:02}", d));
      for (int f = 0; f < 100; ++f) {
        write_file(src + fmt::format("/d{:02}/f{:03}", d, f), "x", f % 10 == 0 ? 0000 : 0644);
      }
    }
  }
};

TEST_F(FailingTreeTest, ReportsEveryErrorAndGoesOnByDefault) {
  RunResult r = copy({}, unprivileged(tmp));
  EXPECT_EQ(r.status, 1) << describe(r);
  EXPECT_EQ(permission_errors(r), 200u) << describe(r);
  EXPECT_EQ(count_regular_files(dst), 1800u);
}

TEST_F(FailingTreeTest, FailFastStopsAfterFirstError) {
  // One worker copies one file at a time, so nothing can be in progress beside the first failure.
  RunResult r = copy({"--fail-fast", "-j1"}, unprivileged(tmp));
  EXPECT_EQ(r.status, 1) << describe(r);
  EXPECT_EQ(permission_errors(r), 1u) << describe(r);
  EXPECT_LT(exists(dst) ? count_regular_files(dst) : 0, 1800u) << "the copy went on through the whole tree";
}

// The stop is said, on stderr and in the report, as a full disk's is: exit 1 alone reads "one
// entry failed, the rest were copied", where most of the tree was never tried.
TEST_F(FailingTreeTest, FailFastSaysItStoppedAndWhatWasLeft) {
  RunResult r = copy({"--fail-fast", "-j1", "--json", "--delete"}, unprivileged(tmp));
  EXPECT_EQ(r.status, 1) << describe(r);
  const std::string stop = "the remaining entries were not copied, and nothing was deleted";
  EXPECT_TRUE(has_line(r.err, "pcopy: stopping at the first error (--fail-fast): " + stop)) << describe(r);
  auto errors = nlohmann::json::parse(r.out).at("errors");
  ASSERT_EQ(errors.size(), 2u) << r.out;
  EXPECT_EQ(errors[1].at("path"), "") << r.out;
  EXPECT_EQ(errors[1].at("reason"), "stopped: --fail-fast: " + stop) << r.out;
}

// An error with nothing left after it (the last directory unreadable) is no stop to speak of.
TEST_F(CopyTest, FailFastWithNothingLeftSpeaksOfNoStop) {
  make_dir(src + "/zz", 0000);
  RunResult r = copy({"--fail-fast", "-j1", "--json"}, unprivileged(tmp));
  EXPECT_EQ(r.status, 1) << describe(r);
  EXPECT_FALSE(has_line_starting(r.err, "pcopy: stopping")) << describe(r);
  EXPECT_EQ(nlohmann::json::parse(r.out).at("errors").size(), 1u) << r.out;
}

TEST_F(FailingTreeTest, FailFastWithSeveralWorkersStopsEarly) {
  // Each worker may be busy with a file of its own when the first error arrives, but no more.
  RunResult r = copy({"--fail-fast", "-j4"}, unprivileged(tmp));
  EXPECT_EQ(r.status, 1) << describe(r);
  EXPECT_GE(permission_errors(r), 1u) << describe(r);
  EXPECT_LE(permission_errors(r), 4u) << describe(r);
  EXPECT_LT(exists(dst) ? count_regular_files(dst) : 0, 1800u) << "the copy went on through the whole tree";
}

TEST_F(CopyTest, FailFastReportsOnlyTheFirstOfManyFailures) {
  // Every file fails: whatever was already handed to the single worker must not be tried after the first.
  for (int f = 0; f < 300; ++f) write_file(src + fmt::format("/f{:03}", f), "x", 0000);
  RunResult r = copy({"--fail-fast", "-j1"}, unprivileged(tmp));
  EXPECT_EQ(r.status, 1) << describe(r);
  EXPECT_EQ(permission_errors(r), 1u) << describe(r);
}

// ---------------------------------------------------------------------------------------------------
// Refused before anything is written (exit 2).

TEST_F(CopyTest, RefusesMissingSource) {
  src = tmp / "no-such-source";
  expect_refused(copy(), dst);
}

TEST_F(CopyTest, RefusesUnreadableSingleFileSource) {
  write_file(tmp / "secret", "no one may read this", 0000);
  RunResult r = run_pcopy({tmp / "secret", tmp / "out/copy"}, unprivileged(tmp));
  expect_refused(r, tmp / "out");
  EXPECT_TRUE(has_line(r.err, "pcopy: cannot open '" + tmp / "secret" + "': Permission denied")) << describe(r);
}

// A single file's DST named as a device, a FIFO or a link to one: the copy would replace it (as an
// entry of a tree is), so `pcopy f /dev/null` as root put a regular file where /dev/null was, and a
// FIFO's reader never got the data. Refused (cp writes into it); the dry run too.
TEST_F(CopyTest, RefusesASingleFilesDestinationThatIsADeviceOrAFifo) {
  write_file(tmp / "f", "data\n");
  std::string fifo = tmp / "fifo", device = tmp / "null", link = tmp / "to-null";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0644), 0);
  struct Case {
    std::string dst, what;
  };
  std::vector<Case> cases{{fifo, "a FIFO"}};
  std::vector<std::string> made{"f", "fifo", "src"};
  // A device of its own (the system's /dev/null would be lost if this broke again): root only.
  if (::geteuid() == 0 && ::mknod(device.c_str(), S_IFCHR | 0666, makedev(1, 3)) == 0) {
    make_symlink(device, link);
    cases.push_back({device, "a character device"});
    cases.push_back({link, "a character device"});
    made = {"f", "fifo", "null", "src", "to-null"};
  }
  for (const Case& c : cases) {
    for (bool dry : {false, true}) {
      SCOPED_TRACE(c.dst + (dry ? " (-n)" : ""));
      std::vector<std::string> args{tmp / "f", c.dst};
      if (dry) args.insert(args.begin(), "-n");
      RunResult r = run_pcopy(args);
      EXPECT_EQ(r.status, 2) << describe(r);
      EXPECT_TRUE(has_line(r.err, "pcopy: cannot copy '" + tmp / "f" + "' to '" + c.dst + "': it is " + c.what +
                                      ", which pcopy would replace, not write into"))
          << describe(r);
    }
  }
  EXPECT_TRUE(S_ISFIFO(lstat_of(fifo).st_mode));
  if (cases.size() > 1) {
    EXPECT_TRUE(S_ISCHR(lstat_of(device).st_mode));
  }
  EXPECT_EQ(list_tree(tmp.path()), made) << "nothing else made";
}

// A DST its user may not write in, another user's, where the directories the copy fills are the
// user's own: updating /home/alice through a root-owned /home, as cp and rsync do. A refusal of
// such a DST ("cannot write in", tried for the run whose every entry failed, RRR) stopped this one
// (SSS). What is to be written in DST itself fails alone: its times (as with cp -a and rsync -a),
// a new entry.
TEST_F(CopyTest, ADestinationItsUserMayNotWriteInIsFilledWhereTheUserMay) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (a directory of another user, pcopy run as nobody)";
  make_dirs(src + "/alice");
  write_file(src + "/alice/file", "data\n");
  RunOptions as_user = unprivileged(tmp);
  make_dir(dst, 0755);  // root's
  make_dir(dst + "/alice");
  ASSERT_EQ(::chown((dst + "/alice").c_str(), 65534, 65534), 0);
  RunResult r = copy({}, as_user);
  EXPECT_EQ(r.status, 1) << describe(r);
  EXPECT_EQ(lines_of(r.err).size(), 2u) << describe(r);
  EXPECT_TRUE(has_line(r.err, "pcopy: cannot keep the times of '.': Operation not permitted")) << describe(r);
  EXPECT_EQ(read_file(dst + "/alice/file"), "data\n");
  write_file(src + "/top", "t\n");
  ASSERT_EQ(::chown((src + "/top").c_str(), 65534, 65534), 0);
  r = copy({"-u"}, as_user);
  EXPECT_EQ(r.status, 1) << describe(r);
  EXPECT_TRUE(has_line(r.err, "pcopy: cannot copy 'top': Permission denied")) << describe(r);
}

// A manifest that cannot be written refuses the run before DST is made; a refused run leaves an
// existing manifest as it was.
TEST_F(CopyTest, RefusesAManifestItCannotWriteBeforeCreatingAnything) {
  write_file(src + "/f", "f");
  expect_refused(copy({"--manifest", tmp / "no/such/dir/manifest.jsonl"}), dst);
  write_file(tmp / "manifest.jsonl", "last night's\n");
  expect_refused(run_pcopy({"--manifest", tmp / "manifest.jsonl", src, src + "/inner"}), src + "/inner");
  EXPECT_EQ(read_file(tmp / "manifest.jsonl"), "last night's\n");
  // Nor is one made for a run refused after it was opened: DST cannot be made (it was left there,
  // empty).
  write_file(tmp / "a_file", "in the way\n");
  RunResult refused = run_pcopy({"--manifest", tmp / "new_manifest.jsonl", src, tmp / "a_file/dst"});
  EXPECT_EQ(refused.status, 2) << describe(refused);
  EXPECT_TRUE(has_line_starting(refused.err, "pcopy: cannot create ")) << describe(refused);
  EXPECT_FALSE(exists(tmp / "new_manifest.jsonl")) << "a refused run left a manifest";
  // Nor where a link to nothing leads (the link stays: it was there).
  make_symlink(tmp / "linked_manifest.jsonl", tmp / "link.jsonl");
  refused = run_pcopy({"--manifest", tmp / "link.jsonl", src, tmp / "a_file/dst"});
  EXPECT_EQ(refused.status, 2) << describe(refused);
  EXPECT_FALSE(exists(tmp / "linked_manifest.jsonl")) << "a refused run left a manifest where the link leads";
  EXPECT_TRUE(exists(tmp / "link.jsonl"));
  // One inside DST is written once DST is made.
  RunResult r = copy({"--manifest", dst + "/manifest.jsonl"});
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(lines_of(read_file(dst + "/manifest.jsonl")).size(), 1u);
}

// An option file named by a standard descriptor that was closed when pcopy started (which pcopy
// fills with /dev/null, so that nothing it opens takes that number) is refused, as rsync refuses
// it: `--exclude-from /dev/stdin` read no patterns, and --delete removed what they kept; a
// manifest to /dev/stdout was lost with exit 0.
TEST_F(CopyTest, RefusesAnOptionFileNamedByAStandardDescriptorThatWasClosed) {
  write_file(src + "/a", "a\n");
  make_dirs(dst + "/keep");
  write_file(dst + "/keep/data", "precious\n");
  auto closed = [&](const std::string& redirect, std::vector<std::string> args) {
    std::vector<std::string> argv{"sh", "-c", "exec \"$0\" \"$@\" " + redirect, pcopy_bin()};
    argv.insert(argv.end(), args.begin(), args.end());
    return run(argv);
  };
  make_symlink("/dev/stdin", tmp / "patterns");
  for (const std::string& from : std::vector<std::string>{"/dev/stdin", "/dev//stdin", "/dev/fd/./0", tmp / "patterns"}) {
    RunResult r = closed("<&-", {"--delete", "--exclude-from", from, src, dst});
    EXPECT_EQ(r.status, 2) << describe(r);
    EXPECT_TRUE(has_line(r.err, "pcopy: --exclude-from: cannot read '" + from +
                                    "': standard input was closed when pcopy started"))
        << describe(r);
    EXPECT_EQ(read_file(dst + "/keep/data"), "precious\n");
  }
  RunResult r;
  for (std::string manifest : {"/dev/stdout", "/proc/self/fd/1", "/dev//stdout", "-"}) {
    r = closed(">&-", {"--manifest", manifest, src, tmp / "other"});
    EXPECT_EQ(r.status, 2) << describe(r);
    EXPECT_TRUE(has_line(r.err, "pcopy: cannot write manifest '" + manifest +
                                    "': standard output was closed when pcopy started"))
        << describe(r);
    EXPECT_FALSE(exists(tmp / "other"));
  }
  // Open, they are read and written as any file.
  r = run({"sh", "-c", "echo keep/ | exec \"$0\" \"$@\"", pcopy_bin(), "--delete", "--exclude-from", "/dev/stdin", src, dst});
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(read_file(dst + "/keep/data"), "precious\n");
}

// A manifest the copy reads or writes is refused before anything is written: inside SRC (it was
// emptied, a source file destroyed, and copied half-written), SRC itself, or where the copy of an
// entry of SRC goes (that copy replaced the manifest: exit 0, the manifest gone). An excluded
// entry leaves the name free. A dry run says what the real run would (it said nothing), and a
// refusal once DST is made removes it.
TEST_F(CopyTest, RefusesAManifestThatTheCopyReadsOrWrites) {
  write_file(src + "/important.txt", "precious\n");
  write_file(src + "/manifest.jsonl", "another run's\n");
  for (const std::string& m : {src + "/important.txt", src + "/new.jsonl", dst + "/manifest.jsonl"}) {
    SCOPED_TRACE(m);
    for (bool dry : {true, false}) {
      std::vector<std::string> args{"--manifest", m};
      if (dry) args.insert(args.begin(), "-n");
      RunResult r = copy(args);
      expect_refused(r, dst);
      EXPECT_TRUE(has_line_starting(r.err, "pcopy: cannot write manifest '" + m + "': ")) << describe(r);
    }
  }
  EXPECT_EQ(read_file(src + "/important.txt"), "precious\n");
  RunResult r = run_pcopy({"--manifest", src + "/important.txt", src + "/important.txt", tmp / "copy.txt"});
  expect_refused(r, tmp / "copy.txt");
  EXPECT_TRUE(has_line(r.err, "pcopy: cannot write manifest '" + src + "/important.txt': it is the source")) << describe(r);
  r = run_pcopy({"--manifest", tmp / "out.txt", src + "/important.txt", tmp / "out.txt"});
  expect_refused(r, tmp / "out.txt");
  r = copy({"-n", "--manifest", dst + "/meta/m.jsonl"});  // DST is made, meta/ is not
  expect_refused(r, dst);
  r = copy({"--manifest", dst + "/meta/m.jsonl"});
  expect_refused(r, dst);

  r = copy({"--manifest", dst + "/manifest.jsonl", "--exclude", "manifest.jsonl"});
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(lines_of(read_file(dst + "/manifest.jsonl")).size(), 1u);
}

// Whoever can write in DST could put a link at the manifest's name there: it is not written
// through (the run is refused, the link's target untouched). Outside DST a link is followed, as a
// shell's redirection follows it.
TEST_F(CopyTest, ManifestInsideTheDestinationIsNotWrittenThroughALink) {
  write_file(src + "/f", "f");
  make_dir(dst);
  write_file(tmp / "victim", "root:x:0:0\n");
  make_symlink(tmp / "victim", dst + "/manifest.jsonl");
  RunResult r = copy({"--manifest", dst + "/manifest.jsonl"});
  expect_refused(r, dst + "/f");
  EXPECT_TRUE(has_line(r.err, "pcopy: cannot write manifest '" + dst +
                                  "/manifest.jsonl': it is a symbolic link inside the destination"))
      << describe(r);
  EXPECT_EQ(read_file(tmp / "victim"), "root:x:0:0\n");
  make_symlink(tmp / "victim", tmp / "latest.jsonl");
  r = copy({"--manifest", tmp / "latest.jsonl"});
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(lines_of(read_file(tmp / "victim")).size(), 1u);
}

// --inplace rewrites a regular file where it is, but a FIFO or a device at the name is replaced by
// the copy, never opened: writing would block forever on the FIFO, or go to the device (as
// rsync --inplace does). A file with other links is rewritten where it is on another file system
// than SRC's (they see the new data), and replaced on SRC's own, where one of them may be a file
// of SRC (see Backup.InplaceNeverWritesThroughALinkIntoAnotherFileOfSrc).
TEST_F(CopyTest, InplaceReplacesAFifoOrADeviceInsteadOfWritingIntoIt) {
  write_file(src + "/fifo", "was a FIFO in DST\n");
  write_file(src + "/device", "was a device in DST\n");
  write_file(src + "/plain", "new\n");
  make_dir(dst);
  ASSERT_EQ(::mkfifo((dst + "/fifo").c_str(), 0644), 0);
  if (::geteuid() == 0) {  // mknod needs root
    ASSERT_EQ(::mknod((dst + "/device").c_str(), S_IFCHR | 0666, makedev(1, 3)), 0);  // /dev/null
  }
  write_file(dst + "/plain", "old, longer than the new\n");
  ASSERT_EQ(::link((dst + "/plain").c_str(), (tmp / "other-link").c_str()), 0);
  RunOptions options;
  options.timeout_s = 60;
  RunResult r = run_pcopy({"--inplace", "-j2", src, dst}, options);
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(diff_trees(src, dst), "");
  EXPECT_EQ(read_file(tmp / "other-link"), "old, longer than the new\n") << "on SRC's file system it is replaced";

  if (::geteuid() != 0) return;  // another file system: a tmpfs mounted for it
  Mount other(tmp / "other-fs", Mount::Tmpfs{"size=4m"});
  if (!other.mounted()) return;
  std::string there = tmp / "other-fs/dst";
  make_dir(there);
  write_file(there + "/plain", "old, longer than the new\n");
  ASSERT_EQ(::link((there + "/plain").c_str(), (tmp / "other-fs/other-link").c_str()), 0);
  r = run_pcopy({"--inplace", "-j2", src, there}, options);
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(diff_trees(src, there), "");
  EXPECT_EQ(read_file(tmp / "other-fs/other-link"), "new\n") << "--inplace rewrites the file, its other links see it";
}

// --help and --version into a full disk: an error and status 1, as cp and the other GNU tools.
TEST_F(CopyTest, HelpAndVersionReportAFailedWrite) {
  for (std::string option : {"--help", "--version"}) {
    std::string err = tmp / "err";
    int status = std::system((pcopy_bin() + " " + option + " >/dev/full 2>" + err).c_str());
    ASSERT_TRUE(WIFEXITED(status)) << option;
    EXPECT_EQ(WEXITSTATUS(status), 1) << option;
    EXPECT_EQ(read_file(err), "pcopy: write error: No space left on device\n") << option;
  }
}

// A manifest can go anywhere a file name leads: /dev/stdout into a pipe (`| jq`), a FIFO, a
// process substitution. Emptying it, which only a regular file needs, refused them all. "-" is
// stdout too (it made a file named "-" in the working directory, and stdout got nothing).
TEST_F(CopyTest, ManifestGoesToAPipe) {
  write_file(src + "/f", "f");
  for (std::string manifest : {"/dev/stdout", "-"}) {
    RunOptions options;
    options.cwd = tmp.path();
    RunResult r = copy({"-q", "--manifest", manifest}, options);
    EXPECT_EQ(r.status, 0) << describe(r);
    auto lines = lines_of(r.out);
    ASSERT_EQ(lines.size(), 1u) << manifest << "\n" << describe(r);
    EXPECT_EQ(nlohmann::json::parse(lines[0]).at("path"), "f");
    EXPECT_FALSE(exists(tmp / "-")) << manifest;
  }
}

// --manifest /dev/stdout with stdout appended to a log (`>> log`), and the JSON report on stdout
// too: the manifest is written through stdout, after what the log held and before the report. It
// was opened anew: it emptied the log, and the report was written over its lines.
TEST_F(CopyTest, ManifestOnStdoutIntoAFileWritesAfterWhatIsThere) {
  for (int i = 0; i < 5; ++i) write_file(src + fmt::format("/file{}", i), "x\n");
  std::string log = tmp / "app.log";
  write_file(log, "earlier line\n");
  RunResult r = run({"sh", "-c", shell_quote(pcopy_bin()) + " -q --json --manifest /dev/stdout " + shell_quote(src) +
                                     " " + shell_quote(dst) + " >> " + shell_quote(log)});
  EXPECT_EQ(r.status, 0) << describe(r);
  std::string text = read_file(log);
  auto lines = lines_of(text);
  ASSERT_GE(lines.size(), 7u) << text;
  EXPECT_EQ(lines[0], "earlier line") << text;
  for (size_t i = 1; i <= 5; ++i) EXPECT_TRUE(nlohmann::json::parse(lines[i]).contains("xxh128")) << text;
  size_t report = text.find("\n{\n");
  ASSERT_NE(report, std::string::npos) << text;
  EXPECT_EQ(nlohmann::json::parse(text.substr(report + 1)).at("files_copied"), 5) << text;
  // Stdout open on it for reading only (`1<file`): not written through, written as any file.
  std::string manifest = tmp / "manifest.jsonl";
  write_file(manifest, "");
  r = run({"sh", "-c", shell_quote(pcopy_bin()) + " -q --manifest " + shell_quote(manifest) + " " + shell_quote(src) +
                           " " + shell_quote(tmp / "dst2") + " 1<" + shell_quote(manifest)});
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(lines_of(read_file(manifest)).size(), 5u) << read_file(manifest);
}

// --manifest /dev/stdout appended to a log (`>> log`) whose first write fails part-way (a full disk,
// here `ulimit -f`): what pcopy wrote is cut off again, and nothing before it. The start of its
// write was taken from the offset, which on an O_APPEND descriptor is 0 until it first writes:
// the log was cut to the size of the manifest's buffer, its earlier lines gone (I15).
TEST_F(CopyTest, AFailedManifestWriteIntoAnAppendedLogKeepsWhatTheLogHeld) {
  if (!exists("/usr/bin/prlimit")) GTEST_SKIP() << "needs prlimit (util-linux)";
  for (int i = 0; i < 100; ++i) write_file(src + fmt::format("/file{:03}", i), "x\n");
  std::string log = tmp / "backup.log";
  std::string earlier;
  for (int i = 0; i < 4000; ++i) earlier += fmt::format("earlier log line {:05}\n", i);  // more than the manifest
  write_file(log, earlier);
  const size_t limit = earlier.size() + 50;  // room for half a line of the manifest
  RunResult r = run({"sh", "-c", "exec /usr/bin/prlimit --fsize=" + std::to_string(limit) + " " +
                                     shell_quote(pcopy_bin()) + " -q --manifest /dev/stdout " + shell_quote(src) + " " +
                                     shell_quote(dst) + " >> " + shell_quote(log)});
  EXPECT_EQ(r.status, 1) << describe(r);
  EXPECT_TRUE(has_line(r.err, "pcopy: cannot write manifest '/dev/stdout': File too large")) << describe(r);
  std::string text = read_file(log);
  EXPECT_EQ(text.size(), earlier.size());
  EXPECT_TRUE(text == earlier) << text.substr(0, 200);
  EXPECT_EQ(list_tree(dst).size(), 100u) << "the copy goes on";
}

// With stdout and stderr closed (a daemon's child), the manifest must not be opened as descriptor
// 2 and take the error lines: they fail instead, and the manifest stays JSON lines only.
TEST_F(CopyTest, ClosedStandardDescriptorsAreNotTakenByTheManifest) {
  write_file(src + "/a", "a");
  write_file(src + "/secret", "s", 0000);
  std::string manifest = tmp / "manifest.jsonl";
  RunOptions options = unprivileged(tmp);
  RunResult r = run({"sh", "-c", shell_quote(pcopy_bin()) + " --manifest " + shell_quote(manifest) + " " +
                                     shell_quote(src) + " " + shell_quote(dst) + " >&- 2>&-; echo $?"},
                    options);
  EXPECT_EQ(r.out, "1\n") << describe(r);
  auto lines = lines_of(read_file(manifest));
  ASSERT_EQ(lines.size(), 1u) << read_file(manifest);
  EXPECT_EQ(nlohmann::json::parse(lines[0]).at("path"), "a");
}

// A refusal with stderr closed or full still ends with status 2 and, with --json, the report on
// stdout (it aborted: status 134, no report). --help into a full disk is status 1.
TEST_F(CopyTest, RefusalsWithoutStderrStillEndWithStatusTwoAndTheReport) {
  std::string pcopy = shell_quote(pcopy_bin()), missing = shell_quote(tmp / "missing");
  RunResult r = run({"sh", "-c", pcopy + " --json " + missing + " x 2>&-; echo $?; " + pcopy + " -j0 x y 2>/dev/full; echo $?; " +
                                     pcopy + " --help >/dev/full 2>&-; echo $?"});
  auto lines = lines_of(r.out);
  ASSERT_GE(lines.size(), 3u) << describe(r);
  EXPECT_EQ(std::vector<std::string>(lines.end() - 3, lines.end()), (std::vector<std::string>{"2", "2", "1"}))
      << describe(r);
  std::string json_text = r.out.substr(0, r.out.rfind('}') + 1);
  EXPECT_EQ(nlohmann::json::parse(json_text).at("exit_status"), 2) << describe(r);
}

// A file name in an error is escaped like every path, and the OS's reason given.
TEST_F(CopyTest, UnreadableExcludeFromFileIsOneLineWithTheReason) {
  write_file(src + "/f", "f");
  RunResult r = copy({"--exclude-from", tmp / "no\nsuch"});
  EXPECT_EQ(r.status, 2) << describe(r);
  EXPECT_TRUE(has_line(r.err, "pcopy: --exclude-from: cannot read '" + escape_path(tmp / "no\nsuch") +
                                  "': No such file or directory"))
      << describe(r);
}

// A directory given as the rules file opens, and only reading it fails (EISDIR): the run is refused
// as for a missing file. Read as an empty file, its rules were none, and --delete removed what they
// were to keep.
TEST_F(CopyTest, ADirectoryGivenAsTheExcludeFromFileIsRefused) {
  write_file(src + "/a", "a");
  make_dirs(dst + "/local-notes");
  write_file(dst + "/local-notes/n", "mine");
  make_dirs(tmp / "rules.d");
  write_file(tmp / "rules.d/backup.rules", "local-notes/\n");
  RunResult r = copy({"-q", "--delete", "--exclude-from", tmp / "rules.d"});
  EXPECT_EQ(r.status, 2) << describe(r);
  EXPECT_TRUE(has_line(r.err, "pcopy: --exclude-from: cannot read '" + (tmp / "rules.d") + "': Is a directory"))
      << describe(r);
  EXPECT_EQ(read_file(dst + "/local-notes/n"), "mine");
  EXPECT_FALSE(exists(dst + "/a"));
}

// A read-only source file big enough to be split: every chunk's worker reopens the temporary for
// writing, which its final mode 0444 let only root do ("Permission denied" for any user, -j2 up).
// Then the user's read-only copy rewritten --inplace in chunks: the write bit added for the rewrite
// stays until the copy's metadata is set. Narrowing its mode at once (0444 less what the 0600 of a
// file being written lacks) took the bit away again: the file was emptied and failed with
// "Permission denied", every other run.
TEST_F(CopyTest, AUserCopiesAReadOnlyFileInChunksThenRewritesItInPlace) {
  write_file(src + "/big.bin", random_bytes(130 << 20, 11), 0444);
  RunOptions options = unprivileged(tmp);
  options.env = {"PCOPY_TEST_CHUNK_LOCAL=1"};  // chunks even on a local file system (test builds)
  for (std::vector<std::string> how : {std::vector<std::string>{}, {"--inplace"}, {"--inplace", "-a"}}) {
    how.push_back("-j2");
    RunResult r = copy(how, options);
    EXPECT_EQ(r.status, 0) << describe(r);
    EXPECT_EQ(mode_bits(dst + "/big.bin"), 0444u);
    EXPECT_EQ(diff_trees(src, dst), "");
  }
}

// On a file system whose rename takes no flags (the NFS client, FUSE without rename2: bindfs
// here), a file big enough for chunks is copied all the same. The parent's rename of its
// temporary asked for RENAME_NOREPLACE alone, and every such file failed with EINVAL.
TEST_F(CopyTest, BigFilesReachAFileSystemWithoutRenameFlags) {
  std::string back = tmp / "back", mnt = tmp / "mnt";
  make_dir(back);
  Mount fuse(mnt, Mount::BindFs{back});
  if (!fuse.mounted()) GTEST_SKIP() << fuse.why();
  write_file(src + "/big.bin", random_bytes(130 << 20, 12));
  write_file(src + "/small", "small\n");
  dst = mnt + "/dst";
  RunResult r = copy({"-j2"});
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(diff_trees(src, dst), "");
}

// Big files are split for several workers where the CPU is the limit (tmpfs) and where latency is
// (a network file system; FUSE not on a block device, as sshfs), not on a local file system whose
// device is the limit: the known ones (ext2-4, XFS, btrfs) and every other (FAT, exFAT, NTFS, F2FS
// on a disk; ramfs stands for them here, the kernel having none of them), where they were split as
// if remote: on FAT a chunk written ahead of the end makes the gap be filled with zeros first.
TEST_F(CopyTest, BigFilesAreSplitOnlyWhereMemoryOrLatencyIsTheLimit) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (mount file systems)";
  pcopy::Options options;
  options.jobs = 2;
  auto helps = [&](const std::string& dir) {
    UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    EXPECT_TRUE(fd.valid()) << dir;
    return pcopy::chunking_helps(fd.get(), options);
  };
  Mount tmpfs(tmp / "tmpfs", Mount::Tmpfs{"size=1m"});
  Mount ramfs(tmp / "ramfs", Mount::Ramfs{});
  Mount ext4(tmp / "ext4", Mount::LoopExt4{tmp / "ext4.img", 32, ""});
  Mount fat(tmp / "fat", Mount::FuseFat{tmp / "fat.img"});
  ASSERT_TRUE(tmpfs.mounted() && ramfs.mounted() && ext4.mounted()) << "nothing to look at";
  EXPECT_TRUE(helps(tmp / "tmpfs"));
  EXPECT_FALSE(helps(tmp / "ramfs"));
  EXPECT_FALSE(helps(tmp / "ext4"));
  if (fat.mounted()) {
    EXPECT_TRUE(helps(tmp / "fat")) << "FUSE not on a block device: maybe a network file system";
  }
}

// FAT through FUSE (fusefat) renames a directory without its entries: they are gone once the file
// system is mounted again (`mv` of a directory loses them too). There new directories are made
// where they belong, never staged under a temporary name and renamed into place: a trial that
// staged them on every file system but SMB (two requests a file fewer on a network file system)
// lost every file of each new leaf directory on FAT, reporting them copied, status 0.
TEST_F(CopyTest, EveryFileCopiedToFatThroughFuseIsThereWhenItIsMountedAgain) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (mount a FUSE file system)";
  std::string image = tmp / "fat.img", mnt = tmp / "fat";
  make_dirs(src + "/a/b");
  make_dirs(src + "/c");
  std::vector<std::string> files{"a/one", "a/b/two", "a/b/three", "c/four", "five"};
  for (const std::string& f : files) write_file(src + "/" + f, f + "\n");
  {
    Mount fat(mnt, Mount::FuseFat{image});
    if (!fat.mounted()) GTEST_SKIP() << fat.why();
    dst = mnt + "/backup";
    RunResult r = copy({"-j2"});  // FAT keeps no modes: those errors are not what is tested here
    EXPECT_EQ(r.err.find("pcopy: cannot copy"), std::string::npos) << describe(r);
  }
  RunResult again = run({"fusefat", "-o", "ro", image, mnt});
  ASSERT_EQ(again.status, 0) << again.err;
  struct Unmount {
    std::string dir;
    ~Unmount() { ::umount2(dir.c_str(), MNT_DETACH); }
  } unmount{mnt};
  for (const std::string& f : files) EXPECT_EQ(read_file(dst + "/" + f), f + "\n") << f;
}

// Under any address-space limit (`ulimit -v`) a run copies, or is refused with one line and
// status 2 and nothing left of it. Between about 7 and 9 MiB here the walk's listing buffer could
// not be had once DST was made: "pcopy: Cannot allocate memory", and DST, its new parents and an
// empty manifest stayed (I8). Below that the program cannot even be loaded (status 127), or its
// C++ runtime cannot start: at one limit or two, the memory for exceptions cannot be had, and the
// first one, thrown by a library's initialisation before main(), aborts (134). Neither has made
// anything.
TEST_F(CopyTest, UnderAnyAddressSpaceLimitARunCopiesOrLeavesNothing) {
#ifdef __SANITIZE_ADDRESS__
  GTEST_SKIP() << "AddressSanitizer reserves terabytes of address space as it starts";
#endif
  write_file(src + "/f", "x\n");
  int refused = 0, copied = 0;
  for (long kib = 4096; kib <= 32768; kib += 256) {
    SCOPED_TRACE(fmt::format("--as={} KiB", kib));
    const std::string top = tmp / fmt::format("out{}", kib), manifest = tmp / fmt::format("m{}.jsonl", kib);
    RunResult r = run({"prlimit", fmt::format("--as={}", kib * 1024), pcopy_bin(), "-j2", "--manifest", manifest, src,
                       top + "/a/b"});
    bool unborn = (r.status == 127 && r.err.find("error while loading shared libraries") != std::string::npos) ||
                  (r.status == 134 && r.err == "terminate called without an active exception\n");
    if (r.status == 0) {
      ++copied;
      EXPECT_EQ(read_file(top + "/a/b/f"), "x\n");
      continue;
    }
    if (!unborn) {
      ++refused;
      EXPECT_EQ(r.status, 2) << describe(r);
      EXPECT_EQ(lines_of(r.err).size(), 1u) << describe(r);
    }
    EXPECT_FALSE(exists(top)) << "left by a refused run\n" << describe(r);
    EXPECT_FALSE(exists(manifest)) << "left by a refused run\n" << describe(r);
  }
  EXPECT_GT(refused, 0) << "no limit refused the run: the sweep missed what it looks at";
  EXPECT_GT(copied, 0);
}

// Under `ulimit -f`, a write past the limit fails with EFBIG: the file too big is reported with
// that reason, as is the manifest that outgrew it, and the rest is copied. SIGXFSZ killed the
// parent (no summary, staged directories left) and twice a worker per file too big.
TEST_F(CopyTest, FileSizeLimitIsReportedAsFileTooLarge) {
  write_file(src + "/big", random_bytes(1 << 20, 7));
  for (int i = 0; i < 2500; ++i) write_file(src + fmt::format("/f{}", i), "small\n");
  std::string manifest = tmp / "manifest.jsonl";
  // 200 blocks: 100 KiB in dash's 512-byte blocks, 200 KiB in bash's: either way under 1 MiB
  // and under the manifest's ~250 KiB.
  RunResult r = run({"sh", "-c", "ulimit -f 200; exec " + shell_quote(pcopy_bin()) + " --manifest " +
                                     shell_quote(manifest) + " " + shell_quote(src) + " " + shell_quote(dst)});
  EXPECT_EQ(r.status, 1) << describe(r);
  EXPECT_TRUE(has_line(r.err, "pcopy: cannot copy 'big': File too large")) << describe(r);
  EXPECT_TRUE(has_line(r.err, "pcopy: cannot write manifest '" + manifest + "': File too large")) << describe(r);
  // What was written of the manifest is whole lines, each a JSON object: the write that failed is
  // cut off again (PPP: on a full disk its last line was half an object).
  std::string lines = read_file(manifest);
  EXPECT_FALSE(lines.empty());
  EXPECT_TRUE(lines.empty() || lines.back() == '\n') << lines.substr(lines.size() - std::min<size_t>(lines.size(), 200));
  for (const std::string& line : lines_of(lines)) EXPECT_TRUE(nlohmann::json::accept(line)) << line;
  EXPECT_EQ(r.err.find("worker died"), std::string::npos) << describe(r);
  auto copied = list_tree(dst);
  EXPECT_EQ(copied.size(), 2500u) << "every small file, nothing else (no temporary)";
  EXPECT_EQ(std::count_if(copied.begin(), copied.end(), [](auto& n) { return n.starts_with(".pcopy-"); }), 0);
  // The whole lines that fitted stay: only the part of a line past the limit goes. It was cut back
  // to where the failed write began, up to 64 KiB before (helper I6: 4,056 bytes kept of 50,000).
  if (!exists("/usr/bin/prlimit")) return;
  constexpr size_t kLimit = 150'000;
  std::filesystem::remove_all(dst);
  r = run({"/usr/bin/prlimit", fmt::format("--fsize={}", kLimit), pcopy_bin(), "-j2", "--manifest", manifest, src, dst});
  EXPECT_EQ(r.status, 1) << describe(r);
  lines = read_file(manifest);
  EXPECT_GT(lines.size() + 300, kLimit) << "whole lines that fitted were cut off";
  EXPECT_LE(lines.size(), kLimit);
  EXPECT_TRUE(lines.empty() || lines.back() == '\n');
  for (const std::string& line : lines_of(lines)) EXPECT_TRUE(nlohmann::json::accept(line)) << line;
}

// Under `ulimit -u`, pcopy works with the workers it could fork, saying so; with none it refuses
// the run and removes the DST it had made (it was left behind, empty), and leaves the manifest
// as it was (it was emptied).
TEST_F(CopyTest, RunsWithTheWorkersTheProcessLimitAllows) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root: a uid of its own, so that no other process counts";
  make_mixed_tree(60);
  chown_tree(tmp.path(), 61234, 65534);
  RunOptions options;
  options.uid = 61234;  // RLIMIT_NPROC counts every process of the uid: one no other test uses
  // The sanitizer build's leak check runs in a thread of its own at exit, which the limit refuses.
  if (const char* asan = std::getenv("ASAN_OPTIONS"))
    options.env.push_back(std::string("ASAN_OPTIONS=") + asan + ":detect_leaks=0");
  std::string made = tmp / "new/deeper";
  dst = made + "/dst";
  options.nproc = 1;  // pcopy itself: no worker
  std::string manifest = tmp / "manifest.jsonl";
  write_file(manifest, "an earlier run's\n");
  ASSERT_EQ(::chown(manifest.c_str(), 61234, 65534), 0);
  RunResult r = copy({"-j4", "--json", "--manifest", manifest}, options);
  EXPECT_EQ(r.status, 2) << describe(r);
  EXPECT_TRUE(has_line(r.err, "pcopy: cannot start a worker process: Resource temporarily unavailable"))
      << describe(r);
  EXPECT_EQ(nlohmann::json::parse(r.out).at("exit_status"), 2) << r.out;
  EXPECT_FALSE(exists(tmp / "new")) << "the directories made for DST are removed";
  EXPECT_EQ(read_file(manifest), "an earlier run's\n") << "a refused run leaves the manifest as it was";
  // One it made goes, also inside the directories it made for DST (they stayed, not empty).
  r = copy({"-j4", "--manifest", dst + "/manifest.jsonl"}, options);
  EXPECT_EQ(r.status, 2) << describe(r);
  EXPECT_FALSE(exists(tmp / "new")) << "the directories made for DST, and the manifest in them, are removed";

  options.nproc = 3;  // pcopy and two workers
  r = copy({"-j4", "--json"}, options);
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_TRUE(has_line(r.err, "pcopy: warning: started 2 of 4 worker processes: Resource temporarily unavailable"))
      << describe(r);
  EXPECT_NE(r.err.find(", 2 workers, "), std::string::npos) << describe(r);
  nlohmann::json report = nlohmann::json::parse(r.out);
  EXPECT_EQ(report.at("workers"), 2);
  EXPECT_EQ(report.at("warnings"),
            nlohmann::json::parse(R"([{"path": "", "reason": "started 2 of 4 worker processes: Resource temporarily unavailable"}])"));
  EXPECT_EQ(diff_trees(src, dst), "");
}

// A pipeline reading --json gets a report from a refused run too, with the reason (and 0 workers,
// where it said the -j asked for).
TEST_F(CopyTest, RefusedRunStillPrintsTheJsonReport) {
  src = tmp / "no-such-source";
  RunResult r = copy({"--json"});
  expect_refused(r, dst);
  auto report = nlohmann::json::parse(r.out);
  EXPECT_EQ(report.at("exit_status"), 2);
  EXPECT_EQ(report.at("files_copied"), 0);
  EXPECT_EQ(report.at("workers"), 0) << "none started";
  ASSERT_EQ(report.at("errors").size(), 1u) << r.out;
  EXPECT_EQ(report["errors"][0].at("path"), src);
  EXPECT_EQ(report["errors"][0].at("reason"), "cannot access '" + src + "': No such file or directory");
}

// So does a command line the parser refuses, also when it gave up before reaching --json; the
// report has the same fields, its error no path. After "--", "--json" is a name, not the option.
TEST_F(CopyTest, RefusedCommandLineStillPrintsTheJsonReport) {
  auto keys = [](const nlohmann::json& j) {
    std::vector<std::string> names;
    for (auto& [key, value] : j.items()) names.push_back(key);
    return names;
  };
  const auto expected_keys = keys(nlohmann::json::parse(run_pcopy({"--json", tmp / "no-such-source", dst}).out));
  write_file(src + "/f", "f");
  const std::vector<std::vector<std::string>> command_lines = {
      {"--json", "-j0", src, dst},
      {"--json", "--bogus", src, dst},
      {"--exclude-from", tmp / "no-such-file", "--json", src, dst},
      {"--json", "", dst},
  };
  for (const auto& args : command_lines) {
    SCOPED_TRACE(escape_path(fmt::format("{}", fmt::join(args, " "))));
    RunResult r = run_pcopy(args);
    expect_refused(r, dst);
    auto report = nlohmann::json::parse(r.out, nullptr, false);
    ASSERT_TRUE(report.is_object()) << describe(r);
    EXPECT_EQ(keys(report), expected_keys) << r.out;
    EXPECT_EQ(report.at("exit_status"), 2);
    ASSERT_EQ(report.at("errors").size(), 1u) << r.out;
    EXPECT_EQ(report["errors"][0].at("path"), "");
    EXPECT_EQ("pcopy: " + report["errors"][0].at("reason").get<std::string>(), lines_of(r.err).at(0)) << describe(r);
    EXPECT_EQ(report.at("dry_run"), false) << r.out;
  }
  // A refused dry run's report says it was one (SSS), however -n was given.
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {"-n", "--json", "-j0", src, dst}, {"--json", "--dry", "--bogus", src, dst}, {"--json", "-qn", "", dst}}) {
    SCOPED_TRACE(escape_path(fmt::format("{}", fmt::join(args, " "))));
    RunResult dry = run_pcopy(args);
    expect_refused(dry, dst);
    EXPECT_EQ(nlohmann::json::parse(dry.out).at("dry_run"), true) << dry.out;
  }
  RunResult r = run_pcopy({"--bogus", "--", "--json", src, dst});
  expect_refused(r, dst);
  EXPECT_EQ(r.out, "");
}

// An empty DST (a backup script's unset $DEST) is not an omitted one: refused like an empty SRC,
// and no copy appears beside SRC.
TEST_F(CopyTest, RefusesEmptyDestination) {
  write_file(src + "/f", "f");
  RunResult r = run_pcopy({src, ""});
  expect_refused(r, src + "-copy");
  EXPECT_TRUE(has_line(r.err, "pcopy: DST must not be empty")) << describe(r);
}

TEST_F(CopyTest, RefusesDestinationEqualToSource) {
  write_file(src + "/f", "f");
  const auto before = list_tree(src);
  for (const std::string& same : {src, src + "/", src + "/.", src + "/../src"}) {
    SCOPED_TRACE(same);
    dst = same;
    RunResult r = copy();
    EXPECT_EQ(r.status, 2) << describe(r);
    EXPECT_EQ(list_tree(src), before) << "nothing may be written";
  }
}

TEST_F(CopyTest, RefusesDestinationInsideSource) {
  write_file(src + "/f", "f");
  dst = src + "/sub/inner";
  expect_refused(copy(), src + "/sub");
}

TEST_F(CopyTest, RefusesDestinationInsideSourceThroughSymlink) {
  write_file(src + "/f", "f");
  make_symlink(src, tmp / "alias");
  dst = tmp / "alias/inner";
  expect_refused(copy(), src + "/inner");

  // And the other way round: SRC named through the link, DST spelled directly.
  RunResult r = run_pcopy({tmp / "alias", src + "/inner2"});
  expect_refused(r, src + "/inner2");
}

// A bind mount gives SRC a second name that no path comparison sees: DST under it is still inside.
TEST_F(CopyTest, RefusesDestinationInsideSourceThroughBindMount) {
  write_file(src + "/f", "f");
  Mount alias(tmp / "alias", Mount::Bind{src});
  if (!alias.mounted()) GTEST_SKIP() << alias.why();
  dst = tmp / "alias/inner";
  expect_refused(copy(), src + "/inner");
  RunResult r = run_pcopy({tmp / "alias", src + "/deeper/inner2"});
  expect_refused(r, src + "/deeper");
}

// The mirror image of DST inside SRC: with --delete, SRC inside DST would be deleted as having no
// counterpart in itself (rsync does it, warning). Refused, whatever the name SRC is given by;
// without --delete such a copy is harmless and done.
TEST_F(CopyTest, RefusesToDeleteWhenSourceIsInsideDestination) {
  make_dir(dst);
  write_file(dst + "/top", "top");
  make_dir(dst + "/sub");
  write_file(dst + "/sub/inner", "inner");
  make_symlink(dst + "/sub", tmp / "sub-link");
  for (const std::string& from : {dst + "/sub", dst + "/sub/", tmp / "sub-link", dst + "/./sub/../sub"}) {
    SCOPED_TRACE(from);
    RunResult r = run_pcopy({"--delete", from, dst});
    EXPECT_EQ(r.status, 2) << describe(r);
    EXPECT_NE(r.err.find("itself: it is inside the destination"), std::string::npos) << describe(r);
    EXPECT_EQ(list_tree(dst), (std::vector<std::string>{"sub", "sub/inner", "top"}));
  }
  RunResult r = run_pcopy({"-q", dst + "/sub", dst});
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(list_tree(dst), (std::vector<std::string>{"inner", "sub", "sub/inner", "top"}));
}

// Names no path comparison sees: SRC a bind mount of a directory inside DST (then --delete must
// not remove SRC, nor the directories above it in DST, which SRC does not hold), and DST a bind
// mount of a directory inside SRC, refused before the run as any DST inside SRC is (the mount table
// tells it). Where that table cannot be read (no /proc), the walk meets DST and does not copy it
// into itself forever, and --delete deletes nothing: what DST holds is SRC's. It deleted it (I22).
TEST_F(CopyTest, BindMountsNeverDeleteTheSourceNorCopyTheDestinationIntoItself) {
  make_dirs(dst + "/inner/data");
  write_file(dst + "/inner/data/p", "precious\n");
  write_file(dst + "/stale", "stale\n");
  Mount view(tmp / "view", Mount::Bind{dst + "/inner/data"});
  if (!view.mounted()) GTEST_SKIP() << view.why();
  RunResult r = run_pcopy({"--delete", tmp / "view", dst});
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(read_file(dst + "/inner/data/p"), "precious\n");
  EXPECT_EQ(list_tree(dst), (std::vector<std::string>{"inner", "inner/data", "inner/data/p", "p"}));

  make_dirs(src + "/sub/out");
  write_file(src + "/sub/out/p", "SRC's own\n");
  write_file(src + "/a", "a\n");
  std::string into = tmp / "into";
  Mount out(into, Mount::Bind{src + "/sub/out"});
  if (!out.mounted()) GTEST_SKIP() << out.why();
  RunOptions options;
  options.timeout_s = 60;
  for (const std::string& to : {into, into + "/", into + "/new/deeper"}) {
    r = run_pcopy({"--delete", src, to}, options);
    expect_refused(r, into + "/new");
    EXPECT_TRUE(has_line(r.err, fmt::format("pcopy: cannot copy '{}' into itself ('{}')", src, to))) << describe(r);
    EXPECT_EQ(list_tree(src), (std::vector<std::string>{"a", "sub", "sub/out", "sub/out/p"}));
  }

  r = run({"unshare", "--mount", "--propagation", "private", "sh", "-c", "umount -l /proc && exec \"$0\" \"$@\"",
           pcopy_bin(), "--delete", src, into},
          options);
  if (r.status == 1 && r.err.find("umount") != std::string::npos) GTEST_SKIP() << "cannot unmount /proc: " << r.err;
  EXPECT_EQ(r.status, 1) << describe(r);
  EXPECT_TRUE(has_line(r.err, "pcopy: cannot copy 'sub/out': it is the destination itself: a directory cannot be "
                              "copied into itself"))
      << describe(r);
  EXPECT_TRUE(has_line(r.err, "pcopy: --delete deleted nothing extraneous: reading SRC failed, so nothing in DST is "
                              "known to be extraneous"))
      << describe(r);
  EXPECT_EQ(read_file(src + "/sub/out/p"), "SRC's own\n");
  EXPECT_EQ(list_tree(into), (std::vector<std::string>{"a", "p", "sub"}));
}

// DST a bind mount of a directory of another file system mounted inside SRC is inside SRC too, as
// cp -a finds: it was copied into, SRC's files written into SRC's own tree. And DST a bind mount of
// a directory inside SRC that a mount covers is not: the walk never meets it, and the copy is made,
// as rsync makes it; it was refused (I23).
TEST_F(CopyTest, BindMountsOfMountsInsideTheSourceAreToldByWhatTheWalkWouldMeet) {
  make_dirs(src + "/sub");
  write_file(src + "/f", "f\n");
  Mount sub(src + "/sub", Mount::Tmpfs{"size=1m"});
  if (!sub.mounted()) GTEST_SKIP() << sub.why();
  make_dirs(src + "/sub/q");
  write_file(src + "/sub/g", "g\n");
  std::string into = tmp / "into";
  Mount bound(into, Mount::Bind{src + "/sub/q"});
  if (!bound.mounted()) GTEST_SKIP() << bound.why();
  RunResult r = run_pcopy({"-a", "--delete", src, into});
  expect_refused(r, src + "/sub/q/f");
  EXPECT_TRUE(has_line(r.err, fmt::format("pcopy: cannot copy '{}' into itself ('{}')", src, into))) << describe(r);

  make_dirs(src + "/hid");
  write_file(src + "/hid/under", "under a mount\n");
  std::string under = tmp / "under", to = tmp / "to";
  Mount kept(under, Mount::Bind{src + "/hid"});
  if (!kept.mounted()) GTEST_SKIP() << kept.why();
  Mount cover(src + "/hid", Mount::Tmpfs{"size=1m"});
  if (!cover.mounted()) GTEST_SKIP() << cover.why();
  Mount to_under(to, Mount::Bind{under});
  if (!to_under.mounted()) GTEST_SKIP() << to_under.why();
  r = run_pcopy({"-a", src, to});
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(read_file(to + "/f"), "f\n");
  EXPECT_EQ(read_file(to + "/under"), "under a mount\n");
}

// Where the working directory has no path realpath can give (deeper than PATH_MAX here; see the
// next test for one below a directory the user may not search), SRC and DST are still told apart
// by identity. Before, an unresolved SRC was an empty path, inside which every path lay: each copy
// was refused as "into itself", and a single file failed as ''.
TEST_F(CopyTest, WorksFromAWorkingDirectoryPastPathMax) {
  std::string part(200, 'w');
  make_deep_dirs(tmp.path(), 25, part);
  std::string deep = tmp.path();
  for (int i = 0; i < 25; ++i) deep += "/" + part;
  ASSERT_GT(deep.size(), size_t(PATH_MAX));
  make_dir(deep + "/src");
  write_file(deep + "/src/f", "f\n");
  write_file(deep + "/file", "file\n");
  RunOptions here;
  here.cwd = deep;
  RunResult r = run_pcopy({"src", "dst"}, here);
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(read_file(deep + "/dst/f"), "f\n");
  r = run_pcopy({"-q", "src"}, here);
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(read_file(deep + "/src-copy/f"), "f\n");
  r = run_pcopy({"file", "fcopy"}, here);
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(read_file(deep + "/fcopy"), "file\n");
  // What must be refused still is.
  expect_refused(run_pcopy({"src", "src/in"}, here), deep + "/src/in");
  r = run_pcopy({"--manifest", "src/m.jsonl", "src", "d2"}, here);
  EXPECT_EQ(r.status, 2) << describe(r);
  EXPECT_TRUE(has_line(r.err, "pcopy: cannot write manifest 'src/m.jsonl': it is inside the source")) << describe(r);
}

// A user whose working directory lies below one they may not search (`sudo -u` from a root-only
// directory, a container's mount): realpath fails there, as it does past PATH_MAX.
TEST_F(CopyTest, WorksFromAWorkingDirectoryBelowAnUnsearchableOne) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root: a directory only root may search, above one nobody works in";
  std::string locked = tmp / "locked", pub = tmp / "locked/pub";
  make_dir(locked, 0700);
  make_dirs(pub + "/src/sub");
  write_file(pub + "/src/f", "f\n");
  write_file(pub + "/file", "file\n");
  chown_tree(pub, 65534, 65534);
  RunOptions nobody;
  nobody.uid = 65534;
  nobody.cwd = pub;
  RunResult r = run_pcopy({"src", "out"}, nobody);
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(read_file(pub + "/out/f"), "f\n");
  r = run_pcopy({"file", "copies/"}, nobody);
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(read_file(pub + "/copies/file"), "file\n");
  expect_refused(run_pcopy({"src", "src/sub/x"}, nobody), pub + "/src/sub/x");
}

// SRC inside DST, at the very place a directory of SRC is copied to (`pcopy a/b a`, with a
// directory b inside a/b): copying onto it would overwrite the files being read. That directory
// fails alone, in the dry run too; the rest is copied. Before, SRC's files were overwritten by
// those of its subdirectories, with exit 0.
TEST_F(CopyTest, NeverCopiesADirectoryOntoTheSourceItself) {
  std::string outer = tmp / "outer", inner = tmp / "outer/inner";
  make_dirs(inner + "/inner/inner");
  write_file(inner + "/f", "top\n");
  write_file(inner + "/inner/f", "mid\n");
  write_file(inner + "/inner/inner/f", "deep\n");
  const std::string line = "pcopy: cannot copy 'inner': it is the source itself: the source cannot be copied onto itself";
  RunResult r = run_pcopy({"-n", inner, outer});
  EXPECT_EQ(r.status, 1) << describe(r);
  EXPECT_TRUE(has_line(r.err, line)) << describe(r);
  EXPECT_EQ(r.out, "copy f\n");
  r = run_pcopy({inner, outer});
  EXPECT_EQ(r.status, 1) << describe(r);
  EXPECT_TRUE(has_line(r.err, line)) << describe(r);
  EXPECT_EQ(read_file(outer + "/f"), "top\n");
  EXPECT_EQ(read_file(inner + "/f"), "top\n");
  EXPECT_EQ(read_file(inner + "/inner/f"), "mid\n");
  EXPECT_EQ(read_file(inner + "/inner/inner/f"), "deep\n");
}

// DST "dir/." or "dir/.." names a directory, as "dir/" does: a single file goes into it, made if
// missing (as `mkdir -p dir/.` makes dir). Before, the file was to be named "." in dir: the run made
// dir and failed (Device or resource busy), and the dry run said it would copy "." there.
TEST_F(SingleFileTest, DestinationEndingInDotIsADirectory) {
  RunResult dry = run_pcopy({"-n", file, tmp / "new/."});
  EXPECT_EQ(dry.status, 0) << describe(dry);
  EXPECT_EQ(dry.out, "copy one.bin\n");
  EXPECT_FALSE(exists(tmp / "new"));
  RunResult r = run_pcopy({file, tmp / "new/."});
  ASSERT_EQ(r.status, 0) << describe(r);
  expect_same_file(tmp / "new/one.bin");
  // "made/.." is tmp: the file itself. Refused, and "made" is not left behind.
  r = run_pcopy({file, tmp / "made/.."});
  EXPECT_EQ(r.status, 2) << describe(r);
  EXPECT_NE(r.err.find("are the same file"), std::string::npos) << describe(r);
  EXPECT_FALSE(exists(tmp / "made"));
}

// A directory SRC into a symbolic link that leads nowhere: refused with the reason, not as though
// SRC could not be opened.
TEST_F(CopyTest, RefusesADestinationThatIsALinkToNothing) {
  write_file(src + "/f", "f");
  make_symlink(tmp / "nowhere", dst);
  RunResult r = copy();
  EXPECT_EQ(r.status, 2) << describe(r);
  EXPECT_TRUE(has_line(r.err, "pcopy: destination '" + dst + "' is a symbolic link to nothing")) << describe(r);
  EXPECT_FALSE(exists(tmp / "nowhere"));
}

// A user's file that merely looks like a temporary of pcopy's (`.pcopy-notes.tmp`) is theirs: a
// run does not remove it as a leftover, and --delete counts it like any other file it removes.
TEST_F(CopyTest, FilesThatOnlyLookLikeTemporariesAreTheUsers) {
  write_file(src + "/f", "f");
  make_dir(dst);
  for (const char* name : {".pcopy-notes.tmp", ".pcopy-123.tmp", ".pcopy-99999-1-1.tmp"})
    write_file(dst + "/" + name, "mine\n");
  RunResult r = copy();
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(read_file(dst + "/.pcopy-notes.tmp"), "mine\n");
  EXPECT_EQ(list_tree(dst).size(), 4u);
  r = copy({"--delete", "--json"});
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(nlohmann::json::parse(r.out).at("files_deleted"), 3) << r.out;
  EXPECT_EQ(list_tree(dst), std::vector<std::string>{"f"});
}

// A source file named exactly like a temporary (a backup of a tree an interrupted run left one
// in): its copy is a copy, kept by the next run, not removed as a leftover and made again.
TEST_F(CopyTest, ASourceFileNamedLikeATemporaryIsCopiedOnce) {
  const std::string leftover = ".pcopy-99999-1.tmp", staged = ".pcopy-99999-d2.tmp";
  write_file(src + "/" + leftover, "data\n");
  make_dir(src + "/sub");
  write_file(src + "/sub/" + leftover, "deeper\n");
  make_dir(src + "/" + staged);
  write_file(src + "/" + staged + "/f", "in a directory\n");
  RunResult r = copy({"-a", "--json"});
  ASSERT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(nlohmann::json::parse(r.out).at("files_copied"), 3) << r.out;
  r = copy({"-a", "-u", "--json"});
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(nlohmann::json::parse(r.out).at("files_copied"), 0) << r.out;
  EXPECT_EQ(read_file(dst + "/" + leftover), "data\n");
  EXPECT_EQ(read_file(dst + "/sub/" + leftover), "deeper\n");
  EXPECT_EQ(read_file(dst + "/" + staged + "/f"), "in a directory\n");
  // Gone from SRC, it is a name like any other to --delete (or removed as a leftover).
  ASSERT_EQ(::unlink((src + "/" + leftover).c_str()), 0);
  r = copy({"-a", "-u", "--delete"});
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_FALSE(exists(dst + "/" + leftover));
  EXPECT_TRUE(exists(dst + "/sub/" + leftover));
  // So is a directory named like a file's temporary, which no run of pcopy's makes: --delete left
  // it for the leftovers' removal, which left it for --delete (I7). -n lists it.
  const std::string dir_like_a_file = ".pcopy-99999-5.tmp";
  make_dir(src + "/" + dir_like_a_file);
  write_file(src + "/" + dir_like_a_file + "/f", "in a directory\n");
  ASSERT_EQ(copy({"-a", "-u"}).status, 0);
  ASSERT_EQ(::unlink((src + "/" + dir_like_a_file + "/f").c_str()), 0);
  ASSERT_EQ(::rmdir((src + "/" + dir_like_a_file).c_str()), 0);
  r = copy({"-a", "-u", "--delete", "-n"});
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_TRUE(has_line(r.out, "delete " + dir_like_a_file)) << describe(r);
  r = copy({"-a", "-u", "--delete", "--json"});
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_FALSE(exists(dst + "/" + dir_like_a_file)) << describe(r);
  EXPECT_EQ(nlohmann::json::parse(r.out).at("files_deleted"), 2) << r.out;  // the directory and its file
}

TEST_F(CopyTest, RefusesDirectoryOntoExistingFile) {
  write_file(src + "/f", "f");
  write_file(dst, "a file in the way");
  RunResult r = copy();
  EXPECT_EQ(r.status, 2) << describe(r);
  EXPECT_TRUE(S_ISREG(lstat_of(dst).st_mode));
  EXPECT_EQ(read_file(dst), "a file in the way");
}

TEST_F(CopyTest, RefusesBadJobCounts) {
  write_file(src + "/f", "f");
  for (const char* jobs : {"0", "100000", "abc", "1025", "-1", "2x"}) {
    SCOPED_TRACE(jobs);
    expect_refused(copy({"-j", jobs}), dst);
  }
}

TEST_F(CopyTest, RefusesUnknownOptionAndBadValues) {
  write_file(src + "/f", "f");
  expect_refused(copy({"--no-such-option"}), dst);
  expect_refused(copy({"--progress=sometimes"}), dst);
}

// ---------------------------------------------------------------------------------------------------
// Output.

// Strips CSI (ESC [ ... final byte) and OSC (ESC ] ... BEL or ESC \) sequences and lone escapes.
std::string strip_ansi(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '\x1b') {
      out += s[i];
      continue;
    }
    if (i + 1 < s.size() && s[i + 1] == '[') {
      i += 2;
      while (i < s.size() && !(s[i] >= 0x40 && s[i] <= 0x7e)) ++i;
    } else if (i + 1 < s.size() && s[i + 1] == ']') {
      i += 2;
      while (i < s.size() && s[i] != '\a' && !(s[i] == '\x1b' && i + 1 < s.size() && s[i + 1] == '\\')) ++i;
      if (i < s.size() && s[i] == '\x1b') ++i;
    } else {
      ++i;  // two-byte escape such as ESC 7
    }
  }
  return out;
}

// Terminal columns: one per UTF-8 character (the bar may use block characters), none for controls.
size_t display_width(std::string_view s) {
  return static_cast<size_t>(std::count_if(s.begin(), s.end(), [](char c) {
    auto b = static_cast<unsigned char>(c);
    return (b & 0xC0) != 0x80 && b >= 0x20 && b != 0x7f;
  }));
}

// Options that run pcopy under a pseudo-terminal `columns` wide.
RunOptions on_terminal(int columns) {
  RunOptions options;
  options.pty = true;
  options.pty_columns = columns;
  return options;
}

// The progress frames in terminal output. Frames are separated by '\r'; a segment ending a line
// ('\n') only counts when it is a bar left on screen (it shows a percentage) rather than the summary
// or an error printed after the bar was cleared.
std::vector<std::string> bar_frames(std::string_view out) {
  std::vector<std::string> frames;
  char before = '\n';
  size_t start = 0;
  while (start <= out.size()) {
    size_t end = std::min(out.find_first_of("\r\n", start), out.size());
    char after = end < out.size() ? out[end] : '\0';
    std::string text = strip_ansi(out.substr(start, end - start));
    bool frame = after == '\r' || (before == '\r' && (after == '\0' || text.find('%') != std::string::npos));
    if (frame && !text.empty()) frames.push_back(text);
    before = after;
    start = end + 1;
  }
  return frames;
}

TEST_F(CopyTest, NonTerminalStderrHasNoCarriageReturn) {
  make_mixed_tree(300);
  for (const char* mode : {"--progress=always", "--progress=auto"}) {
    SCOPED_TRACE(mode);
    RunResult r = run_pcopy({mode, src, tmp / fmt::format("dst{}", mode)});
    EXPECT_EQ(r.status, 0) << describe(r);
    EXPECT_EQ(r.err.find('\r'), std::string::npos) << describe(r);
    EXPECT_EQ(r.out.find('\r'), std::string::npos) << describe(r);
  }
}

class TerminalProgressTest : public CopyTest, public ::testing::WithParamInterface<const char*> {};

TEST_P(TerminalProgressTest, DrawsBarNoWiderThanTerminal) {
  // About 60 MB: several redraw periods in a Debug build; an optimised one still draws first and last.
  make_mixed_tree(400);
  RunOptions options = on_terminal(50);
  RunResult r = copy({GetParam(), "-j2"}, options);

  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_NE(r.out.find('\r'), std::string::npos) << "no progress bar was drawn\n" << describe(r);
  auto frames = bar_frames(r.out);
  EXPECT_TRUE(std::any_of(frames.begin(), frames.end(), [](auto& f) { return f.find('%') != std::string::npos; }))
      << "no frame shows a percentage\n" << describe(r);
  // Three columns short of the width: the "^C" a terminal echoes on Ctrl-C fits after the bar,
  // which the line's erasing then takes with it, rather than wrap and leave the bar on the screen.
  for (const auto& frame : frames) {
    EXPECT_LE(display_width(frame), 47u) << "frame leaves no room on the 50-column terminal: '" << escape_path(frame)
                                         << "'";
  }
  EXPECT_EQ(diff_trees(src, dst), "");
}

// A terminal that says it has no width (0 columns: a serial console, an unsized pseudo-terminal in
// a container) is as wide as $COLUMNS says, as GNU tools take it; the bar assumed 80 and wrapped.
TEST_F(CopyTest, AnUnsizedTerminalIsAsWideAsColumnsSays) {
  make_mixed_tree(400);
  RunOptions options = on_terminal(0);
  options.env = {"COLUMNS=40"};
  RunResult r = copy({"-j2"}, options);
  EXPECT_EQ(r.status, 0) << describe(r);
  auto frames = bar_frames(r.out);
  EXPECT_TRUE(std::any_of(frames.begin(), frames.end(), [](auto& f) { return f.find('%') != std::string::npos; }))
      << "no frame shows a percentage\n" << describe(r);
  for (const auto& frame : frames)
    EXPECT_LE(display_width(frame), 37u) << "wider than COLUMNS=40 less three: '" << escape_path(frame) << "'";
  EXPECT_EQ(diff_trees(src, dst), "");
}

// `--manifest /dev/stdout` at a terminal: each line of the manifest on a line of its own, the bar
// erased before it as before a -v line; not glued to the bar's text, as they were.
TEST_F(CopyTest, ManifestLinesOnTheTerminalEraseTheBarFirst) {
  make_mixed_tree(400);
  RunOptions options = on_terminal(200);
  RunResult r = copy({"-j2", "--manifest", "/dev/stdout"}, options);
  EXPECT_EQ(r.status, 0) << describe(r);
  size_t manifest_lines = 0;
  for (const std::string& line : lines_of(r.out)) {
    size_t brace = line.find("{\"");
    if (brace == std::string::npos) continue;
    ++manifest_lines;
    std::string before = line.substr(0, brace);
    size_t cr = before.rfind('\r');
    std::string shown = cr == std::string::npos ? before : before.substr(cr + 1);
    EXPECT_TRUE(shown.empty() || shown == "\x1b[K") << "a manifest line on the bar's: " << escape_path(line);
  }
  EXPECT_GE(manifest_lines, 400u) << describe(r);
  EXPECT_NE(r.out.find('%'), std::string::npos) << "no bar was drawn\n" << describe(r);
}

// A dry run's bar shows how far it has gone, not a throughput: it copies nothing.
TEST_F(CopyTest, ADryRunsBarShowsNoThroughput) {
  make_mixed_tree(400);
  RunOptions options = on_terminal(120);
  RunResult r = copy({"-n", "-j2", "--progress=always"}, options);
  EXPECT_EQ(r.status, 0) << describe(r);
  auto frames = bar_frames(r.out);
  EXPECT_TRUE(std::any_of(frames.begin(), frames.end(), [](auto& f) { return f.find("100%") != std::string::npos; }))
      << "no frame at 100%\n" << describe(r);
  for (const auto& frame : frames)
    EXPECT_EQ(frame.find("/s"), std::string::npos) << "a throughput in a dry run: '" << escape_path(frame) << "'";
  EXPECT_FALSE(exists(dst));
}

INSTANTIATE_TEST_SUITE_P(ProgressModes, TerminalProgressTest, ::testing::Values("--progress=always", "--progress=auto"),
                         [](const auto& info) { return std::string(info.param).substr(11); });

// A dumb terminal (TERM=dumb: an editor's shell buffer, a serial console) cannot clear a line:
// no bar, no colour, no escape sequence at all; --progress=always gives it plain lines. So is a
// terminal of no TERM, or an empty one (a bare serial login, `env -i`), as git and less take it.
TEST_F(CopyTest, DumbTerminalGetsNoEscapeSequences) {
  make_mixed_tree(400);
  write_file(src + "/secret", "s", 0000);
  for (const char* term : {"TERM=dumb", "TERM", "TERM="}) {
    RunOptions options = unprivileged(tmp);  // the unreadable file: an error line, coloured on a terminal
    options.pty = true;
    options.env.push_back(term);
    for (const char* progress : {"--progress=auto", "--progress=always"}) {
      SCOPED_TRACE(fmt::format("{} {}", term, progress));
      RunResult r = copy({progress, "-j2"}, options);
      EXPECT_EQ(r.status, 1) << describe(r);
      EXPECT_EQ(r.out.find('\x1b'), std::string::npos) << describe(r);
      EXPECT_EQ(r.out.find('\r'), std::string::npos) << describe(r);
      EXPECT_TRUE(has_line(r.out, "pcopy: cannot copy 'secret': Permission denied")) << describe(r);
    }
  }
}

TEST_F(CopyTest, QuietPrintsNothingOnSuccess) {
  make_mixed_tree(50);
  RunResult r = copy({"-q"});
  expect_copied(r);
  EXPECT_EQ(r.err, "");
  EXPECT_EQ(r.out, "");
}

TEST_F(CopyTest, DefaultPrintsOneSummaryLine) {
  make_mixed_tree(50);
  RunResult r = copy();
  expect_copied(r);
  EXPECT_EQ(lines_of(r.err).size(), 1u) << describe(r);
  EXPECT_TRUE(r.err.ends_with("\n")) << describe(r);
  EXPECT_EQ(r.out, "") << "the summary goes to stderr";
}

TEST_F(CopyTest, VerbosePrintsEachCopiedPathToStdout) {
  write_file(src + "/a.txt", "a");
  make_dirs(src + "/sub/deeper");
  write_file(src + "/sub/b.txt", "b");
  write_file(src + "/sub/deeper/c.txt", "c");
  RunResult r = copy({"-v"});
  expect_copied(r);
  auto lines = lines_of(r.out);
  for (std::string rel : {"a.txt", "sub/b.txt", "sub/deeper/c.txt"}) {
    // Printed relative to SRC, or as a full path ending in it.
    bool printed = std::any_of(lines.begin(), lines.end(),
                               [&](const std::string& line) { return line == rel || line.ends_with("/" + rel); });
    EXPECT_TRUE(printed) << rel << " not printed\n" << describe(r);
  }
}

}  // namespace
}  // namespace pcopy::test
