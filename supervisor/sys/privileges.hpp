// privileges.hpp — what this process may do, for `preforkd -t` to say in
// advance what would fail at run time (daemon/preflight).
//
// Owns: the facts (effective ids, the three capabilities that matter, the
// kernel's unprivileged port floor, whether a folder or file may be
// written). Must never: decide anything; the preflight does.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>

namespace preforkd::sys {

struct Privileges {
  uid_t euid = 0;
  gid_t egid = 0;
  bool setuid = false;            // CAP_SETUID in the effective set
  bool setgid = false;            // CAP_SETGID
  bool net_bind_service = false;  // CAP_NET_BIND_SERVICE
  // net.ipv4.ip_unprivileged_port_start (1024 when it cannot be read): a
  // port below it needs CAP_NET_BIND_SERVICE, for IPv6 too.
  unsigned unprivileged_port_start = 1024;
};

// The `CapEff:` mask of a /proc/<pid>/status text; nullopt without one.
std::optional<uint64_t> parse_cap_eff(const std::string& status_text);
// Capability numbers (linux/capability.h), for parse_cap_eff's mask.
inline constexpr int kCapSetgid = 6;
inline constexpr int kCapSetuid = 7;
inline constexpr int kCapNetBindService = 10;

// Ours, read from /proc/self/status and /proc/sys (no capability library).
Privileges current_privileges();

// "" when this process (effective ids) could create an entry in `dir`,
// making the missing folders on the way; otherwise why not: "/run: Permission
// denied". Read-only file systems count (EROFS).
std::string cannot_create_in(const std::string& dir);
// "" when `file` could be opened for writing (an existing file) or created.
std::string cannot_write_file(const std::string& file);

}  // namespace preforkd::sys
