// core::diff — which keys replace workers, which apply in place, and what a
// reload refuses.
#include <doctest/doctest.h>

#include "config/config.hpp"
#include "core/config_diff.hpp"

using namespace preforkd;

namespace {

config::Program program(const std::string& name) {
  config::Program p;
  p.name = name;
  p.command = {"/bin/true"};
  p.executable = "/bin/true";
  p.workers = 4;
  return p;
}

config::Config with(std::vector<config::Program> programs) {
  config::Config c;
  c.path = "/etc/preforkd/preforkd.yaml";
  c.programs = std::move(programs);
  return c;
}

const core::ProgramDiff& of(const core::ConfigDiff& d, const std::string& name) {
  for (const auto& p : d.programs)
    if (p.name == name) return p;
  FAIL("no diff for " << name);
  static core::ProgramDiff none;
  return none;
}

}  // namespace

TEST_CASE("config diff: identical files change nothing") {
  auto d = core::diff(with({program("a")}), with({program("a")}));
  CHECK_FALSE(d.changes_anything());
  CHECK(of(d, "a").kind == core::ProgramDiff::Kind::Unchanged);
  CHECK(d.errors.empty());
}

TEST_CASE("config diff: added and removed programs") {
  auto d = core::diff(with({program("a"), program("b")}), with({program("b"), program("c")}));
  CHECK(of(d, "a").kind == core::ProgramDiff::Kind::Removed);
  CHECK(of(d, "c").kind == core::ProgramDiff::Kind::Added);
  CHECK(of(d, "b").kind == core::ProgramDiff::Kind::Unchanged);
  CHECK(d.programs.front().name == "a");  // removals first
}

TEST_CASE("config diff: what a worker is started with replaces workers") {
  auto a = program("a");
  auto check = [&](config::Program b, const std::string& key) {
    auto d = core::diff(with({a}), with({b}));
    const auto& pd = of(d, "a");
    CHECK_MESSAGE(pd.replaces_workers(), key);
    CHECK(pd.replace == std::vector<std::string>{key});
  };
  auto b = a;
  b.command = {"/bin/true", "-x"};
  check(b, "command");
  b = a;
  b.environment = {{"X", "1"}};
  check(b, "environment");
  b = a;
  b.user = "nobody";
  check(b, "user");
  b = a;
  b.directory = "/tmp";
  check(b, "directory");
  b = a;
  b.rlimits = {{7, "nofile", 100}};
  check(b, "rlimits");
  b = a;
  config::ListenAddress l;
  l.host = "127.0.0.1";
  l.port = 7000;
  b.listen = {l};
  check(b, "listen");
  b = a;
  b.watchdog_timeout = config::Duration{1000};
  check(b, "watchdog_timeout");
  b = a;
  b.stdout_target.kind = config::Output::Kind::Null;
  check(b, "stdout");
  b = a;
  b.notify_socket = false;  // NOTIFY_SOCKET is in the environment or not
  check(b, "notify_socket");
}

TEST_CASE("config diff: supervision keys and the worker count apply in place") {
  auto a = program("a");
  auto b = a;
  b.workers = 8;
  b.stop_timeout = config::Duration{1};
  b.backoff.min = config::Duration{5};
  b.max_requests = 100;
  b.backlog = 10;
  b.orphans = config::OrphanMode::Keep;
  b.reload.guard = config::Duration{0};
  auto d = core::diff(with({a}), with({b}));
  const auto& pd = of(d, "a");
  CHECK_FALSE(pd.replaces_workers());
  CHECK(pd.in_place ==
        std::vector<std::string>{"workers", "backlog", "backoff", "reload", "stop_timeout", "orphans", "max_requests"});
  CHECK(pd.workers_before == 4);
  CHECK(pd.workers_after == 8);
}

TEST_CASE("config diff: reuseport cannot change - the control socket and metrics keep their running value") {
  auto a = program("a");
  auto b = a;
  b.reuseport = true;
  auto ca = with({a}), cb = with({b});
  cb.supervisor.control_socket = "/run/other.sock";
  cb.supervisor.shutdown_timeout = config::Duration{5};
  auto d = core::diff(ca, cb);
  REQUIRE(d.errors.size() == 1);
  CHECK(d.errors[0].find("programs.a.reuseport") == 0);
  CHECK(d.supervisor_kept == std::vector<std::string>{"control_socket"});
  CHECK(d.supervisor_in_place == std::vector<std::string>{"shutdown_timeout"});
}

TEST_CASE("config diff: batch size is a number or a percentage rounded up, at least 1") {
  config::ReloadPolicy r;
  r.batch = 3;
  CHECK(core::batch_size(r, 10) == 3);
  CHECK(core::batch_size(r, 2) == 2);
  r.batch = 25;
  r.batch_percent = true;
  CHECK(core::batch_size(r, 100) == 25);
  CHECK(core::batch_size(r, 10) == 3);
  CHECK(core::batch_size(r, 1) == 1);
  r.batch = 1;
  CHECK(core::batch_size(r, 3) == 1);
}

TEST_CASE("config_diff: a change of min/max or of an autoscale tunable applies in place") {
  config::Program a = program("w");
  a.workers = 2;
  a.autoscale = config::Autoscale{2, 8};
  config::Program b = a;
  b.autoscale->max = 12;
  auto d = core::diff(with({a}), with({b}));
  CHECK(of(d, "w").replace.empty());
  CHECK(of(d, "w").in_place == std::vector<std::string>{"workers"});
  b = a;
  b.autoscale->cooldown = config::Duration{1000};
  CHECK(of(core::diff(with({a}), with({b})), "w").in_place == std::vector<std::string>{"workers"});
  b = a;
  b.autoscale->target_utilization = 30;
  CHECK(of(core::diff(with({a}), with({b})), "w").in_place == std::vector<std::string>{"workers"});
}
