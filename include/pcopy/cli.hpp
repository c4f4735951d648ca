// The command line: turns argv into Options, or into an exit status (help, version, usage error).
#pragma once

#include <optional>

#include "pcopy/options.hpp"

namespace pcopy {

struct CliResult {
  std::optional<Options> options;  // set when the run should go ahead
  int exit_status = 0;             // otherwise: 0 after --help/--version, 2 after a usage error
};

CliResult parse_cli(int argc, const char* const* argv);

std::string version_string();

}  // namespace pcopy
