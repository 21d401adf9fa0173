#include "core/policy.hpp"

#include <algorithm>

#include "config/signals.hpp"

namespace preforkd::core {

namespace {

Shape make_shape(const config::Program& cfg, uint64_t generation) {
  return Shape{cfg, SlotPolicy::from(cfg), generation};
}

}  // namespace

Policy::Policy(unsigned seed, Duration shutdown_timeout) : rng_(seed), shutdown_timeout_(shutdown_timeout) {}

// ---- set-up ----

ProgramId Policy::add_program(const config::Program& cfg, uint64_t generation) {
  ProgramState p;
  p.id = next_program_++;
  p.shape = make_shape(cfg, generation);
  for (uint32_t i = 0; i < cfg.workers; ++i) {
    Slot s;
    s.m.worker.slot = static_cast<int>(i);
    p.slots.push_back(std::move(s));
  }
  programs_.push_back(std::move(p));
  return programs_.back().id;
}

void Policy::start(TimePoint now, Actions& out) {
  Ctx c = ctx(now, out);
  size_t total = 0;
  for (auto& p : programs_) {
    for (size_t i = 0; i < p.slots.size(); ++i) p.request_spawn(static_cast<int>(i), c);
    total += p.slots.size();
  }
  c.log(LogLevel::Info, "preforkd: started " + std::to_string(total) + " worker(s) in " + std::to_string(programs_.size()) +
                            " program(s)");
  out.push_back(systemd_action("READY=1"));  // Type=notify: every worker has been started
}

void Policy::adopt(Programs programs, uint64_t generation, uint64_t reloads_ok, uint64_t reloads_failed) {
  programs_ = std::move(programs);
  generation_ = generation;
  reloads_ok_ = reloads_ok;
  reloads_failed_ = reloads_failed;
  for (auto& p : programs_) {
    p.id = next_program_++;
    for (const auto& s : p.slots) next_proc_ = std::max(next_proc_, s.m.proc);
    for (const auto& r : p.retirees) next_proc_ = std::max(next_proc_, r.proc);
    if (p.guard && p.guard->first_proc > 0) next_proc_ = std::max(next_proc_, p.guard->first_proc - 1);  // still watched
    index(p);
  }
}

void Policy::index(const ProgramState& p) {
  for (const auto& s : p.slots)
    if (s.m.proc != 0 && s.m.worker.pid > 0) {
      pids_[s.m.worker.pid] = s.m.proc;
      procs_[s.m.proc] = p.id;
    }
  for (const auto& r : p.retirees)
    if (r.proc != 0 && r.worker.pid > 0) {
      pids_[r.worker.pid] = r.proc;
      procs_[r.proc] = p.id;
    }
}

// ---- lookups ----

const ProgramState* Policy::program(ProgramId id) const {
  for (const auto& p : programs_)
    if (p.id == id) return &p;
  return nullptr;
}

ProgramState* Policy::program_mut(ProgramId id) { return const_cast<ProgramState*>(program(id)); }

const ProgramState* Policy::find(const std::string& name) const {
  for (const auto& p : programs_)
    if (p.name() == name && p.phase != ProgramPhase::Removing) return &p;
  return nullptr;
}

ProgramState* Policy::find_mut(const std::string& name) { return const_cast<ProgramState*>(find(name)); }

std::optional<ProcId> Policy::proc_of_pid(pid_t pid) const {
  auto it = pids_.find(pid);
  if (it == pids_.end()) return std::nullopt;
  return it->second;
}

bool Policy::spawn_pending(const Action& a) const {
  const ProgramState* p = program(a.program);
  return p != nullptr && !shutting_down_ && p->spawn_pending(a.slot, a.proc);
}

void Policy::spawn_dropped(const Action& a) {
  ProgramState* p = program_mut(a.program);
  if (p == nullptr || a.slot < 0 || static_cast<size_t>(a.slot) >= p->slots.size()) return;
  Member& m = p->slots[static_cast<size_t>(a.slot)].m;
  if (m.pending_proc == a.proc) m.pending_proc = 0;
}

std::vector<ProcId> Policy::due_for_judgement(TimePoint now) const {
  std::vector<ProcId> due;
  for (const auto& p : programs_)
    for (const auto& s : p.slots) {
      const Worker& w = s.m.worker;
      if (w.deadline <= now && (w.state == WorkerState::Starting || w.state == WorkerState::Ready)) due.push_back(s.m.proc);
    }
  return due;
}

TimePoint Policy::next_deadline() const {
  TimePoint t = shutting_down_ ? kNever : memory_due_;
  if (shutting_down_ && !shutdown_forced_) t = std::min(t, shutdown_deadline_);
  t = std::min(t, orphans_.next_deadline());
  for (const auto& p : programs_) t = std::min({t, p.next_deadline(), shutting_down_ ? kNever : p.next_sample});
  return t;
}

bool Policy::busy_with_rollouts() const {
  return std::any_of(programs_.begin(), programs_.end(), [](const ProgramState& p) { return p.rollout.has_value(); });
}

bool Policy::finished() const {
  // Nothing preforkd started is left: no worker, and no orphan either (SPEC "Process tree").
  return shutting_down_ && orphans_.idle() &&
         std::none_of(programs_.begin(), programs_.end(), [](const ProgramState& p) { return p.any_process(); });
}

bool Policy::quiescent() const {
  // A guard (Guarding) is no reason to wait: the upgrade hands it over. A
  // guard noted during a rollout goes with the rollout, which does wait.
  return reload_phase_ == ReloadPhase::Idle && !reload_queued_ && !busy_with_rollouts() && pending_.empty() &&
         std::none_of(programs_.begin(), programs_.end(),
                      [](const ProgramState& p) { return p.phase == ProgramPhase::Removing; });
}

std::vector<std::pair<std::string, uint64_t>> Policy::shapes_in_use() const {
  std::vector<std::pair<std::string, uint64_t>> in_use;
  for (const auto& p : programs_) {
    in_use.emplace_back(p.name(), p.shape.generation);
    if (p.previous) in_use.emplace_back(p.previous->config.name, p.previous->generation);
  }
  return in_use;
}

bool Policy::program_event(ProgramState& p, ProgramEvent e, Ctx& c) {
  const PhaseCell& cell = program_cell(p.phase, e);
  if (!cell.change) {
    c.log(cell.anomaly ? LogLevel::Warn : LogLevel::Debug,
          p.name() + ": " + to_string(e) + " while " + to_string(p.phase) + ": " + cell.decision);
    return false;
  }
  if (cell.next >= 0) p.phase = static_cast<ProgramPhase>(cell.next);
  return true;
}

// ---- events ----

void Policy::spawned(ProgramId program, int slot, ProcId proc, pid_t pid, TimePoint now, Actions& out) {
  ProgramState* p = program_mut(program);
  if (p == nullptr || static_cast<size_t>(slot) >= p->slots.size()) return;  // cannot happen: spawn_pending() was asked
  Ctx c = ctx(now, out);
  p->spawned(slot, proc, pid, c);
  pids_[pid] = proc;
  procs_[proc] = program;
}

void Policy::spawn_failed(ProgramId program, int slot, ProcId proc, const std::string& what, TimePoint now,
                          Actions& out) {
  ProgramState* p = program_mut(program);
  if (p == nullptr || static_cast<size_t>(slot) >= p->slots.size()) return;
  Ctx c = ctx(now, out);
  p->spawn_failed(slot, proc, what, c);
  collect(c);
}

bool Policy::exited(pid_t pid, Termination t, const std::string& how, TimePoint now, Actions& out) {
  auto it = pids_.find(pid);
  if (it == pids_.end()) return false;
  ProcId proc = it->second;
  // What it leaves behind is looked for, whatever the cause of its exit.
  if (auto origin = origin_of(proc)) orphans_.worker_exited(std::move(*origin));
  pids_.erase(it);
  auto pit = procs_.find(proc);
  ProgramState* p = pit == procs_.end() ? nullptr : program_mut(pit->second);
  if (pit != procs_.end()) procs_.erase(pit);
  if (p == nullptr) return true;
  Ctx c = ctx(now, out);
  p->exited(proc, t, how, c);
  collect(c);
  return true;
}

// ---- the process tree ----

std::optional<OrphanOrigin> Policy::origin_of(ProcId proc) {
  auto pit = procs_.find(proc);
  ProgramState* p = pit == procs_.end() ? nullptr : program_mut(pit->second);
  Member* m = p == nullptr ? nullptr : p->find_proc(proc);
  if (m == nullptr || m->worker.pid <= 0) return std::nullopt;
  return OrphanOrigin{p->name(), p->tag(m->worker.slot), m->worker.pid, OrphanPolicy::from(p->config())};
}

void Policy::orphan_reaped(pid_t pid, const std::string& how, TimePoint now, Actions& out) {
  orphans_.reaped(pid, how, now, out);
}

void Policy::processes_seen(const std::vector<ProcessSeen>& procs, bool ok, bool settled, TimePoint now,
                            Actions& out) {
  std::optional<OrphanOrigin> sole;
  if (programs_.size() == 1) {
    const ProgramState& p = programs_.front();
    sole = OrphanOrigin{p.name(), p.name(), 0, OrphanPolicy::from(p.config())};
  }
  orphans_.processes_seen(procs, ok, settled, [this](pid_t pid) { return pids_.count(pid) != 0; },
                          sole ? &*sole : nullptr, now, out);
}

void Policy::worker_descendants(pid_t worker, const std::vector<ProcessSeen>& below) {
  auto it = pids_.find(worker);
  if (it == pids_.end()) return;
  if (auto origin = origin_of(it->second)) orphans_.worker_descendants(*origin, below);
}

void Policy::notify_line(ProcId proc, std::string_view line, TimePoint now, Actions& out) {
  auto it = procs_.find(proc);
  if (it == procs_.end()) return;
  ProgramState* p = program_mut(it->second);
  if (p == nullptr) return;
  Ctx c = ctx(now, out);
  auto parsed = parse_notify_line(line);
  if (const auto* error = std::get_if<NotifyError>(&parsed))
    p->notify_error(proc, *error, c);
  else
    p->notify(proc, std::get<NotifyMessage>(parsed), c);
}

void Policy::notify_too_long(ProcId proc, size_t lines, TimePoint now, Actions& out) {
  auto it = procs_.find(proc);
  if (it == procs_.end()) return;
  ProgramState* p = program_mut(it->second);
  if (p == nullptr) return;
  Ctx c = ctx(now, out);
  for (size_t i = 0; i < lines; ++i) p->notify_error(proc, NotifyError::TooLong, c);
}

void Policy::notify_unattributed(pid_t pid, Actions& out) {
  if (++notify_unattributed_ == 1)
    out.push_back(log_action(LogLevel::Warn, "preforkd: dropped a NOTIFY_SOCKET datagram from pid " + std::to_string(pid) +
                                                 ", which is no worker's (nor in a worker's process group); further "
                                                 "ones are only counted"));
}

void Policy::memory_measured(ProcId proc, uint64_t rss, TimePoint now, Actions& out) {
  auto it = procs_.find(proc);
  if (it == procs_.end()) return;
  ProgramState* p = program_mut(it->second);
  if (p == nullptr) return;
  Ctx c = ctx(now, out);
  p->memory_measured(proc, rss, c);
}

void Policy::check_memory(Ctx& c) {
  bool wanted = !shutting_down_ && std::any_of(programs_.begin(), programs_.end(), [](const ProgramState& p) {
    return p.phase != ProgramPhase::Removing && p.config().max_memory > 0;
  });
  if (!wanted) {
    memory_due_ = kNever;  // disarmed: no program has max_memory (any more)
    return;
  }
  if (memory_due_ == kNever) {
    memory_due_ = c.now + kMemoryCheckInterval;  // armed: after start, a reload or an upgrade alike
    return;
  }
  if (c.now < memory_due_) return;
  memory_due_ = c.now + kMemoryCheckInterval;
  for (const auto& p : programs_) {
    if (p.phase == ProgramPhase::Removing || p.config().max_memory == 0) continue;
    for (const auto& s : p.slots) {
      if (s.phase != SlotPhase::Active || s.m.worker.state != WorkerState::Ready) continue;
      Action a;
      a.kind = Action::Kind::MeasureMemory;
      a.program = p.id;
      a.proc = s.m.proc;
      a.pid = s.m.worker.pid;
      c.out.push_back(std::move(a));
    }
  }
}

namespace {

AutoscaleSettings settings_of(const config::Autoscale& a) {
  return AutoscaleSettings{a.min, a.max, a.up_after, a.down_after, a.cooldown, a.step, a.target_utilization};
}

}  // namespace

void Policy::sync_autoscale(Ctx& c) {
  for (auto& p : programs_) {
    const auto& as = p.config().autoscale;
    if (!as || p.phase == ProgramPhase::Removing || shutting_down_) {
      p.autoscaler.reset();
      p.next_sample = kNever;
      continue;
    }
    if (!p.autoscaler) {
      p.autoscaler.emplace(settings_of(*as));
      p.next_sample = c.now + p.autoscaler->period();
      continue;
    }
    p.autoscaler->set_settings(settings_of(*as));  // a reload applies in place
    if (c.now < p.next_sample) continue;
    p.next_sample = c.now + p.autoscaler->period();
    Action a;
    a.kind = Action::Kind::MeasureLoad;
    a.program = p.id;
    c.out.push_back(std::move(a));
  }
}

void Policy::load_measured(ProgramId program, uint64_t queue, TimePoint now, Actions& out) {
  ProgramState* p = program_mut(program);
  if (p == nullptr || !p->autoscaler || p->rollout || shutting_down_) return;
  Ctx c = ctx(now, out);
  LoadSample s;
  s.queue = queue;
  s.wanted = static_cast<uint32_t>(p->wanted());
  s.busy_seconds = p->busy_seconds(now);
  auto count = [&](const Member& m) {
    if (!has_process(m.worker) || m.busy == Busy::Unknown) return;
    ++s.reporting;
    if (m.busy == Busy::Busy) ++s.busy;
  };
  for (const auto& sl : p->slots) {
    count(sl.m);
    // Capacity: a wanted worker with a process; one in backoff is not.
    if (sl.phase != SlotPhase::Removing && sl.m.worker.want == Want::Up && has_process(sl.m.worker)) {
      ++s.live;
      if (sl.m.busy == Busy::Idle) s.idle_since = std::min(s.idle_since, sl.m.idle_since);
    }
  }
  ScaleDecision d = p->autoscaler->sample(s, now);
  if (d.direction == ScaleDecision::Direction::None) return;
  const bool up = d.direction == ScaleDecision::Direction::Up;
  ++p->autoscale_total[up ? 0 : 1];
  c.log(LogLevel::Info, p->name() + ": " + d.reason + ", scaling " + (up ? "up" : "down") + " to " +
                            std::to_string(d.target));
  p->scale_to(d.target, c, /*idle_first=*/true);  // the longest-idle worker goes first
}

void Policy::tick(TimePoint now, Actions& out) {
  Ctx c = ctx(now, out);
  if (shutting_down_ && !shutdown_forced_ && now >= shutdown_deadline_) {
    shutdown_forced_ = true;
    c.log(LogLevel::Warn, "preforkd: shutdown_timeout passed, killing the remaining workers");
    for (auto& p : programs_) p.kill_all(c);
    orphans_.force(now, out);
  }
  check_guards(c);  // before expire: a failed process respawns with the previous configuration
  for (auto& p : programs_) p.expire(c);
  check_memory(c);
  sync_autoscale(c);
  for (auto& p : programs_) {
    if (!p.rollout) continue;
    RolloutStep step = advance(p, *p.rollout, c);
    // A rollback is over once every wanted slot is ready again, respawned ones included.
    if (step.result == RolloutStep::Result::Done && p.rollout->kind == Rollout::Kind::Rollback &&
        !rollback_settled(p))
      continue;
    if (step.result != RolloutStep::Result::Running) finish_rollout(p, step, c);
  }
  collect(c);
  check_reload(c);
  check_operations(c);
  orphans_.tick(now, out);
}

// ---- the guard (core/guard.hpp) ----

void Policy::check_guards(Ctx& c) {
  if (shutting_down_) return;
  for (auto& p : programs_) {
    if (!p.guard) continue;
    if (p.guard->failure) {
      GuardFailure f = std::move(*p.guard->failure);
      p.guard->failure.reset();
      std::string gen = "generation " + std::to_string(f.generation);
      switch (p.phase) {
        case ProgramPhase::Guarding:
          roll_back(p, ProgramEvent::GenerationFailed,
                    gen + " failed " + seconds_between(p.guard->ended, f.at) + " after its rollout (" + f.why + ")", 0, c);
          break;
        case ProgramPhase::RollingOut: {
          const Rollout& ro = *p.rollout;
          bool canary = ro.replaced == 0 && std::any_of(ro.in_flight.begin(), ro.in_flight.end(),
                                                        [&](const Rollout::Item& i) { return i.slot == f.slot; });
          std::string what = gen + " failed " + seconds_between(p.guard->started, f.at) + " into its " +
                             (ro.kind == Rollout::Kind::Restart ? "restart" : "rollout") + " (" + f.why + ")";
          if (canary) break;  // nothing rolled out yet: the rollout aborts itself (advance), as it always has
          if (can_roll_back(p)) {
            roll_back(p, ProgramEvent::GenerationFailed, what, 0, c);
          } else {
            // A restart keeps the configuration: nothing to go back to, but
            // the workers it has not restarted yet keep what they loaded.
            finish_rollout(p, {RolloutStep::Result::Failed, what + "; the workers not restarted yet keep running"}, c);
          }
          break;
        }
        case ProgramPhase::RollingBack: rollback_failed(p, f, c); break;
        default: break;
      }
    }
    if (p.phase == ProgramPhase::Guarding && c.now >= guard_deadline(p) &&
        program_event(p, ProgramEvent::GuardExpired, c)) {
      c.log(LogLevel::Info, p.name() + ": generation " + std::to_string(p.shape.generation) + " held for " +
                                std::to_string(p.config().reload.guard.count()) + "ms after its rollout; generation " +
                                std::to_string(p.previous ? p.previous->generation : 0) + " is no longer kept");
      p.previous.reset();
      p.guard.reset();
    }
  }
}

void Policy::roll_back(ProgramState& p, ProgramEvent why, const std::string& what, ClientId client, Ctx& c) {
  if (!program_event(p, why, c)) return;
  uint64_t from = p.shape.generation, to = p.previous->generation;
  if (p.rollout) {
    // The rollout in progress ends here; a restart's client hears why.
    if (p.rollout->client != 0)
      c.out.push_back(reply_action(p.rollout->client, false, "restart of " + p.name() + " aborted: " + what +
                                                                 ": rolled back to generation " + std::to_string(to)));
    p.rollout.reset();
  }
  if (why == ProgramEvent::GenerationFailed)
    c.log(LogLevel::Error, p.name() + ": " + what + ": rolling back to generation " + std::to_string(to));
  else
    c.log(LogLevel::Warn, p.name() + ": rolling back from generation " + std::to_string(from) + " to generation " +
                              std::to_string(to) + " (" + what + ")");
  if (reload_ && std::find(reload_->touched.begin(), reload_->touched.end(), p.name()) != reload_->touched.end())
    reload_->failures.push_back(p.name() + ": " + what + ": rolled back to generation " + std::to_string(to));
  Rollout ro = begin_rollback(p, c);
  ro.client = client;
  c.log(LogLevel::Info, p.name() + ": rollback to generation " + std::to_string(to) + ": replacing " +
                            std::to_string(ro.todo.size()) + " worker(s) of generation " + std::to_string(from));
  p.rollout = std::move(ro);
}

void Policy::rollback_failed(ProgramState& p, const GuardFailure& f, Ctx& c) {
  std::string what = "the rollback to generation " + std::to_string(p.shape.generation) + " failed too (" +
                     (f.slot >= 0 ? p.tag(f.slot) + ": " : std::string()) + f.why + ")";
  finish_rollout(p, {RolloutStep::Result::Failed, what}, c);
}

void Policy::finish_rollout(ProgramState& p, const RolloutStep& step, Ctx& c) {
  Rollout ro = std::move(*p.rollout);
  p.rollout.reset();
  bool done = step.result == RolloutStep::Result::Done;
  if (ro.kind == Rollout::Kind::Rollback) {
    // Never guarded, never undone: the program stays on the configuration it went back to.
    program_event(p, ProgramEvent::RolloutEnded, c);
    uint64_t failed = p.previous ? p.previous->generation : 0;
    p.previous.reset();
    p.guard.reset();
    std::string to = "generation " + std::to_string(p.shape.generation);
    if (done) {
      c.log(LogLevel::Info, p.name() + ": rolled back to " + to + " (" + std::to_string(ro.replaced) + " worker(s) replaced)");
      if (ro.client != 0) c.out.push_back(reply_action(ro.client, true, "rolled back " + p.name() + " to " + to));
      return;
    }
    c.log(LogLevel::Error, p.name() + ": " + step.why + ": " + p.name() + " stays on " + to +
                               " and its failing workers back off (crash-looping); preforkd does not go back to "
                               "generation " + std::to_string(failed));
    if (ro.client != 0)
      c.out.push_back(reply_action(ro.client, false, "rollback of " + p.name() + " to " + to + " failed: " + step.why));
    if (reload_ && std::find(reload_->touched.begin(), reload_->touched.end(), p.name()) != reload_->touched.end())
      reload_->failures.push_back(p.name() + ": " + step.why);
    return;
  }
  bool restart = ro.kind == Rollout::Kind::Restart;
  // A restart within a reload's guard keeps it (re-armed from now); a
  // finished guarded reload starts one; anything else keeps nothing.
  bool keep = p.guard && can_roll_back(p) && (done || restart) && p.config().reload.guard.count() > 0;
  if (keep) {
    program_event(p, ProgramEvent::RolloutGuarded, c);
    p.guard->ended = c.now;
    p.guard->failure.reset();
  } else {
    program_event(p, ProgramEvent::RolloutEnded, c);
    p.guard.reset();
    // A restart kept a reload's previous configuration only for its guard
    // (a reload's own is dealt with below: dropped when done, back if not).
    if (restart) p.previous.reset();
  }
  std::string kept = keep ? "; generation " + std::to_string(p.previous->generation) + " is kept for " +
                                std::to_string(p.config().reload.guard.count()) + "ms (reload.guard)"
                          : "";
  if (done) {
    if (restart) {
      if (ro.client != 0)
        c.out.push_back(reply_action(ro.client, true, "restarted " + std::to_string(ro.replaced) + " worker(s) of " +
                                                          p.name()));
      c.log(LogLevel::Info, p.name() + ": rolling restart done" + kept);
      return;
    }
    // Reload: every old worker is gone; without a guard, so are the sockets only they used.
    if (!keep) p.previous.reset();
    c.log(LogLevel::Info, p.name() + ": " + std::to_string(ro.replaced) + " worker(s) replaced" + kept);
    p.scale_to(ro.scale_to, c);
    return;
  }
  if (restart) {
    c.log(LogLevel::Error, p.name() + ": rolling restart aborted: " + step.why + kept);
    if (ro.client != 0)
      c.out.push_back(reply_action(ro.client, false, "restart of " + p.name() + " aborted: " + step.why));
    return;
  }
  c.log(LogLevel::Error, p.name() + ": reload aborted: " + step.why);
  if (reload_) reload_->failures.push_back(p.name() + ": " + step.why);
  // The new shape is dropped and the old one is back, for the workers still
  // running and for every respawn: a broken new build never takes the old
  // generation down. A later reload retries.
  if (p.previous) {
    p.shape = std::move(*p.previous);
    p.previous.reset();
    c.log(LogLevel::Warn, p.name() + ": back to the configuration of generation " + std::to_string(p.shape.generation));
    p.scale_to(p.count_for(p.config()), c);
  }
}

void Policy::collect(Ctx& c) {
  for (auto& p : programs_) p.collect(c);
  for (auto it = programs_.begin(); it != programs_.end();) {
    ProgramState& p = *it;
    if (p.phase != ProgramPhase::Removing || !p.slots.empty() || !p.retirees.empty() ||
        !program_event(p, ProgramEvent::LastProcessGone, c)) {
      ++it;
      continue;
    }
    std::vector<PendingOp> keep;
    for (auto& op : pending_) {
      if (op.program == p.id)
        c.out.push_back(reply_action(op.client, false, p.name() + " was removed by a reload"));
      else
        keep.push_back(op);
    }
    pending_ = std::move(keep);
    c.log(LogLevel::Info, p.name() + ": removed");
    Action gone;
    gone.kind = Action::Kind::ProgramGone;
    gone.program = p.id;
    c.out.push_back(std::move(gone));
    it = programs_.erase(it);
  }
}

// ---- operator ----

void Policy::shutdown(bool fast, TimePoint now, Actions& out) {
  Ctx c = ctx(now, out);
  if (fast) {
    out.push_back(systemd_action("STOPPING=1"));
    shutting_down_ = shutdown_forced_ = true;
    c.shutting_down = true;
    shutdown_deadline_ = kNever;
    c.log(LogLevel::Info, "preforkd: fast shutdown");
    for (auto& p : programs_) p.kill_all(c);
    orphans_.shutdown(true, now, out);
    collect(c);
    return;
  }
  if (!shutting_down_) {
    out.push_back(systemd_action("STOPPING=1"));
    shutting_down_ = true;
    c.shutting_down = true;
    shutdown_deadline_ = now + shutdown_timeout_;
    c.log(LogLevel::Info, "preforkd: graceful shutdown (at most " + std::to_string(shutdown_timeout_.count()) + "ms)");
  }
  for (auto& p : programs_) p.stop_all(StopReason::Shutdown, Want::Down, c);
  orphans_.shutdown(false, now, out);
  collect(c);
}

void Policy::scale_all(int delta, TimePoint now, Actions& out) {
  if (shutting_down_) return;
  Ctx c = ctx(now, out);
  for (auto& p : programs_) {
    if (p.phase == ProgramPhase::Removing) continue;
    if (delta > 0) p.add_worker(c);
    else p.remove_worker(c);
  }
  collect(c);
}

void Policy::control(const ControlCommand& cmd, ClientId client, TimePoint now, Actions& out) {
  Ctx c = ctx(now, out);
  auto reply = [&](bool ok, std::string text) { out.push_back(reply_action(client, ok, std::move(text))); };
  ProgramState* p = find_mut(cmd.program);
  if (p == nullptr) return reply(false, "unknown program `" + cmd.program + "`");
  if (shutting_down_) return reply(false, "preforkd is shutting down");
  switch (cmd.kind) {
    case ControlCommand::Kind::Signal: {
      size_t n = 0;
      auto signal_one = [&](const Member& m) {
        if (!has_process(m.worker)) return;
        out.push_back(signal_action(m.worker.pid, cmd.signal, p->config().kill_group));
        ++n;
      };
      for (const auto& s : p->slots) signal_one(s.m);
      for (const auto& r : p->retirees) signal_one(r);
      return reply(true, "sent SIG" + std::string(config::signal_name(cmd.signal)) + " to " + std::to_string(n) +
                             " worker(s)");
    }
    case ControlCommand::Kind::Start:
      p->start_all_slots(c);
      return reply(true, "started " + p->name());
    default: break;
  }
  if (cmd.kind == ControlCommand::Kind::Rollback) {
    if (p->phase == ProgramPhase::RollingBack) return reply(false, p->name() + ": a rollback is in progress already");
    if ((p->phase != ProgramPhase::RollingOut && p->phase != ProgramPhase::Guarding) || !can_roll_back(*p))
      return reply(false, p->name() + ": nothing to roll back to: " +
                              (p->phase == ProgramPhase::RollingOut
                                   ? "a restart keeps the configuration"
                                   : "no previous configuration is kept (the guard of its last rollout is over, or it "
                                     "had none)"));
    roll_back(*p, ProgramEvent::RollbackRequested, "preforkctl rollback", client, c);
    collect(c);
    return;
  }
  if (p->phase == ProgramPhase::RollingOut) return reply(false, p->name() + ": a rollout is in progress");
  if (p->phase == ProgramPhase::RollingBack) return reply(false, p->name() + ": a rollback is in progress");
  switch (cmd.kind) {
    case ControlCommand::Kind::Stop:
      p->stop_all(StopReason::Operator, Want::Down, c);
      pending_.push_back({PendingOp::Kind::Stop, p->id, 0, client});
      break;
    case ControlCommand::Kind::Scale:
      if (const auto& as = p->config().autoscale) {
        if (cmd.workers < as->min || cmd.workers > as->max)
          return reply(false, p->name() + ": " + std::to_string(cmd.workers) + " is outside workers: {min: " +
                                  std::to_string(as->min) + ", max: " + std::to_string(as->max) + "}");
        if (p->autoscaler) p->autoscaler->manual(now);  // the cooldown restarts
      }
      c.log(LogLevel::Info, p->name() + ": scaling to " + std::to_string(cmd.workers) + " worker(s) (control)");
      p->scale_to(cmd.workers, c);
      pending_.push_back({PendingOp::Kind::Scale, p->id, cmd.workers, client});
      break;
    case ControlCommand::Kind::Restart: {
      if (reload_phase_ != ReloadPhase::Idle) return reply(false, "a reload is in progress");
      Rollout ro = plan_rollout(*p, Rollout::Kind::Restart,
                                batch_size(p->config().reload, static_cast<uint32_t>(p->wanted())));
      ro.client = client;
      size_t n = ro.todo.size();
      program_event(*p, ProgramEvent::StartRollout, c);
      p->rollout = std::move(ro);
      // Guarded like a reload (core/guard.hpp): within a reload's guard the
      // restarted workers join it; otherwise a failing one stops the restart.
      if (p->config().reload.guard.count() > 0) {
        if (!p->guard) p->guard = start_guard(c);
        p->guard->started = c.now;
        p->guard->ended = kNever;
        p->guard->failure.reset();
      }
      c.log(LogLevel::Info, p->name() + ": rolling restart of " + std::to_string(n) + " worker(s)");
      break;
    }
    default: break;
  }
  collect(c);
}

void Policy::check_operations(Ctx& c) {
  std::vector<PendingOp> keep;
  for (const auto& op : pending_) {
    const ProgramState* p = program(op.program);
    std::optional<OpResult> r;
    if (p == nullptr)
      r = OpResult{false, "the program was removed by a reload"};
    else
      r = check_operation(op, *p);
    if (shutting_down_ && !(r && r->ok)) r = OpResult{false, "preforkd is shutting down"};
    if (r)
      c.out.push_back(reply_action(op.client, r->ok, r->text));
    else
      keep.push_back(op);
  }
  pending_ = std::move(keep);
}

}  // namespace preforkd::core
