// One whole pcopy run, as the parent process sees it: check the arguments, start the pool, walk
// SRC while dispatching batches of jobs, collect results, draw progress, report. Returns the exit
// status SPEC defines (0, 1, 2, 130, 143).
#pragma once

#include <csignal>

#include "pcopy/options.hpp"

namespace pcopy {

// The signals that end a run as Ctrl-C does (status 128 + N), and those of job control that stop
// it: blocked from the start and read from a signalfd, unless ignored when pcopy started.
inline constexpr int kEndingSignals[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGALRM};
inline constexpr int kStopSignals[] = {SIGTSTP, SIGTTIN, SIGTTOU};

// Made for a process that exits when it returns: the umask, the limit on open files and the
// signals' dispositions are changed, and the signals above are left blocked, so that none that
// comes after the report can end pcopy with another status than the one it gave.
int run(const Options& options);

}  // namespace pcopy
