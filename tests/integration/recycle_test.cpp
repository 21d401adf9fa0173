// Recycling (max_requests, max_memory): the replacement is started and proven
// ready before the old worker is stopped, so clients never see a refusal.
#include <doctest/doctest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <string>
#include <thread>

#include "support/support.hpp"

using namespace preforkd::test;

namespace {

// One HTTP/1.1 request on a fresh connection; true on a 200 answer.
bool http_get(uint16_t port) {
  int fd = connect_tcp(port);
  if (fd < 0) return false;
  const std::string req = "GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
  bool ok = send(fd, req.data(), req.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(req.size());
  std::string got;
  char buf[512];
  while (ok) {
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n < 0) ok = false;
    if (n <= 0) break;
    got.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return ok && got.rfind("HTTP/1.1 200", 0) == 0;
}

size_t count(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t pos = 0; (pos = text.find(needle, pos)) != std::string::npos; pos += needle.size()) ++n;
  return n;
}

}  // namespace

TEST_CASE("recycle: max_requests replaces workers under load without a refused or failed request") {
  TempDir dir;
  Preforkd d(dir, "programs:\n  web:\n    command: [" + bin("preforkd-echo") + ", --http]\n"
                  "    workers: 2\n    listen: [\"127.0.0.1:0\"]\n    max_requests: 200\n"
                  "    reload: { settle: 100ms }\n    stop_timeout: 5s\n");
  REQUIRE(d.wait_workers(2));
  uint16_t port = d.port();
  REQUIRE(port != 0);
  std::atomic<bool> stop{false};
  std::atomic<int> ok{0}, failed{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < 4; ++c)
    clients.emplace_back([&] {
      while (!stop) http_get(port) ? ++ok : ++failed;
    });
  bool recycled = wait_until([&] { return count(d.log(), "(recycle)") >= 4; }, 60s);
  stop = true;
  for (auto& t : clients) t.join();
  REQUIRE(recycled);
  CHECK(failed.load() == 0);
  MESSAGE("requests served " << ok.load() << ", failed " << failed.load());
  std::string log = d.log();
  CHECK(log.find("recycling (max_requests): starting its replacement first") != std::string::npos);
  CHECK(log.find("is proven, stopping it") != std::string::npos);
  CHECK(d.stop() == 0);
}

TEST_CASE("recycle: max_memory starts the replacement, waits until it is proven, then stops the old worker") {
  TempDir dir;
  // 1K is below any process's RSS: every worker is over it, every second.
  Preforkd d(dir, "programs:\n  fat:\n    command: " + bin("preforkd-test-worker") + "\n"
                  "    max_memory: 1K\n    reload: { settle: 200ms }\n");
  size_t recycling = d.wait_for_log("recycling (max_memory): starting its replacement first");
  REQUIRE(recycling != std::string::npos);
  size_t started = d.wait_for_log("started (restart 1)", 10s, recycling);
  size_t proven = d.wait_for_log("is proven, stopping it", 10s, recycling);
  size_t exited = d.wait_for_log("(recycle)", 10s, recycling);
  REQUIRE(started != std::string::npos);
  REQUIRE(proven != std::string::npos);
  REQUIRE(exited != std::string::npos);
  CHECK(started < proven);  // new before old
  CHECK(proven < exited);
  CHECK(d.log().find("RSS ") != std::string::npos);
  // Throughout, the program has its one worker serving, plus the old one while it drains.
  CHECK(d.stop() == 0);
  CHECK(zombie_children(d.pid()) == 0);
}

TEST_CASE("recycle: shutdown during a recycle stops old and new workers alike") {
  TempDir dir;
  Preforkd d(dir, "programs:\n  fat:\n    command: " + bin("preforkd-test-worker") + "\n"
                  "    max_memory: 1K\n    reload: { settle: 1h }\n");  // the old one waits forever
  REQUIRE(d.wait_for_log("recycling (max_memory)") != std::string::npos);
  REQUIRE(d.wait_workers(2));
  auto pids = d.workers();
  CHECK(d.stop() == 0);
  for (pid_t p : pids) CHECK(!pid_alive(p));
}
