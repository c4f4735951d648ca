#include "pcopy/mirror.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cctype>
#include <clocale>
#include <cstring>
#include <cwctype>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "pcopy/fd.hpp"
#include "pcopy/filter.hpp"
#include "pcopy/paths.hpp"
#include "pcopy/temp_names.hpp"

namespace pcopy {

namespace {

constexpr int kDirFlags = O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOCTTY | O_NOFOLLOW;

// A directory's entries, packed: the names one after the other, each ended by a NUL, and where each
// begins, with whether it is a directory in the top bit. A third of a vector of strings, whose
// growth had one directory of 300,000 files take 21 MB (of a 38 MiB peak) to list for --delete.
class Entries {
 public:
  struct Entry {
    std::string_view name;  // ended by a NUL (name.data() is a C string) while the listing stands
    bool is_dir;
  };
  void add(std::string_view name, bool is_dir) {
    at_.push_back(uint64_t(names_.size()) | (is_dir ? kDir : 0));
    names_.append(name);
    names_.push_back('\0');
  }
  size_t size() const { return at_.size(); }
  Entry operator[](size_t i) const {
    size_t begin = size_t(at_[i] & ~kDir);
    size_t end = (i + 1 < at_.size() ? size_t(at_[i + 1] & ~kDir) : names_.size()) - 1;
    return {std::string_view(names_).substr(begin, end - begin), (at_[i] & kDir) != 0};
  }
  // Sorted, for lookups by binary search.
  std::vector<std::string_view> sorted_names() const {
    std::vector<std::string_view> all;
    all.reserve(size());
    for (size_t i = 0; i < size(); ++i) all.push_back((*this)[i].name);
    std::sort(all.begin(), all.end());
    return all;
  }
  struct iterator {
    const Entries* of;
    size_t i;
    Entry operator*() const { return (*of)[i]; }
    iterator& operator++() { return ++i, *this; }
    bool operator!=(const iterator& other) const { return i != other.i; }
  };
  iterator begin() const { return {this, 0}; }
  iterator end() const { return {this, size()}; }

 private:
  static constexpr uint64_t kDir = uint64_t(1) << 63;
  std::string names_;
  std::vector<uint64_t> at_;
};
using Entry = Entries::Entry;

bool has(const std::vector<std::string_view>& sorted, std::string_view name) {
  return std::binary_search(sorted.begin(), sorted.end(), name);
}

// Every entry of a directory but "." and "..", with its type (lstat when d_type is unknown).
int list_dir(int fd, Entries& out) {
  UniqueFd dup(::fcntl(fd, F_DUPFD_CLOEXEC, 0));
  if (!dup) return errno;
  DIR* d = ::fdopendir(dup.get());
  if (!d) return errno;
  dup.release();
  ::rewinddir(d);
  int err = 0;
  for (;;) {
    errno = 0;
    dirent* e = ::readdir(d);
    if (!e) {
      err = errno;
      break;
    }
    if (!std::strcmp(e->d_name, ".") || !std::strcmp(e->d_name, "..")) continue;
    bool is_dir = e->d_type == DT_DIR;
    if (e->d_type == DT_UNKNOWN) {
      struct stat st;
      is_dir = ::fstatat(fd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode);
    }
    out.add(e->d_name, is_dir);
  }
  ::closedir(d);
  return err;
}

std::string join(const std::string& rel, const std::string& name) { return rel.empty() ? name : rel + "/" + name; }

bool out_of_fds(int err) { return err == EMFILE || err == ENFILE; }

// Opens with `open` (a descriptor, or -1 and errno) again each time `free_fd` closes one of ours
// while the open-file limit is what stops it: the removals hold directories open to go faster,
// never to need more than two at a time (the pool's pipes may leave no more under a low limit).
template <typename Open, typename Free>
int opening(Open open, Free free_fd) {
  for (;;) {
    int fd = open();
    if (fd >= 0 || !out_of_fds(errno)) return fd;
    int err = errno;
    if (!free_fd()) return errno = err, -1;
  }
}

// list_dir(), again each time `free_fd` closes one of ours while the open-file limit stops it.
template <typename Free>
int listing(int fd, Entries& out, Free free_fd) {
  int err;
  while (out_of_fds(err = list_dir(fd, out)) && free_fd()) {
  }
  return err;
}

// open_dir_beneath() as opening() wants it.
int open_beneath(int root, const std::string& rel) {
  int fd = open_dir_beneath(root, rel, false);
  if (fd < 0) errno = -fd;
  return fd < 0 ? -1 : fd;
}

// A name as a case-insensitive file system matches it: each character of UTF-8 in upper case, as
// the up-case tables of FAT and exFAT and ext4's casefold compare names; other bytes as they are.
std::u32string folded(std::string_view name) {
  static locale_t utf8 = ::newlocale(LC_CTYPE_MASK, "C.UTF-8", locale_t(0));
  std::u32string out;
  for (size_t i = 0; i < name.size();) {
    auto c = static_cast<unsigned char>(name[i]);
    size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    char32_t cp = n == 1 ? c : n == 2 ? c & 0x1f : n == 3 ? c & 0x0f : c & 0x07;
    for (size_t k = 1; k < n; ++k) {
      if (i + k >= name.size() || (static_cast<unsigned char>(name[i + k]) >> 6) != 2) n = 0;
      if (n) cp = (cp << 6) | (static_cast<unsigned char>(name[i + k]) & 0x3f);
    }
    if (n == 0) {  // no UTF-8: the byte itself, apart from every character
      out.push_back(char32_t(0x110000 + c));
      ++i;
      continue;
    }
    out.push_back(utf8 ? char32_t(::towupper_l(wint_t(cp), utf8)) : cp < 0x80 ? char32_t(std::toupper(int(cp))) : cp);
    i += n;
  }
  return out;
}

// The names of SRC that a DST directory does not list, yet answers to: on a case-insensitive DST
// (FAT, exFAT, ext4 with casefold, an SMB share), "photos" finds the "Photos" of an earlier run
// after SRC renamed it. What such a name finds is SRC's own copy, never an extraneous entry.
struct Aliases {
  struct Name {
    std::string_view src;  // SRC's name
    std::u32string folded;
    struct stat st;
  };
  std::vector<Name> names;

  // Names the filters exclude (whatever their type) were never copied: not looked up.
  Aliases(int dir, const std::string& rel, const SrcListing& listing, const Entries& entries,
          const Filters& filters) {
    std::vector<std::string_view> listed = entries.sorted_names();
    for (size_t pos = 0; pos < listing.names.size();) {
      std::string_view name(listing.names.c_str() + pos);
      pos += name.size() + 1;
      if (has(listed, name)) continue;
      std::string path = join(rel, std::string(name));
      if (filters.excluded(path, false) && filters.excluded(path, true)) continue;
      struct stat st;
      if (::fstatat(dir, name.data(), &st, AT_SYMLINK_NOFOLLOW) == 0) names.push_back({name, folded(name), st});
    }
  }

  // The SRC name for which DST's entry `name` (`st`) is the copy, or nullptr. Told by inode, or
  // by name where a FUSE file system numbers each spelling apart (whose attributes, cached per
  // spelling, need not agree either). A folding wider than the file system's (ı and I are one
  // here, two on exFAT) keeps an entry that is extraneous: never the other way.
  const std::string_view* of(std::string_view name, const struct stat& st) const {
    std::u32string f;
    for (const Name& n : names) {
      if ((n.st.st_mode & S_IFMT) != (st.st_mode & S_IFMT)) continue;
      if (n.st.st_dev == st.st_dev && n.st.st_ino == st.st_ino) return &n.src;
      if (f.empty()) f = folded(name);
      if (n.folded == f) return &n.src;
    }
    return nullptr;
  }
};

// After open_to_empty() failed in a dry run (errno still its): the real run would open the
// directory up and empty it; the dry run may not read it, so it lists it without its contents.
bool dry_run_may_not_read(int dir, const std::string& name) {
  struct stat st;
  return errno == EACCES && needs_opening_up(dir, name.c_str(), st);
}

// Opens directory `name` in `dir` to remove what it holds (opened up first unless `dry_run`; `was`
// is then its old mode, or 0 if unchanged).
UniqueFd open_to_empty(int dir, const std::string& name, bool dry_run, mode_t& was) {
  was = dry_run ? 0 : open_up_at(dir, name.c_str());
  return UniqueFd(::openat(dir, name.c_str(), kDirFlags));
}

}  // namespace

int remove_tree(int dir, const std::string& name, const std::string& rel, bool dry_run, const MirrorCallbacks& cb,
                const Filters& filters, bool one_file_system) {
  // Bounded by the names read, whatever the depth (as `rm -rf`): the deepest kOpenLevels levels
  // hold a descriptor, a shallower one is reopened through ".." of its child when its turn comes
  // again, and one path string serves every level, each knowing only its length.
  constexpr size_t kOpenLevels = 16;
  struct Level {
    UniqueFd fd;  // closed while kOpenLevels deeper levels are open
    dev_t dev;
    ino_t ino;
    size_t rel_len;  // of `path`: where this directory is in the tree
    Entries entries;
    size_t next = 0;
    bool kept = false;  // it holds an excluded entry, or one that could not be removed: it stays
    mode_t was = 0;     // its mode before it was opened up to be emptied (0: unchanged)
  };
  int first_err = 0;
  auto note = [&](const std::string& path, int err) {
    if (err == ENOENT) return;  // gone already: removed meanwhile (by another run into DST)
    if (!first_err) first_err = err;
    cb.failed(path, err);
  };
  // With -x, a file system mounted below stays, and so does every directory above it.
  struct stat st;
  dev_t dev = one_file_system && ::fstat(dir, &st) == 0 ? st.st_dev : 0;
  auto elsewhere = [&](int fd) { return dev && ::fstat(fd, &st) == 0 && st.st_dev != dev; };
  // A directory the caller keeps (SRC itself, bind-mounted inside DST) stays, and so does every
  // directory above it; looked at before open_to_empty() opens it up.
  auto kept_dir = [&](int in, const std::string& n) {
    struct stat ks;
    return cb.keep && ::fstatat(in, n.c_str(), &ks, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(ks.st_mode) && cb.keep(ks);
  };
  std::string path = rel;
  std::vector<Level> stack;
  // At the open-file limit: a shallower level's descriptor is closed (reopened through ".." when
  // its turn comes again), else one the caller holds.
  auto free_fd = [&] {
    for (size_t i = 0; i + 1 < stack.size(); ++i) {
      if (stack[i].fd) return stack[i].fd.reset(), true;
    }
    return cb.free_fd && cb.free_fd();
  };
  if (kept_dir(dir, name)) return 0;
  mode_t was = 0;
  UniqueFd top(opening([&] { return open_to_empty(dir, name, dry_run, was).release(); }, free_fd));
  if (top && elsewhere(top.get())) return 0;
  if (!top) {
    if (dry_run && dry_run_may_not_read(dir, name)) return cb.deleted(rel), 0;
    if (errno != ENOTDIR && errno != ELOOP) return note(rel, errno), first_err;
    if (!dry_run && ::unlinkat(dir, name.c_str(), 0) != 0) return note(rel, errno), first_err;
    cb.deleted(rel);
    return 0;
  }
  auto enter = [&](UniqueFd fd, mode_t old_mode) {
    struct stat ds {};
    ::fstat(fd.get(), &ds);
    stack.push_back({std::move(fd), ds.st_dev, ds.st_ino, path.size(), {}, 0, false, old_mode});
    if (int err = listing(stack.back().fd.get(), stack.back().entries, free_fd)) {
      note(path, err);  // what it holds stays, and so does it: one line, no "Directory not empty"
      stack.back().kept = err != ENOENT;
    }
    if (stack.size() > kOpenLevels) stack[stack.size() - 1 - kOpenLevels].fd.reset();
  };
  // Stopped half-way: the directories opened up to be emptied, which stay, get their modes back,
  // deepest first. A level whose descriptor was let go (more than kOpenLevels above the deepest) is
  // reopened through ".." of the one below before that one gets its mode back, which may not let
  // ".." be looked up: they stayed opened up.
  auto given_back = [&] {
    UniqueFd here;  // level i's descriptor where it had none
    for (size_t i = stack.size(); i-- > 0;) {
      Level& lv = stack[i];
      int fd = lv.fd ? lv.fd.get() : here.get();
      UniqueFd up;
      if (i > 0 && !stack[i - 1].fd && fd >= 0) {
        struct stat us;
        up.reset(::openat(fd, "..", kDirFlags));
        if (up && (::fstat(up.get(), &us) != 0 || us.st_dev != stack[i - 1].dev || us.st_ino != stack[i - 1].ino))
          up.reset();  // moved meanwhile: not another directory's mode
      }
      if (lv.was && fd >= 0) ::fchmod(fd, lv.was & 07777);
      here = std::move(up);
    }
  };
  enter(std::move(top), was);
  while (!stack.empty()) {
    Level& lv = stack.back();
    path.resize(lv.rel_len);  // its own path (an entry's name was added to it last)
    if (lv.next == lv.entries.size()) {
      // Finished: removed from its parent, unless something in it stays (kept, or an error said
      // already: its parents are not reported as "not empty" one by one).
      Level done = std::move(lv);
      stack.pop_back();
      size_t parent_len = stack.empty() ? 0 : stack.back().rel_len;
      std::string leaf = stack.empty() ? name : path.substr(parent_len + 1);
      if (!stack.empty() && !stack.back().fd) {
        // Through "..", or by its path from `dir` if this directory was moved meanwhile.
        Level& up = stack.back();
        auto same = [&](int fd) {
          struct stat us;
          return fd >= 0 && ::fstat(fd, &us) == 0 && us.st_dev == up.dev && us.st_ino == up.ino;
        };
        up.fd.reset(opening([&] { return ::openat(done.fd.get(), "..", kDirFlags); }, free_fd));
        if (!same(up.fd.get())) {
          std::string up_path = name + path.substr(rel.size(), parent_len - rel.size());
          int fd = opening([&] { return open_beneath(dir, up_path); }, free_fd);
          int err = fd < 0 ? errno : ESTALE;
          up.fd.reset(fd);
          if (!same(up.fd.get())) {  // gone or replaced: what is left of it stays, said once
            note(path.substr(0, parent_len), err);
            return given_back(), first_err;
          }
        }
      }
      int parent = stack.empty() ? dir : stack.back().fd.get();
      if (done.kept) {
        // It stays: with the mode it had (as rsync leaves it), not the one it was opened up to.
        if (done.was) ::fchmod(done.fd.get(), done.was & 07777);
        if (!stack.empty()) stack.back().kept = true;
      } else if (!dry_run && ::unlinkat(parent, leaf.c_str(), AT_REMOVEDIR) != 0) {
        int err = errno;
        note(path, err);
        if (done.was && err != ENOENT) ::fchmod(done.fd.get(), done.was & 07777);  // it stays, as it was
        if (!stack.empty() && err != ENOENT) stack.back().kept = true;
      } else {
        cb.deleted(path);
      }
      path.resize(parent_len);
      continue;
    }
    const Entry e = lv.entries[lv.next++];  // a view of lv's listing: not used once a level is entered
    if (!path.empty()) path += '/';
    path += e.name;  // not a copy of the path per entry: a chain 48,000 deep took time with its square
    const std::string& child = path;
    if (!filters.empty() && filters.excluded(child, e.is_dir)) {
      lv.kept = true;
      continue;
    }
    if (e.is_dir && kept_dir(lv.fd.get(), std::string(e.name))) {
      lv.kept = true;
      continue;
    }
    // Asked before an entry to remove, not on the way out of a directory finished nor before one
    // kept (--fail-fast tells of a stop only where a removal is held back).
    if (cb.stop && cb.stop(true)) return given_back(), first_err;
    if (e.is_dir) {
      mode_t child_was = 0;
      std::string child_name(e.name);
      UniqueFd fd(
          opening([&] { return open_to_empty(lv.fd.get(), child_name, dry_run, child_was).release(); }, free_fd));
      if (!fd && dry_run && dry_run_may_not_read(lv.fd.get(), child_name)) {
        cb.deleted(child);
        continue;
      }
      if (!fd) {
        int err = errno;
        note(child, err);
        lv.kept = lv.kept || err != ENOENT;
        continue;
      }
      if (elsewhere(fd.get())) {
        lv.kept = true;
        continue;
      }
      enter(std::move(fd), child_was);
    } else if (!dry_run && ::unlinkat(lv.fd.get(), e.name.data(), 0) != 0) {
      int err = errno;
      note(child, err);
      lv.kept = lv.kept || err != ENOENT;
    } else {
      cb.deleted(child);
    }
  }
  return first_err;
}

int remove_quietly(int dir, const std::string& name) {
  static const MirrorCallbacks quiet = [] {
    MirrorCallbacks cb;
    cb.deleted = [](const std::string&) {};
    cb.failed = [](const std::string&, int) {};
    return cb;
  }();
  return remove_tree(dir, name, name, false, quiet);
}

std::string SrcListings::key(Id parent, std::string_view name) {
  std::string k(reinterpret_cast<const char*>(&parent), sizeof parent);
  k += name;
  return k;
}

SrcListings::Id SrcListings::add(Id parent, std::string_view name, SrcListing listing) {
  Id id = Id(all_.size());
  all_.push_back(std::move(listing));
  if (parent == kNone) {
    root_ = id;
  } else {
    children_[key(parent, name)] = id;
  }
  return id;
}

SrcListings::Id SrcListings::child(Id parent, std::string_view name) const {
  auto it = children_.find(key(parent, name));
  return it == children_.end() ? kNone : it->second;
}

void delete_extraneous(const SrcListings& src, int dst_root, const Options& opt, const MirrorCallbacks& cb) {
  // Directories to look into, depth first. Their paths share one buffer, each knowing where its
  // parent's path ends and its own name (as SRC spells it): building each path whole cost time
  // with the square of the depth (a chain of 48,000 directories).
  struct Dir {
    UniqueFd dst;
    size_t parent_len;
    std::string name;  // "" for DST itself
    SrcListings::Id src;
  };
  if (src.root() == SrcListings::kNone) return;
  // With -x, DST's directories on another file system are left alone, as rsync -x leaves them.
  struct stat st;
  dev_t dev = opt.one_file_system && ::fstat(dst_root, &st) == 0 ? st.st_dev : 0;
  auto elsewhere = [&](int dir, const char* name) {
    return dev && ::fstatat(dir, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && st.st_dev != dev;
  };
  // Directories waiting their turn are held open, up to kHeldDirs of them: the others (a directory
  // with 20,000 subdirectories, a low `ulimit -n`) are opened by path from DST when their turn comes.
  constexpr size_t kHeldDirs = 16;
  size_t held = 0;
  std::vector<Dir> todo;
  // At the open-file limit, the directory held longest is let go (and opened by path in its turn).
  auto free_fd = [&] {
    for (Dir& d : todo) {
      if (d.dst) return d.dst.reset(), --held, true;
    }
    return false;
  };
  MirrorCallbacks in_tree = cb;  // remove_tree() may have held directories let go too
  const auto& unlisted = cb.unlisted ? cb.unlisted : cb.failed;
  in_tree.free_fd = free_fd;
  std::string path;  // of the directory looked into, then of its entry at hand
  todo.push_back({UniqueFd(), 0, "", src.root()});
  while (!todo.empty() && !(cb.stop && cb.stop(false))) {
    Dir p = std::move(todo.back());
    todo.pop_back();
    path.resize(p.parent_len);
    if (!p.name.empty()) {
      if (!path.empty()) path += '/';
      path += p.name;
    }
    if (p.dst) {
      --held;
    } else {
      int fd = opening([&] { return open_beneath(dst_root, path); }, free_fd);
      if (fd < 0) {
        if (opt.dry_run && dry_run_may_not_read(dst_root, path)) {
          if (cb.unseen) cb.unseen(path);
        } else if (errno != ENOENT) {
          unlisted(path, errno);  // ENOENT: gone already, nothing to delete in it
        }
        continue;
      }
      p.dst.reset(fd);
    }
    Entries dst_entries;
    if (int err = listing(p.dst.get(), dst_entries, free_fd)) {
      unlisted(path, err);
      continue;
    }
    const size_t dir_len = path.size();
    // `path` as the path of `name` in this directory.
    auto at = [&](std::string_view name) -> const std::string& {
      path.resize(dir_len);
      if (dir_len) path += '/';
      path += name;
      return path;
    };
    const SrcListing& listing = src[p.src];
    std::vector<std::string_view> in_src;  // sorted: a third of a hash set's memory
    for (size_t pos = 0; pos < listing.names.size();) {
      std::string_view name(listing.names.c_str() + pos);
      in_src.push_back(name);
      pos += name.size() + 1;
    }
    std::sort(in_src.begin(), in_src.end());
    // A directory of DST that is the copy of SRC's `src_name`, looked into for what SRC's lacks.
    // Entered only where the walk listed SRC's directory to the end.
    auto look_into = [&](const Entry& e, std::string_view src_name) {
      auto sub = src.child(p.src, src_name);
      if (sub == SrcListings::kNone || elsewhere(p.dst.get(), e.name.data())) return;
      UniqueFd d;
      if (held < kHeldDirs) d.reset(::openat(p.dst.get(), e.name.data(), kDirFlags));
      if (!d && held < kHeldDirs) {
        if (out_of_fds(errno)) {  // the limit is near: hold no more
          held = kHeldDirs;
          todo.push_back({UniqueFd(), dir_len, std::string(src_name), sub});
        } else if (opt.dry_run && dry_run_may_not_read(p.dst.get(), std::string(e.name))) {
          if (cb.unseen) cb.unseen(at(src_name));
        } else if (errno != ENOENT) {
          unlisted(at(src_name), errno);
        }
        return;
      }
      held += d.valid();
      todo.push_back({std::move(d), dir_len, std::string(src_name), sub});
    };
    std::optional<Aliases> aliases;  // found at the first entry SRC does not list
    bool removed = false;
    mode_t was = 0;  // the mode of a directory opened up for the removals, restored after them
    for (const Entry e : dst_entries) {
      if (has(in_src, e.name)) {
        if (e.is_dir) look_into(e, e.name);
        continue;
      }
      const std::string& rel = at(e.name);
      // pcopy's temporaries are remove_temps()' to remove, or a live run's to keep; a directory
      // named like a file's temporary is no one's: it was never removed.
      if ((is_temp_name(e.name) && (!e.is_dir || is_staged_name(e.name))) || opt.filters.excluded(rel, e.is_dir))
        continue;
      if (e.is_dir && elsewhere(p.dst.get(), e.name.data())) continue;
      if (!aliases) {
        path.resize(dir_len);
        aliases.emplace(p.dst.get(), path, listing, dst_entries, opt.filters);
      }
      if ((cb.keep || !aliases->names.empty()) && ::fstatat(p.dst.get(), e.name.data(), &st, AT_SYMLINK_NOFOLLOW) == 0) {
        if (cb.keep && cb.keep(st)) continue;
        if (const std::string_view* src_name = aliases->of(e.name, st)) {
          // Looked into as SRC spells it, which the filters match (the file system takes either).
          if (e.is_dir) look_into(e, *src_name);
          continue;
        }
      }
      if (cb.stop && cb.stop(true)) break;  // asked where a removal comes next
      if (!removed && !opt.dry_run) was = open_up_at(p.dst.get(), ".");
      at(e.name);
      if (e.is_dir) {
        remove_tree(p.dst.get(), std::string(e.name), path, opt.dry_run, in_tree, opt.filters, opt.one_file_system);
      } else if (!opt.dry_run && ::unlinkat(p.dst.get(), e.name.data(), 0) != 0) {
        if (errno != ENOENT) cb.failed(path, errno);  // ENOENT: gone already, as rsync lets it go
      } else {
        cb.deleted(path);
      }
      removed = true;
    }
    if (removed && !opt.dry_run) {
      if (was) ::fchmod(p.dst.get(), was & 07777);
      // Removing entries touched the directory's times; put SRC's back.
      struct timespec times[2] = {listing.atime, listing.mtime};
      ::futimens(p.dst.get(), times);
      // --fsync: the removals reach the disk too. The directories were flushed when their copies
      // were complete, before the removals; after a power cut what a run reported deleted was back.
      if (opt.fsync && ::fsync(p.dst.get()) != 0 && cb.flush_failed) cb.flush_failed(path.substr(0, dir_len), errno);
    }
  }
}

}  // namespace pcopy
