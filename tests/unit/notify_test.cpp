// The notify protocol parser and counter bookkeeping (core/notify.hpp):
// every malformed kind is an error value, limits hold, totals never go back.
#include <doctest/doctest.h>

#include <string>

#include "core/notify.hpp"

using namespace preforkd::core;

namespace {

NotifyMessage ok(std::string_view line) {
  auto r = parse_notify_line(line);
  REQUIRE(std::holds_alternative<NotifyMessage>(r));
  return std::get<NotifyMessage>(r);
}

NotifyError bad(std::string_view line) {
  auto r = parse_notify_line(line);
  REQUIRE(std::holds_alternative<NotifyError>(r));
  return std::get<NotifyError>(r);
}

NotifyMessage counter(const std::string& name, uint64_t v) {
  NotifyMessage m;
  m.kind = NotifyMessage::Kind::Counter;
  m.name = name;
  m.counter = v;
  return m;
}

}  // namespace

TEST_CASE("notify: the valid lines of the protocol") {
  CHECK(ok("READY=1").kind == NotifyMessage::Kind::Ready);
  CHECK(ok("STOPPING=1").kind == NotifyMessage::Kind::Stopping);
  CHECK(ok("WATCHDOG=1").kind == NotifyMessage::Kind::Watchdog);
  auto st = ok("STATUS=serving 12 clients\ton port 7000");
  CHECK(st.kind == NotifyMessage::Kind::Status);
  CHECK(st.text == "serving 12 clients\ton port 7000");
  CHECK(ok("STATUS=").text.empty());
  auto c = ok("COUNTER_requests=18446744073709551615");
  CHECK(c.name == "requests");
  CHECK(c.counter == 18446744073709551615ULL);
  auto g = ok("GAUGE_active_connections=-9223372036854775808");
  CHECK(g.name == "active_connections");
  CHECK(g.gauge == INT64_MIN);
  CHECK(ok("COUNTER_" + std::string(48, 'a') + "=0").name.size() == 48);
  CHECK(ok("STATUS=" + std::string(2000, 'x')).text.size() == kStatusTextMax);
}

TEST_CASE("notify: the sd_notify keys an unmodified server sends are honoured or accepted, never errors") {
  auto extend = ok("EXTEND_TIMEOUT_USEC=5000000");
  CHECK(extend.kind == NotifyMessage::Kind::ExtendTimeout);
  CHECK(extend.counter == 5000000);
  for (const char* line : {"MAINPID=4242", "ERRNO=2", "RELOADING=1", "MONOTONIC_USEC=123456789", "BARRIER=1"}) {
    CAPTURE(line);
    auto m = ok(line);
    CHECK(m.kind == NotifyMessage::Kind::Accepted);
    CHECK(std::string(line).rfind(std::string(m.name) + "=", 0) == 0);
  }
  // Still checked: a value they cannot have is an error.
  CHECK(bad("EXTEND_TIMEOUT_USEC=soon") == NotifyError::BadValue);
  CHECK(bad("MAINPID=") == NotifyError::BadValue);
  CHECK(bad("ERRNO=-1") == NotifyError::BadValue);
  CHECK(bad("RELOADING=0") == NotifyError::BadValue);
  CHECK(bad("FDSTORE=1") == NotifyError::UnknownKey);
}

TEST_CASE("T24 notify: every malformed kind is an error, never a crash") {
  CHECK(bad("READY") == NotifyError::NoEquals);
  CHECK(bad("") == NotifyError::NoEquals);
  CHECK(bad("READY=2") == NotifyError::BadValue);
  CHECK(bad("WATCHDOG=trigger") == NotifyError::BadValue);
  CHECK(bad("MAINPIDX=12") == NotifyError::UnknownKey);
  CHECK(bad("ready=1") == NotifyError::UnknownKey);
  CHECK(bad("COUNTER_=1") == NotifyError::BadName);
  CHECK(bad("COUNTER_Bad=1") == NotifyError::BadName);
  CHECK(bad("COUNTER_a-b=1") == NotifyError::BadName);
  CHECK(bad("COUNTER_" + std::string(49, 'a') + "=1") == NotifyError::BadName);
  CHECK(bad("COUNTER_x=") == NotifyError::BadValue);
  CHECK(bad("COUNTER_x=abc") == NotifyError::BadValue);
  CHECK(bad("COUNTER_x=-1") == NotifyError::BadValue);
  CHECK(bad("COUNTER_x=+1") == NotifyError::BadValue);
  CHECK(bad("COUNTER_x= 1") == NotifyError::BadValue);
  CHECK(bad("COUNTER_x=18446744073709551616") == NotifyError::BadValue);  // 2^64
  CHECK(bad("GAUGE_x=9223372036854775808") == NotifyError::BadValue);     // 2^63
  CHECK(bad("GAUGE_x=--1") == NotifyError::BadValue);
  CHECK(bad(std::string("STATUS=a\0b", 10)) == NotifyError::Binary);
  CHECK(bad("STATUS=\x1b[31mred") == NotifyError::Binary);
  CHECK(bad("READY=1\r") == NotifyError::Binary);
  CHECK(bad("STATUS=" + std::string(5000, 'x')) == NotifyError::TooLong);
}

TEST_CASE("T24 notify: every byte sequence parses to a message or an error") {
  // A cheap deterministic fuzz: no input may throw or crash.
  uint32_t seed = 12345;
  for (int i = 0; i < 20000; ++i) {
    std::string line;
    size_t len = (seed >> 3) % 80;
    for (size_t k = 0; k < len; ++k) {
      seed = seed * 1103515245u + 12345u;
      const char alphabet[] = "COUNTERGAUGE_READYSTATUS=0123456789-abz\t\x01\xff";
      line.push_back(alphabet[(seed >> 16) % (sizeof alphabet - 1)]);
    }
    seed = seed * 1103515245u + 12345u;
    CHECK_NOTHROW(parse_notify_line(line));
  }
}

TEST_CASE("notify: a worker's counters never decrease and its names are capped at 64") {
  WorkerReport r;
  CHECK(std::holds_alternative<std::monostate>(r.apply(counter("requests", 5))));
  CHECK(std::holds_alternative<std::monostate>(r.apply(counter("requests", 5))));
  CHECK(std::get<NotifyError>(r.apply(counter("requests", 4))) == NotifyError::Decreasing);
  CHECK(r.counters().at("requests") == 5);
  for (int i = 1; i < 64; ++i) CHECK(std::holds_alternative<std::monostate>(r.apply(counter("n" + std::to_string(i), 1))));
  CHECK(r.names() == 64);
  CHECK(std::get<NotifyError>(r.apply(counter("one_too_many", 1))) == NotifyError::TooManyNames);
  auto g = ok("GAUGE_more=1");
  CHECK(std::get<NotifyError>(r.apply(g)) == NotifyError::TooManyNames);
  CHECK(std::holds_alternative<std::monostate>(r.apply(counter("requests", 6))));  // known names still update
  CHECK(r.names() == 64);
}

TEST_CASE("notify: program totals are live + retired and never go back across respawns") {
  ProgramTotals totals;
  WorkerReport a, b;
  a.apply(counter("requests", 10));
  b.apply(counter("requests", 3));
  auto t1 = totals.counters({&a, &b});
  CHECK(t1["requests"] == 13);
  // a dies: its 10 move to the retired sum; its replacement starts from 0.
  totals.retire(a);
  WorkerReport a2;
  auto t2 = totals.counters({&a2, &b});
  CHECK(t2["requests"] == 13);
  a2.apply(counter("requests", 1));
  CHECK(totals.counters({&a2, &b})["requests"] == 14);
  // Gauges are the live sum only.
  WorkerReport g1, g2;
  g1.apply(ok("GAUGE_active=2"));
  g2.apply(ok("GAUGE_active=-1"));
  CHECK(ProgramTotals::gauges({&g1, &g2})["active"] == 1);
}

TEST_CASE("notify: the retired names of a program are bounded") {
  ProgramTotals totals;
  for (size_t i = 0; i < kProgramNamesMax + 10; ++i) {
    WorkerReport r;
    r.apply(counter("n" + std::to_string(i), 1));
    totals.retire(r);
  }
  CHECK(totals.counters({}).size() == kProgramNamesMax);
  CHECK(totals.dropped_names() == 10);
}

TEST_CASE("notify: BUSY=1 and BUSY=0, and nothing else after BUSY=") {
  auto b = ok("BUSY=1");
  CHECK(b.kind == NotifyMessage::Kind::Busy);
  CHECK(b.busy);
  auto i = ok("BUSY=0");
  CHECK(i.kind == NotifyMessage::Kind::Busy);
  CHECK_FALSE(i.busy);
  CHECK(bad("BUSY=2") == NotifyError::BadValue);
  CHECK(bad("BUSY=") == NotifyError::BadValue);
  CHECK(bad("BUSY=yes") == NotifyError::BadValue);
  CHECK(bad("BUSY=01") == NotifyError::BadValue);
}
