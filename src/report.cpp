#include "pcopy/report.hpp"

#include <fmt/core.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <functional>
#include <nlohmann/json.hpp>

#include "pcopy/progress.hpp"

namespace pcopy {

namespace {

// Length of the valid UTF-8 sequence at s[i], or 0.
size_t utf8_len(std::string_view s, size_t i) {
  auto c = static_cast<unsigned char>(s[i]);
  size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
  if (n == 0 || i + n > s.size()) return 0;
  for (size_t k = 1; k < n; ++k)
    if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return 0;
  if (n == 2 && c < 0xC2) return 0;  // overlong
  if (n == 3) {
    auto c1 = static_cast<unsigned char>(s[i + 1]);
    if ((c == 0xE0 && c1 < 0xA0) || (c == 0xED && c1 >= 0xA0)) return 0;  // overlong, surrogate
  }
  if (n == 4) {
    auto c1 = static_cast<unsigned char>(s[i + 1]);
    if ((c == 0xF0 && c1 < 0x90) || c > 0xF4 || (c == 0xF4 && c1 >= 0x90)) return 0;
  }
  return n;
}

// `path`, and `"path_escaped": true` when it had to be escaped: only then do `\\` and `\xHH` in it
// stand for one byte each (a valid name may hold those four characters as they are).
void put_path(nlohmann::json& j, std::string_view raw) {
  j["path"] = json_path(raw);
  if (!valid_utf8(raw)) j["path_escaped"] = true;
}

}  // namespace

bool valid_utf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    size_t n = utf8_len(s, i);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

namespace {

// The code point of the valid UTF-8 sequence of `n` bytes at s[i].
char32_t code_point(std::string_view s, size_t i, size_t n) {
  auto b = [&](size_t k) { return char32_t(static_cast<unsigned char>(s[i + k])); };
  if (n == 1) return b(0);
  if (n == 2) return (b(0) & 0x1F) << 6 | (b(1) & 0x3F);
  if (n == 3) return (b(0) & 0x0F) << 12 | (b(1) & 0x3F) << 6 | (b(2) & 0x3F);
  return (b(0) & 0x07) << 18 | (b(1) & 0x3F) << 12 | (b(2) & 0x3F) << 6 | (b(3) & 0x3F);
}

// Valid characters that a terminal or a reader of lines acts on: DEL and the C1 controls (CSI,
// NEL: terminal commands), the line and paragraph separators (Python's splitlines() and others
// end a line there), and the bidirectional controls, which make a name show as another
// (`x<U+202E>txt.exe` shows as `xexe.txt`).
bool acts_on_display(char32_t c) {
  return (c >= 0x7F && c <= 0x9F) || c == 0x2028 || c == 0x2029 || c == 0x200E || c == 0x200F ||
         (c >= 0x202A && c <= 0x202E) || (c >= 0x2066 && c <= 0x2069);
}

// JSON as nlohmann dumps it (valid UTF-8, control characters below 0x20 escaped), with those
// characters written \uXXXX too: the same string to a JSON parser, plain text to a terminal that
// shows it and to a reader that splits the JSON lines of the manifest.
std::string plain_json(std::string text) {
  for (size_t i = 0; i < text.size(); ++i) {
    auto c = static_cast<unsigned char>(text[i]);
    if (c < 0x7F) continue;
    size_t n = utf8_len(text, i);
    if (n == 0) continue;
    if (char32_t cp = code_point(text, i, n); acts_on_display(cp)) {
      std::string u = fmt::format("\\u{:04x}", uint32_t(cp));
      text.replace(i, n, u);
      i += u.size() - 1;
    } else {
      i += n - 1;
    }
  }
  return text;
}

// display_path, and with `backslashes` false display_text.
std::string escaped(std::string_view raw, bool backslashes) {
  std::string out;
  out.reserve(raw.size());
  for (size_t i = 0; i < raw.size();) {
    auto c = static_cast<unsigned char>(raw[i]);
    size_t n = utf8_len(raw, i);
    if (c == '\\' && backslashes) {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (n == 0 || c < 0x20) {
      out += fmt::format("\\x{:02x}", c);
    } else if (acts_on_display(code_point(raw, i, n))) {
      // Valid UTF-8, but terminal commands, line ends or reordering: escaped byte by byte too.
      for (size_t k = 0; k < n; ++k) out += fmt::format("\\x{:02x}", static_cast<unsigned char>(raw[i + k]));
      i += n;
      continue;
    } else {
      out.append(raw.substr(i, n));
      i += n;
      continue;
    }
    ++i;
  }
  return out;
}
}  // namespace

std::string display_path(std::string_view raw) { return escaped(raw, true); }
std::string display_text(std::string_view raw) { return escaped(raw, false); }

std::string json_path(std::string_view raw) {
  if (valid_utf8(raw)) return std::string(raw);
  std::string out;
  for (size_t i = 0; i < raw.size();) {
    size_t n = utf8_len(raw, i);
    if (raw[i] == '\\') {
      out += "\\\\";
    } else if (n == 0) {
      out += fmt::format("\\x{:02x}", static_cast<unsigned char>(raw[i]));
    } else {
      out.append(raw.substr(i, n));
      i += n;
      continue;
    }
    ++i;
  }
  return out;
}

std::string summary_line(const Stats& s, bool show_skipped, bool show_deleted) {
  auto plural = [](uint64_t n, const char* one, const char* many) {
    return fmt::format("{} {}", format_count(n), n == 1 ? one : many);
  };
  std::string rate =
      s.dry_run ? "" : fmt::format(" ({})", format_rate(s.elapsed_s > 0 ? double(s.bytes_copied) / s.elapsed_s : 0));
  std::string line = fmt::format(
      "pcopy: {}{} {}, {}, {}, {} in {}{}, {}, {}", s.interrupted ? "interrupted: " : "",
      s.dry_run ? "would copy" : "copied", plural(s.files_copied, "file", "files"),
      plural(s.dirs_created, "dir", "dirs"), plural(s.links_copied, "link", "links"), format_bytes(s.bytes_copied),
      format_duration(s.elapsed_s), rate, plural(s.workers, "worker", "workers"),
      plural(s.errors.size(), "error", "errors"));
  if (show_skipped) line += fmt::format(", {} skipped", format_count(s.files_skipped));
  if (show_deleted) line += fmt::format(", {} deleted", format_count(s.files_deleted));
  if (!s.warnings.empty()) line += fmt::format(", {}", plural(s.warnings.size(), "warning", "warnings"));
  return line;
}

void ErrorLog::add(std::string_view path, std::string_view reason) {
  auto [it, added] = reason_numbers_.try_emplace(std::string(reason), uint32_t(reasons_.size()));
  if (added) reasons_.emplace_back(reason);
  uint32_t number = it->second, len = uint32_t(path.size());
  packed_.append(reinterpret_cast<const char*>(&number), sizeof number);
  packed_.append(reinterpret_cast<const char*>(&len), sizeof len);
  packed_.append(path);
  ++count_;
}

// The errors and warnings go out one at a time, not made into one JSON tree with the rest, nor one
// string: that took 120 MB for 200,000 errors. The layout is nlohmann's dump(2), as for the rest.
void write_json_report(const Stats& s, const std::function<void(std::string_view)>& write) {
  nlohmann::json j = {
      {"files_copied", s.files_copied}, {"files_skipped", s.files_skipped}, {"files_deleted", s.files_deleted},
      {"dirs_created", s.dirs_created}, {"links_copied", s.links_copied},   {"bytes_copied", s.bytes_copied},
      {"elapsed_s", s.elapsed_s},       {"workers", s.workers},             {"interrupted", s.interrupted},
      {"dry_run", s.dry_run},           {"exit_status", s.exit_status},     {"errors", nlohmann::json::array()},
      {"warnings", nlohmann::json::array()},
  };
  const std::string text = plain_json(j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace));
  constexpr size_t kPiece = 64 * 1024;
  std::string out;
  size_t done = 0;  // of text
  // Each list in its place among the keys (they sort), its entries indented as dump(2) would.
  for (auto [key, log] : {std::pair{"errors", &s.errors}, std::pair{"warnings", &s.warnings}}) {
    const std::string empty = fmt::format("\"{}\": []", key);
    size_t at = text.find(empty);
    out.append(text, done, at - done);
    done = at + empty.size();
    out += fmt::format("\"{}\": [", key);
    const char* sep = "\n";
    log->for_each([&](std::string_view path, std::string_view reason) {
      nlohmann::json entry = {{"reason", reason}};
      put_path(entry, path);
      std::string one = plain_json(entry.dump(2, ' ', false, nlohmann::json::error_handler_t::replace));
      out += sep;
      out += "    ";
      for (char c : one) {
        out += c;
        if (c == '\n') out += "    ";
      }
      sep = ",\n";
      if (out.size() >= kPiece) write(std::exchange(out, {}));
    });
    out += log->empty() ? "]" : "\n  ]";
  }
  out.append(text, done);
  out += '\n';
  write(out);
}

std::string json_report(const Stats& s) {
  std::string text;
  write_json_report(s, [&](std::string_view piece) { text += piece; });
  text.pop_back();
  return text;
}

void print_refusal(const std::string& message, const std::string& path, bool json, int signal, bool dry_run) {
  print_stderr(message);
  if (!json) return;
  Stats stats;
  stats.exit_status = signal ? exit_for_signal(signal) : kExitRefused;
  stats.interrupted = signal != 0;
  stats.dry_run = dry_run;
  stats.errors.add(path, message.substr(message.find(' ') + 1));
  write_json_report(stats, [](std::string_view piece) { write_all(STDOUT_FILENO, piece.data(), piece.size()); });
}

Manifest::~Manifest() {
  writer_ = nullptr;  // its owner may be going too
  close();
}

int Manifest::open(UniqueFd fd) {
  // Emptied only now: a run refused left it as it was. Not a pipe, FIFO or device (/dev/stdout
  // into `| jq`, a process substitution), which cannot be truncated and need not be. Nor the file
  // stdout or stderr writes (`--manifest /dev/stdout >> log`): written through their descriptor,
  // after what is there, where the report and other lines go too; its own would start at 0 and
  // write over them.
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return errno;
  for (int shared : {STDOUT_FILENO, STDERR_FILENO}) {
    struct stat s;
    int flags = ::fcntl(shared, F_GETFL);  // open for writing (not `1<file`)
    if (S_ISREG(st.st_mode) && flags >= 0 && (flags & O_ACCMODE) != O_RDONLY && ::fstat(shared, &s) == 0 &&
        s.st_dev == st.st_dev && s.st_ino == st.st_ino) {
      UniqueFd dup(::fcntl(shared, F_DUPFD_CLOEXEC, 3));
      if (!dup) return errno;
      fd_ = std::move(dup);
      return 0;
    }
  }
  if (S_ISREG(st.st_mode) && ::ftruncate(fd.get(), 0) != 0) return errno;
  pipe_ = S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode);
  fd_ = std::move(fd);
  return 0;
}

void Manifest::add(std::string_view rel, uint64_t size, Nanos mtime_ns, const Hash128& hash) {
  nlohmann::json j = {{"size", size}, {"xxh128", to_hex(hash)}};
  put_path(j, rel);
  std::string line = plain_json(j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
  // Written by hand, first as the keys sort: a time before 1677 or after 2262 is past what JSON
  // libraries hold in 64 bits, and is written in full all the same.
  line.insert(1, fmt::format("\"mtime_ns\":{},", mtime_ns));
  line.push_back('\n');
  buf_ += line;
  if (buf_.size() >= 64 * 1024) flush();
}

namespace {
// Where a write to regular file `fd` will begin: its offset, or its end where it is open to append
// (stdout's `>> log`), whose offset stays 0 until the first write; -1 where it cannot be told.
off_t write_starts_at(int fd) {
  int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0) return -1;
  if (!(flags & O_APPEND)) return ::lseek(fd, 0, SEEK_CUR);
  struct stat st;
  return ::fstat(fd, &st) == 0 ? st.st_size : -1;
}
}  // namespace

void Manifest::flush() {
  if (buf_.empty() || !fd_) return;
  if (!err_) {
    // A file keeps whole lines only: the part of a line a failed write (a full disk, `ulimit -f`)
    // put there is cut off again, so that a reader of JSON lines finds none broken; the whole
    // lines it wrote stay (they were cut back to where the write began).
    off_t before = pipe_ ? -1 : write_starts_at(fd_.get());
    err_ = writer_ ? writer_(fd_.get(), buf_) : write_all(fd_.get(), buf_.data(), buf_.size());
    if (err_ && before >= 0) {
      off_t now = ::lseek(fd_.get(), 0, SEEK_CUR);
      size_t written = now > before ? std::min(size_t(now - before), buf_.size()) : 0;
      size_t whole = written ? buf_.rfind('\n', written - 1) : std::string::npos;
      (void)::ftruncate(fd_.get(), before + (whole == std::string::npos ? 0 : off_t(whole + 1)));
    }
  }
  buf_.clear();  // after a failed write, what follows is dropped: the close reports the error
}

int Manifest::close() {
  if (!fd_) return 0;
  flush();
  int err = fd_.close_checked();
  return err_ ? err_ : err;
}

}  // namespace pcopy
