#include "core/program.hpp"

#include <algorithm>
#include <utility>
#include <csignal>

namespace preforkd::core {

const char* to_string(Recycle r) {
  switch (r) {
    case Recycle::MaxRequests: return "max_requests";
    case Recycle::MaxMemory: return "max_memory";
    case Recycle::Restart: return "restart";
    case Recycle::Reload: return "reload";
    case Recycle::Rollback: return "rollback";
  }
  return "?";
}

std::optional<Recycle> recycle_from(std::string_view name) {
  for (auto r : {Recycle::MaxRequests, Recycle::MaxMemory, Recycle::Restart, Recycle::Reload, Recycle::Rollback})
    if (name == to_string(r)) return r;
  return std::nullopt;
}

double Ctx::jitter() { return std::uniform_real_distribution<double>(-0.2, 0.2)(rng); }

namespace {

// A retiree still serving, i.e. not yet asked to stop.
bool serving(const Worker& w) { return w.state == WorkerState::Ready || w.state == WorkerState::Starting; }

}  // namespace

std::string ProgramState::tag(int slot) const { return name() + "[" + std::to_string(slot) + "]"; }

size_t ProgramState::count_for(const config::Program& cfg) const {
  if (!cfg.autoscale) return cfg.workers;
  return std::clamp<size_t>(wanted(), cfg.autoscale->min, cfg.autoscale->max);
}

size_t ProgramState::wanted() const {
  return static_cast<size_t>(
      std::count_if(slots.begin(), slots.end(), [](const Slot& s) { return s.phase != SlotPhase::Removing; }));
}

size_t ProgramState::ready() const {
  return static_cast<size_t>(std::count_if(slots.begin(), slots.end(), [](const Slot& s) {
    return s.phase != SlotPhase::Removing && s.m.worker.state == WorkerState::Ready;
  }));
}

bool ProgramState::any_process() const {
  return !retirees.empty() ||
         std::any_of(slots.begin(), slots.end(), [](const Slot& s) { return has_process(s.m.worker); });
}

bool ProgramState::crash_looping() const {
  return std::any_of(slots.begin(), slots.end(), [](const Slot& s) {
    return s.m.worker.state == WorkerState::Backoff && s.m.worker.streak >= 2;
  });
}

const Member* ProgramState::serving_retiree(int slot) const {
  for (const auto& r : retirees)
    if (r.worker.slot == slot && serving(r.worker)) return &r;
  return nullptr;
}

Member* ProgramState::serving_retiree(int slot) {
  return const_cast<Member*>(static_cast<const ProgramState*>(this)->serving_retiree(slot));
}

TimePoint ProgramState::retire_at(const Member& retiree) const {
  auto n = static_cast<size_t>(retiree.worker.slot);
  if (!serving(retiree.worker) || n >= slots.size()) return kNever;
  const Worker& successor = slots[n].m.worker;
  return successor.state == WorkerState::Ready ? successor.ready_at + config().reload.settle : kNever;
}

TimePoint ProgramState::next_deadline() const {
  TimePoint t = kNever;
  for (const auto& s : slots) t = std::min(t, s.m.worker.deadline);
  for (const auto& r : retirees) t = std::min({t, r.worker.deadline, retire_at(r)});
  return std::min(t, guard_deadline(*this));
}

Member* ProgramState::find_proc(ProcId proc, int* slot) {
  if (proc == 0) return nullptr;
  for (auto& s : slots)
    if (s.m.proc == proc) {
      if (slot) *slot = s.m.worker.slot;
      return &s.m;
    }
  for (auto& r : retirees)
    if (r.proc == proc) {
      if (slot) *slot = -1;
      return &r;
    }
  return nullptr;
}

bool ProgramState::spawn_pending(int slot, ProcId proc) const {
  if (slot < 0 || static_cast<size_t>(slot) >= slots.size()) return false;
  const Slot& s = slots[static_cast<size_t>(slot)];
  return phase != ProgramPhase::Removing && s.phase != SlotPhase::Removing && s.m.pending_proc == proc &&
         s.m.worker.state == WorkerState::Backoff && s.m.worker.want == Want::Up;
}

void ProgramState::request_spawn(int slot, Ctx& c) {
  Member& m = slots[static_cast<size_t>(slot)].m;
  if (m.pending_proc != 0) return;  // one Spawn per record at a time
  m.pending_proc = ++c.next_proc;
  Action a;
  a.kind = Action::Kind::Spawn;
  a.program = id;
  a.slot = slot;
  a.proc = m.pending_proc;
  a.generation = shape.generation;
  c.out.push_back(std::move(a));
}

bool ProgramState::slot_event(int slot, SlotEvent e, Ctx& c) {
  Slot& s = slots[static_cast<size_t>(slot)];
  const PhaseCell& cell = slot_cell(s.phase, e);
  if (!cell.change) {
    c.log(cell.anomaly ? LogLevel::Warn : LogLevel::Debug,
          tag(slot) + ": " + to_string(e) + " while " + to_string(s.phase) + ": " + cell.decision);
    return false;
  }
  if (cell.next >= 0) s.phase = static_cast<SlotPhase>(cell.next);
  return true;
}

void ProgramState::apply(Member& m, int slot, const Effects& e, Ctx& c) {
  if (e.noop != nullptr)
    c.log(e.anomaly ? LogLevel::Warn : LogLevel::Debug,
          tag(m.worker.slot) + (m.worker.pid > 0 ? " pid " + std::to_string(m.worker.pid) : "") + ": " + e.noop);
  if (e.signal != 0 && m.worker.pid > 0) {  // T14: only unreaped workers have a pid
    if (m.worker.state == WorkerState::Stopping || m.worker.state == WorkerState::Killing) {
      // A stop: what runs below the worker is read first, while it is still
      // its, so that whatever lands on preforkd after its death is known to
      // come from it (core/orphans.hpp).
      Action walk;
      walk.kind = Action::Kind::WalkWorker;
      walk.pid = m.worker.pid;
      c.out.push_back(std::move(walk));
    }
    c.out.push_back(signal_action(m.worker.pid, e.signal, config().kill_group));
    c.log(LogLevel::Debug, tag(m.worker.slot) + " pid " + std::to_string(m.worker.pid) + ": sending signal " +
                               std::to_string(e.signal));
  }
  if (e.forget) {
    if (slot >= 0) slot_event(slot, SlotEvent::Forgotten, c);
    return;  // erased by collect()
  }
  if (e.spawn && slot >= 0) request_spawn(slot, c);
}

void ProgramState::spawned(int slot, ProcId proc, pid_t pid, Ctx& c) {
  Member& m = slots[static_cast<size_t>(slot)].m;
  m.pending_proc = 0;
  ++starts;
  m.proc = proc;
  m.report = WorkerReport{};
  m.notify_errors = 0;
  m.draining = false;
  set_busy(m, Busy::Unknown, c.now);
  on_spawned(m.worker, shape.policy, pid, shape.generation, c.now);
  if (m.worker.restarts > 0)
    c.log(LogLevel::Info, tag(slot) + " pid " + std::to_string(pid) + ": started (restart " +
                              std::to_string(m.worker.restarts) + ")");
  else
    c.log(LogLevel::Debug, tag(slot) + " pid " + std::to_string(pid) + ": started");
}

void ProgramState::spawn_failed(int slot, ProcId proc, const std::string& what, Ctx& c) {
  Member& m = slots[static_cast<size_t>(slot)].m;
  m.pending_proc = 0;
  Effects e = on_spawn_failed(m.worker, shape.policy, c.now, c.jitter());
  // Retried through the timer either way: a rollback (Policy::tick) comes first.
  if (e.failure) note_failure(*this, proc, slot, shape.generation, "could not be started", c.now);
  if (m.worker.streak <= 1)
    c.log(LogLevel::Error, tag(slot) + ": " + what);
  else
    c.log(LogLevel::Warn, tag(slot) + ": " + what + " (failure " + std::to_string(m.worker.streak) +
                              " in a row, next try in " + std::to_string(e.respawn_delay.count()) + "ms)");
  apply(m, slot, e, c);
}

void ProgramState::exited(ProcId proc, Termination t, const std::string& how, Ctx& c) {
  int slot = -1;
  Member* m = find_proc(proc, &slot);
  if (m == nullptr) return;
  WorkerState before = m->worker.state;
  StopReason reason = m->worker.stop_reason;
  std::string who = tag(m->worker.slot) + " pid " + std::to_string(m->worker.pid);
  totals.retire(m->report);  // its counters stay in the program's totals
  m->report = WorkerReport{};
  set_busy(*m, Busy::Unknown, c.now);  // a busy period ends with its process
  m->proc = 0;
  Effects e = on_exited(m->worker, shape.policy, t, c.now, c.jitter());
  if (e.exited) ++exits[static_cast<size_t>(e.exit_kind)];
  // The guard (core/guard): a failure of a process the rollout started.
  bool rolls_back = false;
  if (e.failure)
    rolls_back = note_failure(*this, proc, slot, m->worker.generation,
                              reason == StopReason::StartTimeout ? "missed start_timeout"
                              : reason == StopReason::Watchdog   ? "watchdog timeout"
                                                                 : describe(t),
                              c.now);
  bool ours = before == WorkerState::Stopping || before == WorkerState::Killing;
  if (ours)
    c.log(LogLevel::Info, who + ": " + how + " (" + to_string(reason) + ")");
  else if (t.signaled && t.code == SIGKILL)
    c.log(LogLevel::Warn, who + ": " + how + " (perhaps out of memory?)");
  else
    c.log(LogLevel::Warn, who + ": " + how);
  if (slot >= 0) {
    if (e.respawn_delay.count() > 0)
      c.log(LogLevel::Warn, tag(slot) + ": respawning in " + std::to_string(e.respawn_delay.count()) + "ms (" +
                                std::to_string(m->worker.streak) + " failures in a row)");
    else if (m->worker.state == WorkerState::Stopped && !c.shutting_down && !e.forget)
      c.log(LogLevel::Info, tag(slot) + ": not restarted (restart: " + config::to_string(config().restart) + ")");
  } else {
    // A retiree is gone: if it was still serving, its slot has nothing left to wait for.
    int n = m->worker.slot;
    if (static_cast<size_t>(n) < slots.size() && slots[static_cast<size_t>(n)].phase == SlotPhase::Replacing &&
        serving_retiree(n) == nullptr)
      slot_event(n, SlotEvent::RetireeGone, c);
  }
  if (slot >= 0 && e.spawn && e.failure &&
      (rolls_back ||
       (slots[static_cast<size_t>(slot)].phase == SlotPhase::Replacing && serving_retiree(slot) != nullptr))) {
    // A successor failed before it was proven, its old worker still serving,
    // or a guarded process failed: no respawn within this event. Due now
    // instead, as after a failed spawn, so that a rollout sees the slot
    // without a process at the next tick and gives it back (preforkd(8): a
    // canary that exits stops the rollout), a rollback respawns it with the
    // previous configuration first, and a plain recycle respawns at that tick.
    e.spawn = false;
    m->worker.deadline = c.now;
  }
  apply(*m, slot, e, c);
}

void ProgramState::notify(ProcId proc, const NotifyMessage& msg, Ctx& c) {
  int slot = -1;
  Member* m = find_proc(proc, &slot);
  if (m == nullptr) return;
  on_notify_seen(m->worker, c.now);  // every valid line feeds the watchdog
  switch (msg.kind) {
    case NotifyMessage::Kind::Ready:
      if (on_ready(m->worker, shape.policy, c.now))
        c.log(LogLevel::Debug, tag(m->worker.slot) + " pid " + std::to_string(m->worker.pid) + ": ready");
      break;
    case NotifyMessage::Kind::Stopping: m->draining = true; break;
    case NotifyMessage::Kind::Watchdog: break;
    case NotifyMessage::Kind::Accepted: break;  // MAINPID=, ERRNO=, RELOADING=1...: nothing to do
    case NotifyMessage::Kind::ExtendTimeout:
      if (extend_start_timeout(m->worker, c.now, msg.counter))
        c.log(LogLevel::Debug, tag(m->worker.slot) + " pid " + std::to_string(m->worker.pid) +
                                   ": start_timeout extended by " + std::to_string(msg.counter / 1000) + "ms");
      break;
    case NotifyMessage::Kind::Status: m->worker.status_text.assign(msg.text); break;
    case NotifyMessage::Kind::Busy: set_busy(*m, msg.busy ? Busy::Busy : Busy::Idle, c.now); break;
    case NotifyMessage::Kind::Counter:
    case NotifyMessage::Kind::Gauge:
      if (auto r = m->report.apply(msg); std::holds_alternative<NotifyError>(r)) {
        notify_error(proc, std::get<NotifyError>(r), c);
      } else if (msg.kind == NotifyMessage::Kind::Counter && msg.name == "requests" && slot >= 0 &&
                 config().max_requests > 0 && msg.counter >= config().max_requests) {
        recycle(slot, Recycle::MaxRequests, c);
      }
      break;
  }
}

void ProgramState::set_busy(Member& m, Busy b, TimePoint now) {
  if (m.busy == Busy::Busy && b != Busy::Busy && now > m.busy_since)
    busy_seconds_done += std::chrono::duration<double>(now - m.busy_since).count();
  if (b == Busy::Busy && m.busy != Busy::Busy) m.busy_since = now;  // BUSY=1 twice: the first counts
  if (b == Busy::Idle && m.busy != Busy::Idle) m.idle_since = now;  // BUSY=0 twice: the first counts
  m.busy = b;
}

double ProgramState::busy_seconds(TimePoint now) const {
  double s = busy_seconds_done;
  auto add = [&](const Member& m) {
    if (m.busy == Busy::Busy && now > m.busy_since) s += std::chrono::duration<double>(now - m.busy_since).count();
  };
  for (const auto& sl : slots) add(sl.m);
  for (const auto& r : retirees) add(r);
  return s;
}

// The first bad line of a process is logged; the rest are only counted, so a
// flooding worker cannot flood the log either.
void ProgramState::notify_error(ProcId proc, NotifyError e, Ctx& c) {
  Member* m = find_proc(proc);
  ++notify_errors;
  if (m == nullptr) return;
  if (++m->notify_errors == 1)
    c.log(LogLevel::Warn, tag(m->worker.slot) + " pid " + std::to_string(m->worker.pid) + ": dropped a notify line (" +
                              to_string(e) + "); further ones from this worker are only counted");
}

void ProgramState::memory_measured(ProcId proc, uint64_t rss, Ctx& c) {
  int slot = -1;
  Member* m = find_proc(proc, &slot);
  if (m == nullptr || slot < 0 || config().max_memory == 0 || rss <= config().max_memory) return;
  if (slots[static_cast<size_t>(slot)].phase != SlotPhase::Active || m->worker.state != WorkerState::Ready) return;
  c.log(LogLevel::Info, tag(slot) + " pid " + std::to_string(m->worker.pid) + ": RSS " + std::to_string(rss) +
                            " bytes is over max_memory " + std::to_string(config().max_memory));
  recycle(slot, Recycle::MaxMemory, c);
}

void ProgramState::expire(Ctx& c) {
  // Retirees: their own deadlines, and stopping those whose successor is proven.
  for (auto& r : retirees) {
    if (r.worker.deadline <= c.now) apply(r, -1, on_due(r.worker, shape.policy, c.now), c);
    if (c.now >= retire_at(r)) {
      int n = r.worker.slot;
      c.log(LogLevel::Info, tag(n) + " pid " + std::to_string(r.worker.pid) + ": its replacement pid " +
                                std::to_string(slots[static_cast<size_t>(n)].m.worker.pid) +
                                " is proven, stopping it");
      slot_event(n, SlotEvent::Proven, c);
      apply(r, -1, on_stop(r.worker, shape.policy, StopReason::Recycle, Want::Remove, c.now), c);
    }
  }
  for (size_t i = 0; i < slots.size(); ++i) {
    Member& m = slots[i].m;
    if (m.worker.deadline > c.now) continue;
    WorkerState before = m.worker.state;
    Effects e = on_due(m.worker, shape.policy, c.now);
    std::string who = tag(static_cast<int>(i)) + " pid " + std::to_string(m.worker.pid);
    if (before == WorkerState::Starting) {
      c.log(LogLevel::Warn, who + ": no READY=1 within start_timeout, stopping it");
      note_failure(*this, m.proc, static_cast<int>(i), m.worker.generation, "missed start_timeout", c.now);
    } else if (before == WorkerState::Ready && e.signal != 0) {
      c.log(LogLevel::Warn, who + ": watchdog: nothing heard for " +
                                std::to_string(shape.policy.watchdog_timeout.count()) + "ms, sending SIGABRT");
      note_failure(*this, m.proc, static_cast<int>(i), m.worker.generation, "watchdog timeout", c.now);
    }
    else if (before == WorkerState::Stopping)
      c.log(LogLevel::Warn, who + ": still running after stop_timeout, sending SIGKILL");
    else if (before == WorkerState::Killing)
      c.log(LogLevel::Warn, who + ": still not gone after SIGKILL");
    apply(m, static_cast<int>(i), e, c);
  }
}

// The slot's process leaves it as a retiree record (with what it reported);
// the slot is left without a process, its own history kept.
Member ProgramState::vacate(Slot& s) {
  Member out;
  out.worker = hand_over(s.m.worker);
  out.proc = std::exchange(s.m.proc, 0);
  out.report = std::exchange(s.m.report, WorkerReport{});
  out.notify_errors = std::exchange(s.m.notify_errors, 0);
  out.draining = std::exchange(s.m.draining, false);
  out.busy = std::exchange(s.m.busy, Busy::Unknown);
  out.busy_since = s.m.busy_since;
  return out;
}

void ProgramState::recycle(int slot, Recycle why, Ctx& c) {
  Slot& s = slots[static_cast<size_t>(slot)];
  if (c.shutting_down || s.m.worker.state != WorkerState::Ready) {
    c.log(LogLevel::Debug, tag(slot) + ": no " + to_string(why) + " replacement: the worker is not ready");
    return;
  }
  if (!slot_event(slot, SlotEvent::Replace, c)) return;
  s.replacing_for = why;
  Member old = vacate(s);
  c.log(LogLevel::Info, tag(slot) + " pid " + std::to_string(old.worker.pid) + ": recycling (" + to_string(why) +
                            "): starting its replacement first");
  retirees.push_back(std::move(old));
  request_spawn(slot, c);
}

void ProgramState::take_back(int slot, Ctx& c) {
  Slot& s = slots[static_cast<size_t>(slot)];
  Member* r = serving_retiree(slot);
  if (r == nullptr || has_process(s.m.worker)) return;
  if (!slot_event(slot, SlotEvent::SuccessorFailed, c)) return;
  core::take_back(s.m.worker, r->worker);
  s.m.proc = r->proc;
  s.m.pending_proc = 0;
  s.m.report = std::move(r->report);
  s.m.notify_errors = r->notify_errors;
  s.m.draining = r->draining;
  s.m.busy = std::exchange(r->busy, Busy::Unknown);
  s.m.busy_since = r->busy_since;
  s.m.idle_since = r->idle_since;
  // The retiree record is now empty: marked for collect().
  r->proc = 0;
  r->worker.pid = 0;
  r->worker.state = WorkerState::Stopped;
  r->worker.want = Want::Remove;
  r->worker.deadline = kNever;
  c.log(LogLevel::Warn, tag(slot) + " pid " + std::to_string(s.m.worker.pid) + ": keeps serving, its replacement failed");
}

void ProgramState::give_back(int slot, Ctx& c) {
  Slot& s = slots[static_cast<size_t>(slot)];
  if (serving_retiree(slot) == nullptr) return;
  if (has_process(s.m.worker)) {
    // The successor leaves the slot as a retiree record that is stopped at once.
    Member successor = vacate(s);
    c.log(LogLevel::Info, tag(slot) + " pid " + std::to_string(successor.worker.pid) +
                              ": stopping it, its slot goes back to the worker it was replacing");
    apply(successor, -1, on_stop(successor.worker, shape.policy, StopReason::Recycle, Want::Remove, c.now), c);
    retirees.push_back(std::move(successor));
  }
  take_back(slot, c);
}

void ProgramState::stop_retirees(int slot, StopReason reason, Ctx& c) {
  for (auto& r : retirees)
    if (slot < 0 || r.worker.slot == slot) apply(r, -1, on_stop(r.worker, shape.policy, reason, Want::Remove, c.now), c);
}

void ProgramState::add_worker(Ctx& c) {
  // A slot still on its way out is taken back first, so that scaling down
  // and up again does not grow the slot numbers.
  for (size_t i = 0; i < slots.size(); ++i) {
    if (slots[i].phase != SlotPhase::Removing) continue;
    slot_event(static_cast<int>(i), SlotEvent::Reclaim, c);
    apply(slots[i].m, static_cast<int>(i), on_start(slots[i].m.worker, c.now), c);
    return;
  }
  Slot s;
  s.m.worker.slot = static_cast<int>(slots.size());
  slots.push_back(std::move(s));
  c.log(LogLevel::Info, name() + ": scaling up to " + std::to_string(wanted()) + " worker(s)");
  request_spawn(static_cast<int>(slots.size() - 1), c);
}

void ProgramState::remove_worker(Ctx& c, bool idle_first) {
  size_t pick = slots.size();
  if (idle_first)  // the longest idle; from the top, so that a tie goes to the highest slot
    for (size_t i = slots.size(); i-- > 0;) {
      const Member& m = slots[i].m;
      if (slots[i].phase != SlotPhase::Active || !has_process(m.worker) || m.busy != Busy::Idle) continue;
      if (pick == slots.size() || m.idle_since < slots[pick].m.idle_since) pick = i;
    }
  for (size_t i = slots.size(); i-- > 0;) {
    if (slots[i].phase == SlotPhase::Removing) continue;
    if (pick < slots.size() && i != pick) continue;
    int n = static_cast<int>(i);
    c.log(LogLevel::Info, name() + ": scaling down, stopping " + tag(n) +
                              (pick < slots.size() ? " (the longest idle)" : ""));
    slot_event(n, SlotEvent::Remove, c);
    // reuseport: preforkd lets go of the slot's own sockets now; once the
    // worker closes its copy, the kernel moves what is still queued on them
    // to the other slots' sockets (tcp_migrate_req). A reclaimed slot binds anew.
    Action release;
    release.kind = Action::Kind::ReleaseSlot;
    release.program = id;
    release.slot = n;
    c.out.push_back(release);
    apply(slots[i].m, n, on_stop(slots[i].m.worker, shape.policy, StopReason::Scale, Want::Remove, c.now), c);
    stop_retirees(n, StopReason::Scale, c);  // no successor is coming
    return;
  }
}

void ProgramState::scale_to(size_t target, Ctx& c, bool idle_first) {
  while (wanted() < target) add_worker(c);
  while (wanted() > target) remove_worker(c, idle_first);
}

void ProgramState::stop_all(StopReason reason, Want want, Ctx& c) {
  for (size_t i = 0; i < slots.size(); ++i) {
    if (slots[i].phase == SlotPhase::Removing) continue;
    if (want == Want::Remove) slot_event(static_cast<int>(i), SlotEvent::Remove, c);
    apply(slots[i].m, static_cast<int>(i), on_stop(slots[i].m.worker, shape.policy, reason, want, c.now), c);
  }
  stop_retirees(-1, reason, c);
}

void ProgramState::kill_all(Ctx& c) {
  for (size_t i = 0; i < slots.size(); ++i) {
    Want want = slots[i].phase == SlotPhase::Removing ? Want::Remove : Want::Down;
    apply(slots[i].m, static_cast<int>(i), on_kill(slots[i].m.worker, c.now, want), c);
  }
  for (auto& r : retirees) apply(r, -1, on_kill(r.worker, c.now, Want::Remove), c);
}

void ProgramState::start_all_slots(Ctx& c) {
  for (size_t i = 0; i < slots.size(); ++i)
    if (slots[i].phase != SlotPhase::Removing)
      apply(slots[i].m, static_cast<int>(i), on_start(slots[i].m.worker, c.now), c);
}

void ProgramState::collect(Ctx& c) {
  retirees.erase(std::remove_if(retirees.begin(), retirees.end(),
                                [](const Member& r) { return !has_process(r.worker) && r.worker.want == Want::Remove; }),
                 retirees.end());
  // Only the highest slots go, so numbers stay 0..n-1.
  while (!slots.empty()) {
    const Slot& top = slots.back();
    if (top.phase != SlotPhase::Removing || has_process(top.m.worker) || top.m.pending_proc != 0 ||
        serving_retiree(top.m.worker.slot) != nullptr)
      break;
    if (top.m.worker.state != WorkerState::Stopped) break;
    c.log(LogLevel::Debug, tag(top.m.worker.slot) + ": slot removed");
    slots.pop_back();
  }
}

}  // namespace preforkd::core
