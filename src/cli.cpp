#include "pcopy/cli.hpp"

#include <fmt/core.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <charconv>
#include <cstdio>
#include <iostream>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

#include "pcopy/fd.hpp"
#include "pcopy/report.hpp"

namespace pcopy {
namespace {

constexpr const char* kExamples = R"(Examples:
  pcopy ~/photos /mnt/backup/photos -j4        copy a tree with 4 workers and a progress bar
  pcopy -a -u --delete /home /backup/home      nightly mirror: only what changed, removals follow
  pcopy -q --json --exclude '*.o' build/ out/  CI staging: quiet, JSON report on stdout

Exit status: 0 all copied, 1 some entries failed (each one printed), 2 usage error or nothing
could be done, 128 + the signal's number when ended by one: 130 SIGINT, 143 SIGTERM, 129 SIGHUP.)";

unsigned online_cpus() {
  long n = ::sysconf(_SC_NPROCESSORS_ONLN);
  return n < 1 ? 1u : static_cast<unsigned>(std::min(n, 1024L));
}

void add_filter_file(Options& o, const std::string& file) {
  std::ifstream in(file);
  if (!in) {
    int err = errno;
    throw CLI::ValidationError("--exclude-from", "cannot read '" + display_path(file) + "': " + errno_text(err));
  }
  for (std::string line; std::getline(in, line);) {
    if (line.ends_with('\r')) line.pop_back();  // Windows line ends, as rsync reads them
    if (line.empty() || line.front() == '#' || line.front() == ';') continue;
    if (line.size() > 2 && (line.starts_with("+ ") || line.starts_with("- "))) {
      o.filters.push_back(make_rule(line[0] == '+', std::string_view(line).substr(2)));
    } else {
      o.filters.push_back(make_rule(false, line));
    }
  }
}

// CLI11's words for a usage error, in those of cp and rsync where CLI11's read oddly.
std::string usage_message(const CLI::ParseError& e, const CLI::App& app) {
  std::string_view what = e.what();
  // SRC missing beside an unknown option (`pcopy -V`, `pcopy --verison`): the option is what is
  // wrong, as cp says (CLI11 checks the operands before the unknown options).
  if (dynamic_cast<const CLI::RequiredError*>(&e)) {
    for (const std::string& arg : app.remaining()) {
      if (arg.size() > 1 && arg[0] == '-') return fmt::format("unrecognized option '{}'", arg);
    }
  }
  constexpr std::string_view kOverride = " was given a disallowed flag override";
  if (what.ends_with(kOverride)) {
    std::string_view name = what.substr(0, what.size() - kOverride.size());
    return fmt::format("option '{}{}' takes no value", name.size() == 1 ? "-" : "--", name);
  }
  if (dynamic_cast<const CLI::ExtrasError*>(&e)) {  // "The following argument(s) was/were not expected: A B"
    size_t colon = what.find(": ");
    std::string_view args = colon == std::string_view::npos ? what : what.substr(colon + 2);
    std::string_view first = args.substr(0, args.find(' '));
    if (first.size() > 1 && first[0] == '-') return fmt::format("unrecognized option '{}'", first);
    return fmt::format("extra operand '{}'", first);
  }
  return std::string(what);
}

void define_options(CLI::App& app, Options& o, std::string& progress, std::string& reflink) {
  // A flag takes no value, as in GNU tools: `--dry-run=0` is refused, never a real copy.
  app.option_defaults()->disable_flag_override();
  app.add_option("SRC", o.src, "Tree (or single file) to copy")->required();
  app.add_option("DST", o.dst, "Destination directory; default: SRC-copy beside SRC");

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
      ->check(CLI::IsMember({"auto", "always", "never"}))
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
         "--exclude", [&o](const std::string& p) { o.filters.push_back(make_rule(false, p)); },
         "Skip paths matching the glob PAT")
      ->type_name("PAT")
      ->trigger_on_parse()
      ->group(selection);
  app.add_option_function<std::string>(
         "--include", [&o](const std::string& p) { o.filters.push_back(make_rule(true, p)); },
         "Keep paths matching PAT (first matching rule wins)")
      ->type_name("PAT")
      ->trigger_on_parse()
      ->group(selection);
  app.add_option_function<std::string>(
         "--exclude-from", [&o](const std::string& f) { add_filter_file(o, f); },
         "Read patterns from FILE, one per line: excludes, or includes as \"+ PAT\"")
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
      ->check(CLI::IsMember({"auto", "always", "never"}))
      ->group(output);
  app.add_flag("-q,--quiet", o.quiet, "Print nothing but errors")->group(output);
  app.add_flag("-v,--verbose", o.verbose, "Print each path copied, to stdout (stderr with --json)")->group(output);
  app.add_flag("--json", o.json, "Print a JSON report to stdout at the end; -v and -n lines then go to stderr")
      ->group(output);
  app.add_option("--manifest", o.manifest, "Write one JSON line per file copied to FILE")
      ->type_name("FILE")
      ->group(output);
}

// Whether --json was asked for, also when the parser gave up before reaching it: a pipeline
// reading the report must get one from a refused command line too. Options end at "--".
bool json_requested(int argc, const char* const* argv) {
  for (int i = 1; i < argc && std::string_view(argv[i]) != "--"; ++i)
    if (std::string_view(argv[i]) == "--json") return true;
  return false;
}

// CLI11 takes an option given an empty value after '=' (`--manifest=`) for one still waiting for
// its value, and gave it the next argument: `--manifest= notes.txt DST` wrote the manifest over
// notes.txt, `--exclude="$X" home backup/home` with X unset copied backup/home into itself. Given
// empty is given: such an argument is passed on as the option and an empty argument, which the
// option then judges as it judges `--manifest ""`. Flags are left as they are.
std::vector<std::string> with_empty_values(const CLI::App& app, int argc, const char* const* argv) {
  std::vector<std::string> args(argv, argv + argc);
  for (size_t i = 1; i < args.size() && args[i] != "--"; ++i) {
    const std::string& a = args[i];
    if (a.size() < 4 || a.compare(0, 2, "--") != 0 || a.back() != '=' || a.find('=') != a.size() - 1) continue;
    std::string name = a.substr(2, a.size() - 3);
    for (const CLI::Option* opt : app.get_options()) {
      const auto& lnames = opt->get_lnames();
      if (opt->get_expected_min() > 0 && std::find(lnames.begin(), lnames.end(), name) != lnames.end()) {
        args[i].pop_back();
        args.insert(args.begin() + long(i) + 1, "");
        ++i;
        break;
      }
    }
  }
  return args;
}

template <typename Mode>
Mode mode_from(const std::string& s) {
  return s == "always" ? Mode::Always : s == "never" ? Mode::Never : Mode::Auto;
}

}  // namespace

std::string version_string() { return fmt::format("pcopy {} ({})", PCOPY_VERSION, PCOPY_GIT_REV); }

CliResult parse_cli(int argc, const char* const* argv) {
  CLI::App app{"pcopy: copy a directory tree fast, with a pool of worker processes.", "pcopy"};
  app.footer(kExamples);
  app.set_version_flag("--version", version_string());
  app.get_formatter()->column_width(30);

  Options o;
  o.jobs = online_cpus();
  std::string progress = "auto", reflink = "auto";
  define_options(app, o, progress, reflink);

  // As cp and rsync: an option given again takes the last value (a wrapper adding -j8 to a
  // configured -j4); the repeatable ones (--exclude and the like) add up.
  for (const char* name : {"--jobs", "--reflink", "--progress", "--manifest"})
    app.get_option(name)->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);

  std::vector<std::string> args = with_empty_values(app, argc, argv);
  std::vector<const char*> arg_ptrs;
  for (const std::string& a : args) arg_ptrs.push_back(a.c_str());
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
    print_refusal("pcopy: " + display_text(usage_message(e, app)), "", o.json || json_requested(argc, argv));
    print_stderr("Try 'pcopy --help' for more information.");
    return {std::nullopt, 2};
  }
  if (o.checksum) o.update = true;  // as rsync: --checksum alone means "skip identical contents"
  if (o.src.empty()) {
    print_refusal("pcopy: SRC must not be empty", o.src, o.json);
    return {std::nullopt, 2};
  }
  // Given empty is not omitted: a script's unset variable must not send the copy beside SRC.
  if (o.dst.empty() && app.get_option("DST")->count() > 0) {
    print_refusal("pcopy: DST must not be empty", o.dst, o.json);
    return {std::nullopt, 2};
  }
  if (o.manifest.empty() && app.get_option("--manifest")->count() > 0) {
    print_refusal("pcopy: --manifest: FILE must not be empty", o.manifest, o.json);
    return {std::nullopt, 2};
  }
  o.progress = mode_from<ProgressMode>(progress);
  o.reflink = mode_from<ReflinkMode>(reflink);
  if (o.quiet) o.verbose = false;
  return {std::move(o), 0};
}

}  // namespace pcopy
