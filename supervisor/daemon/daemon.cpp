#include "daemon/daemon.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <thread>

#include "config/signals.hpp"
#include "core/config_diff.hpp"
#include "core/metrics_text.hpp"
#include "daemon/control_protocol.hpp"
#include "version.hpp"
#include "daemon/logging.hpp"
#include "preforkd/worker.h"
#include "sys/error.hpp"
#include "sys/listen_socket.hpp"
#include "sys/procfs.hpp"

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
// How often workers' RSS is compared with max_memory (only when it is set).
constexpr std::chrono::seconds kMemoryCheckInterval{1};

sys::ListenSpec to_spec(const config::ListenAddress& a, int backlog, bool reuseport) {
  sys::ListenSpec s;
  switch (a.family) {
    case config::ListenAddress::Family::Inet: s.family = sys::ListenSpec::Family::Inet; break;
    case config::ListenAddress::Family::Inet6: s.family = sys::ListenSpec::Family::Inet6; break;
    case config::ListenAddress::Family::Unix: s.family = sys::ListenSpec::Family::Unix; break;
  }
  s.host = a.host;
  s.port = a.port;
  s.path = a.path;
  s.backlog = backlog;
  s.reuseport = reuseport;
  s.text = a.text;
  return s;
}

std::string env_or(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return v != nullptr ? v : fallback;
}

void set_nonblocking(int fd) {
  int fl = fcntl(fd, F_GETFL);
  if (fl >= 0) fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

}  // namespace

Daemon::Daemon(config::Config config, DaemonOptions options)
    : config_(std::move(config)),
      options_(std::move(options)),
      rng_(static_cast<unsigned>(Clock::now().time_since_epoch().count())) {
  config::LogLevel level = options_.log_level.value_or(config_.supervisor.log_level);
  log_ = make_logger(config_.supervisor.log_file, level);
  log_file_open_ = config_.supervisor.log_file;
  sys::mark_all_cloexec();  // T5: spdlog's file is opened without O_CLOEXEC

  // T8: signalfd only works if no other thread can take our signals.
  int threads = sys::thread_count();
  if (threads != 1) throw sys::SysError(EINVAL, "preforkd must be single-threaded, found " + std::to_string(threads) + " threads");
  signals_ = std::make_unique<sys::SignalFd>(kHandledSignals);
  epoll_.add(signals_->fd(), EPOLLIN, static_cast<uint64_t>(signals_->fd()));
  watches_[signals_->fd()] = Watch{Watch::Kind::Signal, nullptr, nullptr};
  epoll_.add(timer_.fd(), EPOLLIN, static_cast<uint64_t>(timer_.fd()));
  watches_[timer_.fd()] = Watch{Watch::Kind::Timer, nullptr, nullptr};

  devnull_.reset(::open("/dev/null", O_RDWR | O_CLOEXEC));
  if (!devnull_) sys::throw_errno("cannot open /dev/null");

  // T18: raise our own fd limit for thousands of pipes, but give workers the
  // limit we were started with (a select()-based worker breaks past 1024).
  getrlimit(RLIMIT_NOFILE, &original_nofile_);
  rlimit raised = original_nofile_;
  raised.rlim_cur = raised.rlim_max;
  setrlimit(RLIMIT_NOFILE, &raised);

  // T20: orphans of our workers (double-forked daemons) are reaped by us.
  if (getpid() != 1) prctl(PR_SET_CHILD_SUBREAPER, 1);

  pidfile_ = options_.pidfile ? options_.pidfile : config_.supervisor.pidfile;
  load_options_ = options_.load_options;
  self_path_ = options_.self_path.empty() ? sys::self_executable() : options_.self_path;
  if (options_.upgrade_state) {
    adopt_state(*options_.upgrade_state, options_.upgrade_configs);
    adopted_ = true;
    options_.upgrade_state.reset();
    options_.upgrade_configs.clear();
  } else {
    config_texts_[generation_] = options_.config_text;
    for (const auto& cfg : config_.programs) {
      std::vector<ListenerRef> shared;
      if (!cfg.reuseport)
        for (const auto& a : cfg.listen) shared.push_back(open_listener(cfg.name, a, cfg.backlog, false));
      programs_.push_back(make_program(cfg, std::move(shared)));
    }
    for (const auto& unused : activated_.close_unused())
      log_->warn("preforkd: closed a socket from systemd that matches no listen entry: {}", unused);
  }
  if (std::any_of(config_.programs.begin(), config_.programs.end(), [](const auto& c) { return c.reuseport; }))
    enable_listener_migration();
  std::optional<gid_t> control_gid;
  if (config_.supervisor.control_group) {
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
  watches_[control_->listen_fd()] = Watch{Watch::Kind::Control, nullptr, nullptr};
  if (const auto& m = config_.supervisor.metrics_address) {
    auto render = [this] { return core::render_prometheus(snapshot()); };
    if (adopted_metrics_)
      metrics_ = std::make_unique<MetricsHttp>(std::move(adopted_metrics_), render);
    else
      metrics_ = std::make_unique<MetricsHttp>(to_spec(*m, 128, false), render);
    metrics_->attach(epoll_);
    watches_[metrics_->listen_fd()] = Watch{Watch::Kind::Metrics, nullptr, nullptr};
    log_->info("preforkd: metrics on http://{}/metrics", metrics_->bound());
  }
  write_pidfile();
}

Daemon::~Daemon() {
  if (pidfile_) ::unlink(pidfile_->c_str());
  programs_.clear();  // the listeners' own destructors unlink the Unix paths we bound
  log_->flush();
}

// Unix socket files we created go with their socket (as nginx and gunicorn
// do); not those systemd passed: their files belong to the socket unit.
Daemon::Listener::~Listener() {
  if (unlink_on_close && fd) ::unlink(address.path.c_str());
}

void Daemon::write_pidfile() {
  if (!pidfile_) return;
  std::string tmp = *pidfile_ + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << getpid() << "\n";
    if (!out) throw sys::SysError(errno, "cannot write pidfile " + *pidfile_);
  }
  if (::rename(tmp.c_str(), pidfile_->c_str()) != 0) sys::throw_errno("cannot write pidfile " + *pidfile_);
}

// A program's shape from its configuration: resolves its user and group
// (throws sys::SysError if unknown) and prepares the environment. The
// listening sockets are given (shared ones, empty with reuseport).
Daemon::Shape Daemon::make_shape(const config::Program& cfg, std::vector<ListenerRef> listeners) {
  Shape sh;
  sh.config = cfg;
  sh.policy = core::SlotPolicy::from(cfg);
  sh.listeners = std::move(listeners);
  sh.config_generation = generation_;
  if (cfg.user) {
    sh.user = sys::lookup_user(*cfg.user);
    if (!sh.user) throw sys::SysError(ENOENT, "program " + cfg.name + ": unknown user " + *cfg.user);
  }
  if (cfg.group) {
    sh.group = sys::lookup_group(*cfg.group);
    if (!sh.group) throw sys::SysError(ENOENT, "program " + cfg.name + ": unknown group " + *cfg.group);
  }

  // A minimal clean environment (SPEC): PATH, LANG and TZ from ours, the
  // user's identity, the worker contract, then the configured variables.
  auto& env = sh.base_env;
  env.push_back("PATH=" + env_or("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"));
  for (const char* name : {"LANG", "TZ"})
    if (const char* v = std::getenv(name)) env.push_back(std::string(name) + "=" + v);
  std::optional<sys::UserInfo> who = sh.user ? sh.user : sys::lookup_uid(geteuid());
  if (who) {
    env.push_back("HOME=" + who->home);
    env.push_back("USER=" + who->name);
    env.push_back("LOGNAME=" + who->name);
    env.push_back("SHELL=" + who->shell);
  }
  size_t n = cfg.listen.size();
  if (n > 0) {
    std::string names;
    for (const auto& a : cfg.listen) names += (names.empty() ? "" : ":") + a.name;
    env.push_back("LISTEN_FDS=" + std::to_string(n));
    env.push_back("LISTEN_FDNAMES=" + names);
  }
  env.push_back(std::string(PREFORKD_ENV_NOTIFY_FD) + "=" + std::to_string(3 + n));
  env.push_back(std::string(PREFORKD_ENV_PROGRAM) + "=" + cfg.name);
  if (cfg.watchdog_timeout.count() > 0)
    env.push_back(std::string(PREFORKD_ENV_WATCHDOG_USEC) + "=" +
                  std::to_string(cfg.watchdog_timeout.count() * 1000));
  // `environment` wins over the defaults above (PATH, HOME, LANG...): replace,
  // never append a second entry (C's getenv reads the first one).
  for (const auto& [k, v] : cfg.environment) {
    std::string prefix = k + "=";
    auto same = std::find_if(env.begin(), env.end(), [&](const std::string& e) { return e.rfind(prefix, 0) == 0; });
    if (same != env.end())
      *same = prefix + v;
    else
      env.push_back(prefix + v);
  }
  return sh;
}

// A new program with its slots (not started yet). With reuseport every slot
// binds its own sockets here (throws sys::SysError if one cannot be bound).
std::unique_ptr<Daemon::Program> Daemon::make_program(const config::Program& cfg,
                                                      std::vector<ListenerRef> listeners) {
  auto p = std::make_unique<Program>();
  p->shape = make_shape(cfg, std::move(listeners));
  for (uint32_t i = 0; i < cfg.workers; ++i) {
    auto s = std::make_unique<Slot>();
    s->program = p.get();
    s->worker.slot = static_cast<int>(i);
    if (cfg.reuseport) bind_slot_listeners(*p, *s);
    p->slots.push_back(std::move(s));
  }
  return p;
}

// reuseport: each slot has its own SO_REUSEPORT sockets, bound once and kept
// across respawns so that the slot's accept queue outlives its worker. A port
// of 0 is resolved by the first slot and reused by the others.
void Daemon::bind_slot_listeners(Program& p, Slot& s) {
  if (!s.own_listeners.empty()) return;
  for (size_t i = 0; i < p.config().listen.size(); ++i) {
    const config::ListenAddress& a = p.config().listen[i];
    config::ListenAddress at = a;
    for (const auto& other : p.slots) {
      if (other.get() != &s && other->own_listeners.size() > i && a.port == 0 &&
          a.family != config::ListenAddress::Family::Unix && other->own_listeners[i]->address == a) {
        std::string bound = other->own_listeners[i]->bound;
        at.port = static_cast<uint16_t>(std::stoi(bound.substr(bound.rfind(':') + 1)));
        break;
      }
    }
    ListenerRef l = open_listener(p.config().name, at, p.config().backlog, true);
    l->address = a;  // as configured (port 0 stays 0): compared across reloads
    if (s.worker.slot == 0) log_->info("{}: listening on {} (reuseport)", p.config().name, l->bound);
    s.own_listeners.push_back(std::move(l));
  }
}

Daemon::ListenerRef Daemon::open_listener(const std::string& program, const config::ListenAddress& a, int backlog,
                                          bool reuseport) {
  auto l = std::make_shared<Listener>();
  l->address = a;
  if (!reuseport)
    if (auto fd = activated_.take(a)) l->fd = std::move(*fd);
  bool from_systemd = static_cast<bool>(l->fd);
  if (!l->fd) l->fd = sys::bind_listener(to_spec(a, backlog, reuseport));
  l->bound = sys::local_address(l->fd.get());
  l->unlink_on_close = a.family == config::ListenAddress::Family::Unix && !from_systemd;
  if (!reuseport) log_->info("{}: listening on {}{}", program, l->bound, from_systemd ? " (from systemd)" : "");
  return l;
}

int Daemon::run() {
  if (adopted_) {
    size_t n = 0;
    for (const auto& p : programs_) n += static_cast<size_t>(std::count_if(p->slots.begin(), p->slots.end(),
                                                                           [](const auto& s) { return core::has_process(s->worker); }));
    log_->info("preforkd {} (pid {}): took over {} worker(s) in {} program(s), configuration generation {}", kVersion,
               getpid(), n, programs_.size(), generation_);
    arm_timer();
    report_systemd_status();
  } else {
    start_all();
  }
  epoll_event events[64];
  while (!finished()) {
    log_->flush();  // info lines are flushed when the loop goes idle
    int n = epoll_.wait(events, 64);
    for (int i = 0; i < n; ++i) {
      int fd = static_cast<int>(events[i].data.u64);
      auto it = watches_.find(fd);
      if (it == watches_.end()) {
        if (control_ && control_->owns(fd)) control_->on_client_event(fd, events[i].events);
        else if (metrics_ && metrics_->owns(fd)) metrics_->on_client_event(fd, events[i].events);
        continue;  // else: closed earlier in this batch
      }
      Watch w = it->second;
      switch (w.kind) {
        case Watch::Kind::Signal:
          for (int sig : signals_->drain()) on_signal(sig);
          break;
        case Watch::Kind::Timer:
          timer_.acknowledge();
          break;
        case Watch::Kind::Pipe:
          on_pipe_readable(*w.slot, *w.pipe);
          break;
        case Watch::Kind::Control:
          control_->on_listen_readable();
          break;
        case Watch::Kind::Metrics:
          metrics_->on_listen_readable();
          break;
      }
    }
    run_recycles();
    reap();
    expire_deadlines();
    advance_rollouts();
    check_reload();
    check_pending_ops();
    maybe_start_upgrade();
    arm_timer();
    report_systemd_status();
  }
  if (control_) control_->flush_all();  // e.g. the reply to `shutdown` itself
  log_->info("preforkd: shutdown complete");
  log_->flush();
  return 0;
}

void Daemon::start_all() {
  size_t total = 0;
  for (auto& p : programs_) {
    for (auto& s : p->slots) spawn(*s);
    total += p->slots.size();
  }
  log_->info("preforkd {}: started {} worker(s) in {} program(s)", getpid(), total, programs_.size());
  for (auto& p : programs_)
    if (p->config().max_memory > 0) next_memory_check_ = Clock::now() + kMemoryCheckInterval;
  arm_timer();
  sys::notify_systemd("READY=1");  // Type=notify: every worker has been started
  report_systemd_status();
}

// STATUS= for `systemctl status`: "4/4 workers ready" (+ "; web crash-looping"),
// sent when it changes and only when systemd listens (NOTIFY_SOCKET is set).
void Daemon::report_systemd_status() {
  if (!sys::systemd_notify_enabled()) return;
  size_t ready = 0, up = 0, alive = 0;
  std::string looping;
  for (const auto& p : programs_) {
    bool crash_looping = false;
    for (const auto& s : p->slots) {
      const core::Worker& w = s->worker;
      if (w.state == core::WorkerState::Ready) ++ready;
      if (w.want == core::Want::Up) ++up;
      if (core::has_process(w)) ++alive;
      crash_looping |= w.state == core::WorkerState::Backoff && w.streak >= 2;
    }
    alive += p->retirees.size();
    if (crash_looping) looping += "; " + p->config().name + " crash-looping";
  }
  std::string status = shutting_down_
                           ? "shutting down, " + std::to_string(alive) + " worker(s) left"
                           : std::to_string(ready) + "/" + std::to_string(up) + " workers ready" + looping;
  if (status == systemd_status_) return;
  systemd_status_ = status;
  sys::notify_systemd("STATUS=" + status);
}

bool Daemon::finished() const {
  if (!shutting_down_) return false;
  for (const auto& p : programs_) {
    for (const auto& s : p->slots)
      if (core::has_process(s->worker)) return false;
    if (!p->retirees.empty()) return false;  // each is forgotten once reaped
  }
  return true;
}

// ---- signals (SPEC "Signals to preforkd"; each is a request, T3) ----

void Daemon::on_signal(int sig) {
  switch (sig) {
    case SIGTERM:
    case SIGINT: on_term(); break;
    case SIGQUIT: on_quit(); break;
    case SIGTTIN: on_ttin(); break;
    case SIGTTOU: on_ttou(); break;
    case SIGUSR1: on_usr1(); break;
    case SIGHUP:
      log_->info("preforkd: SIGHUP: reloading {}", config_.path);
      request_reload(std::nullopt);
      break;
    case SIGUSR2: on_usr2(); break;
    case SIGCHLD:  // only a wake-up: the loop reaps every iteration (T2)
    case SIGPIPE:  // drained and ignored: the failed write sees EPIPE (T13)
    default: break;
  }
}

void Daemon::on_term() {
  auto now = Clock::now();
  if (!shutting_down_) {
    sys::notify_systemd("STOPPING=1");
    shutting_down_ = true;
    shutdown_deadline_ = now + config_.supervisor.shutdown_timeout;
    log_->info("preforkd: graceful shutdown (at most {}ms)", config_.supervisor.shutdown_timeout.count());
  }
  for (auto& p : programs_) {
    for (auto& s : p->slots)
      apply(*s, core::on_stop(s->worker, p->shape.policy, core::StopReason::Shutdown, core::Want::Down, now));
    stop_retirees(*p, -1, core::StopReason::Shutdown, now);
  }
}

void Daemon::on_quit() {
  auto now = Clock::now();
  sys::notify_systemd("STOPPING=1");
  shutting_down_ = true;
  shutdown_forced_ = true;
  shutdown_deadline_ = core::kNever;
  log_->info("preforkd: fast shutdown");
  for (auto& p : programs_) {
    for (auto& s : p->slots) apply(*s, core::on_kill(s->worker, now, core::Want::Down));
    for (auto& r : p->retirees) apply(*r, core::on_kill(r->worker, now, core::Want::Remove));
  }
}

// TTIN: one worker more per program (SPEC; signals coalesce, so a burst
// adds at least one, T3: `preforkctl scale` is the exact tool).
void Daemon::on_ttin() {
  if (shutting_down_) return;
  for (auto& p : programs_) add_worker(*p);
}

// TTOU: one worker less per program: the highest slot that is still wanted.
void Daemon::on_ttou() {
  if (shutting_down_) return;
  for (auto& p : programs_) remove_worker(*p);
}

size_t Daemon::wanted(const Program& p) const {
  return static_cast<size_t>(std::count_if(p.slots.begin(), p.slots.end(),
                                           [](const auto& s) { return s->worker.want != core::Want::Remove; }));
}

// A slot still on its way out is taken back first, so that scaling down and
// up again does not grow the slot numbers.
void Daemon::add_worker(Program& p) {
  auto now = Clock::now();
  auto reclaim = std::find_if(p.slots.begin(), p.slots.end(),
                              [](const auto& s) { return s->worker.want == core::Want::Remove; });
  if (reclaim != p.slots.end()) {
    apply(**reclaim, core::on_start((*reclaim)->worker, now));
    return;
  }
  auto s = std::make_unique<Slot>();
  s->program = &p;
  s->worker.slot = static_cast<int>(p.slots.size());
  try {
    if (p.config().reuseport) bind_slot_listeners(p, *s);
  } catch (const sys::SysError& e) {
    log_->error("{}: cannot add a worker: {}", p.config().name, e.what());
    return;
  }
  Slot& ref = *s;
  p.slots.push_back(std::move(s));
  log_->info("{}: scaling up to {} worker(s)", p.config().name, wanted(p));
  spawn(ref);
}

// Adds or removes workers until `target` are wanted; stops adding when a
// worker cannot be added (its sockets cannot be bound: logged).
void Daemon::scale_to(Program& p, size_t target) {
  while (wanted(p) < target) {
    size_t before = wanted(p);
    add_worker(p);
    if (wanted(p) == before) break;
  }
  while (wanted(p) > target) remove_worker(p);
}

void Daemon::remove_worker(Program& p) {
  auto now = Clock::now();
  for (auto it = p.slots.rbegin(); it != p.slots.rend(); ++it) {
    Slot& s = **it;
    if (s.worker.want == core::Want::Remove) continue;
    log_->info("{}: scaling down, stopping {}", p.config().name, tag(s));
    int number = s.worker.slot;
    // reuseport: let go of the slot's own sockets now. The worker holds its
    // copy; once it closes it the socket is gone, and the kernel moves what
    // is still queued on it to the other slots' sockets (tcp_migrate_req)
    // instead of resetting it. A reclaimed slot binds fresh ones.
    s.own_listeners.clear();
    apply(s, core::on_stop(s.worker, p.shape.policy, core::StopReason::Scale, core::Want::Remove, now));
    stop_retirees(p, number, core::StopReason::Scale, now);  // no successor is coming
    return;
  }
}

void Daemon::on_usr1() { reopen_log(); }

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

// reuseport: when a slot's socket is closed (scale-down), connections still
// in its accept queue would be reset; with net.ipv4.tcp_migrate_req (Linux
// 5.14) the kernel moves them to another socket of the same group instead.
// preforkd turns it on (it is per network namespace) when it can, and says
// so; otherwise it warns.
void Daemon::enable_listener_migration() {
  if (migration_checked_) return;
  migration_checked_ = true;
  const char* path = "/proc/sys/net/ipv4/tcp_migrate_req";
  std::string now = sys::read_small_file(path);
  if (now.rfind('1', 0) == 0) return;
  if (sys::write_small_file(path, "1\n")) {
    log_->info("preforkd: set net.ipv4.tcp_migrate_req=1 so that scaling down a reuseport program "
               "moves its queued connections to the other workers");
    return;
  }
  log_->warn("preforkd: cannot set net.ipv4.tcp_migrate_req=1 ({}): scaling down a reuseport program may "
             "reset connections still queued on the removed worker's socket", std::strerror(errno));
}

// ---- the state machine's effects ----

void Daemon::apply(Slot& slot, const core::Effects& e) {
  if (e.signal != 0) send_signal(slot, e.signal);
  if (e.forget) {
    forget(slot);
    return;  // the slot is gone
  }
  if (e.spawn) spawn(slot);
}

void Daemon::send_signal(Slot& slot, int sig) {
  const core::Worker& w = slot.worker;
  if (w.pid <= 0) return;  // T14: only unreaped workers have a pid
  pid_t target = slot.program->config().kill_group ? -w.pid : w.pid;
  if (::kill(target, sig) != 0 && errno == ESRCH && target < 0) ::kill(w.pid, sig);
  log_->debug("{} pid {}: sent SIG{}", tag(slot), w.pid, config::signal_name(sig));
}

void Daemon::forget(Slot& slot) {
  close_all_pipes(slot);
  Program& p = *slot.program;
  int number = slot.worker.slot;
  auto& list = slot.retiree ? p.retirees : p.slots;
  // Only the highest slots are ever removed, so numbers stay 0..n-1.
  auto it = std::find_if(list.begin(), list.end(), [&](const auto& s) { return s.get() == &slot; });
  if (it == list.end()) return;
  bool was_retiree = slot.retiree;
  list.erase(it);
  if (!was_retiree) log_->debug("{}[{}]: slot removed", p.config().name, number);
}

std::string Daemon::tag(const Slot& s) const {
  return s.program->config().name + "[" + std::to_string(s.worker.slot) + "]";
}

double Daemon::jitter() { return std::uniform_real_distribution<double>(-0.2, 0.2)(rng_); }

// ---- spawning ----

sys::SpawnRequest Daemon::build_request(Program& p, Slot& s, std::vector<sys::UniqueFd>& keep) {
  const config::Program& cfg = p.config();
  sys::SpawnRequest req;
  req.path = cfg.executable;
  req.argv = cfg.command;
  req.env = p.shape.base_env;
  req.env.push_back(std::string(PREFORKD_ENV_GENERATION) + "=" + std::to_string(p.shape.config_generation));
  req.env.push_back(std::string(PREFORKD_ENV_SLOT) + "=" + std::to_string(s.worker.slot));
  req.set_listen_pid = !cfg.listen.empty();

  // fds 0, 1, 2.
  req.fds.push_back({devnull_.get(), 0});
  auto output = [&](const config::Output& o, int dst, Pipe::Kind kind) {
    switch (o.kind) {
      case config::Output::Kind::Inherit: req.fds.push_back({dst, dst}); break;
      case config::Output::Kind::Null: req.fds.push_back({devnull_.get(), dst}); break;
      case config::Output::Kind::File: {
        int fd = ::open(o.path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
        if (fd < 0) throw sys::SysError(errno, "cannot open " + o.path);
        keep.emplace_back(fd);
        req.fds.push_back({fd, dst});
        break;
      }
      case config::Output::Kind::Log: {
        int pfd[2];
        if (pipe2(pfd, O_CLOEXEC) != 0) throw sys::SysError(errno, "pipe");
        set_nonblocking(pfd[0]);  // our end only: the worker's stdout stays blocking
        auto pipe = std::make_unique<Pipe>();
        pipe->kind = kind;
        pipe->fd.reset(pfd[0]);
        s.pipes.push_back(std::move(pipe));
        keep.emplace_back(pfd[1]);
        req.fds.push_back({pfd[1], dst});
        break;
      }
    }
  };
  output(cfg.stdout_target, 1, Pipe::Kind::Stdout);
  output(cfg.stderr_target, 2, Pipe::Kind::Stderr);

  // fds 3.. : the listening sockets, in `listen` order.
  int next = 3;
  const auto& listeners = cfg.reuseport ? s.own_listeners : p.shape.listeners;
  for (const auto& l : listeners) req.fds.push_back({l->fd.get(), next++});

  // Then the notify pipe. Non-blocking on both ends: a worker must never
  // block on telemetry, and we never block reading it.
  int nfd[2];
  if (pipe2(nfd, O_CLOEXEC | O_NONBLOCK) != 0) throw sys::SysError(errno, "pipe");
  auto notify = std::make_unique<Pipe>();
  notify->kind = Pipe::Kind::Notify;
  notify->fd.reset(nfd[0]);
  notify->lines = core::LineBuffer(PREFORKD_NOTIFY_LINE_MAX, core::LineBuffer::Overflow::Discard);
  s.pipes.push_back(std::move(notify));
  keep.emplace_back(nfd[1]);
  req.fds.push_back({nfd[1], next});

  // Identity and limits.
  bool root = geteuid() == 0;
  if (p.shape.user && (root || p.shape.user->uid != geteuid())) {
    req.uid = p.shape.user->uid;
    req.gid = p.shape.group.value_or(p.shape.user->gid);
    if (root) req.groups = p.shape.user->groups;
  } else if (p.shape.group && (root || *p.shape.group != getegid())) {
    req.gid = *p.shape.group;
    if (root) req.groups = std::vector<gid_t>{*p.shape.group};
  }
  req.umask = cfg.umask;
  if (cfg.directory) req.directory = *cfg.directory;
  bool nofile_configured = false;
  for (const auto& r : cfg.rlimits) {
    rlimit v{static_cast<rlim_t>(r.value), static_cast<rlim_t>(r.value)};
    req.rlimits.emplace_back(r.resource, v);
    nofile_configured |= r.resource == RLIMIT_NOFILE;
  }
  if (!nofile_configured) req.nofile_restore = original_nofile_;  // T18
  req.pdeathsig = SIGTERM;
  return req;
}

void Daemon::spawn(Slot& slot) {
  Program& p = *slot.program;
  close_all_pipes(slot);  // anything left from the previous process
  std::vector<sys::UniqueFd> child_ends;  // closed when this function returns
  sys::SpawnRequest req;
  sys::SpawnResult result;
  try {
    if (p.config().reuseport) bind_slot_listeners(p, slot);
    req = build_request(p, slot, child_ends);
    result = sys::spawn(req);
  } catch (const sys::SysError& e) {
    result.error = sys::SpawnError{sys::SpawnError::Stage::Pipe, e.code().value()};
    log_->error("{}: cannot prepare a worker: {}", tag(slot), e.what());
  }
  child_ends.clear();
  auto now = Clock::now();
  if (result.error) {
    close_all_pipes(slot);
    core::Effects e = core::on_spawn_failed(slot.worker, p.shape.policy, now, jitter());
    std::string what = result.error->describe(req);
    if (slot.worker.streak <= 1)
      log_->error("{}: {}", tag(slot), what);
    else
      log_->warn("{}: {} (failure {} in a row, next try in {}ms)", tag(slot), what,
                 slot.worker.streak, e.respawn_delay.count());
    apply(slot, e);
    return;
  }
  ++p.starts;
  slot.report = core::WorkerReport{};
  slot.notify_errors = 0;
  slot.draining = false;
  core::on_spawned(slot.worker, p.shape.policy, result.pid, p.shape.config_generation, now);
  by_pid_[result.pid] = &slot;
  for (auto& pipe : slot.pipes) {
    int fd = pipe->fd.get();
    epoll_.add(fd, EPOLLIN, static_cast<uint64_t>(fd));
    watches_[fd] = Watch{Watch::Kind::Pipe, &slot, pipe.get()};
  }
  if (slot.worker.restarts > 0)
    log_->info("{} pid {}: started (restart {})", tag(slot), result.pid, slot.worker.restarts);
  else
    log_->debug("{} pid {}: started", tag(slot), result.pid);
}

// ---- pipes (T23: EOF is not exit; T24: bounded reads) ----

void Daemon::on_pipe_readable(Slot& slot, Pipe& pipe) { drain(slot, pipe, kReadBudget); }

void Daemon::drain(Slot& slot, Pipe& pipe, size_t budget) {
  char buf[16384];
  size_t total = 0;
  while (total < budget && pipe.fd) {
    ssize_t n = sys::retry_on_eintr([&] { return ::read(pipe.fd.get(), buf, sizeof buf); });
    if (n > 0) {
      total += static_cast<size_t>(n);
      Pipe::Kind kind = pipe.kind;
      size_t too_long = pipe.lines.feed(std::string_view(buf, static_cast<size_t>(n)),
                                        [&](std::string_view line) { handle_line(slot, kind, line); });
      for (size_t i = 0; i < too_long; ++i) notify_error(slot, core::NotifyError::TooLong);
      continue;
    }
    if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) close_pipe(slot, pipe);
    break;
  }
}

void Daemon::handle_line(Slot& slot, Pipe::Kind kind, std::string_view line) {
  if (kind != Pipe::Kind::Notify) {
    log_->info("{} {}: {}", tag(slot), slot.worker.pid, line);
    return;
  }
  handle_notify(slot, line);
}

// One line from a worker's notify pipe (SPEC "The worker contract"). The
// worker is untrusted: a bad line is dropped and counted, nothing else.
void Daemon::handle_notify(Slot& slot, std::string_view line) {
  auto parsed = core::parse_notify_line(line);
  if (const auto* error = std::get_if<core::NotifyError>(&parsed)) {
    notify_error(slot, *error);
    return;
  }
  const auto& m = std::get<core::NotifyMessage>(parsed);
  auto now = Clock::now();
  core::on_notify_seen(slot.worker, now);  // every valid line feeds the watchdog
  switch (m.kind) {
    case core::NotifyMessage::Kind::Ready:
      if (core::on_ready(slot.worker, slot.program->shape.policy, now))
        log_->debug("{} pid {}: ready", tag(slot), slot.worker.pid);
      break;
    case core::NotifyMessage::Kind::Stopping:
      slot.draining = true;
      break;
    case core::NotifyMessage::Kind::Watchdog:
      break;
    case core::NotifyMessage::Kind::Status:
      slot.worker.status_text.assign(m.text);
      break;
    case core::NotifyMessage::Kind::Counter:
    case core::NotifyMessage::Kind::Gauge:
      if (auto r = slot.report.apply(m); std::holds_alternative<core::NotifyError>(r)) {
        notify_error(slot, std::get<core::NotifyError>(r));
      } else if (m.kind == core::NotifyMessage::Kind::Counter && m.name == "requests" && !slot.retiree &&
                 slot.program->config().max_requests > 0 && m.counter >= slot.program->config().max_requests &&
                 slot.recycle_reason == nullptr) {
        slot.recycle_reason = "max_requests";  // carried out after this read (run_recycles)
      }
      break;
  }
}

// The first bad line of a process is logged; the rest are only counted, so a
// flooding worker cannot flood the log either.
void Daemon::notify_error(Slot& slot, core::NotifyError error) {
  ++slot.program->notify_errors;
  if (++slot.notify_errors == 1)
    log_->warn("{} pid {}: dropped a notify line ({}); further ones from this worker are only counted",
               tag(slot), slot.worker.pid, core::to_string(error));
}

void Daemon::close_pipe(Slot& slot, Pipe& pipe) {
  if (!pipe.fd) return;
  Pipe::Kind kind = pipe.kind;
  pipe.lines.flush([&](std::string_view line) { handle_line(slot, kind, line); });
  epoll_.remove(pipe.fd.get());
  watches_.erase(pipe.fd.get());
  pipe.fd.reset();
}

void Daemon::close_all_pipes(Slot& slot) {
  for (auto& pipe : slot.pipes) {
    if (pipe->fd) drain(slot, *pipe, kDrainBudget);  // lose no line of a dead worker
    close_pipe(slot, *pipe);
  }
  slot.pipes.clear();
}

// ---- reaping (T2, T4, T20) ----

void Daemon::reap() {
  for (const auto& r : sys::reap_all()) {
    if (r.pid == upgrade_check_pid_) {
      on_upgrade_check_exit(r.status);  // may exec the new binary and never return
      continue;
    }
    auto it = by_pid_.find(r.pid);
    if (it == by_pid_.end()) {
      // T20: an orphan that landed on us, never a worker.
      log_->debug("preforkd: reaped orphan pid {} ({})", r.pid, r.status.to_string());
      continue;
    }
    Slot& slot = *it->second;
    by_pid_.erase(it);
    Program& p = *slot.program;
    core::WorkerState before = slot.worker.state;
    core::StopReason reason = slot.worker.stop_reason;
    close_all_pipes(slot);  // drains first: no line of a dead worker is lost
    p.totals.retire(slot.report);  // its counters stay in the program's totals
    slot.report = core::WorkerReport{};
    auto now = Clock::now();
    core::Termination t{r.status.signaled(), r.status.signaled() ? r.status.signal() : r.status.exit_code()};
    std::string who = tag(slot) + " pid " + std::to_string(r.pid);
    core::Effects e = core::on_exited(slot.worker, p.shape.policy, t, now, jitter());
    if (e.exited) ++p.exits[static_cast<int>(e.exit_kind)];
    bool ours = before == core::WorkerState::Stopping || before == core::WorkerState::Killing;
    if (ours) {
      log_->info("{}: {} ({})", who, r.status.to_string(), core::to_string(reason));
    } else if (r.status.signaled() && r.status.signal() == SIGKILL) {
      log_->warn("{}: {} (perhaps out of memory?)", who, r.status.to_string());
    } else {
      log_->warn("{}: {}", who, r.status.to_string());
    }
    if (e.respawn_delay.count() > 0)
      log_->warn("{}: respawning in {}ms ({} failures in a row)", tag(slot), e.respawn_delay.count(),
                 slot.worker.streak);
    else if (slot.worker.state == core::WorkerState::Stopped && !shutting_down_ && !e.forget)
      log_->info("{}: not restarted (restart: {})", tag(slot), config::to_string(p.config().restart));
    apply(slot, e);
  }
}

// ---- deadlines: one timerfd armed to the earliest (T26) ----

void Daemon::expire_deadlines() {
  auto now = Clock::now();
  if (now >= next_memory_check_ && !shutting_down_) {
    check_memory(now);
    run_recycles();
  }
  // Retirees whose successor has been ready for reload.settle are stopped now.
  for (auto& p : programs_) {
    for (size_t i = 0; i < p->retirees.size();) {
      Slot& r = *p->retirees[i];
      size_t count = p->retirees.size();
      if (r.worker.deadline <= now) apply(r, core::on_due(r.worker, p->shape.policy, now));
      if (p->retirees.size() < count) continue;
      if (now >= retire_at(*p, r)) {
        log_->info("{} pid {}: its replacement pid {} is proven, stopping it", tag(r), r.worker.pid,
                   p->slots[static_cast<size_t>(r.worker.slot)]->worker.pid);
        apply(r, core::on_stop(r.worker, p->shape.policy, core::StopReason::Recycle, core::Want::Remove, now));
        if (p->retirees.size() < count) continue;
      }
      ++i;
    }
  }
  if (upgrade_check_pid_ > 0 && now >= upgrade_check_deadline_) {
    log_->error("preforkd: the new binary's check did not finish in time, killing it");
    ::kill(upgrade_check_pid_, SIGKILL);
    upgrade_check_deadline_ = core::kNever;
  }
  if (shutting_down_ && !shutdown_forced_ && now >= shutdown_deadline_) {
    shutdown_forced_ = true;
    log_->warn("preforkd: shutdown_timeout passed, killing the remaining workers");
    for (auto& p : programs_) {
      for (auto& s : p->slots) apply(*s, core::on_kill(s->worker, now, core::Want::Down));
      for (auto& r : p->retirees) apply(*r, core::on_kill(r->worker, now, core::Want::Remove));
    }
  }
  for (auto& p : programs_) {
    // Index loop: a due slot may be forgotten (erased) by its effects.
    for (size_t i = 0; i < p->slots.size();) {
      Slot& s = *p->slots[i];
      if (s.worker.deadline <= now && (s.worker.state == core::WorkerState::Starting ||
                                       s.worker.state == core::WorkerState::Ready)) {
        // Before judging start_timeout or the watchdog, read what the worker
        // already wrote: after the loop itself was held up (a stalled
        // machine), READY=1 or WATCHDOG=1 may be sitting in the pipe.
        for (auto& pipe : s.pipes)
          if (pipe->kind == Pipe::Kind::Notify && pipe->fd) drain(s, *pipe, kReadBudget);
      }
      if (s.worker.deadline <= now) {
        core::WorkerState before = s.worker.state;
        core::Effects e = core::on_due(s.worker, p->shape.policy, now);
        if (before == core::WorkerState::Starting)
          log_->warn("{} pid {}: no READY=1 within start_timeout, stopping it", tag(s), s.worker.pid);
        else if (before == core::WorkerState::Ready && e.signal != 0)
          log_->warn("{} pid {}: watchdog: nothing heard for {}ms, sending SIGABRT", tag(s),
                     s.worker.pid, p->shape.policy.watchdog_timeout.count());
        else if (before == core::WorkerState::Stopping)
          log_->warn("{} pid {}: still running after stop_timeout, sending SIGKILL", tag(s), s.worker.pid);
        else if (before == core::WorkerState::Killing)
          log_->warn("{} pid {}: still not gone after SIGKILL", tag(s), s.worker.pid);
        size_t count = p->slots.size();
        apply(s, e);
        if (p->slots.size() < count) continue;  // erased: the same index is the next slot
      }
      ++i;
    }
  }
}

void Daemon::arm_timer() {
  TimePoint earliest = shutting_down_ ? core::kNever : next_memory_check_;
  if (control_) earliest = std::min(earliest, control_->expire(Clock::now()));
  if (metrics_) earliest = std::min(earliest, metrics_->expire(Clock::now()));
  if (shutting_down_ && !shutdown_forced_) earliest = std::min(earliest, shutdown_deadline_);
  earliest = std::min(earliest, upgrade_check_deadline_);
  for (auto& p : programs_) {
    for (const auto& s : p->slots) earliest = std::min(earliest, s->worker.deadline);
    for (const auto& r : p->retirees) earliest = std::min({earliest, r->worker.deadline, retire_at(*p, *r)});
  }
  timer_.arm(earliest);
}

// ---- recycling (max_requests, max_memory): new before old ----

namespace {
// A retiree still serving, i.e. not yet asked to stop.
bool serving(const core::Worker& w) {
  return w.state == core::WorkerState::Ready || w.state == core::WorkerState::Starting;
}
}  // namespace

Daemon::Slot* Daemon::awaiting_retiree(Program& p, int slot_number) {
  for (auto& r : p.retirees)
    if (r->worker.slot == slot_number && serving(r->worker)) return r.get();
  return nullptr;
}

// When a serving retiree may be stopped: once its slot's successor has been
// ready for reload.settle (proven). kNever while there is nothing to wait for.
TimePoint Daemon::retire_at(const Program& p, const Slot& retiree) const {
  auto n = static_cast<size_t>(retiree.worker.slot);
  if (!serving(retiree.worker) || n >= p.slots.size()) return core::kNever;
  const core::Worker& successor = p.slots[n]->worker;
  return successor.state == core::WorkerState::Ready ? successor.ready_at + p.config().reload.settle : core::kNever;
}

// Recycles requested while reading pipes are carried out here, outside the
// read loop: a recycle moves the pipes being read to the retiree.
void Daemon::run_recycles() {
  for (auto& p : programs_)
    for (size_t i = 0; i < p->slots.size(); ++i)
      if (p->slots[i]->recycle_reason != nullptr) recycle(*p->slots[i]);
}

void Daemon::recycle(Slot& slot) {
  const char* why = std::exchange(slot.recycle_reason, nullptr);
  Program& p = *slot.program;
  if (shutting_down_ || slot.worker.state != core::WorkerState::Ready ||
      awaiting_retiree(p, slot.worker.slot) != nullptr)
    return;  // not serving, or a replacement is already on its way
  auto old = std::make_unique<Slot>();
  old->program = &p;
  old->retiree = true;
  old->worker = core::hand_over(slot.worker);
  old->pipes = std::move(slot.pipes);
  old->report = std::move(slot.report);
  old->notify_errors = slot.notify_errors;
  old->draining = slot.draining;
  slot.pipes.clear();
  slot.report = core::WorkerReport{};
  // reuseport, `listen` changed by a reload: the old worker keeps the slot's
  // old sockets (they close when it is gone); the successor binds the new ones.
  const auto& want = p.config().listen;
  bool same = slot.own_listeners.size() == (p.config().reuseport ? want.size() : 0);
  for (size_t i = 0; same && i < slot.own_listeners.size(); ++i) same = slot.own_listeners[i]->address == want[i];
  if (!same) old->own_listeners = std::exchange(slot.own_listeners, {});
  for (auto& pipe : old->pipes)
    if (pipe->fd) watches_[pipe->fd.get()].slot = old.get();
  by_pid_[old->worker.pid] = old.get();
  log_->info("{} pid {}: recycling ({}): starting its replacement first", tag(slot), old->worker.pid, why);
  p.retirees.push_back(std::move(old));
  spawn(slot);
}

// Stops the retirees of one slot (or of all, with -1): their successor is
// proven, or will never come.
void Daemon::stop_retirees(Program& p, int slot_number, core::StopReason reason, TimePoint now) {
  for (size_t i = 0; i < p.retirees.size();) {
    Slot& r = *p.retirees[i];
    size_t count = p.retirees.size();
    if (slot_number < 0 || r.worker.slot == slot_number)
      apply(r, core::on_stop(r.worker, p.shape.policy, reason, core::Want::Remove, now));
    if (p.retirees.size() == count) ++i;
  }
}

void Daemon::check_memory(TimePoint now) {
  next_memory_check_ = now + kMemoryCheckInterval;
  for (auto& p : programs_) {
    if (p->config().max_memory == 0) continue;
    for (auto& s : p->slots) {
      if (s->worker.state != core::WorkerState::Ready) continue;
      auto rss = sys::rss_bytes(s->worker.pid);
      if (rss && *rss > p->config().max_memory && s->recycle_reason == nullptr) {
        log_->info("{} pid {}: RSS {} bytes is over max_memory {}", tag(*s), s->worker.pid, *rss,
                   p->config().max_memory);
        s->recycle_reason = "max_memory";
      }
    }
  }
}

// ---- the control socket ----

Daemon::Program* Daemon::find_program(const std::string& name) {
  for (auto& p : programs_)
    if (p->config().name == name && !p->removing) return p.get();
  return nullptr;
}

core::Snapshot Daemon::snapshot() const {
  core::Snapshot s;
  s.version = kVersion;
  s.pid = getpid();
  s.generation = generation_;
  s.reloads_ok = reloads_ok_;
  s.reloads_failed = reloads_failed_;
  auto now = Clock::now();
  for (const auto& p : programs_) {
    core::ProgramSnapshot ps;
    ps.name = p->config().name;
    ps.workers_wanted = static_cast<uint32_t>(std::count_if(
        p->slots.begin(), p->slots.end(), [](const auto& sl) { return sl->worker.want == core::Want::Up; }));
    std::vector<const core::WorkerReport*> live;
    bool crash_looping = false, any_process = false;
    auto add = [&](const Slot& sl, bool retiring) {
      const core::Worker& w = sl.worker;
      core::WorkerSnapshot ws;
      ws.slot = w.slot;
      ws.pid = w.pid;
      ws.state = core::to_string(w.state);
      ws.generation = w.generation;
      ws.uptime_s = core::has_process(w) ? std::chrono::duration<double>(now - w.started_at).count() : 0.0;
      ws.restarts = w.restarts;
      ws.status = w.status_text;
      ws.retiring = retiring;
      ws.counters.insert(sl.report.counters().begin(), sl.report.counters().end());
      ws.gauges.insert(sl.report.gauges().begin(), sl.report.gauges().end());
      ps.workers.push_back(std::move(ws));
      live.push_back(&sl.report);
      crash_looping |= w.state == core::WorkerState::Backoff && w.streak >= 2;
      any_process |= core::has_process(w);
    };
    for (const auto& sl : p->slots) add(*sl, false);
    for (const auto& r : p->retirees) add(*r, true);
    ps.state = crash_looping ? "crash-looping" : (ps.workers_wanted == 0 && !any_process) ? "stopped" : "running";
    ps.counters = p->totals.counters(live);
    ps.gauges = core::ProgramTotals::gauges(live);
    ps.notify_errors = p->notify_errors;
    ps.starts = p->starts;
    for (size_t i = 0; i < ps.exits.size(); ++i) ps.exits[i] = p->exits[i];
    s.programs.push_back(std::move(ps));
  }
  return s;
}

void Daemon::on_control_request(ControlServer::ClientId client, const std::string& line) {
  auto parsed = parse_control_request(line);
  if (const auto* err = std::get_if<std::string>(&parsed)) return control_->reply(client, reply_error(*err));
  const ControlRequest& r = std::get<ControlRequest>(parsed);
  Program* p = nullptr;
  if (!r.program.empty() && (p = find_program(r.program)) == nullptr)
    return control_->reply(client, reply_error("unknown program `" + r.program + "`"));
  const std::string& cmd = r.cmd;
  log_->debug("control: {}{}{}", cmd, p ? " " : "", r.program);
  if (cmd == "status") return control_->reply(client, reply_status(snapshot()));
  if (cmd == "stats") return control_->reply(client, reply_stats(snapshot()));
  if (cmd == "version") return control_->reply(client, reply_version(snapshot()));
  if (cmd == "metrics") return control_->reply(client, reply_text(core::render_prometheus(snapshot())));
  if (shutting_down_) return control_->reply(client, reply_error("preforkd is shutting down"));
  if (cmd == "reload") {
    log_->info("preforkd: reload of {} requested over the control socket", config_.path);
    return request_reload(client);
  }
  auto now = Clock::now();
  if (cmd == "shutdown") {
    control_->reply(client, reply_ok("shutting down"));
    log_->info("preforkd: shutdown requested over the control socket");
    return on_term();
  }
  if (cmd == "signal") {
    auto sig = config::parse_signal(r.signal);
    if (!sig) return control_->reply(client, reply_error("unknown signal `" + r.signal + "`"));
    size_t n = 0;
    for (auto* list : {&p->slots, &p->retirees})
      for (auto& s : *list)
        if (core::has_process(s->worker)) {
          send_signal(*s, *sig);
          ++n;
        }
    return control_->reply(client, reply_ok("sent SIG" + std::string(config::signal_name(*sig)) + " to " +
                                            std::to_string(n) + " worker(s)"));
  }
  if (cmd == "start") {
    for (auto& s : p->slots)
      if (s->worker.want != core::Want::Remove) apply(*s, core::on_start(s->worker, now));
    return control_->reply(client, reply_ok("started " + p->config().name));
  }
  if (p->rollout) return control_->reply(client, reply_error(p->config().name + ": a restart is in progress"));
  if (cmd == "stop") {
    for (auto& s : p->slots)
      if (s->worker.want != core::Want::Remove)
        apply(*s, core::on_stop(s->worker, p->shape.policy, core::StopReason::Operator, core::Want::Down, now));
    stop_retirees(*p, -1, core::StopReason::Operator, now);
    pending_ops_.push_back({PendingOp::Kind::Stop, p, 0, client});
    return;
  }
  if (cmd == "scale") {
    auto target = static_cast<size_t>(r.workers);
    log_->info("{}: scaling to {} worker(s) (control)", p->config().name, target);
    scale_to(*p, target);  // a worker that cannot be added is reported by check_pending_ops
    pending_ops_.push_back({PendingOp::Kind::Scale, p, target, client});
    return;
  }
  if (cmd == "restart") {
    if (reload_) return control_->reply(client, reply_error("a reload is in progress"));
    Rollout ro;
    ro.kind = Rollout::Kind::Restart;
    ro.batch = core::batch_size(p->config().reload, static_cast<uint32_t>(wanted(*p)));
    ro.client = client;
    start_rollout(*p, std::move(ro));
    log_->info("{}: rolling restart of {} worker(s)", p->config().name, p->rollout->todo.size());
    return;
  }
}

// Operations that reply once they have finished (SPEC: so scripts can chain them).
void Daemon::check_pending_ops() {
  for (size_t i = 0; i < pending_ops_.size();) {
    PendingOp& op = pending_ops_[i];
    Program& p = *op.program;
    std::optional<std::string> done_ok, failed;
    if (op.kind == PendingOp::Kind::Stop) {
      bool running = !p.retirees.empty() || std::any_of(p.slots.begin(), p.slots.end(), [](const auto& s) {
                       return core::has_process(s->worker);
                     });
      if (!running) done_ok = "stopped " + p.config().name;
    } else {
      bool settled = wanted(p) == op.target && p.slots.size() == op.target &&
                     std::all_of(p.slots.begin(), p.slots.end(), [](const auto& s) {
                       return s->worker.state == core::WorkerState::Ready;
                     });
      auto broken = std::find_if(p.slots.begin(), p.slots.end(), [](const auto& s) {
        return s->worker.want == core::Want::Up && s->worker.state == core::WorkerState::Backoff &&
               s->worker.streak > 0;
      });
      if (settled)
        done_ok = p.config().name + " has " + std::to_string(op.target) + " worker(s)";
      else if (broken != p.slots.end())
        failed = tag(**broken) + " failed to start (see preforkd's log); it is retried with backoff";
      else if (wanted(p) != op.target && p.slots.size() == wanted(p))
        failed = "could not reach " + std::to_string(op.target) + " worker(s) (see preforkd's log)";
    }
    if (shutting_down_ && !done_ok) failed = "preforkd is shutting down";
    if (done_ok || failed) {
      control_->reply(op.client, done_ok ? reply_ok(*done_ok) : reply_error(*failed));
      pending_ops_.erase(pending_ops_.begin() + static_cast<std::ptrdiff_t>(i));
      continue;
    }
    ++i;
  }
}

// Fills a rollout's list with the program's wanted workers (slot 0 first)
// and makes it the program's rollout.
void Daemon::start_rollout(Program& p, Rollout ro) {
  for (const auto& s : p.slots)
    if (s->worker.want == core::Want::Up) ro.todo.push_back({s->worker.slot, s->worker.spawn_seq, 0});
  std::reverse(ro.todo.begin(), ro.todo.end());  // popped from the back: slot 0 first
  p.rollout = std::move(ro);
}

// Rollouts advance here, once per loop iteration: a batch is proven when each
// of its slots has a successor that has been ready for reload.settle and its
// old worker has been told to stop; then the next batch starts. The first
// replacement is alone (the canary). A successor that fails aborts the
// rollout and gives its slot back to the old worker, which never stopped
// serving.
void Daemon::advance_rollouts() {
  for (size_t pi = 0; pi < programs_.size(); ++pi) {
    Program& p = *programs_[pi];
    if (!p.rollout) continue;
    auto& ro = *p.rollout;
    if (shutting_down_) {
      abort_rollout(p, "preforkd is shutting down");
      continue;
    }
    std::optional<std::string> failed;
    for (size_t i = 0; i < ro.in_flight.size();) {
      auto n = static_cast<size_t>(ro.in_flight[i].slot);
      if (n >= p.slots.size()) {  // scaled away meanwhile: nothing left to prove
        ro.in_flight.erase(ro.in_flight.begin() + static_cast<std::ptrdiff_t>(i));
        continue;
      }
      Slot& slot = *p.slots[n];
      Slot* old = awaiting_retiree(p, slot.worker.slot);
      if (slot.worker.streak > ro.in_flight[i].streak_before && !core::has_process(slot.worker)) {
        failed = "the new worker of " + tag(slot) + " failed to start (see preforkd's log); the old workers keep serving";
        break;
      }
      if (old != nullptr || slot.worker.state != core::WorkerState::Ready) {
        ++i;  // not proven yet
        continue;
      }
      ++ro.replaced;
      ro.in_flight.erase(ro.in_flight.begin() + static_cast<std::ptrdiff_t>(i));
    }
    if (failed) {
      // Slots whose successor failed go back to their old worker. A batch
      // sibling still starting is left to prove itself: its old worker is
      // stopped only if it does (retire_at), as for any recycle.
      for (const auto& item : ro.in_flight) {
        auto n = static_cast<size_t>(item.slot);
        Slot* old = n < p.slots.size() ? awaiting_retiree(p, item.slot) : nullptr;
        if (old != nullptr && !core::has_process(p.slots[n]->worker)) take_back(*p.slots[n], *old);
      }
      abort_rollout(p, *failed);
      continue;
    }
    if (!ro.in_flight.empty()) continue;
    size_t size = ro.replaced == 0 ? 1 : ro.batch;  // the canary goes alone
    while (ro.in_flight.size() < size && !ro.todo.empty()) {
      Rollout::Item item = ro.todo.back();
      auto n = static_cast<size_t>(item.slot);
      bool same = n < p.slots.size() && p.slots[n]->worker.spawn_seq == item.spawn_seq;
      // A worker still starting runs the old code too: wait until it is ready.
      if (same && p.slots[n]->worker.state == core::WorkerState::Starting) break;
      ro.todo.pop_back();
      // Gone, not running, or already replaced since (respawned or recycled).
      if (!same || p.slots[n]->worker.state != core::WorkerState::Ready ||
          p.slots[n]->worker.want != core::Want::Up || awaiting_retiree(p, item.slot) != nullptr)
        continue;
      Slot& slot = *p.slots[n];
      item.streak_before = slot.worker.streak;
      ro.in_flight.push_back(item);
      slot.recycle_reason = ro.kind == Rollout::Kind::Restart ? "restart" : "reload";
      recycle(slot);
    }
    if (ro.in_flight.empty() && ro.todo.empty() && p.retirees.empty()) complete_rollout(p);
  }
}

void Daemon::complete_rollout(Program& p) {
  Rollout ro = std::move(*p.rollout);
  p.rollout.reset();
  if (ro.kind == Rollout::Kind::Restart) {
    control_->reply(ro.client, reply_ok("restarted " + std::to_string(ro.replaced) + " worker(s) of " +
                                        p.config().name));
    log_->info("{}: rolling restart done", p.config().name);
    return;
  }
  // Reload: every old worker is gone, so are the sockets only they used.
  p.previous.reset();
  log_->info("{}: {} worker(s) replaced", p.config().name, ro.replaced);
  scale_to(p, ro.scale_to);
}

void Daemon::abort_rollout(Program& p, const std::string& why) {
  Rollout ro = std::move(*p.rollout);
  p.rollout.reset();
  if (ro.kind == Rollout::Kind::Restart) {
    log_->error("{}: rolling restart aborted: {}", p.config().name, why);
    control_->reply(ro.client, reply_error("restart of " + p.config().name + " aborted: " + why));
    return;
  }
  log_->error("{}: reload aborted: {}", p.config().name, why);
  if (reload_) reload_->failures.push_back(p.config().name + ": " + why);
  revert_program(p);
}

// The slot's new worker failed before it was proven: its old worker, still
// serving as a retiree, becomes the slot's worker again.
void Daemon::take_back(Slot& slot, Slot& retiree) {
  Program& p = *slot.program;
  close_all_pipes(slot);
  core::take_back(slot.worker, retiree.worker);
  slot.pipes = std::move(retiree.pipes);
  if (!retiree.own_listeners.empty()) slot.own_listeners = std::move(retiree.own_listeners);
  slot.report = std::move(retiree.report);
  slot.notify_errors = retiree.notify_errors;
  slot.draining = retiree.draining;
  for (auto& pipe : slot.pipes)
    if (pipe->fd) watches_[pipe->fd.get()].slot = &slot;
  by_pid_[slot.worker.pid] = &slot;
  auto it = std::find_if(p.retirees.begin(), p.retirees.end(), [&](const auto& r) { return r.get() == &retiree; });
  if (it != p.retirees.end()) p.retirees.erase(it);
  log_->warn("{} pid {}: keeps serving, its replacement failed", tag(slot), slot.worker.pid);
}

}  // namespace preforkd::daemon
