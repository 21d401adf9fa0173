#include "core/lifecycle.hpp"

namespace preforkd::core {

namespace {

constexpr int kErased = -1;
constexpr int A = static_cast<int>(SlotPhase::Active);
constexpr int R = static_cast<int>(SlotPhase::Replacing);
constexpr int X = static_cast<int>(SlotPhase::Removing);

// [phase][event], in the order of the enums (see the table in lifecycle.hpp).
constexpr PhaseCell kSlotTable[kSlotPhases][kSlotEvents] = {
    // Active
    {{true, R, false, "hand the ready worker over to a retiree and spawn its successor"},
     {false, A, false, "no retiree to stop: nothing was being replaced"},
     {false, A, false, "no replacement was under way"},
     {true, X, false, "stop the worker; the slot goes once it is reaped"},
     {false, A, false, "the slot is wanted already"},
     {false, A, false, "a retiree that was already stopping is gone"},
     {false, A, true, "forget for a slot that is not being removed"}},
    // Replacing
    {{false, R, false, "a replacement is already on its way"},
     {true, A, false, "the successor is proven: stop the retiree"},
     {true, A, false, "the successor failed: the retiree takes the slot back"},
     {true, X, false, "stop the successor and the retiree"},
     {false, R, false, "the slot is wanted already"},
     {true, A, false, "the retiree died before its successor was proven: nothing left to stop"},
     {false, R, true, "forget for a slot that is being replaced"}},
    // Removing
    {{false, X, false, "the slot is being removed: nothing to replace"},
     {false, X, false, "the slot is being removed: its retirees were stopped with it"},
     {false, X, false, "the slot is being removed: nothing to take back"},
     {false, X, false, "the slot is being removed already"},
     {true, A, false, "wanted again: start it (scale-up reuses the slot number)"},
     {false, X, false, "a retiree of a slot being removed is gone"},
     {true, kErased, false, "the last process is reaped: the slot is erased"}},
};

constexpr int PR = static_cast<int>(ProgramPhase::Running);
constexpr int PO = static_cast<int>(ProgramPhase::RollingOut);
constexpr int PG = static_cast<int>(ProgramPhase::Guarding);
constexpr int PB = static_cast<int>(ProgramPhase::RollingBack);
constexpr int PX = static_cast<int>(ProgramPhase::Removing);

// [phase][event], in the order of the enums: StartRollout, RolloutEnded,
// RolloutGuarded, GenerationFailed, RollbackRequested, GuardExpired,
// Remove, LastProcessGone.
constexpr PhaseCell kProgramTable[kProgramPhases][kProgramEvents] = {
    // Running
    {{true, PO, false, "start replacing the workers: canary, then batches"},
     {false, PR, true, "a rollout ended while none was running"},
     {false, PR, true, "a rollout ended while none was running"},
     {false, PR, false, "no previous configuration is kept: nothing to roll back to"},
     {false, PR, false, "no previous configuration is kept: nothing to roll back to (refused)"},
     {false, PR, false, "no guard is running"},
     {true, PX, false, "stop every worker; the program goes once they are reaped"},
     {false, PR, false, "every process is gone, the program stays (stopped or scaled to 0)"}},
    // RollingOut
    {{false, PO, false, "a rollout is in progress: refused"},
     {true, PR, false, "the rollout finished or was aborted, nothing is kept"},
     {true, PG, false, "the rollout finished: the previous configuration is kept for reload.guard"},
     {true, PB, false, "a worker of the new generation failed: roll back to the previous configuration"},
     {true, PB, false, "the operator rolls back to the previous configuration"},
     {false, PO, false, "the guard starts when the rollout ends"},
     {true, PX, false, "abort the rollout and stop every worker"},
     {false, PO, false, "every process is gone while rolling out: the rollout notices"}},
    // Guarding
    {{true, PO, false, "a new rollout: a reload ends the guard, a restart keeps it"},
     {false, PG, true, "a rollout ended while none was running"},
     {false, PG, true, "a rollout ended while none was running"},
     {true, PB, false, "a worker of the new generation failed: roll back to the previous configuration"},
     {true, PB, false, "the operator rolls back to the previous configuration"},
     {true, PR, false, "the new generation held for reload.guard: the previous configuration is dropped"},
     {true, PX, false, "stop every worker; the guard ends with the program"},
     {false, PG, false, "every process is gone while guarding (stopped): the guard runs out"}},
    // RollingBack
    {{false, PB, false, "a rollback is in progress: refused"},
     {true, PR, false, "the rollback finished, or failed and left the program on the old configuration"},
     {false, PB, true, "a rollback keeps no guard"},
     {false, PB, false, "a rollback never loops: its failure is a crash loop on the old configuration"},
     {false, PB, false, "a rollback is in progress already (refused)"},
     {false, PB, false, "a rollback keeps no guard"},
     {true, PX, false, "abort the rollback and stop every worker"},
     {false, PB, false, "every process is gone while rolling back: the rollback notices"}},
    // Removing
    {{false, PX, false, "the program is being removed: no rollout"},
     {false, PX, false, "the program is being removed: its rollout was dropped"},
     {false, PX, false, "the program is being removed: its rollout was dropped"},
     {false, PX, false, "the program is being removed: nothing to roll back"},
     {false, PX, false, "the program is being removed: nothing to roll back (refused)"},
     {false, PX, false, "the program is being removed: its guard was dropped"},
     {false, PX, false, "the program is being removed already"},
     {true, kErased, false, "the last process is reaped: the program is erased"}},
};

}  // namespace

const PhaseCell& slot_cell(SlotPhase phase, SlotEvent event) {
  return kSlotTable[static_cast<size_t>(phase)][static_cast<size_t>(event)];
}

const PhaseCell& program_cell(ProgramPhase phase, ProgramEvent event) {
  return kProgramTable[static_cast<size_t>(phase)][static_cast<size_t>(event)];
}

const char* to_string(SlotPhase p) {
  switch (p) {
    case SlotPhase::Active: return "active";
    case SlotPhase::Replacing: return "replacing";
    case SlotPhase::Removing: return "removing";
  }
  return "?";
}

std::optional<SlotPhase> slot_phase_from(std::string_view name) {
  for (auto p : {SlotPhase::Active, SlotPhase::Replacing, SlotPhase::Removing})
    if (name == to_string(p)) return p;
  return std::nullopt;
}

const char* to_string(SlotEvent e) {
  switch (e) {
    case SlotEvent::Replace: return "replace";
    case SlotEvent::Proven: return "proven";
    case SlotEvent::SuccessorFailed: return "successor-failed";
    case SlotEvent::Remove: return "remove";
    case SlotEvent::Reclaim: return "reclaim";
    case SlotEvent::RetireeGone: return "retiree-gone";
    case SlotEvent::Forgotten: return "forgotten";
  }
  return "?";
}

const char* to_string(ProgramPhase p) {
  switch (p) {
    case ProgramPhase::Running: return "running";
    case ProgramPhase::RollingOut: return "rolling-out";
    case ProgramPhase::Guarding: return "guarding";
    case ProgramPhase::RollingBack: return "rolling-back";
    case ProgramPhase::Removing: return "removing";
  }
  return "?";
}

const char* to_string(ProgramEvent e) {
  switch (e) {
    case ProgramEvent::StartRollout: return "start-rollout";
    case ProgramEvent::RolloutEnded: return "rollout-ended";
    case ProgramEvent::RolloutGuarded: return "rollout-guarded";
    case ProgramEvent::GenerationFailed: return "generation-failed";
    case ProgramEvent::RollbackRequested: return "rollback-requested";
    case ProgramEvent::GuardExpired: return "guard-expired";
    case ProgramEvent::Remove: return "remove";
    case ProgramEvent::LastProcessGone: return "last-process-gone";
  }
  return "?";
}

}  // namespace preforkd::core
