// Everything the user asked for, as parsed from the command line. Plain data: the CLI fills it,
// the run reads it, tests build it directly.
#pragma once

#include <string>
#include <vector>

#include "pcopy/filter.hpp"

namespace pcopy {

enum class ProgressMode { Auto, Always, Never };
enum class ReflinkMode { Auto, Always, Never };

struct Options {
  std::string src;
  std::string dst;  // empty when omitted: "<src>-copy" is used
  unsigned jobs = 1;

  // What to keep.
  bool archive = false;
  bool dereference = false;
  bool one_file_system = false;

  // Which entries to write.
  bool update = false;
  bool checksum = false;
  bool ignore_existing = false;
  bool delete_extraneous = false;
  Filters filters;

  // Safety and speed.
  bool dry_run = false;
  bool verify = false;
  bool fsync = false;
  bool inplace = false;
  ReflinkMode reflink = ReflinkMode::Auto;
  bool copy_file_range = true;  // --no-copy-file-range turns the kernel copy off (plain read/write)
  bool io_uring = true;         // --no-io-uring: small files one system call at a time

  // Output.
  ProgressMode progress = ProgressMode::Auto;
  bool quiet = false;
  bool verbose = false;
  bool json = false;
  std::string manifest;        // the file written: "/dev/stdout" for `--manifest -`
  std::string manifest_given;  // as given ("-"), if the command line gave it
  bool fail_fast = false;

  // The manifest as messages name it: as the user gave it.
  const std::string& manifest_shown() const { return manifest_given.empty() ? manifest : manifest_given; }
};

}  // namespace pcopy
