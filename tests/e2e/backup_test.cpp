// End-to-end tests of the options scripted backups and CI staging rely on (issue 5): -u/--update,
// --checksum, --ignore-existing, --delete, the filters, --dry-run, --verify, --json, --manifest,
// --progress=always without a terminal, --fsync and the summary's skipped/deleted counts.
// Each test runs the real pcopy binary on trees in a temporary directory.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "../acl_util.hpp"
#include "harness.hpp"
#include "pcopy/hash.hpp"

namespace pcopy::test {
namespace {

using nlohmann::json;

constexpr uid_t kNobody = 65534;
constexpr long long kOldTime = 1'600'000'000'000'000'000LL;  // a fixed past mtime, in ns

// ---------------------------------------------------------------------------------------------------
// Helpers.

std::string join_lines(const std::vector<std::string>& lines) {
  std::string out;
  for (auto& line : lines) out += escape_path(line) + "\n";
  return out;
}

std::multiset<std::string> line_set(std::string_view text) {
  auto lines = lines_of(text);
  return {lines.begin(), lines.end()};
}

std::string describe_set(const std::multiset<std::string>& lines) {
  return join_lines(std::vector<std::string>(lines.begin(), lines.end()));
}

struct stat lstat_of(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) ADD_FAILURE() << "cannot lstat " << escape_path(path);
  return st;
}

long long ns_of(const timespec& ts) { return ts.tv_sec * 1'000'000'000LL + ts.tv_nsec; }
long long mtime_ns(const std::string& path) { return ns_of(lstat_of(path).st_mtim); }
long long atime_ns(const std::string& path) { return ns_of(lstat_of(path).st_atim); }

// Writes a file and gives it a fixed past mtime, so a later change of mtime is a real change.
void write_old(const std::string& path, std::string_view bytes, long long mtime = kOldTime) {
  write_file(path, bytes);
  set_times(path, mtime, mtime);
}

// Removes a file but keeps its directory's times (so two trees can still compare equal).
void unlink_keeping_parent_times(const std::string& path) {
  std::string parent = path.substr(0, path.rfind('/'));
  long long a = atime_ns(parent), m = mtime_ns(parent);
  ASSERT_EQ(::unlink(path.c_str()), 0) << escape_path(path);
  set_times(parent, a, m);
}

// The --json report: stdout must be exactly one JSON object.
json parse_report(const RunResult& r) {
  try {
    json j = json::parse(r.out);
    if (!j.is_object()) ADD_FAILURE() << "--json printed a non-object\n" << describe(r);
    return j;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "--json output does not parse: " << e.what() << "\n" << describe(r);
    return json::object();
  }
}

// A JSON number field as an integer (-1 when missing or not an integer).
long long count(const json& j, const char* key) {
  if (!j.contains(key) || !j[key].is_number_integer()) return -1;
  return j[key].get<long long>();
}

// XXH3-128 of the bytes, 32 lowercase hex digits, canonical (big-endian) order.
std::string xxh128_hex(std::string_view bytes) {
  Hasher h;
  h.update(bytes.data(), bytes.size());
  return to_hex(h.digest());
}

// Everything about a tree a write could change, per entry (root as "."): type+mode, size, mtime and
// ctime in ns, and the contents of files / targets of links.
std::map<std::string, std::string> snapshot(const std::string& root) {
  std::map<std::string, std::string> snap;
  auto one = [&](const std::string& rel, const std::string& path) {
    struct stat st = lstat_of(path);
    std::string what = fmt::format("mode {:o} size {} mtime {} ctime {}", st.st_mode, st.st_size, ns_of(st.st_mtim),
                                   ns_of(st.st_ctim));
    if (S_ISREG(st.st_mode)) what += " xxh128 " + xxh128_hex(read_file(path));
    if (S_ISLNK(st.st_mode)) what += " -> " + read_link(path);
    snap[rel] = what;
  };
  one(".", root);
  for (auto& rel : list_tree(root)) one(rel, root + "/" + rel);
  return snap;
}

std::string diff_snapshots(const std::map<std::string, std::string>& before,
                           const std::map<std::string, std::string>& after) {
  std::string out;
  for (auto& [rel, what] : before) {
    auto it = after.find(rel);
    if (it == after.end()) out += escape_path(rel) + ": removed\n";
    else if (it->second != what) out += escape_path(rel) + ": was " + what + ", now " + it->second + "\n";
  }
  for (auto& [rel, what] : after)
    if (!before.count(rel)) out += escape_path(rel) + ": created (" + what + ")\n";
  return out;
}

// ---------------------------------------------------------------------------------------------------
// Fixtures: one per suite name, all with SRC and DST in a fresh temporary directory.

class BackupFixture : public SrcDstTest {
 protected:
  // A first full copy that must succeed and match.
  void full_copy() {
    RunResult r = copy();
    ASSERT_EQ(r.status, 0) << describe(r);
    ASSERT_EQ(diff_trees(src, dst), "");
  }

  // The regular files of a tree, relative paths, sorted.
  static std::vector<std::string> files_of(const std::string& root) {
    std::vector<std::string> files;
    for (auto& rel : list_tree(root))
      if (S_ISREG(lstat_of(root + "/" + rel).st_mode)) files.push_back(rel);
    return files;
  }
};

class Backup : public BackupFixture {};
class Filters : public BackupFixture {
 protected:
  // Copies with the given filter options into a fresh DST and returns what DST holds.
  std::vector<std::string> copy_filtered(std::vector<std::string> args, const RunOptions& options = {}) {
    RunResult r = copy(std::move(args), options);
    EXPECT_EQ(r.status, 0) << describe(r);
    EXPECT_EQ(r.out, "") << describe(r);
    if (!exists(dst)) return {};
    return list_tree(dst);
  }
};
class DryRun : public BackupFixture {};
class Verify : public BackupFixture {};
class Report : public BackupFixture {};

// ---------------------------------------------------------------------------------------------------
// Incremental backups: -u, --checksum, --ignore-existing, --delete.

TEST_F(Backup, BackupScenarioCopiesOnlyChangesAndMirrorsDeletions) {
  // Twelve files in three directories, all with old times.
  for (int d = 0; d < 3; ++d) make_dir(src + fmt::format("/d{}", d));
  for (int i = 0; i < 12; ++i) {
    std::string path = i < 3 ? fmt::format("{}/f{}.txt", src, i) : fmt::format("{}/d{}/f{}.txt", src, i % 3, i);
    write_old(path, random_bytes(100 + 997 * static_cast<size_t>(i), static_cast<unsigned>(i)), kOldTime + i);
  }
  for (int d = 0; d < 3; ++d) set_times(src + fmt::format("/d{}", d), kOldTime, kOldTime);
  full_copy();

  // Three modifications: contents and mtime; size only (same mtime); mtime only (same contents).
  write_old(src + "/f0.txt", random_bytes(100, 1000), kOldTime + 5000);  // f0 had 100 bytes: same size
  long long f4_mtime = mtime_ns(src + "/d1/f4.txt");
  write_old(src + "/d1/f4.txt", read_file(src + "/d1/f4.txt") + "appended", f4_mtime);
  set_times(src + "/d2/f5.txt", kOldTime, kOldTime + 7777);
  // Two additions, one in a new directory; one deletion.
  write_file(src + "/new1.txt", "new file one\n");
  make_dir(src + "/d0/newdir");
  write_file(src + "/d0/newdir/new2.txt", "new file two\n");
  ASSERT_EQ(::unlink((src + "/d2/f8.txt").c_str()), 0);
  ASSERT_EQ(files_of(src).size(), 13u);

  RunResult r = copy({"-u", "--delete", "--json"});
  EXPECT_EQ(r.status, 0) << describe(r);
  json report = parse_report(r);
  EXPECT_EQ(count(report, "files_copied"), 5) << report.dump(2);
  EXPECT_EQ(count(report, "files_deleted"), 1) << report.dump(2);
  EXPECT_EQ(count(report, "files_skipped"), 8) << report.dump(2);
  EXPECT_EQ(count(report, "exit_status"), 0) << report.dump(2);
  EXPECT_EQ(report.value("errors", json::array()).size(), 0u) << report.dump(2);
  EXPECT_EQ(diff_trees(src, dst), "");
  EXPECT_EQ(read_file(dst + "/f0.txt"), read_file(src + "/f0.txt"));
  EXPECT_FALSE(exists(dst + "/d2/f8.txt"));

  // An unchanged re-run copies nothing and deletes nothing.
  r = copy({"-u", "--delete", "--json"});
  EXPECT_EQ(r.status, 0) << describe(r);
  report = parse_report(r);
  EXPECT_EQ(count(report, "files_copied"), 0) << report.dump(2);
  EXPECT_EQ(count(report, "files_deleted"), 0) << report.dump(2);
  EXPECT_EQ(count(report, "files_skipped"), 13) << report.dump(2);
  EXPECT_EQ(count(report, "bytes_copied"), 0) << report.dump(2);
  EXPECT_EQ(diff_trees(src, dst), "");
}

// -u must decide from metadata alone: a source file nobody may read is skipped without error when
// DST already has it with the same size and mtime (opening it would fail with EACCES).
TEST_F(Backup, UpdateDoesNotOpenUnchangedFiles) {
  write_old(src + "/secret.bin", random_bytes(50'000, 7));
  write_old(src + "/changed.txt", "old contents\n");
  full_copy();
  ASSERT_EQ(::chmod((src + "/secret.bin").c_str(), 0), 0);
  write_old(src + "/changed.txt", "new contents\n", kOldTime + 1);  // same size, newer mtime
  RunOptions as_user = unprivileged(tmp);

  RunResult r = copy({"-u", "--json"}, as_user);
  EXPECT_EQ(r.status, 0) << describe(r);
  json report = parse_report(r);
  EXPECT_EQ(count(report, "files_skipped"), 1) << report.dump(2);
  EXPECT_EQ(count(report, "files_copied"), 1) << report.dump(2);
  EXPECT_EQ(read_file(dst + "/changed.txt"), "new contents\n");

  // Control: the file really is unreadable to that user, so a copy that opens it fails.
  r = copy({"--json"}, as_user);
  EXPECT_EQ(r.status, 1) << "the test's premise (secret.bin unreadable) does not hold\n" << describe(r);
}

// Root may write into a read-only directory: an unchanged -u run leaves the copies of 0555 and 0000
// directories alone (each was opened up to 0755 or 0700 and given its mode back, a ctime change
// on every nightly run), and one with a new file gets it and keeps its mode.
TEST_F(Backup, UpdateAsRootWritesNothingToReadOnlyDirectoriesThatAreUnchanged) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (an ordinary user opens such a directory up to write to it)";
  make_dir(src + "/ro");
  write_old(src + "/ro/f", "in a read-only directory");
  make_dir(src + "/locked");
  write_old(src + "/locked/g", "in a 000 directory");
  ASSERT_EQ(::chmod((src + "/ro").c_str(), 0555), 0);
  ASSERT_EQ(::chmod((src + "/locked").c_str(), 0), 0);
  ASSERT_EQ(copy().status, 0);

  auto before = snapshot(dst);
  RunResult r = copy({"-u"});
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(diff_snapshots(before, snapshot(dst)), "") << "an unchanged run wrote to DST";

  ASSERT_EQ(::chmod((src + "/ro").c_str(), 0755), 0);
  write_old(src + "/ro/new", "added");
  ASSERT_EQ(::chmod((src + "/ro").c_str(), 0555), 0);
  r = copy({"-u"});
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(read_file(dst + "/ro/new"), "added");
  EXPECT_EQ(lstat_of(dst + "/ro").st_mode & 07777, 0555u);
  EXPECT_EQ(lstat_of(dst + "/locked").st_mode & 07777, 0u);
}

// An ordinary user must open up a read-only directory of theirs to write in it, and did so to each
// such directory as the run entered it: every nightly -u run changed their ctimes, even where
// nothing was to be written. Now each is opened up only when something is written in it (a new
// file, a new subdirectory, a leftover temporary to remove) and given its mode back after.
TEST_F(Backup, UpdateAsAUserOpensUpOnlyTheReadOnlyDirectoriesItWritesIn) {
  make_dir(src + "/ro");
  make_dir(src + "/ro/sub");
  make_dir(src + "/rx");
  write_old(src + "/ro/f", "in a read-only directory");
  write_old(src + "/ro/sub/g", "one level down");
  write_old(src + "/rx/h", "in a 0500 directory");
  write_old(src + "/top", "in the read-only top");
  const std::vector<std::pair<std::string, mode_t>> modes = {
      {"/ro/sub", 0555}, {"/ro", 0555}, {"/rx", 0500}, {"", 0555}};
  auto lock = [&] {
    for (auto& [dir, mode] : modes) ASSERT_EQ(::chmod((src + dir).c_str(), mode), 0);
  };
  auto unlock = [&] {
    for (auto it = modes.rbegin(); it != modes.rend(); ++it) ASSERT_EQ(::chmod((src + it->first).c_str(), 0755), 0);
  };
  RunOptions as_user = unprivileged(tmp);
  lock();
  RunResult r = copy({}, as_user);
  ASSERT_EQ(r.status, 0) << describe(r);

  // A directory named like a temporary but not a staged one's is not removed: nothing to write.
  ASSERT_EQ(::chmod((dst + "/ro").c_str(), 0755), 0);
  make_dir(dst + "/ro/.pcopy-99999-2.tmp");
  ASSERT_EQ(::chmod((dst + "/ro").c_str(), 0555), 0);
  ASSERT_EQ(copy({"-u"}, as_user).status, 0);  // gives /ro its time back (mkdir moved it)
  auto before = snapshot(dst);
  r = copy({"-u"}, as_user);
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(diff_snapshots(before, snapshot(dst)), "") << "an unchanged run wrote to DST";

  // Something to write in /ro/sub (a file), /ro (a directory) and the top (a leftover temporary).
  unlock();
  write_old(src + "/ro/sub/new", "added");
  make_dir(src + "/ro/newdir");
  write_old(src + "/ro/newdir/n", "in a new directory");
  if (as_user.uid) chown_tree(src, *as_user.uid, *as_user.uid);
  lock();
  const std::string leftover = dst + "/.pcopy-99999-1.tmp";
  ASSERT_EQ(::chmod(dst.c_str(), 0755), 0);
  write_file(leftover, "half");
  ASSERT_EQ(::chmod(dst.c_str(), 0555), 0);
  before = snapshot(dst);
  r = copy({"-u"}, as_user);
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(read_file(dst + "/ro/sub/new"), "added");
  EXPECT_EQ(read_file(dst + "/ro/newdir/n"), "in a new directory");
  EXPECT_FALSE(exists(leftover)) << "the leftover temporary in the read-only top stays";
  for (auto& [dir, mode] : modes) EXPECT_EQ(lstat_of(dst + dir).st_mode & 07777, mode) << dir;
  auto after = snapshot(dst);
  EXPECT_EQ(before.at("rx"), after.at("rx")) << "a directory nothing was written in was changed";
  EXPECT_EQ(before.at("ro/f"), after.at("ro/f"));

  // A new directory again, made where it belongs at once (-v lists each path only once it is
  // there: nothing is staged), not under a temporary name.
  unlock();
  make_dir(src + "/rx/newdir");
  if (as_user.uid) chown_tree(src, *as_user.uid, *as_user.uid);
  lock();
  r = copy({"-u", "-v"}, as_user);
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_TRUE(exists(dst + "/rx/newdir")) << describe(r);
  EXPECT_EQ(lstat_of(dst + "/rx").st_mode & 07777, 0500u);

  before = snapshot(dst);
  r = copy({"-u"}, as_user);
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(diff_snapshots(before, snapshot(dst)), "") << "an unchanged run wrote to DST";
}

// Only those who may write to a file or in a directory may change its user.* attributes, its owner
// too: -a as a user makes a read-only copy writable for them, as cp -a does, and an -a -u run opens
// up one whose attributes differ from SRC's (DDD: a read-only file's were dropped from its copy,
// silently, and once read-only directories came to be opened up only for what is written in them,
// theirs were left as they were). With an ACL too, written after them (EEE: written first, it took
// the owner's write bit back, and they were dropped). One whose user.* attributes are SRC's is left
// alone, whatever else differs that the user cannot change (a security.* one root set in SRC).
TEST_F(Backup, AnArchiveCopyAsAUserGivesReadOnlyFilesAndDirectoriesTheirAttributes) {
  const std::vector<std::string> dirs = {"/ro", "/acl"};
  std::vector<std::string> entries;
  for (const std::string& dir : dirs) {
    make_dir(src + dir);
    write_old(src + dir + "/f", "a read-only file in a read-only directory");
    entries.push_back(dir);
    entries.push_back(dir + "/f");
  }
  if (::setxattr((src + "/ro").c_str(), "user.tag", "old", 3, 0) != 0) GTEST_SKIP() << "no user xattrs here";
  for (const std::string& entry : entries) {
    ASSERT_EQ(::setxattr((src + entry).c_str(), "user.tag", "old", 3, 0), 0);
    ASSERT_EQ(::setxattr((src + entry).c_str(), "user.gone", "1", 1, 0), 0);
  }
  if (run({"setfacl", "-m", "u:0:r", src + "/acl/f"}).status != 0) GTEST_SKIP() << "no ACLs here (setfacl)";
  ASSERT_EQ(run({"setfacl", "-m", "u:0:rx", src + "/acl"}).status, 0);
  bool labelled = ::geteuid() == 0 && ::setxattr((src + "/ro").c_str(), "security.pcopy_test", "x", 1, 0) == 0;
  RunOptions as_user = unprivileged(tmp);
  auto lock = [&] {
    for (const std::string& entry : entries) ASSERT_EQ(::chmod((src + entry).c_str(), entry.ends_with("/f") ? 0444 : 0555), 0);
  };
  auto unlock = [&] {
    for (auto it = entries.rbegin(); it != entries.rend(); ++it) ASSERT_EQ(::chmod((src + *it).c_str(), 0755), 0);
  };
  lock();
  RunResult r = copy({"-a"}, as_user);
  ASSERT_EQ(r.status, 0) << describe(r);
  for (const std::string& entry : entries) EXPECT_EQ(get_xattr(dst + entry, "user.tag"), "old") << entry;
  if (labelled) {
    ASSERT_FALSE(get_xattr(dst + "/ro", "security.pcopy_test")) << "the premise: the user cannot set it";
  }
  auto before = snapshot(dst);
  r = copy({"-a", "-u"}, as_user);
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(diff_snapshots(before, snapshot(dst)), "") << "an unchanged run wrote to DST";

  unlock();
  for (const std::string& entry : entries) {
    ASSERT_EQ(::setxattr((src + entry).c_str(), "user.tag", "new", 3, 0), 0);
    ASSERT_EQ(::removexattr((src + entry).c_str(), "user.gone"), 0);
  }
  lock();
  // A copy made 0000 since, with an attribute of its own: it too takes one run.
  ASSERT_EQ(::chmod((dst + "/ro/f").c_str(), 0644), 0);
  ASSERT_EQ(::setxattr((dst + "/ro/f").c_str(), "user.stale", "x", 1, 0), 0);
  ASSERT_EQ(::chmod((dst + "/ro/f").c_str(), 0), 0);
  r = copy({"-a", "-u"}, as_user);
  EXPECT_EQ(r.status, 0) << describe(r);
  for (const std::string& entry : entries) {
    EXPECT_EQ(get_xattr(dst + entry, "user.tag"), "new") << entry;
    EXPECT_FALSE(get_xattr(dst + entry, "user.gone")) << entry;
    EXPECT_EQ(lstat_of(dst + entry).st_mode & 07777, entry.ends_with("/f") ? 0444u : 0555u) << entry;
  }
  EXPECT_FALSE(get_xattr(dst + "/ro/f", "user.stale"));
  EXPECT_EQ(get_xattr(dst + "/acl/f", "system.posix_acl_access"), get_xattr(src + "/acl/f", "system.posix_acl_access"));
  EXPECT_EQ(read_file(dst + "/ro/f"), "a read-only file in a read-only directory");
  before = snapshot(dst);
  r = copy({"-a", "-u"}, as_user);
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(diff_snapshots(before, snapshot(dst)), "") << "an unchanged run wrote to DST";
}

// An attribute the user may not read in SRC (a file made 0000 since the last run) is not removed from
// the copy, as if SRC had lost it (EEE); one the user may not write in DST (a copy that is root's) is
// reported, where it was left as it was without a word.
TEST_F(Backup, AnArchiveUpdateAsAUserKeepsAttributesItCannotReadAndReportsThoseItCannotWrite) {
  write_old(src + "/hidden", "its attributes cannot be read");
  write_old(src + "/theirs", "its copy is root's");
  if (::setxattr((src + "/hidden").c_str(), "user.keep", "1", 1, 0) != 0) GTEST_SKIP() << "no user xattrs here";
  ASSERT_EQ(::setxattr((src + "/theirs").c_str(), "user.tag", "new", 3, 0), 0);
  RunOptions as_user = unprivileged(tmp);
  if (!as_user.uid) GTEST_SKIP() << "needs root, to act as an ordinary user";
  RunResult r = copy({"-a"}, as_user);
  ASSERT_EQ(r.status, 0) << describe(r);
  ASSERT_EQ(::chmod((src + "/hidden").c_str(), 0), 0);
  ASSERT_EQ(::chown((dst + "/theirs").c_str(), 0, 0), 0);
  ASSERT_EQ(::chmod((dst + "/theirs").c_str(), 0644), 0);
  ASSERT_EQ(::setxattr((dst + "/theirs").c_str(), "user.tag", "old", 3, 0), 0);
  r = copy({"-a", "-u"}, as_user);
  EXPECT_EQ(r.status, 1) << describe(r);
  EXPECT_EQ(get_xattr(dst + "/hidden", "user.keep"), "1");
  EXPECT_EQ(lstat_of(dst + "/hidden").st_mode & 07777, 0u);
  EXPECT_TRUE(has_line_starting(r.err, "pcopy: cannot keep the extended attributes (user.tag) of 'theirs'")) << describe(r);
  EXPECT_EQ(get_xattr(dst + "/theirs", "user.tag"), "old");
}

// Two names of one file in SRC, copied as one file with two names; then SRC's link is broken and
// one name made private (its times kept, so -u finds both up to date). The private one's mode (and
// owner) was set on the inode both copies share: whichever name came last decided for both, and
// the private file stayed readable by all (FFF). It is copied anew, as cp -a copies it; the other
// name's copy is left as it is.
TEST_F(Backup, AnUpdateNeverChangesTheModeOfAFileThroughALinkSrcNoLongerHas) {
  write_old(src + "/x", "shared text\n");
  ASSERT_EQ(::link((src + "/x").c_str(), (src + "/y").c_str()), 0);
  bool root = ::geteuid() == 0;
  RunResult r = copy({"-a"});
  ASSERT_EQ(r.status, 0) << describe(r);
  ASSERT_EQ(lstat_of(dst + "/x").st_ino, lstat_of(dst + "/y").st_ino) << "the premise: linked in DST";
  ASSERT_EQ(::unlink((src + "/y").c_str()), 0);
  write_old(src + "/y", "shared text\n");  // the same size and time
  ASSERT_EQ(::chmod((src + "/y").c_str(), 0600), 0);
  if (root) {
    ASSERT_EQ(::chown((src + "/y").c_str(), 1000, 1000), 0);
  }
  for (bool dry : {true, false}) {
    r = copy(dry ? std::vector<std::string>{"-a", "-u", "-n"} : std::vector<std::string>{"-a", "-u"});
    EXPECT_EQ(r.status, 0) << describe(r);
    if (dry) {
      EXPECT_EQ(line_set(r.out), (std::multiset<std::string>{"skip x", "replace y"})) << describe(r);
    }
  }
  struct stat x = lstat_of(dst + "/x"), y = lstat_of(dst + "/y");
  EXPECT_NE(x.st_ino, y.st_ino);
  EXPECT_EQ(x.st_mode & 07777, 0644u);
  EXPECT_EQ(y.st_mode & 07777, 0600u);
  if (root) {
    EXPECT_EQ(x.st_uid, 0u);
    EXPECT_EQ(y.st_uid, 1000u);
  }
  EXPECT_EQ(read_file(dst + "/y"), "shared text\n");
  auto before = snapshot(dst);
  r = copy({"-a", "-u"});
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(diff_snapshots(before, snapshot(dst)), "") << "an unchanged run wrote to DST";
}

// A snapshot of the copy, made with cp -al, shares every file's inode with it. An -a -u run must
// neither recopy what is unchanged (GGG: as a user, a file another user owns was copied anew on
// every run, for its owner, which the user cannot set, "differed"), nor change the snapshot's
// files through the shared inodes: a group of two names made private, a name SRC broke off the
// group (GGG: it was checked while its mode still matched, then changed with the group's), a new
// attribute.
// SRC made a name of a file another name of a second file of the same size and mtime (`ln -f a c`,
// as a tool that links files together does). DST still holds the old c, a file of its own that
// looks up to date. Led by it when the walk met it first, -a -u skipped it and replaced the
// right copy of the unchanged a by a link to it: a's copy held c's old data, with status 0, on
// every run after (JJJ). Now neither copy is trusted: the file is copied anew and linked. The
// walk's order decides which name comes first: eight pairs, each linked one way or the other.
TEST_F(Backup, ANameLinkedToAnotherFileOfTheSameSizeAndTimeNeverSpreadsItsStaleCopy) {
  for (int i = 0; i < 8; ++i) {
    write_old(src + fmt::format("/a{}", i), fmt::format("data of a{}\n", i));
    write_old(src + fmt::format("/c{}", i), fmt::format("data of c{}\n", i));
  }
  RunResult r = copy({"-a"});
  ASSERT_EQ(r.status, 0) << describe(r);
  for (int i = 0; i < 8; ++i) {
    std::string a = src + fmt::format("/a{}", i), c = src + fmt::format("/c{}", i);
    if (i % 2) std::swap(a, c);
    ASSERT_EQ(::unlink(c.c_str()), 0);
    ASSERT_EQ(::link(a.c_str(), c.c_str()), 0);
  }
  r = copy({"-a", "-u", "--delete"});
  EXPECT_EQ(r.status, 0) << describe(r);
  for (int i = 0; i < 8; ++i) {
    std::string kept = fmt::format("data of {}{}\n", i % 2 ? "c" : "a", i);
    EXPECT_EQ(read_file(dst + fmt::format("/a{}", i)), kept) << i;
    EXPECT_EQ(read_file(dst + fmt::format("/c{}", i)), kept) << i;
    EXPECT_EQ(lstat_of(dst + fmt::format("/a{}", i)).st_ino, lstat_of(dst + fmt::format("/c{}", i)).st_ino) << i;
  }
  // Linked now: the next run has nothing to do.
  r = copy({"-a", "-u", "--delete"});
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_NE(r.err.find("copied 0 files"), std::string::npos) << describe(r);
}

// The same where the name SRC relinked was a second name of another file (`ln -f a t`, t a name of
// b's file, a and b of the same size and mtime): t's copy, still b's, has as many names as a's file
// now has. It led a's group at once, was skipped as up to date, and a was linked to b's data, status
// 0, on every run after (QQQ). Twelve triples, made in both orders, so that the walk meets t first
// in some and a first in others; and six where a is new, made after the first run, where t's copy
// was the only one and led (SSS): it is a third file's, for it has a name outside the group.
TEST_F(Backup, ANameRelinkedFromAnotherFileOfTheSameSizeAndTimeNeverGivesItsGroupThatData) {
  auto name = [&](char c, int i) { return src + fmt::format("/{}{:02}", c, i); };
  for (int i = 0; i < 18; ++i) {
    if (i % 2 && i < 12) write_old(name('a', i), fmt::format("AAAA{:02}\n", i));
    write_old(name('b', i), fmt::format("BBBB{:02}\n", i));
    ASSERT_EQ(::link(name('b', i).c_str(), name('t', i).c_str()), 0);
    if (i % 2 == 0 && i < 12) write_old(name('a', i), fmt::format("AAAA{:02}\n", i));
  }
  RunResult r = copy({"-a"});
  ASSERT_EQ(r.status, 0) << describe(r);
  for (int i = 0; i < 18; ++i) {
    if (i >= 12) write_old(name('a', i), fmt::format("AAAA{:02}\n", i));
    ASSERT_EQ(::unlink(name('t', i).c_str()), 0);
    ASSERT_EQ(::link(name('a', i).c_str(), name('t', i).c_str()), 0);
  }
  r = copy({"-a", "-u", "--delete"});
  EXPECT_EQ(r.status, 0) << describe(r);
  for (int i = 0; i < 18; ++i) {
    SCOPED_TRACE(i);
    std::string a = dst + fmt::format("/a{:02}", i), b = dst + fmt::format("/b{:02}", i);
    std::string t = dst + fmt::format("/t{:02}", i);
    EXPECT_EQ(read_file(a), fmt::format("AAAA{:02}\n", i));
    EXPECT_EQ(read_file(t), fmt::format("AAAA{:02}\n", i));
    EXPECT_EQ(read_file(b), fmt::format("BBBB{:02}\n", i));
    EXPECT_EQ(lstat_of(a).st_ino, lstat_of(t).st_ino);
    EXPECT_NE(lstat_of(a).st_ino, lstat_of(b).st_ino);
  }
  r = copy({"-a", "-u", "--delete"});
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_NE(r.err.find("copied 0 files"), std::string::npos) << describe(r);
}

// SRC broke a name off a group (h, copied back with its contents, mode and time) and gave the
// group's file a new name (b) and a new mode: the copy of f and h, one inode, has as many names as
// f's file in SRC. The new mode was written through it, and h's copy took it, still linked to f's,
// until the next run (QQQ). Now the copy is counted with the group's names met on it, one: it has
// another, so f's copy is made anew and h's copy keeps its mode.
TEST_F(Backup, ANameSrcBrokeOffAGroupKeepsItsModeWhenTheGroupGetsANewNameAndMode) {
  write_old(src + "/f", "data\n");
  ASSERT_EQ(::link((src + "/f").c_str(), (src + "/h").c_str()), 0);
  RunResult r = copy({"-a"});
  ASSERT_EQ(r.status, 0) << describe(r);
  ASSERT_EQ(lstat_of(dst + "/f").st_ino, lstat_of(dst + "/h").st_ino) << "the premise: linked in DST";
  ASSERT_EQ(::unlink((src + "/h").c_str()), 0);
  write_old(src + "/h", "data\n");  // the same contents, mode and time
  ASSERT_EQ(::chmod((src + "/f").c_str(), 0600), 0);
  ASSERT_EQ(::link((src + "/f").c_str(), (src + "/b").c_str()), 0);
  r = copy({"-a", "-u", "--delete"});
  EXPECT_EQ(r.status, 0) << describe(r);
  struct stat f = lstat_of(dst + "/f"), b = lstat_of(dst + "/b"), h = lstat_of(dst + "/h");
  EXPECT_EQ(f.st_ino, b.st_ino);
  EXPECT_NE(f.st_ino, h.st_ino);
  EXPECT_EQ(f.st_mode & 07777, 0600u);
  EXPECT_EQ(h.st_mode & 07777, 0644u);
  for (const char* n : {"/f", "/b", "/h"}) EXPECT_EQ(read_file(dst + n), "data\n") << n;
  auto before = snapshot(dst);
  r = copy({"-a", "-u", "--delete"});
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(diff_snapshots(before, snapshot(dst)), "") << "an unchanged run wrote to DST";
}

// Every file of SRC linked from outside it too (a snapshot of SRC kept beside it): no group ever
// has all its names met. Their names waited in one pool with the new names of other groups, and
// 17,000 of them pushed those out: led early by a new name, 543 unchanged files were copied anew and
// relinked (KKK). Names of groups with a copy in DST now wait apart, and fewer. On tmpfs, which
// lists the newest entry first, the new names are met before the names with a copy.
// The same with 1,100 groups of two names, linked as the last run left them, walked between c and
// a: waiting in one pool of at most 1,024 names, they pushed c's group out before a was met, and
// c's stale copy was spread again (LLL). A group whose copy has as many names as SRC's file has
// waits in a window of its own. On tmpfs, which lists the newest entry first, the walk meets y/c,
// mid, x/a, z.
TEST_F(Backup, AStaleCopyIsNotSpreadThoughThousandsOfLinkedNamesLieBetween) {
  Mount shm(tmp / "shm", Mount::Tmpfs{"size=64m"});
  if (!shm.mounted()) GTEST_SKIP() << shm.why();
  std::string from = tmp / "shm/src", to = tmp / "shm/dst";
  for (const char* d : {"", "/z", "/x", "/mid", "/y"}) make_dir(from + d);
  write_old(from + "/x/a", "data of a\n");
  for (int i = 0; i < 1100; ++i) {
    write_file(from + fmt::format("/z/m{}", i), "m");
    ASSERT_EQ(::link((from + fmt::format("/z/m{}", i)).c_str(), (from + fmt::format("/mid/m{}", i)).c_str()), 0);
  }
  write_old(from + "/y/c", "data of c\n");
  RunResult r = run_pcopy({"-a", "-q", from, to});
  ASSERT_EQ(r.status, 0) << describe(r);
  ASSERT_EQ(::unlink((from + "/y/c").c_str()), 0);
  ASSERT_EQ(::link((from + "/x/a").c_str(), (from + "/y/c").c_str()), 0);
  r = run_pcopy({"-a", "-u", from, to});
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(read_file(to + "/x/a"), "data of a\n");
  EXPECT_EQ(read_file(to + "/y/c"), "data of a\n");
  EXPECT_EQ(lstat_of(to + "/x/a").st_ino, lstat_of(to + "/y/c").st_ino);
}

TEST_F(Backup, NewNamesOfFilesLinkedFromOutsideSrcAreLinkedWithNoDataCopied) {
  Mount shm(tmp / "shm", Mount::Tmpfs{"size=256m,nr_inodes=100k"});
  if (!shm.mounted()) GTEST_SKIP() << shm.why();
  std::string from = tmp / "shm/src", out = tmp / "shm/out", to = tmp / "shm/dst";
  make_dir(from);
  make_dir(out);
  constexpr int kFiles = 17'000;
  for (int d = 0; d < 20; ++d) make_dir(from + fmt::format("/d{}", d));
  for (int i = 0; i < kFiles; ++i) {
    std::string f = from + fmt::format("/d{}/f{}", i % 20, i);
    write_file(f, std::to_string(i));
    ASSERT_EQ(::link(f.c_str(), (out + fmt::format("/o{}", i)).c_str()), 0);
  }
  RunResult r = run_pcopy({"-a", "-q", from, to});
  ASSERT_EQ(r.status, 0) << describe(r);
  make_dir(from + "/new");
  int added = 0;
  for (int i = 0; i < kFiles; i += 7, ++added)
    ASSERT_EQ(::link((from + fmt::format("/d{}/f{}", i % 20, i)).c_str(), (from + fmt::format("/new/n{}", i)).c_str()), 0);
  std::map<std::string, struct stat> before;
  for (std::string name : {"/d0/f0", "/d1/f1"}) before[name] = lstat_of(to + name);
  r = run_pcopy({"-a", "-u", from, to});
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_TRUE(has_line_starting(r.err, fmt::format("pcopy: copied {},{:03} files, 1 dir, 0 links, 0 B in", added / 1000, added % 1000)))
      << describe(r);
  for (auto& [name, st] : before) EXPECT_EQ(lstat_of(to + name).st_ino, st.st_ino) << name << " copied anew";
  EXPECT_EQ(lstat_of(to + "/d1/f1").st_ctim.tv_nsec, before["/d1/f1"].st_ctim.tv_nsec) << "not linked anew: untouched";
  EXPECT_EQ(lstat_of(to + "/new/n0").st_ino, before["/d0/f0"].st_ino);
}

TEST_F(Backup, AnUpdateLeavesASnapshotLinkedToTheCopyAsItWas) {
  make_dir(src + "/a");
  make_dir(src + "/b");
  write_old(src + "/a/f", "grouped\n");
  ASSERT_EQ(::link((src + "/a/f").c_str(), (src + "/a/g").c_str()), 0);
  ASSERT_EQ(::link((src + "/a/f").c_str(), (src + "/b/f").c_str()), 0);
  write_old(src + "/solo", "alone\n");
  write_old(src + "/theirs", "another user's\n");
  RunOptions as_user = unprivileged(tmp);
  if (as_user.uid) {
    ASSERT_EQ(::chown((src + "/theirs").c_str(), 0, 0), 0);
  }
  bool tags = ::setxattr((src + "/solo").c_str(), "user.tag", "old", 3, 0) == 0;
  RunResult r = copy({"-a"}, as_user);
  ASSERT_EQ(r.status, 0) << describe(r);
  const std::string snap = tmp / "snap";
  make_dir(snap);
  for (const std::string& rel : list_tree(dst)) {
    if (S_ISDIR(lstat_of(dst + "/" + rel).st_mode)) make_dir(snap + "/" + rel);
    else ASSERT_EQ(::link((dst + "/" + rel).c_str(), (snap + "/" + rel).c_str()), 0) << rel;
  }
  auto before = snapshot(dst), before_snap = snapshot(snap);
  r = copy({"-a", "-u"}, as_user);
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(diff_snapshots(before, snapshot(dst)), "") << "an unchanged run wrote to DST";
  EXPECT_EQ(diff_snapshots(before_snap, snapshot(snap)), "") << "an unchanged run wrote to the snapshot";

  ASSERT_EQ(::unlink((src + "/b/f").c_str()), 0);
  write_old(src + "/b/f", "grouped\n");
  if (as_user.uid) {
    ASSERT_EQ(::chown((src + "/b/f").c_str(), *as_user.uid, *as_user.uid), 0);
  }
  ASSERT_EQ(::chmod((src + "/a/f").c_str(), 0600), 0);
  ASSERT_EQ(::chmod((src + "/solo").c_str(), 0600), 0);
  if (tags) {
    ASSERT_EQ(::setxattr((src + "/solo").c_str(), "user.tag", "new", 3, 0), 0);
  }
  r = copy({"-a", "-u"}, as_user);
  EXPECT_EQ(r.status, 0) << describe(r);
  for (const char* rel : {"/a/f", "/a/g", "/solo"}) EXPECT_EQ(lstat_of(dst + rel).st_mode & 07777, 0600u) << rel;
  EXPECT_EQ(lstat_of(dst + "/a/f").st_ino, lstat_of(dst + "/a/g").st_ino) << "the group stays linked";
  EXPECT_EQ(lstat_of(dst + "/b/f").st_mode & 07777, 0644u);
  EXPECT_NE(lstat_of(dst + "/b/f").st_ino, lstat_of(dst + "/a/f").st_ino);
  if (tags) {
    EXPECT_EQ(get_xattr(dst + "/solo", "user.tag"), "new");
  }
  for (const std::string& rel : list_tree(snap)) {
    struct stat st = lstat_of(snap + "/" + rel);
    if (!S_ISDIR(st.st_mode)) {
      EXPECT_EQ(st.st_mode & 07777, 0644u) << "the snapshot's " << rel << " changed";
    }
  }
  if (tags) {
    EXPECT_EQ(get_xattr(snap + "/solo", "user.tag"), "old");
  }
  before = snapshot(dst);
  r = copy({"-a", "-u"}, as_user);
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(diff_snapshots(before, snapshot(dst)), "") << "an unchanged run wrote to DST";
}

// A directory SRC did not let the user read one night is copied empty, with its mode 0000: the next
// nights, once SRC's is readable again, must get into that copy (theirs), as rsync does, and so into
// one made 0000, 0100, 0200 or 0300 in DST by hand. They failed "Permission denied" for good.
TEST_F(Backup, AUsersDirectoryCopiedUnreadableOneNightIsFilledTheNext) {
  make_dir(src + "/sub");
  write_old(src + "/sub/g", "there from the start");
  RunOptions as_user = unprivileged(tmp);
  RunResult r = copy({}, as_user);
  ASSERT_EQ(r.status, 0) << describe(r);

  ASSERT_EQ(::chmod((src + "/sub").c_str(), 0), 0);
  r = copy({"-u"}, as_user);
  if (as_user.uid) {  // root reads it anyway
    EXPECT_EQ(r.status, 1) << describe(r);
    EXPECT_EQ(lstat_of(dst + "/sub").st_mode & 07777, 0u);
  }
  ASSERT_EQ(::chmod((src + "/sub").c_str(), 0755), 0);
  write_old(src + "/sub/g2", "added while it was unreadable");
  if (as_user.uid) chown_tree(src, *as_user.uid, *as_user.uid);
  r = copy({"-u"}, as_user);
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(lstat_of(dst + "/sub").st_mode & 07777, 0755u);
  EXPECT_EQ(read_file(dst + "/sub/g2"), "added while it was unreadable");

  for (mode_t damaged : {0000, 0100, 0200, 0300, 0600}) {
    SCOPED_TRACE(fmt::format("DST's copy made {:04o}", damaged));
    write_old(src + "/sub/g", fmt::format("changed while it was {:04o}", damaged), kOldTime + damaged + 1);
    if (as_user.uid) chown_tree(src, *as_user.uid, *as_user.uid);
    ASSERT_EQ(::chmod((dst + "/sub").c_str(), damaged), 0);
    // A dry run cannot look inside (it writes nothing): what is in SRC's is listed as new.
    r = copy({"-u", "-n"}, as_user);
    EXPECT_EQ(r.status, 0) << describe(r);
    if (as_user.uid) {
      EXPECT_TRUE(has_line(r.out, "copy sub/g")) << describe(r);
    }
    EXPECT_FALSE(has_line(r.out, "copy sub/")) << "it is there, unseen\n" << describe(r);
    // What --delete would remove in one it may not list is not known: said (EEE: the dry run said
    // nothing of it).
    r = copy({"-u", "-n", "--delete"}, as_user);
    EXPECT_EQ(r.status, 0) << describe(r);
    if (as_user.uid && !(damaged & 0400)) {
      EXPECT_TRUE(has_line_starting(r.err, "pcopy: warning: 'sub': a dry run may not look into it")) << describe(r);
    }
    EXPECT_EQ(lstat_of(dst + "/sub").st_mode & 07777, damaged);
    r = copy({"-u"}, as_user);
    EXPECT_EQ(r.status, 0) << describe(r);
    EXPECT_EQ(lstat_of(dst + "/sub").st_mode & 07777, 0755u);
    ASSERT_EQ(::chmod((dst + "/sub").c_str(), 0755), 0);  // for the reads below, whatever the outcome
    EXPECT_EQ(read_file(dst + "/sub/g"), fmt::format("changed while it was {:04o}", damaged));
  }
  // DST itself.
  write_old(src + "/top", "new at the top");
  if (as_user.uid) chown_tree(src, *as_user.uid, *as_user.uid);
  ASSERT_EQ(::chmod(dst.c_str(), 0), 0);
  r = copy({"-u", "-n", "--delete"}, as_user);
  EXPECT_EQ(r.status, 0) << describe(r);
  if (as_user.uid) {
    EXPECT_TRUE(has_line(r.out, "copy top")) << describe(r);
    EXPECT_TRUE(has_line_starting(r.err, "pcopy: warning: '.': a dry run may not look into it")) << describe(r);
  }
  EXPECT_EQ(lstat_of(dst).st_mode & 07777, 0u);
  r = copy({"-u"}, as_user);
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(lstat_of(dst).st_mode & 07777, lstat_of(src).st_mode & 07777);
  ASSERT_EQ(::chmod(dst.c_str(), 0755), 0);
  EXPECT_EQ(read_file(dst + "/top"), "new at the top");
}

// A time after 2038 on ext4 with small inodes is cut to 2038-01-19 03:14:07 when the copy is made, as
// the kernel cuts it for cp: -u takes that for the source's time, where it copied the file again
// on every run.
TEST_F(Backup, UpdateSkipsACopyWhoseTimeTheDestinationCutToTheEndOfItsRange) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (loop-mount an ext4 image)";
  Mount small(tmp / "small", Mount::LoopExt3Times{tmp / "small.img"});
  if (!small.mounted()) GTEST_SKIP() << small.why();
  dst = tmp / "small/dst";
  write_old(src + "/future", "from 2100\n", 4'102'444'800'000'000'000LL);
  write_old(src + "/now", "today\n");
  ASSERT_EQ(copy().status, 0);
  ASSERT_EQ(lstat_of(dst + "/future").st_mtim.tv_sec, INT32_MAX) << "the premise: DST ends in 2038";
  RunResult r = copy({"-u", "--json"});
  EXPECT_EQ(r.status, 0) << describe(r);
  json report = parse_report(r);
  EXPECT_EQ(count(report, "files_copied"), 0) << report.dump(2);
  EXPECT_EQ(count(report, "files_skipped"), 2) << report.dump(2);

  // Where DST holds later times, a copy made at that very second is another time: a file changed
  // since, to the same size and a time after it, is copied (it was taken for the same).
  dst = tmp / "full_range";
  write_old(src + "/future", "from 2038\n", int64_t(INT32_MAX) * 1'000'000'000LL);
  ASSERT_EQ(copy().status, 0);
  write_old(src + "/future", "from 2040\n", 2'208'988'800'000'000'000LL);
  r = copy({"-u"});
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(read_file(dst + "/future"), "from 2040\n");
}

// A destination that keeps times to the second (ext3, ext4 with small inodes; exFAT and FAT are
// coarser still): -u recognises the copies it made by their mtime cut to that resolution, where
// it recopied every file on every run, and leaves them untouched.
TEST_F(Backup, UpdateSkipsUnchangedFilesOnADestinationWithCoarseTimes) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (loop-mount an ext4 image)";
  Mount coarse(tmp / "coarse", Mount::LoopExt3Times{tmp / "coarse.img"});
  if (!coarse.mounted()) GTEST_SKIP() << coarse.why();
  dst = tmp / "coarse/dst";
  for (int i = 0; i < 3; ++i) write_old(src + fmt::format("/f{}", i), fmt::format("file {}\n", i), kOldTime + 123'456'789 * (i + 1));
  ASSERT_EQ(copy().status, 0);
  ASSERT_EQ(mtime_ns(dst + "/f0") % 1'000'000'000, 0) << "the premise: DST keeps whole seconds";
  struct stat before = lstat_of(dst + "/f1");

  RunResult r = copy({"-u", "--json"});
  EXPECT_EQ(r.status, 0) << describe(r);
  json report = parse_report(r);
  EXPECT_EQ(count(report, "files_copied"), 0) << report.dump(2);
  EXPECT_EQ(count(report, "files_skipped"), 3) << report.dump(2);
  struct stat after = lstat_of(dst + "/f1");
  EXPECT_EQ(after.st_ino, before.st_ino);
  EXPECT_EQ(ns_of(after.st_ctim), ns_of(before.st_ctim)) << "an unchanged copy was written to";
  // Nor its directories: an up-to-date copy made read-only is no error (their times, compared to
  // the nanosecond, were rewritten on every run, and failed here).
  std::string mnt = tmp / "coarse";
  ASSERT_EQ(::mount(nullptr, mnt.c_str(), nullptr, MS_REMOUNT | MS_RDONLY, nullptr), 0) << std::strerror(errno);
  r = copy({"-u"});
  EXPECT_EQ(r.status, 0) << describe(r);
  ASSERT_EQ(::mount(nullptr, mnt.c_str(), nullptr, MS_REMOUNT, nullptr), 0) << std::strerror(errno);

  write_old(src + "/f1", "FILE 1\n", kOldTime + 5'000'000'000LL);  // same size, a later second
  r = copy({"-u", "--json"});
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(count(parse_report(r), "files_copied"), 1) << describe(r);
  EXPECT_EQ(read_file(dst + "/f1"), "FILE 1\n");
}

// A DST that keeps whole seconds, where a copy's times are all even (exfat-fuse gives every file
// its mtime as atime and ctime): a change of a second is a change. -u took such a copy for FAT's
// (2 s) and kept the old contents of a file edited 1.2 s later, exit 0.
TEST_F(Backup, UpdateNoticesAChangeOfASecondWhereTimesAreWholeSecondsAndEven) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (loop-mount an exFAT image through FUSE)";
  Mount exfat(tmp / "exfat", Mount::FuseExfat{tmp / "exfat.img"});
  if (!exfat.mounted()) GTEST_SKIP() << exfat.why();
  dst = tmp / "exfat/dst";
  write_old(src + "/f", "AAAA\n", kOldTime + 500'000'000);
  copy();  // exFAT keeps no modes: errors that are not this test's business
  struct stat copy_st = lstat_of(dst + "/f");  // not read: that would set its atime
  ASSERT_EQ(copy_st.st_size, 5);
  for (const struct timespec& t : {copy_st.st_atim, copy_st.st_mtim, copy_st.st_ctim})
    ASSERT_TRUE(t.tv_nsec == 0 && t.tv_sec % 2 == 0) << "the premise: times in whole, even seconds";
  write_old(src + "/f", "BBBB\n", kOldTime + 1'700'000'000);  // same size, 1.2 s later
  RunResult r = copy({"-u", "--json"});
  EXPECT_EQ(count(parse_report(r), "files_copied"), 1) << describe(r);
  EXPECT_EQ(read_file(dst + "/f"), "BBBB\n");
}

// A new name -a -u links to a copy DST has: its manifest line gives the source's mtime, as every
// line does, not the copy's, which a DST keeping whole seconds cut.
TEST_F(Backup, ManifestGivesTheSourcesTimeForANewLinkName) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (loop-mount an ext4 image)";
  Mount coarse(tmp / "coarse", Mount::LoopExt3Times{tmp / "coarse.img"});
  if (!coarse.mounted()) GTEST_SKIP() << coarse.why();
  dst = tmp / "coarse/dst";
  const long long mtime = kOldTime + 123'456'789;
  write_old(src + "/a", "a\n", mtime);
  ASSERT_EQ(copy({"-a", "-u"}).status, 0);
  ASSERT_EQ(::link((src + "/a").c_str(), (src + "/b").c_str()), 0);
  std::string manifest = tmp / "m.jsonl";
  RunResult r = copy({"-a", "-u", "--manifest", manifest});
  ASSERT_EQ(r.status, 0) << describe(r);
  auto lines = lines_of(read_file(manifest));
  ASSERT_EQ(lines.size(), 1u) << read_file(manifest);
  json line = json::parse(lines[0]);
  EXPECT_EQ(line.at("path"), "b");
  EXPECT_EQ(line.at("mtime_ns").get<long long>(), mtime) << lines[0];
}

TEST_F(Backup, ChecksumDetectsSameSizeSameMtimeChange) {
  write_old(src + "/data.bin", "AAAAAAAAAAAAAAAA");
  write_old(src + "/same.bin", "unchanged");
  full_copy();
  write_old(src + "/data.bin", "BBBBBBBBBBBBBBBB");  // same size, same mtime, other contents

  RunResult r = copy({"-u", "--json"});
  EXPECT_EQ(r.status, 0) << describe(r);
  json report = parse_report(r);
  EXPECT_EQ(count(report, "files_copied"), 0) << report.dump(2);
  EXPECT_EQ(count(report, "files_skipped"), 2) << report.dump(2);
  EXPECT_EQ(read_file(dst + "/data.bin"), "AAAAAAAAAAAAAAAA") << "-u looks at size and mtime only";

  // --checksum alone implies -u and compares contents.
  r = copy({"--checksum", "--json"});
  EXPECT_EQ(r.status, 0) << describe(r);
  report = parse_report(r);
  EXPECT_EQ(count(report, "files_copied"), 1) << report.dump(2);
  EXPECT_EQ(count(report, "files_skipped"), 1) << report.dump(2);
  EXPECT_EQ(read_file(dst + "/data.bin"), "BBBBBBBBBBBBBBBB");
  EXPECT_EQ(diff_trees(src, dst), "");

  r = copy({"-u", "--checksum", "--json"});
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(count(parse_report(r), "files_copied"), 0) << describe(r);
}

// A directory's extended attributes and default ACL removed in SRC are removed from the copy by
// the next -a run, with or without -u (rsync -aAX does the same); a changed one is rewritten.
TEST_F(Backup, ArchiveRerunRemovesDirectoryXattrsAndAclsGoneFromSource) {
  make_dir(src + "/d");
  write_old(src + "/d/f", "f");
  if (::setxattr((src + "/d").c_str(), "user.gone", "1", 1, 0) != 0) GTEST_SKIP() << "no user xattrs here";
  ASSERT_EQ(::setxattr((src + "/d").c_str(), "user.kept", "old", 3, 0), 0);
  bool acls = pcopy_test::set_default_acl(src + "/d");
  CompareOptions all;
  all.xattrs = true;
  for (std::string update : {"", "-u"}) {
    SCOPED_TRACE(update.empty() ? "-a" : "-a -u");
    std::vector<std::string> args{"-a"};
    if (!update.empty()) args.push_back(update);
    RunResult r = copy(args);
    ASSERT_EQ(r.status, 0) << describe(r);
    ASSERT_EQ(diff_trees(src, dst, all), "");
    ASSERT_EQ(::removexattr((src + "/d").c_str(), "user.gone"), 0);
    ASSERT_EQ(::setxattr((src + "/d").c_str(), "user.kept", "new", 3, 0), 0);
    if (acls) {
      ASSERT_EQ(::removexattr((src + "/d").c_str(), "system.posix_acl_default"), 0);
    }
    r = copy(args);
    EXPECT_EQ(r.status, 0) << describe(r);
    EXPECT_EQ(diff_trees(src, dst, all), "");
    // Back as it was for the next round.
    ASSERT_EQ(::setxattr((src + "/d").c_str(), "user.gone", "1", 1, 0), 0);
    ASSERT_EQ(::setxattr((src + "/d").c_str(), "user.kept", "old", 3, 0), 0);
    if (acls) {
      ASSERT_TRUE(pcopy_test::set_default_acl(src + "/d"));
    }
  }
}

// -u skips the data of an unchanged file, not the rest: a file made private in SRC must become
// private in the backup too (rsync -a does the same). Only what differs is written.
TEST_F(Backup, UpdateBringsModeOwnerAndXattrsOfSkippedFilesUpToDate) {
  bool root = ::geteuid() == 0;
  for (const char* name : {"private", "owned", "tagged", "untagged", "same"}) write_old(src + "/" + name, name);
  ASSERT_EQ(::symlink("same", (src + "/link").c_str()), 0);
  if (::setxattr((src + "/untagged").c_str(), "user.gone", "1", 1, 0) != 0) GTEST_SKIP() << "no user xattrs here";
  RunResult r = copy({"-a"});
  ASSERT_EQ(r.status, 0) << describe(r);
  long long same_ctime = ns_of(lstat_of(dst + "/same").st_ctim);

  ASSERT_EQ(::chmod((src + "/private").c_str(), 0600), 0);
  ASSERT_EQ(::setxattr((src + "/tagged").c_str(), "user.tag", "new", 3, 0), 0);
  ASSERT_EQ(::removexattr((src + "/untagged").c_str(), "user.gone"), 0);
  if (root) {
    ASSERT_EQ(::chown((src + "/owned").c_str(), 1234, 5678), 0);
    ASSERT_EQ(::lchown((src + "/link").c_str(), 1234, 5678), 0);
  }
  r = copy({"-a", "-u", "--json"});
  EXPECT_EQ(r.status, 0) << describe(r);
  json report = parse_report(r);
  EXPECT_EQ(count(report, "files_copied"), 0) << report.dump(2);
  EXPECT_EQ(count(report, "files_skipped"), 6) << report.dump(2);
  CompareOptions all;
  all.owners = root;
  all.xattrs = true;
  EXPECT_EQ(diff_trees(src, dst, all), "");
  EXPECT_EQ(ns_of(lstat_of(dst + "/same").st_ctim), same_ctime) << "an unchanged file was written to";

  // Without -a the mode still follows, as it does on a copy.
  ASSERT_EQ(::chmod((src + "/private").c_str(), 0640), 0);
  r = copy({"-u"});
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(lstat_of(dst + "/private").st_mode & 07777, 0640u);
}

// -a -u leaves a skipped file with SRC's attributes even when its copy changed after the source
// did. Two ways that happens: pcopy replaced a name the copy shared an inode with (SRC broke the
// hard link; the copy's link count, so its ctime, moved), or someone set an attribute on the copy.
// The attribute was kept for ever: compared only when the source's ctime was the newer.
TEST_F(Backup, UpdateRemovesAttributesTheSourceNoLongerHas) {
  write_old(src + "/f", "data\n");
  if (::setxattr((src + "/f").c_str(), "user.tag", "secret", 6, 0) != 0) GTEST_SKIP() << "no user xattrs here";
  ASSERT_EQ(::link((src + "/f").c_str(), (src + "/g").c_str()), 0);
  write_old(src + "/plain", "plain\n");
  RunResult r = copy({"-q", "-a"});
  ASSERT_EQ(r.status, 0) << describe(r);
  // f: a new inode, without the attribute, the same bytes and time; g: changed.
  ASSERT_EQ(::unlink((src + "/f").c_str()), 0);
  write_old(src + "/f", "data\n");
  write_old(src + "/g", "changed\n", kOldTime + 1'000'000'000);
  ASSERT_EQ(::setxattr((dst + "/plain").c_str(), "user.stray", "1", 1, 0), 0);
  CompareOptions all;
  all.xattrs = true;
  for (int run = 0; run < 2; ++run) {
    SCOPED_TRACE(run);
    r = copy({"-a", "-u"});
    EXPECT_EQ(r.status, 0) << describe(r);
  }
  EXPECT_EQ(diff_trees(src, dst, all), "");
  EXPECT_FALSE(get_xattr(dst + "/f", "user.tag"));
  EXPECT_FALSE(get_xattr(dst + "/plain", "user.stray"));
}

// A copy made without -a (cp -r, rsync -a without -X, pcopy without -a) is newer than its source,
// yet lacks the source's attributes: -a -u gives them, as rsync -X does (it compared them only
// when the source's ctime was the newer). A chown of the copy drops its file capabilities: they are
// given back. An unchanged -a -u run then writes nothing at all: no file, link or directory
// changes, not even its ctime, and hard links already made are skipped, not counted as copied.
// Directories with attributes too (a user xattr, a default ACL): their mode was written every run.
TEST_F(Backup, UpdateGivesAttributesToACopyMadeWithoutThemThenWritesNothing) {
  bool root = ::geteuid() == 0;
  write_old(src + "/tagged", "tagged");
  write_old(src + "/ping", "a program");
  make_dir(src + "/sub");
  write_old(src + "/sub/one", "linked");
  ASSERT_EQ(::link((src + "/sub/one").c_str(), (src + "/two").c_str()), 0);
  if (::setxattr((src + "/tagged").c_str(), "user.tag", "v", 1, 0) != 0) GTEST_SKIP() << "no user xattrs here";
  make_dir(src + "/tagged_dir");
  ASSERT_EQ(::setxattr((src + "/tagged_dir").c_str(), "user.tag", "d", 1, 0), 0);
  make_dir(src + "/acl_dir");
  if (!pcopy_test::set_default_acl(src + "/acl_dir")) GTEST_SKIP() << "no ACLs here";
  // cap_net_raw+ep, as setcap writes it (VFS_CAP_REVISION_2).
  const std::string cap("\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00", 20);
  if (root) {
    ASSERT_EQ(::setxattr((src + "/ping").c_str(), "security.capability", cap.data(), cap.size(), 0), 0);
  }
  ASSERT_EQ(copy().status, 0);
  ASSERT_FALSE(get_xattr(dst + "/tagged", "user.tag")) << "the premise: a copy without -a has no attributes";

  RunResult r = copy({"-a", "-u"});
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(get_xattr(dst + "/tagged", "user.tag"), "v");
  if (root) {
    EXPECT_EQ(get_xattr(dst + "/ping", "security.capability"), cap);
  }
  EXPECT_EQ(lstat_of(dst + "/two").st_ino, lstat_of(dst + "/sub/one").st_ino) << "the hard link is made";

  if (root) {
    ASSERT_EQ(::chown((dst + "/ping").c_str(), 1234, 1234), 0);
    ASSERT_EQ(::setxattr((dst + "/ping").c_str(), "security.capability", cap.data(), cap.size(), 0), 0);
    r = copy({"-a", "-u"});
    EXPECT_EQ(r.status, 0) << describe(r);
    EXPECT_EQ(lstat_of(dst + "/ping").st_uid, 0u);
    EXPECT_EQ(get_xattr(dst + "/ping", "security.capability"), cap) << "chown dropped it and it was not given back";
  }

  auto before = snapshot(dst);
  r = copy({"-a", "-u", "--json"});
  EXPECT_EQ(r.status, 0) << describe(r);
  json report = parse_report(r);
  EXPECT_EQ(count(report, "files_copied"), 0) << report.dump(2);
  EXPECT_EQ(count(report, "files_skipped"), 4) << report.dump(2);
  EXPECT_EQ(diff_snapshots(before, snapshot(dst)), "") << "an unchanged run wrote to DST";
  r = copy({"-a", "-u", "-n"});
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(line_set(r.out), (std::multiset<std::string>{"skip ping", "skip sub/one", "skip tagged", "skip two"}))
      << describe(r);

  // Changed, the linked file is copied anew and its other name linked again: the dry run says so.
  write_old(src + "/sub/one", "linked, changed", kOldTime + 1);
  r = copy({"-a", "-u", "-n"});
  EXPECT_EQ(line_set(r.out), (std::multiset<std::string>{"skip ping", "replace sub/one", "skip tagged", "replace two"}))
      << describe(r);
  r = copy({"-a", "-u", "--json"});
  EXPECT_EQ(count(parse_report(r), "files_copied"), 2) << describe(r);
}

// --checksum skips a file of equal contents whatever its time, and then gives it the source's time.
TEST_F(Backup, ChecksumGivesSkippedFilesTheSourceTime) {
  write_old(src + "/data.bin", "same contents");
  full_copy();
  set_times(src + "/data.bin", kOldTime, kOldTime + 1'000'000'000);
  RunResult r = copy({"--checksum", "--json"});
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(count(parse_report(r), "files_skipped"), 1) << describe(r);
  EXPECT_EQ(mtime_ns(dst + "/data.bin"), kOldTime + 1'000'000'000);
}

// A time past the 64 bits of nanoseconds (1677 to 2262) is the source's all the same: a --checksum
// skip gives it back, and the manifest writes it in full. (Before, 2400 came back as 1815.)
TEST_F(Backup, TimesPastSixtyFourBitNanosecondsAreKept) {
  const timespec far = {13'569'465'600 + 7, 123'456'789};  // 2400-01-01: ext4 and tmpfs keep it
  write_file(src + "/far", "same contents");
  const timespec times[2] = {far, far};
  ASSERT_EQ(::utimensat(AT_FDCWD, (src + "/far").c_str(), times, 0), 0);
  std::string manifest = tmp / "manifest.jsonl";
  RunResult r = copy({"-a", "--manifest", manifest});
  ASSERT_EQ(r.status, 0) << describe(r);
  EXPECT_NE(read_file(manifest).find("\"mtime_ns\":13569465607123456789,"), std::string::npos) << read_file(manifest);
  EXPECT_TRUE(json::accept(read_file(manifest)));

  ASSERT_EQ(::utimensat(AT_FDCWD, (dst + "/far").c_str(), nullptr, 0), 0);  // now
  r = copy({"-a", "--checksum", "--json"});
  ASSERT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(count(parse_report(r), "files_skipped"), 1) << describe(r);
  struct stat st = lstat_of(dst + "/far");
  EXPECT_EQ(st.st_mtim.tv_sec, far.tv_sec);
  EXPECT_EQ(st.st_mtim.tv_nsec, far.tv_nsec);
}

// A skipped file whose metadata cannot be set is an error naming it, not a silent success.
TEST_F(Backup, UpdateReportsMetadataItCannotSet) {
  write_old(src + "/theirs", "someone else's");
  full_copy();
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to make DST's file belong to someone else";
  ASSERT_EQ(::chmod((src + "/theirs").c_str(), 0600), 0);
  RunOptions as_user = unprivileged(tmp);
  ASSERT_EQ(::chown((dst + "/theirs").c_str(), 0, 0), 0);  // unprivileged() gave the tree to nobody
  RunResult r = copy({"-u"}, as_user);
  EXPECT_EQ(r.status, 1) << describe(r);
  EXPECT_NE(r.err.find("'theirs'"), std::string::npos) << describe(r);
  EXPECT_NE(r.err.find("Operation not permitted"), std::string::npos) << describe(r);
  EXPECT_EQ(lstat_of(dst + "/theirs").st_mode & 07777, 0644u) << "left as it was";
}

TEST_F(Backup, IgnoreExistingNeverReplaces) {
  for (std::string option : {"--ignore-existing", "--no-clobber"}) {
    SCOPED_TRACE(option);
    TempDir where;
    std::string d = where / "dst";
    make_dir(d);
    write_file(d + "/a.txt", "destination version, newer and longer\n");
    write_old(src + "/a.txt", "source version\n");
    write_old(src + "/b.txt", "only in source\n");
    long long before = mtime_ns(d + "/a.txt");

    RunResult r = run_pcopy({option, "--json", src, d});
    EXPECT_EQ(r.status, 0) << describe(r);
    json report = parse_report(r);
    EXPECT_EQ(count(report, "files_copied"), 1) << report.dump(2);
    EXPECT_EQ(count(report, "files_skipped"), 1) << report.dump(2);
    EXPECT_EQ(read_file(d + "/a.txt"), "destination version, newer and longer\n");
    EXPECT_EQ(mtime_ns(d + "/a.txt"), before);
    EXPECT_EQ(read_file(d + "/b.txt"), "only in source\n");
  }
}

// -a --ignore-existing, SRC's names `a` and `b` one file, DST already holding `b`: `b` is kept, and
// `a` gets SRC's contents, as with cp -an and rsync -aH --ignore-existing. When the walk met `b`
// first, `a` was linked to the file DST kept: someone else's data, or a link or FIFO planted there.
// The dry run says what the real run does (it said `replace b`).
// A name added in SRC to a hard-linked file whose copy is in DST, met before the names that copy
// has (a directory's files come before its subdirectories): -a -u links it to that copy. It
// copied the data again, as a new inode, and linked the other names to that. A group all new in
// an existing DST is copied once. The dry run says so before.
TEST_F(Backup, ArchiveUpdateLinksANewNameMetFirstToTheCopyThere) {
  make_dir(src + "/sub");
  const std::string big = random_bytes(1 << 20, 5);
  write_old(src + "/sub/old", big);
  ASSERT_EQ(::link((src + "/sub/old").c_str(), (src + "/sub/other").c_str()), 0);
  ASSERT_EQ(copy({"-a"}).status, 0);
  const ino_t copy_ino = lstat_of(dst + "/sub/old").st_ino;
  ASSERT_EQ(::link((src + "/sub/old").c_str(), (src + "/new").c_str()), 0);
  write_old(src + "/n1", "new group\n");
  ASSERT_EQ(::link((src + "/n1").c_str(), (src + "/sub/n2").c_str()), 0);

  RunResult dry = copy({"-a", "-u", "-n"});
  EXPECT_EQ(dry.status, 0) << describe(dry);
  for (const char* line : {"copy new", "copy n1", "copy sub/n2", "skip sub/old", "skip sub/other"})
    EXPECT_TRUE(has_line(dry.out, line)) << line << "\n" << describe(dry);

  RunResult r = copy({"-a", "-u", "--json", "-v"});
  EXPECT_EQ(r.status, 0) << describe(r);
  json report = parse_report(r);
  EXPECT_EQ(count(report, "files_copied"), 3) << report.dump(2);
  EXPECT_EQ(count(report, "files_skipped"), 2) << report.dump(2);
  EXPECT_EQ(count(report, "bytes_copied"), 10) << report.dump(2);  // n1's data, once
  EXPECT_EQ(lstat_of(dst + "/sub/old").st_ino, copy_ino) << "the copy there is replaced";
  EXPECT_EQ(lstat_of(dst + "/sub/other").st_ino, copy_ino);
  EXPECT_EQ(lstat_of(dst + "/new").st_ino, copy_ino) << "the new name is not linked to the copy there";
  EXPECT_EQ(lstat_of(dst + "/sub/n2").st_ino, lstat_of(dst + "/n1").st_ino);
  EXPECT_EQ(lstat_of(dst + "/n1").st_nlink, 2u);
  EXPECT_EQ(read_file(dst + "/new"), big);
  EXPECT_EQ(read_file(dst + "/sub/n2"), "new group\n");
}

// A snapshot-style tree: 2,000 names linked to files DST has, all met before them. None is copied
// again (past a quarter of the window of jobs in flight, 1,024 were).
TEST_F(Backup, ArchiveUpdateLinksThousandsOfNewNamesMetFirst) {
  make_dir(src + "/old");
  for (int i = 0; i < 2000; ++i) write_old(src + fmt::format("/old/f{}", i), fmt::format("file {}\n", i));
  ASSERT_EQ(copy({"-a"}).status, 0);
  for (int i = 0; i < 2000; ++i)
    ASSERT_EQ(::link((src + fmt::format("/old/f{}", i)).c_str(), (src + fmt::format("/f{}", i)).c_str()), 0);
  RunResult r = copy({"-a", "-u", "--json"});
  EXPECT_EQ(r.status, 0) << describe(r);
  json report = parse_report(r);
  EXPECT_EQ(count(report, "bytes_copied"), 0) << report.dump(2);
  EXPECT_EQ(count(report, "files_skipped"), 2000) << report.dump(2);
  int apart = 0;
  for (int i = 0; i < 2000; ++i)
    apart += lstat_of(dst + fmt::format("/f{}", i)).st_ino != lstat_of(dst + fmt::format("/old/f{}", i)).st_ino;
  EXPECT_EQ(apart, 0);
}

// Nor is a name whose DST entry is of another type (a directory) taken for the group's copy: the
// name with the copy leads, skipped, and the other fails alone. It led, failed, and the copy was
// written again.
TEST_F(Backup, ArchiveUpdateLeadsALinkGroupWithACopyOfTheSourcesType) {
  // Met in this order: new, a/dd, a/b/kept (a directory's files before its subdirectories).
  make_dirs(src + "/a/b");
  write_old(src + "/a/b/kept", "up to date\n");
  ASSERT_EQ(::link((src + "/a/b/kept").c_str(), (src + "/a/dd").c_str()), 0);
  ASSERT_EQ(copy({"-a"}).status, 0);
  const ino_t copy_ino = lstat_of(dst + "/a/b/kept").st_ino;
  ASSERT_EQ(::link((src + "/a/b/kept").c_str(), (src + "/new").c_str()), 0);
  ASSERT_EQ(::unlink((dst + "/a/dd").c_str()), 0);
  make_dir(dst + "/a/dd");
  RunResult r = copy({"-a", "-u", "--json"});
  EXPECT_EQ(r.status, 1) << describe(r);
  EXPECT_TRUE(has_line(r.err, "pcopy: cannot copy 'a/dd': Is a directory")) << describe(r);
  EXPECT_EQ(count(parse_report(r), "bytes_copied"), 0) << r.out;
  EXPECT_EQ(lstat_of(dst + "/a/b/kept").st_ino, copy_ino) << "the copy there is replaced";
  EXPECT_EQ(lstat_of(dst + "/new").st_ino, copy_ino);
}

TEST_F(Backup, IgnoreExistingNeverLinksANewNameToTheFileItKept) {
  make_dir(dst);
  for (int i = 0; i < 12; ++i) {  // both orders, whatever the file system lists first
    std::string a = src + fmt::format("/a{:02}", i), b = src + fmt::format("/b{:02}", i);
    write_file(i % 2 ? b : a, fmt::format("source {}\n", i));
    ASSERT_EQ(::link((i % 2 ? b : a).c_str(), (i % 2 ? a : b).c_str()), 0);
    if (i == 3) {
      ASSERT_EQ(::symlink("/etc/hostname", (dst + fmt::format("/b{:02}", i)).c_str()), 0);
    } else {
      write_file(dst + fmt::format("/b{:02}", i), "kept in the destination\n");
    }
  }
  RunResult dry = copy({"-n", "-a", "--ignore-existing", "--json"});
  EXPECT_EQ(dry.status, 0) << describe(dry);
  EXPECT_EQ(dry.err.find("replace "), std::string::npos) << describe(dry);
  EXPECT_EQ(count(parse_report(dry), "files_copied"), 12) << dry.out;
  // A stored report tells a dry run from a copy (RRR), as does its summary, which has no rate.
  EXPECT_EQ(parse_report(dry).at("dry_run"), true) << dry.out;
  EXPECT_TRUE(has_line_starting(dry.err, "pcopy: would copy 12 files, ")) << describe(dry);
  EXPECT_EQ(dry.err.find("/s)"), std::string::npos) << describe(dry);
  RunResult r = copy({"-a", "--ignore-existing", "--json"});
  EXPECT_EQ(r.status, 0) << describe(r);
  json report = parse_report(r);
  EXPECT_EQ(report.at("dry_run"), false) << report.dump(2);
  EXPECT_EQ(count(report, "files_copied"), 12) << report.dump(2);
  EXPECT_EQ(count(report, "files_skipped"), 12) << report.dump(2);
  for (int i = 0; i < 12; ++i) {
    SCOPED_TRACE(i);
    std::string a = dst + fmt::format("/a{:02}", i);
    EXPECT_TRUE(S_ISREG(lstat_of(a).st_mode));
    if (S_ISREG(lstat_of(a).st_mode)) {
      EXPECT_EQ(read_file(a), fmt::format("source {}\n", i));
    }
  }
  EXPECT_EQ(read_link(dst + "/b03"), "/etc/hostname");
  EXPECT_EQ(read_file(dst + "/b00"), "kept in the destination\n");
}

// A directory of SRC pcopy may not list: nothing is deleted, though the rest was read. Also when
// the copy of that directory cannot be opened either (a copy with the source's mode, 0311): that
// does not make SRC read.
TEST_F(Backup, DeleteRefusesAfterWalkError) {
  write_old(src + "/ok.txt", "fine\n");
  make_dir(src + "/locked");
  write_old(src + "/locked/inner.txt", "inside\n");
  full_copy();
  RunOptions as_user = unprivileged(tmp);  // gives the tree to the user: chmod after it
  for (mode_t copy_mode : {0755, 0311}) {
    SCOPED_TRACE(fmt::format("the copy's mode {:04o}", copy_mode));
    write_file(dst + "/extra.txt", "extraneous, but must survive a partial walk\n");
    ASSERT_EQ(::chmod((src + "/locked").c_str(), copy_mode == 0755 ? 0 : 0311), 0);
    ASSERT_EQ(::chmod((dst + "/locked").c_str(), copy_mode), 0);

    // A dry run says it in its own tense (it said "deleted", I10).
    RunResult dry = copy({"--delete", "-n"}, as_user);
    EXPECT_EQ(dry.status, 1) << describe(dry);
    EXPECT_NE(dry.err.find("pcopy: --delete would delete nothing extraneous"), std::string::npos) << describe(dry);
    RunResult r = copy({"--delete", "--json"}, as_user);
    EXPECT_EQ(r.status, 1) << describe(r);
    EXPECT_NE(r.err.find("pcopy: --delete deleted nothing extraneous"), std::string::npos) << describe(r);
    EXPECT_TRUE(exists(dst + "/extra.txt")) << "--delete ran after a failed walk\n" << describe(r);
    ASSERT_EQ(::chmod((dst + "/locked").c_str(), 0755), 0);
    EXPECT_TRUE(exists(dst + "/locked/inner.txt")) << describe(r);
    json report = parse_report(r);
    EXPECT_EQ(count(report, "exit_status"), 1) << report.dump(2);
    EXPECT_EQ(count(report, "files_deleted"), 0) << report.dump(2);
    // A run-wide error: no path at fault (it said "."), in the words of its line.
    json skipped = {{"path", ""},
                    {"reason", "--delete deleted nothing extraneous: reading SRC failed, so nothing in DST is known "
                               "to be extraneous"}};
    json errors = report.value("errors", json::array());
    EXPECT_EQ(std::count(errors.begin(), errors.end(), skipped), 1) << report.dump(2);
  }
}

// A directory of SRC pcopy may list but not search (0444): its files are errors of their own, and
// the deletions go on, whether or not the walk stats each entry (the bar, -a, -n do). They were
// held back only there: a run in cron deleted, the same at a terminal not, and -n foretold the
// opposite of the real run (I8).
TEST_F(Backup, AFileThatCannotBeLookedAtHoldsNoDeletionBackInAnyMode) {
  make_dir(src + "/listed");
  write_old(src + "/listed/a", "a\n");
  write_old(src + "/ok.txt", "fine\n");
  full_copy();
  write_file(dst + "/listed/a", "the old copy\n");
  RunOptions as_user = unprivileged(tmp);  // gives the tree to the user: chmod after it
  ASSERT_EQ(::chmod((src + "/listed").c_str(), 0444), 0);
  for (std::vector<std::string> mode : {std::vector<std::string>{}, {"-a"}, {"-n"}, {"--progress=always"}}) {
    SCOPED_TRACE(mode.empty() ? "plain" : mode[0]);
    write_file(dst + "/extra.txt", "extraneous\n");
    mode.insert(mode.end(), {"--delete", "--json"});
    RunResult r = copy(mode, as_user);
    EXPECT_EQ(r.status, 1) << describe(r);
    EXPECT_TRUE(has_line(r.err, "pcopy: cannot copy 'listed/a': Permission denied")) << describe(r);
    EXPECT_EQ(r.err.find("deleted nothing extraneous"), std::string::npos) << describe(r);
    EXPECT_EQ(count(parse_report(r), "files_deleted"), 1) << r.out;
    EXPECT_EQ(exists(dst + "/extra.txt"), mode[0] == "-n") << describe(r);
    EXPECT_EQ(read_file(dst + "/listed/a"), "the old copy\n");
  }
}

// A directory with more subdirectories than pcopy may open files: --delete goes into every one.
// It held each one open until its turn, and one it could not open (EMFILE) was skipped without a
// word: its extraneous entries stayed, status 0.
TEST_F(Backup, DeleteEntersEverySubdirectoryUnderALowOpenFileLimit) {
  for (int i = 0; i < 300; ++i) make_dir(src + fmt::format("/s{:03}", i));
  full_copy();
  for (int i = 0; i < 300; ++i) write_file(dst + fmt::format("/s{:03}/extra", i), "gone from SRC\n");
  RunOptions options;
  options.nofile = 64;
  RunResult r = copy({"-u", "--delete", "--json"}, options);
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(count(parse_report(r), "files_deleted"), 300) << r.out;
  EXPECT_EQ(diff_trees(src, dst), "");
}

// An extraneous tree deeper than the open-file limit has descriptors for is removed whole, as
// `rm -rf` removes it (it failed from the 50th level under `ulimit -n 64`).
TEST_F(Backup, DeleteRemovesATreeDeeperThanTheOpenFileLimit) {
  write_file(src + "/f", "f\n");
  full_copy();
  make_dir(dst + "/old");
  make_deep_dirs(dst + "/old", 150);
  std::string bottom = dst + "/old";
  for (int i = 0; i < 150; ++i) bottom += "/d";
  write_file(bottom + "/last", "gone from SRC\n");
  RunOptions options;
  options.nofile = 64;
  RunResult r = copy({"--delete"}, options);
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(lines_of(r.err).size(), 1u) << describe(r);  // the summary alone
  EXPECT_EQ(diff_trees(src, dst), "");
}

// --fail-fast stopping --delete in a read-only extraneous tree of the user's deeper than the 16
// levels it holds open: every directory it opened up to empty gets its mode back. Those more than
// 16 levels above the deepest stayed 0755 (I8: 11 of 31).
TEST_F(Backup, AStoppedDeleteGivesEveryLevelOfADeepReadOnlyTreeItsModeBack) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root: a directory of root's in the tree, which the user cannot empty";
  write_file(src + "/k", "k\n");
  std::vector<std::string> levels{dst + "/x"};
  make_dirs(levels.back());
  for (int i = 1; i <= 30; ++i) {
    levels.push_back(levels.back() + fmt::format("/l{}", i));
    make_dir(levels.back());
    for (int f = 1; f <= 3; ++f) write_file(levels.back() + fmt::format("/f{}", f), "f\n");
  }
  RunOptions as_user = unprivileged(tmp);  // gives the tree to the user: root's directory after it
  make_dir(levels[25] + "/aaa_root");
  write_file(levels[25] + "/aaa_root/r", "");
  for (auto it = levels.rbegin(); it != levels.rend(); ++it) ASSERT_EQ(::chmod(it->c_str(), 0555), 0);
  RunResult r = copy({"--delete", "--fail-fast", "-j1"}, as_user);
  EXPECT_EQ(r.status, 1) << describe(r);
  EXPECT_TRUE(has_line_starting(r.err, "pcopy: stopping at the first error (--fail-fast)")) << describe(r);
  for (const std::string& level : levels) EXPECT_EQ(lstat_of(level).st_mode & 07777, 0555u) << level;
}

// At the lowest open-file limit pcopy accepts for its -j, --delete still removes a deep extraneous
// tree: it had 16 levels open, 16 directories held for later and a listing's descriptor on top of
// the pool's pipes, and failed with "Too many open files" and then "Directory not empty" for the
// same directory, exit 1, under limits it had accepted (`-j8` at 40, `-j2` at 28 to 32).
TEST_F(Backup, DeleteRemovesADeepTreeAtTheLowestOpenFileLimitAccepted) {
  write_file(src + "/f", "f\n");
  for (int i = 0; i < 20; ++i) make_dir(src + "/keep" + std::to_string(i));  // held for later
  full_copy();
  for (const char* jobs : {"-j8", "-j2"}) {
    SCOPED_TRACE(jobs);
    for (int i = 0; i < 20; ++i) {
      std::string n = std::to_string(i);
      make_dirs(dst + "/keep" + n + "/old");
      make_deep_dirs(dst + "/keep" + n + "/old", 3);
      make_dirs(dst + "/old" + n);
      make_deep_dirs(dst + "/old" + n, 30);
      write_file(dst + "/old" + n + "/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/f", "gone from SRC\n");
    }
    RunOptions probe;
    probe.nofile = 8;
    RunResult refused = copy({jobs, "--delete"}, probe);
    std::smatch m;
    std::regex needs("needs at least ([0-9]+) open files");
    ASSERT_TRUE(std::regex_search(refused.err, m, needs)) << describe(refused);
    RunOptions lowest;
    lowest.nofile = std::stol(m[1]);
    RunResult r = copy({jobs, "--delete"}, lowest);
    EXPECT_EQ(r.status, 0) << describe(r);
    EXPECT_EQ(lines_of(r.err).size(), 1u) << describe(r);  // the summary alone
    EXPECT_EQ(diff_trees(src, dst), "");
  }
}

// Descriptors pcopy starts with (leaked by a CI runner, a daemon, Python's close_fds=False) count
// against the limit like its own: at the lowest limit accepted with 100 of them open, a deep copy
// and its --delete complete. They were not counted: whole subtrees failed with "Too many open
// files" where cp -a copies everything. One fewer is refused, naming them.
TEST_F(Backup, DescriptorsPcopyStartsWithCountAgainstTheOpenFileLimit) {
  for (int i = 0; i < 10; ++i) {
    make_dir(src + "/d" + std::to_string(i));
    make_deep_dirs(src + "/d" + std::to_string(i), 20);
    write_file(src + "/d" + std::to_string(i) + "/d/d/d/d/d/d/d/d/d/d/f", "deep\n");
  }
  make_dirs(dst + "/old");
  make_deep_dirs(dst + "/old", 20);
  RunOptions probe;
  probe.nofile = 110;  // room for the dynamic loader's one
  probe.leaked_fds = 100;
  RunResult refused = copy({"-j2", "--delete"}, probe);
  std::smatch m;
  ASSERT_TRUE(std::regex_search(refused.err, m, std::regex("needs at least ([0-9]+) open files"))) << describe(refused);
  RunOptions lowest = probe;
  lowest.nofile = std::stol(m[1]);
  ASSERT_GT(*lowest.nofile, 100);
  RunResult r = copy({"-j2", "--delete"}, lowest);
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(lines_of(r.err).size(), 1u) << describe(r);  // the summary alone
  EXPECT_EQ(diff_trees(src, dst), "");

  RunOptions fewer = lowest;
  fewer.nofile = *lowest.nofile - 1;
  r = copy({"-j2", "--delete"}, fewer);
  EXPECT_EQ(r.status, 2) << describe(r);
  EXPECT_TRUE(has_line(r.err, fmt::format("pcopy: -j 2 needs at least {} open files; the limit (RLIMIT_NOFILE, ulimit "
                                          "-Hn) is {}, and 100 of them were open already when pcopy started",
                                          *lowest.nofile, *fewer.nofile)))
      << describe(r);
}

// An entry --delete cannot remove is one error line; the directories above it stay without a
// "Directory not empty" line each (as with `rm -rf`).
TEST_F(Backup, DeleteNamesOnlyTheEntryItCannotRemove) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to give DST a directory its user may not change";
  write_file(src + "/f", "f\n");
  full_copy();
  make_dirs(dst + "/stays/a/b/locked");
  write_file(dst + "/stays/a/b/locked/file", "theirs\n");
  write_file(dst + "/stays/a/gone", "removable\n");
  RunOptions as_user = unprivileged(tmp);
  ASSERT_EQ(::chown((dst + "/stays/a/b/locked").c_str(), 0, 0), 0);
  RunResult r = copy({"--delete"}, as_user);
  EXPECT_EQ(r.status, 1) << describe(r);
  EXPECT_EQ(lines_of(r.err).size(), 2u) << describe(r);  // the error, then the summary
  EXPECT_TRUE(has_line(r.err, "pcopy: cannot delete 'stays/a/b/locked/file': Permission denied")) << describe(r);
  EXPECT_TRUE(exists(dst + "/stays/a/b/locked/file"));
  EXPECT_FALSE(exists(dst + "/stays/a/gone"));
}

// SRC renamed "Photos" to "photos": a case-insensitive DST (FAT, exFAT, ext4 casefold, SMB) finds
// the old "Photos" for the new name, and the copy goes into it. --delete then took "Photos" for
// extraneous and removed the tree with what the run had just copied into it, exit 0: the backup
// held no copy at all. It stays, keeps its spelling (as cp -a leaves it), and is looked into as
// SRC spells it, which the filters match.
TEST_F(Backup, DeleteKeepsWhatACaseInsensitiveDstFindsUnderSrcsNewSpelling) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (mount a FUSE file system)";
  Mount fat(tmp / "fat", Mount::FuseFat{tmp / "fat.img"});
  if (!fat.mounted()) GTEST_SKIP() << fat.why();
  make_dirs(src + "/Photos/2024");
  write_file(src + "/Photos/2024/img1.jpg", random_bytes(1000, 1));
  write_file(src + "/Photos/Note.TXT", "note\n");
  std::string backup = tmp / "fat/backup";
  RunResult r = run_pcopy({"-q", src, backup});  // FAT keeps no modes: errors, not our business here
  ASSERT_TRUE(exists(backup + "/Photos/2024/img1.jpg")) << describe(r);
  ASSERT_EQ(::rename((src + "/Photos").c_str(), (src + "/photos").c_str()), 0);
  ASSERT_EQ(::rename((src + "/photos/Note.TXT").c_str(), (src + "/photos/note.txt").c_str()), 0);
  write_file(src + "/photos/2024/new.jpg", "new\n");
  std::ofstream(backup + "/Photos/2024/gone.jpg") << "gone\n";  // extraneous inside the renamed tree
  std::ofstream(backup + "/Photos/keep.txt") << "kept\n";        // excluded as SRC spells its path
  for (const char* dry : {"-n", ""}) {
    SCOPED_TRACE(dry);
    std::vector<std::string> args{"--delete", "-v", "--exclude", "photos/keep.txt", src, backup};
    if (*dry) args.insert(args.begin(), dry);
    r = run_pcopy(args);
    EXPECT_EQ(r.err.find("pcopy: cannot copy"), std::string::npos) << describe(r);
    std::string deleted = *dry ? "delete " : "deleted ";
    std::vector<std::string> deletions;
    for (const std::string& line : lines_of(r.out))
      if (line.starts_with(deleted)) deletions.push_back(line);
    EXPECT_EQ(deletions, std::vector<std::string>{deleted + "photos/2024/gone.jpg"}) << describe(r);
  }
  EXPECT_EQ(read_file(backup + "/photos/keep.txt"), "kept\n");
  EXPECT_EQ(read_file(backup + "/photos/2024/img1.jpg"), read_file(src + "/photos/2024/img1.jpg"));
  EXPECT_EQ(read_file(backup + "/photos/2024/new.jpg"), "new\n");
  EXPECT_EQ(read_file(backup + "/photos/note.txt"), "note\n");
  EXPECT_FALSE(exists(backup + "/photos/2024/gone.jpg"));
}

// --fail-fast stops the removals at the first that fails, as it stops the copies: two files DST's
// user may not remove are one error, then the stop, said on stderr and in the report.
TEST_F(Backup, FailFastStopsTheRemovalsAtTheFirstThatFails) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to give DST a directory its user may not change";
  write_file(src + "/f", "f\n");
  full_copy();
  make_dirs(dst + "/stays/locked");
  write_file(dst + "/stays/locked/one", "theirs\n");
  write_file(dst + "/stays/locked/two", "theirs\n");
  RunOptions as_user = unprivileged(tmp);
  ASSERT_EQ(::chown((dst + "/stays/locked").c_str(), 0, 0), 0);
  RunResult r = copy({"--delete", "--fail-fast", "--json"}, as_user);
  EXPECT_EQ(r.status, 1) << describe(r);
  std::vector<std::string> lines = lines_of(r.err);
  ASSERT_EQ(lines.size(), 3u) << describe(r);  // the error, the stop, the summary
  EXPECT_EQ(lines[0].rfind("pcopy: cannot delete 'stays/locked/", 0), 0u) << describe(r);
  EXPECT_EQ(lines[1], "pcopy: stopping at the first error (--fail-fast): nothing more was deleted") << describe(r);
  auto errors = nlohmann::json::parse(r.out).at("errors");
  ASSERT_EQ(errors.size(), 2u) << r.out;
  EXPECT_EQ(errors[1].at("path"), "") << r.out;
  EXPECT_EQ(errors[1].at("reason"), "stopped: --fail-fast: nothing more was deleted") << r.out;
  EXPECT_TRUE(exists(dst + "/stays/locked/one"));
  EXPECT_TRUE(exists(dst + "/stays/locked/two"));
  // With nothing left after it, no stop is spoken of: not for a directory SRC has too, looked
  // into and found to hold nothing to remove.
  ASSERT_EQ(::unlink((dst + "/stays/locked/two").c_str()), 0);
  make_dirs(src + "/later/deeper");
  write_file(src + "/later/deeper/g", "g\n");
  for (int i = 0; i < 20; ++i) {  // nor for entries excluded (kept), whichever comes first
    write_file(dst + fmt::format("/kept{:02}.log", i), "");
    write_file(dst + fmt::format("/stays/kept{:02}.log", i), "");
  }
  r = copy({"--delete", "--fail-fast", "--json", "--exclude", "*.log"}, as_user);
  EXPECT_EQ(r.status, 1) << describe(r);
  EXPECT_EQ(lines_of(r.err).size(), 2u) << describe(r);  // the error, the summary
  EXPECT_EQ(nlohmann::json::parse(r.out).at("errors").size(), 1u) << r.out;
}

// -a -u --inplace after SRC broke a hard link (a and b one file; a then replaced by a new file):
// a was written through the inode DST's b still shared, then b "copied" back over it: a held b's
// old data, still linked to b, exit 0. A file with other links is replaced, not written through.
TEST_F(Backup, ArchiveInplaceDoesNotWriteThroughALinkSrcBroke) {
  for (const char* replaced : {"a", "b"}) {
    SCOPED_TRACE(replaced);
    std::filesystem::remove_all(src);
    std::filesystem::remove_all(dst);
    make_dir(src);
    write_old(src + "/a", "precious-1\n");
    ASSERT_EQ(::link((src + "/a").c_str(), (src + "/b").c_str()), 0);
    write_old(src + "/c", "linked-2\n");
    ASSERT_EQ(::link((src + "/c").c_str(), (src + "/d").c_str()), 0);
    ASSERT_EQ(copy({"-a", "-u"}).status, 0);
    std::string name = src + "/" + replaced;
    ASSERT_EQ(::unlink(name.c_str()), 0);
    write_file(name, "new contents, longer than before\n");
    write_file(src + "/c", "changed!\n");  // a group SRC keeps, changed through one name
    RunResult r = copy({"-a", "-u", "--inplace"});
    EXPECT_EQ(r.status, 0) << describe(r);
    CompareOptions links;
    links.hardlinks = true;
    EXPECT_EQ(diff_trees(src, dst, links), "") << describe(r);
    EXPECT_EQ(read_file(dst + "/d"), "changed!\n");
  }
}

// The same on another file system, where --inplace writes through links, of a name SRC broke off
// with the same data and time (cp -p) but another mode and no attribute: DST's two names stayed one
// file, b with a's attribute (or a with b's mode), and every -u run wrote both names' metadata in
// turn through it, never done (I7). With -a its copies have SRC's links: b is copied anew.
TEST_F(Backup, ArchiveInplaceSeparatesANameSrcBrokeOffOnAnotherFileSystem) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to mount a tmpfs for DST";
  Mount other(tmp / "other-fs", Mount::Tmpfs{"size=4m"});
  if (!other.mounted()) GTEST_SKIP() << other.why();
  const std::string there = tmp / "other-fs/dst";
  write_old(src + "/a", "data\n");
  ASSERT_EQ(::link((src + "/a").c_str(), (src + "/b").c_str()), 0);
  if (::setxattr((src + "/a").c_str(), "user.tag", "a's", 3, 0) != 0) GTEST_SKIP() << "no user xattrs here";
  ASSERT_EQ(run_pcopy({"-a", src, there}).status, 0);
  write_old(src + "/b.new", "data\n");
  ASSERT_EQ(::chmod((src + "/b.new").c_str(), 0600), 0);
  ASSERT_EQ(::rename((src + "/b.new").c_str(), (src + "/b").c_str()), 0);
  RunResult r = run_pcopy({"-a", "-u", "--inplace", src, there});
  EXPECT_EQ(r.status, 0) << describe(r);
  CompareOptions all;
  all.hardlinks = all.xattrs = true;
  EXPECT_EQ(diff_trees(src, there, all), "");
  auto before = snapshot(there);
  r = run_pcopy({"-a", "-u", "--inplace", src, there});
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(diff_snapshots(before, snapshot(there)), "") << "an unchanged run wrote to DST";
}

// --inplace (without -a) into a `cp -al` snapshot of SRC after a file of SRC was renamed and another
// made under its old name: DST's name is a hard link to a *different* file of SRC, and written
// through, that file of SRC took the new one's data (exit 0; rsync --inplace does the same). Also two
// files that swapped names, and with -u. On SRC's file system a file with other links is replaced.
TEST_F(Backup, InplaceNeverWritesThroughALinkIntoAnotherFileOfSrc) {
  for (std::vector<std::string> args : {std::vector<std::string>{"--inplace"}, {"--inplace", "-u"}}) {
    SCOPED_TRACE(args.back());
    std::filesystem::remove_all(src);
    std::filesystem::remove_all(dst);
    make_dir(src);
    write_old(src + "/report.txt", "precious report v1\n");
    write_old(src + "/a", "the data of a\n");
    write_old(src + "/b", "the data of b, longer\n");
    make_dir(dst);
    for (const char* name : {"report.txt", "a", "b"})
      ASSERT_EQ(::link((src + "/" + name).c_str(), (dst + "/" + name).c_str()), 0);
    ASSERT_EQ(::rename((src + "/report.txt").c_str(), (src + "/report-final.txt").c_str()), 0);
    write_file(src + "/report.txt", "new draft\n");
    ASSERT_EQ(::rename((src + "/a").c_str(), (src + "/t").c_str()), 0);  // a and b swap names
    ASSERT_EQ(::rename((src + "/b").c_str(), (src + "/a").c_str()), 0);
    ASSERT_EQ(::rename((src + "/t").c_str(), (src + "/b").c_str()), 0);
    RunResult r = copy(args);
    EXPECT_EQ(r.status, 0) << describe(r);
    EXPECT_EQ(read_file(src + "/report-final.txt"), "precious report v1\n");
    EXPECT_EQ(read_file(src + "/report.txt"), "new draft\n");
    EXPECT_EQ(read_file(src + "/a"), "the data of b, longer\n");
    EXPECT_EQ(read_file(src + "/b"), "the data of a\n");
    EXPECT_EQ(diff_trees(src, dst), "") << describe(r);
  }
}

// ... and where it cannot be replaced (a directory its user may not write), it fails, as a copy by
// a temporary would, and no name is written through: DST's links need not be SRC's (here ro/x and
// ro/y are one file in DST, linked to other names in SRC), and written through, one name took
// another's data and kept it, exit 0. As root, the next run puts everything right.
TEST_F(Backup, ArchiveInplaceFailsALinkedFileItCannotReplace) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to give DST a directory its user may not write";
  make_dirs(src + "/ro");
  make_dirs(src + "/rw");
  write_old(src + "/ro/x", "old\n");
  ASSERT_EQ(::link((src + "/ro/x").c_str(), (src + "/ro/y").c_str()), 0);
  ASSERT_EQ(copy({"-a"}).status, 0);  // DST: ro/x and ro/y one file
  for (const char* name : {"x", "y"}) {
    std::string path = src + "/ro/" + name;
    ASSERT_EQ(::unlink(path.c_str()), 0);
    write_old(path, name == std::string("x") ? "XX\n" : "YY\n", kOldTime + 1'000'000'000);
    ASSERT_EQ(::link(path.c_str(), (src + "/rw/" + name + "2").c_str()), 0);
  }
  RunOptions as_user = unprivileged(tmp);
  ASSERT_EQ(::chown((dst + "/ro").c_str(), 0, 0), 0);
  RunResult r = copy({"-a", "--inplace"}, as_user);
  EXPECT_EQ(r.status, 1) << describe(r);
  EXPECT_TRUE(has_line(r.err, "pcopy: cannot copy 'ro/x': Permission denied")) << describe(r);
  for (const char* name : {"ro/x", "ro/y", "rw/x2", "rw/y2"}) {
    std::string there = exists(dst + "/" + name) ? read_file(dst + "/" + name) : "";
    std::string own = read_file(src + "/" + name);
    EXPECT_TRUE(there == "old\n" || there == own || there.empty()) << name << " holds " << there;
  }
  r = copy({"-a", "-u", "--inplace"});
  EXPECT_EQ(r.status, 0) << describe(r);
  CompareOptions links;
  links.hardlinks = true;
  EXPECT_EQ(diff_trees(src, dst, links), "");
}

// Another user's link or FIFO at a name in a sticky directory, which the user may not remove: the
// file fails for that reason with --inplace as without. It said "File exists", the open after the
// refused removal (I8).
TEST_F(Backup, InplaceNamesWhyWhatIsAtTheNameCannotBeRemoved) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to put another user's entries in a sticky directory";
  write_file(src + "/l", "new\n");
  write_file(src + "/p", "new\n");
  make_dirs(dst);
  RunOptions as_user = unprivileged(tmp);
  ASSERT_EQ(::chown(dst.c_str(), 0, 0), 0);  // root's, as /tmp is
  ASSERT_EQ(::chmod(dst.c_str(), 01777), 0);
  ASSERT_EQ(::symlink("elsewhere", (dst + "/l").c_str()), 0);
  ASSERT_EQ(::mkfifo((dst + "/p").c_str(), 0644), 0);
  for (bool inplace : {false, true}) {
    SCOPED_TRACE(inplace ? "--inplace" : "by a temporary");
    RunResult r = copy(inplace ? std::vector<std::string>{"--inplace"} : std::vector<std::string>{}, as_user);
    EXPECT_EQ(r.status, 1) << describe(r);
    EXPECT_TRUE(has_line(r.err, "pcopy: cannot copy 'l': Operation not permitted")) << describe(r);
    EXPECT_TRUE(has_line(r.err, "pcopy: cannot copy 'p': Operation not permitted")) << describe(r);
    EXPECT_EQ(read_link(dst + "/l"), "elsewhere");
    EXPECT_TRUE(S_ISFIFO(lstat_of(dst + "/p").st_mode));
  }
}

// `pcopy --json --delete SRC DST > DST/logs/report.json`: the report being written, and the
// directory holding it, stay (they were deleted as extraneous, and the report lost).
TEST_F(Backup, DeleteKeepsTheFileItsOutputGoesToInsideDst) {
  write_file(src + "/f", "f\n");
  full_copy();
  make_dir(dst + "/logs");
  write_file(dst + "/logs/report.json", "");  // as the shell's `>` makes it
  RunOptions options;
  options.stdout_file = dst + "/logs/report.json";
  RunResult r = copy({"--delete", "--json"}, options);
  EXPECT_EQ(r.status, 0) << describe(r);
  ASSERT_TRUE(exists(dst + "/logs/report.json")) << describe(r);
  EXPECT_EQ(count(json::parse(read_file(dst + "/logs/report.json")), "files_deleted"), 0);
}

TEST_F(Backup, DeleteKeepsTheManifestItWritesInsideDst) {
  write_file(src + "/f", "f\n");
  full_copy();
  write_file(dst + "/extra", "x");
  // In DST itself, and in a directory SRC does not have.
  for (std::string manifest : {dst + "/manifest.jsonl", dst + "/reports/nightly/manifest.jsonl"}) {
    SCOPED_TRACE(manifest);
    make_dirs(dst + "/reports/nightly");
    RunResult r = copy({"--delete", "--manifest", manifest});
    EXPECT_EQ(r.status, 0) << describe(r);
    ASSERT_TRUE(exists(manifest)) << "--delete removed the manifest being written\n" << describe(r);
    EXPECT_NE(read_file(manifest).find("\"path\":\"f\""), std::string::npos);
    EXPECT_FALSE(exists(dst + "/extra"));
  }
  EXPECT_FALSE(exists(dst + "/manifest.jsonl")) << "the first manifest is extraneous for the second run";
}

TEST_F(Backup, DeleteRemovesExtraneousFilesDirectoriesAndLinksButKeepsExcluded) {
  write_old(src + "/keep.txt", "kept\n");
  make_dir(src + "/sub");
  write_old(src + "/sub/keep2.txt", "kept too\n");
  full_copy();

  // Extraneous entries of every kind, at the top and below.
  write_file(dst + "/extra.txt", "x");
  write_file(dst + "/sub/extra2.txt", "x");
  make_dirs(dst + "/extradir/deep/deeper");
  write_file(dst + "/extradir/a", "a");
  write_file(dst + "/extradir/deep/deeper/b", "b");
  make_symlink("keep.txt", dst + "/extralink");
  make_symlink("gone", dst + "/dangling");
  // A link to a directory outside DST: the link goes, what it points to stays.
  make_dir(tmp / "outside");
  write_file(tmp / "outside/precious", "not pcopy's to delete");
  make_symlink(tmp / "outside", dst + "/sub/linkdir");
  // Excluded entries are kept, whatever their kind.
  write_file(dst + "/build.o", "o");
  write_file(dst + "/sub/deep.o", "o");
  make_dir(dst + "/cache");
  write_file(dst + "/cache/blob", "c");

  RunResult r = copy({"--delete", "--exclude", "*.o", "--exclude", "cache/", "--json"});
  EXPECT_EQ(r.status, 0) << describe(r);
  std::vector<std::string> expected{"build.o", "cache", "cache/blob", "keep.txt", "sub", "sub/deep.o", "sub/keep2.txt"};
  EXPECT_EQ(list_tree(dst), expected) << describe(r);
  EXPECT_EQ(read_file(tmp / "outside/precious"), "not pcopy's to delete");
  json report = parse_report(r);
  EXPECT_GE(count(report, "files_deleted"), 6) << report.dump(2);
  // With the excluded entries removed too, DST is SRC again, times included.
  for (auto rel : {"build.o", "sub/deep.o", "cache/blob"}) ASSERT_EQ(::unlink((dst + "/" + rel).c_str()), 0);
  ASSERT_EQ(::rmdir((dst + "/cache").c_str()), 0);
  CompareOptions no_times;
  no_times.times = false;
  EXPECT_EQ(diff_trees(src, dst, no_times), "");
}

// A directory gone from SRC is removed with what it holds, except what the filters exclude: that
// stays, and so do the directories holding it (as rsync keeps them). The same where SRC has a file
// in the directory's place: the file cannot take its name then, which is an error.
TEST_F(Backup, DeleteKeepsExcludedEntriesInsideDirectoriesItRemoves) {
  write_old(src + "/f", "f");
  make_dirs(src + "/gone/sub");
  write_old(src + "/gone/notes.keep", "precious");
  write_old(src + "/gone/sub/a.keep", "precious too");
  write_old(src + "/gone/sub/z", "z");
  write_old(src + "/gone/other", "o");
  make_dirs(src + "/was_dir/cache");
  write_old(src + "/was_dir/cache/c", "c");
  write_old(src + "/was_dir/plain", "p");
  full_copy();
  ASSERT_EQ(::system(("rm -rf '" + src + "/gone' '" + src + "/was_dir'").c_str()), 0);
  write_old(src + "/was_dir", "now a file");

  std::vector<std::string> filters{"--exclude", "*.keep", "--exclude", "cache/"};
  std::vector<std::string> dry_args{"--delete", "-n"}, args{"--delete"};
  dry_args.insert(dry_args.end(), filters.begin(), filters.end());
  args.insert(args.end(), filters.begin(), filters.end());
  RunResult dry = copy(dry_args);
  EXPECT_EQ(line_set(dry.out).count("delete gone/other"), 1u) << describe(dry);
  EXPECT_EQ(line_set(dry.out).count("delete gone/sub/z"), 1u) << describe(dry);
  for (const std::string& line : lines_of(dry.out))
    EXPECT_EQ(line.find(".keep"), std::string::npos) << "an excluded entry listed for deletion\n" << describe(dry);

  RunResult r = copy(args);
  EXPECT_EQ(r.status, 1) << describe(r);
  EXPECT_EQ(lines_of(r.err).front(), "pcopy: cannot copy 'was_dir': Is a directory") << describe(r);
  std::vector<std::string> expected{"f",          "gone", "gone/notes.keep", "gone/sub", "gone/sub/a.keep",
                                    "was_dir",    "was_dir/cache", "was_dir/cache/c"};
  EXPECT_EQ(list_tree(dst), expected) << describe(r);
  EXPECT_EQ(read_file(dst + "/gone/sub/a.keep"), "precious too");
}

// An entry SRC has under a name, excluded there as what it is, does not keep DST's entry of another
// kind under that name when the filters do not exclude that one: it is extraneous, as rsync has it.
// Both stayed for good, and -n listed neither (I12).
TEST_F(Backup, DeleteRemovesAnEntryOfAnotherKindThanTheOneSrcExcludesUnderItsName) {
  write_old(src + "/f.c", "c");
  write_old(src + "/gen", "a file now, which '*' excludes");
  make_dir(dst);
  make_dir(dst + "/gen");
  write_file(dst + "/gen/old.c", "of the days gen was a directory");
  // CI's idiom: every directory, the .c files, nothing else.
  std::vector<std::string> rules{"--include", "*/", "--include", "*.c", "--exclude", "*"};
  std::vector<std::string> dry_args{"--delete", "-n"}, args{"--delete"};
  dry_args.insert(dry_args.end(), rules.begin(), rules.end());
  args.insert(args.end(), rules.begin(), rules.end());
  RunResult dry = copy(dry_args);
  EXPECT_EQ(line_set(dry.out).count("delete gen/old.c"), 1u) << describe(dry);
  EXPECT_EQ(line_set(dry.out).count("delete gen"), 1u) << describe(dry);
  RunResult r = copy(args);
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(list_tree(dst), std::vector<std::string>{"f.c"}) << describe(r);

  ASSERT_EQ(::unlink((src + "/gen").c_str()), 0);
  make_dir(src + "/cache");  // excluded as a directory
  write_old(src + "/cache/blob", "b");
  write_file(dst + "/cache", "a file where SRC has an excluded directory");
  dry = copy({"--delete", "-n", "--exclude", "cache/"});
  EXPECT_EQ(line_set(dry.out).count("delete cache"), 1u) << describe(dry);
  r = copy({"--delete", "--exclude", "cache/"});
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(list_tree(dst), std::vector<std::string>{"f.c"}) << describe(r);
}

// Directory modes are set after their contents are copied, before --delete runs: as an ordinary
// user, removing entries from a read-only directory (or a whole read-only directory) means
// opening it up first and putting its mode back.
TEST_F(Backup, DeleteRemovesEntriesOfReadOnlyDirectoriesAsAnOrdinaryUser) {
  make_dir(src + "/ro");
  write_old(src + "/ro/keep", "kept\n");
  full_copy();
  write_file(dst + "/ro/extra", "x");
  make_dirs(dst + "/ro/old/older");
  write_file(dst + "/ro/old/older/f", "y");
  ASSERT_EQ(::chmod((dst + "/ro/old/older").c_str(), 0500), 0);
  ASSERT_EQ(::chmod((dst + "/ro/old").c_str(), 0555), 0);
  ASSERT_EQ(::chmod((src + "/ro").c_str(), 0555), 0);
  set_times(src + "/ro", kOldTime, kOldTime);
  RunOptions as_user = unprivileged(tmp);

  RunResult r = copy({"-u", "--delete", "--json"}, as_user);
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(count(parse_report(r), "files_deleted"), 4) << describe(r);
  EXPECT_EQ(list_tree(dst + "/ro"), std::vector<std::string>{"keep"});
  EXPECT_EQ(diff_trees(src, dst), "") << "the directory's mode and time are SRC's again";
}

// A directory of an extraneous tree opened up to be emptied, that stays for an excluded entry, gets
// its mode back, as rsync leaves it: it was left at 0700 (re-tester JJ).
TEST_F(Backup, DeleteGivesADirectoryThatStaysTheModeItHadBeforeItWasOpenedUp) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to run pcopy as another user";
  make_dir(src + "/k");
  full_copy();
  make_dirs(dst + "/k/Q/R");
  write_file(dst + "/k/Q/keep", "q\n");
  write_file(dst + "/k/Q/junk", "j\n");
  write_file(dst + "/k/Q/R/keep", "r\n");
  RunOptions as_user = unprivileged(tmp);
  ASSERT_EQ(::chmod((dst + "/k/Q/R").c_str(), 0000), 0);
  ASSERT_EQ(::chmod((dst + "/k/Q").c_str(), 0500), 0);
  RunResult r = copy({"-u", "--delete", "--exclude", "keep"}, as_user);
  EXPECT_EQ(r.status, 0) << describe(r);
  struct stat q, rr;
  ASSERT_EQ(::stat((dst + "/k/Q").c_str(), &q), 0);
  ASSERT_EQ(::stat((dst + "/k/Q/R").c_str(), &rr), 0);
  EXPECT_EQ(q.st_mode & 07777, 0500u);
  EXPECT_EQ(rr.st_mode & 07777, 0000u);
  EXPECT_FALSE(exists(dst + "/k/Q/junk"));
  EXPECT_TRUE(exists(dst + "/k/Q/R/keep"));
}

// With -x, --delete leaves alone what the copy does not enter, as `rsync -ax --delete` does: a
// SRC directory on another file system (only the mount point is copied) is not pruned in DST, nor
// is a file system mounted inside DST, whether SRC has its name or not, also below a directory gone
// from SRC (nor is its mount point removed, nor the directories above it).
TEST_F(Backup, DeleteWithOneFileSystemStaysOutOfOtherFileSystems) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (mount tmpfs)";
  make_dirs(src + "/mnt");
  make_dirs(src + "/data");
  write_file(src + "/data/d", "d\n");
  full_copy();
  write_file(dst + "/stale", "extraneous: deleted all the same\n");
  Mount src_mnt(src + "/mnt", Mount::Tmpfs{"size=1m,mode=0755"});
  if (!src_mnt.mounted()) GTEST_SKIP() << src_mnt.why();
  make_dir(src + "/mnt/sub");
  write_file(src + "/mnt/sub/m1", "m1\n");
  make_dirs(dst + "/mnt/sub");
  make_dirs(dst + "/mnt/other");
  write_file(dst + "/mnt/sub/o1", "o1\n");
  write_file(dst + "/mnt/other/o2", "o2\n");
  make_dirs(dst + "/gone");
  write_file(dst + "/gone/f", "extraneous too\n");
  Mount dst_data(dst + "/data", Mount::Tmpfs{"size=1m,mode=0755"});
  Mount dst_vol(dst + "/vol", Mount::Tmpfs{"size=1m,mode=0755"});
  Mount dst_inner(dst + "/gone/inner", Mount::Tmpfs{"size=1m,mode=0755"});
  if (!dst_data.mounted() || !dst_vol.mounted() || !dst_inner.mounted())
    GTEST_SKIP() << dst_data.why() << dst_vol.why() << dst_inner.why();
  make_dir(dst + "/data/old");
  write_file(dst + "/data/old/x", "x\n");
  write_file(dst + "/vol/y", "y\n");
  write_file(dst + "/gone/inner/z", "z\n");

  RunResult r = copy({"-x", "--delete", "-v"});
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_FALSE(exists(dst + "/stale")) << describe(r);
  EXPECT_FALSE(exists(dst + "/gone/f")) << describe(r);
  for (auto kept : {"/mnt/sub/o1", "/mnt/other/o2", "/data/old/x", "/vol/y", "/gone/inner/z"})
    EXPECT_TRUE(exists(dst + kept)) << kept << " deleted across a file system boundary\n" << describe(r);
  EXPECT_EQ(read_file(dst + "/data/d"), "d\n");
}

// A directory that could not be made in DST (here --ignore-existing keeps a file in its place)
// leaves alone only what is at that name: deletions elsewhere go on, and nothing blames SRC.
// With --inplace too, --delete removes a directory where SRC now has a file (the file was an
// error, "Is a directory", though the dry run listed the removal).
TEST_F(Backup, DeleteWithInplaceReplacesADirectoryWhereSourceHasAFile) {
  write_file(src + "/f", "now a file");
  make_dirs(dst + "/f/inner");
  write_file(dst + "/f/inner/old", "old");
  RunResult r = copy({"--inplace", "--delete"});
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(read_file(dst + "/f"), "now a file");
}

// --inplace, run by the owner of DST: a read-only file (0444) is updated as rsync --inplace updates
// it, in place and left read-only. It was "Permission denied" on every run.
TEST_F(Backup, InplaceUpdatesAReadOnlyFileOfTheUsers) {
  write_old(src + "/f", "v1\n");
  ASSERT_EQ(::chmod((src + "/f").c_str(), 0444), 0);
  RunOptions as_user = unprivileged(tmp);
  RunResult r = copy({"-q"}, as_user);
  ASSERT_EQ(r.status, 0) << describe(r);
  ino_t before = lstat_of(dst + "/f").st_ino;
  ASSERT_EQ(::chmod((src + "/f").c_str(), 0644), 0);
  write_file(src + "/f", "v2, longer\n");
  ASSERT_EQ(::chmod((src + "/f").c_str(), 0444), 0);
  r = copy({"-u", "--inplace"}, as_user);
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(read_file(dst + "/f"), "v2, longer\n");
  EXPECT_EQ(lstat_of(dst + "/f").st_mode & 07777, 0444u);
  EXPECT_EQ(lstat_of(dst + "/f").st_ino, before) << "written in place";
}

// Two --delete runs into one DST at once (a cron job overlapping the last): an entry the other
// run removed between listing and unlinking is gone, as it should be, not an error (rsync lets a
// vanished file go too); both runs end with status 0. Each saw ENOENT as a failure: status 1,
// with a "cannot delete" line per entry.
TEST_F(Backup, OverlappingDeleteRunsLetEachOtherRemoveEntries) {
  write_file(src + "/kept", "kept");
  make_dirs(dst + "/gone");
  for (int i = 0; i < 10000; ++i) {
    write_file(dst + fmt::format("/x{}", i), "");
    write_file(dst + fmt::format("/gone/y{}", i), "");
  }
  std::string one = fmt::format("'{}' -q --delete '{}' '{}'", pcopy_bin(), src, dst);
  RunResult r = run({"sh", "-c", one + " & a=$!; " + one + "; b=$?; wait $a; echo $? $b"});
  EXPECT_EQ(r.out, "0 0\n") << describe(r);
  EXPECT_FALSE(r.err.find("cannot delete") != std::string::npos) << describe(r);
  EXPECT_EQ(list_tree(dst), std::vector<std::string>{"kept"});
}

TEST_F(Backup, DeleteGoesOnBesideADirectoryThatCouldNotBeCopied) {
  make_dir(src + "/d");
  write_file(src + "/d/x", "x\n");
  write_file(src + "/f", "f\n");
  make_dir(dst);
  write_file(dst + "/d", "a file where SRC has a directory\n");
  write_file(dst + "/stale", "extraneous\n");

  RunResult r = copy({"--ignore-existing", "--delete", "--json"});
  EXPECT_EQ(r.status, 1) << describe(r);
  EXPECT_NE(r.err.find("cannot copy 'd': the destination has a non-directory of that name"), std::string::npos)
      << describe(r);
  EXPECT_EQ(r.err.find("reading SRC"), std::string::npos) << "SRC was read completely\n" << describe(r);
  EXPECT_EQ(read_file(dst + "/d"), "a file where SRC has a directory\n");
  EXPECT_FALSE(exists(dst + "/stale")) << describe(r);
  EXPECT_EQ(count(parse_report(r), "files_deleted"), 1) << describe(r);
}

// As an ordinary user, the real run opens up a directory of yours it may not read to empty it; the
// dry run, which changes nothing, cannot read it, but lists it for deletion without an error.
TEST_F(Backup, DryRunDeleteListsADirectoryOfYoursItMayNotReadWithoutAnError) {
  make_dirs(dst + "/gone/sub");
  write_file(dst + "/gone/sub/g", "g\n");
  RunOptions as_user = unprivileged(tmp);
  ASSERT_EQ(::chmod((dst + "/gone/sub").c_str(), 0), 0);

  RunResult dry = copy({"-n", "--delete"}, as_user);
  EXPECT_EQ(dry.status, 0) << describe(dry);
  EXPECT_EQ(dry.err.find("cannot delete"), std::string::npos) << describe(dry);
  auto lines = line_set(dry.out);
  EXPECT_EQ(lines.count("delete gone/sub") + lines.count("delete gone/sub/"), 1u) << describe(dry);
  EXPECT_EQ(lines.count("delete gone") + lines.count("delete gone/"), 1u) << describe(dry);
  EXPECT_EQ(lstat_of(dst + "/gone/sub").st_mode & 07777, 0u) << "the dry run changed a mode";

  RunResult r = copy({"--delete"}, as_user);
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_FALSE(exists(dst + "/gone")) << describe(r);
}

TEST_F(Backup, FsyncOptionCopiesCorrectly) {
  make_dirs(src + "/a/b");
  write_old(src + "/empty", "");
  write_old(src + "/a/one.bin", random_bytes(300'000, 1));
  write_old(src + "/a/b/two.bin", random_bytes(4096, 2));
  make_symlink("../one.bin", src + "/a/b/link");
  RunResult r = copy({"--fsync", "-j2"});
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(diff_trees(src, dst), "");
  // Also on an incremental run, with replacements.
  write_old(src + "/a/one.bin", random_bytes(200'000, 3), kOldTime + 1);
  r = copy({"--fsync", "-u"});
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(diff_trees(src, dst), "");
}

// ---------------------------------------------------------------------------------------------------
// Filters.

TEST_F(Filters, PatternWithoutSlashMatchesAtAnyDepth) {
  make_dirs(src + "/x/y");
  for (auto rel : {"a.o", "x/b.o", "x/y/c.o", "keep.c", "x/keep.c", "x/y/keep.c", "x/y/notes.o.txt"}) {
    write_file(src + "/" + rel, rel);
  }
  std::vector<std::string> expected{"keep.c", "x", "x/keep.c", "x/y", "x/y/keep.c", "x/y/notes.o.txt"};
  EXPECT_EQ(copy_filtered({"--exclude", "*.o"}), expected);
}

TEST_F(Filters, TrailingSlashMatchesDirectoriesOnly) {
  make_dirs(src + "/cache");
  make_dirs(src + "/sub/cache");
  make_dirs(src + "/other");
  write_file(src + "/cache/x", "x");
  write_file(src + "/sub/cache/y", "y");
  write_file(src + "/other/cache", "a file named cache is still copied");
  write_file(src + "/keep", "k");
  std::vector<std::string> expected{"keep", "other", "other/cache", "sub"};
  EXPECT_EQ(copy_filtered({"--exclude", "cache/"}), expected);
}

TEST_F(Filters, DoubleStarCrossesSlashSingleStarDoesNot) {
  make_dirs(src + "/a/b/c");
  make_dirs(src + "/other/a");
  for (auto rel : {"top.tmp", "a/x.tmp", "a/b/y.tmp", "a/b/c/z.tmp", "a/keep.txt", "other/a/w.tmp"}) {
    write_file(src + "/" + rel, rel);
  }
  // '**' spans any number of directories (including none); a pattern with '/' is anchored at SRC.
  std::vector<std::string> expected{"a", "a/b", "a/b/c", "a/keep.txt", "other", "other/a", "other/a/w.tmp", "top.tmp"};
  EXPECT_EQ(copy_filtered({"--exclude", "a/**/*.tmp"}), expected);

  TempDir again;
  dst = again / "dst";
  // A single '*' stays within one path component.
  expected = {"a", "a/b", "a/b/c", "a/b/c/z.tmp", "a/b/y.tmp", "a/keep.txt", "other", "other/a", "other/a/w.tmp", "top.tmp"};
  EXPECT_EQ(copy_filtered({"--exclude", "a/*.tmp"}), expected);

  TempDir third;
  dst = third / "dst";
  // '**' alone crosses '/': everything below a, but a itself stays.
  expected = {"a", "other", "other/a", "other/a/w.tmp", "top.tmp"};
  EXPECT_EQ(copy_filtered({"--exclude", "a/**"}), expected);
}

TEST_F(Filters, FirstMatchingRuleWins) {
  make_dir(src + "/sub");
  for (auto rel : {"a.keep", "b.txt", "sub/c.keep", "sub/d.txt"}) write_file(src + "/" + rel, rel);

  // Include before exclude: the .keep files (and the directories, to reach them) survive.
  std::vector<std::string> expected{"a.keep", "sub", "sub/c.keep"};
  EXPECT_EQ(copy_filtered({"--include", "*/", "--include", "*.keep", "--exclude", "*"}), expected);

  // The reverse order: '*' matches first, so nothing is copied.
  TempDir again;
  dst = again / "dst";
  EXPECT_EQ(copy_filtered({"--exclude", "*", "--include", "*.keep"}), std::vector<std::string>{});

  // Exclude a name, but an earlier include of one path under it wins for that path.
  TempDir third;
  dst = third / "dst";
  EXPECT_EQ(copy_filtered({"--include", "sub/c.keep", "--exclude", "*.keep", "--exclude", "sub/*"}),
            std::vector<std::string>({"b.txt", "sub", "sub/c.keep"}));
}

TEST_F(Filters, ExcludedDirectoryIsNotDescended) {
  make_dirs(src + "/private/inner");
  write_file(src + "/private/inner/secret", "s");
  write_file(src + "/private/top", "t");
  write_file(src + "/public", "p");
  RunOptions as_user = unprivileged(tmp);
  // Unreadable to the user pcopy runs as: entering it would be an error.
  ASSERT_EQ(::chmod((src + "/private").c_str(), 0), 0);
  EXPECT_EQ(copy_filtered({"--exclude", "private/"}, as_user), std::vector<std::string>{"public"});
}

TEST_F(Filters, ExcludeFromFileWithCommentsAndPlusMinusLines) {
  make_dirs(src + "/sub");
  make_dirs(src + "/tmp");
  for (auto rel : {"a.log", "important.log", "sub/important.log", "sub/b.log", "tmp/x", "keep.txt", "sub/keep.txt"}) {
    write_file(src + "/" + rel, rel);
  }
  std::string rules = tmp / "rules";
  write_file(rules,
             "# comments and blank lines are ignored\n"
             "\n"
             "+ important.log\n"
             "- *.log\n"
             "# a bare line excludes\n"
             "tmp/\n"
             "#keep.txt\n");
  std::vector<std::string> expected{"important.log", "keep.txt", "sub", "sub/important.log", "sub/keep.txt"};
  EXPECT_EQ(copy_filtered({"--exclude-from", rules}), expected);
}

// rsync's habits: "dir/***" is the directory and everything in it (it matched nothing, silently);
// "--exclude-from -" reads standard input (it was refused: no file '-'); a "!" line drops the rules
// before it (it was taken for a pattern) (HHH).
TEST_F(Filters, RsyncsTripleStarStdinDashAndBangLineWork) {
  make_dirs(src + "/src/build");
  make_dirs(src + "/lib");
  for (auto rel : {"src/main.c", "src/main.o", "src/build/x", "lib/l.o", "top.o"}) write_file(src + "/" + rel, rel);
  std::vector<std::string> only_src{"src", "src/build", "src/build/x", "src/main.c", "src/main.o"};
  EXPECT_EQ(copy_filtered({"--include", "src/***", "--exclude", "*"}), only_src);
  std::filesystem::remove_all(dst);
  std::vector<std::string> no_build{"lib", "lib/l.o", "src", "src/main.c", "src/main.o", "top.o"};
  EXPECT_EQ(copy_filtered({"--exclude", "src/build/***"}), no_build);
  std::filesystem::remove_all(dst);
  RunOptions from_stdin;
  from_stdin.stdin_data = "*.o\n!\n+ src/***\n- *\n";  // the "*.o" rule dropped by the "!"
  EXPECT_EQ(copy_filtered({"--exclude-from", "-"}, from_stdin), only_src);
}

// POSIX classes in brackets, as rsync, the shell and .gitignore read them (YYY): `[[:digit:]]` was
// the bracket `[[:digit:]` and a ']', so the rotated log was copied, and --delete removed the
// snapshot DST alone had, which the rule was to keep. A class of an unknown name is refused:
// matching nothing, as in rsync, it would have done the same.
TEST_F(Filters, PosixClassesInBracketsAreUnderstoodAndUnknownOnesRefused) {
  make_dirs(src + "/Build7");
  for (auto rel : {"app.log", "app.log.1", "app.log.x", "Build7/out", "b7"}) write_file(src + "/" + rel, rel);
  make_dirs(dst + "/snap1");
  write_file(dst + "/snap1/kept", "k");
  std::vector<std::string> expected{"app.log", "app.log.x", "b7", "snap1", "snap1/kept"};
  EXPECT_EQ(copy_filtered({"--delete", "--exclude", "*.[[:digit:]]", "--exclude", "snap[[:digit:]]", "--exclude",
                           "[[:upper:]]*[![:alpha:][:space:]]"}),
            expected);
  std::string rules = tmp / "rules";
  write_file(rules, "+ *.log\n- [[:digt:]]\n");
  for (const std::vector<std::string>& given :
       {std::vector<std::string>{"--exclude", "x[[:Digit:]]"}, {"--include=[[:foo:]]"}, {"--exclude-from", rules},
        {"--exclude", "*.[:digit:]"}}) {
    std::vector<std::string> args = given;
    args.insert(args.end(), {src, tmp / "other"});
    RunResult r = run_pcopy(args);
    EXPECT_EQ(r.status, 2) << describe(r);
    EXPECT_NE(r.err.find("character class"), std::string::npos) << describe(r);
    EXPECT_FALSE(exists(tmp / "other")) << describe(r);
  }
  RunResult r = run_pcopy({"--exclude-from", rules, src, tmp / "other"});
  EXPECT_TRUE(has_line(r.err, fmt::format("pcopy: --exclude-from: '[[:digt:]]' (line 2 of '{}'): unknown character "
                                          "class '[:digt:]'", rules)))
      << describe(r);
}

// ---------------------------------------------------------------------------------------------------
// Dry run.

TEST_F(DryRun, DryRunWritesNothingAndListsActions) {
  make_dir(src + "/keepdir");
  write_old(src + "/same.txt", "same\n");
  write_old(src + "/changed.txt", "old\n");
  write_old(src + "/keepdir/k.txt", "k\n");
  full_copy();
  // SRC changes: one replacement, new file, new directory with a file, new link.
  write_old(src + "/changed.txt", "new!\n", kOldTime + 1);
  write_file(src + "/new.txt", "n\n");
  make_dirs(src + "/newdir/deeper");
  write_file(src + "/newdir/inner.txt", "i\n");
  write_file(src + "/newdir/deeper/f.txt", "f\n");
  make_symlink("same.txt", src + "/newlink");
  // DST extras: a file and a directory tree.
  write_file(dst + "/extra.txt", "e\n");
  make_dirs(dst + "/extradir/deep");
  write_file(dst + "/extradir/deep/x.txt", "x\n");
  set_times(dst, kOldTime, kOldTime);
  set_times(dst + "/extradir", kOldTime, kOldTime);

  auto before = snapshot(dst);
  RunResult r = copy({"-n", "-u", "--delete"});
  auto after = snapshot(dst);
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(diff_snapshots(before, after), "") << describe(r);

  std::multiset<std::string> expected{
      "copy new.txt",         "replace changed.txt",         "skip same.txt",
      "skip keepdir/k.txt",   "copy newdir/",                "copy newdir/inner.txt",
      "copy newdir/deeper/",  "copy newdir/deeper/f.txt",
      "copy newlink",         "delete extra.txt",            "delete extradir/deep/x.txt",
      "delete extradir/deep", "delete extradir",
  };
  std::multiset<std::string> actual;
  for (auto line : lines_of(r.out)) {
    // A deleted directory may be written with or without its trailing '/'.
    if (line.starts_with("delete ") && line.ends_with("/")) line.pop_back();
    actual.insert(line);
  }
  EXPECT_EQ(actual, expected) << "expected:\n" << describe_set(expected) << "actual:\n" << describe_set(actual);
  // The summary counts what would be done: 4 files (link apart), 2 directories, 4 deletions.
  for (auto counted : {"4 files", "2 dirs", "1 link", "2 skipped", "4 deleted"})
    EXPECT_NE(r.err.find(counted), std::string::npos) << counted << "\n" << describe(r);
}

// -a --ignore-existing, a new name in SRC for a symlink or FIFO DST already has: the name is copied
// as what it is. It was copied as a regular file, which failed "file changed type as we read it".
TEST_F(Backup, IgnoreExistingCopiesANewNameOfALinkedSymlinkOrFifo) {
  make_dir(src + "/d");
  ASSERT_EQ(::symlink("target", (src + "/l").c_str()), 0);
  ASSERT_EQ(::mkfifo((src + "/p").c_str(), 0640), 0);
  RunResult r = copy({"-q", "-a"});
  ASSERT_EQ(r.status, 0) << describe(r);
  ASSERT_EQ(::link((src + "/l").c_str(), (src + "/d/l2").c_str()), 0);
  ASSERT_EQ(::link((src + "/p").c_str(), (src + "/d/p2").c_str()), 0);
  r = copy({"-a", "--ignore-existing"});
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(read_link(dst + "/d/l2"), "target");
  EXPECT_TRUE(S_ISFIFO(lstat_of(dst + "/d/p2").st_mode));
}

// Where SRC has a directory and DST a file or a link, --ignore-existing keeps what DST has (as cp -n
// does): the directory is not copied, and that is an error naming it; the dry run says the same.
TEST_F(Backup, IgnoreExistingKeepsAFileWhereSourceHasADirectory) {
  make_dir(src + "/b");
  write_file(src + "/b/x", "x");
  make_dir(src + "/c");
  write_file(src + "/c/y", "y");
  write_file(src + "/ok", "ok");
  make_dir(dst);
  write_file(dst + "/b", "precious\n");
  make_symlink("elsewhere", dst + "/c");
  for (std::string dry : {"-n", ""}) {
    SCOPED_TRACE(dry.empty() ? "real run" : "dry run");
    std::vector<std::string> args{"--ignore-existing"};
    if (!dry.empty()) args.push_back(dry);
    RunResult r = copy(args);
    EXPECT_EQ(r.status, 1) << describe(r);
    for (std::string name : {"b", "c"})
      EXPECT_EQ(line_set(r.err).count("pcopy: cannot copy '" + name +
                                      "': the destination has a non-directory of that name, and "
                                      "--ignore-existing keeps it"),
                1u)
          << describe(r);
    EXPECT_EQ(read_file(dst + "/b"), "precious\n");
    EXPECT_EQ(read_link(dst + "/c"), "elsewhere");
  }
  EXPECT_EQ(read_file(dst + "/ok"), "ok");
}

// The dry run ends as the real run does where an entry changed type: a file in DST where SRC has a
// directory is replaced ("replace b/": the file in DST goes, and a script reading the dry run for
// what it would lose learns so; then its files listed, no error); a directory where SRC has a file
// stops the file ("Is a directory", as cp -a), unless --delete.
TEST_F(DryRun, DryRunAgreesWithTheRealRunWhenAnEntryChangedType) {
  make_dir(src + "/b");
  write_file(src + "/b/x", "x");
  write_file(src + "/a", "new");
  make_dirs(dst + "/a");
  write_file(dst + "/a/k", "keep");
  write_file(dst + "/b", "old");
  RunResult dry = copy({"-n"});
  EXPECT_EQ(dry.status, 1) << describe(dry);
  EXPECT_EQ(line_set(dry.out), (std::multiset<std::string>{"replace b/", "copy b/x"})) << describe(dry);
  EXPECT_EQ(lines_of(dry.err).front(), "pcopy: cannot copy 'a': Is a directory") << describe(dry);
  RunResult real = copy();
  EXPECT_EQ(real.status, 1) << describe(real);
  EXPECT_EQ(lines_of(real.err).front(), "pcopy: cannot copy 'a': Is a directory") << describe(real);
  EXPECT_EQ(read_file(dst + "/b/x"), "x");
  EXPECT_EQ(read_file(dst + "/a/k"), "keep");

  // With --delete the directory makes way for the file, and what goes is listed and counted like
  // any deletion (the dry run's "delete" lines, -v's "deleted" lines, the summary).
  make_dirs(dst + "/a/sub");
  write_file(dst + "/a/sub/s", "s");
  dry = copy({"-n", "--delete"});
  EXPECT_EQ(dry.status, 0) << describe(dry);
  EXPECT_EQ(line_set(dry.out), (std::multiset<std::string>{"delete a/k", "delete a/sub/s", "delete a/sub", "delete a",
                                                            "replace a", "replace b/x"}))
      << describe(dry);
  EXPECT_NE(dry.err.find("4 deleted"), std::string::npos) << describe(dry);
  real = copy({"-v", "--delete"});
  EXPECT_EQ(real.status, 0) << describe(real);
  EXPECT_EQ(line_set(real.out), (std::multiset<std::string>{"deleted a/k", "deleted a/sub/s", "deleted a/sub",
                                                             "deleted a", "a", "b/x"}))
      << describe(real);
  EXPECT_NE(real.err.find("4 deleted"), std::string::npos) << describe(real);
  EXPECT_EQ(read_file(dst + "/a"), "new");
}

TEST_F(DryRun, DryRunIntoMissingDestinationCreatesNothing) {
  make_dir(src + "/sub");
  write_file(src + "/a", "a");
  write_file(src + "/sub/b", "b");
  make_symlink("a", src + "/l");
  std::string target = tmp / "not/there/dst";
  RunResult r = run_pcopy({"-n", src, target});
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_FALSE(exists(tmp / "not")) << describe(r);
  std::multiset<std::string> expected{"copy a", "copy l", "copy sub/", "copy sub/b"};
  auto actual = line_set(r.out);
  // The destination root itself may or may not get a line of its own.
  std::multiset<std::string> extra;
  std::set_difference(actual.begin(), actual.end(), expected.begin(), expected.end(),
                      std::inserter(extra, extra.begin()));
  std::multiset<std::string> missing;
  std::set_difference(expected.begin(), expected.end(), actual.begin(), actual.end(),
                      std::inserter(missing, missing.begin()));
  EXPECT_TRUE(missing.empty()) << "missing lines:\n" << describe_set(missing) << describe(r);
  EXPECT_LE(extra.size(), 1u) << "unexpected lines:\n" << describe_set(extra);
  for (auto& line : extra) EXPECT_TRUE(line.starts_with("copy ") && line.ends_with("/")) << escape_path(line);
  EXPECT_NE(r.err.find("would copy"), std::string::npos) << describe(r);
}

// --reflink=always into a DST not made yet: the dry run asks the file system DST would be made
// on, and names the failures the real run meets (it said "copy", exit 0). On a file system that
// clones, both succeed alike.
TEST_F(DryRun, DryRunIntoMissingDestinationPredictsReflinkAlways) {
  make_dir(src + "/sub");
  write_file(src + "/a", "a");
  write_file(src + "/sub/b", "b");
  auto errors = [](const RunResult& r) {
    std::vector<std::string> lines;
    for (const std::string& line : lines_of(r.err))
      if (line.starts_with("pcopy: cannot")) lines.push_back(line);
    std::sort(lines.begin(), lines.end());
    return lines;
  };
  for (const char* single : {"", "a"}) {
    SCOPED_TRACE(single);
    std::string from = *single ? src + "/" + single : src;
    RunResult dry = run_pcopy({"-n", "--reflink=always", from, tmp / "dry/not/there/"});
    RunResult real = run_pcopy({"--reflink=always", from, tmp / "real/not/there/"});
    EXPECT_FALSE(exists(tmp / "dry")) << describe(dry);
    EXPECT_EQ(dry.status, real.status) << describe(dry) << describe(real);
    std::vector<std::string> predicted = errors(dry), met = errors(real);
    for (std::string& line : predicted)
      if (size_t at = line.find("/dry/"); at != std::string::npos) line.replace(at, 5, "/real/");
    EXPECT_EQ(predicted, met) << describe(dry) << describe(real);
    std::filesystem::remove_all(tmp / "real");
  }
}

// ---------------------------------------------------------------------------------------------------
// --verify.

TEST_F(Verify, VerifyPassesOnGoodCopies) {
  make_dir(src + "/d");
  write_old(src + "/empty", "");
  write_old(src + "/small", "small\n");
  write_old(src + "/d/big.bin", random_bytes(5 * 1024 * 1024 + 17, 9));
  RunResult r = copy({"--verify", "-j3", "--json"});
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(diff_trees(src, dst), "");
  EXPECT_EQ(count(parse_report(r), "files_copied"), 3) << describe(r);
}

// A file others may read but its owner may not (0044), copied by one of the others: the copy is
// theirs, mode 0044, and --verify still reads it back (it failed "Permission denied").
TEST_F(Verify, VerifyReadsBackACopyItsOwnerMayNotRead) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (a source owned by another user)";
  write_old(src + "/f", "for the others\n");
  RunOptions as_user = unprivileged(tmp);
  ASSERT_EQ(::chown((src + "/f").c_str(), 0, 0), 0);
  ASSERT_EQ(::chmod((src + "/f").c_str(), 0044), 0);
  RunResult r = copy({"--verify"}, as_user);
  EXPECT_EQ(r.status, 0) << describe(r);
  struct stat st = lstat_of(dst + "/f");
  EXPECT_EQ(st.st_mode & 07777, 0044u);
  EXPECT_EQ(st.st_uid, 65534u);
  EXPECT_EQ(read_file(dst + "/f"), "for the others\n");
}

TEST_F(Verify, VerifyFailsWhenWrittenDataIsCorrupted) {
#ifndef PCOPY_TEST_HOOKS
  GTEST_SKIP() << "needs a build with -DPCOPY_TEST_HOOKS=ON";
#endif
  write_old(src + "/good.bin", "A" + random_bytes(100'000, 1));
  write_old(src + "/bad.bin", "A" + random_bytes(100'000, 2));  // the hook writes 'Z' at offset 0
  write_old(src + "/replaced.bin", "A" + random_bytes(1000, 3));
  make_dir(dst);
  write_file(dst + "/replaced.bin", "previous version");
  RunOptions hook;
  hook.env = {"PCOPY_TEST_CORRUPT_NAME=bad.bin"};

  RunResult r = copy({"--verify", "--json"}, hook);
  EXPECT_EQ(r.status, 1) << describe(r);
  EXPECT_NE(r.err.find("verification failed"), std::string::npos) << describe(r);
  EXPECT_NE(r.err.find("bad.bin"), std::string::npos) << describe(r);
  json report = parse_report(r);
  ASSERT_EQ(report.value("errors", json::array()).size(), 1u) << report.dump(2);
  EXPECT_EQ(report["errors"][0].value("path", ""), "bad.bin") << report.dump(2);
  EXPECT_NE(report["errors"][0].value("reason", "").find("verification failed"), std::string::npos) << report.dump(2);
  // No corrupted file under the final name, no leftover temporary; the rest copied.
  EXPECT_EQ(list_tree(dst), (std::vector<std::string>{"good.bin", "replaced.bin"})) << describe(r);
  EXPECT_EQ(read_file(dst + "/good.bin"), read_file(src + "/good.bin"));
  EXPECT_EQ(read_file(dst + "/replaced.bin"), read_file(src + "/replaced.bin"));

  // A failed verification never destroys the previous version it was replacing.
  hook.env = {"PCOPY_TEST_CORRUPT_NAME=replaced.bin"};
  write_old(src + "/replaced.bin", "A" + random_bytes(1000, 4), kOldTime + 1);
  std::string previous = read_file(dst + "/replaced.bin");
  r = copy({"--verify"}, hook);
  EXPECT_EQ(r.status, 1) << describe(r);
  EXPECT_EQ(read_file(dst + "/replaced.bin"), previous);
  EXPECT_EQ(list_tree(dst), (std::vector<std::string>{"bad.bin", "good.bin", "replaced.bin"})) << describe(r);
}

// --inplace --fsync: a file whose flush fails (EIO from a network file system; a test hook here)
// has its source's times set already. It is given the time of now, so that the next -u run copies
// it again instead of taking it for up to date (it did, with exit 0, from then on).
TEST_F(Verify, InPlaceFileWhoseFlushFailedIsCopiedAgainByUpdate) {
#ifndef PCOPY_TEST_HOOKS
  GTEST_SKIP() << "needs a build with -DPCOPY_TEST_HOOKS=ON";
#endif
  write_old(src + "/flushed.bin", random_bytes(1000, 5));
  write_old(src + "/failed.bin", random_bytes(1000, 6));
  RunOptions hook;
  hook.env = {"PCOPY_TEST_EIO_FSYNC_NAME=failed.bin"};
  RunResult r = copy({"--inplace", "--fsync"}, hook);
  EXPECT_EQ(r.status, 1) << describe(r);
  EXPECT_TRUE(has_line(r.err, "pcopy: cannot copy 'failed.bin': Input/output error")) << describe(r);
  EXPECT_NE(mtime_ns(dst + "/failed.bin"), kOldTime) << "a failed copy must not look up to date";
  EXPECT_EQ(mtime_ns(dst + "/flushed.bin"), kOldTime);

  r = copy({"-u", "--json"});
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(count(parse_report(r), "files_copied"), 1) << describe(r);
  EXPECT_EQ(diff_trees(src, dst), "");
}

// --fsync flushes the names it makes outside the tree too: a single file's in its directory, and
// each directory made for DST in its parent. Before, a file copied alone with --fsync had its data
// flushed but not its name, and a new DST could vanish in a crash with everything in it. A test
// hook fails the flush of the directory it names; a failure is an error naming that directory.
// --fsync: a directory of the tree that cannot be flushed is named as such, its files in place.
// It read "cannot copy 'd2': Input/output error", as if nothing had been copied.
TEST_F(Verify, FsyncNamesADirectoryOfTheTreeItCannotFlush) {
#ifndef PCOPY_TEST_HOOKS
  GTEST_SKIP() << "needs a build with -DPCOPY_TEST_HOOKS=ON";
#endif
  make_dir(src + "/d2");
  write_old(src + "/d2/f", "data");
  RunOptions hook;
  hook.env = {"PCOPY_TEST_EIO_FSYNC_NAME=d2"};
  RunResult r = copy({"--fsync", "--json"}, hook);
  EXPECT_EQ(r.status, 1) << describe(r);
  EXPECT_TRUE(has_line(r.err, "pcopy: cannot flush 'd2' to disk: Input/output error")) << describe(r);
  json report = parse_report(r);
  ASSERT_EQ(report["errors"].size(), 1u) << report.dump(2);
  EXPECT_EQ(report["errors"][0].value("reason", ""), "cannot flush to disk: Input/output error");
  EXPECT_EQ(count(report, "files_copied"), 1) << report.dump(2);
  EXPECT_EQ(read_file(dst + "/d2/f"), "data");
}

TEST_F(Verify, FsyncFlushesTheNamesMadeOutsideTheTree) {
#ifndef PCOPY_TEST_HOOKS
  GTEST_SKIP() << "needs a build with -DPCOPY_TEST_HOOKS=ON";
#endif
  write_old(src + "/f", "data");
  make_dir(tmp / "vault");
  auto flushing = [&](const std::string& name, const std::vector<std::string>& paths) {
    RunOptions hook;
    hook.env = {"PCOPY_TEST_EIO_FSYNC_NAME=" + name};
    std::vector<std::string> args{"--fsync", "--json"};
    args.insert(args.end(), paths.begin(), paths.end());
    return run_pcopy(args, hook);
  };
  std::string vault = tmp / "vault";
  // A tree into new directories: the parent of the outermost one made, and each made one.
  RunResult r = flushing("vault", {src, vault + "/new/tree"});
  EXPECT_EQ(r.status, 1) << describe(r);
  EXPECT_TRUE(has_line(r.err, "pcopy: cannot flush '" + vault + "' to disk: Input/output error")) << describe(r);
  json report = parse_report(r);
  ASSERT_EQ(report["errors"].size(), 1u) << report.dump(2);
  EXPECT_EQ(report["errors"][0].value("path", ""), vault) << report.dump(2);
  EXPECT_EQ(report["errors"][0].value("reason", ""), "cannot flush to disk: Input/output error");
  EXPECT_EQ(read_file(vault + "/new/tree/f"), "data") << "a failed flush undoes nothing";
  r = flushing("new3", {src, vault + "/new3/tree"});
  EXPECT_TRUE(has_line(r.err, "pcopy: cannot flush '" + vault + "/new3' to disk: Input/output error")) << describe(r);

  // A single file: its directory, made or not.
  r = flushing("vault", {src + "/f", vault + "/g"});
  EXPECT_EQ(r.status, 1) << describe(r);
  EXPECT_TRUE(has_line(r.err, "pcopy: cannot flush '" + vault + "' to disk: Input/output error")) << describe(r);
  EXPECT_EQ(read_file(vault + "/g"), "data");
  r = flushing("made", {src + "/f", vault + "/made/g"});
  EXPECT_TRUE(has_line(r.err, "pcopy: cannot flush '" + vault + "/made' to disk: Input/output error")) << describe(r);
  EXPECT_EQ(read_file(vault + "/made/g"), "data");

  // Without --fsync nothing is flushed, and nothing fails.
  RunOptions hook;
  hook.env = {"PCOPY_TEST_EIO_FSYNC_NAME=vault"};
  r = run_pcopy({src + "/f", vault + "/h"}, hook);
  EXPECT_EQ(r.status, 0) << describe(r);
}

// ---------------------------------------------------------------------------------------------------
// --json, --manifest, progress lines, summary.

TEST_F(Report, JsonAndManifestParseAndMatchTree) {
  make_dir(src + "/sub");
  // relative path in SRC -> the path as the JSON must give it, and whether it is marked escaped
  using Path = std::pair<std::string, bool>;
  std::map<std::string, Path> files{
      {"plain.txt", {"plain.txt", false}},
      {"empty", {"empty", false}},
      {"bad\xff.bin", {"bad\\xff.bin", true}},
      {"bad\\xff.bin", {"bad\\xff.bin", false}},  // valid, the same text: only the mark tells them apart
      {"sub/b\\s\xfe", {"sub/b\\\\s\\xfe", true}},                        // backslash doubled too
      {"sub/\xc3\xbcn\xc3\xaf.txt", {"sub/\xc3\xbcn\xc3\xaf.txt", false}},  // valid UTF-8 passes unchanged
      {"sub/big.bin", {"sub/big.bin", false}},
  };
  unsigned seed = 0;
  for (auto& [rel, _] : files) {
    ++seed;
    size_t size = rel == "empty" ? 0 : rel == "sub/big.bin" ? 3 * 1024 * 1024 + 5 : 1000 + seed * 77;
    write_old(src + "/" + rel, random_bytes(size, seed), kOldTime + 123'456'789LL * seed);
  }
  make_symlink("plain.txt", src + "/link");
  std::string manifest = tmp / "manifest.jsonl";

  RunResult r = copy({"--json", "--manifest", manifest, "-j2"});
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(diff_trees(src, dst), "");

  json report = parse_report(r);
  uint64_t total_bytes = 0;
  for (auto& [rel, _] : files) total_bytes += lstat_of(src + "/" + rel).st_size;
  EXPECT_EQ(count(report, "files_copied"), static_cast<long long>(files.size())) << report.dump(2);
  EXPECT_EQ(count(report, "files_skipped"), 0) << report.dump(2);
  EXPECT_EQ(count(report, "files_deleted"), 0) << report.dump(2);
  EXPECT_EQ(count(report, "dirs_created"), 1) << report.dump(2);
  EXPECT_EQ(count(report, "links_copied"), 1) << report.dump(2);
  EXPECT_EQ(count(report, "bytes_copied"), static_cast<long long>(total_bytes)) << report.dump(2);
  EXPECT_EQ(count(report, "workers"), 2) << report.dump(2);
  EXPECT_EQ(count(report, "exit_status"), 0) << report.dump(2);
  EXPECT_TRUE(report.contains("elapsed_s") && report["elapsed_s"].is_number() && report["elapsed_s"] >= 0)
      << report.dump(2);
  EXPECT_EQ(report.value("interrupted", true), false) << report.dump(2);
  EXPECT_TRUE(report.contains("errors") && report["errors"].is_array() && report["errors"].empty()) << report.dump(2);

  // The manifest: one object per line, one line per regular file.
  std::string text = read_file(manifest);
  ASSERT_TRUE(text.empty() || text.back() == '\n');
  std::map<Path, json> by_path;
  for (auto& line : lines_of(text)) {
    json entry;
    try {
      entry = json::parse(line);
    } catch (const std::exception& e) {
      ADD_FAILURE() << "manifest line does not parse: " << e.what() << ": " << escape_path(line);
      continue;
    }
    ASSERT_TRUE(entry.is_object()) << escape_path(line);
    ASSERT_TRUE(entry.contains("path") && entry["path"].is_string()) << escape_path(line);
    Path path{entry["path"].get<std::string>(), entry.value("path_escaped", false)};
    if (entry.contains("path_escaped")) {
      EXPECT_EQ(entry["path_escaped"], true) << escape_path(line);
    }
    EXPECT_TRUE(by_path.emplace(path, entry).second) << "twice: " << escape_path(line);
  }
  EXPECT_EQ(by_path.size(), files.size()) << escape_path(text);
  for (auto& [rel, json_rel] : files) {
    SCOPED_TRACE(escape_path(rel));
    auto it = by_path.find(json_rel);
    if (it == by_path.end()) {
      ADD_FAILURE() << "no manifest line for " << escape_path(json_rel.first) << "\n" << escape_path(text);
      continue;
    }
    const json& entry = it->second;
    struct stat st = lstat_of(src + "/" + rel);
    EXPECT_EQ(count(entry, "size"), static_cast<long long>(st.st_size)) << entry.dump();
    EXPECT_EQ(count(entry, "mtime_ns"), ns_of(st.st_mtim)) << entry.dump();
    std::string hash = entry.value("xxh128", "");
    EXPECT_TRUE(std::regex_match(hash, std::regex("[0-9a-f]{32}"))) << entry.dump();
    EXPECT_EQ(hash, xxh128_hex(read_file(src + "/" + rel))) << entry.dump();
  }
  // The hash is the canonical XXH3-128 (known value of the empty input, as `xxhsum -H2` prints it).
  EXPECT_EQ(by_path[(Path{"empty", false})].value("xxh128", ""), "99aa06d3014798d86001c324468d497f");
}

// -a keeps hard links: every name of a group is a file copied, with the group's contents, so each
// has its manifest line (the names linked to the first copy were missing: the ones that waited for
// it, and the ones walked after it).
// -a -u: a new name of a file already copied is linked to the copy, and listed in the manifest
// (counted as copied, it had no line: the copy it links to was not hashed, being up to date).
TEST_F(Report, ManifestListsANewNameLinkedToAnUnchangedCopy) {
  make_dir(src + "/sub");
  write_old(src + "/f", "data\n", kOldTime);
  RunResult r = copy({"-q", "-a"});
  ASSERT_EQ(r.status, 0) << describe(r);
  ASSERT_EQ(::link((src + "/f").c_str(), (src + "/sub/g").c_str()), 0);
  std::string manifest = tmp / "manifest.jsonl";
  r = copy({"-a", "-u", "--json", "--manifest", manifest});
  ASSERT_EQ(r.status, 0) << describe(r);
  json report = parse_report(r);
  EXPECT_EQ(count(report, "files_copied"), 1) << report.dump();
  auto lines = lines_of(read_file(manifest));
  ASSERT_EQ(lines.size(), 1u);
  json entry = json::parse(lines[0]);
  EXPECT_EQ(entry.value("path", ""), "sub/g");
  EXPECT_EQ(entry.value("xxh128", ""), xxh128_hex("data\n"));
  EXPECT_EQ(count(entry, "size"), 5);
  EXPECT_EQ(lstat_of(dst + "/sub/g").st_ino, lstat_of(dst + "/f").st_ino);
}

// Two names of one symlink are two links in the counts, not a file and a link.
TEST_F(Report, NamesOfAHardLinkedSymlinkCountAsLinks) {
  ASSERT_EQ(::symlink("target", (src + "/l").c_str()), 0);
  ASSERT_EQ(::link((src + "/l").c_str(), (src + "/l2").c_str()), 0);
  RunResult r = copy({"-a", "--json"});
  ASSERT_EQ(r.status, 0) << describe(r);
  json report = parse_report(r);
  EXPECT_EQ(count(report, "links_copied"), 2) << report.dump();
  EXPECT_EQ(count(report, "files_copied"), 0) << report.dump();
  EXPECT_EQ(lstat_of(dst + "/l2").st_ino, lstat_of(dst + "/l").st_ino);
}

TEST_F(Report, ManifestListsEveryNameOfAHardLinkGroup) {
  std::set<std::string> names;
  for (int i = 0; i < 40; ++i) {
    std::string a = fmt::format("a{:02}", i), b = fmt::format("sub/b{:02}", i), c = fmt::format("c{:02}", i);
    if (i == 0) make_dir(src + "/sub");
    write_old(src + "/" + a, random_bytes(100 + i, i), kOldTime + i);
    ASSERT_EQ(::link((src + "/" + a).c_str(), (src + "/" + b).c_str()), 0);
    ASSERT_EQ(::link((src + "/" + a).c_str(), (src + "/" + c).c_str()), 0);
    names.insert({a, b, c});
  }
  std::string manifest = tmp / "manifest.jsonl";
  RunResult r = copy({"-a", "--json", "--manifest", manifest});
  ASSERT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(count(parse_report(r), "files_copied"), static_cast<long long>(names.size()));
  std::set<std::string> listed;
  for (auto& line : lines_of(read_file(manifest))) {
    json entry = json::parse(line);
    std::string path = entry.value("path", "");
    EXPECT_EQ(entry.value("xxh128", ""), xxh128_hex(read_file(src + "/" + path))) << line;
    EXPECT_EQ(count(entry, "size"), static_cast<long long>(lstat_of(src + "/" + path).st_size)) << line;
    listed.insert(path);
  }
  EXPECT_EQ(listed, names);
}

// A script reading -v lines or the JSON report from stdout must learn they were lost.
TEST_F(Report, FailedWritesToStdoutAreReportedInTheExitStatus) {
  write_old(src + "/a", "a");
  RunOptions full;
  full.stdout_file = "/dev/full";
  for (std::vector<std::string> args : {std::vector<std::string>{"-v"}, {"--json"}, {"-n", "-q"}}) {
    SCOPED_TRACE(args.front());
    std::filesystem::remove_all(dst);
    RunResult r = copy(args, full);
    EXPECT_EQ(r.status, 1) << describe(r);
    auto lines = lines_of(r.err);
    EXPECT_EQ(std::count(lines.begin(), lines.end(), "pcopy: cannot write to standard output: No space left on device"), 1)
        << describe(r);
    if (args.front() != "-n") {
      EXPECT_EQ(read_file(dst + "/a"), "a") << "the copy itself goes on";
    }
    if (args.front() != "-n") {  // counted in the summary, which said "0 errors" for a run that exits 1
      EXPECT_TRUE(has_line_starting(r.err, "pcopy: copied 1 file, 0 dirs, 0 links,")) << describe(r);
      EXPECT_TRUE(r.err.ends_with(" 1 error\n")) << describe(r);
    }
  }
}

// With --json the lines of -n and -v go to stderr: lost there (a full disk, a reader gone), they are
// an error of the run as on stdout, in the report and the status. They were lost with exit 0, and
// `pcopy -n --json SRC DST >report.json 2>plan.txt` handed on a plan cut short with a clean report.
TEST_F(Report, FailedWritesOfTheLinesJsonSendsToStderrAreErrorsOfTheRun) {
  write_old(src + "/a", "a");
  RunOptions full;
  full.stderr_file = "/dev/full";
  for (std::string option : {"-n", "-v"}) {
    SCOPED_TRACE(option);
    std::filesystem::remove_all(dst);
    RunResult r = copy({option, "--json"}, full);
    EXPECT_EQ(r.status, 1) << describe(r);
    json report = parse_report(r);
    EXPECT_EQ(count(report, "exit_status"), 1) << report.dump(2);
    json want = json::array({{{"path", ""},
                              {"reason", "cannot write to standard error (the " + option +
                                             " lines): No space left on device"}}});
    EXPECT_EQ(report.value("errors", json::array()), want) << report.dump(2);
  }
}

// With --json, stdout holds the report alone (`pcopy -n --json SRC DST | jq` must work): the lines
// of -n and -v go to stderr instead, unchanged. Without --json they stay on stdout.
TEST_F(Report, JsonLeavesStdoutToTheReportAndPrintsPathsOnStderr) {
  make_dir(src + "/d");
  write_old(src + "/d/f", "f");
  const std::vector<std::pair<std::string, std::multiset<std::string>>> listings = {
      {"-n", {"copy d/", "copy d/f"}},
      {"-v", {"d/", "d/f"}},
  };
  for (const auto& [option, listed] : listings) {
    SCOPED_TRACE(option);
    std::filesystem::remove_all(dst);
    RunResult r = copy({option, "--json"});
    EXPECT_EQ(r.status, 0) << describe(r);
    EXPECT_EQ(count(parse_report(r), "files_copied"), 1);
    std::multiset<std::string> on_stderr;
    for (const auto& line : lines_of(r.err))
      if (listed.contains(line)) on_stderr.insert(line);
    EXPECT_EQ(on_stderr, listed) << describe(r);

    std::filesystem::remove_all(dst);
    r = copy({option});
    EXPECT_EQ(r.status, 0) << describe(r);
    EXPECT_EQ(line_set(r.out), listed) << describe(r);
  }
}

TEST_F(Report, JsonReportsErrorsWithPathAndReason) {
  make_dir(src + "/sub");
  write_file(src + "/ok.txt", "ok");
  write_file(src + "/sub/secret.txt", "s", 0);
  write_file(src + "/locked\xfe.txt", "s", 0);
  RunOptions as_user = unprivileged(tmp);
  RunResult r = copy({"--json"}, as_user);
  EXPECT_EQ(r.status, 1) << describe(r);
  json report = parse_report(r);
  EXPECT_EQ(count(report, "exit_status"), 1) << report.dump(2);
  EXPECT_EQ(count(report, "files_copied"), 1) << report.dump(2);
  ASSERT_TRUE(report.contains("errors") && report["errors"].is_array()) << report.dump(2);
  std::set<std::pair<std::string, std::string>> errors;
  for (auto& e : report["errors"])
    errors.emplace(e.value("path", "?") + (e.value("path_escaped", false) ? " (escaped)" : ""), e.value("reason", "?"));
  std::set<std::pair<std::string, std::string>> expected{{"sub/secret.txt", "Permission denied"},
                                                         {"locked\\xfe.txt (escaped)", "Permission denied"}};
  EXPECT_EQ(errors, expected) << report.dump(2);
  auto lines = lines_of(r.err);
  EXPECT_NE(std::find(lines.begin(), lines.end(), "pcopy: cannot copy 'sub/secret.txt': Permission denied"),
            lines.end())
      << describe(r);
}

TEST_F(Report, ProgressAlwaysWithoutTerminalPrintsPlainLines) {
  for (int i = 0; i < 20; ++i) write_file(src + fmt::format("/f{}", i), random_bytes(50'000, static_cast<unsigned>(i)));
  RunResult r = copy({"--progress=always"});
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(r.err.find('\r'), std::string::npos) << describe(r);
  EXPECT_EQ(r.err.find('\x1b'), std::string::npos) << describe(r);
  int progress_lines = 0;
  for (auto& line : lines_of(r.err))
    if (std::regex_search(line, std::regex("^pcopy: [0-9]+%"))) ++progress_lines;
  EXPECT_GE(progress_lines, 1) << describe(r);
  // The final line shows completion.
  EXPECT_NE(r.err.find("pcopy: 100%"), std::string::npos) << describe(r);
  EXPECT_EQ(diff_trees(src, dst), "");

  // auto (the default) without a terminal prints no progress at all.
  TempDir again;
  r = run_pcopy({src, again / "dst"});
  EXPECT_EQ(r.status, 0) << describe(r);
  for (auto& line : lines_of(r.err))
    EXPECT_FALSE(std::regex_search(line, std::regex("^pcopy: [0-9]+%"))) << describe(r);
}

// An incremental run's last status line says it is done: files -u skips, and files that fail,
// leave the byte total instead of staying "to do" (it ended at 10%, with an ETA).
TEST_F(Report, ProgressOfAnIncrementalRunEndsAtAHundredPercent) {
  for (int i = 0; i < 20; ++i) write_file(src + fmt::format("/f{:02}", i), random_bytes(50'000, static_cast<unsigned>(i)));
  ASSERT_EQ(copy({"-q"}).status, 0);
  ASSERT_EQ(::unlink((dst + "/f03").c_str()), 0);  // one of twenty to copy again
  write_file(src + "/secret", random_bytes(50'000, 99), 0000);
  RunResult r = copy({"-u", "--progress=always"}, unprivileged(tmp));
  EXPECT_EQ(r.status, 1) << describe(r);  // the unreadable file
  auto lines = lines_of(r.err);
  auto last = std::find_if(lines.rbegin(), lines.rend(), [](const std::string& l) { return l.starts_with("pcopy: ") && l.find('%') != l.npos; });
  ASSERT_NE(last, lines.rend()) << describe(r);
  EXPECT_TRUE(last->starts_with("pcopy: 100%  21/21 files  48.8 KiB/48.8 KiB")) << *last;
  // Up to date: nothing to copy is done at once.
  r = copy({"-u", "--progress=always"});
  lines = lines_of(r.err);
  last = std::find_if(lines.rbegin(), lines.rend(), [](const std::string& l) { return l.starts_with("pcopy: ") && l.find('%') != l.npos; });
  ASSERT_NE(last, lines.rend()) << describe(r);
  EXPECT_TRUE(last->starts_with("pcopy: 100%")) << *last;
}

// Another name of a hard-linked file moves no data: the bar counts the file's bytes once. Its size
// was in the total once per name: the last status line of an -a copy of a file and its link read
// "50%  3/3 files  1.0 MiB/2.0 MiB", and then, linked names counted done, "2.0 MiB/2.0 MiB" for
// 1 MiB copied (the rate and the ETA overstated as much).
TEST_F(Report, ProgressOfAnArchiveCopyWithHardLinksCountsTheirDataOnce) {
  write_file(src + "/a", random_bytes(1 << 20, 7));
  ASSERT_EQ(::link((src + "/a").c_str(), (src + "/b").c_str()), 0);
  write_file(src + "/c", "c");
  RunResult r = copy({"-a", "--progress=always"});
  EXPECT_EQ(r.status, 0) << describe(r);
  auto lines = lines_of(r.err);
  auto last = std::find_if(lines.rbegin(), lines.rend(), [](const std::string& l) { return l.starts_with("pcopy: ") && l.find('%') != l.npos; });
  ASSERT_NE(last, lines.rend()) << describe(r);
  EXPECT_TRUE(last->starts_with("pcopy: 100%  3/3 files  1.0 MiB/1.0 MiB")) << *last;
  for (const std::string& line : lines)  // never more, while the walk went on either
    EXPECT_EQ(line.find(" MiB/2.0 MiB"), std::string::npos) << line;
  // The data moved once.
  EXPECT_NE(r.err.find("pcopy: copied 3 files, 0 dirs, 0 links, 1.0 MiB in"), std::string::npos) << describe(r);

  // A name linked anew the next night moves no data either: nothing to copy, nothing counted.
  ASSERT_EQ(::link((src + "/a").c_str(), (src + "/a2").c_str()), 0);
  r = copy({"-a", "-u", "--progress=always"});
  EXPECT_EQ(r.status, 0) << describe(r);
  lines = lines_of(r.err);
  last = std::find_if(lines.rbegin(), lines.rend(), [](const std::string& l) { return l.starts_with("pcopy: ") && l.find('%') != l.npos; });
  ASSERT_NE(last, lines.rend()) << describe(r);
  EXPECT_TRUE(last->starts_with("pcopy: 100%  4/4 files  0 B/0 B")) << *last;
  EXPECT_EQ(lstat_of(dst + "/a2").st_ino, lstat_of(dst + "/a").st_ino);
}

// A run long enough for several periods: a status line at least every ~2 s of the run.
TEST_F(Report, ProgressAlwaysWithoutTerminalRepeatsEveryFewSeconds) {
  // A 1 GiB hole: no disk space, but --verify re-reads it all, which takes a few seconds.
  write_file(src + "/sparse.bin", "");
  ASSERT_EQ(::truncate((src + "/sparse.bin").c_str(), 1LL << 30), 0);
  write_file(src + "/small", "s");
  auto start = std::chrono::steady_clock::now();
  RunResult r = copy({"--progress=always", "--verify", "-j1"});
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(r.err.find('\r'), std::string::npos) << describe(r);
  int progress_lines = 0;
  for (auto& line : lines_of(r.err))
    if (std::regex_search(line, std::regex("^pcopy: [0-9]+%"))) ++progress_lines;
  // One at the start, one per 2 s, one at the end; allow one period of slack.
  EXPECT_GE(progress_lines, static_cast<int>(seconds / 2.0)) << "run took " << seconds << " s\n" << describe(r);
}

// The line printed at the end of a complete run says 100%, also when a file is mostly holes.
TEST_F(Report, ProgressFinalLineSaysHundredPercentWithSparseFile) {
  write_file(src + "/sparse.bin", "data at the start");
  ASSERT_EQ(::truncate((src + "/sparse.bin").c_str(), 16LL << 20), 0);
  write_file(src + "/small", "s");
  RunResult r = copy({"--progress=always", "--json"});
  EXPECT_EQ(r.status, 0) << describe(r);
  std::string last;
  for (auto& line : lines_of(r.err))
    if (std::regex_search(line, std::regex("^pcopy: [0-9]+%"))) last = line;
  EXPECT_TRUE(last.starts_with("pcopy: 100%")) << describe(r);
  EXPECT_EQ(lstat_of(dst + "/sparse.bin").st_size, 16LL << 20);
  EXPECT_EQ(read_file(dst + "/small"), "s");
}

TEST_F(Report, SummaryShowsSkippedAndDeletedCounts) {
  for (int i = 0; i < 4; ++i) write_old(src + fmt::format("/f{}", i), fmt::format("file {}\n", i));
  RunResult r = copy();
  ASSERT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(r.err.find("skipped"), std::string::npos) << "no skipped count without -u\n" << describe(r);
  EXPECT_EQ(r.err.find("deleted"), std::string::npos) << "no deleted count without --delete\n" << describe(r);

  unlink_keeping_parent_times(src + "/f3");
  write_old(src + "/f0", "file 0 changed\n");
  r = copy({"-u", "--delete"});
  EXPECT_EQ(r.status, 0) << describe(r);
  auto lines = lines_of(r.err);
  ASSERT_FALSE(lines.empty()) << describe(r);
  const std::string& summary = lines.back();
  EXPECT_TRUE(summary.starts_with("pcopy: ")) << describe(r);
  EXPECT_NE(summary.find("2 skipped"), std::string::npos) << describe(r);
  EXPECT_NE(summary.find("1 deleted"), std::string::npos) << describe(r);
  EXPECT_EQ(diff_trees(src, dst), "");

  r = copy({"--ignore-existing"});
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_NE(r.err.find("3 skipped"), std::string::npos) << describe(r);
}

}  // namespace
}  // namespace pcopy::test
