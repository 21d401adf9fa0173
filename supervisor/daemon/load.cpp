// load.cpp — what the kernel says about the load: each listener's accept
// queue, read on demand (a scrape, `status`/`stats`), never by a timer.
#include <algorithm>

#include "daemon/daemon.hpp"
#include "sys/listen_queue.hpp"
#include "version.hpp"

namespace preforkd::daemon {

// The accept queues of one program's listeners (generation in force), in
// `listen` order; with reuseport summed over the slots' sockets.
std::vector<std::optional<sys::ListenQueue>> Daemon::program_queues(const core::ProgramState& p) const {
  std::vector<std::optional<sys::ListenQueue>> out(p.config().listen.size());
  auto add = [&](size_t i, const ListenerRef& l) {
    if (i >= out.size() || !l || !l->fd) return;
    if (auto q = sys::listen_queue(l->fd.get())) {
      if (!out[i]) out[i] = sys::ListenQueue{};
      out[i]->length += q->length;
      out[i]->max += q->max;
    }
  };
  if (!p.config().reuseport) {
    auto res = resources_.find({p.name(), p.shape.generation});
    if (res != resources_.end())
      for (size_t i = 0; i < res->second.listeners.size(); ++i) add(i, res->second.listeners[i]);
  } else {
    for (auto it = slot_sockets_.lower_bound({p.id, 0}); it != slot_sockets_.end() && it->first.first == p.id; ++it)
      for (size_t i = 0; i < it->second.size(); ++i) add(i, it->second[i]);
  }
  return out;
}

// MeasureLoad: the autoscaler's sample, answered at once.
void Daemon::measure_load(core::ProgramId program) {
  const core::ProgramState* p = policy_.program(program);
  if (p == nullptr) return;
  uint64_t queue = 0;
  for (const auto& q : program_queues(*p))
    if (q) queue += q->length;
  policy_.load_measured(program, queue, now(), actions_);
}

// Fills the queue figures of each program's listeners (named by the core's
// snapshot, in `listen` order) from the sockets of the generation in force;
// with reuseport, summed over the slots' own sockets.
void Daemon::measure_queues(core::Snapshot& s) const {
  for (const auto& p : policy_.programs()) {
    auto ps = std::find_if(s.programs.begin(), s.programs.end(),
                           [&](const core::ProgramSnapshot& x) { return x.name == p.name(); });
    if (ps == s.programs.end()) continue;
    auto queues = program_queues(p);
    for (size_t i = 0; i < queues.size() && i < ps->listeners.size(); ++i) {
      if (!queues[i]) continue;
      ps->listeners[i].known = true;
      ps->listeners[i].length = queues[i]->length;
      ps->listeners[i].max = queues[i]->max;
    }
  }
  s.host_listen_overflows = sys::host_listen_overflows();
}

core::Snapshot Daemon::outside_view(core::TimePoint t) const {
  core::Snapshot s = policy_.snapshot(t);
  s.version = kVersion;
  s.pid = sys::self_pid();
  measure_queues(s);
  return s;
}

}  // namespace preforkd::daemon
