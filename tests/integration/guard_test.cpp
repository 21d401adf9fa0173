// reload.guard end to end: real workers, 127.0.0.1, a load generator that
// checks every response. A generation that serves for a while and then
// exits is rolled back with no refused or reset connection; preforkctl
// rollback inside and outside the guard; a healthy reload outlives its
// guard; a reload storm during a guard coalesces and leaves it alone.
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <iterator>
#include <string>

#include "support/load.hpp"
#include "support/support.hpp"

using namespace preforkd::test;
using json = nlohmann::json;

namespace {

std::string web(int workers, const std::string& listen, const std::string& extra_args = "",
                const std::string& more = "") {
  return "programs:\n  web:\n    command: [" + bin("preforkd-echo") + ", --http" + extra_args + "]\n" +
         "    workers: " + std::to_string(workers) + "\n    listen: [\"" + listen + "\"]\n" + more;
}

// argv of a process, joined by spaces ("" once it is gone).
std::string cmdline(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/cmdline");
  std::string raw((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  for (char& c : raw)
    if (c == '\0') c = ' ';
  return raw;
}

// Every worker of `program` is ready, of `generation`, none retiring, and there are `n`.
bool settled_on(const Preforkd& d, size_t n, uint64_t generation) {
  auto p = program_of(d.control({{"cmd", "status"}}), "web");
  if (p.is_null() || p["workers"].size() != n || p["generation"] != generation) return false;
  for (const auto& w : p["workers"])
    if (w["state"] != "ready" || w.value("retiring", false) || w["generation"] != generation) return false;
  return true;
}

std::string metrics(const Preforkd& d) { return d.control({{"cmd", "metrics"}})["text"].get<std::string>(); }

std::pair<int, std::string> preforkctl(const Preforkd& d, const std::vector<std::string>& args) {
  std::vector<std::string> argv = {bin("preforkctl"), "-s", d.control_socket()};
  argv.insert(argv.end(), args.begin(), args.end());
  return run(argv, 120s);
}

// One HTTP request to preforkd-echo --http on 127.0.0.1:port: a 200 came back.
bool echo_roundtrip_http(uint16_t port) {
  int fd = connect_tcp(port);
  if (fd < 0) return false;
  const std::string req = "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
  std::string out;
  timeval tv{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(req.size())) {
    char buf[4096];
    for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;) out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out.find(" 200 ") != std::string::npos;
}

size_t count(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

}  // namespace

TEST_CASE("guard: under load, a reload to a build that serves 2 s and then exits 4 is rolled back: no refused or "
          "reset connection, preforkctl reload exits 1 with the reason, the old command is back on every worker") {
  TempDir dir;
  uint16_t port = free_port();
  std::string addr = "127.0.0.1:" + std::to_string(port);
  // ready: exec and reload.settle 1s, the defaults: the new build is "proven" at 1 s, fails at 2 s.
  Preforkd d(dir, web(4, addr));
  REQUIRE(wait_until([&] { return settled_on(d, 4, 1); }));
  Load load(port, Load::Mode::Http, 16, Load::Options::paced());
  load.start();
  REQUIRE(load.wait_ok(200));

  d.rewrite(web(4, addr, ", --fail-after, 2000"));
  auto [code, out] = preforkctl(d, {"reload"});
  INFO(d.log());
  CHECK(code == 1);
  CHECK_MESSAGE(out.find("reload to generation 2 failed") != std::string::npos, out);
  CHECK_MESSAGE(out.find("web: generation 2 failed") != std::string::npos, out);
  CHECK_MESSAGE(out.find("(exit status 4): rolled back to generation 1") != std::string::npos, out);
  CHECK(d.log().find("rolling back to generation 1") != std::string::npos);

  // Back on the old command, every worker ready, and clients never noticed.
  CHECK(wait_until([&] { return settled_on(d, 4, 1); }, 20s));
  CHECK(load.wait_ok(200));
  for (pid_t pid : pids_of(d.control({{"cmd", "status"}}), "web")) {
    std::string argv = cmdline(pid);
    CHECK_MESSAGE(argv.find("--fail-after") == std::string::npos, pid << ": " << argv);
    CHECK(argv.find("preforkd-echo --http") != std::string::npos);
  }
  load.stop();
  auto c = load.counts();
  CHECK_MESSAGE(c.refused == 0, c.describe());
  CHECK_MESSAGE(c.reset == 0, c.describe());
  CHECK_MESSAGE(c.errors_total() == 0, c.describe());
  CHECK(c.ok > 0);
  std::string m = metrics(d);
  CHECK(m.find("preforkd_rollbacks_total{program=\"web\"} 1\n") != std::string::npos);
  CHECK(m.find("preforkd_generation{program=\"web\"} 1\n") != std::string::npos);
  CHECK(m.find("preforkd_reloads_total{result=\"failed\"} 1\n") != std::string::npos);
  // The display does not claim the generation that was rolled back.
  auto [scode, status] = preforkctl(d, {"status"});
  CHECK(scode == 0);
  CHECK_MESSAGE(status.find("configuration generation 2; web runs generation 1") != std::string::npos, status);
  CHECK(d.stop() == 0);
}

TEST_CASE("guard: preforkctl rollback inside the guard restores the previous command - outside it there is nothing "
          "to roll back to") {
  TempDir dir;
  std::string addr = "127.0.0.1:" + std::to_string(free_port());
  const std::string fast = "    reload: { settle: 100ms }\n";
  Preforkd d(dir, web(2, addr, "", fast));
  REQUIRE(wait_until([&] { return settled_on(d, 2, 1); }));
  auto [code, out] = preforkctl(d, {"rollback", "web"});
  CHECK(code == 1);
  CHECK_MESSAGE(out.find("web: nothing to roll back to") != std::string::npos, out);

  d.rewrite(web(2, addr, ", --io-threads, 2", fast));
  auto reloaded = preforkctl(d, {"reload"});
  REQUIRE_MESSAGE(reloaded.first == 0, reloaded.second);
  REQUIRE(wait_until([&] { return settled_on(d, 2, 2); }));
  auto p = program_of(d.control({{"cmd", "status"}}), "web");
  CHECK(p["phase"] == "guarding");
  CHECK(p["previous_generation"] == 1);
  CHECK(p["guard_left_s"].get<double>() > 20.0);
  auto [scode, status] = preforkctl(d, {"status"});
  CHECK_MESSAGE(status.find("guarding generation 2 for ") != std::string::npos, status);
  CHECK_MESSAGE(status.find("s more") != std::string::npos, status);

  auto [rcode, rout] = preforkctl(d, {"rollback", "web"});
  INFO(d.log());
  CHECK_MESSAGE(rcode == 0, rout);
  CHECK(rout == "rolled back web to generation 1\n");
  CHECK(settled_on(d, 2, 1));
  for (pid_t pid : pids_of(d.control({{"cmd", "status"}}), "web")) CHECK(cmdline(pid).find("--io-threads") == std::string::npos);
  CHECK(metrics(d).find("preforkd_rollbacks_total{program=\"web\"} 1\n") != std::string::npos);
  CHECK(d.log().find("web: rolling back from generation 2 to generation 1 (preforkctl rollback)") != std::string::npos);

  auto again = preforkctl(d, {"rollback", "web"});
  CHECK(again.first == 1);
  CHECK_MESSAGE(again.second.find("nothing to roll back to") != std::string::npos, again.second);
  CHECK(d.stop() == 0);
}

TEST_CASE("guard: a healthy reload survives its guard and is not rolled back") {
  TempDir dir;
  std::string addr = "127.0.0.1:" + std::to_string(free_port());
  const std::string policy = "    reload: { settle: 100ms, guard: 2s }\n";
  Preforkd d(dir, web(2, addr, "", policy));
  REQUIRE(wait_until([&] { return settled_on(d, 2, 1); }));
  d.rewrite(web(2, addr, ", --io-threads, 2", policy));
  REQUIRE(d.control({{"cmd", "reload"}}, 60s)["ok"] == true);
  CHECK(program_of(d.control({{"cmd", "status"}}), "web")["phase"] == "guarding");
  REQUIRE(d.wait_for_log("web: generation 2 held for 2000ms after its rollout; generation 1 is no longer kept", 10s) !=
          std::string::npos);
  auto p = program_of(d.control({{"cmd", "status"}}), "web");
  CHECK(p["phase"] == "running");
  CHECK_FALSE(p.contains("previous_generation"));
  CHECK(p["generation"] == 2);
  // A worker dying now is respawned with generation 2; there is no way back any more.
  auto before = pids_of(d.control({{"cmd", "status"}}), "web");
  ::kill(*before.begin(), SIGKILL);
  CHECK(wait_until([&] { return settled_on(d, 2, 2) && pids_of(d.control({{"cmd", "status"}}), "web") != before; }));
  CHECK(d.control({{"cmd", "rollback"}, {"program", "web"}})["ok"] == false);
  CHECK(metrics(d).find("preforkd_rollbacks_total{program=\"web\"} 0\n") != std::string::npos);
  CHECK(d.log().find("rolling back") == std::string::npos);
  CHECK(d.stop() == 0);
}

TEST_CASE("guard: a reload storm during a guard coalesces and keeps the way back to the generation before it") {
  TempDir dir;
  std::string addr = "127.0.0.1:" + std::to_string(free_port());
  const std::string fast = "    reload: { settle: 200ms }\n";
  Preforkd d(dir, web(3, addr, "", fast));
  REQUIRE(wait_until([&] { return settled_on(d, 3, 1); }));
  d.rewrite(web(3, addr, ", --io-threads, 2", fast));
  size_t mark = d.log().size();
  for (int i = 0; i < 20; ++i) ::kill(d.pid(), SIGHUP);  // no waits between them
  // Every reload that started has finished (a second, coalesced one included).
  REQUIRE(wait_until([&] {
    std::string log = d.log().substr(mark);
    size_t started = count(log, "preforkd: reload, generation ");
    return started >= 1 && count(log, "preforkd: reload to generation ") == started;
  }, 30s));
  std::string log = d.log().substr(mark);
  // One reload, and at most one more for everything that came meanwhile.
  size_t reloads = count(log, "preforkd: reload, generation ");
  CHECK(reloads >= 1);
  CHECK(reloads <= 2);
  CHECK(wait_until([&] {
    auto w = program_of(d.control({{"cmd", "status"}}), "web")["workers"];
    if (w.size() != 3) return false;
    for (const auto& x : w)
      if (x["state"] != "ready" || x.value("retiring", false) || x["generation"] != 2) return false;
    return true;
  }));
  // The file did not change for the second: the guard of the first still holds generation 1.
  auto p = program_of(d.control({{"cmd", "status"}}), "web");
  CHECK(p["phase"] == "guarding");
  CHECK(p["previous_generation"] == 1);
  auto r = d.control({{"cmd", "rollback"}, {"program", "web"}}, 60s);
  CHECK_MESSAGE(r["ok"] == true, r.dump());
  for (pid_t pid : pids_of(d.control({{"cmd", "status"}}), "web")) CHECK(cmdline(pid).find("--io-threads") == std::string::npos);
  CHECK(d.stop() == 0);
}

TEST_CASE("guard: the previous configuration's socket stays open during the guard and serves a rollback, or a "
          "reload back to it") {
  TempDir dir;
  uint16_t a = free_port(), b = free_port();
  std::string la = "127.0.0.1:" + std::to_string(a), lb = "127.0.0.1:" + std::to_string(b);
  const std::string fast = "    reload: { settle: 100ms }\n";
  Preforkd d(dir, web(2, la, "", fast));
  REQUIRE(wait_until([&] { return settled_on(d, 2, 1); }));
  // To port b: port a is kept, with nobody accepting on it, for the way back.
  d.rewrite(web(2, lb, "", fast));
  REQUIRE(d.control({{"cmd", "reload"}}, 60s)["ok"] == true);
  REQUIRE(wait_until([&] { return settled_on(d, 2, 2); }));
  CHECK(echo_roundtrip_http(b));
  // The rollback serves port a again, on the very same socket.
  REQUIRE(d.control({{"cmd", "rollback"}, {"program", "web"}}, 60s)["ok"] == true);
  CHECK(settled_on(d, 2, 1));
  CHECK(echo_roundtrip_http(a));
  CHECK(wait_until([&] { return connect_tcp(b, 200ms) < 0; }));  // b closes with generation 2's workers

  // Again to b, then a reload (not a rollback) back to a during the guard:
  // the kept socket is taken, not bound anew (which would fail).
  d.rewrite(web(2, lb, "", fast));
  REQUIRE(d.control({{"cmd", "reload"}}, 60s)["ok"] == true);
  d.rewrite(web(2, la, "", fast));
  auto r = d.control({{"cmd", "reload"}}, 60s);
  CHECK_MESSAGE(r["ok"] == true, r.dump() << d.log());
  CHECK(echo_roundtrip_http(a));
  CHECK(d.stop() == 0);
}
