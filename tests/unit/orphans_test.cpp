// core::Orphans (core/orphans.hpp) and its place in core::Policy: which
// process is an orphan, where it came from, stop_signal then SIGKILL, keep,
// shutdown, counting, status. A fake clock and fake /proc facts; no process.
#include <doctest/doctest.h>

#include <algorithm>
#include <csignal>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "core/metrics_text.hpp"
#include "core/orphans.hpp"
#include "core/policy.hpp"

using namespace preforkd;
using namespace std::chrono_literals;
using core::Action;
using core::Actions;
using core::OrphanOrigin;
using core::Orphans;
using core::OrphanState;
using core::ProcessSeen;
using core::TimePoint;

namespace {

constexpr pid_t kSelf = 1;  // preforkd, as the scans see it

OrphanOrigin worker(const std::string& program, int slot, pid_t pid, bool keep = false, int sig = SIGTERM,
                    core::Duration timeout = 5000ms) {
  OrphanOrigin o;
  o.program = program;
  o.tag = program + "[" + std::to_string(slot) + "]";
  o.left_by = pid;
  o.policy.keep = keep;
  o.policy.stop_signal = sig;
  o.policy.stop_timeout = timeout;
  return o;
}

ProcessSeen proc(pid_t pid, pid_t ppid, pid_t pgid, const std::string& comm = "sleep", uint64_t start = 0) {
  return ProcessSeen{pid, ppid, pgid, start == 0 ? static_cast<uint64_t>(pid) * 10 : start, comm};
}

std::vector<Action> of_kind(const Actions& out, Action::Kind k) {
  std::vector<Action> r;
  std::copy_if(out.begin(), out.end(), std::back_inserter(r), [&](const Action& a) { return a.kind == k; });
  return r;
}

bool logged(const Actions& out, const std::string& text) {
  return std::any_of(out.begin(), out.end(), [&](const Action& a) {
    return a.kind == Action::Kind::Log && a.text.find(text) != std::string::npos;
  });
}

// The orphans plus the daemon's side: live workers, a clock, the scan's answer.
struct Tree {
  Orphans orphans;
  TimePoint now = TimePoint{} + 1000s;
  std::vector<pid_t> live;  // workers with a process
  Actions out;              // everything since the last clear()

  std::function<bool(pid_t)> live_worker() const {
    return [this](pid_t p) { return std::find(live.begin(), live.end(), p) != live.end(); };
  }
  std::optional<OrphanOrigin> sole;  // preforkd runs only this program
  bool settled = true;               // no child waits to be reaped
  // A tick; if it asks for a scan, `procs` is the answer.
  void tick(const std::vector<ProcessSeen>& procs, bool ok = true) {
    Actions t;
    orphans.tick(now, t);
    bool scan = !of_kind(t, Action::Kind::ScanOrphans).empty();
    out.insert(out.end(), t.begin(), t.end());
    if (scan) orphans.processes_seen(procs, ok, settled, live_worker(), sole ? &*sole : nullptr, now, out);
  }
  std::vector<Action> signals() const {
    auto a = of_kind(out, Action::Kind::SignalOrphan);
    auto g = of_kind(out, Action::Kind::SignalGroup);
    a.insert(a.end(), g.begin(), g.end());
    return a;
  }
  const core::Orphan* find(pid_t pid) const {
    for (const auto& o : orphans.list())
      if (o.pid == pid) return &o;
    return nullptr;
  }
};

}  // namespace

TEST_CASE("orphans: the children of an exited worker get its stop_signal, SIGKILL after stop_timeout") {
  Tree t;
  t.orphans.worker_exited(worker("echo", 2, 4700));
  CHECK_FALSE(t.orphans.idle());  // a scan is due
  // 4711 left the worker's group (setsid); it landed on preforkd.
  t.tick({proc(4711, kSelf, 4711)});
  auto sig = t.signals();
  REQUIRE(sig.size() == 1);
  CHECK(sig[0].kind == Action::Kind::SignalOrphan);
  CHECK(sig[0].pid == 4711);
  CHECK(sig[0].start_time == 47110);
  CHECK(sig[0].signal == SIGTERM);
  CHECK(logged(t.out, "echo[2]: orphan pid 4711 (sleep) left by pid 4700: stopping it"));
  CHECK(t.orphans.totals().at("echo") == 1);
  CHECK(t.orphans.next_deadline() == t.now + 5s);

  t.out.clear();
  t.now += 5s;
  t.tick({proc(4711, kSelf, 4711)});  // still there
  sig = t.signals();
  REQUIRE(sig.size() == 1);
  CHECK(sig[0].signal == SIGKILL);
  CHECK(sig[0].start_time == 47110);  // T14: only if it is still that process
  CHECK(logged(t.out, "still running after stop_timeout, sending SIGKILL"));
  CHECK(t.find(4711)->state == OrphanState::Killing);
  CHECK(t.orphans.totals().at("echo") == 1);  // logged and counted once

  // Reaped: gone (its zombie held the pid until then).
  t.out.clear();
  t.orphans.reaped(4711, "killed by signal 9", t.now, t.out);
  CHECK(t.orphans.list().empty());
  t.tick({});
  CHECK(t.orphans.idle());
  CHECK(t.orphans.next_deadline() == core::kNever);
}

TEST_CASE("orphans: what remains of an exited worker's group gets stop_signal once, by killpg") {
  Tree t;
  t.orphans.worker_exited(worker("web", 0, 4700, false, SIGINT));
  // 4701 and its child 4702 stayed in the worker's group.
  t.tick({proc(4701, kSelf, 4700), proc(4702, 4701, 4700)});
  auto sig = t.signals();
  REQUIRE(sig.size() == 1);  // no second signal to a member
  CHECK(sig[0].kind == Action::Kind::SignalGroup);
  CHECK(sig[0].pid == 4700);
  CHECK(sig[0].signal == SIGINT);
  CHECK(t.orphans.list().size() == 2);
  CHECK(t.orphans.totals().at("web") == 2);
  for (const auto& o : t.orphans.list()) {
    CHECK(o.state == OrphanState::Stopping);
    CHECK(o.origin.left_by == 4700);
    CHECK(o.deadline == t.now + 5s);
  }
}

TEST_CASE("T14 orphans: an exited worker's empty group is never signalled, its number may be someone else's") {
  Tree t;
  t.orphans.worker_exited(worker("web", 0, 4700));
  t.tick({proc(5000, kSelf, 5000)});  // something else, in a group of its own
  CHECK(of_kind(t.out, Action::Kind::SignalGroup).empty());
  // Nor when the pid leads a live worker's group again.
  Tree u;
  u.orphans.worker_exited(worker("web", 0, 4700));
  u.live = {4700};
  u.tick({proc(4701, kSelf, 4700)});
  CHECK(u.signals().empty());
  CHECK(u.orphans.list().empty());
}

TEST_CASE("T14 orphans: a pid seen again with another start time is another process") {
  Tree t;
  t.orphans.worker_exited(worker("echo", 0, 4700));
  t.tick({proc(4711, kSelf, 4711, "sleep", 100)});
  REQUIRE(t.find(4711) != nullptr);
  t.out.clear();
  t.orphans.reaped(4800, "exited with status 0", t.now, t.out);  // something else: a scan is due
  t.tick({proc(4711, kSelf, 4711, "cat", 200)});
  REQUIRE(t.orphans.list().size() == 1);
  CHECK(t.find(4711)->start_time == 200);
  CHECK(t.find(4711)->comm == "cat");
  CHECK(t.find(4711)->origin.program.empty());  // nothing says where it came from
  CHECK(logged(t.out, "preforkd: orphan pid 4711 (cat) of unknown origin: stopping it"));
}

TEST_CASE("orphans: keep: only reaped, counted, and stopped at shutdown") {
  Tree t;
  t.orphans.worker_exited(worker("jobs", 1, 4700, /*keep=*/true));
  t.tick({proc(4701, kSelf, 4700), proc(4711, kSelf, 4711)});
  CHECK(t.signals().empty());  // not even the group
  CHECK(t.orphans.list().size() == 2);
  CHECK(t.orphans.totals().at("jobs") == 2);
  CHECK(t.orphans.next_deadline() == core::kNever);  // no timer for a kept orphan (T26)
  CHECK(logged(t.out, "jobs[1]: orphan pid 4711 (sleep) left by pid 4700: kept (orphans: keep)"));
  t.orphans.reaped(4711, "exited with status 0", t.now, t.out);
  CHECK(t.orphans.list().size() == 1);
  t.out.clear();
  t.orphans.shutdown(false, t.now, t.out);
  auto sig = t.signals();
  REQUIRE(sig.size() == 1);
  CHECK(sig[0].pid == 4701);
  CHECK(sig[0].signal == SIGTERM);
  CHECK(t.find(4701)->state == OrphanState::Stopping);
}

TEST_CASE("orphans: a process in a live worker's group is the worker's, and so is what runs below it") {
  Tree t;
  t.live = {4700};
  t.orphans.worker_exited(worker("echo", 1, 4600));
  // 4701: the worker's daemonized grandchild, still in its group; 4702 left
  // the group below it (setsid), but has not landed on preforkd.
  t.tick({proc(4701, kSelf, 4700), proc(4702, 4701, 4702)});
  CHECK(t.orphans.list().empty());
  CHECK(t.signals().empty());
}

TEST_CASE("orphans: where one came from: recorded at its worker's stop, a known parent, a guess, or unknown") {
  Tree t;
  t.live = {4700, 4800};
  // At their stop, the descendants of two workers of two programs are read.
  t.orphans.worker_descendants(worker("a", 0, 4700, false, SIGTERM, 2000ms), {proc(4711, 4700, 4711)});
  t.orphans.worker_descendants(worker("b", 0, 4800, false, SIGINT, 3000ms), {proc(4811, 4800, 4811)});
  t.live.clear();  // both exit in the same loop iteration
  t.orphans.worker_exited(worker("a", 0, 4700, false, SIGTERM, 2000ms));
  t.orphans.worker_exited(worker("b", 0, 4800, false, SIGINT, 3000ms));
  t.tick({proc(4711, kSelf, 4711), proc(4811, kSelf, 4811), proc(4812, 4811, 4812), proc(4900, kSelf, 4900)});
  REQUIRE(t.orphans.list().size() == 4);
  CHECK(t.find(4711)->origin.program == "a");
  CHECK(t.find(4711)->origin.left_by == 4700);
  CHECK(t.find(4811)->origin.program == "b");
  CHECK(t.find(4812)->origin.program == "b");  // below an orphan of b
  CHECK(t.find(4812)->origin.tag == "b[0]");
  // Two programs' workers ended at once: 4900's origin cannot be told.
  CHECK(t.find(4900)->origin.program.empty());
  CHECK(t.find(4900)->origin.policy.stop_signal == SIGTERM);
  CHECK(t.find(4900)->deadline == t.now + core::kUnknownOrphanTimeout);
  for (const auto& s : t.signals())
    if (s.pid == 4811 || s.pid == 4812) CHECK(s.signal == SIGINT);
  CHECK(t.orphans.totals().at("a") == 1);
  CHECK(t.orphans.totals().at("b") == 2);
}

TEST_CASE("orphans: several workers of one program ended at once: the program, not the worker") {
  Tree t;
  t.orphans.worker_exited(worker("echo", 0, 4700));
  t.orphans.worker_exited(worker("echo", 1, 4800));
  t.tick({proc(4900, kSelf, 4900)});
  REQUIRE(t.find(4900) != nullptr);
  CHECK(t.find(4900)->origin.program == "echo");
  CHECK(t.find(4900)->origin.left_by == 0);
  CHECK(logged(t.out, "echo: orphan pid 4900 (sleep): stopping it"));
}

TEST_CASE("orphans: one that landed while its worker still ran is the only program's, if there is one") {
  Tree t;
  t.live = {4700};
  t.sole = worker("echo", 0, 0, false, SIGINT, 1000ms);
  t.sole->tag = "echo";
  t.orphans.worker_exited(worker("other", 0, 4600));  // gone meanwhile: it asks for the scan
  t.orphans.reaped(4600, "exited with status 0", t.now, t.out);
  t.tick({proc(4711, kSelf, 4711)});
  REQUIRE(t.find(4711) != nullptr);
  // The worker that exited is the better guess while there is one.
  CHECK(t.find(4711)->origin.program == "other");
  t.out.clear();
  t.orphans.reaped(4999, "exited with status 0", t.now, t.out);
  t.tick({proc(4711, kSelf, 4711), proc(4811, kSelf, 4811)});
  REQUIRE(t.find(4811) != nullptr);
  CHECK(t.find(4811)->origin.program == "echo");
  CHECK(t.find(4811)->origin.left_by == 0);
  CHECK(logged(t.out, "echo: orphan pid 4811 (sleep): stopping it"));
  auto sig = t.signals();
  REQUIRE(sig.size() == 1);
  CHECK(sig[0].signal == SIGINT);
}

TEST_CASE("orphans: while a child waits to be reaped, a guess waits for the next scan, once") {
  Tree t;
  t.live = {4800};
  t.orphans.worker_exited(worker("a", 0, 4700));
  // Worker 4800 (program b) has died too, not reaped yet: 4811, its child
  // in a session of its own, is preforkd's already.
  t.settled = false;
  t.tick({proc(4711, kSelf, 4700), proc(4811, kSelf, 4811), proc(4812, 4811, 4812)});
  CHECK(t.find(4711) != nullptr);  // certain: a's group, signalled
  CHECK(t.find(4811) == nullptr);  // a guess: it waits
  CHECK(t.find(4812) == nullptr);  // and what is below it
  CHECK(of_kind(t.out, Action::Kind::SignalGroup).size() == 1);
  // The reap: 4800 is b's; a and b both ended since the last settled scan,
  // so 4811's origin is unknown rather than wrongly a's.
  t.live.clear();
  t.settled = true;
  t.orphans.worker_exited(worker("b", 0, 4800));
  t.tick({proc(4711, kSelf, 4700), proc(4811, kSelf, 4811), proc(4812, 4811, 4812)});
  REQUIRE(t.find(4811) != nullptr);
  CHECK(t.find(4811)->origin.program.empty());
  CHECK(t.find(4812) != nullptr);
  CHECK(of_kind(t.out, Action::Kind::SignalGroup).size() == 1);  // a's group once
  // Deferred once only: under a constant churn it is taken the second time.
  Tree u;
  u.settled = false;
  u.orphans.reaped(4999, "exited with status 0", u.now, u.out);
  u.tick({proc(5000, kSelf, 5000)});
  CHECK(u.orphans.list().empty());
  u.orphans.reaped(4998, "exited with status 0", u.now, u.out);
  u.tick({proc(5000, kSelf, 5000)});
  CHECK(u.orphans.list().size() == 1);
}

TEST_CASE("orphans: a scan that could not read everything forgets no orphan") {
  Tree t;
  t.orphans.worker_exited(worker("echo", 0, 4700));
  t.tick({proc(4711, kSelf, 4711)});
  t.orphans.reaped(4999, "exited with status 0", t.now, t.out);
  t.tick({}, /*ok=*/false);
  CHECK(t.find(4711) != nullptr);
  t.orphans.reaped(4999, "exited with status 0", t.now, t.out);
  t.tick({}, /*ok=*/true);
  CHECK(t.orphans.list().empty());
}

TEST_CASE("orphans: fast shutdown and shutdown_timeout SIGKILL every orphan, and those found afterwards") {
  Tree t;
  t.orphans.worker_exited(worker("echo", 0, 4700, false, SIGTERM, 3600000ms));
  t.tick({proc(4711, kSelf, 4711)});
  t.out.clear();
  t.orphans.shutdown(/*fast=*/true, t.now, t.out);
  auto sig = t.signals();
  REQUIRE(sig.size() == 1);
  CHECK(sig[0].signal == SIGKILL);
  t.out.clear();
  t.orphans.worker_exited(worker("echo", 1, 4800));
  t.tick({proc(4711, kSelf, 4711), proc(4801, kSelf, 4800), proc(4811, kSelf, 4811)});
  for (const auto& s : t.signals()) CHECK(s.signal == SIGKILL);
  CHECK(t.signals().size() == 2);  // the group of 4800 (with 4801 in it), and 4811
  CHECK(t.orphans.next_deadline() <= t.now + core::kRekillInterval);
}

// ---- in core::Policy ----

namespace {

config::Program program(const std::string& name, uint32_t workers) {
  config::Program p;
  p.name = name;
  p.command = {"/srv/" + name};
  p.executable = "/srv/" + name;
  p.workers = workers;
  p.stop_timeout = 2000ms;
  p.stop_signal = SIGTERM;
  return p;
}

// Carries out Spawn actions with pids from 1000 up; records the rest.
struct PolicyWorld {
  core::Policy policy{7, 30000ms};
  TimePoint now = TimePoint{} + 1000s;
  pid_t next_pid = 1000;
  std::vector<ProcessSeen> tree;  // the answer to ScanOrphans
  std::map<pid_t, std::vector<ProcessSeen>> below;  // the answers to WalkWorker
  Actions all;

  void run(Actions out) {
    for (int round = 0; round < 1000; ++round) {
      if (out.empty()) {
        policy.tick(now, out);
        if (out.empty()) return;
      }
      Actions next;
      for (const auto& a : out) {
        all.push_back(a);
        if (a.kind == Action::Kind::Spawn && policy.spawn_pending(a))
          policy.spawned(a.program, a.slot, a.proc, ++next_pid, now, next);
        else if (a.kind == Action::Kind::ScanOrphans)
          policy.processes_seen(tree, true, true, now, next);
        else if (a.kind == Action::Kind::WalkWorker)
          policy.worker_descendants(a.pid, below[a.pid]);
      }
      out = std::move(next);
    }
    FAIL("no fixpoint");
  }
  size_t index_of(Action::Kind k, pid_t pid = 0, size_t from = 0) const {
    for (size_t i = from; i < all.size(); ++i)
      if (all[i].kind == k && (pid == 0 || all[i].pid == pid)) return i;
    return all.size();
  }
};

}  // namespace

TEST_CASE("policy: a worker's exit looks for what it left, and its replacement is not held back") {
  PolicyWorld w;
  w.policy.add_program(program("echo", 1), 1);
  Actions out;
  w.policy.start(w.now, out);
  w.run(std::move(out));
  REQUIRE(w.next_pid == 1001);
  w.all.clear();
  w.tree = {proc(1101, kSelf, 1001), proc(1102, kSelf, 1102)};
  out.clear();
  REQUIRE(w.policy.exited(1001, core::Termination{true, SIGKILL}, "killed by signal 9", w.now, out));
  w.run(std::move(out));
  size_t spawn = w.index_of(Action::Kind::Spawn);
  size_t scan = w.index_of(Action::Kind::ScanOrphans);
  CHECK(spawn < scan);  // the replacement first
  CHECK(w.index_of(Action::Kind::SignalGroup, 1001) < w.all.size());
  CHECK(w.index_of(Action::Kind::SignalOrphan, 1102) < w.all.size());
  CHECK(w.policy.orphans().list().size() == 2);
  auto snap = w.policy.snapshot(w.now + 1500ms);
  REQUIRE(snap.programs.size() == 1);
  CHECK(snap.programs[0].orphans_total == 2);
  REQUIRE(snap.programs[0].orphans.size() == 2);
  CHECK(snap.programs[0].orphans[0].left_by == 1001);
  CHECK(snap.programs[0].orphans[0].state == "stopping");
  CHECK(snap.programs[0].orphans[0].age_s == doctest::Approx(1.5));
  CHECK(snap.orphans.empty());
  CHECK(core::render_prometheus(snap).find("preforkd_orphans_total{program=\"echo\"} 2\n") != std::string::npos);
  // SIGKILL after echo's stop_timeout, not before.
  CHECK(w.policy.next_deadline() == w.now + 2000ms);
}

TEST_CASE("policy: a worker being stopped has its descendants read before the stop signal goes out") {
  PolicyWorld w;
  w.policy.add_program(program("echo", 2), 1);
  Actions out;
  w.policy.start(w.now, out);
  w.run(std::move(out));
  w.all.clear();
  w.below[1001] = {proc(1201, 1001, 1201)};
  out.clear();
  w.policy.shutdown(false, w.now, out);
  w.run(std::move(out));
  size_t walk = w.index_of(Action::Kind::WalkWorker, 1001);
  size_t term = w.index_of(Action::Kind::Signal, 1001);
  REQUIRE(walk < w.all.size());
  CHECK(walk < term);
  CHECK(w.index_of(Action::Kind::ScanOrphans) < w.all.size());  // shutdown: those that landed already
  // Both workers exit at once; 1201 landed on preforkd: it is worker 1001's.
  w.tree = {proc(1201, kSelf, 1201)};
  for (pid_t pid : {1001, 1002}) {
    out.clear();
    w.policy.exited(pid, core::Termination{true, SIGTERM}, "killed by signal 15", w.now, out);
    w.run(std::move(out));
  }
  REQUIRE(w.policy.orphans().list().size() == 1);
  CHECK(w.policy.orphans().list()[0].origin.tag == "echo[0]");
  CHECK(w.policy.orphans().list()[0].origin.left_by == 1001);
  // No worker is left, but preforkd is not finished while the orphan runs.
  CHECK_FALSE(w.policy.finished());
  out.clear();
  w.policy.orphan_reaped(1201, "killed by signal 15", w.now, out);
  w.tree.clear();
  w.run(std::move(out));
  CHECK(w.policy.finished());
}

TEST_CASE("policy: an orphan of unknown origin is listed at the top of the status") {
  PolicyWorld w;
  w.policy.add_program(program("echo", 1), 1);
  w.policy.add_program(program("web", 1), 1);  // two programs: no guess
  Actions out;
  w.policy.start(w.now, out);
  w.run(std::move(out));
  w.tree = {proc(3000, kSelf, 3000, "stray")};
  out.clear();
  w.policy.orphan_reaped(2999, "exited with status 0", w.now, out);  // something of no worker ended
  w.run(std::move(out));
  auto snap = w.policy.snapshot(w.now);
  REQUIRE(snap.orphans.size() == 1);
  CHECK(snap.orphans[0].pid == 3000);
  CHECK(snap.orphans[0].command == "stray");
  CHECK(snap.orphans[0].program.empty());
  CHECK(snap.programs[0].orphans.empty());
  CHECK(snap.programs[0].orphans_total == 0);
}
