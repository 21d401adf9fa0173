// "After start-up, preforkd does not die" (STYLE 3.1.5): the real preforkd
// with syscall failures injected through PREFORKD_FAULTS (sys/fault.hpp, a
// tests-only seam). Each failure must cost at most the one worker or client
// it hit; preforkd logs it, backs off where that applies, and recovers.
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <sstream>
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
std::string echo_program(const std::string& backoff = "{ min: 200ms, max: 1s, reset_after: 10ms }",
                         const std::string& stdout_target = "null") {
  return "programs:\n"
         "  echo:\n"
         "    command: " + bin("preforkd-echo") + "\n"
         "    workers: 3\n"
         "    listen: [\"127.0.0.1:0\"]\n"
         "    stdout: " + stdout_target + "\n"
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

// The log from `mark` on, without the seam's own announcements (they name
// the errno too, and are the test's, not preforkd's, way of speaking).
std::string preforkd_lines(const std::string& log, size_t mark = 0) {
  std::string out;
  size_t at = std::min(mark, log.size());
  while (at < log.size()) {
    size_t end = log.find('\n', at);
    if (end == npos) end = log.size();
    std::string line = log.substr(at, end - at);
    if (line.find("PREFORKD_FAULTS") == npos) out += line + "\n";
    at = end + 1;
  }
  return out;
}

// What a client got for one request: the bytes, and whether preforkd closed
// the connection (EOF) or left it hanging until `timeout`.
struct Answer {
  std::string bytes;
  bool closed = false;
};

Answer exchange(int fd, const std::string& request, std::chrono::milliseconds timeout) {
  Answer a;
  if (fd < 0) return a;
  timeval tv{static_cast<time_t>(timeout.count() / 1000), static_cast<suseconds_t>(timeout.count() % 1000 * 1000)};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  if (::send(fd, request.data(), request.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(request.size())) {
    a.closed = errno == EPIPE || errno == ECONNRESET;  // closed before the request was even sent
    ::close(fd);
    return a;
  }
  char buf[8192];
  for (;;) {
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n > 0) {
      a.bytes.append(buf, static_cast<size_t>(n));
      continue;
    }
    a.closed = n == 0 || errno == ECONNRESET;
    break;
  }
  ::close(fd);
  return a;
}

// One control request line; the connection is read until preforkd closes it
// or `timeout` (below the control socket's 10 s idle timeout) passes.
Answer control_exchange(const std::string& socket_path, const std::string& line, std::chrono::milliseconds timeout = 3s) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un sun{};
  sun.sun_family = AF_UNIX;
  std::snprintf(sun.sun_path, sizeof sun.sun_path, "%s", socket_path.c_str());
  if (::connect(fd, reinterpret_cast<sockaddr*>(&sun), sizeof sun) != 0) {
    ::close(fd);
    return {};
  }
  return exchange(fd, line + "\n", timeout);
}

// One HTTP/1.0 request to 127.0.0.1:port (3 s: below the metrics listener's
// 5 s request timeout).
Answer http_get(uint16_t port, const std::string& path, std::chrono::milliseconds timeout = 3s) {
  return exchange(connect_tcp(port), "GET " + path + " HTTP/1.0\r\nHost: x\r\n\r\n", timeout);
}

// How long ago `pid` started (from /proc), or 0 if unknown.
std::chrono::milliseconds age(pid_t pid) {
  std::string stat = read_file("/proc/" + std::to_string(pid) + "/stat");
  size_t paren = stat.rfind(')');
  if (paren == npos) return 0ms;
  std::istringstream fields(stat.substr(paren + 2));
  std::string field;
  for (int i = 3; i <= 22 && fields >> field; ++i) {  // field 22: starttime, in clock ticks since boot
  }
  double uptime = std::atof(read_file("/proc/uptime").c_str());
  double started = std::atof(field.c_str()) / static_cast<double>(sysconf(_SC_CLK_TCK));
  return std::chrono::milliseconds(static_cast<long long>((uptime - started) * 1000));
}

// A worker killed this long after its start is past reset_after (10 ms
// here): its death starts no failure streak, so the failures that follow
// are numbered from 1.
void wait_past_reset_after(pid_t pid) { REQUIRE(wait_until([&] { return age(pid) >= 200ms; })); }

// Kills one live worker (once past reset_after) and waits for its slot to have a new one.
pid_t kill_one_and_wait(const Preforkd& d, size_t index = 0) {
  auto before = live_workers(d);
  REQUIRE(before.size() > index);
  pid_t victim = before[index];
  wait_past_reset_after(victim);
  REQUIRE(kill(victim, SIGKILL) == 0);
  // One listing per look: two could see the victim still alive in the
  // first and already gone (its slot not yet refilled) in the second.
  REQUIRE_MESSAGE(wait_until([&] {
                    auto now = live_workers(d);
                    return now.size() == before.size() && !has(now, victim);
                  }),
                  d.log());
  return victim;
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
  // One line per failed fork, not more (the third may still be on its way).
  CHECK(wait_until([&] { return count(preforkd_lines(d.log(), mark), "fork: Resource temporarily unavailable") == 3; }));
  bool back = wait_until([&] {
    auto now = live_workers(d);
    return now.size() == 3 && !has(now, victim);
  }, 20s);
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
  // the control socket, then per worker its notify pipe (stdout/stderr are
  // not captured) and its start's watch fd (sys::spawn_async) = 4 + 2 * 3 =
  // 10. Call 11 is the first registration of the respawn after the kill.
  Preforkd d(dir, echo_program(), {}, true, {}, "", {{"PREFORKD_FAULTS", "epoll_ctl:ENOMEM:11:1"}});
  REQUIRE(d.wait_workers(3));
  REQUIRE_MESSAGE(d.log().find("injected") == npos,
                  "the fault fired during start-up: preforkd now makes more than 10 epoll_ctl calls there; "
                  "this test's N must be that count + 1\n", d.log());
  uint16_t port = d.port();
  auto before = live_workers(d);
  REQUIRE(before.size() == 3);
  size_t mark = d.log().size();

  pid_t victim = before[0];
  REQUIRE(kill(victim, SIGKILL) == 0);
  REQUIRE_MESSAGE(d.wait_for_log("epoll_ctl call 11: injected ENOMEM", 10s, mark) != npos, d.log());
  bool back = wait_until([&] { return d.process().running() && recovered(d, victim); }, 20s);
  CHECK_MESSAGE(d.process().running(), "preforkd died of one failed epoll_ctl:\n", d.log());
  REQUIRE_MESSAGE(back, d.log());
  // Said once: the failed call, then the start it cost.
  std::string said = preforkd_lines(d.log(), mark);
  CHECK_MESSAGE(count(said, "epoll_ctl: Cannot allocate memory") == 1, said);
  CHECK_MESSAGE(count(said, "cannot watch its pipes") == 1, said);
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

TEST_CASE("faults: pipe2 fails with EMFILE for a respawn's notify pipe, twice: one line per try, backoff, no fd "
          "leaked, the slot serves again") {
  TempDir dir;
  // pipe2 at start-up: per worker its notify pipe and its start's watch
  // pipe (sys::spawn_async) = 6. The respawn after the kill: tries 1 and 2
  // (calls 7 and 8, their notify pipes) fail; try 3 works.
  Preforkd d(dir, echo_program(), {}, true, {}, "", {{"PREFORKD_FAULTS", "pipe2:EMFILE:7:2"}});
  REQUIRE(d.wait_workers(3));
  REQUIRE(wait_until([&] { return all_ready(d); }));
  REQUIRE_MESSAGE(d.log().find("injected") == npos,
                  "the fault fired during start-up: preforkd now makes more than 6 pipe2 calls there\n", d.log());
  uint16_t port = d.port();
  auto before = live_workers(d);
  int fds_before = count_fds(d.pid());
  size_t mark = d.log().size();

  pid_t victim = before[2];
  wait_past_reset_after(victim);
  auto killed_at = Clock::now();
  REQUIRE(kill(victim, SIGKILL) == 0);
  REQUIRE_MESSAGE(d.wait_for_log("pipe2 call 8: injected EMFILE", 10s, mark) != npos, d.log());
  REQUIRE_MESSAGE(wait_until([&] { return d.process().running() && recovered(d, victim); }, 20s), d.log());
  auto took = Clock::now() - killed_at;
  // Said once per failed try, with what it does next: try 1 (an error) is
  // retried at once, try 2 (a warning) after min = 200 ms (± 20 %).
  std::string said = preforkd_lines(d.log(), mark);
  CHECK_MESSAGE(count(said, "Too many open files") == 2, said);
  CHECK_MESSAGE(count(said, "]: cannot prepare a worker: pipe: Too many open files\n") == 1, said);
  CHECK_MESSAGE(count(said, "]: cannot prepare a worker: pipe: Too many open files (failure 2 in a row, next try in") == 1,
                said);
  CHECK_MESSAGE(took >= 150ms, "respawned after ", std::chrono::duration_cast<std::chrono::milliseconds>(took).count(),
                " ms: no backoff after the second failed try");
  auto after = live_workers(d);
  for (pid_t p : before)
    if (p != victim) CHECK_MESSAGE(has(after, p), "worker ", p, " was replaced");
  // Nothing of the failed tries is left open.
  CHECK_MESSAGE(wait_until([&] { return count_fds(d.pid()) <= fds_before; }), "fds: ", fds_before, " before, ",
                count_fds(d.pid()), " after");
  CHECK(echo_roundtrip(port, "still serving\n"));
  CHECK(d.stop() == 0);
}

TEST_CASE("faults: a worker's stdout file cannot be opened for 3 tries: one line per try, backoff, then it starts") {
  TempDir dir;
  std::string out = dir.file("echo-stdout.log");
  // open() at start-up: the config file, /dev/null, then the stdout file of
  // each worker = 5. The respawn's tries 1-3 fail (calls 6-8), try 4 works.
  Preforkd d(dir, echo_program("{ min: 100ms, max: 1s, reset_after: 10ms }", out), {}, true, {}, "",
             {{"PREFORKD_FAULTS", "open:EACCES:6:3"}});
  REQUIRE(d.wait_workers(3));
  REQUIRE(wait_until([&] { return all_ready(d); }));
  REQUIRE_MESSAGE(d.log().find("injected") == npos,
                  "the fault fired during start-up: preforkd now makes more than 5 open calls there\n", d.log());
  uint16_t port = d.port();
  auto before = live_workers(d);
  size_t mark = d.log().size();

  pid_t victim = before[0];
  wait_past_reset_after(victim);
  auto killed_at = Clock::now();
  REQUIRE(kill(victim, SIGKILL) == 0);
  REQUIRE_MESSAGE(d.wait_for_log("open call 8: injected EACCES", 10s, mark) != npos, d.log());
  REQUIRE_MESSAGE(wait_until([&] { return d.process().running() && recovered(d, victim); }, 20s), d.log());
  auto took = Clock::now() - killed_at;
  std::string said = preforkd_lines(d.log(), mark);
  std::string what = "cannot open " + out + ": Permission denied";
  CHECK_MESSAGE(count(said, what) == 3, said);
  CHECK_MESSAGE(count(said, "]: cannot prepare a worker: " + what + "\n") == 1, said);
  CHECK_MESSAGE(count(said, what + " (failure 2 in a row, next try in") == 1, said);
  CHECK_MESSAGE(count(said, what + " (failure 3 in a row, next try in") == 1, said);
  // Tries 3 and 4 wait min and 2 * min: 100 + 200 ms, ± 20 %.
  CHECK_MESSAGE(took >= 240ms, "respawned after ", std::chrono::duration_cast<std::chrono::milliseconds>(took).count(),
                " ms: no backoff between the failed tries");
  auto after = live_workers(d);
  for (pid_t p : before)
    if (p != victim) CHECK_MESSAGE(has(after, p), "worker ", p, " was replaced");
  CHECK(echo_roundtrip(port, "still serving\n"));
  CHECK(d.stop() == 0);
}

TEST_CASE("faults: socket fails with EMFILE for a listener at start-up: exit 1, one message naming it, nothing left") {
  TempDir dir;
  // socket() at start-up: NOTIFY_SOCKET (call 1), then the listener (2).
  Preforkd d(dir, echo_program(), {}, false, {}, "", {{"PREFORKD_FAULTS", "socket:EMFILE:2:1"}});
  auto status = d.process().wait(10s);
  REQUIRE_MESSAGE(status.has_value(), "preforkd kept running without its listening socket\n", d.log());
  CHECK_MESSAGE(WIFEXITED(*status), d.log());
  CHECK_MESSAGE(WEXITSTATUS(*status) == 1, d.log());
  std::string said = preforkd_lines(d.log());
  CHECK_MESSAGE(count(said, "cannot create a socket for 127.0.0.1:0: Too many open files") == 1, said);
  CHECK_MESSAGE(count(said, "Too many open files") == 1, said);
  CHECK(children_of(d.pid()).empty());
  CHECK_FALSE(file_exists(d.control_socket()));
}

TEST_CASE("faults: socket fails with EMFILE for NOTIFY_SOCKET at start-up: said once, workers start without it") {
  TempDir dir;
  Preforkd d(dir, echo_program(), {}, true, {}, "", {{"PREFORKD_FAULTS", "socket:EMFILE:1:1"}});
  REQUIRE(d.wait_workers(3));
  REQUIRE(wait_until([&] { return all_ready(d); }));
  std::string said = preforkd_lines(d.log());
  CHECK_MESSAGE(count(said, "cannot open the NOTIFY_SOCKET socket: Too many open files; workers get no NOTIFY_SOCKET") == 1,
                said);
  CHECK_MESSAGE(count(said, "Too many open files") == 1, said);
  CHECK(echo_roundtrip(d.port(), "serving without NOTIFY_SOCKET\n"));
  CHECK(d.stop() == 0);
}

TEST_CASE("faults: socket fails with EMFILE for a reload that adds a listener: the old generation keeps serving, "
          "the next reload works") {
  TempDir dir;
  uint16_t second = free_port();
  std::string yaml = "programs:\n"
                     "  echo:\n"
                     "    command: " + bin("preforkd-echo") + "\n"
                     "    workers: 3\n"
                     "    stdout: null\n"
                     "    stderr: null\n"
                     "    reload: { settle: 100ms }\n";
  // socket() at start-up: NOTIFY_SOCKET, the listener, the control socket =
  // 3. The reload keeps the listener (the very same socket) and needs one
  // new one: call 4 fails.
  Preforkd d(dir, yaml + "    listen: [\"127.0.0.1:0\"]\n", {}, true, {}, "",
             {{"PREFORKD_FAULTS", "socket:EMFILE:4:1"}});
  REQUIRE(d.wait_workers(3));
  REQUIRE(wait_until([&] { return all_ready(d); }));
  REQUIRE_MESSAGE(d.log().find("injected") == npos, d.log());
  uint16_t port = d.port();
  auto before = live_workers(d);
  size_t mark = d.log().size();

  std::string added = "127.0.0.1:" + std::to_string(second);
  d.rewrite(yaml + "    listen: [\"127.0.0.1:0\", \"" + added + "\"]\n");
  auto [code, out] = run({bin("preforkctl"), "-s", d.control_socket(), "reload"});
  CHECK_MESSAGE(code == 1, out);
  std::string what = "cannot create a socket for " + added + ": Too many open files";
  CHECK_MESSAGE(out.find(what) != npos, out);
  CHECK(d.process().running());
  auto status = d.control({{"cmd", "status"}});
  CHECK(status["generation"] == 1);
  CHECK(live_workers(d) == before);
  CHECK(echo_roundtrip(port, "old generation\n"));
  CHECK(connect_tcp(second, 500ms) < 0);  // nothing half-bound is left behind
  CHECK(d.control({{"cmd", "metrics"}})["text"].get<std::string>().find(
            "preforkd_reloads_total{result=\"failed\"} 1") != npos);
  std::string said = preforkd_lines(d.log(), mark);
  CHECK_MESSAGE(count(said, what) == 1, said);

  // The fault is over: the same file now reloads, every worker replaced.
  std::tie(code, out) = run({bin("preforkctl"), "-s", d.control_socket(), "reload"});
  CHECK_MESSAGE(code == 0, out, d.log());
  CHECK(d.control({{"cmd", "status"}})["generation"] == 2);
  CHECK(wait_until([&] { return all_ready(d); }));
  CHECK(echo_roundtrip(port, "first listener\n"));
  CHECK(echo_roundtrip(second, "added listener\n"));
  CHECK(d.stop() == 0);
}

TEST_CASE("faults: epoll_ctl fails with ENOMEM for three control clients: each dropped, said once, the next one works") {
  TempDir dir;
  // epoll_ctl at start-up = 10 (see above); calls 11-13 are the first three clients.
  Preforkd d(dir, echo_program(), {}, true, {}, "", {{"PREFORKD_FAULTS", "epoll_ctl:ENOMEM:11:3"}});
  REQUIRE(d.wait_workers(3));
  auto before = live_workers(d);
  REQUIRE(before.size() == 3);
  REQUIRE_MESSAGE(d.log().find("injected") == npos, d.log());
  int fds_before = count_fds(d.pid());
  for (int i = 0; i < 3; ++i) {
    // Dropped: closed at once, not left hanging until the idle timeout.
    Answer a = control_exchange(d.control_socket(), R"({"cmd":"version"})");
    CHECK_MESSAGE(a.bytes.empty(), "client ", i + 1, " got a reply: ", a.bytes);
    CHECK_MESSAGE(a.closed, "client ", i + 1, " was left hanging");
  }
  CHECK_MESSAGE(d.wait_for_log("epoll_ctl call 13: injected ENOMEM") != npos, d.log());
  CHECK_MESSAGE(wait_until([&] { return count_fds(d.pid()) <= fds_before; }), "fds: ", fds_before, " before, ",
                count_fds(d.pid()), " after");
  auto [code, out] = run({bin("preforkctl"), "-s", d.control_socket(), "status"});
  CHECK_MESSAGE(code == 0, out, d.log());
  CHECK(d.control({{"cmd", "version"}})["ok"] == true);
  CHECK(d.process().running());
  CHECK(live_workers(d) == before);
  std::string said = preforkd_lines(d.log());
  CHECK_MESSAGE(count(said, "Cannot allocate memory") == 1, said);
  CHECK(echo_roundtrip(d.port(), "still serving\n"));
  CHECK(d.stop() == 0);
}

TEST_CASE("faults: epoll_ctl fails with ENOMEM for two metrics clients: each dropped, said once, the next one works") {
  TempDir dir;
  uint16_t mport = free_port();
  // epoll_ctl at start-up: 10, + the metrics listener = 11; calls 12 and 13
  // are the first two clients' registrations.
  Preforkd d(dir, "supervisor:\n  metrics: \"127.0.0.1:" + std::to_string(mport) + "\"\n" + echo_program(), {}, true,
             {}, "", {{"PREFORKD_FAULTS", "epoll_ctl:ENOMEM:12:2"}});
  REQUIRE(d.wait_workers(3));
  auto before = live_workers(d);
  REQUIRE(before.size() == 3);
  REQUIRE_MESSAGE(d.log().find("injected") == npos, d.log());
  int fds_before = count_fds(d.pid());
  for (int i = 0; i < 2; ++i) {
    Answer a = http_get(mport, "/metrics");
    CHECK_MESSAGE(a.bytes.empty(), "client ", i + 1, " got: ", a.bytes.substr(0, 200));
    CHECK_MESSAGE(a.closed, "client ", i + 1, " was left hanging");
  }
  CHECK_MESSAGE(d.wait_for_log("epoll_ctl call 13: injected ENOMEM") != npos, d.log());
  CHECK_MESSAGE(wait_until([&] { return count_fds(d.pid()) <= fds_before; }), "fds: ", fds_before, " before, ",
                count_fds(d.pid()), " after");
  Answer a = http_get(mport, "/metrics");
  CHECK_MESSAGE(a.bytes.rfind("HTTP/1.1 200", 0) == 0, a.bytes.substr(0, 200), d.log());
  CHECK(a.bytes.find("preforkd_up 1") != npos);
  CHECK(d.process().running());
  CHECK(live_workers(d) == before);
  std::string said = preforkd_lines(d.log());
  CHECK_MESSAGE(count(said, "Cannot allocate memory") == 1, said);
  CHECK(d.stop() == 0);
}

TEST_CASE("faults: write fails with ENOSPC on preforkd's log file: dropped lines are counted, said once on stderr, "
          "the log says how many once it works again") {
  TempDir dir;
  std::string logfile = dir.file("preforkd-own.log");
  // At level warn preforkd writes nothing at start-up, and every line of
  // this test is a warning (flushed at once): write() call n is the n-th
  // killed worker's line. The control socket (whose replies are writes too)
  // is not used until the end.
  uint16_t port = free_port();
  std::string yaml = echo_program();
  yaml.replace(yaml.find("127.0.0.1:0"), 11, "127.0.0.1:" + std::to_string(port));
  Preforkd d(dir, "supervisor:\n  log: { level: warn, file: " + logfile + " }\n" + yaml, {}, false, {}, "",
             {{"PREFORKD_FAULTS", "write:ENOSPC:1:3"}});
  REQUIRE_MESSAGE(d.wait_workers(3), d.log());
  REQUIRE_MESSAGE(read_file(logfile).empty(), read_file(logfile));
  std::vector<pid_t> victims;
  for (int i = 0; i < 3; ++i) victims.push_back(kill_one_and_wait(d));
  CHECK_MESSAGE(d.wait_for_log("write call 3: injected ENOSPC") != npos, d.log());
  CHECK(d.process().running());
  CHECK(live_workers(d).size() == 3);
  CHECK_MESSAGE(read_file(logfile).empty(), read_file(logfile));
  // Said once on stderr (the journal under systemd), not once per line.
  std::string said = preforkd_lines(d.log());
  CHECK_MESSAGE(count(said, "cannot write to the log file " + logfile + ": No space left on device; dropping log "
                            "lines until it works again") == 1, said);

  // The fault is over: the next line goes in, after the count of lost ones.
  pid_t fourth = kill_one_and_wait(d);
  CHECK(wait_until([&] { return read_file(logfile).find("pid " + std::to_string(fourth) + ": killed by signal 9") != npos; }));
  std::string log = read_file(logfile);
  CHECK_MESSAGE(count(log, "could not write to this file for a while (No space left on device): 3 log line(s) lost") == 1,
                log);
  CHECK(log.find("could not write") < log.find("pid " + std::to_string(fourth)));
  for (pid_t v : victims) CHECK(log.find("pid " + std::to_string(v) + ":") == npos);
  said = preforkd_lines(d.log());
  CHECK_MESSAGE(count(said, "cannot write to the log file") == 1, said);
  CHECK_MESSAGE(count(said, "writing to the log file " + logfile + " works again; 3 line(s) were lost") == 1, said);
  CHECK(echo_roundtrip(port, "still serving\n"));
  CHECK(all_ready(d));
  CHECK(d.stop() == 0);
}

TEST_CASE("faults: workers die while the USR2 check is finishing, reaped with it in one batch: preforkd acts on "
          "their deaths before it hands over, and every slot comes back") {
  TempDir dir;
  // preforkd runs from a copy of the binary; that file is then replaced (as
  // a package upgrade does) by a wrapper whose --upgrade-check takes a
  // second, which gives the test time to stop preforkd while it runs.
  std::string exe = dir.file("preforkd"), real = dir.file("preforkd.real");
  REQUIRE(run({"/bin/cp", bin("preforkd"), exe}).first == 0);
  REQUIRE(run({"/bin/cp", bin("preforkd"), real}).first == 0);
  Preforkd d(dir, echo_program(), {}, true, {}, exe);
  REQUIRE(d.wait_workers(3));
  REQUIRE(wait_until([&] { return all_ready(d); }));
  std::string wrapper = dir.write("preforkd.new", "#!/bin/sh\ncase \" $* \" in *\" --upgrade-check \"*) sleep 1 ;; esac\n"
                                                  "exec " + real + " \"$@\"\n");
  REQUIRE(::chmod(wrapper.c_str(), 0755) == 0);
  REQUIRE(::rename(wrapper.c_str(), exe.c_str()) == 0);
  auto workers = live_workers(d);
  for (pid_t w : workers) wait_past_reset_after(w);
  size_t mark = d.log().size();

  REQUIRE(::kill(d.pid(), SIGUSR2) == 0);
  pid_t check = 0;
  REQUIRE(wait_until([&] {
    for (pid_t c : children_of(d.pid()))
      if (read_file("/proc/" + std::to_string(c) + "/cmdline").find("--upgrade-check") != npos) check = c;
    return check != 0;
  }));
  // While preforkd is stopped, two workers die and the check finishes: the
  // next waitpid() loop collects all three (the workers, older, first).
  REQUIRE(::kill(d.pid(), SIGSTOP) == 0);
  REQUIRE(wait_until([&] { return proc_state(d.pid()) == 'T'; }));
  REQUIRE(::kill(workers[0], SIGKILL) == 0);
  REQUIRE(::kill(workers[1], SIGKILL) == 0);
  bool all_zombies = wait_until([&] {
    return proc_state(workers[0]) == 'Z' && proc_state(workers[1]) == 'Z' && proc_state(check) == 'Z';
  }, 20s);
  REQUIRE(::kill(d.pid(), SIGCONT) == 0);
  REQUIRE_MESSAGE(all_zombies, "the check did not finish while preforkd was stopped");

  REQUIRE_MESSAGE(d.wait_for_log("took over", 20s, mark) != npos, d.log());
  for (int i = 0; i < 2; ++i)
    CHECK_MESSAGE(d.log().find("pid " + std::to_string(workers[static_cast<size_t>(i)]) + ": killed by signal 9", mark) != npos,
                  "the death of a worker reaped with the check was never acted on:\n", d.log().substr(mark));
  CHECK_MESSAGE(wait_until([&] { return d.process().running() && live_workers(d).size() == 3 && all_ready(d); }, 10s),
                "a slot whose worker died with the check never came back:\n", d.log().substr(mark));
  CHECK(zombie_children(d.pid()) == 0);
  CHECK(echo_roundtrip(d.port(), "after the upgrade\n"));
  CHECK(d.stop() == 0);
}
