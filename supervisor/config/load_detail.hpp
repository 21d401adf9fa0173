// load_detail.hpp — the loader's pure pieces, exposed for unit tests and for
// the daemon (e.g. to name an address the same way in its logs).
//
// Owns: address, path, name and mode rules of preforkd.yaml.
// Must never: be needed to use the loader; load_file()/load_string() in
// config.hpp are the API. Nothing here throws.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.hpp"

namespace preforkd::config::detail {

// sizeof(sockaddr_un::sun_path) - 1: the longest Unix socket path that still
// has room for its terminating NUL.
inline constexpr std::size_t kMaxUnixPath = 107;

// `path` made absolute against `folder` (unless already absolute) and
// lexically normalised ("/a/./b/../c" -> "/a/c"); symlinks are not resolved.
std::string resolve_path(const std::string& folder, const std::string& path);

// Parses a listen address: `host:port` with a numeric IPv4 host, `*:port`
// (0.0.0.0), `localhost:port` (127.0.0.1), `[v6]:port` (numeric), or, when
// `allow_unix`, `unix:/path` (relative paths against `folder`). Port 0..65535.
// Sets family, host (canonical, via inet_ntop), port, path and text; not name.
// On failure returns nullopt and sets `error` to a message starting with
// "bad address `<text>`" or "unix socket path".
std::optional<ListenAddress> parse_address(std::string_view text, const std::string& folder,
                                           bool allow_unix, std::string* error);

// umask as octal digits: "022", "0022", and "22" (a YAML integer 022 or 22
// reaches us as those digits) all mean 0o22. At most 0777.
std::optional<mode_t> parse_umask(std::string_view text, std::string* error);

// [A-Za-z0-9_.-]{1,64}
bool valid_program_name(std::string_view name);
// [A-Za-z_][A-Za-z0-9_]*
bool valid_env_name(std::string_view name);
// LISTEN_*, WATCHDOG_*, NOTIFY_SOCKET and PREFORKD_*: preforkd sets these itself.
bool reserved_env_name(std::string_view name);
// 1..255 printable ASCII characters, no ':' and no space (an LISTEN_FDNAMES entry).
bool valid_socket_name(std::string_view name);

// The process's current directory, or "/" when it cannot be read.
std::string current_dir();

// Finds the file to exec for `command0` (load_detail.cpp): with a
// slash, `folder`-relative or absolute; without, the first executable regular
// file in $PATH (default /usr/local/sbin:...:/bin when unset), then in
// `extra_dirs`. Returns the absolute path, or nullopt and a message such as
// "`nosuch`: not found in $PATH or next to preforkd" in `error`.
std::optional<std::string> find_executable(const std::string& command0, const std::string& folder,
                                           const std::vector<std::string>& extra_dirs,
                                           std::string* error);

}  // namespace preforkd::config::detail
