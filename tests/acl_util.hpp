// A default POSIX ACL for a test directory, shared by the unit and end-to-end tests: what is
// created inside it then gets group and other permissions of at most r-x, whatever mode is asked.
#pragma once

#include <sys/xattr.h>

#include <cstdint>
#include <cstring>
#include <string>

namespace pcopy_test {

// Sets user::rwx, group::r-x, other::r-x as `dir`'s default ACL (the xattr's binary form, so no
// libacl is needed). False when the file system has no ACLs.
inline bool set_default_acl(const std::string& dir) {
  struct Entry {
    uint16_t tag, perm;
    uint32_t id;
  };
  constexpr uint16_t kUserObj = 0x01, kGroupObj = 0x04, kOther = 0x20;
  const Entry entries[] = {{kUserObj, 7, ~0u}, {kGroupObj, 5, ~0u}, {kOther, 5, ~0u}};
  std::string value(4, '\0');
  const uint32_t version = 2;
  std::memcpy(value.data(), &version, 4);  // little-endian, as on every machine this runs on
  value.append(reinterpret_cast<const char*>(entries), sizeof entries);
  return ::setxattr(dir.c_str(), "system.posix_acl_default", value.data(), value.size(), 0) == 0;
}

}  // namespace pcopy_test
