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

}  // namespace

Effects on_due(Worker& w, const SlotPolicy& p, TimePoint now) {
  Effects e;
  switch (w.state) {
    case WorkerState::Backoff:
      w.deadline = kNever;
      if (w.want == Want::Up) {
        e.spawn = true;
      } else {
        settle_without_process(w, e, now, Duration{0});
      }
      break;
    case WorkerState::Starting:  // no READY=1 within start_timeout
      begin_stop(w, p, StopReason::StartTimeout, e, now);
      break;
    case WorkerState::Ready:  // the watchdog, checked lazily against the last line seen
      if (p.watchdog_timeout.count() == 0) {
        w.deadline = kNever;
      } else if (now - w.last_seen >= p.watchdog_timeout) {
        begin_stop(w, p, StopReason::Watchdog, e, now);  // SIGABRT, then SIGKILL after stop_timeout
      } else {
        w.deadline = w.last_seen + p.watchdog_timeout;
      }
      break;
    case WorkerState::Stopping:  // stop_timeout passed
    case WorkerState::Killing:   // still not reaped: kill again
      e.signal = SIGKILL;
      w.state = WorkerState::Killing;
      w.deadline = now + kRekillInterval;
      break;
    case WorkerState::Stopped:
      w.deadline = kNever;
      break;
  }
  return e;
}

void on_spawned(Worker& w, const SlotPolicy& p, pid_t pid, uint64_t generation, TimePoint now) {
  if (w.spawn_seq > 0) ++w.restarts;
  ++w.spawn_seq;
  w.pid = pid;
  w.generation = generation;
  w.started_at = now;
  w.stop_reason = StopReason::None;
  w.status_text.clear();
  if (p.ready == config::ReadyMode::Exec) {
    become_ready(w, p, now);
  } else {
    w.state = WorkerState::Starting;
    w.deadline = now + p.start_timeout;
  }
}

Effects on_spawn_failed(Worker& w, const SlotPolicy& p, TimePoint now, double jitter) {
  Effects e;
  e.failure = true;
  ++w.streak;
  settle_without_process(w, e, now, backoff_delay(p.backoff, w.streak, jitter));
  if (e.spawn) {
    // Never retry a failed spawn in the same iteration: go through the timer.
    e.spawn = false;
    w.deadline = now;
  }
  return e;
}

bool on_ready(Worker& w, const SlotPolicy& p, TimePoint now) {
  if (w.state != WorkerState::Starting) return false;
  become_ready(w, p, now);
  return true;
}

void on_notify_seen(Worker& w, TimePoint now) {
  if (has_process(w)) w.last_seen = now;
}

Effects on_exited(Worker& w, const SlotPolicy& p, Termination t, TimePoint now, double jitter) {
  Effects e;
  if (!has_process(w)) return e;  // a bug elsewhere; the daemon logs it
  e.exited = true;
  e.exit_kind = classify(w, t);
  Duration delay{0};
  if (w.state == WorkerState::Starting || w.state == WorkerState::Ready) {
    // Nobody here asked it to stop.
    bool proven = w.state == WorkerState::Ready && now - w.ready_at >= p.backoff.reset_after;
    if (proven) {
      w.streak = 0;  // a death after reset_after of readiness starts no streak
    } else {
      ++w.streak;
      e.failure = true;
      delay = backoff_delay(p.backoff, w.streak, jitter);
    }
    bool clean = !t.signaled && t.code == 0;
    bool restart = p.restart == config::Restart::Always ||
                   (p.restart == config::Restart::OnFailure && !clean);
    if (!restart && w.want == Want::Up) w.want = Want::Down;
  } else if (w.stop_reason == StopReason::StartTimeout || w.stop_reason == StopReason::Watchdog) {
    // We killed it, but for failing: that is part of a streak.
    ++w.streak;
    e.failure = true;
    delay = backoff_delay(p.backoff, w.streak, jitter);
  }
  settle_without_process(w, e, now, delay);
  return e;
}

Effects on_stop(Worker& w, const SlotPolicy& p, StopReason reason, Want want, TimePoint now) {
  Effects e;
  w.want = want;
  switch (w.state) {
    case WorkerState::Starting:
    case WorkerState::Ready:
      begin_stop(w, p, reason, e, now);
      break;
    case WorkerState::Backoff:
      if (want != Want::Up) settle_without_process(w, e, now, Duration{0});
      break;
    case WorkerState::Stopped:
      if (want == Want::Remove) e.forget = true;
      break;
    case WorkerState::Stopping:
    case WorkerState::Killing:
      break;  // already on its way; the new want applies when it is reaped
  }
  return e;
}

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

Effects on_kill(Worker& w, TimePoint now, Want want) {
  Effects e;
  w.want = want;
  if (has_process(w)) {
    if (w.state != WorkerState::Killing) e.signal = SIGKILL;
    if (w.stop_reason == StopReason::None) w.stop_reason = StopReason::Shutdown;
    w.state = WorkerState::Killing;
    w.deadline = now + kRekillInterval;
  } else if (w.state == WorkerState::Backoff) {
    settle_without_process(w, e, now, Duration{0});
  }
  return e;
}

Effects on_start(Worker& w, TimePoint now) {
  Effects e;
  w.want = Want::Up;
  if (w.state == WorkerState::Stopped) {
    w.state = WorkerState::Backoff;
    w.streak = 0;
    w.deadline = kNever;
    e.spawn = true;
  } else if (w.state == WorkerState::Backoff) {
    w.deadline = std::min(w.deadline, now);
  }
  return e;
}

}  // namespace preforkd::core
