// --exclude / --include rules: shell globs matched against the path relative to SRC.
// A pattern without '/' matches a name at any depth; a trailing '/' matches directories only;
// '**' crosses '/'; the first rule that matches decides.
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace pcopy {

struct FilterRule {
  bool include = false;
  std::string pattern;  // as given, without the trailing '/'
  bool dirs_only = false;
  bool anchored = false;  // contains '/': matched against the whole relative path
};

FilterRule make_rule(bool include, std::string_view pattern);

// Glob match: '*' and '?' do not cross '/', '**' does, '[...]' classes (with POSIX's `[:digit:]`
// and the like inside), '\' escapes.
bool glob_match(std::string_view pattern, std::string_view text);

// Why `pattern` cannot mean what it says, or empty: a class of an unknown name (`[[:digt:]]`), one
// without its brackets (`[:digit:]`), or after a '[' never closed (`[[:alpha:]x`).
std::string glob_problem(std::string_view pattern);

// A glob parsed once, to be matched against many texts as glob_match() matches it.
class GlobPattern {
 public:
  explicit GlobPattern(std::string_view pattern);
  bool matches(std::string_view text) const;

 private:
  struct Step {
    uint8_t kind;  // a Token::Kind (filter.cpp)
    char c;        // Literal: the byte
    bool then_slash;  // DoubleStar followed by '/'
    uint32_t cls;     // Class: its index in classes_
  };
  using Bytes = std::array<uint64_t, 4>;  // a bitmap of the 256 byte values
  // Whether `s` takes `ch`; `to` (the next step) is moved back to `s` itself for a star.
  bool takes(const Step& s, char ch, size_t& to) const;

  std::vector<Step> steps_;
  std::vector<Bytes> classes_;
  bool stars_ = false;
};

// True when `rel` (relative to SRC, no leading '/') is excluded by the rules, tried one by one.
bool is_excluded(const std::vector<FilterRule>& rules, std::string_view rel, bool is_dir);

// The rules of a run, indexed so that a path is matched against hundreds of them (an
// --exclude-from file) in about the time of a few. A rule that is a plain name ("node_modules"), a
// plain path ("build/cache") or a star and a plain suffix beginning with '.' ("*.o") is looked up
// by hashing; only the rest are matched as globs, only those before the first looked-up rule that
// matches, and only where the text holds the pattern's longest plain part. Decides as is_excluded()
// does.
class Filters;

// Adds the rule of `pattern` to `filters`; rsync's "dir/***" as two: the directory itself and
// everything in it ("dir/" and "dir/**", both anchored at SRC as any pattern with a '/').
void add_filter(Filters& filters, bool include, std::string_view pattern);

class Filters {
 public:
  Filters() = default;
  Filters(std::initializer_list<FilterRule> rules);

  void push_back(FilterRule rule);
  void clear() { *this = Filters(); }
  bool empty() const { return rules_.empty(); }
  size_t size() const { return rules_.size(); }
  const FilterRule& operator[](size_t i) const { return rules_[i]; }
  const std::vector<FilterRule>& rules() const { return rules_; }

  bool excluded(std::string_view rel, bool is_dir) const;

 private:
  static constexpr uint32_t kNone = UINT32_MAX;
  // The first rule of a key that applies to a directory, and the first that applies to a file
  // (not one ending in '/').
  struct First {
    uint32_t dir = kNone;
    uint32_t file = kNone;
  };
  struct Hash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  using Index = std::unordered_map<std::string, First, Hash, std::equal_to<>>;
  static void note(Index& index, std::string_view key, uint32_t rule, bool dirs_only);
  static uint32_t first(const Index& index, std::string_view key, bool is_dir);

  std::vector<FilterRule> rules_;
  Index names_;     // plain names, matched against the last component
  Index paths_;     // plain paths, matched against the whole relative path
  Index suffixes_;  // "*.o": ".o", matched against every ending of the name that begins with '.'
  struct Glob {
    uint32_t rule;
    std::string needle;  // the pattern's longest run of plain characters: no match without it
    GlobPattern pattern;
  };
  std::vector<Glob> globs_;  // the other rules, in order
};

}  // namespace pcopy
