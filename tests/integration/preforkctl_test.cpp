// preforkctl, the real binary, against a real preforkd: every command, the
// exit codes (0 ok, 1 failed, 2 usage, 3 unreachable) and --json.
#include <doctest/doctest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>

#include "support/support.hpp"

using namespace preforkd::test;

namespace {

std::pair<int, std::string> ctl(const Preforkd& d, std::vector<std::string> args) {
  args.insert(args.begin(), {bin("preforkctl"), "-s", d.control_socket()});
  return run(args, 60s);
}

std::string program(const std::string& name, int workers) {
  return "  " + name + ":\n    command: [" + bin("preforkd-test-worker") +
         ", --notify, COUNTER_requests=7]\n    workers: " + std::to_string(workers) + "\n";
}

}  // namespace

TEST_CASE("preforkctl: status, stats, metrics and version, human and --json") {
  TempDir dir;
  Preforkd d(dir, "programs:\n" + program("web", 2) + program("jobs", 1));
  REQUIRE(d.wait_workers(3));
  auto [code, out] = ctl(d, {"status"});
  CHECK(code == 0);
  CHECK(out.find("PROGRAM") != std::string::npos);
  CHECK(out.find("web") != std::string::npos);
  CHECK(out.find("jobs") != std::string::npos);
  for (pid_t p : d.workers()) CHECK(out.find(std::to_string(p)) != std::string::npos);
  auto [jcode, jout] = ctl(d, {"--json", "status"});
  CHECK(jcode == 0);
  auto j = nlohmann::json::parse(jout, nullptr, false);
  REQUIRE(!j.is_discarded());
  CHECK(j["ok"] == true);
  CHECK(j["programs"].size() == 2);
  REQUIRE(wait_until([&] {
    auto s = nlohmann::json::parse(ctl(d, {"--json", "stats"}).second, nullptr, false);
    return !s.is_discarded() && s["programs"][0]["counters"].value("requests", 0) == 14;
  }));
  auto [scode, sout] = ctl(d, {"stats"});
  CHECK(scode == 0);
  CHECK(sout.find("requests") != std::string::npos);
  CHECK(sout.find("14") != std::string::npos);
  auto [mcode, mout] = ctl(d, {"metrics"});
  CHECK(mcode == 0);
  CHECK(mout.find("preforkd_program_requests_total{program=\"web\"} 14") != std::string::npos);
  auto [vcode, vout] = ctl(d, {"version"});
  CHECK(vcode == 0);
  CHECK(vout.find(std::to_string(d.pid())) != std::string::npos);
  CHECK(d.stop() == 0);
}

TEST_CASE("preforkctl: scale, restart, stop, start, signal and shutdown") {
  TempDir dir;
  Preforkd d(dir, "programs:\n" + program("web", 2));
  REQUIRE(d.wait_workers(2));
  CHECK(ctl(d, {"scale", "web", "4"}).first == 0);
  CHECK(d.workers().size() == 4);  // done when preforkctl returns
  auto before = d.workers();
  CHECK(ctl(d, {"restart", "web"}).first == 0);
  for (pid_t p : before) CHECK(!pid_alive(p));
  CHECK(d.workers().size() == 4);
  CHECK(ctl(d, {"scale", "web", "1"}).first == 0);
  CHECK(d.workers().size() == 1);
  CHECK(ctl(d, {"stop", "web"}).first == 0);
  CHECK(d.workers().empty());
  CHECK(ctl(d, {"start", "web"}).first == 0);
  CHECK(d.wait_workers(1));
  CHECK(ctl(d, {"signal", "web", "TERM"}).first == 0);
  CHECK(d.wait_for_log("exited with status 0") != std::string::npos);
  auto [code, out] = ctl(d, {"shutdown"});
  CHECK(code == 0);
  auto st = d.process().wait(20s);
  REQUIRE(st);
  CHECK(WEXITSTATUS(*st) == 0);
}

TEST_CASE("preforkctl: exit codes: 1 failed, 2 usage, 3 unreachable - -c finds the socket") {
  TempDir dir;
  Preforkd d(dir, "programs:\n" + program("web", 1));
  auto [c1, o1] = ctl(d, {"stop", "nosuch"});
  CHECK(c1 == 1);
  CHECK(o1.find("unknown program") != std::string::npos);
  CHECK(ctl(d, {"reload"}).first == 0);  // the file is unchanged: nothing to do
  d.rewrite("programs: [\n");
  auto [c2, o2] = ctl(d, {"reload"});
  CHECK(c2 == 1);  // an invalid file: the errors, file:line:column
  CHECK_MESSAGE(o2.find("preforkd.yaml:") != std::string::npos, o2);
  d.rewrite("programs:\n" + program("web", 1));
  CHECK(ctl(d, {"frobnicate"}).first == 2);
  CHECK(ctl(d, {"scale", "web"}).first == 2);
  CHECK(ctl(d, {"scale", "web", "many"}).first == 2);
  CHECK(run({bin("preforkctl"), "-s", dir.file("nothing-here.sock"), "status"}).first == 3);
  auto [c3, o3] = run({bin("preforkctl"), "-c", dir.file("preforkd.yaml"), "status"});
  CHECK(c3 == 0);
  CHECK(o3.find("web") != std::string::npos);
  CHECK(d.stop() == 0);
}

TEST_CASE("preforkctl: another user is refused: permission denied, exit 1") {
  if (geteuid() != 0) {
    MESSAGE("skipped: needs root to act as another user");
    return;
  }
  TempDir dir;
  chmod(dir.path().c_str(), 0755);
  Preforkd d(dir, "programs:\n" + program("web", 1));
  // With the file's own mode (0660) another user cannot even connect: exit 3.
  auto as_nobody = [&] {
    return run({"/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", bin("preforkctl"), "-s",
                d.control_socket(), "status"});
  };
  CHECK(as_nobody().first == 3);
  // Past the file mode, the credential check refuses it.
  REQUIRE(chmod(d.control_socket().c_str(), 0666) == 0);
  auto [code, out] = as_nobody();
  CHECK(code == 1);
  CHECK(out.find("permission denied") != std::string::npos);
  CHECK(d.stop() == 0);
}

TEST_CASE("preforkctl: shutdown of a preforkd with no worker still gets its reply") {
  TempDir dir;
  Preforkd d(dir, "programs:\n" + program("idle", 0));
  auto [code, out] = ctl(d, {"shutdown"});
  CHECK_MESSAGE(code == 0, out);
  auto st = d.process().wait(10s);
  REQUIRE(st);
  CHECK(WEXITSTATUS(*st) == 0);
}
