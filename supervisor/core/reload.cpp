// reload.cpp — core::Policy's reloads: one at a time, later requests queued
// and coalesced; what a validated plan does to each program (start, stop,
// scale, roll out under the guard); when the reload has finished.
#include "core/policy.hpp"

#include <algorithm>

namespace preforkd::core {

namespace {

std::string join(const std::vector<std::string>& items, const std::string& sep) {
  std::string out;
  for (const auto& s : items) out += (out.empty() ? "" : sep) + s;
  return out;
}

Shape make_shape(const config::Program& cfg, uint64_t generation) {
  return Shape{cfg, SlotPolicy::from(cfg), generation};
}

}  // namespace


void Policy::request_reload(std::optional<ClientId> client, TimePoint now, Actions& out) {
  Ctx c = ctx(now, out);
  if (shutting_down_) {
    if (client) out.push_back(reply_action(*client, false, "preforkd is shutting down"));
    return;
  }
  if (reload_phase_ != ReloadPhase::Idle || busy_with_rollouts()) {
    // Never interleaved: one more reload runs after this one, reading the
    // file as it is then; every request until then is folded into it.
    if (!reload_queued_) c.log(LogLevel::Info, "preforkd: reload queued until the one in progress has finished");
    reload_queued_ = true;
    if (client) reload_queue_.push_back(*client);
    return;
  }
  std::vector<ClientId> clients;
  if (client) clients.push_back(*client);
  begin_reload(std::move(clients), c);
}

void Policy::begin_reload(std::vector<ClientId> clients, Ctx& c) {
  reload_phase_ = ReloadPhase::Reading;
  c.out.push_back(systemd_action("RELOADING=1"));
  Action a;
  a.kind = Action::Kind::BeginReload;
  a.clients = std::move(clients);
  c.out.push_back(std::move(a));
}

void Policy::reload_failed(std::vector<ClientId> clients, const std::vector<std::string>& errors, Actions& out) {
  ++reloads_failed_;
  for (const auto& e : errors) out.push_back(log_action(LogLevel::Error, "preforkd: reload: " + e));
  out.push_back(log_action(LogLevel::Error, "preforkd: reload failed; the running configuration is unchanged"));
  std::string msg = "reload failed, the running configuration is unchanged:\n" + join(errors, "\n");
  for (auto client : clients) out.push_back(reply_action(client, false, msg));
  out.push_back(systemd_action("READY=1"));
  reload_phase_ = ReloadPhase::Idle;  // a queued reload starts at the next tick
}

void Policy::commit_reload(ReloadPlan plan, std::vector<ClientId> clients, TimePoint now, Actions& out) {
  Ctx c = ctx(now, out);
  generation_ = plan.generation;
  shutdown_timeout_ = plan.shutdown_timeout;
  ReloadRun run;
  run.generation = generation_;
  run.clients = std::move(clients);
  run.started = now;
  std::vector<std::string> summary;
  if (!plan.diff.supervisor_in_place.empty())
    summary.push_back("supervisor: " + join(plan.diff.supervisor_in_place, ", "));
  auto next_config = [&](const std::string& name) -> const config::Program* {
    for (const auto& p : plan.next)
      if (p.name == name) return &p;
    return nullptr;
  };
  for (const auto& pd : plan.diff.programs) {
    const config::Program* cfg = next_config(pd.name);
    if (pd.kind == ProgramDiff::Kind::Added) {
      if (cfg == nullptr) continue;
      add_program(*cfg, generation_);
      ProgramState& p = programs_.back();
      for (size_t i = 0; i < p.slots.size(); ++i) p.request_spawn(static_cast<int>(i), c);
      run.touched.push_back(pd.name);
      summary.push_back(pd.name + ": added");
      continue;
    }
    ProgramState* found = find_mut(pd.name);
    if (found == nullptr) continue;  // cannot happen: the diff was made from the running programs
    ProgramState& p = *found;
    if (pd.kind == ProgramDiff::Kind::Removed) {
      if (p.rollout) p.rollout.reset();
      p.guard.reset();
      program_event(p, ProgramEvent::Remove, c);
      p.stop_all(StopReason::Operator, Want::Remove, c);
      summary.push_back(pd.name + ": removed");
      continue;
    }
    if (cfg == nullptr) continue;
    if (pd.replaces_workers()) {
      // Replace every worker: new ones start with the new shape; the old ones
      // keep theirs (and their sockets) until each is replaced.
      if (p.phase == ProgramPhase::Guarding && p.previous)
        c.log(LogLevel::Info, pd.name + ": the guard of generation " + std::to_string(p.shape.generation) +
                                  " ends: generation " + std::to_string(p.previous->generation) +
                                  " is no longer kept, generation " + std::to_string(generation_) + " replaces it");
      const size_t target = p.count_for(*cfg);
      p.previous = std::move(p.shape);
      p.shape = make_shape(*cfg, generation_);
      // The way back stays open from the canary on (core/guard.hpp).
      if (cfg->reload.guard.count() > 0)
        p.guard = start_guard(c);
      else
        p.guard.reset();
      while (p.wanted() > target) p.remove_worker(c);  // fewer now; more once replaced
      Rollout ro = plan_rollout(p, Rollout::Kind::Reload, batch_size(cfg->reload, static_cast<uint32_t>(target)));
      ro.scale_to = target;
      size_t n = ro.todo.size();
      program_event(p, ProgramEvent::StartRollout, c);
      p.rollout = std::move(ro);
      run.touched.push_back(pd.name);
      summary.push_back(pd.name + ": replacing " + std::to_string(n) + " worker(s) (" + join(pd.replace, ", ") + ")" +
                        (pd.in_place.empty() ? "" : "; in place: " + join(pd.in_place, ", ")));
      continue;
    }
    // In place: the running workers keep running.
    p.shape = make_shape(*cfg, generation_);
    if (pd.kind == ProgramDiff::Kind::Unchanged) continue;
    if (const size_t target = p.count_for(*cfg); p.wanted() != target) {
      c.log(LogLevel::Info, pd.name + ": scaling to " + std::to_string(target) + " worker(s) (reload)");
      p.scale_to(target, c);
      run.touched.push_back(pd.name);
    }
    summary.push_back(pd.name + ": " + join(pd.in_place, ", "));
  }
  run.summary = summary.empty() ? "nothing changed" : join(summary, "; ");
  c.log(LogLevel::Info, "preforkd: reload, generation " + std::to_string(generation_) + ": " + run.summary);
  reload_ = std::move(run);
  reload_phase_ = ReloadPhase::Running;
  collect(c);
}

void Policy::check_reload(Ctx& c) {
  if (reload_phase_ == ReloadPhase::Running && reload_) {
    ReloadRun& run = *reload_;
    std::optional<std::vector<std::string>> failures;
    if (shutting_down_) {
      run.failures.push_back("preforkd is shutting down");
      failures = run.failures;
    } else {
      failures = core::check_reload(run, programs_);
    }
    if (!failures) return;
    bool ok = failures->empty();
    ++(ok ? reloads_ok_ : reloads_failed_);
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(c.now - run.started).count();
    std::string gen = std::to_string(run.generation);
    if (ok)
      c.log(LogLevel::Info, "preforkd: reload to generation " + gen + " done in " + std::to_string(ms) + "ms");
    else
      c.log(LogLevel::Error, "preforkd: reload to generation " + gen + " failed after " + std::to_string(ms) + "ms: " +
                                 join(*failures, "; "));
    for (auto client : run.clients) {
      if (ok)
        c.out.push_back(reply_action(client, true, "reloaded, generation " + gen + ": " + run.summary));
      else
        c.out.push_back(reply_action(client, false, "reload to generation " + gen + " failed: " + join(*failures, "; ")));
    }
    c.out.push_back(systemd_action("READY=1"));
    reload_.reset();
    reload_phase_ = ReloadPhase::Idle;
  }
  if (reload_phase_ == ReloadPhase::Idle && reload_queued_ && !shutting_down_ && !busy_with_rollouts()) {
    reload_queued_ = false;
    begin_reload(std::exchange(reload_queue_, {}), c);
  } else if (shutting_down_ && reload_queued_) {
    reload_queued_ = false;
    for (auto client : std::exchange(reload_queue_, {}))
      c.out.push_back(reply_action(client, false, "preforkd is shutting down"));
  }
}


}  // namespace preforkd::core
