#include "core/guard.hpp"

#include <algorithm>
#include <chrono>

#include "config/signals.hpp"
#include "core/config_diff.hpp"
#include "core/program.hpp"

namespace preforkd::core {

std::string describe(Termination t) {
  if (!t.signaled) return "exit status " + std::to_string(t.code);
  std::string name = config::signal_name(t.code);
  return name == "UNKNOWN" ? "killed by signal " + std::to_string(t.code) : "killed by SIG" + name;
}

Guard start_guard(const Ctx& c) {
  Guard g;
  g.first_proc = c.next_proc + 1;
  g.started = c.now;
  return g;
}

bool guarded(const ProgramState& p, ProcId proc) {
  return p.guard.has_value() && proc != 0 && proc >= p.guard->first_proc;
}

bool can_roll_back(const ProgramState& p) {
  return p.previous.has_value() && p.previous->generation != p.shape.generation;
}

bool note_failure(ProgramState& p, ProcId proc, int slot, uint64_t generation, std::string why, TimePoint now) {
  if (!guarded(p, proc)) return false;
  if (!p.guard->failure) p.guard->failure = GuardFailure{slot, generation, std::move(why), now};
  return (p.phase == ProgramPhase::RollingOut || p.phase == ProgramPhase::Guarding) && can_roll_back(p);
}

TimePoint guard_deadline(const ProgramState& p) {
  if (p.phase != ProgramPhase::Guarding || !p.guard || p.guard->ended == kNever) return kNever;
  return p.guard->ended + p.config().reload.guard;
}

std::string seconds_between(TimePoint since, TimePoint now) {
  auto s = now > since ? std::chrono::duration_cast<std::chrono::seconds>(now - since).count() : 0;
  return std::to_string(s) + "s";
}

Rollout begin_rollback(ProgramState& p, Ctx& c) {
  ProcId failed_from = p.guard ? p.guard->first_proc : 0;
  auto failed = [&](const Member& m) { return failed_from != 0 && m.proc >= failed_from; };
  // Slots being replaced (the rollout's batch in flight, a recycle) go back
  // to the worker they had: the old generation's, or a proven one of the
  // failed generation, replaced below like the others.
  for (size_t i = 0; i < p.slots.size(); ++i)
    if (p.slots[i].phase == SlotPhase::Replacing && p.serving_retiree(static_cast<int>(i)) != nullptr)
      p.give_back(static_cast<int>(i), c);
  // Workers of the failed generation still starting serve nothing: stopped
  // now, their slots respawn with the previous configuration once reaped.
  std::vector<int> respawn;
  for (size_t i = 0; i < p.slots.size(); ++i) {
    Slot& s = p.slots[i];
    if (s.phase == SlotPhase::Removing) continue;
    if (s.m.worker.state == WorkerState::Starting && failed(s.m))
      p.apply(s.m, static_cast<int>(i), on_stop(s.m.worker, p.shape.policy, StopReason::Recycle, Want::Up, c.now), c);
    else if (s.m.worker.state == WorkerState::Backoff && s.m.pending_proc != 0)
      respawn.push_back(static_cast<int>(i));  // a spawn of the failed configuration is on its way
  }
  std::swap(p.shape, *p.previous);
  // From here on, the processes are the rollback's own.
  p.guard = start_guard(c);
  ++p.rollbacks;
  for (int n : respawn) {
    p.slots[static_cast<size_t>(n)].m.pending_proc = 0;  // the Spawn on its way is stale now
    p.request_spawn(n, c);
  }
  Rollout ro;
  ro.kind = Rollout::Kind::Rollback;
  ro.batch = std::max<size_t>(1, batch_size(p.config().reload, static_cast<uint32_t>(p.wanted())));
  for (const auto& s : p.slots)
    if (s.phase == SlotPhase::Active && s.m.worker.want == Want::Up && s.m.worker.state == WorkerState::Ready &&
        failed(s.m))
      ro.todo.push_back({s.m.worker.slot, s.m.worker.spawn_seq, 0});
  std::reverse(ro.todo.begin(), ro.todo.end());  // popped from the back: slot 0 first
  return ro;
}

bool rollback_settled(const ProgramState& p) {
  return p.retirees.empty() && std::all_of(p.slots.begin(), p.slots.end(), [](const Slot& s) {
           return s.phase != SlotPhase::Active || s.m.worker.want != Want::Up ||
                  s.m.worker.state == WorkerState::Ready;
         });
}

}  // namespace preforkd::core
