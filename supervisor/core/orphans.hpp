// orphans.hpp — what preforkd's workers leave behind, and what becomes of it.
//
// Owns: which processes below preforkd are orphans, which program each came
// from, stopping them (stop_signal, SIGKILL after stop_timeout, SIGKILL
// again every 5 s) or keeping them (`orphans: keep`: only reaped), the
// signal to what remains of an exited worker's process group, the count per
// program, and what `status` shows of them. Must never: call the OS or read
// the clock.
//
// An orphan is a process below preforkd that is not a worker and belongs to
// no live worker: it landed on preforkd (the subreaper, or pid 1) when its
// parent died — the children of a worker that exited, a grandchild that
// left its worker's process group (setsid, setpgid) and whose parent ended —
// or sits below such a process. A process in a live worker's process group
// is that worker's (it goes with the group), and so is everything below it.
//
// What it knows of the OS comes from the daemon as facts, on request:
//   ScanOrphans → processes_seen(): the processes below preforkd outside
//     its workers (parents before children), asked for after a worker's
//     exit, after a reaped orphan, at shutdown and when an orphan is due;
//   WalkWorker → worker_descendants(): the processes below a worker that is
//     being stopped, read before the stop signal goes out, so that whatever
//     lands on preforkd after its death is known to be its.
// Never on a timer (T26): the only deadlines are the orphans' own.
//
// Where an orphan came from, in this order: a descendant recorded at its
// worker's stop; a member of the group of a worker that just exited; a
// child of a known orphan; the worker(s) that exited since the last scan, if
// they all ran the same program; the only program preforkd runs, if it runs
// one (everything below a subreaper descends from one of its workers); else
// unknown (TERM, then KILL after 10 s).
//
// A process is named by its pid and start time together: by the time a
// decision is carried out the pid may be someone else's (T14), so SIGKILL
// goes out as SignalOrphan{pid, start_time}, which the daemon checks.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/action.hpp"
#include "core/worker.hpp"

namespace preforkd::core {

// One process as the daemon read it from /proc.
struct ProcessSeen {
  pid_t pid = 0;
  pid_t ppid = 0;
  pid_t pgid = 0;
  uint64_t start_time = 0;
  std::string comm;
};

// An orphan whose program is not known: TERM, then SIGKILL after this.
inline constexpr Duration kUnknownOrphanTimeout{10000};

// How a program's orphans are treated (its configuration when they were found).
struct OrphanPolicy {
  bool keep = false;     // orphans: keep
  int stop_signal = 15;  // SIGTERM
  Duration stop_timeout = kUnknownOrphanTimeout;
  static OrphanPolicy from(const config::Program& p);
};

// Where an orphan came from.
struct OrphanOrigin {
  std::string program;  // "" when not known
  std::string tag;      // "echo[2]" (its worker's slot), "echo" (the program only) or "preforkd"
  pid_t left_by = 0;    // the worker it descends from; 0 when not known
  OrphanPolicy policy;
};

enum class OrphanState { Kept, Stopping, Killing };
const char* to_string(OrphanState s);  // "kept", "stopping", "killing"
std::optional<OrphanState> orphan_state_from(std::string_view name);

struct Orphan {
  pid_t pid = 0;
  uint64_t start_time = 0;
  std::string comm;
  OrphanOrigin origin;
  TimePoint since{};  // when preforkd found it
  OrphanState state = OrphanState::Stopping;
  TimePoint deadline = kNever;  // Stopping: SIGKILL; Killing: SIGKILL again
};

class Orphans {
 public:
  // ---- events ----
  // A worker was reaped, whatever the cause. The processes it leaves are
  // looked for (a scan is due); its process group gets its stop_signal once
  // the scan has shown that something of it remains (orphans: stop).
  void worker_exited(OrphanOrigin worker);
  // A child that is not a worker was reaped: an orphan, or one never seen.
  // Its own children have landed on preforkd: a scan is due.
  void reaped(pid_t pid, const std::string& how, TimePoint now, Actions& out);
  // The answer to WalkWorker: `below` are the descendants of a worker being
  // stopped (whose origin is `worker`).
  void worker_descendants(const OrphanOrigin& worker, const std::vector<ProcessSeen>& below);
  // The answer to ScanOrphans. `ok` false: /proc could not be read (fully).
  // `settled` false: some child had exited and was not reaped yet, perhaps
  // a worker whose children are in the scan already; a process whose origin
  // would only be guessed then waits for the next scan (which that reap
  // brings), once. `live_worker(pid)`: a worker with an unreaped process
  // has that pid. `sole`: the origin to assume when nothing else tells,
  // when preforkd runs only one program (null otherwise).
  void processes_seen(const std::vector<ProcessSeen>& procs, bool ok, bool settled,
                      const std::function<bool(pid_t)>& live_worker, const OrphanOrigin* sole, TimePoint now,
                      Actions& out);

  // ---- shutdown: every orphan goes, kept ones too ----
  void shutdown(bool fast, TimePoint now, Actions& out);
  void force(TimePoint now, Actions& out);  // shutdown_timeout passed: SIGKILL

  // Asks for a scan when one is due; SIGKILLs the orphans whose deadline passed.
  void tick(TimePoint now, Actions& out);

  // ---- queries ----
  TimePoint next_deadline() const;
  bool idle() const { return list_.empty() && !scan_due_; }  // nothing left to stop or to look for
  const std::vector<Orphan>& list() const { return list_; }
  const std::map<std::string, uint64_t>& totals() const { return totals_; }  // by program, ever

  // ---- the in-place upgrade ----
  void restore(std::vector<Orphan> list, std::map<std::string, uint64_t> totals);

 private:
  struct Known {
    uint64_t start_time = 0;
    OrphanOrigin origin;
  };
  void adopt(const ProcessSeen& p, const OrphanOrigin& origin, bool signalled, TimePoint now, Actions& out);
  void send_stop(Orphan& o, TimePoint now, Actions& out);  // stop_signal, SIGKILL after stop_timeout
  void send_kill(Orphan& o, TimePoint now, Actions& out);  // SIGKILL, again after kRekillInterval
  std::string who(const Orphan& o) const;

  std::vector<Orphan> list_;
  std::map<std::string, uint64_t> totals_;
  struct Departed {
    OrphanOrigin worker;
    bool group_signalled = false;
  };
  std::vector<Departed> departed_;      // workers reaped since the last settled scan
  std::map<pid_t, Known> known_;        // descendants of workers being stopped
  std::map<pid_t, uint64_t> deferred_;  // pid → start time: left for the next scan once
  bool scan_due_ = false;
  bool shutting_down_ = false;
  bool forced_ = false;  // fast shutdown, or shutdown_timeout passed: SIGKILL at once
};

// SignalOrphan{pid, start_time, sig}.
Action signal_orphan_action(pid_t pid, uint64_t start_time, int sig);

}  // namespace preforkd::core
