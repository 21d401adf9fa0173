// reload.cpp — SIGHUP and `preforkctl reload`: the daemon's part.
//
// core::Policy decides when a reload runs (one at a time, later requests
// queued and coalesced) and what it does to each program; it asks for one
// with a BeginReload action. Here the daemon does the part that touches the
// system, in two steps:
//   1. read and validate the whole file; compute the difference (core/config_diff);
//   2. prepare everything that can fail — users, groups, new sockets — and
//      give up with nothing changed if anything does (a bad file never
//      touches the running generation);
// then hands the plan to Policy::commit_reload, which starts, stops, scales
// and rolls out (canary, batches, new before old).
#include <algorithm>
#include <limits>

#include "core/config_diff.hpp"
#include "daemon/daemon.hpp"
#include "daemon/logging.hpp"
#include "sys/error.hpp"

namespace preforkd::daemon {

namespace {

const config::Program* find_config(const config::Config& c, const std::string& name) {
  for (const auto& p : c.programs)
    if (p.name == name) return &p;
  return nullptr;
}

}  // namespace

config::Config Daemon::running_config() const {
  config::Config c = config_;
  c.programs.clear();
  for (const auto& p : policy_.programs())
    if (p.phase != core::ProgramPhase::Removing) c.programs.push_back(p.config());
  return c;
}

void Daemon::begin_reload(std::vector<core::ClientId> clients) {
  auto t = now();
  // 1. The whole file, validated.
  std::string text;
  config::LoadResult loaded = config::load_file(config_.path, load_options_, &text);
  if (!loaded.config) {
    std::vector<std::string> errors;
    for (const auto& d : loaded.errors) errors.push_back(d.to_string());
    return policy_.reload_failed(std::move(clients), errors, actions_);
  }
  config::Config next = std::move(*loaded.config);
  core::ConfigDiff diff = core::diff(running_config(), next);
  if (!diff.errors.empty()) return policy_.reload_failed(std::move(clients), diff.errors, actions_);

  // 2. Prepare what can fail. A socket in both files is the very same one.
  uint64_t g = policy_.generation() + 1;
  std::map<std::string, ListenerRef> sockets;
  for (const auto& p : policy_.programs()) {
    if (auto it = resources_.find({p.name(), p.shape.generation}); it != resources_.end())
      for (const auto& l : it->second.listeners) sockets.emplace(l->address.key(), l);
    // A reload.guard keeps the previous configuration's sockets open: a file
    // that goes back to one of them gets that very socket (binding it anew
    // would fail, the address is in use).
    if (p.previous)
      if (auto it = resources_.find({p.name(), p.previous->generation}); it != resources_.end())
        for (const auto& l : it->second.listeners) sockets.emplace(l->address.key(), l);
  }
  std::map<ShapeKey, Resources> prepared;
  // reuseport sockets of added programs, under a provisional id until the policy assigns theirs.
  std::map<std::string, core::ProgramId> provisional;
  core::ProgramId next_provisional = std::numeric_limits<core::ProgramId>::max();
  std::vector<std::string> errors;
  for (const auto& pd : diff.programs) {
    if (pd.kind == core::ProgramDiff::Kind::Removed) continue;
    const config::Program& cfg = *find_config(next, pd.name);
    try {
      if (pd.kind == core::ProgramDiff::Kind::Added || pd.replaces_workers()) {
        prepared.emplace(ShapeKey{cfg.name, g}, make_resources(cfg, bind_shared(cfg, &sockets)));
        if (pd.kind == core::ProgramDiff::Kind::Added && cfg.reuseport) {
          core::ProgramId id = provisional[cfg.name] = next_provisional--;
          for (uint32_t i = 0; i < cfg.workers; ++i) slot_sockets_[{id, static_cast<int>(i)}] = bind_slot(cfg, id, static_cast<int>(i));
        }
      } else if (auto* running = policy_.find(pd.name)) {
        // In place: the same sockets and environment, under the new generation.
        auto it = resources_.find({pd.name, running->shape.generation});
        if (it != resources_.end()) prepared.emplace(ShapeKey{cfg.name, g}, it->second);
      }
    } catch (const sys::SysError& e) {
      errors.push_back("programs." + cfg.name + ": " + e.what());
    }
  }
  auto drop_provisional = [&] {
    for (auto it = slot_sockets_.begin(); it != slot_sockets_.end();) {
      bool ours = std::any_of(provisional.begin(), provisional.end(), [&](const auto& kv) { return kv.second == it->first.first; });
      it = ours ? slot_sockets_.erase(it) : std::next(it);
    }
  };
  if (!errors.empty()) {
    drop_provisional();  // new sockets close with `prepared`
    return policy_.reload_failed(std::move(clients), errors, actions_);
  }

  // 3. Commit: the supervisor's own keys here, the programs in the policy.
  config_texts_[g] = std::move(text);
  for (const auto& key : diff.supervisor_kept)
    log_->warn("preforkd: reload: `{}` changed, but keeps its running value until preforkd restarts", key);
  next.supervisor.control_socket = config_.supervisor.control_socket;
  next.supervisor.control_group = config_.supervisor.control_group;
  next.supervisor.metrics = config_.supervisor.metrics;
  next.supervisor.metrics_address = config_.supervisor.metrics_address;
  next.supervisor.pidfile = config_.supervisor.pidfile;
  bool new_log_file = next.supervisor.log_file != config_.supervisor.log_file;
  config_ = next;
  if (new_log_file) reopen_log();
  if (!options_.log_level) log_->set_level(to_spdlog(config_.supervisor.log_level));
  for (auto& [key, res] : prepared) resources_[key] = std::move(res);
  for (const auto& pd : diff.programs) {
    // backlog may have changed: listen() again on the very same sockets.
    if (pd.kind != core::ProgramDiff::Kind::Changed || pd.replaces_workers()) continue;
    const config::Program& cfg = *find_config(next, pd.name);
    if (auto it = resources_.find({cfg.name, g}); it != resources_.end())
      for (const auto& l : it->second.listeners) sys::relisten(l->fd.get(), cfg.backlog);
  }
  core::ReloadPlan plan;
  plan.generation = g;
  plan.diff = std::move(diff);
  plan.next = next.programs;
  plan.shutdown_timeout = next.supervisor.shutdown_timeout;
  policy_.commit_reload(std::move(plan), std::move(clients), t, actions_);
  for (const auto& [name, temp] : provisional) {
    const core::ProgramState* p = policy_.find(name);
    for (auto it = slot_sockets_.begin(); it != slot_sockets_.end();) {
      if (it->first.first != temp) {
        ++it;
        continue;
      }
      if (p != nullptr) slot_sockets_[{p->id, it->first.second}] = std::move(it->second);
      it = slot_sockets_.erase(it);
    }
  }
  if (std::any_of(next.programs.begin(), next.programs.end(), [](const auto& c) { return c.reuseport; }))
    enable_listener_migration();
}

}  // namespace preforkd::daemon
