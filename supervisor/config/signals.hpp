// signals.hpp — signal names as users write them (config, preforkctl) and as
// logs print them.
//
// Owns: the table of the 31 standard Linux signals and their spellings.
// Must never: accept a real-time signal or 0; a stop_signal must be one a
// worker can be expected to handle by name.
#pragma once

#include <optional>
#include <string_view>

namespace preforkd::config {

// "TERM", "SIGTERM", "term", "SigTerm" (case-insensitive, optional SIG
// prefix, also the aliases IOT, POLL, CLD) or a decimal number 1..31.
std::optional<int> parse_signal(std::string_view text);

// "TERM" for SIGTERM, without the SIG prefix; "UNKNOWN" for any number that is
// not one of the standard signals 1..31 (never nullptr, so it is safe to log).
const char* signal_name(int sig);

}  // namespace preforkd::config
