// metrics_http.hpp — GET /metrics (Prometheus text 0.0.4), and the health
// endpoints GET /healthz and GET /readyz, inside the loop.
//
// Owns: the metrics listening socket and its short-lived connections. One
// request per connection, answered then closed. Must never: block, or let
// clients hold resources or lock scrapers out: a request head over 8 KiB
// gets 431; a connection has 5 s from accept to be done (request, response,
// close), however it trickles; at 32 connections a newcomer closes the
// oldest idle one (no whole request yet, or its response already sent) and
// takes its place, and only when none is idle is it refused (503); out of
// fds, the limit is lowered to leave 16 fds free for the rest of preforkd
// (ClientLimit), idle connections make room down to it, else 503 at once
// (AcceptGuard). Being at the limit and being out of fds are logged once
// per episode with counts, never once per connection. Anything but
// GET/HEAD is 405; any path but /metrics, /healthz and /readyz is 404.
// /healthz is 200 whenever the loop answers; /readyz is 200 or 503 as
// `readiness` says (core::readiness), with its reason as the body.
// A client that cannot be watched (epoll_ctl fails) is dropped alone.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <utility>

#include "daemon/accept_guard.hpp"
#include "sys/event_loop_fds.hpp"
#include "sys/listen_socket.hpp"
#include "sys/unique_fd.hpp"

namespace preforkd::daemon {

class MetricsHttp {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr size_t kMaxHead = 8 * 1024;
  static constexpr size_t kMaxClients = 32;
  static constexpr std::chrono::seconds kTimeout{5};

  using Logger = AcceptGuard::Logger;

  // What the paths answer, produced on demand.
  struct Pages {
    std::function<std::string()> metrics;                     // GET /metrics: the text
    std::function<std::pair<bool, std::string>()> readiness;  // GET /readyz: ready?, and why
  };

  // Binds `spec` (throws sys::SysError); `warn` gets the (once per cause)
  // failures.
  MetricsHttp(const sys::ListenSpec& spec, Pages pages, Logger warn = {});
  // The in-place upgrade: the listening socket the previous binary served.
  MetricsHttp(sys::UniqueFd adopted, Pages pages, Logger warn = {});
  void attach(sys::Epoll& epoll);
  int listen_fd() const { return listen_.get(); }
  const std::string& bound() const { return bound_; }
  bool owns(int fd) const { return clients_.count(fd) > 0; }
  void on_listen_readable();
  void on_client_event(int fd, uint32_t events);
  // Cuts off slow clients, resumes a paused listener and logs an episode
  // that is over; returns the next deadline (called every loop iteration,
  // after the events of one epoll_wait, like ControlServer::expire).
  Clock::time_point expire(Clock::time_point now);

  // Pure: the response to one request head (exposed for tests).
  static std::string respond(const std::string& head, const Pages& pages);

 private:
  struct Client {
    sys::UniqueFd fd;
    uint64_t seq = 0;  // accept order: the oldest idle one makes room first
    std::string in;
    std::string out;
    bool answered = false;
    bool lingering = false;  // response written, draining input until EOF
    bool fresh = true;       // accepted during this batch of events (see on_client_event)
    Clock::time_point deadline;
  };
  void on_accepted(sys::UniqueFd fd);
  void read_request(int fd, Client& c);
  // Closes the oldest connection with no whole request yet or its response
  // sent; false when every one is being answered.
  bool close_oldest_idle();
  // Out of fds: lowers limit_ and closes idle connections down to it.
  size_t make_room_for_fds();
  bool answer(Client& c, std::string response);  // false: the client was dropped
  void flush(int fd, Client& c);
  void drop(int fd);

  sys::UniqueFd listen_;
  std::string bound_;
  Pages pages_;
  sys::Epoll* epoll_ = nullptr;
  Logger warn_;
  AcceptGuard guard_;
  ClientLimit limit_{kMaxClients};
  Episode crowded_;  // at limit_
  uint64_t next_seq_ = 1;
  std::map<int, Client> clients_;
};

}  // namespace preforkd::daemon
