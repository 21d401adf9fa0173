// event_loop_fds.hpp — thin owners of an epoll instance and a timerfd.
//
// The loop never polls on an interval (T26): epoll_wait blocks without a
// timeout and the single timerfd is armed to the earliest real deadline
// (absolute, CLOCK_MONOTONIC), or disarmed when nothing is due.
#pragma once

#include <sys/epoll.h>

#include <chrono>
#include <cstdint>

#include "sys/unique_fd.hpp"

namespace preforkd::sys {

class Epoll {
 public:
  Epoll();
  // `token` comes back in epoll_event.data.u64. The throwing pair is for
  // start-up (a failure there exits 1); the loop uses the try_ twins, which
  // return 0 or an errno. All four share the fault point "epoll_ctl".
  void add(int fd, uint32_t events, uint64_t token);
  void modify(int fd, uint32_t events, uint64_t token);
  int try_add(int fd, uint32_t events, uint64_t token) noexcept;
  int try_modify(int fd, uint32_t events, uint64_t token) noexcept;
  void remove(int fd) noexcept;  // errors ignored: the fd may already be closed
  // Waits until at least one event (T16: EINTR after SIGSTOP/SIGCONT returns 0 events).
  int wait(epoll_event* events, int max_events, int timeout_ms = -1);

 private:
  int control(int op, int fd, uint32_t events, uint64_t token) noexcept;
  UniqueFd fd_;
};

class TimerFd {
 public:
  TimerFd();
  int fd() const noexcept { return fd_.get(); }
  // Arms to an absolute steady_clock time point (steady_clock is CLOCK_MONOTONIC
  // on Linux/libstdc++), or disarms when `when` is max().
  void arm(std::chrono::steady_clock::time_point when);
  void disarm();
  // Consumes the expiry count so the fd stops being readable.
  void acknowledge() noexcept;

 private:
  UniqueFd fd_;
  std::chrono::steady_clock::time_point armed_ = std::chrono::steady_clock::time_point::max();
};

}  // namespace preforkd::sys
