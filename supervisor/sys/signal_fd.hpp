// signal_fd.hpp — the one owner of the process signal mask (T1, T3, T8).
//
// preforkd installs no signal handlers at all: the signals it acts on are
// blocked and read from a signalfd in the event loop. Signals coalesce, so a
// drained signal is a *request*, not a count (T3). SIGPIPE is in the set too
// (T13): writes to a gone peer then fail with EPIPE instead of killing us.
// The mask in force before construction is kept so that children can be given
// an empty mask (T6) — the child does not restore it, it clears it.
#pragma once

#include <signal.h>

#include <vector>

#include "sys/unique_fd.hpp"

namespace preforkd::sys {

class SignalFd {
 public:
  // Blocks `signals` in the calling (only) thread, resets their dispositions
  // to SIG_DFL (an ignored signal never reaches a signalfd) and opens a
  // signalfd for them.
  explicit SignalFd(const std::vector<int>& signals);
  ~SignalFd();
  SignalFd(const SignalFd&) = delete;
  SignalFd& operator=(const SignalFd&) = delete;

  int fd() const noexcept { return fd_.get(); }

  // Reads every pending signal without blocking; each signal number once.
  std::vector<int> drain();

 private:
  UniqueFd fd_;
  sigset_t set_{};
  sigset_t old_mask_{};
};

}  // namespace preforkd::sys
