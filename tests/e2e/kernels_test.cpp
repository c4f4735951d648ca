// Older kernels and containers: system calls pcopy prefers, made to fail by a seccomp filter as a
// kernel without them (ENOSYS) or a container profile written before them (EPERM) fails them. The
// copy must come out the same, with exit 0, by the way pcopy falls back to.

#include <errno.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "harness.hpp"
#include "pcopy/fd.hpp"

namespace pcopy::test {
namespace {

mode_t lstat_mode(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0 ? st.st_mode & 07777 : 0;
}

class OlderKernelTest : public SrcDstTest {
 protected:
  RunOptions refusing(std::vector<std::pair<long, int>> calls) {
    RunOptions options;
    options.refused_syscalls = std::move(calls);
    return options;
  }
  void make_tree() {
    make_dirs(src + "/a/b");
    for (int i = 0; i < 20; ++i) {
      write_file(src + "/f" + std::to_string(i), "top " + std::to_string(i));
      write_file(src + "/a/b/g" + std::to_string(i), random_bytes(5000 + size_t(i), unsigned(i)));
    }
    write_file(src + "/a/empty", "");
  }
};

// Docker before 19.03 refused copy_file_range with EPERM: each file failed, and --inplace left
// every file it rewrote cut to 0 bytes (I25). cp and rsync read and write instead; so does pcopy.
TEST_F(OlderKernelTest, CopyFileRangeRefusedWithEpermCopiesByReadAndWrite) {
  make_tree();
  RunResult r = copy({"-j2"}, refusing({{SYS_copy_file_range, EPERM}}));
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(diff_trees(src, dst), "");

  // Over an earlier copy, in place: nothing may be left cut short.
  for (int i = 0; i < 20; ++i) write_file(src + "/f" + std::to_string(i), "new, longer " + std::to_string(i));
  r = copy({"-j2", "--inplace"}, refusing({{SYS_copy_file_range, EPERM}}));
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(diff_trees(src, dst), "");
}

// Profiles before Linux 5.6 answer openat2 with EPERM, not ENOSYS: every file below DST's top
// directory failed, one line each (I25). Directories are then opened one component at a time.
TEST_F(OlderKernelTest, Openat2RefusedWithEpermOpensDirectoriesOneComponentAtATime) {
  make_tree();
  for (int err : {EPERM, ENOSYS}) {
    SCOPED_TRACE(err);
    std::string to = tmp / ("dst" + std::to_string(err));
    RunResult r = run_pcopy({"-j2", src, to}, refusing({{SYS_openat2, err}}));
    EXPECT_EQ(r.status, 0) << describe(r);
    EXPECT_EQ(diff_trees(src, to), "");
    // A symbolic link planted in DST is still not followed.
    std::string outside = tmp / ("outside" + std::to_string(err));
    make_dir(outside);
    ASSERT_EQ(::rename((to + "/a/b").c_str(), (to + "/b-moved").c_str()), 0);
    make_symlink(outside, to + "/a/b");
    r = run_pcopy({"-j2", src, to}, refusing({{SYS_openat2, err}}));
    EXPECT_EQ(list_tree(outside), std::vector<std::string>{}) << describe(r);
  }
}

// Where lseek cannot find data and holes (a sandbox, a file system without SEEK_DATA: EINVAL),
// a sparse file failed (I25). It is read whole instead, as cp does.
TEST_F(OlderKernelTest, SeekDataRefusedCopiesASparseFileWhole) {
  std::string sparse = src + "/sparse";
  write_file(sparse, "head");
  ASSERT_EQ(::truncate(sparse.c_str(), 4 << 20), 0);
  std::string hole_first = src + "/hole-first";  // a worker spun on it where SEEK_HOLE still worked
  write_file(hole_first, "");
  ASSERT_EQ(::truncate(hole_first.c_str(), 1 << 20), 0);
  {
    UniqueFd fd(::open(hole_first.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC));
    ASSERT_EQ(::write(fd.get(), "tail", 4), 4);
  }
  write_file(src + "/plain", "plain");
  for (std::string how : {"", "--verify"}) {  // --verify hashes the copy: each file failed
    SCOPED_TRACE(how);
    std::string to = tmp / ("dst" + how);
    std::vector<std::string> args{"-j2", src, to};
    if (!how.empty()) args.insert(args.begin(), how);
    RunOptions options = refusing({{SYS_lseek, EINVAL}});
    options.timeout_s = 60;
    RunResult r = run_pcopy(args, options);
    EXPECT_EQ(r.status, 0) << describe(r);
    EXPECT_EQ(diff_trees(src, to), "");
  }
}

// Before fchmodat2 (Linux 6.6), a mode is changed without following links through /proc, which a
// chroot may lack; a profile that predates the call refuses it with EPERM. A FIFO's mode was then
// not kept with -a (it stayed 0600), and without -a, where it had its mode already, the run said
// it could not keep it (I25). cp -a and rsync -a keep it.
TEST_F(OlderKernelTest, FifoModesAreKeptWithoutFchmodat2) {
  constexpr long kFchmodat2 = 452;
  ASSERT_EQ(::mkfifo((src + "/fifo").c_str(), 0644), 0);
  write_file(src + "/file", "x");
  RunResult r = run_pcopy({"-a", src, dst}, refusing({{kFchmodat2, EPERM}}));
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(diff_trees(src, dst), "");

  if (::geteuid() != 0) GTEST_SKIP() << "needs root to hide /proc in a mount namespace";
#ifdef __SANITIZE_ADDRESS__
  GTEST_SKIP() << "the sanitizers' exit check needs /proc, whatever detect_leaks says";
#endif
  for (std::string how : {"", "-a"}) {
    std::string to = tmp / ("noproc" + how);
    std::string script = "mount -t tmpfs none /proc && exec " + shell_quote(pcopy_bin()) + " " + how + " " +
                         shell_quote(src) + " " + shell_quote(to);
    RunResult hidden = run({"unshare", "--mount", "sh", "-c", script}, refusing({{kFchmodat2, ENOSYS}}));
    SCOPED_TRACE(how);
    EXPECT_EQ(hidden.status, 0) << describe(hidden);
    EXPECT_EQ(lstat_mode(to + "/fifo"), 0644u);
  }
}

// A new leaf directory is made under a temporary name and renamed into place without replacing
// anything (RENAME_NOREPLACE). Where renameat2 is refused (a profile that predates it: EPERM, or
// EINVAL as for a flag not known), each stayed in DST under its temporary name (I25).
TEST_F(OlderKernelTest, StagedDirectoriesAreRevealedWithoutRenameat2) {
  make_tree();
  make_dirs(src + "/new/leaf");
  write_file(src + "/new/leaf/f", "staged");
  for (int err : {EPERM, EINVAL, ENOSYS}) {
    SCOPED_TRACE(err);
    std::string to = tmp / ("dst" + std::to_string(err));
    RunResult r = run_pcopy({"-j2", src, to}, refusing({{SYS_renameat2, err}}));
    EXPECT_EQ(r.status, 0) << describe(r);
    EXPECT_EQ(diff_trees(src, to), "");  // no .pcopy-*.tmp left either
  }
}

// Without close_range (before 5.9), each worker kept the job pipes of the workers forked before
// it, so the first never saw the end of its jobs: the run waited out the 5 s it gives workers to
// exit, then killed them (I25). The run takes milliseconds; 4 s is the bound of a hung one.
TEST_F(OlderKernelTest, WithoutCloseRangeWorkersStillSeeTheEndOfTheirJobs) {
  make_tree();
  RunOptions options = refusing({{SYS_close_range, ENOSYS}});
  options.timeout_s = 4;
  options.leaked_fds = 3;  // inherited descriptors a worker must not hold either
  RunResult r = copy({"-j4"}, options);
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(diff_trees(src, dst), "");
}

}  // namespace
}  // namespace pcopy::test
