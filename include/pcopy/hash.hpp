// XXH3-128, streamed: the manifest's and --verify's content hash.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

namespace pcopy {

using Hash128 = std::array<uint8_t, 16>;

class Hasher {
 public:
  Hasher();
  ~Hasher();
  Hasher(const Hasher&) = delete;
  Hasher& operator=(const Hasher&) = delete;
  void update(const void* data, size_t size);
  void update_zeros(uint64_t size);  // a hole in a sparse file reads as zeros
  Hash128 digest() const;            // canonical (big-endian) byte order, as xxhsum prints it
  void reset();                      // back to nothing hashed

 private:
  void* state_;
};

std::string to_hex(const Hash128& hash);

}  // namespace pcopy
