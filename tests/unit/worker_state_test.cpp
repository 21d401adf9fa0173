// The worker state machine (core/worker.hpp), every state × event, with
// time passed in (no clock, no OS).
#include <doctest/doctest.h>

#include <csignal>

#include "core/worker.hpp"

using namespace preforkd::core;
using namespace std::chrono_literals;

namespace {

SlotPolicy policy(preforkd::config::ReadyMode ready = preforkd::config::ReadyMode::Exec) {
  SlotPolicy p;
  p.backoff = {100ms, 1000ms, 10000ms};
  p.ready = ready;
  p.start_timeout = 5000ms;
  p.stop_timeout = 2000ms;
  p.stop_signal = SIGTERM;
  return p;
}

const TimePoint t0 = TimePoint{} + 1000h;
const Termination killed9{true, SIGKILL};
const Termination exit0{false, 0};
const Termination exit3{false, 3};

Worker running(const SlotPolicy& p, TimePoint at = t0) {
  Worker w;
  on_spawned(w, p, 100, 1, at);
  return w;
}

}  // namespace

TEST_CASE("backoff: first failure at once, then min * 2^(n-2) capped at max, jitter within 20%") {
  preforkd::config::Backoff b{100ms, 1000ms, 10000ms};
  CHECK(backoff_delay(b, 1, 0.0) == 0ms);
  CHECK(backoff_delay(b, 2, 0.0) == 100ms);
  CHECK(backoff_delay(b, 3, 0.0) == 200ms);
  CHECK(backoff_delay(b, 4, 0.0) == 400ms);
  CHECK(backoff_delay(b, 5, 0.0) == 800ms);
  CHECK(backoff_delay(b, 6, 0.0) == 1000ms);
  CHECK(backoff_delay(b, 60, 0.0) == 1000ms);  // no overflow for long streaks
  CHECK(backoff_delay(b, 3, 0.2) == 240ms);
  CHECK(backoff_delay(b, 3, -0.2) == 160ms);
  CHECK(backoff_delay(b, 3, 5.0) == 240ms);  // jitter is clamped
}

TEST_CASE("T25 backoff: min 0s still never respawns a failing slot in a tight loop") {
  preforkd::config::Backoff b{0ms, 0ms, 0ms};
  CHECK(backoff_delay(b, 2, 0.0) == kBackoffFloor);
  CHECK(backoff_delay(b, 9, -0.2) == kBackoffFloor);
}

TEST_CASE("spawned: ready at once with ready: exec, starting with a start_timeout with ready: notify") {
  auto p = policy();
  Worker w = running(p);
  CHECK(w.state == WorkerState::Ready);
  CHECK(w.pid == 100);
  CHECK(w.deadline == kNever);
  CHECK(w.restarts == 0);
  auto pn = policy(preforkd::config::ReadyMode::Notify);
  Worker n = running(pn);
  CHECK(n.state == WorkerState::Starting);
  CHECK(n.deadline == t0 + 5000ms);
  CHECK(on_ready(n, pn, t0 + 1ms));
  CHECK(n.state == WorkerState::Ready);
  CHECK(n.deadline == kNever);
  CHECK_FALSE(on_ready(n, pn, t0 + 2ms));  // READY twice changes nothing
}

TEST_CASE("exit of a proven worker respawns at once and starts no streak") {
  auto p = policy();
  Worker w = running(p);
  auto e = on_exited(w, p, killed9, t0 + 20s, 0.0);
  CHECK(e.exited);
  CHECK(e.exit_kind == ExitKind::Signal);
  CHECK_FALSE(e.failure);
  CHECK(e.spawn);
  CHECK(w.state == WorkerState::Backoff);
  CHECK(w.pid == 0);
  CHECK(w.streak == 0);
}

TEST_CASE("crash loop: first failure at once, then growing delays until readiness holds") {
  auto p = policy();
  Worker w = running(p);
  auto e = on_exited(w, p, exit3, t0 + 1ms, 0.0);
  CHECK(e.failure);
  CHECK(e.spawn);  // the first failure respawns at once
  CHECK(w.streak == 1);
  on_spawned(w, p, 101, 1, t0 + 2ms);
  CHECK(w.restarts == 1);
  e = on_exited(w, p, exit3, t0 + 3ms, 0.0);
  CHECK_FALSE(e.spawn);
  CHECK(e.respawn_delay == 100ms);
  CHECK(w.deadline == t0 + 3ms + 100ms);
  CHECK(w.state == WorkerState::Backoff);
  // The deadline passes: spawn.
  e = on_due(w, p, t0 + 103ms);
  CHECK(e.spawn);
  on_spawned(w, p, 102, 1, t0 + 104ms);
  e = on_exited(w, p, exit3, t0 + 105ms, 0.0);
  CHECK(e.respawn_delay == 200ms);
  CHECK(w.streak == 3);
  // Ready long enough: the streak ends.
  on_due(w, p, w.deadline);
  on_spawned(w, p, 103, 1, t0 + 1s);
  e = on_exited(w, p, exit3, t0 + 1s + p.backoff.reset_after, 0.0);
  CHECK(w.streak == 0);
  CHECK(e.spawn);
}

TEST_CASE("spawn failures count toward the streak and never retry in the same iteration") {
  auto p = policy();
  Worker w;
  auto e = on_spawn_failed(w, p, t0, 0.0);
  CHECK(e.failure);
  CHECK_FALSE(e.spawn);
  CHECK(w.state == WorkerState::Backoff);
  CHECK(w.deadline == t0);  // the first retry is immediate, through the timer
  e = on_spawn_failed(w, p, t0, 0.0);
  CHECK(w.deadline == t0 + 100ms);
  CHECK(w.streak == 2);
}

TEST_CASE("restart policies") {
  auto p = policy();
  SUBCASE("never") {
    p.restart = preforkd::config::Restart::Never;
    Worker w = running(p);
    auto e = on_exited(w, p, exit3, t0 + 20s, 0.0);
    CHECK_FALSE(e.spawn);
    CHECK(w.state == WorkerState::Stopped);
  }
  SUBCASE("on-failure, clean exit") {
    p.restart = preforkd::config::Restart::OnFailure;
    Worker w = running(p);
    on_exited(w, p, exit0, t0 + 1ms, 0.0);
    CHECK(w.state == WorkerState::Stopped);
  }
  SUBCASE("on-failure, failure") {
    p.restart = preforkd::config::Restart::OnFailure;
    Worker w = running(p);
    auto e = on_exited(w, p, exit3, t0 + 1ms, 0.0);
    CHECK(e.spawn);
  }
  SUBCASE("always, clean exit") {
    Worker w = running(p);
    auto e = on_exited(w, p, exit0, t0 + 1ms, 0.0);
    CHECK(e.spawn);
    CHECK(e.exit_kind == ExitKind::Exit);
  }
}

TEST_CASE("stop: stop_signal, then SIGKILL after stop_timeout, re-kill while unreaped") {
  auto p = policy();
  Worker w = running(p);
  auto e = on_stop(w, p, StopReason::Shutdown, Want::Down, t0);
  CHECK(e.signal == SIGTERM);
  CHECK(w.state == WorkerState::Stopping);
  CHECK(w.deadline == t0 + 2000ms);
  e = on_due(w, p, t0 + 2000ms);
  CHECK(e.signal == SIGKILL);
  CHECK(w.state == WorkerState::Killing);
  e = on_due(w, p, w.deadline);
  CHECK(e.signal == SIGKILL);
  e = on_exited(w, p, killed9, t0 + 20s, 0.0);
  CHECK_FALSE(e.failure);  // we stopped it
  CHECK_FALSE(e.spawn);
  CHECK(w.state == WorkerState::Stopped);
  CHECK(w.pid == 0);
}

TEST_CASE("stop in every state") {
  auto p = policy();
  SUBCASE("backoff, down: stopped without a signal") {
    Worker w;
    auto e = on_stop(w, p, StopReason::Shutdown, Want::Down, t0);
    CHECK(e.signal == 0);
    CHECK(w.state == WorkerState::Stopped);
  }
  SUBCASE("backoff, remove: forgotten") {
    Worker w;
    CHECK(on_stop(w, p, StopReason::Scale, Want::Remove, t0).forget);
  }
  SUBCASE("starting: stop signal") {
    auto pn = policy(preforkd::config::ReadyMode::Notify);
    Worker w = running(pn);
    CHECK(on_stop(w, pn, StopReason::Operator, Want::Down, t0).signal == SIGTERM);
  }
  SUBCASE("stopping: no second signal, the new want applies at exit") {
    Worker w = running(p);
    on_stop(w, p, StopReason::Scale, Want::Remove, t0);
    auto e = on_stop(w, p, StopReason::Shutdown, Want::Down, t0);
    CHECK(e.signal == 0);
    e = on_exited(w, p, exit0, t0 + 1ms, 0.0);
    CHECK_FALSE(e.forget);
    CHECK(w.state == WorkerState::Stopped);
  }
  SUBCASE("stopped, remove: forgotten") {
    Worker w = running(p);
    on_stop(w, p, StopReason::Operator, Want::Down, t0);
    on_exited(w, p, exit0, t0 + 1ms, 0.0);
    CHECK(on_stop(w, p, StopReason::Scale, Want::Remove, t0).forget);
  }
  SUBCASE("scale-down: forgotten once reaped") {
    Worker w = running(p);
    on_stop(w, p, StopReason::Scale, Want::Remove, t0);
    CHECK(on_exited(w, p, exit0, t0 + 1ms, 0.0).forget);
  }
  SUBCASE("replace: respawned at once once reaped, no failure") {
    Worker w = running(p);
    on_stop(w, p, StopReason::Replace, Want::Up, t0);
    auto e = on_exited(w, p, exit0, t0 + 1ms, 0.0);
    CHECK(e.spawn);
    CHECK_FALSE(e.failure);
  }
}

TEST_CASE("start_timeout: a worker that never says READY=1 is stopped, counted and backed off") {
  auto p = policy(preforkd::config::ReadyMode::Notify);
  Worker w = running(p);
  w.streak = 1;
  auto e = on_due(w, p, t0 + 5000ms);
  CHECK(e.signal == SIGTERM);
  CHECK(w.stop_reason == StopReason::StartTimeout);
  e = on_exited(w, p, Termination{true, SIGTERM}, t0 + 5001ms, 0.0);
  CHECK(e.exit_kind == ExitKind::StartTimeout);
  CHECK(e.failure);
  CHECK(e.respawn_delay == 100ms);
}

TEST_CASE("exit reasons: watchdog and recycle are attributed from the stop reason") {
  auto p = policy();
  Worker w = running(p);
  auto e = on_stop(w, p, StopReason::Watchdog, Want::Up, t0);
  CHECK(e.signal == SIGABRT);
  CHECK(on_exited(w, p, Termination{true, SIGABRT}, t0 + 1ms, 0.0).exit_kind == ExitKind::Watchdog);
  on_spawned(w, p, 200, 1, t0 + 2ms);
  on_stop(w, p, StopReason::Recycle, Want::Up, t0 + 3ms);
  CHECK(on_exited(w, p, exit0, t0 + 4ms, 0.0).exit_kind == ExitKind::Recycled);
}

TEST_CASE("fast kill and start") {
  auto p = policy();
  Worker w = running(p);
  auto e = on_kill(w, t0, Want::Down);
  CHECK(e.signal == SIGKILL);
  CHECK(w.state == WorkerState::Killing);
  CHECK(on_kill(w, t0, Want::Down).signal == 0);  // not twice
  on_exited(w, p, killed9, t0 + 1ms, 0.0);
  CHECK(w.state == WorkerState::Stopped);
  e = on_start(w, t0 + 2ms);
  CHECK(e.spawn);
  CHECK(w.state == WorkerState::Backoff);
  CHECK(w.want == Want::Up);
}

TEST_CASE("events for a slot without a process are ignored") {
  auto p = policy();
  Worker w;
  CHECK_FALSE(on_exited(w, p, exit0, t0, 0.0).exited);
  CHECK_FALSE(on_ready(w, p, t0));
  CHECK(to_string(WorkerState::Killing) == std::string("stopping"));
}

TEST_CASE("watchdog: starts at readiness, any line resets it lazily, silence stops the worker with SIGABRT") {
  auto p = policy(preforkd::config::ReadyMode::Notify);
  p.watchdog_timeout = 1000ms;
  Worker w = running(p);
  CHECK(w.deadline == t0 + 5000ms);  // start_timeout while starting, not the watchdog
  REQUIRE(on_ready(w, p, t0 + 100ms));
  CHECK(w.deadline == t0 + 1100ms);
  on_notify_seen(w, t0 + 600ms);
  CHECK(w.deadline == t0 + 1100ms);  // lazy: no re-arm per line
  auto e = on_due(w, p, t0 + 1100ms);
  CHECK(e.signal == 0);  // a line came in time: the deadline moves to last_seen + timeout
  CHECK(w.deadline == t0 + 1600ms);
  CHECK(w.state == WorkerState::Ready);
  e = on_due(w, p, t0 + 1600ms);
  CHECK(e.signal == SIGABRT);
  CHECK(w.state == WorkerState::Stopping);
  CHECK(w.stop_reason == StopReason::Watchdog);
  CHECK(w.deadline == t0 + 1600ms + p.stop_timeout);
  CHECK(on_due(w, p, w.deadline).signal == SIGKILL);
  e = on_exited(w, p, killed9, t0 + 5s, 0.0);
  CHECK(e.exit_kind == ExitKind::Watchdog);
  CHECK(e.failure);
  CHECK(w.want == Want::Up);  // replaced without anyone's help
}

TEST_CASE("watchdog: with ready: exec the clock starts at exec - 0 means no watchdog") {
  auto p = policy();
  p.watchdog_timeout = 500ms;
  Worker w = running(p);
  CHECK(w.deadline == t0 + 500ms);
  p.watchdog_timeout = 0ms;
  Worker quiet = running(p);
  CHECK(quiet.deadline == kNever);
}
