// The notify pipe end to end: the watchdog, and untrusted input (T24) — each
// bad kind is dropped and counted while preforkd keeps serving signals, and a
// flood neither blocks the loop nor grows the supervisor.
#include <doctest/doctest.h>
#include <signal.h>

#include <string>

#include "support/support.hpp"

using namespace preforkd::test;

namespace {

std::string program(const std::string& name, const std::string& args, const std::string& extra = "") {
  return "  " + name + ":\n    command: [" + bin("preforkd-test-worker") + (args.empty() ? "" : ", " + args) +
         "]\n" + extra;
}

}  // namespace

TEST_CASE("watchdog: a worker that stops sending is killed with SIGABRT and replaced - one that sends is left alone") {
  TempDir dir;
  Preforkd d(dir, "programs:\n" +
                      program("stuck", "--dump-state, " + dir.file("stuck-%p.json") +
                                           ", --watchdog-every, 50, --hang-after, 300",
                              "    watchdog_timeout: 400ms\n    stop_timeout: 500ms\n"
                              "    rlimits: { core: 0 }\n    backoff: { min: 10ms, max: 20ms, reset_after: 1ms }\n") +
                      program("alive", "--watchdog-every, 50", "    watchdog_timeout: 400ms\n"));
  REQUIRE(d.wait_for_log("stuck[0] pid", 10s) != std::string::npos);
  size_t kill = d.wait_for_log("watchdog: nothing heard for 400ms, sending SIGABRT");
  REQUIRE(kill != std::string::npos);
  CHECK(d.wait_for_log("killed by signal 6 (ABRT)", 10s, kill) != std::string::npos);
  CHECK(d.wait_for_log("(watchdog)", 10s, kill) != std::string::npos);
  CHECK(d.wait_for_log("stuck[0] pid", 10s, kill) != std::string::npos);
  CHECK(d.wait_for_log("started (restart 1)", 10s, kill) != std::string::npos);
  // The worker was told its watchdog interval.
  bool told = false;
  for (const auto& e : std::filesystem::directory_iterator(dir.path()))
    if (e.path().filename().string().rfind("stuck-", 0) == 0) {
      // The replacement may be writing its own file right now: a file that
      // does not parse yet is skipped; the first worker's is complete.
      try {
        told |= read_json(e.path().string())["env"]["WATCHDOG_USEC"] == "400000";
      } catch (const nlohmann::json::exception&) {
      }
    }
  CHECK(told);
  CHECK(d.log().find("alive[0] pid") == std::string::npos);  // never stopped
  CHECK(d.stop() == 0);
}

TEST_CASE("T24 notify: each kind of bad line is dropped and counted, the supervisor keeps serving") {
  TempDir dir;
  std::string many;
  for (int i = 0; i < 70; ++i) many += ", --notify, COUNTER_n" + std::to_string(i) + "=1";
  struct Case {
    const char* name;
    std::string args;
    const char* reason;
  } cases[] = {
      {"toolong", "--notify, STATUS=" + std::string(5000, 'x'), "line too long"},
      {"binary", "--notify, \"STATUS=\\x01\\x02\"", "binary data"},
      {"noequals", "--notify, READY", "not KEY=VALUE"},
      {"badname", "--notify, COUNTER_Bad-Name=1", "bad name"},
      {"nonnumeric", "--notify, COUNTER_x=abc", "bad value"},
      {"decreasing", "--notify, COUNTER_down=5, --notify, COUNTER_down=4", "counter went down"},
      {"unknown", "--notify, NOSUCHKEY=1", "unknown key"},
      {"toomany", many.substr(2), "too many names"},
  };
  std::string yaml = "programs:\n";
  for (const auto& c : cases) yaml += program(c.name, c.args);
  Preforkd d(dir, yaml);
  for (const auto& c : cases) {
    std::string expected = std::string("dropped a notify line (") + c.reason + ")";
    size_t at = d.wait_for_log(expected);
    CHECK_MESSAGE(at != std::string::npos, c.name << ": no `" << expected << "` in the log");
    if (at != std::string::npos) {
      std::string log = d.log();
      size_t line_start = log.rfind('\n', at);
      CHECK_MESSAGE(log.find(std::string(c.name) + "[0]", line_start) < at, c.name);
    }
  }
  // Still serving signals: TTIN scales every program at once.
  d.process().signal(SIGTTIN);
  CHECK(d.wait_for_log("toomany: scaling up to 2 worker(s)") != std::string::npos);
  CHECK(d.stop() == 0);
}

TEST_CASE("T24 notify: a flood of garbage, endless names and overlong lines keeps preforkd small and responsive") {
  TempDir dir;
  Preforkd d(dir, "programs:\n" + program("garbage", "--flood, garbage", "    workers: 4\n") +
                      program("names", "--flood, names", "    workers: 4\n") +
                      program("long", "--flood, long", "    workers: 4\n") +
                      program("mixed", "--flood, mixed", "    workers: 4\n"));
  REQUIRE(d.wait_workers(16));
  long rss_start = rss_kib(d.pid());
  // Let the flood run until preforkd has read plenty, then check it still answers.
  auto cpu0 = cpu_ticks(d.pid());
  REQUIRE(wait_until([&] { return cpu_ticks(d.pid()) - cpu0 >= 100; }, 30s));  // >= 1 s of its CPU spent reading
  long rss_flooded = rss_kib(d.pid());
  MESSAGE("preforkd RSS " << rss_start << " KiB at start, " << rss_flooded << " KiB under flood");
  CHECK(rss_flooded < rss_start + 8 * 1024);  // bounded: no growth with what workers write
  d.process().signal(SIGTTIN);
  CHECK(d.wait_for_log("mixed: scaling up to 5 worker(s)", 5s) != std::string::npos);
  CHECK(d.stop(30s) == 0);
}
