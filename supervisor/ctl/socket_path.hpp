// socket_path.hpp — which control socket preforkctl talks to.
//
// Owns: the rule "-s wins; else supervisor.control_socket of -c CONFIG (default
// /etc/preforkd/preforkd.yaml)", whose default is <runtime dir>/preforkd.sock
// with the runtime dir preforkd would choose for this user (root:
// /run/preforkd; others: $XDG_RUNTIME_DIR/preforkd, else /tmp/preforkd-$UID,
// refused unless private: sys/runtime_dir.hpp; when that user has no
// socket there but /run/preforkd/preforkd.sock exists, that one: a
// control_group member talking to the system's preforkd), and which
// failure of it is whose problem.
// Must never: check that commands are executable or otherwise judge the file
// beyond what preforkd's own loader says: the client only needs one key.
// Traps: a relative control_socket resolves against the config file's folder
// (config::load does that), not against the client's working directory.
#pragma once

#include <string>

#include "ctl/command_line.hpp"

namespace preforkd::ctl {

// A CONFIG given with -c that cannot be loaded (exit 2). what() is the
// loader's diagnostics, one "file:line:col: message" per line.
class ConfigError : public UsageError {
 public:
  using UsageError::UsageError;
};

// The socket path for `options`. Throws ConfigError for an explicit -c that
// cannot be loaded, and UnreachableError ("cannot find the control socket:
// <reason> (use -s SOCKET)") when the default config cannot be.
std::string control_socket_path(const Options& options);

}  // namespace preforkd::ctl
