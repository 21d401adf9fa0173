#include <doctest/doctest.h>

#include <string>

#include "core/metrics_text.hpp"

using preforkd::core::escape_label_value;
using preforkd::core::ProgramSnapshot;
using preforkd::core::render_prometheus;
using preforkd::core::Snapshot;
using preforkd::core::WorkerSnapshot;

namespace {

WorkerSnapshot worker(int slot, const char* state, bool retiring = false) {
  WorkerSnapshot w;
  w.slot = slot;
  w.state = state;
  w.retiring = retiring;
  return w;
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

size_t count(const std::string& text, const std::string& part) {
  size_t n = 0;
  for (size_t at = text.find(part); at != std::string::npos; at = text.find(part, at + 1)) ++n;
  return n;
}

// The fixed families for a snapshot without programs.
const char* const kFixedHead =
    "# HELP preforkd_up Whether preforkd is up (always 1).\n"
    "# TYPE preforkd_up gauge\n"
    "preforkd_up 1\n"
    "# HELP preforkd_build_info preforkd build information; the value is always 1.\n"
    "# TYPE preforkd_build_info gauge\n"
    "preforkd_build_info{version=\"1.2.3\"} 1\n"
    "# HELP preforkd_workers Worker slots and processes by state (retiring processes included).\n"
    "# TYPE preforkd_workers gauge\n";

}  // namespace

TEST_CASE("metrics text: exact output for a small snapshot") {
  Snapshot s;
  s.version = "1.2.3";
  s.reloads_ok = 2;
  s.reloads_failed = 1;
  s.generation = 4;
  s.notify_unattributed = 5;
  ProgramSnapshot p;
  p.name = "echo";
  p.generation = 3;  // a reload to 4 was rolled back
  p.rollbacks = 1;
  p.workers = {worker(0, "ready"), worker(1, "starting"), worker(0, "ready", true)};
  p.starts = 3;
  p.exits = {1, 0, 0, 0, 2};
  p.notify_errors = 4;
  p.orphans_total = 3;
  p.counters = {{"requests", 10}};
  p.gauges = {{"active_connections", -1}};
  s.programs.push_back(p);

  const std::string expected = std::string(kFixedHead) +
      "preforkd_workers{program=\"echo\",state=\"starting\"} 1\n"
      "preforkd_workers{program=\"echo\",state=\"ready\"} 2\n"
      "preforkd_workers{program=\"echo\",state=\"stopping\"} 0\n"
      "preforkd_workers{program=\"echo\",state=\"backoff\"} 0\n"
      "preforkd_workers{program=\"echo\",state=\"stopped\"} 0\n"
      "# HELP preforkd_worker_starts_total Worker processes started.\n"
      "# TYPE preforkd_worker_starts_total counter\n"
      "preforkd_worker_starts_total{program=\"echo\"} 3\n"
      "# HELP preforkd_worker_exits_total Worker processes that ended, by reason.\n"
      "# TYPE preforkd_worker_exits_total counter\n"
      "preforkd_worker_exits_total{program=\"echo\",reason=\"exit\"} 1\n"
      "preforkd_worker_exits_total{program=\"echo\",reason=\"signal\"} 0\n"
      "preforkd_worker_exits_total{program=\"echo\",reason=\"watchdog\"} 0\n"
      "preforkd_worker_exits_total{program=\"echo\",reason=\"start_timeout\"} 0\n"
      "preforkd_worker_exits_total{program=\"echo\",reason=\"recycled\"} 2\n"
      "# HELP preforkd_config_generation The configuration generation preforkd last loaded (1 at start, +1 per reload that read a valid file).\n"
      "# TYPE preforkd_config_generation gauge\n"
      "preforkd_config_generation 4\n"
      "# HELP preforkd_generation The configuration generation each program runs (older than preforkd_config_generation after an aborted or rolled-back reload).\n"
      "# TYPE preforkd_generation gauge\n"
      "preforkd_generation{program=\"echo\"} 3\n"
      "# HELP preforkd_rollbacks_total Rollbacks to the previous configuration, automatic (reload.guard) or by preforkctl rollback.\n"
      "# TYPE preforkd_rollbacks_total counter\n"
      "preforkd_rollbacks_total{program=\"echo\"} 1\n"
      "# HELP preforkd_reloads_total Configuration reloads, by result.\n"
      "# TYPE preforkd_reloads_total counter\n"
      "preforkd_reloads_total{result=\"ok\"} 2\n"
      "preforkd_reloads_total{result=\"failed\"} 1\n"
      "# HELP preforkd_notify_errors_total Malformed or rejected lines from the workers (notify pipe or NOTIFY_SOCKET).\n"
      "# TYPE preforkd_notify_errors_total counter\n"
      "preforkd_notify_errors_total{program=\"echo\"} 4\n"
      "# HELP preforkd_orphans_total Processes the workers left behind (orphans) that preforkd found, by the program they came from.\n"
      "# TYPE preforkd_orphans_total counter\n"
      "preforkd_orphans_total{program=\"echo\"} 3\n"
      "# HELP preforkd_notify_unattributed_total NOTIFY_SOCKET datagrams from a process that is no worker and in no worker's process group, dropped.\n"
      "# TYPE preforkd_notify_unattributed_total counter\n"
      "preforkd_notify_unattributed_total 5\n"
      "# HELP preforkd_listen_queue Connections waiting in a listener's accept queue (from the kernel, when scraped).\n"
      "# TYPE preforkd_listen_queue gauge\n"
      "# HELP preforkd_listen_queue_max The limit of a listener's accept queue: its effective backlog.\n"
      "# TYPE preforkd_listen_queue_max gauge\n"
      "# HELP preforkd_workers_busy Workers whose last word was BUSY=1 (workers that never say BUSY= are not counted).\n"
      "# TYPE preforkd_workers_busy gauge\n"
      "preforkd_workers_busy{program=\"echo\"} 0\n"
      "# HELP preforkd_worker_busy_seconds_total Seconds workers spent between BUSY=1 and BUSY=0.\n"
      "# TYPE preforkd_worker_busy_seconds_total counter\n"
      "preforkd_worker_busy_seconds_total{program=\"echo\"} 0.000\n"
      "# HELP preforkd_autoscale_total Autoscaling decisions, by direction.\n"
      "# TYPE preforkd_autoscale_total counter\n"
      "preforkd_autoscale_total{program=\"echo\",direction=\"up\"} 0\n"
      "preforkd_autoscale_total{program=\"echo\",direction=\"down\"} 0\n"
      "# HELP preforkd_program_requests_total Counter requests reported by the workers (live and retired).\n"
      "# TYPE preforkd_program_requests_total counter\n"
      "preforkd_program_requests_total{program=\"echo\"} 10\n"
      "# HELP preforkd_program_active_connections Gauge active_connections reported by the workers (sum over live workers).\n"
      "# TYPE preforkd_program_active_connections gauge\n"
      "preforkd_program_active_connections{program=\"echo\"} -1\n";
  CHECK(render_prometheus(s) == expected);
}

TEST_CASE("metrics text: every fixed label set of a program is present with 0 from the start") {
  Snapshot s;
  s.version = "0";
  ProgramSnapshot p;
  p.name = "idle";
  s.programs.push_back(p);
  const std::string out = render_prometheus(s);
  for (const char* state : preforkd::core::kWorkerStateNames)
    CHECK(contains(out, std::string("preforkd_workers{program=\"idle\",state=\"") + state + "\"} 0\n"));
  for (const char* reason : preforkd::core::kExitReasonNames)
    CHECK(contains(out, std::string("preforkd_worker_exits_total{program=\"idle\",reason=\"") + reason +
                            "\"} 0\n"));
  CHECK(contains(out, "preforkd_worker_starts_total{program=\"idle\"} 0\n"));
  CHECK(contains(out, "preforkd_notify_errors_total{program=\"idle\"} 0\n"));
  CHECK(contains(out, "preforkd_orphans_total{program=\"idle\"} 0\n"));
  CHECK(contains(out, "preforkd_rollbacks_total{program=\"idle\"} 0\n"));
  CHECK(contains(out, "preforkd_reloads_total{result=\"ok\"} 0\n"));
  CHECK(contains(out, "preforkd_reloads_total{result=\"failed\"} 0\n"));
  CHECK_FALSE(contains(out, "preforkd_program_"));
}

TEST_CASE("metrics text: a name reported by two programs is one family with a sample each") {
  Snapshot s;
  ProgramSnapshot a;
  a.name = "a";
  a.counters = {{"requests", 5}, {"zz", 1}};
  a.gauges = {{"conns", 2}};
  ProgramSnapshot b;
  b.name = "b";
  b.counters = {{"bytes", 7}, {"requests", 6}};
  b.gauges = {{"conns", 3}};
  s.programs = {a, b};
  const std::string out = render_prometheus(s);

  CHECK(count(out, "# TYPE preforkd_program_requests_total counter\n") == 1);
  CHECK(count(out, "# HELP preforkd_program_requests_total ") == 1);
  CHECK(count(out, "# TYPE preforkd_program_conns gauge\n") == 1);
  CHECK(contains(out,
                 "# TYPE preforkd_program_requests_total counter\n"
                 "preforkd_program_requests_total{program=\"a\"} 5\n"
                 "preforkd_program_requests_total{program=\"b\"} 6\n"));
  CHECK(contains(out,
                 "# TYPE preforkd_program_conns gauge\n"
                 "preforkd_program_conns{program=\"a\"} 2\n"
                 "preforkd_program_conns{program=\"b\"} 3\n"));
  // Counter families sorted by name, then gauge families.
  const auto bytes = out.find("# TYPE preforkd_program_bytes_total");
  const auto requests = out.find("# TYPE preforkd_program_requests_total");
  const auto zz = out.find("# TYPE preforkd_program_zz_total");
  const auto conns = out.find("# TYPE preforkd_program_conns");
  REQUIRE(bytes != std::string::npos);
  CHECK(bytes < requests);
  CHECK(requests < zz);
  CHECK(zz < conns);
  CHECK(out.back() == '\n');
}

TEST_CASE("metrics text: label values escape backslash, double quote and newline") {
  CHECK(escape_label_value("a.b-c") == "a.b-c");
  CHECK(escape_label_value("a\\b\"c\nd") == "a\\\\b\\\"c\\nd");
  Snapshot s;
  s.version = "1.0\"x\\\n";
  ProgramSnapshot p;
  p.name = "we\"ird\\name\n";
  p.counters = {{"c", 1}};
  s.programs.push_back(p);
  const std::string out = render_prometheus(s);
  CHECK(contains(out, "preforkd_build_info{version=\"1.0\\\"x\\\\\\n\"} 1\n"));
  CHECK(contains(out, "preforkd_program_c_total{program=\"we\\\"ird\\\\name\\n\"} 1\n"));
  CHECK(contains(out, "preforkd_worker_starts_total{program=\"we\\\"ird\\\\name\\n\"} 0\n"));
}

TEST_CASE("metrics text: a gauge colliding with a counter is skipped, the counter wins") {
  Snapshot s;
  ProgramSnapshot a;
  a.name = "a";
  a.gauges = {{"x_total", 9}, {"y", 4}, {"ok", 1}};
  ProgramSnapshot b;
  b.name = "b";
  b.counters = {{"x", 2}, {"y", 3}, {"z", 5}};
  b.gauges = {{"z_total_total", 6}};  // no collision: counter z is z_total
  s.programs = {a, b};
  const std::string out = render_prometheus(s);

  // gauge x_total has counter x's metric name: skipped for every program.
  CHECK(count(out, "# TYPE preforkd_program_x_total ") == 1);
  CHECK(contains(out, "# TYPE preforkd_program_x_total counter\npreforkd_program_x_total{program=\"b\"} 2\n"));
  CHECK_FALSE(contains(out, "preforkd_program_x_total{program=\"a\"}"));
  // gauge y is counter y's family name (preforkd_program_y to OpenMetrics parsers): skipped.
  CHECK_FALSE(contains(out, "# TYPE preforkd_program_y gauge"));
  CHECK_FALSE(contains(out, "preforkd_program_y{"));
  CHECK(contains(out, "preforkd_program_y_total{program=\"b\"} 3\n"));
  // Unrelated names are kept.
  CHECK(contains(out, "preforkd_program_ok{program=\"a\"} 1\n"));
  CHECK(contains(out, "preforkd_program_z_total_total{program=\"b\"} 6\n"));
  CHECK(contains(out, "preforkd_program_z_total{program=\"b\"} 5\n"));
}

TEST_CASE("metrics text: two counters x and x_total do not collide") {
  Snapshot s;
  ProgramSnapshot p;
  p.name = "p";
  p.counters = {{"x", 1}, {"x_total", 2}};
  s.programs.push_back(p);
  const std::string out = render_prometheus(s);
  CHECK(contains(out, "preforkd_program_x_total{program=\"p\"} 1\n"));
  CHECK(contains(out, "preforkd_program_x_total_total{program=\"p\"} 2\n"));
}

TEST_CASE("metrics text: a name that would make an invalid metric name is skipped") {
  Snapshot s;
  ProgramSnapshot p;
  p.name = "p";
  p.counters = {{"", 1}, {"bad-name", 2}, {"sp ace", 3}, {"good", 4}};
  p.gauges = {{"bad{x}", 5}, {"ünï", 6}};
  s.programs.push_back(p);
  const std::string out = render_prometheus(s);
  CHECK(count(out, "preforkd_program_") == 3);  // HELP, TYPE and the sample of "good"
  CHECK(contains(out, "preforkd_program_good_total{program=\"p\"} 4\n"));
}

TEST_CASE("metrics text: an empty snapshot still has every fixed family") {
  Snapshot s;
  s.version = "1.2.3";
  const std::string expected = std::string(kFixedHead) +
      "# HELP preforkd_worker_starts_total Worker processes started.\n"
      "# TYPE preforkd_worker_starts_total counter\n"
      "# HELP preforkd_worker_exits_total Worker processes that ended, by reason.\n"
      "# TYPE preforkd_worker_exits_total counter\n"
      "# HELP preforkd_config_generation The configuration generation preforkd last loaded (1 at start, +1 per reload that read a valid file).\n"
      "# TYPE preforkd_config_generation gauge\n"
      "preforkd_config_generation 0\n"
      "# HELP preforkd_generation The configuration generation each program runs (older than preforkd_config_generation after an aborted or rolled-back reload).\n"
      "# TYPE preforkd_generation gauge\n"
      "# HELP preforkd_rollbacks_total Rollbacks to the previous configuration, automatic (reload.guard) or by preforkctl rollback.\n"
      "# TYPE preforkd_rollbacks_total counter\n"
      "# HELP preforkd_reloads_total Configuration reloads, by result.\n"
      "# TYPE preforkd_reloads_total counter\n"
      "preforkd_reloads_total{result=\"ok\"} 0\n"
      "preforkd_reloads_total{result=\"failed\"} 0\n"
      "# HELP preforkd_notify_errors_total Malformed or rejected lines from the workers (notify pipe or NOTIFY_SOCKET).\n"
      "# TYPE preforkd_notify_errors_total counter\n"
      "# HELP preforkd_orphans_total Processes the workers left behind (orphans) that preforkd found, by the program they came from.\n"
      "# TYPE preforkd_orphans_total counter\n"
      "# HELP preforkd_notify_unattributed_total NOTIFY_SOCKET datagrams from a process that is no worker and in no worker's process group, dropped.\n"
      "# TYPE preforkd_notify_unattributed_total counter\n"
      "preforkd_notify_unattributed_total 0\n"
      "# HELP preforkd_listen_queue Connections waiting in a listener's accept queue (from the kernel, when scraped).\n"
      "# TYPE preforkd_listen_queue gauge\n"
      "# HELP preforkd_listen_queue_max The limit of a listener's accept queue: its effective backlog.\n"
      "# TYPE preforkd_listen_queue_max gauge\n"
      "# HELP preforkd_workers_busy Workers whose last word was BUSY=1 (workers that never say BUSY= are not counted).\n"
      "# TYPE preforkd_workers_busy gauge\n"
      "# HELP preforkd_worker_busy_seconds_total Seconds workers spent between BUSY=1 and BUSY=0.\n"
      "# TYPE preforkd_worker_busy_seconds_total counter\n"
      "# HELP preforkd_autoscale_total Autoscaling decisions, by direction.\n"
      "# TYPE preforkd_autoscale_total counter\n";
  CHECK(render_prometheus(s) == expected);
}
