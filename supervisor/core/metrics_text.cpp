#include "core/metrics_text.hpp"

#include <array>
#include <cstdio>
#include <type_traits>
#include <initializer_list>
#include <map>
#include <set>
#include <utility>
#include <vector>

namespace preforkd::core {

namespace {

constexpr std::string_view kProgramPrefix = "preforkd_program_";

// HELP text escaping of the text format: '\' -> "\\", LF -> "\n".
std::string escape_help(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\') out += "\\\\";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

// A worker-reported name N is used as the tail of "preforkd_program_N"; the
// result is a valid metric name ([a-zA-Z_:][a-zA-Z0-9_:]*) iff N is non-empty
// and made of [a-zA-Z0-9_] (':' is left to recording rules). Upstream already
// holds names to [a-z0-9_]{1,48}; this only guards the text format.
bool valid_name_tail(std::string_view n) {
  if (n.empty()) return false;
  for (char c : n)
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_'))
      return false;
  return true;
}

class Writer {
 public:
  void family(std::string_view name, std::string_view type, std::string_view help) {
    out_ += "# HELP ";
    out_ += name;
    out_ += ' ';
    out_ += escape_help(help);
    out_ += "\n# TYPE ";
    out_ += name;
    out_ += ' ';
    out_ += type;
    out_ += '\n';
  }

  // labels: (name, raw value) pairs, rendered in the given order.
  template <typename Value>
  void sample(std::string_view name,
              std::initializer_list<std::pair<std::string_view, std::string_view>> labels, Value v) {
    out_ += name;
    if (labels.size() > 0) {
      out_ += '{';
      bool first = true;
      for (const auto& [k, val] : labels) {
        if (!first) out_ += ',';
        first = false;
        out_ += k;
        out_ += "=\"";
        out_ += escape_label_value(val);
        out_ += '"';
      }
      out_ += '}';
    }
    out_ += ' ';
    out_ += value_text(v);
    out_ += '\n';
  }

  std::string take() { return std::move(out_); }

  template <typename Value>
  static std::string value_text(Value v) {
    if constexpr (std::is_floating_point_v<Value>) {
      char buf[64];
      std::snprintf(buf, sizeof buf, "%.3f", v);
      return buf;
    } else {
      return std::to_string(v);
    }
  }

 private:
  std::string out_;
};

}  // namespace

std::string escape_label_value(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

std::string render_prometheus(const Snapshot& s) {
  Writer w;

  w.family("preforkd_up", "gauge", "Whether preforkd is up (always 1).");
  w.sample("preforkd_up", {}, 1);

  w.family("preforkd_build_info", "gauge", "preforkd build information; the value is always 1.");
  w.sample("preforkd_build_info", {{"version", s.version}}, 1);

  w.family("preforkd_workers", "gauge",
           "Worker slots and processes by state (retiring processes included).");
  for (const auto& p : s.programs) {
    std::array<uint64_t, kWorkerStateNames.size()> by_state{};
    for (const auto& wk : p.workers)
      for (size_t i = 0; i < kWorkerStateNames.size(); ++i)
        if (wk.state == kWorkerStateNames[i]) ++by_state[i];  // an unknown state is not shown
    for (size_t i = 0; i < kWorkerStateNames.size(); ++i)
      w.sample("preforkd_workers", {{"program", p.name}, {"state", kWorkerStateNames[i]}}, by_state[i]);
  }

  w.family("preforkd_worker_starts_total", "counter", "Worker processes started.");
  for (const auto& p : s.programs)
    w.sample("preforkd_worker_starts_total", {{"program", p.name}}, p.starts);

  w.family("preforkd_worker_exits_total", "counter", "Worker processes that ended, by reason.");
  for (const auto& p : s.programs)
    for (size_t i = 0; i < kExitReasonNames.size(); ++i)
      w.sample("preforkd_worker_exits_total", {{"program", p.name}, {"reason", kExitReasonNames[i]}},
               p.exits[i]);

  w.family("preforkd_config_generation", "gauge",
           "The configuration generation preforkd last loaded (1 at start, +1 per reload that read a valid file).");
  w.sample("preforkd_config_generation", {}, s.generation);

  w.family("preforkd_generation", "gauge",
           "The configuration generation each program runs (older than preforkd_config_generation after an "
           "aborted or rolled-back reload).");
  for (const auto& p : s.programs) w.sample("preforkd_generation", {{"program", p.name}}, p.generation);

  w.family("preforkd_rollbacks_total", "counter",
           "Rollbacks to the previous configuration, automatic (reload.guard) or by preforkctl rollback.");
  for (const auto& p : s.programs) w.sample("preforkd_rollbacks_total", {{"program", p.name}}, p.rollbacks);

  w.family("preforkd_reloads_total", "counter", "Configuration reloads, by result.");
  w.sample("preforkd_reloads_total", {{"result", "ok"}}, s.reloads_ok);
  w.sample("preforkd_reloads_total", {{"result", "failed"}}, s.reloads_failed);

  w.family("preforkd_notify_errors_total", "counter",
           "Malformed or rejected lines from the workers (notify pipe or NOTIFY_SOCKET).");
  for (const auto& p : s.programs)
    w.sample("preforkd_notify_errors_total", {{"program", p.name}}, p.notify_errors);

  w.family("preforkd_orphans_total", "counter",
           "Processes the workers left behind (orphans) that preforkd found, by the program they came from.");
  for (const auto& p : s.programs) w.sample("preforkd_orphans_total", {{"program", p.name}}, p.orphans_total);
  w.family("preforkd_notify_unattributed_total", "counter",
           "NOTIFY_SOCKET datagrams from a process that is no worker and in no worker's process group, dropped.");
  w.sample("preforkd_notify_unattributed_total", {}, s.notify_unattributed);

  w.family("preforkd_listen_queue", "gauge",
           "Connections waiting in a listener's accept queue (from the kernel, when scraped).");
  for (const auto& p : s.programs)
    for (const auto& l : p.listeners)
      w.sample("preforkd_listen_queue", {{"program", p.name}, {"listen", l.listen}}, l.length);
  w.family("preforkd_listen_queue_max", "gauge",
           "The limit of a listener's accept queue: its effective backlog.");
  for (const auto& p : s.programs)
    for (const auto& l : p.listeners)
      w.sample("preforkd_listen_queue_max", {{"program", p.name}, {"listen", l.listen}}, l.max);
  w.family("preforkd_workers_busy", "gauge",
           "Workers whose last word was BUSY=1 (workers that never say BUSY= are not counted).");
  for (const auto& p : s.programs) w.sample("preforkd_workers_busy", {{"program", p.name}}, p.workers_busy);
  w.family("preforkd_worker_busy_seconds_total", "counter", "Seconds workers spent between BUSY=1 and BUSY=0.");
  for (const auto& p : s.programs)
    w.sample("preforkd_worker_busy_seconds_total", {{"program", p.name}}, p.busy_seconds);
  w.family("preforkd_autoscale_total", "counter", "Autoscaling decisions, by direction.");
  for (const auto& p : s.programs) {
    w.sample("preforkd_autoscale_total", {{"program", p.name}, {"direction", "up"}}, p.autoscale_up);
    w.sample("preforkd_autoscale_total", {{"program", p.name}, {"direction", "down"}}, p.autoscale_down);
  }
  if (s.host_listen_overflows) {
    w.family("preforkd_host_listen_overflows_total", "counter",
             "HOST-WIDE, every TCP listener of the network namespace: connections dropped on a full accept "
             "queue (TcpExt ListenOverflows).");
    w.sample("preforkd_host_listen_overflows_total", {}, *s.host_listen_overflows);
  }

  // Worker-reported names. A family appears once: each name is one family with
  // one sample per program that reports it, in snapshot order. All counter
  // families come first, then all gauge families, each sorted by name.
  //
  // Collision rule: counter N is exposed as the metric preforkd_program_N_total,
  // which OpenMetrics-style parsers (prometheus_client among them) file under
  // the family preforkd_program_N; gauge G is preforkd_program_G, both metric
  // and family. Distinct counters (or distinct gauges) never collide, but gauge
  // G collides with counter N when G == N_total (same metric name) or G == N
  // (same family name). Counters come first and win: a colliding gauge is
  // skipped for every program. A name that would not make a valid metric name
  // is skipped. The fixed families above cannot collide: none starts with
  // preforkd_program_.
  std::map<std::string, std::vector<std::pair<const std::string*, uint64_t>>> counters;
  std::map<std::string, std::vector<std::pair<const std::string*, int64_t>>> gauges;
  for (const auto& p : s.programs) {
    for (const auto& [n, v] : p.counters)
      if (valid_name_tail(n)) counters[n].emplace_back(&p.name, v);
    for (const auto& [n, v] : p.gauges)
      if (valid_name_tail(n)) gauges[n].emplace_back(&p.name, v);
  }

  std::set<std::string, std::less<>> counter_names;  // metric and family names the counters took
  for (const auto& [n, samples] : counters) {
    std::string family = std::string(kProgramPrefix) + n;
    std::string metric = family + "_total";
    w.family(metric, "counter", "Counter " + n + " reported by the workers (live and retired).");
    for (const auto& [prog, v] : samples) w.sample(metric, {{"program", *prog}}, v);
    counter_names.insert(std::move(family));
    counter_names.insert(std::move(metric));
  }
  for (const auto& [n, samples] : gauges) {
    std::string metric = std::string(kProgramPrefix) + n;
    if (counter_names.count(metric)) continue;
    w.family(metric, "gauge", "Gauge " + n + " reported by the workers (sum over live workers).");
    for (const auto& [prog, v] : samples) w.sample(metric, {{"program", *prog}}, v);
  }

  return w.take();
}

}  // namespace preforkd::core
