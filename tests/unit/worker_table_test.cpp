// The worker state machine as a table (core/worker.hpp): every State x Event
// cell fired and asserted, the table's own names, and the stable names of
// the on-disk state. Time is passed in (no clock, no OS).
#include <doctest/doctest.h>

#include <csignal>
#include <set>
#include <string>

#include "core/worker.hpp"

using namespace preforkd::core;
using namespace std::chrono_literals;

TEST_CASE("stable names: every worker state round-trips, Killing is killing and not its display name") {
  std::set<std::string> seen;
  for (WorkerState s : kAllWorkerStates) {
    std::string name = state_name(s);
    CHECK(seen.insert(name).second);  // distinct
    REQUIRE(worker_state_from(name).has_value());
    CHECK(*worker_state_from(name) == s);
  }
  CHECK(seen == std::set<std::string>{"backoff", "starting", "ready", "stopping", "killing", "stopped"});
  CHECK(state_name(WorkerState::Killing) == std::string("killing"));
  CHECK(to_string(WorkerState::Killing) == std::string("stopping"));  // the display name stays
  CHECK(*worker_state_from("stopping") == WorkerState::Stopping);
}

TEST_CASE("stable names: want and stop reason round-trip") {
  std::set<std::string> wants;
  for (Want w : kAllWants) {
    wants.insert(want_name(w));
    REQUIRE(want_from(want_name(w)).has_value());
    CHECK(*want_from(want_name(w)) == w);
  }
  CHECK(wants == std::set<std::string>{"up", "down", "remove"});
  std::set<std::string> reasons;
  for (StopReason r : kAllStopReasons) {
    reasons.insert(to_string(r));
    REQUIRE(stop_reason_from(to_string(r)).has_value());
    CHECK(*stop_reason_from(to_string(r)) == r);
  }
  CHECK(reasons == std::set<std::string>{"none", "operator", "shutdown", "scale", "replace", "recycle",
                                         "watchdog", "start_timeout"});
}

TEST_CASE("stable names: unknown, empty, display-only and differently cased names are refused") {
  CHECK_FALSE(worker_state_from("").has_value());
  CHECK_FALSE(worker_state_from("Ready").has_value());
  CHECK_FALSE(worker_state_from("ready ").has_value());
  CHECK_FALSE(worker_state_from("?").has_value());
  CHECK_FALSE(want_from("").has_value());
  CHECK_FALSE(want_from("Up").has_value());
  CHECK_FALSE(want_from("stopped").has_value());
  CHECK_FALSE(stop_reason_from("").has_value());
  CHECK_FALSE(stop_reason_from("start-timeout").has_value());
  CHECK_FALSE(stop_reason_from("?").has_value());
}
