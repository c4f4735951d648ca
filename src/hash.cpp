#include "pcopy/hash.hpp"

#include <xxhash.h>

#include <algorithm>
#include <new>

namespace pcopy {

Hasher::Hasher() : state_(XXH3_createState()) {
  if (!state_) throw std::bad_alloc();
  reset();
}

void Hasher::reset() { XXH3_128bits_reset(static_cast<XXH3_state_t*>(state_)); }

Hasher::~Hasher() { XXH3_freeState(static_cast<XXH3_state_t*>(state_)); }

void Hasher::update(const void* data, size_t size) {
  XXH3_128bits_update(static_cast<XXH3_state_t*>(state_), data, size);
}

void Hasher::update_zeros(uint64_t size) {
  static const char zeros[64 * 1024] = {};
  while (size > 0) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(size, sizeof zeros));
    update(zeros, n);
    size -= n;
  }
}

Hash128 Hasher::digest() const {
  XXH128_hash_t h = XXH3_128bits_digest(static_cast<XXH3_state_t*>(state_));
  XXH128_canonical_t canon;
  XXH128_canonicalFromHash(&canon, h);
  Hash128 out;
  std::copy(std::begin(canon.digest), std::end(canon.digest), out.begin());
  return out;
}

std::string to_hex(const Hash128& hash) {
  static const char digits[] = "0123456789abcdef";
  std::string s;
  s.reserve(32);
  for (uint8_t b : hash) {
    s.push_back(digits[b >> 4]);
    s.push_back(digits[b & 15]);
  }
  return s;
}

}  // namespace pcopy
