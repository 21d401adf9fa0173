// serial.cpp — `preforkd-echo --http --serial`: one request at a time, and a
// connection is accepted only when the process is free.
//
// Why: the default server accepts in a thread of its own whatever arrives and
// queues it behind its I/O thread, so under overload the backlog leaves the
// kernel's accept queue, where preforkd (and new workers) cannot see it. A
// serial worker behaves like gunicorn's sync worker, PHP-FPM or Apache
// prefork: what it cannot serve stays in the accept queue, preforkd reads it
// there, and the next free worker, a new one included, takes it.
//
// Design:
//   - One thread. TERM/INT/PIPE are blocked; TERM/INT are read from a signalfd
//     in the same epoll set as the listening sockets, so a signal only ever
//     arrives between two requests (the request in hand is finished first).
//   - Each listening socket is in the epoll set with EPOLLEXCLUSIVE: a new
//     connection wakes one waiting worker, the first in the order the workers
//     added the socket, and a worker that is serving is not waiting. A light
//     load therefore stays with the same few workers and the others stay idle,
//     which is what lets autoscaling see a worker it can remove (a blocking
//     accept() would hand connections out in turn, to every worker).
//   - The listening sockets stay blocking (T19: their open file description is
//     shared). If another worker took the connection between epoll_wait and
//     accept4, accept4 would block: an alarm(1) with a no-op SIGALRM handler
//     (no SA_RESTART) bounds that to a second, so a SIGTERM is never held up
//     for long.
//   - Per connection: BUSY=1, read one request head (and discard its body),
//     spend --delay-ms, answer with "Connection: close", close, then the
//     counters and BUSY=0 in one write. No keep-alive: a client that kept its
//     connection would keep the worker.
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <preforkd/worker.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>

#include "http.hpp"
#include "server.hpp"

namespace preforkd::echo {

namespace {

using Clock = std::chrono::steady_clock;

void on_alarm(int) {}  // only interrupts a blocked accept4()

struct Totals {
  std::uint64_t requests = 0, connections = 0, bytes_in = 0, bytes_out = 0;
};

bool send_all(int fd, std::string_view data, Totals& t) {
  while (!data.empty()) {
    ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    t.bytes_out += static_cast<std::uint64_t>(n);
    data.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

// Reads one request head from `fd`, discards its body, spends `delay`, answers.
void serve_connection(int fd, bool tcp, std::chrono::milliseconds delay, Totals& t) {
  if (tcp) {
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  timeval tv{5, 0};  // a silent client does not hold the worker for long
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  static char buf[http::kMaxHeaderBlock + 1];
  std::size_t got = 0;
  http::Request req;
  http::ParseStatus st = http::ParseStatus::Incomplete;
  while (st == http::ParseStatus::Incomplete) {
    if (got > http::kMaxHeaderBlock) {
      st = http::ParseStatus::TooLarge;
      break;
    }
    ssize_t n = ::read(fd, buf + got, sizeof buf - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // closed, reset or silent for 5 s: nothing to answer
    got += static_cast<std::size_t>(n);
    t.bytes_in += static_cast<std::uint64_t>(n);
    st = http::parse_request(buf, got, req);
  }
  if (st != http::ParseStatus::Complete) {
    send_all(fd, http::error_reply(st), t);
    return;
  }
  // The body (bounded by the 5 s receive timeout): read and dropped.
  std::uint64_t body_left = req.content_length - std::min<std::uint64_t>(req.content_length, got - req.head_len);
  while (body_left > 0) {
    ssize_t n = ::read(fd, buf, std::min<std::uint64_t>(body_left, sizeof buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    t.bytes_in += static_cast<std::uint64_t>(n);
    body_left -= static_cast<std::uint64_t>(n);
  }
  if (delay.count() > 0) std::this_thread::sleep_for(delay);
  if (send_all(fd, http::ok_reply(req, /*keep_alive=*/false), t)) ++t.requests;
}

void report(const Totals& t, bool busy) {
  preforkd_notify_batch b;
  preforkd_batch_init(&b);
  preforkd_batch_counter(&b, "requests", t.requests);
  preforkd_batch_counter(&b, "connections", t.connections);
  preforkd_batch_counter(&b, "bytes_in", t.bytes_in);
  preforkd_batch_counter(&b, "bytes_out", t.bytes_out);
  preforkd_batch_gauge(&b, "active_connections", busy ? 1 : 0);
  preforkd_batch_busy(&b, busy ? 1 : 0);
  preforkd_batch_flush(&b);
}

}  // namespace

int serve_serial(std::vector<Listener>& listeners, const ServerOptions& options) {
  sigset_t stop_signals, blocked;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  blocked = stop_signals;
  sigaddset(&blocked, SIGPIPE);
  ::sigprocmask(SIG_BLOCK, &blocked, nullptr);
  struct sigaction sa {};
  sa.sa_handler = on_alarm;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART: accept4() must return EINTR
  ::sigaction(SIGALRM, &sa, nullptr);

  int sfd = ::signalfd(-1, &stop_signals, SFD_CLOEXEC);
  int ep = ::epoll_create1(EPOLL_CLOEXEC);
  if (sfd < 0 || ep < 0) throw std::runtime_error(std::string("signalfd/epoll_create1: ") + std::strerror(errno));
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u32 = UINT32_MAX;
  if (::epoll_ctl(ep, EPOLL_CTL_ADD, sfd, &ev) != 0)
    throw std::runtime_error(std::string("epoll_ctl: ") + std::strerror(errno));
  for (std::uint32_t i = 0; i < listeners.size(); ++i) {
    ev.events = EPOLLIN | EPOLLEXCLUSIVE;
    ev.data.u32 = i;
    if (::epoll_ctl(ep, EPOLL_CTL_ADD, listeners[i].fd, &ev) != 0)
      throw std::runtime_error("epoll_ctl " + listeners[i].name + ": " + std::strerror(errno));
  }

  const std::uint64_t watchdog_usec = preforkd_watchdog_usec();
  const std::chrono::microseconds tick(std::max<std::uint64_t>(watchdog_usec / 3, 1000));
  Clock::time_point next_watchdog = Clock::now() + tick;
  std::optional<Clock::time_point> fail_at;
  if (options.fail_after.count() >= 0) fail_at = Clock::now() + options.fail_after;
  preforkd_notify("READY=1");
  preforkd_notify("STATUS=http, one request at a time, on %zu socket(s)", listeners.size());
  Totals totals;
  if (options.stats) report(totals, false);

  int code = 0;
  for (;;) {
    int timeout = -1;
    auto until = [&](Clock::time_point at) {
      auto ms = std::chrono::ceil<std::chrono::milliseconds>(at - Clock::now()).count();
      int t = static_cast<int>(std::clamp<long long>(ms, 0, 3600000));
      timeout = timeout < 0 ? t : std::min(timeout, t);
    };
    if (watchdog_usec > 0) until(next_watchdog);
    if (fail_at) until(*fail_at);
    epoll_event events[8];
    int n = ::epoll_wait(ep, events, 8, timeout);
    if (n < 0 && errno != EINTR) throw std::runtime_error(std::string("epoll_wait: ") + std::strerror(errno));
    if (watchdog_usec > 0 && Clock::now() >= next_watchdog) {
      preforkd_notify("WATCHDOG=1");
      next_watchdog = Clock::now() + tick;
    }
    if (fail_at && Clock::now() >= *fail_at) {
      std::fprintf(stderr, "preforkd-echo: --fail-after: exiting with status 4\n");
      code = 4;
      break;
    }
    bool stop = false;
    for (int i = 0; i < n; ++i)
      if (events[i].data.u32 == UINT32_MAX) stop = true;
    if (stop) break;  // no request in hand: nothing to drain
    for (int i = 0; i < n; ++i) {
      const Listener& l = listeners[events[i].data.u32];
      ::alarm(1);  // another worker may have taken it: do not block for long
      int fd = ::accept4(l.fd, nullptr, nullptr, SOCK_CLOEXEC);
      int err = errno;
      ::alarm(0);
      if (fd < 0) {
        if (err == EINTR || err == EAGAIN || err == ECONNABORTED || err == EPROTO) continue;
        if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
          std::this_thread::sleep_for(std::chrono::milliseconds(100));
          continue;
        }
        std::fprintf(stderr, "preforkd-echo: accept on %s: %s\n", l.name.c_str(), std::strerror(err));
        code = 1;
        break;
      }
      ++totals.connections;
      if (options.stats) preforkd_notify_busy(1);
      serve_connection(fd, l.tcp, options.delay, totals);
      ::close(fd);
      if (options.stats) report(totals, false);
      break;  // back to epoll_wait: a signal goes before the next connection
    }
    if (code != 0) break;
  }
  preforkd_notify("STOPPING=1");
  close_listeners(listeners);
  ::close(ep);
  ::close(sfd);
  return code;
}

}  // namespace preforkd::echo
