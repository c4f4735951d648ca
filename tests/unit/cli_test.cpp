#include "pcopy/cli.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "unit_util.hpp"

using namespace pcopy;

namespace {

CliResult parse(std::vector<std::string> args) {
  std::vector<const char*> argv{"pcopy"};
  for (const auto& a : args) argv.push_back(a.c_str());
  argv.push_back(nullptr);
  return parse_cli(int(argv.size() - 1), argv.data());
}

// Parses quietly: usage errors print to stderr, which is not what these tests look at.
CliResult parse_quiet(std::vector<std::string> args) {
  testing::internal::CaptureStderr();
  testing::internal::CaptureStdout();
  CliResult r = parse(std::move(args));
  testing::internal::GetCapturedStdout();
  testing::internal::GetCapturedStderr();
  return r;
}

// A usage error: exit 2, no options, and a line saying why (the first line of stderr, when given).
void expect_usage_error(std::vector<std::string> args, const std::string& first_line = "") {
  std::string joined;
  for (const auto& a : args) joined += "'" + a + "' ";
  testing::internal::CaptureStderr();
  CliResult r = parse(args);
  std::string err = testing::internal::GetCapturedStderr();
  EXPECT_EQ(r.exit_status, 2) << joined;
  EXPECT_FALSE(r.options.has_value()) << joined;
  EXPECT_FALSE(err.empty()) << "a usage error says why: " << joined;
  if (!first_line.empty()) {
    EXPECT_EQ(err.substr(0, err.find('\n')), first_line) << joined;
  }
}

struct RuleView {
  bool include;
  std::string pattern;
  bool dirs_only;
  bool anchored;
  bool operator==(const RuleView&) const = default;
};

std::vector<RuleView> view(const std::vector<FilterRule>& rules) {
  std::vector<RuleView> out;
  for (const auto& r : rules) out.push_back({r.include, r.pattern, r.dirs_only, r.anchored});
  return out;
}

}  // namespace

TEST(Cli, SrcAndDstWithDefaults) {
  CliResult r = parse_quiet({"src", "dst"});
  ASSERT_TRUE(r.options.has_value());
  EXPECT_EQ(r.exit_status, 0);
  const Options& o = *r.options;
  EXPECT_EQ(o.src, "src");
  EXPECT_EQ(o.dst, "dst");
  long cpus = ::sysconf(_SC_NPROCESSORS_ONLN);
  EXPECT_EQ(o.jobs, unsigned(std::min(std::max(cpus, 1L), 1024L)));
  EXPECT_FALSE(o.archive);
  EXPECT_FALSE(o.dereference);
  EXPECT_FALSE(o.one_file_system);
  EXPECT_FALSE(o.update);
  EXPECT_FALSE(o.checksum);
  EXPECT_FALSE(o.ignore_existing);
  EXPECT_FALSE(o.delete_extraneous);
  EXPECT_TRUE(o.filters.empty());
  EXPECT_FALSE(o.dry_run);
  EXPECT_FALSE(o.verify);
  EXPECT_FALSE(o.fsync);
  EXPECT_FALSE(o.inplace);
  EXPECT_EQ(o.reflink, ReflinkMode::Auto);
  EXPECT_EQ(o.progress, ProgressMode::Auto);
  EXPECT_FALSE(o.quiet);
  EXPECT_FALSE(o.verbose);
  EXPECT_FALSE(o.json);
  EXPECT_TRUE(o.manifest.empty());
  EXPECT_FALSE(o.fail_fast);
}

TEST(Cli, DstMayBeOmitted) {
  CliResult r = parse_quiet({"only-src"});
  ASSERT_TRUE(r.options.has_value());
  EXPECT_EQ(r.options->src, "only-src");
  EXPECT_EQ(r.options->dst, "");
}

TEST(Cli, MissingSrcIsAUsageError) { expect_usage_error({}); }

TEST(Cli, EmptySrcIsAUsageError) { expect_usage_error({""}); }

TEST(Cli, TooManyPositionalsIsAUsageError) { expect_usage_error({"a", "b", "c"}, "pcopy: extra operand 'c'"); }

// As in GNU tools, a flag takes no value: `--dry-run=0` was taken for "no dry run", and copied.
TEST(Cli, AFlagGivenAValueIsAUsageError) {
  expect_usage_error({"--dry-run=0", "s", "d"}, "pcopy: option '--dry-run' takes no value");
  expect_usage_error({"--delete=no", "s", "d"}, "pcopy: option '--delete' takes no value");
  expect_usage_error({"--no-io-uring=1", "s", "d"});
  EXPECT_TRUE(parse_quiet({"--dry-run", "s", "d"}).options->dry_run);
}

TEST(Cli, ShortOptionsSetTheirFields) {
  CliResult r = parse_quiet({"-j", "3", "-a", "-L", "-x", "-u", "-n", "-v", "s", "d"});
  ASSERT_TRUE(r.options.has_value());
  const Options& o = *r.options;
  EXPECT_EQ(o.jobs, 3u);
  EXPECT_TRUE(o.archive);
  EXPECT_TRUE(o.dereference);
  EXPECT_TRUE(o.one_file_system);
  EXPECT_TRUE(o.update);
  EXPECT_TRUE(o.dry_run);
  EXPECT_TRUE(o.verbose);
}

TEST(Cli, CombinedShortFlags) {
  CliResult r = parse_quiet({"-aux", "s", "d"});
  ASSERT_TRUE(r.options.has_value());
  EXPECT_TRUE(r.options->archive);
  EXPECT_TRUE(r.options->update);
  EXPECT_TRUE(r.options->one_file_system);
}

TEST(Cli, LongOptionsSetTheirFields) {
  CliResult r = parse_quiet({"--jobs", "16", "--archive", "--dereference", "--one-file-system", "--update",
                             "--checksum", "--ignore-existing", "--delete", "--dry-run", "--verify", "--fsync",
                             "--reflink=never", "--inplace", "--progress=always", "--json", "--manifest",
                             "out.jsonl", "--fail-fast", "s", "d"});
  ASSERT_TRUE(r.options.has_value());
  const Options& o = *r.options;
  EXPECT_EQ(o.jobs, 16u);
  EXPECT_TRUE(o.archive);
  EXPECT_TRUE(o.dereference);
  EXPECT_TRUE(o.one_file_system);
  EXPECT_TRUE(o.update);
  EXPECT_TRUE(o.checksum);
  EXPECT_TRUE(o.ignore_existing);
  EXPECT_TRUE(o.delete_extraneous);
  EXPECT_TRUE(o.dry_run);
  EXPECT_TRUE(o.verify);
  EXPECT_TRUE(o.fsync);
  EXPECT_EQ(o.reflink, ReflinkMode::Never);
  EXPECT_TRUE(o.inplace);
  EXPECT_EQ(o.progress, ProgressMode::Always);
  EXPECT_TRUE(o.json);
  EXPECT_EQ(o.manifest, "out.jsonl");
  EXPECT_TRUE(o.fail_fast);
  EXPECT_EQ(o.src, "s");
  EXPECT_EQ(o.dst, "d");
}

TEST(Cli, NoClobberIsAnAliasOfIgnoreExisting) {
  CliResult r = parse_quiet({"--no-clobber", "s", "d"});
  ASSERT_TRUE(r.options.has_value());
  EXPECT_TRUE(r.options->ignore_existing);
}

TEST(Cli, ChecksumImpliesUpdate) {
  CliResult r = parse_quiet({"--checksum", "s", "d"});
  ASSERT_TRUE(r.options.has_value());
  EXPECT_TRUE(r.options->checksum);
  EXPECT_TRUE(r.options->update);
}

TEST(Cli, QuietWinsOverVerbose) {
  CliResult r = parse_quiet({"-q", "-v", "s", "d"});
  ASSERT_TRUE(r.options.has_value());
  EXPECT_TRUE(r.options->quiet);
  EXPECT_FALSE(r.options->verbose);
  r = parse_quiet({"--quiet", "s"});
  ASSERT_TRUE(r.options.has_value());
  EXPECT_TRUE(r.options->quiet);
}

TEST(Cli, EveryProgressAndReflinkValueIsAccepted) {
  const std::pair<const char*, ProgressMode> progress[] = {
      {"auto", ProgressMode::Auto}, {"always", ProgressMode::Always}, {"never", ProgressMode::Never}};
  for (auto [text, mode] : progress) {
    CliResult r = parse_quiet({std::string("--progress=") + text, "s"});
    ASSERT_TRUE(r.options.has_value()) << text;
    EXPECT_EQ(r.options->progress, mode) << text;
    r = parse_quiet({"--progress", text, "s"});
    ASSERT_TRUE(r.options.has_value()) << text;
    EXPECT_EQ(r.options->progress, mode) << text;
  }
  const std::pair<const char*, ReflinkMode> reflink[] = {
      {"auto", ReflinkMode::Auto}, {"always", ReflinkMode::Always}, {"never", ReflinkMode::Never}};
  for (auto [text, mode] : reflink) {
    CliResult r = parse_quiet({std::string("--reflink=") + text, "s"});
    ASSERT_TRUE(r.options.has_value()) << text;
    EXPECT_EQ(r.options->reflink, mode) << text;
  }
}

TEST(Cli, JobsAtTheLimitsAreAccepted) {
  for (const char* n : {"1", "1024"}) {
    CliResult r = parse_quiet({"-j", n, "s", "d"});
    ASSERT_TRUE(r.options.has_value()) << n;
    EXPECT_EQ(r.options->jobs, unsigned(std::stoul(n)));
  }
  CliResult r = parse_quiet({"--jobs=7", "s"});
  ASSERT_TRUE(r.options.has_value());
  EXPECT_EQ(r.options->jobs, 7u);
}

// "010" is ten workers, as make -j and xargs -P read it; the parser had read it as octal 8, and
// refused "08" with its own "Could not convert".
TEST(Cli, JobsAreDecimalWithLeadingZeros) {
  for (const char* n : {"010", "08", "0001"}) {
    CliResult r = parse_quiet({"-j", n, "s", "d"});
    ASSERT_TRUE(r.options.has_value()) << n;
    EXPECT_EQ(r.options->jobs, unsigned(std::stoul(n))) << n;
  }
}

// An option given an empty value after '=' took the next argument as its value: `--manifest= notes.txt
// DST` wrote the manifest over notes.txt and copied DST beside itself, exit 0; `--exclude="$X"` with X
// unset made SRC's copy go into DST-copy. Given empty, the value is empty: an empty manifest name is
// refused (as an empty DST is), an empty pattern matches nothing, an empty number is no number.
TEST(Cli, AnOptionGivenAnEmptyValueAfterAnEqualsSignTakesNoOtherArgument) {
  expect_usage_error({"--manifest=", "notes.txt", "dst"}, "pcopy: --manifest: FILE must not be empty");
  expect_usage_error({"--manifest", "", "s", "d"}, "pcopy: --manifest: FILE must not be empty");
  expect_usage_error({"--jobs=", "s", "d"}, "pcopy: --jobs: expects a number of workers from 1 to 1024, not ''");
  expect_usage_error({"--progress=", "s", "d"});
  expect_usage_error({"--reflink=", "s", "d"});
  expect_usage_error({"--exclude-from=", "s", "d"}, "pcopy: --exclude-from: cannot read '': No such file or directory");
  for (const char* option : {"--exclude=", "--include="}) {
    CliResult r = parse_quiet({option, "home", "backup/home"});
    ASSERT_TRUE(r.options.has_value()) << option;
    EXPECT_EQ(r.options->src, "home") << option;
    EXPECT_EQ(r.options->dst, "backup/home") << option;
    ASSERT_EQ(r.options->filters.size(), 1u) << option;
    EXPECT_EQ(r.options->filters[0].pattern, "") << option;
  }
  CliResult r = parse_quiet({"s", "d", "--", "--manifest="});  // after "--", an operand
  EXPECT_EQ(r.exit_status, 2);
}

// Options are read as getopt_long reads them (cp, rsync): an option's value is what follows its '='
// or letter, else the next argument whatever it looks like; "-4" and the "1" of "-q1" are unknown
// options, not operands (CLI11 took them for operands: `pcopy -q1 src` copied a directory "-1"
// into src, overwriting its files); after "--" everything is an operand.
TEST(Cli, OptionsAreReadAsGetoptReadsThem) {
  expect_usage_error({"s", "-4"}, "pcopy: invalid option -- '4'");
  expect_usage_error({"-q1", "s"}, "pcopy: invalid option -- '1'");
  expect_usage_error({"-1.5e3", "s", "d"}, "pcopy: invalid option -- '1'");
  expect_usage_error({"-n=1", "s", "d"}, "pcopy: invalid option -- '='");
  // "--" as --exclude's value ends no options: the empty --manifest still takes nothing more.
  expect_usage_error({"--exclude", "--", "--manifest=", "notes.txt", "s", "d"}, "pcopy: extra operand 'd'");
  expect_usage_error({"--", "s", "d", "-q"}, "pcopy: extra operand '-q'");
  expect_usage_error({"--delete=", "s", "d"}, "pcopy: option '--delete' takes no value");
  expect_usage_error({"--version=1"}, "pcopy: option '--version' takes no value");
  expect_usage_error({"s", "--exclude"}, "pcopy: option '--exclude' requires an argument");
  expect_usage_error({"s", "-j"}, "pcopy: option requires an argument -- 'j'");
  expect_usage_error({"--reflink=", "s"}, "pcopy: --reflink: expects auto, always or never, not ''");
  expect_usage_error({"--excl=x", "s"}, "pcopy: option '--excl' is ambiguous; possibilities: '--exclude' '--exclude-from'");
  expect_usage_error({"--frob=x", "s"}, "pcopy: unrecognized option '--frob=x'");
  expect_usage_error({"--=x", "s"}, "pcopy: unrecognized option '--=x'");
  expect_usage_error({"--"}, "pcopy: SRC is required");

  CliResult r = parse_quiet({"--exclude", "-q", "--include=--x", "s", "d"});
  ASSERT_TRUE(r.options.has_value());
  EXPECT_FALSE(r.options->quiet);
  ASSERT_EQ(r.options->filters.size(), 2u);
  EXPECT_EQ(r.options->filters[0].pattern, "-q");
  EXPECT_EQ(r.options->filters[1].pattern, "--x");
  r = parse_quiet({"--manifest", "--json", "s", "d"});
  ASSERT_TRUE(r.options.has_value());
  EXPECT_EQ(r.options->manifest, "--json");
  EXPECT_FALSE(r.options->json);
  r = parse_quiet({"-qj", "3", "--", "-q", "-"});
  ASSERT_TRUE(r.options.has_value());
  EXPECT_TRUE(r.options->quiet);
  EXPECT_EQ(r.options->jobs, 3u);
  EXPECT_EQ(r.options->src, "-q");
  EXPECT_EQ(r.options->dst, "-");
  // A long option may be shortened to any beginning that is its alone, as getopt_long allows.
  r = parse_quiet({"--del", "--dry", "--exclude-f=/dev/null", "--prog", "never", "s", "d"});
  ASSERT_TRUE(r.options.has_value());
  EXPECT_TRUE(r.options->delete_extraneous);
  EXPECT_TRUE(r.options->dry_run);
  EXPECT_EQ(r.options->progress, ProgressMode::Never);
  expect_usage_error({"--d", "s", "d"}, "pcopy: option '--d' is ambiguous; possibilities: '--dereference' '--delete' '--dry-run'");
  // --help and --version before any error are what is asked (as cp reads them); after one, not.
  for (std::vector<std::string> asked : {std::vector<std::string>{"--help", "--bogus"}, {"--version", "x", "y", "z"},
                                          {"-h", "--jobs", "x"}, {"--he"}}) {
    testing::internal::CaptureStdout();
    CliResult info = parse(asked);
    std::string text = testing::internal::GetCapturedStdout();
    EXPECT_EQ(info.exit_status, 0) << asked[0];
    EXPECT_FALSE(info.options.has_value()) << asked[0];
    EXPECT_NE(text.find("pcopy"), std::string::npos) << asked[0];
  }
  expect_usage_error({"--bogus", "--help"}, "pcopy: unrecognized option '--bogus'");
  r = parse_quiet({"-aj2", "s", "d", "-n"});  // options may follow the operands
  ASSERT_TRUE(r.options.has_value());
  EXPECT_TRUE(r.options->archive);
  EXPECT_TRUE(r.options->dry_run);
  EXPECT_EQ(r.options->jobs, 2u);

  // A refused command line with --json gets its report; --json as another option's value is no --json.
  testing::internal::CaptureStdout();
  testing::internal::CaptureStderr();
  r = parse({"--json", "--bogus", "s"});
  std::string out = testing::internal::GetCapturedStdout();
  testing::internal::GetCapturedStderr();
  EXPECT_EQ(r.exit_status, 2);
  EXPECT_NE(out.find("\"exit_status\": 2"), std::string::npos) << out;
  EXPECT_NE(out.find("unrecognized option '--bogus'"), std::string::npos) << out;
  testing::internal::CaptureStdout();
  testing::internal::CaptureStderr();
  r = parse({"--manifest", "--json", "--bogus", "s"});
  out = testing::internal::GetCapturedStdout();
  testing::internal::GetCapturedStderr();
  EXPECT_EQ(r.exit_status, 2);
  EXPECT_EQ(out, "");
}

TEST(Cli, JobsZeroIsAUsageError) { expect_usage_error({"-j", "0", "s", "d"}); }

TEST(Cli, JobsAboveTheLimitIsAUsageError) {
  expect_usage_error({"-j", "1025", "s", "d"});
  expect_usage_error({"-j", "100000", "s", "d"});
  expect_usage_error({"-j", "4294967297", "s", "d"});  // would wrap to 1 as a 32-bit value
}

TEST(Cli, JobsNotANumberIsAUsageError) {
  expect_usage_error({"-j", "abc", "s", "d"});
  expect_usage_error({"-j", "4x", "s", "d"});
  expect_usage_error({"--jobs=", "s", "d"});
}

TEST(Cli, NegativeJobsIsAUsageError) { expect_usage_error({"--jobs=-1", "s", "d"}); }

TEST(Cli, JobsThatIsNoNumberIsRefusedSayingSo) {
  testing::internal::CaptureStderr();
  CliResult r = parse({"-j", "abc", "s", "d"});
  std::string err = testing::internal::GetCapturedStderr();
  EXPECT_EQ(r.exit_status, 2);
  EXPECT_NE(err.find("pcopy: --jobs: expects a number of workers from 1 to 1024, not 'abc'\n"), std::string::npos) << err;
}

// As with cp and rsync, an option given twice takes the last value: a wrapper script appending
// -j8 to a configured -j4 gets 8 workers. Repeatable options add up.
TEST(Cli, AnOptionGivenAgainTakesTheLastValue) {
  CliResult r = parse_quiet({"-j4", "s", "d", "-j8", "--progress=never", "--progress=always", "--reflink=never",
                             "--reflink=auto", "--manifest", "a", "--manifest", "b", "--exclude", "x", "--exclude", "y"});
  ASSERT_TRUE(r.options.has_value());
  EXPECT_EQ(r.options->jobs, 8u);
  EXPECT_EQ(r.options->progress, ProgressMode::Always);
  EXPECT_EQ(r.options->reflink, ReflinkMode::Auto);
  EXPECT_EQ(r.options->manifest, "b");
  EXPECT_EQ(r.options->filters.size(), 2u);
}

TEST(Cli, UnknownOptionIsAUsageError) {
  expect_usage_error({"--frobnicate", "s", "d"}, "pcopy: unrecognized option '--frobnicate'");
  expect_usage_error({"-Z", "s", "d"}, "pcopy: invalid option -- 'Z'");
  // Without operands too: a user guessing -V for the version was told "SRC is required".
  expect_usage_error({"-V"}, "pcopy: invalid option -- 'V'");
  expect_usage_error({"--verison"}, "pcopy: unrecognized option '--verison'");
  expect_usage_error({"s", "--bogus"}, "pcopy: unrecognized option '--bogus'");
  expect_usage_error({}, "pcopy: SRC is required");
}

// What the user typed is shown escaped, as paths are: one line, no escape sequence reaching the
// terminal (as GNU cp quotes it).
TEST(Cli, UsageErrorsShowWhatWasTypedEscaped) {
  expect_usage_error({"s", "d", "x\x1b[2Jy"}, "pcopy: extra operand 'x\\x1b[2Jy'");
  expect_usage_error({"--\x1b]0;t\a", "s", "d"}, "pcopy: unrecognized option '--\\x1b]0;t\\x07'");
  // C1 controls (CSI is U+009B) and bytes that are no UTF-8 too; other characters stay.
  expect_usage_error({"s", "d", "\xc2\x9b" "2J"}, "pcopy: extra operand '\\xc2\\x9b2J'");
  expect_usage_error({"s", "d", "\x9b" "31m"}, "pcopy: extra operand '\\x9b31m'");
  expect_usage_error({"s", "d", "caf\xc3\xa9"}, "pcopy: extra operand 'caf\xc3\xa9'");
  expect_usage_error({"s", "d", "\xe0\x82\x9b"}, "pcopy: extra operand '\\xe0\\x82\\x9b'");  // overlong U+009B
  expect_usage_error({"s", "d", "\xed\xa0\x80"}, "pcopy: extra operand '\\xed\\xa0\\x80'");  // a surrogate
  expect_usage_error({"s", "d", "\xf4\x90\x80\x80"}, "pcopy: extra operand '\\xf4\\x90\\x80\\x80'");
  expect_usage_error({"s", "d", "\xf0\x9f\x98\x80!"}, "pcopy: extra operand '\xf0\x9f\x98\x80!'");  // an emoji
  testing::internal::CaptureStderr();
  CliResult r = parse({"--progress=a\nb", "s", "d"});
  std::string err = testing::internal::GetCapturedStderr();
  EXPECT_EQ(r.exit_status, 2);
  EXPECT_EQ(err.substr(0, err.find('\n')), "pcopy: --progress: expects auto, always or never, not 'a\\nb'") << err;
}

TEST(Cli, BadProgressValueIsAUsageError) {
  expect_usage_error({"--progress=bogus", "s", "d"}, "pcopy: --progress: expects auto, always or never, not 'bogus'");
  expect_usage_error({"--progress", "", "s", "d"}, "pcopy: --progress: expects auto, always or never, not ''");
  // The value forgotten: the next argument taken for it is named as the value.
  expect_usage_error({"--progress", "src", "d"}, "pcopy: --progress: expects auto, always or never, not 'src'");
  expect_usage_error({"--reflink", "bogus", "s"}, "pcopy: --reflink: expects auto, always or never, not 'bogus'");
}

TEST(Cli, BadReflinkValueIsAUsageError) { expect_usage_error({"--reflink=sometimes", "s", "d"}); }

TEST(Cli, HelpExitsZeroWithExamplesOnStdout) {
  testing::internal::CaptureStdout();
  testing::internal::CaptureStderr();
  CliResult r = parse({"--help"});
  std::string out = testing::internal::GetCapturedStdout();
  testing::internal::GetCapturedStderr();
  EXPECT_EQ(r.exit_status, 0);
  EXPECT_FALSE(r.options.has_value());
  EXPECT_NE(out.find("Examples"), std::string::npos) << out;
  for (const char* opt : {"--jobs", "--archive", "--dereference", "--one-file-system", "--update", "--checksum",
                          "--ignore-existing", "--delete", "--exclude", "--include", "--exclude-from",
                          "--dry-run", "--verify", "--fsync", "--reflink", "--inplace", "--progress", "--quiet",
                          "--verbose", "--json", "--manifest", "--fail-fast", "--version"})
    EXPECT_NE(out.find(opt), std::string::npos) << "help does not mention " << opt;
}

// Within 80 columns, as GNU tools' help: CLI11 wrote each description on one line, up to 115.
TEST(Cli, HelpFitsIn80Columns) {
  testing::internal::CaptureStdout();
  CliResult r = parse({"--help"});
  std::string out = testing::internal::GetCapturedStdout();
  EXPECT_EQ(r.exit_status, 0);
  for (std::string_view rest = out; !rest.empty();) {
    std::string_view line = rest.substr(0, rest.find('\n'));
    rest.remove_prefix(std::min(rest.size(), line.size() + 1));
    EXPECT_LE(line.size(), 80u) << line;
  }
  // A wrapped description goes on in its column.
  EXPECT_NE(out.find("  --exclude-from FILE         Read patterns from FILE (- for stdin), one per\n"
                     "                              line: excludes, or includes as \"+ PAT\""),
            std::string::npos)
      << out;
}

// Each option is listed as it is typed: "--no-io-uring{false}" read as if it took a value.
TEST(Cli, HelpListsTheNegativeFlagsWithoutADefault) {
  testing::internal::CaptureStdout();
  CliResult r = parse({"--help"});
  std::string out = testing::internal::GetCapturedStdout();
  EXPECT_EQ(r.exit_status, 0);
  EXPECT_NE(out.find("  --no-copy-file-range "), std::string::npos) << out;
  EXPECT_NE(out.find("  --no-io-uring "), std::string::npos) << out;
  EXPECT_EQ(out.find("{false}"), std::string::npos) << out;
  for (const char* flag : {"--no-copy-file-range", "--no-io-uring"}) {
    CliResult set = parse_quiet({flag, "s"});
    ASSERT_TRUE(set.options.has_value()) << flag;
    EXPECT_EQ(set.options->copy_file_range, std::string(flag) != "--no-copy-file-range") << flag;
    EXPECT_EQ(set.options->io_uring, std::string(flag) != "--no-io-uring") << flag;
  }
}

TEST(Cli, HelpWinsOverOtherwiseMissingArguments) {
  testing::internal::CaptureStdout();
  CliResult r = parse({"-h"});
  testing::internal::GetCapturedStdout();
  EXPECT_EQ(r.exit_status, 0);
  EXPECT_FALSE(r.options.has_value());
}

TEST(Cli, VersionExitsZeroAndNamesTheProgram) {
  testing::internal::CaptureStdout();
  CliResult r = parse({"--version"});
  std::string out = testing::internal::GetCapturedStdout();
  EXPECT_EQ(r.exit_status, 0);
  EXPECT_FALSE(r.options.has_value());
  EXPECT_EQ(out.rfind("pcopy ", 0), 0u) << out;
  EXPECT_EQ(version_string().rfind("pcopy " PCOPY_VERSION, 0), 0u) << version_string();
}

TEST(Cli, ExcludeAndIncludeKeepTheirCommandLineOrder) {
  CliResult r = parse_quiet({"--exclude", "*.o", "--include", "keep.o", "--exclude=build/", "s", "--include",
                             "src/*.c", "d", "--exclude", "/tmp"});
  ASSERT_TRUE(r.options.has_value());
  std::vector<RuleView> want{
      {false, "*.o", false, false},
      {true, "keep.o", false, false},
      {false, "build", true, false},
      {true, "src/*.c", false, true},
      {false, "tmp", false, true},
  };
  EXPECT_EQ(view(r.options->filters.rules()), want);
  EXPECT_EQ(r.options->src, "s");
  EXPECT_EQ(r.options->dst, "d");
}

TEST(Cli, ExcludeFromFileRulesGoWhereTheOptionStands) {
  pcopy_test::TempDir tmp;
  std::string file = tmp / "filters";
  pcopy_test::write_file(file, "# comment\n\n*.tmp\n+ important.tmp\n- cache/\n; another comment\nlogs/*.gz\n");
  CliResult r = parse_quiet({"--include", "first", "--exclude-from", file, "--exclude", "last", "s", "d"});
  ASSERT_TRUE(r.options.has_value());
  std::vector<RuleView> want{
      {true, "first", false, false},
      {false, "*.tmp", false, false},
      {true, "important.tmp", false, false},
      {false, "cache", true, false},
      {false, "logs/*.gz", false, true},
      {false, "last", false, false},
  };
  EXPECT_EQ(view(r.options->filters.rules()), want);
}

// A file written on Windows (or checked out with core.autocrlf): its patterns ended in '\r' and
// matched nothing, so what it meant to keep out was copied.
TEST(Cli, ExcludeFromFileWithWindowsLineEndsGivesThePatterns) {
  pcopy_test::TempDir tmp;
  std::string file = tmp / "filters";
  pcopy_test::write_file(file, "# keys\r\nsecret.key\r\n\r\n.git/\r\n+ keep\r\n");
  CliResult r = parse_quiet({"--exclude-from", file, "s", "d"});
  ASSERT_TRUE(r.options.has_value());
  std::vector<RuleView> want{
      {false, "secret.key", false, false},
      {false, ".git", true, false},
      {true, "keep", false, false},
  };
  EXPECT_EQ(view(r.options->filters.rules()), want);
}

// A '\r' alone (an old Mac's line end, or "\r\r\n") stayed in the pattern, which then matched
// nothing; rsync ends a line there (I12).
TEST(Cli, ExcludeFromFileEndsALineAtEveryCarriageReturn) {
  pcopy_test::TempDir tmp;
  std::string file = tmp / "filters";
  pcopy_test::write_file(file, "local.conf\r\r\nsecret.key\r+ keep\r");
  CliResult r = parse_quiet({"--exclude-from", file, "s", "d"});
  ASSERT_TRUE(r.options.has_value());
  std::vector<RuleView> want{
      {false, "local.conf", false, false},
      {false, "secret.key", false, false},
      {true, "keep", false, false},
  };
  EXPECT_EQ(view(r.options->filters.rules()), want);
}

// "+ " or "- " with nothing after it was an exclude of a file named so; rsync refuses it.
TEST(Cli, ExcludeFromRuleWithoutAPatternIsAUsageError) {
  pcopy_test::TempDir tmp;
  std::string file = tmp / "filters";
  pcopy_test::write_file(file, "# the pattern was empty\n+ \n");
  expect_usage_error({"--exclude-from", file, "s", "d"},
                     "pcopy: --exclude-from: a rule without a pattern: '+ ' (line 2 of '" + file + "')");
}

TEST(Cli, ExcludeFromMissingFileIsAUsageError) {
  pcopy_test::TempDir tmp;
  expect_usage_error({"--exclude-from", tmp / "does-not-exist", "s", "d"});
}

TEST(Cli, DoubleDashLetsSrcStartWithADash) {
  CliResult r = parse_quiet({"-j", "2", "--", "-weird-src", "--weird-dst"});
  ASSERT_TRUE(r.options.has_value());
  EXPECT_EQ(r.options->src, "-weird-src");
  EXPECT_EQ(r.options->dst, "--weird-dst");
  EXPECT_EQ(r.options->jobs, 2u);
}

TEST(Cli, OptionsMayFollowThePositionals) {
  CliResult r = parse_quiet({"s", "d", "-j", "5", "--json"});
  ASSERT_TRUE(r.options.has_value());
  EXPECT_EQ(r.options->jobs, 5u);
  EXPECT_TRUE(r.options->json);
}

TEST(Cli, ArbitraryBytesInPathsArePassedThrough) {
  std::string src = "dir with space/\xff\xfe/\xe6\x97\xa5";
  std::string dst = "line\nbreak";
  CliResult r = parse_quiet({src, dst});
  ASSERT_TRUE(r.options.has_value());
  EXPECT_EQ(r.options->src, src);
  EXPECT_EQ(r.options->dst, dst);
}
