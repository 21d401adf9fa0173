// load.hpp — a load generator for integration tests: N concurrent clients
// against 127.0.0.1:PORT, every connection and every response checked, and
// every client-visible failure counted. Nothing is retried: a request that
// fails is counted as failed, and only then does its client go on (after a
// short pause, so that a dead port does not burn the CPU the supervisor under
// test needs).
//
// What counts as what (the point of the class, so spelled out):
//   ok       a complete, correct response (echo: the same bytes back; http: a
//            200 with a valid Content-Length and the expected body).
//   refused  connect() failed with ECONNREFUSED.
//   reset    ECONNRESET or EPIPE at any point, including on an idle
//            keep-alive connection (a reset is never a clean close).
//   failed   anything else the client sees: a wrong, malformed or short
//            response, a connection closed (FIN) after a request was written
//            and before its response was complete, unsolicited bytes, a timeout
//            (per request, `Options::timeout`, connect included), another
//            errno. A deadline is judged only while the client was running:
//            a client thread that wakes up more than 1 s after its deadline
//            was not scheduled itself (the machine stalled, and the server
//            with it), so the deadline starts again, at most 3 times per
//            request, and the stall is counted in `stalls`, never hidden.
// Not failures (counted apart, in `closed`), because a well-behaved client
// never has a request in flight when they happen:
//   - the server closes a keep-alive connection after a response that said
//     `Connection: close` (the client honours it and reconnects), and
//   - the server closes an idle keep-alive connection (FIN) before the client
//     wrote any byte of its next request; the client checks for this before
//     each request (on loopback a FIN is queued to the peer by close() itself,
//     so the check is not a race with the server's close).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace preforkd::test {

class Load {
 public:
  enum class Mode {
    Http,       // HTTP/1.1 keep-alive: one connection per client, reused
    HttpShort,  // one request per connection (`Connection: close`)
    Echo,       // line echo, one connection per round-trip
  };

  struct Options {
    std::chrono::milliseconds timeout{5000};       // per request, connect included
    std::chrono::milliseconds pause{0};            // a client's think time between requests
    std::chrono::milliseconds after_error{10};     // a client's pause after a counted error
    std::optional<std::string> http_body{"ok\n"};  // expected body (nullopt: any)
    size_t keep_errors = 8;                        // error descriptions kept (the first ones)
    // Continuous load that leaves a 2-core machine room for the supervisor
    // under test: each client pauses `think` between requests.
    static Options paced(std::chrono::milliseconds think = std::chrono::milliseconds(5)) {
      Options o;
      o.pause = think;
      return o;
    }
  };

  struct Error {
    std::chrono::milliseconds since_start;  // from start()
    std::string wall;                       // local time as in preforkd's log: "2026-11-21 21:14:46.316"
    std::string what;  // "client 3, connection 17 (local port 43210), request 5 on it: reset: recv (...): ..."
  };

  struct Counts {
    uint64_t ok = 0, refused = 0, reset = 0, failed = 0;
    uint64_t connections = 0;  // connections established
    uint64_t closed = 0;       // clean server closes a client is allowed to see (above)
    uint64_t stalls = 0;       // deadlines restarted because the client itself overslept them
    std::chrono::milliseconds max_latency{0};  // slowest ok request (connect included where it is per request)
    std::vector<Error> errors;                 // the first Options::keep_errors errors
    uint64_t errors_total() const { return refused + reset + failed; }
    std::string describe() const;
  };

  Load(uint16_t port, Mode mode, int clients, Options options);
  Load(uint16_t port, Mode mode, int clients) : Load(port, mode, clients, Options{}) {}
  ~Load();  // stop()
  Load(const Load&) = delete;
  Load& operator=(const Load&) = delete;

  void start();
  // No new request is started; requests in flight finish (or fail on their
  // deadline) and are counted; joins every client.
  void stop();

  Counts counts() const;
  // Waits until `n` more requests succeeded than had when it was called.
  bool wait_ok(uint64_t n, std::chrono::milliseconds timeout = std::chrono::seconds(10)) const;
  // "http keep-alive x32 on 127.0.0.1:41173, 2.500 s: ok 1234, refused 0, ...; first 2 of 2 error(s): ..."
  std::string describe() const;

  static const char* mode_name(Mode mode);

 private:
  void run_client(int id);
  void count_ok(std::chrono::steady_clock::duration latency);
  void count_error(std::atomic<uint64_t>& category, std::string what);
  void rest(std::chrono::milliseconds d);

  const uint16_t port_;
  const Mode mode_;
  const int clients_;
  const Options options_;
  std::chrono::steady_clock::time_point started_{};
  std::chrono::steady_clock::time_point stopped_{};
  std::vector<std::thread> threads_;

  std::atomic<bool> stopping_{false};
  std::atomic<uint64_t> ok_{0}, refused_{0}, reset_{0}, failed_{0}, connections_{0}, closed_{0}, stalls_{0};
  std::atomic<int64_t> max_latency_us_{0};
  mutable std::mutex mu_;  // errors_, and the stop wake-up of rest()
  std::condition_variable cv_;
  std::vector<Error> errors_;
};

}  // namespace preforkd::test
