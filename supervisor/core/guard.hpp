// guard.hpp — reload.guard: the way back after a rollout, and the rollback.
//
// A rollout (a reload that replaces workers, or `preforkctl restart`) is
// guarded when its program's reload.guard is more than 0. From its start
// until reload.guard after its end (the program phase Guarding, core/
// lifecycle) the program keeps its previous configuration (`previous`, with
// the daemon's sockets for it). A process the rollout started that fails
// meanwhile — exits or is killed by anyone but preforkd, misses
// start_timeout or the watchdog, or cannot be started, before it has been
// ready for backoff.reset_after: the failures of the lifecycle rules — rolls
// the program back: the previous configuration is taken again and the new
// generation's workers are replaced through the canary-then-batches path,
// new before old (core/rollout, Rollout::Kind::Rollback). A rollback is not
// guarded itself: a process it started that fails leaves the program on the
// previous configuration, crash-looping, and preforkd never goes forward
// again on its own.
//
// Which processes are the rollout's is decided by their ProcId, which only
// grows: every process started since the rollout began (canaries, batches,
// respawns, scale-ups, recycles) has an id from `first_proc` on; the old
// workers, and those given back to their slots, have lower ones.
//
// A restart keeps the configuration, so it has no other one to go back to:
// during a reload's guard it keeps that guard (re-armed when it ends);
// otherwise a failure of a worker it started stops the restart (the workers
// it has not restarted yet keep running) and nothing is kept afterwards.
//
// Owns: what counts for the guard, when it runs out, and how a rollback
// starts. Pure, like the rest of core: Policy::tick acts on what is noted
// here (Policy::check_guards).
#pragma once

#include <optional>
#include <string>

#include "config/config.hpp"
#include "core/action.hpp"
#include "core/rollout.hpp"
#include "core/worker.hpp"

namespace preforkd::core {

struct ProgramState;
struct Ctx;

// The first failure of a guarded process, until Policy::tick handles it.
struct GuardFailure {
  int slot = -1;            // -1: a retiree
  uint64_t generation = 0;  // the configuration the failed process ran
  std::string why;          // "exit status 4", "killed by SIGSEGV", "missed start_timeout", ...
  TimePoint at{};
};

struct Guard {
  ProcId first_proc = 0;     // processes from this id on are the guarded rollout's (or the rollback's)
  TimePoint started{};       // when the rollout (or the rollback) began
  TimePoint ended = kNever;  // when the rollout ended: Guarding lasts until ended + reload.guard
  std::optional<GuardFailure> failure;
};

// Why a process failed, for the log and the replies: "exit status 4",
// "killed by SIGKILL".
std::string describe(Termination t);

// A guard for a rollout starting now: the next process id is its first.
Guard start_guard(const Ctx& c);
// Is `proc` one of the processes the guard watches?
bool guarded(const ProgramState& p, ProcId proc);
// A previous configuration is held that differs from the one in force.
bool can_roll_back(const ProgramState& p);
// Notes the failure of `proc` if it is guarded and nothing is noted yet.
// Returns true when it is noted and will roll the program back, so that the
// caller does not respawn it with the failed configuration (the rollback
// respawns it with the previous one).
bool note_failure(ProgramState& p, ProcId proc, int slot, uint64_t generation, std::string why, TimePoint now);
// When the guard of a Guarding program runs out (kNever otherwise).
TimePoint guard_deadline(const ProgramState& p);
// Whole seconds from `since` to `now`, for messages ("12s").
std::string seconds_between(TimePoint since, TimePoint now);

// Starts rolling `p` back (the caller has fired GenerationFailed or
// RollbackRequested): slots being replaced go back to their old workers,
// workers of the failed generation still starting are stopped (they serve
// nothing; their slots respawn with the previous configuration), the
// previous configuration is in force again and the failed one becomes
// `previous` until the rollback ends, and the guard now watches the
// rollback's own processes. Returns the rollout over the ready workers of
// the failed generation, slot 0 first, in batches of the previous
// configuration's reload.batch.
Rollout begin_rollback(ProgramState& p, Ctx& c);
// Every wanted slot has a ready worker again (the end of a rollback).
bool rollback_settled(const ProgramState& p);

}  // namespace preforkd::core
