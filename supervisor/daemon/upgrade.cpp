// upgrade.cpp — USR2: upgrade preforkd itself without touching a worker.
//
//   1. USR2 waits until no reload, rollout or control operation is in
//      progress (each of those has a client or a plan that an exec would lose).
//   2. The state is written to a memfd and the binary at the path preforkd
//      was started from (a package upgrade's new file) is run in check mode on
//      it and on the configuration file, as a child of the loop (reaped like
//      any other). If it fails, preforkd says why and keeps running.
//   3. Otherwise the state is written again (it may have moved meanwhile), the
//      fds it names are made inheritable, and preforkd execs the new binary
//      with `--upgrade-state FD`: same pid, so the workers stay its children,
//      their pipes and sockets stay open, and systemd's main pid is unchanged.
//      Signals stay blocked across the exec, so none is lost.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "config/signals.hpp"
#include "daemon/daemon.hpp"
#include "daemon/upgrade_state.hpp"
#include "preforkd/worker.h"
#include "sys/error.hpp"
#include "sys/procfs.hpp"
#include "version.hpp"

extern char** environ;

namespace preforkd::daemon {

using core::Clock;
using core::TimePoint;
using nlohmann::json;

namespace {

constexpr std::chrono::seconds kCheckTimeout{30};

int64_t to_ns(TimePoint t) { return t.time_since_epoch().count(); }
TimePoint from_ns(int64_t ns) { return TimePoint(TimePoint::duration(ns)); }

void set_inheritable(int fd) {
  int flags = fcntl(fd, F_GETFD);
  if (flags >= 0) fcntl(fd, F_SETFD, flags & ~FD_CLOEXEC);
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
  auto slot = [&](const Slot& s) {
    const core::Worker& w = s.worker;
    json pipes = json::array();
    for (const auto& p : s.pipes)
      if (p->fd)
        pipes.push_back({{"kind", static_cast<int>(p->kind)}, {"fd", p->fd.get()}, {"partial", p->lines.partial()},
                         {"discarding", p->lines.discarding()}});
    return json{
        {"worker",
         {{"slot", w.slot},
          {"state", static_cast<int>(w.state)},
          {"want", static_cast<int>(w.want)},
          {"pid", w.pid},
          {"spawn_seq", w.spawn_seq},
          {"generation", w.generation},
          {"started_at", to_ns(w.started_at)},
          {"ready_at", to_ns(w.ready_at)},
          {"last_seen", to_ns(w.last_seen)},
          {"deadline", to_ns(w.deadline)},
          {"streak", w.streak},
          {"restarts", w.restarts},
          {"stop_reason", static_cast<int>(w.stop_reason)},
          {"status", w.status_text}}},
        {"report", {{"counters", s.report.counters()}, {"gauges", s.report.gauges()}}},
        {"notify_errors", s.notify_errors},
        {"draining", s.draining},
        {"pipes", pipes},
        {"own_listeners", listeners(s.own_listeners)}};
  };
  json programs = json::array();
  for (const auto& p : programs_) {
    json slots = json::array(), retirees = json::array();
    for (const auto& s : p->slots) slots.push_back(slot(*s));
    for (const auto& r : p->retirees) retirees.push_back(slot(*r));
    programs.push_back({{"name", p->config().name},
                        {"config_generation", p->shape.config_generation},
                        {"listeners", listeners(p->shape.listeners)},
                        {"starts", p->starts},
                        {"exits", p->exits},
                        {"notify_errors", p->notify_errors},
                        {"retired_counters", p->totals.retired()},
                        {"dropped_names", p->totals.dropped_names()},
                        {"slots", slots},
                        {"retirees", retirees}});
  }
  json texts = json::object();
  for (const auto& [gen, text] : config_texts_) texts[std::to_string(gen)] = text;
  return json{{"format", kStateFormat},
              {"version", kStateVersion},
              {"from_version", kVersion},
              {"config_path", config_.path},
              {"generation", generation_},
              {"texts", texts},
              {"reloads_ok", reloads_ok_},
              {"reloads_failed", reloads_failed_},
              {"original_nofile", {original_nofile_.rlim_cur, original_nofile_.rlim_max}},
              {"control_fd", control_ ? control_->listen_fd() : -1},
              {"control_socket", config_.supervisor.control_socket},
              {"metrics", config_.supervisor.metrics ? *config_.supervisor.metrics : ""},
              {"metrics_fd", metrics_ ? metrics_->listen_fd() : -1},
              {"programs", programs}};
}

// The new binary's side: everything the old one handed over, checked, then
// wired into this loop. Throws on anything inconsistent (preforkd exits 1:
// the check step before the exec makes that a should-not-happen).
void Daemon::adopt_state(const json& st, const std::map<uint64_t, config::Config>& configs) {
  generation_ = st.at("generation").get<uint64_t>();
  reloads_ok_ = st.at("reloads_ok").get<uint64_t>();
  reloads_failed_ = st.at("reloads_failed").get<uint64_t>();
  original_nofile_.rlim_cur = st.at("original_nofile").at(0).get<rlim_t>();
  original_nofile_.rlim_max = st.at("original_nofile").at(1).get<rlim_t>();
  for (const auto& [gen, text] : st.at("texts").items()) config_texts_[std::stoull(gen)] = text.get<std::string>();
  pid_t self = getpid();

  auto adopt_fd = [](int fd, const char* what) {
    if (fd < 3 || fcntl(fd, F_GETFD) < 0) throw std::runtime_error(std::string("handed-over ") + what + " fd " +
                                                                    std::to_string(fd) + " is not open");
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
      int listening = 0;
      socklen_t len = sizeof listening;
      if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) != 0 || listening == 0)
        throw std::runtime_error("handed-over fd " + std::to_string(fd) + " is not a listening socket");
      if (i < addresses.size()) l->address = addresses[i];
      l->bound = list[i].value("bound", "");
      l->unlink_on_close = list[i].value("unlink", false);
      by_fd.emplace(fd, l);
      out.push_back(std::move(l));
    }
    return out;
  };

  for (const auto& jp : st.at("programs")) {
    std::string name = jp.at("name").get<std::string>();
    uint64_t g = jp.at("config_generation").get<uint64_t>();
    const auto& programs = configs.at(g).programs;
    const config::Program& cfg =
        *std::find_if(programs.begin(), programs.end(), [&](const config::Program& c) { return c.name == name; });
    auto p = std::make_unique<Program>();
    p->shape = make_shape(cfg, adopt_listeners(jp.at("listeners"), cfg.reuseport ? std::vector<config::ListenAddress>{} : cfg.listen));
    p->shape.config_generation = g;
    p->starts = jp.at("starts").get<uint64_t>();
    for (size_t i = 0; i < 5; ++i) p->exits[i] = jp.at("exits").at(i).get<uint64_t>();
    p->notify_errors = jp.at("notify_errors").get<uint64_t>();
    p->totals.restore(jp.at("retired_counters").get<std::map<std::string, uint64_t>>(),
                      jp.at("dropped_names").get<uint64_t>());
    auto adopt_slot = [&](const json& js, bool retiree) {
      auto s = std::make_unique<Slot>();
      s->program = p.get();
      s->retiree = retiree;
      const json& w = js.at("worker");
      core::Worker& k = s->worker;
      k.slot = w.at("slot").get<int>();
      k.state = static_cast<core::WorkerState>(w.at("state").get<int>());
      k.want = static_cast<core::Want>(w.at("want").get<int>());
      k.pid = w.at("pid").get<pid_t>();
      k.spawn_seq = w.at("spawn_seq").get<uint64_t>();
      k.generation = w.at("generation").get<uint64_t>();
      k.started_at = from_ns(w.at("started_at").get<int64_t>());
      k.ready_at = from_ns(w.at("ready_at").get<int64_t>());
      k.last_seen = from_ns(w.at("last_seen").get<int64_t>());
      k.deadline = from_ns(w.at("deadline").get<int64_t>());
      k.streak = w.at("streak").get<unsigned>();
      k.restarts = w.at("restarts").get<unsigned>();
      k.stop_reason = static_cast<core::StopReason>(w.at("stop_reason").get<int>());
      k.status_text = w.value("status", "");
      if (k.pid > 0) {
        // Still ours: a live child, or a zombie the first reap collects.
        std::string stat = sys::read_small_file("/proc/" + std::to_string(k.pid) + "/stat");
        auto close_paren = stat.rfind(')');
        pid_t ppid = close_paren == std::string::npos ? 0 : std::atoi(stat.c_str() + close_paren + 4);
        if (ppid != self) throw std::runtime_error(tag(*s) + ": pid " + std::to_string(k.pid) + " is not a child of " + std::to_string(self));
      }
      s->report.restore(js.at("report").at("counters").get<std::map<std::string, uint64_t, std::less<>>>(),
                        js.at("report").at("gauges").get<std::map<std::string, int64_t, std::less<>>>());
      s->notify_errors = js.at("notify_errors").get<uint64_t>();
      s->draining = js.at("draining").get<bool>();
      for (const auto& jpipe : js.at("pipes")) {
        auto pipe = std::make_unique<Pipe>();
        pipe->kind = static_cast<Pipe::Kind>(jpipe.at("kind").get<int>());
        pipe->fd = adopt_fd(jpipe.at("fd").get<int>(), "pipe");
        if (pipe->kind == Pipe::Kind::Notify)
          pipe->lines = core::LineBuffer(PREFORKD_NOTIFY_LINE_MAX, core::LineBuffer::Overflow::Discard);
        pipe->lines.restore(jpipe.value("partial", ""), jpipe.value("discarding", false));
        s->pipes.push_back(std::move(pipe));
      }
      s->own_listeners = adopt_listeners(js.at("own_listeners"), cfg.listen);
      return s;
    };
    for (const auto& js : jp.at("slots")) p->slots.push_back(adopt_slot(js, false));
    for (const auto& js : jp.at("retirees")) p->retirees.push_back(adopt_slot(js, true));
    programs_.push_back(std::move(p));
  }
  // Into the loop: pids, pipes.
  for (auto& p : programs_) {
    for (auto* list : {&p->slots, &p->retirees}) {
      for (auto& s : *list) {
        if (s->worker.pid > 0) by_pid_[s->worker.pid] = s.get();
        for (auto& pipe : s->pipes) {
          int fd = pipe->fd.get();
          epoll_.add(fd, EPOLLIN, static_cast<uint64_t>(fd));
          watches_[fd] = Watch{Watch::Kind::Pipe, s.get(), pipe.get()};
        }
      }
    }
    if (p->config().max_memory > 0) next_memory_check_ = Clock::now();
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
  if (shutting_down_) return;
  if (upgrade_check_pid_ > 0) {
    log_->warn("preforkd: SIGUSR2: an upgrade is already being checked");
    return;
  }
  upgrade_requested_ = true;
  log_->info("preforkd: SIGUSR2: upgrading preforkd in place from {}", self_path_);
  maybe_start_upgrade();
}

// Runs the new binary's check once nothing that a client waits for is in progress.
void Daemon::maybe_start_upgrade() {
  if (!upgrade_requested_ || upgrade_check_pid_ > 0 || shutting_down_) return;
  if (reload_ || reload_queued_ || busy_with_rollouts() || !pending_ops_.empty() ||
      std::any_of(programs_.begin(), programs_.end(), [](const auto& p) { return p->removing; }))
    return;  // checked again every loop iteration
  upgrade_requested_ = false;
  try {
    sys::UniqueFd state(write_state(serialize_state()));
    int out = ::memfd_create("preforkd-upgrade-check", MFD_CLOEXEC);
    if (out < 0) sys::throw_errno("memfd_create");
    upgrade_check_output_.reset(out);
    sys::SpawnRequest req;
    req.path = self_path_;
    req.argv = {self_path_, "--upgrade-check", "--upgrade-state", "3", "-c", config_.path};
    for (char** e = environ; e != nullptr && *e != nullptr; ++e)
      if (std::strncmp(*e, "NOTIFY_SOCKET=", 14) != 0) req.env.emplace_back(*e);
    req.fds = {{devnull_.get(), 0}, {out, 1}, {out, 2}, {state.get(), 3}};
    req.pdeathsig = SIGKILL;
    sys::SpawnResult r = sys::spawn(req);
    if (r.error) throw std::runtime_error(r.error->describe(req));
    upgrade_check_pid_ = r.pid;
    upgrade_check_deadline_ = Clock::now() + kCheckTimeout;
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
    char buf[4096];
    ssize_t n = ::pread(upgrade_check_output_.get(), buf, sizeof buf, 0);
    if (n > 0) output.assign(buf, static_cast<size_t>(n));
    upgrade_check_output_.reset();
  }
  while (!output.empty() && (output.back() == '\n' || output.back() == ' ')) output.pop_back();
  if (!status.success()) {
    log_->error("preforkd: upgrade refused: {} --upgrade-check {}{}{}; still running {}", self_path_, status.to_string(),
                output.empty() ? "" : ": ", output, kVersion);
    return;
  }
  if (shutting_down_) return;
  exec_upgrade();
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
  argv.insert(argv.end(), {"--upgrade-state", std::to_string(state_fd)});
  if (options_.pidfile) argv.insert(argv.end(), {"--pidfile", *options_.pidfile});
  if (options_.log_level) argv.insert(argv.end(), {"--log-level", config::to_string(*options_.log_level)});
  log_->info("preforkd {}: handing over to {}", kVersion, self_path_);
  log_->flush();
  if (control_) control_->flush_all();
  // What the new binary takes over must survive the exec; everything else
  // (epoll, signalfd, timerfd, clients) closes with it.
  set_inheritable(state_fd);
  for (const auto& p : programs_) {
    for (const auto& l : p->shape.listeners) set_inheritable(l->fd.get());
    for (const auto* list : {&p->slots, &p->retirees})
      for (const auto& s : *list) {
        for (const auto& l : s->own_listeners) set_inheritable(l->fd.get());
        for (const auto& pipe : s->pipes)
          if (pipe->fd) set_inheritable(pipe->fd.get());
      }
  }
  if (control_) set_inheritable(control_->listen_fd());
  if (metrics_) set_inheritable(metrics_->listen_fd());
  std::vector<char*> args;
  for (auto& a : argv) args.push_back(a.data());
  args.push_back(nullptr);
  ::execve(self_path_.c_str(), args.data(), environ);
  int err = errno;
  sys::mark_all_cloexec();  // back as they were
  ::close(state_fd);
  log_->error("preforkd: upgrade failed, cannot exec {}: {}; still running {}", self_path_, std::strerror(err), kVersion);
}

}  // namespace preforkd::daemon
