// One whole pcopy run, as the parent process sees it: check the arguments, start the pool, walk
// SRC while dispatching batches of jobs, collect results, draw progress, report. Returns the exit
// status SPEC defines (0, 1, 2, 130, 143).
#pragma once

#include "pcopy/options.hpp"

namespace pcopy {

// Made for a process that exits when it returns: the umask, the limit on open files and the
// signals' dispositions are changed, and the signals of signals.hpp are left blocked, so that none
// that comes after the report can end pcopy with another status than the one it gave.
int run(const Options& options);

}  // namespace pcopy
