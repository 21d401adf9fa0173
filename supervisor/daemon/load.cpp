// load.cpp — what the kernel says about the load: each listener's accept
// queue, read on demand (a scrape, `status`/`stats`), never by a timer.
#include <algorithm>

#include "daemon/daemon.hpp"
#include "sys/listen_queue.hpp"
#include "version.hpp"

namespace preforkd::daemon {

// Fills the queue figures of each program's listeners (named by the core's
// snapshot, in `listen` order) from the sockets of the generation in force;
// with reuseport, summed over the slots' own sockets.
void Daemon::measure_queues(core::Snapshot& s) const {
  for (const auto& p : policy_.programs()) {
    auto ps = std::find_if(s.programs.begin(), s.programs.end(),
                           [&](const core::ProgramSnapshot& x) { return x.name == p.name(); });
    if (ps == s.programs.end()) continue;
    auto add = [&](size_t i, const ListenerRef& l) {
      if (i >= ps->listeners.size() || !l || !l->fd) return;
      if (auto q = sys::listen_queue(l->fd.get())) {
        auto& out = ps->listeners[i];
        out.known = true;
        out.length += q->length;
        out.max += q->max;
      }
    };
    if (!p.config().reuseport) {
      auto res = resources_.find({p.name(), p.shape.generation});
      if (res == resources_.end()) continue;
      for (size_t i = 0; i < res->second.listeners.size(); ++i) add(i, res->second.listeners[i]);
    } else {
      for (auto it = slot_sockets_.lower_bound({p.id, 0}); it != slot_sockets_.end() && it->first.first == p.id; ++it)
        for (size_t i = 0; i < it->second.size(); ++i) add(i, it->second[i]);
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
