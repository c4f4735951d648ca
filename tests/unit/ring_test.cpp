#include "pcopy/ring.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cerrno>

#include "unit_util.hpp"

using pcopy::Ring;
using pcopy_test::TempDir;

TEST(Ring, OpensAndClosesInOneRoundWithResultsInQueueOrder) {
  auto ring = Ring::create(16);
  if (!ring) GTEST_SKIP() << "io_uring is not available here";
  TempDir tmp;
  int dir = pcopy_test::open_dir(tmp.path());
  pcopy_test::write_at(dir, "a", "a");
  pcopy_test::write_at(dir, "b", "b");
  EXPECT_EQ(ring->openat(dir, "a", O_RDONLY | O_CLOEXEC, 0), 0u);
  EXPECT_EQ(ring->openat(dir, "missing", O_RDONLY | O_CLOEXEC, 0), 1u);
  EXPECT_EQ(ring->openat(dir, "b", O_RDONLY | O_CLOEXEC, 0), 2u);
  std::vector<int> fds = ring->run();
  ASSERT_EQ(fds.size(), 3u);
  EXPECT_GE(fds[0], 0);
  EXPECT_EQ(fds[1], -ENOENT);
  EXPECT_GE(fds[2], 0);
  char c = 0;
  EXPECT_EQ(::pread(fds[2], &c, 1, 0), 1);
  EXPECT_EQ(c, 'b');

  ring->close(fds[0]);
  ring->close(fds[2]);
  ring->close(12345);  // never open
  std::vector<int> closed = ring->run();
  EXPECT_EQ(closed, (std::vector<int>{0, 0, -EBADF}));
  EXPECT_EQ(::fcntl(fds[0], F_GETFD), -1) << "closed by the ring";
  EXPECT_TRUE(ring->usable());
  ::close(dir);
}

TEST(Ring, EmptyRoundReturnsNothing) {
  auto ring = Ring::create(4);
  if (!ring) GTEST_SKIP() << "io_uring is not available here";
  EXPECT_TRUE(ring->run().empty());
}
