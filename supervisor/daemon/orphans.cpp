// orphans.cpp — the OS side of the process tree (core/orphans.hpp decides).
//
// A scan reads the processes below preforkd that are not workers: its
// children that are neither a worker nor the upgrade check, and everything
// below them. Workers' own subtrees are not read then: a scan follows every
// worker's exit, and its cost must not grow with the number of workers.
// They are read one at a time, when that worker is being stopped (WalkWorker),
// and all together by the scan of a `status` request, which lists each one's
// descendants (what serves under a master-style worker) from its children
// files alone; a request, never a timer.
// Both walks are bounded (kMaxProcesses), and neither ever runs on a timer (T26).
#include <csignal>
#include <cstring>

#include "daemon/daemon.hpp"
#include "sys/proc_tree.hpp"

namespace preforkd::daemon {

namespace {

// One walk reads at most this many processes (a fork bomb below a worker
// must not stall the loop); what it leaves out is found by a later one.
constexpr size_t kMaxProcesses = 8192;

std::vector<core::ProcessSeen> to_seen(const std::vector<sys::ProcessFacts>& facts) {
  std::vector<core::ProcessSeen> out;
  out.reserve(facts.size());
  for (const auto& f : facts) out.push_back(core::ProcessSeen{f.pid, f.ppid, f.pgid, f.start_time, f.comm});
  return out;
}

}  // namespace

void Daemon::scan_orphans(std::map<pid_t, std::vector<pid_t>>* below_workers) {
  // First: a child that died after this iteration's reap (a worker, whose
  // children may be ours already) makes the scan unsettled (core/orphans).
  bool settled = !sys::child_exited_unreaped();
  std::vector<pid_t> children;
  pid_t self = sys::self_pid();
  int err = sys::children_of(self, children);
  std::vector<pid_t> roots;
  std::vector<pid_t> workers;
  for (pid_t pid : children) {
    if (pid == upgrade_check_pid_) continue;
    if (policy_.proc_of_pid(pid)) workers.push_back(pid);
    else roots.push_back(pid);
  }
  bool complete = true;
  auto seen = to_seen(sys::subtree(roots, true, kMaxProcesses, &complete));
  if (below_workers != nullptr) {
    // `status`: what serves under each worker (a master's children). A
    // worker's own stat is not read, only its children files: most workers
    // have none, and 1000 of them cost one small read each.
    bool all = true;
    auto below = sys::subtrees_below(workers, kMaxProcesses > seen.size() ? kMaxProcesses - seen.size() : 0, &all);
    complete = complete && all;
    for (size_t i = 0; i < below.size(); ++i) {
      if (below[i].empty()) continue;
      auto& list = (*below_workers)[workers[i]];
      for (const auto& f : below[i]) list.push_back(f.pid);
    }
  }
  bool ok = err == 0 && complete;
  if (!ok)
    log_once("scan: " + std::string(err != 0 ? std::strerror(err) : "incomplete"),
             "preforkd: cannot read every process below preforkd from /proc" +
                 std::string(err != 0 ? std::string(": ") + std::strerror(err) : std::string()) +
                 "; orphans may be found late");
  policy_.processes_seen(seen, ok, settled, now(), actions_);
}

void Daemon::walk_worker(pid_t worker) {
  policy_.worker_descendants(worker, to_seen(sys::subtree({worker}, false, kMaxProcesses)));
}

void Daemon::signal_orphan(const core::Action& a) {
  bool group = a.kind == core::Action::Kind::SignalGroup;
  int err = group ? sys::signal_group(a.pid, a.signal) : sys::signal_if_same(a.pid, a.start_time, a.signal);
  if (err != 0 && err != ESRCH)
    log_->warn("preforkd: cannot signal {} {}: {}", group ? "process group" : "pid", a.pid, std::strerror(err));
}

}  // namespace preforkd::daemon
