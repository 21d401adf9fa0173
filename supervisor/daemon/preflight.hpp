// preflight.hpp — what `preforkd -t` warns about: the parts of a valid
// configuration that will fail at run time for the user preforkd runs as
// (issue #15: a non-root `-t` said "ok", then the run failed).
//
// Owns: the checks and their wording (the key path, what is asked, what
// will fail). Facts about the system come in as PreflightFacts, so the
// checks are pure and unit-tested; system_facts() gathers the real ones
// (sys/privileges, sys/identity, sys/runtime_dir).
// Must never: fail the check (a warning only: the file is valid, and the
// same file may be meant for root), or change anything on the system.
#pragma once

#include <sys/types.h>

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "config/config.hpp"
#include "sys/identity.hpp"
#include "sys/privileges.hpp"

namespace preforkd::daemon {

struct PreflightFacts {
  sys::Privileges privileges;
  std::function<std::optional<sys::UserInfo>(const std::string&)> user;
  std::function<std::optional<gid_t>(const std::string&)> group;
  std::function<std::string(const std::string& dir)> cannot_create_in;     // "" = fine
  std::function<std::string(const std::string& file)> cannot_write_file;   // "" = fine
  // The runtime folder check (sys::check_private_dir without creating).
  std::function<std::string(const std::string& dir)> private_dir_problem;  // "" = fine
  std::string runtime_dir;  // sys::runtime_dir(): the default control socket's folder
};

PreflightFacts system_facts(const std::string& runtime_dir);

// One line per problem, "programs.web.user: ...". `pidfile` is --pidfile
// (it overrides supervisor.pidfile).
std::vector<std::string> preflight(const config::Config& config, const std::optional<std::string>& pidfile,
                                   const PreflightFacts& facts);

}  // namespace preforkd::daemon
