// exit_status.hpp — a decoded wait status (T4: never `status >> 8` by hand).
#pragma once

#include <string>
#include <vector>

namespace preforkd::sys {

class ExitStatus {
 public:
  // From a raw waitpid() status, through the W* macros only.
  static ExitStatus from_wait_status(int status);
  static ExitStatus exited(int code) { return ExitStatus(false, code, false); }
  static ExitStatus killed(int sig, bool core = false) { return ExitStatus(true, sig, core); }

  bool signaled() const noexcept { return signaled_; }
  int exit_code() const noexcept { return signaled_ ? -1 : value_; }
  int signal() const noexcept { return signaled_ ? value_ : 0; }
  bool core_dumped() const noexcept { return core_; }
  bool success() const noexcept { return !signaled_ && value_ == 0; }

  // "exited with status 3", "killed by signal 9 (KILL)", "... (core dumped)".
  std::string to_string() const;

 private:
  ExitStatus(bool signaled, int value, bool core) : signaled_(signaled), value_(value), core_(core) {}
  bool signaled_ = false;
  int value_ = 0;
  bool core_ = false;
};

struct Reaped {
  int pid;
  ExitStatus status;
};

// T2: waitpid(-1, WNOHANG) until nothing is left to reap; SIGCHLD coalesces,
// so this runs every loop iteration, whatever woke the loop. It identifies
// nothing: the caller looks each pid up (T20: unknown pids are orphans).
std::vector<Reaped> reap_all();
// At most `max` of them; `more` tells whether the budget ran out (others
// may be left for the next call).
std::vector<Reaped> reap_some(size_t max, bool& more);

}  // namespace preforkd::sys
