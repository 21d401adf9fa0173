// GET /metrics end to end: the real Prometheus parser accepts it, the values
// match what workers reported, and bad or slow requests are cut off.
#include <doctest/doctest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>

#include "support/http.hpp"
#include "support/support.hpp"

using namespace preforkd::test;

TEST_CASE("metrics: GET /metrics parses with the Prometheus parser and matches what workers reported") {
  TempDir dir;
  uint16_t mport = free_port();
  Preforkd d(dir, "supervisor:\n  metrics: \"127.0.0.1:" + std::to_string(mport) + "\"\n"
                  "programs:\n  w:\n    command: [" + bin("preforkd-test-worker") +
                  ", --notify, COUNTER_hits=3, --notify, GAUGE_conns=2]\n    workers: 2\n"
                  "  idle:\n    command: " + bin("preforkd-test-worker") + "\n    workers: 0\n");
  std::string text;
  REQUIRE(wait_until([&] {
    text = http_body(http_exchange(mport, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"));
    // Each worker writes its lines one by one; wait until all four are in.
    return text.find("preforkd_program_hits_total{program=\"w\"} 6") != std::string::npos &&
           text.find("preforkd_program_conns{program=\"w\"} 4") != std::string::npos &&
           text.find("preforkd_workers{program=\"w\",state=\"ready\"} 2") != std::string::npos;
  }));
  CHECK(text.find("preforkd_up 1") != std::string::npos);
  // Every label set exists from the start, at 0.
  CHECK(text.find("preforkd_workers{program=\"idle\",state=\"backoff\"} 0") != std::string::npos);
  CHECK(text.find("preforkd_worker_exits_total{program=\"idle\",reason=\"watchdog\"} 0") != std::string::npos);
  CHECK(text.find("preforkd_reloads_total{result=\"failed\"} 0") != std::string::npos);
  CHECK(text.find("preforkd_notify_errors_total{program=\"w\"} 0") != std::string::npos);
  // The real parser.
  std::string file = dir.write("metrics.prom", text);
  auto [code, out] = run({"/bin/sh", "-c", "/usr/bin/python3 " + std::string(PREFORKD_SOURCE_DIR) +
                                               "/tests/metrics_parse.py < " + file});
  CHECK_MESSAGE(code == 0, out);
  // The control socket serves the same text.
  auto m = d.control({{"cmd", "metrics"}});
  CHECK(m["ok"] == true);
  CHECK(m["text"].get<std::string>().find("preforkd_program_hits_total{program=\"w\"} 6") != std::string::npos);
  CHECK(d.stop() == 0);
}

TEST_CASE("metrics: other paths, other methods, oversized and silent requests") {
  TempDir dir;
  uint16_t mport = free_port();
  Preforkd d(dir, "supervisor:\n  metrics: \"127.0.0.1:" + std::to_string(mport) + "\"\n"
                  "programs:\n  w:\n    command: " + bin("preforkd-test-worker") + "\n");
  CHECK(http_exchange(mport, "GET / HTTP/1.1\r\n\r\n").rfind("HTTP/1.1 404", 0) == 0);
  CHECK(http_exchange(mport, "POST /metrics HTTP/1.1\r\n\r\n").rfind("HTTP/1.1 405", 0) == 0);
  CHECK(http_exchange(mport, "GET /metrics HTTP/1.1\r\nX: " + std::string(10000, 'a') + "\r\n\r\n").rfind("HTTP/1.1 431", 0) == 0);
  CHECK(http_exchange(mport, "nonsense\r\n\r\n").rfind("HTTP/1.1 400", 0) == 0);
  auto head = http_exchange(mport, "HEAD /metrics HTTP/1.1\r\n\r\n");
  CHECK(head.rfind("HTTP/1.1 200", 0) == 0);
  CHECK(http_body(head).empty());
  // A client that never finishes its request is cut off, and others are served meanwhile.
  int slow = connect_tcp(mport);
  REQUIRE(slow >= 0);
  send(slow, "GET /met", 8, MSG_NOSIGNAL);
  CHECK(http_exchange(mport, "GET /metrics HTTP/1.1\r\n\r\n").rfind("HTTP/1.1 200", 0) == 0);
  char c;
  CHECK(recv(slow, &c, 1, 0) == 0);  // closed by preforkd after its 5 s limit (the socket's own timeout is 5 s too)
  ::close(slow);
  CHECK(d.stop() == 0);
}
