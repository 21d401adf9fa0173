// units.cpp — see units.hpp.
#include "config/units.hpp"

#include <fmt/format.h>

#include <array>

namespace preforkd::config {
namespace {

bool is_digit(char c) { return c >= '0' && c <= '9'; }

// Reads the digits at text[i...], advancing i; false on overflow or no digit.
bool read_number(std::string_view text, std::size_t& i, uint64_t& value, bool& overflow) {
  const std::size_t start = i;
  value = 0;
  overflow = false;
  while (i < text.size() && is_digit(text[i])) {
    const auto digit = static_cast<uint64_t>(text[i] - '0');
    if (__builtin_mul_overflow(value, uint64_t{10}, &value) ||
        __builtin_add_overflow(value, digit, &value)) {
      overflow = true;
    }
    ++i;
  }
  return i > start;
}

struct DurationUnit {
  std::string_view name;
  uint64_t ms;
};
// Largest first: a compound must list its units in this order.
constexpr std::array<DurationUnit, 4> kDurationUnits{
    {{"h", 3600 * 1000}, {"m", 60 * 1000}, {"s", 1000}, {"ms", 1}}};

}  // namespace

std::optional<uint64_t> parse_uint(std::string_view text) {
  std::size_t i = 0;
  uint64_t value = 0;
  bool overflow = false;
  if (!read_number(text, i, value, overflow) || i != text.size() || overflow) return std::nullopt;
  return value;
}

std::optional<Duration> parse_duration(std::string_view text, UnitError* error) {
  auto fail = [&](UnitError::Kind kind) -> std::optional<Duration> {
    if (error) {
      error->kind = kind;
      error->message = kind == UnitError::Kind::Syntax
                           ? fmt::format("expected a duration like `10s`, got `{}`", text)
                           : fmt::format("duration `{}` is too large (at most {})", text,
                                         format_duration(kMaxDuration));
    }
    return std::nullopt;
  };

  // A bare zero needs no unit: it means the same in every unit.
  if (auto bare = parse_uint(text)) {
    if (*bare == 0) return Duration{0};
    return fail(UnitError::Kind::Syntax);
  }

  const auto max_ms = static_cast<uint64_t>(kMaxDuration.count());
  uint64_t total = 0;
  bool too_large = false;
  std::size_t next_unit = 0;  // index into kDurationUnits: units must decrease
  std::size_t i = 0;
  if (text.empty()) return fail(UnitError::Kind::Syntax);
  while (i < text.size()) {
    uint64_t n = 0;
    bool overflow = false;
    if (!read_number(text, i, n, overflow)) return fail(UnitError::Kind::Syntax);
    const std::size_t unit_start = i;
    while (i < text.size() && text[i] >= 'a' && text[i] <= 'z') ++i;
    const std::string_view unit = text.substr(unit_start, i - unit_start);
    std::size_t u = next_unit;
    while (u < kDurationUnits.size() && kDurationUnits[u].name != unit) ++u;
    if (u == kDurationUnits.size()) return fail(UnitError::Kind::Syntax);
    next_unit = u + 1;
    uint64_t part = 0;
    if (overflow || __builtin_mul_overflow(n, kDurationUnits[u].ms, &part) ||
        __builtin_add_overflow(total, part, &total) || total > max_ms) {
      too_large = true;  // keep reading: a syntax error wins over a range error
    }
  }
  if (too_large) return fail(UnitError::Kind::Range);
  return Duration{static_cast<Duration::rep>(total)};
}

std::optional<uint64_t> parse_size(std::string_view text, UnitError* error) {
  auto fail = [&](UnitError::Kind kind) -> std::optional<uint64_t> {
    if (error) {
      error->kind = kind;
      error->message = kind == UnitError::Kind::Syntax
                           ? fmt::format("expected a size like `64M`, got `{}`", text)
                           : fmt::format("size `{}` is too large", text);
    }
    return std::nullopt;
  };

  std::size_t i = 0;
  uint64_t n = 0;
  bool overflow = false;
  if (!read_number(text, i, n, overflow)) return fail(UnitError::Kind::Syntax);
  unsigned shift = 0;
  if (i < text.size()) {
    switch (text[i]) {
      case 'k':
      case 'K': shift = 10; break;
      case 'm':
      case 'M': shift = 20; break;
      case 'g':
      case 'G': shift = 30; break;
      case 't':
      case 'T': shift = 40; break;
      default: break;
    }
    if (shift != 0) ++i;
  }
  if (i < text.size() && (text[i] == 'b' || text[i] == 'B')) ++i;
  if (i != text.size()) return fail(UnitError::Kind::Syntax);
  if (overflow || (shift != 0 && n > (UINT64_MAX >> shift))) return fail(UnitError::Kind::Range);
  return n << shift;
}

std::string format_duration(Duration d) {
  auto ms = d.count();
  if (ms == 0) return "0s";
  std::string out;
  // Magnitude as unsigned so that the most negative value has one too.
  uint64_t rest = static_cast<uint64_t>(ms);
  if (ms < 0) {
    out = "-";
    rest = uint64_t{0} - rest;
  }
  for (const auto& unit : kDurationUnits) {
    if (rest >= unit.ms) {
      out += fmt::format("{}{}", rest / unit.ms, unit.name);
      rest %= unit.ms;
    }
  }
  return out;
}

}  // namespace preforkd::config
