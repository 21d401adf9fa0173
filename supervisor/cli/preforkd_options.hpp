// preforkd_options.hpp — the preforkd command line (Boost.Program_options).
// Pure: argv in, Options out; touches no file.
#pragma once

#include <optional>
#include <stdexcept>
#include <string>

namespace preforkd::cli {

struct Options {
  std::string config = "/etc/preforkd/preforkd.yaml";
  bool check = false;
  bool foreground = true;  // there is no self-daemonizing (systemd or the shell does that)
  std::optional<std::string> pidfile;
  std::optional<std::string> log_level;
  std::optional<int> upgrade_state;  // --upgrade-state FD (USR2 hand-over)
  bool upgrade_check = false;        // --upgrade-check
  bool help = false;
  bool version = false;
};

class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Throws UsageError (exit 2) for an unknown option, a missing value or a bad level.
Options parse_preforkd_options(int argc, const char* const* argv);

std::string preforkd_usage();

}  // namespace preforkd::cli
