// upgrade.cpp — USR2: upgrade preforkd itself without touching a worker.
//
//   1. USR2 waits until the policy is quiescent: no reload, rollout,
//      rollback or control operation in progress (each has a client or a
//      plan that an exec would lose). A reload.guard is handed over: the
//      previous configuration, its sockets and the watched process ids.
//   2. The state is written to a memfd and the binary at the path preforkd
//      was started from (a package upgrade's new file) is run in check mode on
//      it and on the configuration file, as a child of the loop (reaped like
//      any other). If it fails, preforkd says why and keeps running.
//   3. Otherwise the state is written again (it may have moved meanwhile), the
//      fds it names are made inheritable, and preforkd execs the new binary
//      with `--upgrade-state FD`: same pid, so the workers stay its children,
//      their pipes and sockets stay open, and systemd's main pid is unchanged.
//      Signals stay blocked across the exec, so none is lost.
// Every enum in the state is written by name (upgrade_state.hpp); a name or
// a format version this binary does not know is refused by the check.
#include <algorithm>
#include <csignal>
#include <cstring>

#include "config/signals.hpp"
#include "daemon/daemon.hpp"
#include "daemon/upgrade_state.hpp"
#include "preforkd/worker.h"
#include "sys/error.hpp"
#include "sys/procfs.hpp"
#include "version.hpp"

namespace preforkd::daemon {

using core::Clock;
using core::TimePoint;
using nlohmann::json;

namespace {

constexpr std::chrono::seconds kCheckTimeout{30};

int64_t to_ns(TimePoint t) { return t.time_since_epoch().count(); }
TimePoint from_ns(int64_t ns) { return TimePoint(TimePoint::duration(ns)); }

template <typename T, typename F>
T named(const json& j, const char* key, F from) {
  std::string name = j.at(key).get<std::string>();
  auto v = from(name);
  if (!v) throw std::runtime_error(std::string("unknown ") + key + " `" + name + "`");
  return *v;
}

}  // namespace

// ---- what is handed over ----

json Daemon::serialize_state() const {
  auto listeners = [](const std::vector<ListenerRef>& list) {
    json out = json::array();
    for (const auto& l : list)
      out.push_back({{"fd", l->fd.get()}, {"bound", l->bound}, {"unlink", l->unlink_on_close}});
    return out;
  };
  auto member = [&](const core::Member& m) {
    const core::Worker& w = m.worker;
    json pipes = json::array();
    if (auto it = proc_pipes_.find(m.proc); m.proc != 0 && it != proc_pipes_.end())
      for (uint64_t token : it->second) {
        const Pipe& p = *handlers_.at(token).pipe;
        pipes.push_back({{"kind", pipe_kind_name(static_cast<int>(p.kind))},
                         {"fd", p.fd.get()},
                         {"partial", p.lines.partial()},
                         {"discarding", p.lines.discarding()}});
      }
    return json{{"worker",
                 {{"slot", w.slot},
                  {"state", core::state_name(w.state)},
                  {"want", core::want_name(w.want)},
                  {"pid", w.pid},
                  {"spawn_seq", w.spawn_seq},
                  {"generation", w.generation},
                  {"started_at", to_ns(w.started_at)},
                  {"ready_at", to_ns(w.ready_at)},
                  {"last_seen", to_ns(w.last_seen)},
                  {"deadline", to_ns(w.deadline)},
                  {"streak", w.streak},
                  {"restarts", w.restarts},
                  {"stop_reason", core::to_string(w.stop_reason)},
                  {"status", w.status_text}}},
                {"report", {{"counters", m.report.counters()}, {"gauges", m.report.gauges()}}},
                {"notify_errors", m.notify_errors},
                {"draining", m.draining},
                {"proc", m.proc},  // kept: the guard tells its processes by id
                {"pipes", pipes}};
  };
  json programs = json::array();
  for (const auto& p : policy_.programs()) {
    json slots = json::array(), retirees = json::array();
    for (const auto& s : p.slots) {
      json js = member(s.m);
      js["phase"] = core::to_string(s.phase);
      js["replacing_for"] = core::to_string(s.replacing_for);
      auto own = slot_sockets_.find({p.id, s.m.worker.slot});
      js["own_listeners"] = listeners(own == slot_sockets_.end() ? std::vector<ListenerRef>{} : own->second);
      slots.push_back(std::move(js));
    }
    for (const auto& r : p.retirees) {
      json jr = member(r);
      jr["own_listeners"] = json::array();
      retirees.push_back(std::move(jr));
    }
    auto res = resources_.find({p.name(), p.shape.generation});
    json guard = nullptr;
    if (p.phase == core::ProgramPhase::Guarding && p.previous && p.guard) {
      // The way back survives the upgrade: the previous configuration (its
      // text is among "texts"), its sockets, and which processes are watched.
      auto prev = resources_.find({p.name(), p.previous->generation});
      guard = {{"previous_generation", p.previous->generation},
               {"previous_listeners",
                listeners(prev == resources_.end() ? std::vector<ListenerRef>{} : prev->second.listeners)},
               {"first_proc", p.guard->first_proc},
               {"started", to_ns(p.guard->started)},
               {"ended", to_ns(p.guard->ended)}};
    }
    programs.push_back({{"name", p.name()},
                        {"rollbacks", p.rollbacks},
                        {"guard", guard},
                        {"config_generation", p.shape.generation},
                        {"listeners", listeners(res == resources_.end() ? std::vector<ListenerRef>{} : res->second.listeners)},
                        {"starts", p.starts},
                        {"exits", p.exits},
                        {"notify_errors", p.notify_errors},
                        // ended and running busy periods: the new binary starts every
                        // worker as unknown, and the total never goes back
                        {"busy_seconds", p.busy_seconds(now())},
                        {"autoscale_total", p.autoscale_total},  // the autoscaler itself starts afresh
                        {"retired_counters", p.totals.retired()},
                        {"dropped_names", p.totals.dropped_names()},
                        {"slots", slots},
                        {"retirees", retirees}});
  }
  json texts = json::object();
  for (const auto& [gen, text] : config_texts_) texts[std::to_string(gen)] = text;
  json orphans = json::array();  // being stopped or kept: the new binary goes on with them
  for (const auto& o : policy_.orphans().list())
    orphans.push_back({{"pid", o.pid},
                       {"start_time", o.start_time},
                       {"comm", o.comm},
                       {"program", o.origin.program},
                       {"tag", o.origin.tag},
                       {"left_by", o.origin.left_by},
                       {"keep", o.origin.policy.keep},
                       {"stop_signal", o.origin.policy.stop_signal},
                       {"stop_timeout_ms", o.origin.policy.stop_timeout.count()},
                       {"since", to_ns(o.since)},
                       {"state", core::to_string(o.state)},
                       {"deadline", to_ns(o.deadline)}});
  return json{{"format", kStateFormat},
              {"version", kStateVersion},
              {"from_version", kVersion},
              {"config_path", config_.path},
              {"generation", policy_.generation()},
              {"texts", texts},
              {"reloads_ok", policy_.reloads_ok()},
              {"reloads_failed", policy_.reloads_failed()},
              {"original_nofile", {original_nofile_.soft, original_nofile_.hard}},
              {"control_fd", control_ ? control_->listen_fd() : -1},
              {"control_socket", config_.supervisor.control_socket},
              {"metrics", config_.supervisor.metrics ? *config_.supervisor.metrics : ""},
              {"metrics_fd", metrics_ ? metrics_->listen_fd() : -1},
              {"notify_fd", notify_socket_ ? notify_socket_.get() : -1},
              {"programs", programs},
              {"orphans", orphans},
              {"orphans_total", policy_.orphans().totals()}};
}

// The new binary's side: everything the old one handed over, checked, then
// wired into this loop. Throws on anything inconsistent (preforkd exits 1:
// the check step before the exec makes that a should-not-happen).
void Daemon::adopt_state(const json& st, const std::map<uint64_t, config::Config>& configs) {
  uint64_t generation = st.at("generation").get<uint64_t>();
  original_nofile_.soft = st.at("original_nofile").at(0).get<unsigned long long>();
  original_nofile_.hard = st.at("original_nofile").at(1).get<unsigned long long>();
  for (const auto& [gen, text] : st.at("texts").items()) config_texts_[std::stoull(gen)] = text.get<std::string>();
  pid_t self = sys::self_pid();

  auto adopt_fd = [](int fd, const char* what) {
    if (fd < 3 || !sys::fd_is_open(fd))
      throw std::runtime_error(std::string("handed-over ") + what + " fd " + std::to_string(fd) + " is not open");
    return sys::UniqueFd(fd);
  };
  std::map<int, ListenerRef> by_fd;  // one Listener per fd, even if listed twice
  auto adopt_listeners = [&](const json& list, const std::vector<config::ListenAddress>& addresses) {
    std::vector<ListenerRef> out;
    for (size_t i = 0; i < list.size(); ++i) {
      int fd = list[i].at("fd").get<int>();
      if (auto it = by_fd.find(fd); it != by_fd.end()) {
        out.push_back(it->second);
        continue;
      }
      auto l = std::make_shared<Listener>();
      l->fd = adopt_fd(fd, "listening socket");
      if (!sys::is_listening_socket(fd))
        throw std::runtime_error("handed-over fd " + std::to_string(fd) + " is not a listening socket");
      if (i < addresses.size()) l->address = addresses[i];
      l->bound = list[i].value("bound", "");
      l->unlink_on_close = list[i].value("unlink", false);
      by_fd.emplace(fd, l);
      out.push_back(std::move(l));
    }
    return out;
  };

  core::Programs programs;
  std::vector<std::map<int, std::vector<ListenerRef>>> own_sockets;  // per program, in order
  struct PipeState {
    core::ProcId proc;
    std::unique_ptr<Pipe> pipe;
  };
  std::vector<PipeState> pipes;
  core::ProcId next_proc = 0;
  for (const auto& jp : st.at("programs")) {
    std::string name = jp.at("name").get<std::string>();
    uint64_t g = jp.at("config_generation").get<uint64_t>();
    const auto& list = configs.at(g).programs;
    const config::Program& cfg =
        *std::find_if(list.begin(), list.end(), [&](const config::Program& c) { return c.name == name; });
    core::ProgramState p;
    p.shape = core::Shape{cfg, core::SlotPolicy::from(cfg), g};
    resources_.emplace(ShapeKey{name, g},
                       make_resources(cfg, adopt_listeners(jp.at("listeners"),
                                                           cfg.reuseport ? std::vector<config::ListenAddress>{} : cfg.listen)));
    p.starts = jp.at("starts").get<uint64_t>();
    for (size_t i = 0; i < p.exits.size(); ++i) p.exits[i] = jp.at("exits").at(i).get<uint64_t>();
    p.notify_errors = jp.at("notify_errors").get<uint64_t>();
    if (auto b = jp.find("busy_seconds"); b != jp.end() && b->is_number()) p.busy_seconds_done = b->get<double>();
    if (auto a = jp.find("autoscale_total"); a != jp.end() && a->is_array() && a->size() == 2 &&
                                             (*a)[0].is_number_unsigned() && (*a)[1].is_number_unsigned())
      p.autoscale_total = {(*a)[0].get<uint64_t>(), (*a)[1].get<uint64_t>()};
    p.rollbacks = jp.value("rollbacks", uint64_t{0});
    if (const json& jg = jp.value("guard", json()); jg.is_object()) {
      uint64_t pg = jg.at("previous_generation").get<uint64_t>();
      const auto& plist = configs.at(pg).programs;
      const config::Program& pcfg =
          *std::find_if(plist.begin(), plist.end(), [&](const config::Program& c) { return c.name == name; });
      p.previous = core::Shape{pcfg, core::SlotPolicy::from(pcfg), pg};
      resources_.emplace(ShapeKey{name, pg},
                         make_resources(pcfg, adopt_listeners(jg.at("previous_listeners"),
                                                              pcfg.reuseport ? std::vector<config::ListenAddress>{}
                                                                             : pcfg.listen)));
      core::Guard guard;
      guard.first_proc = jg.at("first_proc").get<uint64_t>();
      guard.started = from_ns(jg.at("started").get<int64_t>());
      guard.ended = from_ns(jg.at("ended").get<int64_t>());
      p.guard = guard;
      p.phase = core::ProgramPhase::Guarding;
    }
    p.totals.restore(jp.at("retired_counters").get<std::map<std::string, uint64_t>>(),
                     jp.at("dropped_names").get<uint64_t>());
    std::map<int, std::vector<ListenerRef>> own;
    auto adopt_member = [&](const json& js) {
      core::Member m;
      const json& w = js.at("worker");
      core::Worker& k = m.worker;
      k.slot = w.at("slot").get<int>();
      k.state = named<core::WorkerState>(w, "state", core::worker_state_from);
      k.want = named<core::Want>(w, "want", core::want_from);
      k.pid = w.at("pid").get<pid_t>();
      k.spawn_seq = w.at("spawn_seq").get<uint64_t>();
      k.generation = w.at("generation").get<uint64_t>();
      k.started_at = from_ns(w.at("started_at").get<int64_t>());
      k.ready_at = from_ns(w.at("ready_at").get<int64_t>());
      k.last_seen = from_ns(w.at("last_seen").get<int64_t>());
      k.deadline = from_ns(w.at("deadline").get<int64_t>());
      k.streak = w.at("streak").get<unsigned>();
      k.restarts = w.at("restarts").get<unsigned>();
      k.stop_reason = named<core::StopReason>(w, "stop_reason", core::stop_reason_from);
      k.status_text = w.value("status", "");
      if (k.pid > 0) {
        // Still ours: a live child, or a zombie the first reap collects.
        if (sys::parent_of(k.pid) != self)
          throw std::runtime_error(p.tag(k.slot) + ": pid " + std::to_string(k.pid) + " is not a child of " +
                                   std::to_string(self));
        // The id the previous binary gave it (the guard compares them);
        // a state from before ids were kept gets new ones.
        uint64_t kept = js.value("proc", uint64_t{0});
        m.proc = kept > 0 ? kept : ++next_proc;
      }
      m.report.restore(js.at("report").at("counters").get<std::map<std::string, uint64_t, std::less<>>>(),
                       js.at("report").at("gauges").get<std::map<std::string, int64_t, std::less<>>>());
      m.notify_errors = js.at("notify_errors").get<uint64_t>();
      m.draining = js.at("draining").get<bool>();
      for (const auto& jpipe : js.at("pipes")) {
        auto pipe = std::make_unique<Pipe>();
        auto kind = pipe_kind_from(jpipe.at("kind").get<std::string>());
        if (!kind) throw std::runtime_error("unknown pipe kind `" + jpipe.at("kind").get<std::string>() + "`");
        pipe->kind = static_cast<Pipe::Kind>(*kind);
        pipe->fd = adopt_fd(jpipe.at("fd").get<int>(), "pipe");
        pipe->who = p.tag(k.slot) + " " + std::to_string(k.pid);
        if (pipe->kind == Pipe::Kind::Notify)
          pipe->lines = core::LineBuffer(PREFORKD_NOTIFY_LINE_MAX, core::LineBuffer::Overflow::Discard);
        pipe->lines.restore(jpipe.value("partial", ""), jpipe.value("discarding", false));
        if (m.proc != 0) pipes.push_back({m.proc, std::move(pipe)});
      }
      return m;
    };
    for (const auto& js : jp.at("slots")) {
      core::Slot s;
      s.m = adopt_member(js);
      s.phase = named<core::SlotPhase>(js, "phase", core::slot_phase_from);
      s.replacing_for = named<core::Recycle>(js, "replacing_for", core::recycle_from);
      auto sockets = adopt_listeners(js.at("own_listeners"), cfg.listen);
      if (!sockets.empty()) own[s.m.worker.slot] = std::move(sockets);
      p.slots.push_back(std::move(s));
    }
    for (const auto& js : jp.at("retirees")) p.retirees.push_back(adopt_member(js));
    programs.push_back(std::move(p));
    own_sockets.push_back(std::move(own));
  }
  policy_.adopt(std::move(programs), generation, st.at("reloads_ok").get<uint64_t>(),
                st.at("reloads_failed").get<uint64_t>());
  // Orphans (optional: a state written before the process tree had none).
  std::vector<core::Orphan> orphans;
  for (const auto& jo : st.value("orphans", json::array())) {
    core::Orphan o;
    o.pid = jo.at("pid").get<pid_t>();
    o.start_time = jo.at("start_time").get<uint64_t>();
    o.comm = jo.at("comm").get<std::string>();
    o.origin.program = jo.at("program").get<std::string>();
    o.origin.tag = jo.at("tag").get<std::string>();
    o.origin.left_by = jo.at("left_by").get<pid_t>();
    o.origin.policy.keep = jo.at("keep").get<bool>();
    o.origin.policy.stop_signal = jo.at("stop_signal").get<int>();
    o.origin.policy.stop_timeout = core::Duration(jo.at("stop_timeout_ms").get<int64_t>());
    o.since = from_ns(jo.at("since").get<int64_t>());
    o.state = named<core::OrphanState>(jo, "state", core::orphan_state_from);
    o.deadline = from_ns(jo.at("deadline").get<int64_t>());
    orphans.push_back(std::move(o));
  }
  policy_.restore_orphans(std::move(orphans),
                          st.value("orphans_total", json::object()).get<std::map<std::string, uint64_t>>());
  // Into the loop: reuseport sockets under the ids the policy gave, pipes.
  size_t i = 0;
  for (const auto& p : policy_.programs()) {
    for (auto& [slot, sockets] : own_sockets[i]) slot_sockets_[{p.id, slot}] = std::move(sockets);
    ++i;
  }
  for (auto& ps : pipes) {
    int fd = ps.pipe->fd.get();
    Handler h;
    h.kind = Handler::Kind::Pipe;
    h.pipe = std::move(ps.pipe);
    uint64_t token = watch(fd, std::move(h));
    if (token == 0) throw std::runtime_error("cannot watch a handed-over pipe");
    proc_pipes_[ps.proc].push_back(token);
  }
  int control_fd = st.at("control_fd").get<int>();
  int metrics_fd = st.at("metrics_fd").get<int>();
  if (control_fd >= 0) adopted_control_ = adopt_fd(control_fd, "control socket");
  if (metrics_fd >= 0) adopted_metrics_ = adopt_fd(metrics_fd, "metrics socket");
  // A reload keeps these at their running value (they may differ from the text).
  config_.supervisor.control_socket = st.at("control_socket").get<std::string>();
  if (!adopted_metrics_) {
    config_.supervisor.metrics.reset();
    config_.supervisor.metrics_address.reset();
  } else if (!config_.supervisor.metrics_address) {
    config_.supervisor.metrics_address = config::ListenAddress{};  // only used to decide to serve
  }
}

// ---- the old binary's side ----

void Daemon::on_usr2() {
  if (policy_.shutting_down()) return;
  if (upgrade_check_pid_ > 0) {
    log_->warn("preforkd: SIGUSR2: an upgrade is already being checked");
    return;
  }
  upgrade_requested_ = true;
  log_->info("preforkd: SIGUSR2: upgrading preforkd in place from {}", self_path_);
  if (!policy_.quiescent())
    log_->info("preforkd: the upgrade waits until the reloads, rollouts and operations in progress are over");
}

// Runs the new binary's check once nothing that a client waits for is in
// progress; once it passed, execs it when that is still so and every
// decision of this iteration is applied.
void Daemon::maybe_start_upgrade() {
  if (upgrade_checked_) {
    if (policy_.shutting_down()) upgrade_checked_ = false;
    if (!upgrade_checked_ || !policy_.quiescent() || !actions_.empty() || !deferred_.empty() || !starting_.empty()) return;
    upgrade_checked_ = false;
    exec_upgrade();  // returns only if the exec failed (logged)
    return;
  }
  if (!upgrade_requested_ || upgrade_check_pid_ > 0 || policy_.shutting_down()) return;
  if (!policy_.quiescent() || !actions_.empty() || !deferred_.empty() || !starting_.empty()) return;  // checked again every loop iteration
  upgrade_requested_ = false;
  try {
    sys::UniqueFd state(write_state(serialize_state()));
    sys::UniqueFd out;
    if (int err = sys::memfd("preforkd-upgrade-check", out)) throw sys::SysError(err, "memfd_create");
    upgrade_check_output_ = std::move(out);
    sys::SpawnRequest req;
    req.path = self_path_;
    req.argv = {self_path_, "--upgrade-check", "--upgrade-state", "3", "-c", config_.path};
    for (auto& e : sys::environment_strings())
      if (e.rfind("NOTIFY_SOCKET=", 0) != 0) req.env.push_back(std::move(e));
    int o = upgrade_check_output_.get();
    req.fds = {{devnull_.get(), 0}, {o, 1}, {o, 2}, {state.get(), 3}};
    req.pdeathsig = SIGKILL;
    sys::SpawnResult r = sys::spawn(req);
    if (r.error) throw std::runtime_error(r.error->describe(req));
    upgrade_check_pid_ = r.pid;
    upgrade_check_deadline_ = now() + kCheckTimeout;
  } catch (const std::exception& e) {
    upgrade_check_output_.reset();
    log_->error("preforkd: upgrade refused, cannot check the new binary: {}; still running {}", e.what(), kVersion);
  }
}

void Daemon::on_upgrade_check_exit(const sys::ExitStatus& status) {
  upgrade_check_pid_ = 0;
  upgrade_check_deadline_ = core::kNever;
  std::string output;
  if (upgrade_check_output_) {
    sys::read_whole(upgrade_check_output_.get(), output, 4096);
    upgrade_check_output_.reset();
  }
  if (output.size() > 4096) output.resize(4096);
  while (!output.empty() && (output.back() == '\n' || output.back() == ' ')) output.pop_back();
  if (!status.success()) {
    log_->error("preforkd: upgrade refused: {} --upgrade-check {}{}{}; still running {}", self_path_, status.to_string(),
                output.empty() ? "" : ": ", output, kVersion);
    return;
  }
  if (policy_.shutting_down()) return;
  // Not from here: this runs inside reap(), and the children reaped in the
  // same batch, and what their deaths call for (a respawn...), would be lost
  // to the exec. The loop execs once all of it is applied (maybe_start_upgrade).
  upgrade_checked_ = true;
}

void Daemon::exec_upgrade() {
  std::vector<std::string> argv = {self_path_, "-c", config_.path};
  int state_fd = -1;
  try {
    state_fd = write_state(serialize_state());
  } catch (const std::exception& e) {
    log_->error("preforkd: upgrade refused: {}", e.what());
    return;
  }
  sys::UniqueFd state(state_fd);
  argv.insert(argv.end(), {"--upgrade-state", std::to_string(state_fd)});
  if (options_.pidfile) argv.insert(argv.end(), {"--pidfile", *options_.pidfile});
  if (options_.log_level) argv.insert(argv.end(), {"--log-level", config::to_string(*options_.log_level)});
  log_->info("preforkd {}: handing over to {}", kVersion, self_path_);
  log_->flush();
  if (control_) control_->flush_all();
  // What the new binary takes over must survive the exec; everything else
  // (epoll, signalfd, timerfd, clients) closes with it.
  std::vector<int> handed;
  handed.push_back(state_fd);
  for (const auto& [key, res] : resources_)
    for (const auto& l : res.listeners) handed.push_back(l->fd.get());
  for (const auto& [key, sockets] : slot_sockets_)
    for (const auto& l : sockets) handed.push_back(l->fd.get());
  for (const auto& [token, h] : handlers_)
    if (h.pipe && h.pipe->fd) handed.push_back(h.pipe->fd.get());
  if (control_) handed.push_back(control_->listen_fd());
  if (metrics_) handed.push_back(metrics_->listen_fd());
  if (notify_socket_) handed.push_back(notify_socket_.get());
  for (int fd : handed) sys::set_inheritable(fd, true);
  int err = sys::exec_replace(self_path_, argv, sys::environment_strings());
  sys::mark_all_cloexec();  // back as they were
  log_->error("preforkd: upgrade failed, cannot exec {}: {}; still running {}", self_path_, std::strerror(err), kVersion);
}

}  // namespace preforkd::daemon
