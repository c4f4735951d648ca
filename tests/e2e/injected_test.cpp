// System calls made to fail with strace's fault injection (`strace -e inject=CALL:error=ERRNO`): what
// an I/O error, a broken io_uring or a process out of descriptors at one call does to a run. Without
// -f strace traces the parent alone, its workers untouched; with -f every process, each counting
// its own calls for `when=N`. A call's number in the parent is found by tracing a clean run first,
// so the tests do not depend on how many calls come before it.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "harness.hpp"
#include "pcopy/ring.hpp"

namespace pcopy::test {
namespace {

class Injected : public ::testing::Test {
 protected:
  void SetUp() override {
    RunResult probe = run({"strace", "-qq", "-o", "/dev/null", "-e", "trace=none", "true"});
    if (probe.status != 0) GTEST_SKIP() << "strace cannot trace here (absent, or ptrace refused): " << describe(probe);
  }

  // `options` for a run under strace: in a build with AddressSanitizer, its leak check, which
  // cannot work under ptrace and ends the process with status 134 at exit, is turned off (the
  // same runs without strace are checked in every other test).
  static RunOptions traced(RunOptions options) {
    const char* asan = std::getenv("ASAN_OPTIONS");
    options.env.push_back(fmt::format("ASAN_OPTIONS={}{}detect_leaks=0", asan ? asan : "", asan && *asan ? ":" : ""));
    return options;
  }

  // strace [-f] -qq -o /dev/null -e inject=SPEC pcopy ARGS...
  RunResult injected(const std::string& spec, const std::vector<std::string>& args, bool follow = false,
                     const RunOptions& options = {}) {
    std::vector<std::string> argv{"strace", "-qq", "-o", "/dev/null", "-e", "inject=" + spec};
    if (follow) argv.insert(argv.begin() + 1, "-f");
    argv.push_back(pcopy_bin());
    argv.insert(argv.end(), args.begin(), args.end());
    return run(argv, traced(options));
  }

  // The numbers (from 1), among the parent's calls of `call` in a clean run of `args`, of those
  // whose line (with -y: descriptors followed by their paths) `wanted` picks.
  std::vector<int> call_numbers(const std::string& call, const std::vector<std::string>& args,
                                const std::function<bool(const std::string&)>& wanted, const RunOptions& options = {}) {
    std::string trace = tmp / "trace";
    std::vector<std::string> argv{"strace", "-qq", "-y", "-o", trace, "-e", "trace=" + call, pcopy_bin()};
    argv.insert(argv.end(), args.begin(), args.end());
    RunResult r = run(argv, traced(options));
    EXPECT_EQ(r.status, 0) << describe(r);
    std::vector<int> numbers;
    int n = 0;
    for (const std::string& line : lines_of(read_file(trace))) {
      if (!line.starts_with(call + "(")) continue;
      ++n;
      if (wanted(line)) numbers.push_back(n);
    }
    return numbers;
  }

  // SRC with two directories, a/x and b/y.
  void two_directories() {
    make_dirs(src + "/a");
    make_dirs(src + "/b");
    write_file(src + "/a/x", "x\n");
    write_file(src + "/b/y", "y\n");
  }

  // For call_numbers("openat", ...): the walk's opens of SRC's directory `name`.
  std::function<bool(const std::string&)> walk_opens(const std::string& name) const {
    return [src = src, name](const std::string& line) {
      return line.find("<" + src + ">, \"" + name + "\"") != std::string::npos &&
             line.find("O_DIRECTORY") != std::string::npos;
    };
  }

  // A run of `args` whose walk's open of SRC's directory `name` fails with `err`: the call's number
  // is found by a clean run first, after which `between` puts DST back as the test wants it.
  RunResult fail_walk_open(const std::string& name, const std::string& err, const std::vector<std::string>& args,
                           const std::function<void()>& between) {
    std::vector<int> n = call_numbers("openat", args, walk_opens(name));
    EXPECT_EQ(n.size(), 1u) << read_file(tmp / "trace");
    between();
    return injected(fmt::format("openat:error={}:when={}", err, n.empty() ? 0 : n[0]), args);
  }

  TempDir tmp;
  std::string src = tmp / "src";
  std::string dst = tmp / "dst";
};

// -a: an I/O error reading a source directory's extended attributes (MMM) left its copy with none:
// the walker took what it read, nothing, for SRC's, and removed DST's, silently, status 0. Now
// DST's stay as they were, and it is an error naming the directory.
TEST_F(Injected, AFailedReadOfASourceDirectorysAttributesLeavesItsCopysAlone) {
  make_dirs(src + "/d");
  write_file(src + "/d/f", "f\n");
  if (::setxattr((src + "/d").c_str(), "user.keep", "1", 1, 0) != 0) GTEST_SKIP() << "no user.* attributes here";
  RunResult r = run_pcopy({"-q", "-a", src, dst});
  ASSERT_EQ(r.status, 0) << describe(r);
  ASSERT_EQ(get_xattr(dst + "/d", "user.keep"), "1");

  r = injected("flistxattr:error=EIO", {"-a", "-u", "--json", src, dst});  // the parent's every listing
  EXPECT_EQ(r.status, 1) << describe(r);
  EXPECT_EQ(get_xattr(dst + "/d", "user.keep"), "1") << describe(r);
  EXPECT_TRUE(has_line(r.err, "pcopy: cannot keep the extended attributes of 'd': Input/output error")) << describe(r);
  auto errors = nlohmann::json::parse(r.out).at("errors");
  nlohmann::json d{{"path", "d"}, {"reason", "cannot keep the extended attributes: Input/output error"}};
  EXPECT_NE(std::find(errors.begin(), errors.end(), d), errors.end()) << r.out;
}

// A ring whose io_uring_enter fails outright (ENOMEM, EIO) is torn down and the worker goes on
// with plain system calls: it queued the closes of its batch on the ring it had torn down, and died
// of a segmentation fault (MMM), its files handed out again or failed.
TEST_F(Injected, AWorkerWhoseIoUringBreaksGoesOnWithPlainSystemCalls) {
  if (!Ring::create(8)) GTEST_SKIP() << "no io_uring here";
  make_dir(src);
  for (int i = 0; i < 200; ++i) write_file(src + fmt::format("/f{}", i), fmt::format("{}\n", i));
  RunResult r = injected("io_uring_enter:error=ENOMEM:when=1", {"-j2", "--json", src, dst}, true);
  EXPECT_EQ(r.status, 0) << describe(r);
  auto report = nlohmann::json::parse(r.out);
  EXPECT_EQ(report.at("files_copied"), 200) << r.out;
  EXPECT_EQ(report.at("warnings").size(), 0u) << r.out;
  EXPECT_EQ(diff_trees(src, dst), "");
}

// A read of a worker's results that fails (not EOF: the worker lives on, waiting for work) was
// taken for its death, and the parent waited to reap it for ever, deaf to Ctrl-C (MMM). The
// worker is killed and replaced, and what it held handed out again.
TEST_F(Injected, AFailedReadOfAWorkersResultsReplacesTheWorker) {
  make_dirs(src + "/sub");
  write_file(src + "/a", "a\n");
  write_file(src + "/sub/b", "b\n");
  std::vector<int> n = call_numbers("read", {"-j1", src, tmp / "clean"}, [](const std::string& line) {
    return line.find("<pipe:[") != std::string::npos && line.find(", 65536)") != std::string::npos;
  });
  ASSERT_FALSE(n.empty()) << read_file(tmp / "trace");
  RunOptions options;
  options.timeout_s = 60;
  std::vector<std::string> argv{"strace", "-qq", "-o", "/dev/null", "-e",
                                fmt::format("inject=read:error=EIO:when={}", n[0]), pcopy_bin(), "-j1", src, dst};
  RunResult r = run(argv, traced(options));
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_TRUE(has_line_starting(r.err, "pcopy: warning: worker ")) << describe(r);
  EXPECT_NE(r.err.find(": cannot read its results: Input/output error; replacing it"), std::string::npos)
      << describe(r);
  EXPECT_EQ(diff_trees(src, dst), "");
}

// Without a signalfd pcopy would not hear Ctrl-C or SIGTERM, which it blocks (MMM: a SIGTERM
// waited for the whole copy, whose report said 0 and not interrupted, and the status was 143). It
// refuses the run before making anything.
TEST_F(Injected, NoSignalfdRefusesTheRunBeforeAnythingIsMade) {
  make_dir(src);
  write_file(src + "/f", "f\n");
  RunResult r = injected("signalfd4:error=EMFILE", {"--json", src, dst});
  EXPECT_EQ(r.status, 2) << describe(r);
  EXPECT_TRUE(has_line(r.err, "pcopy: cannot watch for signals: Too many open files")) << describe(r);
  EXPECT_EQ(nlohmann::json::parse(r.out).at("exit_status"), 2) << r.out;
  EXPECT_FALSE(exists(dst));
}

// The walker opens SRC's and DST's top directories anew; out of descriptors there (MMM), it went on
// without them: every entry below failed "No such file or directory" (DST's) or the run failed
// "Bad file descriptor" (SRC's). The run is refused with the real reason, and the DST it made is
// removed.
TEST_F(Injected, TopDirectoriesThatCannotBeOpenedRefuseTheRunWithTheReason) {
  make_dirs(src + "/sub");
  write_file(src + "/a", "a\n");
  write_file(src + "/sub/b", "b\n");
  std::vector<std::string> args{"--no-io-uring", "-j1", src, dst};
  // Its opens of "." (kDirFlags: O_NOCTTY, which the others lack): SRC's, then DST's.
  auto walkers = [](const std::string& line) {
    return line.find(", \".\", ") != std::string::npos && line.find("O_NOCTTY") != std::string::npos;
  };
  for (int which : {0, 1}) {
    SCOPED_TRACE(which ? "DST" : "SRC");
    std::filesystem::remove_all(dst);
    std::vector<int> n = call_numbers("openat", args, walkers);
    ASSERT_EQ(n.size(), 2u) << read_file(tmp / "trace");
    std::filesystem::remove_all(dst);
    std::string spec = fmt::format("openat:error=EMFILE:when={}", n[which]);
    RunResult r = injected(spec, {"--no-io-uring", "-j1", "--json", src, dst});
    EXPECT_EQ(r.status, 2) << describe(r);
    std::string path = which ? dst : src;
    EXPECT_TRUE(has_line(r.err, "pcopy: cannot open '" + path + "': Too many open files")) << describe(r);
    EXPECT_EQ(nlohmann::json::parse(r.out).at("exit_status"), 2) << r.out;
    EXPECT_FALSE(exists(dst)) << "made by the run, and left";
  }
}

// A refused run leaves an existing --manifest as it was (OOO): it was emptied before the walker's
// opens, which the refusals above come from.
TEST_F(Injected, ARefusedRunLeavesAnExistingManifestAsItWas) {
  make_dirs(src + "/sub");
  write_file(src + "/a", "a\n");
  std::string manifest = tmp / "manifest.jsonl";
  write_file(manifest, "{\"previous\": 1}\n");
  std::vector<std::string> args{"--no-io-uring", "-j1", "--manifest", manifest, src, dst};
  std::vector<int> n = call_numbers("openat", args, [](const std::string& line) {
    return line.find(", \".\", ") != std::string::npos && line.find("O_NOCTTY") != std::string::npos;
  });
  ASSERT_FALSE(n.empty()) << read_file(tmp / "trace");
  std::filesystem::remove_all(dst);
  write_file(manifest, "{\"previous\": 1}\n");
  RunResult r = injected(fmt::format("openat:error=EMFILE:when={}", n[0]), args);
  EXPECT_EQ(r.status, 2) << describe(r);
  EXPECT_EQ(read_file(manifest), "{\"previous\": 1}\n");
}

// A directory of SRC removed while the walk lists it (getdents64 gives ENOENT for a directory
// removed once opened) is a vanished one, as its entries are: it held --delete back ("reading SRC
// failed"), status 1, on a live tree every night (OOO). Its copy is not looked into.
TEST_F(Injected, ADirectoryRemovedWhileListedHoldsNoDeletionBack) {
  two_directories();
  RunResult r = run_pcopy({"-q", src, dst});
  ASSERT_EQ(r.status, 0) << describe(r);
  write_file(dst + "/extra", "not in SRC\n");
  write_file(dst + "/b/kept", "in a directory not looked into\n");
  std::vector<std::string> args{"-u", "--delete", "--json", src, dst};
  // The walk's last call listing b: the one that would have found its end.
  std::vector<int> n = call_numbers("getdents64", args, [&](const std::string& line) {
    return line.find("<" + src + "/b>") != std::string::npos;
  });
  ASSERT_FALSE(n.empty()) << read_file(tmp / "trace");
  write_file(dst + "/extra", "not in SRC\n");
  write_file(dst + "/b/kept", "in a directory not looked into\n");
  r = injected(fmt::format("getdents64:error=ENOENT:when={}", n.back()), args);
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_TRUE(has_line(r.err, "pcopy: warning: 'b': vanished from SRC before everything in it was copied"))
      << describe(r);
  EXPECT_FALSE(exists(dst + "/extra")) << describe(r);
  EXPECT_TRUE(exists(dst + "/b/kept")) << describe(r);
}

// A directory the walk listed that is a file by the time it enters it (ENOTDIR for its open, with
// O_DIRECTORY) changed type, as one where a link is found (ELOOP, O_NOFOLLOW) did: it said "Not a
// directory", which did not tell that it was one when listed.
TEST_F(Injected, ADirectoryThatIsAFileWhenTheWalkEntersItChangedType) {
  two_directories();
  std::vector<std::string> args{src, dst};
  RunResult r = fail_walk_open("b", "ENOTDIR", args, [&] { std::filesystem::remove_all(dst); });
  EXPECT_EQ(r.status, 1) << describe(r);
  EXPECT_TRUE(has_line(r.err, "pcopy: cannot copy 'b': file changed type as we read it")) << describe(r);
  EXPECT_EQ(read_file(dst + "/a/x"), "x\n");
}

// -L: a link to a directory whose target goes between the walk's stat and its open (ENOENT for
// the open) is a link to nothing, an error as for one the walk finds so; it was taken for a
// directory gone from SRC, a warning, status 0, though SRC still had the link (WWW).
TEST_F(Injected, ALinkWhoseDirectoryGoesAsTheWalkEntersItPointsToNothing) {
  make_dirs(src);
  make_dirs(tmp / "target");
  write_file(tmp / "target/t", "t\n");
  write_file(src + "/a", "a\n");
  ASSERT_EQ(::symlink((tmp / "target").c_str(), (src + "/b").c_str()), 0);
  std::vector<std::string> args{"-L", src, dst};
  RunResult r = fail_walk_open("b", "ENOENT", args, [&] { std::filesystem::remove_all(dst); });
  EXPECT_EQ(r.status, 1) << describe(r);
  EXPECT_TRUE(has_line(r.err, "pcopy: cannot copy 'b': symbolic link points to nothing")) << describe(r);
  EXPECT_EQ(r.err.find("vanished"), std::string::npos) << describe(r);
  EXPECT_EQ(read_file(dst + "/a"), "a\n");
}

// The same ENOENT for a directory that is no link (gone, and another put at its name before the
// walk looked): gone from SRC, a warning, not a link to nothing (A2).
TEST_F(Injected, ADirectoryGoneAsTheWalkEntersItIsNoLinkToNothingWithDereference) {
  two_directories();
  RunResult r = fail_walk_open("b", "ENOENT", {"-L", src, dst}, [&] { std::filesystem::remove_all(dst); });
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(r.err.find("points to nothing"), std::string::npos) << describe(r);
  EXPECT_TRUE(has_line(r.err, "pcopy: warning: 'b': vanished from SRC before it was copied")) << describe(r);
  EXPECT_EQ(read_file(dst + "/a/x"), "x\n");
}

// The same change with --delete: the entries of SRC's root were all listed, so what DST has beside
// them and SRC does not is still deleted; only the changed directory's copy is not looked into. It
// counted as SRC not read, and --delete deleted nothing anywhere, which a worker finding the same
// change did not do.
TEST_F(Injected, ADirectoryChangedTypeUnderTheWalkLeavesDeleteToTheRest) {
  two_directories();
  RunResult r = run_pcopy({"-q", src, dst});
  ASSERT_EQ(r.status, 0) << describe(r);
  auto extras = [&] {  // before each run: its clean trace deletes them
    write_file(dst + "/stray", "s\n");
    write_file(dst + "/a/stray", "s\n");
    write_file(dst + "/b/old", "o\n");
  };
  extras();
  r = fail_walk_open("b", "ENOTDIR", {"-u", "--delete", src, dst}, extras);
  EXPECT_EQ(r.status, 1) << describe(r);
  EXPECT_TRUE(has_line(r.err, "pcopy: cannot copy 'b': file changed type as we read it")) << describe(r);
  EXPECT_EQ(r.err.find("--delete deleted nothing"), std::string::npos) << describe(r);
  EXPECT_FALSE(std::filesystem::exists(dst + "/stray")) << describe(r);
  EXPECT_FALSE(std::filesystem::exists(dst + "/a/stray")) << describe(r);
  EXPECT_EQ(read_file(dst + "/b/old"), "o\n");
  EXPECT_EQ(read_file(dst + "/b/y"), "y\n");
}

// A signal between the report and the exit (UUU) ended pcopy by it, status 143, after --json had
// said 0: the signals were unblocked once the report was out. They stay blocked to the exit now,
// and one that comes so late is dropped with those that came while the report was written.
TEST_F(Injected, ASignalAfterTheReportDoesNotChangeTheStatusItGave) {
  make_dirs(src);
  write_file(src + "/a", "a\n");
  std::vector<std::string> args{"--json", "-q", src, dst};
  std::string trace = tmp / "trace";
  std::vector<std::string> argv{"strace", "-qq", "-o", trace, pcopy_bin()};
  argv.insert(argv.end(), args.begin(), args.end());
  RunResult r = run(argv, traced({}));
  ASSERT_EQ(r.status, 0) << describe(r);
  // The parent's last call before exit_group, and which of the calls of its name it is.
  std::vector<std::string> calls;
  for (const std::string& line : lines_of(read_file(trace))) {
    size_t paren = line.find('(');
    if (paren != std::string::npos && !line.starts_with("+++")) calls.push_back(line.substr(0, paren));
  }
  ASSERT_GE(calls.size(), 2u);
  ASSERT_EQ(calls.back(), "exit_group") << read_file(trace);
  const std::string last = calls[calls.size() - 2];
  long when = std::count(calls.begin(), calls.end() - 1, last);
  std::filesystem::remove_all(dst);
  r = injected(fmt::format("{}:signal=SIGTERM:when={}", last, when), args);
  EXPECT_EQ(r.status, 0) << last << " #" << when << "\n" << describe(r);
  nlohmann::json report = nlohmann::json::parse(r.out);
  EXPECT_EQ(report["exit_status"], 0) << r.out;
  EXPECT_EQ(read_file(dst + "/a"), "a\n");
}

// --delete as an ordinary user: a read-only directory of DST opened up to be emptied, which then
// cannot be removed (EBUSY: a mount point), stays with the mode it had, 0555, not 0755 (PPP).
TEST_F(Injected, ADirectoryDeleteCouldNotRemoveKeepsItsMode) {
  make_dirs(src + "/keep");
  write_file(src + "/keep/k", "k\n");
  RunResult r = run_pcopy({"-q", src, dst});
  ASSERT_EQ(r.status, 0) << describe(r);
  auto prepare = [&] {
    make_dirs(dst + "/gone/ro");
    write_file(dst + "/gone/ro/g", "g\n");
    ASSERT_EQ(::chmod((dst + "/gone/ro").c_str(), 0555), 0);
  };
  prepare();
  RunOptions as_user = unprivileged(tmp);
  std::vector<std::string> args{"-u", "--delete", "-j1", src, dst};
  std::vector<int> n = call_numbers("unlinkat", args, [&](const std::string& line) {
    return line.find("\"ro\", AT_REMOVEDIR") != std::string::npos;
  }, as_user);
  ASSERT_EQ(n.size(), 1u) << read_file(tmp / "trace");
  prepare();
  if (as_user.uid) chown_tree(dst, *as_user.uid, 65534);
  r = injected(fmt::format("unlinkat:error=EBUSY:when={}", n[0]), args, false, as_user);
  EXPECT_EQ(r.status, 1) << describe(r);
  EXPECT_TRUE(has_line(r.err, "pcopy: cannot delete 'gone/ro': Device or resource busy")) << describe(r);
  struct stat st {};
  ASSERT_EQ(::lstat((dst + "/gone/ro").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0555u);
}

// --delete: a directory of DST that cannot be listed (an I/O error) is not one to delete, and the
// line says what failed: it said `cannot delete 'sub'` of a directory SRC has, or named '' for
// DST itself (MMM).
TEST_F(Injected, ADirectoryDeleteCannotListIsNamedForWhatFailed) {
  make_dirs(src + "/sub");
  write_file(src + "/a", "a\n");
  write_file(src + "/sub/b", "b\n");
  for (std::string rel : {"", "sub"}) {
    SCOPED_TRACE(rel.empty() ? "DST" : rel);
    auto prepare = [&] {
      std::filesystem::remove_all(dst);
      RunResult r = run_pcopy({"-q", src, dst});
      ASSERT_EQ(r.status, 0) << describe(r);
      write_file(dst + (rel.empty() ? "" : "/" + rel) + "/extra", "not in SRC\n");
    };
    prepare();
    std::vector<std::string> args{"-u", "--delete", src, dst};
    std::string dir = rel.empty() ? dst : dst + "/" + rel;
    // The last listing of that directory, --delete's (the walk lists it too, for leftovers of
    // an earlier run): its call that gave entries.
    std::vector<int> n = call_numbers("getdents64", args, [&](const std::string& line) {
      return line.find("<" + dir + ">") != std::string::npos && !line.ends_with("= 0");
    });
    ASSERT_EQ(n.size(), 2u) << read_file(tmp / "trace");
    prepare();
    std::string spec = fmt::format("getdents64:error=EIO:when={}", n.back());
    RunResult r = injected(spec, {"-u", "--delete", "--json", src, dst});
    EXPECT_EQ(r.status, 1) << describe(r);
    std::string shown = rel.empty() ? "." : rel;
    EXPECT_TRUE(has_line(r.err, "pcopy: cannot look for entries to delete in '" + shown + "': Input/output error"))
        << describe(r);
    EXPECT_EQ(r.err.find("cannot delete"), std::string::npos) << describe(r);
    EXPECT_TRUE(exists(dir + "/extra")) << "deleted from a directory never listed";
  }
}

}  // namespace
}  // namespace pcopy::test
