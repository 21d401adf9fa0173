// upgrade_state_fuzz — the USR2 hand-over document as a new binary reads it
// (daemon::parse_state, then daemon::validate_state, which loads every
// configuration text in it with the config loader).
//
// What must hold: no exception and no crash on any document; a refused
// one says why; an accepted one has the current generation's configuration.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "daemon/upgrade_state.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  std::string error;
  auto state = preforkd::daemon::parse_state(text, error);
  if (!state) {
    if (error.empty()) std::abort();
    return 0;
  }
  preforkd::config::LoadOptions options;
  options.check_executables = false;
  error.clear();
  auto configs = preforkd::daemon::validate_state(*state, options, error);
  if (!configs && error.empty()) std::abort();
  if (configs && configs->count(state->at("generation").get<uint64_t>()) != 1) std::abort();
  return 0;
}
