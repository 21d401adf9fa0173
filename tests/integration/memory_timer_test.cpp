// The max_memory check's 1 s timer: armed whenever some program has
// max_memory and only then, whether the configuration came at start or by a
// reload. A reload that adds max_memory must start checking it; one that
// removes it must leave preforkd asleep (no periodic wake-up at all).
//
// Wake-ups are counted as preforkd's context switches (wakeups_over() in
// support) over an idle window: quiet workers (the test worker writes nothing
// and waits in pause()), no traffic and no control connection during it —
// preforkctl and the control socket wake preforkd themselves.
#include <doctest/doctest.h>
#include <signal.h>
#include <unistd.h>

#include <set>
#include <string>

#include "support/support.hpp"

using namespace preforkd::test;
using json = nlohmann::json;

namespace {

// How long the idle window lasts: a 1 s timer would wake preforkd 5 times.
constexpr auto kIdleWindow = 5s;
// At most this many wake-ups in the window count as idle: 0 is what is seen,
// the rest is slack for a stray event, far below the timer's 5.
constexpr long long kIdleWakeups = 2;

std::pair<int, std::string> ctl(const Preforkd& d, std::vector<std::string> args) {
  args.insert(args.begin(), {bin("preforkctl"), "-s", d.control_socket()});
  return run(args, 60s);
}

size_t count(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t pos = 0; (pos = text.find(needle, pos)) != std::string::npos; pos += needle.size()) ++n;
  return n;
}

// preforkd's live children: the same set later means none was restarted.
std::set<pid_t> children(const Preforkd& d) {
  std::set<pid_t> out;
  for (pid_t pid : d.workers())
    if (pid_alive(pid)) out.insert(pid);
  return out;
}

// A program of 2 test workers run with `args` (", --rss-mb, 24"), and the
// keys `more`. Without options the worker writes nothing and waits in pause().
std::string quiet_program(const std::string& name, const std::string& more = "", const std::string& args = "") {
  return "programs:\n  " + name + ":\n    command: [" + bin("preforkd-test-worker") + args + "]\n" +
         "    workers: 2\n" + more;
}

}  // namespace

TEST_CASE("memory timer: a reload that adds max_memory recycles the workers above it") {
  TempDir dir;
  // Each worker holds 24 MiB; 16M is below that, and far above the test
  // worker's own few MiB.
  const std::string program = quiet_program("fat", "    reload: { settle: 100ms }\n", ", --rss-mb, \"24\"");
  Preforkd d(dir, program);
  std::set<pid_t> before;
  REQUIRE(wait_until([&] {
    before = pids_of(d.control({{"cmd", "status"}}), "fat");
    if (before.size() != 2) return false;
    for (pid_t pid : before)
      if (rss_kib(pid) < 24 * 1024) return false;
    return true;
  }));
  auto stats = json::parse(ctl(d, {"--json", "stats"}).second, nullptr, false);
  REQUIRE(!stats.is_discarded());
  CHECK(program_of(stats, "fat")["exits"]["recycled"] == 0);

  d.rewrite(program + "    max_memory: 16M\n");
  auto [code, out] = ctl(d, {"reload"});
  REQUIRE_MESSAGE(code == 0, out);
  CHECK_MESSAGE(out.find("max_memory") != std::string::npos, out);  // applied in place
  // Checked every second: both workers are over it at the first check, and
  // replaced (new before old, settle 100ms) soon after.
  auto start = Clock::now();
  bool replaced = wait_until(
      [&] {
        for (pid_t pid : before)
          if (pid_alive(pid)) return false;
        return true;
      },
      10s);
  auto took = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start);
  const std::string what = replaced ? "were replaced" : "were still running";
  MESSAGE("the workers above max_memory " << what << " " << took.count() << " ms after the reload");
  REQUIRE_MESSAGE(replaced, d.log());
  stats = json::parse(ctl(d, {"--json", "stats"}).second, nullptr, false);
  REQUIRE(!stats.is_discarded());
  CHECK(program_of(stats, "fat")["exits"]["recycled"].get<uint64_t>() >= 2);
  auto after = pids_of(d.control({{"cmd", "status"}}), "fat");
  for (pid_t pid : before) CHECK_MESSAGE(after.count(pid) == 0, "pid " << pid << " still in the status");
  std::string log = d.log();
  for (pid_t pid : before) {
    CHECK_MESSAGE(log.find("pid " + std::to_string(pid) + ": RSS ") != std::string::npos, "pid " << pid);
    CHECK(log.find("pid " + std::to_string(pid) + ": recycling (max_memory)") != std::string::npos);
  }
  CHECK(count(log, "is over max_memory 16777216") >= 2);
  CHECK(d.stop() == 0);
}

TEST_CASE("memory timer: a reload that removes max_memory leaves preforkd idle, with no 1 s wake-up") {
  TempDir dir;
  // 1G: never reached by a quiet test worker, so nothing is recycled.
  const std::string without = quiet_program("w");
  Preforkd d(dir, without + "    max_memory: 1G\n");
  REQUIRE(d.wait_workers(2));
  auto pids = children(d);
  // With max_memory, preforkd wakes every second: what the window below
  // must no longer see, and proof that it would.
  REQUIRE(wait_quiet(d.pid()));
  long long with_timer = wakeups_over(d.pid(), 3s);
  MESSAGE("with max_memory: " << with_timer << " wake-up(s) in 3 s");
  CHECK(with_timer >= 2);

  d.rewrite(without);
  size_t mark = d.log().size();
  REQUIRE(::kill(d.pid(), SIGHUP) == 0);  // no control connection: nothing else to wake it
  REQUIRE(d.wait_for_log("reload to generation 2 done", 10s, mark) != std::string::npos);
  CHECK(d.log().find("w: max_memory", mark) != std::string::npos);  // applied in place
  REQUIRE(wait_quiet(d.pid()));
  long long idle = wakeups_over(d.pid(), kIdleWindow);
  MESSAGE("max_memory removed by a reload: " << idle << " wake-up(s) in 5 s");
  CHECK(idle >= 0);
  CHECK(idle <= kIdleWakeups);
  CHECK(children(d) == pids);  // nothing was restarted or recycled meanwhile
  CHECK(d.stop() == 0);
}

TEST_CASE("memory timer: with no max_memory, preforkd has no periodic wake-up") {
  TempDir dir;
  Preforkd d(dir, quiet_program("w"));
  REQUIRE(d.wait_workers(2));
  auto pids = children(d);
  REQUIRE(wait_quiet(d.pid()));
  long long idle = wakeups_over(d.pid(), kIdleWindow);
  MESSAGE("no max_memory: " << idle << " wake-up(s) in 5 s");
  CHECK(idle >= 0);
  CHECK(idle <= kIdleWakeups);
  CHECK(children(d) == pids);
  CHECK(d.stop() == 0);
}
