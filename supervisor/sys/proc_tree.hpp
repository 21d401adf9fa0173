// proc_tree.hpp — the processes below preforkd, read from /proc, and two
// signals that cannot hit a stranger.
//
// Owns: one process's facts (/proc/<pid>/stat), a process's direct children,
// a breadth-first walk of a subtree, a signal to a process group only, and a
// signal to a process only while it is still the one that started at a
// given time. The daemon uses them at a worker's exit, at its stop, at
// shutdown and when an orphan is reaped or due: never on a timer (T26).
// Must never: throw, log, or decide which process is whose (core/orphans
// does, from these facts).
//
// Traps: a pid names a process only until it is reaped; once reaped the
// number may be given to anyone (T14). A process is therefore named by its
// pid together with its start time, and a dead worker's group is signalled
// with killpg alone, never with a fallback to its pid (T17, T20).
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace preforkd::sys {

struct ProcessFacts {
  pid_t pid = 0;
  pid_t ppid = 0;
  pid_t pgid = 0;
  pid_t sid = 0;
  char state = 0;           // R S D Z T t X I ... (proc(5))
  uint64_t start_time = 0;  // clock ticks after boot: with the pid, which process it is
  std::string comm;         // the command name (at most 15 bytes, as the kernel keeps it)
};

// /proc/<pid>/stat. 0, or ENOENT/ESRCH when there is no such process (any
// more), EINVAL when the file cannot be parsed.
int read_process(pid_t pid, ProcessFacts& out) noexcept;

// The direct children of `pid`: /proc/<pid>/task/<tid>/children of each of
// its threads (CONFIG_PROC_CHILDREN, as Debian's kernels have it); without
// that file, every /proc/<n>/stat is read for its parent. 0 or an errno.
int children_of(pid_t pid, std::vector<pid_t>& out) noexcept;

// The processes below `roots`, the roots themselves first when
// `include_roots`; breadth first, so a parent comes before its children.
// Zombies (and processes gone meanwhile) are left out; at most `limit`
// processes, so that one walk has a bounded cost. `complete` (when given)
// says whether every directory could be read.
std::vector<ProcessFacts> subtree(const std::vector<pid_t>& roots, bool include_roots, size_t limit,
                                  bool* complete = nullptr);
// For each of `roots`, the processes below it (subtree without the root),
// in one walk of at most `limit` processes in all: what serves under each
// worker, for `status`. A root's own stat is not read.
std::vector<std::vector<ProcessFacts>> subtrees_below(const std::vector<pid_t>& roots, size_t limit,
                                                      bool* complete = nullptr);

// Has some child of ours exited without being reaped yet? (waitid with
// WNOWAIT: it stays a zombie for reap_all.) A scan taken meanwhile may show
// the children of a worker that died a moment ago as ours, before its death
// was reported.
bool child_exited_unreaped() noexcept;

// killpg(pgid, sig), nothing else: no fallback to the leader's pid. 0 or an errno.
int signal_group(pid_t pgid, int sig) noexcept;

// Signals `pid` only if it is still the process that started at
// `start_time` (pidfd_open, then the check, then pidfd_send_signal: the pid
// cannot change hands in between; plain kill after the check where pidfds
// are missing). ESRCH when it is gone or the pid is someone else's now.
int signal_if_same(pid_t pid, uint64_t start_time, int sig) noexcept;

}  // namespace preforkd::sys
