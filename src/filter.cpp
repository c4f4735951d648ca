#include "pcopy/filter.hpp"

#include <algorithm>
#include <cstdint>
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

// A pattern is matched by following every way it could match at once: the set of positions in
// the pattern the text read so far can have reached, one step per byte of text. Time is pattern x
// text, memory the pattern's length, and nothing recurses, so a path a million bytes long (a tree
// thousands of levels deep) is matched like a short one.
struct Token {
  enum Kind : uint8_t { Literal, Any, Class, Star, DoubleStar } kind;
  char c = 0;
  size_t next = 0;          // where the next token starts
  bool then_slash = false;  // "**/": also matches nothing at the start of a component
};

Token token_at(std::string_view p, size_t i) {
  char c = p[i];
  if (c == '*') {
    if (i + 1 < p.size() && p[i + 1] == '*') return {Token::DoubleStar, 0, i + 2, i + 2 < p.size() && p[i + 2] == '/'};
    return {Token::Star, 0, i + 1};
  }
  if (c == '?') return {Token::Any, 0, i + 1};
  if (c == '[') {
    std::string_view q = p.substr(i);
    bool ok = false;
    if (match_class(q, 'x', ok)) return {Token::Class, 0, p.size() - q.size()};
    return {Token::Literal, '[', i + 1};
  }
  if (c == '\\' && i + 1 < p.size()) return {Token::Literal, p[i + 1], i + 2};
  return {Token::Literal, c, i + 1};
}

// Adds to `set` the positions its positions reach without reading: past a star that matches
// nothing, and past "**/" at the start of a component (`a/**/b` matches `a/b`, `**/b` matches `b`,
// neither matches `xb`). Every such step goes forward, so one pass in order is enough.
void close_over(std::string_view p, char* set, bool component_start) {
  for (size_t i = 0; i < p.size(); ++i) {
    if (!set[i] || (p[i] != '*')) continue;
    Token t = token_at(p, i);
    set[t.next] = 1;
    if (t.then_slash && component_start) set[t.next + 1] = 1;
  }
}

}  // namespace

bool glob_match(std::string_view p, std::string_view text) {
  // The two sets on the stack for any pattern of a sensible length: a path is matched against
  // every rule that is not indexed (see Filters), and an allocation each was most of the cost.
  constexpr size_t kOnStack = 256;
  char on_stack[2][kOnStack];
  std::vector<char> on_heap;
  const size_t n = p.size() + 1;
  char* now = on_stack[0];
  char* next = on_stack[1];
  if (n > kOnStack) {
    on_heap.resize(2 * n);
    now = on_heap.data();
    next = now + n;
  }
  std::fill(now, now + n, 0);
  now[0] = 1;
  close_over(p, now, true);
  for (size_t ti = 0; ti < text.size(); ++ti) {
    char ch = text[ti];
    std::fill(next, next + n, 0);
    bool any = false;
    for (size_t i = 0; i < p.size(); ++i) {
      if (!now[i]) continue;
      Token t = token_at(p, i);
      size_t to = t.next;
      bool ok = false;
      switch (t.kind) {
        case Token::Literal: ok = ch == t.c; break;
        case Token::Any: ok = ch != '/'; break;
        case Token::Class: {
          std::string_view q = p.substr(i);
          match_class(q, ch, ok);
          break;
        }
        case Token::Star: ok = ch != '/', to = i; break;
        case Token::DoubleStar: ok = true, to = i; break;
      }
      if (ok) next[to] = 1, any = true;
    }
    if (!any) return false;
    close_over(p, next, ch == '/');
    std::swap(now, next);
  }
  return now[p.size()] != 0;
}

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

void add_filter(Filters& filters, bool include, std::string_view pattern) {
  if (pattern.size() > 4 && pattern.ends_with("/***")) {
    std::string_view dir = pattern.substr(0, pattern.size() - 3);  // "dir/"
    FilterRule itself = make_rule(include, dir);
    itself.anchored = true;
    filters.push_back(std::move(itself));
    filters.push_back(make_rule(include, std::string(dir) + "**"));
    return;
  }
  filters.push_back(make_rule(include, pattern));
}

namespace {
std::string_view last_name(std::string_view rel) {
  size_t slash = rel.rfind('/');
  return slash == std::string_view::npos ? rel : rel.substr(slash + 1);
}

bool plain(std::string_view pattern) { return pattern.find_first_of("*?[\\") == std::string_view::npos; }

// The longest run of characters the pattern matches only literally ("cache" in "*.cache[0-9]*").
std::string longest_literal(std::string_view p) {
  std::string best, run;
  for (size_t i = 0; i < p.size();) {
    Token t = token_at(p, i);
    if (t.kind == Token::Literal) {
      run += t.c;
    } else {
      run.clear();
    }
    if (run.size() > best.size()) best = run;
    i = t.next + (t.kind == Token::DoubleStar && t.then_slash);  // "**/" may match nothing, '/' too
  }
  return best;
}
}  // namespace

bool is_excluded(const std::vector<FilterRule>& rules, std::string_view rel, bool is_dir) {
  std::string_view name = last_name(rel);
  for (const FilterRule& rule : rules) {
    if (rule.dirs_only && !is_dir) continue;
    if (glob_match(rule.pattern, rule.anchored ? rel : name)) return !rule.include;
  }
  return false;
}

Filters::Filters(std::initializer_list<FilterRule> rules) {
  for (const FilterRule& rule : rules) push_back(rule);
}

void Filters::note(Index& index, std::string_view key, uint32_t rule, bool dirs_only) {
  auto it = index.find(key);
  if (it == index.end()) it = index.emplace(std::string(key), First{}).first;
  First& f = it->second;
  f.dir = std::min(f.dir, rule);
  if (!dirs_only) f.file = std::min(f.file, rule);
}

uint32_t Filters::first(const Index& index, std::string_view key, bool is_dir) {
  auto it = index.find(key);
  if (it == index.end()) return kNone;
  return is_dir ? it->second.dir : it->second.file;
}

void Filters::push_back(FilterRule rule) {
  auto i = uint32_t(rules_.size());
  std::string_view p = rule.pattern;
  if (plain(p)) {
    note(rule.anchored ? paths_ : names_, p, i, rule.dirs_only);
  } else if (!rule.anchored && p.size() >= 2 && p[0] == '*' && p[1] == '.' && plain(p.substr(1))) {
    note(suffixes_, p.substr(1), i, rule.dirs_only);
  } else {
    globs_.push_back({i, longest_literal(p)});
  }
  rules_.push_back(std::move(rule));
}

bool Filters::excluded(std::string_view rel, bool is_dir) const {
  std::string_view name = last_name(rel);
  uint32_t best = kNone;
  if (!names_.empty()) best = std::min(best, first(names_, name, is_dir));
  if (!paths_.empty()) best = std::min(best, first(paths_, rel, is_dir));
  if (!suffixes_.empty())
    for (size_t dot = name.find('.'); dot != std::string_view::npos; dot = name.find('.', dot + 1))
      best = std::min(best, first(suffixes_, name.substr(dot), is_dir));
  for (const Glob& glob : globs_) {
    if (glob.rule >= best) break;
    const FilterRule& rule = rules_[glob.rule];
    if (rule.dirs_only && !is_dir) continue;
    std::string_view text = rule.anchored ? rel : name;
    if (text.find(glob.needle) != std::string_view::npos && glob_match(rule.pattern, text)) return !rule.include;
  }
  return best != kNone && !rules_[best].include;
}

}  // namespace pcopy
