// ready: notify — a worker is `starting` until it writes READY=1 to its
// notify pipe; without it within start_timeout it is stopped, counted as a
// failure and respawned with backoff.
#include <doctest/doctest.h>

#include "support/support.hpp"

using namespace preforkd::test;

TEST_CASE("readiness: no READY=1 within start_timeout stops the worker - READY=1 keeps it") {
  TempDir dir;
  std::string w = bin("preforkd-test-worker");
  Preforkd d(dir,
             "programs:\n"
             "  silent:\n"
             "    command: " + w + "\n"
             "    ready: notify\n"
             "    start_timeout: 200ms\n"
             "    backoff: { min: 50ms, max: 100ms, reset_after: 1h }\n"
             "  talker:\n"
             "    command: [" + w + ", --notify, \"STATUS=warming up\", --notify, READY=1]\n"
             "    ready: notify\n"
             "    start_timeout: 200ms\n");
  size_t first = d.wait_for_log("silent[0] pid");
  REQUIRE(first != std::string::npos);
  REQUIRE(d.wait_for_log("no READY=1 within start_timeout, stopping it") != std::string::npos);
  REQUIRE(d.wait_for_log("(start_timeout)") != std::string::npos);
  // The second stop comes after a backoff, proving it counted as a failure.
  size_t second = d.wait_for_log("respawning in", 10s);
  REQUIRE(second != std::string::npos);
  size_t again = d.wait_for_log("no READY=1 within start_timeout", 10s, second);
  REQUIRE(again != std::string::npos);
  // By now the talker has been past its start_timeout twice over: never stopped.
  std::string log = d.log();
  CHECK(log.find("talker[0] pid") == std::string::npos);
  CHECK(log.find("talker[0]: ") == std::string::npos);
  CHECK(d.stop() == 0);
}
