// operation.hpp — control operations that answer when they have finished.
//
// Owns: when a pending `preforkctl stop` or `scale` has finished or failed
// (SPEC: restart, scale, reload and stop reply when their operation has
// finished, so scripts can chain them), and when a reload has: every
// program it touched is rolled out, scaled and ready, or has failed. Pure
// predicates over ProgramState; Policy::tick asks them after every event.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "core/action.hpp"
#include "core/program.hpp"

namespace preforkd::core {

struct PendingOp {
  enum class Kind { Stop, Scale };
  Kind kind = Kind::Stop;
  ProgramId program = 0;
  size_t target = 0;  // Scale
  ClientId client = 0;
};

// The answer, once the operation has finished (ok) or failed; nullopt while it runs.
struct OpResult {
  bool ok = false;
  std::string text;
};
std::optional<OpResult> check_operation(const PendingOp& op, const ProgramState& p);

// A reload being carried out (HUP or `preforkctl reload`). At most one runs;
// requests arriving meanwhile are queued and coalesced into one more.
struct ReloadRun {
  uint64_t generation = 0;
  std::vector<ClientId> clients;
  std::vector<std::string> touched;   // programs whose new workers must come up
  std::vector<std::string> failures;  // "<program>: why"
  std::string summary;
  TimePoint started{};
};

// nullopt while some touched program is still rolling out, being removed or
// starting; else the failures (empty: the reload succeeded).
std::optional<std::vector<std::string>> check_reload(const ReloadRun& run, const Programs& programs);

}  // namespace preforkd::core
