// spawn.hpp — fork + exec of one worker, with the worker contract's fd layout.
//
// Everything the child needs is prepared in the parent (argv/envp arrays,
// the fd map, ids, limits). The child is made with clone(CLONE_VM) on a
// stack of its own: it runs in preforkd's memory (no page tables copied, no
// copy-on-write faults afterwards) until its execve replaces its memory or
// it exits. So between clone and execve the child makes raw syscalls only:
// no allocation, no logging, no locks, no libc call at all (T22); and it
// reports a failure by writing {stage, errno} into the parent's memory
// before _exit (T10). spawn() also passes CLONE_VFORK and returns once the
// child has exec'd or failed; spawn_async() returns at once (below).
// Traps guarded here: T5 (every other fd close-on-exec), T6 (empty mask),
// T7 (default dispositions), T9 (all signals blocked around the clone), T11
// (two-phase fd moves), T12 (LISTEN_PID written in the child), T15
// (PR_SET_PDEATHSIG + getppid check), T17 (setpgid on both sides), T18
// (RLIMIT_NOFILE restored).
#pragma once

#include <sys/resource.h>
#include <sys/types.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "sys/unique_fd.hpp"

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

// Waits until the child has exec'd or failed (CLONE_VFORK). For the
// in-place upgrade's check, and where spawn_async() is not available.
SpawnResult spawn(const SpawnRequest& req);

// ---- spawn_async: preforkd does not wait for the child's execve ----
//
// The child is made with clone(CLONE_VM) without CLONE_VFORK: it runs in
// preforkd's memory, on a stack of its own, while preforkd goes on; so N
// children set themselves up and exec in parallel, and a child that waits
// for a CPU never holds up the loop. It makes raw system calls only (not
// even errno is written: preforkd's thread-local storage is shared), and
// everything it reads lives in a StartingChild, which must outlive it there.

inline constexpr size_t kStartingStackSize = 16 * 1024;

// A child of spawn_async() until it has left preforkd's memory: by execve
// (it runs its program: success) or by _exit after a failed step (failure()
// then says which and why).
class StartingChild {
 public:
  ~StartingChild();  // if the child has not left yet: waits up to 1 s for it, else leaks its memory
  StartingChild(const StartingChild&) = delete;
  StartingChild& operator=(const StartingChild&) = delete;

  pid_t pid() const { return pid_; }
  // Readable when the child has left (EOF); watch it in epoll.
  int watch_fd() const { return watch_.get(); }
  // Reads the watch fd without blocking: true once the child has left.
  // Also true after the pid was reaped, which implies it.
  bool left();
  void reaped() { left_ = true; }
  // After left(): set if the child did not reach a successful execve. The
  // failed child has exited or is exiting; it is not reaped here.
  std::optional<SpawnError> failure() const;
  const SpawnRequest& request() const;

  struct State;  // opaque: what the child runs on (spawn.cpp)

 private:
  StartingChild();
  friend struct AsyncSpawnResult spawn_async(SpawnRequest req);
  std::unique_ptr<State> state_;
  pid_t pid_ = -1;
  UniqueFd watch_;
  bool left_ = false;
};

struct AsyncSpawnResult {
  std::unique_ptr<StartingChild> child;  // set when the clone worked
  std::optional<std::string> error;      // else: what failed ("fork: Resource temporarily unavailable")
};

AsyncSpawnResult spawn_async(SpawnRequest req);

// How many spawn_async starts a caller should keep in flight at once: 4 per
// CPU this process may run on, at least 8, at most 64. Every start in flight
// is a runnable process until it has exec'd and set itself up; more of them
// than the CPUs can run only crowd out the caller's own loop (measured: a
// storm of 1000 respawns on 2 CPUs answered `status` in at most 80 ms with
// 8 in flight, 280-320 ms with 64).
size_t starts_in_flight() noexcept;

}  // namespace preforkd::sys
