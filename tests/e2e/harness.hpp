// Shared helpers for the end-to-end tests: temporary trees on disk, running the built pcopy binary,
// and comparing two trees the way a user would (bytes, types, modes, times, links, owners, xattrs).
#pragma once

#include <gtest/gtest.h>
#include <sys/types.h>

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace pcopy::test {

// A fresh directory under $TMPDIR (default /tmp), removed recursively with its contents on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string operator/(std::string_view rel) const { return path_ + "/" + std::string(rel); }

 private:
  std::string path_;
};

struct RunOptions {
  std::optional<uid_t> uid;            // drop to this uid (and gid 65534) before exec; needs root
  std::vector<gid_t> groups;           // with uid: the supplementary groups it keeps (none by default)
  std::optional<long> nofile;          // RLIMIT_NOFILE soft and hard limit for the child
  int leaked_fds = 0;                  // descriptors (of /dev/null) it starts with open beyond 0-2
  std::optional<long> nproc;           // RLIMIT_NPROC for the child: processes its uid may have (with uid)
  bool pty = false;                    // run under a pseudo-terminal via `script`; stdout+stderr merged into out
  int pty_columns = 80;                // terminal width when pty is set
  std::vector<std::string> env;        // extra NAME=VALUE entries
  std::string stdin_data;              // fed to the child's stdin
  std::string stdout_file;             // opened for writing as the child's stdout (then `out` is empty)
  std::string stderr_file;             // the same for its stderr (then `err` is empty)
  int timeout_s = 300;                 // then the child's process group is killed (status 128+9)
  std::string cwd;                     // the child's working directory (absolute), entered one component
                                       // at a time: it may lie deeper than PATH_MAX
  // System calls (number, errno) a seccomp filter makes fail in the child and its workers, as an
  // older kernel (ENOSYS) or a container's profile that predates them (EPERM) does. At most 16.
  std::vector<std::pair<long, int>> refused_syscalls;
};

struct RunResult {
  int status = -1;  // exit code, or 128 + signal number when killed
  std::string out;  // stdout
  std::string err;  // stderr
  // The largest resident set of the program or of any process it reaped (its workers), as GNU
  // time's %M reports it.
  long peak_rss_kb = 0;
};

// Path of the pcopy binary under test.
std::string pcopy_bin();
// The environment a child gets: the test's, with `options.env`'s entries (NAME=VALUE replaces NAME, a
// bare NAME removes it), and what a run under a pseudo-terminal needs.
std::vector<std::string> child_environment(const RunOptions& options);
// argv/envp for exec: pointers into `strings`, null-terminated.
std::vector<char*> c_strings(std::vector<std::string>& strings);
RunResult run(const std::vector<std::string>& argv, const RunOptions& options = {});
RunResult run_pcopy(const std::vector<std::string>& args, const RunOptions& options = {});

// Tree building. Parents must exist. Paths are raw bytes.
void write_file(const std::string& path, std::string_view bytes, mode_t mode = 0644);
std::string read_file(const std::string& path);
void make_dir(const std::string& path, mode_t mode = 0755);
void make_dirs(const std::string& path);  // like mkdir -p
void make_symlink(const std::string& target, const std::string& path);
void set_times(const std::string& path, long long atime_ns, long long mtime_ns);  // does not follow links
std::optional<std::string> get_xattr(const std::string& path, const std::string& name);  // not following links
bool exists(const std::string& path);  // lstat succeeds
std::string read_link(const std::string& path);  // a symlink's target text
std::string random_bytes(size_t n, unsigned seed);
std::vector<std::string> list_tree(const std::string& root);  // relative paths, sorted, root excluded
// root/component/component/... `depth` levels below root (root must exist), built with directory fds so
// the depth may go far past PATH_MAX. Path-based helpers above also accept such long paths (more slowly).
void make_deep_dirs(const std::string& root, size_t depth, const std::string& component = "d");
// lchown of root and everything below it (needs root); links are not followed.
void chown_tree(const std::string& root, uid_t uid, gid_t gid);
// A path made printable for messages: control bytes, bytes >= 0x7f and backslash become \n, \xNN, \\.
std::string escape_path(std::string_view path);
std::string shell_quote(std::string_view arg);  // for a command line a shell reads

// A file system mounted at `dir` (made if missing) for the guard's lifetime and unmounted (lazily
// if busy) on destruction: declare it after the TempDir holding `dir`. Needs root; when it could not
// be mounted, why() says why, for GTEST_SKIP.
class Mount {
 public:
  struct Tmpfs {
    std::string options;  // e.g. "size=4m,mode=0755"
  };
  struct LoopXfs {  // made with reflink in a sparse image file created for it
    std::string image;
    unsigned size_mib = 300;  // mkfs.xfs's minimum
  };
  struct Bind {  // another name for an existing directory (or file, on the file at `dir`)
    std::string target;
  };
  struct Ramfs {};  // no extended attributes, no ACLs
  struct LoopExt3Times {  // ext4 with 128-byte inodes: times in whole seconds, as on ext3
    std::string image;
    unsigned size_mib = 32;
  };
  struct LoopExt4 {  // ext4 mounted with `options` (e.g. "errors=remount-ro")
    std::string image;
    unsigned size_mib = 32;
    std::string options;
  };
  struct FuseFat {  // FAT through FUSE (fusefat): chmod and chown answer ENOSYS
    std::string image;
    unsigned size_mib = 16;
  };
  struct FuseExfat {  // exFAT through FUSE (exfat-fuse): case-insensitive, times in whole seconds
    std::string image;
    unsigned size_mib = 16;
  };
  Mount(const std::string& dir, const Tmpfs& fs);
  Mount(const std::string& dir, const FuseExfat& fs);
  struct BindFs {  // an existing directory through FUSE (bindfs): rename flags answer EINVAL, as on NFS
    std::string target;
  };
  Mount(const std::string& dir, const FuseFat& fs);
  Mount(const std::string& dir, const BindFs& fs);
  Mount(const std::string& dir, const Ramfs& fs);
  Mount(const std::string& dir, const LoopExt3Times& fs);
  Mount(const std::string& dir, const LoopExt4& fs);
  struct LoopImage {  // an image another Mount made, mounted again (after cut_power: its journal replayed)
    std::string image;
  };
  Mount(const std::string& dir, const LoopImage& fs);
  Mount(const std::string& dir, const LoopXfs& fs);
  Mount(const std::string& dir, const Bind& fs);
  ~Mount();
  Mount(const Mount&) = delete;
  Mount& operator=(const Mount&) = delete;
  bool mounted() const { return mounted_; }
  const std::string& why() const { return why_; }

 private:
  // Makes a sparse image of `size_mib`, runs `mkfs` (the image appended) and loop-mounts it.
  void loop_mount(const std::string& image, unsigned size_mib, std::vector<std::string> mkfs,
                  std::vector<std::string> mount = {"mount", "-o", "loop"});

  std::string dir_;
  bool mounted_ = false;
  std::string why_;
};

// A power cut under the file system mounted at `dir`: nothing more reaches its device (the
// shutdown ioctl of XFS and ext4, without flushing the log). Unmount it and mount the image again to
// see what a crash would have left. False, with errno, where the file system cannot do it.
bool cut_power(const std::string& dir);

struct CompareOptions {
  bool times = true;        // mtime (ns) on files, dirs and links
  bool owners = false;      // uid/gid
  bool xattrs = false;      // every xattr readable by the caller, incl. system.posix_acl_*
  bool hardlinks = false;   // identical hard-link grouping
  bool blocks = false;      // allocated blocks within 1 MiB of the source
  bool root = true;         // also compare the two roots' own mode, times, owners and xattrs (path ".")
};

// Inode flags (chattr: FS_APPEND_FL, FS_IMMUTABLE_FL) added to a file or directory for a while:
// given back by restore() or the destructor, whatever the test found, or TempDir could not remove
// it. add() is false where the file system or the caller's privileges refuse the flag.
class InodeFlags {
 public:
  explicit InodeFlags(const std::string& path);
  ~InodeFlags();
  InodeFlags(const InodeFlags&) = delete;
  InodeFlags& operator=(const InodeFlags&) = delete;
  bool add(int flag);
  void restore();

 private:
  int fd_ = -1;
  int flags_ = 0;  // as they were
  bool changed_ = false;
};

// Options that run pcopy as an ordinary user: under root the whole temporary tree is given to
// nobody (65534) and pcopy runs as nobody, so permission bits apply as they would for a user;
// a non-root test run is denied by them as it is.
RunOptions unprivileged(const TempDir& tmp);

// A run's exit status, stdout and stderr, with every byte but the newline made printable: the
// message of a failed assertion.
std::string describe(const RunResult& r);
// The lines of a text, without their newlines.
std::vector<std::string> lines_of(std::string_view text);
bool has_line(std::string_view text, std::string_view line);
bool has_line_starting(std::string_view text, std::string_view prefix);

// Empty when the trees match; otherwise one line per difference ("path: what differs").
std::string diff_trees(const std::string& a, const std::string& b, const CompareOptions& options = {});

// A test with SRC (created empty) and DST (not created) in a fresh temporary directory.
class SrcDstTest : public ::testing::Test {
 protected:
  void SetUp() override { make_dir(src); }

  // pcopy OPTIONS... SRC DST
  RunResult copy(std::vector<std::string> args = {}, const RunOptions& options = {}) {
    args.push_back(src);
    args.push_back(dst);
    return run_pcopy(args, options);
  }

  TempDir tmp;
  std::string src = tmp / "src";
  std::string dst = tmp / "dst";
};

}  // namespace pcopy::test
