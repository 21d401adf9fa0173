// action.hpp — what the policy decides, as plain values the daemon carries out.
//
// core::Policy never touches an fd, a pid or the clock: every event comes in
// with `now`, and every decision comes out as an Action appended to a list.
// The daemon applies the list in order (daemon/daemon.cpp, apply()); some
// actions are answered by a new event (Spawn → Policy::spawned or
// spawn_failed, MeasureMemory → Policy::memory_measured, BeginReload →
// Policy::commit_reload or reload_failed, ScanOrphans →
// Policy::processes_seen, WalkWorker → Policy::worker_descendants). Plain struct rather than a
// variant: unit tests compare fields directly.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

namespace preforkd::core {

// A program as long as preforkd runs it (a program removed by a reload and
// added again by a later one gets a new id).
using ProgramId = uint32_t;
// One process preforkd started, for preforkd's lifetime. It stays the same
// when the process leaves its slot to a successor (a retiree), so the
// daemon's pipes and fds are keyed by it and never move (no pointer patching).
using ProcId = uint64_t;
// A control-socket client waiting for an answer.
using ClientId = uint64_t;

enum class LogLevel { Debug, Info, Warn, Error };

struct Action {
  enum class Kind {
    Spawn,          // program, slot, proc, generation: start a worker (answered by spawned/spawn_failed)
    Signal,         // pid, signal, group: kill(-pid) when group (T17), else kill(pid)
    ReleaseSlot,    // program, slot: the slot is gone; drop what preforkd holds for it (reuseport sockets)
    MeasureMemory,  // program, proc, pid: read the worker's RSS (answered by memory_measured)
    MeasureLoad,    // program: read its listeners' accept queues (answered by load_measured); autoscaling only
    BeginReload,    // clients: read and prepare the file (answered by commit_reload/reload_failed)
    Reply,          // client, ok, text: the answer to a control request
    Log,            // level, text
    NotifySystemd,  // text: READY=1, RELOADING=1, STOPPING=1
    ProgramGone,    // program: removed by a reload and its last process reaped
    // The process tree (core/orphans.hpp):
    ScanOrphans,    // read the processes below preforkd that are not workers (answered by processes_seen)
    WalkWorker,     // pid: read the descendants of this worker before it is told to stop (answered by worker_descendants)
    SignalOrphan,   // pid, start_time, signal: only if the pid is still that process (T14)
    SignalGroup,    // pid, signal: killpg(pid) alone, never the pid itself (the leader is reaped, T17)
  };
  Kind kind = Kind::Log;
  ProgramId program = 0;
  int slot = -1;
  ProcId proc = 0;
  pid_t pid = 0;
  int signal = 0;
  bool group = false;
  uint64_t start_time = 0;  // SignalOrphan: with the pid, which process it is
  uint64_t generation = 0;
  ClientId client = 0;
  std::vector<ClientId> clients;
  bool ok = false;
  LogLevel level = LogLevel::Info;
  std::string text;
};

using Actions = std::vector<Action>;

// Builders, so that call sites read as sentences.
inline Action log_action(LogLevel level, std::string text) {
  Action a;
  a.kind = Action::Kind::Log;
  a.level = level;
  a.text = std::move(text);
  return a;
}
inline Action reply_action(ClientId client, bool ok, std::string text) {
  Action a;
  a.kind = Action::Kind::Reply;
  a.client = client;
  a.ok = ok;
  a.text = std::move(text);
  return a;
}
inline Action signal_action(pid_t pid, int sig, bool group) {
  Action a;
  a.kind = Action::Kind::Signal;
  a.pid = pid;
  a.signal = sig;
  a.group = group;
  return a;
}
inline Action systemd_action(std::string text) {
  Action a;
  a.kind = Action::Kind::NotifySystemd;
  a.text = std::move(text);
  return a;
}

}  // namespace preforkd::core
