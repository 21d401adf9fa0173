// config_fuzz — preforkd.yaml text in (config::load_string), as `preforkd -t`,
// a SIGHUP reload and the USR2 state's configuration texts read it.
//
// What must hold for any text: no exception, no hang (libFuzzer -timeout), no
// unbounded memory (-rss_limit_mb), and a result that is either a Config or
// at least one diagnostic with a message, never both.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "config/config.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  preforkd::config::LoadOptions options;
  options.check_executables = false;  // no file system walk per input
  const preforkd::config::LoadResult r = preforkd::config::load_string(text, "fuzz.yaml", options);
  if (r.config.has_value() == !r.errors.empty()) std::abort();
  for (const auto& d : r.errors) {
    if (d.message.empty() || d.line < 0 || d.column < 0) std::abort();
    if (d.to_string().empty()) std::abort();
  }
  return 0;
}
