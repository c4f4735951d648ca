// What the run writes: lines above the progress bar on stderr, -v and -n lines gathered on stdout,
// writes that go on watching for signals while their reader is slow, the bar and status lines.
#include "pcopy/runner.hpp"

#include <fmt/core.h>
#include <limits.h>
#include <poll.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <string>
#include <string_view>

#include "pcopy/progress.hpp"

namespace pcopy {

int Runner::say(const std::string& line) {
  flush_out();  // `> log 2>&1`: the paths copied before an error come before it
  if (stderr_tty_) before_terminal_write(STDERR_FILENO);
  if (bar_) bar_->clear();
  std::string text = line + "\n";
  return write_watching(STDERR_FILENO, text, stderr_pipe_);
}

// Writes to stdout or stderr, watching for signals while the reader is slow: a consumer of -v
// lines that stops reading (a stuck pipe, a suspended pager) must not keep Ctrl-C or SIGTERM from
// ending the run, as it would in a blocking write. Once interrupted, a reader that takes no more
// within kStuckReaderMs loses the rest (the summary and report included): the run still ends.
int Runner::write_watching(int fd, std::string_view text, bool pipe) {
  double gave_up_at = 0;
  while (!text.empty()) {
    pollfd fds[2] = {{fd, POLLOUT, 0}, {sigfd_.get(), POLLIN, 0}};
    int timeout = -1;
    if (interrupted_) {
      if (!gave_up_at) gave_up_at = now_s() + kStuckReaderMs / 1000.0;
      timeout = std::max(0, int((gave_up_at - now_s()) * 1000));
    }
    int n = ::poll(fds, sigfd_ ? 2 : 1, timeout);
    if (n < 0 && errno != EINTR) return errno;
    if (n == 0) return EAGAIN;  // interrupted, and the reader took nothing more (said so at the end)
    if (n < 0) continue;
    if (fds[1].revents & POLLIN) on_signal();
    if (!(fds[0].revents & (POLLOUT | POLLERR | POLLHUP))) continue;
    // Into a pipe with room, up to PIPE_BUF bytes go without blocking.
    ssize_t done = ::write(fd, text.data(), pipe ? std::min<size_t>(text.size(), PIPE_BUF) : text.size());
    if (done < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return errno;
    }
    text.remove_prefix(size_t(done));
  }
  return 0;
}

void Runner::write_out(std::string_view text) {
  if (stdout_tty_ && !text.empty()) before_terminal_write(STDOUT_FILENO);
  if (!stdout_err_) stdout_err_ = write_watching(STDOUT_FILENO, text, stdout_pipe_);
}

void Runner::out_line(const std::string& line) {
  if (opt_.json) {  // stdout is for a JSON parser: -v and -n lines would break it
    // Data as much as on stdout: a failed write is an error of the run, as stdout's is.
    if (int err = say(line); err && !lines_err_) lines_err_ = err;
    return;
  }
  // Into a file or a pipe lines are gathered, one write for many, yet written within kOutInterval:
  // a CI log shows them as they happen, and loses little if the job is killed.
  stdout_buf_ += line;
  stdout_buf_ += '\n';
  if (stdout_tty_ || stdout_buf_.size() >= 64 * 1024 || now_s() - last_out_ >= kOutInterval) flush_out();
}

void Runner::flush_out() {
  last_out_ = now_s();
  if (stdout_buf_.empty()) return;
  if (bar_ && stdout_tty_) bar_->clear();
  write_out(stdout_buf_);
  stdout_buf_.clear();
}

void Runner::sample_rates(double t) {
  meter_.sample(t - start_, bytes_done_);
  work_meter_.sample(t - start_, work_of(files_done_, bytes_done_));
}

// A blocked SIGTTOU (it is read from the signalfd) lets a process write to its terminal from the
// background even under `stty tostop`, where the terminal would stop it: the parent makes the
// terminal's check itself before writing to one, and stops as the terminal would have stopped it.
void Runner::before_terminal_write(int fd) {
  if (!sigismember(&watched_, SIGTTOU)) return;  // ignored: the terminal lets us write
  struct termios t;
  if (::tcgetattr(fd, &t) != 0 || !(t.c_lflag & TOSTOP)) return;
  pid_t fg = ::tcgetpgrp(fd);  // -1 unless it is our controlling terminal, which alone stops us
  if (fg > 0 && fg != ::getpgrp()) suspend(SIGTTOU);
}

ProgressState Runner::progress_state() const {
  ProgressState s;
  s.files_done = files_done_;
  s.files_total = files_total_;
  s.bytes_done = bytes_done_;
  s.bytes_total = bytes_total_;
  s.counting = !walk_done_;
  s.elapsed_s = now_s() - start_;
  s.rate = meter_.rate();
  s.work_rate = work_meter_.rate();
  return s;
}

void Runner::tick(bool force) {
  double t = now_s();
  if (!bar_ && !status_lines_) return;
  double interval = bar_ ? kBarInterval : kLineInterval;
  if (!force && t - last_draw_ < interval) return;
  last_draw_ = t;
  sample_rates(t);
  if (bar_) {
    before_terminal_write(STDERR_FILENO);
    bar_->draw(progress_state());
  } else {
    say(format_status_line(progress_state()));
  }
}

}  // namespace pcopy
