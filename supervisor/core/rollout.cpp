#include "core/rollout.hpp"

#include <algorithm>

#include "core/program.hpp"

namespace preforkd::core {

Rollout plan_rollout(const ProgramState& p, Rollout::Kind kind, size_t batch) {
  Rollout ro;
  ro.kind = kind;
  ro.batch = std::max<size_t>(batch, 1);
  for (const auto& s : p.slots)
    if (s.phase != SlotPhase::Removing && s.m.worker.want == Want::Up)
      ro.todo.push_back({s.m.worker.slot, s.m.worker.spawn_seq, 0});
  std::reverse(ro.todo.begin(), ro.todo.end());  // popped from the back: slot 0 first
  return ro;
}

RolloutStep advance(ProgramState& p, Rollout& ro, Ctx& c) {
  if (c.shutting_down) return {RolloutStep::Result::Failed, "preforkd is shutting down"};
  // 1. Prove the batch in flight: each slot's successor ready for settle and
  //    its retiree told to stop (ProgramState::expire does that).
  std::vector<Rollout::Item> still;
  for (const auto& item : ro.in_flight) {
    auto n = static_cast<size_t>(item.slot);
    if (n >= p.slots.size()) continue;  // scaled away meanwhile: nothing left to prove
    const Slot& slot = p.slots[n];
    if (slot.m.worker.streak > item.streak_before && !has_process(slot.m.worker)) {
      // Slots whose successor failed go back to their old worker. A batch
      // sibling still starting is left to prove itself: its old worker is
      // stopped only if it does (retire_at), as for any recycle.
      for (const auto& other : ro.in_flight) {
        auto k = static_cast<size_t>(other.slot);
        if (k < p.slots.size() && !has_process(p.slots[k].m.worker) && p.serving_retiree(other.slot) != nullptr)
          p.take_back(other.slot, c);
      }
      return {RolloutStep::Result::Failed, "the new worker of " + p.tag(item.slot) +
                                               " failed to start (see preforkd's log); the old workers keep serving"};
    }
    if (p.serving_retiree(item.slot) != nullptr || slot.m.worker.state != WorkerState::Ready) {
      still.push_back(item);  // not proven yet
      continue;
    }
    ++ro.replaced;
  }
  ro.in_flight = std::move(still);
  if (!ro.in_flight.empty()) return {};
  // 2. Start the next batch; the canary goes alone.
  size_t size = ro.canary() ? 1 : ro.batch;
  while (ro.in_flight.size() < size && !ro.todo.empty()) {
    Rollout::Item item = ro.todo.back();
    auto n = static_cast<size_t>(item.slot);
    bool same = n < p.slots.size() && p.slots[n].m.worker.spawn_seq == item.spawn_seq;
    // A worker still starting runs the old code too: wait until it is ready.
    if (same && p.slots[n].m.worker.state == WorkerState::Starting) break;
    ro.todo.pop_back();
    // Gone, not running, or already replaced since (respawned or recycled).
    if (!same || p.slots[n].m.worker.state != WorkerState::Ready || p.slots[n].phase != SlotPhase::Active ||
        p.slots[n].m.worker.want != Want::Up)
      continue;
    item.streak_before = p.slots[n].m.worker.streak;
    ro.in_flight.push_back(item);
    p.recycle(item.slot,
              ro.kind == Rollout::Kind::Restart  ? Recycle::Restart
              : ro.kind == Rollout::Kind::Reload ? Recycle::Reload
                                                 : Recycle::Rollback,
              c);
  }
  if (ro.in_flight.empty() && ro.todo.empty() && p.retirees.empty()) return {RolloutStep::Result::Done, {}};
  return {};
}

}  // namespace preforkd::core
