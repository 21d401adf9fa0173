// systemd.hpp — what preforkd takes from and tells systemd: the service
// notify socket (Type=notify) and socket activation, over libsystemd.
//
// Owns: the sockets systemd passed at start-up (LISTEN_FDS), until the daemon
// takes them for its `listen` entries or closes them as unused.
// Must never: block the loop or throw on a notify (systemd is a bystander:
// preforkd works the same without it), or let a worker inherit systemd's
// variables or fds (T5: the LISTEN_* variables are unset, the fds CLOEXEC).
//
// One datagram per notification, on a socket opened and closed for it, as
// sd_notify(3) does, but non-blocking: sd_notify blocks when the receiver's
// queue (net.unix.max_dgram_qlen, 10 by default) is full, which systemd's
// event loop never lets happen but a receiver that stops reading does (the
// tests' stand-in for systemd did, and the loop stalled in a shutdown).
// preforkd sends a handful per state change, never one per worker notify
// line; what a full queue drops is only ever superseded by a later STATUS=.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "config/config.hpp"
#include "sys/unique_fd.hpp"

namespace preforkd::sys {

// Sends `state` ("READY=1\nSTATUS=...") to the service manager, as
// sd_notify(3) does, but never blocks: if the manager's queue is full the
// message is dropped. A no-op when NOTIFY_SOCKET is unset; never throws.
void notify_systemd(const std::string& state) noexcept;

// True when NOTIFY_SOCKET is set, i.e. notify_systemd() goes somewhere (so
// that callers can skip building STATUS= texts nobody reads).
bool systemd_notify_enabled() noexcept;

// The listening sockets systemd passed by socket activation
// (sd_listen_fds_with_names(3)): fds 3.. with LISTEN_FDS, LISTEN_PID equal to
// our pid and optionally LISTEN_FDNAMES.
class ActivatedSockets {
 public:
  ActivatedSockets() = default;
  ActivatedSockets(ActivatedSockets&&) = default;
  ActivatedSockets& operator=(ActivatedSockets&&) = default;

  // Reads and unsets LISTEN_FDS/LISTEN_PID/LISTEN_FDNAMES and marks the
  // passed fds CLOEXEC. Empty when preforkd was not socket-activated.
  // Throws SysError when the variables are malformed.
  static ActivatedSockets from_environment();

  bool empty() const { return passed_.empty(); }

  // The passed socket for `a`, if there is one: the first not yet taken whose
  // LISTEN_FDNAMES name equals a.name (preferring one that is also bound to
  // a's address), else one bound to a's address (getsockname; for sockets
  // without a name). It is set to blocking mode, as preforkd's own sockets
  // are (T19). Throws SysError if that fd is not a listening stream socket.
  std::optional<UniqueFd> take(const config::ListenAddress& a);

  // True if take(a) returned a socket: systemd owns it, and preforkd must
  // not unlink its Unix socket file.
  bool provided(const config::ListenAddress& a) const;

  // Closes every passed socket that no entry took; returns one description
  // of each ("fd 4 (name \"extra\", 127.0.0.1:9000)") for a warning.
  std::vector<std::string> close_unused();

 private:
  struct Passed {
    UniqueFd fd;
    std::string name;     // LISTEN_FDNAMES entry, "unknown" when systemd gave none
    std::string address;  // local_address(): "127.0.0.1:7000", "[::1]:7000", "unix:/path"
  };
  std::vector<Passed> passed_;  // taken ones have an empty fd
  std::vector<config::ListenAddress> taken_;
};

}  // namespace preforkd::sys
