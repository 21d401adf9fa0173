#include "core/operation.hpp"

#include <algorithm>

namespace preforkd::core {

std::optional<OpResult> check_operation(const PendingOp& op, const ProgramState& p) {
  if (op.kind == PendingOp::Kind::Stop) {
    if (!p.any_process()) return OpResult{true, "stopped " + p.name()};
    return std::nullopt;
  }
  // Every worker meant to run is ready; a slot stopped on purpose (preforkctl
  // stop, or not restarted by its `restart`) is not waited for.
  bool settled = p.wanted() == op.target && p.slots.size() == op.target &&
                 std::all_of(p.slots.begin(), p.slots.end(), [](const Slot& s) {
                   return s.m.worker.want != Want::Up || s.m.worker.state == WorkerState::Ready;
                 });
  if (settled) return OpResult{true, p.name() + " has " + std::to_string(op.target) + " worker(s)"};
  for (const auto& s : p.slots)
    if (s.phase != SlotPhase::Removing && s.m.worker.want == Want::Up && s.m.worker.state == WorkerState::Backoff &&
        s.m.worker.streak > 0)
      return OpResult{false, p.tag(s.m.worker.slot) + " failed to start (see preforkd's log); it is retried with backoff"};
  if (p.wanted() != op.target && p.slots.size() == p.wanted())
    return OpResult{false, "could not reach " + std::to_string(op.target) + " worker(s) (see preforkd's log)"};
  return std::nullopt;
}

std::optional<std::vector<std::string>> check_reload(const ReloadRun& run, const Programs& programs) {
  std::vector<std::string> failures = run.failures;
  for (const auto& p : programs) {
    // Rolling out, rolling back or being removed. A guard does not hold a
    // reload's answer up: it comes when the rollout is done.
    if (p.phase != ProgramPhase::Running && p.phase != ProgramPhase::Guarding) return std::nullopt;
    if (std::find(run.touched.begin(), run.touched.end(), p.name()) == run.touched.end()) continue;
    if (!p.retirees.empty()) return std::nullopt;
    for (const auto& s : p.slots) {
      const Worker& w = s.m.worker;
      if (s.phase == SlotPhase::Removing) return std::nullopt;  // still on its way out
      if (w.want != Want::Up || w.state == WorkerState::Ready) continue;
      if ((w.state == WorkerState::Backoff || w.state == WorkerState::Stopped) && w.streak > 0 &&
          s.m.pending_proc == 0) {
        failures.push_back(p.tag(w.slot) + " failed to start (see preforkd's log)");
        continue;
      }
      return std::nullopt;  // starting
    }
  }
  return failures;
}

}  // namespace preforkd::core
