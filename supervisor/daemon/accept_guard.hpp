// accept_guard.hpp — how the loop's small servers (the control socket,
// metrics) take connections without dying, spinning or flooding the log.
//
// Owns: the "paused" state of one listening socket and the set of failure
// causes already logged. A failed accept leaves the connection in the
// kernel's queue, and a level-triggered listener would wake the loop at once
// again, for nothing, until fds are freed; so on any accept error but EAGAIN
// the listener leaves epoll for kAcceptPause and comes back from resume(),
// which the owner calls from its expire() (nginx's ngx_event_accept does
// the same on EMFILE). Every failure is logged once per distinct cause
// (what failed + errno), never once per occurrence.
// Must never: throw out of the loop, or block.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <set>
#include <string>
#include <utility>

#include "sys/event_loop_fds.hpp"
#include "sys/unique_fd.hpp"

namespace preforkd::daemon {

class AcceptGuard {
 public:
  using Clock = std::chrono::steady_clock;
  using Logger = std::function<void(const std::string&)>;
  static constexpr std::chrono::milliseconds kAcceptPause{100};

  // `who` prefixes every message ("control", "metrics"); `warn` may be empty.
  AcceptGuard(std::string who, Logger warn) : who_(std::move(who)), warn_(std::move(warn)) {}

  // Accepts every waiting connection of `listen_fd` (registered in `epoll`
  // with data.u64 = its fd) and hands each to `on_client`, until EAGAIN or
  // an error, which pauses the listener. Does nothing while paused.
  void accept_all(sys::Epoll& epoll, int listen_fd, const std::function<void(sys::UniqueFd)>& on_client);

  // Puts a paused listener back into epoll once its pause is over. Returns
  // when it wants to be called again (max() when not paused).
  Clock::time_point resume(sys::Epoll& epoll, int listen_fd, Clock::time_point now);
  bool paused() const { return paused_; }

  // "<who>: <what>: <strerror(err)><consequence> (logged once)", the first
  // time this (what, err) pair is seen; nothing after that.
  void warn_once(const std::string& what, int err, const std::string& consequence = "");

 private:
  std::string who_;
  Logger warn_;
  bool paused_ = false;
  Clock::time_point resume_at_ = Clock::time_point::max();
  std::set<std::pair<std::string, int>> logged_;
};

}  // namespace preforkd::daemon
