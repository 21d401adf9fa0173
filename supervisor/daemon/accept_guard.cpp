#include "daemon/accept_guard.hpp"

#include <cerrno>

#include "sys/error.hpp"
#include "sys/io.hpp"

namespace preforkd::daemon {

namespace {

// accept(2), "Error handling": errors of the pending connection itself, not
// of the listener; that connection is gone, the next one may be fine.
bool connection_error(int err) {
  switch (err) {
    case ENETDOWN:
    case EPROTO:
    case ENOPROTOOPT:
    case EHOSTDOWN:
    case ENONET:
    case EHOSTUNREACH:
    case EOPNOTSUPP:
    case ENETUNREACH:
    case EPERM:  // a firewall rule refused it
      return true;
    default:
      return false;
  }
}

}  // namespace

void AcceptGuard::accept_all(sys::Epoll& epoll, int listen_fd,
                             const std::function<void(sys::UniqueFd)>& on_client) {
  if (paused_) return;  // an event collected before the pause
  for (;;) {
    sys::UniqueFd fd;
    int err = sys::accept_client(listen_fd, fd);
    if (err == 0) {
      on_client(std::move(fd));
      continue;
    }
    if (err == EAGAIN) return;
    if (connection_error(err)) {
      warn_once("accept", err);
      continue;
    }
    // EMFILE, ENFILE, ENOBUFS, ENOMEM...: nothing can be accepted for now.
    epoll.remove(listen_fd);
    paused_ = true;
    resume_at_ = Clock::now() + kAcceptPause;
    warn_once("accept", err, ", pausing new connections for " + std::to_string(kAcceptPause.count()) + "ms");
    return;
  }
}

AcceptGuard::Clock::time_point AcceptGuard::resume(sys::Epoll& epoll, int listen_fd, Clock::time_point now) {
  if (!paused_) return Clock::time_point::max();
  if (now < resume_at_) return resume_at_;
  if (int err = epoll.try_add(listen_fd, EPOLLIN, static_cast<uint64_t>(listen_fd))) {
    warn_once("watch the listening socket", err, ", trying again shortly");
    resume_at_ = now + kAcceptPause;
    return resume_at_;
  }
  paused_ = false;
  resume_at_ = Clock::time_point::max();
  return resume_at_;
}

void AcceptGuard::warn_once(const std::string& what, int err, const std::string& consequence) {
  try {
    if (!logged_.emplace(what, err).second) return;
    if (warn_) warn_(sys::errno_message(who_ + ": " + what, err) + consequence + " (logged once)");
  } catch (...) {  // out of memory while reporting: the failure itself is handled
  }
}

}  // namespace preforkd::daemon
