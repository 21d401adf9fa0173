// lifecycle.hpp — the two program-level state machines, as tables.
//
// A worker's own machine (Backoff … Stopped) is in core/worker.hpp. Above it,
// two small machines replace what used to be loose flags (`retiree`,
// `removing`, `recycle_reason`, an optional rollout):
//
//   Slot phase × event (one slot number of a program)
//   phase ↓ / event →  Replace        Proven        SuccessorFailed  Remove        Reclaim      RetireeGone   Forgotten
//   Active            → Replacing(*)  noop          noop             → Removing    noop         noop          anomaly
//   Replacing         noop            → Active      → Active(take    → Removing    noop         → Active      anomaly
//                                     (stop old)    back the old)    (stop both)
//   Removing          noop            noop          noop             noop          → Active     noop          → (erased)
//   (*) only when the slot's worker is ready: its process is handed over to a
//       retiree that keeps serving, and a successor is spawned in the slot.
//
//   Program phase × event
//   phase ↓ / event →  StartRollout   RolloutEnded  RolloutGuarded  GenerationFailed  RollbackRequested  GuardExpired  Remove       LastProcessGone
//   Running           → RollingOut    anomaly       anomaly         noop (no way back) noop (refused)    noop          → Removing   noop
//   RollingOut        noop (refused)  → Running     → Guarding      → RollingBack      → RollingBack      noop          → Removing   noop
//   Guarding          → RollingOut(*) anomaly       anomaly         → RollingBack      → RollingBack      → Running     → Removing   noop
//   RollingBack       noop (refused)  → Running     anomaly         noop (never loops) noop (refused)    noop          → Removing   noop
//   Removing          noop            noop          noop            noop               noop               noop          noop         → Gone (erased)
//   (*) a reload that replaces the workers ends the guard (its own rollout is
//       guarded from the generation that ran); a restart keeps it.
//   The guard (core/guard.hpp, reload.guard): RolloutGuarded keeps the
//   previous configuration after the rollout; GenerationFailed is a worker
//   the rollout started that failed (as a crash-looping failure: before
//   reset_after of readiness) while the way back is open; RollingBack is a
//   rollout back to the previous configuration, whose own failure leaves the
//   program on it, crash-looping, and never goes forward again.

// Every cell is named (`decision`); a noop cell is never undefined behaviour:
// the caller logs its name (at warn when `anomaly`, a bug elsewhere).
// tests/unit/policy_test.cpp walks every cell and drives the reachable ones.
#pragma once

#include <cstddef>
#include <optional>
#include <string_view>

namespace preforkd::core {

enum class SlotPhase { Active, Replacing, Removing };
enum class SlotEvent { Replace, Proven, SuccessorFailed, Remove, Reclaim, RetireeGone, Forgotten };
enum class ProgramPhase { Running, RollingOut, Guarding, RollingBack, Removing };
enum class ProgramEvent {
  StartRollout,
  RolloutEnded,
  RolloutGuarded,
  GenerationFailed,
  RollbackRequested,
  GuardExpired,
  Remove,
  LastProcessGone
};

inline constexpr size_t kSlotPhases = 3, kSlotEvents = 7, kProgramPhases = 5, kProgramEvents = 8;

struct PhaseCell {
  bool change;           // the event is acted on (else a named no-op)
  int next;              // the phase afterwards (as the enum's int), when `change`; -1 = erased
  bool anomaly;          // a no-op that means a bug elsewhere (logged at warn)
  const char* decision;  // what happens, for logs and tests
};

const PhaseCell& slot_cell(SlotPhase phase, SlotEvent event);
const PhaseCell& program_cell(ProgramPhase phase, ProgramEvent event);

const char* to_string(SlotPhase p);
const char* to_string(SlotEvent e);
const char* to_string(ProgramPhase p);
const char* to_string(ProgramEvent e);
// The in-place upgrade's state names phases by to_string(); unknown names are nullopt.
std::optional<SlotPhase> slot_phase_from(std::string_view name);

}  // namespace preforkd::core
