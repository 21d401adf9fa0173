// snapshot.cpp — core::Policy's view for the outside: the Snapshot that
// status, stats and the metrics text are rendered from, and systemd's STATUS=.
#include "core/policy.hpp"

#include <algorithm>

namespace preforkd::core {

Snapshot Policy::snapshot(TimePoint now) const {
  Snapshot s;
  s.generation = generation_;
  s.reloads_ok = reloads_ok_;
  s.reloads_failed = reloads_failed_;
  s.notify_unattributed = notify_unattributed_;
  s.shutting_down = shutting_down_;
  for (const auto& p : programs_) {
    ProgramSnapshot ps;
    ps.name = p.name();
    ps.generation = p.shape.generation;
    ps.phase = to_string(p.phase);
    if (p.rollout)
      ps.rollout = p.rollout->kind == Rollout::Kind::Reload    ? "reload"
                   : p.rollout->kind == Rollout::Kind::Restart ? "restart"
                                                               : "rollback";
    ps.previous_generation = p.previous ? p.previous->generation : 0;
    if (TimePoint until = guard_deadline(p); until != kNever)
      ps.guard_left_s = until > now ? std::chrono::duration<double>(until - now).count() : 0.0;
    ps.rollbacks = p.rollbacks;
    ps.workers_wanted = static_cast<uint32_t>(std::count_if(p.slots.begin(), p.slots.end(), [](const Slot& sl) {
      return sl.phase != SlotPhase::Removing && sl.m.worker.want == Want::Up;
    }));
    std::vector<const WorkerReport*> live;
    bool any_process = false;
    auto add = [&](const Member& m, bool retiring) {
      const Worker& w = m.worker;
      WorkerSnapshot ws;
      ws.slot = w.slot;
      ws.pid = w.pid;
      ws.state = to_string(w.state);
      ws.generation = w.generation;
      ws.uptime_s = has_process(w) ? std::chrono::duration<double>(now - w.started_at).count() : 0.0;
      ws.restarts = w.restarts;
      ws.status = w.status_text;
      ws.retiring = retiring;
      if (has_process(w) && m.busy != Busy::Unknown) {
        ws.busy = m.busy == Busy::Busy ? "busy" : "idle";
        ++ps.workers_reporting;
        if (m.busy == Busy::Busy) ++ps.workers_busy;
      }
      ws.counters.insert(m.report.counters().begin(), m.report.counters().end());
      ws.gauges.insert(m.report.gauges().begin(), m.report.gauges().end());
      ps.workers.push_back(std::move(ws));
      live.push_back(&m.report);
      any_process |= has_process(w);
    };
    for (const auto& sl : p.slots) {
      // A slot removed below the top (autoscaling stopped an idle worker)
      // stays as a hole until the slots above it go: nothing to show.
      if (sl.phase == SlotPhase::Removing && !has_process(sl.m.worker) && sl.m.pending_proc == 0 &&
          p.serving_retiree(sl.m.worker.slot) == nullptr)
        continue;
      add(sl.m, false);
    }
    for (const auto& r : p.retirees) add(r, true);
    ps.state = p.crash_looping() ? "crash-looping" : (ps.workers_wanted == 0 && !any_process) ? "stopped" : "running";
    ps.counters = p.totals.counters(live);
    ps.gauges = ProgramTotals::gauges(live);
    ps.notify_errors = p.notify_errors;
    ps.busy_seconds = p.busy_seconds(now);
    ps.autoscale_up = p.autoscale_total[0];
    ps.autoscale_down = p.autoscale_total[1];
    if (const auto& as = p.config().autoscale) {
      ps.workers_min = as->min;
      ps.workers_max = as->max;
    }
    ps.ready_min = p.config().ready_min;
    ps.starts = p.starts;
    for (size_t i = 0; i < ps.exits.size(); ++i) ps.exits[i] = p.exits[i];
    if (auto it = orphans_.totals().find(p.name()); it != orphans_.totals().end()) ps.orphans_total = it->second;
    for (const auto& a : p.config().listen) ps.listeners.push_back({a.name, a.text, false, 0, 0});
    s.programs.push_back(std::move(ps));
  }
  for (const auto& o : orphans_.list()) {
    OrphanSnapshot os;
    os.pid = o.pid;
    os.command = o.comm;
    os.program = o.origin.program;
    os.left_by = o.origin.left_by;
    os.state = to_string(o.state);
    os.age_s = std::chrono::duration<double>(now - o.since).count();
    auto p = std::find_if(s.programs.begin(), s.programs.end(),
                          [&](const ProgramSnapshot& ps) { return !os.program.empty() && ps.name == os.program; });
    (p == s.programs.end() ? s.orphans : p->orphans).push_back(std::move(os));
  }
  return s;
}

Readiness readiness(const Snapshot& s) {
  if (s.shutting_down) return {false, "preforkd is shutting down\n"};
  std::string short_of;
  for (const auto& p : s.programs) {
    uint32_t need = std::min(p.ready_min, p.workers_wanted);
    auto ready = static_cast<uint32_t>(
        std::count_if(p.workers.begin(), p.workers.end(), [](const WorkerSnapshot& w) { return w.state == "ready"; }));
    if (ready >= need) continue;
    short_of += p.name + ": " + std::to_string(ready) + " worker(s) ready, " + std::to_string(need) + " needed" +
                (p.state == "crash-looping" ? " (crash-looping)" : "") + "\n";
  }
  if (!short_of.empty()) return {false, short_of};
  return {true, "ready\n"};
}

std::string Policy::systemd_status() const {
  size_t ready = 0, up = 0, alive = 0;
  std::string looping;
  for (const auto& p : programs_) {
    for (const auto& s : p.slots) {
      const Worker& w = s.m.worker;
      if (w.state == WorkerState::Ready) ++ready;
      if (w.want == Want::Up) ++up;
      if (has_process(w)) ++alive;
    }
    alive += p.retirees.size();
    if (p.crash_looping()) looping += "; " + p.name() + " crash-looping";
  }
  if (shutting_down_) return "shutting down, " + std::to_string(alive) + " worker(s) left";
  return std::to_string(ready) + "/" + std::to_string(up) + " workers ready" + looping;
}

}  // namespace preforkd::core
