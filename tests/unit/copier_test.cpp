#include "pcopy/copier.hpp"

#include <fcntl.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <functional>
#include <set>
#include <string>

#include "pcopy/fs_facts.hpp"
#include "pcopy/hash.hpp"
#include "pcopy/metadata.hpp"
#include "pcopy/paths.hpp"
#include "pcopy/temp_names.hpp"
#include "pcopy/up_to_date.hpp"
#include "../acl_util.hpp"
#include "unit_util.hpp"

using namespace pcopy;
using pcopy_test::TempDir;

namespace {

int64_t ns(time_t sec, long nsec) { return int64_t(sec) * 1'000'000'000 + nsec; }

struct stat lstat_at(int dir, const std::string& name) {
  struct stat st {};
  EXPECT_EQ(::fstatat(dir, name.c_str(), &st, AT_SYMLINK_NOFOLLOW), 0) << name << ": " << std::strerror(errno);
  return st;
}


std::set<std::string> temps_in(int dir) {
  std::set<std::string> out;
  for (const auto& n : pcopy_test::list_at(dir))
    if (n.rfind(".pcopy-", 0) == 0) out.insert(n);
  return out;
}

void set_times_at(int dir, const std::string& name, struct timespec atime, struct timespec mtime) {
  struct timespec t[2] = {atime, mtime};
  ASSERT_EQ(::utimensat(dir, name.c_str(), t, AT_SYMLINK_NOFOLLOW), 0) << name;
}

Hash128 hash_of(const std::string& data) {
  Hasher h;
  h.update(data.data(), data.size());
  return h.digest();
}

// Every test runs twice: as a worker copies (told the destination directory with enter(), so new
// files are O_TMPFILE files linked in where the file system allows), and without enter() (named
// temporaries renamed into place, as on file systems whose close may fail).
class CopierTest : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    // Workers run with umask 0 (worker.cpp): files are created with their final bits.
    old_umask_ = ::umask(0);
    ASSERT_EQ(::mkdir((tmp / "src").c_str(), 0755), 0);
    ASSERT_EQ(::mkdir((tmp / "dst").c_str(), 0755), 0);
    src_ = pcopy_test::open_dir(tmp / "src");
    dst_ = pcopy_test::open_dir(tmp / "dst");
  }
  void TearDown() override {
    ::close(src_);
    ::close(dst_);
    ::umask(old_umask_);
  }

  // A job for `name` as the walk would make it.
  Job job_for(const std::string& name, uint64_t id = 1) {
    struct stat st = lstat_at(src_, name);
    Job j;
    j.id = id;
    j.name = name;
    j.size = uint64_t(st.st_size);
    j.mtime_ns = pcopy_test::ns_of(st.st_mtim);
    j.kind = S_ISLNK(st.st_mode) ? JobKind::Symlink
             : S_ISFIFO(st.st_mode) ? JobKind::Fifo
             : S_ISREG(st.st_mode)  ? JobKind::File
                                    : JobKind::Device;
    return j;
  }

  Result copy(const Job& job) {
    Copier copier(opt);
    if (GetParam()) copier.enter(dst_);
    reported = 0;
    Copier::ProgressFn report = [this](uint64_t, uint64_t n) { reported += n; };
    return copier.copy(src_, dst_, dst_, job, report);
  }
  Result copy(const std::string& name) { return copy(job_for(name)); }

  // A directory `name` in DST holding a file "inside" with `contents`.
  void make_dst_dir_with_file(const std::string& name, const std::string& contents) {
    ASSERT_EQ(::mkdirat(dst_, name.c_str(), 0755), 0);
    pcopy_test::write_at(dst_, name + "/inside", contents);
  }

  void expect_same_metadata(const std::string& name) {
    struct stat a = lstat_at(src_, name), b = lstat_at(dst_, name);
    EXPECT_EQ(a.st_mode, b.st_mode) << name;
    EXPECT_EQ(pcopy_test::ns_of(a.st_mtim), pcopy_test::ns_of(b.st_mtim)) << name;
    EXPECT_EQ(pcopy_test::ns_of(a.st_atim), pcopy_test::ns_of(b.st_atim)) << name;
    EXPECT_EQ(a.st_size, b.st_size) << name;
  }

  TempDir tmp;
  int src_ = -1, dst_ = -1;
  Options opt;
  uint64_t reported = 0;

 private:
  mode_t old_umask_ = 022;
};

}  // namespace

// ---- regular files -------------------------------------------------------------------------

TEST_P(CopierTest, EmptyFileIsCopiedWithModeAndNanosecondTimes) {
  pcopy_test::write_at(src_, "empty", "", 0640);
  set_times_at(src_, "empty", {1'111'111'111, 987'654'321}, {1'234'567'890, 123'456'789});
  Result r = copy("empty");
  EXPECT_EQ(r.outcome, Outcome::Copied) << r.err << " " << r.detail;
  EXPECT_EQ(r.id, 1u);
  EXPECT_EQ(r.err, 0);
  EXPECT_EQ(r.bytes, 0u);
  EXPECT_EQ(r.size, 0u);
  EXPECT_EQ(r.mtime_ns, ns(1'234'567'890, 123'456'789));
  struct stat st = lstat_at(dst_, "empty");  // before reading it: a read may move atime
  EXPECT_TRUE(S_ISREG(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0640u);
  EXPECT_EQ(pcopy_test::ns_of(st.st_mtim), ns(1'234'567'890, 123'456'789));
  EXPECT_EQ(pcopy_test::ns_of(st.st_atim), ns(1'111'111'111, 987'654'321));
  EXPECT_EQ(pcopy_test::read_at(dst_, "empty"), "");
  EXPECT_TRUE(temps_in(dst_).empty());
}

TEST_P(CopierTest, RandomMebibytePlusThreeIsByteExactWithMetadata) {
  const std::string data = pcopy_test::random_bytes((1 << 20) + 3, 1);
  pcopy_test::write_at(src_, "blob", data, 0604);
  set_times_at(src_, "blob", {1'600'000'000, 1}, {1'650'000'000, 999'999'999});
  Result r = copy("blob");
  ASSERT_EQ(r.outcome, Outcome::Copied) << r.err << " " << r.detail;
  EXPECT_EQ(r.bytes, data.size());
  EXPECT_EQ(r.size, data.size());
  EXPECT_EQ(r.mtime_ns, ns(1'650'000'000, 999'999'999));
  EXPECT_LE(reported, r.bytes) << "progress deltas never exceed what was written";
  expect_same_metadata("blob");  // before reading it: a read may move atime
  EXPECT_EQ(lstat_at(dst_, "blob").st_mode & 07777, 0604u);
  EXPECT_TRUE(pcopy_test::read_at(dst_, "blob") == data);
  EXPECT_FALSE(r.hash.has_value());
  EXPECT_EQ(pcopy_test::list_at(dst_), (std::set<std::string>{"blob"}));
}

TEST_P(CopierTest, PlainReadWritePathIsByteExactToo) {
  opt.copy_file_range = false;
  opt.reflink = ReflinkMode::Never;
  const std::string data = pcopy_test::random_bytes(3 * (1 << 20) + 17, 2);
  pcopy_test::write_at(src_, "blob", data, 0644);
  Result r = copy("blob");
  ASSERT_EQ(r.outcome, Outcome::Copied) << r.err << " " << r.detail;
  EXPECT_EQ(r.bytes, data.size());
  expect_same_metadata("blob");
  EXPECT_TRUE(pcopy_test::read_at(dst_, "blob") == data);
}

TEST_P(CopierTest, LongFileReportsProgressWhileItCopies) {
  std::string data(20 << 20, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = char('a' + i % 23);
  pcopy_test::write_at(src_, "long", data);
  Result r = copy("long");
  ASSERT_EQ(r.outcome, Outcome::Copied) << r.err << " " << r.detail;
  EXPECT_EQ(r.bytes, data.size());
  EXPECT_GT(reported, 0u) << "a 20 MiB file moves the bar before it is done";
  EXPECT_LE(reported, r.bytes);
  EXPECT_EQ(lstat_at(dst_, "long").st_size, off_t(data.size()));
  EXPECT_TRUE(pcopy_test::read_at(dst_, "long") == data);
}

TEST_P(CopierTest, EveryModeBitIsKept) {
  for (bool inplace : {false, true}) {
    opt.inplace = inplace;
    for (mode_t mode : {0777u, 0700u, 0444u, 0000u, 0640u, 04755u, 02755u, 01777u}) {
      std::string name = (inplace ? "i" : "m") + std::to_string(mode);
      SCOPED_TRACE(name);
      pcopy_test::write_at(src_, name, "data", mode);
      ASSERT_EQ(lstat_at(src_, name).st_mode & 07777, mode);
      Result r = copy(name);
      ASSERT_EQ(r.outcome, Outcome::Copied) << r.err << " " << r.detail;
      EXPECT_EQ(lstat_at(dst_, name).st_mode & 07777, mode);
    }
  }
}

TEST_P(CopierTest, ModesComeOutRightUnderADefaultAcl) {
  // The ACL would make new files 0755 at most (group and others r-x): modes are set after all.
  if (!pcopy_test::set_default_acl(tmp / "dst")) GTEST_SKIP() << "no POSIX ACLs here";
  for (bool inplace : {false, true}) {
    opt.inplace = inplace;
    for (mode_t mode : {0775u, 0666u, 0640u}) {
      std::string name = (inplace ? "i" : "m") + std::to_string(mode);
      SCOPED_TRACE(name);
      pcopy_test::write_at(src_, name, "data", mode);
      Result r = copy(name);
      ASSERT_EQ(r.outcome, Outcome::Copied) << r.err << " " << r.detail;
      EXPECT_EQ(lstat_at(dst_, name).st_mode & 07777, mode);
    }
  }
}

TEST_P(CopierTest, ManifestOrVerifyMakesTheResultCarryTheContentHash) {
  const std::string data = pcopy_test::random_bytes(200'001, 3);
  pcopy_test::write_at(src_, "h", data);
  opt.manifest = "/dev/null";
  Result r = copy("h");
  ASSERT_EQ(r.outcome, Outcome::Copied) << r.err << " " << r.detail;
  ASSERT_TRUE(r.hash.has_value());
  EXPECT_EQ(to_hex(*r.hash), to_hex(hash_of(data)));
  EXPECT_TRUE(pcopy_test::read_at(dst_, "h") == data);

  opt.manifest.clear();
  opt.verify = true;
  ASSERT_EQ(::unlinkat(dst_, "h", 0), 0);
  r = copy("h");
  ASSERT_EQ(r.outcome, Outcome::Copied) << r.err << " " << r.detail;
  ASSERT_TRUE(r.hash.has_value());
  EXPECT_EQ(*r.hash, hash_of(data));
  EXPECT_TRUE(pcopy_test::read_at(dst_, "h") == data);
  EXPECT_TRUE(temps_in(dst_).empty());
}

TEST_P(CopierTest, SparseFileStaysSparseAndIsByteExact) {
  constexpr off_t kSize = 12 << 20;
  {
    int fd = ::openat(src_, "sparse", O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::pwrite(fd, "head", 4, 0), 4);
    ASSERT_EQ(::pwrite(fd, "middle", 6, 5 << 20), 6);
    ASSERT_EQ(::ftruncate(fd, kSize), 0);  // ends in a hole
    ::close(fd);
  }
  struct stat s = lstat_at(src_, "sparse");
  ASSERT_LT(s.st_blocks * 512, 1 << 20) << "the test file system does not keep holes";
  opt.manifest = "x";  // also check the hash of what the holes read as
  Result r = copy("sparse");
  ASSERT_EQ(r.outcome, Outcome::Copied) << r.err << " " << r.detail;
  struct stat d = lstat_at(dst_, "sparse");
  EXPECT_EQ(d.st_size, kSize);
  EXPECT_LT(d.st_blocks * 512, 1 << 20) << "st_blocks " << d.st_blocks;
  EXPECT_EQ(r.bytes, uint64_t(kSize));  // holes count as copied (as holes)
  expect_same_metadata("sparse");
  std::string got = pcopy_test::read_at(dst_, "sparse");
  ASSERT_EQ(got.size(), size_t(kSize));
  std::string want(size_t(kSize), '\0');
  want.replace(0, 4, "head");
  want.replace(5 << 20, 6, "middle");
  EXPECT_TRUE(got == want);
  ASSERT_TRUE(r.hash.has_value());
  EXPECT_EQ(*r.hash, hash_of(want));
}

TEST_P(CopierTest, SparseFileStartingWithAHoleIsByteExact) {
  constexpr off_t kSize = 6 << 20;
  {
    int fd = ::openat(src_, "sparse", O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::pwrite(fd, "tail", 4, kSize - 4), 4);
    ::close(fd);
  }
  opt.copy_file_range = false;
  Result r = copy("sparse");
  ASSERT_EQ(r.outcome, Outcome::Copied) << r.err << " " << r.detail;
  std::string got = pcopy_test::read_at(dst_, "sparse");
  ASSERT_EQ(got.size(), size_t(kSize));
  EXPECT_EQ(got.substr(got.size() - 4), "tail");
  EXPECT_EQ(got.find_first_not_of('\0'), size_t(kSize - 4));
  EXPECT_LT(lstat_at(dst_, "sparse").st_blocks * 512, 1 << 20);
}

// ---- special files -------------------------------------------------------------------------

TEST_P(CopierTest, SymlinkIsCopiedAsALinkWithItsTargetTextAndTimes) {
  const std::string target = "../does/not/exist \n\xff odd";
  ASSERT_EQ(::symlinkat(target.c_str(), src_, "link"), 0);
  set_times_at(src_, "link", {1'000'000'001, 2}, {1'000'000'003, 4});
  Result r = copy("link");
  ASSERT_EQ(r.outcome, Outcome::Copied) << r.err << " " << r.detail;
  struct stat st = lstat_at(dst_, "link");
  ASSERT_TRUE(S_ISLNK(st.st_mode));
  char buf[PATH_MAX];
  ssize_t n = ::readlinkat(dst_, "link", buf, sizeof buf);
  ASSERT_GE(n, 0);
  EXPECT_EQ(std::string(buf, size_t(n)), target);
  EXPECT_EQ(pcopy_test::ns_of(st.st_mtim), ns(1'000'000'003, 4));
  EXPECT_EQ(pcopy_test::ns_of(st.st_atim), ns(1'000'000'001, 2));
  EXPECT_TRUE(temps_in(dst_).empty());
}

TEST_P(CopierTest, LongSymlinkTargetIsCopiedWhole) {
  std::string target(4000, 'x');
  for (size_t i = 100; i < target.size(); i += 100) target[i] = '/';
  ASSERT_EQ(::symlinkat(target.c_str(), src_, "long"), 0);
  Result r = copy("long");
  ASSERT_EQ(r.outcome, Outcome::Copied) << r.err << " " << r.detail;
  char buf[PATH_MAX + 1];
  ssize_t n = ::readlinkat(dst_, "long", buf, sizeof buf);
  ASSERT_GE(n, 0);
  EXPECT_EQ(std::string(buf, size_t(n)), target);
}

TEST_P(CopierTest, FifoIsRecreatedWithoutBeingOpened) {
  ASSERT_EQ(::mkfifoat(src_, "fifo", 0620), 0);
  set_times_at(src_, "fifo", {1'300'000'000, 5}, {1'300'000'001, 6});
  ::alarm(20);  // opening the FIFO for reading would block forever: fail loudly instead
  Result r = copy("fifo");
  ::alarm(0);
  ASSERT_EQ(r.outcome, Outcome::Copied) << r.err << " " << r.detail;
  struct stat st = lstat_at(dst_, "fifo");
  EXPECT_TRUE(S_ISFIFO(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0620u);
  EXPECT_EQ(pcopy_test::ns_of(st.st_mtim), ns(1'300'000'001, 6));
  EXPECT_TRUE(temps_in(dst_).empty());
}

TEST_P(CopierTest, HardLinkJobLinksToTheAlreadyCopiedFile) {
  ASSERT_EQ(::mkdirat(dst_, "a", 0755), 0);
  int a = ::openat(dst_, "a", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  ASSERT_GE(a, 0);
  pcopy_test::write_at(a, "first", "shared");
  ::close(a);
  Job j;
  j.id = 3;
  j.kind = JobKind::HardLink;
  j.name = "second";
  j.link_target = "a/first";
  Result r = copy(j);
  ASSERT_EQ(r.outcome, Outcome::Copied) << r.err << " " << r.detail;
  struct stat x, y;
  ASSERT_EQ(::fstatat(dst_, "a/first", &x, 0), 0);
  ASSERT_EQ(::fstatat(dst_, "second", &y, 0), 0);
  EXPECT_EQ(x.st_ino, y.st_ino);
  EXPECT_EQ(x.st_nlink, 2u);
  EXPECT_TRUE(temps_in(dst_).empty());
}

// ---- a big file in chunks ------------------------------------------------------------------

TEST_P(CopierTest, ChunkedCopyAssemblesTheFileFromChunksInAnyOrder) {
  const std::string data = pcopy_test::random_bytes(250'003, 6);
  pcopy_test::write_at(src_, "big", data, 0640);
  set_times_at(src_, "big", {1'500'000'000, 11}, {1'500'000'001, 22});
  Job begin = job_for("big", 10);
  begin.kind = JobKind::FileBegin;
  Result b = copy(begin);
  ASSERT_EQ(b.outcome, Outcome::Copied) << b.err << " " << b.detail;
  ASSERT_TRUE(is_temp_name(b.temp)) << b.temp;
  EXPECT_EQ(pcopy_test::list_at(dst_), (std::set<std::string>{b.temp}));  // not under its final name yet

  // Chunks of 100,000 bytes, the last one short, done last-first as parallel workers might.
  uint64_t total = 0;
  for (int i = 2; i >= 0; --i) {
    Job c = begin;
    c.id = 11 + uint64_t(i);
    c.kind = JobKind::FileChunk;
    c.temp = b.temp;
    c.offset = uint64_t(i) * 100'000;
    c.length = std::min<uint64_t>(100'000, data.size() - c.offset);
    Result cr = copy(c);
    ASSERT_EQ(cr.outcome, Outcome::Copied) << "chunk " << i << ": " << cr.err << " " << cr.detail;
    EXPECT_EQ(cr.bytes, c.length);
    total += cr.bytes;
  }
  EXPECT_EQ(total, data.size());
  EXPECT_FALSE(pcopy_test::list_at(dst_).count("big"));

  Job end = begin;
  end.id = 14;
  end.kind = JobKind::FileEnd;
  end.temp = b.temp;
  Result e = copy(end);
  ASSERT_EQ(e.outcome, Outcome::Copied) << e.err << " " << e.detail;
  EXPECT_EQ(e.size, data.size());
  EXPECT_EQ(e.mtime_ns, ns(1'500'000'001, 22));
  EXPECT_EQ(pcopy_test::list_at(dst_), (std::set<std::string>{"big"}));
  expect_same_metadata("big");
  EXPECT_TRUE(pcopy_test::read_at(dst_, "big") == data);
}

TEST_P(CopierTest, ChunkedCopyOfASourceThatChangedFailsWithoutAFinalName) {
  pcopy_test::write_at(src_, "big", std::string(10'000, 'x'));
  set_times_at(src_, "big", {1'000, 0}, {2'000, 0});
  Job begin = job_for("big");
  begin.kind = JobKind::FileBegin;
  Result b = copy(begin);
  ASSERT_EQ(b.outcome, Outcome::Copied) << b.err << " " << b.detail;
  Job c = begin;
  c.kind = JobKind::FileChunk;
  c.temp = b.temp;
  c.offset = 0;
  c.length = 10'000;
  ASSERT_EQ(copy(c).outcome, Outcome::Copied);
  set_times_at(src_, "big", {1'000, 0}, {2'000, 1});  // touched while it was being copied
  Job end = begin;
  end.kind = JobKind::FileEnd;
  end.temp = b.temp;
  Result e = copy(end);
  EXPECT_EQ(e.outcome, Outcome::Failed);
  EXPECT_EQ(e.detail, "file changed as we read it");
  EXPECT_FALSE(pcopy_test::list_at(dst_).count("big"));
}

// A file changed since the walk saw it is copied as it is when its copy begins, as one copied
// whole is: Begin says the size and time it found, which its chunks and End then go by.
TEST_P(CopierTest, ChunkedBeginTakesTheSourceAsItIsWhenItBegins) {
  pcopy_test::write_at(src_, "big", "12345");
  set_times_at(src_, "big", {1'000, 0}, {2'000, 7});
  Job begin = job_for("big");
  begin.kind = JobKind::FileBegin;
  begin.size = 6;  // the walk saw another size and time
  begin.mtime_ns = 1'000;
  Result b = copy(begin);
  ASSERT_EQ(b.outcome, Outcome::Copied) << b.err << " " << b.detail;
  EXPECT_EQ(b.size, 5u);
  EXPECT_EQ(b.mtime_ns, 2'000'000'000'007);
  EXPECT_TRUE(pcopy_test::list_at(dst_).count(b.temp)) << b.temp;
}

TEST_P(CopierTest, ChunkedBeginRefusesASourceThatIsNoLongerAFile) {
  ASSERT_EQ(::mkdirat(src_, "big", 0755), 0);
  Job begin = job_for("big");
  begin.kind = JobKind::FileBegin;
  begin.size = 6;
  Result b = copy(begin);
  EXPECT_EQ(b.outcome, Outcome::Failed);
  EXPECT_EQ(b.detail, "file changed type as we read it");
  EXPECT_TRUE(pcopy_test::list_at(dst_).empty());
}

// ---- failures leave nothing behind ----------------------------------------------------------

TEST_P(CopierTest, VanishedSourceFailsWithEnoentAndLeavesNoFile) {
  pcopy_test::write_at(src_, "gone", "soon gone");
  Job j = job_for("gone");
  ASSERT_EQ(::unlinkat(src_, "gone", 0), 0);
  Result r = copy(j);
  EXPECT_EQ(r.outcome, Outcome::Failed);
  EXPECT_EQ(r.err, ENOENT);
  EXPECT_EQ(r.id, j.id);
  EXPECT_TRUE(pcopy_test::list_at(dst_).empty());
}

TEST_P(CopierTest, VanishedSymlinkOrFifoFailsAndLeavesNoFile) {
  Job j;
  j.kind = JobKind::Symlink;
  j.name = "no-link";
  Result r = copy(j);
  EXPECT_EQ(r.outcome, Outcome::Failed);
  EXPECT_EQ(r.err, ENOENT);
  j.kind = JobKind::Fifo;
  r = copy(j);
  EXPECT_EQ(r.outcome, Outcome::Failed);
  EXPECT_EQ(r.err, ENOENT);
  EXPECT_TRUE(pcopy_test::list_at(dst_).empty());
}

TEST_P(CopierTest, FailedRenameOntoADirectoryRemovesTheTemporary) {
  const std::string data = pcopy_test::random_bytes(100'000, 4);
  pcopy_test::write_at(src_, "clash", data);
  make_dst_dir_with_file("clash", "keep me");
  Result r = copy("clash");
  EXPECT_EQ(r.outcome, Outcome::Failed);
  EXPECT_EQ(r.err, EISDIR);
  EXPECT_TRUE(temps_in(dst_).empty());
  EXPECT_EQ(pcopy_test::list_at(dst_), (std::set<std::string>{"clash"}));
  EXPECT_EQ(pcopy_test::read_file(tmp / "dst/clash/inside"), "keep me");
}

TEST_P(CopierTest, WithDeleteAFileReplacesADirectoryStandingInItsPlace) {
  opt.delete_extraneous = true;
  pcopy_test::write_at(src_, "clash", "file now");
  make_dst_dir_with_file("clash", "old tree");
  ASSERT_EQ(::mkdirat(dst_, "clash/sub", 0755), 0);
  Result r = copy("clash");
  ASSERT_EQ(r.outcome, Outcome::Copied) << r.err << " " << r.detail;
  EXPECT_TRUE(S_ISREG(lstat_at(dst_, "clash").st_mode));
  EXPECT_EQ(pcopy_test::read_at(dst_, "clash"), "file now");
  EXPECT_EQ(pcopy_test::list_at(dst_), (std::set<std::string>{"clash"}));
}

TEST_P(CopierTest, FailedSymlinkRenameRemovesTheTemporary) {
  ASSERT_EQ(::symlinkat("t", src_, "clash"), 0);
  make_dst_dir_with_file("clash", "keep me");
  Result r = copy("clash");
  EXPECT_EQ(r.outcome, Outcome::Failed);
  EXPECT_NE(r.err, 0);
  EXPECT_TRUE(temps_in(dst_).empty());
  EXPECT_EQ(pcopy_test::list_at(dst_), (std::set<std::string>{"clash"}));
}

TEST_P(CopierTest, FailedCopyKeepsThePreviousVersion) {
  pcopy_test::write_at(dst_, "f", "previous version");
  Job j;
  j.name = "f";  // the source is missing
  Result r = copy(j);
  EXPECT_EQ(r.outcome, Outcome::Failed);
  EXPECT_EQ(pcopy_test::read_at(dst_, "f"), "previous version");
  EXPECT_TRUE(temps_in(dst_).empty());
}

// ---- replacing what is there --------------------------------------------------------------

TEST_P(CopierTest, ExistingDestinationFileIsReplacedAtomically) {
  pcopy_test::write_at(src_, "f", "new", 0640);
  pcopy_test::write_at(dst_, "f", "the old, longer contents", 0600);
  int old_fd = ::openat(dst_, "f", O_RDONLY | O_CLOEXEC);
  ASSERT_GE(old_fd, 0);
  Result r = copy("f");
  ASSERT_EQ(r.outcome, Outcome::Copied) << r.err << " " << r.detail;
  expect_same_metadata("f");
  EXPECT_EQ(pcopy_test::read_at(dst_, "f"), "new");
  // The old file was never written to: a reader that had it open still sees it whole.
  char buf[64];
  ssize_t n = ::pread(old_fd, buf, sizeof buf, 0);
  ::close(old_fd);
  EXPECT_EQ(std::string(buf, size_t(std::max<ssize_t>(n, 0))), "the old, longer contents");
  EXPECT_TRUE(temps_in(dst_).empty());
}

TEST_P(CopierTest, ExistingDestinationSymlinkIsReplacedByTheNewLink) {
  ASSERT_EQ(::symlinkat("new-target", src_, "l"), 0);
  ASSERT_EQ(::symlinkat("old-target", dst_, "l"), 0);
  Result r = copy("l");
  ASSERT_EQ(r.outcome, Outcome::Copied) << r.err << " " << r.detail;
  char buf[64];
  ssize_t n = ::readlinkat(dst_, "l", buf, sizeof buf);
  ASSERT_GT(n, 0);
  EXPECT_EQ(std::string(buf, size_t(n)), "new-target");
}

TEST_P(CopierTest, SymlinkPlantedAtTheDestinationIsReplacedAndItsTargetUntouched) {
  pcopy_test::write_file(tmp / "victim", "precious", 0644);
  pcopy_test::write_at(src_, "f", "copied data", 0644);
  ASSERT_EQ(::symlinkat((tmp / "victim").c_str(), dst_, "f"), 0);
  Result r = copy("f");
  ASSERT_EQ(r.outcome, Outcome::Copied) << r.err << " " << r.detail;
  struct stat st = lstat_at(dst_, "f");
  EXPECT_TRUE(S_ISREG(st.st_mode));
  EXPECT_EQ(pcopy_test::read_at(dst_, "f"), "copied data");
  EXPECT_EQ(pcopy_test::read_file(tmp / "victim"), "precious");
  EXPECT_EQ(::stat((tmp / "victim").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0644u);
}

TEST_P(CopierTest, InplaceWritesTheFinalNameDirectly) {
  opt.inplace = true;
  const std::string data = pcopy_test::random_bytes(70'000, 5);
  pcopy_test::write_at(src_, "f", data, 0640);
  pcopy_test::write_at(dst_, "f", std::string(200'000, 'o'), 0600);
  Result r = copy("f");
  ASSERT_EQ(r.outcome, Outcome::Copied) << r.err << " " << r.detail;
  expect_same_metadata("f");
  EXPECT_TRUE(pcopy_test::read_at(dst_, "f") == data);
  EXPECT_TRUE(temps_in(dst_).empty());
}

TEST_P(CopierTest, InplaceNeverWritesThroughAPlantedSymlink) {
  opt.inplace = true;
  pcopy_test::write_file(tmp / "victim", "precious", 0644);
  pcopy_test::write_at(src_, "f", "copied data", 0644);
  ASSERT_EQ(::symlinkat((tmp / "victim").c_str(), dst_, "f"), 0);
  Result r = copy("f");
  ASSERT_EQ(r.outcome, Outcome::Copied) << r.err << " " << r.detail;
  EXPECT_TRUE(S_ISREG(lstat_at(dst_, "f").st_mode));
  EXPECT_EQ(pcopy_test::read_at(dst_, "f"), "copied data");
  EXPECT_EQ(pcopy_test::read_file(tmp / "victim"), "precious");
}

TEST_P(CopierTest, InAStagedDirectoryFinalNamesAreWrittenDirectlyOverWhatADeadWorkerLeft) {
  if (!GetParam()) GTEST_SKIP() << "staging is a fact the parent tells an entered copier";
  const std::string data = pcopy_test::random_bytes(70'000, 9);
  pcopy_test::write_at(src_, "f", data, 0640);
  ASSERT_EQ(::symlinkat("some/target", src_, "l"), 0);
  pcopy_test::write_at(src_, "gone", "x");
  // Half-written leftovers of a worker that died on these very jobs.
  pcopy_test::write_at(dst_, "f", std::string(200'000, 'o'), 0600);
  pcopy_test::write_at(dst_, "l", "not a link yet");
  Copier copier(opt);
  copier.enter(dst_, DirFacts{true, local_fs(dst_), false, true});
  Copier::ProgressFn report = [](uint64_t, uint64_t) {};
  for (const char* name : {"f", "l"}) {
    Result r = copier.copy(src_, dst_, dst_, job_for(name), report);
    EXPECT_EQ(r.outcome, Outcome::Copied) << name << ": " << r.err << " " << r.detail;
  }
  expect_same_metadata("f");
  EXPECT_TRUE(S_ISLNK(lstat_at(dst_, "l").st_mode));
  EXPECT_EQ(pcopy_test::ns_of(lstat_at(dst_, "l").st_mtim), pcopy_test::ns_of(lstat_at(src_, "l").st_mtim));
  EXPECT_TRUE(pcopy_test::read_at(dst_, "f") == data);
  char target[64] = {};
  EXPECT_EQ(::readlinkat(dst_, "l", target, sizeof target - 1), 11);
  EXPECT_STREQ(target, "some/target");
  // A copy that fails leaves nothing under its name for the directory to reveal.
  Job gone = job_for("gone");
  ASSERT_EQ(::unlinkat(src_, "gone", 0), 0);
  EXPECT_EQ(copier.copy(src_, dst_, dst_, gone, report).outcome, Outcome::Failed);
  EXPECT_EQ(pcopy_test::list_at(dst_), (std::set<std::string>{"f", "l"}));
}

TEST_P(CopierTest, InAStagedDirectoryABigFileIsStillSplitIntoANamedTemporary) {
  if (!GetParam()) GTEST_SKIP() << "staging is a fact the parent tells an entered copier";
  opt.jobs = 2;
  int fd = ::openat(src_, "big", O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::posix_fallocate(fd, 0, off_t(kChunkThreshold)), 0);
  ::close(fd);
  Job j = job_for("big");
  j.known = false;
  Copier copier(opt);
  // On a network file system: where chunks pay off, other workers must be able to open what this
  // one starts.
  DirFacts facts{true, false, false, true};
  facts.remote = true;
  copier.enter(dst_, facts);
  Copier::ProgressFn report = [](uint64_t, uint64_t) {};
  Result r = copier.copy(src_, dst_, dst_, j, report);
  ASSERT_EQ(r.outcome, Outcome::Split) << r.err << " " << r.detail;
  EXPECT_NE(r.temp, "big");
  EXPECT_EQ(pcopy_test::list_at(dst_), (std::set<std::string>{r.temp})) << "nothing under the final name yet";
}

TEST_P(CopierTest, SingleFileCopyWritesUnderTheDestinationName) {
  pcopy_test::write_at(src_, "orig", "payload");
  Job j = job_for("orig");
  j.dst_name = "renamed";
  Result r = copy(j);
  ASSERT_EQ(r.outcome, Outcome::Copied) << r.err << " " << r.detail;
  EXPECT_EQ(pcopy_test::list_at(dst_), (std::set<std::string>{"renamed"}));
  EXPECT_EQ(pcopy_test::read_at(dst_, "renamed"), "payload");
}

// ---- what to skip -----------------------------------------------------------------------------

TEST_P(CopierTest, UpdateSkipsSameSizeAndMtimeAndReplacesOtherwise) {
  opt.update = true;
  pcopy_test::write_at(src_, "f", "same!");
  set_times_at(src_, "f", {1'000, 0}, {2'000, 777});
  pcopy_test::write_at(dst_, "f", "SAME!");  // same size, different bytes: the quick check trusts it
  set_times_at(dst_, "f", {1'000, 0}, {2'000, 777});
  Result r = copy("f");
  EXPECT_EQ(r.outcome, Outcome::Skipped);
  EXPECT_EQ(pcopy_test::read_at(dst_, "f"), "SAME!");

  set_times_at(dst_, "f", {1'000, 0}, {2'000, 778});  // one nanosecond off
  r = copy("f");
  EXPECT_EQ(r.outcome, Outcome::Replaced) << r.err << " " << r.detail;
  EXPECT_EQ(pcopy_test::read_at(dst_, "f"), "same!");
}

TEST_P(CopierTest, ChecksumComparesContentsNotTimes) {
  opt.update = true;
  opt.checksum = true;
  pcopy_test::write_at(src_, "f", "content");
  pcopy_test::write_at(dst_, "f", "content");
  set_times_at(dst_, "f", {5, 0}, {5, 0});
  EXPECT_EQ(copy("f").outcome, Outcome::Skipped);
  pcopy_test::write_at(dst_, "f", "CONTENT");
  Result r = copy("f");
  EXPECT_EQ(r.outcome, Outcome::Replaced);
  EXPECT_EQ(pcopy_test::read_at(dst_, "f"), "content");
}

TEST_P(CopierTest, IgnoreExistingNeverReplaces) {
  opt.ignore_existing = true;
  pcopy_test::write_at(src_, "f", "new");
  pcopy_test::write_at(dst_, "f", "old");
  EXPECT_EQ(copy("f").outcome, Outcome::Skipped);
  EXPECT_EQ(pcopy_test::read_at(dst_, "f"), "old");
  pcopy_test::write_at(src_, "g", "fresh");
  EXPECT_EQ(copy("g").outcome, Outcome::Copied);
  EXPECT_EQ(pcopy_test::read_at(dst_, "g"), "fresh");
}

TEST_P(CopierTest, DryRunWritesNothingAndSaysCopyOrReplace) {
  opt.dry_run = true;
  pcopy_test::write_at(src_, "new", "12345");
  pcopy_test::write_at(src_, "old", "abc");
  pcopy_test::write_at(dst_, "old", "xyz");
  Result r = copy("new");
  EXPECT_EQ(r.outcome, Outcome::Copied);
  EXPECT_EQ(r.bytes, 5u);
  r = copy("old");
  EXPECT_EQ(r.outcome, Outcome::Replaced);
  EXPECT_EQ(pcopy_test::list_at(dst_), (std::set<std::string>{"old"}));
  EXPECT_EQ(pcopy_test::read_at(dst_, "old"), "xyz");
}

// ---- temporaries -------------------------------------------------------------------------------

TEST(TempName, RecognisesOnlyPcopyTemporaries) {
  EXPECT_TRUE(is_temp_name(".pcopy-123-4.tmp"));
  EXPECT_TRUE(is_temp_name(".pcopy-123-d4.tmp"));
  // A user's names of that look are theirs: only exactly what pcopy makes is a leftover.
  for (const char* theirs : {".pcopy-x.tmp", ".pcopy-notes.tmp", ".pcopy-123.tmp", ".pcopy-1x-2.tmp",
                             ".pcopy-99999-abc.tmp", ".pcopy-99999-1-1.tmp", ".pcopy-99999-d.tmp", ".pcopy--1.tmp"})
    EXPECT_FALSE(is_temp_name(theirs)) << theirs;
  EXPECT_FALSE(is_temp_name(".pcopy-.tmp"));
  EXPECT_FALSE(is_temp_name(".pcopy-123-4"));
  EXPECT_FALSE(is_temp_name("pcopy-123-4.tmp"));
  EXPECT_FALSE(is_temp_name("file.tmp"));
  EXPECT_FALSE(is_temp_name(""));
}

// In a child in a mount namespace of its own, once `enter` has made it ready there: whether a
// temporary of this process's is in use (1) and one of a process gone (2), or 100 where `enter`
// failed; -1 where the processes could not be had.
int temp_in_use_in_a_namespace(const std::function<bool()>& enter) {
  pid_t gone = ::fork();
  if (gone == 0) ::_exit(0);
  if (gone < 0 || ::waitpid(gone, nullptr, 0) != gone) return -1;
  const std::string live_name = ".pcopy-" + std::to_string(::getpid()) + "-1000000001.tmp";
  const std::string gone_name = ".pcopy-" + std::to_string(gone) + "-1000000001.tmp";
  pid_t child = ::fork();
  if (child == 0) {
    if (::unshare(CLONE_NEWNS) != 0 || ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0 || !enter())
      ::_exit(100);
    int dir = ::open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    ::_exit((temp_in_use(dir, live_name) ? 1 : 0) | (temp_in_use(dir, gone_name) ? 2 : 0));
  }
  int status = 0;
  if (child < 0 || ::waitpid(child, &status, 0) != child || !WIFEXITED(status)) return -1;
  return WEXITSTATUS(status);
}

// Without /proc (a chroot, a container that unmounted it) a temporary whose maker's pid exists is
// in use: a second run into DST took a live run's temporaries for leftovers and removed them, the
// first run's files failing ("No such file or directory"), as ENOENT from /proc/PID/stat was read
// as "no such process".
TEST(TempName, WithoutProcATemporaryOfAProcessThatExistsIsInUse) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (a mount namespace without /proc)";
  int in_use = temp_in_use_in_a_namespace(
      [] { return ::umount2("/proc", MNT_DETACH) == 0 && ::access("/proc/self/stat", F_OK) != 0; });
  if (in_use == 100) GTEST_SKIP() << "cannot unmount /proc in a mount namespace here";
  EXPECT_EQ(in_use, 1) << "1: the live maker's is in use, the gone one's is not";
}

// With /proc mounted hidepid=2, another user's process has no /proc/PID: its temporaries are in use
// all the same. A second run as another user removed a live run's temporary, whose file then failed
// ("No such file or directory"; I22).
TEST(TempName, UnderHidepidATemporaryOfAnotherUsersProcessIsInUse) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (a mount namespace with its own /proc, then another user)";
  const std::string live_stat = "/proc/" + std::to_string(::getpid()) + "/stat";
  int in_use = temp_in_use_in_a_namespace([&] {
    return ::mount("proc", "/proc", "proc", 0, "hidepid=2") == 0 && ::setgroups(0, nullptr) == 0 &&
           ::setgid(65534) == 0 && ::setuid(65534) == 0 && ::access(live_stat.c_str(), F_OK) != 0;
  });
  if (in_use == 100) GTEST_SKIP() << "cannot mount /proc with hidepid=2 in a mount namespace here";
  EXPECT_EQ(in_use, 1) << "1: the live maker's is in use, the gone one's is not";
}

TEST(TempName, StagedDirectoriesHaveTheirOwnNarrowerPattern) {
  EXPECT_TRUE(is_staged_name(".pcopy-123-d4.tmp"));
  EXPECT_TRUE(is_staged_name(".pcopy-1-d0.tmp"));
  EXPECT_FALSE(is_staged_name(".pcopy-123-4.tmp"));  // a file's temporary
  EXPECT_FALSE(is_staged_name(".pcopy-x.tmp"));      // someone's directory that merely looks like ours
  EXPECT_FALSE(is_staged_name(".pcopy-123-d.tmp"));
  EXPECT_FALSE(is_staged_name(".pcopy--d4.tmp"));
  EXPECT_FALSE(is_staged_name(".pcopy-12a-d4.tmp"));
  EXPECT_FALSE(is_staged_name(".pcopy-123-d4"));
}

// What temp_name() makes, parse_temp_name() reads back: a later run tells leftovers by these parts.
TEST(TempName, NamesMadeAreReadBackAsTheRunsOwn) {
  for (bool staged : {false, true})
    for (bool secret : {false, true}) {
      std::string name = temp_name(4321, staged, secret, 7);
      SCOPED_TRACE(name);
      EXPECT_TRUE(name.starts_with(temp_prefix(4321)));
      auto parts = parse_temp_name(name);
      ASSERT_TRUE(parts);
      EXPECT_EQ(parts->pid, 4321u);
      EXPECT_EQ(parts->staged, staged);
      EXPECT_EQ(is_staged_name(name), staged);
      EXPECT_TRUE(made_by_this_run(name));
      if (!secret) {
        EXPECT_EQ(parts->number % 1'000'000'000, 7u);
      }
    }
  EXPECT_NE(temp_name(4321, false, true, 7), temp_name(4321, false, true, 7)) << "a secret name is drawn anew";
  EXPECT_FALSE(made_by_this_run(".pcopy-4321-7.tmp")) << "run 0: names from before runs were numbered";
  EXPECT_EQ(parse_temp_name(".pcopy-1-99999999999999999999999.tmp")->number, UINT64_MAX);
}

TEST(RemoveTemps, RemovesFileTemporariesAndStagedDirectoriesButNotLookalikeDirectories) {
  TempDir tmp;
  std::string d = tmp.path();
  pcopy_test::write_file(d + "/.pcopy-9-1.tmp", "half a file");
  ASSERT_EQ(::mkdir((d + "/.pcopy-9-d1.tmp").c_str(), 0700), 0);
  ASSERT_EQ(::mkdir((d + "/.pcopy-9-d1.tmp/sub").c_str(), 0700), 0);
  pcopy_test::write_file(d + "/.pcopy-9-d1.tmp/sub/f", "inside a staged directory");
  ASSERT_EQ(::mkdir((d + "/.pcopy-mine.tmp").c_str(), 0700), 0);
  pcopy_test::write_file(d + "/kept", "a user's file");
  int fd = pcopy_test::open_dir(d);
  remove_temps(fd, [](std::string_view) { return true; });
  ::close(fd);
  EXPECT_EQ(pcopy_test::list_dir(d), (std::set<std::string>{".pcopy-mine.tmp", "kept"}));
}

// A FIFO or device pcopy made is given its mode by name: whoever can write in DST may have put a
// link there meanwhile, and its target must keep its mode.
TEST(ChmodNofollow, SetsTheModeOfWhatIsThereButNeverFollowsALink) {
  TempDir tmp;
  std::string d = tmp.path();
  ASSERT_EQ(::mkfifo((d + "/fifo").c_str(), 0600), 0);
  pcopy_test::write_file(d + "/victim", "someone's file");
  ASSERT_EQ(::chmod((d + "/victim").c_str(), 0600), 0);
  ASSERT_EQ(::symlink((d + "/victim").c_str(), (d + "/planted").c_str()), 0);
  int fd = pcopy_test::open_dir(d);
  EXPECT_EQ(chmod_nofollow(fd, "fifo", 0644), 0);
  EXPECT_EQ(chmod_nofollow(fd, "planted", 0666), -1);
  ::close(fd);
  struct stat st {};
  ASSERT_EQ(::stat((d + "/fifo").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0644u);
  ASSERT_EQ(::stat((d + "/victim").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u) << "the link was followed";
}

// ---- open_dir_beneath ---------------------------------------------------------------------

namespace {

struct stat fstat_of(int fd) {
  struct stat st {};
  EXPECT_EQ(::fstat(fd, &st), 0);
  return st;
}

bool same_file(int a, int b) {
  struct stat x = fstat_of(a), y = fstat_of(b);
  return x.st_dev == y.st_dev && x.st_ino == y.st_ino;
}

class OpenDirBeneath : public ::testing::Test {
 protected:
  void SetUp() override { root_ = pcopy_test::open_dir(tmp.path()); }
  void TearDown() override { ::close(root_); }
  TempDir tmp;
  int root_ = -1;
};

}  // namespace

TEST_F(OpenDirBeneath, EmptyPathDuplicatesTheRoot) {
  int fd = open_dir_beneath(root_, "", false);
  ASSERT_GE(fd, 0);
  EXPECT_NE(fd, root_);
  EXPECT_TRUE(same_file(fd, root_));
  EXPECT_NE(::fcntl(fd, F_GETFD) & FD_CLOEXEC, 0);
  ::close(fd);
}

TEST_F(OpenDirBeneath, OpensANestedDirectory) {
  ASSERT_EQ(::mkdir((tmp / "a").c_str(), 0755), 0);
  ASSERT_EQ(::mkdir((tmp / "a/b").c_str(), 0755), 0);
  int fd = open_dir_beneath(root_, "a/b", false);
  ASSERT_GE(fd, 0);
  int want = pcopy_test::open_dir(tmp / "a/b");
  EXPECT_TRUE(same_file(fd, want));
  ::close(want);
  ::close(fd);
}

TEST_F(OpenDirBeneath, PathLongerThanPathMaxIsOpened) {
  const std::string comp(200, 'p');
  std::string rel;
  int fd = ::fcntl(root_, F_DUPFD_CLOEXEC, 0);
  for (int i = 0; i < 30; ++i) {
    std::string name = comp;
    name[0] = char('A' + i % 26);
    ASSERT_EQ(::mkdirat(fd, name.c_str(), 0755), 0);
    int next = ::openat(fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    ASSERT_GE(next, 0);
    ::close(fd);
    fd = next;
    rel += (rel.empty() ? "" : "/") + name;
  }
  ASSERT_GT(rel.size(), size_t(PATH_MAX));
  int got = open_dir_beneath(root_, rel, false);
  ASSERT_GE(got, 0) << std::strerror(-got);
  EXPECT_TRUE(same_file(got, fd));
  ::close(got);

  // A symbolic link in the part past the first PATH_MAX bytes is refused too.
  ASSERT_EQ(::mkdirat(fd, "real", 0755), 0);
  ASSERT_EQ(::symlinkat("real", fd, "sym"), 0);
  got = open_dir_beneath(root_, rel + "/real", false);
  EXPECT_GE(got, 0);
  if (got >= 0) ::close(got);
  got = open_dir_beneath(root_, rel + "/sym", false);
  EXPECT_LT(got, 0);
  if (got >= 0) ::close(got);
  ::close(fd);
}

TEST_F(OpenDirBeneath, RefusesToFollowASymlinkComponent) {
  ASSERT_EQ(::mkdir((tmp / "real").c_str(), 0755), 0);
  ASSERT_EQ(::mkdir((tmp / "real/inner").c_str(), 0755), 0);
  ASSERT_EQ(::symlink("real", (tmp / "link").c_str()), 0);
  int fd = open_dir_beneath(root_, "link/inner", false);
  EXPECT_LT(fd, 0);
  EXPECT_TRUE(fd == -ELOOP || fd == -ENOTDIR || fd == -EXDEV) << fd;
  if (fd >= 0) ::close(fd);
  fd = open_dir_beneath(root_, "link", false);
  EXPECT_LT(fd, 0);
  EXPECT_TRUE(fd == -ELOOP || fd == -ENOTDIR || fd == -EXDEV) << fd;
  if (fd >= 0) ::close(fd);
}

TEST_F(OpenDirBeneath, FollowsSymlinksWhenAsked) {
  ASSERT_EQ(::mkdir((tmp / "real").c_str(), 0755), 0);
  ASSERT_EQ(::mkdir((tmp / "real/inner").c_str(), 0755), 0);
  ASSERT_EQ(::symlink("real", (tmp / "link").c_str()), 0);
  int fd = open_dir_beneath(root_, "link/inner", true);
  ASSERT_GE(fd, 0) << std::strerror(-fd);
  int want = pcopy_test::open_dir(tmp / "real/inner");
  EXPECT_TRUE(same_file(fd, want));
  ::close(want);
  ::close(fd);
}

TEST_F(OpenDirBeneath, MissingOrNonDirectoryComponentIsANegativeErrno) {
  pcopy_test::write_file(tmp / "file", "x");
  EXPECT_EQ(open_dir_beneath(root_, "nope", false), -ENOENT);
  EXPECT_EQ(open_dir_beneath(root_, "nope/deeper", false), -ENOENT);
  EXPECT_EQ(open_dir_beneath(root_, "file", false), -ENOTDIR);
  EXPECT_EQ(open_dir_beneath(root_, "file/x", false), -ENOTDIR);
}

TEST_F(OpenDirBeneath, RefusesPathsThatLeaveTheRoot) {
  // "beneath": neither ".." nor an absolute path may take the open outside `root`.
  ASSERT_EQ(::mkdir((tmp / "inner").c_str(), 0755), 0);
  int inner = pcopy_test::open_dir(tmp / "inner");
  for (const char* rel : {"..", "../inner", "/", "/tmp"}) {
    int fd = open_dir_beneath(inner, rel, false);
    EXPECT_LT(fd, 0) << "'" << rel << "' opened a directory outside the root";
    if (fd >= 0) ::close(fd);
  }
  ::close(inner);
}

TEST_P(CopierTest, BigFileOfUnknownSizeIsHandedBackForChunksOnlyWhereChunksPayOff) {
  opt.jobs = 2;
  int fd = ::openat(src_, "big", O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::posix_fallocate(fd, 0, off_t(kChunkThreshold)), 0);  // allocated, so not sparse
  ::close(fd);
  Job j = job_for("big");
  j.known = false;  // the parent did not stat it
  Result r = copy(j);
  if (GetParam() && local_fs(dst_)) {
    // Told the destination, and it is local: two workers on one file would only take turns.
    EXPECT_EQ(r.outcome, Outcome::Copied) << r.err << " " << r.detail;
    EXPECT_EQ(lstat_at(dst_, "big").st_size, off_t(kChunkThreshold));
  } else {
    ASSERT_EQ(r.outcome, Outcome::Split) << r.err << " " << r.detail;
    EXPECT_EQ(r.size, kChunkThreshold);
    EXPECT_EQ(temps_in(dst_), (std::set<std::string>{r.temp})) << "the temporary the chunks will fill";
  }
}

INSTANTIATE_TEST_SUITE_P(Destinations, CopierTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& p) { return p.param ? "Entered" : "NotEntered"; });

// ---- batches of files ---------------------------------------------------------------------

class CopierBatchTest : public CopierTest {
 protected:
  // Copies `jobs` as one batch, as a worker does; fails the test if batching is unavailable.
  std::vector<Result> copy_batch(const std::vector<Job>& jobs) {
    Copier copier(opt);
    copier.enter(dst_);
    std::vector<Result> results;
    if (copier.batch_limit() == 0) {
      ADD_FAILURE() << "no io_uring batches on this kernel";
      return results;
    }
    for (const Job& j : jobs) EXPECT_TRUE(copier.batchable(j)) << j.name;
    Copier::ProgressFn report = [this](uint64_t, uint64_t n) { reported += n; };
    copier.copy_batch(src_, dst_, jobs, report, results);
    return results;
  }
};

TEST_F(CopierBatchTest, CopiesEveryFileWithMetadataAndAnswersInOrder) {
  std::vector<Job> jobs;
  for (int i = 0; i < 40; ++i) {
    std::string name = "f" + std::to_string(i);
    pcopy_test::write_at(src_, name, pcopy_test::random_bytes(size_t(i) * 1000, unsigned(i)), 0600 | (i % 2 ? 044 : 0));
    set_times_at(src_, name, {1'500'000'000, i}, {1'600'000'000, 1000 + i});
    jobs.push_back(job_for(name, uint64_t(100 + i)));
  }
  std::vector<Result> results = copy_batch(jobs);
  ASSERT_EQ(results.size(), jobs.size());
  for (size_t i = 0; i < jobs.size(); ++i) {
    EXPECT_EQ(results[i].id, 100 + i);
    EXPECT_EQ(results[i].outcome, Outcome::Copied) << jobs[i].name << ": " << std::strerror(results[i].err);
    EXPECT_EQ(results[i].bytes, i * 1000);
    EXPECT_EQ(results[i].mtime_ns, ns(1'600'000'000, 1000 + long(i)));
    expect_same_metadata(jobs[i].name);
    EXPECT_TRUE(pcopy_test::read_at(dst_, jobs[i].name) == pcopy_test::read_at(src_, jobs[i].name)) << jobs[i].name;
  }
  EXPECT_TRUE(temps_in(dst_).empty());
}

TEST_F(CopierBatchTest, FilesThatVanishedOrChangedTypeFailAloneAndTheRestIsCopied) {
  pcopy_test::write_at(src_, "a", "first");
  pcopy_test::write_at(src_, "gone", "about to vanish");
  pcopy_test::write_at(src_, "now-a-fifo", "about to become a FIFO");
  pcopy_test::write_at(src_, "b", "last");
  std::vector<Job> jobs = {job_for("a", 1), job_for("gone", 2), job_for("now-a-fifo", 3), job_for("b", 4)};
  ASSERT_EQ(::unlinkat(src_, "gone", 0), 0);
  ASSERT_EQ(::unlinkat(src_, "now-a-fifo", 0), 0);
  ASSERT_EQ(::mkfifoat(src_, "now-a-fifo", 0644), 0);

  std::vector<Result> results = copy_batch(jobs);
  ASSERT_EQ(results.size(), 4u);
  EXPECT_EQ(results[0].outcome, Outcome::Copied);
  EXPECT_EQ(results[1].outcome, Outcome::Failed);
  EXPECT_EQ(results[1].err, ENOENT);
  EXPECT_EQ(results[2].outcome, Outcome::Failed) << "a FIFO is never opened for reading as a file";
  EXPECT_EQ(results[3].outcome, Outcome::Copied);
  EXPECT_EQ(pcopy_test::read_at(dst_, "a"), "first");
  EXPECT_EQ(pcopy_test::read_at(dst_, "b"), "last");
  EXPECT_EQ(pcopy_test::list_at(dst_), (std::set<std::string>{"a", "b"}));
}

TEST_F(CopierBatchTest, ReplacesExistingFilesAndLeavesNoDescriptorOpen) {
  pcopy_test::write_at(src_, "x", "new contents");
  pcopy_test::write_at(dst_, "x", "old contents, longer than the new");
  pcopy_test::write_at(src_, "y", "");
  auto open_fds = [] {
    int fd = pcopy_test::open_dir("/proc/self/fd");
    size_t n = pcopy_test::list_at(fd).size();
    ::close(fd);
    return n;
  };
  size_t fds_before = open_fds();
  std::vector<Result> results = copy_batch({job_for("x", 1), job_for("y", 2)});
  ASSERT_EQ(results.size(), 2u);
  EXPECT_EQ(results[0].outcome, Outcome::Copied);
  EXPECT_EQ(pcopy_test::read_at(dst_, "x"), "new contents");
  EXPECT_EQ(pcopy_test::read_at(dst_, "y"), "");
  EXPECT_EQ(open_fds(), fds_before);
}

TEST_F(CopierBatchTest, FailureThatEndsTheBatchHandsBackTheRestUntried) {
  opt.fail_fast = true;  // the same rule as a full disk: the first failure ends the batch
  pcopy_test::write_at(src_, "ok", "fine");
  pcopy_test::write_at(src_, "unreadable", "no", 0000);
  pcopy_test::write_at(src_, "later", "never tried");
  std::vector<Job> jobs = {job_for("ok", 1), job_for("unreadable", 2), job_for("later", 3)};
  if (::geteuid() == 0) {  // root reads anything: make it fail another way (not by removing it: gone is
    ASSERT_EQ(::unlinkat(src_, "unreadable", 0), 0);  // no failure, see Vanished)
    ASSERT_EQ(::symlinkat("ok", src_, "unreadable"), 0);  // a link where the walk saw a file
  }
  std::vector<Result> results = copy_batch(jobs);
  ASSERT_EQ(results.size(), 3u);
  EXPECT_EQ(results[0].outcome, Outcome::Copied);
  EXPECT_EQ(results[1].outcome, Outcome::Failed);
  EXPECT_EQ(results[2].outcome, Outcome::Deferred);
  EXPECT_FALSE(pcopy_test::list_at(dst_).count("later"));
}

TEST_F(CopierBatchTest, DirectoriesLeftToCloseLaterAreClosedByTheNextBatch) {
  auto is_open = [](int fd) { return ::fcntl(fd, F_GETFD) != -1; };
  pcopy_test::write_at(src_, "f", "data");
  Copier copier(opt);
  copier.enter(dst_);
  // Before batching is decided, and without it, the fd is closed at once.
  int early = pcopy_test::open_dir(tmp.path());
  copier.close_later(UniqueFd(early));
  EXPECT_FALSE(is_open(early));
  ASSERT_GT(copier.batch_limit(), 0u) << "no io_uring batches on this kernel";
  std::vector<int> dirs;
  for (int i = 0; i < 3; ++i) dirs.push_back(pcopy_test::open_dir(tmp.path()));
  for (int fd : dirs) copier.close_later(UniqueFd(fd));
  for (int fd : dirs) EXPECT_TRUE(is_open(fd));
  std::vector<Result> results;
  Copier::ProgressFn report = [](uint64_t, uint64_t) {};
  copier.copy_batch(src_, dst_, std::vector<Job>{job_for("f")}, report, results);
  ASSERT_EQ(results.size(), 1u);
  EXPECT_EQ(results[0].outcome, Outcome::Copied);
  for (int fd : dirs) EXPECT_FALSE(is_open(fd));
}

TEST_F(CopierBatchTest, NoIoUringOptionTurnsBatchingOff) {
  opt.io_uring = false;
  Copier copier(opt);
  EXPECT_EQ(copier.batch_limit(), 0u);
}

namespace {

struct stat times_of(timespec atime, timespec mtime, timespec ctime) {
  struct stat st {};
  st.st_atim = atime;
  st.st_mtim = mtime;
  st.st_ctim = ctime;
  return st;
}

constexpr int64_t kSecond = 1'000'000'000;

}  // namespace

// -u's quick check against a copy on a file system with coarser times than the source's.
TEST(SameMtime, ComparesAtTheResolutionTheCopysOwnTimesShow) {
  // Nanoseconds kept (tmpfs, ext4): only the exact time is the same.
  struct stat ns = times_of({100, 123'456'789}, {200, 500'000'000}, {300, 987'654'321});
  EXPECT_TRUE(same_mtime(ns, 200 * kSecond + 500'000'000, false));
  EXPECT_FALSE(same_mtime(ns, 200 * kSecond + 500'000'001, false));
  EXPECT_FALSE(same_mtime(ns, 200 * kSecond + 999'999'999, false));
  // A source with round times, and a ctime that happens to be round to the microsecond: too likely
  // on a file system that keeps nanoseconds to be believed.
  struct stat lucky = times_of({100, 0}, {200, 0}, {300, 123'457'000});
  EXPECT_TRUE(same_mtime(lucky, 200 * kSecond, false));
  EXPECT_FALSE(same_mtime(lucky, 200 * kSecond + 1, false));
  EXPECT_FALSE(same_mtime(lucky, 200 * kSecond + 999, false));
  // Whole seconds (ext3): the source's time cut to the second, and no other.
  struct stat sec = times_of({101, 0}, {200, 0}, {301, 0});
  EXPECT_TRUE(same_mtime(sec, 200 * kSecond + 700'000'000, false));
  EXPECT_TRUE(same_mtime(sec, 200 * kSecond, false));
  EXPECT_FALSE(same_mtime(sec, 201 * kSecond, false));
  EXPECT_FALSE(same_mtime(sec, 199 * kSecond + 999'999'999, false));
  // 10 ms (exFAT).
  struct stat centi = times_of({100, 10'000'000}, {200, 120'000'000}, {300, 990'000'000});
  EXPECT_TRUE(same_mtime(centi, 200 * kSecond + 123'456'789, false));
  EXPECT_FALSE(same_mtime(centi, 200 * kSecond + 130'000'001, false));
  // 2 s (FAT): every second even.
  struct stat fat = times_of({86'400, 0}, {200, 0}, {200, 0});
  // The same times elsewhere are whole seconds that happen to be even: a second is a change.
  EXPECT_FALSE(same_mtime(fat, 201 * kSecond + 500'000'000, false));
  EXPECT_TRUE(same_mtime(fat, 200 * kSecond + 500'000'000, false));
  EXPECT_TRUE(same_mtime(fat, 201 * kSecond + 500'000'000, true));
  EXPECT_FALSE(same_mtime(fat, 202 * kSecond, true));
  // Before 1970 the cut still rounds down.
  struct stat old = times_of({-3, 0}, {-2, 0}, {-1, 0});
  EXPECT_TRUE(same_mtime(old, -2 * kSecond + 500'000'000, false));
  EXPECT_TRUE(same_mtime(old, -1 * kSecond - 500'000'000, false));
  EXPECT_FALSE(same_mtime(old, -2 * kSecond - 1, false));
}

// A time beyond the range of DST's file system is cut to its end when the copy is made: a copy at
// that end, of a source beyond it, may be the same time (same_mtime_in asks the file system).
TEST(SameMtime, TellsACopyAtTheEndOfARangeOfTimesFromASourceBeyondIt) {
  Nanos year2100 = Nanos(4'102'444'800) * kSecond + 5, year3000 = Nanos(32'503'680'000) * kSecond;
  struct stat y2038 = times_of({INT32_MAX, 0}, {INT32_MAX, 0}, {1'800'000'000, 0});  // ext4, small inodes
  EXPECT_TRUE(at_range_end(y2038, year2100));
  EXPECT_FALSE(same_mtime(y2038, year2100, false)) << "by itself, another time";
  EXPECT_FALSE(at_range_end(y2038, Nanos(INT32_MAX - 1) * kSecond)) << "within the range: a change";
  struct stat y2446 = times_of({15'032'385'535, 0}, {15'032'385'535, 0}, {1'800'000'000, 7});  // ext4
  EXPECT_TRUE(at_range_end(y2446, year3000));
  EXPECT_FALSE(at_range_end(y2446, year2100));
  struct stat y1901 = times_of({INT32_MIN, 0}, {INT32_MIN, 0}, {1'800'000'000, 0});
  EXPECT_TRUE(at_range_end(y1901, Nanos(INT32_MIN) * kSecond - 1));
  EXPECT_FALSE(at_range_end(y1901, Nanos(INT32_MIN + 1) * kSecond));
  struct stat late = times_of({INT32_MAX, 5}, {INT32_MAX, 5}, {1'800'000'000, 0});
  EXPECT_FALSE(at_range_end(late, year2100)) << "a cut time has no nanoseconds";
}
