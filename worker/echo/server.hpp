// server.hpp — preforkd-echo's concurrency: acceptor threads, epoll I/O threads,
// the signal-waiting main thread, and the graceful drain.
//
// Design (why it looks like this):
//   - One acceptor thread per listening socket, blocked in accept4(). The
//     listening socket is shared by every worker and stays in blocking mode (T19:
//     we never touch its O_NONBLOCK), and the kernel wakes exactly one blocked
//     acceptor per connection, so N workers have no thundering herd. If someone
//     else made the socket non-blocking, EAGAIN is answered with poll() + retry.
//   - Accepted sockets are ours: accept4(SOCK_NONBLOCK | SOCK_CLOEXEC). They are
//     handed to an I/O thread through a mutex-protected queue and an eventfd that
//     is written only when the queue was empty (one wake-up per burst).
//   - Each I/O thread runs one level-triggered epoll loop over its connections;
//     buffers are per connection and fixed-size (no allocation per request), and a
//     full buffer stops reading (backpressure) instead of growing.
//   - The main thread owns the signals: TERM/INT/PIPE are blocked in every thread
//     before any thread starts, and main waits for TERM/INT with sigtimedwait
//     (ticking the watchdog, if WATCHDOG_USEC is set, at a third of its period).
//   - Telemetry (unless --no-stats): each I/O thread counts into its own
//     cache-line-aligned cells with relaxed stores (preforkd_counter_add_owned),
//     so the hot path never shares a written cache line with another thread; the
//     main thread sums the cells at most every 100 ms (preforkd_rate) and sends
//     the lines that changed in one write (preforkd_notify_batch), plus once when
//     the drain starts and once after it. Counters (cumulative, per worker):
//       connections  connections accepted (handed to an I/O thread)
//       requests     http: requests answered (a reply queued, 200 or 4xx/5xx);
//                    echo: connections served to completion (everything read
//                    was echoed back and the connection ended cleanly: the
//                    client's FIN, or the drain)
//       bytes_in     bytes received from clients (bodies and discarded rest included)
//       bytes_out    bytes sent to clients
//     and the gauge active_connections (connections open now).
//   - Drain on TERM/INT: STOPPING=1; stop accepting by setting a flag and
//     interrupting each blocked acceptor with a no-op signal handler installed
//     without SA_RESTART (never shutdown(): the socket is everyone's); then each
//     I/O thread finishes in-flight work (echo: flush what was read; http: answer
//     in-flight requests with "Connection: close"), closes idle connections, and
//     returns when none is left or the grace period ends.
#pragma once

#include <chrono>
#include <vector>

#include "listeners.hpp"

namespace preforkd::echo {

enum class Mode { Echo, Http };

struct ServerOptions {
  Mode mode = Mode::Echo;
  int io_threads = 1;
  bool stats = true;  // count and send COUNTER_/GAUGE_ and BUSY= lines (--no-stats: none)
  std::chrono::milliseconds delay{0};  // http: time spent on each request (--delay-ms), blocking its thread
  std::chrono::milliseconds grace{5000};  // drain bound after TERM/INT
  // --fail-after: after this long (from READY=1), drain as after TERM and
  // exit 4 — a build that breaks some time after it started. < 0: never.
  std::chrono::milliseconds fail_after{-1};
  // --serial (http only): one request at a time, accepting only when free
  // (serial.cpp); io_threads is then unused.
  bool serial = false;
};

// Serves `listeners` until SIGTERM/SIGINT, closes them once accepting stopped,
// drains, and returns the exit code: 0 after a drain, 4 after a drain that
// --fail-after started, 1 if an acceptor hit an
// unrecoverable error. Must be called from the main thread before any other thread
// exists (it sets the signal mask that every thread inherits). Throws
// std::runtime_error if the threads cannot start.
int serve(std::vector<Listener>& listeners, const ServerOptions& options);

// --serial: the same contract as serve() (exit codes 0, 1, 4; STOPPING=1;
// closes the listeners), in one thread serving one connection at a time; a
// SIGTERM is taken between two requests. See serial.cpp.
int serve_serial(std::vector<Listener>& listeners, const ServerOptions& options);

}  // namespace preforkd::echo
