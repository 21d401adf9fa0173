#include "core/orphans.hpp"

#include <algorithm>
#include <csignal>
#include <set>

namespace preforkd::core {

OrphanPolicy OrphanPolicy::from(const config::Program& p) {
  OrphanPolicy o;
  o.keep = p.orphans == config::OrphanMode::Keep;
  o.stop_signal = p.stop_signal;
  o.stop_timeout = p.stop_timeout;
  return o;
}

const char* to_string(OrphanState s) {
  switch (s) {
    case OrphanState::Kept: return "kept";
    case OrphanState::Stopping: return "stopping";
    case OrphanState::Killing: return "killing";
  }
  return "?";
}

std::optional<OrphanState> orphan_state_from(std::string_view name) {
  for (auto s : {OrphanState::Kept, OrphanState::Stopping, OrphanState::Killing})
    if (name == to_string(s)) return s;
  return std::nullopt;
}

Action signal_orphan_action(pid_t pid, uint64_t start_time, int sig) {
  Action a;
  a.kind = Action::Kind::SignalOrphan;
  a.pid = pid;
  a.start_time = start_time;
  a.signal = sig;
  return a;
}

namespace {

OrphanOrigin unknown_origin() {
  OrphanOrigin o;
  o.tag = "preforkd";
  return o;  // TERM, then SIGKILL after kUnknownOrphanTimeout
}

}  // namespace

std::string Orphans::who(const Orphan& o) const {
  return o.origin.tag + ": orphan pid " + std::to_string(o.pid) + " (" + o.comm + ")";
}

// ---- events ----

void Orphans::worker_exited(OrphanOrigin worker) {
  departed_.push_back(Departed{std::move(worker), false});
  scan_due_ = true;
}

void Orphans::reaped(pid_t pid, const std::string& how, TimePoint, Actions& out) {
  scan_due_ = true;  // what it had below it has landed on preforkd now
  auto it = std::find_if(list_.begin(), list_.end(), [&](const Orphan& o) { return o.pid == pid; });
  if (it == list_.end()) {
    // T20: never taken for a worker. One the scans never saw: it ended at once.
    out.push_back(log_action(LogLevel::Debug, "preforkd: reaped orphan pid " + std::to_string(pid) + " (" + how + ")"));
    return;
  }
  // A child of ours: its zombie held the pid until now, so it is this one.
  out.push_back(log_action(LogLevel::Debug, who(*it) + ": reaped, " + how));
  list_.erase(it);
}

void Orphans::worker_descendants(const OrphanOrigin& worker, const std::vector<ProcessSeen>& below) {
  for (const auto& p : below) known_[p.pid] = Known{p.start_time, worker};
}

void Orphans::processes_seen(const std::vector<ProcessSeen>& procs, bool ok, bool settled,
                             const std::function<bool(pid_t)>& live_worker, const OrphanOrigin* sole, TimePoint now,
                             Actions& out) {
  // 1. What remains of the process groups of the workers that exited gets
  //    their stop signal, once, and only if something of it is still there:
  //    an empty group's number is free again, and may lead someone else's
  //    group by now (T14).
  std::set<pid_t> group_signalled;
  for (auto& dep : departed_) {
    const OrphanOrigin& d = dep.worker;
    if (dep.group_signalled) {
      group_signalled.insert(d.left_by);
      continue;
    }
    if ((d.policy.keep && !shutting_down_) || d.left_by <= 1 || live_worker(d.left_by)) continue;
    bool remains = !ok || std::any_of(procs.begin(), procs.end(), [&](const ProcessSeen& p) {
                     return p.pgid == d.left_by;
                   });
    if (!remains) continue;
    Action a;
    a.kind = Action::Kind::SignalGroup;
    a.pid = d.left_by;
    a.signal = forced_ ? SIGKILL : d.policy.stop_signal;
    out.push_back(std::move(a));
    group_signalled.insert(d.left_by);
    dep.group_signalled = true;
  }

  // 2. Known orphans that are no longer there (only a full scan can tell).
  if (ok) {
    auto gone = [&](const Orphan& o) {
      return std::none_of(procs.begin(), procs.end(), [&](const ProcessSeen& p) {
        return p.pid == o.pid && p.start_time == o.start_time;
      });
    };
    for (auto it = list_.begin(); it != list_.end();) {
      if (gone(*it)) {
        out.push_back(log_action(LogLevel::Debug, who(*it) + ": gone"));
        it = list_.erase(it);
      } else {
        ++it;
      }
    }
  }

  // 3. New ones, parents before children (the scan's order).
  std::set<pid_t> theirs;  // a live worker's: in its group, or below such a process
  std::map<pid_t, uint64_t> deferred;
  for (const auto& p : procs) {
    if (live_worker(p.pgid) || theirs.count(p.ppid) != 0) {
      theirs.insert(p.pid);
      continue;
    }
    auto same = [&](const Orphan& o) { return o.pid == p.pid && o.start_time == p.start_time; };
    if (std::any_of(list_.begin(), list_.end(), same)) continue;
    OrphanOrigin origin;
    auto known = known_.find(p.pid);
    auto departed = std::find_if(departed_.begin(), departed_.end(),
                                 [&](const Departed& d) { return d.worker.left_by == p.pgid; });
    auto parent = std::find_if(list_.begin(), list_.end(), [&](const Orphan& o) { return o.pid == p.ppid; });
    if (known != known_.end() && known->second.start_time == p.start_time) {
      origin = known->second.origin;  // recorded at its worker's stop
    } else if (departed != departed_.end()) {
      origin = departed->worker;  // what remains of the group of a worker that just exited
    } else if (parent != list_.end()) {
      origin = parent->origin;
    } else if (!settled && !(deferred_.count(p.pid) != 0 && deferred_[p.pid] == p.start_time)) {
      // Perhaps a child of a worker whose death is not reaped yet: the
      // next scan (after that reap) knows better. Once only, so that a
      // constant churn of exits cannot keep it waiting.
      deferred[p.pid] = p.start_time;
      theirs.insert(p.pid);  // and what is below it waits with it
      continue;
    } else if (!departed_.empty() &&
               std::all_of(departed_.begin(), departed_.end(), [&](const Departed& d) {
                 return d.worker.program == departed_.front().worker.program;
               })) {
      // It landed when these workers exited: theirs, though which one is
      // only certain when there is one.
      origin = departed_.front().worker;
      if (departed_.size() > 1) {
        origin.tag = origin.program;
        origin.left_by = 0;
      }
    } else if (sole != nullptr) {
      // It landed while its worker still ran (a double fork and setsid
      // whose middle process ended): with one program, it is that one's.
      origin = *sole;
    } else {
      origin = unknown_origin();
    }
    adopt(p, origin, group_signalled.count(p.pgid) != 0, now, out);
  }

  // 4. Descendants recorded at a stop matter only while their worker lives:
  //    once it has exited, this scan has found all that was left of it.
  for (auto it = known_.begin(); it != known_.end();)
    it = live_worker(it->second.origin.left_by) ? std::next(it) : known_.erase(it);
  // The workers that exited stay the candidates until a settled scan (the
  // one after the pending reap) has looked at what they left.
  if (settled) departed_.clear();
  deferred_ = std::move(deferred);
}

void Orphans::adopt(const ProcessSeen& p, const OrphanOrigin& origin, bool signalled, TimePoint now,
                    Actions& out) {
  Orphan o;
  o.pid = p.pid;
  o.start_time = p.start_time;
  o.comm = p.comm;
  o.origin = origin;
  o.since = now;
  std::string what;
  if (forced_) {
    o.state = OrphanState::Killing;
    o.deadline = now + kRekillInterval;
    if (!signalled) out.push_back(signal_orphan_action(o.pid, o.start_time, SIGKILL));
    what = "killing it";
  } else if (origin.policy.keep && !shutting_down_) {
    o.state = OrphanState::Kept;
    what = "kept (orphans: keep)";
  } else {
    // A member of an exited worker's group already had the signal (killpg).
    o.state = OrphanState::Stopping;
    o.deadline = now + origin.policy.stop_timeout;
    if (!signalled) out.push_back(signal_orphan_action(o.pid, o.start_time, origin.policy.stop_signal));
    what = "stopping it";
  }
  if (!origin.program.empty()) ++totals_[origin.program];
  std::string from = origin.left_by > 0       ? " left by pid " + std::to_string(origin.left_by)
                     : origin.program.empty() ? std::string(" of unknown origin")
                                              : std::string();
  out.push_back(log_action(LogLevel::Info, who(o) + from + ": " + what));
  list_.push_back(std::move(o));
}

void Orphans::send_stop(Orphan& o, TimePoint now, Actions& out) {
  o.state = OrphanState::Stopping;
  o.deadline = now + o.origin.policy.stop_timeout;
  out.push_back(signal_orphan_action(o.pid, o.start_time, o.origin.policy.stop_signal));
}

void Orphans::send_kill(Orphan& o, TimePoint now, Actions& out) {
  o.state = OrphanState::Killing;
  o.deadline = now + kRekillInterval;
  out.push_back(signal_orphan_action(o.pid, o.start_time, SIGKILL));
}

// ---- shutdown ----

void Orphans::shutdown(bool fast, TimePoint now, Actions& out) {
  shutting_down_ = true;
  scan_due_ = true;  // those that landed while their worker still ran, too
  if (fast) return force(now, out);
  for (auto& o : list_) {
    if (o.state != OrphanState::Kept) continue;
    out.push_back(log_action(LogLevel::Info, who(o) + ": stopping it (shutdown)"));
    send_stop(o, now, out);
  }
}

void Orphans::force(TimePoint now, Actions& out) {
  shutting_down_ = forced_ = true;
  scan_due_ = true;
  for (auto& o : list_)
    if (o.state != OrphanState::Killing) send_kill(o, now, out);
}

void Orphans::tick(TimePoint now, Actions& out) {
  for (auto& o : list_) {
    if (o.deadline > now) continue;
    if (o.state == OrphanState::Stopping)
      out.push_back(log_action(LogLevel::Warn, who(o) + ": still running after stop_timeout, sending SIGKILL"));
    else
      out.push_back(log_action(LogLevel::Warn, who(o) + ": still not gone after SIGKILL"));
    send_kill(o, now, out);
    scan_due_ = true;  // whether it is still there, the next scan tells
  }
  if (!scan_due_) return;
  scan_due_ = false;
  Action a;
  a.kind = Action::Kind::ScanOrphans;
  out.push_back(std::move(a));
}

// ---- queries ----

TimePoint Orphans::next_deadline() const {
  TimePoint t = kNever;
  for (const auto& o : list_) t = std::min(t, o.deadline);
  return t;
}

void Orphans::restore(std::vector<Orphan> list, std::map<std::string, uint64_t> totals) {
  list_ = std::move(list);
  totals_ = std::move(totals);
}

}  // namespace preforkd::core
