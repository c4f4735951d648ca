#include "pcopy/filter.hpp"

#include <algorithm>
#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

namespace pcopy {
namespace {

// The POSIX classes of a bracket expression, `[:digit:]` in `[[:digit:]]`, as the C locale has
// them (as rsync, the shell and .gitignore read them): bytes above 127 are in none.
constexpr bool is_digit(unsigned char c) { return c >= '0' && c <= '9'; }
constexpr bool is_upper(unsigned char c) { return c >= 'A' && c <= 'Z'; }
constexpr bool is_lower(unsigned char c) { return c >= 'a' && c <= 'z'; }
constexpr bool is_alnum(unsigned char c) { return is_digit(c) || is_upper(c) || is_lower(c); }
constexpr bool is_graph(unsigned char c) { return c > ' ' && c < 127; }
constexpr std::pair<std::string_view, bool (*)(unsigned char)> kCharClasses[] = {
    {"alnum", is_alnum},
    {"alpha", [](unsigned char c) { return is_upper(c) || is_lower(c); }},
    {"blank", [](unsigned char c) { return c == ' ' || c == '\t'; }},
    {"cntrl", [](unsigned char c) { return c < ' ' || c == 127; }},
    {"digit", is_digit},
    {"graph", is_graph},
    {"lower", is_lower},
    {"print", [](unsigned char c) { return c == ' ' || is_graph(c); }},
    {"punct", [](unsigned char c) { return is_graph(c) && !is_alnum(c); }},
    {"space", [](unsigned char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }},
    {"upper", is_upper},
    {"xdigit", [](unsigned char c) { return is_digit(c) || ((c | 0x20) >= 'a' && (c | 0x20) <= 'f'); }},
};

// At `i` in `p`, a class's name between "[:" and ":]": the position of its closing ']', or npos.
// As rsync's wildmatch reads it: the name ends at the first ']', which must follow a ':' ("[:]"
// and "[:a]x:]" hold none: their '[' is one of the bracket's bytes).
size_t class_end(std::string_view p, size_t i) {
  if (i + 1 >= p.size() || p[i] != '[' || p[i + 1] != ':') return std::string_view::npos;
  size_t end = p.find(']', i + 2);
  return end == std::string_view::npos || end < i + 3 || p[end - 1] != ':' ? std::string_view::npos : end;
}

// Matches one bracket expression at the start of `p` against `c`. On return `p` is past the ']'.
// A '[' without its ']' is a literal. A class of an unknown name matches nothing (as in rsync):
// glob_problem() names it for the command line to refuse: its name is put in `*unknown`.
bool match_class(std::string_view& p, char c, bool& ok, std::optional<std::string_view>* unknown = nullptr) {
  size_t i = 1;
  bool negate = i < p.size() && (p[i] == '!' || p[i] == '^');
  if (negate) ++i;
  size_t first = i;
  bool hit = false;
  for (; i < p.size() && (p[i] != ']' || i == first); ++i) {
    if (size_t end = class_end(p, i); end != std::string_view::npos) {
      std::string_view name = p.substr(i + 2, end - 1 - (i + 2));
      bool named = false;
      for (const auto& [known, in] : kCharClasses) {
        named = named || name == known;
        hit = hit || (name == known && in(static_cast<unsigned char>(c)));
      }
      if (!named && unknown && !*unknown) *unknown = name;
      i = end;
      continue;
    }
    // As rsync's wildmatch: a range's start matches on its own (so a backwards one, "[d-a]", takes
    // its start), and its end may be escaped ("[a-\\d]" is a to d).
    char lo = p[i];
    if (lo == '\\' && i + 1 < p.size()) lo = p[++i];
    char hi = lo;
    if (i + 2 < p.size() && p[i + 1] == '-' && p[i + 2] != ']') {
      hi = p[i + 2];
      i += 2;
      if (hi == '\\' && i + 1 < p.size()) hi = p[++i];
    }
    auto u = [](char x) { return static_cast<unsigned char>(x); };
    if (c == lo || (u(lo) <= u(c) && u(c) <= u(hi))) hit = true;
  }
  if (i >= p.size()) return false;  // unterminated: caller treats '[' literally
  p.remove_prefix(i + 1);
  ok = (hit != negate) && c != '/';
  return true;
}

// A pattern is parsed into tokens once, each bracket expression into a bitmap of the bytes it
// takes.
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

}  // namespace

GlobPattern::GlobPattern(std::string_view p) {
  for (size_t i = 0; i < p.size();) {
    Token t = token_at(p, i);
    Step step{t.kind, t.c, t.then_slash, 0};
    if (t.kind == Token::Class) {
      step.cls = uint32_t(classes_.size());
      Bytes& bytes = classes_.emplace_back();
      for (unsigned c = 0; c < 256; ++c) {
        std::string_view q = p.substr(i);
        bool ok = false;
        match_class(q, char(c), ok);
        if (ok) bytes[c / 64] |= uint64_t(1) << (c % 64);
      }
    }
    stars_ = stars_ || t.kind == Token::Star || t.kind == Token::DoubleStar;
    steps_.push_back(step);
    i = t.next;
  }
}

bool GlobPattern::takes(const Step& s, char ch, size_t& to) const {
  switch (s.kind) {
    case Token::Literal: return ch == s.c;
    case Token::Any: return ch != '/';
    case Token::Class: {
      auto b = static_cast<unsigned char>(ch);
      return (classes_[s.cls][b / 64] >> (b % 64)) & 1;
    }
    case Token::Star: --to; return ch != '/';  // stays where it is
    case Token::DoubleStar: --to; return true;
  }
  return false;
}

// Without a star, a pattern takes one byte per step: the text is matched step by step. With one,
// by following every way it could match at once: the set of steps the text read so far can have
// reached, one move per byte of text. Time is steps x text at worst, and as many as the set holds
// (one or two, mostly) in practice; memory the pattern's length; nothing recurses, so a path a
// million bytes long (a tree thousands of levels deep) is matched like a short one.
bool GlobPattern::matches(std::string_view text) const {
  const size_t n = steps_.size();
  if (!stars_) {
    if (text.size() != n) return false;
    for (size_t i = 0; i < n; ++i) {
      size_t to = i + 1;
      if (!takes(steps_[i], text[i], to)) return false;
    }
    return true;
  }
  // On the stack for any pattern of a sensible length: a path is matched against every rule that
  // is not indexed (see Filters), and an allocation each was most of the cost.
  constexpr size_t kOnStack = 128;
  uint32_t on_stack[3 * kOnStack];
  std::vector<uint32_t> on_heap;
  uint32_t* seen = on_stack;  // the move (from 1) at which each step last joined a set
  if (n + 1 > kOnStack) {
    on_heap.resize(3 * (n + 1));
    seen = on_heap.data();
  }
  uint32_t* now = seen + (n + 1);
  uint32_t* next = now + (n + 1);
  std::fill(seen, seen + n + 1, 0);
  uint32_t move = 1;
  size_t now_size = 0, next_size = 0;
  auto add = [&](uint32_t* set, size_t& size, size_t step) {
    if (seen[step] != move) seen[step] = move, set[size++] = uint32_t(step);
  };
  // Adds the steps its steps reach without reading: past a star that matches nothing, and past
  // "**/" at the start of a component (`a/**/b` matches `a/b`, `**/b` matches `b`, neither
  // matches `xb`). What it adds is looked at in turn, so a run of stars is crossed at once.
  auto close = [&](uint32_t* set, size_t& size, bool component_start) {
    for (size_t k = 0; k < size; ++k) {
      size_t i = set[k];
      if (i == n || (steps_[i].kind != Token::Star && steps_[i].kind != Token::DoubleStar)) continue;
      add(set, size, i + 1);
      if (steps_[i].then_slash && component_start) add(set, size, i + 2);
    }
  };
  add(now, now_size, 0);
  close(now, now_size, true);
  for (char ch : text) {
    ++move;
    next_size = 0;
    for (size_t k = 0; k < now_size; ++k) {
      size_t i = now[k], to = i + 1;
      if (i < n && takes(steps_[i], ch, to)) add(next, next_size, to);
    }
    if (next_size == 0) return false;
    close(next, next_size, ch == '/');
    std::swap(now, next);
    now_size = next_size;
  }
  return seen[n] == move;
}

bool glob_match(std::string_view p, std::string_view text) { return GlobPattern(p).matches(text); }

std::string glob_problem(std::string_view p) {
  bool unmatched = false;  // a token before was a '[' without its ']'
  for (size_t i = 0; i < p.size();) {
    Token t = token_at(p, i);
    if (t.kind == Token::Class) {
      std::string_view bracket = p.substr(i);
      std::optional<std::string_view> unknown;
      bool ok = false;
      match_class(bracket, 'x', ok, &unknown);
      if (unknown) return "unknown character class '[:" + std::string(*unknown) + ":]'";
      // "[:digit:]" is a bracket of the bytes ':', 'd', 'i', 'g', 't' to the shell and rsync, and
      // a class forgotten its brackets to whoever wrote it, as grep says.
      std::string_view inside = p.substr(i + 1, t.next - i - 2);
      if (inside.size() > 2 && inside.front() == ':' && inside.back() == ':' &&
          std::all_of(inside.begin() + 1, inside.end() - 1, [](char c) { return is_lower(c) || is_upper(c); }))
        return unmatched  // "[[:alpha:]x": the outer bracket was never closed
                   ? "unmatched '[' before " + std::string(p.substr(i, t.next - i))
                   : "character class syntax is [" + std::string(p.substr(i, t.next - i)) + "], not " +
                         std::string(p.substr(i, t.next - i));
    }
    unmatched = unmatched || (t.kind == Token::Literal && p[i] == '[');
    i = t.next;
  }
  return {};
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
  // "dir/***/": the same, directories only (as rsync reads it).
  bool dirs_only = pattern.size() > 5 && pattern.ends_with("/***/");
  if (dirs_only) pattern.remove_suffix(1);
  if (pattern.size() > 4 && pattern.ends_with("/***")) {
    std::string_view dir = pattern.substr(0, pattern.size() - 3);  // "dir/"
    FilterRule itself = make_rule(include, dir);
    itself.anchored = true;
    filters.push_back(std::move(itself));
    filters.push_back(make_rule(include, std::string(dir) + (dirs_only ? "**/" : "**")));
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
    globs_.push_back({i, longest_literal(p), GlobPattern(p)});
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
    if (text.find(glob.needle) != std::string_view::npos && glob.pattern.matches(text)) return !rule.include;
  }
  return best != kNone && !rules_[best].include;
}

}  // namespace pcopy
