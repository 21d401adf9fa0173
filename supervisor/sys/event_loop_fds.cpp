#include "sys/event_loop_fds.hpp"

#include <sys/timerfd.h>

#include <cstring>

#include "sys/error.hpp"
#include "sys/fault.hpp"

namespace preforkd::sys {

Epoll::Epoll() : fd_(epoll_create1(EPOLL_CLOEXEC)) {
  if (!fd_) throw_errno("epoll_create1");
}

int Epoll::control(int op, int fd, uint32_t events, uint64_t token) noexcept {
  if (int err = fault::injected("epoll_ctl")) return err;
  epoll_event ev{};
  ev.events = events;
  ev.data.u64 = token;
  return epoll_ctl(fd_.get(), op, fd, &ev) == 0 ? 0 : errno;
}

void Epoll::add(int fd, uint32_t events, uint64_t token) {
  if (int err = control(EPOLL_CTL_ADD, fd, events, token)) throw_errno("epoll_ctl add", err);
}

void Epoll::modify(int fd, uint32_t events, uint64_t token) {
  if (int err = control(EPOLL_CTL_MOD, fd, events, token)) throw_errno("epoll_ctl mod", err);
}

int Epoll::try_add(int fd, uint32_t events, uint64_t token) noexcept {
  return control(EPOLL_CTL_ADD, fd, events, token);
}

int Epoll::try_modify(int fd, uint32_t events, uint64_t token) noexcept {
  return control(EPOLL_CTL_MOD, fd, events, token);
}

void Epoll::remove(int fd) noexcept { epoll_ctl(fd_.get(), EPOLL_CTL_DEL, fd, nullptr); }

int Epoll::wait(epoll_event* events, int max_events, int timeout_ms) {
  int n = epoll_wait(fd_.get(), events, max_events, timeout_ms);
  if (n < 0) {
    if (errno == EINTR) return 0;
    throw_errno("epoll_wait");
  }
  return n;
}

TimerFd::TimerFd() : fd_(timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC)) {
  if (!fd_) throw_errno("timerfd_create");
}

void TimerFd::arm(std::chrono::steady_clock::time_point when) {
  if (when == armed_) return;  // no syscall when the earliest deadline is unchanged
  if (when == std::chrono::steady_clock::time_point::max()) {
    disarm();
    return;
  }
  auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(when.time_since_epoch()).count();
  if (ns <= 0) ns = 1;  // 0 would disarm
  itimerspec its{};
  its.it_value.tv_sec = static_cast<time_t>(ns / 1000000000);
  its.it_value.tv_nsec = static_cast<long>(ns % 1000000000);
  if (timerfd_settime(fd_.get(), TFD_TIMER_ABSTIME, &its, nullptr) != 0) throw_errno("timerfd_settime");
  armed_ = when;
}

void TimerFd::disarm() {
  if (armed_ == std::chrono::steady_clock::time_point::max()) return;
  itimerspec its{};
  if (timerfd_settime(fd_.get(), 0, &its, nullptr) != 0) throw_errno("timerfd_settime");
  armed_ = std::chrono::steady_clock::time_point::max();
}

void TimerFd::acknowledge() noexcept {
  uint64_t expirations = 0;
  (void)!::read(fd_.get(), &expirations, sizeof expirations);
  armed_ = std::chrono::steady_clock::time_point::max();
}

}  // namespace preforkd::sys
