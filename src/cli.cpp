#include "pcopy/cli.hpp"

#include <fcntl.h>
#include <fmt/core.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <charconv>
#include <cstdio>
#include <iostream>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "pcopy/fd.hpp"
#include "pcopy/git_rev.hpp"  // generated at build time (cmake/git_rev.cmake)
#include "pcopy/report.hpp"

namespace pcopy {
namespace {

constexpr const char* kExamples = R"(Examples:
  pcopy ~/photos /mnt/backup/photos -j4
      copy a tree with 4 workers and a progress bar
  pcopy -a -u --delete /home /backup/home
      nightly mirror: only what changed, removals follow
  pcopy -q --json --exclude '*.o' build/ out/
      CI staging: quiet, JSON report on stdout

Exit status: 0 all copied, 1 some entries failed (each one printed), 2 usage
error or run refused before anything was tried, 128 + the signal's number when
ended by one: 130 SIGINT, 143 SIGTERM, 129 SIGHUP.)";

constexpr size_t kHelpWidth = 80;  // as GNU tools' --help

// CLI11's help, each option's description wrapped to end within kHelpWidth (CLI11 2.1 writes it
// on one line, past 110 columns): continuation lines are indented to the description's column.
class WrappingFormatter : public CLI::Formatter {
 public:
  std::string make_option_desc(const CLI::Option* opt) const override {
    const std::string text = CLI::Formatter::make_option_desc(opt);
    const size_t width = kHelpWidth - get_column_width();
    std::string out, line;
    size_t at = 0;
    while (at < text.size()) {
      size_t end = std::min(text.find(' ', at), text.size());
      std::string word = text.substr(at, end - at);
      at = end + 1;
      if (!line.empty() && line.size() + 1 + word.size() > width) {
        out += line + "\n";
        line.clear();
      }
      line += (line.empty() ? "" : " ") + word;
    }
    return out + line;
  }
};

unsigned online_cpus() {
  long n = ::sysconf(_SC_NPROCESSORS_ONLN);
  return n < 1 ? 1u : static_cast<unsigned>(std::min(n, 1024L));
}

// A pattern that cannot mean what it says (glob_problem(): `[[:digt:]]`, `[:digit:]`) is refused:
// read as rsync reads it, it would match nothing or other names, and --delete would remove what
// it was to keep.
void add_checked_filter(Options& o, bool include, std::string_view pattern, const std::string& option,
                        const std::string& where = {}) {
  if (std::string problem = glob_problem(pattern); !problem.empty())
    throw CLI::ValidationError(option, fmt::format("'{}'{}: {}", display_path(pattern), where, problem));
  add_filter(o.filters, include, pattern);
}

// The contents of `path`, or the errno that kept them from being read.
int read_whole(const std::string& path, std::string& out) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return errno;
  char buf[64 * 1024];
  for (;;) {
    ssize_t n = read_some(fd.get(), buf, sizeof buf);
    if (n < 0) return int(-n);
    if (n == 0) return 0;
    out.append(buf, size_t(n));
  }
}

void add_filter_file(Options& o, const std::string& given) {
  const std::string file = given == "-" ? "/dev/stdin" : given;  // as rsync reads "-"
  // `--exclude-from /dev/stdin` with stdin closed: no patterns, and --delete would remove what
  // they were to keep. Refused, as rsync refuses it.
  if (std::string_view closed = closed_standard_stream(file); !closed.empty())
    throw CLI::ValidationError("--exclude-from", fmt::format("cannot read '{}': {} was closed when pcopy started",
                                                             display_path(given), closed));
  // Read whole before any line is taken, and every error of the read is the file's: a directory
  // opens, and only its read says EISDIR (a stream took that for the end of an empty file, and
  // --delete then removed what the rules were to keep).
  std::string text;
  if (int err = read_whole(file, text))
    throw CLI::ValidationError("--exclude-from", "cannot read '" + display_path(given) + "': " + errno_text(err));
  size_t number = 0;
  for (size_t at = 0; at < text.size();) {
    // Every '\r' ends a line too, as rsync reads them: Windows line ends, and old Macs' (a '\r'
    // kept in a pattern matched nothing, and --delete removed what it was to keep).
    size_t end = std::min(text.find_first_of("\r\n", at), text.size());
    std::string line = text.substr(at, end - at);
    at = end + (text.compare(end, 2, "\r\n") == 0 ? 2 : 1);
    ++number;
    if (line.empty() || line.front() == '#' || line.front() == ';') continue;
    if (line == "!") {  // as in rsync: the rules so far are dropped
      o.filters.clear();
      continue;
    }
    const std::string where = fmt::format(" (line {} of '{}')", number, display_path(given));
    // A prefix with nothing after it (`echo "+ $PAT"` with PAT empty) is refused, as rsync refuses
    // it; it excluded a file named "+ ".
    if (line == "+ " || line == "- ")
      throw CLI::ValidationError("--exclude-from", fmt::format("a rule without a pattern: '{}'{}", line, where));
    if (line.size() > 2 && (line.starts_with("+ ") || line.starts_with("- "))) {
      add_checked_filter(o, line[0] == '+', std::string_view(line).substr(2), "--exclude-from", where);
    } else {
      add_checked_filter(o, false, line, "--exclude-from", where);
    }
  }
}

// CLI11's words for a usage error, in those of cp and rsync where CLI11's read oddly.
std::string usage_message(const CLI::ParseError& e) { return e.what(); }

// One of a few words (--reflink, --progress), refused in --jobs' words, the value quoted: CLI11's
// "--progress: src not in {auto,always,never}" did not say which was the value (a forgotten one
// takes the next argument), and showed an empty one as nothing.
CLI::Validator one_of(std::vector<std::string> words) {
  std::string listed, braced;
  for (size_t i = 0; i < words.size(); ++i) {
    listed += (i == 0 ? "" : i + 1 == words.size() ? " or " : ", ") + words[i];
    braced += (i == 0 ? "{" : ",") + words[i];
  }
  braced += "}";
  return CLI::Validator(
      [words = std::move(words), listed](std::string& v) {
        if (std::find(words.begin(), words.end(), v) != words.end()) return std::string();
        return fmt::format("expects {}, not '{}'", listed, v);
      },
      braced);
}

void define_options(CLI::App& app, Options& o, std::string& progress, std::string& reflink) {
  // A flag takes no value, as in GNU tools: `--dry-run=0` is refused, never a real copy.
  app.option_defaults()->disable_flag_override();
  app.add_option("SRC", o.src, "Tree (or single file) to copy")->required();
  app.add_option("DST", o.dst, "Destination directory (or file, for a single file); default: SRC-copy beside SRC");

  const char* copying = "Copying";
  app.add_option("-j,--jobs", o.jobs, "Worker processes, 1-1024 (default: online CPUs)")
      ->transform(CLI::Validator(
          [](std::string& v) {
            unsigned n = 0;
            auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
            bool ok = ec == std::errc() && end == v.data() + v.size() && n >= 1 && n <= 1024;
            if (!ok) return fmt::format("expects a number of workers from 1 to 1024, not '{}'", v);
            v = std::to_string(n);  // decimal, as typed: the parser reads "010" as octal 8
            return std::string();
          },
          "", "1-1024"))
      ->group(copying);
  app.add_flag("-a,--archive", o.archive,
               "Also keep owner and group, xattrs and ACLs, hard links, special files")
      ->group(copying);
  app.add_flag("-L,--dereference", o.dereference, "Follow symbolic links inside SRC")->group(copying);
  app.add_flag("-x,--one-file-system", o.one_file_system, "Do not cross into other file systems")
      ->group(copying);
  app.add_option("--reflink", reflink, "Clone extents: auto (else copy), always (else fail), never (real copies)")
      ->check(one_of({"auto", "always", "never"}))
      ->group(copying);
  // Callbacks, not "!--no-…" flags, whose {false} default the help would print after the name.
  app.add_flag_callback("--no-copy-file-range", [&o] { o.copy_file_range = false; },
                        "Copy data with read/write only (no kernel copy_file_range)")
      ->group(copying);
  app.add_flag_callback("--no-io-uring", [&o] { o.io_uring = false; },
                        "Open and close files one system call at a time (no io_uring batches)")
      ->group(copying);

  const char* selection = "Selection";
  app.add_flag("-u,--update", o.update, "Skip files whose destination has the same size and mtime")
      ->group(selection);
  app.add_flag("--checksum", o.checksum, "Skip files whose contents are equal (implies -u)")
      ->group(selection);
  app.add_flag("--ignore-existing,--no-clobber", o.ignore_existing, "Never replace an existing file")
      ->group(selection);
  app.add_flag("--delete", o.delete_extraneous, "Remove destination entries that are not in SRC")
      ->group(selection);
  app.add_option_function<std::string>(
         "--exclude", [&o](const std::string& p) { add_checked_filter(o, false, p, "--exclude"); },
         "Skip paths matching the glob PAT")
      ->type_name("PAT")
      ->trigger_on_parse()
      ->group(selection);
  app.add_option_function<std::string>(
         "--include", [&o](const std::string& p) { add_checked_filter(o, true, p, "--include"); },
         "Keep paths matching PAT (first matching rule wins)")
      ->type_name("PAT")
      ->trigger_on_parse()
      ->group(selection);
  app.add_option_function<std::string>(
         "--exclude-from", [&o](const std::string& f) { add_filter_file(o, f); },
         "Read patterns from FILE (- for stdin), one per line: excludes, or includes as \"+ PAT\"")
      ->type_name("FILE")
      ->trigger_on_parse()
      ->group(selection);

  const char* safety = "Safety";
  app.add_flag("-n,--dry-run", o.dry_run, "Print what would be done; write nothing")->group(safety);
  app.add_flag("--verify", o.verify, "Re-read each copy and compare hashes before it takes its name")
      ->group(safety);
  app.add_flag("--fsync", o.fsync, "Flush each file and directory to disk")->group(safety);
  app.add_flag("--inplace", o.inplace, "Write straight to final names (faster, not atomic)")
      ->group(safety);
  app.add_flag("--fail-fast", o.fail_fast, "Stop at the first error")->group(safety);

  const char* output = "Output";
  app.add_option("--progress", progress, "auto|always|never (default auto)")
      ->check(one_of({"auto", "always", "never"}))
      ->group(output);
  app.add_flag("-q,--quiet", o.quiet, "Print nothing but errors (and what --dry-run lists)")->group(output);
  app.add_flag("-v,--verbose", o.verbose, "Print each path copied, to stdout (stderr with --json)")->group(output);
  app.add_flag("--json", o.json, "Print a JSON report to stdout at the end; -v and -n lines then go to stderr")
      ->group(output);
  app.add_option("--manifest", o.manifest, "Write one JSON line per file copied to FILE (- for stdout)")
      ->type_name("FILE")
      ->group(output);
}

// The command line as getopt_long reads it, handed to CLI11 in forms it reads the same way. CLI11
// 2.1 took an option given an empty value after '=' (`--manifest=`) for one still waiting, and gave
// it the next argument (`--manifest= notes.txt DST` wrote the manifest over notes.txt); took `-4`,
// and the `1` of `-q1`, for operands (`pcopy -q1 src` copied a directory named `-1` into src); and
// left a value that looks like an option (`--exclude -q`) unread. Here an option's value is what
// follows its '=' or its letter, else the next argument, whatever it looks like, as cp and rsync
// read it; it is passed on attached (`--exclude=-q`) or, when empty, as the option and an empty
// argument, which the option judges as it judges `--manifest ""`. The operands follow a "--".
// Unknown options, values given to flags, missing values and a third operand are refused here.
struct Args {
  std::vector<std::string> args;  // for CLI11
  std::string error;              // the first usage error, or ""
  bool json = false;              // --json given as an option: a refused command line gets a report too
  bool dry_run = false;           // -n given: that report says so
};

Args read_args(const CLI::App& app, int argc, const char* const* argv) {
  auto find = [&](auto has) -> const CLI::Option* {
    for (const CLI::Option* opt : app.get_options())
      if (has(*opt)) return opt;
    return nullptr;
  };
  auto takes_value = [](const CLI::Option* opt) { return opt->get_expected_min() > 0; };
  Args out;
  out.args.push_back(argc > 0 ? argv[0] : "pcopy");
  std::vector<std::string> operands;
  auto refuse = [&](std::string error) {
    if (out.error.empty()) out.error = std::move(error);
  };
  auto pass = [&](const std::string& option, const std::string& value) {
    if (value.empty()) {
      out.args.push_back(option);
      out.args.push_back("");
    } else {
      out.args.push_back(option + (option.size() > 2 ? "=" : "") + value);
    }
  };
  int i = 1;
  for (; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--") {
      ++i;
      break;
    }
    if (a.size() > 2 && a.starts_with("--")) {
      size_t eq = a.find('=');
      std::string name = a.substr(2, eq == std::string::npos ? std::string::npos : eq - 2);
      // The whole name, else the one option whose name it begins (`--del` is --delete), as
      // getopt_long takes it.
      const CLI::Option* opt = find([&](const CLI::Option& o) {
        const auto& names = o.get_lnames();
        return std::find(names.begin(), names.end(), name) != names.end();
      });
      if (!opt && !name.empty()) {
        std::vector<std::pair<std::string, const CLI::Option*>> begun;
        for (const CLI::Option* o : app.get_options())
          for (const std::string& n : o->get_lnames())
            if (n.starts_with(name)) begun.push_back({n, o});
        bool one = !begun.empty() && std::all_of(begun.begin(), begun.end(), [&](auto& b) { return b.second == begun[0].second; });
        if (one) {
          opt = begun[0].second;
          name = begun[0].first;
        } else if (!begun.empty()) {
          std::string all;
          for (const auto& b : begun) all += " '--" + b.first + "'";
          refuse(fmt::format("option '{}' is ambiguous; possibilities:{}", a.substr(0, eq), all));
          continue;
        }
      }
      if (!opt) {
        refuse(fmt::format("unrecognized option '{}'", a));
      } else if (!takes_value(opt)) {
        if (eq != std::string::npos) refuse(fmt::format("option '--{}' takes no value", name));
        if (name == "json") out.json = true;
        if (name == "dry-run") out.dry_run = true;
        // --help and --version before any error are what is asked, whatever follows (as with cp).
        if ((name == "help" || name == "version") && out.error.empty()) return {{out.args[0], "--" + name}, "", out.json};
        out.args.push_back("--" + name);
      } else if (eq != std::string::npos) {
        pass("--" + name, a.substr(eq + 1));
      } else if (i + 1 < argc) {
        pass("--" + name, argv[++i]);
      } else {
        refuse(fmt::format("option '--{}' requires an argument", name));
      }
    } else if (a.size() > 1 && a[0] == '-') {
      for (size_t k = 1; k < a.size(); ++k) {
        std::string letter(1, a[k]);
        const CLI::Option* opt = find([&](const CLI::Option& o) {
          const auto& names = o.get_snames();
          return std::find(names.begin(), names.end(), letter) != names.end();
        });
        if (!opt) {
          refuse(fmt::format("invalid option -- '{}'", letter));
          break;
        }
        if (!takes_value(opt)) {
          if (letter == "h" && out.error.empty()) return {{out.args[0], "-h"}, "", out.json};
          if (letter == "n") out.dry_run = true;
          out.args.push_back("-" + letter);
          continue;
        }
        if (k + 1 < a.size()) {
          pass("-" + letter, a.substr(k + 1));
        } else if (i + 1 < argc) {
          pass("-" + letter, argv[++i]);
        } else {
          refuse(fmt::format("option requires an argument -- '{}'", letter));
        }
        break;
      }
    } else {
      operands.push_back(a);
    }
  }
  for (; i < argc; ++i) operands.push_back(argv[i]);
  if (operands.size() > 2) refuse(fmt::format("extra operand '{}'", operands[2]));
  out.args.push_back("--");
  out.args.insert(out.args.end(), operands.begin(), operands.end());
  return out;
}

template <typename Mode>
Mode mode_from(const std::string& s) {
  return s == "always" ? Mode::Always : s == "never" ? Mode::Never : Mode::Auto;
}

}  // namespace

std::string version_string() {
#ifdef PCOPY_TEST_HOOKS
  constexpr std::string_view hooks = ", with test hooks";  // a build for the test suite: never ship it
#else
  constexpr std::string_view hooks;
#endif
  return fmt::format("pcopy {} ({}{})", PCOPY_VERSION, PCOPY_GIT_REV, hooks);
}

CliResult parse_cli(int argc, const char* const* argv) {
  CLI::App app{"pcopy: copy a directory tree fast, with a pool of worker processes.", "pcopy"};
  app.footer(kExamples);
  app.set_version_flag("--version", version_string());
  app.formatter(std::make_shared<WrappingFormatter>());
  app.get_formatter()->column_width(30);

  Options o;
  o.jobs = online_cpus();
  std::string progress = "auto", reflink = "auto";
  define_options(app, o, progress, reflink);

  // As cp and rsync: an option given again takes the last value (a wrapper adding -j8 to a
  // configured -j4); the repeatable ones (--exclude and the like) add up.
  for (const char* name : {"--jobs", "--reflink", "--progress", "--manifest"})
    app.get_option(name)->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);

  Args args = read_args(app, argc, argv);
  if (!args.error.empty()) {
    print_refusal("pcopy: " + display_text(args.error), "", args.json, 0, args.dry_run);
    print_stderr("Try 'pcopy --help' for more information.");
    return {std::nullopt, 2};
  }
  std::vector<const char*> arg_ptrs;
  for (const std::string& a : args.args) arg_ptrs.push_back(a.c_str());
  try {
    app.parse(int(arg_ptrs.size()), arg_ptrs.data());
  } catch (const CLI::Success& e) {  // --help, --version: their text, and an error if it could not be written
    app.exit(e);
    if (std::fflush(stdout) != 0 || std::cout.flush().fail()) {
      print_stderr(fmt::format("pcopy: write error: {}", errno_text(errno)));
      return {std::nullopt, 1};
    }
    return {std::nullopt, 0};
  } catch (const CLI::ParseError& e) {
    // What was typed is in it: shown escaped, as paths are (an escape sequence or a newline in an
    // operand is one line, never raw on the terminal); a path it holds is escaped already.
    print_refusal("pcopy: " + display_text(usage_message(e)), "", o.json || args.json, 0, args.dry_run);
    print_stderr("Try 'pcopy --help' for more information.");
    return {std::nullopt, 2};
  }
  if (o.checksum) o.update = true;  // as rsync: --checksum alone means "skip identical contents"
  if (o.src.empty()) {
    print_refusal("pcopy: SRC must not be empty", o.src, o.json, 0, o.dry_run);
    print_stderr("Try 'pcopy --help' for more information.");
    return {std::nullopt, 2};
  }
  // Given empty is not omitted: a script's unset variable must not send the copy beside SRC.
  if (o.dst.empty() && app.get_option("DST")->count() > 0) {
    print_refusal("pcopy: DST must not be empty", o.dst, o.json, 0, o.dry_run);
    print_stderr("Try 'pcopy --help' for more information.");
    return {std::nullopt, 2};
  }
  if (o.manifest.empty() && app.get_option("--manifest")->count() > 0) {
    print_refusal("pcopy: --manifest: FILE must not be empty", o.manifest, o.json, 0, o.dry_run);
    print_stderr("Try 'pcopy --help' for more information.");
    return {std::nullopt, 2};
  }
  // "-" is standard output, as `--exclude-from -` is standard input (a file of that name is ./-).
  o.manifest_given = o.manifest;
  if (o.manifest == "-") o.manifest = "/dev/stdout";
  o.progress = mode_from<ProgressMode>(progress);
  o.reflink = mode_from<ReflinkMode>(reflink);
  if (o.quiet) o.verbose = false;
  return {std::move(o), 0};
}

}  // namespace pcopy
