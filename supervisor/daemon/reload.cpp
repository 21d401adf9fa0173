// reload.cpp — SIGHUP and `preforkctl reload` (SPEC "Signals to preforkd").
//
// A reload runs in three steps, all inside the one loop:
//   1. read and validate the whole file; compute the difference (core/config_diff);
//   2. prepare everything that can fail — users, groups, new sockets — and
//      give up with nothing changed if anything does (a bad file never
//      touches the running generation);
//   3. commit: added programs start, removed ones stop gracefully, counts
//      scale, in-place keys apply, and programs whose workers must change get
//      a rollout (one canary, then batches of reload.batch, new before old,
//      see Daemon::advance_rollouts). The reload has finished when every
//      rollout, removal and scale of it has; then its clients get the answer.
// At most one reload runs; requests arriving meanwhile (signals or clients)
// are queued and coalesced into one more reload that reads the file again.
#include <algorithm>
#include <sys/socket.h>

#include "core/config_diff.hpp"
#include "daemon/control_protocol.hpp"
#include "daemon/daemon.hpp"
#include "daemon/logging.hpp"
#include "sys/error.hpp"
#include "sys/systemd.hpp"

namespace preforkd::daemon {

namespace {

using core::Clock;

std::string join(const std::vector<std::string>& items, const std::string& sep) {
  std::string out;
  for (const auto& s : items) out += (out.empty() ? "" : sep) + s;
  return out;
}

const config::Program* find_config(const config::Config& c, const std::string& name) {
  for (const auto& p : c.programs)
    if (p.name == name) return &p;
  return nullptr;
}

}  // namespace

bool Daemon::busy_with_rollouts() const {
  return std::any_of(programs_.begin(), programs_.end(), [](const auto& p) { return p->rollout.has_value(); });
}

config::Config Daemon::running_config() const {
  config::Config c = config_;
  c.programs.clear();
  for (const auto& p : programs_)
    if (!p->removing) c.programs.push_back(p->config());
  return c;
}

void Daemon::request_reload(std::optional<ControlServer::ClientId> client) {
  if (shutting_down_) {
    if (client) control_->reply(*client, reply_error("preforkd is shutting down"));
    return;
  }
  if (reload_ || busy_with_rollouts()) {
    // Never interleaved: one more reload runs after this one, reading the
    // file as it is then; every request until then is folded into it.
    if (!reload_queued_) log_->info("preforkd: reload queued until the one in progress has finished");
    reload_queued_ = true;
    if (client) reload_queue_.push_back(*client);
    return;
  }
  std::vector<ControlServer::ClientId> clients;
  if (client) clients.push_back(*client);
  start_reload(std::move(clients));
}

void Daemon::fail_reload(std::vector<ControlServer::ClientId> clients, const std::vector<std::string>& errors) {
  ++reloads_failed_;
  for (const auto& e : errors) log_->error("preforkd: reload: {}", e);
  log_->error("preforkd: reload failed; the running configuration is unchanged");
  std::string msg = "reload failed, the running configuration is unchanged:\n" + join(errors, "\n");
  for (auto c : clients) control_->reply(c, reply_error(msg));
  sys::notify_systemd("READY=1");
}

void Daemon::start_reload(std::vector<ControlServer::ClientId> clients) {
  sys::notify_systemd("RELOADING=1");
  // 1. The whole file, validated.
  std::string text;
  config::LoadResult loaded = config::load_file(config_.path, load_options_, &text);
  if (!loaded.config) {
    std::vector<std::string> errors;
    for (const auto& d : loaded.errors) errors.push_back(d.to_string());
    return fail_reload(std::move(clients), errors);
  }
  config::Config next = std::move(*loaded.config);
  core::ConfigDiff diff = core::diff(running_config(), next);
  if (!diff.errors.empty()) return fail_reload(std::move(clients), diff.errors);

  // 2. Prepare what can fail. A socket in both files is the very same one.
  std::map<std::string, ListenerRef> sockets;
  for (const auto& p : programs_)
    for (const auto& l : p->shape.listeners) sockets.emplace(l->address.key(), l);
  struct Plan {
    const core::ProgramDiff* diff = nullptr;
    const config::Program* config = nullptr;
    std::optional<Shape> shape;               // replaced workers: what the new ones start with
    std::unique_ptr<Program> program;         // added programs
  };
  std::vector<Plan> plans;
  std::vector<std::string> errors;
  for (const auto& pd : diff.programs) {
    if (pd.kind == core::ProgramDiff::Kind::Removed) {
      plans.push_back({&pd, nullptr, std::nullopt, nullptr});
      continue;
    }
    Plan plan{&pd, find_config(next, pd.name), std::nullopt, nullptr};
    const config::Program& cfg = *plan.config;
    try {
      bool fresh = pd.kind == core::ProgramDiff::Kind::Added || pd.replaces_workers();
      if (fresh) {
        std::vector<ListenerRef> shared;
        if (!cfg.reuseport) {
          for (const auto& a : cfg.listen) {
            auto it = sockets.find(a.key());
            if (it == sockets.end()) it = sockets.emplace(a.key(), open_listener(cfg.name, a, cfg.backlog, false)).first;
            shared.push_back(it->second);
          }
        }
        if (pd.kind == core::ProgramDiff::Kind::Added)
          plan.program = make_program(cfg, std::move(shared));
        else
          plan.shape = make_shape(cfg, std::move(shared));
      }
    } catch (const sys::SysError& e) {
      errors.push_back("programs." + cfg.name + ": " + e.what());
    }
    plans.push_back(std::move(plan));
  }
  if (!errors.empty()) return fail_reload(std::move(clients), errors);  // new sockets close with `plans`

  // 3. Commit.
  ++generation_;
  auto now = Clock::now();
  config_texts_[generation_] = std::move(text);
  ReloadRun run;
  run.generation = generation_;
  run.clients = std::move(clients);
  run.started = now;
  std::vector<std::string> summary;

  for (const auto& key : diff.supervisor_kept)
    log_->warn("preforkd: reload: `{}` changed, but keeps its running value until preforkd restarts", key);
  next.supervisor.control_socket = config_.supervisor.control_socket;
  next.supervisor.control_group = config_.supervisor.control_group;
  next.supervisor.metrics = config_.supervisor.metrics;
  next.supervisor.metrics_address = config_.supervisor.metrics_address;
  next.supervisor.pidfile = config_.supervisor.pidfile;
  bool new_log_file = next.supervisor.log_file != config_.supervisor.log_file;
  config_ = std::move(next);
  if (new_log_file) reopen_log();
  if (!options_.log_level) log_->set_level(to_spdlog(config_.supervisor.log_level));
  if (!diff.supervisor_in_place.empty()) summary.push_back("supervisor: " + join(diff.supervisor_in_place, ", "));

  for (auto& plan : plans) {
    const core::ProgramDiff& pd = *plan.diff;
    if (pd.kind == core::ProgramDiff::Kind::Added) {
      Program& p = *plan.program;
      p.shape.config_generation = generation_;
      programs_.push_back(std::move(plan.program));
      for (auto& s : p.slots) spawn(*s);
      run.touched.push_back(pd.name);
      summary.push_back(pd.name + ": added");
      if (p.config().reuseport) enable_listener_migration();
      continue;
    }
    Program* found = find_program(pd.name);
    if (found == nullptr) continue;  // cannot happen: the diff was made from programs_
    Program& p = *found;
    if (pd.kind == core::ProgramDiff::Kind::Removed) {
      p.removing = true;
      for (size_t i = 0; i < p.slots.size();) {
        size_t count = p.slots.size();
        apply(*p.slots[i], core::on_stop(p.slots[i]->worker, p.shape.policy, core::StopReason::Operator,
                                         core::Want::Remove, now));
        if (p.slots.size() == count) ++i;
      }
      stop_retirees(p, -1, core::StopReason::Operator, now);
      summary.push_back(pd.name + ": removed");
      continue;
    }
    if (plan.shape) {
      // Replace every worker: new ones start with the new shape; the old ones
      // keep theirs (and their sockets) until each is replaced.
      p.previous = std::move(p.shape);
      p.shape = std::move(*plan.shape);
      p.shape.config_generation = generation_;
      while (wanted(p) > p.config().workers) remove_worker(p);  // fewer now; more once replaced (scale_to below)
      Rollout ro;
      ro.kind = Rollout::Kind::Reload;
      ro.batch = core::batch_size(p.config().reload, p.config().workers);
      ro.scale_to = p.config().workers;
      start_rollout(p, std::move(ro));
      run.touched.push_back(pd.name);
      summary.push_back(pd.name + ": replacing " + std::to_string(p.rollout->todo.size()) + " worker(s) (" +
                        join(pd.replace, ", ") + ")" +
                        (pd.in_place.empty() ? "" : "; in place: " + join(pd.in_place, ", ")));
      continue;
    }
    // In place: the running workers keep running.
    p.shape.config = *plan.config;
    p.shape.policy = core::SlotPolicy::from(p.shape.config);
    p.shape.config_generation = generation_;
    if (pd.kind == core::ProgramDiff::Kind::Unchanged) continue;
    for (const auto& l : p.shape.listeners) ::listen(l->fd.get(), p.config().backlog);  // backlog may have changed
    if (wanted(p) != p.config().workers) {
      log_->info("{}: scaling to {} worker(s) (reload)", pd.name, p.config().workers);
      scale_to(p, p.config().workers);
      run.touched.push_back(pd.name);
    }
    summary.push_back(pd.name + ": " + join(pd.in_place, ", "));
  }
  // Keep only the file texts some program still runs (the in-place upgrade hands them over).
  for (auto it = config_texts_.begin(); it != config_texts_.end();) {
    uint64_t g = it->first;
    bool used = std::any_of(programs_.begin(), programs_.end(), [&](const auto& p) {
      return p->shape.config_generation == g || (p->previous && p->previous->config_generation == g);
    });
    it = used || g == generation_ ? std::next(it) : config_texts_.erase(it);
  }
  run.summary = summary.empty() ? "nothing changed" : join(summary, "; ");
  log_->info("preforkd: reload, generation {}: {}", generation_, run.summary);
  reload_ = std::move(run);
  // Start the canaries now: this may run after the loop's own
  // advance_rollouts() (a queued reload started by check_reload), and a quiet
  // worker would give the loop no other reason to wake up.
  advance_rollouts();
  check_reload();
}

// A program's rollout was aborted: its new workers' shape is dropped and the
// old one is back, for the workers still running and for every respawn, so a
// broken new build never takes the old generation down. A later reload
// retries.
void Daemon::revert_program(Program& p) {
  if (!p.previous) return;
  p.shape = std::move(*p.previous);
  p.previous.reset();
  log_->warn("{}: back to the configuration of generation {}", p.config().name, p.shape.config_generation);
  scale_to(p, p.config().workers);
}

// Programs a reload removed are dropped once their last process is reaped.
void Daemon::collect_removed_programs() {
  for (size_t i = 0; i < programs_.size();) {
    Program& p = *programs_[i];
    if (!p.removing || !p.slots.empty() || !p.retirees.empty()) {
      ++i;
      continue;
    }
    for (size_t j = 0; j < pending_ops_.size();) {
      if (pending_ops_[j].program == &p) {
        control_->reply(pending_ops_[j].client, reply_error(p.config().name + " was removed by a reload"));
        pending_ops_.erase(pending_ops_.begin() + static_cast<std::ptrdiff_t>(j));
      } else {
        ++j;
      }
    }
    log_->info("{}: removed", p.config().name);
    programs_.erase(programs_.begin() + static_cast<std::ptrdiff_t>(i));
  }
}

// Once per loop iteration: has the reload in progress finished? It has when
// no program of it is still rolling out or being removed, and every worker it
// started is ready — or has failed, which fails the reload.
void Daemon::check_reload() {
  collect_removed_programs();
  if (!reload_) {
    if (reload_queued_ && !busy_with_rollouts() && !shutting_down_) {
      reload_queued_ = false;
      start_reload(std::exchange(reload_queue_, {}));
    }
    return;
  }
  ReloadRun& run = *reload_;
  std::vector<std::string> failed_starts;
  if (!shutting_down_) {
    for (const auto& pp : programs_) {
      const Program& p = *pp;
      if (p.removing || p.rollout) return;
      if (std::find(run.touched.begin(), run.touched.end(), p.config().name) == run.touched.end()) continue;
      if (!p.retirees.empty()) return;
      for (const auto& s : p.slots) {
        const core::Worker& w = s->worker;
        if (w.want == core::Want::Remove) return;  // still on its way out
        if (w.want != core::Want::Up || w.state == core::WorkerState::Ready) continue;
        if ((w.state == core::WorkerState::Backoff || w.state == core::WorkerState::Stopped) && w.streak > 0) {
          failed_starts.push_back(tag(*s) + " failed to start (see preforkd's log)");
          continue;
        }
        return;  // starting
      }
    }
  } else {
    run.failures.push_back("preforkd is shutting down");
  }
  run.failures.insert(run.failures.end(), failed_starts.begin(), failed_starts.end());
  bool ok = run.failures.empty();
  ++(ok ? reloads_ok_ : reloads_failed_);
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - run.started).count();
  if (ok) {
    log_->info("preforkd: reload to generation {} done in {}ms", run.generation, ms);
  } else {
    log_->error("preforkd: reload to generation {} failed after {}ms: {}", run.generation, ms,
                join(run.failures, "; "));
  }
  for (auto c : run.clients) {
    if (ok)
      control_->reply(c, reply_ok("reloaded, generation " + std::to_string(run.generation) + ": " + run.summary));
    else
      control_->reply(c, reply_error("reload to generation " + std::to_string(run.generation) +
                                     " failed: " + join(run.failures, "; ")));
  }
  sys::notify_systemd("READY=1");
  reload_.reset();
  if (reload_queued_ && !shutting_down_ && !busy_with_rollouts()) {
    reload_queued_ = false;
    start_reload(std::exchange(reload_queue_, {}));
  }
}

}  // namespace preforkd::daemon
