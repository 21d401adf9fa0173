#include "core/notify.hpp"

#include <limits>

namespace preforkd::core {

const char* to_string(NotifyError e) {
  switch (e) {
    case NotifyError::TooLong: return "line too long";
    case NotifyError::Binary: return "binary data";
    case NotifyError::NoEquals: return "not KEY=VALUE";
    case NotifyError::UnknownKey: return "unknown key";
    case NotifyError::BadName: return "bad name";
    case NotifyError::BadValue: return "bad value";
    case NotifyError::Decreasing: return "counter went down";
    case NotifyError::TooManyNames: return "too many names";
  }
  return "?";
}

namespace {

bool valid_name(std::string_view n) {
  if (n.empty() || n.size() > kNotifyNameMax) return false;
  for (char c : n)
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_')) return false;
  return true;
}

// Plain decimal digits only: no sign, no spaces, no leading '+', overflow-checked.
bool parse_u64(std::string_view s, uint64_t& out) {
  if (s.empty() || s.size() > 20) return false;
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    auto d = static_cast<uint64_t>(c - '0');
    if (v > (std::numeric_limits<uint64_t>::max() - d) / 10) return false;
    v = v * 10 + d;
  }
  out = v;
  return true;
}

bool parse_i64(std::string_view s, int64_t& out) {
  bool neg = !s.empty() && s.front() == '-';
  if (neg) s.remove_prefix(1);
  uint64_t mag = 0;
  if (!parse_u64(s, mag)) return false;
  constexpr uint64_t kMax = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
  if (!neg && mag > kMax) return false;
  if (neg && mag > kMax + 1) return false;
  out = neg ? static_cast<int64_t>(0 - mag) : static_cast<int64_t>(mag);
  return true;
}

constexpr std::string_view kCounter = "COUNTER_";
constexpr std::string_view kGauge = "GAUGE_";

}  // namespace

std::variant<NotifyMessage, NotifyError> parse_notify_line(std::string_view line) {
  if (line.size() >= kNotifyLineMax) return NotifyError::TooLong;
  for (char c : line) {
    auto u = static_cast<unsigned char>(c);
    if ((u < 0x20 && c != '\t') || u == 0x7f) return NotifyError::Binary;
  }
  size_t eq = line.find('=');
  if (eq == std::string_view::npos) return NotifyError::NoEquals;
  std::string_view key = line.substr(0, eq), value = line.substr(eq + 1);
  NotifyMessage m;
  auto flag = [&](NotifyMessage::Kind kind) -> std::variant<NotifyMessage, NotifyError> {
    if (value != "1") return NotifyError::BadValue;
    m.kind = kind;
    return m;
  };
  if (key == "READY") return flag(NotifyMessage::Kind::Ready);
  if (key == "STOPPING") return flag(NotifyMessage::Kind::Stopping);
  if (key == "WATCHDOG") return flag(NotifyMessage::Kind::Watchdog);
  if (key == "BUSY") {
    if (value != "1" && value != "0") return NotifyError::BadValue;
    m.kind = NotifyMessage::Kind::Busy;
    m.busy = value == "1";
    return m;
  }
  // sd_notify(3) keys an unmodified server may send through NOTIFY_SOCKET:
  // checked like ours, then honoured (EXTEND_TIMEOUT_USEC) or accepted.
  if (key == "EXTEND_TIMEOUT_USEC") {
    m.kind = NotifyMessage::Kind::ExtendTimeout;
    if (!parse_u64(value, m.counter)) return NotifyError::BadValue;
    return m;
  }
  if (key == "MAINPID" || key == "MONOTONIC_USEC" || key == "ERRNO") {
    uint64_t number = 0;
    if (!parse_u64(value, number)) return NotifyError::BadValue;
    m.kind = NotifyMessage::Kind::Accepted;
    m.name = key;
    return m;
  }
  if (key == "RELOADING" || key == "BARRIER") {
    if (value != "1") return NotifyError::BadValue;
    m.kind = NotifyMessage::Kind::Accepted;
    m.name = key;
    return m;
  }
  if (key == "STATUS") {
    m.kind = NotifyMessage::Kind::Status;
    m.text = value.substr(0, kStatusTextMax);
    return m;
  }
  if (key.substr(0, kCounter.size()) == kCounter) {
    m.kind = NotifyMessage::Kind::Counter;
    m.name = key.substr(kCounter.size());
    if (!valid_name(m.name)) return NotifyError::BadName;
    if (!parse_u64(value, m.counter)) return NotifyError::BadValue;
    return m;
  }
  if (key.substr(0, kGauge.size()) == kGauge) {
    m.kind = NotifyMessage::Kind::Gauge;
    m.name = key.substr(kGauge.size());
    if (!valid_name(m.name)) return NotifyError::BadName;
    if (!parse_i64(value, m.gauge)) return NotifyError::BadValue;
    return m;
  }
  return NotifyError::UnknownKey;
}

std::variant<std::monostate, NotifyError> WorkerReport::apply(const NotifyMessage& m) {
  if (m.kind == NotifyMessage::Kind::Counter) {
    auto it = counters_.find(m.name);
    if (it == counters_.end()) {
      if (names() >= kNotifyNamesMax) return NotifyError::TooManyNames;
      counters_.emplace(std::string(m.name), m.counter);
    } else if (m.counter < it->second) {
      return NotifyError::Decreasing;
    } else {
      it->second = m.counter;
    }
  } else if (m.kind == NotifyMessage::Kind::Gauge) {
    auto it = gauges_.find(m.name);
    if (it == gauges_.end()) {
      if (names() >= kNotifyNamesMax) return NotifyError::TooManyNames;
      gauges_.emplace(std::string(m.name), m.gauge);
    } else {
      it->second = m.gauge;
    }
  }
  return std::monostate{};
}

namespace {

// Sums of what workers wrote saturate: a worker may write any value up to
// 2^64 - 1 (a counter) or INT64_MAX (a gauge), and a program's counter
// total must never go backwards (SPEC); an int64 overflow would be
// undefined behaviour (found by fuzz/notify_fuzz).
void add_saturating(uint64_t& total, uint64_t value) {
  if (__builtin_add_overflow(total, value, &total)) total = UINT64_MAX;
}
void add_saturating(int64_t& total, int64_t value) {
  if (__builtin_add_overflow(total, value, &total)) total = value > 0 ? INT64_MAX : INT64_MIN;
}

}  // namespace

void ProgramTotals::retire(const WorkerReport& r) {
  for (const auto& [name, value] : r.counters()) {
    auto it = retired_.find(name);
    if (it != retired_.end()) {
      add_saturating(it->second, value);
    } else if (retired_.size() < kProgramNamesMax) {
      retired_.emplace(name, value);
    } else {
      ++dropped_names_;
    }
  }
}

std::map<std::string, uint64_t> ProgramTotals::counters(const std::vector<const WorkerReport*>& live) const {
  std::map<std::string, uint64_t> out = retired_;
  for (const WorkerReport* r : live)
    for (const auto& [name, value] : r->counters()) add_saturating(out[name], value);
  return out;
}

std::map<std::string, int64_t> ProgramTotals::gauges(const std::vector<const WorkerReport*>& live) {
  std::map<std::string, int64_t> out;
  for (const WorkerReport* r : live)
    for (const auto& [name, value] : r->gauges()) add_saturating(out[name], value);
  return out;
}

void WorkerReport::restore(const std::map<std::string, uint64_t, std::less<>>& counters,
                           const std::map<std::string, int64_t, std::less<>>& gauges) {
  counters_.clear();
  gauges_.clear();
  for (const auto& [k, v] : counters)
    if (names() < kNotifyNamesMax) counters_.emplace(k, v);
  for (const auto& [k, v] : gauges)
    if (names() < kNotifyNamesMax) gauges_.emplace(k, v);
}

}  // namespace preforkd::core
