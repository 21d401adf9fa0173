// units_test.cpp — durations and sizes as written in preforkd.yaml.
#include "config/units.hpp"

#include <doctest/doctest.h>

using namespace preforkd::config;
using namespace std::chrono_literals;

TEST_CASE("parse_duration reads every unit and compounds in milliseconds") {
  struct Case {
    const char* text;
    Duration want;
  };
  const Case cases[] = {
      {"0", 0ms},
      {"00", 0ms},
      {"0s", 0ms},
      {"0ms", 0ms},
      {"250ms", 250ms},
      {"1ms", 1ms},
      {"10s", 10s},
      {"2m", 2min},
      {"1h", 1h},
      {"1m30s", 90s},
      {"1h30m", 90min},
      {"1s500ms", 1500ms},
      {"1h2m3s4ms", 3723004ms},
      {"05s", 5s},
      {"90s", 90s},
      {"87600h", 87600h},
  };
  for (const auto& c : cases) {
    CAPTURE(c.text);
    const auto d = parse_duration(c.text);
    REQUIRE(d.has_value());
    CHECK(*d == c.want);
  }
}

TEST_CASE("parse_duration refuses a bare number, unknown units, signs, spaces and disorder") {
  const char* bad[] = {"10",   "1",     "",      "s",      "ms", "10S",   "10 s", " 10s", "10s ",
                       "1.5s", "-1s",   "+1s",   "10sec",  "1d", "1w",    "10us", "1s1m", "1s1s",
                       "1m1h", "1ms1s", "0x10s", "1h 30m", "h1", "10s10", "1e3ms"};
  for (const char* text : bad) {
    CAPTURE(text);
    UnitError why;
    CHECK_FALSE(parse_duration(text, &why).has_value());
    CHECK(why.kind == UnitError::Kind::Syntax);
    CHECK(why.message == std::string("expected a duration like `10s`, got `") + text + "`");
  }
}

TEST_CASE("parse_duration reports overflow and anything above 10 years as a range error") {
  const char* big[] = {"87601h",
                       "87600h1ms",
                       "99999999999999999999ms",
                       "18446744073709551615h",
                       "5124095576030431h",
                       "315360000001ms"};
  for (const char* text : big) {
    CAPTURE(text);
    UnitError why;
    CHECK_FALSE(parse_duration(text, &why).has_value());
    CHECK(why.kind == UnitError::Kind::Range);
    CHECK(why.message == std::string("duration `") + text + "` is too large (at most 87600h)");
  }
}

TEST_CASE("parse_duration: a syntax error wins over overflow in the same text") {
  UnitError why;
  CHECK_FALSE(parse_duration("99999999999999999999h5x", &why).has_value());
  CHECK(why.kind == UnitError::Kind::Syntax);
}

TEST_CASE("format_duration gives the canonical spelling and parse_duration reads it back") {
  CHECK(format_duration(0ms) == "0s");
  CHECK(format_duration(250ms) == "250ms");
  CHECK(format_duration(1500ms) == "1s500ms");
  CHECK(format_duration(90s) == "1m30s");
  CHECK(format_duration(30s) == "30s");
  CHECK(format_duration(1h) == "1h");
  CHECK(format_duration(25h + 1min + 1s + 1ms) == "25h1m1s1ms");
  CHECK(format_duration(-1500ms) == "-1s500ms");
  CHECK(format_duration(Duration{Duration::min()}) == "-2562047788015h12m55s808ms");
  for (Duration d : {1ms, 999ms, 1000ms, 61001ms, 3600000ms, 3661001ms, Duration{kMaxDuration}}) {
    CAPTURE(d.count());
    CHECK(parse_duration(format_duration(d)) == d);
  }
}

TEST_CASE("parse_size reads bytes and 1024-based K/M/G/T with an optional B, any case") {
  struct Case {
    const char* text;
    uint64_t want;
  };
  const Case cases[] = {
      {"0", 0},
      {"4096", 4096},
      {"10B", 10},
      {"10b", 10},
      {"512K", 512ull << 10},
      {"512k", 512ull << 10},
      {"512KB", 512ull << 10},
      {"64M", 64ull << 20},
      {"64MB", 64ull << 20},
      {"64mb", 64ull << 20},
      {"1G", 1ull << 30},
      {"1g", 1ull << 30},
      {"2T", 2ull << 40},
      {"16777215T", 16777215ull << 40},
      {"18446744073709551615", UINT64_MAX},
  };
  for (const auto& c : cases) {
    CAPTURE(c.text);
    const auto n = parse_size(c.text);
    REQUIRE(n.has_value());
    CHECK(*n == c.want);
  }
}

TEST_CASE("parse_size refuses garbage with the size wording") {
  const char* bad[] = {"",     "M",    "64X", "64 M", "-1", "1.5G", "64MiB", "64BB",
                       "64MM", "0x10", "1P",  " 1",   "1E", "K64",  "64Mb ", "ten"};
  for (const char* text : bad) {
    CAPTURE(text);
    UnitError why;
    CHECK_FALSE(parse_size(text, &why).has_value());
    CHECK(why.kind == UnitError::Kind::Syntax);
    CHECK(why.message == std::string("expected a size like `64M`, got `") + text + "`");
  }
}

TEST_CASE("parse_size reports uint64 overflow as a range error") {
  const char* big[] = {"18446744073709551616", "16777216T", "17179869184G",
                       "99999999999999999999K"};
  for (const char* text : big) {
    CAPTURE(text);
    UnitError why;
    CHECK_FALSE(parse_size(text, &why).has_value());
    CHECK(why.kind == UnitError::Kind::Range);
    CHECK(why.message == std::string("size `") + text + "` is too large");
  }
}

TEST_CASE("parse_uint accepts digits only and detects overflow") {
  CHECK(parse_uint("0") == uint64_t{0});
  CHECK(parse_uint("007") == uint64_t{7});
  CHECK(parse_uint("18446744073709551615") == UINT64_MAX);
  CHECK_FALSE(parse_uint("18446744073709551616").has_value());
  CHECK_FALSE(parse_uint("").has_value());
  CHECK_FALSE(parse_uint("-1").has_value());
  CHECK_FALSE(parse_uint("+1").has_value());
  CHECK_FALSE(parse_uint("1 ").has_value());
  CHECK_FALSE(parse_uint("0x1").has_value());
}
