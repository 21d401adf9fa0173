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
  unsigned restarts = 0;        // respawns of this slot after the first start
  StopReason stop_reason = StopReason::None;
  std::string status_text;      // last STATUS= line
};

struct Effects {
  bool spawn = false;          // start a worker in this slot now
  int signal = 0;              // send this signal to the worker (its group if kill_group)
  bool forget = false;         // the slot is gone (scale-down finished)
  bool failure = false;        // the event counts as a failure (log severity, crash-looping)
  bool exited = false;         // a worker ended: `exit_kind` is valid
  ExitKind exit_kind = ExitKind::Exit;
  Duration respawn_delay{0};   // when the slot went to Backoff: how long it waits
  const char* noop = nullptr;  // TEMP until the table lands
  bool anomaly = false;
};

// The delay before the n-th consecutive failure's respawn (n >= 1): 0 for the
// first, then min * 2^(n-2) capped at max, scaled by (1 + jitter) with jitter
// in [-0.2, 0.2], and never below kBackoffFloor (no fork storm even with
// min: 0s, T25).
inline constexpr Duration kBackoffFloor{10};
Duration backoff_delay(const config::Backoff& b, unsigned failures, double jitter);

// Events. Each returns what the daemon must do; the worker record is updated in place.
Effects on_due(Worker& w, const SlotPolicy& p, TimePoint now);
void on_spawned(Worker& w, const SlotPolicy& p, pid_t pid, uint64_t generation, TimePoint now);
Effects on_spawn_failed(Worker& w, const SlotPolicy& p, TimePoint now, double jitter);
// READY=1 from the worker. Returns true if it changed the state.
bool on_ready(Worker& w, const SlotPolicy& p, TimePoint now);
// Any valid notify line: feeds the watchdog. Lazy (T26): only `last_seen`
// moves; the deadline is re-checked when it expires, so a busy notify stream
// costs no timer re-arming.
void on_notify_seen(Worker& w, TimePoint now);
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

// How long after SIGKILL a still-unreaped worker is re-killed and warned about.
inline constexpr Duration kRekillInterval{5000};

bool has_process(const Worker& w);

}  // namespace preforkd::core
