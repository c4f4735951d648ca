// The body of a worker process: read batches of jobs, copy each entry, answer with one result per
// job (and progress for long files), until the parent closes the job pipe.
#pragma once

#include "pcopy/options.hpp"

namespace pcopy {

struct WorkerShared;

// How a worker ends other than with the end of its job pipe (0): a message that is no batch, a
// result it could not write (the parent gone); or an exception that escaped it (in the forked
// child, EX_SOFTWARE). The parent tells each as a worker that died.
inline constexpr int kWorkerBadMessage = 3;
inline constexpr int kWorkerCannotAnswer = 4;
inline constexpr int kWorkerCrashed = 70;

// Returns the worker's exit status. `shared`: its memory shared with the parent (WorkerShared), or
// null. `dst_root` is -1 in a dry run whose DST does not exist; `dst_fs` is then the nearest
// directory above DST that does (-1 otherwise).
int run_worker(const Options& options, int job_fd, int result_fd, WorkerShared* shared, int src_root,
               int dst_root, int dst_fs = -1);

}  // namespace pcopy
