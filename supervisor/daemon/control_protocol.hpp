// control_protocol.hpp — control requests and replies as JSON lines
// (nlohmann-json), pure: text in, values out; no fd, no daemon state.
//
// A request is one JSON object per line: {"cmd":"status"}, {"cmd":"scale",
// "program":"echo","workers":4}, ... (SPEC "Control socket"). Anything else —
// not JSON, not an object, an unknown command, a missing or mistyped field —
// is an error string for the reply, never an exception.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <variant>

#include "core/snapshot.hpp"

namespace preforkd::daemon {

struct ControlRequest {
  std::string cmd;      // status stats metrics reload scale restart stop start signal rollback shutdown version
  std::string program;  // scale restart stop start signal rollback
  int64_t workers = -1; // scale: 0..10000
  std::string signal;   // signal: a name ("HUP", "SIGHUP") or a number, as text
};

std::variant<ControlRequest, std::string> parse_control_request(std::string_view line);

// Reply lines (no trailing newline). Text from workers (STATUS=) may be any
// bytes: invalid UTF-8 is replaced, never thrown on.
std::string reply_error(const std::string& message);
std::string reply_ok(const std::string& message = "");
std::string reply_status(const core::Snapshot& s);
std::string reply_stats(const core::Snapshot& s);
std::string reply_version(const core::Snapshot& s);
std::string reply_text(const std::string& text);  // {"ok":true,"text":...} (metrics)

}  // namespace preforkd::daemon
