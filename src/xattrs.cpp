#include "pcopy/xattrs.hpp"

#include <sys/xattr.h>

#include <cerrno>
#include <string>

namespace pcopy {
namespace {

// The *xattr calls a copy needs, bound either to fds or to paths under /proc/self/fd.
struct XattrOps {
  ssize_t (*list)(const void* self, char* buf, size_t size);
  ssize_t (*get)(const void* self, const char* name, void* buf, size_t size);
  int (*set)(const void* self, const char* name, const void* buf, size_t size);
  const void* self;
};

template <typename Fn>
int read_grow(std::string& buf, Fn&& fn) {
  for (;;) {
    ssize_t n = fn(nullptr, 0);  // ask the size: attributes may change between calls
    if (n < 0) return errno;
    buf.resize(size_t(n) + 1);
    n = fn(buf.data(), buf.size());
    if (n >= 0) {
      buf.resize(size_t(n));
      return 0;
    }
    if (errno != ERANGE) return errno;
  }
}

bool ignorable(int err, bool privileged) {
  return err == ENOTSUP || err == ENODATA || (!privileged && (err == EPERM || err == EACCES));
}

int copy_with(const XattrOps& src, const XattrOps& dst, bool privileged) {
  std::string names, value;
  int err = read_grow(names, [&](char* b, size_t n) { return src.list(src.self, b, n); });
  if (err) return err == ENOTSUP ? 0 : err;
  for (size_t pos = 0; pos < names.size();) {
    std::string name(names.c_str() + pos);
    pos += name.size() + 1;
    if (name.empty()) continue;
    err = read_grow(value, [&](char* b, size_t n) { return src.get(src.self, name.c_str(), b, n); });
    if (err == 0 && dst.set(dst.self, name.c_str(), value.data(), value.size()) != 0) err = errno;
    if (err && !ignorable(err, privileged)) return err;
  }
  return 0;
}

}  // namespace

int copy_xattrs_fd(int src_fd, int dst_fd, bool privileged) {
  XattrOps src{[](const void* s, char* b, size_t n) { return ::flistxattr(*static_cast<const int*>(s), b, n); },
               [](const void* s, const char* k, void* b, size_t n) {
                 return ::fgetxattr(*static_cast<const int*>(s), k, b, n);
               },
               nullptr, &src_fd};
  XattrOps dst{nullptr, nullptr,
               [](const void* s, const char* k, const void* b, size_t n) {
                 return ::fsetxattr(*static_cast<const int*>(s), k, b, n, 0);
               },
               &dst_fd};
  return copy_with(src, dst, privileged);
}

int copy_xattrs_at(int src_dir, const std::string& src_name, int dst_dir, const std::string& dst_name,
                   bool privileged) {
  // No fd can be opened on a link or a device without side effects, so name it through /proc.
  std::string s = "/proc/self/fd/" + std::to_string(src_dir) + "/" + src_name;
  std::string d = "/proc/self/fd/" + std::to_string(dst_dir) + "/" + dst_name;
  XattrOps src{[](const void* p, char* b, size_t n) {
                 return ::llistxattr(static_cast<const std::string*>(p)->c_str(), b, n);
               },
               [](const void* p, const char* k, void* b, size_t n) {
                 return ::lgetxattr(static_cast<const std::string*>(p)->c_str(), k, b, n);
               },
               nullptr, &s};
  XattrOps dst{nullptr, nullptr,
               [](const void* p, const char* k, const void* b, size_t n) {
                 return ::lsetxattr(static_cast<const std::string*>(p)->c_str(), k, b, n, 0);
               },
               &d};
  return copy_with(src, dst, privileged);
}

}  // namespace pcopy
