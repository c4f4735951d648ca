// One whole pcopy run, as the parent process sees it: check the arguments, start the pool, walk
// SRC while dispatching batches of jobs, collect results, draw progress, report. Returns the exit
// status SPEC defines (0, 1, 2, 130, 143).
#pragma once

#include "pcopy/options.hpp"

namespace pcopy {

int run(const Options& options);

}  // namespace pcopy
