// The signals a run listens for: those that end it as Ctrl-C does and those of job control that stop
// it, blocked from the start and read, with SIGCHLD, from a signalfd in the parent's poll loop, so
// that none is lost between a look and a wait, and none ends pcopy half-way through its report.
#pragma once

#include <signal.h>

#include "pcopy/fd.hpp"

namespace pcopy {

// The signals that end a run as Ctrl-C does (status 128 + N), and those of job control that stop
// it: blocked from the start and read from a signalfd, unless ignored when pcopy started.
inline constexpr int kEndingSignals[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGALRM};
inline constexpr int kStopSignals[] = {SIGTSTP, SIGTTIN, SIGTTOU};

struct Signals {
  UniqueFd fd;
  int err = 0;  // of a signalfd that could not be made
  sigset_t watched{};  // those read from fd (not those ignored when pcopy started)
};

// Blocks the signals above (those not ignored) and SIGCHLD, to the exit; the set blocked.
sigset_t block_signals();
// Unblocks them where no run follows (a usage error, --help): one that came meanwhile ends pcopy
// as it would have.
void unblock_signals();
// Blocks them, and opens the signalfd that reads them.
Signals watch_signals();

bool stops_the_run(int sig);
// What watch_signals reads but SIGCHLD and the stops.
bool ends_the_run(int sig);

}  // namespace pcopy
