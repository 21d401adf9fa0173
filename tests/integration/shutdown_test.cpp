// Stopping: graceful TERM, fast QUIT, stop_timeout escalation, process-group
// kills, orphans, preforkd's own death, and TTIN/TTOU scaling.
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>

#include "support/support.hpp"

using namespace preforkd::test;

namespace {

std::string worker_program(const std::string& name, int workers, const std::string& args,
                           const std::string& extra = "") {
  return "  " + name + ":\n"
         "    command: [" + bin("preforkd-test-worker") + (args.empty() ? "" : ", " + args) + "]\n"
         "    workers: " + std::to_string(workers) + "\n" + extra;
}

size_t live(const std::vector<pid_t>& pids) {
  return static_cast<size_t>(std::count_if(pids.begin(), pids.end(), pid_alive));
}

}  // namespace

TEST_CASE("shutdown: TERM stops every worker and exits 0") {
  TempDir dir;
  Preforkd d(dir, "programs:\n" + worker_program("a", 3, "") + worker_program("b", 2, ""));
  REQUIRE(d.wait_workers(5));
  auto pids = d.workers();
  CHECK(d.stop() == 0);
  CHECK(live(pids) == 0);
}

TEST_CASE("shutdown: a worker that ignores TERM is killed after stop_timeout, still exit 0") {
  TempDir dir;
  Preforkd d(dir, "programs:\n" +
                      worker_program("stubborn", 2, "--ignore-term", "    stop_timeout: 300ms\n"));
  REQUIRE(d.wait_workers(2));
  auto pids = d.workers();
  REQUIRE(all_ignore_term(pids));
  CHECK(d.stop() == 0);
  CHECK(live(pids) == 0);
  CHECK(d.log().find("still running after stop_timeout, sending SIGKILL") != std::string::npos);
}

TEST_CASE("shutdown: shutdown_timeout bounds the whole graceful stop") {
  TempDir dir;
  Preforkd d(dir, "supervisor: { shutdown_timeout: 300ms }\nprograms:\n" +
                      worker_program("stubborn", 1, "--ignore-term", "    stop_timeout: 1h\n"));
  REQUIRE(d.wait_workers(1));
  auto pids = d.workers();
  REQUIRE(all_ignore_term(pids));
  CHECK(d.stop() == 0);
  CHECK(live(pids) == 0);
  CHECK(d.log().find("shutdown_timeout passed") != std::string::npos);
}

TEST_CASE("shutdown: QUIT kills every worker at once and exits 0") {
  TempDir dir;
  Preforkd d(dir, "programs:\n" + worker_program("stubborn", 3, "--ignore-term", "    stop_timeout: 1h\n"));
  REQUIRE(d.wait_workers(3));
  auto pids = d.workers();
  REQUIRE(all_ignore_term(pids));
  d.process().signal(SIGQUIT);
  auto st = d.process().wait(10s);
  REQUIRE(st);
  CHECK(WIFEXITED(*st));
  CHECK(WEXITSTATUS(*st) == 0);
  CHECK(live(pids) == 0);
}

TEST_CASE("T17 kill_group: a worker's grandchild in its process group goes with it") {
  TempDir dir;
  Preforkd d(dir, "programs:\n" +
                      worker_program("forky", 1, "--double-fork, --dump-state, " + dir.file("state.json")));
  REQUIRE(wait_until([&] { return file_exists(dir.file("state.json")); }));
  auto j = read_json(dir.file("state.json"));
  REQUIRE(j.contains("grandchild"));
  pid_t grandchild = j["grandchild"].get<pid_t>();
  CHECK(pid_alive(grandchild));
  CHECK(d.stop() == 0);
  CHECK(wait_until([&] { return !pid_alive(grandchild); }, 5s));
}

TEST_CASE("T20 orphans that land on preforkd are reaped, never taken for workers") {
  TempDir dir;
  // The grandchild outlives its parent (the worker is SIGKILLed alone, not its
  // group), is reparented to preforkd (a subreaper), kept (orphans: keep),
  // and then is killed.
  Preforkd d(dir, "programs:\n" +
                      worker_program("forky", 1, "--double-fork, --dump-state, " + dir.file("state.json"),
                                     "    kill_group: false\n    orphans: keep\n"));
  REQUIRE(wait_until([&] { return file_exists(dir.file("state.json")); }));
  auto j = read_json(dir.file("state.json"));
  pid_t worker = j["pid"].get<pid_t>();
  pid_t grandchild = j["grandchild"].get<pid_t>();
  ::kill(worker, SIGKILL);
  // Reparented to preforkd, the subreaper.
  REQUIRE(wait_until([&] {
    auto kids = d.workers();
    return std::find(kids.begin(), kids.end(), grandchild) != kids.end();
  }));
  ::kill(grandchild, SIGKILL);
  CHECK(wait_until([&] { return proc_state(grandchild) == 0; }));  // reaped: gone from /proc
  CHECK(wait_until([&] { return zombie_children(d.pid()) == 0; }));  // a child may exit at any moment: none stays a zombie
  CHECK(d.wait_workers(2));  // the respawned worker and its own new grandchild
  REQUIRE(wait_until([&] { return read_json(dir.file("state.json"))["pid"] != worker; }));
  pid_t second = read_json(dir.file("state.json"))["grandchild"].get<pid_t>();
  CHECK(pid_alive(second));
  CHECK(d.stop() == 0);
  // kill_group: false, so TERM went to the worker alone; orphans: keep; still
  // nothing preforkd started outlives it (SPEC "Process tree").
  bool gone = !pid_alive(second);
  CHECK(gone);
  if (!gone) ::kill(second, SIGKILL);
}

TEST_CASE("T15 when preforkd dies abruptly its workers get SIGTERM and the port is free again") {
  TempDir dir;
  std::string yaml = "programs:\n  echo:\n    command: " + bin("preforkd-echo") +
                     "\n    workers: 3\n    listen: [\"127.0.0.1:0\"]\n";
  auto d = std::make_unique<Preforkd>(dir, yaml);
  REQUIRE(d->wait_workers(3));
  uint16_t port = d->port();
  auto pids = d->workers();
  d->process().signal(SIGKILL);
  d->process().wait(5s);
  CHECK(wait_until([&] { return live(pids) == 0; }, 5s));
  d.reset();
  // A new preforkd binds the same port at once.
  TempDir dir2;
  std::string yaml2 = "programs:\n  echo:\n    command: " + bin("preforkd-echo") +
                      "\n    workers: 1\n    listen: [\"127.0.0.1:" + std::to_string(port) + "\"]\n";
  Preforkd again(dir2, yaml2);
  CHECK(again.wait_workers(1));
  CHECK(echo_roundtrip(port, "back\n"));
  CHECK(again.stop() == 0);
}

TEST_CASE("T15 workers run as another user (user: nobody) also get SIGTERM when preforkd dies abruptly") {
  if (geteuid() != 0) {
    MESSAGE("skipped: needs root to change user");
    return;
  }
  // The shipped configuration runs its workers as nobody; the setuid in the
  // child clears PR_SET_PDEATHSIG if it was set before (prctl(2)).
  TempDir dir;
  std::string yaml = "programs:\n  echo:\n    command: " + bin("preforkd-echo") +
                     "\n    workers: 2\n    user: nobody\n    listen: [\"127.0.0.1:0\"]\n";
  auto d = std::make_unique<Preforkd>(dir, yaml);
  REQUIRE(d->wait_workers(2));
  auto pids = d->workers();
  d->process().signal(SIGKILL);
  d->process().wait(5s);
  bool gone = wait_until([&] { return live(pids) == 0; }, 5s);
  CHECK(gone);
  if (!gone)  // leave no orphan behind (only then: a reaped pid may be reused)
    for (pid_t p : pids)
      if (pid_alive(p)) ::kill(p, SIGKILL);
}

TEST_CASE("T3 TTIN adds a worker per program, TTOU removes the highest slot") {
  TempDir dir;
  Preforkd d(dir, "programs:\n" + worker_program("a", 2, "") + worker_program("b", 1, ""));
  REQUIRE(d.wait_workers(3));
  d.process().signal(SIGTTIN);
  CHECK(d.wait_workers(5));
  CHECK(d.wait_for_log("a: scaling up to 3 worker(s)") != std::string::npos);
  CHECK(d.wait_for_log("b: scaling up to 2 worker(s)") != std::string::npos);
  d.process().signal(SIGTTOU);
  CHECK(d.wait_workers(3));
  CHECK(d.wait_for_log("a: scaling down, stopping a[2]") != std::string::npos);
  d.process().signal(SIGTTOU);
  CHECK(d.wait_workers(1));
  d.process().signal(SIGTTOU);  // b is at 0 already; a goes to 0
  CHECK(d.wait_workers(0));
  d.process().signal(SIGTTIN);
  CHECK(d.wait_workers(2));
  CHECK(d.stop() == 0);
}

TEST_CASE("T16 SIGSTOP/SIGCONT of preforkd mid-run loses nothing") {
  TempDir dir;
  Preforkd d(dir, "programs:\n" + worker_program("a", 2, "", "    backoff: { min: 10ms, max: 20ms, reset_after: 1ms }\n"));
  REQUIRE(d.wait_workers(2));
  d.process().signal(SIGSTOP);
  auto pids = d.workers();
  for (pid_t p : pids) ::kill(p, SIGKILL);
  d.process().signal(SIGCONT);
  CHECK(wait_until([&] {
    auto now = d.workers();
    return now.size() == 2 && std::none_of(now.begin(), now.end(), [&](pid_t p) {
             return std::find(pids.begin(), pids.end(), p) != pids.end();
           });
  }));
  CHECK(d.stop() == 0);
}
