// orphans.cpp — the OS side of the process tree (core/orphans.hpp decides).
//
// A scan reads the processes below preforkd that are not workers: its
// children that are neither a worker nor the upgrade check, and everything
// below them. Workers' own subtrees are not read then: a scan follows every
// worker's exit, and its cost must not grow with the number of workers.
// They are read one at a time, when that worker is being stopped (WalkWorker),
// and all together by the scan of a `status` request, which walks through
// the workers in the same pass to list each one's descendants (what serves
// under a master-style worker); a request, never a timer.
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
  bool any_worker = false;
  for (pid_t pid : children) {
    if (pid == upgrade_check_pid_) continue;
    if (policy_.proc_of_pid(pid)) {
      any_worker = true;
      if (below_workers == nullptr) continue;  // the workers' own subtrees: only for `status`
    }
    roots.push_back(pid);
  }
  bool complete = true;
  auto seen = to_seen(sys::subtree(roots, true, kMaxProcesses, &complete));
  if (below_workers != nullptr && any_worker) {
    // `status`: the same walk, through the workers too, so that each lists
    // what serves under it (a master's children), in the one /proc pass.
    core::TreeSplit split = core::split_by_worker(
        seen, self, [&](pid_t pid) { return policy_.proc_of_pid(pid).has_value(); }, upgrade_check_pid_);
    *below_workers = std::move(split.below);
    seen = std::move(split.outside);
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
