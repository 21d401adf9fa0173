// The control socket end to end (raw JSON lines; preforkctl has its own
// tests): replies, operations that answer when finished, bad requests, peers.
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <set>
#include <thread>

#include "support/support.hpp"

using namespace preforkd::test;
using nlohmann::json;

namespace {

std::string worker_program(const std::string& name, int workers, const std::string& args = "",
                           const std::string& extra = "") {
  return "  " + name + ":\n    command: [" + bin("preforkd-test-worker") + (args.empty() ? "" : ", " + args) +
         "]\n    workers: " + std::to_string(workers) + "\n" + extra;
}


}  // namespace

TEST_CASE("control: status, stats and version have SPEC's shapes") {
  TempDir dir;
  Preforkd d(dir, "programs:\n" + worker_program("w", 2, "--notify, \"STATUS=serving\", --notify, COUNTER_hits=3, --notify, GAUGE_conns=2"));
  REQUIRE(d.wait_workers(2));
  json st;
  REQUIRE(wait_until([&] {
    st = d.control({{"cmd", "status"}});
    auto w = program_of(st, "w");
    return w.contains("workers") && w["workers"].size() == 2 && w["workers"][0]["status"] == "serving" &&
           w["workers"][1]["status"] == "serving";
  }));
  CHECK(st["ok"] == true);
  CHECK(st["pid"] == d.pid());
  CHECK(st["generation"] == 1);
  CHECK(st["version"].is_string());
  auto w = program_of(st, "w");
  CHECK(w["state"] == "running");
  CHECK(w["workers_wanted"] == 2);
  CHECK(w["generation"] == 1);  // the configuration the program runs
  CHECK(w["phase"] == "running");
  CHECK(w["rollbacks"] == 0);
  CHECK_FALSE(w.contains("guard_left_s"));
  CHECK_FALSE(w.contains("previous_generation"));
  for (const auto& wk : w["workers"]) {
    CHECK(wk["state"] == "ready");
    CHECK(wk["generation"] == 1);
    CHECK(wk["uptime_s"].get<double>() >= 0);
    CHECK(wk["restarts"] == 0);
  }
  json stats;
  REQUIRE(wait_until([&] {
    stats = d.control({{"cmd", "stats"}});
    // Each line arrives on its own: wait for the last one (the gauge) of both workers.
    auto p = program_of(stats, "w");
    return p["counters"].value("hits", 0) == 6 && p["gauges"].value("conns", 0) == 4;
  }));
  auto ps = program_of(stats, "w");
  CHECK(ps["gauges"]["conns"] == 4);
  CHECK(ps["notify_errors"] == 0);
  CHECK(ps["exits"] == json{{"exit", 0}, {"signal", 0}, {"watchdog", 0}, {"start_timeout", 0}, {"recycled", 0}});
  CHECK(ps["workers"].size() == 2);
  CHECK(ps["workers"][0]["counters"]["hits"] == 3);
  auto v = d.control({{"cmd", "version"}});
  CHECK(v["ok"] == true);
  CHECK(v["pid"] == d.pid());
  CHECK(d.stop() == 0);
}

TEST_CASE("notify: counters are summed over workers and never go back across 50 kill -9 respawns") {
  TempDir dir;
  Preforkd d(dir, "programs:\n" + worker_program("w", 4, "--notify, COUNTER_hits=5",
                                                 "    backoff: { min: 10ms, max: 20ms, reset_after: 1ms }\n"));
  REQUIRE(d.wait_workers(4));
  auto hits = [&] { return program_of(d.control({{"cmd", "stats"}}), "w")["counters"].value("hits", uint64_t{0}); };
  REQUIRE(wait_until([&] { return hits() == 20; }));
  uint64_t last = 20;
  for (int i = 0; i < 50; ++i) {
    auto pids = pids_of(d.control({{"cmd", "status"}}), "w");
    REQUIRE(pids.size() == 4);
    pid_t victim = *std::next(pids.begin(), i % 4);
    ::kill(victim, SIGKILL);
    REQUIRE(wait_until([&] {
      auto now = pids_of(d.control({{"cmd", "status"}}), "w");
      return now.size() == 4 && now.count(victim) == 0;
    }));
    uint64_t h = hits();
    CHECK(h >= last);  // never backwards, even while a worker is dead
    last = h;
    // The replacement has reported too before the next kill: 5 per worker ever started.
    REQUIRE(wait_until([&] { return hits() == 5u * (4 + static_cast<unsigned>(i) + 1); }));
  }
  // Every worker that ever ran reported 5: 4 + 50 of them.
  CHECK(wait_until([&] { return hits() == 5 * 54; }));
  auto ps = program_of(d.control({{"cmd", "stats"}}), "w");
  CHECK(ps["exits"]["signal"] == 50);
  CHECK(d.stop() == 0);
}

TEST_CASE("control: scale, stop and start answer when the operation has finished") {
  TempDir dir;
  Preforkd d(dir, "programs:\n" + worker_program("w", 2));
  REQUIRE(d.wait_workers(2));
  auto r = d.control({{"cmd", "scale"}, {"program", "w"}, {"workers", 5}});
  CHECK(r["ok"] == true);
  CHECK(d.workers().size() == 5);  // already there when the reply came
  r = d.control({{"cmd", "scale"}, {"program", "w"}, {"workers", 1}});
  CHECK(r["ok"] == true);
  CHECK(d.workers().size() == 1);
  r = d.control({{"cmd", "stop"}, {"program", "w"}});
  CHECK(r["ok"] == true);
  CHECK(d.workers().empty());
  CHECK(program_of(d.control({{"cmd", "status"}}), "w")["state"] == "stopped");
  r = d.control({{"cmd", "start"}, {"program", "w"}});
  CHECK(r["ok"] == true);
  CHECK(d.wait_workers(1));
  r = d.control({{"cmd", "signal"}, {"program", "w"}, {"signal", "TERM"}});
  CHECK(r["ok"] == true);
  CHECK(r["message"] == "sent SIGTERM to 1 worker(s)");
  // Its handler (exit 0) may not be installed yet: a worker's spawn returns
  // once it has exec'd, and `start` answers then; before that, SIGTERM's
  // default action ends it. Either way the TERM reached it.
  CHECK_MESSAGE(wait_until([&] {
    std::string log = d.log();
    return log.find("exited with status 0") != std::string::npos || log.find("killed by signal 15") != std::string::npos;
  }), d.log());
  CHECK(d.wait_workers(1));
  CHECK(d.control({{"cmd", "shutdown"}})["ok"] == true);
  auto st = d.process().wait(20s);
  REQUIRE(st);
  CHECK(WEXITSTATUS(*st) == 0);
}

TEST_CASE("control: a rolling restart replaces every worker under load without a refused connection") {
  TempDir dir;
  Preforkd d(dir, "programs:\n  echo:\n    command: " + bin("preforkd-echo") +
                      "\n    workers: 3\n    listen: [\"127.0.0.1:0\"]\n    reload: { settle: 100ms }\n");
  REQUIRE(d.wait_workers(3));
  uint16_t port = d.port();
  auto before = pids_of(d.control({{"cmd", "status"}}), "echo");
  std::atomic<bool> stop{false};
  std::atomic<int> ok{0}, refused{0}, failed{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < 4; ++c)
    clients.emplace_back([&] {
      while (!stop) {
        int fd = connect_tcp(port);
        if (fd < 0) {
          ++refused;
          continue;
        }
        ::close(fd);
        echo_roundtrip(port, "x\n") ? ++ok : ++failed;
      }
    });
  auto r = d.control({{"cmd", "restart"}, {"program", "echo"}}, 60s);
  stop = true;
  for (auto& t : clients) t.join();
  CHECK(r["ok"] == true);
  CHECK(r["message"] == "restarted 3 worker(s) of echo");
  auto after = pids_of(d.control({{"cmd", "status"}}), "echo");
  CHECK(after.size() == 3);
  for (pid_t p : before) CHECK(after.count(p) == 0);
  CHECK(refused == 0);
  CHECK(failed == 0);
  CHECK(ok > 0);
  CHECK(d.stop() == 0);
}

TEST_CASE("control: a restart whose new worker fails is aborted and the old workers keep serving") {
  TempDir dir;
  std::string flag = dir.file("broken");
  // ready: notify, so that "ready" means the worker said so, whatever the machine's load.
  Preforkd d(dir, "programs:\n  w:\n    command: [/bin/sh, -c, \"test -e " + flag + " && exit 1; exec " +
                      bin("preforkd-test-worker") + " --notify READY=1\"]\n    workers: 2\n    ready: notify\n"
                      "    backoff: { min: 50ms, max: 100ms, reset_after: 1h }\n");
  REQUIRE(wait_until([&] {
    auto w = program_of(d.control({{"cmd", "status"}}), "w")["workers"];
    return w.size() == 2 && w[0]["state"] == "ready" && w[1]["state"] == "ready";
  }));
  auto before = pids_of(d.control({{"cmd", "status"}}), "w");
  REQUIRE(before.size() == 2);
  { std::FILE* f = std::fopen(flag.c_str(), "w"); std::fclose(f); }
  auto r = d.control({{"cmd", "restart"}, {"program", "w"}}, 60s);
  CHECK(r["ok"] == false);
  CHECK(r["error"].get<std::string>().find("aborted") != std::string::npos);
  auto after = pids_of(d.control({{"cmd", "status"}}), "w");
  CHECK(after == before);
  CHECK(d.stop() == 0);
}

TEST_CASE("control: bad requests get an error reply and the loop serves everyone else") {
  TempDir dir;
  Preforkd d(dir, "programs:\n" + worker_program("w", 1));
  auto ask = [&](const std::string& line) {
    auto j = json::parse(unix_request(d.control_socket(), line), nullptr, false);
    return j.is_discarded() ? json{} : j;
  };
  CHECK(ask("not json")["error"] == "malformed JSON");
  CHECK(ask("[1,2]")["error"] == "a request is a JSON object");
  CHECK(ask(R"({"cmd":"fly"})")["error"] == "unknown command `fly`");
  CHECK(ask(R"({"cmd":42})")["ok"] == false);
  CHECK(ask(R"({"cmd":"scale","program":"w","workers":"many"})")["ok"] == false);
  CHECK(ask(R"({"cmd":"scale","program":"w","workers":-1})")["ok"] == false);
  CHECK(ask(R"({"cmd":"stop","program":"nope"})")["error"] == "unknown program `nope`");
  CHECK(ask(R"({"cmd":"signal","program":"w","signal":"NOPE"})")["ok"] == false);
  CHECK(ask(std::string(70000, 'x'))["ok"] == false);  // over 64 KiB
  // A client that connects and never sends, and one that sends and never reads:
  int idle = socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un sun{};
  sun.sun_family = AF_UNIX;
  std::snprintf(sun.sun_path, sizeof sun.sun_path, "%s", d.control_socket().c_str());
  REQUIRE(connect(idle, reinterpret_cast<sockaddr*>(&sun), sizeof sun) == 0);
  int greedy = socket(AF_UNIX, SOCK_STREAM, 0);
  REQUIRE(connect(greedy, reinterpret_cast<sockaddr*>(&sun), sizeof sun) == 0);
  std::string many;
  for (int i = 0; i < 16; ++i) many += R"({"cmd":"status"})" "\n";
  send(greedy, many.data(), many.size(), MSG_NOSIGNAL);
  CHECK(ask(R"({"cmd":"version"})")["ok"] == true);  // everyone else is still served
  ::close(idle);
  ::close(greedy);
  CHECK(d.stop() == 0);
}

TEST_CASE("control: a peer that is not root, the owner or in control_group gets permission denied") {
  if (geteuid() != 0) {
    MESSAGE("skipped: needs root to act as another user");
    return;
  }
  TempDir dir;
  chmod(dir.path().c_str(), 0755);
  Preforkd d(dir, "programs:\n" + worker_program("w", 1));
  // The file mode (0660) already keeps others out; open it up to reach the credential check.
  REQUIRE(chmod(d.control_socket().c_str(), 0666) == 0);
  TempDir out;
  chmod(out.path().c_str(), 0777);
  Process nobody({"/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", "-c",
                  "import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); "
                  "s.sendall(b'{\"cmd\":\"status\"}\\n'); print(s.makefile().readline().strip())",
                  d.control_socket()},
                 out.file("log"));
  REQUIRE(nobody.wait(10s));
  CHECK_MESSAGE(nobody.log().find(R"({"ok":false,"error":"permission denied"})") != std::string::npos, nobody.log());
  CHECK(d.wait_for_log("control: refused uid 65534") != std::string::npos);
  CHECK(d.control({{"cmd", "version"}})["ok"] == true);
  CHECK(d.stop() == 0);
}

TEST_CASE("control: control_group is checked against the connecting process's own groups, not the group database") {
  if (geteuid() != 0) {
    MESSAGE("skipped: needs root to act as another user");
    return;
  }
  // gid 4242 has no entry in /etc/group, and nobody (65534) is a member of
  // nothing: only the groups the connecting process runs with can let it in.
  TempDir dir;
  chmod(dir.path().c_str(), 0755);
  Preforkd d(dir, "supervisor:\n  control_group: \"4242\"\nprograms:\n" + worker_program("w", 1));
  struct stat st {};
  REQUIRE(stat(d.control_socket().c_str(), &st) == 0);
  CHECK(st.st_gid == 4242);
  CHECK((st.st_mode & 0777) == 0660);
  auto ask_as = [&](const std::vector<std::string>& ids) {
    TempDir out;
    std::vector<std::string> argv = {"/usr/bin/setpriv", "--reuid=65534"};
    argv.insert(argv.end(), ids.begin(), ids.end());
    argv.insert(argv.end(), {"/usr/bin/python3", "-c",
                             "import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); "
                             "s.sendall(b'{\"cmd\":\"version\"}\\n'); print(s.makefile().readline().strip())",
                             d.control_socket()});
    Process p(argv, out.file("log"));
    REQUIRE(p.wait(10s));
    return p.log();
  };
  std::string supplementary = ask_as({"--regid=65534", "--groups=4242"});
  CHECK_MESSAGE(supplementary.find(R"("ok":true)") != std::string::npos, supplementary);
  std::string primary = ask_as({"--regid=4242", "--clear-groups"});
  CHECK_MESSAGE(primary.find(R"("ok":true)") != std::string::npos, primary);
  // Without the group: the file mode keeps it out; open it up to reach the credential check.
  REQUIRE(chmod(d.control_socket().c_str(), 0666) == 0);
  std::string outsider = ask_as({"--regid=65534", "--clear-groups"});
  CHECK_MESSAGE(outsider.find(R"({"ok":false,"error":"permission denied"})") != std::string::npos, outsider);
  CHECK(d.log().find("control: refused uid 65534") != std::string::npos);
  CHECK(d.control({{"cmd", "version"}})["ok"] == true);
  CHECK(d.stop() == 0);
}

TEST_CASE("control: a second preforkd does not steal a live control socket") {
  TempDir dir;
  Preforkd d(dir, "programs:\n" + worker_program("w", 1));
  TempDir dir2;
  auto [code, out] = run({bin("preforkd"), "-c",
                          dir2.write("p.yaml", "supervisor:\n  control_socket: " + d.control_socket() +
                                                   "\nprograms:\n" + worker_program("w", 1))});
  CHECK(code == 1);
  CHECK(out.find("is in use: another preforkd is running") != std::string::npos);
  CHECK(d.control({{"cmd", "version"}})["ok"] == true);
  CHECK(d.stop() == 0);
}
