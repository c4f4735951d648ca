#include "pcopy/walker.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "pcopy/filter.hpp"
#include "pcopy/fs_facts.hpp"
#include "pcopy/metadata.hpp"
#include "pcopy/paths.hpp"
#include "pcopy/temp_names.hpp"
#include "pcopy/up_to_date.hpp"
#include "pcopy/xattrs.hpp"

namespace pcopy {

namespace {

// Levels of the walk whose fds stay open: the directory being listed and its parent at least, so
// that siblings are entered without reopening the parent; more as RLIMIT_NOFILE allows.
constexpr int kMinOpenFrames = 2;
constexpr int kMaxOpenFrames = 16;
// Descriptors of the parent besides the pool's two per worker and the walk's levels: stdio, SRC
// and DST (and the walk's own copies), the signalfd, the manifest, a replaced worker's new pipes
// and the four it duplicates as it starts, and those the walk opens for a moment.
constexpr long kParentFds = 20;
// Finished listings still waiting for their jobs keep their destination fd (else it is closed and
// reopened by path to apply the directory's metadata): as many as the jobs window can hold, within
// half of what RLIMIT_NOFILE leaves.
constexpr int kMaxDeferredFds = 4096;
// getdents64 buffer: one call lists a directory of up to ~40,000 entries (and tells whether a
// directory is small enough to be staged: see small_leaf).
constexpr size_t kDentsBuffer = 2 << 20;
constexpr int kDirFlags = O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOCTTY;

bool has_acl(const std::vector<std::pair<std::string, std::string>>& xattrs) {
  return std::any_of(xattrs.begin(), xattrs.end(), [](const auto& a) { return a.first == "system.posix_acl_access"; });
}

struct linux_dirent64 {
  ino64_t d_ino;
  off64_t d_off;
  unsigned short d_reclen;
  unsigned char d_type;
  char d_name[1];  // really d_reclen - 19 bytes, NUL-terminated
};

mode_t mode_of(unsigned char d_type) {
  switch (d_type) {
    case DT_REG: return S_IFREG;
    case DT_LNK: return S_IFLNK;
    case DT_FIFO: return S_IFIFO;
    case DT_CHR: return S_IFCHR;
    case DT_BLK: return S_IFBLK;
    case DT_SOCK: return S_IFSOCK;
    default: return 0;
  }
}

bool is_dot(const char* n) { return n[0] == '.' && (n[1] == '\0' || (n[1] == '.' && n[2] == '\0')); }

bool same_inode(int fd, dev_t dev, ino_t ino) {
  struct stat st;
  return ::fstat(fd, &st) == 0 && st.st_dev == dev && st.st_ino == ino;
}

// The user.* attributes of `attrs`: those an ordinary user may write, where the mode lets them.
std::vector<std::pair<std::string, std::string>> user_attrs(const std::vector<std::pair<std::string, std::string>>& attrs) {
  std::vector<std::pair<std::string, std::string>> user;
  for (const auto& attr : attrs)
    if (attr.first.starts_with("user.")) user.push_back(attr);
  return user;
}

// What RLIMIT_NOFILE allows the parent beyond fds_needed().
long spare_fds(unsigned jobs) {
  struct rlimit nofile;
  if (::getrlimit(RLIMIT_NOFILE, &nofile) != 0 || nofile.rlim_cur == RLIM_INFINITY) return LONG_MAX;
  return std::max(0L, long(nofile.rlim_cur) - fds_needed(jobs));
}

// Whatever is under `names` in `dir`: copies that failed or never finished in a staged directory.
void remove_names(int dir, const std::vector<std::string>& names) {
  for (const std::string& name : names) ::unlinkat(dir, name.c_str(), 0);
}

std::pair<dev_t, ino_t> inode_of(int fd) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return {0, 0};
  return {st.st_dev, st.st_ino};
}

// Makes `ev` a warning saying `detail`, not an error: an entry gone from SRC since it was listed.
void gone_from_src(WalkEvent& ev, const char* detail) {
  ev.type = WalkEvent::Type::Warning;
  ev.err = 0;
  ev.detail = detail;
}

}  // namespace

struct Walker::Frame {
  DirNode* node = nullptr;
  UniqueFd src;
  bool listing = true;
  std::vector<std::string> subdirs;
  size_t next_subdir = 0;
  size_t rel_len = 0;  // of Walker::path_ while this frame is listed: its path from SRC (filters only)
  std::string names;  // with --delete: the listing so far, for listings_
};

long fds_needed(unsigned jobs) { return inherited_fds() + kParentFds + 2 * long(jobs) + 2 * kMinOpenFrames; }

const char* skip_reason(mode_t mode, const Options& options, uid_t euid) {
  if (S_ISSOCK(mode)) return "socket skipped";
  if ((S_ISCHR(mode) || S_ISBLK(mode)) && !(options.archive && euid == 0))
    return "device skipped (devices are recreated only with -a, as root)";
  return nullptr;
}

Walker::Walker(const Options& options, UniqueFd src_root, UniqueFd dst_root, const struct stat& src_st,
               DirErrorFn on_dir_error, bool stat_entries)
    : opt_(options),
      src_root_(std::move(src_root)),
      dst_root_(std::move(dst_root)),
      root_dev_(src_st.st_dev),
      root_ino_(src_st.st_ino),
      on_dir_error_(std::move(on_dir_error)),
      stat_entries_(stat_entries),
      // Not with -v or --manifest either: each path they list must be there already, for whoever
      // reads the list (a killed run, or a name another writer took meanwhile, would leave lines
      // for files never revealed).
      can_stage_(!options.dry_run && !options.inplace && !options.archive && !options.verify && !options.verbose &&
                 options.manifest.empty()),
      pid_(::getpid()),
      dents_(new char[kDentsBuffer]) {
  // Each level open holds two fds (SRC's and DST's directory): first as many levels as allowed,
  // then half of what is left for deferred fds.
  long spare = spare_fds(options.jobs);
  max_open_frames_ = kMinOpenFrames + int(std::min<long>(spare / 2, kMaxOpenFrames - kMinOpenFrames));
  max_deferred_fds_ = int(std::min<long>((spare - 2 * (max_open_frames_ - kMinOpenFrames)) / 2, kMaxDeferredFds));
  umask_ = ::umask(0);
  ::umask(umask_);
  auto* root = new DirNode;
  live_.insert(root);
  root->st = src_st;
  if (opt_.archive) root->xattrs_err = read_xattrs_fd(src_root_.get(), euid_ == 0, root->xattrs);
  if (struct stat dst_st; dst_root_ && ::fstat(dst_root_.get(), &dst_st) == 0) dst_id_.emplace(dst_st.st_dev, dst_st.st_ino);
  auto frame = std::make_unique<Frame>();
  frame->node = root;
  frame->src.reset(::openat(src_root_.get(), ".", kDirFlags));
  if (!frame->src) start_err_ = errno;
  if (dst_root_ && !start_err_) {
    root->dst.reset(::openat(dst_root_.get(), ".", kDirFlags));
    if (!root->dst) {
      start_err_ = errno;
      start_err_in_dst_ = true;
    } else if (!opt_.dry_run) {
      prepare_existing(root, nullptr, root->dst.get(), src_root_.get());
    }
  }
  stack_.push_back(std::move(frame));
  open_frames_ = 1;
}

Walker::~Walker() {
  for (DirNode* node : live_) delete node;
  live_.clear();
}

namespace {

// The names from the root down to `dir`, joined; staged directories under their temporary names
// when `as_in_dst`.
std::string path_of(const DirNode* dir, bool as_in_dst) {
  std::vector<const std::string*> names;
  size_t len = 0;
  for (; dir && dir->parent; dir = dir->parent) {
    names.push_back(as_in_dst && !dir->staged_name.empty() ? &dir->staged_name : &dir->name);
    len += names.back()->size() + 1;
  }
  std::string rel;
  rel.reserve(len);
  for (auto it = names.rbegin(); it != names.rend(); ++it) {
    if (!rel.empty()) rel.push_back('/');
    rel += **it;
  }
  return rel;
}

}  // namespace

// Built from the path asked for last when `dir` is below that one's directory: batches go out for
// a directory below the last one's, and in a chain thousands of levels deep, a file in each, a
// path from the root each was a pointer chased per level: 55% of a 20,000-level copy's time.
std::string Walker::rel_path(const DirNode* dir) const {
  if (last_path_dir_ && dir) {
    std::vector<const std::string*> below;
    const DirNode* d = dir;
    for (; d != last_path_dir_ && d->parent && d->path_len > last_path_dir_->path_len; d = d->parent)
      below.push_back(&d->name);
    if (d == last_path_dir_) {
      for (auto it = below.rbegin(); it != below.rend(); ++it) {
        if (!last_path_.empty()) last_path_.push_back('/');
        last_path_ += **it;
      }
      last_path_dir_ = dir;
      return last_path_;
    }
  }
  last_path_ = path_of(dir, false);
  last_path_dir_ = dir;
  return last_path_;
}

std::string Walker::rel_path(const DirNode* dir, const std::string& name) const {
  std::string rel = rel_path(dir);
  if (!rel.empty()) rel.push_back('/');
  return rel + name;
}

std::string Walker::dst_rel_path(const DirNode* dir) const { return path_of(dir, true); }

void Walker::forget(DirNode* dir, const std::string& name) {
  if (dir && dir->facts.staged) dir->forgotten.push_back(name);
}

// A directory is staged when it is new, on a local file system, not inside another staged one,
// and its whole listing fits one getdents64 call with no subdirectory in it (so that a run killed
// outright, whose staged directories the next run removes and copies again, loses no more than
// what a directory that size holds; /usr/share's 18,000-entry man1 fits): the chunk read here is
// left in the buffer for read_entries.
bool Walker::small_leaf(int src_fd) {
  long n = ::syscall(SYS_getdents64, src_fd, dents_.get(), kDentsBuffer);
  dents_pos_ = 0;
  dents_len_ = n > 0 ? size_t(n) : 0;
  // A buffer not nearly full holds the whole listing (local file systems fill it as far as they can).
  if (n <= 0 || size_t(n) > kDentsBuffer - 4096) return false;
  for (size_t pos = 0; pos < dents_len_;) {
    auto* d = reinterpret_cast<linux_dirent64*>(dents_.get() + pos);
    pos += d->d_reclen;
    if ((d->d_type == DT_DIR || d->d_type == DT_UNKNOWN) && !is_dot(d->d_name)) return false;
  }
  return true;
}

std::optional<WalkEvent> Walker::next() {
  if (queued_) return std::exchange(queued_, std::nullopt);
  while (!stack_.empty()) {
    Frame& top = *stack_.back();
    if (top.listing) {
      std::optional<WalkEvent> ev;
      if (read_entries(top, ev)) {
        if (ev) return ev;
        continue;
      }
      top.listing = false;
      if (ev) return ev;
      continue;
    }
    if (top.next_subdir < top.subdirs.size()) {
      std::string name = std::move(top.subdirs[top.next_subdir++]);
      if (auto ev = descend(top, name)) return ev;
      continue;
    }
    pop();
  }
  return std::nullopt;
}

bool Walker::exhausted() const {
  if (queued_) return false;
  return std::none_of(stack_.begin(), stack_.end(), [](const std::unique_ptr<Frame>& f) {
    return f->listing || f->next_subdir < f->subdirs.size();
  });
}

// Reads one entry. Returns false when the listing is over (with an error event if it failed).
bool Walker::read_entries(Frame& frame, std::optional<WalkEvent>& out) {
  for (;;) {
    if (dents_pos_ >= dents_len_) {
      long n = ::syscall(SYS_getdents64, frame.src.get(), dents_.get(), kDentsBuffer);
      dents_pos_ = 0;
      dents_len_ = n > 0 ? size_t(n) : 0;
      if (n < 0) {
        out = WalkEvent{WalkEvent::Type::Error, frame.node->parent, frame.node->name, {}, errno, {}};
        if (errno == ENOENT) {  // removed while listed (a dead directory lists nothing)
          gone_from_src(*out, kVanishedDir);
        } else {
          ++walk_errors_;  // SRC has it, listed in part if at all: --delete may not trust the walk
        }
        // Either way it has no listing: --delete does not look into its copy.
        if (!frame.node->parent) out->dir = frame.node, out->name.clear();
        return false;
      }
      if (n == 0) {
        // Below a directory not listed to the end, --delete never looks: not kept.
        const DirNode* node = frame.node;
        if (opt_.delete_extraneous && (!node->parent || node->parent->listing != SrcListings::kNone)) {
          frame.names.shrink_to_fit();
          frame.node->listing =
              listings_.add(node->parent ? node->parent->listing : SrcListings::kNone, node->name,
                            {std::move(frame.names), node->st.st_atim, node->st.st_mtim});
        }
        return false;
      }
    }
    auto* d = reinterpret_cast<linux_dirent64*>(dents_.get() + dents_pos_);
    dents_pos_ += d->d_reclen;
    if (is_dot(d->d_name)) continue;
    if (opt_.delete_extraneous) frame.names.append(d->d_name, std::strlen(d->d_name) + 1);
    out = classify(frame, d->d_name, d->d_type);
    return true;
  }
}

std::optional<WalkEvent> Walker::classify(Frame& frame, const char* name, unsigned char d_type) {
  bool filtered = !opt_.filters.empty();
  std::string rel;
  if (filtered) rel = frame.rel_len == 0 ? std::string(name) : path_ + "/" + name;
  // An excluded entry is not SRC's to --delete (the last name listed): DST's entry of that name is
  // kept only where the filters exclude it as what it is there, as rsync has it. A directory
  // excluded where SRC has a file kept the directory for good, and the other way round.
  auto excluded = [&](bool is_dir) {
    if (!filtered || !opt_.filters.excluded(rel, is_dir)) return false;
    if (opt_.delete_extraneous) frame.names.resize(frame.names.size() - std::strlen(name) - 1);
    return true;
  };
  if (d_type == DT_DIR) {
    if (!excluded(true)) frame.subdirs.emplace_back(name);
    return std::nullopt;
  }
  WalkEvent ev;
  ev.dir = frame.node;
  ev.name = name;
  int follow = opt_.dereference ? 0 : AT_SYMLINK_NOFOLLOW;
  mode_t type = mode_of(d_type);
  if (!stat_entries_ && !opt_.dereference && type != 0) {
    ev.st.st_mode = type;
    ev.st.st_nlink = 1;
  } else if (::fstatat(frame.src.get(), name, &ev.st, follow) != 0) {
    ev.type = WalkEvent::Type::Error;
    ev.err = errno;
    // Not a failure to read SRC (walk_errors_): the name was listed, and --delete keeps its copy,
    // as it keeps a file a worker fails to read. Counted, it held the deletions back only where the
    // bar, -a or -n made the walk stat every entry: a run in cron deleted, the same at a terminal not.
    if (ev.err != ENOENT) return ev;
    if (struct stat l; opt_.dereference && ::fstatat(frame.src.get(), name, &l, AT_SYMLINK_NOFOLLOW) == 0 &&
                       S_ISLNK(l.st_mode)) {
      ev.detail = kDanglingLink;  // -L: a link to nothing
    } else {
      gone_from_src(ev, kVanishedEntry);
    }
    return ev;
  }
  if (S_ISDIR(ev.st.st_mode)) {
    if (!excluded(true)) frame.subdirs.emplace_back(name);
    return std::nullopt;
  }
  if (excluded(false)) return std::nullopt;
  if (const char* why = skip_reason(ev.st.st_mode, opt_, euid_)) {
    ev.type = WalkEvent::Type::Warning;
    ev.detail = why;
    return ev;
  }
  ++frame.node->pending;
  return ev;
}

std::optional<WalkEvent> Walker::descend(Frame& frame, const std::string& name) {
  WalkEvent ev;
  ev.dir = frame.node;
  ev.name = name;
  ev.type = WalkEvent::Type::Error;
  UniqueFd src(::openat(frame.src.get(), name.c_str(), kDirFlags | (opt_.dereference ? 0 : O_NOFOLLOW)));
  // A directory we may not read is still made, empty, with its mode and times (as cp -a and
  // rsync -a make it), then reported.
  int open_err = src ? 0 : errno;
  bool unreadable = open_err == EACCES &&
                    ::fstatat(frame.src.get(), name.c_str(), &ev.st, opt_.dereference ? 0 : AT_SYMLINK_NOFOLLOW) == 0 &&
                    S_ISDIR(ev.st.st_mode);
  if (unreadable) ++walk_errors_;  // whatever becomes of its copy: SRC was not read
  errno = open_err;
  if (!unreadable && (!src || ::fstat(src.get(), &ev.st) != 0)) {
    ev.err = errno;
    // O_NOFOLLOW refused a link, or O_DIRECTORY a file, put where the listing had a directory: an
    // error, but its parent's listing is whole, and --delete does not look into its copy, which
    // has no listing (as when a worker finds the change).
    if ((errno == ELOOP && !opt_.dereference) || errno == ENOTDIR) {
      ev.err = 0;
      ev.detail = kChangedType;
    } else if (errno != ENOENT) {
      ++walk_errors_;
    }
    if (struct stat l; ev.err == ENOENT && opt_.dereference &&
                       ::fstatat(frame.src.get(), name.c_str(), &l, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(l.st_mode)) {
      ev.err = 0;
      ev.detail = kDanglingLink;  // -L: the link is there, its directory went
    } else if (ev.err == ENOENT) {
      gone_from_src(ev, kVanishedEntry);
    }
    return ev;
  }
  if (opt_.dereference) {
    for (DirNode* a = frame.node; a; a = a->parent) {
      if (a->st.st_dev == ev.st.st_dev && a->st.st_ino == ev.st.st_ino) {
        ev.detail = "symbolic link loop: it leads back to a directory being copied";
        return ev;
      }
    }
  }
  // DST itself, under another name (DST a bind mount of a directory in SRC where the mount table
  // could not be read before the run): copying it into itself would never end, and what --delete
  // would remove from DST is SRC's own.
  if (dst_id_ && ev.st.st_dev == dst_id_->first && ev.st.st_ino == dst_id_->second) {
    ev.detail = "it is the destination itself: a directory cannot be copied into itself";
    ++walk_errors_;
    return ev;
  }
  auto* node = new DirNode;
  live_.insert(node);
  node->parent = frame.node;
  node->name = name;
  node->path_len = frame.node->path_len + (frame.node->parent ? 1 : 0) + name.size();
  node->st = ev.st;
  ++frame.node->pending;
  int err = 0;
  const DirNode* parent = frame.node;
  if (can_stage_ && dst_root_ && parent->dst && parent->facts.known && parent->facts.local && !parent->facts.staged &&
      src && small_leaf(src.get()))
    node->staged_name = temp_name(pid_, true, parent->facts.hides_names, ++staged_count_);
  // Before its copy is made or entered: an ACL of SRC's keeps others out of it from the start.
  if (opt_.archive && src) node->xattrs_err = read_xattrs_fd(src.get(), euid_ == 0, node->xattrs);
  node->dst.reset(open_dst_child(frame.node, node, src.get(), err, ev.detail));
  if (err || !ev.detail.empty()) {
    // Not a walk error: SRC was read. Unlisted, the directory is not entered by --delete either.
    ev.err = err;
    if (err == EROFS) ev.own_mount = on_own_mount(dst_root_.get(), dst_fd_for(frame.node), name.c_str());
    free_node(node);
    release(frame.node);
    dents_pos_ = dents_len_ = 0;
    return ev;
  }
  ev.type = WalkEvent::Type::Dir;
  ev.created = node->fresh;
  ev.replaced = node->replaced;
  if (unreadable) {
    dents_pos_ = dents_len_ = 0;
    release(node);  // nothing to list: finished as it is
    queued_ = WalkEvent{WalkEvent::Type::Error, frame.node, name, {}, EACCES, {}};
    return ev;
  }
  if (opt_.one_file_system && ev.st.st_dev != root_dev_) {
    dents_pos_ = dents_len_ = 0;
    release(node);  // the mount point itself is copied, not what is mounted on it
    return ev;
  }
  auto child = std::make_unique<Frame>();
  child->node = node;
  child->src = std::move(src);
  if (!opt_.filters.empty()) {
    if (!path_.empty()) path_ += '/';
    path_ += name;
    child->rel_len = path_.size();
  }
  stack_.push_back(std::move(child));
  ++open_frames_;
  evict_fds();
  return ev;
}

int Walker::open_dst_child(DirNode* parent, DirNode* node, int src_fd, int& err, std::string& detail) {
  bool& fresh = node->fresh;
  // A staged directory is open only if needed; it has no subdirectories, unless one appeared in
  // SRC since it was listed.
  int pfd = parent->facts.staged ? dst_fd_for(parent) : parent->dst ? parent->dst.get() : -1;
  if (pfd < 0) {
    fresh = true;  // dry run below a directory that does not exist yet: this one would be new too
    return -1;
  }
  const char* n = node->name.c_str();
  // A file or a link where SRC has a directory is replaced, never followed; --ignore-existing
  // replaces nothing, so the directory cannot be copied (cp -n refuses it too).
  auto kept_in_the_way = [&] {
    if (!opt_.ignore_existing || (errno != ENOTDIR && errno != ELOOP)) return false;
    detail = "the destination has a non-directory of that name, and --ignore-existing keeps it";
    return true;
  };
  // SRC itself, inside DST at the place a directory of SRC is copied to (`pcopy a/b a` with a
  // directory b in a/b): copying onto it would overwrite the very files being read.
  auto is_source = [&](int fd) {
    struct stat st;
    if (::fstat(fd, &st) != 0 || st.st_dev != root_dev_ || st.st_ino != root_ino_) return false;
    ::close(fd);
    detail = "it is the source itself: the source cannot be copied onto itself";
    return true;
  };
  if (opt_.dry_run) {
    int fd = ::openat(pfd, n, kDirFlags | O_NOFOLLOW);
    if (fd < 0 && kept_in_the_way()) return -1;
    if (fd >= 0 && is_source(fd)) return -1;
    node->replaced = fd < 0 && (errno == ENOTDIR || errno == ELOOP);
    // One of the user's that the real run would open up is there, unseen: not made anew.
    struct stat st;
    fresh = fd < 0 && !(errno == EACCES && needs_opening_up(pfd, n, st));
    return fd;
  }
  // A new directory is made with its final mode, saving the chmod when it is finished, where that
  // mode lets us fill it and lets no one else write in it meanwhile, and its owner is final already
  // (as cp does); unless a default ACL, the umask or a set-group-ID parent (whose bit it would
  // inherit) would change it, or SRC's has an ACL (which may keep out some whom the mode lets in),
  // or it or its parent lets others pass but not list (a guessable staged name would give away a
  // name they cannot learn). Else 0700 until finished.
  mode_t want = node->st.st_mode & 07777;
  bool owner_final = !opt_.archive || (node->st.st_uid == euid_ && node->st.st_gid == egid_);
  bool exact = owner_final && parent->facts.known && !parent->facts.default_acl && !parent->dst_sgid &&
               (want & 0700) == 0700 && (want & 07022) == 0 && (want & umask_) == 0 && !has_acl(node->xattrs) &&
               !node->xattrs_err && !hides_names(want) && !parent->facts.hides_names;
  mode_t initial = exact ? want : 0700;
  // Made by mkdir in its parent: same file system, a default ACL and set-group-ID only if the
  // parent has them.
  auto inherit = [&] {
    node->facts = parent->facts;
    node->fs_dev = parent->fs_dev;
    node->dst_sgid = parent->dst_sgid;
    node->facts.hides_names = false;  // made 0700, or with a mode that lets others list it
    node->facts.locked = false;
    node->mode_set = exact;
  };
  if (!node->staged_name.empty()) {
    struct stat st;
    const char* t = node->staged_name.c_str();
    // In a directory this run made nothing is there yet (and the rename would fail if it were).
    bool vacant = parent->fresh || (::fstatat(pfd, n, &st, AT_SYMLINK_NOFOLLOW) != 0 && errno == ENOENT);
    // Not in an append-only directory (chattr +a): the rename into place would be refused.
    if (vacant && !parent->fresh && append_only(pfd)) vacant = false;
    if (vacant) open_up(parent, pfd);
    if (vacant && ::mkdirat(pfd, t, initial) == 0) {
      // Workers open it themselves; with its final mode set, all it needs at the end is its
      // times, set through its parent (apply_dir_metadata): then it is not opened here.
      bool unopened = exact && !opt_.fsync;
      int fd = unopened ? -1 : ::openat(pfd, t, kDirFlags | O_NOFOLLOW);
      if (fd >= 0 || unopened) {
        fresh = true;
        inherit();
        node->facts.staged = true;
        return fd;
      }
      ::unlinkat(pfd, t, AT_REMOVEDIR);
    }
    node->staged_name.clear();  // it exists already, or could not be made: the usual way
  }
  fresh = ::mkdirat(pfd, n, initial) == 0;
  if (!fresh && errno == EACCES && open_up(parent, pfd)) fresh = ::mkdirat(pfd, n, initial) == 0;
  if (!fresh && errno != EEXIST) {
    err = errno;
    return -1;
  }
  int fd = ::openat(pfd, n, kDirFlags | O_NOFOLLOW);
  // The copy of a directory SRC did not let us read on an earlier run (made 0000, as SRC's was), or
  // one made so in DST since: ours, so opened up, and given SRC's mode when it is finished.
  if (fd < 0 && !fresh && errno == EACCES) {
    if (open_up_at(pfd, n)) fd = ::openat(pfd, n, kDirFlags | O_NOFOLLOW);
    else errno = EACCES;
  }
  if (fd < 0 && !fresh && kept_in_the_way()) return -1;
  if (fd < 0 && !fresh && (errno == ENOTDIR || errno == ELOOP)) {
    open_up(parent, pfd);
    if (::unlinkat(pfd, n, 0) != 0 || ::mkdirat(pfd, n, initial) != 0) {
      err = errno;
      return -1;
    }
    fresh = node->replaced = true;
    fd = ::openat(pfd, n, kDirFlags | O_NOFOLLOW);
  }
  if (fd < 0) {
    err = errno;
    return -1;
  }
  if (fresh) {
    inherit();
  } else {
    if (is_source(fd)) return -1;
    prepare_existing(node, parent, fd, src_fd);
  }
  return fd;
}

// An existing destination directory (a previous run's copy of a read-only one, say) must be
// writable while we fill it; its real mode is applied when it is finished. Not where its mode
// already lets us (root, an ACL), and one we may list and enter only once something is to be
// written in it (DirFacts::locked): an unchanged -u run changes no directory's ctime.
void Walker::prepare_existing(DirNode* node, const DirNode* parent, int fd, int src_fd) {
  struct stat st;
  if (::fstat(fd, &st) == 0) {
    // What SRC's directory keeps from others, DST's does from now on, not once it is finished:
    // what is copied into it meanwhile is no more theirs to read than in SRC (a 0700 SRC copied
    // into DST made 0755 by mkdir, a directory made private since the last run). By the mode bits
    // of group and others that SRC's lacks, first: then a new group gets none it should not have.
    // With -a, by its owner and group and its ACL, made SRC's now (written only where they differ:
    // an unchanged run changes no ctime; what fails is reported when the directory is finished).
    bool opened_up = false, locked = false;
    auto narrow = [&] {
      mode_t mode = st.st_mode & 07777;
      if (!opened_up && !locked && (mode & 0700) != 0700 && st.st_uid == euid_ &&
          ::faccessat(fd, ".", R_OK | W_OK | X_OK, AT_EACCESS) != 0 && errno == EACCES) {
        locked = ::faccessat(fd, ".", R_OK | X_OK, AT_EACCESS) == 0;
        if (!locked) mode |= 0700;
        opened_up = !locked;
      }
      mode &= ~(st.st_mode & 077 & ~node->st.st_mode);
      if (mode != (st.st_mode & 07777) && ::fchmod(fd, mode) == 0) st.st_mode = (st.st_mode & S_IFMT) | mode;
    };
    narrow();
    if (opt_.archive) {
      bool written = st.st_uid != node->st.st_uid || st.st_gid != node->st.st_gid;
      if (written) give_owner(fd, nullptr, node->st.st_uid, node->st.st_gid, st.st_gid);
      // Only those who may write in a directory may change its user.* attributes, its owner too:
      // a locked one whose user.* attributes differ from SRC's is opened up for them (not for
      // others an ordinary user could not change anyway: security.*).
      // SRC's unread (an I/O error): DST's are not made those few, but left as they are (and it
      // is reported when the directory is finished).
      if (!node->xattrs_err) {
        std::vector<std::pair<std::string, std::string>> have;
        if (locked) read_xattrs_fd(fd, euid_ == 0, have);
        if (locked && user_attrs(have) != user_attrs(node->xattrs)) {
          open_up_fd(fd);
          st.st_mode |= S_IRWXU;
          locked = false;
          opened_up = true;
        }
        XattrsRefused refused;
        set_xattrs_fd(fd, node->xattrs, euid_ == 0, true, written, refused);
      }
      // An ACL written, or a new owner, may have taken the owner's bits back: looked at anew.
      if (written && ::fstat(fd, &st) == 0) {
        opened_up = locked = false;
        narrow();
      }
    }
    bool same_fs = parent && parent->facts.known && st.st_dev == parent->fs_dev;
    node->facts = dir_facts(fd, same_fs ? &parent->facts : nullptr);
    node->facts.hides_names = hides_names(fd, st.st_mode);
    node->facts.locked = locked;
    node->fs_dev = st.st_dev;
    node->dst_sgid = st.st_mode & S_ISGID;
  }
  // Temporaries an interrupted run left in a directory we are about to fill again; not those of a
  // run still going (two runs into one destination: a cron job overlapping the last), nor a name
  // SRC has too: the copy of a file named like one (a backup of a tree holding a leftover).
  remove_temps(fd, [this, node, fd, src_fd](std::string_view name) {
    struct stat in_src;
    bool remove = !temp_in_use(fd, name) &&
                  !(src_fd >= 0 && ::fstatat(src_fd, std::string(name).c_str(), &in_src, AT_SYMLINK_NOFOLLOW) == 0);
    if (remove) open_up(node, fd);
    return remove;
  });
}

// What Copier::open_up does in a worker, for what the walk writes in a locked directory itself: a
// new subdirectory, temporaries to remove. Whether it was locked.
bool Walker::open_up(DirNode* dir, int fd) {
  if (!std::exchange(dir->facts.locked, false)) return false;
  open_up_fd(fd);
  return true;
}

void Walker::evict_fds() {
  // From the lowest frame that may hold one, not from the root: a chain 48,000 levels deep spent
  // a quarter of its run skipping frames evicted already.
  for (evicted_ = std::min(evicted_, stack_.size()); evicted_ < stack_.size(); ++evicted_) {
    if (open_frames_ <= max_open_frames_) return;
    Frame& frame = *stack_[evicted_];
    if (!frame.src) continue;
    close_dst(frame.node);
    frame.src.reset();
    --open_frames_;
  }
}

// Reopens an evicted frame through ".." of its child, checked by inode; by path if that fails.
bool Walker::reopen(Frame& frame, Frame& child) {
  DirNode* node = frame.node;
  frame.src.reset(::openat(child.src.get(), "..", kDirFlags));
  if (frame.src && !same_inode(frame.src.get(), node->st.st_dev, node->st.st_ino)) frame.src.reset();
  if (!frame.src) {
    int fd = open_dir_beneath(src_root_.get(), rel_path(node), opt_.dereference);
    if (fd < 0) return false;
    frame.src.reset(fd);
  }
  ++open_frames_;
  evicted_ = std::min(evicted_, stack_.size() - 1);  // `frame` is the top of the stack again
  if (dst_root_ && !node->dst && child.node->dst) {
    node->dst.reset(::openat(child.node->dst.get(), "..", kDirFlags));
    if (node->dst && !same_inode(node->dst.get(), node->dst_dev, node->dst_ino)) node->dst.reset();
  }
  return true;
}

void Walker::pop() {
  std::unique_ptr<Frame> child = std::move(stack_.back());
  stack_.pop_back();
  path_.resize(stack_.empty() ? 0 : stack_.back()->rel_len);
  if (!stack_.empty() && !stack_.back()->src && !reopen(*stack_.back(), *child)) {
    // The parent vanished under us: its remaining subdirectories cannot be reached.
    ++walk_errors_;
    stack_.back()->next_subdir = stack_.back()->subdirs.size();
  }
  child->src.reset();
  --open_frames_;
  DirNode* node = child->node;
  // Jobs inside are still running: keep the fd for the metadata, within a budget.
  if (node->pending > 1 && node->dst) defer_dst(node);
  release(node);
}

void Walker::defer_dst(DirNode* node) {
  if (node->deferred_fd) return;
  if (deferred_fds_ >= max_deferred_fds_) {
    close_dst(node);
  } else {
    node->deferred_fd = true;
    ++deferred_fds_;
  }
}

void Walker::release(DirNode* dir) {
  while (dir && --dir->pending == 0) {
    DirNode* parent = dir->parent;
    // Finishing runs bottom-up: a parent about to be finished too is reached through "..",
    // not by its path from the root (which would make deep trees quadratic).
    if (parent && parent->pending == 1 && !parent->dst && dir->dst && parent->dst_ino) {
      parent->dst.reset(::openat(dir->dst.get(), "..", kDirFlags));
      if (parent->dst && !same_inode(parent->dst.get(), parent->dst_dev, parent->dst_ino)) parent->dst.reset();
    }
    finish_dir(dir);
    if (!parent) finished_ = true;
    dir = parent;
  }
}

void Walker::close_dst(DirNode* node) {
  if (!node->dst) return;
  auto [dev, ino] = inode_of(node->dst.get());
  node->dst_dev = dev;
  node->dst_ino = ino;
  node->dst.reset();
  if (node->deferred_fd) --deferred_fds_;
  node->deferred_fd = false;
}

int Walker::dst_fd_for(DirNode* dir) {
  if (!dir->dst && dst_root_) {
    int fd = open_dir_beneath(dst_root_.get(), dst_rel_path(dir), false);
    if (fd >= 0) dir->dst.reset(fd);
  }
  return dir->dst.get();
}

void Walker::finish_dir(DirNode* dir) {
  if (!opt_.dry_run && dst_root_) {
    DirNode* parent = dir->parent;
    bool parent_open = parent && parent->dst;
    DirTrouble trouble;
    int err = apply_dir_metadata(dir, trouble);
    int reveal_err = reveal_or_lose(dir, trouble);  // its files are complete, whatever became of its metadata
    trouble.err = err ? err : reveal_err;
    if (trouble.err) trouble.unkept.clear();
    if (trouble.err || trouble.flush_err || !trouble.unkept.empty()) on_dir_error_(*dir, trouble);
    // A staged directory is finished through its parent, reopened if the walk had left it: that fd
    // is deferred too, or each directory still waiting for its jobs could come to hold one.
    if (parent && !parent_open && parent->dst) defer_dst(parent);
  }
  if (dir->deferred_fd) --deferred_fds_;
  free_node(dir);
}

void Walker::free_node(DirNode* node) {
  if (node == last_path_dir_) last_path_dir_ = nullptr;
  live_.erase(node);
  delete node;
}

int Walker::apply_dir_metadata(DirNode* dir, DirTrouble& trouble) {
  std::vector<Unkept>& unkept = trouble.unkept;
  const struct stat& st = dir->st;
  struct timespec times[2] = {st.st_atim, st.st_mtim};
  if (!dir->dst && !dir->staged_name.empty() && dir->mode_set && dir->forgotten.empty() && !opt_.fsync) {
    // A staged directory never opened (see open_dst_child): only its times are left to set.
    int pfd = dst_fd_for(dir->parent);
    if (pfd < 0) return errno;
    if (::utimensat(pfd, dir->staged_name.c_str(), times, AT_SYMLINK_NOFOLLOW) != 0) return note_unkept(unkept, errno, "times");
    return 0;
  }
  int fd = dst_fd_for(dir);
  if (fd < 0) return errno;
  remove_names(fd, dir->forgotten);
  // A directory that was there already is written only where it differs: an unchanged -u run
  // leaves every ctime alone, as rsync does.
  struct stat have;
  bool known = !dir->fresh && ::fstat(fd, &have) == 0;
  bool owner_kept = st.st_uid == euid_ && st.st_gid == egid_, chowned = false, xattrs_written = false;
  if (opt_.archive) {
    owner_kept = known && have.st_uid == st.st_uid && have.st_gid == st.st_gid;
    if (!owner_kept)
      owner_kept = chowned = give_owner(fd, nullptr, st.st_uid, st.st_gid, known ? have.st_gid : gid_t(-1));
    if (!owner_kept && !chown_refused_to_user(errno, euid_ == 0)) {
      int e = errno;
      if (int err = note_unkept(unkept, e, "owner", owner_text(st))) return err;
    }
    // An existing copy loses what SRC's directory no longer has (an ACL removed with setfacl -b),
    // a new one the ACLs it inherited from a default ACL of its parent.
    XattrsRefused refused;
    if (dir->xattrs_err) {
      unkept.push_back({"extended attributes", "", dir->xattrs_err});  // SRC's could not be read
    } else if (int err = set_xattrs_fd(fd, dir->xattrs, euid_ == 0, !dir->fresh || dir->facts.default_acl,
                                       xattrs_written, refused)) {
      return err;
    }
    note_unkept(unkept, refused);
  }
  mode_t mode = mode_for_copy(st.st_mode, owner_kept);
  // mode_set: made with it, and it has no special bits. chown cleared the set-group-ID bit; an ACL
  // written may have changed the group bits: then the mode is written anyway (not where every
  // attribute was right already: an unchanged run changes no ctime).
  bool mode_right =
      dir->mode_set || (known && !chowned && (have.st_mode & 07777) == mode && !xattrs_written);
  if (!mode_right && ::fchmod(fd, mode) != 0) {
    int e = errno;
    if (int err = note_unkept(unkept, e, "mode", mode_text(mode))) return err;
  }
  // As a file's: at the resolution of DST's file system (nanoseconds would rewrite every
  // directory's times on every run on ext3, FAT or exFAT, and fail on an up-to-date read-only copy).
  bool times_right = known && same_mtime_in(fd, have, to_ns(st.st_mtim));
  if (!times_right && ::futimens(fd, times) != 0) {
    if (int err = note_unkept(unkept, errno, "times")) return err;
  }
  if (opt_.fsync && ::fsync(fd) != 0) trouble.flush_err = errno;
#ifdef PCOPY_TEST_HOOKS
  // An EIO for the directory whose name PCOPY_TEST_EIO_FSYNC_NAME gives.
  if (const char* name = std::getenv("PCOPY_TEST_EIO_FSYNC_NAME"); opt_.fsync && name && dir->name == name)
    trouble.flush_err = EIO;
#endif
  return 0;
}

// reveal(), and if that fails, what the staged `dir` holds is lost to this run (`trouble.lost`).
int Walker::reveal_or_lose(DirNode* dir, DirTrouble& trouble) {
  int err = reveal(dir);
  trouble.lost = err && !dir->staged_name.empty();
  return err;
}

// Renames a staged directory into place; never over something that appeared there meanwhile: a
// directory made meanwhile (by another run into the same destination, say) gets what was staged
// (merge_staged); anything else is an error, and what was staged stays under its temporary name
// for the next run to remove.
int Walker::reveal(DirNode* dir) {
  if (dir->staged_name.empty()) return 0;
  int pfd = dst_fd_for(dir->parent);
  if (pfd < 0) return errno;
  if (int err = rename_noreplace(pfd, dir->staged_name.c_str(), dir->name.c_str())) {
    if (err != EEXIST) return err;
    err = merge_staged(pfd, dir);
    if (dir->staged_name.empty() && on_merged_) on_merged_(*dir);  // its entries joined that directory
    if (err) return err;
  }
  dir->staged_name.clear();
  return 0;
}

// Moves what was staged for `dir` into the directory of its name that appeared meanwhile, entry
// by entry (replacing files of the same names, as a copy into an existing directory does), and
// gives that directory SRC's mode and times. An entry that cannot join it (another writer put a
// directory of its name there) is reported and goes with the staged directory; the others join.
int Walker::merge_staged(int pfd, DirNode* dir) {
  const char* staged = dir->staged_name.c_str();
  UniqueFd to(::openat(pfd, dir->name.c_str(), kDirFlags | O_NOFOLLOW));
  if (!to) return errno == ENOTDIR || errno == ELOOP ? EEXIST : errno;
  // Another run's copy may have its final mode already (0555): opened up, as a directory met on
  // the walk is; it gets SRC's mode below.
  struct stat ts;
  if (::fstat(to.get(), &ts) == 0 && (ts.st_mode & 0700) != 0700 && ts.st_uid == euid_)
    ::fchmod(to.get(), (ts.st_mode & 07777) | 0700);
  chmod_nofollow(pfd, staged, 0700);  // its final mode may not let entries be taken out
  UniqueFd from(::openat(pfd, staged, kDirFlags | O_NOFOLLOW));
  if (!from) return errno;
  std::vector<std::string> names;
  for_each_entry(from.get(), [&](const char* name, unsigned char) {
    if (std::strcmp(name, ".") != 0 && std::strcmp(name, "..") != 0) names.emplace_back(name);
  });
  for (const std::string& name : names) {
    if (::renameat(from.get(), name.c_str(), to.get(), name.c_str()) == 0) continue;
    int err = errno;
    struct stat st {};
    ::fstatat(from.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW);
    if (on_unmerged_) on_unmerged_(*dir, name, err, st);
    if (::unlinkat(from.get(), name.c_str(), 0) != 0 && errno == EISDIR) remove_quietly(from.get(), name);
  }
  // What it held is in place, or was reported: it is staged no more, whatever fails from here on.
  std::string emptied = std::move(dir->staged_name);
  dir->staged_name.clear();
  if (::unlinkat(pfd, emptied.c_str(), AT_REMOVEDIR) != 0) return errno;
  const struct stat& st = dir->st;
  struct timespec times[2] = {st.st_atim, st.st_mtim};
  if (::fchmod(to.get(), mode_for_copy(st.st_mode, st.st_uid == euid_ && st.st_gid == egid_)) != 0) return errno;
  return ::futimens(to.get(), times) == 0 ? 0 : errno;
}

void Walker::reveal_abandoned(const std::function<std::vector<std::string>(const DirNode*)>& unfinished) {
  if (opt_.dry_run || !dst_root_) return;
  // A directory's descriptor, and its parent's, are held only while it is dealt with: kept, one
  // for every directory in flight, a stop under a low open-file limit failed "Too many open files"
  // for hundreds of them, left staged or 0700.
  auto one_at_a_time = [](DirNode* dir, auto&& deal) {
    bool had = bool(dir->dst), parent_had = dir->parent && dir->parent->dst;
    deal();
    if (!had) dir->dst.reset();
    if (dir->parent && !parent_had) dir->parent->dst.reset();
  };
  std::vector<DirNode*> staged;
  for (DirNode* dir : live_) {
    if (!dir->facts.staged) continue;
    one_at_a_time(dir, [&] {
      int fd = dst_fd_for(dir);
      if (fd >= 0) {
        remove_names(fd, unfinished(dir));
        remove_names(fd, dir->forgotten);
      }
    });
    if (!dir->staged_name.empty()) staged.push_back(dir);
  }
  for (DirNode* dir : staged) {
    DirTrouble trouble;
    one_at_a_time(dir, [&] { trouble.err = reveal_or_lose(dir, trouble); });
    if (trouble.err) on_dir_error_(*dir, trouble);
  }
  // Nor is any left with a mode it had only while it was filled: a copy of a read-only directory
  // opened up (0755 for 0555), one made 0700 until finished. Each gets the mode its finishing
  // would have given it (not its times: it is not complete), deepest first, so that a parent
  // made 0000 still lets its subdirectories be reached.
  std::vector<DirNode*> left(live_.begin(), live_.end());
  std::sort(left.begin(), left.end(), [](const DirNode* a, const DirNode* b) { return a->path_len > b->path_len; });
  for (DirNode* dir : left) {
    one_at_a_time(dir, [&] {
      int fd = dst_fd_for(dir);
      struct stat have;
      if (fd < 0 || ::fstat(fd, &have) != 0) return;
      const struct stat& st = dir->st;
      bool owner_kept = opt_.archive ? have.st_uid == st.st_uid && have.st_gid == st.st_gid
                                     : st.st_uid == euid_ && st.st_gid == egid_;
      mode_t mode = mode_for_copy(st.st_mode, owner_kept);
      if ((have.st_mode & 07777) != mode) ::fchmod(fd, mode);
    });
  }
}

}  // namespace pcopy
