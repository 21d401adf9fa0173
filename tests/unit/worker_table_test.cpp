// The worker state machine as a table (core/worker.hpp): every State x Event
// cell fired and asserted, the table's own names, and the stable names of
// the on-disk state. Time is passed in (no clock, no OS).
#include <doctest/doctest.h>

#include <csignal>
#include <set>
#include <string>

#include "core/worker.hpp"

using namespace preforkd::core;
using namespace std::chrono_literals;

TEST_CASE("stable names: every worker state round-trips, Killing is killing and not its display name") {
  std::set<std::string> seen;
  for (WorkerState s : kAllWorkerStates) {
    std::string name = state_name(s);
    CHECK(seen.insert(name).second);  // distinct
    REQUIRE(worker_state_from(name).has_value());
    CHECK(*worker_state_from(name) == s);
  }
  CHECK(seen == std::set<std::string>{"backoff", "starting", "ready", "stopping", "killing", "stopped"});
  CHECK(state_name(WorkerState::Killing) == std::string("killing"));
  CHECK(to_string(WorkerState::Killing) == std::string("stopping"));  // the display name stays
  CHECK(*worker_state_from("stopping") == WorkerState::Stopping);
}

TEST_CASE("stable names: want and stop reason round-trip") {
  std::set<std::string> wants;
  for (Want w : kAllWants) {
    wants.insert(want_name(w));
    REQUIRE(want_from(want_name(w)).has_value());
    CHECK(*want_from(want_name(w)) == w);
  }
  CHECK(wants == std::set<std::string>{"up", "down", "remove"});
  std::set<std::string> reasons;
  for (StopReason r : kAllStopReasons) {
    reasons.insert(to_string(r));
    REQUIRE(stop_reason_from(to_string(r)).has_value());
    CHECK(*stop_reason_from(to_string(r)) == r);
  }
  CHECK(reasons == std::set<std::string>{"none", "operator", "shutdown", "scale", "replace", "recycle",
                                         "watchdog", "start_timeout"});
}

TEST_CASE("stable names: unknown, empty, display-only and differently cased names are refused") {
  CHECK_FALSE(worker_state_from("").has_value());
  CHECK_FALSE(worker_state_from("Ready").has_value());
  CHECK_FALSE(worker_state_from("ready ").has_value());
  CHECK_FALSE(worker_state_from("?").has_value());
  CHECK_FALSE(want_from("").has_value());
  CHECK_FALSE(want_from("Up").has_value());
  CHECK_FALSE(want_from("stopped").has_value());
  CHECK_FALSE(stop_reason_from("").has_value());
  CHECK_FALSE(stop_reason_from("start-timeout").has_value());
  CHECK_FALSE(stop_reason_from("?").has_value());
}

// ---- the table, cell by cell ----

namespace {

const TimePoint t0 = TimePoint{} + 1000h;  // the fake clock: setups run at t0 + a few ms
const Termination exit0{false, 0};
const Termination exit3{false, 3};
const Termination killed9{true, SIGKILL};

SlotPolicy policy() {
  SlotPolicy p;
  p.restart = preforkd::config::Restart::Always;
  p.backoff = {100ms, 1000ms, 10000ms};
  p.ready = preforkd::config::ReadyMode::Notify;
  p.start_timeout = 5000ms;
  p.stop_timeout = 2000ms;
  p.watchdog_timeout = 1000ms;
  p.stop_signal = SIGTERM;
  return p;
}

// The events with their arguments (`ev::kill`, not `kill`: <csignal>).
namespace ev {
WorkerInput at(WorkerEvent e, TimePoint now) {
  WorkerInput in;
  in.event = e;
  in.now = now;
  return in;
}
WorkerInput due(TimePoint now) { return at(WorkerEvent::Due, now); }
WorkerInput spawned(pid_t pid, uint64_t generation, TimePoint now) {
  WorkerInput in = at(WorkerEvent::Spawned, now);
  in.pid = pid;
  in.generation = generation;
  return in;
}
WorkerInput spawn_failed(TimePoint now, double jitter = 0.0) {
  WorkerInput in = at(WorkerEvent::SpawnFailed, now);
  in.jitter = jitter;
  return in;
}
WorkerInput ready(TimePoint now) { return at(WorkerEvent::Ready, now); }
WorkerInput exited(Termination t, TimePoint now, double jitter = 0.0) {
  WorkerInput in = at(WorkerEvent::Exited, now);
  in.termination = t;
  in.jitter = jitter;
  return in;
}
WorkerInput stop(StopReason reason, Want want, TimePoint now) {
  WorkerInput in = at(WorkerEvent::Stop, now);
  in.reason = reason;
  in.want = want;
  return in;
}
WorkerInput kill(Want want, TimePoint now) {
  WorkerInput in = at(WorkerEvent::Kill, now);
  in.want = want;
  return in;
}
WorkerInput start(TimePoint now) { return at(WorkerEvent::Start, now); }
}  // namespace ev

// A worker brought into `s` through the events themselves (a record the
// daemon can really hold), all at t0 + a few ms:
//   Backoff   two failed spawns at t0: streak 2, due at t0 + 100ms
//   Starting  spawned at t0 (pid 100, generation 7): start_timeout at t0 + 5s
//   Ready     READY=1 at t0 + 10ms: watchdog due at t0 + 1010ms
//   Stopping  operator stop (want down) at t0 + 20ms: stop_timeout at t0 + 2020ms
//   Killing   stop_timeout passed at t0 + 2020ms: re-kill at t0 + 7020ms
//   Stopped   the stopping worker exited at t0 + 30ms
Worker in_state(WorkerState s, const SlotPolicy& p) {
  Worker w;
  w.slot = 2;
  if (s == WorkerState::Backoff) {
    fire(w, p, ev::spawn_failed(t0));
    fire(w, p, ev::spawn_failed(t0));
    REQUIRE(w.state == WorkerState::Backoff);
    REQUIRE(w.streak == 2);
    REQUIRE(w.deadline == t0 + 100ms);
    return w;
  }
  fire(w, p, ev::spawned(100, 7, t0));
  if (s == WorkerState::Starting) return w;
  fire(w, p, ev::ready(t0 + 10ms));
  if (s == WorkerState::Ready) return w;
  fire(w, p, ev::stop(StopReason::Operator, Want::Down, t0 + 20ms));
  if (s == WorkerState::Stopping) return w;
  if (s == WorkerState::Killing) {
    fire(w, p, ev::due(t0 + 2020ms));
    REQUIRE(w.state == WorkerState::Killing);
    return w;
  }
  fire(w, p, ev::exited(exit0, t0 + 30ms));
  REQUIRE(w.state == WorkerState::Stopped);
  return w;
}

void check_same_record(const Worker& a, const Worker& b) {
  CHECK(a.slot == b.slot);
  CHECK(a.state == b.state);
  CHECK(a.want == b.want);
  CHECK(a.pid == b.pid);
  CHECK(a.spawn_seq == b.spawn_seq);
  CHECK(a.generation == b.generation);
  CHECK(a.started_at == b.started_at);
  CHECK(a.ready_at == b.ready_at);
  CHECK(a.last_seen == b.last_seen);
  CHECK(a.deadline == b.deadline);
  CHECK(a.streak == b.streak);
  CHECK(a.restarts == b.restarts);
  CHECK(a.stop_reason == b.stop_reason);
  CHECK(a.status_text == b.status_text);
}

void check_no_effect(const Effects& e) {
  CHECK_FALSE(e.spawn);
  CHECK(e.signal == 0);
  CHECK_FALSE(e.forget);
  CHECK_FALSE(e.failure);
  CHECK_FALSE(e.exited);
  CHECK(e.respawn_delay == 0ms);
}

// The event is a named no-op here: nothing to do, the record as it was.
void check_noop(const Worker& before, const Worker& after, const Effects& e, const std::string& name,
                bool anomaly) {
  REQUIRE(e.noop != nullptr);
  CHECK(std::string(e.noop) == name);
  CHECK(e.anomaly == anomaly);
  check_no_effect(e);
  check_same_record(before, after);
}

void check_acted(const Effects& e) {
  CHECK(e.noop == nullptr);
  CHECK_FALSE(e.anomaly);
}

}  // namespace

TEST_CASE("table row Backoff - every event") {
  auto p = policy();
  Worker w = in_state(WorkerState::Backoff, p);
  const Worker before = w;

  SUBCASE("Due: want up spawns now") {
    auto e = fire(w, p, ev::due(t0 + 100ms));
    check_acted(e);
    CHECK(e.spawn);
    CHECK(w.state == WorkerState::Backoff);
    CHECK(w.deadline == kNever);  // the spawn is under way
    CHECK(w.streak == 2);
  }
  SUBCASE("Due: want down settles to Stopped") {
    w.want = Want::Down;
    auto e = fire(w, p, ev::due(t0 + 100ms));
    check_acted(e);
    CHECK_FALSE(e.spawn);
    CHECK_FALSE(e.forget);
    CHECK(w.state == WorkerState::Stopped);
    CHECK(w.deadline == kNever);
  }
  SUBCASE("Due: want remove settles and forgets") {
    w.want = Want::Remove;
    auto e = fire(w, p, ev::due(t0 + 100ms));
    check_acted(e);
    CHECK(e.forget);
    CHECK(w.state == WorkerState::Stopped);
  }
  SUBCASE("Spawned: starting with ready notify") {
    auto e = fire(w, p, ev::spawned(200, 8, t0 + 200ms));
    check_acted(e);
    check_no_effect(e);
    CHECK(w.state == WorkerState::Starting);
    CHECK(w.pid == 200);
    CHECK(w.generation == 8);
    CHECK(w.spawn_seq == 1);
    CHECK(w.restarts == 2);  // its first process, but its third try: two failed spawns counted (issue #15)
    CHECK(w.started_at == t0 + 200ms);
    CHECK(w.deadline == t0 + 200ms + p.start_timeout);
    CHECK(w.streak == 2);  // only readiness held long enough ends a streak
  }
  SUBCASE("Spawned: ready at once with ready exec") {
    p.ready = preforkd::config::ReadyMode::Exec;
    auto e = fire(w, p, ev::spawned(200, 8, t0 + 200ms));
    check_acted(e);
    CHECK(w.state == WorkerState::Ready);
    CHECK(w.ready_at == t0 + 200ms);
    CHECK(w.deadline == t0 + 200ms + p.watchdog_timeout);
  }
  SUBCASE("SpawnFailed: the streak grows and the retry waits") {
    auto e = fire(w, p, ev::spawn_failed(t0 + 200ms));
    check_acted(e);
    CHECK(e.failure);
    CHECK_FALSE(e.spawn);
    CHECK(e.respawn_delay == 200ms);
    CHECK(w.streak == 3);
    CHECK(w.restarts == 2);  // tries 2 and 3 were restarts, failed ones (issue #15)
    CHECK(w.state == WorkerState::Backoff);
    CHECK(w.deadline == t0 + 400ms);
  }
  SUBCASE("Ready: anomaly") {
    auto e = fire(w, p, ev::ready(t0 + 200ms));
    check_noop(before, w, e, "READY=1 for a slot without a process", true);
  }
  SUBCASE("Exited: anomaly") {
    auto e = fire(w, p, ev::exited(exit3, t0 + 200ms));
    check_noop(before, w, e, "exit for a slot without a process", true);
  }
  SUBCASE("Stop: want down settles to Stopped without a signal") {
    auto e = fire(w, p, ev::stop(StopReason::Operator, Want::Down, t0 + 50ms));
    check_acted(e);
    check_no_effect(e);
    CHECK(w.state == WorkerState::Stopped);
    CHECK(w.want == Want::Down);
    CHECK(w.deadline == kNever);
  }
  SUBCASE("Stop: want remove forgets") {
    auto e = fire(w, p, ev::stop(StopReason::Scale, Want::Remove, t0 + 50ms));
    check_acted(e);
    CHECK(e.forget);
    CHECK(w.state == WorkerState::Stopped);
  }
  SUBCASE("Stop: want up is a no-op and the backoff goes on") {
    auto e = fire(w, p, ev::stop(StopReason::Replace, Want::Up, t0 + 50ms));
    check_noop(before, w, e, "stop with want up for a slot in backoff", false);
  }
  SUBCASE("Kill: want down settles to Stopped") {
    auto e = fire(w, p, ev::kill(Want::Down, t0 + 50ms));
    check_acted(e);
    check_no_effect(e);
    CHECK(w.state == WorkerState::Stopped);
    CHECK(w.deadline == kNever);
  }
  SUBCASE("Kill: want remove forgets") {
    auto e = fire(w, p, ev::kill(Want::Remove, t0 + 50ms));
    check_acted(e);
    CHECK(e.forget);
    CHECK(w.state == WorkerState::Stopped);
  }
  SUBCASE("Kill: want up spawns now") {
    auto e = fire(w, p, ev::kill(Want::Up, t0 + 50ms));
    check_acted(e);
    CHECK(e.spawn);
    CHECK(e.signal == 0);
    CHECK(w.state == WorkerState::Backoff);
    CHECK(w.deadline == kNever);
  }
  SUBCASE("Start: the backoff is cut short") {
    w.want = Want::Remove;  // a slot on its way out, taken back
    auto e = fire(w, p, ev::start(t0 + 50ms));
    check_acted(e);
    check_no_effect(e);
    CHECK(w.want == Want::Up);
    CHECK(w.state == WorkerState::Backoff);
    CHECK(w.deadline == t0 + 50ms);
    CHECK(w.streak == 2);
  }
  SUBCASE("Start: a deadline already past stays") {
    fire(w, p, ev::start(t0 + 500ms));
    CHECK(w.deadline == t0 + 100ms);
  }
}

TEST_CASE("table row Starting - every event") {
  auto p = policy();
  Worker w = in_state(WorkerState::Starting, p);
  const Worker before = w;
  REQUIRE(w.pid == 100);
  REQUIRE(w.deadline == t0 + 5000ms);

  SUBCASE("Due: start_timeout sends stop_signal") {
    auto e = fire(w, p, ev::due(t0 + 5000ms));
    check_acted(e);
    CHECK(e.signal == SIGTERM);
    CHECK_FALSE(e.failure);  // counted when it is reaped
    CHECK(w.state == WorkerState::Stopping);
    CHECK(w.stop_reason == StopReason::StartTimeout);
    CHECK(w.deadline == t0 + 5000ms + p.stop_timeout);
    CHECK(w.pid == 100);
  }
  SUBCASE("Spawned: anomaly and the live pid is kept") {
    auto e = fire(w, p, ev::spawned(200, 8, t0 + 1s));
    check_noop(before, w, e, "spawned while not in backoff", true);
  }
  SUBCASE("SpawnFailed: anomaly and the live pid is kept") {
    auto e = fire(w, p, ev::spawn_failed(t0 + 1s));
    check_noop(before, w, e, "spawn failure while not in backoff", true);
  }
  SUBCASE("Ready: ready and the watchdog starts") {
    auto e = fire(w, p, ev::ready(t0 + 10ms));
    check_acted(e);
    check_no_effect(e);
    CHECK(w.state == WorkerState::Ready);
    CHECK(w.ready_at == t0 + 10ms);
    CHECK(w.last_seen == t0 + 10ms);
    CHECK(w.deadline == t0 + 10ms + p.watchdog_timeout);
  }
  SUBCASE("Exited: an unready death is a failure and respawns") {
    auto e = fire(w, p, ev::exited(exit3, t0 + 1s));
    check_acted(e);
    CHECK(e.exited);
    CHECK(e.exit_kind == ExitKind::Exit);
    CHECK(e.failure);
    CHECK(e.spawn);  // the first failure of a streak at once
    CHECK(w.streak == 1);
    CHECK(w.state == WorkerState::Backoff);
    CHECK(w.pid == 0);
    CHECK(w.want == Want::Up);
  }
  SUBCASE("Exited: restart never leaves it stopped") {
    p.restart = preforkd::config::Restart::Never;
    auto e = fire(w, p, ev::exited(exit3, t0 + 1s));
    CHECK(e.exited);
    CHECK_FALSE(e.spawn);
    CHECK(w.state == WorkerState::Stopped);
    CHECK(w.want == Want::Down);
  }
  SUBCASE("Stop: stop_signal") {
    auto e = fire(w, p, ev::stop(StopReason::Operator, Want::Down, t0 + 1s));
    check_acted(e);
    CHECK(e.signal == SIGTERM);
    CHECK(w.state == WorkerState::Stopping);
    CHECK(w.stop_reason == StopReason::Operator);
    CHECK(w.want == Want::Down);
    CHECK(w.deadline == t0 + 1s + p.stop_timeout);
  }
  SUBCASE("Kill: SIGKILL at once") {
    auto e = fire(w, p, ev::kill(Want::Down, t0 + 1s));
    check_acted(e);
    CHECK(e.signal == SIGKILL);
    CHECK(w.state == WorkerState::Killing);
    CHECK(w.stop_reason == StopReason::Shutdown);
    CHECK(w.want == Want::Down);
    CHECK(w.deadline == t0 + 1s + kRekillInterval);
  }
  SUBCASE("Start: no-op") {
    auto e = fire(w, p, ev::start(t0 + 1s));
    check_noop(before, w, e, "start for a running slot", false);
  }
}

TEST_CASE("table row Ready - every event") {
  auto p = policy();
  Worker w = in_state(WorkerState::Ready, p);
  const Worker before = w;
  REQUIRE(w.deadline == t0 + 1010ms);

  SUBCASE("Due: a silent worker gets SIGABRT") {
    auto e = fire(w, p, ev::due(t0 + 1010ms));
    check_acted(e);
    CHECK(e.signal == SIGABRT);
    CHECK(w.state == WorkerState::Stopping);
    CHECK(w.stop_reason == StopReason::Watchdog);
    CHECK(w.deadline == t0 + 1010ms + p.stop_timeout);
  }
  SUBCASE("Due: a worker heard from gets its deadline moved") {
    on_notify_seen(w, t0 + 500ms);
    auto e = fire(w, p, ev::due(t0 + 1010ms));
    check_acted(e);
    check_no_effect(e);
    CHECK(w.state == WorkerState::Ready);
    CHECK(w.deadline == t0 + 1500ms);
  }
  SUBCASE("Due: without a watchdog a no-op that disarms") {
    p.watchdog_timeout = 0ms;
    auto e = fire(w, p, ev::due(t0 + 1010ms));
    Worker expected = before;
    expected.deadline = kNever;
    check_noop(expected, w, e, "due in ready without a watchdog", false);
  }
  SUBCASE("Spawned: anomaly") {
    auto e = fire(w, p, ev::spawned(200, 8, t0 + 1s));
    check_noop(before, w, e, "spawned while not in backoff", true);
  }
  SUBCASE("SpawnFailed: anomaly") {
    auto e = fire(w, p, ev::spawn_failed(t0 + 1s));
    check_noop(before, w, e, "spawn failure while not in backoff", true);
  }
  SUBCASE("Ready: READY=1 again is a no-op") {
    auto e = fire(w, p, ev::ready(t0 + 1s));
    check_noop(before, w, e, "READY=1 again", false);
  }
  SUBCASE("Exited: an unproven death is a failure") {
    auto e = fire(w, p, ev::exited(killed9, t0 + 1s));
    check_acted(e);
    CHECK(e.exited);
    CHECK(e.exit_kind == ExitKind::Signal);
    CHECK(e.failure);
    CHECK(e.spawn);
    CHECK(w.streak == 1);
    CHECK(w.state == WorkerState::Backoff);
    CHECK(w.pid == 0);
  }
  SUBCASE("Exited: a proven death ends the streak and respawns at once") {
    w.streak = 3;
    auto e = fire(w, p, ev::exited(exit3, t0 + 10ms + p.backoff.reset_after));
    check_acted(e);
    CHECK(e.exited);
    CHECK_FALSE(e.failure);
    CHECK(e.spawn);
    CHECK(w.streak == 0);
  }
  SUBCASE("Exited: on-failure after a clean exit stops the slot") {
    p.restart = preforkd::config::Restart::OnFailure;
    auto e = fire(w, p, ev::exited(exit0, t0 + 1s));
    CHECK(e.exited);
    CHECK_FALSE(e.spawn);
    CHECK(w.state == WorkerState::Stopped);
    CHECK(w.want == Want::Down);
  }
  SUBCASE("Stop: stop_signal and the want recorded") {
    auto e = fire(w, p, ev::stop(StopReason::Recycle, Want::Remove, t0 + 1s));
    check_acted(e);
    CHECK(e.signal == SIGTERM);
    CHECK(w.state == WorkerState::Stopping);
    CHECK(w.stop_reason == StopReason::Recycle);
    CHECK(w.want == Want::Remove);
    CHECK(w.deadline == t0 + 1s + p.stop_timeout);
  }
  SUBCASE("Stop: a watchdog stop sends SIGABRT") {
    auto e = fire(w, p, ev::stop(StopReason::Watchdog, Want::Up, t0 + 1s));
    CHECK(e.signal == SIGABRT);
    CHECK(w.stop_reason == StopReason::Watchdog);
  }
  SUBCASE("Kill: SIGKILL at once") {
    auto e = fire(w, p, ev::kill(Want::Down, t0 + 1s));
    check_acted(e);
    CHECK(e.signal == SIGKILL);
    CHECK(w.state == WorkerState::Killing);
    CHECK(w.stop_reason == StopReason::Shutdown);
    CHECK(w.deadline == t0 + 1s + kRekillInterval);
  }
  SUBCASE("Start: no-op") {
    auto e = fire(w, p, ev::start(t0 + 1s));
    check_noop(before, w, e, "start for a running slot", false);
  }
}

TEST_CASE("table row Stopping - every event") {
  auto p = policy();
  Worker w = in_state(WorkerState::Stopping, p);
  const Worker before = w;
  REQUIRE(w.stop_reason == StopReason::Operator);
  REQUIRE(w.deadline == t0 + 2020ms);

  SUBCASE("Due: stop_timeout escalates to SIGKILL") {
    auto e = fire(w, p, ev::due(t0 + 2020ms));
    check_acted(e);
    CHECK(e.signal == SIGKILL);
    CHECK(w.state == WorkerState::Killing);
    CHECK(w.deadline == t0 + 2020ms + kRekillInterval);
    CHECK(w.stop_reason == StopReason::Operator);
  }
  SUBCASE("Spawned: anomaly") {
    auto e = fire(w, p, ev::spawned(200, 8, t0 + 1s));
    check_noop(before, w, e, "spawned while not in backoff", true);
  }
  SUBCASE("SpawnFailed: anomaly") {
    auto e = fire(w, p, ev::spawn_failed(t0 + 1s));
    check_noop(before, w, e, "spawn failure while not in backoff", true);
  }
  SUBCASE("Ready: a late READY=1 is a no-op") {
    auto e = fire(w, p, ev::ready(t0 + 1s));
    check_noop(before, w, e, "READY=1 while stopping", false);
  }
  SUBCASE("Exited: want down ends Stopped and is no failure") {
    auto e = fire(w, p, ev::exited(exit0, t0 + 1s));
    check_acted(e);
    CHECK(e.exited);
    CHECK(e.exit_kind == ExitKind::Exit);
    CHECK_FALSE(e.failure);
    CHECK_FALSE(e.spawn);
    CHECK_FALSE(e.forget);
    CHECK(w.state == WorkerState::Stopped);
    CHECK(w.pid == 0);
    CHECK(w.stop_reason == StopReason::None);
    CHECK(w.deadline == kNever);
  }
  SUBCASE("Exited: want up respawns at once") {
    w.want = Want::Up;
    auto e = fire(w, p, ev::exited(exit0, t0 + 1s));
    CHECK(e.spawn);
    CHECK_FALSE(e.failure);
    CHECK(w.state == WorkerState::Backoff);
  }
  SUBCASE("Exited: want remove forgets") {
    w.want = Want::Remove;
    CHECK(fire(w, p, ev::exited(exit0, t0 + 1s)).forget);
  }
  SUBCASE("Exited: a watchdog stop counts as a failure") {
    Worker v = in_state(WorkerState::Ready, p);
    fire(v, p, ev::due(t0 + 1010ms));
    REQUIRE(v.state == WorkerState::Stopping);
    auto e = fire(v, p, ev::exited(Termination{true, SIGABRT}, t0 + 1100ms));
    CHECK(e.exit_kind == ExitKind::Watchdog);
    CHECK(e.failure);
    CHECK(v.streak == 1);
    CHECK(e.spawn);  // want up: replaced without anyone's help
  }
  SUBCASE("Stop: no second signal and the new want waits for the reap") {
    auto e = fire(w, p, ev::stop(StopReason::Scale, Want::Remove, t0 + 1s));
    check_acted(e);
    check_no_effect(e);
    Worker expected = before;
    expected.want = Want::Remove;
    check_same_record(expected, w);
  }
  SUBCASE("Kill: SIGKILL and the stop reason is kept") {
    auto e = fire(w, p, ev::kill(Want::Down, t0 + 1s));
    check_acted(e);
    CHECK(e.signal == SIGKILL);
    CHECK(w.state == WorkerState::Killing);
    CHECK(w.stop_reason == StopReason::Operator);
    CHECK(w.deadline == t0 + 1s + kRekillInterval);
  }
  SUBCASE("Start: want up and respawned once reaped") {
    auto e = fire(w, p, ev::start(t0 + 1s));
    check_acted(e);
    check_no_effect(e);
    Worker expected = before;
    expected.want = Want::Up;
    check_same_record(expected, w);
    CHECK(fire(w, p, ev::exited(exit0, t0 + 2s)).spawn);
  }
}

TEST_CASE("table row Killing - every event") {
  auto p = policy();
  Worker w = in_state(WorkerState::Killing, p);
  const Worker before = w;
  REQUIRE(w.deadline == t0 + 2020ms + kRekillInterval);

  SUBCASE("Due: still alive so SIGKILL again") {
    auto e = fire(w, p, ev::due(t0 + 7020ms));
    check_acted(e);
    CHECK(e.signal == SIGKILL);
    CHECK(w.state == WorkerState::Killing);
    CHECK(w.deadline == t0 + 7020ms + kRekillInterval);
  }
  SUBCASE("Spawned: anomaly") {
    auto e = fire(w, p, ev::spawned(200, 8, t0 + 3s));
    check_noop(before, w, e, "spawned while not in backoff", true);
  }
  SUBCASE("SpawnFailed: anomaly") {
    auto e = fire(w, p, ev::spawn_failed(t0 + 3s));
    check_noop(before, w, e, "spawn failure while not in backoff", true);
  }
  SUBCASE("Ready: a late READY=1 is a no-op") {
    auto e = fire(w, p, ev::ready(t0 + 3s));
    check_noop(before, w, e, "READY=1 while stopping", false);
  }
  SUBCASE("Exited: as Stopping") {
    auto e = fire(w, p, ev::exited(killed9, t0 + 3s));
    check_acted(e);
    CHECK(e.exited);
    CHECK(e.exit_kind == ExitKind::Signal);
    CHECK_FALSE(e.failure);
    CHECK_FALSE(e.spawn);
    CHECK(w.state == WorkerState::Stopped);
    CHECK(w.pid == 0);
    CHECK(w.deadline == kNever);
  }
  SUBCASE("Stop: no signal and the new want waits for the reap") {
    auto e = fire(w, p, ev::stop(StopReason::Scale, Want::Remove, t0 + 3s));
    check_acted(e);
    check_no_effect(e);
    Worker expected = before;
    expected.want = Want::Remove;
    check_same_record(expected, w);
  }
  SUBCASE("Kill: no second SIGKILL and the re-kill counts from now") {
    auto e = fire(w, p, ev::kill(Want::Remove, t0 + 3s));
    check_acted(e);
    check_no_effect(e);
    CHECK(w.state == WorkerState::Killing);
    CHECK(w.want == Want::Remove);
    CHECK(w.stop_reason == StopReason::Operator);
    CHECK(w.deadline == t0 + 3s + kRekillInterval);
  }
  SUBCASE("Start: want up and respawned once reaped") {
    auto e = fire(w, p, ev::start(t0 + 3s));
    check_acted(e);
    check_no_effect(e);
    Worker expected = before;
    expected.want = Want::Up;
    check_same_record(expected, w);
    CHECK(fire(w, p, ev::exited(killed9, t0 + 4s)).spawn);
  }
}

TEST_CASE("table row Stopped - every event") {
  auto p = policy();
  Worker w = in_state(WorkerState::Stopped, p);
  const Worker before = w;
  REQUIRE(w.want == Want::Down);
  REQUIRE(w.deadline == kNever);

  SUBCASE("Due: a stale deadline is dropped") {
    w.deadline = t0 + 1s;
    auto e = fire(w, p, ev::due(t0 + 1s));
    check_noop(before, w, e, "due for a stopped slot", false);
  }
  SUBCASE("Spawned: anomaly") {
    auto e = fire(w, p, ev::spawned(200, 8, t0 + 1s));
    check_noop(before, w, e, "spawned while not in backoff", true);
  }
  SUBCASE("SpawnFailed: anomaly") {
    auto e = fire(w, p, ev::spawn_failed(t0 + 1s));
    check_noop(before, w, e, "spawn failure while not in backoff", true);
  }
  SUBCASE("Ready: anomaly") {
    auto e = fire(w, p, ev::ready(t0 + 1s));
    check_noop(before, w, e, "READY=1 for a slot without a process", true);
  }
  SUBCASE("Exited: anomaly") {
    auto e = fire(w, p, ev::exited(exit0, t0 + 1s));
    check_noop(before, w, e, "exit for a slot without a process", true);
  }
  SUBCASE("Stop: want remove forgets") {
    auto e = fire(w, p, ev::stop(StopReason::Scale, Want::Remove, t0 + 1s));
    check_acted(e);
    CHECK(e.forget);
    CHECK(e.signal == 0);
    CHECK(w.state == WorkerState::Stopped);
    CHECK(w.want == Want::Remove);
  }
  SUBCASE("Stop: want down is a no-op") {
    auto e = fire(w, p, ev::stop(StopReason::Operator, Want::Down, t0 + 1s));
    check_noop(before, w, e, "stop for a stopped slot", false);
  }
  SUBCASE("Kill: no-op") {
    auto e = fire(w, p, ev::kill(Want::Down, t0 + 1s));
    check_noop(before, w, e, "kill for a stopped slot", false);
  }
  SUBCASE("Start: back to Backoff and spawn now with a fresh streak") {
    w.streak = 4;
    auto e = fire(w, p, ev::start(t0 + 1s));
    check_acted(e);
    CHECK(e.spawn);
    CHECK(w.state == WorkerState::Backoff);
    CHECK(w.want == Want::Up);
    CHECK(w.streak == 0);
    CHECK(w.deadline == kNever);
  }
}

// ---- the table as data ----

namespace {

// A plain input for each event, for the walks below.
WorkerInput typical(WorkerEvent e, TimePoint now) {
  switch (e) {
    case WorkerEvent::Spawned: return ev::spawned(300, 9, now);
    case WorkerEvent::Exited: return ev::exited(exit3, now, 0.1);
    case WorkerEvent::Stop: return ev::stop(StopReason::Operator, Want::Down, now);
    case WorkerEvent::Kill: return ev::kill(Want::Down, now);
    default: return ev::at(e, now);
  }
}

}  // namespace

TEST_CASE("table: every cell has a decision name and the no-op cells ignore their event") {
  auto p = policy();
  std::set<std::string> event_names;
  size_t cells = 0;
  for (WorkerEvent event : kAllWorkerEvents) event_names.insert(to_string(event));
  CHECK(event_names.size() == kAllWorkerEvents.size());
  for (WorkerState s : kAllWorkerStates) {
    for (WorkerEvent event : kAllWorkerEvents) {
      CAPTURE(state_name(s));
      CAPTURE(to_string(event));
      const Cell& c = cell(s, event);
      ++cells;
      REQUIRE(c.decision != nullptr);
      CHECK(std::string(c.decision).size() > 0);
      CHECK((c.noop || !c.anomaly));  // only a no-op can be an anomaly
      CHECK(&cell(s, event) == &c);   // one table, not a copy per call
      Worker w = in_state(s, p);
      const Worker before = w;
      Effects e = fire(w, p, typical(event, t0 + 3s));
      if (c.noop) {
        REQUIRE(e.noop != nullptr);
        CHECK(std::string(e.noop) == c.decision);
        CHECK(e.anomaly == c.anomaly);
        check_no_effect(e);
        CHECK(w.state == before.state);
        CHECK(w.pid == before.pid);
        CHECK(w.streak == before.streak);
      } else if (e.noop != nullptr) {
        CHECK(std::string(e.noop) != c.decision);  // a case of its own, named on its own
        CHECK_FALSE(e.anomaly);
      }
    }
  }
  CHECK(cells == 48);
}

TEST_CASE("table: the events that need a process are anomalies exactly where there is none") {
  for (WorkerState s : kAllWorkerStates) {
    Worker w;
    w.state = s;
    bool process = has_process(w);
    CAPTURE(state_name(s));
    CHECK(cell(s, WorkerEvent::Exited).anomaly == !process);
    CHECK(cell(s, WorkerEvent::Ready).anomaly == !process);
    CHECK(cell(s, WorkerEvent::Spawned).anomaly == (s != WorkerState::Backoff));
    CHECK(cell(s, WorkerEvent::SpawnFailed).anomaly == (s != WorkerState::Backoff));
  }
}

TEST_CASE("table: each on_ function is fire with the same arguments") {
  auto p = policy();
  const TimePoint now = t0 + 3s;
  for (WorkerState s : kAllWorkerStates) {
    CAPTURE(state_name(s));
    const Worker start = in_state(s, p);
    auto same = [&](Worker a, const Worker& b, const Effects& ea, const Effects& eb) {
      check_same_record(a, b);
      CHECK(ea.spawn == eb.spawn);
      CHECK(ea.signal == eb.signal);
      CHECK(ea.forget == eb.forget);
      CHECK(ea.failure == eb.failure);
      CHECK(ea.exited == eb.exited);
      CHECK(ea.exit_kind == eb.exit_kind);
      CHECK(ea.respawn_delay == eb.respawn_delay);
      CHECK(ea.noop == eb.noop);
      CHECK(ea.anomaly == eb.anomaly);
    };
    Worker a = start, b = start;
    same(a, b, on_due(a, p, now), fire(b, p, ev::due(now)));
    a = start, b = start;
    on_spawned(a, p, 300, 9, now);
    fire(b, p, ev::spawned(300, 9, now));
    check_same_record(a, b);
    a = start, b = start;
    same(a, b, on_spawn_failed(a, p, now, 0.1), fire(b, p, ev::spawn_failed(now, 0.1)));
    a = start, b = start;
    bool changed = on_ready(a, p, now);
    Effects e = fire(b, p, ev::ready(now));
    check_same_record(a, b);
    CHECK(changed == (e.noop == nullptr));
    a = start, b = start;
    same(a, b, on_exited(a, p, exit3, now, 0.1), fire(b, p, ev::exited(exit3, now, 0.1)));
    a = start, b = start;
    same(a, b, on_stop(a, p, StopReason::Scale, Want::Remove, now),
         fire(b, p, ev::stop(StopReason::Scale, Want::Remove, now)));
    a = start, b = start;
    same(a, b, on_kill(a, now, Want::Remove), fire(b, p, ev::kill(Want::Remove, now)));
    a = start, b = start;
    same(a, b, on_start(a, now), fire(b, p, ev::start(now)));
  }
}
