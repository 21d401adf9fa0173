// Load awareness, part 2: BUSY=1 / BUSY=0 from the workers, kept per worker
// by preforkd: busy counts, busy seconds, and "unknown" for a worker that
// never says.
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

}  // namespace

TEST_CASE("busy: a worker that says BUSY=1 is busy - one that never says is unknown, not idle") {
  TempDir dir;
  uint16_t mport = free_port();
  Preforkd d(dir, "supervisor:\n  metrics: \"127.0.0.1:" + std::to_string(mport) + "\"\n"
                  "programs:\n  says:\n    command: [" + bin("preforkd-test-worker") + ", --notify, BUSY=1]\n"
                  "    workers: 2\n"
                  "  silent:\n    command: [" + bin("preforkd-test-worker") + "]\n    workers: 2\n");
  REQUIRE(wait_until([&] { return metric_sample(scrape_metrics(mport), "preforkd_workers_busy{program=\"says\"}") == 2; }));
  std::string text = scrape_metrics(mport);
  CHECK(metric_sample(text, "preforkd_workers_busy{program=\"silent\"}") == 0);
  CHECK(metric_sample(text, "preforkd_worker_busy_seconds_total{program=\"silent\"}") == 0);
  auto status = d.control({{"cmd", "status"}});
  CHECK(program_of(status, "says")["workers_busy"] == 2);
  CHECK(program_of(status, "says")["workers_reporting_busy"] == 2);
  CHECK(program_of(status, "says")["workers"][0]["busy"] == true);
  CHECK(program_of(status, "silent")["workers_reporting_busy"] == 0);
  CHECK(program_of(status, "silent")["workers"][0]["busy"].is_null());
  auto [code, out] = run({bin("preforkctl"), "-s", d.control_socket(), "status"});
  CHECK(code == 0);
  CHECK_MESSAGE(out.find("says     running  2/2    -      2/2   1           -\n") != std::string::npos, out);
  CHECK_MESSAGE(out.find("silent   running  2/2    -      -     1           -\n") != std::string::npos, out);
  // Busy seconds grow while they stay busy.
  double before = metric_sample(scrape_metrics(mport), "preforkd_worker_busy_seconds_total{program=\"says\"}");
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  CHECK(metric_sample(scrape_metrics(mport), "preforkd_worker_busy_seconds_total{program=\"says\"}") >= before + 0.9);
  CHECK(d.stop() == 0);
}

TEST_CASE("busy: preforkd-echo --delay-ms under load is busy, idle again after, busy seconds only go up") {
  TempDir dir;
  uint16_t mport = free_port();
  Preforkd d(dir, "supervisor:\n  metrics: \"127.0.0.1:" + std::to_string(mport) + "\"\n"
                  "programs:\n  web:\n    command: [" + bin("preforkd-echo") + ", --http, --delay-ms, \"100\"]\n"
                  "    listen: 127.0.0.1:0\n    workers: 2\n");
  uint16_t port = d.port();
  const std::string busy = "preforkd_workers_busy{program=\"web\"}";
  const std::string secs = "preforkd_worker_busy_seconds_total{program=\"web\"}";
  // Idle at first: each worker says BUSY=0 (reporting, not unknown).
  REQUIRE(wait_until([&] { return program_of(d.control({{"cmd", "status"}}), "web")["workers_reporting_busy"] == 2; }));
  CHECK(metric_sample(scrape_metrics(mport), busy) == 0);
  std::atomic<bool> stop{false};
  std::atomic<int> failed{0};
  std::vector<std::thread> clients;
  for (int i = 0; i < 6; ++i)
    clients.emplace_back([&] {
      while (!stop.load())
        if (!http_get_ok(port)) ++failed;
    });
  bool saw_all_busy = wait_until([&] { return metric_sample(scrape_metrics(mport), busy) == 2; });
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  stop = true;
  for (auto& t : clients) t.join();
  CHECK(saw_all_busy);
  CHECK(failed == 0);
  double after_load = metric_sample(scrape_metrics(mport), secs);
  CHECK(after_load >= 0.5);  // two workers, busy for at least half a second each
  CHECK(wait_until([&] { return metric_sample(scrape_metrics(mport), busy) == 0; }));
  CHECK(metric_sample(scrape_metrics(mport), secs) >= after_load);
  CHECK(d.stop() == 0);
}

TEST_CASE("busy: with metrics, BUSY= workers and no scrape, preforkd has no periodic wake-up when idle") {
  // The queue is read only when asked and BUSY= is said on changes only:
  // once the load is gone and nobody scrapes, preforkd sleeps (T26).
  TempDir dir;
  uint16_t mport = free_port();
  Preforkd d(dir, "supervisor:\n  metrics: \"127.0.0.1:" + std::to_string(mport) + "\"\n"
                  "programs:\n  web:\n    command: [" + bin("preforkd-echo") + ", --http]\n"
                  "    listen: 127.0.0.1:0\n    workers: 2\n");
  uint16_t port = d.port();
  for (int i = 0; i < 20; ++i) CHECK(http_get_ok(port));
  CHECK(metric_sample(scrape_metrics(mport), "preforkd_listen_queue{program=\"web\",listen=\"web\"}") == 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // the workers' last reports
  REQUIRE(wait_quiet(d.pid()));
  long long idle = wakeups_over(d.pid(), std::chrono::milliseconds(5000));
  MESSAGE("idle with metrics and BUSY= workers: " << idle << " wake-up(s) in 5 s");
  CHECK(idle >= 0);
  CHECK(idle <= 2);  // as the memory timer test: a stray scheduler switch or two, never a 100 ms tick
  CHECK(d.stop() == 0);
}
