// spawn.hpp — fork + exec of one worker, with the worker contract's fd layout.
//
// Everything the child needs is prepared in the parent (argv/envp arrays,
// the fd map, ids, limits). The child is made with clone(CLONE_VM |
// CLONE_VFORK) on a stack of its own: it runs in preforkd's memory (no page
// tables copied, no copy-on-write faults afterwards) while preforkd sleeps,
// until its execve replaces its memory or it exits. So between clone and
// execve the child makes raw syscalls only: no allocation, no logging, no
// locks, no glibc call that keeps process-wide state (T22); and it reports a
// failure by writing {stage, errno} into the parent's memory before _exit
// (T10). spawn() returns once the child has exec'd or has failed, so a
// returned pid always runs the real program and may be signalled (T10).
// Traps guarded here: T5 (every other fd close-on-exec), T6 (empty mask),
// T7 (default dispositions), T9 (all signals blocked around the clone), T11
// (two-phase fd moves), T12 (LISTEN_PID written in the child), T15
// (PR_SET_PDEATHSIG + getppid check), T17 (setpgid on both sides), T18
// (RLIMIT_NOFILE restored).
#pragma once

#include <sys/resource.h>
#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

namespace preforkd::sys {

struct FdMapping {
  int src;  // a valid fd in the parent
  int dst;  // its number in the worker
};

struct SpawnRequest {
  std::string path;                // absolute executable
  std::vector<std::string> argv;   // argv[0] as configured
  std::vector<std::string> env;    // "NAME=value"
  bool set_listen_pid = false;     // append LISTEN_PID=<the child's own pid> (T12)
  std::vector<FdMapping> fds;      // must cover 0, 1 and 2; every dst distinct
  std::optional<uid_t> uid;        // setuid (after setgroups/setgid)
  std::optional<gid_t> gid;
  std::optional<std::vector<gid_t>> groups;  // setgroups; only as root
  std::optional<mode_t> umask;
  std::string directory;           // chdir when non-empty
  std::vector<std::pair<int, rlimit>> rlimits;  // setrlimit(resource, value)
  std::optional<rlimit> nofile_restore;          // T18: applied before `rlimits`
  int pdeathsig = 15;              // SIGTERM when preforkd dies (T15); 0 = none
};

struct SpawnError {
  enum class Stage { Fork, Setpgid, Pdeathsig, Fds, CloseRange, Umask, Chdir, Rlimit,
                     Groups, Gid, Uid, Signals, Exec };
  Stage stage = Stage::Exec;
  int err = 0;
  // "exec /no/such: No such file or directory", "chdir /srv: Permission denied".
  std::string describe(const SpawnRequest& req) const;
};

struct SpawnResult {
  pid_t pid = -1;                   // > 0 on success
  std::optional<SpawnError> error;  // set on failure (the failed child is already reaped)
};

SpawnResult spawn(const SpawnRequest& req);

}  // namespace preforkd::sys
