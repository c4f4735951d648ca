// pcopy: parse the command line, run, exit with the status SPEC defines.
#include <fmt/core.h>

#include <cerrno>
#include <exception>
#include <new>

#include "pcopy/cli.hpp"
#include "pcopy/fd.hpp"
#include "pcopy/report.hpp"
#include "pcopy/run.hpp"
#include "pcopy/signals.hpp"

int main(int argc, char** argv) {
  pcopy::block_signals();  // read once the run watches them: none ends pcopy before its report
  pcopy::reserve_standard_fds();
  pcopy::count_inherited_fds();
  pcopy::CliResult cli = pcopy::parse_cli(argc, argv);
  if (!cli.options) {
    pcopy::unblock_signals();
    return cli.exit_status;
  }
  try {
    return pcopy::run(*cli.options);
  } catch (const std::bad_alloc&) {
    pcopy::print_refusal("pcopy: " + pcopy::errno_text(ENOMEM), "", cli.options->json, 0, cli.options->dry_run);
    return pcopy::kExitRefused;
  } catch (const std::exception& e) {
    pcopy::print_refusal(fmt::format("pcopy: {}", e.what()), "", cli.options->json, 0, cli.options->dry_run);
    return pcopy::kExitRefused;
  }
}
