// resources.cpp — the OS side of a program shape: its listening sockets
// (shared, or one set per slot with reuseport), its environment and its
// resolved user and group. Built at start-up and by a reload before anything
// changes, so that whatever can fail (an unknown user, a busy port) fails
// with nothing changed.
#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "daemon/daemon.hpp"
#include "preforkd/worker.h"
#include "sys/error.hpp"
#include "sys/listen_socket.hpp"
#include "sys/procfs.hpp"

namespace preforkd::daemon {

namespace {

std::string env_or(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return v != nullptr ? v : fallback;
}

}  // namespace

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

// ---- set-up: what a program's workers start with ----

// Resolves the program's user and group (throws sys::SysError if unknown)
// and prepares the environment; the listening sockets are given (shared
// ones, empty with reuseport).
Daemon::Resources Daemon::make_resources(const config::Program& cfg, std::vector<ListenerRef> listeners) {
  Resources r;
  r.listeners = std::move(listeners);
  if (cfg.user) {
    r.user = sys::lookup_user(*cfg.user);
    if (!r.user) throw sys::SysError(ENOENT, "program " + cfg.name + ": unknown user " + *cfg.user);
  }
  if (cfg.group) {
    r.group = sys::lookup_group(*cfg.group);
    if (!r.group) throw sys::SysError(ENOENT, "program " + cfg.name + ": unknown group " + *cfg.group);
  }
  // A minimal clean environment (SPEC): PATH, LANG and TZ from ours, the
  // user's identity, the worker contract, then the configured variables.
  auto& env = r.base_env;
  env.push_back("PATH=" + env_or("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"));
  for (const char* name : {"LANG", "TZ"})
    if (const char* v = std::getenv(name)) env.push_back(std::string(name) + "=" + v);
  std::optional<sys::UserInfo> who = r.user ? r.user : sys::lookup_uid(sys::effective_uid());
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
    env.push_back(std::string(PREFORKD_ENV_WATCHDOG_USEC) + "=" + std::to_string(cfg.watchdog_timeout.count() * 1000));
  if (cfg.notify_socket && !notify_socket_name_.empty())
    env.push_back(std::string(PREFORKD_ENV_NOTIFY_SOCKET) + "=" + notify_socket_name_);
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
  return r;
}

// The shared sockets of a program without reuseport, in `listen` order. A
// socket already open under the same address (`reuse`, a reload) is the very
// same one. Throws sys::SysError if one cannot be bound.
std::vector<Daemon::ListenerRef> Daemon::bind_shared(const config::Program& cfg,
                                                     std::map<std::string, ListenerRef>* reuse) {
  std::vector<ListenerRef> out;
  if (cfg.reuseport) return out;
  for (const auto& a : cfg.listen) {
    if (reuse != nullptr) {
      auto it = reuse->find(a.key());
      if (it == reuse->end()) it = reuse->emplace(a.key(), open_listener(cfg.name, a, cfg.backlog, false)).first;
      out.push_back(it->second);
    } else {
      out.push_back(open_listener(cfg.name, a, cfg.backlog, false));
    }
  }
  return out;
}

// reuseport: each slot has its own SO_REUSEPORT sockets, bound once and kept
// across respawns so that the slot's accept queue outlives its worker. A port
// of 0 is resolved by another slot's socket and reused.
std::vector<Daemon::ListenerRef> Daemon::bind_slot(const config::Program& cfg, core::ProgramId id, int slot) {
  std::vector<ListenerRef> out;
  for (size_t i = 0; i < cfg.listen.size(); ++i) {
    const config::ListenAddress& a = cfg.listen[i];
    config::ListenAddress at = a;
    if (a.port == 0 && a.family != config::ListenAddress::Family::Unix) {
      for (const auto& [key, sockets] : slot_sockets_) {
        if (key.first != id || key.second == slot || sockets.size() <= i || !(sockets[i]->address == a)) continue;
        const std::string& bound = sockets[i]->bound;
        at.port = static_cast<uint16_t>(std::stoi(bound.substr(bound.rfind(':') + 1)));
        break;
      }
    }
    ListenerRef l = open_listener(cfg.name, at, cfg.backlog, true);
    l->address = a;  // as configured (port 0 stays 0): compared across reloads
    if (slot == 0) log_->info("{}: listening on {} (reuseport)", cfg.name, l->bound);
    out.push_back(std::move(l));
  }
  return out;
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

// reuseport: when a slot's socket is closed (scale-down), connections still
// in its accept queue would be reset; with net.ipv4.tcp_migrate_req (Linux
// 5.14) the kernel moves them to another socket of the same group instead.
// preforkd turns it on (it is per network namespace) when it can, and says
// so; otherwise it warns.
void Daemon::enable_listener_migration() {
  if (migration_checked_) return;
  migration_checked_ = true;
  const char* path = "/proc/sys/net/ipv4/tcp_migrate_req";
  if (sys::read_small_file(path).rfind('1', 0) == 0) return;
  if (sys::write_small_file(path, "1\n")) {
    log_->info("preforkd: set net.ipv4.tcp_migrate_req=1 so that scaling down a reuseport program "
               "moves its queued connections to the other workers");
    return;
  }
  log_->warn("preforkd: cannot set net.ipv4.tcp_migrate_req=1 ({}): scaling down a reuseport program may "
             "reset connections still queued on the removed worker's socket", std::strerror(errno));
}
}  // namespace preforkd::daemon
