#include "pcopy/ring.hpp"

#include <liburing.h>

#include <cerrno>
#include <cstdlib>

namespace pcopy {

Ring::Ring() : ring_(std::make_unique<struct io_uring>()) {}

std::unique_ptr<Ring> Ring::create(unsigned entries) {
  std::unique_ptr<Ring> r(new Ring());
  // One process submits and reaps: completions run when we wait, not as interrupts (6.1+).
  unsigned preferred = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
  if (io_uring_queue_init(entries, r->ring_.get(), preferred) != 0 &&
      io_uring_queue_init(entries, r->ring_.get(), 0) != 0)
    return nullptr;
  // Rings before 5.6 (and gVisor's) answer OPENAT and CLOSE -EINVAL, one by one: a descriptor
  // handed to such a ring to be closed stayed open. No probe (before 5.6) means no such operations.
  struct io_uring_probe* probe = io_uring_get_probe_ring(r->ring_.get());
  bool has_ops = probe && io_uring_opcode_supported(probe, IORING_OP_OPENAT) &&
                 io_uring_opcode_supported(probe, IORING_OP_CLOSE);
  if (probe) io_uring_free_probe(probe);
  return has_ops ? std::move(r) : nullptr;
}

Ring::~Ring() {
  if (usable_) io_uring_queue_exit(ring_.get());
}

// Null once the ring broke (torn down in run()): the operation is counted, and run() answers it
// -ECANCELED, as it does those a ring that breaks leaves undone.
struct io_uring_sqe* Ring::next_sqe() {
  if (!usable_) {
    ++queued_;
    return nullptr;
  }
  struct io_uring_sqe* sqe = io_uring_get_sqe(ring_.get());
  // Callers never queue more than the ring holds: a full queue is a bug, not a condition.
  if (!sqe) std::abort();
  io_uring_sqe_set_data64(sqe, queued_++);
  return sqe;
}

size_t Ring::openat(int dir, const char* path, int flags, mode_t mode) {
  if (struct io_uring_sqe* sqe = next_sqe()) io_uring_prep_openat(sqe, dir, path, flags, mode);
  return queued_ - 1;
}

size_t Ring::close(int fd) {
  if (struct io_uring_sqe* sqe = next_sqe()) io_uring_prep_close(sqe, fd);
  return queued_ - 1;
}

const std::vector<int>& Ring::run() {
  results_.assign(queued_, -ECANCELED);
  size_t done = 0;
  while (usable_ && done < queued_) {
    int rc = io_uring_submit_and_wait(ring_.get(), 1);
    if (rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY) {
      // The ring itself failed: tearing it down waits for what was submitted and discards
      // what was not. The caller falls back to plain system calls.
      io_uring_queue_exit(ring_.get());
      usable_ = false;
      break;
    }
    struct io_uring_cqe* cqe;
    unsigned head, seen = 0;
    io_uring_for_each_cqe(ring_.get(), head, cqe) {
      uint64_t i = io_uring_cqe_get_data64(cqe);
      if (i < results_.size()) results_[i] = cqe->res;
      ++seen;
    }
    io_uring_cq_advance(ring_.get(), seen);
    done += seen;
  }
  queued_ = 0;
  return results_;
}

}  // namespace pcopy
