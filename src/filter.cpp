#include "pcopy/filter.hpp"

#include <vector>

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

// Matching with memoised (pattern, text) positions: each pair is decided once, so patterns with
// many stars stay linear in pattern x text instead of exponential.
class Matcher {
 public:
  Matcher(std::string_view p, std::string_view t) : p_(p), t_(t), memo_((p.size() + 1) * (t.size() + 1), 0) {}
  bool match(size_t pi, size_t ti) {
    char& m = memo_[pi * (t_.size() + 1) + ti];
    if (m == 0) m = compute(pi, ti) ? 1 : 2;
    return m == 1;
  }

 private:
  bool compute(size_t pi, size_t ti) {
    std::string_view p = p_.substr(pi), t = t_.substr(ti);
    if (p.empty()) return t.empty();
    char c = p.front();
    if (c == '*') {
      bool cross = p.size() > 1 && p[1] == '*';
      size_t rest = pi + (cross ? 2 : 1);
      if (cross && rest < p_.size() && p_[rest] == '/' && match(rest + 1, ti)) return true;
      if (match(rest, ti)) return true;  // the star matches nothing
      return !t.empty() && (cross || t.front() != '/') && match(pi, ti + 1);  // or one more byte
    }
    if (t.empty()) return false;
    if (c == '?') return t.front() != '/' && match(pi + 1, ti + 1);
    if (c == '[') {
      bool ok = false;
      std::string_view q = p;
      if (match_class(q, t.front(), ok)) return ok && match(p_.size() - q.size(), ti + 1);
      return t.front() == '[' && match(pi + 1, ti + 1);
    }
    size_t len = 1;
    if (c == '\\' && p.size() > 1) c = p[1], len = 2;
    return c == t.front() && match(pi + len, ti + 1);
  }

  std::string_view p_, t_;
  std::vector<char> memo_;  // 0 unknown, 1 match, 2 no match
};

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

bool glob_match(std::string_view pattern, std::string_view text) { return Matcher(pattern, text).match(0, 0); }

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
