// USR2: preforkd re-execs itself and takes over its workers, sockets, pipes
// and counters; a broken new binary is refused and the old one keeps going.
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <set>
#include <string>

#include "support/load.hpp"
#include "support/support.hpp"

using namespace preforkd::test;
using json = nlohmann::json;

namespace {


uint64_t requests(const Preforkd& d) {
  auto s = d.control({{"cmd", "stats"}});
  return s["programs"][0]["counters"].value("requests", uint64_t{0});
}

// A copy of build/bin/preforkd that the test can replace, as a package upgrade does.
std::string copy_binary(const TempDir& dir, const std::string& name) {
  std::string path = dir.file(name);
  std::ifstream in(bin("preforkd"), std::ios::binary);
  std::ofstream out(path + ".tmp", std::ios::binary);
  out << in.rdbuf();
  out.close();
  ::chmod((path + ".tmp").c_str(), 0755);
  ::rename((path + ".tmp").c_str(), path.c_str());
  return path;
}

}  // namespace

TEST_CASE("upgrade: USR2 under load keeps the pid, every worker, the sockets and the counters, no request fails") {
  TempDir dir;
  uint16_t port = free_port(), mport = free_port();
  std::string exe = copy_binary(dir, "preforkd");
  Preforkd d(dir,
             "supervisor:\n  metrics: \"127.0.0.1:" + std::to_string(mport) + "\"\nprograms:\n  web:\n    command: [" +
                 bin("preforkd-echo") + ", --http]\n    workers: 4\n    listen: [\"127.0.0.1:" + std::to_string(port) +
                 "\"]\n    ready: notify\n    reload: { settle: 50ms }\n",
             {}, true, {}, exe);
  REQUIRE(wait_until([&] { return pids_of(d.control({{"cmd", "status"}})).size() == 4; }));
  // One reload first: the generation, its text and its counters must survive too.
  d.rewrite("supervisor:\n  metrics: \"127.0.0.1:" + std::to_string(mport) + "\"\nprograms:\n  web:\n    command: [" +
            bin("preforkd-echo") + ", --http]\n    workers: 4\n    listen: [\"127.0.0.1:" + std::to_string(port) +
            "\"]\n    ready: notify\n    reload: { settle: 50ms }\n    environment: { X: \"1\" }\n");
  REQUIRE(d.control({{"cmd", "reload"}}, 60s)["ok"] == true);
  Load load(port, Load::Mode::Http, 16, Load::Options::paced());
  load.start();
  REQUIRE(load.wait_ok(300));
  auto before = d.control({{"cmd", "status"}});
  uint64_t served = requests(d);
  for (int round = 0; round < 2; ++round) {  // twice: the taken-over state hands over again
    size_t mark = d.log().size();
    ::kill(d.pid(), SIGUSR2);
    REQUIRE_MESSAGE(d.wait_for_log("took over 4 worker(s)", 20s, mark) != std::string::npos, d.log());
    CHECK(load.wait_ok(300));
    auto after = d.control({{"cmd", "status"}});
    CHECK(after["pid"] == d.pid());
    CHECK(after["generation"] == 2);
    CHECK(pids_of(after) == pids_of(before));
    uint64_t now = requests(d);
    CHECK_MESSAGE(now >= served, "requests went back from " << served << " to " << now);
    served = now;
  }
  CHECK(d.pid() == before["pid"].get<pid_t>());
  // Still supervising: a killed worker is replaced; metrics still answer.
  pid_t victim = *pids_of(before).begin();
  ::kill(victim, SIGKILL);
  CHECK(wait_until([&] {
    auto p = pids_of(d.control({{"cmd", "status"}}));
    return p.size() == 4 && p.count(victim) == 0;
  }));
  CHECK(connect_tcp(mport) >= 0);
  load.stop();
  auto c = load.counts();
  // The SIGKILLed worker may take the requests it was serving down with it;
  // nothing else may fail, and the upgrades none at all.
  CHECK_MESSAGE(c.refused == 0, c.describe());
  CHECK_MESSAGE(c.errors_total() <= 16, c.describe());
  CHECK(d.control({{"cmd", "metrics"}})["text"].get<std::string>().find("preforkd_reloads_total{result=\"ok\"} 1") !=
        std::string::npos);
  CHECK(d.stop() == 0);
}

TEST_CASE("upgrade: a new binary that fails its check is refused with the reason, the old one keeps serving") {
  TempDir dir;
  std::string exe = copy_binary(dir, "preforkd");
  Preforkd d(dir, "programs:\n  w:\n    command: " + bin("preforkd-test-worker") + "\n    workers: 2\n", {}, true, {},
             exe);
  REQUIRE(d.wait_workers(2));
  auto before = pids_of(d.control({{"cmd", "status"}}));
  // A package upgrade that installed something broken at the same path.
  std::string broken = dir.write("broken.tmp", "#!/bin/sh\necho 'cannot load libfoo.so' >&2\nexit 127\n");
  ::chmod(broken.c_str(), 0755);
  ::rename(broken.c_str(), exe.c_str());
  size_t mark = d.log().size();
  ::kill(d.pid(), SIGUSR2);
  CHECK(d.wait_for_log("upgrade refused", 20s, mark) != std::string::npos);
  CHECK(d.log().find("cannot load libfoo.so", mark) != std::string::npos);
  auto after = d.control({{"cmd", "status"}});
  CHECK(after["pid"] == d.pid());
  CHECK(pids_of(after) == before);
  // A file that is not there at all: the same.
  ::unlink(exe.c_str());
  mark = d.log().size();
  ::kill(d.pid(), SIGUSR2);
  CHECK(d.wait_for_log("upgrade refused", 20s, mark) != std::string::npos);
  CHECK(pids_of(d.control({{"cmd", "status"}})) == before);
  CHECK(d.stop() == 0);
}

TEST_CASE("upgrade: USR2 during a reload.guard hands the guard over: a failure after the upgrade still rolls back, "
          "and the rollback count goes on") {
  TempDir dir;
  std::string exe = copy_binary(dir, "preforkd");
  std::string addr = "127.0.0.1:" + std::to_string(free_port());
  auto yaml = [&](const std::string& args) {
    return "programs:\n  web:\n    command: [" + bin("preforkd-echo") + ", --http" + args + "]\n    workers: 2\n" +
           "    listen: [\"" + addr + "\"]\n    reload: { settle: 100ms }\n    backoff: { reset_after: 1h }\n";
  };
  Preforkd d(dir, yaml(""), {}, true, {}, exe);
  auto status = [&] { return program_of(d.control({{"cmd", "status"}}), "web"); };
  auto all_ready = [&](uint64_t generation) {
    auto p = status();
    if (p["workers"].size() != 2 || p["generation"] != generation) return false;
    for (const auto& w : p["workers"])
      if (w["state"] != "ready" || w.value("retiring", false)) return false;
    return true;
  };
  REQUIRE(wait_until([&] { return all_ready(1); }));
  // One rollback before the upgrade, so that its count has to survive it.
  d.rewrite(yaml(", --io-threads, 2"));
  REQUIRE(d.control({{"cmd", "reload"}}, 60s)["ok"] == true);
  REQUIRE(d.control({{"cmd", "rollback"}, {"program", "web"}}, 60s)["ok"] == true);
  d.rewrite(yaml(", --io-threads, 3"));
  REQUIRE(d.control({{"cmd", "reload"}}, 60s)["ok"] == true);
  REQUIRE(wait_until([&] { return all_ready(3); }));
  REQUIRE(status()["phase"] == "guarding");
  auto guarded = pids_of(d.control({{"cmd", "status"}}), "web");

  size_t mark = d.log().size();
  ::kill(d.pid(), SIGUSR2);
  REQUIRE_MESSAGE(d.wait_for_log("took over 2 worker(s)", 20s, mark) != std::string::npos, d.log());
  auto p = status();
  CHECK(p["phase"] == "guarding");
  CHECK(p["previous_generation"] == 1);
  CHECK(p["guard_left_s"].get<double>() > 0);
  CHECK(p["rollbacks"] == 1);
  CHECK(pids_of(d.control({{"cmd", "status"}}), "web") == guarded);

  // A generation 3 worker killed by someone else: rolled back, as before the upgrade.
  ::kill(*guarded.begin(), SIGKILL);
  INFO(d.log());
  CHECK(d.wait_for_log("rolling back to generation 1", 20s, mark) != std::string::npos);
  CHECK(wait_until([&] { return all_ready(1) && status()["phase"] == "running"; }, 20s));
  CHECK(status()["rollbacks"] == 2);
  CHECK(d.control({{"cmd", "metrics"}})["text"].get<std::string>().find(
            "preforkd_rollbacks_total{program=\"web\"} 2\n") != std::string::npos);
  CHECK(d.stop() == 0);
}

TEST_CASE("upgrade: USR2 hands NOTIFY_SOCKET over: workers started after it still become ready through sd_notify") {
  TempDir dir;
  std::string exe = copy_binary(dir, "preforkd");
  Preforkd d(dir, "programs:\n  lib:\n    command: " + bin("preforkd-sd-notify-worker") + "\n    ready: notify\n", {},
             true, {}, exe);
  auto ready = [&] {
    auto w = program_of(d.control({{"cmd", "status"}}), "lib")["workers"];
    return w.size() == 1 && w[0]["state"] == "ready" && w[0]["status"] == "serving";
  };
  REQUIRE(wait_until(ready));
  size_t mark = d.log().size();
  ::kill(d.pid(), SIGUSR2);
  REQUIRE_MESSAGE(d.wait_for_log("took over 1 worker(s)", 20s, mark) != std::string::npos, d.log());
  auto before = pids_of(d.control({{"cmd", "status"}}), "lib");
  ::kill(*before.begin(), SIGKILL);
  CHECK(wait_until([&] { return ready() && pids_of(d.control({{"cmd", "status"}}), "lib") != before; }));
  CHECK(d.log().find("NOTIFY_SOCKET", mark) == std::string::npos);  // neither "taken" nor "cannot"
  CHECK(d.stop() == 0);
}
