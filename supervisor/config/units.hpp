// units.hpp — durations ("250ms", "1m30s") and sizes ("64M") as written in preforkd.yaml.
//
// Owns: the grammar of the two unit kinds and the wording of their errors, so
// that the loader, preforkctl and the man page say the same thing.
// Must never: accept something ambiguous. A bare number is not a duration
// (is `10` seconds or milliseconds?), so only `0` may go without a unit.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "config/config.hpp"

namespace preforkd::config {

// Why a value was refused; `message` is ready to follow "<key path>: ".
struct UnitError {
  enum class Kind { Syntax, Range };
  Kind kind = Kind::Syntax;
  std::string message;
};

// The largest duration accepted (10 years). Timeouts are added to
// steady_clock time points in nanoseconds, which overflow past ~292 years.
inline constexpr Duration kMaxDuration{Duration::rep{87600} * 3600 * 1000};

// Parses `250ms`, `10s`, `2m`, `1h` and compounds such as `1h30m` or `1m30s`
// (units in decreasing order, each at most once); a bare `0` (or `00`...) is
// zero. No sign, no fraction, no spaces, units are lowercase. Returns nullopt
// and fills `error` (when given) otherwise, or when above kMaxDuration.
std::optional<Duration> parse_duration(std::string_view text, UnitError* error = nullptr);

// Parses a byte count: digits with an optional K, M, G or T multiplier
// (1024-based, case-insensitive) and an optional trailing B: `4096`, `512K`,
// `64M`, `64MB`, `1g`, `10B`. Overflowing uint64 is a Range error.
std::optional<uint64_t> parse_size(std::string_view text, UnitError* error = nullptr);

// The canonical spelling parse_duration reads back: 0 -> "0s", 90000ms ->
// "1m30s", 1500ms -> "1s500ms", negative -> "-" + the spelling of its magnitude.
std::string format_duration(Duration d);

// Digits only (no sign, no spaces, no 0x); nullopt on anything else or overflow.
std::optional<uint64_t> parse_uint(std::string_view text);

}  // namespace preforkd::config
