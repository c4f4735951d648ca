// What a run writes to its standard output and error, and how: messages on stderr above the progress
// bar; -v and -n lines on stdout, gathered into few writes where it is a file or a pipe; the bar or,
// without a terminal, status lines. Every write watches for signals while its reader is slow: a
// consumer that stops reading (a stuck pipe, a suspended pager) must not keep Ctrl-C from ending
// the run, as a blocking write would.
#pragma once

#include <signal.h>

#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "pcopy/options.hpp"
#include "pcopy/progress.hpp"

namespace pcopy {

inline constexpr double kOutInterval = 0.2;  // -v, -n lines into a file or pipe: written at least this often

class Console {
 public:
  // What a write needs of the run: its signalfd, looked at while a write waits (on_signal reads it);
  // whether the run was interrupted, after which a reader that takes nothing more for a second
  // loses the rest; the signals the run watches; and how it stops as a terminal would stop it.
  struct Run {
    int sigfd = -1;
    sigset_t watched{};
    std::function<void()> on_signal;
    std::function<bool()> interrupted;
    std::function<void(int)> suspend;
  };

  // Looks at what stdout and stderr are (a terminal, TERM=dumb, a pipe, a file) and NO_COLOR, and
  // chooses the progress display the options ask for.
  Console(const Options& options, Run run);

  int say(const std::string& line);  // stderr, above the bar; 0 or the errno of a failed write
  void out_line(const std::string& line);  // stdout; with --json stderr, so the report is all stdout holds
  void flush_out();
  void write_out(std::string_view text);  // to stdout, until a write to it fails
  // Writes all of `text` to `fd` (PIPE_BUF bytes at a time into a pipe); 0, an errno, or EAGAIN for a
  // reader that took nothing more once the run was interrupted.
  int write_watching(int fd, std::string_view text, bool pipe);
  // write_watching to a file of the run's own (the manifest), which may be the terminal: the bar is
  // erased first there, as before a line on stdout.
  int write_beside(int fd, std::string_view text, bool pipe);
  int say_error(const std::string& line) { return say(paint("31", line)); }      // red on a terminal
  int say_warning(const std::string& line) { return say(paint("33", line)); }    // yellow

  bool bar() const { return bar_; }
  bool status_lines() const { return status_lines_; }
  void draw(const ProgressState& state);  // the bar, or a status line
  void clear_bar();  // erases the bar's line, if it shows (before a line is written, at the end)
  // When the -v and -n lines gathered are next due to be written, if any are.
  std::optional<double> out_due() const;
  int stdout_err() const { return stdout_err_; }  // the first failed write to stdout
  int lines_err() const { return lines_err_; }    // the same for -v and -n lines on stderr (--json)

 private:
  // Colours a line for a terminal (SGR code, e.g. "31" red), unless NO_COLOR is set.
  std::string paint(const char* sgr, const std::string& line) const;
  void before_terminal_write(int fd);
  int bar_width() const;

  const Options& opt_;
  Run run_;
  bool bar_ = false;      // stderr is a terminal that moves its cursor, and the options want the bar
  std::string bar_shown_;  // the bar's text on the terminal now, "" if erased
  bool status_lines_ = false;
  bool stdout_tty_ = false;
  bool stderr_tty_ = false;
  bool stdout_pipe_ = false;  // a pipe or socket: written PIPE_BUF at a time (write_watching)
  bool stderr_pipe_ = false;
  bool color_ = false;
  std::string stdout_buf_;
  double last_out_ = 0;  // when stdout_buf_ was last written
  int stdout_err_ = 0;  // reported at the end, an error of the run
  int lines_err_ = 0;
  double waited_interrupted_s_ = 0;  // time writes spent waiting for readers once interrupted
};

}  // namespace pcopy
