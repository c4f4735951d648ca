#include "pcopy/walker.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "../acl_util.hpp"
#include "pcopy/filter.hpp"
#include "pcopy/fs_facts.hpp"
#include "unit_util.hpp"

using namespace pcopy;
using pcopy_test::TempDir;

namespace {

struct timespec ts(time_t sec, long nsec) { return timespec{sec, nsec}; }

void set_times(const std::string& path, time_t sec, long nsec) {
  struct timespec t[2] = {ts(sec - 100, 5), ts(sec, nsec)};
  ASSERT_EQ(::utimensat(AT_FDCWD, path.c_str(), t, AT_SYMLINK_NOFOLLOW), 0) << path;
}

struct stat stat_of(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(::lstat(path.c_str(), &st), 0) << path;
  return st;
}

bool exists(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}

// Everything one walk produced.
struct Walked {
  std::multiset<std::string> entries;  // relative paths of Entry events
  std::multiset<std::string> dirs;     // relative paths of Dir events
  std::set<std::string> created;       // Dir events with `created`
  std::vector<std::string> warnings;
  std::vector<std::string> errors;
  std::map<std::string, mode_t> entry_types;
  std::vector<DirNode*> held;  // Entry events not yet released
  bool finished_before_release = false;
  int max_fds = 0;
};

// Drains the walker. Entries are held (released by the caller) unless `release_now`.
Walked drain(Walker& w, bool release_now = false, int fd_check_every = 0) {
  Walked out;
  int n = 0;
  while (auto ev = w.next()) {
    std::string rel = w.rel_path(ev->dir, ev->name);
    switch (ev->type) {
      case WalkEvent::Type::Entry:
        out.entries.insert(rel);
        out.entry_types[rel] = ev->st.st_mode & S_IFMT;
        if (release_now) w.release(ev->dir);
        else out.held.push_back(ev->dir);
        break;
      case WalkEvent::Type::Dir:
        out.dirs.insert(rel);
        if (ev->created) out.created.insert(rel);
        break;
      case WalkEvent::Type::Warning: out.warnings.push_back(rel + ": " + ev->detail); break;
      case WalkEvent::Type::Error: out.errors.push_back(rel + ": " + std::to_string(ev->err) + " " + ev->detail); break;
    }
    if (fd_check_every && ++n % fd_check_every == 0) out.max_fds = std::max(out.max_fds, pcopy_test::open_fd_count());
  }
  out.finished_before_release = w.finished();
  return out;
}

class WalkerTest : public ::testing::Test {
 protected:
  explicit WalkerTest(bool in_memory = false) : tmp(in_memory) {}
  void SetUp() override {
    src = tmp / "src";
    dst = tmp / "dst";
    ASSERT_EQ(::mkdir(src.c_str(), 0755), 0);
    ASSERT_EQ(::mkdir(dst.c_str(), 0755), 0);
  }

  std::unique_ptr<Walker> make_walker() {
    int s = pcopy_test::open_dir(src);
    int d = pcopy_test::open_dir(dst);
    struct stat st;
    EXPECT_EQ(::fstat(s, &st), 0);
    return std::make_unique<Walker>(opt, UniqueFd(s), UniqueFd(d), st, [this](const DirNode& node, const Walker::DirTrouble& t) {
      if (t.err) dir_errors.push_back(node.name + ": " + std::to_string(t.err));
      if (t.flush_err) dir_errors.push_back(node.name + ": not flushed: " + std::to_string(t.flush_err));
      for (const Unkept& u : t.unkept) dir_errors.push_back(node.name + ": " + u.what + " not kept: " + std::to_string(u.err));
    });
  }

  void mkdir_src(const std::string& rel, mode_t mode = 0755) {
    ASSERT_EQ(::mkdir((src + "/" + rel).c_str(), mode), 0) << rel;
    ASSERT_EQ(::chmod((src + "/" + rel).c_str(), mode), 0) << rel;
  }
  void file_src(const std::string& rel, const std::string& data = "x", mode_t mode = 0644) {
    pcopy_test::write_file(src + "/" + rel, data, mode);
  }

  TempDir tmp;
  std::string src, dst;
  Options opt;
  std::vector<std::string> dir_errors;
};

}  // namespace

TEST_F(WalkerTest, EmptyTreeFinishesOnceTheListingIsDone) {
  auto w = make_walker();
  Walked r = drain(*w);
  EXPECT_TRUE(r.entries.empty());
  EXPECT_TRUE(r.dirs.empty());
  EXPECT_TRUE(r.finished_before_release);
  EXPECT_EQ(w->walk_errors(), 0);
}

TEST_F(WalkerTest, EveryNonDirectoryIsOneEntryAndEveryDirectoryOneDirEvent) {
  file_src("a.txt");
  file_src("b.bin", "bb", 0600);
  ASSERT_EQ(::symlink("a.txt", (src + "/link").c_str()), 0);
  ASSERT_EQ(::mkfifo((src + "/fifo").c_str(), 0640), 0);
  mkdir_src("sub");
  file_src("sub/c.txt");
  mkdir_src("sub/deeper");
  file_src("sub/deeper/d.txt");
  mkdir_src("sub/empty");
  ASSERT_EQ(::symlink("sub", (src + "/dirlink").c_str()), 0);
  for (int i = 0; i < 500; ++i) file_src("sub/many" + std::to_string(i));

  auto w = make_walker();
  Walked r = drain(*w);
  std::multiset<std::string> want_entries{"a.txt", "b.bin", "link", "fifo", "dirlink", "sub/c.txt", "sub/deeper/d.txt"};
  for (int i = 0; i < 500; ++i) want_entries.insert("sub/many" + std::to_string(i));
  EXPECT_EQ(r.entries, want_entries);
  EXPECT_EQ(r.dirs, (std::multiset<std::string>{"sub", "sub/deeper", "sub/empty"}));
  EXPECT_EQ(r.created, (std::set<std::string>{"sub", "sub/deeper", "sub/empty"}));
  EXPECT_EQ(r.entry_types["link"], mode_t(S_IFLNK));
  EXPECT_EQ(r.entry_types["dirlink"], mode_t(S_IFLNK));  // a link to a directory is not followed
  EXPECT_EQ(r.entry_types["fifo"], mode_t(S_IFIFO));
  EXPECT_EQ(r.entry_types["a.txt"], mode_t(S_IFREG));
  EXPECT_TRUE(r.warnings.empty());
  EXPECT_TRUE(r.errors.empty());
  EXPECT_EQ(w->walk_errors(), 0);
  EXPECT_FALSE(r.finished_before_release);
  for (DirNode* d : r.held) w->release(d);
  EXPECT_TRUE(w->finished());
  EXPECT_TRUE(dir_errors.empty());
}

// rel_path() builds a path from the one it gave last when the directory is below that one's (a
// chain thousands of levels deep): asked in any order, for directories above, below, beside or the
// same as the last, and after the last one's node is freed, it gives each directory's own path.
TEST_F(WalkerTest, DirectoryPathsAreRightInWhateverOrderTheyAreAsked) {
  for (const char* f : {"a/b/c/f", "a/b/cc/f", "a/bb/f", "a/f", "ab/c/f", "x/y/z/w/f"}) {
    std::string dir = std::filesystem::path(f).parent_path();
    std::filesystem::create_directories(src + "/" + dir);
    file_src(f);
  }
  auto w = make_walker();
  std::vector<std::pair<DirNode*, std::string>> dirs;  // each entry's directory and its path
  while (auto ev = w->next()) {
    if (ev->type == WalkEvent::Type::Dir) continue;
    ASSERT_EQ(ev->type, WalkEvent::Type::Entry) << ev->name;
    dirs.emplace_back(ev->dir, std::filesystem::path(w->rel_path(ev->dir, ev->name)).parent_path());
  }
  ASSERT_EQ(dirs.size(), 6u);
  std::vector<std::pair<const DirNode*, std::string>> asked;
  for (auto& [dir, path] : dirs) {  // each with every directory above it, deepest first and last
    std::string p = path;
    for (const DirNode* d = dir; d; d = d->parent, p = std::filesystem::path(p).parent_path()) asked.emplace_back(d, p);
    asked.emplace_back(dir, path);
  }
  std::vector<std::pair<const DirNode*, std::string>> reversed(asked.rbegin(), asked.rend());
  for (auto* order : {&asked, &reversed})
    for (auto& [dir, path] : *order) EXPECT_EQ(w->rel_path(dir), path);
  // Freed, the last one asked for is not built on: the others are asked again after it.
  EXPECT_EQ(w->rel_path(dirs[0].first), dirs[0].second);
  w->release(dirs[0].first);
  for (size_t i = 1; i < dirs.size(); ++i) EXPECT_EQ(w->rel_path(dirs[i].first), dirs[i].second);
  for (size_t i = 1; i < dirs.size(); ++i) w->release(dirs[i].first);
  EXPECT_TRUE(w->finished());
}

TEST_F(WalkerTest, DestinationDirectoriesAreCreatedAsTheWalkEntersThem) {
  mkdir_src("a");
  mkdir_src("a/b");
  mkdir_src("a/b/c");
  file_src("a/b/c/f");
  auto w = make_walker();
  Walked r = drain(*w);
  // Before any job is done, the directories exist so workers can write into them: a and b under
  // their names, the small leaf c staged under a temporary name until everything in it is done.
  ASSERT_EQ(r.held.size(), 1u);
  DirNode* c = r.held[0];
  EXPECT_TRUE(S_ISDIR(stat_of(dst + "/a/b").st_mode));
  std::string staged = w->dst_rel_path(c);
  EXPECT_NE(staged, "a/b/c");
  EXPECT_TRUE(c->facts.staged);
  EXPECT_TRUE(S_ISDIR(stat_of(dst + "/" + staged).st_mode));
  EXPECT_FALSE(exists(dst + "/a/b/c"));
  EXPECT_EQ(r.entries.count("a/b/c/f"), 1u);
  EXPECT_FALSE(exists(dst + "/" + staged + "/f"));  // files are the workers' job
  for (DirNode* d : r.held) w->release(d);
  EXPECT_TRUE(w->finished());
  EXPECT_TRUE(S_ISDIR(stat_of(dst + "/a/b/c").st_mode));
  EXPECT_FALSE(exists(dst + "/" + staged));
  EXPECT_EQ(pcopy_test::list_dir(dst + "/a/b"), (std::set<std::string>{"c"}));
}

TEST_F(WalkerTest, FinishedOnlyAfterTheLastEntryIsReleased) {
  mkdir_src("x");
  file_src("x/1");
  file_src("x/2");
  file_src("top");
  auto w = make_walker();
  Walked r = drain(*w);
  ASSERT_EQ(r.held.size(), 3u);
  EXPECT_FALSE(w->finished());
  w->release(r.held[0]);
  EXPECT_FALSE(w->finished());
  w->release(r.held[1]);
  EXPECT_FALSE(w->finished());
  w->release(r.held[2]);
  EXPECT_TRUE(w->finished());
}

TEST_F(WalkerTest, NothingIsStagedWhereTheOptionsNeedFinalPathsAsFilesAreCopied) {
  mkdir_src("leaf");
  file_src("leaf/f");
  // -a (hard links name DST paths), -v (prints paths as they are copied), --verify, --inplace.
  for (int which = 0; which < 4; ++which) {
    opt = Options{};
    (which == 0 ? opt.archive : which == 1 ? opt.verbose : which == 2 ? opt.verify : opt.inplace) = true;
    SCOPED_TRACE(which);
    std::string into = tmp / ("dst" + std::to_string(which));
    ASSERT_EQ(::mkdir(into.c_str(), 0755), 0);
    int s = pcopy_test::open_dir(src), d = pcopy_test::open_dir(into);
    struct stat st;
    ASSERT_EQ(::fstat(s, &st), 0);
    Walker w(opt, UniqueFd(s), UniqueFd(d), st, [](const DirNode&, const Walker::DirTrouble&) {});
    Walked r = drain(w);
    ASSERT_EQ(r.held.size(), 1u);
    EXPECT_FALSE(r.held[0]->facts.staged);
    EXPECT_EQ(w.dst_rel_path(r.held[0]), "leaf");
    EXPECT_TRUE(exists(into + "/leaf"));
    for (DirNode* n : r.held) w.release(n);
  }
}

TEST_F(WalkerTest, DestinationDirectoriesGetTheSourceModeAndNanosecondMtimeAtTheEnd) {
  mkdir_src("sub", 0750);
  mkdir_src("sub/ro", 0555);  // read-only: must still be filled before its mode is applied
  file_src("sub/ro/f");
  mkdir_src("sub/odd", 02711);
  mkdir_src("sub/plain", 0755);  // staged with its final mode: only its times are set at the end
  file_src("sub/plain/f");
  mkdir_src("empty", 0700);
  set_times(src + "/sub/ro", 1'500'000'000, 123'456'789);
  set_times(src + "/sub/plain", 1'600'000'000, 7);
  set_times(src + "/sub/odd", 1'400'000'000, 1);
  set_times(src + "/sub", 1'300'000'000, 999'999'999);
  set_times(src + "/empty", 1'200'000'000, 42);
  ASSERT_EQ(::chmod(src.c_str(), 0751), 0);
  set_times(src, 1'100'000'000, 500);

  auto w = make_walker();
  Walked r = drain(*w);
  // While a job inside is pending, the directory stays writable for the workers.
  ASSERT_EQ(r.held.size(), 2u);
  for (DirNode* held : r.held) EXPECT_TRUE(stat_of(dst + "/" + w->dst_rel_path(held)).st_mode & S_IWUSR);
  for (DirNode* d : r.held) w->release(d);
  ASSERT_TRUE(w->finished());
  EXPECT_TRUE(dir_errors.empty());

  for (const char* rel : {"sub", "sub/ro", "sub/odd", "sub/plain", "empty", ""}) {
    SCOPED_TRACE(rel);
    std::string s = std::string(rel).empty() ? src : src + "/" + rel;
    std::string d = std::string(rel).empty() ? dst : dst + "/" + rel;
    struct stat a = stat_of(s), b = stat_of(d);
    EXPECT_EQ(a.st_mode & 07777, b.st_mode & 07777);
    EXPECT_EQ(pcopy_test::ns_of(a.st_mtim), pcopy_test::ns_of(b.st_mtim));
  }
  EXPECT_EQ(stat_of(dst + "/sub/ro").st_mode & 07777, 0555u);
  EXPECT_EQ(pcopy_test::ns_of(stat_of(dst + "/sub/ro").st_mtim), 1'500'000'000'123'456'789);
}

TEST_F(WalkerTest, NewDirectoriesOpenToOthersWritesStayPrivateUntilFinished) {
  // 0755 is made as 0755 at once (no chmod needed at the end); a mode letting others write, or
  // with special bits, waits behind 0700 until the directory is finished, as with cp.
  const std::pair<const char*, mode_t> dirs[] = {{"plain", 0755}, {"shared", 0775}, {"open", 0777},
                                                 {"sticky", 01777}, {"setgid", 02755}, {"mine", 0700}};
  for (auto [name, mode] : dirs) {
    mkdir_src(name, mode);
    file_src(std::string(name) + "/f");
  }
  mode_t old_umask = ::umask(022);
  auto w = make_walker();
  ::umask(old_umask);
  Walked r = drain(*w);
  ASSERT_FALSE(w->finished());
  for (DirNode* d : r.held) {
    mode_t mode = stat_of(src + "/" + d->name).st_mode & 07777;
    SCOPED_TRACE(d->name);
    mode_t now = stat_of(dst + "/" + w->dst_rel_path(d)).st_mode & 07777;
    EXPECT_EQ(now, (mode & 07022) == 0 ? mode : 0700u);
  }
  for (DirNode* d : r.held) w->release(d);
  ASSERT_TRUE(w->finished());
  for (auto [name, mode] : dirs) EXPECT_EQ(stat_of(dst + "/" + name).st_mode & 07777, mode) << name;
}

TEST_F(WalkerTest, DirectoriesMadeInASetGroupIdDestinationGetTheSourceModeAllTheSame) {
  // mkdir in a set-group-ID directory sets the bit on the new one too: the copy still gets the
  // source's mode exactly (as rsync -a; cp -a would keep the inherited bit).
  ASSERT_EQ(::chmod(dst.c_str(), 02775), 0);
  mkdir_src("plain", 0755);
  mkdir_src("plain/deeper", 0755);
  mkdir_src("shared", 0775);
  mkdir_src("keeps", 02755);
  auto w = make_walker();
  Walked r = drain(*w, true);
  ASSERT_TRUE(w->finished());
  EXPECT_TRUE(dir_errors.empty());
  for (const char* rel : {"plain", "plain/deeper", "shared", "keeps"})
    EXPECT_EQ(stat_of(dst + "/" + rel).st_mode & 07777, stat_of(src + "/" + rel).st_mode & 07777) << rel;
}

TEST_F(WalkerTest, DirectoriesCarryWhatWorkersNeedToKnowOfTheDestination) {
  mkdir_src("a", 0775);
  mkdir_src("a/b", 0755);
  file_src("a/b/f");
  mkdir_src("c", 0755);
  file_src("c/f");
  ASSERT_EQ(::mkdir((dst + "/c").c_str(), 0755), 0);  // c exists already: looked at, not inherited
  bool acl = pcopy_test::set_default_acl(dst);
  if (acl) {
    ASSERT_TRUE(pcopy_test::set_default_acl(dst + "/c"));
  }
  auto w = make_walker();
  Walked r = drain(*w);
  ASSERT_EQ(r.held.size(), 2u);
  for (DirNode* d : r.held) {
    SCOPED_TRACE(d->name);
    EXPECT_TRUE(d->facts.known);
    EXPECT_EQ(d->facts.local, local_fs(d->dst.get()));
    EXPECT_EQ(d->facts.never_shares, never_shares_extents(d->dst.get()));
    EXPECT_EQ(d->facts.in_memory, in_memory_fs(d->dst.get()));
    EXPECT_EQ(d->facts.default_acl, acl);  // a directory made in one with a default ACL inherits it
  }
  for (DirNode* d : r.held) w->release(d);
  ASSERT_TRUE(w->finished());
  // The ACL would have made "a" 0755: its mode was set when finished.
  EXPECT_EQ(stat_of(dst + "/a").st_mode & 07777, 0775u);
  EXPECT_EQ(stat_of(dst + "/a/b").st_mode & 07777, 0755u);
  if (!acl) GTEST_SKIP() << "no POSIX ACLs on " << dst << ": checked without a default ACL only";
}

TEST_F(WalkerTest, ExcludedDirectoriesAreNotDescendedNorCreated) {
  mkdir_src("skip");
  file_src("skip/hidden.txt");
  mkdir_src("skip/inner");
  file_src("skip/inner/deep.txt");
  mkdir_src("keep");
  mkdir_src("keep/skip");  // excluded at any depth
  file_src("keep/skip/x");
  file_src("keep/file");
  file_src("skip2");  // a file named like the pattern is not a directory
  opt.filters = {make_rule(false, "skip/"), make_rule(false, "skip2/")};
  auto w = make_walker();
  Walked r = drain(*w);
  EXPECT_EQ(r.entries, (std::multiset<std::string>{"keep/file", "skip2"}));
  EXPECT_EQ(r.dirs, (std::multiset<std::string>{"keep"}));
  EXPECT_FALSE(exists(dst + "/skip"));
  EXPECT_FALSE(exists(dst + "/keep/skip"));
  for (DirNode* d : r.held) w->release(d);
  EXPECT_TRUE(w->finished());
}

TEST_F(WalkerTest, ExcludedFilesGiveNoEntryAndFirstMatchingRuleWins) {
  file_src("x.o");
  file_src("keep.o");
  mkdir_src("sub");
  file_src("sub/y.o");
  file_src("sub/y.c");
  mkdir_src("build");
  file_src("build/z.o");
  file_src("build/z.txt");
  opt.filters = {make_rule(true, "keep.o"), make_rule(false, "*.o"), make_rule(false, "build/*.txt")};
  auto w = make_walker();
  Walked r = drain(*w);
  EXPECT_EQ(r.entries, (std::multiset<std::string>{"keep.o", "sub/y.c"}));
  EXPECT_EQ(r.dirs, (std::multiset<std::string>{"sub", "build"}));
  for (DirNode* d : r.held) w->release(d);
  EXPECT_TRUE(w->finished());
}

TEST_F(WalkerTest, SocketsAreSkippedWithAWarning) {
  std::string path = src + "/sock";
  int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  struct sockaddr_un addr {};
  addr.sun_family = AF_UNIX;
  ASSERT_LT(path.size(), sizeof addr.sun_path);
  std::copy(path.begin(), path.end(), addr.sun_path);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ::close(fd);
  file_src("f");
  auto w = make_walker();
  Walked r = drain(*w);
  EXPECT_EQ(r.entries, (std::multiset<std::string>{"f"}));
  ASSERT_EQ(r.warnings.size(), 1u);
  EXPECT_EQ(r.warnings[0].rfind("sock: ", 0), 0u) << r.warnings[0];
  for (DirNode* d : r.held) w->release(d);
  EXPECT_TRUE(w->finished());  // the socket holds no pending job
}

TEST_F(WalkerTest, ExistingDestinationDirectoriesAreReusedAndTheirStaleTemporariesRemoved) {
  mkdir_src("sub");
  file_src("sub/f");
  ASSERT_EQ(::mkdir((dst + "/sub").c_str(), 0755), 0);
  pcopy_test::write_file(dst + "/sub/.pcopy-999-1.tmp", "partial");
  pcopy_test::write_file(dst + "/sub/.pcopy-notes", "user file");  // not a temporary name
  pcopy_test::write_file(dst + "/sub/other", "kept");
  pcopy_test::write_file(dst + "/.pcopy-1-2.tmp", "partial at the root");
  auto w = make_walker();
  Walked r = drain(*w);
  EXPECT_EQ(r.dirs, (std::multiset<std::string>{"sub"}));
  EXPECT_TRUE(r.created.empty());  // it was already there
  EXPECT_EQ(pcopy_test::list_dir(dst + "/sub"), (std::set<std::string>{".pcopy-notes", "other"}));
  EXPECT_EQ(pcopy_test::list_dir(dst), (std::set<std::string>{"sub"}));
  for (DirNode* d : r.held) w->release(d);
  EXPECT_TRUE(w->finished());
}

TEST_F(WalkerTest, LinkOrFilePlantedWhereSourceHasADirectoryIsReplacedNeverFollowed) {
  mkdir_src("d");
  file_src("d/f");
  mkdir_src("e");
  file_src("e/g");
  ASSERT_EQ(::mkdir((tmp / "outside").c_str(), 0755), 0);
  ASSERT_EQ(::symlink((tmp / "outside").c_str(), (dst + "/d").c_str()), 0);
  pcopy_test::write_file(dst + "/e", "a file where SRC has a directory");
  auto w = make_walker();
  Walked r = drain(*w);
  EXPECT_TRUE(r.errors.empty());
  EXPECT_TRUE(S_ISDIR(stat_of(dst + "/d").st_mode));
  EXPECT_TRUE(S_ISDIR(stat_of(dst + "/e").st_mode));
  EXPECT_EQ(r.created, (std::set<std::string>{"d", "e"}));
  EXPECT_TRUE(pcopy_test::list_dir(tmp / "outside").empty());
  for (DirNode* d : r.held) w->release(d);
  EXPECT_TRUE(w->finished());
  EXPECT_TRUE(dir_errors.empty());
  EXPECT_TRUE(S_ISDIR(stat_of(tmp / "outside").st_mode));
}

TEST_F(WalkerTest, DryRunCreatesNothingButReportsWhatWouldBeCreated) {
  mkdir_src("new");
  mkdir_src("new/inner");
  file_src("new/inner/f");
  mkdir_src("old");
  ASSERT_EQ(::mkdir((dst + "/old").c_str(), 0755), 0);
  opt.dry_run = true;
  auto w = make_walker();
  Walked r = drain(*w);
  EXPECT_EQ(r.dirs, (std::multiset<std::string>{"new", "new/inner", "old"}));
  EXPECT_EQ(r.created, (std::set<std::string>{"new", "new/inner"}));
  EXPECT_EQ(r.entries, (std::multiset<std::string>{"new/inner/f"}));
  EXPECT_EQ(pcopy_test::list_dir(dst), (std::set<std::string>{"old"}));
  for (DirNode* d : r.held) w->release(d);
  EXPECT_TRUE(w->finished());
}

// Deep trees: thousands of directories made and removed, kept in memory when possible.
class DeepWalkerTest : public WalkerTest {
 protected:
  DeepWalkerTest() : WalkerTest(/*in_memory=*/true) {}
};

// A chain of `depth` directories named `name`, each holding a file "f"; every directory gets a
// distinct mtime (level i: second 1e9 + i, nanosecond i).
void build_chain(const std::string& root, const std::string& name, int depth) {
  int fd = pcopy_test::open_dir(root);
  for (int i = 0; i < depth; ++i) {
    ASSERT_EQ(::mkdirat(fd, name.c_str(), 0755), 0) << "level " << i;
    int next = ::openat(fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    ASSERT_GE(next, 0) << "level " << i;
    ::close(fd);
    fd = next;
    pcopy_test::write_at(fd, "f", "level " + std::to_string(i));
  }
  ::close(fd);
  // Times last, top-down: setting a directory's own times does not touch its parent.
  fd = pcopy_test::open_dir(root);
  for (int i = 0; i < depth; ++i) {
    int next = ::openat(fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    ASSERT_GE(next, 0);
    ::close(fd);
    fd = next;
    struct timespec t[2] = {ts(1'000'000'000 + i, 0), ts(1'000'000'000 + i, i)};
    ASSERT_EQ(::futimens(fd, t), 0);
  }
  ::close(fd);
}

// Walks both chains side by side; returns the number of levels whose destination matches.
int matching_levels(const std::string& src, const std::string& dst, const std::string& name, int depth) {
  int s = pcopy_test::open_dir(src), d = pcopy_test::open_dir(dst);
  int good = 0;
  for (int i = 0; i < depth; ++i) {
    int s2 = ::openat(s, name.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
    int d2 = ::openat(d, name.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
    ::close(s);
    ::close(d);
    s = s2;
    d = d2;
    if (s < 0 || d < 0) break;
    struct stat a, b;
    ::fstat(s, &a);
    ::fstat(d, &b);
    if ((a.st_mode & 07777) == (b.st_mode & 07777) && pcopy_test::ns_of(a.st_mtim) == pcopy_test::ns_of(b.st_mtim) &&
        pcopy_test::ns_of(b.st_mtim) == (1'000'000'000 + int64_t(i)) * 1'000'000'000 + i)
      ++good;
    else
      ADD_FAILURE() << "level " << i << " mode " << std::oct << (b.st_mode & 07777) << std::dec << " mtime "
                    << pcopy_test::ns_of(b.st_mtim);
  }
  if (s >= 0) ::close(s);
  if (d >= 0) ::close(d);
  return good;
}

TEST_F(DeepWalkerTest, DeepTreeOf2000LevelsWalksWithFewFdsOpen) {
  constexpr int kDepth = 2000;  // "level/" x 2000: a 12,000-byte path
  build_chain(src, "level", kDepth);
  int base = pcopy_test::open_fd_count();
  auto w = make_walker();
  Walked r = drain(*w, /*release_now=*/true, /*fd_check_every=*/4);
  EXPECT_EQ(r.entries.size(), size_t(kDepth));
  EXPECT_EQ(r.dirs.size(), size_t(kDepth));
  EXPECT_TRUE(r.errors.empty());
  EXPECT_TRUE(r.finished_before_release);
  EXPECT_LE(r.max_fds - base, 40) << "fds open during the walk: " << r.max_fds << ", before: " << base;
  EXPECT_TRUE(dir_errors.empty());
  w.reset();
  EXPECT_EQ(pcopy_test::open_fd_count(), base) << "the walker leaks descriptors";
  EXPECT_EQ(matching_levels(src, dst, "level", kDepth), kDepth);
}

TEST_F(DeepWalkerTest, TreeDeeperThanPathMaxWithJobsHeldUntilTheEndStaysWithinAnFdBudget) {
  // 1000 levels of 20-byte names: a 21,000-byte path, five times PATH_MAX. Directories whose
  // jobs outlive the walk lose their fds (beyond a budget) and are finished by path.
  constexpr int kDepth = 1000;
  const std::string name(20, 'n');
  build_chain(src, name, kDepth);
  int base = pcopy_test::open_fd_count();
  auto w = make_walker();
  Walked r = drain(*w, /*release_now=*/false, /*fd_check_every=*/7);
  EXPECT_EQ(r.entries.size(), size_t(kDepth));
  EXPECT_EQ(r.dirs.size(), size_t(kDepth));
  EXPECT_TRUE(r.errors.empty()) << r.errors.front();
  EXPECT_FALSE(r.finished_before_release);
  EXPECT_LE(r.max_fds - base, 200) << "fds open during the walk: " << r.max_fds << ", before: " << base;
  // The deepest entry's path really is that long.
  std::string deepest;
  for (const auto& e : r.entries) deepest = std::max(deepest, e, [](auto& a, auto& b) { return a.size() < b.size(); });
  EXPECT_EQ(deepest.size(), size_t(kDepth) * 21 + 1);
  // Release from the deepest up, as workers finishing late would.
  for (auto it = r.held.rbegin(); it != r.held.rend(); ++it) w->release(*it);
  EXPECT_TRUE(w->finished());
  EXPECT_TRUE(dir_errors.empty()) << dir_errors.size() << " directories could not get their metadata, first: "
                                  << (dir_errors.empty() ? "" : dir_errors.front());
  w.reset();
  EXPECT_EQ(pcopy_test::open_fd_count(), base) << "the walker leaks descriptors";
  EXPECT_EQ(matching_levels(src, dst, name, kDepth), kDepth);
}

TEST_F(DeepWalkerTest, DeepTreeReleasedTopDownAlsoFinishesEveryDirectory) {
  constexpr int kDepth = 400;
  build_chain(src, "d", kDepth);
  auto w = make_walker();
  Walked r = drain(*w);
  ASSERT_EQ(r.held.size(), size_t(kDepth));
  for (size_t i = 0; i + 1 < r.held.size(); ++i) w->release(r.held[i]);
  EXPECT_FALSE(w->finished());
  w->release(r.held.back());
  EXPECT_TRUE(w->finished());
  EXPECT_TRUE(dir_errors.empty());
  EXPECT_EQ(matching_levels(src, dst, "d", kDepth), kDepth);
}
