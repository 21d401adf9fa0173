// client.hpp — one request/reply exchange over preforkd's control socket.
//
// Owns: the client half of the control protocol: connect to the unix stream
// socket, write one JSON object and a newline, read one line back, parse it.
// Must never: hang forever on a peer that accepts nothing (connect and send
// are bounded by kConnectTimeout), die of SIGPIPE (MSG_NOSIGNAL), or grow
// without bound on a peer that never ends its line (kMaxReply).
// Traps: preforkd may close right after refusing a peer ("permission denied"),
// so a failed send still reads the reply before giving up.
#pragma once

#include <chrono>
#include <cstddef>
#include <optional>
#include <stdexcept>
#include <string>

#include <nlohmann/json.hpp>

namespace preforkd::ctl {

inline constexpr std::size_t kMaxReply = 16u << 20;  // 16 MiB
inline constexpr std::chrono::seconds kConnectTimeout{10};
inline constexpr std::chrono::seconds kReplyTimeout{10};  // for the commands that answer at once

// preforkd cannot be reached, or gave no usable reply: preforkctl prints the
// message and exits 3. The message is complete ("cannot reach preforkd at
// /run/x.sock: No such file or directory").
class UnreachableError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct Reply {
  std::string line;    // the reply as received, without its newline
  nlohmann::json body; // the parsed object; body["ok"] is a boolean
};

// Sends `request` to the socket at `path` and returns preforkd's reply,
// waiting at most `timeout` for it (nullopt: as long as it takes).
// Throws UnreachableError.
Reply exchange(const std::string& path, const nlohmann::json& request,
               std::optional<std::chrono::milliseconds> timeout);

// Parses one reply line; a reply must be a JSON object with a boolean "ok".
// Throws UnreachableError naming `path`.
Reply parse_reply(const std::string& path, std::string line);

}  // namespace preforkd::ctl
