#include "pcopy/report.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>

#include <cerrno>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "pcopy/hash.hpp"
#include "unit_util.hpp"

using namespace pcopy;
using pcopy_test::TempDir;

namespace {

std::set<std::string> keys_of(const nlohmann::json& j) {
  std::set<std::string> keys;
  for (auto it = j.begin(); it != j.end(); ++it) keys.insert(it.key());
  return keys;
}

bool has_raw_control_bytes(const std::string& s) {
  for (unsigned char c : s)
    if (c < 0x20 || c == 0x7f) return true;
  return false;
}

Hash128 hash_of(const std::string& data) {
  Hasher h;
  h.update(data.data(), data.size());
  return h.digest();
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

}  // namespace

// ---- display_path -------------------------------------------------------------------------------

TEST(DisplayPath, PlainAsciiPassesUnchanged) {
  EXPECT_EQ(display_path("photos/2024/IMG 0001.jpg"), "photos/2024/IMG 0001.jpg");
  EXPECT_EQ(display_path("-leading-dash"), "-leading-dash");
  EXPECT_EQ(display_path(""), "");
}

TEST(DisplayPath, ValidUtf8PassesUnchanged) {
  EXPECT_EQ(display_path("caf\xc3\xa9"), "caf\xc3\xa9");                             // café
  EXPECT_EQ(display_path("\xe6\x97\xa5\xe6\x9c\xac/x"), "\xe6\x97\xa5\xe6\x9c\xac/x");  // 日本/x
  EXPECT_EQ(display_path("\xf0\x9f\x93\xb7.jpg"), "\xf0\x9f\x93\xb7.jpg");             // 📷.jpg
}

TEST(DisplayPath, NewlineAndTabBecomeCEscapes) {
  EXPECT_EQ(display_path("a\nb"), "a\\nb");
  EXPECT_EQ(display_path("a\tb"), "a\\tb");
  EXPECT_EQ(display_path("\n"), "\\n");
}

TEST(DisplayPath, OtherControlBytesBecomeHexEscapes) {
  EXPECT_EQ(display_path(std::string("a\x01z", 3)), "a\\x01z");
  EXPECT_EQ(display_path("\x1b[31mred"), "\\x1b[31mred");
  EXPECT_EQ(display_path("\x7f"), "\\x7f");
  std::string r = display_path("a\rb");
  EXPECT_EQ(r.find('\r'), std::string::npos);
  EXPECT_EQ(r, "a\\x0db");
}

TEST(DisplayPath, BackslashIsDoubledSoEscapesAreUnambiguous) {
  EXPECT_EQ(display_path("a\\b"), "a\\\\b");
  EXPECT_EQ(display_path("\\n"), "\\\\n");  // a literal backslash-n is not a newline
  EXPECT_NE(display_path("\\x01"), display_path("\x01"));
}

TEST(DisplayPath, InvalidUtf8BytesBecomeHexEscapes) {
  EXPECT_EQ(display_path("bad\xff"), "bad\\xff");
  EXPECT_EQ(display_path("\xe6\x97"), "\\xe6\\x97");               // truncated sequence
  EXPECT_EQ(display_path("\xc0\xaf"), "\\xc0\\xaf");               // overlong '/'
  EXPECT_EQ(display_path("\xed\xa0\x80"), "\\xed\\xa0\\x80");      // UTF-16 surrogate
  EXPECT_EQ(display_path("\xf4\x90\x80\x80"), "\\xf4\\x90\\x80\\x80");  // past U+10FFFF
  EXPECT_EQ(display_path("\x80z"), "\\x80z");                        // lone continuation byte
  EXPECT_EQ(display_path("\xc3\xa9\xc3"), "\xc3\xa9\\xc3");          // valid, then cut short
}

TEST(DisplayPath, EveryByteValueGivesOnePrintableLine) {
  for (int c = 1; c < 256; ++c) {
    std::string raw = "x" + std::string(1, static_cast<char>(c)) + "y";
    std::string shown = display_path(raw);
    EXPECT_FALSE(has_raw_control_bytes(shown)) << "byte " << c;
    EXPECT_TRUE(valid_utf8(shown)) << "byte " << c;
  }
}

TEST(DisplayPath, C1ControlCharactersAreNotPassedToTheTerminal) {
  // U+009B is CSI on terminals that honour C1 controls; U+0085 is NEL (next line). Both are valid
  // UTF-8 but not printable: the header promises only printable UTF-8 passes unchanged.
  for (const char* c1 : {"\xc2\x9b", "\xc2\x85", "\xc2\x80", "\xc2\x9f"}) {
    std::string shown = display_path(std::string("a") + c1 + "b");
    EXPECT_EQ(shown.find(c1), std::string::npos) << "C1 control passed through raw: " << shown;
  }
  // U+00A0 (the first code point after the C1 block) is printable and passes.
  EXPECT_EQ(display_path("a\xc2\xa0z"), "a\xc2\xa0z");
}

// A name with a line or paragraph separator is one line for every reader of lines (Python's
// splitlines() ended it there), and one with a bidirectional control shows as itself, not
// reordered (`x<U+202E>txt.exe` showed as `xexe.txt`): escaped byte by byte, as `ls -b` does.
TEST(DisplayPath, LineSeparatorsAndBidiControlsAreEscaped) {
  EXPECT_EQ(display_path("a\xe2\x80\xa8" "b"), "a\\xe2\\x80\\xa8" "b");  // U+2028
  EXPECT_EQ(display_path("a\xe2\x80\xa9" "b"), "a\\xe2\\x80\\xa9" "b");  // U+2029
  EXPECT_EQ(display_path("x\xe2\x80\xaetxt.exe"), "x\\xe2\\x80\\xaetxt.exe");  // U+202E
  for (const char* bidi : {"\xe2\x80\x8e", "\xe2\x80\x8f", "\xe2\x80\xaa", "\xe2\x81\xa6", "\xe2\x81\xa9"}) {
    std::string shown = display_path(std::string("a") + bidi + "b");
    EXPECT_EQ(shown.find(bidi), std::string::npos) << "passed through raw: " << shown;
  }
  // Their neighbours are printable and pass: U+2027, U+202F, U+2065 is unassigned, U+206A.
  for (const char* fine : {"\xe2\x80\xa7", "\xe2\x80\xaf", "\xe2\x81\xaa", "\xe2\x80\x8b"}) {
    EXPECT_EQ(display_path(std::string("a") + fine + "b"), std::string("a") + fine + "b");
  }
}

// ---- valid_utf8 / json_path -------------------------------------------------------------------

TEST(ValidUtf8, AcceptsWellFormedAndRejectsMalformedSequences) {
  EXPECT_TRUE(valid_utf8(""));
  EXPECT_TRUE(valid_utf8("plain"));
  EXPECT_TRUE(valid_utf8("\xc3\xa9\xe6\x97\xa5\xf0\x9f\x93\xb7"));
  EXPECT_TRUE(valid_utf8("\xf4\x8f\xbf\xbf"));  // U+10FFFF
  EXPECT_FALSE(valid_utf8("\xff"));
  EXPECT_FALSE(valid_utf8("\xc0\x80"));
  EXPECT_FALSE(valid_utf8("\xe0\x80\x80"));
  EXPECT_FALSE(valid_utf8("\xed\xa0\x80"));
  EXPECT_FALSE(valid_utf8("\xf4\x90\x80\x80"));
  EXPECT_FALSE(valid_utf8("\xe6\x97"));
}

TEST(JsonPath, ValidUtf8IsLeftAlone) {
  EXPECT_EQ(json_path("dir/caf\xc3\xa9"), "dir/caf\xc3\xa9");
  EXPECT_EQ(json_path("\xe6\x97\xa5\xe6\x9c\xac"), "\xe6\x97\xa5\xe6\x9c\xac");
  EXPECT_EQ(json_path("a\nb"), "a\nb");  // JSON itself escapes it
  EXPECT_EQ(json_path("a\\b"), "a\\b");
}

TEST(JsonPath, InvalidBytesBecomeHexEscapes) {
  EXPECT_EQ(json_path("bad\xff"), "bad\\xff");
  EXPECT_EQ(json_path("\xfe\xff"), "\\xfe\\xff");
  EXPECT_EQ(json_path("caf\xc3\xa9\xff"), "caf\xc3\xa9\\xff");  // the valid part stays readable
  EXPECT_TRUE(valid_utf8(json_path("x\x80\xc3\xe6\x97")));
}

TEST(JsonPath, BackslashIsDoubledWhenThePathNeededEscapes) {
  EXPECT_EQ(json_path("a\\b\xff"), "a\\\\b\\xff");
}

// ---- summary_line -------------------------------------------------------------------------------

TEST(SummaryLine, CountsBytesTimeRateWorkersAndErrors) {
  Stats s;
  s.files_copied = 10;
  s.dirs_created = 2;
  s.links_copied = 1;
  s.bytes_copied = 4096;
  s.elapsed_s = 1;
  s.workers = 4;
  EXPECT_EQ(summary_line(s, false, false),
            "pcopy: copied 10 files, 2 dirs, 1 link, 4.0 KiB in 0:01 (4.0 KiB/s), 4 workers, 0 errors");
}

TEST(SummaryLine, SingularsSkippedDeletedInterruptedAndDryRun) {
  Stats s;
  s.files_copied = 1;
  s.dirs_created = 1;
  s.links_copied = 0;
  s.bytes_copied = 0;
  s.workers = 1;
  s.files_skipped = 1234;
  s.files_deleted = 3;
  s.errors.add("x", "Permission denied");
  s.interrupted = true;
  EXPECT_EQ(summary_line(s, true, true),
            "pcopy: interrupted: copied 1 file, 1 dir, 0 links, 0 B in 0:00 (0 B/s), 1 worker, 1 error, 1,234 "
            "skipped, 3 deleted");
  s.interrupted = false;
  s.dry_run = true;
  s.bytes_copied = 4096;
  s.elapsed_s = 1;
  // Nothing was moved: no rate (RRR).
  EXPECT_EQ(summary_line(s, false, false),
            "pcopy: would copy 1 file, 1 dir, 0 links, 4.0 KiB in 0:01, 1 worker, 1 error");
}

// ---- json_report -------------------------------------------------------------------------------

TEST(JsonReport, ParsesBackWithExactlyTheSpecFieldNames) {
  Stats s;
  s.files_copied = 7;
  s.files_skipped = 2;
  s.files_deleted = 1;
  s.dirs_created = 3;
  s.links_copied = 4;
  s.bytes_copied = 5'000'000'000ull;
  s.elapsed_s = 2.5;
  s.workers = 8;
  s.interrupted = false;
  s.exit_status = 1;
  s.errors.add("dir/file.txt", "Permission denied");
  nlohmann::json j = nlohmann::json::parse(json_report(s));
  ASSERT_TRUE(j.is_object());
  EXPECT_EQ(keys_of(j), (std::set<std::string>{"files_copied", "files_skipped", "files_deleted", "dirs_created",
                                                "links_copied", "bytes_copied", "elapsed_s", "workers",
                                                "interrupted", "dry_run", "exit_status", "errors", "warnings"}));
  EXPECT_EQ(j["files_copied"].get<uint64_t>(), 7u);
  EXPECT_EQ(j["files_skipped"].get<uint64_t>(), 2u);
  EXPECT_EQ(j["files_deleted"].get<uint64_t>(), 1u);
  EXPECT_EQ(j["dirs_created"].get<uint64_t>(), 3u);
  EXPECT_EQ(j["links_copied"].get<uint64_t>(), 4u);
  EXPECT_EQ(j["bytes_copied"].get<uint64_t>(), 5'000'000'000ull);
  EXPECT_DOUBLE_EQ(j["elapsed_s"].get<double>(), 2.5);
  EXPECT_EQ(j["workers"].get<unsigned>(), 8u);
  ASSERT_TRUE(j["interrupted"].is_boolean());
  EXPECT_FALSE(j["interrupted"].get<bool>());
  EXPECT_EQ(j["exit_status"].get<int>(), 1);
  ASSERT_TRUE(j["errors"].is_array());
  ASSERT_EQ(j["errors"].size(), 1u);
  EXPECT_EQ(keys_of(j["errors"][0]), (std::set<std::string>{"path", "reason"}));
  EXPECT_EQ(j["errors"][0]["path"], "dir/file.txt");
  EXPECT_EQ(j["errors"][0]["reason"], "Permission denied");
  EXPECT_EQ(j["warnings"], nlohmann::json::array());
}

TEST(JsonReport, NoErrorsIsAnEmptyListAndInterruptedIsTrueWhenSet) {
  Stats s;
  s.interrupted = true;
  s.exit_status = 130;
  nlohmann::json j = nlohmann::json::parse(json_report(s));
  EXPECT_TRUE(j["errors"].is_array());
  EXPECT_TRUE(j["errors"].empty());
  EXPECT_EQ(j["interrupted"], true);
  EXPECT_EQ(j["exit_status"], 130);
}

TEST(JsonReport, ErrorPathsOfAnyBytesAreKeptAndReadable) {
  Stats s;
  s.errors.add("bad\xffname", "Input/output error");
  s.errors.add("line\nbreak", "No such file or directory");
  s.errors.add("\xe6\x97\xa5\xe6\x9c\xac/caf\xc3\xa9", "Permission denied");
  s.errors.add(std::string("nul\0in", 6), "Invalid argument");
  std::string text = json_report(s);
  nlohmann::json j = nlohmann::json::parse(text);
  ASSERT_EQ(j["errors"].size(), 4u);
  EXPECT_EQ(j["errors"][0]["path"], "bad\\xffname");
  EXPECT_EQ(j["errors"][1]["path"], "line\nbreak");
  EXPECT_EQ(j["errors"][2]["path"], "\xe6\x97\xa5\xe6\x9c\xac/caf\xc3\xa9");
  EXPECT_EQ(j["errors"][3]["path"].get<std::string>(), std::string("nul\0in", 6));
  EXPECT_EQ(j["errors"][0]["reason"], "Input/output error");
}

// The report on a terminal (`--json`) or split into lines: DEL, the C1 controls (CSI, NEL), the
// line and paragraph separators and the bidirectional controls are written \\uXXXX, the same
// string to a parser. They went out raw, a live command for a terminal that honours C1.
TEST(JsonReport, CharactersATerminalOrALineReaderActsOnAreWrittenAsEscapes) {
  Stats s;
  const std::vector<std::string> names = {"c1\xc2\x9b" "2J", "nel\xc2\x85x", "del\x7fx", "ls\xe2\x80\xa8x",
                                          "rlo\xe2\x80\xaetxt.exe", "caf\xc3\xa9"};
  for (const std::string& name : names) s.errors.add(name, "Permission denied");
  s.warnings.add("w\xc2\x9b", "vanished");
  std::string text = json_report(s);
  for (const char* raw : {"\xc2\x9b", "\xc2\x85", "\x7f", "\xe2\x80\xa8", "\xe2\x80\xae"})
    EXPECT_EQ(text.find(raw), std::string::npos) << "written raw: " << text;
  EXPECT_NE(text.find("c1\\u009b2J"), std::string::npos) << text;
  EXPECT_NE(text.find("ls\\u2028x"), std::string::npos) << text;
  EXPECT_NE(text.find("caf\xc3\xa9"), std::string::npos) << "printable UTF-8 stays as it is: " << text;
  nlohmann::json j = nlohmann::json::parse(text);
  ASSERT_EQ(j["errors"].size(), names.size());
  for (size_t i = 0; i < names.size(); ++i) {
    EXPECT_EQ(j["errors"][i]["path"], names[i]);
    EXPECT_FALSE(j["errors"][i].contains("path_escaped")) << "the name is exact: " << names[i];
  }
  EXPECT_EQ(j["warnings"][0]["path"], "w\xc2\x9b");
}

// The errors are written into the report one by one; the text is what one JSON tree would print.
TEST(JsonReport, ErrorsAreLaidOutAsTheWholeTreeWouldBe) {
  Stats s;
  s.exit_status = 1;
  s.errors.add("a/b", "Permission denied");
  s.errors.add("bad\xffname", "Input/output error");
  s.errors.add("", "stopped: No space left on device: the remaining entries were not copied");
  s.errors.add("c", "Permission denied");
  nlohmann::json errors = nlohmann::json::array();
  errors.push_back({{"path", "a/b"}, {"reason", "Permission denied"}});
  errors.push_back({{"path", "bad\\xffname"}, {"path_escaped", true}, {"reason", "Input/output error"}});
  errors.push_back({{"path", ""}, {"reason", "stopped: No space left on device: the remaining entries were not copied"}});
  errors.push_back({{"path", "c"}, {"reason", "Permission denied"}});
  s.warnings.add("sock", "socket skipped");
  s.warnings.add("", "started 1 of 2 worker processes: Resource temporarily unavailable");
  nlohmann::json warnings = nlohmann::json::array();
  warnings.push_back({{"path", "sock"}, {"reason", "socket skipped"}});
  warnings.push_back({{"path", ""}, {"reason", "started 1 of 2 worker processes: Resource temporarily unavailable"}});
  nlohmann::json whole = {
      {"files_copied", 0}, {"files_skipped", 0}, {"files_deleted", 0}, {"dirs_created", 0},
      {"links_copied", 0}, {"bytes_copied", 0},  {"elapsed_s", 0.0},   {"workers", 0},
      {"interrupted", false}, {"dry_run", false}, {"exit_status", 1}, {"errors", errors}, {"warnings", warnings},
  };
  EXPECT_EQ(json_report(s), whole.dump(2));
  EXPECT_EQ(s.errors.size(), 4u);
  s = Stats{};
  EXPECT_EQ(json_report(s), nlohmann::json::parse(json_report(s)).dump(2)) << "empty lists";
}

// ---- Manifest -------------------------------------------------------------------------------

TEST(Hash, Xxh3With128BitsOfEmptyInputIsTheKnownValue) {
  Hasher h;
  EXPECT_EQ(to_hex(h.digest()), "99aa06d3014798d86001c324468d497f");
}

UniqueFd writable(const std::string& path) {
  return UniqueFd(::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0666));
}

TEST(Manifest, WritesOneParsableLinePerFileWithSpecFields) {
  TempDir tmp;
  std::string path = tmp / "manifest.jsonl";
  const std::string data = "hello, manifest\n";
  {
    Manifest m;
    EXPECT_FALSE(m.is_open());
    ASSERT_EQ(m.open(writable(path)), 0);
    EXPECT_TRUE(m.is_open());
    m.add("docs/readme.txt", data.size(), 1'700'000'000'123'456'789, hash_of(data));
    m.add("empty", 0, -1'500'000'000, hash_of(""));
    m.add("bad\xffname", 3, 0, hash_of("abc"));
    EXPECT_EQ(m.close(), 0);
    EXPECT_FALSE(m.is_open());
  }
  std::vector<std::string> lines = lines_of(pcopy_test::read_file(path));
  ASSERT_EQ(lines.size(), 3u);
  std::vector<nlohmann::json> js;
  for (const auto& line : lines) js.push_back(nlohmann::json::parse(line));
  for (const auto& j : js) {
    std::set<std::string> keys{"path", "size", "mtime_ns", "xxh128"};
    if (&j == &js[2]) keys.insert("path_escaped");  // the one path that is not valid UTF-8
    EXPECT_EQ(keys_of(j), keys);
    std::string hex = j["xxh128"].get<std::string>();
    EXPECT_EQ(hex.size(), 32u);
    EXPECT_EQ(hex.find_first_not_of("0123456789abcdef"), std::string::npos) << hex;
  }
  EXPECT_EQ(js[0]["path"], "docs/readme.txt");
  EXPECT_EQ(js[0]["size"].get<uint64_t>(), data.size());
  EXPECT_EQ(js[0]["mtime_ns"].get<int64_t>(), 1'700'000'000'123'456'789);
  EXPECT_EQ(js[0]["xxh128"], to_hex(hash_of(data)));
  EXPECT_EQ(js[1]["path"], "empty");
  EXPECT_EQ(js[1]["size"].get<uint64_t>(), 0u);
  EXPECT_EQ(js[1]["mtime_ns"].get<int64_t>(), -1'500'000'000);
  EXPECT_EQ(js[1]["xxh128"], "99aa06d3014798d86001c324468d497f");
  EXPECT_EQ(js[2]["path"], "bad\\xffname");
  EXPECT_EQ(js[2]["path_escaped"], true);
  EXPECT_EQ(js[2]["xxh128"], to_hex(hash_of("abc")));
}

// The file is opened before the run may be refused and emptied only when the run starts.
TEST(Manifest, OpenEmptiesWhatTheFileHeld) {
  TempDir tmp;
  std::string path = tmp / "m";
  pcopy_test::write_file(path, "last night's manifest, longer than tonight's\n");
  {
    Manifest m;
    ASSERT_EQ(m.open(writable(path)), 0);
    m.add("a", 1, 2, hash_of("x"));
    ASSERT_EQ(m.close(), 0);
  }
  EXPECT_EQ(lines_of(pcopy_test::read_file(path)).size(), 1u);
  Manifest bad;
  EXPECT_EQ(bad.open(UniqueFd()), EBADF);
  EXPECT_FALSE(bad.is_open());
  EXPECT_EQ(bad.close(), 0);
}

TEST(Manifest, PathWithNewlineStaysOnOneLine) {
  TempDir tmp;
  std::string path = tmp / "m";
  // U+2028, U+2029 and U+0085 (NEL) end a line for Python's splitlines() too.
  const std::vector<std::string> names = {"a\nb", "c\xe2\x80\xa8" "d", "e\xe2\x80\xa9" "f", "g\xc2\x85h"};
  {
    Manifest m;
    ASSERT_EQ(m.open(writable(path)), 0);
    for (const std::string& name : names) m.add(name, 1, 2, hash_of("x"));
    ASSERT_EQ(m.close(), 0);
  }
  std::string text = pcopy_test::read_file(path);
  for (const char* raw : {"\xe2\x80\xa8", "\xe2\x80\xa9", "\xc2\x85"})
    EXPECT_EQ(text.find(raw), std::string::npos) << "written raw: " << text;
  std::vector<std::string> lines = lines_of(text);
  ASSERT_EQ(lines.size(), names.size());
  for (size_t i = 0; i < names.size(); ++i) EXPECT_EQ(nlohmann::json::parse(lines[i])["path"], names[i]);
}
