// upgrade_state.hpp — the in-place upgrade's hand-over format (SPEC: USR2).
//
// The running preforkd writes its whole state (workers and slots, timers,
// sockets and pipes by fd number, counters, the configuration texts it runs)
// as one JSON document into a memfd, and re-execs its binary with
// `--upgrade-state FD`. The format is versioned: a binary accepts only the
// versions it knows, and the old binary runs the new one in check mode
// (`--upgrade-check`) on the very document before it execs, so an
// incompatible or broken new binary is refused while the old one still runs.
#pragma once

#include <nlohmann/json.hpp>

#include <map>
#include <optional>
#include <string>

#include "config/config.hpp"

namespace preforkd::daemon {

inline constexpr const char* kStateFormat = "preforkd-state";
// 2: every enum is written by name ("ready", "up", "recycle", "notify"...),
// never as a number, so a renumbering between versions cannot corrupt an
// upgrade; version 1 (numbers) is refused.
inline constexpr int kStateVersion = 2;

// A worker pipe's kind by name: "notify", "stdout", "stderr" (0, 1, 2).
const char* pipe_kind_name(int kind);
std::optional<int> pipe_kind_from(const std::string& name);

// Reads the whole document from `fd` (from offset 0). nullopt + `error` if it
// cannot be read or is not JSON.
std::optional<nlohmann::json> read_state(int fd, std::string& error);
// The same from the text (pure: the part the fuzzer feeds).
std::optional<nlohmann::json> parse_state(const std::string& text, std::string& error);

// A new memfd holding `state` (close-on-exec, offset 0). Throws sys::SysError.
int write_state(const nlohmann::json& state);

// Checks the document's shape and parses every configuration text in it
// with this binary's loader. Returns the configurations by generation, or
// nullopt + `error` naming what is wrong.
std::optional<std::map<uint64_t, config::Config>> validate_state(const nlohmann::json& state,
                                                                 const config::LoadOptions& options,
                                                                 std::string& error);

}  // namespace preforkd::daemon
