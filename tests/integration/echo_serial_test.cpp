// preforkd-echo --http --serial: one request at a time, a connection accepted
// only when the worker is free, so what it cannot serve yet waits in the
// kernel's accept queue, where preforkd sees it (preforkd_listen_queue).
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

TEST_CASE("echo --serial: while its one request is served, further connections wait in the accept queue") {
  TempDir dir;
  uint16_t mport = free_port();
  Preforkd d(dir, "supervisor:\n  metrics: \"127.0.0.1:" + std::to_string(mport) + "\"\n"
                  "programs:\n  web:\n    command: [" + bin("preforkd-echo") +
                  ", --http, --serial, --delay-ms, \"800\"]\n"
                  "    listen: 127.0.0.1:0\n    workers: 1\n    ready: notify\n");
  uint16_t port = d.port();
  const std::string queue = "preforkd_listen_queue{program=\"web\",listen=\"web\"}";
  const std::string busy = "preforkd_workers_busy{program=\"web\"}";
  REQUIRE(wait_until([&] { return program_of(d.control({{"cmd", "status"}}), "web")["workers_reporting_busy"] == 1; }));
  std::atomic<int> ok{0};
  std::vector<std::string> replies(4);
  auto get = [&](int i) {
    replies[static_cast<size_t>(i)] = http_exchange(port, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    if (replies[static_cast<size_t>(i)].rfind("HTTP/1.1 200", 0) == 0) ++ok;
  };
  std::vector<std::thread> clients;
  clients.emplace_back(get, 0);
  REQUIRE(wait_until([&] { return metric_sample(scrape_metrics(mport), busy) == 1; }));
  for (int i = 1; i < 4; ++i) clients.emplace_back(get, i);
  // The threaded server would have accepted all three at once (queue 0).
  // (The test clients give up after 5 s: 4 x 800 ms stays well below.)
  CHECK(wait_until([&] { return metric_sample(scrape_metrics(mport), queue) == 3; }));
  for (auto& t : clients) t.join();
  CHECK_MESSAGE(ok == 4, replies[0] << "|" << replies[1] << "|" << replies[2] << "|" << replies[3]);  // each one served in turn, none lost
  CHECK(metric_sample(scrape_metrics(mport), queue) == 0);
  CHECK(wait_until([&] { return metric_sample(scrape_metrics(mport), busy) == 0; }));
  CHECK(d.stop() == 0);
}

TEST_CASE("echo --serial: needs --http, and says so") {
  auto [code, out] = run({bin("preforkd-echo"), "--serial", "--listen", "127.0.0.1:0"});
  CHECK(code == 2);
  CHECK_MESSAGE(out.find("--serial needs --http") != std::string::npos, out);
}
