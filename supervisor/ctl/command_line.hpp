// command_line.hpp — the preforkctl command line (Boost.Program_options) and
// the control request it turns into.
//
// Owns: which commands exist, how many arguments each takes, and the JSON
// request each one sends (SPEC "Control socket and preforkctl").
// Must never: touch a file or a socket; everything here is argv in, values out,
// so that every usage error (exit 2) is decided before preforkd is contacted.
// Traps: a worker count is a whole number without sign or suffix ("3", not
// "+3" or "3.0"); a signal is checked against the same table as the config
// (config::parse_signal) and sent under its canonical name ("HUP").
#pragma once

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>

#include <nlohmann/json.hpp>

namespace preforkd::ctl {

inline constexpr const char* kDefaultConfig = "/etc/preforkd/preforkd.yaml";

// A bad command line: preforkctl prints the message and exits 2.
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// One control command, validated.
struct Request {
  std::string command;   // "status", "scale", ...
  std::string program;   // scale, restart, stop, start, signal
  uint32_t workers = 0;  // scale
  std::string signal;    // signal: canonical name without SIG ("HUP")
};

struct Options {
  std::optional<std::string> socket;  // -s: wins over the config file
  std::optional<std::string> config;  // -c as given; unset = kDefaultConfig
  bool json = false;
  bool help = false;
  bool version = false;
  Request request;  // empty command only with help or version
};

// Throws UsageError for an unknown option or command, a wrong number of
// arguments, a bad worker count or an unknown signal.
Options parse_preforkctl_options(int argc, const char* const* argv);

// The -h text: synopsis, every command, options, exit codes.
std::string preforkctl_usage();

// The one-line JSON object sent to preforkd, e.g.
// {"cmd":"scale","program":"echo","workers":3}.
nlohmann::json to_json(const Request& request);

// True for the commands preforkd answers only once the operation has finished
// (restart, scale, reload, stop, start): the client waits for them without a
// timeout.
bool waits_for_completion(const Request& request);

}  // namespace preforkd::ctl
