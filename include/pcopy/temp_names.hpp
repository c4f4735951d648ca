// Temporary names: what pcopy calls a file or directory until it is complete, the run a name is of,
// and the leftovers of runs that were interrupted.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace pcopy {

// Temporaries are ".pcopy-<pid>-<n>.tmp" in the destination directory: recognisable, so a later run
// can remove what an interrupted one left behind. <n> is temp_number(): it also names the run.
inline constexpr std::string_view kTempPrefix = ".pcopy-";
inline constexpr std::string_view kTempSuffix = ".tmp";
// The name of process `pid`'s `count`th temporary in this run: ".pcopy-<pid>-<n>.tmp", or for a
// directory staged under it ".pcopy-<pid>-d<n>.tmp"; <n> is temp_number(secret_count(secret, count)).
std::string temp_name(pid_t pid, bool staged, bool secret, uint64_t count);
// What the names of process `pid`'s temporaries begin with: ".pcopy-<pid>-".
std::string temp_prefix(pid_t pid);
// The parts of a name temp_name() makes, read back by a later run (numbers too long saturate).
struct TempName {
  uint64_t pid = 0;
  bool staged = false;
  uint64_t number = 0;  // <n>
};
// Exactly the names temp_name() makes: nullopt for any other (a user's ".pcopy-notes.tmp").
std::optional<TempName> parse_temp_name(std::string_view name);
inline bool is_temp_name(std::string_view name) { return parse_temp_name(name).has_value(); }
// The <n> of this run's `count`th temporary: count + a number drawn for the run times 10^9, so that
// its names differ from those a process with the same pid left (pids repeat, in containers each run).
std::string temp_number(uint64_t count);
// `count`, or where a temporary's name is a secret (a directory that hides_names()) a number drawn
// at random, so that its name cannot be worked out from another temporary's: temp_number(secret_count(...)).
uint64_t secret_count(bool secret, uint64_t count);
// A staged directory's name: ".pcopy-<pid>-d<n>.tmp" (see Walker).
inline bool is_staged_name(std::string_view name) {
  auto parts = parse_temp_name(name);
  return parts && parts->staged;
}
// Whether a temporary's name is one this run made (its <n> names this run; see temp_number).
bool made_by_this_run(std::string_view temp_name);
// Whether the pcopy process whose pid a temporary's name holds is still running: then the temporary
// is in use by a concurrent run, not a leftover. A zombie, a pid now used by another program, or a
// name without a pid: false. The pid of this run's parent or of one of its workers: if this run
// made it (see temp_number), or it changed since a few seconds before this run started (`dir`
// holds it).
bool temp_in_use(int dir, std::string_view name);
// Removes the temporaries in `dir` (an open directory) for which `which(name)` holds: files, and
// staged directories (with what is in them). `which` is asked of those alone.
void remove_temps(int dir, const std::function<bool(std::string_view name)>& which);

}  // namespace pcopy
