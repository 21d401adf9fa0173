// "After start-up, preforkd does not die" (STYLE 3.1.5): the real preforkd
// with syscall failures injected through PREFORKD_FAULTS (sys/fault.hpp, a
// tests-only seam). Each failure must cost at most the one worker or client
// it hit; preforkd logs it, backs off where that applies, and recovers.
#include <doctest/doctest.h>
#include <signal.h>

#include <algorithm>
#include <string>
#include <vector>

#include "support/support.hpp"

using namespace preforkd::test;
using nlohmann::json;

namespace {

constexpr auto npos = std::string::npos;

// Three preforkd-echo workers on one shared 127.0.0.1 socket. Their stdout
// and stderr are not captured, so each worker has one pipe (notify) that
// preforkd registers with epoll.
std::string echo_program(const std::string& backoff = "{ min: 200ms, max: 1s, reset_after: 10ms }") {
  return "programs:\n"
         "  echo:\n"
         "    command: " + bin("preforkd-echo") + "\n"
         "    workers: 3\n"
         "    listen: [\"127.0.0.1:0\"]\n"
         "    stdout: null\n"
         "    stderr: null\n"
         "    backoff: " + backoff + "\n";
}

std::vector<pid_t> live_workers(const Preforkd& d) {
  std::vector<pid_t> out;
  for (pid_t p : d.workers())
    if (pid_alive(p)) out.push_back(p);
  std::sort(out.begin(), out.end());
  return out;
}

bool has(const std::vector<pid_t>& pids, pid_t p) { return std::find(pids.begin(), pids.end(), p) != pids.end(); }

size_t count(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t at = text.find(needle); at != npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

// Three workers, all ready, by preforkd's own account: its loop answers.
bool all_ready(const Preforkd& d) {
  json st = d.control({{"cmd", "status"}}, 5s);
  if (!st.is_object() || st.value("ok", false) != true) return false;
  json p = program_of(st, "echo");
  if (!p.is_object() || !p["workers"].is_array() || p["workers"].size() != 3) return false;
  return std::all_of(p["workers"].begin(), p["workers"].end(),
                     [](const json& w) { return w.value("state", "") == "ready"; });
}

// Recovered: three live workers, the victim not among them, and preforkd's
// loop says all three are ready (a dying preforkd may still have children).
bool recovered(const Preforkd& d, pid_t victim) {
  auto now = live_workers(d);
  return now.size() == 3 && !has(now, victim) && all_ready(d);
}

}  // namespace

TEST_CASE("faults: fork fails with EAGAIN for a respawn: preforkd logs it, backs off, the slot serves again") {
  TempDir dir;
  // Forks 1-3 start the workers; 4, 5 and 6 (the respawns after the kill) fail.
  Preforkd d(dir, echo_program(), {}, true, {}, "", {{"PREFORKD_FAULTS", "fork:EAGAIN:4:3"}});
  REQUIRE(d.wait_workers(3));
  uint16_t port = d.port();
  auto before = live_workers(d);
  REQUIRE(before.size() == 3);
  size_t mark = d.log().size();

  pid_t victim = before[1];
  auto killed_at = Clock::now();
  REQUIRE(kill(victim, SIGKILL) == 0);
  CHECK_MESSAGE(d.wait_for_log("fork call 6: injected EAGAIN", 10s, mark) != npos, d.log());
  CHECK_MESSAGE(d.log().find("fork: Resource temporarily unavailable", mark) != npos, d.log());
  bool back = wait_until([&] { return live_workers(d).size() == 3 && !has(live_workers(d), victim); }, 20s);
  auto took = Clock::now() - killed_at;
  REQUIRE_MESSAGE(back, d.log());
  CHECK(d.process().running());
  // Backed off: failures 2 and 3 in a row wait min and 2 * min (200 + 400 ms, ±20 % jitter).
  CHECK_MESSAGE(took >= 450ms, "respawned after ", std::chrono::duration_cast<std::chrono::milliseconds>(took).count(),
                " ms: no backoff between the failed forks");
  auto after = live_workers(d);
  for (pid_t p : before)
    if (p != victim) CHECK_MESSAGE(has(after, p), "worker ", p, " was replaced");
  CHECK(wait_until([&] { return all_ready(d); }, 10s));
  CHECK(echo_roundtrip(port, "still serving\n"));
  CHECK(d.stop() == 0);
}

TEST_CASE("faults: epoll_ctl fails with ENOMEM on a respawn's pipe: preforkd keeps running and its other workers") {
  TempDir dir;
  // epoll_ctl calls at start-up: the signalfd, the timerfd, NOTIFY_SOCKET,
  // the control socket, then one notify pipe per worker (stdout/stderr are
  // not captured) = 7. Call 8 is the first registration of the respawn after the kill.
  Preforkd d(dir, echo_program(), {}, true, {}, "", {{"PREFORKD_FAULTS", "epoll_ctl:ENOMEM:8:1"}});
  REQUIRE(d.wait_workers(3));
  REQUIRE_MESSAGE(d.log().find("injected") == npos,
                  "the fault fired during start-up: preforkd now makes more than 7 epoll_ctl calls there; "
                  "this test's N must be that count + 1\n", d.log());
  uint16_t port = d.port();
  auto before = live_workers(d);
  REQUIRE(before.size() == 3);
  size_t mark = d.log().size();

  pid_t victim = before[0];
  REQUIRE(kill(victim, SIGKILL) == 0);
  REQUIRE_MESSAGE(d.wait_for_log("epoll_ctl call 8: injected ENOMEM", 10s, mark) != npos, d.log());
  bool back = wait_until([&] { return d.process().running() && recovered(d, victim); }, 20s);
  CHECK_MESSAGE(d.process().running(), "preforkd died of one failed epoll_ctl:\n", d.log());
  REQUIRE_MESSAGE(back, d.log());
  auto after = live_workers(d);
  for (pid_t p : before)
    if (p != victim) CHECK_MESSAGE(has(after, p), "worker ", p, " was replaced");
  CHECK(echo_roundtrip(port, "still serving\n"));
  CHECK(d.stop() == 0);
}

TEST_CASE("faults: accept4 fails with EMFILE on the control socket: logged once, the next client works") {
  TempDir dir;
  Preforkd d(dir, echo_program(), {}, true, {}, "", {{"PREFORKD_FAULTS", "accept4:EMFILE:1:1"}});
  REQUIRE(d.wait_workers(3));
  // The failed accept leaves the connection queued in the kernel (as a real
  // EMFILE does); preforkd pauses the listener briefly instead of spinning on
  // it, then takes it: the first client is answered late, not lost.
  std::string first = unix_request(d.control_socket(), R"({"cmd":"version"})", 10s);
  CHECK_MESSAGE(d.wait_for_log("control: accept: Too many open files") != npos, d.log());
  CHECK_MESSAGE(!first.empty(), "the first client was dropped\n", d.log());
  if (!first.empty()) CHECK(json::parse(first)["ok"] == true);
  for (int i = 0; i < 3; ++i) CHECK(d.control({{"cmd", "version"}})["ok"] == true);
  auto [code, out] = run({bin("preforkctl"), "-s", d.control_socket(), "status"});
  CHECK_MESSAGE(code == 0, out);
  CHECK(d.process().running());
  CHECK(count(d.log(), "control: accept:") == 1);
  CHECK(d.stop() == 0);
}
