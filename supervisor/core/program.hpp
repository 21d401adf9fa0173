// program.hpp — one program's slots and retirees, and what happens to them.
//
// Owns: per program, the slots (each a worker state machine, core/worker,
// plus the slot phase of core/lifecycle), the retirees (old processes that
// serve until their successor is proven, new before old), the wanted count,
// scaling, recycling (max_requests, max_memory, restart, reload), when a
// retiree may stop, crash-looping, exit accounting and the counters workers
// reported. Must never: touch the OS or read the clock — `Ctx` brings `now`
// and collects the Actions (core/action.hpp).
//
// Records are erased only by collect(), after an event has been handled, so
// no code here erases a container it is iterating.
#pragma once

#include <array>
#include <list>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "config/config.hpp"
#include "core/action.hpp"
#include "core/autoscale.hpp"
#include "core/guard.hpp"
#include "core/lifecycle.hpp"
#include "core/notify.hpp"
#include "core/rollout.hpp"
#include "core/worker.hpp"

namespace preforkd::core {

// Why a ready worker is replaced by a new one (new before old).
enum class Recycle { MaxRequests, MaxMemory, Restart, Reload, Rollback };
const char* to_string(Recycle r);  // "max_requests", "max_memory", "restart", "reload", "rollback"
std::optional<Recycle> recycle_from(std::string_view name);

// What a program's workers are started with; one per configuration
// generation the program runs. The daemon keeps the matching OS resources
// (sockets, environment, resolved user) under (name, generation).
struct Shape {
  config::Program config;
  SlotPolicy policy;
  uint64_t generation = 0;
};

// What a process said about its load (BUSY=1 / BUSY=0). A process that
// never said is Unknown: neither busy nor idle.
enum class Busy { Unknown, Idle, Busy };

// One process record: a slot's worker, or a retiree.
struct Member {
  Worker worker;
  ProcId proc = 0;          // the process (0 without one)
  ProcId pending_proc = 0;  // a Spawn action for this record is on its way
  WorkerReport report;      // counters and gauges of the current process
  uint64_t notify_errors = 0;
  bool draining = false;    // said STOPPING=1 (shown, not acted on)
  Busy busy = Busy::Unknown;
  TimePoint busy_since{};   // while Busy: when it said BUSY=1
  TimePoint idle_since{};   // while Idle: when it said BUSY=0 (the first of a run of them)
};

struct Slot {
  SlotPhase phase = SlotPhase::Active;
  Member m;
  Recycle replacing_for = Recycle::Restart;  // while Replacing
};

// Everything an event handler needs besides the program: the time, where
// actions go, the jitter source and the process-id counter.
struct Ctx {
  TimePoint now;
  Actions& out;
  std::minstd_rand& rng;
  ProcId& next_proc;
  bool shutting_down = false;
  double jitter();
  void log(LogLevel level, std::string text) { out.push_back(log_action(level, std::move(text))); }
};


struct ProgramState {
  ProgramId id = 0;
  ProgramPhase phase = ProgramPhase::Running;
  Shape shape;                    // in force: what new workers start with
  // The other configuration: during a reload's rollout and its guard, the
  // one before it (what a rollback goes back to); during a rollback, the
  // failed one being replaced. The daemon keeps its sockets meanwhile.
  std::optional<Shape> previous;
  std::vector<Slot> slots;        // index == slot number
  std::vector<Member> retirees;
  std::optional<Rollout> rollout;  // while phase is RollingOut or RollingBack
  std::optional<Guard> guard;      // a guarded rollout, its guard, or a rollback (core/guard)
  uint64_t rollbacks = 0;          // rollbacks started, automatic or asked for (preforkd_rollbacks_total)
  uint64_t starts = 0;
  std::array<uint64_t, 5> exits{};  // by ExitKind
  ProgramTotals totals;             // counters of processes that are gone
  uint64_t notify_errors = 0;       // all processes, ever
  double busy_seconds_done = 0;     // busy periods that have ended (BUSY=0, exit), all processes, ever
  std::optional<Autoscaler> autoscaler;  // with workers: {min, max} (Policy::sync_autoscale)
  TimePoint next_sample = kNever;        // the autoscaler's next MeasureLoad
  std::array<uint64_t, 2> autoscale_total{};  // decisions: up, down

  const std::string& name() const { return shape.config.name; }
  const config::Program& config() const { return shape.config; }
  std::string tag(int slot) const;  // "echo[2]"

  // ---- queries ----
  // Seconds the workers have been busy, ever: ended periods + the ones running now.
  double busy_seconds(TimePoint now) const;
  size_t wanted() const;          // slots not being removed
  // The count to have under `cfg` after a reload or a rollback: its
  // `workers`, or with autoscaling the current count within min and max.
  size_t count_for(const config::Program& cfg) const;
  size_t ready() const;           // slots whose worker is ready
  bool any_process() const;       // some slot or retiree has a process
  bool crash_looping() const;     // a slot in backoff after two or more failures
  // The retiree of `slot` still serving (not yet asked to stop), if any.
  const Member* serving_retiree(int slot) const;
  Member* serving_retiree(int slot);
  // When a serving retiree may be stopped: once its slot's successor has
  // been ready for reload.settle. kNever while there is nothing to wait for.
  TimePoint retire_at(const Member& retiree) const;
  TimePoint next_deadline() const;
  Member* find_proc(ProcId proc, int* slot_or_minus_one = nullptr);
  // The record a Spawn action was for, if it is still wanted.
  bool spawn_pending(int slot, ProcId proc) const;

  // ---- changes (each may append actions) ----
  void request_spawn(int slot, Ctx& c);
  void apply(Member& m, int slot, const Effects& e, Ctx& c);  // slot -1: a retiree
  void spawned(int slot, ProcId proc, pid_t pid, Ctx& c);
  void spawn_failed(int slot, ProcId proc, const std::string& what, Ctx& c);
  // A reaped process of this program. `how` is "exited with status 4" etc.
  void exited(ProcId proc, Termination t, const std::string& how, Ctx& c);
  void notify(ProcId proc, const NotifyMessage& m, Ctx& c);
  void notify_error(ProcId proc, NotifyError e, Ctx& c);
  void set_busy(Member& m, Busy b, TimePoint now);  // ends a running busy period into busy_seconds_done
  void memory_measured(ProcId proc, uint64_t rss, Ctx& c);
  void expire(Ctx& c);  // deadlines of slots and retirees, retirees whose successor is proven

  // Replace slot's ready worker by a new one (new before old); a no-op
  // when not ready or already being replaced (logged at debug).
  void recycle(int slot, Recycle why, Ctx& c);
  // The slot's successor failed before it was proven: the retiree takes the slot back.
  void take_back(int slot, Ctx& c);
  // The same for a successor that is still there (a rollback): it is
  // stopped and the retiree takes the slot back.
  void give_back(int slot, Ctx& c);
  void stop_retirees(int slot, StopReason reason, Ctx& c);  // slot -1: all
  void add_worker(Ctx& c);
  // Stops one slot's worker for good: the highest slot, or with `idle_first`
  // (autoscaling) the one whose worker has been idle longest (last word
  // BUSY=0, the earliest; ties: the highest slot), if any is idle.
  void remove_worker(Ctx& c, bool idle_first = false);
  void scale_to(size_t target, Ctx& c, bool idle_first = false);
  void stop_all(StopReason reason, Want want, Ctx& c);  // operator stop, shutdown, removal
  void kill_all(Ctx& c);                                // fast shutdown, shutdown_timeout
  void start_all_slots(Ctx& c);                         // operator start
  // Erases forgotten retirees and removed top slots.
  void collect(Ctx& c);

 private:
  Member vacate(Slot& s);
  bool slot_event(int slot, SlotEvent e, Ctx& c);  // applies the lifecycle table; true if acted on
};

// Stable references: a program's record never moves while it exists.
using Programs = std::list<ProgramState>;

}  // namespace preforkd::core
