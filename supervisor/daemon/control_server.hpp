// control_server.hpp — the control socket's transport, inside the one loop.
//
// Owns: the listening Unix socket (mode 0660), its clients, their bounded
// input and output buffers, the SO_PEERCRED check and their deadlines.
// It speaks lines: every complete request line goes to the daemon through
// `on_request`; the daemon answers with `reply()`, now or later (restart,
// scale, stop reply when their operation has finished). Must never: block
// (every fd is non-blocking), let one client hold memory or the loop, or
// let idle or slow clients lock preforkctl out:
//   - a line over 64 KiB, or more than 16 requests queued behind the one
//     being served, is refused: nothing queued is carried out (not even the
//     requests before the one over the limit), nothing more is read, and
//     the connection closes after the error reply, the last thing the
//     client hears (a request already running is answered before it);
//   - a client gets 10 s from connecting (or from its last reply being
//     written) to send a complete request: a deadline, not a silence timer,
//     so a byte every 100 ms buys nothing; and 10 s to read a reply;
//     waiting for a reply (a reload) has no limit;
//   - more than 16 MiB of unread replies ends the client;
//   - at 64 clients a newcomer closes the oldest idle one (no request
//     pending or queued, no reply unwritten) and takes its place; only when
//     none is idle is the newcomer refused;
//   - out of fds, the limit is lowered to leave 16 of the fds clients held
//     free for the rest of preforkd (ClientLimit) and idle clients make
//     room down to it; with none idle the newcomer is refused at once with
//     an error line (AcceptGuard). The limit comes back when fds do.
// Being at the limit and being out of fds are logged once per episode with
// counts (Episode), never once per connection. A client that cannot be
// watched (epoll_ctl fails) is dropped alone.
//
// Who may talk (SO_PEERCRED, checked once at accept): root, preforkd's own
// effective uid, or a process that has `control_group` among its primary or
// supplementary groups. The groups are those of the connecting process, read
// from /proc/<pid>/status (never an NSS lookup: that may block the loop on a
// network directory), and only while that pid still runs as the uid that
// connected (a reused pid proves nothing).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <string>

#include "core/line_buffer.hpp"
#include "daemon/accept_guard.hpp"
#include "sys/event_loop_fds.hpp"
#include "sys/io.hpp"
#include "sys/unique_fd.hpp"

namespace preforkd::daemon {

class ControlServer {
 public:
  using ClientId = uint64_t;
  using Clock = std::chrono::steady_clock;
  // (client, request line) — called for one line at a time, in order; a
  // client's next line is held until its previous request has been answered.
  using RequestHandler = std::function<void(ClientId, const std::string&)>;
  using Logger = std::function<void(const std::string&)>;

  static constexpr size_t kMaxLine = 64 * 1024;
  static constexpr size_t kMaxPendingOut = 16 * 1024 * 1024;
  static constexpr size_t kMaxClients = 64;
  static constexpr size_t kMaxQueuedLines = 16;
  // From accept (or from the last reply written) to a complete request, and
  // from a reply queued to its last byte read by the client.
  static constexpr std::chrono::seconds kRequestTimeout{10};

  // Binds `path` (a stale socket file is replaced, a live one is an error:
  // "another preforkd is running"), mode 0660, group `gid` when given.
  // Throws sys::SysError.
  ControlServer(const std::string& path, std::optional<gid_t> gid, RequestHandler on_request,
                Logger warn);
  // The in-place upgrade: the listening socket the previous binary served.
  ControlServer(sys::UniqueFd adopted, const std::string& path, std::optional<gid_t> gid,
                RequestHandler on_request, Logger warn);
  ~ControlServer();

  int listen_fd() const { return listen_.get(); }
  const std::string& path() const { return path_; }
  // Which fds belong to clients (for the daemon's epoll dispatch).
  bool owns(int fd) const { return by_fd_.count(fd) > 0; }

  // Wires the listening socket into `epoll` (data.u64 = fd).
  void attach(sys::Epoll& epoll);
  void on_listen_readable();
  void on_client_event(int fd, uint32_t events);
  // Queues one reply line for `client` (dropped if it is gone). With
  // `close_after`, the connection ends once the reply is written.
  void reply(ClientId client, const std::string& json_line, bool close_after = false);
  bool connected(ClientId client) const { return clients_.count(client) > 0; }

  // At exit: writes what can be written of every queued reply (non-blocking).
  void flush_all();

  // Clients past their deadline are closed, clients that failed are
  // dropped, a paused listener is resumed, an episode over is logged;
  // returns the next deadline. The daemon calls it every loop iteration
  // (after the events of one epoll_wait) and arms its timer to the result.
  Clock::time_point expire(Clock::time_point now);

 private:
  struct Client {
    ClientId id = 0;
    sys::UniqueFd fd;
    uid_t uid = 0;
    pid_t pid = 0;
    bool allowed = false;
    bool denied = false;    // the permission refusal has been sent
    bool refused = false;   // too long / too many: its error reply is the last word
    std::string refusal;    // that reply, while a request handed over before it runs
    bool fresh = true;      // accepted during this batch of events (see on_client_event)
    core::LineBuffer in{kMaxLine, core::LineBuffer::Overflow::Discard};
    std::deque<std::string> lines;  // received, not yet handed over (one request at a time)
    bool pending = false;           // a request awaits its reply
    std::string out;
    bool close_after_flush = false;
    Clock::time_point deadline;     // for the request being sent, or the reply being read
  };

  bool peer_allowed(const sys::PeerCredentials& cred) const;
  void on_accepted(sys::UniqueFd fd);
  // Reads what the client sent (bounded per call); false if it was dropped.
  bool read_input(Client& c);
  void refuse(Client& c, const char* json_line);
  // Closes the oldest client with nothing pending, queued or unwritten.
  bool close_oldest_idle();
  // Out of fds: lowers limit_ and closes idle clients down to it.
  size_t make_room_for_fds();
  void dispatch(Client& c);
  void flush(Client& c);
  void update_events(Client& c);
  void drop(ClientId id);
  void close_fd(Client& c);

  std::string path_;
  std::optional<gid_t> gid_;
  sys::UniqueFd listen_;
  sys::Epoll* epoll_ = nullptr;
  RequestHandler on_request_;
  Logger warn_;
  AcceptGuard guard_;
  ClientLimit limit_{kMaxClients};
  Episode crowded_;  // at limit_
  ClientId next_id_ = 1;
  std::map<ClientId, Client> clients_;
  std::map<int, ClientId> by_fd_;
};

}  // namespace preforkd::daemon
