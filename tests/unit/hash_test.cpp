#include "pcopy/hash.hpp"

#include <gtest/gtest.h>

#include <string>

#include "unit_util.hpp"

using namespace pcopy;

namespace {

Hash128 one_shot(const std::string& data) {
  Hasher h;
  h.update(data.data(), data.size());
  return h.digest();
}

}  // namespace

TEST(Hasher, EmptyInputDigestIsTheXxhsumValue) {
  Hasher h;
  EXPECT_EQ(to_hex(h.digest()), "99aa06d3014798d86001c324468d497f");
  h.update("", 0);
  EXPECT_EQ(to_hex(h.digest()), "99aa06d3014798d86001c324468d497f");
}

TEST(Hasher, StreamingInPiecesEqualsOneShot) {
  std::string data = pcopy_test::random_bytes(300'000, 99);
  Hash128 whole = one_shot(data);
  for (size_t piece : {1u, 7u, 240u, 4096u, 65537u}) {
    Hasher h;
    for (size_t pos = 0; pos < data.size(); pos += piece)
      h.update(data.data() + pos, std::min(piece, data.size() - pos));
    EXPECT_EQ(h.digest(), whole) << "piece " << piece;
  }
}

TEST(Hasher, DifferentContentsGiveDifferentDigests) {
  EXPECT_NE(one_shot("a"), one_shot("b"));
  EXPECT_NE(one_shot(std::string(1000, '\0')), one_shot(std::string(1001, '\0')));
}

TEST(Hasher, ZerosFromAHoleHashLikeWrittenZeros) {
  for (uint64_t n : {uint64_t(0), uint64_t(1), uint64_t(65536), uint64_t(65537), uint64_t(200'000)}) {
    Hasher holes;
    holes.update("head", 4);
    holes.update_zeros(n);
    holes.update("tail", 4);
    EXPECT_EQ(holes.digest(), one_shot("head" + std::string(n, '\0') + "tail")) << n;
  }
}

TEST(Hasher, DigestDoesNotDisturbTheRunningState) {
  Hasher h;
  h.update("ab", 2);
  (void)h.digest();
  h.update("c", 1);
  EXPECT_EQ(h.digest(), one_shot("abc"));
}

TEST(ToHex, Is32LowercaseDigitsInByteOrder) {
  Hash128 h{};
  for (int i = 0; i < 16; ++i) h[size_t(i)] = uint8_t(i * 17);
  EXPECT_EQ(to_hex(h), "00112233445566778899aabbccddeeff");
}
