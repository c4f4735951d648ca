#include "pcopy/filter.hpp"

namespace pcopy {
namespace {

// Matches one bracket expression at the start of `p` against `c`. On return `p` is past the ']'.
// A '[' without its ']' is a literal.
bool match_class(std::string_view& p, char c, bool& ok) {
  size_t i = 1;
  bool negate = i < p.size() && (p[i] == '!' || p[i] == '^');
  if (negate) ++i;
  size_t first = i;
  bool hit = false;
  for (; i < p.size() && (p[i] != ']' || i == first); ++i) {
    char lo = p[i];
    if (lo == '\\' && i + 1 < p.size()) lo = p[++i];
    char hi = lo;
    if (i + 2 < p.size() && p[i + 1] == '-' && p[i + 2] != ']') {
      hi = p[i + 2];
      i += 2;
    }
    if (static_cast<unsigned char>(lo) <= static_cast<unsigned char>(c) &&
        static_cast<unsigned char>(c) <= static_cast<unsigned char>(hi))
      hit = true;
  }
  if (i >= p.size()) return false;  // unterminated: caller treats '[' literally
  p.remove_prefix(i + 1);
  ok = (hit != negate) && c != '/';
  return true;
}

bool match_here(std::string_view p, std::string_view t) {
  while (!p.empty()) {
    char c = p.front();
    if (c == '*') {
      bool cross = p.size() > 1 && p[1] == '*';
      std::string_view rest = p.substr(cross ? 2 : 1);
      if (cross && !rest.empty() && rest.front() == '/' && match_here(rest.substr(1), t)) return true;
      for (size_t i = 0; i <= t.size(); ++i) {
        if (match_here(rest, t.substr(i))) return true;
        if (i < t.size() && !cross && t[i] == '/') return false;
      }
      return false;
    }
    if (t.empty()) return false;
    if (c == '?') {
      if (t.front() == '/') return false;
    } else if (c == '[') {
      bool ok = false;
      std::string_view q = p;
      if (match_class(q, t.front(), ok)) {
        if (!ok) return false;
        p = q;
        t.remove_prefix(1);
        continue;
      }
      if (t.front() != '[') return false;
    } else {
      if (c == '\\' && p.size() > 1) {
        p.remove_prefix(1);
        c = p.front();
      }
      if (c != t.front()) return false;
    }
    p.remove_prefix(1);
    t.remove_prefix(1);
  }
  return t.empty();
}

}  // namespace

FilterRule make_rule(bool include, std::string_view pattern) {
  FilterRule rule;
  rule.include = include;
  while (pattern.size() > 1 && pattern.back() == '/') {
    rule.dirs_only = true;
    pattern.remove_suffix(1);
  }
  if (!pattern.empty() && pattern.front() == '/') {
    rule.anchored = true;
    pattern.remove_prefix(1);
  }
  rule.anchored = rule.anchored || pattern.find('/') != std::string_view::npos;
  rule.pattern = std::string(pattern);
  return rule;
}

bool glob_match(std::string_view pattern, std::string_view text) { return match_here(pattern, text); }

bool is_excluded(const std::vector<FilterRule>& rules, std::string_view rel, bool is_dir) {
  size_t slash = rel.rfind('/');
  std::string_view name = slash == std::string_view::npos ? rel : rel.substr(slash + 1);
  for (const FilterRule& rule : rules) {
    if (rule.dirs_only && !is_dir) continue;
    if (glob_match(rule.pattern, rule.anchored ? rel : name)) return !rule.include;
  }
  return false;
}

}  // namespace pcopy
