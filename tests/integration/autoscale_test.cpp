// Load awareness, part 3: autoscaling between workers.min and workers.max,
// with a slow worker (preforkd-echo --serial --delay-ms) and real clients.
#include <doctest/doctest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "support/http.hpp"
#include "support/support.hpp"

using namespace preforkd::test;

namespace {

struct Clients {
  std::atomic<bool> stop{false};
  std::atomic<int> ok{0}, failed{0};
  std::vector<std::thread> threads;
  Clients(uint16_t port, int n, std::chrono::milliseconds pause = std::chrono::milliseconds(0)) {
    for (int i = 0; i < n; ++i)
      threads.emplace_back([this, port, pause] {
        while (!stop.load()) {
          (http_get_ok(port) ? ok : failed)++;
          std::this_thread::sleep_for(pause);
        }
      });
  }
  ~Clients() { join(); }
  void join() {
    stop = true;
    for (auto& t : threads)
      if (t.joinable()) t.join();
  }
};

}  // namespace

TEST_CASE("autoscale: a slow worker under load reaches max and never exceeds it - back to min after, no request fails") {
  TempDir dir;
  Preforkd d(dir, "programs:\n  web:\n    command: [" + bin("preforkd-echo") + ", --http, --serial, --delay-ms, \"50\"]\n"
                  "    listen: 127.0.0.1:0\n    workers: { min: 1, max: 3 }\n"
                  "    autoscale: { up_after: 300ms, down_after: 2s, cooldown: 1s }\n");
  uint16_t port = d.port();
  REQUIRE(d.wait_workers(1));
  size_t most = 0;
  auto watch = [&] {
    size_t n = d.workers().size();
    most = std::max(most, n);
    return n;
  };
  {
    Clients heavy(port, 12);
    bool reached = wait_until([&] { return watch() == 3; }, std::chrono::milliseconds(10000));
    CHECK(reached);
    for (int i = 0; i < 20; ++i) {  // 2 s more of load: still at most max
      watch();
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    heavy.join();
    CHECK(heavy.failed == 0);
    CHECK(heavy.ok > 0);
  }
  CHECK(most == 3);
  // A light client goes on while it scales down: stopping an idle worker
  // gracefully fails no request. Two steps of down_after (2 s) and a few s.
  Clients light(port, 1, std::chrono::milliseconds(200));  // a fifth of one worker
  bool back = wait_until([&] { return watch() == 1; }, std::chrono::milliseconds(10000));
  CHECK(back);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  light.join();
  CHECK(light.failed == 0);
  CHECK(light.ok > 0);
  CHECK(most == 3);
  std::string log = d.log();
  // --serial: one request at a time, accepting only when free, so the
  // backlog is in the kernel's queue (or every worker busy). Its workers
  // wait in EPOLLEXCLUSIVE order, so the light client keeps one busy and
  // leaves the others idle: the threaded preforkd-echo (blocking accept in
  // turns) would keep every worker a little busy and never idle for 2 s.
  CHECK_MESSAGE(log.find(", scaling up to 2\n") != std::string::npos, log);
  // preforkd-echo says BUSY=: a step down waits for a worker idle for down_after.
  // (How long it had been idle depends on when the sample came: at least
  // down_after, later on a slow machine.)
  CHECK_MESSAGE(log.find("web: a worker idle for ") != std::string::npos, log);
  CHECK(log.find("s, scaling down to 1\n") != std::string::npos);
  auto m = d.control({{"cmd", "metrics"}})["text"].get<std::string>();
  auto count = [&](const std::string& direction) {
    std::string key = "preforkd_autoscale_total{program=\"web\",direction=\"" + direction + "\"} ";
    auto at = m.find(key);
    return at == std::string::npos ? -1 : std::stoi(m.substr(at + key.size()));
  };
  CHECK(count("up") >= 2);
  CHECK(count("down") >= 2);
  CHECK(count("up") == count("down"));  // one step at a time, from 1 and back to 1
  CHECK(d.stop() == 0);
}

TEST_CASE("autoscale: preforkctl scale works within min and max, and is refused outside") {
  TempDir dir;
  Preforkd d(dir, "programs:\n  web:\n    command: [" + bin("preforkd-echo") + ", --http]\n"
                  "    listen: 127.0.0.1:0\n    workers: { min: 1, max: 3 }\n"
                  "    autoscale: { down_after: 1m }\n");
  REQUIRE(d.wait_workers(1));
  auto a = program_of(d.control({{"cmd", "status"}}), "web")["autoscale"];
  CHECK(a["min"] == 1);
  CHECK(a["max"] == 3);
  auto r = d.control({{"cmd", "scale"}, {"program", "web"}, {"workers", 3}});
  CHECK(r["ok"] == true);
  CHECK(d.wait_workers(3));
  r = d.control({{"cmd", "scale"}, {"program", "web"}, {"workers", 5}});
  CHECK(r["ok"] == false);
  CHECK(r["error"].get<std::string>().find("outside workers: {min: 1, max: 3}") != std::string::npos);
  CHECK(d.stop() == 0);
}
