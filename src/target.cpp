#include "pcopy/target.hpp"

#include <fcntl.h>
#include <fmt/core.h>
#include <limits.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <optional>
#include <string_view>
#include <vector>

#include "pcopy/fd.hpp"
#include "pcopy/filter.hpp"
#include "pcopy/paths.hpp"
#include "pcopy/report.hpp"
#include "pcopy/signals.hpp"

namespace pcopy {

namespace {

std::string strip_slashes(std::string p) {
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  return p;
}

std::string dir_of(const std::string& p) {
  size_t slash = p.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : p.substr(0, slash);
}

std::string base_of(const std::string& p) {
  size_t slash = p.rfind('/');
  return slash == std::string::npos ? p : p.substr(slash + 1);
}

// The absolute, symlink-free form of `p`, or "" where realpath fails: where the working directory
// has no name to give (an ancestor we may not search, a depth past PATH_MAX), or `p` is a link to
// something that has no path (`<(cmd)`, a pipe). An empty path is never compared: see within().
std::string real(const std::string& p) {
  char buf[PATH_MAX];
  return ::realpath(p.c_str(), buf) ? std::string(buf) : std::string();
}

// The absolute, symlink-free form of `p`, which need not exist: the deepest existing ancestor is
// resolved by the kernel, the rest is normalised by hand. "" where the working directory has no
// name to give, for a relative `p`.
std::string canonical_future(const std::string& p) {
  std::string cwd = p.empty() || p[0] == '/' ? std::string() : real(".");
  if (!p.empty() && p[0] != '/' && cwd.empty()) return std::string();
  std::string path = p.empty() || p[0] == '/' ? p : cwd + "/" + p;
  std::vector<std::string> tail;
  std::string head = strip_slashes(path);
  std::string resolved;
  while ((resolved = real(head)).empty()) {
    tail.push_back(base_of(head));
    std::string up = dir_of(head);
    if (up == head) break;
    head = up;
  }
  std::string out = resolved;
  for (auto it = tail.rbegin(); it != tail.rend(); ++it) {
    if (*it == "." || it->empty()) continue;
    if (*it == "..") {
      out = dir_of(out);
      continue;
    }
    if (out != "/") out += "/";
    out += *it;
  }
  return out;
}

// The nearest directory at or above `path` that exists (O_PATH), where a dry run asks what file
// system the run would make `path` on; invalid if none can be opened.
UniqueFd nearest_existing(std::string path) {
  for (;;) {
    UniqueFd fd(::open(path.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (fd || errno != ENOENT || path == "." || path == "/") return fd;
    path = dir_of(path);
  }
}

// mkdir -p; 0 or errno. The directories it made are appended to `made`, outermost first. `path`
// itself is made with `mode` (the umask applies), those above it with 0777.
int make_dirs(const std::string& path, std::vector<std::string>& made, mode_t mode = 0777) {
  struct stat st;
  if (::stat(path.c_str(), &st) == 0) return S_ISDIR(st.st_mode) ? 0 : ENOTDIR;
  std::string parent = dir_of(strip_slashes(path));
  if (parent != path && parent != "/" && parent != ".") {
    if (int err = make_dirs(parent, made)) return err;
  }
  if (::mkdir(path.c_str(), mode) == 0) made.push_back(path);
  else if (errno != EEXIST) return errno;
  return 0;
}

// `p` with the links at its end followed by hand, for where realpath fails (see real()): "" and
// `err` where one leads nowhere, as a link to a pipe (`<(cmd)`) does.
std::string followed(std::string p, int& err) {
  for (int hops = 0; hops < 40; ++hops) {
    struct stat st;
    if (::lstat(p.c_str(), &st) != 0) {
      err = errno;
      return {};
    }
    if (!S_ISLNK(st.st_mode)) return strip_slashes(p);
    char buf[PATH_MAX];
    ssize_t n = ::readlink(p.c_str(), buf, sizeof buf);
    if (n < 0) {
      err = errno;
      return {};
    }
    std::string to(buf, size_t(n));
    p = to[0] == '/' ? to : dir_of(p) + "/" + to;
  }
  err = ELOOP;
  return {};
}

// Whether the nearest existing ancestor of `head`, or a parent of that one, is `dir`.
bool below_by_identity(std::string head, const struct stat& dir) {
  struct stat st;
  while (::stat(head.c_str(), &st) != 0) {
    std::string up = dir_of(head);
    if (up == head) return false;
    head = up;
  }
  UniqueFd fd(::open(head.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  while (fd && ::fstat(fd.get(), &st) == 0) {
    if (st.st_dev == dir.st_dev && st.st_ino == dir.st_ino) return true;
    UniqueFd up(::openat(fd.get(), "..", O_PATH | O_DIRECTORY | O_CLOEXEC));
    struct stat parent;
    if (!up || ::fstat(up.get(), &parent) != 0 || (parent.st_dev == st.st_dev && parent.st_ino == st.st_ino))
      return false;  // the root
    fd = std::move(up);
  }
  return false;
}

// Whether `path` (which need not exist) lies in the directory `dir` describes, told by identity
// rather than by name. This sees through bind mounts, which give one directory two names. Up from
// the resolved path (which sees through a missing directory's ".."), and up from the path as given,
// which works where an ancestor of the working directory may not be searched.
bool inside_by_identity(const std::string& path, const struct stat& dir) {
  std::string resolved = canonical_future(path);
  return (!resolved.empty() && below_by_identity(resolved, dir)) || below_by_identity(path, dir);
}

std::string quoted(const std::string& p) { return fmt::format("'{}'", display_path(p)); }

// Whether `path` is `dir` or below it, both resolved; never for a path that could not be resolved.
bool within(const std::string& path, const std::string& dir) {
  if (path.empty() || dir.empty()) return false;
  return path == dir || path.starts_with(dir == "/" ? "/" : dir + "/");
}

bool same_path(const std::string& a, const std::string& b) { return !a.empty() && a == b; }

// A path of the mount table as written there: a space, tab, newline or backslash in octal (\040).
std::string unescaped_mount_path(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    bool octal = s[i] == '\\' && s.size() - i >= 4;
    for (size_t k = 1; octal && k <= 3; ++k) octal = s[i + k] >= '0' && s[i + k] <= '7';
    if (!octal) {
      out += s[i];
      continue;
    }
    out += char((s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0'));
    i += 3;
  }
  return out;
}

// `a` and then `b`, where `b` is "" or begins with a slash.
std::string joined_path(const std::string& a, const std::string& b) { return a == "/" ? (b.empty() ? a : b) : a + b; }

// What of `path` lies below `base` (within(path, base)): "" or a path beginning with a slash.
std::string below(const std::string& path, const std::string& base) {
  return path == base ? "" : base == "/" ? path : path.substr(base.size());
}

// A line of /proc/self/mountinfo: the mount's id, its file system's device ("major:minor"), where in
// that file system its root is, and where it is mounted.
struct MountLine {
  std::string id, dev, root, point;
};

std::vector<MountLine> mount_table() {
  std::vector<MountLine> lines;
  UniqueFd fd(::open("/proc/self/mountinfo", O_RDONLY | O_CLOEXEC));
  std::string table;
  char buf[16384];
  for (ssize_t n; fd && (n = read_some(fd.get(), buf, sizeof buf)) > 0;) table.append(buf, size_t(n));
  for (size_t at = 0; at < table.size();) {
    size_t end = std::min(table.find('\n', at), table.size());
    std::string_view line(table.data() + at, end - at);
    at = end + 1;
    // ID PARENT-ID MAJOR:MINOR ROOT MOUNT-POINT OPTIONS ...
    std::vector<std::string_view> field;
    for (size_t from = 0; field.size() < 5 && from <= line.size();) {
      size_t space = std::min(line.find(' ', from), line.size());
      field.push_back(line.substr(from, space - from));
      from = space + 1;
    }
    if (field.size() == 5)
      lines.push_back({std::string(field[0]), std::string(field[2]), unescaped_mount_path(field[3]),
                       unescaped_mount_path(field[4])});
  }
  return lines;
}

// Whether the resolved path `path` (which need not exist) is the resolved directory `dir` or below
// it under a name the walk of `dir` meets, whatever names bind mounts give either. A bind mount
// gives a directory a second name, and ".." of a mount's root leads to its mount point's parent, so
// neither names nor identities up the tree lead from one name to the other; the mount table does,
// as it says where in its file system each mount's root is. Where a mount of that file system
// shows `path`'s place inside `dir`, that name is looked at: the same directory, not one a mount
// there covers. False where the table does not tell (no /proc, Linux before 5.8, a chroot whose
// root is no mount point): the walk meets DST then.
bool inside_by_mounts(std::string path, const std::string& dir) {
  if (path.empty() || path[0] != '/' || dir.empty()) return false;
  struct statx sx {};  // of the nearest directory of `path` that exists
  while (::statx(AT_FDCWD, path.c_str(), AT_SYMLINK_NOFOLLOW, STATX_MNT_ID | STATX_INO, &sx) != 0) {
    if ((errno != ENOENT && errno != ENOTDIR) || path == "/") return false;
    path = dir_of(path);
  }
  if (!(sx.stx_mask & STATX_MNT_ID)) return false;
  std::vector<MountLine> table = mount_table();
  const std::string id = std::to_string(sx.stx_mnt_id);
  auto own = std::find_if(table.begin(), table.end(), [&](const MountLine& m) { return m.id == id; });
  if (own == table.end() || !within(path, own->point)) return false;
  const std::string place = joined_path(own->root, below(path, own->point));  // in its file system
  for (const MountLine& m : table) {
    if (m.dev != own->dev) continue;
    std::string shown;  // where `m` shows `place` inside `dir`
    if (within(m.point, dir)) {
      if (within(place, m.root)) shown = joined_path(m.point, below(place, m.root));
    } else if (within(dir, m.point)) {
      std::string dir_place = joined_path(m.root, below(dir, m.point));
      if (within(place, dir_place)) shown = joined_path(dir, below(place, dir_place));
    }
    struct stat st;
    if (!shown.empty() && ::lstat(shown.c_str(), &st) == 0 && st.st_ino == sx.stx_ino &&
        st.st_dev == makedev(sx.stx_dev_major, sx.stx_dev_minor))
      return true;
  }
  return false;
}

// DST when omitted: <SRC>-copy beside SRC. "." or ".." has no name of its own to add to: the
// directory it names does.
std::string default_dst(const std::string& src) {
  std::string s = strip_slashes(src);
  std::string base = base_of(s);
  if (base == "." || base == "..") s = real(s).empty() ? s : real(s);
  return s + "-copy";
}

// open(path, flags), but for a FIFO that no one reads yet (`--manifest FIFO`): the signals that end
// or stop the run are blocked by then (signals.cpp, watch_signals), so the open that waits for a reader
// could not be interrupted, nor stopped. It waits here instead, looking every 20 ms: a signal that
// would end the run fails it (EINTR; the signal is left for the caller), one that stops it (Ctrl-Z)
// stops it there.
int open_for_writing(const char* path, int flags) {
  for (;;) {
    int fd = ::open(path, flags | O_NONBLOCK);
    if (fd >= 0) {
      ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK);
      return fd;
    }
    if (errno != ENXIO) return -1;
    struct stat st;
    if (::stat(path, &st) != 0 || !S_ISFIFO(st.st_mode)) {  // a socket, a device not there
      errno = ENXIO;
      return -1;
    }
    sigset_t pending;  // blocked, and come: of those pcopy reads from its signalfd, or others
    ::sigpending(&pending);
    for (int sig : kEndingSignals) {
      if (sigismember(&pending, sig)) {
        errno = EINTR;
        return -1;
      }
    }
    for (int sig : kStopSignals) {
      if (!sigismember(&pending, sig)) continue;
      sigset_t one;
      sigemptyset(&one);
      sigaddset(&one, sig);
      ::sigprocmask(SIG_UNBLOCK, &one, nullptr);  // delivered now: stopped until SIGCONT
      ::sigprocmask(SIG_BLOCK, &one, nullptr);
    }
    ::poll(nullptr, 0, 20);
  }
}

// --manifest: opened before anything is created, so that a path that cannot be written refuses
// the run with nothing done. One inside DST whose directory is yet to be made is opened once DST is.
struct ManifestOpener {
  const Options& opt;
  const std::string& dst_dir;  // the directory DST makes (single file: the one receiving it)
  bool deferred = false;

  // A manifest the copy reads or writes would be copied half-written, or replaced by the copy of
  // an entry of SRC: refused. For a single file, `target` is the one file written.
  std::optional<Refusal> clash(const std::string& real_src, const struct stat& src_st, bool single_file,
                               const std::string& target) const {
    if (opt.manifest.empty()) return std::nullopt;
    std::string m = canonical_future(opt.manifest);
    std::string why;
    // Unresolved (an unnamed working directory), "inside" is still told by identity.
    bool unresolved = m.empty() || real_src.empty();
    if (single_file ? same_path(m, real_src)
                    : within(m, real_src) || (unresolved && inside_by_identity(opt.manifest, src_st))) {
      why = single_file ? "it is the source" : "it is inside the source";
    } else if (single_file) {
      if (same_path(m, canonical_future(target))) why = "the copy is written there";
    } else if (std::string d = canonical_future(dst_dir); m != d && within(m, d)) {
      std::string rel = m.substr(d == "/" ? 1 : d.size() + 1);
      struct stat st;
      if (::lstat((real_src + "/" + rel).c_str(), &st) == 0 && !opt.filters.excluded(rel, S_ISDIR(st.st_mode)))
        why = fmt::format("the copy of {} goes there", quoted(rel));
    }
    if (why.empty()) return std::nullopt;
    return refused(why);
  }

  Refusal refused(const std::string& why) const {
    return Refusal{opt.manifest_shown(),
                   fmt::format("pcopy: cannot write manifest {}: {}", quoted(opt.manifest_shown()), why)};
  }

  std::optional<Refusal> open(UniqueFd& fd, Target::Made& made, bool dst_made) {
    if (opt.manifest.empty() || (dst_made && !deferred)) return std::nullopt;
    if (std::string_view closed = closed_standard_stream(opt.manifest); !closed.empty())
      return refused(fmt::format("{} was closed when pcopy started", closed));  // the manifest would be lost
    if (opt.dry_run) return dry_run_check();
    // Inside DST, whoever can write there could have put a link at its name: not followed.
    // Where that cannot be told (an unnamed working directory), it is taken to be inside.
    std::string m = canonical_future(dir_of(opt.manifest)), d = canonical_future(dst_dir);
    bool inside = m.empty() || d.empty() || within(m, d);
    // Made here if it was not there, known so: a run refused after this removes it.
    int flags = O_WRONLY | O_CLOEXEC | O_NOCTTY | (inside ? O_NOFOLLOW : 0);
    std::string made_at;  // the file this open made, if it made one
    fd.reset(::open(opt.manifest.c_str(), flags | O_CREAT | O_EXCL, 0666));
    if (fd) {
      made_at = opt.manifest;
    } else if (errno == EEXIST) {
      fd.reset(open_for_writing(opt.manifest.c_str(), flags));
      if (!fd && errno == ENOENT) {  // a link to nothing (outside DST): the file is made where it leads
        fd.reset(::open(opt.manifest.c_str(), flags | O_CREAT, 0666));
        if (fd) made_at = real(opt.manifest);
      }
    }
    if (struct stat st; fd && !made_at.empty() && ::fstat(fd.get(), &st) == 0) made = {made_at, st.st_dev, st.st_ino};
    if (fd) return std::nullopt;
    int err = errno;
    if (!dst_made && err == ENOENT && inside) {
      deferred = true;
      return std::nullopt;
    }
    if (err == EINTR) return refused("interrupted while waiting for a reader");
    return refused(err == ELOOP && inside ? "it is a symbolic link inside the destination" : errno_text(err));
  }

  // A dry run writes no manifest, but says whether the real run could: the file, or else its
  // directory, writable (or made by the run: DST, or a directory above it).
  std::optional<Refusal> dry_run_check() const {
    const std::string& m = opt.manifest;
    int err = 0;
    if (::access(m.c_str(), W_OK) != 0) {
      err = errno;
      if (err == ENOENT) {
        std::string dir = dir_of(m);
        bool made = within(canonical_future(dst_dir), canonical_future(dir));
        err = ::access(dir.c_str(), W_OK | X_OK) == 0 || (made && errno == ENOENT) ? 0 : errno;
      }
    }
    if (!err) return std::nullopt;
    return refused(errno_text(err));
  }
};

// The directory a single file is copied out of or into: one the user may enter but not list (mode
// --x, a home directory 0711, a drop box 1733) is opened O_PATH, which is all that names in it need,
// as `cp` needs no more.
UniqueFd open_file_dir(const std::string& dir) {
  UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd && errno == EACCES) fd.reset(::open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  return fd;
}

// Whether a directory opened by path can be entered: one that may be listed but not searched
// (mode r--) opens, yet nothing in it can be. Else false, with errno.
bool enterable(int dir) {
  UniqueFd probe(::openat(dir, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  return probe.valid();
}

// A run refused once DST (or the manifest) was made: what was made for it is removed, for a
// refusal writes nothing.
Refusal unmade(Target& t, Refusal no) {
  t.remove_made();
  return no;
}

}  // namespace

void Target::remove_made() {
  dst_root.reset();
  // The manifest first: it may be inside the directories made for DST.
  if (struct stat there; !manifest_made.path.empty() && ::lstat(manifest_made.path.c_str(), &there) == 0 &&
                         there.st_dev == manifest_made.dev && there.st_ino == manifest_made.ino && there.st_size == 0)
    ::unlink(manifest_made.path.c_str());
  manifest_made = {};
  for (auto it = made_dirs.rbegin(); it != made_dirs.rend(); ++it) ::rmdir(it->c_str());
  made_dirs.clear();
}

void Target::flush_outside(const std::function<void(const std::string&, int)>& failed) const {
  auto flush = [&](int fd, const std::string& path) {
#ifdef PCOPY_TEST_HOOKS
    // An EIO for the directory whose name PCOPY_TEST_EIO_FSYNC_NAME gives.
    if (const char* name = std::getenv("PCOPY_TEST_EIO_FSYNC_NAME"); name && base_of(path) == name)
      return failed(path, EIO);
#endif
    if (fd >= 0 && ::fsync(fd) != 0) failed(path, errno);
  };
  if (single_file && (::fcntl(dst_root.get(), F_GETFL) & O_PATH)) {
    // A directory the user may not list, opened O_PATH, cannot be flushed: opening it says why.
    UniqueFd readable(::openat(dst_root.get(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!readable) failed(dst_dir, errno);
    else flush(readable.get(), dst_dir);
  } else if (single_file) {
    flush(dst_root.get(), dst_dir);
  }
  for (const std::string& made : made_dirs) {
    std::string parent = dir_of(made);
    UniqueFd fd(::open(parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!fd) failed(parent, errno);
    else flush(fd.get(), parent);
  }
}

std::variant<Target, Refusal> prepare_target(const Options& opt) {
  Target t;
  const std::string& src = opt.src;
  std::string dst = opt.dst.empty() ? default_dst(src) : opt.dst;
  t.dst_display = dst;
  auto refuse = [](const std::string& path, std::string message) { return Refusal{path, std::move(message)}; };
  if (::stat(src.c_str(), &t.src_st) != 0)
    return refuse(src, fmt::format("pcopy: cannot access {}: {}", quoted(src), errno_text(errno)));

  struct stat dst_st;
  bool dst_exists = ::stat(dst.c_str(), &dst_st) == 0;
  if (dst_exists && dst_st.st_dev == t.src_st.st_dev && dst_st.st_ino == t.src_st.st_ino)
    return refuse(dst, fmt::format("pcopy: {} and {} are the same", quoted(src), quoted(dst)));

  if (S_ISDIR(t.src_st.st_mode)) {
    if (dst_exists && !S_ISDIR(dst_st.st_mode))
      return refuse(dst, fmt::format("pcopy: destination {} exists and is not a directory", quoted(dst)));
    if (struct stat link; !dst_exists && ::lstat(dst.c_str(), &link) == 0 && S_ISLNK(link.st_mode))
      return refuse(dst, fmt::format("pcopy: destination {} is a symbolic link to nothing", quoted(dst)));
    std::string real_src = real(src), real_dst = canonical_future(dst);
    if (within(real_dst, real_src) || inside_by_identity(dst, t.src_st) || inside_by_mounts(real_dst, real_src))
      return refuse(dst, fmt::format("pcopy: cannot copy {} into itself ({})", quoted(src), quoted(dst)));
    // The mirror image: SRC inside DST has no counterpart in itself, and --delete would remove it.
    if (opt.delete_extraneous && dst_exists && (within(real_src, real_dst) || inside_by_identity(src, dst_st)))
      return refuse(src, fmt::format("pcopy: --delete would delete {} itself: it is inside the destination {}",
                                     quoted(src), quoted(dst)));
    t.src_root.reset(::open(src.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!t.src_root || !enterable(t.src_root.get()))
      return refuse(src, fmt::format("pcopy: cannot open {}: {}", quoted(src), errno_text(errno)));
    ManifestOpener manifest{opt, dst};
    if (auto no = manifest.clash(real_src, t.src_st, false, "")) return *no;
    if (auto no = manifest.open(t.manifest, t.manifest_made, false)) return *no;
    // DST is its maker's alone until the walk gives it SRC's mode (and owner, and ACL): made 0755
    // (or 0777 under umask 0), it was open to all meanwhile, to read what went in or to make a
    // directory of theirs in it for the copy to fill.
#ifdef PCOPY_TEST_HOOKS
    if (std::getenv("PCOPY_TEST_STOP_BEFORE_DST")) ::raise(SIGSTOP);  // for a test to signal it here
#endif
    if (!opt.dry_run) {
      if (int err = make_dirs(dst, t.made_dirs, 0700))
        return unmade(t, refuse(dst, fmt::format("pcopy: cannot create {}: {}", quoted(dst), errno_text(err))));
    }
    t.dst_root.reset(::open(dst.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    // An earlier copy the user may not list or enter (made 0000 as SRC was one night, or since):
    // theirs, so opened up, as directories inside it are; the walk gives it SRC's mode.
    // A dry run may not: it lists what it would copy there as new, as into a DST not made yet.
    struct stat locked;
    if ((t.dst_root ? !enterable(t.dst_root.get()) : errno == EACCES) &&
        (opt.dry_run ? needs_opening_up(AT_FDCWD, dst.c_str(), locked) : open_up_at(AT_FDCWD, dst.c_str()) != 0)) {
      t.dst_root.reset(opt.dry_run ? -1 : ::open(dst.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
      t.dst_unseen = opt.dry_run;
      if (opt.dry_run) errno = ENOENT;
    }
    if (t.dst_root ? !enterable(t.dst_root.get()) : !(opt.dry_run && errno == ENOENT))
      return unmade(t, refuse(dst, fmt::format("pcopy: cannot open {}: {}", quoted(dst), errno_text(errno))));
    if (!t.dst_root) t.dst_fs = nearest_existing(dst);
    if (auto no = manifest.open(t.manifest, t.manifest_made, true)) return unmade(t, *no);
    return t;
  }

  // A single file (or link target, FIFO, device): DST is the file, or DST/<name> for a directory.
  t.single_file = true;
  if (S_ISREG(t.src_st.st_mode)) {  // unreadable: refused like a missing SRC (a FIFO is never opened)
    UniqueFd probe(::open(src.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK));
    if (!probe) return refuse(src, fmt::format("pcopy: cannot open {}: {}", quoted(src), errno_text(errno)));
  }
  std::string real_src = real(src);
  if (real_src.empty()) {
    int err = 0;
    real_src = followed(src, err);
    if (real_src.empty()) return refuse(src, fmt::format("pcopy: cannot follow {}: {}", quoted(src), errno_text(err)));
  }
  t.src_root = open_file_dir(dir_of(real_src));
  if (!t.src_root)
    return refuse(src, fmt::format("pcopy: cannot open {}: {}", quoted(dir_of(real_src)), errno_text(errno)));
  t.src_name = base_of(real_src);
  // DST named as a device, a FIFO or a socket (or a link to one): a copy would replace it, being
  // written to a temporary and renamed over it, as an entry in a tree is (`pcopy f /dev/null` as
  // root put a file where /dev/null was; `cp` writes into it). Refused: name a file or a directory.
  if (dst_exists && !S_ISREG(dst_st.st_mode) && !S_ISDIR(dst_st.st_mode)) {
    const char* what = S_ISCHR(dst_st.st_mode)    ? "a character device"
                       : S_ISBLK(dst_st.st_mode)  ? "a block device"
                       : S_ISFIFO(dst_st.st_mode) ? "a FIFO"
                       : S_ISSOCK(dst_st.st_mode) ? "a socket"
                                                  : "not a regular file";
    return refuse(dst, fmt::format("pcopy: cannot copy {} to {}: it is {}, which pcopy would replace, not write into",
                                   quoted(src), quoted(dst), what));
  }
  std::string dst_dir;
  // "dir/", "dir/." and "dir/.." name a directory, made if missing (mkdir -p makes "dir" for them).
  std::string dst_base = base_of(dst);
  if ((dst_exists && S_ISDIR(dst_st.st_mode)) || dst.back() == '/' || dst_base == "." || dst_base == "..") {
    dst_dir = dst;
    t.dst_name = base_of(strip_slashes(src));  // the name given, as cp gives it: a link's, not its target's
    t.dst_file = dst + (dst.back() == '/' ? "" : "/") + t.dst_name;
  } else {
    dst_dir = dir_of(dst);
    t.dst_name = base_of(dst);
    t.dst_file = dst;
  }
  t.dst_dir = dst_dir;
  ManifestOpener manifest{opt, dst_dir};
  if (auto no = manifest.clash(real_src, t.src_st, true, dst_dir + "/" + t.dst_name)) return *no;
  if (auto no = manifest.open(t.manifest, t.manifest_made, false)) return *no;
  if (!opt.dry_run) {
    // A file where a directory above it should be: the copy is what cannot be made, as cp says.
    if (int err = make_dirs(dst_dir, t.made_dirs)) {
      const std::string& what = err == ENOTDIR ? t.dst_file : dst_dir;
      return unmade(t, refuse(what, fmt::format("pcopy: cannot create {}: {}", quoted(what), errno_text(err))));
    }
  }
  t.dst_root = open_file_dir(dst_dir);
  if (!t.dst_root && !(opt.dry_run && errno == ENOENT))
    return unmade(t, refuse(dst_dir, fmt::format("pcopy: cannot open {}: {}", quoted(dst_dir), errno_text(errno))));
  if (!t.dst_root) t.dst_fs = nearest_existing(dst_dir);
  struct stat final_st;
  if (t.dst_root && ::fstatat(t.dst_root.get(), t.dst_name.c_str(), &final_st, 0) == 0 &&
      final_st.st_dev == t.src_st.st_dev && final_st.st_ino == t.src_st.st_ino)
    return unmade(t, refuse(dst, fmt::format("pcopy: {} and {} are the same file", quoted(src), quoted(dst))));
  if (auto no = manifest.open(t.manifest, t.manifest_made, true)) return unmade(t, *no);
  return t;
}

}  // namespace pcopy
