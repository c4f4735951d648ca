#include "pcopy/filter.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <random>
#include <string>
#include <vector>

using namespace pcopy;

namespace {

std::vector<FilterRule> rules(std::initializer_list<std::pair<bool, const char*>> list) {
  std::vector<FilterRule> out;
  for (auto [include, pat] : list) out.push_back(make_rule(include, pat));
  return out;
}

FilterRule exclude(const char* p) { return make_rule(false, p); }
FilterRule include(const char* p) { return make_rule(true, p); }

}  // namespace

// ---- glob_match -------------------------------------------------------------------------------

TEST(GlobMatch, LiteralPatternMatchesOnlyItself) {
  EXPECT_TRUE(glob_match("abc", "abc"));
  EXPECT_FALSE(glob_match("abc", "abcd"));
  EXPECT_FALSE(glob_match("abc", "ab"));
  EXPECT_FALSE(glob_match("abc", "ABC"));
  EXPECT_TRUE(glob_match("", ""));
  EXPECT_FALSE(glob_match("", "a"));
}

TEST(GlobMatch, StarMatchesAnyRunOfCharactersIncludingNone) {
  EXPECT_TRUE(glob_match("*", ""));
  EXPECT_TRUE(glob_match("*", "anything"));
  EXPECT_TRUE(glob_match("*.o", "main.o"));
  EXPECT_TRUE(glob_match("*.o", ".o"));
  EXPECT_FALSE(glob_match("*.o", "main.c"));
  EXPECT_FALSE(glob_match("*.o", "main.o.bak"));
  EXPECT_TRUE(glob_match("a*b*c", "abc"));
  EXPECT_TRUE(glob_match("a*b*c", "a-x-b-y-c"));
  EXPECT_FALSE(glob_match("a*b*c", "a-x-c-y-b"));
  EXPECT_TRUE(glob_match("*x*", "x"));
}

TEST(GlobMatch, StarDoesNotCrossSlash) {
  EXPECT_FALSE(glob_match("*", "a/b"));
  EXPECT_FALSE(glob_match("*.o", "dir/main.o"));
  EXPECT_TRUE(glob_match("*/*.o", "dir/main.o"));
  EXPECT_FALSE(glob_match("*/*.o", "a/b/main.o"));
  EXPECT_FALSE(glob_match("a*", "a/"));
}

TEST(GlobMatch, DoubleStarCrossesSlash) {
  EXPECT_TRUE(glob_match("**", "a/b/c"));
  EXPECT_TRUE(glob_match("**", ""));
  EXPECT_TRUE(glob_match("**.o", "a/b/main.o"));
  EXPECT_TRUE(glob_match("a/**", "a/b/c/d"));
  EXPECT_FALSE(glob_match("a/**", "b/c"));
  EXPECT_TRUE(glob_match("**/main.o", "x/y/main.o"));
  EXPECT_FALSE(glob_match("**/main.o", "x/y/main.c"));
}

TEST(GlobMatch, DoubleStarSlashMatchesZeroDirectories) {
  EXPECT_TRUE(glob_match("a/**/b", "a/b"));
  EXPECT_TRUE(glob_match("a/**/b", "a/x/b"));
  EXPECT_TRUE(glob_match("a/**/b", "a/x/y/z/b"));
  EXPECT_FALSE(glob_match("a/**/b", "a/x/c"));
  EXPECT_FALSE(glob_match("a/**/b", "ab"));
  EXPECT_TRUE(glob_match("**/b", "b"));
}

// "**/" stands for whole directories, as in .gitignore: `**/box` is a component named box at any
// depth, never the end of a longer name (it matched `xbox`, `src/**/b` matched `src/ab`).
TEST(GlobMatch, DoubleStarSlashNeverMatchesPartOfAName) {
  EXPECT_FALSE(glob_match("**/box", "xbox"));
  EXPECT_FALSE(glob_match("**/box", "a/xbox"));
  EXPECT_TRUE(glob_match("**/box", "a/box"));
  EXPECT_FALSE(glob_match("src/**/b", "src/ab"));
  EXPECT_FALSE(glob_match("src/**/b", "src/deep/cb"));
  EXPECT_TRUE(glob_match("src/**/b", "src/deep/b"));
  EXPECT_FALSE(glob_match("**/cache", "notcache"));
  EXPECT_FALSE(glob_match("**/**/**/**/x", "d0/d1/d2_x"));
  EXPECT_TRUE(glob_match("**/**/**/**/x", "d0/d1/x"));
  EXPECT_TRUE(glob_match("**/x", "x"));
  EXPECT_TRUE(glob_match("**/*.o", "main.o"));
  EXPECT_TRUE(glob_match("**x", "abx"));  // no slash after it: any bytes, as before
}

// A path from a tree thousands of levels deep is a megabyte long: the matcher does not recurse
// per byte (it overflowed the stack: SIGSEGV) nor keep a table of pattern x path.
TEST(GlobMatch, AMegabytePathIsMatchedWithoutRecursion) {
  std::string path;
  while (path.size() < (1u << 20)) path += "d0123456789012345678901234567890123456789/";
  EXPECT_FALSE(glob_match("**/nomatch", path + "file"));
  EXPECT_TRUE(glob_match("**/file", path + "file"));
  EXPECT_TRUE(glob_match("d*/**/f?le", path + "file"));
}

TEST(GlobMatch, QuestionMarkMatchesExactlyOneCharacterButNotSlash) {
  EXPECT_TRUE(glob_match("?", "a"));
  EXPECT_FALSE(glob_match("?", ""));
  EXPECT_FALSE(glob_match("?", "ab"));
  EXPECT_TRUE(glob_match("a?c", "abc"));
  EXPECT_FALSE(glob_match("a?c", "a/c"));
  EXPECT_TRUE(glob_match("???", "\xff\xfe\x01"));
}

TEST(GlobMatch, BracketRangeMatchesOneCharacterInTheRange) {
  EXPECT_TRUE(glob_match("[a-z]", "a"));
  EXPECT_TRUE(glob_match("[a-z]", "m"));
  EXPECT_TRUE(glob_match("[a-z]", "z"));
  EXPECT_FALSE(glob_match("[a-z]", "A"));
  EXPECT_FALSE(glob_match("[a-z]", "0"));
  EXPECT_FALSE(glob_match("[a-z]", "ab"));
  EXPECT_TRUE(glob_match("file[0-9].txt", "file7.txt"));
  EXPECT_FALSE(glob_match("file[0-9].txt", "fileX.txt"));
  EXPECT_TRUE(glob_match("[abc]", "b"));
  EXPECT_FALSE(glob_match("[abc]", "d"));
  EXPECT_TRUE(glob_match("[a-cx-z]", "y"));
  EXPECT_FALSE(glob_match("[a-cx-z]", "m"));
}

TEST(GlobMatch, RangesEndAsRsyncReadsThem) {
  EXPECT_TRUE(glob_match("[d-a]", "d"));  // backwards: its start alone
  EXPECT_FALSE(glob_match("[d-a]", "b"));
  EXPECT_TRUE(glob_match("[a-\\d]", "c"));  // an escaped end
  EXPECT_FALSE(glob_match("[a-\\d]", "\\"));
  EXPECT_TRUE(glob_match("[[-\\]]", "\\"));
  EXPECT_TRUE(glob_match("[[-\\]]", "]"));
  EXPECT_FALSE(glob_match("[[-\\]]", "[]"));
}

TEST(GlobMatch, NegatedBracketMatchesAnythingElseButSlash) {
  EXPECT_FALSE(glob_match("[!x]", "x"));
  EXPECT_TRUE(glob_match("[!x]", "y"));
  EXPECT_TRUE(glob_match("[^x]", "y"));
  EXPECT_FALSE(glob_match("[^x]", "x"));
  EXPECT_FALSE(glob_match("[!x]", "/"));
  EXPECT_FALSE(glob_match("[!a-z]", "q"));
  EXPECT_TRUE(glob_match("[!a-z]", "Q"));
  EXPECT_FALSE(glob_match("[!x]", ""));
}

TEST(GlobMatch, BracketWithLeadingCloseBracketTreatsItLiterally) {
  EXPECT_TRUE(glob_match("[]]", "]"));
  EXPECT_TRUE(glob_match("[]a]", "a"));
  EXPECT_FALSE(glob_match("[]a]", "b"));
  EXPECT_TRUE(glob_match("[!]]", "a"));
  EXPECT_FALSE(glob_match("[!]]", "]"));
}

TEST(GlobMatch, UnterminatedBracketIsALiteral) {
  EXPECT_TRUE(glob_match("[abc", "[abc"));
  EXPECT_FALSE(glob_match("[abc", "a"));
}

TEST(GlobMatch, BackslashEscapesTheNextCharacter) {
  EXPECT_TRUE(glob_match("\\*", "*"));
  EXPECT_FALSE(glob_match("\\*", "a"));
  EXPECT_TRUE(glob_match("\\?", "?"));
  EXPECT_FALSE(glob_match("\\?", "x"));
  EXPECT_TRUE(glob_match("\\[a]", "[a]"));
  EXPECT_FALSE(glob_match("\\[a]", "a"));
  EXPECT_TRUE(glob_match("a\\\\b", "a\\b"));
  EXPECT_TRUE(glob_match("\\a", "a"));
  EXPECT_TRUE(glob_match("*\\*", "star*"));
  EXPECT_FALSE(glob_match("*\\*", "star"));
  EXPECT_TRUE(glob_match("[\\]]", "]"));
}

TEST(GlobMatch, PosixClassesInsideBracketsAreTheCLocales) {
  EXPECT_TRUE(glob_match("[[:digit:]]", "7"));
  EXPECT_FALSE(glob_match("[[:digit:]]", "d"));
  EXPECT_FALSE(glob_match("[[:digit:]]", "]"));
  EXPECT_TRUE(glob_match("[![:digit:]]", "d"));
  EXPECT_FALSE(glob_match("[^[:digit:]]", "7"));
  EXPECT_TRUE(glob_match("x[[:upper:]_[:digit:]]", "x_"));
  EXPECT_TRUE(glob_match("x[[:upper:]_[:digit:]]", "xQ"));
  EXPECT_FALSE(glob_match("x[[:upper:]_[:digit:]]", "xq"));
  EXPECT_TRUE(glob_match("*.[[:alpha:]][[:alnum:]]", "a.c9"));
  EXPECT_TRUE(glob_match("[[:space:]]", "\t"));
  EXPECT_FALSE(glob_match("[[:blank:]]", "\n"));
  EXPECT_TRUE(glob_match("[[:xdigit:]]", "F"));
  EXPECT_FALSE(glob_match("[[:xdigit:]]", "g"));
  EXPECT_TRUE(glob_match("[[:punct:]]", "-"));
  EXPECT_FALSE(glob_match("[[:punct:]]", "/"));  // a class never takes the separator
  EXPECT_TRUE(glob_match("[[:cntrl:]]", "\x7f"));
  EXPECT_FALSE(glob_match("[[:alpha:]]", "\xc3"));  // bytes above 127 are in no class
  EXPECT_TRUE(glob_match("[[:alpha:]]]", "a]"));
  EXPECT_FALSE(glob_match("[[:nosuch:]]", "n"));  // matches nothing, as in rsync
  EXPECT_FALSE(glob_match("[[::]]", ":"));        // nor does an empty name
  // A name ends at the first ']', after a ':', or the '[' is one of the bracket's bytes (rsync).
  EXPECT_TRUE(glob_match("[[:]x:]", "[x:]"));
  EXPECT_TRUE(glob_match("[[:]x:]", ":x:]"));
  EXPECT_FALSE(glob_match("[[:]x:]", "xx:]"));
  EXPECT_TRUE(glob_match("[[:]*[[:digit:]]", "[a7"));
  EXPECT_TRUE(glob_match("[[:]*[[:digit:]]", ":7"));
  EXPECT_FALSE(glob_match("[[:]*[[:digit:]]", "a7"));
}

TEST(GlobProblem, NamesAClassOfAnUnknownNameOrWithoutItsBrackets) {
  EXPECT_EQ(glob_problem("*.[[:digit:]]"), "");
  EXPECT_EQ(glob_problem("[:digt:]"), "character class syntax is [[:digt:]], not [:digt:]");
  EXPECT_EQ(glob_problem("\\[[[:digt:]]"), "unknown character class '[:digt:]'");
  EXPECT_EQ(glob_problem("a[x[:Alpha:]]"), "unknown character class '[:Alpha:]'");
  EXPECT_EQ(glob_problem("\\[[:digt:]]"), "character class syntax is [[:digt:]], not [:digt:]");
  EXPECT_EQ(glob_problem("[\\[:digt:]]"), "");     // '[' escaped inside the bracket
  EXPECT_EQ(glob_problem("[[::]]"), "unknown character class '[::]'");
  EXPECT_EQ(glob_problem("[[:]*[[:digit:]]"), "");  // rsync's: '[' and ':', anything, a digit
  EXPECT_EQ(glob_problem("[[:]x:]"), "");
  // A class without its brackets: the shell's bytes, a mistake to whoever wrote it (as grep says).
  EXPECT_EQ(glob_problem("*.[:digit:]"), "character class syntax is [[:digit:]], not [:digit:]");
  EXPECT_EQ(glob_problem("[[:digit:]"), "unmatched '[' before [:digit:]");
  EXPECT_EQ(glob_problem("[[:alpha:]x"), "unmatched '[' before [:alpha:]");
  EXPECT_EQ(glob_problem("[![:alpha:]"), "unmatched '[' before [:alpha:]");
  EXPECT_EQ(glob_problem("[a-z[:digit:]"), "unmatched '[' before [:digit:]");
  EXPECT_EQ(glob_problem("[:a-z:]"), "");
  EXPECT_EQ(glob_problem("[::]"), "");
}

TEST(GlobMatch, HighBytesAreMatchedAsBytes) {
  EXPECT_TRUE(glob_match("caf\xc3\xa9", "caf\xc3\xa9"));
  EXPECT_TRUE(glob_match("*\xff", "abc\xff"));
  EXPECT_TRUE(glob_match("[\x80-\xff]", "\xc3"));
  EXPECT_FALSE(glob_match("[\x80-\xff]", "c"));
}

TEST(GlobMatch, ManyStarsOnALongNonMatchingNameStayFast) {
  // A six-star pattern against a 34-byte name that does not match: a matcher that retries every
  // split of every star takes O(n^6) steps (about a second here, minutes for a 60-byte name, and it runs
  // once per entry of the walk); one that gives up as soon as a star's tail cannot match is linear.
  const std::string name(34, 'a');
  auto start = std::chrono::steady_clock::now();
  EXPECT_FALSE(glob_match("*a*a*a*a*a*a*b", name));
  EXPECT_FALSE(glob_match("**a**a**a**a**a**a**b", name));
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_LT(s, 0.1) << "glob_match took " << s << " s";
  EXPECT_TRUE(glob_match("*a*a*a*a*a*a*b", name + "b"));
}

// Filters parse each glob once and match it against every path of the walk: a parsed pattern
// answers each text as glob_match() does, whatever it answered before, with and without stars,
// and past the length its sets fit in on the stack.
TEST(GlobPattern, OneParsedPatternAnswersManyTextsAsGlobMatchDoes) {
  const std::string long_class = std::string(150, 'a') + "[0-9]*" + std::string(150, 'b');
  const std::vector<std::string> patterns{"file[0-9][0-9]7[a-c].dat", "file*7x", "src/**/b", "[!.]*.[oa]",
                                          long_class, std::string(200, '?')};
  const std::vector<std::string> texts{"file017b.dat", "file017d.dat", "file1237x", "file/7x", "src/b",
                                       "src/x/y/b",     "src/ab",        "main.o",    ".hidden.a",
                                       std::string(150, 'a') + "5" + std::string(150, 'b'),
                                       std::string(150, 'a') + "x" + std::string(150, 'b'),
                                       std::string(200, 'z'), std::string(199, 'z'), ""};
  int matched = 0;
  for (const std::string& p : patterns) {
    GlobPattern parsed(p);
    for (int round = 0; round < 2; ++round) {
      for (const std::string& t : texts) {
        EXPECT_EQ(parsed.matches(t), glob_match(p, t)) << p << " against " << t;
        matched += parsed.matches(t);
      }
    }
  }
  EXPECT_EQ(matched, 2 * 7);
  EXPECT_TRUE(GlobPattern("file[0-9][0-9]7[a-c].dat").matches("file017b.dat"));
  EXPECT_FALSE(GlobPattern("file[0-9][0-9]7[a-c].dat").matches("file017b.dats"));
  EXPECT_TRUE(GlobPattern(long_class).matches(std::string(150, 'a') + "5xyz" + std::string(150, 'b')));
}

// ---- make_rule -----------------------------------------------------------------------------

TEST(MakeRule, TrailingSlashMeansDirectoriesOnlyAndIsStripped) {
  FilterRule r = make_rule(false, "build/");
  EXPECT_TRUE(r.dirs_only);
  EXPECT_FALSE(r.anchored);
  EXPECT_EQ(r.pattern, "build");
  EXPECT_FALSE(r.include);
}

TEST(MakeRule, PatternWithInnerSlashIsAnchored) {
  FilterRule r = make_rule(true, "src/*.c");
  EXPECT_TRUE(r.anchored);
  EXPECT_FALSE(r.dirs_only);
  EXPECT_TRUE(r.include);
  EXPECT_EQ(r.pattern, "src/*.c");
}

TEST(MakeRule, LeadingSlashAnchorsAtTheRootAndIsStripped) {
  FilterRule r = make_rule(false, "/tmp");
  EXPECT_TRUE(r.anchored);
  EXPECT_EQ(r.pattern, "tmp");
}

// ---- is_excluded -------------------------------------------------------------------------------

TEST(AddFilter, TripleStarIsTheDirectoryAndEverythingInItFromSrcDown) {
  Filters f;
  add_filter(f, true, "src/***");
  add_filter(f, false, "*");
  EXPECT_FALSE(f.excluded("src", true));
  EXPECT_FALSE(f.excluded("src/main.c", false));
  EXPECT_FALSE(f.excluded("src/build/x", false));
  EXPECT_TRUE(f.excluded("src", false));  // a file named src: "src/" is a directory
  EXPECT_TRUE(f.excluded("lib", true));
  EXPECT_TRUE(f.excluded("a/src", true));  // from SRC down, as any pattern with a '/'
  Filters g;
  add_filter(g, false, "/a/b/***");
  EXPECT_TRUE(g.excluded("a/b", true));
  EXPECT_TRUE(g.excluded("a/b/c/d", false));
  EXPECT_FALSE(g.excluded("a/bc", true));
  EXPECT_FALSE(g.excluded("a", true));
}

// "dir/***/" was "dir/***" for the directory, and left its files in (I12): directories only.
TEST(AddFilter, TripleStarWithATrailingSlashIsTheDirectoryAndTheDirectoriesInIt) {
  Filters f;
  add_filter(f, false, "cache/***/");
  EXPECT_TRUE(f.excluded("cache", true));
  EXPECT_TRUE(f.excluded("cache/sub", true));
  EXPECT_FALSE(f.excluded("cache", false));
  EXPECT_FALSE(f.excluded("cache/f", false));  // not descended into, so not copied either
  Filters g;
  add_filter(g, true, "src/***/");
  add_filter(g, false, "*");
  EXPECT_FALSE(g.excluded("src", true));
  EXPECT_FALSE(g.excluded("src/a/b", true));
  EXPECT_TRUE(g.excluded("src/main.c", false));
}

TEST(IsExcluded, NoRulesExcludeNothing) {
  EXPECT_FALSE(is_excluded({}, "a/b/c", false));
  EXPECT_FALSE(is_excluded({}, "a", true));
}

TEST(IsExcluded, PatternWithoutSlashMatchesANameAtAnyDepth) {
  auto r = rules({{false, "*.o"}});
  EXPECT_TRUE(is_excluded(r, "main.o", false));
  EXPECT_TRUE(is_excluded(r, "src/main.o", false));
  EXPECT_TRUE(is_excluded(r, "a/b/c/d/main.o", false));
  EXPECT_FALSE(is_excluded(r, "main.c", false));
  EXPECT_FALSE(is_excluded(r, "main.o/readme", false));  // only the last component is the name
  auto n = rules({{false, "node_modules"}});
  EXPECT_TRUE(is_excluded(n, "node_modules", true));
  EXPECT_TRUE(is_excluded(n, "web/app/node_modules", true));
  EXPECT_FALSE(is_excluded(n, "web/node_modules_old", true));
}

TEST(IsExcluded, TrailingSlashMatchesDirectoriesOnly) {
  auto r = rules({{false, "cache/"}});
  EXPECT_TRUE(is_excluded(r, "cache", true));
  EXPECT_TRUE(is_excluded(r, "a/b/cache", true));
  EXPECT_FALSE(is_excluded(r, "cache", false));
  EXPECT_FALSE(is_excluded(r, "a/b/cache", false));
}

TEST(IsExcluded, FirstMatchingRuleWinsSoIncludeBeforeExcludeKeeps) {
  auto r = rules({{true, "keep.log"}, {false, "*.log"}});
  EXPECT_FALSE(is_excluded(r, "keep.log", false));
  EXPECT_FALSE(is_excluded(r, "sub/keep.log", false));
  EXPECT_TRUE(is_excluded(r, "other.log", false));
  EXPECT_FALSE(is_excluded(r, "other.txt", false));
}

TEST(IsExcluded, FirstMatchingRuleWinsSoExcludeBeforeIncludeExcludes) {
  auto r = rules({{false, "*.log"}, {true, "keep.log"}});
  EXPECT_TRUE(is_excluded(r, "keep.log", false));
  EXPECT_TRUE(is_excluded(r, "other.log", false));
}

TEST(IsExcluded, IncludeThatMatchesNothingLeavesTheRestToLaterRules) {
  auto r = rules({{true, "*.c"}, {false, "*"}});
  EXPECT_FALSE(is_excluded(r, "main.c", false));
  EXPECT_TRUE(is_excluded(r, "main.h", false));
  EXPECT_TRUE(is_excluded(r, "docs", true));
}

TEST(IsExcluded, AnchoredPatternMatchesThePathFromTheRoot) {
  auto r = rules({{false, "build/*.o"}});
  EXPECT_TRUE(is_excluded(r, "build/main.o", false));
  EXPECT_FALSE(is_excluded(r, "src/build/main.o", false));
  EXPECT_FALSE(is_excluded(r, "main.o", false));
  EXPECT_FALSE(is_excluded(r, "build/sub/main.o", false));  // '*' does not cross '/'
}

TEST(IsExcluded, LeadingSlashAnchorsASingleNameAtTheRoot) {
  auto r = rules({{false, "/tmp"}});
  EXPECT_TRUE(is_excluded(r, "tmp", true));
  EXPECT_TRUE(is_excluded(r, "tmp", false));
  EXPECT_FALSE(is_excluded(r, "a/tmp", true));
}

TEST(IsExcluded, AnchoredDoubleStarReachesAnyDepthBelow) {
  auto r = rules({{false, "logs/**/*.gz"}});
  EXPECT_TRUE(is_excluded(r, "logs/a.gz", false));
  EXPECT_TRUE(is_excluded(r, "logs/2024/01/a.gz", false));
  EXPECT_FALSE(is_excluded(r, "old/logs/a.gz", false));
}

TEST(IsExcluded, AnchoredDirectoryOnlyRule) {
  auto r = rules({{false, "a/b/"}});
  EXPECT_TRUE(is_excluded(r, "a/b", true));
  EXPECT_FALSE(is_excluded(r, "a/b", false));
  EXPECT_FALSE(is_excluded(r, "x/a/b", true));
}

TEST(IsExcluded, RulesBuiltByHandBehaveLikeMadeOnes) {
  std::vector<FilterRule> r{include("*.keep"), exclude("tmp*")};
  EXPECT_FALSE(is_excluded(r, "tmp.keep", false));
  EXPECT_TRUE(is_excluded(r, "tmpfile", false));
  EXPECT_TRUE(is_excluded(r, "d/tmpdir", true));
}

// ---- Filters: the indexed rules ----------------------------------------------------------------

// Filters decides exactly as the rules tried one by one do, whatever mix of indexed kinds (plain
// names, plain paths, "*.suffix") and globs, includes and excludes, directory-only rules and
// orders: lists drawn at random from patterns that overlap on purpose.
TEST(Filters, DecideAsTheRulesTriedInOrderDo) {
  const std::vector<const char*> patterns{
      "main.o",  "*.o",     "*.tar.gz", "*.gz",     ".o",         "*.",        "cache",  "cache/",  "*/cache",
      "a/b",     "a/b/",    "/main.o",  "/a",       "a/*.o",      "*o",        "m*",     "*.[oc]",  "**/x.gz",
      "a/**",    "x.tar.gz", "*.tar",   "b",        "*.log/",     "node_modules", "?.o", "\\*.o",   "*.O",
      "a/**/b",  "**/b",    "**/a/b",  "[x",       "*[x*",       "*.g?",      "a/*/main.o"};
  const std::vector<const char*> paths{
      "main.o",   "a/main.o",  "main.c",  ".o",        "..o",       "a/b",        "a/b/main.o", "a/b/c",
      "cache",    "x/cache",   "a/cache", "x.tar.gz",  "d/x.tar.gz", "y.gz",      "z.tar",      "a",
      "b",        "q/b",       "e.log",   "f/e.log",   "m",         "node_modules", "w/node_modules/p.o",
      "*.o",      "c.O",       "k.",      "a/x/x.gz",  "noext",     "dot.in.middle", "x.gz",   "[x",
      "a[x]"};
  std::mt19937 random(20261201);
  for (int list = 0; list < 600; ++list) {
    std::vector<FilterRule> rules;
    Filters filters;
    size_t count = 1 + random() % 10;
    for (size_t i = 0; i < count; ++i) {
      FilterRule rule = make_rule(random() % 3 == 0, patterns[random() % patterns.size()]);
      rules.push_back(rule);
      filters.push_back(rule);
    }
    for (const char* path : paths)
      for (bool is_dir : {false, true}) {
        std::string shown;
        for (const FilterRule& r : rules) shown += (r.include ? " +" : " -") + r.pattern + (r.dirs_only ? "/" : "");
        EXPECT_EQ(filters.excluded(path, is_dir), is_excluded(rules, path, is_dir))
            << path << (is_dir ? " (dir)" : "") << " with" << shown;
      }
  }
}

// 900 rules, as in a long --exclude-from file: the indexed kinds find the first of their rules that
// matches, so an earlier glob or include still decides before a later plain rule.
TEST(Filters, ALongListDecidesByTheFirstRuleThatMatches) {
  std::vector<FilterRule> rules{make_rule(true, "keep*"), make_rule(true, "*.keep")};
  for (int i = 0; i < 300; ++i)
    for (std::string p : {"name" + std::to_string(i), "*.ext" + std::to_string(i), "dir/sub" + std::to_string(i)})
      rules.push_back(make_rule(false, p));
  rules.push_back(make_rule(false, "*"));
  Filters filters;
  for (const FilterRule& r : rules) filters.push_back(r);
  for (std::string path : {"a/b/name299", "x.ext150", "dir/sub7", "dir/sub7/f", "keepname1", "name1.keep",
                           "keep.ext3", "sub7", "q/dir/sub7", "other"})
    for (bool is_dir : {false, true}) EXPECT_EQ(filters.excluded(path, is_dir), is_excluded(rules, path, is_dir)) << path;
  EXPECT_TRUE(filters.excluded("a/b/name299", false));
  EXPECT_FALSE(filters.excluded("keepname1", false));
  EXPECT_FALSE(filters.excluded("name1.keep", false));
  EXPECT_TRUE(filters.excluded("other", false));  // the last rule, "*"
}
