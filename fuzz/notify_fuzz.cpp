// notify_fuzz — what a worker writes about itself: its notify pipe (a byte
// stream cut into lines by core::LineBuffer, at any read boundaries) and
// NOTIFY_SOCKET datagrams (split at '\n' as daemon/notify_socket.cpp does),
// each line through core::parse_notify_line into the WorkerReport of one of
// two live workers of a program, whose ProgramTotals outlive them (T24).
//
// Input: byte 0 picks the mode (even: pipe, odd: datagram); in pipe mode,
// byte 1 seeds the read sizes. Lines go to the two workers in turn; every
// 7th line, the worker that got it dies and a new one takes its place.
// What must hold: pipe lines never exceed the cap, a parsed name or text lies
// inside its line, a worker never keeps more than kNotifyNamesMax names, a
// program's counter totals and gauge sums are exact (checked against 128-bit
// sums), and a counter's total never goes backwards (SPEC), except for a
// name retired past kProgramNamesMax (dropped and counted, by design).
//
// Sums past 2^64 - 1 (counters) or the int64 range (gauges) saturate: this
// target found that they wrapped (fuzz/corpus/notify/regress-counter-wrap,
// regress-gauge-overflow; tests/unit/notify_overflow_test.cpp).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <variant>

#include "core/line_buffer.hpp"
#include "core/notify.hpp"
#include "preforkd/worker.h"

using namespace preforkd::core;

namespace {

using u128 = unsigned __int128;
using i128 = __int128;

bool inside(std::string_view part, std::string_view whole) {
  return part.empty() || (part.data() >= whole.data() && part.data() + part.size() <= whole.data() + whole.size());
}

struct Program {
  WorkerReport workers[2];
  ProgramTotals totals;
  std::map<std::string, u128> retired_exact;  // what totals.retired() must be, unwrapped
  std::set<std::string> dropped;              // retired past kProgramNamesMax
  std::map<std::string, uint64_t> last;
  unsigned lines = 0;

  // Datagram lines obey the pipe's cap too: daemon/notify_socket.cpp
  // counts a longer one as an error and does not parse it.
  void line(std::string_view l) {
    if (l.size() > PREFORKD_NOTIFY_LINE_MAX) std::abort();
    WorkerReport& w = workers[lines % 2];
    bool changed = false;
    auto parsed = parse_notify_line(l);
    if (auto* m = std::get_if<NotifyMessage>(&parsed)) {
      if (!inside(m->name, l) || !inside(m->text, l)) std::abort();
      if (m->kind == NotifyMessage::Kind::Counter || m->kind == NotifyMessage::Kind::Gauge) {
        if (m->name.empty() || m->name.size() > kNotifyNameMax) std::abort();
        changed = std::holds_alternative<std::monostate>(w.apply(*m));
      }
    } else if (to_string(std::get<NotifyError>(parsed)) == nullptr) {
      std::abort();
    }
    if (w.names() > kNotifyNamesMax) std::abort();
    if (++lines % 7 == 0) {  // this worker dies; a new one starts from nothing
      changed = true;
      for (const auto& [name, value] : w.counters()) {
        auto it = retired_exact.find(name);
        if (it != retired_exact.end()) it->second += value;
        else if (retired_exact.size() < kProgramNamesMax) retired_exact.emplace(name, value);
        else dropped.insert(name);
      }
      totals.retire(w);
      w = WorkerReport();
    }
    if (!changed) return;  // nothing the totals depend on: no need to look again
    check_counters();
    check_gauges();
  }

  void check_counters() {
    std::map<std::string, u128> exact = retired_exact;
    for (const auto& w : workers)
      for (const auto& [name, value] : w.counters()) exact[name] += value;
    const auto got = totals.counters({&workers[0], &workers[1]});
    if (got.size() != exact.size()) std::abort();
    for (const auto& [name, value] : got) {
      const u128 want = exact[name] > UINT64_MAX ? u128{UINT64_MAX} : exact[name];  // saturated
      if (value != want) std::abort();
      auto [it, inserted] = last.emplace(name, value);
      if (!inserted && value < it->second && !dropped.count(name)) std::abort();  // went backwards
      it->second = value;
    }
  }

  void check_gauges() {
    std::map<std::string, i128> exact;
    for (const auto& w : workers)
      for (const auto& [name, value] : w.gauges()) exact[name] += value;
    const auto got = ProgramTotals::gauges({&workers[0], &workers[1]});
    if (got.size() != exact.size()) std::abort();
    for (const auto& [name, value] : got) {
      i128 want = exact[name];
      if (want > INT64_MAX) want = INT64_MAX;  // saturated
      if (want < INT64_MIN) want = INT64_MIN;
      if (value != want) std::abort();
    }
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const bool datagram = data[0] & 1;
  unsigned seed = data[1];
  std::string_view bytes(reinterpret_cast<const char*>(data) + 2, size - 2);
  Program p;
  if (datagram) {
    if (bytes.size() > PREFORKD_NOTIFY_DATAGRAM_MAX) return 0;  // dropped whole by the daemon
    while (!bytes.empty()) {
      size_t nl = bytes.find('\n');
      std::string_view l = bytes.substr(0, nl);
      if (l.size() + 1 > PREFORKD_NOTIFY_LINE_MAX) {
        // one notify error, not parsed (as the daemon does)
      } else if (!l.empty()) {
        p.line(l);
      }
      if (nl == std::string_view::npos) break;
      bytes.remove_prefix(nl + 1);
    }
    return 0;
  }
  LineBuffer lines(PREFORKD_NOTIFY_LINE_MAX, LineBuffer::Overflow::Discard);
  while (!bytes.empty()) {
    seed = seed * 1103515245u + 12345u;
    size_t n = 1 + (seed >> 16) % 5000;  // reads of 1..5000 bytes
    if (n > bytes.size()) n = bytes.size();
    lines.feed(bytes.substr(0, n), [&](std::string_view l) { p.line(l); });
    bytes.remove_prefix(n);
  }
  return 0;
}
