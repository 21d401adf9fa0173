// worker.hpp — one worker slot's state machine (STYLE 3.5), pure policy.
//
// Owns: the transition of a slot between Backoff, Starting, Ready, Stopping,
// Killing and Stopped, the restart/backoff decision, and the exit reason.
// Must never: call the OS or read the clock. Time comes in as `now`, the
// jitter as a number, and every decision comes back as Effects that the
// daemon carries out (spawn, signal, forget). A slot has exactly one
// deadline at a time, whose meaning depends on its state (backoff start,
// start_timeout, stop_timeout, re-kill); the daemon arms one timerfd to the
// earliest deadline of all slots, so a stale timer cannot exist (T14).
//
// Worker is plain data on purpose: the reload work diffs it and the in-place
// upgrade serialises it.
#pragma once

#include <sys/types.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "config/config.hpp"

namespace preforkd::core {

using Clock = std::chrono::steady_clock;
using TimePoint = Clock::time_point;
using Duration = std::chrono::milliseconds;
inline constexpr TimePoint kNever = TimePoint::max();

enum class WorkerState { Backoff, Starting, Ready, Stopping, Killing, Stopped };
enum class Want { Up, Down, Remove };  // runit's "want": what the slot should become
enum class StopReason { None, Operator, Shutdown, Scale, Replace, Recycle, Watchdog, StartTimeout };
// Why a worker ended, as counted per program (SPEC "exits").
enum class ExitKind { Exit, Signal, Watchdog, StartTimeout, Recycled };

inline constexpr std::array<WorkerState, 6> kAllWorkerStates = {
    WorkerState::Backoff,  WorkerState::Starting, WorkerState::Ready,
    WorkerState::Stopping, WorkerState::Killing,  WorkerState::Stopped};
inline constexpr std::array<Want, 3> kAllWants = {Want::Up, Want::Down, Want::Remove};
inline constexpr std::array<StopReason, 8> kAllStopReasons = {
    StopReason::None,    StopReason::Operator, StopReason::Shutdown, StopReason::Scale,
    StopReason::Replace, StopReason::Recycle,  StopReason::Watchdog, StopReason::StartTimeout};

// SPEC display names: Killing shows as "stopping".
const char* to_string(WorkerState s);
const char* to_string(StopReason r);
const char* to_string(ExitKind k);

// Stable names for the on-disk state (the in-place upgrade): never renamed,
// and every value has its own, so Killing is "killing" here, unlike its
// display name. StopReason's stable names are its to_string names.
const char* state_name(WorkerState s);  // backoff starting ready stopping killing stopped
const char* want_name(Want w);          // up down remove
std::optional<WorkerState> worker_state_from(std::string_view name);
std::optional<Want> want_from(std::string_view name);
std::optional<StopReason> stop_reason_from(std::string_view name);

// The part of a program's configuration the state machine needs.
struct SlotPolicy {
  config::Restart restart = config::Restart::Always;
  config::Backoff backoff;
  config::ReadyMode ready = config::ReadyMode::Exec;
  Duration start_timeout{30000};
  Duration stop_timeout{10000};
  Duration watchdog_timeout{0};  // 0: no watchdog
  int stop_signal = 15;
  static SlotPolicy from(const config::Program& p);
};

// How a reaped worker ended (a copy of sys::ExitStatus's facts, so core stays OS-free).
struct Termination {
  bool signaled = false;
  int code = 0;  // exit code, or the signal number when signaled
};

struct Worker {
  int slot = 0;
  WorkerState state = WorkerState::Backoff;
  Want want = Want::Up;
  pid_t pid = 0;              // > 0 exactly in Starting, Ready, Stopping, Killing (T14)
  uint64_t spawn_seq = 0;     // which spawn of this slot the pid belongs to
  uint64_t generation = 0;    // config generation the worker was started with
  TimePoint started_at{};
  TimePoint ready_at{};
  TimePoint last_seen{};        // last valid notify line (the watchdog's clock)
  TimePoint deadline = kNever;  // the slot's one timer (see the header comment)
  unsigned streak = 0;          // consecutive failures (deaths before reset_after, failed spawns)
  unsigned restarts = 0;        // tries to start this slot after its first try, failed spawns included
  StopReason stop_reason = StopReason::None;
  std::string status_text;      // last STATUS= line
};

// What the table decided: the daemon carries these out.
struct Effects {
  bool spawn = false;          // start a worker in this slot now
  int signal = 0;              // send this signal to the worker (its group if kill_group)
  bool forget = false;         // the slot is gone (scale-down finished)
  bool failure = false;        // the event counts as a failure (log severity, crash-looping)
  bool exited = false;         // a worker ended: `exit_kind` is valid
  ExitKind exit_kind = ExitKind::Exit;
  Duration respawn_delay{0};   // when the slot went to Backoff: how long it waits
  // A named no-op: the event was ignored in this state (the state stays, and
  // there is nothing above to do; Stop/Kill/Start still recorded `want`).
  // Static text for the daemon's log, at debug, or at warn when `anomaly`.
  const char* noop = nullptr;
  bool anomaly = false;        // the no-op means a bug elsewhere (e.g. an exit for a slot without a process)
};

// The delay before the n-th consecutive failure's respawn (n >= 1): 0 for the
// first, then min * 2^(n-2) capped at max, scaled by (1 + jitter) with jitter
// in [-0.2, 0.2], and never below kBackoffFloor (no fork storm even with
// min: 0s, T25).
inline constexpr Duration kBackoffFloor{10};
Duration backoff_delay(const config::Backoff& b, unsigned failures, double jitter);

// How long after SIGKILL a still-unreaped worker is re-killed and warned about.
inline constexpr Duration kRekillInterval{5000};

// ---- The table: WorkerState × WorkerEvent (STYLE 3.5, s6-supervise's shape) ----
//
// Every cell is decided on purpose. worker.cpp holds the table as data,
// kTable[state][event] = {the decision's name, the function carrying it
// out}, and `fire` dispatches through it; tests/unit/worker_table_test.cpp
// fires every cell. Below, the same table for a reader:
//   x "name"   a named no-op: the state stays, nothing to do; Effects::noop =
//              "name", which the daemon logs at debug;
//   x! "name"  the same, but it means a bug elsewhere (Effects::anomaly: warn);
//   settle     the slot has no process (any more): want up → Backoff (and
//              Spawn now if the delay is 0), down → Stopped, remove → Stopped
//              + Forget;
//   Due        the slot's one deadline, read by state: backoff over,
//              start_timeout, watchdog, stop_timeout, re-kill;
//   → Stopping arms stop_timeout; Stop, Kill and Start record their want
//              (Start: up) first, in every state, no-ops included.
//
// clang-format off
// | state ↓ / event →    | `Due` (the deadline)                               | `Spawned{pid}`                    | `SpawnFailed`                                   | `Ready` (READY=1)                         |
// |----------------------|----------------------------------------------------|-----------------------------------|-------------------------------------------------|-------------------------------------------|
// | **Backoff** (no pid) | want up → Spawn; down/remove → settle              | → Starting (ready: exec → Ready)  | streak++, failure; settle after backoff_delay ¹ | x! "READY=1 for a slot without a process" |
// | **Starting**         | stop_signal → Stopping (StartTimeout)              | x! "spawned while not in backoff" | x! "spawn failure while not in backoff"         | → Ready, the watchdog starts              |
// | **Ready**            | watchdog ²: silent → SIGABRT → Stopping (Watchdog) | x! "spawned while not in backoff" | x! "spawn failure while not in backoff"         | x "READY=1 again"                         |
// | **Stopping**         | stop_timeout: SIGKILL → Killing, re-kill in 5 s    | x! "spawned while not in backoff" | x! "spawn failure while not in backoff"         | x "READY=1 while stopping"                |
// | **Killing**          | still alive: SIGKILL again, re-kill in 5 s (s6)    | x! "spawned while not in backoff" | x! "spawn failure while not in backoff"         | x "READY=1 while stopping"                |
// | **Stopped** (no pid) | x "due for a stopped slot" (disarms)               | x! "spawned while not in backoff" | x! "spawn failure while not in backoff"         | x! "READY=1 for a slot without a process" |
//
// | state ↓ / event →    | `Exited{status}`                                       | `Stop{reason, want}`                                                  | `Kill{want}` (fast shutdown)                               | `Start` (operator)                |
// |----------------------|--------------------------------------------------------|-----------------------------------------------------------------------|------------------------------------------------------------|-----------------------------------|
// | **Backoff** (no pid) | x! "exit for a slot without a process"                 | down/remove → settle; up: x "stop with want up for a slot in backoff" | settle now (up: Spawn now)                                 | cut the backoff short: due now    |
// | **Starting**         | unready death: streak++, failure; restart policy ³     | stop_signal → Stopping                                                | SIGKILL → Killing (Shutdown), re-kill in 5 s               | x "start for a running slot"      |
// | **Ready**            | death: streak := 0 if proven ⁴; restart policy ³       | stop_signal (Watchdog: SIGABRT) → Stopping                            | SIGKILL → Killing (Shutdown), re-kill in 5 s               | x "start for a running slot"      |
// | **Stopping**         | reaped; a Watchdog/StartTimeout stop: streak++; settle | already stopping: the new want applies when reaped                    | SIGKILL → Killing, re-kill in 5 s                          | want up: respawned when reaped    |
// | **Killing**          | as Stopping                                            | as Stopping                                                           | no 2nd SIGKILL, want applies when reaped; re-kill from now | as Stopping                       |
// | **Stopped** (no pid) | x! "exit for a slot without a process"                 | remove → Forget; else x "stop for a stopped slot"                     | x "kill for a stopped slot"                                | → Backoff, streak := 0, Spawn now |
// clang-format on
//
// ¹ The first retry at once, but through the timer (deadline := now), never
//   in the same iteration.
// ² The watchdog is lazy (T26): heard within watchdog_timeout → re-arm at
//   last_seen + timeout; no watchdog (an earlier policy armed it) → disarm,
//   x "due in ready without a watchdog".
// ³ restart: always → settle; on-failure → after a clean exit (code 0) want
//   up becomes down, then settle; never → want up becomes down, then settle.
//   An unproven death is a failure (streak++) and waits backoff_delay(streak).
// ⁴ Proven: up ≥ backoff.reset_after since READY; its death starts no streak.
//
// Not in the table, because they change no state: any valid notify line
// feeds the watchdog (on_notify_seen: last_seen := now while there is a
// process), and hand_over / take_back move a process between a slot and a
// retiree record.

enum class WorkerEvent { Due, Spawned, SpawnFailed, Ready, Exited, Stop, Kill, Start };
inline constexpr std::array<WorkerEvent, 8> kAllWorkerEvents = {
    WorkerEvent::Due,    WorkerEvent::Spawned, WorkerEvent::SpawnFailed, WorkerEvent::Ready,
    WorkerEvent::Exited, WorkerEvent::Stop,    WorkerEvent::Kill,        WorkerEvent::Start};
// due spawned spawn_failed ready exited stop kill start
const char* to_string(WorkerEvent e);

// One event and its arguments (those of the matching on_* function below;
// the others are not read).
struct WorkerInput {
  WorkerEvent event = WorkerEvent::Due;
  TimePoint now{};
  pid_t pid = 0;                         // Spawned
  uint64_t generation = 0;               // Spawned
  Termination termination;               // Exited
  StopReason reason = StopReason::None;  // Stop
  Want want = Want::Down;                // Stop, Kill (Start always wants Up)
  double jitter = 0.0;                   // SpawnFailed, Exited
};

// One cell of the table: the name of its decision and whether it ignores the
// event in every case (then `fire` returns Effects::noop == decision, and
// Effects::anomaly == anomaly). A cell that is not a no-op may still ignore
// some cases (e.g. Ready x Due without a watchdog) with a name of its own.
struct Cell {
  const char* decision;
  bool noop;
  bool anomaly;
};
const Cell& cell(WorkerState s, WorkerEvent e);

// Fires `in` at `w`: the cell (w.state, in.event) decides; the worker record
// is updated in place. `p` is not read by Kill and Start.
Effects fire(Worker& w, const SlotPolicy& p, const WorkerInput& in);

// The events one by one, as before the table (each is `fire`).
Effects on_due(Worker& w, const SlotPolicy& p, TimePoint now);
void on_spawned(Worker& w, const SlotPolicy& p, pid_t pid, uint64_t generation, TimePoint now);
Effects on_spawn_failed(Worker& w, const SlotPolicy& p, TimePoint now, double jitter);
// READY=1 from the worker. Returns true if it changed the state.
bool on_ready(Worker& w, const SlotPolicy& p, TimePoint now);
// Any valid notify line: feeds the watchdog. Lazy (T26): only `last_seen`
// moves; the deadline is re-checked when it expires, so a busy notify stream
// costs no timer re-arming.
void on_notify_seen(Worker& w, TimePoint now);
// EXTEND_TIMEOUT_USEC=usec (sd_notify(3)): a worker still starting gets at
// least `usec` more from now before start_timeout (never less than it had;
// at most kMaxTimeoutExtension at a time). No effect in any other state.
// Returns true if the deadline moved.
inline constexpr Duration kMaxTimeoutExtension{24 * 3600 * 1000};
bool extend_start_timeout(Worker& w, TimePoint now, uint64_t usec);
Effects on_exited(Worker& w, const SlotPolicy& p, Termination t, TimePoint now, double jitter);
// Operator/scale/shutdown stop: `want` says what the slot becomes afterwards.
Effects on_stop(Worker& w, const SlotPolicy& p, StopReason reason, Want want, TimePoint now);
// Fast shutdown: SIGKILL whatever runs.
Effects on_kill(Worker& w, TimePoint now, Want want);
// Operator start of a Stopped (or stopping) slot: want Up again.
Effects on_start(Worker& w, TimePoint now);

// Rolling replacement (recycling now, reload later; SPEC: new ready before
// old stops). The running process leaves the slot as a retiree record that
// keeps serving (want Remove: forgotten once reaped); the slot itself is left
// without a process and must spawn its successor now. Only from Ready.
Worker hand_over(Worker& w);

// The opposite, when a rollout is aborted: the retiree's process becomes the
// slot's worker again (want Up); the slot's own history (streak, restarts,
// spawn_seq) is kept. Only for a slot without a process.
void take_back(Worker& slot_worker, const Worker& retiree);

bool has_process(const Worker& w);

}  // namespace preforkd::core
