// policy.hpp — every decision preforkd makes above one worker, in one pure place.
//
// Owns: the programs (core/program), their rollouts (core/rollout), the
// control operations that answer when finished and the reload in progress
// (core/operation), reload queueing and coalescing, shutdown, the max_memory
// check deadline and when an in-place upgrade may start. Events come in with
// `now`; decisions go out as Actions (core/action.hpp) that the daemon
// applies. Must never: call the OS or read the clock. Unit tests drive it
// with a fake clock (tests/unit/policy_test.cpp).
//
// After every event the daemon calls tick() until it returns no action
// (a fixpoint, bounded): deadlines, rollouts, reload completion and pending
// operations are re-examined there, so no ordering of handlers can leave a
// step waiting for a wake-up that never comes.
#pragma once

#include <list>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "config/config.hpp"
#include "core/action.hpp"
#include "core/config_diff.hpp"
#include "core/operation.hpp"
#include "core/orphans.hpp"
#include "core/program.hpp"
#include "core/snapshot.hpp"

namespace preforkd::core {

// How often workers' RSS is compared with max_memory: only while some
// program has max_memory (T26: no periodic wake-up otherwise).
inline constexpr Duration kMemoryCheckInterval{1000};

struct ControlCommand {
  enum class Kind { Stop, Start, Scale, Restart, Signal, Rollback };
  Kind kind = Kind::Stop;
  std::string program;
  size_t workers = 0;  // Scale
  int signal = 0;      // Signal
};

// A validated reload, its resources prepared by the daemon.
struct ReloadPlan {
  uint64_t generation = 0;
  ConfigDiff diff;
  std::vector<config::Program> next;  // the new file's programs
  Duration shutdown_timeout{30000};
};

class Policy {
 public:
  Policy(unsigned seed, Duration shutdown_timeout);

  // ---- set-up ----
  // A program with its slots, not started (start-up). Returns its id.
  ProgramId add_program(const config::Program& cfg, uint64_t generation);
  // Starts every slot of every program.
  void start(TimePoint now, Actions& out);
  // The in-place upgrade: records rebuilt from the previous binary's state,
  // with their process ids (ProcId) as the daemon numbered them; programs get
  // ids 1, 2, ... in list order.
  void adopt(Programs programs, uint64_t generation, uint64_t reloads_ok, uint64_t reloads_failed);

  // ---- events ----
  void spawned(ProgramId program, int slot, ProcId proc, pid_t pid, TimePoint now, Actions& out);
  void spawn_failed(ProgramId program, int slot, ProcId proc, const std::string& what, TimePoint now, Actions& out);
  // A reaped child. false: not a worker of ours (an orphan, T20): then call orphan_reaped.
  bool exited(pid_t pid, Termination t, const std::string& how, TimePoint now, Actions& out);
  // ---- the process tree (core/orphans.hpp) ----
  void orphan_reaped(pid_t pid, const std::string& how, TimePoint now, Actions& out);
  void processes_seen(const std::vector<ProcessSeen>& procs, bool ok, bool settled, TimePoint now,
                      Actions& out);                                                // ScanOrphans
  void worker_descendants(pid_t worker, const std::vector<ProcessSeen>& below);                      // WalkWorker
  void notify_line(ProcId proc, std::string_view line, TimePoint now, Actions& out);
  void notify_too_long(ProcId proc, size_t lines, TimePoint now, Actions& out);
  // A NOTIFY_SOCKET datagram from `pid`, which is no worker and in no
  // worker's process group (or cannot be told: pid 0): dropped, counted
  // preforkd-wide (no program to count it for), the first one logged.
  void notify_unattributed(pid_t pid, Actions& out);
  void memory_measured(ProcId proc, uint64_t rss, TimePoint now, Actions& out);
  // MeasureLoad's answer: the program's accept queues, summed (autoscaling).
  void load_measured(ProgramId program, uint64_t queue, TimePoint now, Actions& out);
  void tick(TimePoint now, Actions& out);

  // ---- operator ----
  void shutdown(bool fast, TimePoint now, Actions& out);
  void scale_all(int delta, TimePoint now, Actions& out);  // TTIN +1, TTOU -1
  void control(const ControlCommand& cmd, ClientId client, TimePoint now, Actions& out);
  void request_reload(std::optional<ClientId> client, TimePoint now, Actions& out);
  void reload_failed(std::vector<ClientId> clients, const std::vector<std::string>& errors, Actions& out);
  void commit_reload(ReloadPlan plan, std::vector<ClientId> clients, TimePoint now, Actions& out);

  // ---- queries ----
  const Programs& programs() const { return programs_; }
  const ProgramState* program(ProgramId id) const;
  const ProgramState* find(const std::string& name) const;  // not one being removed
  std::optional<ProcId> proc_of_pid(pid_t pid) const;
  // Is this Spawn action still wanted? (A later event may have stopped the slot.)
  bool spawn_pending(const Action& spawn) const;
  // A Spawn the daemon did not carry out (stale, or it could not even try):
  // the slot no longer waits for it, so a later start can ask again.
  void spawn_dropped(const Action& spawn);
  // Workers whose start_timeout or watchdog deadline has passed: the daemon
  // reads their notify pipes before tick() judges them (a stalled loop may
  // have left READY=1 or WATCHDOG=1 unread).
  std::vector<ProcId> due_for_judgement(TimePoint now) const;
  TimePoint next_deadline() const;
  uint64_t generation() const { return generation_; }
  bool shutting_down() const { return shutting_down_; }
  bool finished() const;
  // Nothing a client waits for or a plan that an exec would lose (USR2 may start).
  bool quiescent() const;
  Snapshot snapshot(TimePoint now) const;
  std::string systemd_status() const;  // "4/4 workers ready; web crash-looping"
  // (program name, generation) pairs some program still runs or may go back to.
  std::vector<std::pair<std::string, uint64_t>> shapes_in_use() const;
  uint64_t reloads_ok() const { return reloads_ok_; }
  uint64_t reloads_failed() const { return reloads_failed_; }
  const Orphans& orphans() const { return orphans_; }
  void restore_orphans(std::vector<Orphan> list, std::map<std::string, uint64_t> totals) {
    orphans_.restore(std::move(list), std::move(totals));
  }

 private:
  enum class ReloadPhase { Idle, Reading, Running };

  Ctx ctx(TimePoint now, Actions& out) { return Ctx{now, out, rng_, next_proc_, shutting_down_}; }
  ProgramState* program_mut(ProgramId id);
  ProgramState* find_mut(const std::string& name);
  bool program_event(ProgramState& p, ProgramEvent e, Ctx& c);
  void finish_rollout(ProgramState& p, const RolloutStep& step, Ctx& c);
  // The guard (core/guard.hpp): failures noted since the last tick, and guards that ran out.
  void check_guards(Ctx& c);
  // GenerationFailed or RollbackRequested: `what` says why, `client` waits for the end (0: nobody).
  void roll_back(ProgramState& p, ProgramEvent why, const std::string& what, ClientId client, Ctx& c);
  void rollback_failed(ProgramState& p, const GuardFailure& f, Ctx& c);
  void begin_reload(std::vector<ClientId> clients, Ctx& c);
  void check_reload(Ctx& c);
  void check_operations(Ctx& c);
  void check_memory(Ctx& c);
  // Autoscaling: an Autoscaler per program with workers: {min, max}, and its
  // MeasureLoad every period (T26: no deadline for the other programs).
  void sync_autoscale(Ctx& c);
  void collect(Ctx& c);
  bool busy_with_rollouts() const;
  void index(const ProgramState& p);
  std::optional<OrphanOrigin> origin_of(ProcId proc);

  Programs programs_;
  ProgramId next_program_ = 1;
  ProcId next_proc_ = 0;
  std::unordered_map<pid_t, ProcId> pids_;          // unreaped workers only (T14)
  std::unordered_map<ProcId, ProgramId> procs_;     // live processes → program
  std::minstd_rand rng_;
  uint64_t generation_ = 1;
  Duration shutdown_timeout_;
  bool shutting_down_ = false;
  bool shutdown_forced_ = false;
  TimePoint shutdown_deadline_ = kNever;
  TimePoint memory_due_ = kNever;
  ReloadPhase reload_phase_ = ReloadPhase::Idle;
  std::optional<ReloadRun> reload_;
  bool reload_queued_ = false;
  std::vector<ClientId> reload_queue_;
  std::vector<PendingOp> pending_;
  uint64_t reloads_ok_ = 0;
  uint64_t reloads_failed_ = 0;
  Orphans orphans_;
  uint64_t notify_unattributed_ = 0;
};

}  // namespace preforkd::core
