// accept_guard.hpp — how the loop's small servers (the control socket,
// metrics) take connections without dying, spinning or flooding the log.
//
// Owns: the "paused" state of one listening socket, a spare fd kept in
// reserve, and the episodes of trouble it logs.
//
// Out of fds (EMFILE, ENFILE): a failed accept leaves the connection in the
// kernel's queue, and a level-triggered listener would wake the loop at once
// again, for nothing, until fds are freed (nginx's ngx_event_accept pauses
// the listener; libuv's uv__emfile_trick keeps a spare fd). So: the spare fd
// is closed, and the waiting connection is accepted into its number; then
//   - if an fd is free again at once, it is served;
//   - else the owner closes idle clients (`make_room`: see ClientLimit),
//     one fd becomes the spare, and the newcomer is served in their place;
//   - else the newcomer gets `refusal` (best effort) and is closed: a prompt
//     answer and a close, never a hang, and work per connection, never a
//     spin. The spare is opened again.
// Without a spare fd, and on ENOBUFS or ENOMEM, the listener leaves epoll for
// kAcceptPause instead. Errors of one pending connection (ECONNABORTED,
// EPROTO...) skip it.
//
// Logging: an episode (Episode below) is logged when it starts, then once
// with its counts when it is over, never once per failed accept. Other
// failures are logged once per distinct cause (what failed + errno).
// Must never: throw out of the loop, or block.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <set>
#include <string>
#include <utility>

#include "sys/event_loop_fds.hpp"
#include "sys/unique_fd.hpp"

namespace preforkd::daemon {

// One kind of trouble that can recur thousands of times a second (out of
// fds, at a client limit), logged as an episode: the caller logs the first
// occurrence (occur() returns true), and tick() logs one summary with the
// counts once none has occurred for kQuiet ("control: out of file
// descriptors (EMFILE) for 2.1 s: 1234 new connections refused, 12 idle
// connections closed to make room"), and one "so far" line per kReport of
// an episode that goes on. Nothing is logged per occurrence.
class Episode {
 public:
  using Clock = std::chrono::steady_clock;
  using Logger = std::function<void(const std::string&)>;
  static constexpr std::chrono::seconds kQuiet{2};
  static constexpr std::chrono::seconds kReport{60};

  explicit Episode(Logger warn) : warn_(std::move(warn)) {}

  // One occurrence at `now`; `what` names the trouble in the summary (kept
  // from the occurrence that opened the episode). True when it opens one.
  bool occur(Clock::time_point now, const std::string& what);
  bool open() const { return open_; }
  // Counted by the owner while an episode is open.
  uint64_t refused = 0;  // new connections refused
  uint64_t closed = 0;   // idle connections closed to make room

  // Logs the summary of an episode quiet for kQuiet, or the "so far" line
  // of a long one; returns when it wants to be called again (max() when no
  // episode is open: no wake-up).
  Clock::time_point tick(Clock::time_point now);

 private:
  void report(Clock::time_point now, bool over);

  Logger warn_;
  bool open_ = false;
  std::string what_;
  Clock::time_point first_, last_, reported_;
};

// How many clients one server takes at a time: its maximum, lowered while
// preforkd is out of fds so that kFdHeadroom of the fds its clients held
// stay free for the rest of preforkd (a respawn needs pipes; a status
// reply reads /proc); idle clients a server would otherwise keep must not
// starve the supervisor. Back to the maximum once fds have given no
// trouble for a while (the Episode is over) and the crowd has thinned
// below the lowered limit.
class ClientLimit {
 public:
  static constexpr size_t kFdHeadroom = 16;

  explicit ClientLimit(size_t max) : max_(max), value_(max) {}
  size_t value() const { return value_; }
  // Out of fds while `live` clients are connected: at most live - 16 from
  // now on (at least 1), never more than before.
  void lower(size_t live) {
    size_t lowered = live > kFdHeadroom + 1 ? live - kFdHeadroom : 1;
    if (lowered < value_) value_ = lowered;
  }
  void maybe_restore(bool out_of_fds, size_t live) {
    if (value_ < max_ && !out_of_fds && live < value_) value_ = max_;
  }
  // "64 clients", or "27 clients (64 lowered while out of fds)".
  std::string describe(const std::string& noun) const {
    std::string text = std::to_string(value_) + " " + noun;
    if (value_ < max_) text += " (" + std::to_string(max_) + " lowered while out of fds)";
    return text;
  }

 private:
  size_t max_;
  size_t value_;
};

class AcceptGuard {
 public:
  using Clock = std::chrono::steady_clock;
  using Logger = std::function<void(const std::string&)>;
  static constexpr std::chrono::milliseconds kAcceptPause{100};
  // Connections taken per wake-up: a flood cannot keep the loop in here
  // (the listener is level-triggered: the rest wakes the next iteration).
  static constexpr size_t kAcceptBudget = 128;

  // `who` prefixes every message ("control", "metrics"); `warn` may be
  // empty; `refusal` is written to a connection shed for want of fds.
  AcceptGuard(std::string who, Logger warn, std::string refusal = "");

  // Accepts waiting connections of `listen_fd` (registered in `epoll` with
  // data.u64 = its fd) and hands each to `on_client`, until EAGAIN, the
  // budget, or an error that pauses the listener. Out of fds, `make_room`
  // (may be empty) closes idle clients of the owner and returns how many
  // (0: it has none). Does nothing while paused.
  void accept_all(sys::Epoll& epoll, int listen_fd, const std::function<void(sys::UniqueFd)>& on_client,
                  const std::function<size_t()>& make_room = {});

  // Puts a paused listener back into epoll once its pause is over, opens the
  // spare fd again if it could not be, and logs the episode's summary when
  // it is over. Returns when it wants to be called again (max(): never).
  Clock::time_point resume(sys::Epoll& epoll, int listen_fd, Clock::time_point now);
  bool paused() const { return paused_; }
  // An episode of failed accepts is open (out of fds, or memory).
  bool in_trouble() const { return failing_.open(); }

  // "<who>: <what>: <strerror(err)><consequence> (logged once)", the first
  // time this (what, err) pair is seen; nothing after that.
  void warn_once(const std::string& what, int err, const std::string& consequence = "");

 private:
  void pause(sys::Epoll& epoll, int listen_fd, Clock::time_point now);
  // After accept failed with `why` (EMFILE/ENFILE): takes one waiting
  // connection into the spare fd's number and serves or refuses it (above).
  // 0 when one was taken, EAGAIN when none waits, else accept's errno.
  int take_with_spare(int listen_fd, int why, const std::function<void(sys::UniqueFd)>& on_client,
                      const std::function<size_t()>& make_room);
  int reopen_spare();  // 0 when the spare fd is open
  void log(const std::string& message);

  std::string who_;
  Logger warn_;
  std::string refusal_;
  sys::UniqueFd spare_;
  bool paused_ = false;
  Clock::time_point resume_at_ = Clock::time_point::max();
  Episode failing_;
  std::set<std::pair<std::string, int>> logged_;
};

}  // namespace preforkd::daemon
