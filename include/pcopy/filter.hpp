// --exclude / --include rules: shell globs matched against the path relative to SRC.
// A pattern without '/' matches a name at any depth; a trailing '/' matches directories only;
// '**' crosses '/'; the first rule that matches decides.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace pcopy {

struct FilterRule {
  bool include = false;
  std::string pattern;  // as given, without the trailing '/'
  bool dirs_only = false;
  bool anchored = false;  // contains '/': matched against the whole relative path
};

FilterRule make_rule(bool include, std::string_view pattern);

// Glob match: '*' and '?' do not cross '/', '**' does, '[...]' classes, '\' escapes.
bool glob_match(std::string_view pattern, std::string_view text);

// True when `rel` (relative to SRC, no leading '/') is excluded by the rules.
bool is_excluded(const std::vector<FilterRule>& rules, std::string_view rel, bool is_dir);

}  // namespace pcopy
