#include "core/worker.hpp"

#include <algorithm>
#include <csignal>

namespace preforkd::core {

const char* to_string(WorkerState s) {
  switch (s) {
    case WorkerState::Backoff: return "backoff";
    case WorkerState::Starting: return "starting";
    case WorkerState::Ready: return "ready";
    case WorkerState::Stopping: return "stopping";
    case WorkerState::Killing: return "stopping";
    case WorkerState::Stopped: return "stopped";
  }
  return "?";
}

const char* to_string(StopReason r) {
  switch (r) {
    case StopReason::None: return "none";
    case StopReason::Operator: return "operator";
    case StopReason::Shutdown: return "shutdown";
    case StopReason::Scale: return "scale";
    case StopReason::Replace: return "replace";
    case StopReason::Recycle: return "recycle";
    case StopReason::Watchdog: return "watchdog";
    case StopReason::StartTimeout: return "start_timeout";
  }
  return "?";
}

const char* to_string(ExitKind k) {
  switch (k) {
    case ExitKind::Exit: return "exit";
    case ExitKind::Signal: return "signal";
    case ExitKind::Watchdog: return "watchdog";
    case ExitKind::StartTimeout: return "start_timeout";
    case ExitKind::Recycled: return "recycled";
  }
  return "?";
}

const char* state_name(WorkerState s) {
  switch (s) {
    case WorkerState::Backoff: return "backoff";
    case WorkerState::Starting: return "starting";
    case WorkerState::Ready: return "ready";
    case WorkerState::Stopping: return "stopping";
    case WorkerState::Killing: return "killing";
    case WorkerState::Stopped: return "stopped";
  }
  return "?";
}

const char* want_name(Want w) {
  switch (w) {
    case Want::Up: return "up";
    case Want::Down: return "down";
    case Want::Remove: return "remove";
  }
  return "?";
}

namespace {

// The value whose stable name is `name`, by a walk over all values (a
// handful each: a map would cost more than it saves).
template <typename T, size_t N>
std::optional<T> by_name(const std::array<T, N>& all, const char* (*name_of)(T), std::string_view name) {
  for (T v : all)
    if (name == name_of(v)) return v;
  return std::nullopt;
}

}  // namespace

std::optional<WorkerState> worker_state_from(std::string_view name) {
  return by_name(kAllWorkerStates, state_name, name);
}

std::optional<Want> want_from(std::string_view name) { return by_name(kAllWants, want_name, name); }

std::optional<StopReason> stop_reason_from(std::string_view name) {
  return by_name<StopReason>(kAllStopReasons, to_string, name);
}

SlotPolicy SlotPolicy::from(const config::Program& p) {
  SlotPolicy s;
  s.restart = p.restart;
  s.backoff = p.backoff;
  s.ready = p.ready;
  s.start_timeout = p.start_timeout;
  s.stop_timeout = p.stop_timeout;
  s.watchdog_timeout = p.watchdog_timeout;
  s.stop_signal = p.stop_signal;
  return s;
}

bool has_process(const Worker& w) {
  return w.state == WorkerState::Starting || w.state == WorkerState::Ready ||
         w.state == WorkerState::Stopping || w.state == WorkerState::Killing;
}

Duration backoff_delay(const config::Backoff& b, unsigned failures, double jitter) {
  if (failures <= 1) return Duration{0};  // SPEC: the first failure respawns at once
  double base = static_cast<double>(b.min.count());
  double cap = static_cast<double>(std::max(b.max, b.min).count());
  for (unsigned i = 2; i < failures && base < cap; ++i) base *= 2;
  base = std::min(base, cap);
  jitter = std::clamp(jitter, -0.2, 0.2);
  auto ms = static_cast<long long>(base * (1.0 + jitter));
  return std::max(Duration{ms}, kBackoffFloor);
}

namespace {

// The slot has no process any more; decide between respawn, stop and forget.
void settle_without_process(Worker& w, Effects& e, TimePoint now, Duration delay) {
  w.pid = 0;
  w.stop_reason = StopReason::None;
  if (w.want == Want::Remove) {
    w.state = WorkerState::Stopped;
    w.deadline = kNever;
    e.forget = true;
    return;
  }
  if (w.want == Want::Down) {
    w.state = WorkerState::Stopped;
    w.deadline = kNever;
    return;
  }
  w.state = WorkerState::Backoff;
  e.respawn_delay = delay;
  if (delay.count() == 0) {
    // Respawn in this very iteration: the replacement latency is the product.
    w.deadline = kNever;
    e.spawn = true;
  } else {
    w.deadline = now + delay;
  }
}

ExitKind classify(const Worker& w, Termination t) {
  switch (w.stop_reason) {
    case StopReason::Watchdog: return ExitKind::Watchdog;
    case StopReason::StartTimeout: return ExitKind::StartTimeout;
    case StopReason::Recycle: return ExitKind::Recycled;
    default: return t.signaled ? ExitKind::Signal : ExitKind::Exit;
  }
}

// Ready from now on: the watchdog clock starts (SPEC: when the worker becomes ready).
void become_ready(Worker& w, const SlotPolicy& p, TimePoint now) {
  w.state = WorkerState::Ready;
  w.ready_at = now;
  w.last_seen = now;
  w.deadline = p.watchdog_timeout.count() > 0 ? now + p.watchdog_timeout : kNever;
}

void begin_stop(Worker& w, const SlotPolicy& p, StopReason reason, Effects& e, TimePoint now) {
  e.signal = reason == StopReason::Watchdog ? SIGABRT : p.stop_signal;
  w.state = WorkerState::Stopping;
  w.stop_reason = reason;
  w.deadline = now + p.stop_timeout;
}

// ---- the decisions, one function per distinct cell content ----
//
// Each carries out one decision of kTable below; `fire` has already recorded
// the want of Stop, Kill and Start, and marks a no-op cell's Effects itself.

using Decide = void (*)(Worker&, const SlotPolicy&, const WorkerInput&, Effects&);

void nothing(Worker&, const SlotPolicy&, const WorkerInput&, Effects&) {}

// Backoff x Due: the backoff is over.
void spawn_or_settle(Worker& w, const SlotPolicy&, const WorkerInput& in, Effects& e) {
  w.deadline = kNever;
  if (w.want == Want::Up) {
    e.spawn = true;
  } else {
    settle_without_process(w, e, in.now, Duration{0});
  }
}

// Starting x Due: no READY=1 within start_timeout.
void start_timeout(Worker& w, const SlotPolicy& p, const WorkerInput& in, Effects& e) {
  begin_stop(w, p, StopReason::StartTimeout, e, in.now);
}

// Ready x Due: the watchdog, checked lazily against the last line seen.
void watchdog(Worker& w, const SlotPolicy& p, const WorkerInput& in, Effects& e) {
  if (p.watchdog_timeout.count() == 0) {
    w.deadline = kNever;  // a deadline armed under an earlier policy
    e.noop = "due in ready without a watchdog";
  } else if (in.now - w.last_seen >= p.watchdog_timeout) {
    begin_stop(w, p, StopReason::Watchdog, e, in.now);  // SIGABRT, then SIGKILL after stop_timeout
  } else {
    w.deadline = w.last_seen + p.watchdog_timeout;
  }
}

// Stopping x Due (stop_timeout passed), Killing x Due (still not reaped): kill (again).
void escalate(Worker& w, const SlotPolicy&, const WorkerInput& in, Effects& e) {
  e.signal = SIGKILL;
  w.state = WorkerState::Killing;
  w.deadline = in.now + kRekillInterval;
}

// Stopped x Due: a stopped slot has no deadline; drop a stale one.
void disarm(Worker& w, const SlotPolicy&, const WorkerInput&, Effects&) { w.deadline = kNever; }

// Backoff x Spawned.
void spawned(Worker& w, const SlotPolicy& p, const WorkerInput& in, Effects&) {
  // A retry after failed spawns is a restart too (streak > 0 without a spawn yet).
  if (w.spawn_seq > 0 || w.streak > 0) ++w.restarts;
  ++w.spawn_seq;
  w.pid = in.pid;
  w.generation = in.generation;
  w.started_at = in.now;
  w.stop_reason = StopReason::None;
  w.status_text.clear();
  if (p.ready == config::ReadyMode::Exec) {
    become_ready(w, p, in.now);
  } else {
    w.state = WorkerState::Starting;
    w.deadline = in.now + p.start_timeout;
  }
}

// Backoff x SpawnFailed.
void spawn_failed(Worker& w, const SlotPolicy& p, const WorkerInput& in, Effects& e) {
  e.failure = true;
  // A failed try counts as a restart as an early exit would (issue #15: a
  // worker that cannot setuid crash-looped with RESTARTS 0). The first try
  // of a slot is no restart.
  if (w.spawn_seq > 0 || w.streak > 0) ++w.restarts;
  ++w.streak;
  settle_without_process(w, e, in.now, backoff_delay(p.backoff, w.streak, in.jitter));
  if (e.spawn) {
    // Never retry a failed spawn in the same iteration: go through the timer.
    e.spawn = false;
    w.deadline = in.now;
  }
}

// Starting x Ready.
void ready(Worker& w, const SlotPolicy& p, const WorkerInput& in, Effects&) { become_ready(w, p, in.now); }

// Starting/Ready x Exited: nobody here asked it to stop.
void died(Worker& w, const SlotPolicy& p, const WorkerInput& in, Effects& e) {
  e.exited = true;
  e.exit_kind = classify(w, in.termination);
  Duration delay{0};
  bool proven = w.state == WorkerState::Ready && in.now - w.ready_at >= p.backoff.reset_after;
  if (proven) {
    w.streak = 0;  // a death after reset_after of readiness starts no streak
  } else {
    ++w.streak;
    e.failure = true;
    delay = backoff_delay(p.backoff, w.streak, in.jitter);
  }
  bool clean = !in.termination.signaled && in.termination.code == 0;
  bool restart = p.restart == config::Restart::Always ||
                 (p.restart == config::Restart::OnFailure && !clean);
  if (!restart && w.want == Want::Up) w.want = Want::Down;
  settle_without_process(w, e, in.now, delay);
}

// Stopping/Killing x Exited: a stop we started has ended.
void reaped(Worker& w, const SlotPolicy& p, const WorkerInput& in, Effects& e) {
  e.exited = true;
  e.exit_kind = classify(w, in.termination);
  Duration delay{0};
  if (w.stop_reason == StopReason::StartTimeout || w.stop_reason == StopReason::Watchdog) {
    // We killed it, but for failing: that is part of a streak.
    ++w.streak;
    e.failure = true;
    delay = backoff_delay(p.backoff, w.streak, in.jitter);
  }
  settle_without_process(w, e, in.now, delay);
}

// Backoff x Stop.
void stop_waiting(Worker& w, const SlotPolicy&, const WorkerInput& in, Effects& e) {
  if (in.want == Want::Up) {
    e.noop = "stop with want up for a slot in backoff";  // nothing runs, the backoff goes on
    return;
  }
  settle_without_process(w, e, in.now, Duration{0});
}

// Starting/Ready x Stop.
void stop(Worker& w, const SlotPolicy& p, const WorkerInput& in, Effects& e) {
  begin_stop(w, p, in.reason, e, in.now);
}

// Stopped x Stop.
void forget_if_removed(Worker&, const SlotPolicy&, const WorkerInput& in, Effects& e) {
  if (in.want == Want::Remove)
    e.forget = true;
  else
    e.noop = "stop for a stopped slot";
}

// Backoff x Kill: nothing runs, so the want applies at once.
void settle_now(Worker& w, const SlotPolicy&, const WorkerInput& in, Effects& e) {
  settle_without_process(w, e, in.now, Duration{0});
}

// Starting/Ready/Stopping x Kill.
void kill_now(Worker& w, const SlotPolicy&, const WorkerInput& in, Effects& e) {
  e.signal = SIGKILL;
  if (w.stop_reason == StopReason::None) w.stop_reason = StopReason::Shutdown;
  w.state = WorkerState::Killing;
  w.deadline = in.now + kRekillInterval;
}

// Killing x Kill: SIGKILL went out already; the re-kill counts from now.
void rearm_rekill(Worker& w, const SlotPolicy&, const WorkerInput& in, Effects&) {
  if (w.stop_reason == StopReason::None) w.stop_reason = StopReason::Shutdown;
  w.deadline = in.now + kRekillInterval;
}

// Backoff x Start.
void cut_backoff(Worker& w, const SlotPolicy&, const WorkerInput& in, Effects&) {
  w.deadline = std::min(w.deadline, in.now);
}

// Stopped x Start.
void start_again(Worker& w, const SlotPolicy&, const WorkerInput&, Effects& e) {
  w.state = WorkerState::Backoff;
  w.streak = 0;
  w.deadline = kNever;
  e.spawn = true;
}

// ---- the table ----

struct Entry {
  Cell cell;
  Decide decide;
};

constexpr Entry act(const char* decision, Decide decide) { return {{decision, false, false}, decide}; }
constexpr Entry ignore(const char* name, Decide decide = nothing) { return {{name, true, false}, decide}; }
constexpr Entry bug(const char* name) { return {{name, true, true}, nothing}; }

constexpr size_t kStates = kAllWorkerStates.size();
constexpr size_t kEvents = kAllWorkerEvents.size();

// The whole machine (and worker.hpp's comment, in prose). Rows in
// WorkerState order, columns in WorkerEvent order: Due, Spawned,
// SpawnFailed, Ready, Exited, Stop, Kill, Start.
constexpr Entry kTable[kStates][kEvents] = {
    {
        // Backoff: no process, waiting for `deadline` (kNever: a spawn is under way)
        act("backoff over: want up -> Spawn, down/remove -> settle", spawn_or_settle),
        act("record the pid -> Starting, or Ready with ready: exec", spawned),
        act("streak++, failure: retry after backoff_delay via the timer", spawn_failed),
        bug("READY=1 for a slot without a process"),
        bug("exit for a slot without a process"),
        act("want down/remove -> settle, up -> keep backing off", stop_waiting),
        act("nothing runs: settle now (want up -> Spawn now)", settle_now),
        act("cut the backoff short: due now", cut_backoff),
    },
    {
        // Starting: a process, no READY=1 yet (ready: notify)
        act("start_timeout: stop_signal -> Stopping (start_timeout)", start_timeout),
        bug("spawned while not in backoff"),
        bug("spawn failure while not in backoff"),
        act("READY=1: -> Ready, the watchdog starts", ready),
        act("unready death: streak++, restart policy, settle", died),
        act("stop_signal -> Stopping, arm stop_timeout", stop),
        act("SIGKILL -> Killing (shutdown), re-kill in 5 s", kill_now),
        ignore("start for a running slot"),
    },
    {
        // Ready: a process that serves
        act("watchdog: silent -> SIGABRT -> Stopping, heard -> re-arm", watchdog),
        bug("spawned while not in backoff"),
        bug("spawn failure while not in backoff"),
        ignore("READY=1 again"),
        act("death: streak reset if proven, restart policy, settle", died),
        act("stop_signal (watchdog: SIGABRT) -> Stopping", stop),
        act("SIGKILL -> Killing (shutdown), re-kill in 5 s", kill_now),
        ignore("start for a running slot"),
    },
    {
        // Stopping: we sent a stop signal; stop_timeout runs
        act("stop_timeout: SIGKILL -> Killing, re-kill in 5 s", escalate),
        bug("spawned while not in backoff"),
        bug("spawn failure while not in backoff"),
        ignore("READY=1 while stopping"),
        act("reaped: watchdog/start_timeout count, settle", reaped),
        act("already stopping: the new want applies when reaped", nothing),
        act("SIGKILL -> Killing, re-kill in 5 s", kill_now),
        act("want up: respawned when reaped", nothing),
    },
    {
        // Killing: we sent SIGKILL; re-killed every 5 s until reaped (s6)
        act("still alive: SIGKILL again, re-kill in 5 s", escalate),
        bug("spawned while not in backoff"),
        bug("spawn failure while not in backoff"),
        ignore("READY=1 while stopping"),
        act("reaped: watchdog/start_timeout count, settle", reaped),
        act("already stopping: the new want applies when reaped", nothing),
        act("already killed: new want applies when reaped, re-kill in 5 s", rearm_rekill),
        act("want up: respawned when reaped", nothing),
    },
    {
        // Stopped: no process, none wanted
        ignore("due for a stopped slot", disarm),
        bug("spawned while not in backoff"),
        bug("spawn failure while not in backoff"),
        bug("READY=1 for a slot without a process"),
        bug("exit for a slot without a process"),
        act("want remove -> Forget, up/down -> nothing to stop", forget_if_removed),
        ignore("kill for a stopped slot"),
        act("-> Backoff, streak reset, Spawn now", start_again),
    },
};

const Entry& entry(WorkerState s, WorkerEvent e) {
  return kTable[static_cast<size_t>(s)][static_cast<size_t>(e)];
}

}  // namespace

const char* to_string(WorkerEvent e) {
  switch (e) {
    case WorkerEvent::Due: return "due";
    case WorkerEvent::Spawned: return "spawned";
    case WorkerEvent::SpawnFailed: return "spawn_failed";
    case WorkerEvent::Ready: return "ready";
    case WorkerEvent::Exited: return "exited";
    case WorkerEvent::Stop: return "stop";
    case WorkerEvent::Kill: return "kill";
    case WorkerEvent::Start: return "start";
  }
  return "?";
}

const Cell& cell(WorkerState s, WorkerEvent e) { return entry(s, e).cell; }

Effects fire(Worker& w, const SlotPolicy& p, const WorkerInput& in) {
  const Entry& x = entry(w.state, in.event);
  Effects e;
  // runit's want: what the operator asked for holds whatever the state.
  if (in.event == WorkerEvent::Stop || in.event == WorkerEvent::Kill) w.want = in.want;
  if (in.event == WorkerEvent::Start) w.want = Want::Up;
  x.decide(w, p, in, e);
  if (x.cell.noop) {
    e.noop = x.cell.decision;
    e.anomaly = x.cell.anomaly;
  }
  return e;
}

// ---- the events one by one: each is `fire` ----

namespace {

WorkerInput input(WorkerEvent event, TimePoint now) {
  WorkerInput in;
  in.event = event;
  in.now = now;
  return in;
}

const SlotPolicy& no_policy() {  // Kill and Start decide without one
  static const SlotPolicy none;
  return none;
}

}  // namespace

Effects on_due(Worker& w, const SlotPolicy& p, TimePoint now) {
  return fire(w, p, input(WorkerEvent::Due, now));
}

void on_spawned(Worker& w, const SlotPolicy& p, pid_t pid, uint64_t generation, TimePoint now) {
  WorkerInput in = input(WorkerEvent::Spawned, now);
  in.pid = pid;
  in.generation = generation;
  fire(w, p, in);
}

Effects on_spawn_failed(Worker& w, const SlotPolicy& p, TimePoint now, double jitter) {
  WorkerInput in = input(WorkerEvent::SpawnFailed, now);
  in.jitter = jitter;
  return fire(w, p, in);
}

bool on_ready(Worker& w, const SlotPolicy& p, TimePoint now) {
  return fire(w, p, input(WorkerEvent::Ready, now)).noop == nullptr;
}

void on_notify_seen(Worker& w, TimePoint now) {
  if (has_process(w)) w.last_seen = now;
}

bool extend_start_timeout(Worker& w, TimePoint now, uint64_t usec) {
  if (w.state != WorkerState::Starting) return false;
  Duration d = usec / 1000 >= static_cast<uint64_t>(kMaxTimeoutExtension.count())
                   ? kMaxTimeoutExtension
                   : Duration(static_cast<Duration::rep>(usec / 1000));
  if (now + d <= w.deadline) return false;
  w.deadline = now + d;
  return true;
}

Effects on_exited(Worker& w, const SlotPolicy& p, Termination t, TimePoint now, double jitter) {
  WorkerInput in = input(WorkerEvent::Exited, now);
  in.termination = t;
  in.jitter = jitter;
  return fire(w, p, in);
}

Effects on_stop(Worker& w, const SlotPolicy& p, StopReason reason, Want want, TimePoint now) {
  WorkerInput in = input(WorkerEvent::Stop, now);
  in.reason = reason;
  in.want = want;
  return fire(w, p, in);
}

Effects on_kill(Worker& w, TimePoint now, Want want) {
  WorkerInput in = input(WorkerEvent::Kill, now);
  in.want = want;
  return fire(w, no_policy(), in);
}

Effects on_start(Worker& w, TimePoint now) { return fire(w, no_policy(), input(WorkerEvent::Start, now)); }

// ---- moving a process between records (no event: no state of its own changes) ----

Worker hand_over(Worker& w) {
  Worker old = w;
  old.want = Want::Remove;
  w.pid = 0;
  w.state = WorkerState::Backoff;
  w.deadline = kNever;
  w.stop_reason = StopReason::None;
  w.status_text.clear();
  return old;
}

void take_back(Worker& w, const Worker& retiree) {
  w.state = retiree.state;
  w.pid = retiree.pid;
  w.generation = retiree.generation;
  w.started_at = retiree.started_at;
  w.ready_at = retiree.ready_at;
  w.last_seen = retiree.last_seen;
  w.deadline = retiree.deadline;
  w.stop_reason = retiree.stop_reason;
  w.status_text = retiree.status_text;
  w.want = Want::Up;
}

}  // namespace preforkd::core
