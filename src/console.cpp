#include "pcopy/console.hpp"

#include <fmt/core.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <utility>

namespace pcopy {

namespace {

constexpr int kStuckReaderMs = 1000;  // interrupted: how long output may wait for its reader

void on_tick(int) {}

// A write to a terminal whose output is paused (Ctrl-S, a stalled ssh connection) waits in the
// kernel until it is resumed, and the ending signals, blocked for the signalfd, cannot cut it
// short: Ctrl-C and SIGTERM went unheard until the terminal took the line. Around such a
// write a timer ticks every 100 ms with a signal of pcopy's own, unblocked for the write alone (no
// SA_RESTART): the write returns what it wrote so far, or EINTR, and the poll hears the signalfd.
ssize_t write_to_terminal(int fd, const char* data, size_t size) {
  static const int tick = SIGRTMIN;
  static const sigset_t only = [] {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, tick);
    return set;
  }();
  static timer_t timer;
  static const bool ready = [] {
    ::sigprocmask(SIG_BLOCK, &only, nullptr);  // elsewhere it would cut other calls short
    struct sigaction sa {};
    sa.sa_handler = on_tick;
    sigemptyset(&sa.sa_mask);
    struct sigevent ev {};
    ev.sigev_notify = SIGEV_SIGNAL;
    ev.sigev_signo = tick;
    return ::sigaction(tick, &sa, nullptr) == 0 && ::timer_create(CLOCK_MONOTONIC, &ev, &timer) == 0;
  }();
  if (!ready) return ::write(fd, data, size);
  const struct itimerspec every{{0, 100'000'000}, {0, 100'000'000}}, off{};
  ::timer_settime(timer, 0, &every, nullptr);
  ::sigprocmask(SIG_UNBLOCK, &only, nullptr);
  ssize_t done = ::write(fd, data, size);
  int err = errno;
  ::sigprocmask(SIG_BLOCK, &only, nullptr);
  ::timer_settime(timer, 0, &off, nullptr);
  errno = err;
  return done;
}

bool is_pipe(int fd) {
  struct stat st;
  return ::fstat(fd, &st) == 0 && (S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode));
}

// Whether another process group has `fd`, our controlling terminal: pcopy runs in the background.
// (tcgetpgrp gives -1 for a terminal that is not our controlling one, which no one takes from us.)
bool in_background(int fd) {
  pid_t fg = ::tcgetpgrp(fd);
  return fg > 0 && fg != ::getpgrp();
}

}  // namespace

Console::Console(const Options& options, Run run) : opt_(options), run_(std::move(run)) {
  stderr_tty_ = ::isatty(STDERR_FILENO);
  stdout_tty_ = ::isatty(STDOUT_FILENO);
  stderr_pipe_ = is_pipe(STDERR_FILENO);
  stdout_pipe_ = is_pipe(STDOUT_FILENO);
  const char* no_color = std::getenv("NO_COLOR");
  // A dumb terminal moves no cursor and clears no line: it gets plain lines, as a file does. So does
  // one of no TERM, or an empty one (a bare serial login, `env -i`), as git and less take it.
  const char* term = std::getenv("TERM");
  bool smart = stderr_tty_ && term && *term && std::string_view(term) != "dumb";
  color_ = smart && !(no_color && *no_color);
  if (!opt_.quiet && opt_.progress != ProgressMode::Never) {
    if (smart) bar_ = true;
    else if (opt_.progress == ProgressMode::Always) status_lines_ = true;
  }
}

std::string Console::paint(const char* sgr, const std::string& line) const {
  return color_ ? fmt::format("\x1b[{}m{}\x1b[0m", sgr, line) : line;
}

int Console::say(const std::string& line) {
  flush_out();  // `> log 2>&1`: the paths copied before an error come before it
  if (stderr_tty_) before_terminal_write(STDERR_FILENO);
  clear_bar();
  std::string text = line + "\n";
  return write_watching(STDERR_FILENO, text, stderr_pipe_);
}

// Once interrupted, output waits for readers that take no more kStuckReaderMs in all, every write
// together (the bar's erasing and the summary each waited a second of their own on a paused
// terminal); then the rest is lost (the summary and report included): the run still ends.
int Console::write_watching(int fd, std::string_view text, bool pipe) {
  const bool tty = !pipe && (fd == STDERR_FILENO ? stderr_tty_ : fd == STDOUT_FILENO ? stdout_tty_ : ::isatty(fd));
  while (!text.empty()) {
    pollfd fds[2] = {{fd, POLLOUT, 0}, {run_.sigfd, POLLIN, 0}};
    int timeout = -1;
    const bool interrupted = run_.interrupted();
    if (interrupted) timeout = std::max(0, kStuckReaderMs - int(waited_interrupted_s_ * 1000));
    // A terminal says it has room for a byte or two and then holds the write: its time counts
    // where it took nothing (a slow one that takes some is not one that takes nothing).
    if (interrupted && tty && timeout == 0) return EAGAIN;
    const double start = interrupted ? now_s() : 0;
    int n = ::poll(fds, run_.sigfd >= 0 ? 2 : 1, timeout);
    if (interrupted) waited_interrupted_s_ += now_s() - start;
    if (n < 0 && errno != EINTR) return errno;
    if (n == 0) return EAGAIN;  // interrupted, and the reader took nothing more (said so at the end)
    if (n < 0) continue;
    if (fds[1].revents & POLLIN) run_.on_signal();
    if (!(fds[0].revents & (POLLOUT | POLLERR | POLLHUP))) continue;
    // Into a pipe with room, up to PIPE_BUF bytes go without blocking.
    const double writing = interrupted && tty ? now_s() : 0;
    ssize_t done = tty    ? write_to_terminal(fd, text.data(), text.size())
                   : pipe ? ::write(fd, text.data(), std::min<size_t>(text.size(), PIPE_BUF))
                          : ::write(fd, text.data(), text.size());
    if (interrupted && tty && done <= 0) waited_interrupted_s_ += now_s() - writing;  // took nothing
    if (done < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return errno;
    }
    text.remove_prefix(size_t(done));
  }
  return 0;
}

int Console::write_beside(int fd, std::string_view text, bool pipe) {
  if (!text.empty() && ::isatty(fd)) {
    clear_bar();
    before_terminal_write(fd);
  }
  return write_watching(fd, text, pipe);
}

void Console::write_out(std::string_view text) {
  if (stdout_tty_ && !text.empty()) before_terminal_write(STDOUT_FILENO);
  if (!stdout_err_) stdout_err_ = write_watching(STDOUT_FILENO, text, stdout_pipe_);
}

void Console::out_line(const std::string& line) {
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

void Console::flush_out() {
  last_out_ = now_s();
  if (stdout_buf_.empty()) return;
  if (stdout_tty_) clear_bar();
  write_out(stdout_buf_);
  stdout_buf_.clear();
}

std::optional<double> Console::out_due() const {
  if (stdout_buf_.empty()) return std::nullopt;
  return last_out_ + kOutInterval;
}

// The terminal's width; where it says 0 (a serial console, a container's pseudo-terminal nobody
// sized), $COLUMNS, as GNU tools and pv take it; else 80.
int Console::bar_width() const {
  struct winsize ws {};
  if (::ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
  const char* columns = std::getenv("COLUMNS");
  int n = 0;
  if (columns && *columns) {
    auto [end, ec] = std::from_chars(columns, columns + std::strlen(columns), n);
    if (ec == std::errc() && *end == '\0' && n > 0 && n <= 100000) return n;
  }
  return 80;
}

// The bar is news, never worth waiting for: a frame is drawn only when the terminal takes it at
// once. Not from the background, where it would write over the shell and what is typed there (pv
// draws nothing there either); nor while the terminal's output is paused (Ctrl-S, a stalled ssh
// connection), which a write would wait out, the copy with it.
void Console::draw(const ProgressState& state) {
  if (!bar_) {
    if (status_lines_) say(format_status_line(state));
    return;
  }
  if (in_background(STDERR_FILENO)) return;
  // Three columns short of the width: writing the last column makes some terminals wrap, and the
  // "^C" the terminal echoes on Ctrl-C (or "^Z", "^\\") must fit after the bar, or its wrapped
  // half leaves the bar on the screen above the next line, no longer on the line erased.
  std::string text = format_bar(state, bar_width() - 3);
  if (text == bar_shown_) return;
  pollfd pfd{STDERR_FILENO, POLLOUT, 0};
  if (::poll(&pfd, 1, 0) != 1 || !(pfd.revents & POLLOUT)) return;
  std::string out = "\r" + text + "\x1b[K";
  if (write_watching(STDERR_FILENO, out, false) == 0) bar_shown_ = std::move(text);
}

void Console::clear_bar() {
  if (bar_shown_.empty()) return;
  bar_shown_.clear();
  write_watching(STDERR_FILENO, "\r\x1b[K", false);
}

// A blocked SIGTTOU (it is read from the signalfd) lets a process write to its terminal from the
// background even under `stty tostop`, where the terminal would stop it: the parent makes the
// terminal's check itself before writing to one, and stops as the terminal would have stopped it.
void Console::before_terminal_write(int fd) {
  if (!sigismember(&run_.watched, SIGTTOU)) return;  // ignored: the terminal lets us write
  struct termios t;
  if (::tcgetattr(fd, &t) != 0 || !(t.c_lflag & TOSTOP)) return;
  if (in_background(fd)) run_.suspend(SIGTTOU);  // our controlling terminal alone stops us
}

}  // namespace pcopy
