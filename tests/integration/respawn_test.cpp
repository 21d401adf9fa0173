// Reaping and respawning: SIGCHLD + waitpid in a loop, restart policies,
// backoff, and that the supervisor leaks nothing over many cycles.
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <set>
#include <sys/stat.h>
#include <thread>

#include "support/support.hpp"

using namespace preforkd::test;

namespace {

std::string echo_program(int workers, const std::string& extra = "") {
  return "programs:\n"
         "  echo:\n"
         "    command: " + bin("preforkd-echo") + "\n"
         "    workers: " + std::to_string(workers) + "\n"
         "    listen: [\"127.0.0.1:0\"]\n"
         "    backoff: { min: 10ms, max: 100ms, reset_after: 10ms }\n" + extra;
}

std::string sleeper_program(int workers, const std::string& extra = "") {
  return "programs:\n"
         "  s:\n"
         "    command: [" + bin("preforkd-test-worker") + "]\n"
         "    workers: " + std::to_string(workers) + "\n"
         "    stop_timeout: 2s\n" + extra;
}

// Live (non-zombie) children, sorted.
std::vector<pid_t> live_workers(const Preforkd& d) {
  std::vector<pid_t> out;
  for (pid_t p : d.workers())
    if (pid_alive(p)) out.push_back(p);
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

TEST_CASE("respawn: the port never refuses a connection while workers are SIGKILLed one after another") {
  TempDir dir;
  Preforkd d(dir, echo_program(4));
  REQUIRE(d.wait_workers(4));
  uint16_t port = d.port();
  REQUIRE(port != 0);

  std::atomic<bool> stop{false};
  std::atomic<int> refused{0}, served{0}, cut{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < 16; ++c) {
    clients.emplace_back([&, c] {
      std::string msg = "client " + std::to_string(c) + " says hello\n";
      while (!stop) {
        int fd = connect_tcp(port);
        if (fd < 0) {
          ++refused;
          continue;
        }
        char buf[256];
        bool ok = send(fd, msg.data(), msg.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(msg.size());
        size_t got = 0;
        while (ok && got < msg.size()) {
          ssize_t n = recv(fd, buf, sizeof buf, 0);
          if (n <= 0) ok = false;
          else got += static_cast<size_t>(n);
        }
        ::close(fd);
        // A connection that the killed worker had already accepted dies with
        // it; that is not a refusal. Count it separately.
        ok ? ++served : ++cut;
      }
    });
  }
  for (int round = 0; round < 20; ++round) {
    auto before = live_workers(d);
    REQUIRE(before.size() == 4);
    pid_t victim = before[static_cast<size_t>(round) % before.size()];
    ::kill(victim, SIGKILL);
    REQUIRE(wait_until([&] {
      auto now = live_workers(d);
      return now.size() == 4 && std::find(now.begin(), now.end(), victim) == now.end();
    }));
  }
  int served_before_stop = served;
  stop = true;
  for (auto& t : clients) t.join();
  CHECK(refused == 0);
  CHECK(served_before_stop > 100);
  MESSAGE("served " << served.load() << ", cut by a kill " << cut.load());
  CHECK(echo_roundtrip(port, "still there\n"));
  CHECK(d.stop() == 0);
}

TEST_CASE("T2 coalesced SIGCHLD: 50 workers SIGKILLed at once are all reaped and respawned") {
  TempDir dir;
  Preforkd d(dir, sleeper_program(50, "    backoff: { min: 10ms, max: 50ms, reset_after: 10ms }\n"));
  REQUIRE(d.wait_workers(50));
  auto before = live_workers(d);
  for (pid_t p : before) ::kill(p, SIGKILL);  // no waits between the kills
  CHECK(wait_until([&] {
    auto now = live_workers(d);
    if (now.size() != 50) return false;
    for (pid_t p : now)
      if (std::binary_search(before.begin(), before.end(), p)) return false;
    return true;
  }));
  CHECK(wait_until([&] { return zombie_children(d.pid()) == 0; }));
  CHECK(d.stop() == 0);
}

TEST_CASE("T5 T14 200 crash/respawn cycles leave no zombie and the supervisor's fd count unchanged") {
  TempDir dir;
  Preforkd d(dir, sleeper_program(4, "    backoff: { min: 10ms, max: 50ms, reset_after: 1ms }\n"));
  REQUIRE(d.wait_workers(4));
  // Counted once every start has been answered: a start in flight holds
  // one more fd (its watch pipe) until its child has exec'd.
  REQUIRE(wait_until([&] {
    auto s = d.control({{"cmd", "status"}});
    size_t n = 0;
    for (const auto& p : s["programs"])
      for (const auto& w : p["workers"])
        if (w["pid"].is_number_integer() && w["pid"].get<long>() > 0) ++n;
    return n == 4;
  }));
  // The status client's connection closes in one of preforkd's next
  // iterations: the lowest count seen for a moment is the idle one.
  int fds_before = count_fds(d.pid());
  wait_until([&] { return (fds_before = std::min(fds_before, count_fds(d.pid()))) < 0; }, 300ms);
  for (int cycle = 0; cycle < 200; ++cycle) {
    auto now = live_workers(d);
    REQUIRE(now.size() == 4);
    pid_t victim = now[static_cast<size_t>(cycle) % 4];
    // Deaths by a signal and clean exits (the test worker exits 0 on TERM).
    ::kill(victim, cycle % 2 ? SIGKILL : SIGTERM);
    REQUIRE_MESSAGE(wait_until([&] {
                      auto after = live_workers(d);
                      return after.size() == 4 && std::find(after.begin(), after.end(), victim) == after.end();
                    }),
                    "cycle ", cycle, ": pid ", victim, " not replaced\n", d.control({{"cmd", "status"}}).dump(), "\n",
                    d.log());
  }
  CHECK(wait_until([&] { return zombie_children(d.pid()) == 0; }));
  CHECK(wait_until([&] { return count_fds(d.pid()) == fds_before; }, 2s));
  CHECK(count_fds(d.pid()) == fds_before);
  CHECK(d.stop() == 0);
}

namespace {
size_t occurrences(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t pos = 0; (pos = text.find(what, pos)) != std::string::npos; pos += what.size()) ++n;
  return n;
}
}  // namespace

TEST_CASE("T10 T25 a command that cannot exec is reported clearly and backs off instead of spinning") {
  TempDir dir;
  // Executable at check time, but its interpreter does not exist: execve fails with ENOENT.
  std::string script = dir.write("bad.sh", "#!/no/such/interpreter\n");
  chmod(script.c_str(), 0755);
  std::string yaml =
      "programs:\n"
      "  bad:\n"
      "    command: " + script + "\n"
      "    backoff: { min: 100ms, max: 1s, reset_after: 1s }\n";
  Preforkd d(dir, yaml);
  REQUIRE(d.wait_for_log("(4 failures in a row)") != std::string::npos);
  std::string log = d.log();
  // The reason, said once while it repeats; each try is an exit with 127.
  CHECK(occurrences(log, ": cannot start: exec " + script + ": No such file or directory") == 1);
  CHECK(log.find("error: bad[0] ") != std::string::npos);
  // Exactly one attempt per logged failure so far: no storm between them, and
  // the waits grow (0 for the first retry, then 100ms, 200ms, give or take 20%).
  size_t attempts = occurrences(log, "exited with status 127");
  CHECK(attempts >= 4);
  CHECK(attempts <= 5);
  CHECK(log.find("respawning in 0ms (2 failures") == std::string::npos);
  CHECK(d.stop() == 0);
}

TEST_CASE("restart policies: never keeps a dead worker down, on-failure restarts only failures") {
  TempDir dir;
  std::string w = bin("preforkd-test-worker");
  std::string yaml =
      "programs:\n"
      "  never:\n"
      "    command: [" + w + ", --exit, 3]\n"
      "    restart: never\n"
      "  clean:\n"
      "    command: [" + w + ", --exit, 0]\n"
      "    restart: on-failure\n"
      "  failing:\n"
      "    command: [" + w + ", --exit-after, 20, --exit, 1]\n"
      "    restart: on-failure\n"
      "    backoff: { min: 10ms, max: 20ms, reset_after: 1h }\n";
  Preforkd d(dir, yaml);
  CHECK(d.wait_for_log("never[0]: not restarted (restart: never)") != std::string::npos);
  CHECK(d.wait_for_log("clean[0]: not restarted (restart: on-failure)") != std::string::npos);
  CHECK(d.wait_for_log("failing[0] pid", 5s) != std::string::npos);
  CHECK(d.wait_for_log("started (restart 3)") != std::string::npos);
  std::string log = d.log();
  CHECK(log.find("never[0]: exec") == std::string::npos);
  CHECK(log.find("never[0] pid") != std::string::npos);
  CHECK(d.stop() == 0);
}

TEST_CASE("respawn storm: 300 workers SIGKILLed at once are all replaced, one per slot, while the control socket "
          "keeps answering") {
  // preforkd spawns for at most a short slice per loop iteration and then
  // looks at its other events: the 300 respawns are spread over several
  // iterations. None may be lost or made twice.
  TempDir dir;
  Preforkd d(dir, sleeper_program(300, "    backoff: { min: 10ms, max: 100ms, reset_after: 10ms }\n"));
  REQUIRE(d.wait_workers(300, 60s));
  auto before = live_workers(d);
  REQUIRE(before.size() == 300);
  std::this_thread::sleep_for(20ms);  // past reset_after: each death is a first failure, respawned at once
  for (pid_t p : before) REQUIRE(kill(p, SIGKILL) == 0);
  int answered = 0;
  bool replaced = wait_until(
      [&] {
        nlohmann::json st = d.control({{"cmd", "status"}}, 5s);
        if (st.is_object() && st.value("ok", false)) ++answered;
        auto now = live_workers(d);
        if (now.size() < 300) return false;
        for (pid_t p : now)
          if (std::binary_search(before.begin(), before.end(), p)) return false;
        return true;
      },
      60s);
  REQUIRE_MESSAGE(replaced, live_workers(d).size(), " live workers");
  CHECK(answered >= 1);
  CHECK(d.process().running());
  // One worker per slot: 300 distinct live pids in the status, none of the
  // killed ones, and no extra child of preforkd.
  nlohmann::json st = d.control({{"cmd", "status"}});
  REQUIRE(st.value("ok", false));
  std::set<long> pids;
  nlohmann::json program = program_of(st, "s");
  for (const auto& w : program["workers"]) pids.insert(w["pid"].get<long>());
  CHECK(pids.size() == 300);
  for (long p : pids) CHECK(pid_alive(static_cast<pid_t>(p)));
  CHECK(live_workers(d).size() == 300);
  CHECK(d.stop(60s) == 0);
}
