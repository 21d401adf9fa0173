#include "daemon/daemon.hpp"

#include <algorithm>
#include <csignal>
#include <cstdlib>
#include <cstring>

#include "config/signals.hpp"
#include "core/metrics_text.hpp"
#include "daemon/control_protocol.hpp"
#include "daemon/logging.hpp"
#include "preforkd/worker.h"
#include "sys/error.hpp"
#include "sys/listen_socket.hpp"
#include "sys/procfs.hpp"
#include "version.hpp"

namespace preforkd::daemon {

namespace {

using core::Clock;
using core::TimePoint;

// The signals preforkd acts on. All are blocked and read from the signalfd;
// SIGPIPE is only there so that a write to a gone peer fails with EPIPE (T13).
const std::vector<int> kHandledSignals = {SIGHUP,  SIGINT,  SIGTERM, SIGQUIT, SIGTTIN, SIGTTOU,
                                          SIGUSR1, SIGUSR2, SIGCHLD, SIGPIPE};

// At most this many bytes are read from one pipe per wake-up, so that one
// chatty worker cannot starve the others or the signals (T24).
constexpr size_t kReadBudget = 64 * 1024;
// On reap, what is left in a dead worker's pipes is drained up to this much.
constexpr size_t kDrainBudget = 1024 * 1024;
// After an event, the policy is asked again until it has nothing more to do;
// this bounds a (buggy) policy that would never settle.
constexpr int kMaxSettleRounds = 64;
// Spawning stops for this iteration once it has run this long, or as long
// as this iteration's collecting took if that was longer (after at least
// one spawn); the rest go first in the next iteration, after a
// non-blocking look at every other event.
constexpr auto kSpawnSlice = std::chrono::milliseconds(10);
constexpr auto kSpawnSliceMax = std::chrono::milliseconds(40);
// At most this many children are reaped (and their deaths acted on) per
// iteration; the rest are reaped in the next one.
constexpr size_t kReapBatch = 128;

spdlog::level::level_enum to_spdlog(core::LogLevel l) {
  switch (l) {
    case core::LogLevel::Debug: return spdlog::level::debug;
    case core::LogLevel::Info: return spdlog::level::info;
    case core::LogLevel::Warn: return spdlog::level::warn;
    case core::LogLevel::Error: return spdlog::level::err;
  }
  return spdlog::level::info;
}

}  // namespace

Daemon::Daemon(config::Config config, DaemonOptions options)
    : config_(std::move(config)),
      options_(std::move(options)),
      policy_(static_cast<unsigned>(Clock::now().time_since_epoch().count()), config_.supervisor.shutdown_timeout) {
  config::LogLevel level = options_.log_level.value_or(config_.supervisor.log_level);
  log_ = make_logger(config_.supervisor.log_file, level);
  log_file_open_ = config_.supervisor.log_file;
  sys::mark_all_cloexec();  // T5: a backstop for any fd a library opened without O_CLOEXEC

  // T8: signalfd only works if no other thread can take our signals.
  int threads = sys::thread_count();
  if (threads != 1) throw sys::SysError(EINVAL, "preforkd must be single-threaded, found " + std::to_string(threads) + " threads");
  signals_ = std::make_unique<sys::SignalFd>(kHandledSignals);
  for (auto [fd, kind] : {std::pair{signals_->fd(), Handler::Kind::Signal}, std::pair{timer_.fd(), Handler::Kind::Timer}}) {
    Handler h;
    h.kind = kind;
    if (watch(fd, std::move(h)) == 0) throw sys::SysError(EINVAL, "cannot watch the signalfd or timerfd");
  }
  if (int err = sys::open_file(devnull_, "/dev/null", O_RDWR)) throw sys::SysError(err, "cannot open /dev/null");

  // T18: raise our own fd limit for thousands of pipes, but give workers the
  // limit we were started with (a select()-based worker breaks past 1024).
  original_nofile_ = sys::raise_fd_limit();
  // T20: orphans of our workers (double-forked daemons) are reaped by us.
  sys::become_child_subreaper();

  pidfile_ = options_.pidfile ? options_.pidfile : config_.supervisor.pidfile;
  load_options_ = options_.load_options;
  self_path_ = options_.self_path.empty() ? sys::self_executable() : options_.self_path;
  // Before any program's environment is made: it names the socket.
  open_notify_socket(options_.upgrade_state ? options_.upgrade_state->value("notify_fd", -1) : -1);
  if (options_.upgrade_state) {
    adopt_state(*options_.upgrade_state, options_.upgrade_configs);
    adopted_ = true;
    options_.upgrade_state.reset();
    options_.upgrade_configs.clear();
  } else {
    uint64_t g = policy_.generation();
    config_texts_[g] = options_.config_text;
    for (const auto& cfg : config_.programs) {
      core::ProgramId id = policy_.add_program(cfg, g);
      resources_.emplace(ShapeKey{cfg.name, g}, make_resources(cfg, bind_shared(cfg, nullptr)));
      if (cfg.reuseport)
        for (uint32_t i = 0; i < cfg.workers; ++i) slot_sockets_[{id, static_cast<int>(i)}] = bind_slot(cfg, id, static_cast<int>(i));
    }
    for (const auto& unused : activated_.close_unused())
      log_->warn("preforkd: closed a socket from systemd that matches no listen entry: {}", unused);
  }
  if (std::any_of(config_.programs.begin(), config_.programs.end(), [](const auto& c) { return c.reuseport; }))
    enable_listener_migration();
  std::optional<gid_t> control_gid;
  if (config_.supervisor.control_group) {
    // Resolved once here (a reload keeps the running control_group); peers
    // are then compared by the groups the kernel reports for them.
    control_gid = sys::lookup_group(*config_.supervisor.control_group);
    if (!control_gid) throw sys::SysError(ENOENT, "unknown control_group " + *config_.supervisor.control_group);
  }
  auto on_request = [this](ControlServer::ClientId c, const std::string& line) { on_control_request(c, line); };
  auto warn = [this](const std::string& msg) { log_->warn("{}", msg); };
  if (adopted_control_)
    control_ = std::make_unique<ControlServer>(std::move(adopted_control_), config_.supervisor.control_socket,
                                               control_gid, on_request, warn);
  else
    control_ = std::make_unique<ControlServer>(config_.supervisor.control_socket, control_gid, on_request, warn);
  control_->attach(epoll_);
  if (const auto& m = config_.supervisor.metrics_address) {
    MetricsHttp::Pages pages;
    pages.metrics = [this] { return core::render_prometheus(outside_view(now())); };
    pages.readiness = [this] {
      core::Readiness r = core::readiness(policy_.snapshot(now()));  // no queue figures needed
      return std::make_pair(r.ready, r.reason);
    };
    if (adopted_metrics_)
      metrics_ = std::make_unique<MetricsHttp>(std::move(adopted_metrics_), std::move(pages), warn);
    else
      metrics_ = std::make_unique<MetricsHttp>(to_spec(*m, 128, false), std::move(pages), warn);
    metrics_->attach(epoll_);
    log_->info("preforkd: metrics on http://{}/metrics", metrics_->bound());
  }
  write_pidfile();
}

Daemon::~Daemon() {
  if (pidfile_) sys::unlink_path(*pidfile_);
  handlers_.clear();
  slot_sockets_.clear();
  resources_.clear();  // the listeners' own destructors unlink the Unix paths we bound
  log_->flush();
}

// Unix socket files we created go with their socket (as nginx and gunicorn
// do); not those systemd passed: their files belong to the socket unit.
Daemon::Listener::~Listener() {
  if (unlink_on_close && fd) sys::unlink_path(address.path);
}

TimePoint Daemon::now() const { return Clock::now(); }

void Daemon::write_pidfile() {
  if (!pidfile_) return;
  if (int err = sys::write_file_atomic(*pidfile_, std::to_string(sys::self_pid()) + "\n"))
    throw sys::SysError(err, "cannot write pidfile " + *pidfile_);
}

// ---- the fd registry ----

uint64_t Daemon::watch(int fd, Handler h) {
  uint64_t token = next_token_++;
  if (int err = epoll_.try_add(fd, EPOLLIN, token)) {
    log_once(std::string("epoll_ctl: ") + std::strerror(err),
             "preforkd: cannot watch fd " + std::to_string(fd) + ": epoll_ctl: " + std::strerror(err));
    return 0;
  }
  handlers_.emplace(token, std::move(h));
  return token;
}

void Daemon::unwatch(uint64_t token) {
  auto it = handlers_.find(token);
  if (it == handlers_.end()) return;
  if (it->second.pipe && it->second.pipe->fd) epoll_.remove(it->second.pipe->fd.get());
  if (it->second.fd >= 0) epoll_.remove(it->second.fd);
  handlers_.erase(it);
}

// A failure that could repeat on every event (fds exhausted, epoll out of
// memory) is logged once per cause, then only at debug.
void Daemon::log_once(const std::string& cause, const std::string& message) {
  constexpr size_t kMaxCauses = 256;  // a cause may carry text from outside: bounded
  if (causes_logged_.size() < kMaxCauses && causes_logged_.insert(cause).second)
    log_->error("{} (further ones are logged at debug)", message);
  else
    log_->debug("{}", message);
}

// ---- the loop ----

int Daemon::run() {
  if (adopted_) {
    size_t n = 0;
    for (const auto& p : policy_.programs())
      n += static_cast<size_t>(std::count_if(p.slots.begin(), p.slots.end(),
                                             [](const core::Slot& s) { return core::has_process(s.m.worker); }));
    log_->info("preforkd {} (pid {}): took over {} worker(s) in {} program(s), configuration generation {}", kVersion,
               sys::self_pid(), n, policy_.programs().size(), policy_.generation());
  } else {
    log_->info("preforkd {} (pid {}): starting", kVersion, sys::self_pid());
    policy_.start(now(), actions_);
  }
  begin_acting(core::Duration{0});
  settle();
  timer_.arm(policy_.next_deadline());
  report_systemd_status();
  while (!policy_.finished() || !deferred_.empty() || !starting_.empty()) {
    log_->flush();  // info lines are flushed when the loop goes idle
    // "We must not die" (s6-svscan): whatever one iteration throws is logged
    // and contained; the workers never pay for a bug in a handler.
    try {
      iteration();
    } catch (const sys::FatalError& e) {
      log_->critical("preforkd: {}", e.what());
      return 1;
    } catch (const std::exception& e) {
      log_once(std::string("loop: ") + e.what(), std::string("preforkd: contained an error in the loop: ") + e.what());
    }
  }
  if (control_) control_->flush_all();  // e.g. the reply to `shutdown` itself
  log_->info("preforkd: shutdown complete");
  log_->flush();
  return 0;
}

void Daemon::iteration() {
  epoll_event events[64];
  int n = 0;
  try {
    // Poll without blocking while deferred work can go on now; with the
    // starts in flight at their limit, their watch fds wake us.
    bool more = reap_more_ || (!deferred_.empty() && starting_.size() < max_starting_);
    n = epoll_.wait(events, 64, more ? 0 : -1);
  } catch (const sys::SysError& e) {
    // EBADF/EINVAL on our own epoll fd: a broken invariant, not a runtime failure.
    throw sys::FatalError(e.what());
  }
  // 1. Collect: every event goes to the policy; its decisions wait in actions_.
  const TimePoint collect_start = now();
  for (int i = 0; i < n; ++i) {
    try {
      dispatch(events[i].data.u64, events[i].events);
    } catch (const std::exception& e) {
      log_once(std::string("event: ") + e.what(), std::string("preforkd: contained an error handling an event: ") + e.what());
    }
  }
  const auto collected_for = std::chrono::duration_cast<core::Duration>(now() - collect_start);
  reap();  // every iteration, whatever woke us (T2)
  // 2. Act.
  begin_acting(collected_for);
  settle();
  auto t = now();
  if (upgrade_check_pid_ > 0 && t >= upgrade_check_deadline_) {
    log_->error("preforkd: the new binary's check did not finish in time, killing it");
    sys::kill_process(upgrade_check_pid_, SIGKILL, false);
    upgrade_check_deadline_ = core::kNever;
  }
  maybe_start_upgrade();
  TimePoint earliest = std::min(policy_.next_deadline(), upgrade_check_deadline_);
  if (control_) earliest = std::min(earliest, control_->expire(t));
  if (metrics_) earliest = std::min(earliest, metrics_->expire(t));
  timer_.arm(earliest);
  report_systemd_status();
}

void Daemon::dispatch(uint64_t token, uint32_t events) {
  if (token < kHandlerBit) {  // control and metrics: their own fds as tokens
    int fd = static_cast<int>(token);
    if (control_ && fd == control_->listen_fd()) control_->on_listen_readable();
    else if (control_ && control_->owns(fd)) control_->on_client_event(fd, events);
    else if (metrics_ && fd == metrics_->listen_fd()) metrics_->on_listen_readable();
    else if (metrics_ && metrics_->owns(fd)) metrics_->on_client_event(fd, events);
    return;
  }
  auto it = handlers_.find(token);
  if (it == handlers_.end()) return;  // closed earlier in this batch
  switch (it->second.kind) {
    case Handler::Kind::Signal:
      for (int sig : signals_->drain()) on_signal(sig);
      break;
    case Handler::Kind::Timer: timer_.acknowledge(); break;
    case Handler::Kind::Pipe: on_pipe_readable(token, kReadBudget); break;
    case Handler::Kind::NotifySocket: on_notify_socket_readable(); break;
    case Handler::Kind::Starting: finish_start(it->second.pid, false); break;
  }
}

// ---- signals (SPEC "Signals to preforkd"; each is a request, T3) ----

void Daemon::on_signal(int sig) {
  auto t = now();
  switch (sig) {
    case SIGTERM:
    case SIGINT: policy_.shutdown(false, t, actions_); break;
    case SIGQUIT: policy_.shutdown(true, t, actions_); break;
    case SIGTTIN: policy_.scale_all(+1, t, actions_); break;  // at least one more (T3)
    case SIGTTOU: policy_.scale_all(-1, t, actions_); break;
    case SIGUSR1: reopen_log(); break;
    case SIGHUP:
      log_->info("preforkd: SIGHUP: reloading {}", config_.path);
      policy_.request_reload(std::nullopt, t, actions_);
      break;
    case SIGUSR2: on_usr2(); break;
    case SIGCHLD:  // only a wake-up: the loop reaps every iteration (T2)
    case SIGPIPE:  // drained and ignored: the failed write sees EPIPE (T13)
    default: break;
  }
}

// USR1 (logrotate) and a reload that changes log.file: a fresh logger on the
// configured file; if it cannot be opened, the old one stays.
void Daemon::reopen_log() {
  if (!config_.supervisor.log_file && log_file_open_ == config_.supervisor.log_file) return;
  try {
    auto level = log_->level();
    auto fresh = make_logger(config_.supervisor.log_file, config::LogLevel::Info);
    fresh->set_level(level);
    log_->flush();
    log_ = std::move(fresh);
    log_file_open_ = config_.supervisor.log_file;
    sys::mark_all_cloexec();  // T5: the new file, like the first
    log_->info("preforkd: log file reopened");
  } catch (const std::exception& e) {
    log_->error("preforkd: cannot reopen the log file, keeping the old one: {}", e.what());
  }
}

// ---- pipes (T23: EOF is not exit; T24: bounded reads) ----

void Daemon::on_pipe_readable(uint64_t token, size_t budget) {
  char buf[16384];
  size_t total = 0;
  while (total < budget) {
    auto it = handlers_.find(token);
    if (it == handlers_.end() || !it->second.pipe) return;
    Pipe& pipe = *it->second.pipe;
    ssize_t n = sys::read_some(pipe.fd.get(), buf, sizeof buf);
    if (n > 0) {
      total += static_cast<size_t>(n);
      auto t = now();
      size_t too_long = pipe.lines.feed(std::string_view(buf, static_cast<size_t>(n)), [&](std::string_view line) {
        if (pipe.kind == Pipe::Kind::Notify)
          policy_.notify_line(pipe.proc, line, t, actions_);
        else
          log_->info("{}: {}", pipe.who, line);
      });
      if (too_long > 0) policy_.notify_too_long(pipe.proc, too_long, t, actions_);
      continue;
    }
    if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) close_pipe(token);
    return;
  }
}

void Daemon::close_pipe(uint64_t token) {
  auto it = handlers_.find(token);
  if (it == handlers_.end() || !it->second.pipe) return;
  Pipe& pipe = *it->second.pipe;
  auto t = now();
  pipe.lines.flush([&](std::string_view line) {
    if (pipe.kind == Pipe::Kind::Notify)
      policy_.notify_line(pipe.proc, line, t, actions_);
    else
      log_->info("{}: {}", pipe.who, line);
  });
  auto& tokens = proc_pipes_[pipe.proc];
  tokens.erase(std::remove(tokens.begin(), tokens.end(), token), tokens.end());
  if (tokens.empty()) proc_pipes_.erase(pipe.proc);
  unwatch(token);
}

void Daemon::drain_proc(core::ProcId proc, size_t budget) {
  auto it = proc_pipes_.find(proc);
  if (it == proc_pipes_.end()) return;
  for (uint64_t token : std::vector<uint64_t>(it->second)) on_pipe_readable(token, budget);
}

void Daemon::close_proc_pipes(core::ProcId proc) {
  drain_proc(proc, kDrainBudget);  // lose no line of a dead worker
  auto it = proc_pipes_.find(proc);
  if (it == proc_pipes_.end()) return;
  for (uint64_t token : std::vector<uint64_t>(it->second)) close_pipe(token);
  proc_pipes_.erase(proc);
}

// ---- reaping (T2, T4, T20) ----

void Daemon::reap() {
  // A bounded batch: a storm of 1000 deaths is acted on over several
  // iterations (which then poll without blocking), so that control
  // requests and signals are served in between.
  for (const auto& r : sys::reap_some(kReapBatch, reap_more_)) {
    if (r.pid == upgrade_check_pid_) {
      on_upgrade_check_exit(r.status);  // may exec the new binary and never return
      continue;
    }
    finish_start(r.pid, true);  // gone before its start's watch fd was read
    auto proc = policy_.proc_of_pid(r.pid);
    if (!proc) {
      // T20: an orphan that landed on us, never a worker.
      policy_.orphan_reaped(r.pid, r.status.to_string(), now(), actions_);
      continue;
    }
    close_proc_pipes(*proc);  // drains first: no line of a dead worker is lost (T23)
    core::Termination t{r.status.signaled(), r.status.signaled() ? r.status.signal() : r.status.exit_code()};
    policy_.exited(r.pid, t, r.status.to_string(), now(), actions_);
  }
}

// ---- applying decisions ----

void Daemon::begin_acting(core::Duration collected_for) {
  // As long as collecting the events took (at least kSpawnSlice, at most
  // kSpawnSliceMax): when a flood of events (chatty workers) makes the
  // iterations long, spawning still gets about half of the loop's time,
  // and a start is not starved.
  spawn_slice_end_ = now() + std::clamp<core::Duration>(collected_for, kSpawnSlice, kSpawnSliceMax);
  spawns_this_iteration_ = 0;
  if (deferred_.empty()) return;
  // Decided before this iteration's events: they go first.
  actions_.insert(actions_.begin(), deferred_.begin(), deferred_.end());
  deferred_.clear();
}

void Daemon::settle() {
  for (int round = 0; round < kMaxSettleRounds; ++round) {
    while (!actions_.empty()) {
      core::Actions batch = std::move(actions_);
      actions_.clear();
      for (size_t i = 0; i < batch.size(); ++i) {
        const core::Action& a = batch[i];
        if (a.kind == core::Action::Kind::Spawn &&
            ((spawns_this_iteration_ > 0 && now() >= spawn_slice_end_) || starting_.size() >= max_starting_)) {
          // The slice is used up, or max_starting_ children have not exec'd
          // yet: this spawn and everything decided after it (READY=1 after
          // the last start, say) wait, in order.
          deferred_.insert(deferred_.end(), batch.begin() + static_cast<std::ptrdiff_t>(i), batch.end());
          deferred_.insert(deferred_.end(), actions_.begin(), actions_.end());
          actions_.clear();
          return;
        }
        try {
          apply(a);  // may append follow-up actions (spawn results, reload plans)
        } catch (const std::exception& e) {
          log_once(std::string("action: ") + e.what(), std::string("preforkd: contained an error: ") + e.what());
        }
      }
    }
    auto t = now();
    // Before judging start_timeout or the watchdog, read what those workers
    // already wrote: after the loop itself was held up (a stalled machine),
    // READY=1 or WATCHDOG=1 may be sitting in the pipe.
    for (core::ProcId proc : policy_.due_for_judgement(t)) drain_proc(proc, kReadBudget);
    policy_.tick(t, actions_);
    if (actions_.empty()) break;
  }
  // Shapes (sockets, environments) no program runs or can go back to any more.
  auto in_use = policy_.shapes_in_use();
  for (auto it = resources_.begin(); it != resources_.end();) {
    bool used = std::find(in_use.begin(), in_use.end(), it->first) != in_use.end();
    it = used ? std::next(it) : resources_.erase(it);
  }
  for (auto it = config_texts_.begin(); it != config_texts_.end();) {
    uint64_t g = it->first;
    bool used = g == policy_.generation() ||
                std::any_of(in_use.begin(), in_use.end(), [&](const ShapeKey& k) { return k.second == g; });
    it = used ? std::next(it) : config_texts_.erase(it);
  }
}

void Daemon::apply(const core::Action& a) {
  using K = core::Action::Kind;
  switch (a.kind) {
    case K::Spawn:
      ++spawns_this_iteration_;
      spawn(a);
      break;
    case K::Signal:
      if (int err = sys::kill_process(a.pid, a.signal, a.group); err != 0 && err != ESRCH)
        log_->warn("preforkd: cannot signal pid {}: {}", a.pid, std::strerror(err));
      break;
    case K::ReleaseSlot: slot_sockets_.erase({a.program, a.slot}); break;
    case K::MeasureMemory:
      if (auto rss = sys::rss_bytes(a.pid)) policy_.memory_measured(a.proc, *rss, now(), actions_);
      break;
    case K::MeasureLoad: measure_load(a.program); break;
    case K::BeginReload: begin_reload(a.clients); break;
    case K::Reply:
      if (control_) control_->reply(a.client, a.ok ? reply_ok(a.text) : reply_error(a.text));
      break;
    case K::Log: log_->log(to_spdlog(a.level), a.text); break;
    case K::NotifySystemd: sys::notify_systemd(a.text); break;
    case K::ProgramGone:
      for (auto it = slot_sockets_.begin(); it != slot_sockets_.end();)
        it = it->first.first == a.program ? slot_sockets_.erase(it) : std::next(it);
      break;
    case K::ScanOrphans: scan_orphans(); break;
    case K::WalkWorker: walk_worker(a.pid); break;
    case K::SignalOrphan:
    case K::SignalGroup: signal_orphan(a); break;
  }
}

// STATUS= for `systemctl status`: "4/4 workers ready" (+ "; web crash-looping"),
// sent when it changes and only when systemd listens (NOTIFY_SOCKET is set).
void Daemon::report_systemd_status() {
  if (!sys::systemd_notify_enabled()) return;
  std::string status = policy_.systemd_status();
  if (status == systemd_status_) return;
  systemd_status_ = status;
  sys::notify_systemd("STATUS=" + status);
}

}  // namespace preforkd::daemon
