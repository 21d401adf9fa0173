// runtime_dir.hpp — where preforkd keeps its default control socket, for
// root and for everyone else, and the safety check of that folder.
//
// Owns: the rule (root: /run/preforkd; otherwise $XDG_RUNTIME_DIR/preforkd
// when XDG_RUNTIME_DIR is an absolute path, else /tmp/preforkd-<euid>), used
// alike by preforkd and preforkctl so that the client finds the daemon.
// Traps: /tmp is shared: another user may have made /tmp/preforkd-<uid>
// first (or a symlink by that name) to receive our socket or to answer in
// preforkd's place. The folder is therefore created 0700 and refused unless
// it is a real directory (not a symlink), owned by us, and not writable by
// group or others.
#pragma once

#include <sys/types.h>

#include <string>

namespace preforkd::sys {

inline constexpr const char* kRootRuntimeDir = "/run/preforkd";

// The rule above, without touching the system (unit-tested).
std::string choose_runtime_dir(uid_t euid, const char* xdg_runtime_dir);
// choose_runtime_dir(geteuid(), getenv("XDG_RUNTIME_DIR")).
std::string runtime_dir();

// Checks that `dir` is a private folder of ours (see Traps), creating it
// with mode 0700 first when `create` and it does not exist (its parent must
// exist). Returns "" when it is fine (or, without `create`, absent), else
// why not, naming the folder: "/tmp/preforkd-1000 is owned by uid 0, not by
// uid 1000 (preforkd refuses to use it: remove it or set
// supervisor.control_socket)".
std::string check_private_dir(const std::string& dir, bool create);

}  // namespace preforkd::sys
