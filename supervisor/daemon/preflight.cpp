#include "daemon/preflight.hpp"

#include "sys/runtime_dir.hpp"

namespace preforkd::daemon {

PreflightFacts system_facts(const std::string& runtime_dir) {
  PreflightFacts f;
  f.privileges = sys::current_privileges();
  f.user = [](const std::string& name) { return sys::lookup_user(name); };
  f.group = [](const std::string& name) { return sys::lookup_group(name); };
  f.cannot_create_in = [](const std::string& dir) { return sys::cannot_create_in(dir); };
  f.cannot_write_file = [](const std::string& file) { return sys::cannot_write_file(file); };
  f.private_dir_problem = [](const std::string& dir) { return sys::check_private_dir(dir, false); };
  f.runtime_dir = runtime_dir;
  return f;
}

namespace {

std::string folder_of(const std::string& path) {
  auto slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

std::string as_user(const sys::Privileges& p) { return "preforkd runs as uid " + std::to_string(p.euid); }

}  // namespace

std::vector<std::string> preflight(const config::Config& config, const std::optional<std::string>& pidfile,
                                   const PreflightFacts& facts) {
  std::vector<std::string> out;
  const sys::Privileges& priv = facts.privileges;

  auto check_port = [&](const std::string& key, const config::ListenAddress& a) {
    if (a.family == config::ListenAddress::Family::Unix || a.port == 0) return;
    if (a.port >= priv.unprivileged_port_start || priv.net_bind_service) return;
    out.push_back(key + ": " + a.text + ": port " + std::to_string(a.port) + " is below " +
                  std::to_string(priv.unprivileged_port_start) +
                  " (net.ipv4.ip_unprivileged_port_start) and " + as_user(priv) +
                  " without CAP_NET_BIND_SERVICE: binding it will fail (Permission denied)");
  };
  auto check_dir = [&](const std::string& key, const std::string& what, const std::string& dir) {
    std::string why = facts.cannot_create_in(dir);
    if (!why.empty()) out.push_back(key + ": " + why + ": " + what + " will fail");
  };
  auto check_file = [&](const std::string& key, const std::string& what, const std::string& file) {
    std::string why = facts.cannot_write_file(file);
    if (!why.empty()) out.push_back(key + ": " + why + ": " + what + " will fail");
  };

  for (const auto& p : config.programs) {
    const std::string key = "programs." + p.name;
    const std::string each = "every worker of " + p.name + " will fail to start";
    std::optional<sys::UserInfo> user = p.user ? facts.user(*p.user) : std::nullopt;
    std::optional<gid_t> group = p.group ? facts.group(*p.group) : std::nullopt;
    // As sys/spawn and daemon/spawn_worker do it: a user other than us means
    // setgid (its group, or `group:`) then setuid; our own user with another
    // `group:` means setgid alone.
    if (user && user->uid != priv.euid) {
      gid_t gid = group.value_or(user->gid);
      if (gid != priv.egid && !priv.setgid)
        out.push_back(key + ".user: " + *p.user + " has gid " + std::to_string(gid) + " and " + as_user(priv) +
                      " (gid " + std::to_string(priv.egid) + ") without CAP_SETGID: " + each + " (setgid " +
                      std::to_string(gid) + ": Operation not permitted)");
      else if (!priv.setuid)
        out.push_back(key + ".user: " + *p.user + " is uid " + std::to_string(user->uid) + " and " +
                      as_user(priv) + " without CAP_SETUID: " + each + " (setuid " + std::to_string(user->uid) +
                      ": Operation not permitted)");
    } else if (group && *group != priv.egid && !priv.setgid) {
      out.push_back(key + ".group: " + *p.group + " is gid " + std::to_string(*group) + " and " + as_user(priv) +
                    " (gid " + std::to_string(priv.egid) + ") without CAP_SETGID: " + each + " (setgid " +
                    std::to_string(*group) + ": Operation not permitted)");
    }
    for (const auto& a : p.listen) {
      check_port(key + ".listen", a);
      if (a.family == config::ListenAddress::Family::Unix)
        check_dir(key + ".listen", "binding " + a.text, folder_of(a.path));
    }
    if (p.stdout_target.kind == config::Output::Kind::File)
      check_file(key + ".stdout", "opening it for the workers", p.stdout_target.path);
    if (p.stderr_target.kind == config::Output::Kind::File)
      check_file(key + ".stderr", "opening it for the workers", p.stderr_target.path);
  }

  const config::Supervisor& s = config.supervisor;
  const std::string socket_dir = folder_of(s.control_socket);
  if (priv.euid != 0 && socket_dir == facts.runtime_dir) {
    std::string why = facts.private_dir_problem(socket_dir);
    if (!why.empty()) out.push_back("supervisor.control_socket: " + why);
  }
  check_dir("supervisor.control_socket", "creating the control socket " + s.control_socket, socket_dir);
  if (pidfile)
    check_dir("--pidfile", "writing the pidfile " + *pidfile, folder_of(*pidfile));
  else if (s.pidfile)
    check_dir("supervisor.pidfile", "writing the pidfile " + *s.pidfile, folder_of(*s.pidfile));
  if (s.log_file) check_file("supervisor.log_file", "opening the log file", *s.log_file);
  if (s.metrics_address) check_port("supervisor.metrics", *s.metrics_address);
  return out;
}

}  // namespace preforkd::daemon
