// notify.hpp — the notify protocol, from untrusted bytes to bounded facts (T24).
//
// Owns: parsing one line a worker wrote to its notify pipe (SPEC "The worker
// contract") and keeping what it reported: per-worker counters and gauges
// (at most 64 names), and per-program totals that never go backwards when
// workers die or are replaced (live sum + everything retired workers had
// reported). Must never: trust a worker — every malformed line is an error
// value, never an exception, and nothing here grows without bound.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace preforkd::core {

inline constexpr size_t kNotifyLineMax = 4096;    // bytes, newline included (SPEC)
inline constexpr size_t kNotifyNameMax = 48;      // [a-z0-9_]{1,48}
inline constexpr size_t kNotifyNamesMax = 64;     // counters + gauges kept per worker
inline constexpr size_t kStatusTextMax = 512;     // STATUS= text kept (longer is cut)
inline constexpr size_t kProgramNamesMax = 1024;  // retired counter names kept per program

struct NotifyMessage {
  // ExtendTimeout: EXTEND_TIMEOUT_USEC=N (sd_notify(3)), `counter` = N µs.
  // Accepted: a valid sd_notify key that preforkd has no use for (MAINPID=,
  // ERRNO=, RELOADING=1, MONOTONIC_USEC=, BARRIER=1): no effect, no error,
  // so that unmodified servers speaking sd_notify count no notify errors.
  enum class Kind { Ready, Stopping, Watchdog, Status, Counter, Gauge, ExtendTimeout, Accepted, Busy };
  Kind kind = Kind::Ready;
  std::string_view name;  // Counter/Gauge: the name after the prefix; Accepted: the key
  std::string_view text;  // Status
  uint64_t counter = 0;
  int64_t gauge = 0;
  bool busy = false;      // Busy: BUSY=1 (serving a request) or BUSY=0 (idle again)
};

enum class NotifyError {
  TooLong,       // over kNotifyLineMax (dropped by the line splitter)
  Binary,        // control bytes or NUL
  NoEquals,      // not KEY=VALUE
  UnknownKey,    // a key the protocol does not have
  BadName,       // counter/gauge name not [a-z0-9_]{1,48}
  BadValue,      // READY=2, COUNTER_x=abc, overflow...
  Decreasing,    // a counter lower than the worker's last report
  TooManyNames,  // a 65th name from one worker
};

const char* to_string(NotifyError e);

// One line, without its '\n'.
std::variant<NotifyMessage, NotifyError> parse_notify_line(std::string_view line);

// What one worker (one process) has reported.
class WorkerReport {
 public:
  // Applies a Counter or Gauge message; other kinds are not its business.
  // Returns an error (and changes nothing) for a new name past the limit or a
  // decreasing counter.
  std::variant<std::monostate, NotifyError> apply(const NotifyMessage& m);

  const std::map<std::string, uint64_t, std::less<>>& counters() const { return counters_; }
  const std::map<std::string, int64_t, std::less<>>& gauges() const { return gauges_; }
  size_t names() const { return counters_.size() + gauges_.size(); }
  // The in-place upgrade: a report handed over by the previous binary (names
  // past the limit are dropped, as apply() would have).
  void restore(const std::map<std::string, uint64_t, std::less<>>& counters,
               const std::map<std::string, int64_t, std::less<>>& gauges);

 private:
  std::map<std::string, uint64_t, std::less<>> counters_;
  std::map<std::string, int64_t, std::less<>> gauges_;
};

// A program's counters across its workers' lives.
class ProgramTotals {
 public:
  // A worker is gone: what it reported stays in the totals forever.
  void retire(const WorkerReport& r);
  // retired + the live workers' current values; never lower than an earlier call's result
  // for the same name (counters never decrease while a worker lives, and retiring moves a
  // worker's value from the live sum to the retired one).
  std::map<std::string, uint64_t> counters(const std::vector<const WorkerReport*>& live) const;
  // Sum of the live workers' gauges (gauges of dead workers are gone with them).
  static std::map<std::string, int64_t> gauges(const std::vector<const WorkerReport*>& live);
  // Names a retiring worker could not add because of kProgramNamesMax.
  uint64_t dropped_names() const { return dropped_names_; }
  // The in-place upgrade: the totals as handed over by the previous binary.
  const std::map<std::string, uint64_t>& retired() const { return retired_; }
  void restore(std::map<std::string, uint64_t> retired, uint64_t dropped_names) {
    retired_ = std::move(retired);
    dropped_names_ = dropped_names;
  }

 private:
  std::map<std::string, uint64_t> retired_;
  uint64_t dropped_names_ = 0;
};

}  // namespace preforkd::core
