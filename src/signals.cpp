#include "pcopy/signals.hpp"

#include <sys/signalfd.h>

#include <algorithm>
#include <cerrno>
#include <iterator>

namespace pcopy {

// The signals that end or stop the run, blocked from the first thing main() does and read from a
// signalfd from before DST is made: one that came while it was (a CI job cancelled at once) killed
// pcopy, no report written, and left an empty DST of mode 0700; one that came while the command
// line was read killed it too (17 of 20 SIGTERMs sent as it started).
sigset_t block_signals() {
  sigset_t mask;
  sigemptyset(&mask);
  // Every signal that would end pcopy outright ends the run as Ctrl-C does (temporaries removed,
  // staged directories revealed, the summary marked interrupted), with status 128 + its number.
  // A signal ignored when pcopy started stays ignored, as it does for cp: nohup's SIGHUP, the
  // SIGINT and SIGQUIT of a job a non-interactive shell started with `&`, a script's `trap '' TERM`.
  auto watch = [&](int sig) {
    struct sigaction was;
    if (::sigaction(sig, nullptr, &was) != 0 || was.sa_handler != SIG_IGN) sigaddset(&mask, sig);
  };
  for (int sig : kEndingSignals) watch(sig);
  for (int sig : kStopSignals) watch(sig);
  // SIGCHLD ignored (inherited so) would have the kernel reap the workers, their statuses lost.
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  ::sigaction(SIGCHLD, &dfl, nullptr);
  sigaddset(&mask, SIGCHLD);
  ::sigprocmask(SIG_BLOCK, &mask, nullptr);  // to the exit (see the end of Runner::finish)
  return mask;
}

void unblock_signals() {
  sigset_t mask = block_signals();
  ::sigprocmask(SIG_UNBLOCK, &mask, nullptr);
}

Signals watch_signals() {
  Signals out;
  sigset_t mask = block_signals();  // again: the same signals, already blocked
  out.watched = mask;
  out.fd.reset(::signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK));
  if (!out.fd) out.err = errno;
  ::signal(SIGPIPE, SIG_IGN);  // a dead worker's pipe gives EPIPE, not death
  // Past `ulimit -f`, a write fails with EFBIG ("File too large", reported for the file, the
  // manifest or stdout) instead of killing the process; the workers inherit this.
  ::signal(SIGXFSZ, SIG_IGN);
  return out;
}

bool stops_the_run(int sig) {
  return std::find(std::begin(kStopSignals), std::end(kStopSignals), sig) != std::end(kStopSignals);
}

bool ends_the_run(int sig) { return sig != SIGCHLD && !stops_the_run(sig); }

}  // namespace pcopy
