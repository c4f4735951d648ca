// Packaging checks (issue 7): the man page source and the shell completions must follow the options
// `pcopy --help` lists, and the bash completion, driven in a bash subprocess, completes options and
// their values. The repository's files are found from this file's own path.

#include <gtest/gtest.h>

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "harness.hpp"

namespace pcopy::test {
namespace {

namespace fs = std::filesystem;

// tests/e2e/packaging_test.cpp -> the repository root.
fs::path source_dir() {
  fs::path file = fs::absolute(fs::path(__FILE__));
  return file.parent_path().parent_path().parent_path();
}

std::string source_file(const std::string& rel) {
  fs::path path = source_dir() / rel;
  if (!fs::exists(path)) throw std::runtime_error("missing " + path.string());
  return read_file(path.string());
}

std::string help_text() {
  RunResult r = run_pcopy({"--help"});
  if (r.status != 0) throw std::runtime_error(fmt::format("pcopy --help exited {}: {}", r.status, r.err));
  return r.out;
}

std::set<std::string> long_options(const std::string& help) {
  std::set<std::string> options;
  static const std::regex re("--[a-z][a-z-]*");
  for (auto it = std::sregex_iterator(help.begin(), help.end(), re); it != std::sregex_iterator(); ++it)
    options.insert(it->str());
  return options;
}

// "-j" from "  -j,--jobs ..." lines.
std::set<std::string> short_options(const std::string& help) {
  std::set<std::string> options;
  static const std::regex re("(^|\n) +(-[A-Za-z]),--");
  for (auto it = std::sregex_iterator(help.begin(), help.end(), re); it != std::sregex_iterator(); ++it)
    options.insert(it->str(2));
  return options;
}

// `word` occurs in `text` not as part of a longer option name ("--exclude" inside "--exclude-from").
bool mentions(const std::string& text, const std::string& word) {
  auto part_of_name = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_'; };
  for (size_t pos = text.find(word); pos != std::string::npos; pos = text.find(word, pos + 1)) {
    bool before_ok = pos == 0 || !part_of_name(text[pos - 1]);
    size_t end = pos + word.size();
    bool after_ok = end == text.size() || !part_of_name(text[end]);
    if (before_ok && after_ok) return true;
  }
  return false;
}

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& s : items) {
    if (!out.empty()) out += ' ';
    out += '\'';
    out += s;
    out += '\'';
  }
  return "[" + out + "]";
}

// Runs the bash completion for pcopy on a command line given as COMP_WORDS (the last word is the one
// being completed, as bash splits it: "--progress=a" arrives as "--progress" "=" "a"), in `cwd`.
// Returns COMPREPLY, sorted.
std::vector<std::string> bash_complete(const std::vector<std::string>& words, const std::string& cwd = "/") {
  static const char* kScript = R"(
set -u
source "$1" || exit 3
cd "$2" || exit 4
shift 2
spec=$(complete -p pcopy) || exit 5
func=$(sed -n 's/.*-F \([^ ]*\).*/\1/p' <<<"$spec")
[ -n "$func" ] || exit 6
COMP_WORDS=("$@")
COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
COMP_LINE="${COMP_WORDS[*]}"
COMP_POINT=${#COMP_LINE}
COMPREPLY=()
prev=""
(( COMP_CWORD > 0 )) && prev=${COMP_WORDS[COMP_CWORD - 1]}
"$func" pcopy "${COMP_WORDS[COMP_CWORD]}" "$prev"
for reply in "${COMPREPLY[@]}"; do printf '%s\n' "$reply"; done
)";
  std::vector<std::string> argv = {"bash", "--norc", "--noprofile", "-c", kScript, "bash",
                                   (source_dir() / "completions/pcopy.bash").string(), cwd};
  argv.insert(argv.end(), words.begin(), words.end());
  RunOptions options;
  options.timeout_s = 60;
  RunResult r = run(argv, options);
  if (r.status != 0) throw std::runtime_error(fmt::format("bash completion exited {}: {}", r.status, r.err));
  std::vector<std::string> replies;
  size_t start = 0;
  while (start < r.out.size()) {
    size_t end = std::min(r.out.find('\n', start), r.out.size());
    replies.push_back(r.out.substr(start, end - start));
    start = end + 1;
  }
  std::sort(replies.begin(), replies.end());
  return replies;
}

using Replies = std::vector<std::string>;

TEST(Packaging, HelpListsTheOptions) {
  std::set<std::string> options = long_options(help_text());
  // The parse works: a sample of what SPEC.md promises is there.
  for (const char* opt : {"--help", "--version", "--jobs", "--progress", "--reflink", "--exclude-from", "--manifest"})
    EXPECT_TRUE(options.count(opt)) << opt << " not found in pcopy --help";
}

TEST(Packaging, ManPageDocumentsEveryHelpOption) {
  std::string help = help_text();
  std::string man = source_file("doc/pcopy.1.scd");
  for (const std::string& opt : long_options(help)) EXPECT_TRUE(mentions(man, opt)) << opt << " is not in doc/pcopy.1.scd";
  std::set<std::string> shorts = short_options(help);
  EXPECT_TRUE(shorts.count("-j")) << "short options not parsed from --help";
  for (const std::string& opt : shorts)
    EXPECT_NE(man.find("*" + opt + "*"), std::string::npos) << opt << " is not in doc/pcopy.1.scd";
  // Values, exit statuses and the sections issue 7 asks for.
  for (const char* text : {"*auto*", "*always*", "*never*", "# SYNOPSIS", "# DESCRIPTION", "# OPTIONS",
                           "# EXIT STATUS", "# ENVIRONMENT", "*NO_COLOR*", "*TMPDIR*", "# EXAMPLES", "# SEE ALSO",
                           "*cp*(1)", "*rsync*(1)", "*130*", "*143*"})
    EXPECT_NE(man.find(text), std::string::npos) << "doc/pcopy.1.scd lacks " << text;
}

TEST(Packaging, CompletionsOfferEveryHelpOption) {
  std::string help = help_text();
  Replies all = bash_complete({"pcopy", "--"});
  std::string zsh = source_file("completions/_pcopy");
  for (const std::string& opt : long_options(help)) {
    bool offered = std::count(all.begin(), all.end(), opt) || std::count(all.begin(), all.end(), opt + "=");
    EXPECT_TRUE(offered) << "bash does not complete " << opt << "; it offers " << join(all);
    EXPECT_TRUE(mentions(zsh, opt)) << opt << " is not in completions/_pcopy";
  }
  Replies dash = bash_complete({"pcopy", "-"});
  for (const std::string& opt : short_options(help))
    EXPECT_TRUE(std::count(dash.begin(), dash.end(), opt)) << "bash does not complete " << opt;
}

TEST(Packaging, BashCompletesOptionNames) {
  EXPECT_EQ(bash_complete({"pcopy", "--pro"}), Replies{"--progress="});
  EXPECT_EQ(bash_complete({"pcopy", "--ref"}), Replies{"--reflink="});
  EXPECT_EQ(bash_complete({"pcopy", "--exclude-f"}), Replies{"--exclude-from"});
  EXPECT_EQ(bash_complete({"pcopy", "-a", "--dry"}), (Replies{"--dry-run"}));
}

TEST(Packaging, BashCompletesOptionValues) {
  // `pcopy --progress=a<TAB>`: '=' is in COMP_WORDBREAKS, so bash passes "--progress" "=" "a".
  EXPECT_EQ(bash_complete({"pcopy", "--progress", "=", "a"}), (Replies{"always", "auto"}));
  EXPECT_EQ(bash_complete({"pcopy", "--progress", "="}), (Replies{"always", "auto", "never"}));
  EXPECT_EQ(bash_complete({"pcopy", "--reflink", "=", ""}), (Replies{"always", "auto", "never"}));
  EXPECT_EQ(bash_complete({"pcopy", "--reflink", "=", "n"}), Replies{"never"});
  // The value as a separate word, and the whole "--opt=value" as one word ('=' not a word break).
  EXPECT_EQ(bash_complete({"pcopy", "--progress", "ne"}), Replies{"never"});
  EXPECT_EQ(bash_complete({"pcopy", "--progress=a"}), (Replies{"--progress=always", "--progress=auto"}));
  // The words read as pcopy reads them: "--progress" as --exclude's value takes no value itself,
  // "--" as its value ends no options, and -j ending a group of short options takes the next word.
  EXPECT_EQ(bash_complete({"pcopy", "--exclude", "--progress", "ne"}), Replies{});
  EXPECT_EQ(bash_complete({"pcopy", "--exclude", "--", "--ver"}), (Replies{"--verbose", "--verify", "--version"}));
  EXPECT_EQ(bash_complete({"pcopy", "-qj", ""}), Replies{});
  EXPECT_EQ(bash_complete({"pcopy", "--progress", "=", "never", "--ref"}), Replies{"--reflink="});
  // A long option shortened to a beginning that is its alone, as pcopy reads it: --prog is
  // --progress, and --inc's value is the next word; an ambiguous one (--ex) waits for none.
  EXPECT_EQ(bash_complete({"pcopy", "--prog", "ne"}), Replies{"never"});
  EXPECT_EQ(bash_complete({"pcopy", "--refl", "=", ""}), (Replies{"always", "auto", "never"}));
  EXPECT_EQ(bash_complete({"pcopy", "--prog=a"}), (Replies{"--prog=always", "--prog=auto"}));
  EXPECT_EQ(bash_complete({"pcopy", "--inc", "--pro"}), Replies{});
  EXPECT_EQ(bash_complete({"pcopy", "--ex", "--pro"}), Replies{"--progress="});
  EXPECT_EQ(bash_complete({"pcopy", "--exclude", "--pro"}), Replies{}) << "--exclude is itself, not --exclude-from";
}

TEST(Packaging, BashCompletesDirectoriesAndFiles) {
  TempDir tmp;
  make_dir(tmp / "photos");
  make_dir(tmp / "pics 2");
  write_file(tmp / "plan.txt", "x");
  // SRC and DST: a tree or a single file (`pcopy big.iso /mnt/usb/`), so files too.
  EXPECT_EQ(bash_complete({"pcopy", "p"}, tmp.path()), (Replies{"photos", "pics 2", "plan.txt"}));
  EXPECT_EQ(bash_complete({"pcopy", "-u", "photos", "pi"}, tmp.path()), Replies{"pics 2"});
  EXPECT_EQ(bash_complete({"pcopy", "--", "p"}, tmp.path()), (Replies{"photos", "pics 2", "plan.txt"}));
  EXPECT_EQ(bash_complete({"pcopy", "pl"}, tmp.path()), Replies{"plan.txt"});
  // --exclude-from and --manifest take files.
  EXPECT_EQ(bash_complete({"pcopy", "--exclude-from", "pl"}, tmp.path()), Replies{"plan.txt"});
  EXPECT_EQ(bash_complete({"pcopy", "--manifest", "=", "pl"}, tmp.path()), Replies{"plan.txt"});
}

}  // namespace
}  // namespace pcopy::test
