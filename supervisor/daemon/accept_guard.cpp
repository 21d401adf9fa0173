#include "daemon/accept_guard.hpp"

#include <fmt/format.h>

#include <algorithm>
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

bool out_of_fds(int err) { return err == EMFILE || err == ENFILE; }

const char kSummaryFollows[] = " (one summary when it is over)";

// The trouble's name in an episode's summary.
std::string trouble(int err) {
  switch (err) {
    case EMFILE: return "out of file descriptors (EMFILE)";
    case ENFILE: return "the system is out of file descriptors (ENFILE)";
    case ENOBUFS: return "accept failing (ENOBUFS)";
    case ENOMEM: return "accept failing (ENOMEM)";
    default: return "accept failing (errno " + std::to_string(err) + ")";
  }
}

}  // namespace

// ---- Episode ----

bool Episode::occur(Clock::time_point now, const std::string& what) {
  last_ = now;
  if (open_) return false;
  open_ = true;
  what_ = what;
  first_ = reported_ = now;
  refused = closed = 0;
  return true;
}

Episode::Clock::time_point Episode::tick(Clock::time_point now) {
  if (!open_) return Clock::time_point::max();
  if (now - last_ >= kQuiet) {
    report(now, true);
    open_ = false;
    return Clock::time_point::max();
  }
  if (now - reported_ >= kReport) report(now, false);
  return std::min(last_ + kQuiet, reported_ + kReport);
}

void Episode::report(Clock::time_point now, bool over) {
  reported_ = now;
  if (!warn_) return;
  try {
    double seconds = std::chrono::duration<double>((over ? last_ : now) - first_).count();
    warn_(fmt::format("{} for {:.1f} s{}: {} new connection{} refused, {} idle connection{} closed to make room",
                      what_, seconds, over ? "" : " so far", refused, refused == 1 ? "" : "s", closed,
                      closed == 1 ? "" : "s"));
  } catch (...) {  // out of memory while reporting: the trouble itself is handled
  }
}

// ---- AcceptGuard ----

AcceptGuard::AcceptGuard(std::string who, Logger warn, std::string refusal)
    : who_(std::move(who)), warn_(std::move(warn)), refusal_(std::move(refusal)), failing_(warn_) {
  if (int err = reopen_spare())
    warn_once("open a spare fd", err, ", out of fds new connections will wait instead of being answered");
}

void AcceptGuard::accept_all(sys::Epoll& epoll, int listen_fd, const std::function<void(sys::UniqueFd)>& on_client,
                             const std::function<size_t()>& make_room) {
  if (paused_) return;  // an event collected before the pause
  for (size_t taken = 0; taken < kAcceptBudget; ++taken) {
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
    if (out_of_fds(err) && spare_) {
      err = take_with_spare(listen_fd, err, on_client, make_room);
      if (err == 0) continue;  // served or refused: either way, off the queue
      if (err == EAGAIN) return;
    }
    // No spare fd, or memory: nothing can be taken for now, and the waiting
    // connection would wake the loop again at once.
    auto now = Clock::now();
    if (failing_.occur(now, who_ + ": " + trouble(err)))
      log(sys::errno_message(who_ + ": accept", err) + ": pausing new connections while it lasts" + kSummaryFollows);
    pause(epoll, listen_fd, now);
    return;
  }
}

// accept() checks for a free fd before it looks at the queue, so EMFILE says
// nothing about whether anyone waits; the spare fd's number answers that.
int AcceptGuard::take_with_spare(int listen_fd, int why, const std::function<void(sys::UniqueFd)>& on_client,
                                 const std::function<size_t()>& make_room) {
  spare_.reset();
  sys::UniqueFd fd;
  int err = sys::accept_client(listen_fd, fd);
  if (err != 0) {  // EAGAIN: nobody waits; we are merely at the limit
    reopen_spare();
    return err;
  }
  if (reopen_spare() == 0) {  // an fd was free again (ENFILE is system-wide)
    warn_once("accept", why, ", but an fd was free again at once");
    on_client(std::move(fd));
    return 0;
  }
  if (failing_.occur(Clock::now(), who_ + ": " + trouble(why)))
    log(sys::errno_message(who_ + ": accept", why) +
        ": closing idle connections to make room, else refusing new ones, while it lasts" + kSummaryFollows);
  // One fd the owner frees becomes the spare; the newcomer keeps the spare's.
  if (size_t closed = make_room ? make_room() : 0) {
    failing_.closed += closed;
    reopen_spare();
    on_client(std::move(fd));
    return 0;
  }
  ++failing_.refused;
  // What the client sent is read first: closing a TCP socket with unread
  // input resets it, and a reset may eat the refusal.
  char buf[4096];
  (void)sys::read_some(fd.get(), buf, sizeof buf);
  if (!refusal_.empty()) (void)sys::send_some(fd.get(), refusal_.data(), refusal_.size());  // T13
  fd.reset();
  reopen_spare();
  return 0;
}

int AcceptGuard::reopen_spare() {
  if (spare_) return 0;
  return sys::open_spare_fd(spare_);
}

void AcceptGuard::pause(sys::Epoll& epoll, int listen_fd, Clock::time_point now) {
  epoll.remove(listen_fd);
  paused_ = true;
  resume_at_ = now + kAcceptPause;
}

AcceptGuard::Clock::time_point AcceptGuard::resume(sys::Epoll& epoll, int listen_fd, Clock::time_point now) {
  auto next = failing_.tick(now);
  if (reopen_spare() != 0 && failing_.open())
    next = std::min(next, now + kAcceptPause);  // only while it matters: no wake-up otherwise
  if (!paused_) return next;
  if (now < resume_at_) return std::min(next, resume_at_);
  if (int err = epoll.try_add(listen_fd, EPOLLIN, static_cast<uint64_t>(listen_fd))) {
    warn_once("watch the listening socket", err, ", trying again shortly");
    resume_at_ = now + kAcceptPause;
    return std::min(next, resume_at_);
  }
  paused_ = false;
  resume_at_ = Clock::time_point::max();
  return next;
}

void AcceptGuard::log(const std::string& message) {
  try {
    if (warn_) warn_(message);
  } catch (...) {  // out of memory while reporting: the failure itself is handled
  }
}

void AcceptGuard::warn_once(const std::string& what, int err, const std::string& consequence) {
  try {
    if (!logged_.emplace(what, err).second) return;
    if (warn_) warn_(sys::errno_message(who_ + ": " + what, err) + consequence + " (logged once)");
  } catch (...) {  // out of memory while reporting: the failure itself is handled
  }
}

}  // namespace preforkd::daemon
