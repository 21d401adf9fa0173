// core::Policy (core/policy.hpp) driven through a fake world: a fake clock,
// fake pids, and the daemon's way of applying Actions (spawn → spawned or
// spawn_failed, signals recorded and, when wanted, answered by an exit,
// tick to a fixpoint after every event). No process, no clock, no OS.
#include <doctest/doctest.h>

#include <algorithm>
#include <csignal>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "config/config.hpp"
#include "core/config_diff.hpp"
#include "core/lifecycle.hpp"
#include "core/policy.hpp"

using namespace preforkd;
using namespace std::chrono_literals;
using core::Action;
using core::Actions;
using core::ClientId;
using core::Duration;
using core::ProcId;
using core::SlotPhase;
using core::TimePoint;
using core::WorkerState;

namespace {

// A program as config::load() would give it, with the values these tests lean on.
config::Program program(const std::string& name, uint32_t workers, const std::string& version = "v1") {
  config::Program p;
  p.name = name;
  p.command = {"/srv/" + name, version};
  p.executable = "/srv/" + name;
  p.workers = workers;
  p.ready = config::ReadyMode::Notify;
  p.reload = config::ReloadPolicy{2, false, 1000ms, 0ms};  // no guard: section 12 has the guard
  p.backoff = config::Backoff{100ms, 1000ms, 10000ms};
  p.start_timeout = 30000ms;
  p.stop_timeout = 10000ms;
  p.stop_signal = SIGTERM;
  return p;
}

struct Reply {
  ClientId client = 0;
  bool ok = false;
  std::string text;
};

struct SpawnRecord {
  core::ProgramId program = 0;
  int slot = -1;
  ProcId proc = 0;
  uint64_t generation = 0;
  pid_t pid = 0;        // 0: skipped (no longer pending) or failed
  bool failed = false;
  bool skipped = false;
};

struct SignalRecord {
  pid_t pid = 0;
  int signal = 0;
};

// The daemon, minus the OS.
class World {
 public:
  explicit World(std::vector<config::Program> programs, Duration shutdown_timeout = 30000ms)
      : policy(7, shutdown_timeout) {
    config.path = "/etc/preforkd/preforkd.yaml";
    config.supervisor.shutdown_timeout = shutdown_timeout;
    config.programs = std::move(programs);
    for (const auto& p : config.programs) policy.add_program(p, 1);
  }

  core::Policy policy;
  TimePoint now = TimePoint{} + 1000s;
  config::Config config;  // the file as last committed (its programs: see commit())
  // Processes exit as soon as they get SIGTERM or SIGKILL (one event each,
  // after the event that sent the signal has settled).
  bool exit_on_signal = true;
  std::map<std::string, int> fail_spawns;  // program name → how many of its next spawns fail

  std::vector<SpawnRecord> spawns;
  std::vector<SignalRecord> signals;
  std::vector<Reply> replies;
  std::vector<std::string> logs;
  std::vector<Action> begin_reloads;
  std::vector<Action> measures;
  std::vector<Action> all;  // every action, in order
  std::set<pid_t> alive;

  // ---- driving ----
  void start() {
    Actions out;
    policy.start(now, out);
    apply(std::move(out));
  }

  // Applies `out` as the daemon does, then ticks to a fixpoint; signals that
  // kill (exit_on_signal) are answered by exits, one event at a time.
  void apply(Actions out) {
    std::deque<Action> queue(out.begin(), out.end());
    for (int round = 0; round < 10000; ++round) {
      if (!queue.empty()) {
        Action a = std::move(queue.front());
        queue.pop_front();
        for (auto& more : carry_out(a)) queue.push_back(std::move(more));
        continue;
      }
      Actions t;
      policy.tick(now, t);
      if (!t.empty()) {
        queue.assign(t.begin(), t.end());
        continue;
      }
      if (dying_.empty()) return;
      auto [pid, sig] = dying_.front();
      dying_.pop_front();
      if (alive.count(pid) == 0) continue;
      Actions e;
      alive.erase(pid);
      policy.exited(pid, core::Termination{true, sig}, "killed by signal " + std::to_string(sig), now, e);
      queue.assign(e.begin(), e.end());
    }
    FAIL("no fixpoint after 10000 rounds of actions and ticks");
  }

  // The clock moves by `d`, stopping at every deadline on the way, as the
  // daemon's timerfd would.
  void advance(Duration d) {
    TimePoint end = now + d;
    for (int i = 0; i < 10000; ++i) {
      TimePoint due = policy.next_deadline();
      if (due > end) break;
      if (due > now) now = due;
      apply({});
      if (policy.next_deadline() <= now) FAIL("a deadline stays due after tick");
    }
    now = end;
    apply({});
  }

  // ---- workers ----
  ProcId proc(pid_t pid) const {
    auto p = policy.proc_of_pid(pid);
    REQUIRE_MESSAGE(p.has_value(), "pid " << pid << " is not a worker");
    return *p;
  }
  void line(pid_t pid, const std::string& text) {
    Actions out;
    policy.notify_line(proc(pid), text, now, out);
    apply(std::move(out));
  }
  void ready(pid_t pid) { line(pid, "READY=1"); }
  void exit(pid_t pid, int code) {
    REQUIRE(alive.erase(pid) == 1);
    Actions out;
    CHECK(policy.exited(pid, core::Termination{false, code}, "exited with status " + std::to_string(code), now, out));
    apply(std::move(out));
  }
  void kill(pid_t pid, int sig = SIGKILL) {
    REQUIRE(alive.erase(pid) == 1);
    Actions out;
    CHECK(policy.exited(pid, core::Termination{true, sig}, "killed by signal " + std::to_string(sig), now, out));
    apply(std::move(out));
  }
  void memory(pid_t pid, uint64_t rss) {
    Actions out;
    policy.memory_measured(proc(pid), rss, now, out);
    apply(std::move(out));
  }
  // READY=1 from every slot worker of `name` still starting.
  void ready_all(const std::string& name) {
    for (pid_t pid : pids(name, WorkerState::Starting)) ready(pid);
  }

  // Every starting worker says READY=1 and settle passes, until `name` has
  // no rollout and no worker starting any more.
  void finish_rollout(const std::string& name) {
    for (int i = 0; i < 100; ++i) {
      if (!prog(name).rollout && pids(name, WorkerState::Starting).empty() && prog(name).retirees.empty()) return;
      ready_all(name);
      advance(1s);
    }
    FAIL("the rollout of " << name << " does not end");
  }

  // ---- operator ----
  void control(core::ControlCommand cmd, ClientId client) {
    Actions out;
    policy.control(cmd, client, now, out);
    apply(std::move(out));
  }
  void scale_all(int delta) {
    Actions out;
    policy.scale_all(delta, now, out);
    apply(std::move(out));
  }
  void shutdown(bool fast) {
    Actions out;
    policy.shutdown(fast, now, out);
    apply(std::move(out));
  }
  void request_reload(std::optional<ClientId> client) {
    Actions out;
    policy.request_reload(client, now, out);
    apply(std::move(out));
  }
  // Answers the last BeginReload with the file `next`, diffed as the daemon
  // does against what runs (a program back from an aborted rollout runs its
  // old configuration, not the file's).
  void commit(std::vector<config::Program> next) {
    REQUIRE_FALSE(begin_reloads.empty());
    config::Config running = config;
    running.programs.clear();
    for (const auto& p : policy.programs())
      if (p.phase != core::ProgramPhase::Removing) running.programs.push_back(p.config());
    config::Config file = config;
    file.programs = std::move(next);
    core::ReloadPlan plan;
    plan.generation = policy.generation() + 1;
    plan.diff = core::diff(running, file);
    plan.next = file.programs;
    plan.shutdown_timeout = file.supervisor.shutdown_timeout;
    config = file;
    Actions out;
    policy.commit_reload(std::move(plan), begin_reloads.back().clients, now, out);
    apply(std::move(out));
  }
  void reload(std::vector<config::Program> next, std::optional<ClientId> client) {
    size_t before = begin_reloads.size();
    request_reload(client);
    REQUIRE(begin_reloads.size() == before + 1);
    commit(std::move(next));
  }

  // ---- looking ----
  const core::ProgramState& prog(const std::string& name) const {
    const core::ProgramState* p = policy.find(name);
    REQUIRE_MESSAGE(p != nullptr, "no program " << name);
    return *p;
  }
  // The pid of every slot's worker (0 for a slot without a process), slot order.
  std::vector<pid_t> pids(const std::string& name) const {
    std::vector<pid_t> out;
    for (const auto& s : prog(name).slots) out.push_back(s.m.worker.pid);
    return out;
  }
  std::vector<pid_t> pids(const std::string& name, WorkerState state) const {
    std::vector<pid_t> out;
    for (const auto& s : prog(name).slots)
      if (s.m.worker.state == state) out.push_back(s.m.worker.pid);
    return out;
  }
  const core::Slot& slot(const std::string& name, int n) const {
    const auto& p = prog(name);
    REQUIRE(static_cast<size_t>(n) < p.slots.size());
    return p.slots[static_cast<size_t>(n)];
  }
  // Spawns carried out (a pid given) since `mark` (an index into spawns).
  std::vector<SpawnRecord> started_since(size_t mark) const {
    std::vector<SpawnRecord> out;
    for (size_t i = mark; i < spawns.size(); ++i)
      if (spawns[i].pid != 0) out.push_back(spawns[i]);
    return out;
  }
  size_t signals_to(pid_t pid, int sig) const {
    return static_cast<size_t>(std::count_if(signals.begin(), signals.end(),
                                             [&](const SignalRecord& s) { return s.pid == pid && s.signal == sig; }));
  }
  size_t signals_to(pid_t pid) const {
    return static_cast<size_t>(
        std::count_if(signals.begin(), signals.end(), [&](const SignalRecord& s) { return s.pid == pid; }));
  }
  std::vector<Reply> replies_to(ClientId client) const {
    std::vector<Reply> out;
    for (const auto& r : replies)
      if (r.client == client) out.push_back(r);
    return out;
  }
  size_t logs_with(const std::string& text) const {
    return static_cast<size_t>(std::count_if(logs.begin(), logs.end(), [&](const std::string& l) {
      return l.find(text) != std::string::npos;
    }));
  }
  std::string log_text() const {
    std::string out;
    for (const auto& l : logs) out += l + "\n";
    return out;
  }

 private:
  std::deque<std::pair<pid_t, int>> dying_;
  pid_t next_pid_ = 1000;

  Actions carry_out(const Action& a) {
    all.push_back(a);
    Actions out;
    switch (a.kind) {
      case Action::Kind::Spawn: {
        SpawnRecord r{a.program, a.slot, a.proc, a.generation, 0, false, false};
        if (!policy.spawn_pending(a)) {
          r.skipped = true;
          policy.spawn_dropped(a);
        } else {
          const core::ProgramState* p = policy.program(a.program);
          REQUIRE(p != nullptr);
          int& fails = fail_spawns[p->name()];
          if (fails > 0) {
            --fails;
            r.failed = true;
            policy.spawn_failed(a.program, a.slot, a.proc, "cannot execute /srv/x: No such file", now, out);
          } else {
            r.pid = ++next_pid_;
            alive.insert(r.pid);
            policy.spawned(a.program, a.slot, a.proc, r.pid, now, out);
          }
        }
        spawns.push_back(r);
        break;
      }
      case Action::Kind::Signal:
        signals.push_back({a.pid, a.signal});
        if (exit_on_signal && (a.signal == SIGTERM || a.signal == SIGKILL)) dying_.emplace_back(a.pid, a.signal);
        break;
      case Action::Kind::Reply: replies.push_back({a.client, a.ok, a.text}); break;
      case Action::Kind::Log: logs.push_back(a.text); break;
      case Action::Kind::BeginReload: begin_reloads.push_back(a); break;
      case Action::Kind::MeasureMemory: measures.push_back(a); break;
      default: break;
    }
    return out;
  }
};

// A world whose program `name` has `workers` ready workers of generation 1.
World running(config::Program p) {
  World w({p});
  w.start();
  w.ready_all(p.name);
  REQUIRE(w.prog(p.name).ready() == p.workers);
  return w;
}

config::Program changed(config::Program p) {
  p.command = {"/srv/" + p.name, "v2"};
  return p;
}

}  // namespace

// ---- 1. rollout order ----

TEST_CASE("policy: a reload replaces a canary alone, then batches of reload.batch, each proven before its old worker "
          "stops") {
  World w = running(program("web", 5));
  auto old = w.pids("web");
  size_t mark = w.spawns.size();
  w.reload({changed(program("web", 5))}, ClientId{7});

  // The canary, alone.
  auto started = w.started_since(mark);
  REQUIRE(started.size() == 1);
  CHECK(started[0].slot == 0);
  CHECK(started[0].generation == 2);
  pid_t canary = started[0].pid;
  CHECK(w.slot("web", 0).phase == SlotPhase::Replacing);
  CHECK(w.prog("web").phase == core::ProgramPhase::RollingOut);

  // Nothing more until the canary is ready...
  w.advance(5s);
  CHECK(w.started_since(mark).size() == 1);
  CHECK(w.signals.empty());
  // ...and has been ready for settle.
  w.ready(canary);
  w.advance(999ms);
  CHECK(w.started_since(mark).size() == 1);
  CHECK(w.signals_to(old[0]) == 0);
  w.advance(1ms);
  CHECK(w.signals_to(old[0], SIGTERM) == 1);
  CHECK(w.slot("web", 0).m.worker.pid == canary);
  CHECK(w.slot("web", 0).phase == SlotPhase::Active);

  // Then batches of 2: slots 1 and 2, then 3 and 4.
  for (int first : {1, 3}) {
    started = w.started_since(mark);
    REQUIRE(started.size() == static_cast<size_t>(first + 2));
    CHECK(started[static_cast<size_t>(first)].slot == first);
    CHECK(started[static_cast<size_t>(first)].generation == 2);
    CHECK(started.back().slot == first + 1);
    CHECK(started.back().generation == 2);
    CHECK(w.signals_to(old[static_cast<size_t>(first)]) == 0);
    CHECK(w.signals_to(old[static_cast<size_t>(first) + 1]) == 0);
    // One of the two ready is not enough.
    w.ready(w.slot("web", first).m.worker.pid);
    w.advance(2s);
    CHECK(w.started_since(mark).size() == static_cast<size_t>(first + 2));
    CHECK(w.signals_to(old[static_cast<size_t>(first)], SIGTERM) == 1);  // proven: its old one stops
    CHECK(w.signals_to(old[static_cast<size_t>(first) + 1]) == 0);
    w.ready(w.slot("web", first + 1).m.worker.pid);
    w.advance(1s);
    CHECK(w.signals_to(old[static_cast<size_t>(first) + 1], SIGTERM) == 1);
  }

  CHECK(w.started_since(mark).size() == 5);
  const auto& p = w.prog("web");
  CHECK(p.phase == core::ProgramPhase::Running);
  CHECK_FALSE(p.rollout.has_value());
  CHECK_FALSE(p.previous.has_value());
  CHECK(p.retirees.empty());
  CHECK(p.shape.generation == 2);
  REQUIRE(p.slots.size() == 5);
  for (const auto& s : p.slots) {
    CHECK(s.phase == SlotPhase::Active);
    CHECK(s.m.worker.state == WorkerState::Ready);
    CHECK(s.m.worker.generation == 2);
  }
  for (pid_t pid : old) {
    CHECK(w.signals_to(pid, SIGTERM) == 1);
    CHECK(w.signals_to(pid) == 1);
  }
  auto replies = w.replies_to(7);
  REQUIRE(replies.size() == 1);
  CHECK(replies[0].ok);
  CHECK_MESSAGE(replies[0].text.rfind("reloaded, generation 2", 0) == 0, replies[0].text);
  CHECK(w.policy.reloads_ok() == 1);
  CHECK(w.policy.quiescent());
}

// ---- 2. a failing canary ----

namespace {

// The program is back on generation 1 and untouched but for the canary's slot.
void check_canary_given_back(World& w, const std::vector<pid_t>& old, ClientId client) {
  const auto& p = w.prog("web");
  CHECK(w.pids("web") == old);
  CHECK(w.slot("web", 0).m.worker.state == WorkerState::Ready);
  CHECK(w.slot("web", 0).phase == SlotPhase::Active);
  CHECK(w.slot("web", 0).m.worker.generation == 1);
  CHECK(p.shape.generation == 1);
  CHECK(p.phase == core::ProgramPhase::Running);
  CHECK_FALSE(p.rollout.has_value());
  CHECK_FALSE(p.previous.has_value());
  CHECK(p.retirees.empty());
  for (pid_t pid : old) CHECK(w.signals_to(pid) == 0);
  auto replies = w.replies_to(client);
  REQUIRE(replies.size() == 1);
  CHECK_FALSE(replies[0].ok);
  CHECK_MESSAGE(replies[0].text.find("web[0]") != std::string::npos, replies[0].text);
  CHECK(w.policy.reloads_failed() == 1);
}

}  // namespace

TEST_CASE("policy: a canary that exits before it is ready gives its slot back to the old worker, the program goes "
          "back to generation 1") {
  World w = running(program("web", 5));
  auto old = w.pids("web");
  size_t mark = w.spawns.size();
  w.reload({changed(program("web", 5))}, ClientId{7});
  auto started = w.started_since(mark);
  REQUIRE(started.size() == 1);
  w.exit(started[0].pid, 1);
  INFO(w.log_text());
  CHECK(w.started_since(mark).size() == 1);  // no second canary
  check_canary_given_back(w, old, 7);
  // Later, nothing else moves.
  w.advance(10s);
  CHECK(w.started_since(mark).size() == 1);
  // A respawn of an old worker starts the old configuration.
  for (int n : {0, 3}) {
    mark = w.spawns.size();
    w.kill(old[static_cast<size_t>(n)]);
    w.advance(1s);
    started = w.started_since(mark);
    REQUIRE(started.size() == 1);
    CHECK(started[0].slot == n);
    CHECK(started[0].generation == 1);
    w.ready(started[0].pid);
  }
  // A later reload of the same file retries, with a canary again.
  mark = w.spawns.size();
  w.reload({changed(program("web", 5))}, ClientId{8});
  started = w.started_since(mark);
  REQUIRE(started.size() == 1);
  CHECK(started[0].slot == 0);
  CHECK(started[0].generation == 3);
}

TEST_CASE("policy: a canary that cannot be spawned gives its slot back at once") {
  World w = running(program("web", 5));
  auto old = w.pids("web");
  size_t mark = w.spawns.size();
  w.fail_spawns["web"] = 1;
  w.reload({changed(program("web", 5))}, ClientId{7});
  INFO(w.log_text());
  CHECK(w.started_since(mark).empty());
  REQUIRE(w.spawns.size() > mark);
  CHECK(w.spawns[mark].failed);
  check_canary_given_back(w, old, 7);
}

TEST_CASE("policy: a canary that misses start_timeout gives its slot back") {
  auto cfg = program("web", 3);
  cfg.start_timeout = 2000ms;
  World w = running(cfg);
  auto old = w.pids("web");
  size_t mark = w.spawns.size();
  auto next = changed(cfg);
  w.reload({next}, ClientId{7});
  auto started = w.started_since(mark);
  REQUIRE(started.size() == 1);
  w.advance(2s);  // SIGTERM for start_timeout, and it exits
  INFO(w.log_text());
  CHECK(w.signals_to(started[0].pid, SIGTERM) == 1);
  CHECK(w.started_since(mark).size() == 1);
  check_canary_given_back(w, old, 7);
}

// ---- 3. a batch failing half-way ----

TEST_CASE("policy: a successor failing in the second batch aborts the rollout, its slot goes back, its proven "
          "sibling stays") {
  World w = running(program("web", 5));
  auto old = w.pids("web");
  size_t mark = w.spawns.size();
  w.reload({changed(program("web", 5))}, ClientId{7});
  w.ready(w.started_since(mark)[0].pid);
  w.advance(1s);
  auto started = w.started_since(mark);
  REQUIRE(started.size() == 3);
  REQUIRE(started[1].slot == 1);
  REQUIRE(started[2].slot == 2);
  // Slot 1's successor fails; slot 2's comes up.
  w.exit(started[1].pid, 1);
  INFO(w.log_text());
  CHECK(w.slot("web", 1).m.worker.pid == old[1]);
  CHECK(w.slot("web", 1).m.worker.state == WorkerState::Ready);
  CHECK(w.slot("web", 1).phase == SlotPhase::Active);
  CHECK_FALSE(w.prog("web").rollout.has_value());
  CHECK(w.prog("web").shape.generation == 1);
  w.ready(started[2].pid);
  w.advance(1s);
  // The sibling proved itself: its old worker stops as for any recycle.
  CHECK(w.signals_to(old[2], SIGTERM) == 1);
  CHECK(w.slot("web", 2).m.worker.pid == started[2].pid);
  CHECK(w.slot("web", 2).phase == SlotPhase::Active);
  auto replies = w.replies_to(7);
  REQUIRE(replies.size() == 1);
  CHECK_FALSE(replies[0].ok);
  CHECK_MESSAGE(replies[0].text.find("web[1]") != std::string::npos, replies[0].text);
  // No further batch.
  w.advance(30s);
  CHECK(w.started_since(mark).size() == 3);
  CHECK(w.pids("web") == std::vector<pid_t>{started[0].pid, old[1], started[2].pid, old[3], old[4]});
  for (int n : {1, 3, 4}) CHECK(w.signals_to(old[static_cast<size_t>(n)]) == 0);
  for (const auto& s : w.prog("web").slots) {
    CHECK(s.phase == SlotPhase::Active);
    CHECK(s.m.worker.state == WorkerState::Ready);
  }
  CHECK(w.prog("web").retirees.empty());
  CHECK(w.policy.quiescent());
}

// ---- 4. max_requests while a rollout runs ----

TEST_CASE("policy: max_requests recycles a not yet replaced worker during a rollout, new before old, and the rollout "
          "still completes") {
  auto cfg = program("web", 5);
  cfg.max_requests = 1000;
  World w = running(cfg);
  auto old = w.pids("web");
  size_t mark = w.spawns.size();
  w.reload({changed(cfg)}, ClientId{7});
  REQUIRE(w.started_since(mark).size() == 1);  // the canary, slot 0

  w.line(old[4], "COUNTER_requests=999");  // below: nothing
  CHECK(w.started_since(mark).size() == 1);
  w.line(old[3], "COUNTER_requests=1000");
  auto started = w.started_since(mark);
  REQUIRE(started.size() == 2);
  CHECK(started[1].slot == 3);
  pid_t successor = started[1].pid;
  CHECK(w.slot("web", 3).phase == SlotPhase::Replacing);
  CHECK(w.slot("web", 3).replacing_for == core::Recycle::MaxRequests);
  CHECK(w.prog("web").serving_retiree(3) != nullptr);
  // The old one serves on until its replacement has been ready for settle.
  w.advance(5s);
  CHECK(w.signals_to(old[3]) == 0);
  w.ready(successor);
  w.advance(999ms);
  CHECK(w.signals_to(old[3]) == 0);
  w.advance(1ms);
  CHECK(w.signals_to(old[3], SIGTERM) == 1);
  CHECK(w.slot("web", 3).phase == SlotPhase::Active);
  CHECK(w.slot("web", 3).m.worker.pid == successor);

  w.finish_rollout("web");
  INFO(w.log_text());
  // Slot 3 was not replaced a second time: 5 new workers in all.
  CHECK(w.started_since(mark).size() == 5);
  CHECK(w.slot("web", 3).m.worker.pid == successor);
  for (pid_t pid : old) CHECK(w.signals_to(pid) == 1);
  for (const auto& s : w.prog("web").slots) {
    CHECK(s.phase == SlotPhase::Active);
    CHECK(s.m.worker.state == WorkerState::Ready);
    CHECK(s.m.worker.generation == 2);
  }
  auto replies = w.replies_to(7);
  REQUIRE(replies.size() == 1);
  CHECK_MESSAGE(replies[0].ok, replies[0].text);
}

// ---- 5. max_memory ----

TEST_CASE("policy: max_memory recycles a worker whose RSS is over it, not one at it") {
  auto cfg = program("web", 3);
  cfg.max_memory = 100 << 20;
  World w({cfg});
  w.start();
  CHECK(w.policy.next_deadline() == w.now + core::kMemoryCheckInterval);
  w.ready_all("web");
  auto old = w.pids("web");
  CHECK(w.measures.empty());
  w.advance(1s);
  REQUIRE(w.measures.size() == 3);
  for (size_t i = 0; i < 3; ++i) {
    CHECK(w.measures[i].pid == old[i]);
    CHECK(w.measures[i].proc == w.proc(old[i]));
  }
  CHECK(w.policy.next_deadline() == w.now + core::kMemoryCheckInterval);
  size_t mark = w.spawns.size();
  w.memory(old[0], 100 << 20);
  CHECK(w.started_since(mark).empty());
  w.memory(old[1], (100 << 20) + 1);
  auto started = w.started_since(mark);
  REQUIRE(started.size() == 1);
  CHECK(started[0].slot == 1);
  CHECK(w.slot("web", 1).replacing_for == core::Recycle::MaxMemory);
  CHECK(w.signals.empty());
  // Measured again while its replacement starts (a measurement in flight): nothing more.
  w.memory(old[1], 200 << 20);
  CHECK(w.started_since(mark).size() == 1);
  // A slot being replaced is not measured again.
  size_t before = w.measures.size();
  w.advance(1s);
  CHECK(w.measures.size() == before + 2);
  // New before old: the old one stops once its replacement has been ready for settle.
  w.ready(started[0].pid);
  w.advance(999ms);
  CHECK(w.signals.empty());
  w.advance(1ms);
  CHECK(w.signals_to(old[1], SIGTERM) == 1);
  CHECK(w.pids("web") == std::vector<pid_t>{old[0], started[0].pid, old[2]});
  CHECK(w.started_since(mark).size() == 1);
}

TEST_CASE("policy: the memory deadline is armed only while some program has max_memory, by reloads too") {
  auto cfg = program("web", 3);
  World w = running(cfg);
  CHECK(w.policy.next_deadline() == core::kNever);
  w.advance(10s);
  CHECK(w.measures.empty());

  auto with = cfg;
  with.max_memory = 100 << 20;
  w.reload({with}, ClientId{1});
  REQUIRE(w.replies_to(1).size() == 1);
  CHECK(w.replies_to(1)[0].ok);
  CHECK(w.policy.next_deadline() == w.now + core::kMemoryCheckInterval);
  w.advance(999ms);
  CHECK(w.measures.empty());
  w.advance(1ms);
  CHECK(w.measures.size() == 3);

  w.reload({cfg}, ClientId{2});
  REQUIRE(w.replies_to(2).size() == 1);
  CHECK(w.replies_to(2)[0].ok);
  CHECK(w.policy.next_deadline() == core::kNever);
  size_t before = w.measures.size();
  w.advance(10s);
  CHECK(w.measures.size() == before);
  CHECK(w.pids("web").size() == 3);
}

// ---- 6. scaling down while a rollout runs ----

TEST_CASE("policy: scaling down during a rollout: control scale is refused, TTOU removes the highest slot and the "
          "rollout completes with the rest") {
  World w = running(program("web", 5));
  auto old = w.pids("web");
  size_t mark = w.spawns.size();
  w.reload({changed(program("web", 5))}, ClientId{7});
  REQUIRE(w.started_since(mark).size() == 1);

  core::ControlCommand scale{core::ControlCommand::Kind::Scale, "web", 3, 0};
  w.control(scale, 9);
  auto replies = w.replies_to(9);
  REQUIRE(replies.size() == 1);
  CHECK_FALSE(replies[0].ok);
  CHECK_MESSAGE(replies[0].text.find("in progress") != std::string::npos, replies[0].text);
  CHECK(w.prog("web").wanted() == 5);
  CHECK(w.signals.empty());

  w.scale_all(-1);
  CHECK(w.signals_to(old[4], SIGTERM) == 1);
  CHECK(w.prog("web").slots.size() == 4);  // reaped: gone
  bool released = std::any_of(w.all.begin(), w.all.end(), [](const Action& a) {
    return a.kind == Action::Kind::ReleaseSlot && a.slot == 4;
  });
  CHECK(released);

  w.finish_rollout("web");
  INFO(w.log_text());
  CHECK(w.logs_with("web: 4 worker(s) replaced") == 1);
  for (size_t i = 0; i < 4; ++i) CHECK(w.signals_to(old[i], SIGTERM) == 1);
  CHECK(w.signals_to(old[4]) == 1);
  // The reload wants the file's count: the rollout's end scales back to 5.
  const auto& p = w.prog("web");
  CHECK(p.slots.size() == 5);
  CHECK(p.retirees.empty());
  for (const auto& s : p.slots) {
    CHECK(s.phase == SlotPhase::Active);
    CHECK(s.m.worker.state == WorkerState::Ready);
    CHECK(s.m.worker.generation == 2);
  }
  replies = w.replies_to(7);
  REQUIRE(replies.size() == 1);
  CHECK_MESSAGE(replies[0].ok, replies[0].text);
}

TEST_CASE("policy: TTOU while the highest slot is in flight stops its successor and its old worker, no slot stays "
          "replacing") {
  World w = running(program("web", 5));
  auto old = w.pids("web");
  size_t mark = w.spawns.size();
  w.reload({changed(program("web", 5))}, ClientId{7});
  // Canary, then slots 1 and 2: the last batch (3 and 4) is then in flight.
  for (int i = 0; i < 2; ++i) {
    w.ready_all("web");
    w.advance(1s);
  }
  auto started = w.started_since(mark);
  REQUIRE(started.size() == 5);
  REQUIRE(started[4].slot == 4);
  CHECK(w.slot("web", 4).phase == SlotPhase::Replacing);

  w.scale_all(-1);
  INFO(w.log_text());
  CHECK(w.signals_to(started[4].pid, SIGTERM) == 1);
  CHECK(w.signals_to(old[4], SIGTERM) == 1);
  CHECK(w.prog("web").slots.size() == 4);

  w.finish_rollout("web");
  CHECK(w.logs_with("web: 4 worker(s) replaced") == 1);
  const auto& p = w.prog("web");
  CHECK(p.slots.size() == 5);  // the reload's count, once every old worker is replaced
  CHECK(p.retirees.empty());
  for (const auto& s : p.slots) {
    CHECK(s.phase == SlotPhase::Active);
    CHECK(s.m.worker.state == WorkerState::Ready);
    CHECK(s.m.worker.generation == 2);
  }
  for (pid_t pid : old) CHECK(w.signals_to(pid) == 1);
  auto replies = w.replies_to(7);
  REQUIRE(replies.size() == 1);
  CHECK_MESSAGE(replies[0].ok, replies[0].text);
}

// ---- 7. reloads queued and coalesced ----

TEST_CASE("policy: reloads requested during a reload are queued and coalesced into one more") {
  World w = running(program("web", 3));
  w.reload({changed(program("web", 3))}, ClientId{1});
  REQUIRE(w.begin_reloads.size() == 1);
  CHECK(w.begin_reloads[0].clients == std::vector<ClientId>{1});

  w.request_reload(ClientId{2});
  w.request_reload(std::nullopt);  // SIGHUP: nobody waits
  w.request_reload(ClientId{3});
  CHECK(w.begin_reloads.size() == 1);
  CHECK(w.logs_with("reload queued") == 1);
  CHECK(w.replies_to(2).empty());

  w.finish_rollout("web");
  REQUIRE(w.replies_to(1).size() == 1);
  CHECK(w.replies_to(1)[0].ok);
  REQUIRE(w.begin_reloads.size() == 2);
  CHECK(w.begin_reloads[1].clients == std::vector<ClientId>{2, 3});
  CHECK(w.logs_with("reload queued") == 1);
  w.advance(10s);
  CHECK(w.begin_reloads.size() == 2);

  w.commit({changed(program("web", 3))});  // the file did not change since
  CHECK(w.replies_to(2).size() == 1);
  CHECK(w.replies_to(2)[0].ok);
  CHECK(w.replies_to(3).size() == 1);
  CHECK(w.policy.generation() == 3);
  CHECK(w.policy.reloads_ok() == 2);
  CHECK(w.policy.quiescent());
}

TEST_CASE("policy: a reload requested while the file is being read waits for it, and a failed read starts it") {
  World w = running(program("web", 3));
  w.request_reload(ClientId{1});
  REQUIRE(w.begin_reloads.size() == 1);
  w.request_reload(ClientId{2});
  CHECK(w.begin_reloads.size() == 1);
  Actions out;
  w.policy.reload_failed({1}, {"preforkd.yaml:3:5: unknown key"}, out);
  w.apply(std::move(out));
  REQUIRE(w.replies_to(1).size() == 1);
  CHECK_FALSE(w.replies_to(1)[0].ok);
  REQUIRE(w.begin_reloads.size() == 2);
  CHECK(w.begin_reloads[1].clients == std::vector<ClientId>{2});
}

// ---- 8. control operations answer when finished ----

TEST_CASE("policy: a stop that overtakes a pending spawn leaves the slot free to start again") {
  World w = running(program("web", 1));
  auto old = w.pids("web");
  size_t mark = w.spawns.size();
  // The worker dies and its respawn is decided, but before the daemon
  // carries the Spawn out, an operator stop arrives in the same batch.
  Actions out;
  w.alive.erase(old[0]);
  CHECK(w.policy.exited(old[0], core::Termination{true, SIGKILL}, "killed by signal 9", w.now, out));
  REQUIRE(std::count_if(out.begin(), out.end(), [](const Action& a) { return a.kind == Action::Kind::Spawn; }) == 1);
  w.policy.control({core::ControlCommand::Kind::Stop, "web", 0, 0}, 5, w.now, out);
  w.apply(std::move(out));
  REQUIRE(w.spawns.size() == mark + 1);
  CHECK(w.spawns.back().skipped);  // stale: the slot is stopped
  CHECK(w.policy.find("web")->slots[0].m.worker.state == core::WorkerState::Stopped);
  // Start must spawn again: the dropped Spawn does not hold the slot.
  w.control({core::ControlCommand::Kind::Start, "web", 0, 0}, 6);
  CHECK(w.started_since(mark).size() == 1);
  CHECK(w.pids("web").size() == 1);
}

TEST_CASE("policy: control stop replies only once every process has exited") {
  World w = running(program("web", 3));
  w.exit_on_signal = false;
  auto old = w.pids("web");
  size_t mark = w.spawns.size();
  w.control({core::ControlCommand::Kind::Stop, "web", 0, 0}, 5);
  for (pid_t pid : old) CHECK(w.signals_to(pid, SIGTERM) == 1);
  CHECK(w.replies_to(5).empty());
  w.exit(old[0], 0);
  w.kill(old[1], SIGTERM);
  w.advance(1s);
  CHECK(w.replies_to(5).empty());
  w.exit(old[2], 0);
  auto replies = w.replies_to(5);
  REQUIRE(replies.size() == 1);
  CHECK(replies[0].ok);
  CHECK(replies[0].text == "stopped web");
  CHECK(w.started_since(mark).empty());  // stopped, not respawned
  w.advance(30s);
  CHECK(w.started_since(mark).empty());
  // Start brings every slot back.
  w.control({core::ControlCommand::Kind::Start, "web", 0, 0}, 6);
  CHECK(w.started_since(mark).size() == 3);
}

TEST_CASE("policy: control scale replies when the new workers are ready, or with an error when one cannot start") {
  World w = running(program("web", 3));
  size_t mark = w.spawns.size();
  w.control({core::ControlCommand::Kind::Scale, "web", 5, 0}, 4);
  auto started = w.started_since(mark);
  REQUIRE(started.size() == 2);
  CHECK(started[0].slot == 3);
  CHECK(started[1].slot == 4);
  CHECK(w.replies_to(4).empty());
  w.ready(started[0].pid);
  CHECK(w.replies_to(4).empty());
  w.ready(started[1].pid);
  auto replies = w.replies_to(4);
  REQUIRE(replies.size() == 1);
  CHECK(replies[0].ok);
  CHECK(replies[0].text == "web has 5 worker(s)");

  // Down to 2: the answer comes once the highest slots are gone.
  w.exit_on_signal = false;
  auto now = w.pids("web");
  w.control({core::ControlCommand::Kind::Scale, "web", 2, 0}, 8);
  CHECK(w.signals_to(now[4], SIGTERM) == 1);
  CHECK(w.signals_to(now[3], SIGTERM) == 1);
  CHECK(w.signals_to(now[2], SIGTERM) == 1);
  CHECK(w.replies_to(8).empty());
  w.exit(now[2], 0);
  w.exit(now[4], 0);
  CHECK(w.replies_to(8).empty());  // slot 3 still holds slot 4's place
  w.exit(now[3], 0);
  REQUIRE(w.replies_to(8).size() == 1);
  CHECK(w.replies_to(8)[0].ok);
  CHECK(w.prog("web").slots.size() == 2);

  // A new worker that cannot start.
  w.fail_spawns["web"] = 1;
  w.control({core::ControlCommand::Kind::Scale, "web", 3, 0}, 11);
  replies = w.replies_to(11);
  REQUIRE(replies.size() == 1);
  CHECK_FALSE(replies[0].ok);
  CHECK_MESSAGE(replies[0].text.find("web[2] failed to start") != std::string::npos, replies[0].text);
}

// ---- 9. shutdown ----

TEST_CASE("policy: graceful shutdown sends stop_signal to all, SIGKILL after shutdown_timeout, finished once all "
          "exited") {
  auto cfg = program("web", 3);
  cfg.stop_signal = SIGQUIT;
  cfg.stop_timeout = 60000ms;  // longer than shutdown_timeout: the latter decides
  World w({cfg}, 5000ms);
  w.start();
  w.ready_all("web");
  w.exit_on_signal = false;
  auto old = w.pids("web");
  size_t mark = w.spawns.size();
  w.shutdown(false);
  CHECK(w.policy.shutting_down());
  for (pid_t pid : old) {
    CHECK(w.signals_to(pid, SIGQUIT) == 1);
    CHECK(w.signals_to(pid) == 1);
  }
  bool stopping = std::any_of(w.all.begin(), w.all.end(), [](const Action& a) {
    return a.kind == Action::Kind::NotifySystemd && a.text == "STOPPING=1";
  });
  CHECK(stopping);
  CHECK_FALSE(w.policy.finished());
  w.exit(old[0], 0);
  w.kill(old[1], SIGQUIT);
  CHECK_FALSE(w.policy.finished());
  CHECK(w.policy.next_deadline() <= w.now + 5000ms);
  w.advance(4999ms);
  CHECK(w.signals_to(old[2], SIGKILL) == 0);
  w.advance(1ms);
  CHECK(w.signals_to(old[2], SIGKILL) == 1);
  CHECK(w.signals_to(old[0], SIGKILL) == 0);  // gone already
  CHECK_FALSE(w.policy.finished());
  w.kill(old[2]);
  CHECK(w.policy.finished());
  CHECK(w.started_since(mark).empty());  // nothing respawned
  // Control and reload requests are refused now.
  w.request_reload(ClientId{3});
  REQUIRE(w.replies_to(3).size() == 1);
  CHECK_FALSE(w.replies_to(3)[0].ok);
  CHECK(w.begin_reloads.empty());
}

TEST_CASE("policy: fast shutdown kills every worker and retiree at once") {
  auto cfg = program("web", 3);
  cfg.max_requests = 10;
  World w = running(cfg);
  w.exit_on_signal = false;
  auto old = w.pids("web");
  w.line(old[1], "COUNTER_requests=10");  // a retiree and its successor, too
  auto successor = w.slot("web", 1).m.worker.pid;
  REQUIRE(successor != 0);
  REQUIRE(successor != old[1]);
  w.shutdown(true);
  for (pid_t pid : {old[0], old[1], old[2], successor}) {
    CHECK(w.signals_to(pid, SIGKILL) == 1);
    CHECK(w.signals_to(pid) == 1);
  }
  CHECK_FALSE(w.policy.finished());
  for (pid_t pid : {old[0], old[1], old[2], successor}) w.kill(pid);
  CHECK(w.policy.finished());
  CHECK(w.policy.next_deadline() == core::kNever);
}

TEST_CASE("policy: a shutdown during a rollout fails the reload and stops old and new workers") {
  World w = running(program("web", 3));
  auto old = w.pids("web");
  size_t mark = w.spawns.size();
  w.reload({changed(program("web", 3))}, ClientId{7});
  auto started = w.started_since(mark);
  REQUIRE(started.size() == 1);
  w.request_reload(ClientId{8});  // queued
  w.shutdown(false);
  INFO(w.log_text());
  for (pid_t pid : old) CHECK(w.signals_to(pid, SIGTERM) == 1);
  CHECK(w.signals_to(started[0].pid, SIGTERM) == 1);
  CHECK(w.policy.finished());
  REQUIRE(w.replies_to(7).size() == 1);
  CHECK_FALSE(w.replies_to(7)[0].ok);
  REQUIRE(w.replies_to(8).size() == 1);
  CHECK_FALSE(w.replies_to(8)[0].ok);
  CHECK(w.started_since(mark).size() == 1);
  CHECK(w.begin_reloads.size() == 1);
}

// ---- 10. the lifecycle tables ----

TEST_CASE("policy: every cell of the slot and program lifecycle tables has a decision") {
  std::set<std::string> names;
  for (size_t ph = 0; ph < core::kSlotPhases; ++ph) {
    auto phase = static_cast<SlotPhase>(ph);
    std::string name = core::to_string(phase);
    CHECK(name != "?");
    CHECK(names.insert("slot phase " + name).second);
    CHECK(core::slot_phase_from(name) == phase);
    for (size_t ev = 0; ev < core::kSlotEvents; ++ev) {
      auto event = static_cast<core::SlotEvent>(ev);
      const core::PhaseCell& cell = core::slot_cell(phase, event);
      INFO(name << " x " << core::to_string(event));
      CHECK(std::string(core::to_string(event)) != "?");
      REQUIRE(cell.decision != nullptr);
      CHECK(std::string(cell.decision).size() > 10);
      if (cell.change) {
        CHECK(cell.next >= -1);
        CHECK(cell.next < static_cast<int>(core::kSlotPhases));
        CHECK_FALSE(cell.anomaly);
      } else {
        CHECK(cell.next == static_cast<int>(ph));  // a no-op stays
      }
    }
  }
  CHECK_FALSE(core::slot_phase_from("replaced").has_value());
  for (size_t ph = 0; ph < core::kProgramPhases; ++ph) {
    auto phase = static_cast<core::ProgramPhase>(ph);
    std::string name = core::to_string(phase);
    CHECK(name != "?");
    CHECK(names.insert("program phase " + name).second);
    for (size_t ev = 0; ev < core::kProgramEvents; ++ev) {
      auto event = static_cast<core::ProgramEvent>(ev);
      const core::PhaseCell& cell = core::program_cell(phase, event);
      INFO(name << " x " << core::to_string(event));
      CHECK(std::string(core::to_string(event)) != "?");
      REQUIRE(cell.decision != nullptr);
      CHECK(std::string(cell.decision).size() > 10);
      if (cell.change) {
        CHECK(cell.next >= -1);
        CHECK(cell.next < static_cast<int>(core::kProgramPhases));
        CHECK_FALSE(cell.anomaly);
      } else {
        CHECK(cell.next == static_cast<int>(ph));
      }
    }
  }
  // The cells the header's table promises.
  using core::SlotEvent;
  CHECK(core::slot_cell(SlotPhase::Active, SlotEvent::Replace).next == static_cast<int>(SlotPhase::Replacing));
  CHECK(core::slot_cell(SlotPhase::Replacing, SlotEvent::Proven).next == static_cast<int>(SlotPhase::Active));
  CHECK(core::slot_cell(SlotPhase::Replacing, SlotEvent::SuccessorFailed).next == static_cast<int>(SlotPhase::Active));
  CHECK(core::slot_cell(SlotPhase::Replacing, SlotEvent::Remove).next == static_cast<int>(SlotPhase::Removing));
  CHECK(core::slot_cell(SlotPhase::Removing, SlotEvent::Reclaim).next == static_cast<int>(SlotPhase::Active));
  CHECK(core::slot_cell(SlotPhase::Removing, SlotEvent::Forgotten).next == -1);
  CHECK(core::slot_cell(SlotPhase::Active, SlotEvent::Forgotten).anomaly);
  CHECK(core::slot_cell(SlotPhase::Replacing, SlotEvent::Forgotten).anomaly);
  CHECK(core::program_cell(core::ProgramPhase::Running, core::ProgramEvent::RolloutEnded).anomaly);
  CHECK(core::program_cell(core::ProgramPhase::Removing, core::ProgramEvent::LastProcessGone).next == -1);
}

TEST_CASE("policy: slot phases driven: replace, replace again, proven, retiree gone") {
  auto cfg = program("web", 2);
  cfg.max_requests = 10;
  World w = running(cfg);
  auto old = w.pids("web");
  // Active x Replace → Replacing: the ready worker becomes a retiree, a successor spawns.
  size_t mark = w.spawns.size();
  w.line(old[0], "COUNTER_requests=10");
  CHECK(w.slot("web", 0).phase == SlotPhase::Replacing);
  REQUIRE(w.started_since(mark).size() == 1);
  pid_t successor = w.started_since(mark)[0].pid;
  // Replacing x Replace: the successor, ready but not proven, reaches max_requests too: a no-op, logged.
  w.ready(successor);
  w.line(successor, "COUNTER_requests=10");
  CHECK(w.started_since(mark).size() == 1);
  CHECK(w.logs_with("web[0]: replace while replacing: a replacement is already on its way") == 1);
  // Replacing x Proven → Active: settle passed, the retiree is stopped.
  w.advance(1s);
  CHECK(w.slot("web", 0).phase == SlotPhase::Active);
  CHECK(w.signals_to(old[0], SIGTERM) == 1);
  CHECK(w.prog("web").retirees.empty());

  // Replacing x RetireeGone → Active: the old worker dies before its successor is proven.
  mark = w.spawns.size();
  w.line(old[1], "COUNTER_requests=10");
  REQUIRE(w.started_since(mark).size() == 1);
  CHECK(w.slot("web", 1).phase == SlotPhase::Replacing);
  w.kill(old[1]);
  CHECK(w.slot("web", 1).phase == SlotPhase::Active);
  CHECK(w.prog("web").retirees.empty());
  pid_t next = w.started_since(mark)[0].pid;
  CHECK(w.slot("web", 1).m.worker.pid == next);
  w.ready(next);
  w.advance(5s);
  CHECK(w.signals_to(next) == 0);
  CHECK(w.started_since(mark).size() == 1);
}

TEST_CASE("policy: slot phases driven: successor failed, remove while replacing, reclaim, forgotten") {
  World w = running(program("web", 3));
  auto old = w.pids("web");
  // Replacing x SuccessorFailed → Active with the old pid back (a reload's canary).
  size_t mark = w.spawns.size();
  w.reload({changed(program("web", 3))}, ClientId{1});
  REQUIRE(w.started_since(mark).size() == 1);
  CHECK(w.slot("web", 0).phase == SlotPhase::Replacing);
  w.exit(w.started_since(mark)[0].pid, 2);
  CHECK(w.slot("web", 0).phase == SlotPhase::Active);
  CHECK(w.slot("web", 0).m.worker.pid == old[0]);

  // Replacing x Remove → Removing: TTOU while the top slot is being replaced stops both.
  w.exit_on_signal = false;
  auto cfg = program("web", 3);
  cfg.max_requests = 5;
  w.reload({cfg}, ClientId{2});  // in place
  mark = w.spawns.size();
  w.line(old[2], "COUNTER_requests=5");
  REQUIRE(w.started_since(mark).size() == 1);
  pid_t successor = w.started_since(mark)[0].pid;
  CHECK(w.slot("web", 2).phase == SlotPhase::Replacing);
  w.scale_all(-1);
  CHECK(w.slot("web", 2).phase == SlotPhase::Removing);
  CHECK(w.signals_to(successor, SIGTERM) == 1);
  CHECK(w.signals_to(old[2], SIGTERM) == 1);
  // Removing x Reclaim → Active: TTIN before it is reaped takes slot 2 back.
  w.scale_all(+1);
  CHECK(w.prog("web").slots.size() == 3);
  CHECK(w.slot("web", 2).phase == SlotPhase::Active);
  mark = w.spawns.size();
  w.exit(successor, 0);
  w.exit(old[2], 0);
  auto started = w.started_since(mark);
  REQUIRE(started.size() == 1);
  CHECK(started[0].slot == 2);  // the same number, not a slot 3
  CHECK(w.prog("web").slots.size() == 3);
  CHECK(w.prog("web").retirees.empty());

  // Active x Remove → Removing, then Removing x Forgotten → erased once reaped.
  w.ready(started[0].pid);
  w.scale_all(-1);
  CHECK(w.slot("web", 2).phase == SlotPhase::Removing);
  CHECK(w.prog("web").slots.size() == 3);
  w.exit(started[0].pid, 0);
  CHECK(w.prog("web").slots.size() == 2);
  CHECK(w.logs_with("forgotten while") == 0);  // no anomaly on the way
}

TEST_CASE("policy: program phases driven: rolling out, restart refused meanwhile, removed and gone") {
  World w({program("web", 2), program("old", 2)});
  w.start();
  w.ready_all("web");
  w.ready_all("old");
  auto gone = w.pids("old");
  w.exit_on_signal = false;
  // Running x StartRollout → RollingOut; a restart meanwhile is refused.
  w.reload({changed(program("web", 2)), program("old", 2)}, ClientId{1});
  CHECK(w.prog("web").phase == core::ProgramPhase::RollingOut);
  w.control({core::ControlCommand::Kind::Restart, "web", 0, 0}, 2);
  REQUIRE(w.replies_to(2).size() == 1);
  CHECK_FALSE(w.replies_to(2)[0].ok);
  // RollingOut x RolloutEnded → Running.
  w.exit_on_signal = true;
  w.finish_rollout("web");
  CHECK(w.prog("web").phase == core::ProgramPhase::Running);
  REQUIRE(w.replies_to(1).size() == 1);
  CHECK(w.replies_to(1)[0].ok);

  // Running x Remove → Removing: a reload without `old`.
  w.exit_on_signal = false;
  core::ProgramId id = w.prog("old").id;
  w.reload({changed(program("web", 2))}, ClientId{3});
  CHECK(w.policy.find("old") == nullptr);
  REQUIRE(w.policy.program(id) != nullptr);
  CHECK(w.policy.program(id)->phase == core::ProgramPhase::Removing);
  for (pid_t pid : gone) CHECK(w.signals_to(pid, SIGTERM) == 1);
  CHECK(w.replies_to(3).empty());  // answered once it is gone
  CHECK_FALSE(w.policy.quiescent());
  // Removing x LastProcessGone → erased.
  w.exit(gone[0], 0);
  CHECK(w.policy.program(id) != nullptr);
  w.exit(gone[1], 0);
  CHECK(w.policy.program(id) == nullptr);
  bool announced = std::any_of(w.all.begin(), w.all.end(), [&](const Action& a) {
    return a.kind == Action::Kind::ProgramGone && a.program == id;
  });
  CHECK(announced);
  REQUIRE(w.replies_to(3).size() == 1);
  CHECK(w.replies_to(3)[0].ok);
  CHECK(w.policy.quiescent());
}

// ---- more rollout edges ----

TEST_CASE("policy: a canary that dies during settle, ready but not yet proven, gives its slot back") {
  World w = running(program("web", 3));
  auto old = w.pids("web");
  size_t mark = w.spawns.size();
  w.reload({changed(program("web", 3))}, ClientId{7});
  pid_t canary = w.started_since(mark)[0].pid;
  w.ready(canary);
  w.advance(500ms);
  w.kill(canary, SIGSEGV);
  INFO(w.log_text());
  CHECK(w.started_since(mark).size() == 1);
  check_canary_given_back(w, old, 7);
}

TEST_CASE("policy: a reload that replaces workers and changes their number rolls out over the smaller count") {
  SUBCASE("fewer") {
    World w = running(program("web", 5));
    auto old = w.pids("web");
    size_t mark = w.spawns.size();
    w.reload({changed(program("web", 3))}, ClientId{7});
    CHECK(w.signals_to(old[3], SIGTERM) == 1);
    CHECK(w.signals_to(old[4], SIGTERM) == 1);
    w.finish_rollout("web");
    INFO(w.log_text());
    CHECK(w.started_since(mark).size() == 3);
    CHECK(w.prog("web").slots.size() == 3);
    for (pid_t pid : old) CHECK(w.signals_to(pid) == 1);
    REQUIRE(w.replies_to(7).size() == 1);
    CHECK(w.replies_to(7)[0].ok);
  }
  SUBCASE("more") {
    World w = running(program("web", 2));
    size_t mark = w.spawns.size();
    w.reload({changed(program("web", 4))}, ClientId{7});
    CHECK(w.started_since(mark).size() == 1);  // the canary first, the new slots after the rollout
    w.finish_rollout("web");
    INFO(w.log_text());
    w.ready_all("web");
    CHECK(w.started_since(mark).size() == 4);
    CHECK(w.prog("web").slots.size() == 4);
    for (const auto& s : w.prog("web").slots) CHECK(s.m.worker.generation == 2);
    REQUIRE(w.replies_to(7).size() == 1);
    CHECK(w.replies_to(7)[0].ok);
  }
}

TEST_CASE("policy: control restart replaces every worker canary first and replies when done") {
  World w = running(program("web", 3));
  auto old = w.pids("web");
  size_t mark = w.spawns.size();
  w.control({core::ControlCommand::Kind::Restart, "web", 0, 0}, 4);
  CHECK(w.started_since(mark).size() == 1);
  w.request_reload(ClientId{5});  // waits for the restart
  CHECK(w.begin_reloads.empty());
  w.finish_rollout("web");
  CHECK(w.started_since(mark).size() == 3);
  for (pid_t pid : old) CHECK(w.signals_to(pid, SIGTERM) == 1);
  for (const auto& s : w.prog("web").slots) CHECK(s.m.worker.generation == 1);
  REQUIRE(w.replies_to(4).size() == 1);
  CHECK(w.replies_to(4)[0].ok);
  CHECK(w.replies_to(4)[0].text == "restarted 3 worker(s) of web");
  CHECK(w.begin_reloads.size() == 1);
}

TEST_CASE("policy: control scale of a stopped program replies once the new workers are ready") {
  World w = running(program("web", 3));
  w.control({core::ControlCommand::Kind::Stop, "web", 0, 0}, 1);
  REQUIRE(w.replies_to(1).size() == 1);
  size_t mark = w.spawns.size();
  w.control({core::ControlCommand::Kind::Scale, "web", 4, 0}, 2);
  auto started = w.started_since(mark);
  REQUIRE(started.size() == 1);
  CHECK(started[0].slot == 3);
  w.ready(started[0].pid);
  INFO(w.log_text());
  REQUIRE(w.replies_to(2).size() == 1);
  CHECK(w.replies_to(2)[0].ok);
  // Down again: the removed slot's worker has exited.
  w.control({core::ControlCommand::Kind::Scale, "web", 2, 0}, 3);
  CHECK(w.prog("web").slots.size() == 2);
  REQUIRE(w.replies_to(3).size() == 1);
  CHECK(w.replies_to(3)[0].ok);
}

TEST_CASE("policy: control scale does not wait for a worker its restart policy left stopped") {
  auto cfg = program("web", 2);
  cfg.restart = config::Restart::OnFailure;
  World w = running(cfg);
  auto old = w.pids("web");
  w.exit(old[0], 0);  // clean exit: not restarted
  CHECK(w.slot("web", 0).m.worker.state == WorkerState::Stopped);
  size_t mark = w.spawns.size();
  w.control({core::ControlCommand::Kind::Scale, "web", 3, 0}, 2);
  auto started = w.started_since(mark);
  REQUIRE(started.size() == 1);
  CHECK(w.replies_to(2).empty());
  w.ready(started[0].pid);
  REQUIRE(w.replies_to(2).size() == 1);
  CHECK(w.replies_to(2)[0].ok);
  CHECK(w.replies_to(2)[0].text == "web has 3 worker(s)");
}

TEST_CASE("policy: a reload that adds a program or scales one in place replies once their workers are ready") {
  World w = running(program("web", 2));
  auto old = w.pids("web");
  size_t mark = w.spawns.size();
  w.reload({program("web", 3), program("api", 2)}, ClientId{1});
  auto started = w.started_since(mark);
  REQUIRE(started.size() == 3);
  CHECK(w.replies_to(1).empty());
  w.ready_all("api");
  CHECK(w.replies_to(1).empty());
  w.ready_all("web");
  REQUIRE(w.replies_to(1).size() == 1);
  CHECK_MESSAGE(w.replies_to(1)[0].ok, w.replies_to(1)[0].text);
  CHECK(w.pids("web")[0] == old[0]);  // in place: nobody restarted
  CHECK(w.pids("web")[1] == old[1]);
  for (pid_t pid : old) CHECK(w.signals_to(pid) == 0);

  // An added program whose workers cannot start fails the reload.
  w.fail_spawns["db"] = 100;  // never starts
  w.reload({program("web", 3), program("api", 2), program("db", 1)}, ClientId{2});
  REQUIRE(w.replies_to(2).size() == 1);
  CHECK_FALSE(w.replies_to(2)[0].ok);
  CHECK_MESSAGE(w.replies_to(2)[0].text.find("db[0] failed to start") != std::string::npos, w.replies_to(2)[0].text);
}

TEST_CASE("policy: BUSY= - unknown until said, busy seconds only go up, across exits and recycling") {
  World w({program("web", 3)});
  w.start();
  w.ready_all("web");
  auto pids = w.pids("web");
  auto snap = [&] { return w.policy.snapshot(w.now).programs.at(0); };
  // Nobody said anything: unknown, not idle.
  CHECK(snap().workers_busy == 0);
  CHECK(snap().workers_reporting == 0);
  CHECK(snap().workers.at(0).busy == "unknown");
  w.line(pids[0], "BUSY=1");
  w.line(pids[1], "BUSY=0");
  CHECK(snap().workers_busy == 1);
  CHECK(snap().workers_reporting == 2);
  CHECK(snap().workers.at(0).busy == "busy");
  CHECK(snap().workers.at(1).busy == "idle");
  CHECK(snap().workers.at(2).busy == "unknown");
  w.advance(2s);
  CHECK(snap().busy_seconds == doctest::Approx(2.0));  // a running period counts as it runs
  w.line(pids[0], "BUSY=1");                           // said twice: the first one counts
  w.advance(1s);
  w.line(pids[0], "BUSY=0");
  CHECK(snap().busy_seconds == doctest::Approx(3.0));
  w.advance(5s);
  CHECK(snap().busy_seconds == doctest::Approx(3.0));  // idle: nothing added
  w.line(pids[1], "BUSY=1");
  w.advance(1s);
  w.kill(pids[1]);                                     // dies busy: its period ends there
  double after_exit = snap().busy_seconds;
  CHECK(after_exit == doctest::Approx(4.0));
  w.advance(10s);                                      // respawned worker: unknown again
  CHECK(snap().busy_seconds == doctest::Approx(after_exit));
  CHECK(snap().workers.at(1).busy == "unknown");
  CHECK(snap().workers_busy == 0);
}

TEST_CASE("policy: autoscaling - a sampling deadline only with workers: {min, max}, decisions through scale_to") {
  SUBCASE("no autoscaling: no deadline at all when idle (T26)") {
    World w({program("fixed", 2)});
    w.start();
    w.ready_all("fixed");
    CHECK(w.policy.next_deadline() == core::kNever);
  }
  SUBCASE("autoscaling: MeasureLoad every up_after / 4, the answer scales up, logged and counted") {
    auto p = program("web", 1);
    p.autoscale = config::Autoscale{1, 3};
    World w({p});
    w.start();
    w.ready_all("web");
    auto measures = [&] {
      return std::count_if(w.all.begin(), w.all.end(), [](const Action& a) { return a.kind == Action::Kind::MeasureLoad; });
    };
    w.advance(1s);
    CHECK(measures() >= 3);
    CHECK(w.policy.next_deadline() <= w.now + 250ms);
    core::ProgramId id = w.prog("web").id;
    for (int i = 0; i <= 4; ++i) {  // a queue of 9 for 1 s
      Actions out;
      w.policy.load_measured(id, 9, w.now, out);
      w.apply(std::move(out));
      w.now += 250ms;
    }
    CHECK(w.prog("web").wanted() == 2);
    CHECK(w.prog("web").autoscale_total[0] == 1);
    CHECK(std::any_of(w.logs.begin(), w.logs.end(),
                      [](const std::string& l) { return l.find("web: queue 9 for 1.0s, scaling up to 2") != std::string::npos; }));
    // preforkctl scale outside min/max is refused, inside it is taken.
    core::ControlCommand cmd;
    cmd.kind = core::ControlCommand::Kind::Scale;
    cmd.program = "web";
    cmd.workers = 7;
    w.control(cmd, 42);
    REQUIRE(!w.replies.empty());
    CHECK_FALSE(w.replies.back().ok);
  }
}

TEST_CASE("policy: autoscaling down stops the worker idle longest, once idle for down_after, and hides the hole") {
  auto p = program("web", 3);
  p.autoscale = config::Autoscale{1, 3};
  p.autoscale->down_after = 1000ms;
  p.autoscale->cooldown = 0ms;
  World w({p});
  w.start();
  w.ready_all("web");
  auto pids = w.pids("web");
  core::ProgramId id = w.prog("web").id;
  auto measure = [&] {
    Actions out;
    w.policy.load_measured(id, 0, w.now, out);
    w.apply(std::move(out));
  };
  // Every worker between two requests all the time, the queue empty: each
  // one idle for a moment at every sample, none for long. No step down.
  for (int i = 0; i < 40; ++i) {
    for (auto pid : pids) w.line(pid, "BUSY=1");
    w.now += 100ms;
    for (auto pid : pids) w.line(pid, "BUSY=0");
    w.now += 150ms;
    measure();
  }
  CHECK(w.prog("web").wanted() == 3);
  CHECK(w.prog("web").autoscale_total[1] == 0);
  // Now slot 1 goes idle first, slot 0 and slot 2 later: slot 1 (not the
  // highest) is the one stopped, one down_after after it went idle.
  for (auto pid : pids) w.line(pid, "BUSY=1");
  w.now += 100ms;
  w.line(pids[1], "BUSY=0");
  w.now += 300ms;
  w.line(pids[0], "BUSY=0");
  w.line(pids[2], "BUSY=0");
  w.line(pids[2], "BUSY=0");  // said twice: the first one counts
  for (int i = 0; i <= 8 && w.prog("web").wanted() == 3; ++i) {
    measure();
    w.now += 250ms;
  }
  CHECK(w.prog("web").wanted() == 2);
  CHECK(w.signals_to(pids[1], SIGTERM) == 1);
  CHECK(w.signals_to(pids[0]) == 0);
  CHECK(w.signals_to(pids[2]) == 0);
  CHECK(w.prog("web").autoscale_total[1] == 1);
  CHECK(std::any_of(w.logs.begin(), w.logs.end(), [](const std::string& l) {
    return l.find("web: a worker idle for 1.") != std::string::npos && l.find("scaling down to 2") != std::string::npos;
  }));
  // It exited on SIGTERM (the harness's processes do): slot 1 is a hole below slot 2.
  auto snap = w.policy.snapshot(w.now).programs.at(0);
  CHECK(snap.workers_wanted == 2);
  REQUIRE(snap.workers.size() == 2);
  CHECK(snap.workers[0].slot == 0);
  CHECK(snap.workers[1].slot == 2);
  // Scaling up again takes the hole back first.
  core::ControlCommand cmd;
  cmd.kind = core::ControlCommand::Kind::Scale;
  cmd.program = "web";
  cmd.workers = 3;
  w.control(cmd, 42);
  CHECK(w.prog("web").slots.size() == 3);
  CHECK(w.prog("web").wanted() == 3);
  CHECK(w.pids("web")[1] != 0);
  CHECK(w.pids("web")[1] != pids[1]);
}

TEST_CASE("policy: autoscaling down also needs the remaining workers at most target_utilization busy") {
  // Slots 0 and 2 busy without a break, slot 1 idle for ever: a worker idle
  // for down_after, but the 2 that would remain would be 100% busy.
  auto run = [](uint32_t target) {
    auto p = program("web", 3);
    p.autoscale = config::Autoscale{1, 3};
    p.autoscale->down_after = 1000ms;
    p.autoscale->cooldown = 0ms;
    p.autoscale->target_utilization = target;
    World w({p});
    w.start();
    w.ready_all("web");
    auto pids = w.pids("web");
    core::ProgramId id = w.prog("web").id;
    w.line(pids[0], "BUSY=1");
    w.line(pids[1], "BUSY=0");
    w.line(pids[2], "BUSY=1");
    for (int i = 0; i < 40 && w.prog("web").wanted() == 3; ++i) {
      Actions out;
      w.policy.load_measured(id, 0, w.now, out);
      w.apply(std::move(out));
      w.now += 250ms;
    }
    return std::make_pair(w.prog("web").wanted(), w.logs);
  };
  CHECK(run(50).first == 3);  // 2 busy > (3 - 1) x 50%
  auto [wanted, logs] = run(100);
  CHECK(wanted == 2);          // 2 busy <= (3 - 1) x 100%
  CHECK(std::any_of(logs.begin(), logs.end(), [](const std::string& l) {
    return l.find("web: a worker idle for ") != std::string::npos &&
           l.find("s, 2.0 busy on average over 1.") != std::string::npos;
  }));
}

// ---- 11. sd_notify keys through the same lines ----

TEST_CASE("policy: EXTEND_TIMEOUT_USEC gives a starting worker more time, MAINPID= and RELOADING=1 are no errors") {
  auto cfg = program("web", 1);
  cfg.start_timeout = 2000ms;
  World w({cfg});
  w.start();
  pid_t pid = w.pids("web")[0];
  w.advance(1s);
  w.line(pid, "MAINPID=" + std::to_string(pid));
  w.line(pid, "RELOADING=1");
  w.line(pid, "EXTEND_TIMEOUT_USEC=5000000");  // until 6 s after the start
  w.advance(4900ms);
  CHECK(w.signals_to(pid) == 0);
  // A shorter extension never shortens what was given.
  w.line(pid, "EXTEND_TIMEOUT_USEC=1");
  w.advance(50ms);
  CHECK(w.signals_to(pid) == 0);
  w.advance(50ms);
  CHECK(w.signals_to(pid, SIGTERM) == 1);
  CHECK(w.prog("web").notify_errors == 0);
  // Once ready it changes nothing (the watchdog is not start_timeout).
  auto started = w.pids("web");
  REQUIRE(started[0] != 0);
  w.ready(started[0]);
  w.line(started[0], "EXTEND_TIMEOUT_USEC=1000000000");
  CHECK(w.slot("web", 0).m.worker.deadline == core::kNever);
}

// ---- 12. the guard: the way back after a rollout, and the rollback ----

namespace {

// reload.guard on; reset_after longer than these tests' waits, so that a
// worker failing in them has not been ready for reset_after (a failure).
config::Program guarded(config::Program p, Duration guard = 30000ms) {
  p.reload.guard = guard;
  p.backoff.reset_after = 60000ms;
  return p;
}

// Every slot of `name` has a ready worker of `generation`, none retiring.
void check_all_on(const World& w, const std::string& name, uint64_t generation) {
  const auto& p = w.prog(name);
  CHECK(p.retirees.empty());
  for (const auto& s : p.slots) {
    CAPTURE(s.m.worker.slot);
    CHECK(s.phase == SlotPhase::Active);
    CHECK(s.m.worker.state == WorkerState::Ready);
    CHECK(s.m.worker.generation == generation);
  }
}

// How many spawns since `mark` started `generation`.
size_t started_with(const World& w, size_t mark, uint64_t generation) {
  auto started = w.started_since(mark);
  return static_cast<size_t>(std::count_if(started.begin(), started.end(),
                                            [&](const SpawnRecord& r) { return r.generation == generation; }));
}

// A reload of `name` to v2 carried out to its end: now Guarding.
void reload_and_finish(World& w, const config::Program& next, ClientId client) {
  w.reload({next}, client);
  w.finish_rollout(next.name);
  REQUIRE(w.replies_to(client).size() == 1);
  REQUIRE_MESSAGE(w.replies_to(client)[0].ok, w.replies_to(client)[0].text);
}

}  // namespace

TEST_CASE("guard: a generation that fails after its canary was proven is rolled back during the rollout, new before "
          "old, and the waiting reload is answered with the reason") {
  auto cfg = guarded(program("web", 4));
  World w = running(cfg);
  auto old = w.pids("web");
  size_t mark = w.spawns.size();
  w.reload({changed(cfg)}, ClientId{7});
  pid_t canary = w.started_since(mark)[0].pid;
  w.ready(canary);
  w.advance(1s);  // the canary is proven, its old worker stops; slots 1 and 2 are replaced next
  CHECK(w.signals_to(old[0], SIGTERM) == 1);
  auto started = w.started_since(mark);
  REQUIRE(started.size() == 3);
  pid_t next1 = started[1].pid, next2 = started[2].pid;
  w.ready(next1);
  w.advance(500ms);
  size_t before = w.spawns.size();
  w.exit(canary, 4);  // 1.5 s after it was started, not yet ready for reset_after
  INFO(w.log_text());
  CHECK(w.logs_with("web: generation 2 failed 1s into its rollout (exit status 4): rolling back to generation 1") == 1);
  const auto& p = w.prog("web");
  CHECK(p.phase == core::ProgramPhase::RollingBack);
  CHECK(p.shape.generation == 1);
  CHECK(p.rollbacks == 1);
  // The batch in flight goes back to the old workers, still serving; its new ones stop.
  CHECK(w.signals_to(next1, SIGTERM) == 1);
  CHECK(w.signals_to(next2, SIGTERM) == 1);
  CHECK(w.slot("web", 1).m.worker.pid == old[1]);
  CHECK(w.slot("web", 2).m.worker.pid == old[2]);
  for (int n : {1, 2, 3}) CHECK(w.signals_to(old[static_cast<size_t>(n)]) == 0);
  // The failed slot respawns with the previous configuration, never the failed one.
  CHECK(started_with(w, before, 2) == 0);
  REQUIRE(started_with(w, before, 1) == 1);
  CHECK(w.replies_to(7).empty());  // answered once the rollback is over
  w.finish_rollout("web");
  check_all_on(w, "web", 1);
  CHECK(w.prog("web").phase == core::ProgramPhase::Running);
  CHECK_FALSE(w.prog("web").previous.has_value());
  CHECK(started_with(w, before, 2) == 0);
  auto replies = w.replies_to(7);
  REQUIRE(replies.size() == 1);
  CHECK_FALSE(replies[0].ok);
  CHECK_MESSAGE(replies[0].text.find("web: generation 2 failed 1s into its rollout (exit status 4): rolled back to "
                                     "generation 1") != std::string::npos,
                replies[0].text);
  CHECK(w.policy.reloads_failed() == 1);
  CHECK(w.policy.quiescent());
  // The snapshot says generation 1 and one rollback.
  auto s = w.policy.snapshot(w.now);
  REQUIRE(s.programs.size() == 1);
  CHECK(s.programs[0].generation == 1);
  CHECK(s.programs[0].rollbacks == 1);
  CHECK(s.programs[0].phase == "running");
  CHECK(s.programs[0].previous_generation == 0);
}

TEST_CASE("guard: after its rollout a program keeps the previous configuration for reload.guard, and a failure then "
          "rolls it back canary first, new before old") {
  auto cfg = guarded(program("web", 3));
  World w = running(cfg);
  size_t mark = w.spawns.size();
  reload_and_finish(w, changed(cfg), 7);
  check_all_on(w, "web", 2);
  CHECK(w.logs_with("generation 1 is kept for 30000ms (reload.guard)") == 1);
  {
    const auto& p = w.prog("web");
    CHECK(p.phase == core::ProgramPhase::Guarding);
    REQUIRE(p.previous.has_value());
    CHECK(p.previous->generation == 1);
    CHECK(w.policy.next_deadline() == w.now + 30s);
    CHECK(w.policy.quiescent());  // USR2 hands the guard over, it does not wait
    auto s = w.policy.snapshot(w.now + 12s);
    CHECK(s.programs[0].phase == "guarding");
    CHECK(s.programs[0].generation == 2);
    CHECK(s.programs[0].previous_generation == 1);
    CHECK(s.programs[0].guard_left_s == doctest::Approx(18.0));
  }
  w.advance(12s);
  auto gen2 = w.pids("web");
  mark = w.spawns.size();
  w.exit(gen2[1], 4);
  INFO(w.log_text());
  CHECK(w.logs_with("web: generation 2 failed 12s after its rollout (exit status 4): rolling back to generation 1") == 1);
  CHECK(w.prog("web").phase == core::ProgramPhase::RollingBack);
  // Slot 1 respawns with generation 1 at once; slot 0 is the rollback's canary, alone.
  auto started = w.started_since(mark);
  REQUIRE(started.size() == 2);
  CHECK(started_with(w, mark, 2) == 0);
  std::set<int> slots{started[0].slot, started[1].slot};
  CHECK(slots == std::set<int>{0, 1});
  // New before old: generation 2's slot 0 serves until its successor is proven.
  w.advance(5s);
  CHECK(w.signals_to(gen2[0]) == 0);
  w.ready_all("web");
  w.advance(1s);
  CHECK(w.signals_to(gen2[0], SIGTERM) == 1);
  CHECK(w.signals_to(gen2[2]) == 0);  // the next batch only now
  w.finish_rollout("web");
  check_all_on(w, "web", 1);
  CHECK(w.signals_to(gen2[2], SIGTERM) == 1);
  CHECK(started_with(w, mark, 2) == 0);
  CHECK(w.prog("web").phase == core::ProgramPhase::Running);
  CHECK_FALSE(w.prog("web").previous.has_value());
  CHECK(w.prog("web").rollbacks == 1);
  CHECK(w.logs_with("web: rolled back to generation 1") == 1);
  CHECK(w.policy.next_deadline() == core::kNever);  // no guard after a rollback
  // The reload had answered already; nobody else is told.
  CHECK(w.replies_to(7).size() == 1);
  // Never loops: a generation 1 worker failing now is a respawn, nothing more.
  mark = w.spawns.size();
  w.exit(w.pids("web")[2], 4);
  w.advance(1s);
  CHECK(started_with(w, mark, 1) == 1);
  CHECK(started_with(w, mark, 2) == 0);
  CHECK(w.prog("web").rollbacks == 1);
}

TEST_CASE("guard: a healthy generation survives its guard, and a death after reset_after within it is no failure") {
  auto cfg = guarded(program("web", 2));
  cfg.backoff.reset_after = 10000ms;
  World w = running(cfg);
  reload_and_finish(w, changed(cfg), 7);
  // Ready for more than reset_after (10 s), then killed: a respawn of generation 2, no rollback.
  w.advance(15s);
  size_t mark = w.spawns.size();
  w.kill(w.pids("web")[0], SIGKILL);
  w.ready_all("web");
  CHECK(started_with(w, mark, 2) == 1);
  CHECK(w.prog("web").phase == core::ProgramPhase::Guarding);
  CHECK(w.prog("web").rollbacks == 0);
  w.advance(14900ms);
  CHECK(w.prog("web").phase == core::ProgramPhase::Guarding);
  w.advance(100ms);
  INFO(w.log_text());
  CHECK(w.prog("web").phase == core::ProgramPhase::Running);
  CHECK_FALSE(w.prog("web").previous.has_value());
  CHECK(w.logs_with("web: generation 2 held for 30000ms after its rollout; generation 1 is no longer kept") == 1);
  CHECK(w.policy.quiescent());
  CHECK(w.policy.next_deadline() == core::kNever);
  // A failure now is a crash loop of generation 2, never a rollback.
  mark = w.spawns.size();
  w.exit(w.pids("web")[1], 4);
  w.advance(1s);
  w.ready_all("web");
  CHECK(started_with(w, mark, 2) == 1);
  CHECK(w.prog("web").rollbacks == 0);
  check_all_on(w, "web", 2);
}

TEST_CASE("guard: reload.guard: 0 keeps nothing after the rollout, and a failure is only a respawn") {
  auto cfg = guarded(program("web", 2), 0ms);
  World w = running(cfg);
  reload_and_finish(w, changed(cfg), 7);
  CHECK(w.prog("web").phase == core::ProgramPhase::Running);
  CHECK_FALSE(w.prog("web").previous.has_value());
  size_t mark = w.spawns.size();
  w.exit(w.pids("web")[0], 4);
  w.ready_all("web");
  CHECK(started_with(w, mark, 2) == 1);
  CHECK(w.prog("web").rollbacks == 0);
}

TEST_CASE("guard: a rollback that fails leaves the program on the previous configuration, crash-looping, and never "
          "goes forward again") {
  auto cfg = guarded(program("web", 2));
  World w = running(cfg);
  reload_and_finish(w, changed(cfg), 7);
  w.advance(3s);
  size_t mark = w.spawns.size();
  w.exit(w.pids("web")[0], 4);
  INFO(w.log_text());
  REQUIRE(w.prog("web").phase == core::ProgramPhase::RollingBack);
  auto started = w.started_since(mark);
  REQUIRE_FALSE(started.empty());
  CHECK(started[0].generation == 1);
  // Generation 1 fails too (its database is gone, say).
  w.exit(started[0].pid, 1);
  CHECK(w.logs_with("the rollback to generation 1 failed too (web[0]: exit status 1)") == 1);
  CHECK(w.logs_with("stays on generation 1 and its failing workers back off (crash-looping); preforkd does not go "
                    "back to generation 2") == 1);
  CHECK(w.prog("web").phase == core::ProgramPhase::Running);
  CHECK(w.prog("web").shape.generation == 1);
  CHECK_FALSE(w.prog("web").previous.has_value());
  CHECK_FALSE(w.prog("web").guard.has_value());
  // It keeps failing: backoff, crash-looping, always generation 1.
  for (int i = 0; i < 4; ++i) {
    w.advance(2s);
    w.ready_all("web");
    pid_t pid = w.slot("web", 0).m.worker.pid;
    if (pid != 0) w.exit(pid, 1);
  }
  CHECK(w.prog("web").crash_looping());
  CHECK(started_with(w, mark, 2) == 0);
  CHECK(w.prog("web").rollbacks == 1);
  CHECK(w.prog("web").phase == core::ProgramPhase::Running);
}

TEST_CASE("guard: preforkctl rollback inside the guard rolls back and answers when done, outside it has nothing to "
          "roll back to") {
  auto cfg = guarded(program("web", 2));
  World w = running(cfg);
  core::ControlCommand rollback{core::ControlCommand::Kind::Rollback, "web", 0, 0};
  w.control(rollback, 1);
  REQUIRE(w.replies_to(1).size() == 1);
  CHECK_FALSE(w.replies_to(1)[0].ok);
  CHECK(w.replies_to(1)[0].text.find("web: nothing to roll back to") == 0);

  reload_and_finish(w, changed(cfg), 7);
  w.advance(5s);
  size_t mark = w.spawns.size();
  w.control(rollback, 2);
  INFO(w.log_text());
  CHECK(w.prog("web").phase == core::ProgramPhase::RollingBack);
  CHECK(w.logs_with("web: rolling back from generation 2 to generation 1 (preforkctl rollback)") == 1);
  w.control(rollback, 3);  // meanwhile
  REQUIRE(w.replies_to(3).size() == 1);
  CHECK(w.replies_to(3)[0].text == "web: a rollback is in progress already");
  CHECK(w.replies_to(2).empty());
  w.finish_rollout("web");
  check_all_on(w, "web", 1);
  CHECK(started_with(w, mark, 1) == 2);
  REQUIRE(w.replies_to(2).size() == 1);
  CHECK(w.replies_to(2)[0].ok);
  CHECK(w.replies_to(2)[0].text == "rolled back web to generation 1");
  CHECK(w.prog("web").rollbacks == 1);
  // Once back, there is nothing to roll back to.
  w.control(rollback, 4);
  REQUIRE(w.replies_to(4).size() == 1);
  CHECK_FALSE(w.replies_to(4)[0].ok);
}

TEST_CASE("guard: a restart within the guard keeps it, a restart outside one that fails stops with nothing to roll "
          "back to") {
  SUBCASE("outside a guard") {
    auto cfg = guarded(program("web", 4));
    World w = running(cfg);
    auto old = w.pids("web");
    size_t mark = w.spawns.size();
    w.control({core::ControlCommand::Kind::Restart, "web", 0, 0}, 5);
    pid_t canary = w.started_since(mark)[0].pid;
    w.ready(canary);
    w.advance(1s);
    w.ready_all("web");
    w.advance(500ms);
    w.exit(canary, 4);
    INFO(w.log_text());
    REQUIRE(w.replies_to(5).size() == 1);
    CHECK_FALSE(w.replies_to(5)[0].ok);
    CHECK_MESSAGE(w.replies_to(5)[0].text.find("generation 1 failed 1s into its restart (exit status 4); the workers "
                                               "not restarted yet keep running") != std::string::npos,
                  w.replies_to(5)[0].text);
    CHECK(w.prog("web").phase == core::ProgramPhase::Running);
    CHECK(w.prog("web").rollbacks == 0);
    CHECK(w.signals_to(old[3]) == 0);  // not restarted, still running
    w.advance(5s);
    w.ready_all("web");
    CHECK(w.signals_to(old[3]) == 0);
  }
  SUBCASE("within a guard") {
    auto cfg = guarded(program("web", 2));
    World w = running(cfg);
    reload_and_finish(w, changed(cfg), 7);
    w.advance(20s);
    w.control({core::ControlCommand::Kind::Restart, "web", 0, 0}, 5);
    w.finish_rollout("web");
    REQUIRE(w.replies_to(5).size() == 1);
    CHECK(w.replies_to(5)[0].ok);
    INFO(w.log_text());
    CHECK(w.prog("web").phase == core::ProgramPhase::Guarding);  // re-armed from the restart's end
    CHECK(w.policy.next_deadline() == w.now + 30s);
    w.advance(20s);
    w.exit(w.pids("web")[0], 4);
    CHECK(w.logs_with("web: generation 2 failed 20s after its rollout (exit status 4): rolling back to generation 1") ==
          1);
    w.finish_rollout("web");
    check_all_on(w, "web", 1);
  }
}

TEST_CASE("guard: a worker started during the guard is watched too: a scale-up that misses start_timeout rolls back") {
  auto cfg = guarded(program("web", 2));
  cfg.start_timeout = 2000ms;
  World w = running(cfg);
  auto next = changed(cfg);
  reload_and_finish(w, next, 7);
  w.scale_all(+1);  // slot 2, generation 2, never says READY=1
  REQUIRE(w.prog("web").slots.size() == 3);
  w.advance(2s);
  INFO(w.log_text());
  CHECK(w.logs_with("web: generation 2 failed 2s after its rollout (missed start_timeout): rolling back to "
                    "generation 1") == 1);
  w.finish_rollout("web");
  check_all_on(w, "web", 1);
  CHECK(w.prog("web").slots.size() == 3);
}

TEST_CASE("guard: a reload storm during a rollout coalesces into one more, which leaves the guard alone when nothing "
          "changed") {
  auto cfg = guarded(program("web", 2));
  World w = running(cfg);
  w.reload({changed(cfg)}, ClientId{1});
  for (ClientId c : {2, 3, 4}) w.request_reload(c);
  w.request_reload(std::nullopt);
  CHECK(w.begin_reloads.size() == 1);
  w.finish_rollout("web");
  REQUIRE(w.replies_to(1).size() == 1);
  CHECK(w.replies_to(1)[0].ok);
  CHECK(w.prog("web").phase == core::ProgramPhase::Guarding);
  REQUIRE(w.begin_reloads.size() == 2);  // the storm, coalesced
  CHECK(w.begin_reloads[1].clients == std::vector<ClientId>{2, 3, 4});
  TimePoint guard_end = w.policy.next_deadline();
  w.commit({changed(cfg)});  // the same file again
  for (ClientId c : {2, 3, 4}) {
    REQUIRE(w.replies_to(c).size() == 1);
    CHECK(w.replies_to(c)[0].ok);
  }
  CHECK(w.prog("web").phase == core::ProgramPhase::Guarding);
  REQUIRE(w.prog("web").previous.has_value());
  CHECK(w.prog("web").previous->generation == 1);
  CHECK(w.policy.next_deadline() == guard_end);
  CHECK(w.begin_reloads.size() == 2);
  // And a failure still rolls back to generation 1.
  w.exit(w.pids("web")[0], 4);
  w.finish_rollout("web");
  check_all_on(w, "web", 1);
}

TEST_CASE("guard: reload.guard changed in place applies to the guard in progress") {
  auto cfg = guarded(program("web", 2));
  World w = running(cfg);
  auto next = changed(cfg);
  reload_and_finish(w, next, 7);
  w.advance(5s);
  auto longer = next;
  longer.reload.guard = 60000ms;
  w.reload({longer}, ClientId{8});  // in place: the workers stay
  CHECK(w.prog("web").phase == core::ProgramPhase::Guarding);
  CHECK(w.policy.next_deadline() == w.now + 55s);  // counted from the rollout's end
  auto off = next;
  off.reload.guard = 0ms;
  w.reload({off}, ClientId{9});
  INFO(w.log_text());
  CHECK(w.prog("web").phase == core::ProgramPhase::Running);
  CHECK_FALSE(w.prog("web").previous.has_value());
  CHECK(w.policy.next_deadline() == core::kNever);
  check_all_on(w, "web", 2);
}
