// Prints render_prometheus() of a rich sample snapshot, for tests/metrics_parse.py
// (the metrics-parse ctest): several programs, shared and colliding names,
// negative gauges, odd program names and label values that need escaping.
#include <cstdio>
#include <limits>

#include "core/metrics_text.hpp"

using namespace preforkd::core;

namespace {

WorkerSnapshot worker(int slot, const char* state, bool retiring = false) {
  WorkerSnapshot w;
  w.slot = slot;
  w.state = state;
  w.pid = 1000 + slot;
  w.retiring = retiring;
  return w;
}

}  // namespace

int main() {
  Snapshot s;
  s.version = "0.1.0+sample \"quoted\" \\ back";
  s.pid = 42;
  s.generation = 3;
  s.reloads_ok = 5;
  s.reloads_failed = 1;
  s.host_listen_overflows = 17;
  s.notify_unattributed = 2;

  ProgramSnapshot echo;
  echo.name = "echo";
  echo.state = "running";
  echo.workers_wanted = 3;
  echo.workers = {worker(0, "ready"), worker(1, "ready"), worker(2, "starting"), worker(1, "stopping", true)};
  echo.starts = 7;
  echo.exits = {1, 2, 0, 0, 3};
  echo.notify_errors = 2;
  echo.orphans_total = 5;
  echo.listeners = {{"echo", "127.0.0.1:7000", true, 37, 1024}, {"echo-1", "unix:/run/echo.sock", false, 0, 0}};
  echo.generation = 3;
  echo.counters = {{"requests", 1234}, {"bytes_in", std::numeric_limits<uint64_t>::max()}, {"x", 1}};
  echo.gauges = {{"active_connections", 12}, {"x_total", 99}, {"x", 98}};  // both collide with counter x

  ProgramSnapshot odd;
  odd.name = "a.b-c";
  odd.state = "crash-looping";
  odd.workers_wanted = 2;
  odd.workers = {worker(0, "backoff"), worker(1, "stopped")};
  odd.starts = 40;
  odd.exits = {0, 38, 1, 1, 0};
  odd.counters = {{"requests", 9}, {"x_total", 4}};
  odd.generation = 2;  // a reload to 3 was rolled back
  odd.rollbacks = 1;
  odd.gauges = {{"active_connections", -3}, {"queue_depth", 0}};

  ProgramSnapshot weird;
  weird.name = "we\"ird\\name\nline2";
  weird.state = "stopped";
  weird.gauges = {{"temperature", std::numeric_limits<int64_t>::min()}};

  ProgramSnapshot idle;
  idle.name = "idle_1";
  idle.state = "running";

  s.programs = {echo, odd, weird, idle};
  std::fputs(render_prometheus(s).c_str(), stdout);
  return std::fflush(stdout) == 0 ? 0 : 1;
}
