// notify_overflow_test.cpp — what fuzz/notify_fuzz found in core/notify's
// program totals, as worker-written values reach them: ProgramTotals added
// values a worker wrote (up to 2^64 - 1 for a counter, INT64_MAX for a
// gauge) without saturating, so one hostile worker made its program's
// counter total wrap, which SPEC forbids ("it never goes backwards"), and
// two made ProgramTotals::gauges overflow int64 (undefined behaviour). The
// sums saturate now. The inputs are fuzz/corpus/notify/regress-counter-wrap*
// and regress-gauge-overflow.
#include <doctest/doctest.h>

#include <cstdint>
#include <string>
#include <variant>

#include "core/notify.hpp"

using namespace preforkd::core;

namespace {

// A worker that reported these lines.
WorkerReport reported(std::initializer_list<std::string> lines) {
  WorkerReport r;
  for (const auto& l : lines) {
    auto m = parse_notify_line(l);
    REQUIRE(std::holds_alternative<NotifyMessage>(m));
    REQUIRE(std::holds_alternative<std::monostate>(r.apply(std::get<NotifyMessage>(m))));
  }
  return r;
}

}  // namespace

TEST_CASE("notify totals: a program's counter total saturates at 2^64 - 1, never goes backwards (notify_fuzz: regress-counter-wrap)") {
  ProgramTotals totals;
  totals.retire(reported({"COUNTER_b=18446744073709551615"}));  // a worker died having said 2^64 - 1
  const uint64_t before = totals.counters({}).at("b");
  const WorkerReport successor = reported({"COUNTER_b=1"});
  const uint64_t after = totals.counters({&successor}).at("b");
  CHECK(before == UINT64_MAX);
  CHECK(after >= before);  // SPEC: never backwards (it wrapped to 0)
  CHECK(after == UINT64_MAX);
}

TEST_CASE("notify totals: two workers' gauges near INT64_MAX saturate instead of overflowing int64 "
          "(notify_fuzz: regress-gauge-overflow)") {
  const WorkerReport a = reported({"GAUGE_g=9223372036854775807"});
  const WorkerReport b = reported({"GAUGE_g=9223372036854775807"});
  const auto sum = ProgramTotals::gauges({&a, &b});  // was undefined behaviour
  CHECK(sum.at("g") == INT64_MAX);
  const WorkerReport c = reported({"GAUGE_g=-9223372036854775807"});
  const WorkerReport d = reported({"GAUGE_g=-9223372036854775807"});
  CHECK(ProgramTotals::gauges({&c, &d}).at("g") == INT64_MIN);
}
