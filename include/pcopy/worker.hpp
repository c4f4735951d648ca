// The body of a worker process: read batches of jobs, copy each entry, answer with one result per
// job (and progress for long files), until the parent closes the job pipe.
#pragma once

#include <atomic>
#include <cstdint>

#include "pcopy/options.hpp"

namespace pcopy {

// Returns the worker's exit status. `in_hand`: its slot shared with the parent (Pool::in_hand), or
// null. `dst_root` is -1 in a dry run whose DST does not exist; `dst_fs` is then the nearest
// directory above DST that does (-1 otherwise).
int run_worker(const Options& options, int job_fd, int result_fd, std::atomic<uint64_t>* in_hand, int src_root,
               int dst_root, int dst_fs = -1);

}  // namespace pcopy
