// control_fuzz — one request line from a control-socket client
// (daemon::parse_control_request), and the error reply it may get: any
// bytes, including invalid UTF-8 echoed back in "unknown command `...`".
//
// What must hold: no exception; a request names a known command, with
// its program and a workers count in range where the command needs them.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <variant>

#include "daemon/control_protocol.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view line(reinterpret_cast<const char*>(data), size);
  auto parsed = preforkd::daemon::parse_control_request(line);
  if (auto* error = std::get_if<std::string>(&parsed)) {
    if (error->empty()) std::abort();
    if (preforkd::daemon::reply_error(*error).empty()) std::abort();
    return 0;
  }
  const auto& r = std::get<preforkd::daemon::ControlRequest>(parsed);
  if (r.cmd.empty()) std::abort();
  if (r.cmd == "scale" && (r.workers < 0 || r.workers > 10000)) std::abort();
  if (r.cmd == "signal" && r.signal.empty()) std::abort();
  return 0;
}
