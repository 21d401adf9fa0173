// Running without root (issue #15 item 4), the pure parts: where the
// default control socket goes, the CapEff parser, what `preforkd -t` warns
// about for a given set of facts, and failed spawns counting as restarts.
#include <doctest/doctest.h>

#include <csignal>

#include "core/worker.hpp"
#include "daemon/preflight.hpp"
#include "sys/privileges.hpp"
#include "sys/runtime_dir.hpp"

using namespace std::chrono_literals;
namespace config = preforkd::config;
namespace sys = preforkd::sys;

TEST_CASE("runtime dir: root /run/preforkd, else XDG_RUNTIME_DIR/preforkd, else /tmp/preforkd-UID") {
  CHECK(sys::choose_runtime_dir(0, nullptr) == "/run/preforkd");
  CHECK(sys::choose_runtime_dir(0, "/run/user/0") == "/run/preforkd");  // root keeps the system folder
  CHECK(sys::choose_runtime_dir(1000, "/run/user/1000") == "/run/user/1000/preforkd");
  CHECK(sys::choose_runtime_dir(1000, "/run/user/1000//") == "/run/user/1000/preforkd");
  CHECK(sys::choose_runtime_dir(1000, nullptr) == "/tmp/preforkd-1000");
  CHECK(sys::choose_runtime_dir(1000, "") == "/tmp/preforkd-1000");
  CHECK(sys::choose_runtime_dir(1000, "relative/dir") == "/tmp/preforkd-1000");  // invalid per XDG: ignored
  CHECK(sys::choose_runtime_dir(65534, "/") == "/preforkd");
}

TEST_CASE("CapEff: parsed from /proc/<pid>/status text") {
  CHECK(sys::parse_cap_eff("Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n") == 0x1ffffffffffULL);
  CHECK(sys::parse_cap_eff("CapEff:\t0000000000000400\n") == (1ULL << sys::kCapNetBindService));
  CHECK_FALSE(sys::parse_cap_eff("Name:\tx\n").has_value());
  CHECK_FALSE(sys::parse_cap_eff("CapEff:\tzz\n").has_value());
}

namespace {

// A user without privileges (uid/gid 1000), where every folder is writable
// and www-data is 33:33.
preforkd::daemon::PreflightFacts nobody_facts() {
  preforkd::daemon::PreflightFacts f;
  f.privileges.euid = 1000;
  f.privileges.egid = 1000;
  f.privileges.unprivileged_port_start = 1024;
  f.user = [](const std::string& name) -> std::optional<sys::UserInfo> {
    sys::UserInfo u;
    u.name = name;
    if (name == "www-data") u.uid = u.gid = 33;
    else if (name == "me") u.uid = u.gid = 1000;
    else return std::nullopt;
    return u;
  };
  f.group = [](const std::string& name) -> std::optional<gid_t> {
    if (name == "www-data") return 33;
    if (name == "me") return 1000;
    return std::nullopt;
  };
  f.cannot_create_in = [](const std::string&) { return std::string(); };
  f.cannot_write_file = [](const std::string&) { return std::string(); };
  f.private_dir_problem = [](const std::string&) { return std::string(); };
  f.runtime_dir = "/tmp/preforkd-1000";
  return f;
}

config::Config one_program() {
  config::Config c;
  c.supervisor.control_socket = "/tmp/preforkd-1000/preforkd.sock";
  config::Program p;
  p.name = "web";
  config::ListenAddress a;
  a.host = "127.0.0.1";
  a.port = 8080;
  a.text = "127.0.0.1:8080";
  p.listen.push_back(a);
  c.programs.push_back(p);
  return c;
}

bool any_has(const std::vector<std::string>& lines, const std::string& needle) {
  for (const auto& l : lines)
    if (l.find(needle) != std::string::npos) return true;
  return false;
}

}  // namespace

TEST_CASE("preflight: nothing to say about a config this user can run") {
  auto facts = nobody_facts();
  config::Config c = one_program();
  c.programs[0].user = "me";  // switching to oneself needs nothing
  c.programs[0].group = "me";
  CHECK(preforkd::daemon::preflight(c, std::nullopt, facts).empty());
}

TEST_CASE("preflight: user: and group: without the privilege to switch") {
  auto facts = nobody_facts();
  config::Config c = one_program();
  c.programs[0].user = "www-data";
  auto w = preforkd::daemon::preflight(c, std::nullopt, facts);
  REQUIRE(w.size() == 1);
  CHECK(w[0].rfind("programs.web.user: www-data", 0) == 0);
  CHECK(w[0].find("without CAP_SETGID") != std::string::npos);
  CHECK(w[0].find("every worker of web will fail to start (setgid 33: Operation not permitted)") != std::string::npos);

  facts.privileges.setgid = true;  // setgid allowed, setuid not
  w = preforkd::daemon::preflight(c, std::nullopt, facts);
  REQUIRE(w.size() == 1);
  CHECK(w[0].find("without CAP_SETUID") != std::string::npos);
  CHECK(w[0].find("(setuid 33: Operation not permitted)") != std::string::npos);

  facts.privileges.setuid = true;
  CHECK(preforkd::daemon::preflight(c, std::nullopt, facts).empty());

  facts = nobody_facts();
  c.programs[0].user.reset();
  c.programs[0].group = "www-data";
  w = preforkd::daemon::preflight(c, std::nullopt, facts);
  REQUIRE(w.size() == 1);
  CHECK(w[0].rfind("programs.web.group: www-data is gid 33", 0) == 0);
}

TEST_CASE("preflight: a port below ip_unprivileged_port_start without CAP_NET_BIND_SERVICE") {
  auto facts = nobody_facts();
  config::Config c = one_program();
  c.programs[0].listen[0].port = 80;
  c.programs[0].listen[0].text = "127.0.0.1:80";
  auto w = preforkd::daemon::preflight(c, std::nullopt, facts);
  REQUIRE(w.size() == 1);
  CHECK(w[0].rfind("programs.web.listen: 127.0.0.1:80: port 80 is below 1024", 0) == 0);
  CHECK(w[0].find("binding it will fail") != std::string::npos);

  facts.privileges.unprivileged_port_start = 80;  // sysctl lowered
  CHECK(preforkd::daemon::preflight(c, std::nullopt, facts).empty());
  facts.privileges.unprivileged_port_start = 1024;
  facts.privileges.net_bind_service = true;
  CHECK(preforkd::daemon::preflight(c, std::nullopt, facts).empty());

  facts.privileges.net_bind_service = false;
  c.programs[0].listen[0].port = 0;  // the kernel picks: never privileged
  CHECK(preforkd::daemon::preflight(c, std::nullopt, facts).empty());
}

TEST_CASE("preflight: unwritable control socket, pidfile and log folders, an unsafe runtime folder") {
  auto facts = nobody_facts();
  facts.cannot_create_in = [](const std::string& dir) {
    return dir == "/run/x" ? std::string() : "cannot create " + dir + " in /run: Permission denied";
  };
  facts.cannot_write_file = [](const std::string& file) { return file + ": Permission denied"; };
  config::Config c = one_program();
  c.supervisor.control_socket = "/run/x/preforkd.sock";
  c.supervisor.pidfile = "/run/preforkd/preforkd.pid";
  c.supervisor.log_file = "/var/log/preforkd.log";
  auto w = preforkd::daemon::preflight(c, std::nullopt, facts);
  CHECK(w.size() == 2);
  CHECK(any_has(w, "supervisor.pidfile: cannot create /run/preforkd in /run: Permission denied: writing the "
                   "pidfile /run/preforkd/preforkd.pid will fail"));
  CHECK(any_has(w, "supervisor.log_file: /var/log/preforkd.log: Permission denied: opening the log file will fail"));

  // --pidfile wins over supervisor.pidfile, and is named as such.
  w = preforkd::daemon::preflight(c, std::string("/srv/p.pid"), facts);
  CHECK(any_has(w, "--pidfile: cannot create /srv in /run"));
  CHECK_FALSE(any_has(w, "supervisor.pidfile"));

  c.supervisor.control_socket = "/tmp/preforkd-1000/preforkd.sock";
  facts.private_dir_problem = [](const std::string& dir) { return dir + " is owned by uid 0, not by uid 1000"; };
  w = preforkd::daemon::preflight(c, std::nullopt, facts);
  CHECK(any_has(w, "supervisor.control_socket: /tmp/preforkd-1000 is owned by uid 0"));
}

TEST_CASE("a failed spawn counts as a restart, the first try of a slot does not (issue #15)") {
  using namespace preforkd::core;
  SlotPolicy p;
  p.backoff = {100ms, 1000ms, 10000ms};
  p.stop_signal = SIGTERM;
  const TimePoint t0 = TimePoint{} + 1000h;
  Worker w;
  on_spawn_failed(w, p, t0, 0.0);  // the first try
  CHECK(w.restarts == 0);
  CHECK(w.streak == 1);
  on_spawn_failed(w, p, t0 + 1ms, 0.0);
  on_spawn_failed(w, p, t0 + 200ms, 0.0);
  CHECK(w.restarts == 2);
  CHECK(w.state == WorkerState::Backoff);
  CHECK(w.streak == 3);
  on_spawned(w, p, 100, 1, t0 + 600ms);  // it works at last: a restart too
  CHECK(w.restarts == 3);

  Worker up;
  on_spawned(up, p, 100, 1, t0);
  CHECK(up.restarts == 0);
  on_exited(up, p, Termination{true, SIGKILL}, t0 + 1ms, 0.0);
  on_spawn_failed(up, p, t0 + 2ms, 0.0);  // the respawn of a started slot fails
  CHECK(up.restarts == 1);
}
