// Listening sockets and the supervisor's own fds: TCP v4/v6, Unix paths,
// reuseport per-slot sockets kept across respawns, and CLOEXEC everywhere.
#include <doctest/doctest.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <set>
#include <sstream>

#include "support/support.hpp"

using namespace preforkd::test;

namespace {

std::string worker(const TempDir& dir) {
  return bin("preforkd-test-worker") + ", --dump-state, " + dir.file("state-%p.json");
}

// slot -> the socket inode at fd 3, from the newest dump of each pid alive now.
std::map<std::string, std::string> fd3_by_slot(const TempDir& dir, const std::vector<pid_t>& pids) {
  std::map<std::string, std::string> out;
  for (pid_t p : pids) {
    std::string path = dir.file("state-" + std::to_string(p) + ".json");
    if (!file_exists(path)) return {};
    auto j = read_json(path);
    for (const auto& f : j["fds"])
      if (f["fd"] == 3) out[j["env"]["PREFORKD_SLOT"].get<std::string>()] = f["target"].get<std::string>();
  }
  return out;
}

bool unix_echo(const std::string& path, const std::string& msg) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un sun{};
  sun.sun_family = AF_UNIX;
  std::snprintf(sun.sun_path, sizeof sun.sun_path, "%s", path.c_str());
  bool ok = connect(fd, reinterpret_cast<sockaddr*>(&sun), sizeof sun) == 0 &&
            send(fd, msg.data(), msg.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(msg.size());
  std::string got;
  char buf[256];
  while (ok && got.size() < msg.size()) {
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    got.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return ok && got == msg;
}

}  // namespace

TEST_CASE("T5 T8 every fd the supervisor holds is close-on-exec, its log file included - one thread") {
  TempDir dir;
  Preforkd d(dir, "supervisor:\n  log: { file: " + dir.file("preforkd-own.log") + " }\n"
                  "programs:\n  w:\n    command: [" + worker(dir) + "]\n    workers: 2\n"
                  "    listen: [\"127.0.0.1:0\", \"unix:" + dir.file("w.sock") + "\"]\n",
             {}, false);
  REQUIRE(wait_until([&] { return read_file(dir.file("preforkd-own.log")).find("worker(s) in") != std::string::npos; }));
  REQUIRE(d.wait_workers(2));
  int checked = 0;
  for (const auto& e : std::filesystem::directory_iterator("/proc/" + std::to_string(d.pid()) + "/fdinfo")) {
    int fd = std::stoi(e.path().filename().string());
    if (fd <= 2) continue;
    std::istringstream in(read_file(e.path().string()));
    std::string key, flags;
    while (in >> key) {
      if (key == "flags:") {
        in >> flags;
        break;
      }
    }
    // An fd closed between the listing and the read (a control connection,
    // an exec pipe) has no fdinfo left: it is no longer held, skip it.
    if (flags.empty()) continue;
    unsigned long f = std::stoul(flags, nullptr, 8);
    CHECK_MESSAGE((f & 02000000) != 0, "fd " << fd << " of preforkd is not close-on-exec");
    ++checked;
  }
  CHECK(checked >= 6);  // signalfd, epoll, timerfd, /dev/null, 2 sockets, the log, pipes
  // T8: signalfd needs every thread to block our signals: there is one thread.
  std::string status = read_file("/proc/" + std::to_string(d.pid()) + "/status");
  CHECK(status.find("\nThreads:\t1\n") != std::string::npos);
  // No worker sees the log file.
  REQUIRE(wait_until([&] {
    auto pids = d.workers();
    return std::all_of(pids.begin(), pids.end(), [&](pid_t p) {
      return file_exists(dir.file("state-" + std::to_string(p) + ".json"));
    });
  }));
  for (pid_t p : d.workers()) {
    auto j = read_json(dir.file("state-" + std::to_string(p) + ".json"));
    for (const auto& f : j["fds"]) CHECK(f["target"].get<std::string>().find("preforkd-own.log") == std::string::npos);
  }
  CHECK(d.stop() == 0);
}

TEST_CASE("sockets: a Unix socket serves, a stale socket file is replaced, the file is removed at exit") {
  TempDir dir;
  std::string path = dir.file("echo.sock");
  {
    // A stale socket file: bound once, nobody listening any more.
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un sun{};
    sun.sun_family = AF_UNIX;
    std::snprintf(sun.sun_path, sizeof sun.sun_path, "%s", path.c_str());
    REQUIRE(bind(fd, reinterpret_cast<sockaddr*>(&sun), sizeof sun) == 0);
    ::close(fd);
    REQUIRE(file_exists(path));
  }
  Preforkd d(dir, "programs:\n  echo:\n    command: " + bin("preforkd-echo") + "\n    workers: 2\n"
                  "    listen: [\"unix:" + path + "\"]\n");
  CHECK(wait_until([&] { return unix_echo(path, "over unix\n"); }));
  // A second preforkd must not steal a live socket.
  TempDir dir2;
  auto [code, out] = run({bin("preforkd"), "-c",
                          dir2.write("p.yaml", "programs:\n  echo:\n    command: " + bin("preforkd-echo") +
                                                   "\n    listen: [\"unix:" + path + "\"]\n")});
  CHECK(code == 1);
  CHECK(out.find("cannot bind unix:" + path + ": Address already in use") != std::string::npos);
  CHECK(unix_echo(path, "still mine\n"));
  CHECK(d.stop() == 0);
  CHECK(!file_exists(path));
}

TEST_CASE("sockets: IPv6 loopback") {
  int probe = socket(AF_INET6, SOCK_STREAM, 0);
  sockaddr_in6 sin6{};
  sin6.sin6_family = AF_INET6;
  sin6.sin6_addr = in6addr_loopback;
  bool have_v6 = bind(probe, reinterpret_cast<sockaddr*>(&sin6), sizeof sin6) == 0;
  ::close(probe);
  if (!have_v6) {
    MESSAGE("skipped: no IPv6 loopback on this machine");
    return;
  }
  TempDir dir;
  Preforkd d(dir, "programs:\n  echo:\n    command: " + bin("preforkd-echo") + "\n    workers: 1\n"
                  "    listen: [\"[::1]:0\"]\n");
  std::string log = d.log();
  auto pos = log.find("listening on [::1]:");
  REQUIRE(pos != std::string::npos);
  int port = std::atoi(log.c_str() + pos + 19);
  int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sin6.sin6_port = htons(static_cast<uint16_t>(port));
  timeval tv{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  REQUIRE(connect(fd, reinterpret_cast<sockaddr*>(&sin6), sizeof sin6) == 0);
  REQUIRE(send(fd, "v6\n", 3, MSG_NOSIGNAL) == 3);
  char buf[8] = {};
  CHECK(recv(fd, buf, 3, MSG_WAITALL) == 3);
  CHECK(std::string(buf) == "v6\n");
  ::close(fd);
  CHECK(d.stop() == 0);
}

TEST_CASE("reuseport: each slot has its own socket, kept across that slot's respawns") {
  TempDir dir;
  Preforkd d(dir, "programs:\n  w:\n    command: [" + worker(dir) + ", --serve]\n    workers: 3\n"
                  "    listen: [\"127.0.0.1:0\"]\n    reuseport: true\n"
                  "    backoff: { min: 10ms, max: 20ms, reset_after: 1ms }\n");
  REQUIRE(d.wait_workers(3));
  std::map<std::string, std::string> before;
  REQUIRE(wait_until([&] { before = fd3_by_slot(dir, d.workers()); return before.size() == 3; }));
  std::set<std::string> distinct;
  for (const auto& [slot, inode] : before) distinct.insert(inode);
  CHECK(distinct.size() == 3);  // one socket per slot
  uint16_t port = d.port();
  REQUIRE(port != 0);
  // Every connection to the one port is served by some worker.
  for (int i = 0; i < 30; ++i) {
    int fd = connect_tcp(port);
    REQUIRE(fd >= 0);
    char buf[32] = {};
    CHECK(recv(fd, buf, sizeof buf - 1, 0) > 0);
    ::close(fd);
  }
  auto pids = d.workers();
  for (pid_t p : pids) ::kill(p, SIGKILL);
  std::map<std::string, std::string> after;
  REQUIRE(wait_until([&] {
    auto now = d.workers();
    if (now.size() != 3 || std::any_of(now.begin(), now.end(), [&](pid_t p) {
          return std::find(pids.begin(), pids.end(), p) != pids.end();
        }))
      return false;
    after = fd3_by_slot(dir, now);
    return after.size() == 3;
  }));
  CHECK(after == before);  // same socket per slot, same slot numbers
  CHECK(d.stop() == 0);
}

TEST_CASE("USR1 reopens the log file (logrotate)") {
  TempDir dir;
  std::string logfile = dir.file("preforkd-own.log");
  Preforkd d(dir, "supervisor:\n  log: { file: " + logfile + " }\n"
                  "programs:\n  w:\n    command: " + bin("preforkd-test-worker") + "\n",
             {}, false);
  REQUIRE(wait_until([&] { return read_file(logfile).find("worker(s) in") != std::string::npos; }));
  REQUIRE(std::rename(logfile.c_str(), (logfile + ".1").c_str()) == 0);
  d.process().signal(SIGUSR1);
  CHECK(wait_until([&] { return read_file(logfile).find("log file reopened") != std::string::npos; }));
  CHECK(d.stop() == 0);
  CHECK(read_file(logfile).find("shutdown complete") != std::string::npos);
  CHECK(read_file(logfile + ".1").find("shutdown complete") == std::string::npos);
}
