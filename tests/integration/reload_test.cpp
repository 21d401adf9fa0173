// Reload (SIGHUP and `reload` on the control socket), end to end with real
// workers, real sockets and a load generator that checks every response.
#include <doctest/doctest.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <thread>

#include <map>
#include <set>
#include <string>

#include "support/load.hpp"
#include "support/support.hpp"

using namespace preforkd::test;
using json = nlohmann::json;

namespace {


// Every worker of `program` is ready, none retiring, and there are `n`.
bool settled(const Preforkd& d, const std::string& program, size_t n) {
  auto p = program_of(d.control({{"cmd", "status"}}), program);
  if (p.is_null() || p["workers"].size() != n) return false;
  for (const auto& w : p["workers"])
    if (w["state"] != "ready" || w.value("retiring", false)) return false;
  return true;
}

uint64_t counter(const Preforkd& d, const std::string& program, const std::string& name) {
  auto p = program_of(d.control({{"cmd", "stats"}}), program);
  return p.is_null() ? 0 : p["counters"].value(name, uint64_t{0});
}

std::string socket_of(pid_t pid, int fd) {
  char buf[128];
  std::string link = "/proc/" + std::to_string(pid) + "/fd/" + std::to_string(fd);
  ssize_t n = ::readlink(link.c_str(), buf, sizeof buf - 1);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
}

std::string echo_program(const std::string& name, int workers, const std::string& listen,
                         const std::string& extra_args = "", const std::string& more = "") {
  return "  " + name + ":\n    command: [" + bin("preforkd-echo") + ", --http" + extra_args + "]\n" +
         "    workers: " + std::to_string(workers) + "\n    listen: [\"" + listen + "\"]\n" +
         "    ready: notify\n    reload: { batch: 2, settle: 50ms }\n" + more;
}

}  // namespace

TEST_CASE("reload: 20 reloads that replace every worker, scaling 4->16->2, a program added and removed, under "
          "load: no refused, reset or failed request, counters never go back") {
  TempDir dir;
  uint16_t port = free_port();
  std::string addr = "127.0.0.1:" + std::to_string(port);
  Preforkd d(dir, "programs:\n" + echo_program("web", 4, addr));
  REQUIRE(wait_until([&] { return settled(d, "web", 4); }));
  Load load(port, Load::Mode::Http, 16, Load::Options::paced());
  load.start();
  REQUIRE(load.wait_ok(200));
  std::string first_socket = socket_of(*pids_of(d.control({{"cmd", "status"}}), "web").begin(), 3);
  REQUIRE(first_socket.rfind("socket:", 0) == 0);
  uint64_t requests = 0;
  auto reload = [&](const std::string& yaml, const std::string& what) {
    d.rewrite(yaml);
    auto before = pids_of(d.control({{"cmd", "status"}}), "web");
    auto r = d.control({{"cmd", "reload"}}, 120s);
    CHECK_MESSAGE(r["ok"] == true, what << ": " << r.dump());
    uint64_t now = counter(d, "web", "requests");
    CHECK_MESSAGE(now >= requests, what << ": requests went back from " << requests << " to " << now);
    requests = now;
    CHECK_MESSAGE(load.wait_ok(50), what << ": " << load.describe());
    return before;
  };
  for (int i = 0; i < 20; ++i) {
    std::string what = "reload " + std::to_string(i);
    auto before = reload("programs:\n" + echo_program("web", 4, addr, ", --io-threads, " + std::to_string(1 + i % 2),
                                                      "    environment: { ROUND: \"" + std::to_string(i) + "\" }\n"),
                         what);
    auto after = pids_of(d.control({{"cmd", "status"}}), "web");
    CHECK(after.size() == 4);
    for (pid_t p : before) CHECK_MESSAGE(after.count(p) == 0, what << ": pid " << p << " was not replaced");
    // The listening socket is the very same one.
    CHECK(socket_of(*after.begin(), 3) == first_socket);
  }
  reload("programs:\n" + echo_program("web", 16, addr), "scale to 16");
  CHECK(settled(d, "web", 16));
  reload("programs:\n" + echo_program("web", 2, addr), "scale to 2");
  CHECK(settled(d, "web", 2));
  uint16_t port2 = free_port();
  reload("programs:\n" + echo_program("web", 2, addr) + echo_program("extra", 2, "127.0.0.1:" + std::to_string(port2)),
         "add a program");
  CHECK(settled(d, "extra", 2));
  CHECK(connect_tcp(port2) >= 0);
  reload("programs:\n" + echo_program("web", 2, addr), "remove a program");
  CHECK(program_of(d.control({{"cmd", "status"}}), "extra").is_null());
  CHECK(wait_until([&] { return connect_tcp(port2, 200ms) < 0; }));  // its socket is closed
  load.stop();
  auto c = load.counts();
  CHECK_MESSAGE(c.errors_total() == 0, c.describe());
  CHECK(c.ok > 0);
  auto status = d.control({{"cmd", "status"}});
  CHECK(status["generation"] == 25);
  CHECK(d.control({{"cmd", "metrics"}})["text"].get<std::string>().find("preforkd_reloads_total{result=\"ok\"} 24") !=
        std::string::npos);
  CHECK(d.stop() == 0);
}

TEST_CASE("reload: an invalid file leaves every worker alone, counts a failed reload and returns the errors") {
  TempDir dir;
  std::string yaml = "programs:\n  w:\n    command: " + bin("preforkd-test-worker") + "\n    workers: 3\n";
  Preforkd d(dir, yaml);
  REQUIRE(d.wait_workers(3));
  auto before = pids_of(d.control({{"cmd", "status"}}), "w");
  d.rewrite("programs:\n  w:\n    command: " + bin("preforkd-test-worker") + "\n    wrokers: 3\n");
  auto r = d.control({{"cmd", "reload"}});
  CHECK(r["ok"] == false);
  std::string err = r["error"];
  CHECK_MESSAGE(err.find("preforkd.yaml:") != std::string::npos, err);  // file:line:column
  CHECK_MESSAGE(err.find("wrokers") != std::string::npos, err);
  CHECK_MESSAGE(err.find("did you mean") != std::string::npos, err);
  // The same by SIGHUP: logged, counted, nothing changes.
  size_t mark = d.log().size();
  ::kill(d.pid(), SIGHUP);
  CHECK(d.wait_for_log("reload failed", 10s, mark) != std::string::npos);
  auto status = d.control({{"cmd", "status"}});
  CHECK(pids_of(status, "w") == before);
  CHECK(status["generation"] == 1);
  CHECK(d.control({{"cmd", "metrics"}})["text"].get<std::string>().find(
            "preforkd_reloads_total{result=\"failed\"} 2") != std::string::npos);
  // A port that cannot be bound (someone else listens on it) fails the
  // reload the same way, before anything stops.
  uint16_t busy = 0;
  int other = listen_loopback(busy, 1);
  std::string taken = "127.0.0.1:" + std::to_string(busy);
  d.rewrite(yaml + "    listen: [\"" + taken + "\"]\n");
  r = d.control({{"cmd", "reload"}});
  CHECK(r["ok"] == false);
  CHECK_MESSAGE(r["error"].get<std::string>().find(taken) != std::string::npos, r.dump());
  CHECK(pids_of(d.control({{"cmd", "status"}}), "w") == before);
  ::close(other);
  CHECK(d.stop() == 0);
}

TEST_CASE("reload: a new command that crashes at start stops at the canary, the old workers keep serving and "
          "stay on the old configuration") {
  TempDir dir;
  uint16_t port = free_port();
  std::string addr = "127.0.0.1:" + std::to_string(port);
  Preforkd d(dir, "programs:\n" + echo_program("web", 4, addr));
  REQUIRE(wait_until([&] { return settled(d, "web", 4); }));
  auto before = pids_of(d.control({{"cmd", "status"}}), "web");
  Load load(port, Load::Mode::Http, 8, Load::Options::paced());
  load.start();
  REQUIRE(load.wait_ok(100));
  d.rewrite("programs:\n  web:\n    command: [/bin/sh, -c, \"exit 3\"]\n    workers: 4\n    listen: [\"" + addr +
            "\"]\n    ready: notify\n    reload: { batch: 2, settle: 50ms }\n    backoff: { min: 10ms }\n");
  auto r = d.control({{"cmd", "reload"}}, 60s);
  CHECK(r["ok"] == false);
  CHECK_MESSAGE(r["error"].get<std::string>().find("web[0] failed to start") != std::string::npos, r.dump());
  CHECK(load.wait_ok(100));
  auto status = d.control({{"cmd", "status"}});
  CHECK(pids_of(status, "web") == before);
  // Only the canary was tried.
  std::string log = d.log();
  size_t recycles = 0;
  for (size_t at = log.find("recycling (reload)"); at != std::string::npos; at = log.find("recycling (reload)", at + 1))
    ++recycles;
  CHECK_MESSAGE(recycles == 1, log);
  // A respawn of an old worker uses the old, working command.
  ::kill(*before.begin(), SIGKILL);
  CHECK_MESSAGE(wait_until([&] {
                  auto now = pids_of(d.control({{"cmd", "status"}}), "web");
                  return now.size() == 4 && now.count(*before.begin()) == 0 && settled(d, "web", 4);
                }),
                d.control({{"cmd", "status"}}).dump(), "\n", d.log());
  load.stop();
  auto c = load.counts();
  // The SIGKILLed worker may take its own connections down with it: only
  // those clients can see an error.
  CHECK_MESSAGE(c.refused == 0, c.describe());
  CHECK(d.control({{"cmd", "metrics"}})["text"].get<std::string>().find(
            "preforkd_reloads_total{result=\"failed\"} 1") != std::string::npos);
  CHECK(d.stop() == 0);
}

TEST_CASE("reload: a burst of 100 HUPs ends in the final configuration, leaking no worker and no fd") {
  TempDir dir;
  std::string head = "programs:\n  w:\n    command: [" + bin("preforkd-test-worker") + ", --serve]\n";
  Preforkd d(dir, head + "    workers: 2\n    listen: [\"127.0.0.1:0\"]\n    reload: { settle: 10ms }\n");
  REQUIRE(d.wait_workers(2));
  int fds_before = count_fds(d.pid());
  for (int i = 0; i < 100; ++i) {
    d.rewrite(head + "    workers: " + std::to_string(1 + i % 3) + "\n    listen: [\"127.0.0.1:0\"]\n" +
              "    environment: { N: \"" + std::to_string(i) + "\" }\n    reload: { settle: 10ms }\n");
    ::kill(d.pid(), SIGHUP);
  }
  // One more change and a reload over the control socket, answered when
  // everything queued before it has been applied, proves the end state.
  d.rewrite(head + "    workers: 1\n    listen: [\"127.0.0.1:0\"]\n    environment: { N: \"final\" }\n" +
            "    reload: { settle: 10ms }\n");
  auto r = d.control({{"cmd", "reload"}}, 60s);
  CHECK_MESSAGE(r["ok"] == true, r.dump());
  CHECK(wait_until([&] { return settled(d, "w", 1) && d.wait_workers(1, 100ms); }));
  auto status = d.control({{"cmd", "status"}});
  json program = program_of(status, "w");  // kept: the loop below iterates into it
  // The workers run the final file: they were started by the reload that
  // first read it (the last one that replaced workers). A coalesced reload
  // may still have read the same file again afterwards: it changed nothing
  // for them, only the generation number.
  std::string log = d.log();
  const std::string replacing = "preforkd: reload, generation ";
  size_t last = std::string::npos;
  for (size_t at = log.find(replacing); at != std::string::npos; at = log.find(replacing, at + 1))
    if (log.compare(log.find(':', at + replacing.size()), 14, ": w: replacing") == 0) last = at;
  REQUIRE(last != std::string::npos);
  int final_generation = std::stoi(log.substr(last + replacing.size()));
  for (const auto& w : program["workers"]) {
    CHECK(w["generation"].get<int>() >= final_generation);
    CHECK(w["generation"].get<int>() <= status["generation"].get<int>());
  }
  CHECK(program["generation"] == status["generation"]);
  CHECK(status["generation"].get<int>() < 100);  // coalesced, not one reload per signal
  CHECK(wait_until([&] { return count_fds(d.pid()) <= fds_before; }));
  CHECK(d.stop() == 0);
}

TEST_CASE("reload: PREFORKD_GENERATION grows, in-place keys restart nothing, a new socket is bound, a removed one "
          "closes after its workers") {
  TempDir dir;
  std::string dump = dir.file("state-$PREFORKD_SLOT-$PREFORKD_GENERATION.json");
  uint16_t a = free_port(), b = free_port();
  auto yaml = [&](const std::string& listen, const std::string& more) {
    return "programs:\n  w:\n    command: [/bin/sh, -c, \"exec " + bin("preforkd-test-worker") + " --dump-state " +
           dump + " --serve\"]\n    workers: 1\n    listen: [" + listen + "]\n" + more;
  };
  std::string la = "\"127.0.0.1:" + std::to_string(a) + "\"", lb = "\"127.0.0.1:" + std::to_string(b) + "\"";
  Preforkd d(dir, yaml(la, ""));
  REQUIRE(wait_until([&] { return file_exists(dir.file("state-0-1.json")); }));
  CHECK(read_json(dir.file("state-0-1.json"))["env"]["PREFORKD_GENERATION"] == "1");
  auto before = pids_of(d.control({{"cmd", "status"}}), "w");
  // In place: stop_timeout and backoff change, nobody restarts.
  d.rewrite(yaml(la, "    stop_timeout: 3s\n    backoff: { min: 50ms }\n"));
  auto r = d.control({{"cmd", "reload"}});
  CHECK(r["ok"] == true);
  CHECK_MESSAGE(r["message"].get<std::string>().find("stop_timeout") != std::string::npos, r.dump());
  CHECK(pids_of(d.control({{"cmd", "status"}}), "w") == before);
  // A second socket: bound, passed to the new worker (generation 3) as fd 4.
  d.rewrite(yaml(la + ", " + lb, ""));
  r = d.control({{"cmd", "reload"}}, 60s);
  CHECK_MESSAGE(r["ok"] == true, r.dump() << d.log());
  REQUIRE(wait_until([&] { return file_exists(dir.file("state-0-3.json")); }));
  auto env = read_json(dir.file("state-0-3.json"))["env"];
  CHECK(env["PREFORKD_GENERATION"] == "3");
  CHECK(env["LISTEN_FDS"] == "2");
  CHECK(connect_tcp(b) >= 0);
  // The first socket dropped: it closes once the worker holding it is gone.
  d.rewrite(yaml(lb, ""));
  r = d.control({{"cmd", "reload"}}, 60s);
  CHECK(r["ok"] == true);
  CHECK(wait_until([&] { return connect_tcp(a, 200ms) < 0; }));
  CHECK(connect_tcp(b) >= 0);
  CHECK(d.stop() == 0);
}

TEST_CASE("reload: reuseport, scaling 8->2 under load drops no queued connection") {
  TempDir dir;
  uint16_t port = free_port();
  auto yaml = [&](int n) {
    return "programs:\n  web:\n    command: [" + bin("preforkd-echo") + ", --http]\n    workers: " + std::to_string(n) +
           "\n    listen: [\"127.0.0.1:" + std::to_string(port) + "\"]\n    reuseport: true\n    ready: notify\n";
  };
  Preforkd d(dir, yaml(8));
  REQUIRE(wait_until([&] { return settled(d, "web", 8); }));
  Load load(port, Load::Mode::HttpShort, 16, Load::Options::paced());
  load.start();
  REQUIRE(load.wait_ok(300));
  d.rewrite(yaml(2));
  auto r = d.control({{"cmd", "reload"}}, 60s);
  CHECK(r["ok"] == true);
  CHECK(settled(d, "web", 2));
  CHECK(load.wait_ok(300));
  load.stop();
  auto c = load.counts();
  CHECK_MESSAGE(c.errors_total() == 0, c.describe());
  CHECK(d.stop() == 0);
}

TEST_CASE("reload: requests during a reload are queued and coalesced, restart waits for none of it") {
  TempDir dir;
  std::string head = "programs:\n  w:\n    command: " + bin("preforkd-test-worker") + "\n    workers: 2\n";
  Preforkd d(dir, head + "    reload: { settle: 1s }\n");
  REQUIRE_MESSAGE(d.wait_workers(2), d.log());
  d.rewrite(head + "    environment: { X: \"1\" }\n    reload: { settle: 1s }\n");
  json r1, r2, r3;
  std::thread t1([&] { r1 = d.control({{"cmd", "reload"}}, 60s); });
  REQUIRE(d.wait_for_log("reload, generation 2") != std::string::npos);
  // Two more while the first is rolling out: one more reload serves both.
  std::thread t2([&] { r2 = d.control({{"cmd", "reload"}}, 60s); });
  std::thread t3([&] { r3 = d.control({{"cmd", "reload"}}, 60s); });
  CHECK(d.wait_for_log("reload queued") != std::string::npos);
  auto busy = d.control({{"cmd", "restart"}, {"program", "w"}});
  CHECK(busy["ok"] == false);
  t1.join();
  t2.join();
  t3.join();
  CHECK_MESSAGE(r1["ok"] == true, r1.dump() << d.log());
  CHECK(r2["ok"] == true);
  CHECK(r3["ok"] == true);
  CHECK(r2["message"] == r3["message"]);
  CHECK(d.control({{"cmd", "status"}})["generation"] == 3);
  CHECK(d.stop() == 0);
}
