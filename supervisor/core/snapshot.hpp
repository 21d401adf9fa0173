// snapshot.hpp — what preforkd shows the outside, as plain values.
//
// The daemon fills a Snapshot from its live state; `status`, `stats` (JSON,
// daemon/control_protocol) and the Prometheus text (core/metrics_text) are
// rendered from it, so every view reports the same numbers. No OS, no clock.
#pragma once

#include <sys/types.h>

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace preforkd::core {

// SPEC's worker states, in display order; "stopping" covers Killing.
inline constexpr std::array<const char*, 5> kWorkerStateNames = {"starting", "ready", "stopping",
                                                                "backoff", "stopped"};
// SPEC's exit reasons, indexed by core::ExitKind.
inline constexpr std::array<const char*, 5> kExitReasonNames = {"exit", "signal", "watchdog",
                                                               "start_timeout", "recycled"};

struct WorkerSnapshot {
  int slot = 0;
  pid_t pid = 0;              // 0 when the slot has no process
  std::string state;          // one of kWorkerStateNames
  uint64_t generation = 0;
  double uptime_s = 0;        // since the current process started; 0 without one
  unsigned restarts = 0;
  std::string status;         // last STATUS= text
  bool retiring = false;      // an old process serving until its replacement is proven
  std::string busy = "unknown";  // "busy", "idle" (BUSY=1 / BUSY=0), or "unknown": never said
  std::map<std::string, uint64_t> counters;
  std::map<std::string, int64_t> gauges;
  // The live processes below it (a master's children), breadth first;
  // filled by the daemon for `status` only (daemon/orphans.cpp).
  std::vector<pid_t> descendants;
};

// A process a worker left behind, while preforkd stops it (or keeps it).
struct OrphanSnapshot {
  pid_t pid = 0;
  std::string command;   // its comm (at most 15 bytes)
  std::string program;   // the program it came from; "" when not known
  pid_t left_by = 0;     // the worker it descends from; 0 when not known
  std::string state;     // "stopping", "killing" or "kept"
  double age_s = 0;      // since preforkd found it
};

// One configured listen address of a program and its accept queue, as the
// kernel reports it (daemon fills length/max on demand; core only names it).
// With reuseport, the figures are summed over the slots' sockets.
struct ListenerSnapshot {
  std::string listen;    // the LISTEN_FDNAMES name: "echo", "echo-1" or explicit
  std::string address;   // as written: "127.0.0.1:7000", "unix:/run/x.sock"
  bool known = false;    // false: the kernel did not tell (length and max read 0)
  uint64_t length = 0;   // connections waiting to be accepted
  uint64_t max = 0;      // the queue's limit (effective backlog)
};

struct ProgramSnapshot {
  std::string name;
  std::string state;          // "running", "crash-looping" or "stopped"
  // The configuration generation the program runs: what its new workers
  // start with (after an aborted or rolled-back reload, the older one).
  uint64_t generation = 0;
  std::string phase;          // core::ProgramPhase: running rolling-out guarding rolling-back removing
  std::string rollout;        // while rolling: "reload", "restart" or "rollback"; else empty
  uint64_t previous_generation = 0;  // the other configuration held (guard, rollout, rollback); 0: none
  double guard_left_s = -1;   // guarding: seconds until the previous configuration is dropped; else -1
  uint64_t rollbacks = 0;     // rollbacks started (preforkd_rollbacks_total)
  uint32_t workers_wanted = 0;
  std::vector<WorkerSnapshot> workers;  // slots in order, then retiring processes
  std::map<std::string, uint64_t> counters;  // live + retired: never goes back
  std::map<std::string, int64_t> gauges;     // sum over live workers
  uint64_t notify_errors = 0;
  uint64_t starts = 0;
  std::array<uint64_t, 5> exits{};  // by kExitReasonNames
  std::vector<OrphanSnapshot> orphans;  // being stopped or kept now
  uint64_t orphans_total = 0;           // found, ever
  std::vector<ListenerSnapshot> listeners;  // in `listen` order
  uint32_t workers_busy = 0;       // processes whose last word was BUSY=1
  uint32_t workers_reporting = 0;  // processes that said BUSY=1 or BUSY=0 (the others are unknown)
  double busy_seconds = 0;         // all processes, ever: never goes back
  uint64_t autoscale_up = 0;       // autoscaling decisions, ever
  uint64_t autoscale_down = 0;
  std::optional<uint32_t> workers_min, workers_max;  // with workers: {min, max}
  uint32_t ready_min = 1;          // config: what GET /readyz asks of this program
};

struct Snapshot {
  std::string version;
  pid_t pid = 0;
  uint64_t generation = 0;
  std::vector<ProgramSnapshot> programs;
  uint64_t reloads_ok = 0;
  uint64_t reloads_failed = 0;
  std::vector<OrphanSnapshot> orphans;  // of no program that runs: origin unknown, or removed by a reload
  // TcpExt ListenOverflows: connections dropped because an accept queue was
  // full, for the whole host (network namespace), not per socket. nullopt:
  // not read or not available.
  std::optional<uint64_t> host_listen_overflows;
  uint64_t notify_unattributed = 0;  // NOTIFY_SOCKET datagrams from no worker, dropped
  bool shutting_down = false;
};

// GET /readyz: ready while preforkd is not shutting down and every program
// has at least min(ready_min, the workers it is meant to run) workers in
// state ready (a retiring one counts: it still serves). The reason names
// each program that falls short, for the 503's body.
struct Readiness {
  bool ready = false;
  std::string reason;
};
Readiness readiness(const Snapshot& s);

}  // namespace preforkd::core
