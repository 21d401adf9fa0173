// config_diff.hpp — what a reload changes (SPEC "Signals to preforkd": HUP).
//
// Owns: the comparison of the running configuration with a new one, program
// by program, and the rule that says which keys replace workers and which
// apply in place (each key's row in config/schema.cpp). Pure: two Configs in,
// a plan out; the daemon carries it out.
// Must never: touch the system.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "config/config.hpp"

namespace preforkd::core {

struct ProgramDiff {
  enum class Kind { Added, Removed, Changed, Unchanged };
  Kind kind = Kind::Unchanged;
  std::string name;
  // Keys whose change alters how a worker is started (command, environment,
  // user, listen...): every running worker is replaced by a rollout.
  std::vector<std::string> replace;
  // Keys applied in place to the running workers (stop_timeout, backoff...).
  std::vector<std::string> in_place;
  uint32_t workers_before = 0;
  uint32_t workers_after = 0;
  bool replaces_workers() const { return !replace.empty(); }
};

struct ConfigDiff {
  std::vector<ProgramDiff> programs;  // removed ones first, then the new file's order
  // Supervisor keys applied at once (log level and file, shutdown_timeout).
  std::vector<std::string> supervisor_in_place;
  // Supervisor keys a reload cannot change (the control socket and its group,
  // the metrics address, the pidfile): they keep their running value until
  // preforkd is restarted.
  std::vector<std::string> supervisor_kept;
  // Changes a reload refuses (the whole reload fails, nothing is applied).
  std::vector<std::string> errors;
  bool changes_anything() const;
};

ConfigDiff diff(const config::Config& running, const config::Config& next);

// How many workers a batch of `reload.batch` is for a program of `workers`
// workers: the number itself, or the percentage rounded up; at least 1.
uint32_t batch_size(const config::ReloadPolicy& r, uint32_t workers);

}  // namespace preforkd::core
