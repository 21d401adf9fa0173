// Worker-side telemetry: the COUNTER_/GAUGE_ helpers of preforkd/worker.h, and
// the counters preforkd-echo reports (requests, connections, bytes_in,
// bytes_out, active_connections). preforkd does not expose counters yet, so the
// worker runs standalone with PREFORKD_NOTIFY_FD pointing at a pipe of ours,
// and every line it writes is checked as it arrives: well-formed, READY=1
// first, counters never decreasing, reports rate-limited.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <regex>
#include <string>
#include <vector>

#include "support/support.hpp"
// The header under test, by path: the integration tests do not link preforkd_worker.
#include "../../worker/include/preforkd/worker.h"

using namespace preforkd::test;

namespace {

// The read end of a pipe whose write end a child inherits as PREFORKD_NOTIFY_FD;
// checks each line as it is read and keeps the latest counter and gauge values.
class NotifyReader {
 public:
  NotifyReader() {
    int fds[2];
    // CLOEXEC on both ends: only the child meant to write clears it (inherit()).
    REQUIRE(::pipe2(fds, O_CLOEXEC | O_NONBLOCK) == 0);
    r_ = fds[0];
    w_ = fds[1];
  }
  ~NotifyReader() {
    close_write_end();
    ::close(r_);
  }
  NotifyReader(const NotifyReader&) = delete;
  NotifyReader& operator=(const NotifyReader&) = delete;

  std::map<std::string, std::string> env() const {
    return {{"PREFORKD_NOTIFY_FD", std::to_string(w_)}};
  }
  // For Process's in_child hook: keep the write end open across exec.
  std::function<void()> inherit() const {
    int w = w_;
    return [w] { ::fcntl(w, F_SETFD, 0); };
  }
  // Once the child has it: EOF then means the child is gone.
  void close_write_end() {
    if (w_ >= 0) ::close(w_);
    w_ = -1;
  }

  // Reads until pred() holds, EOF, or the timeout; returns pred().
  bool wait_for(const std::function<bool()>& pred, std::chrono::milliseconds timeout = 10s) {
    const auto deadline = Clock::now() + timeout;
    for (;;) {
      if (pred()) return true;
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (left.count() <= 0 || eof_) return pred();
      pollfd p{r_, POLLIN, 0};
      ::poll(&p, 1, static_cast<int>(std::min<long long>(left.count(), 50)));
      pump();
    }
  }
  // Reads everything until the child closed its end (it exited).
  bool read_to_eof(std::chrono::milliseconds timeout = 10s) {
    return wait_for([this] { return eof_; }, timeout);
  }

  const std::vector<std::string>& lines() const { return lines_; }
  const std::vector<std::string>& errors() const { return errors_; }
  std::string errors_text() const {
    std::string out;
    for (const auto& e : errors_) out += e + "\n";
    return out;
  }
  size_t count_prefix(const std::string& prefix) const {
    return static_cast<size_t>(std::count_if(lines_.begin(), lines_.end(), [&](const std::string& l) {
      return l.rfind(prefix, 0) == 0;
    }));
  }
  // Latest values; -1 / INT64_MIN when never reported.
  long long counter(const std::string& name) const {
    auto it = counters_.find(name);
    return it == counters_.end() ? -1 : static_cast<long long>(it->second);
  }
  int64_t gauge(const std::string& name) const {
    auto it = gauges_.find(name);
    return it == gauges_.end() ? INT64_MIN : it->second;
  }

 private:
  void pump() {
    char buf[8192];
    for (;;) {
      ssize_t n = ::read(r_, buf, sizeof buf);
      if (n > 0) {
        partial_.append(buf, static_cast<size_t>(n));
        continue;
      }
      if (n == 0) eof_ = true;
      break;  // 0: EOF; -1: EAGAIN (or an error, which the deadline turns into a failure)
    }
    for (size_t nl; (nl = partial_.find('\n')) != std::string::npos;) {
      on_line(partial_.substr(0, nl));
      partial_.erase(0, nl + 1);
    }
  }

  void on_line(const std::string& line) {
    static const std::regex kWellFormed(
        "READY=1|STOPPING=1|WATCHDOG=1|BUSY=[01]|STATUS=[^\\x00-\\x1f]*|"
        "COUNTER_[a-z0-9_]{1,48}=[0-9]{1,20}|GAUGE_[a-z0-9_]{1,48}=-?[0-9]{1,19}");
    lines_.push_back(line);
    if (!std::regex_match(line, kWellFormed)) {
      errors_.push_back("malformed: " + line);
      return;
    }
    size_t eq = line.find('=');
    if (line.rfind("COUNTER_", 0) == 0) {
      std::string name = line.substr(8, eq - 8);
      uint64_t v = std::strtoull(line.c_str() + eq + 1, nullptr, 10);
      auto it = counters_.find(name);
      if (it != counters_.end() && v < it->second)
        errors_.push_back("decreasing: " + line + " after " + std::to_string(it->second));
      counters_[name] = v;
    } else if (line.rfind("GAUGE_", 0) == 0) {
      gauges_[line.substr(6, eq - 6)] = std::strtoll(line.c_str() + eq + 1, nullptr, 10);
    }
  }

  int r_ = -1;
  int w_ = -1;
  bool eof_ = false;
  std::string partial_;
  std::vector<std::string> lines_;
  std::vector<std::string> errors_;
  std::map<std::string, uint64_t> counters_;
  std::map<std::string, int64_t> gauges_;
};

// preforkd-echo standalone on 127.0.0.1:0, its notify fd on `notify`.
std::unique_ptr<Process> start_echo(const TempDir& dir, NotifyReader& notify,
                                    const std::vector<std::string>& args) {
  std::vector<std::string> argv = {bin("preforkd-echo"), "--listen", "127.0.0.1:0"};
  argv.insert(argv.end(), args.begin(), args.end());
  auto p = std::make_unique<Process>(argv, dir.file("echo.log"), notify.env(), notify.inherit());
  notify.close_write_end();
  return p;
}

uint16_t listening_port(const Process& p) {
  const std::string needle = "listening on 127.0.0.1:";
  size_t at = p.wait_for_log(needle);
  if (at == std::string::npos) return 0;
  return static_cast<uint16_t>(std::atoi(p.log().c_str() + at + needle.size()));
}

// TERM; true when the worker drained and exited 0.
bool stop_echo(Process& p) {
  p.signal(SIGTERM);
  auto st = p.wait(10s);
  return st && WIFEXITED(*st) && WEXITSTATUS(*st) == 0;
}

size_t count_of(const std::string& s, const std::string& needle) {
  size_t n = 0;
  for (size_t at = s.find(needle); at != std::string::npos; at = s.find(needle, at + 1)) ++n;
  return n;
}

// Reads from a blocking socket (5 s timeouts, connect_tcp) until `replies` complete
// "ok" replies arrived in total; appends what it read to `got`.
bool read_replies(int fd, std::string& got, size_t replies) {
  char buf[16384];
  while (count_of(got, "\r\n\r\nok\n") < replies) {
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) return false;
    got.append(buf, static_cast<size_t>(n));
  }
  return true;
}

bool send_all(int fd, const std::string& data) {
  return ::send(fd, data.data(), data.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(data.size());
}

// The in-process notify fd of worker.h's helpers: a SOCK_SEQPACKET pair, so that
// every write() the header issues arrives as one message we can measure.
// preforkd_notify_fd() caches the variable on its first call, in this file only.
int header_peer() {
  static int peer = -1;
  if (peer < 0) {
    int sv[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == 0);
    ::setenv("PREFORKD_NOTIFY_FD", std::to_string(sv[0]).c_str(), 1);
    REQUIRE(preforkd_notify_fd() == sv[0]);
    ::unsetenv("PREFORKD_NOTIFY_FD");  // children we start must not see it
    peer = sv[1];
  }
  return peer;
}

// The next message (one write() of the header), or "" if none is waiting.
std::string next_message(int peer) {
  char buf[2 * PREFORKD_NOTIFY_LINE_MAX];
  ssize_t n = ::recv(peer, buf, sizeof buf, MSG_DONTWAIT);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
}

}  // namespace

TEST_CASE("echo_stats: worker.h: counter and gauge lines, name checks, batches of whole lines <= PIPE_BUF") {
  CHECK(preforkd_metric_name_valid("requests"));
  CHECK(preforkd_metric_name_valid("bytes_in_2"));
  CHECK(preforkd_metric_name_valid(std::string(48, 'a').c_str()));
  CHECK_FALSE(preforkd_metric_name_valid(std::string(49, 'a').c_str()));
  CHECK_FALSE(preforkd_metric_name_valid(""));
  CHECK_FALSE(preforkd_metric_name_valid(nullptr));
  CHECK_FALSE(preforkd_metric_name_valid("Requests"));
  CHECK_FALSE(preforkd_metric_name_valid("a-b"));
  CHECK_FALSE(preforkd_metric_name_valid("a=b"));

  const int peer = header_peer();
  CHECK(preforkd_notify_counter("requests", 42) == 20);
  CHECK(next_message(peer) == "COUNTER_requests=42\n");
  CHECK(preforkd_notify_counter("max", UINT64_MAX) == 33);
  CHECK(next_message(peer) == "COUNTER_max=18446744073709551615\n");
  CHECK(preforkd_notify_gauge("g", -5) > 0);
  CHECK(next_message(peer) == "GAUGE_g=-5\n");
  CHECK(preforkd_notify_gauge("min", INT64_MIN) > 0);
  CHECK(next_message(peer) == "GAUGE_min=-9223372036854775808\n");
  CHECK(preforkd_notify_gauge("zero", 0) > 0);
  CHECK(next_message(peer) == "GAUGE_zero=0\n");
  CHECK(preforkd_notify_counter("Bad", 1) == -EINVAL);
  CHECK(preforkd_notify_gauge(std::string(49, 'g').c_str(), 1) == -EINVAL);
  CHECK(next_message(peer).empty());

  // 60 lines of 78 bytes (4680) do not fit one PIPE_BUF: 52 go in the first write,
  // the rest in the flush; no line is split.
  preforkd_notify_batch b;
  preforkd_batch_init(&b);
  std::string expected;
  for (int i = 0; i < 60; ++i) {
    std::string name = std::string(46, 'n') + (i < 10 ? "0" : "") + std::to_string(i);
    REQUIRE(preforkd_batch_counter(&b, name.c_str(), UINT64_MAX) == 0);
    expected += "COUNTER_" + name + "=18446744073709551615\n";
  }
  CHECK(preforkd_batch_counter(&b, "Bad", 1) == -EINVAL);
  CHECK(preforkd_batch_gauge(&b, "", 1) == -EINVAL);
  CHECK(preforkd_batch_line(&b, "a\nb", 3) == -EINVAL);
  CHECK(preforkd_batch_line(&b, std::string(PREFORKD_NOTIFY_LINE_MAX, 'x').c_str(),
                            PREFORKD_NOTIFY_LINE_MAX) == -EMSGSIZE);
  REQUIRE(preforkd_batch_line(&b, "WATCHDOG=1", 10) == 0);
  REQUIRE(preforkd_batch_gauge(&b, "active", -1) == 0);
  expected += "WATCHDOG=1\nGAUGE_active=-1\n";
  CHECK(preforkd_batch_flush(&b) == static_cast<int>(expected.size()));
  std::string first = next_message(peer), second = next_message(peer);
  CHECK(first.size() == 52 * 78);
  CHECK(first.size() + second.size() == expected.size());
  CHECK(second.size() <= PREFORKD_NOTIFY_LINE_MAX);
  CHECK(first + second == expected);
  CHECK(next_message(peer).empty());
  CHECK(preforkd_batch_flush(&b) == 0);  // nothing buffered: no write
  CHECK(next_message(peer).empty());

  // The supervisor gone: EPIPE, and no SIGPIPE (T13) kills or stays pending.
  ::close(peer);
  preforkd_batch_counter(&b, "requests", 1);
  CHECK(preforkd_batch_flush(&b) == -EPIPE);
  CHECK(preforkd_notify_counter("requests", 1) == -EPIPE);
  sigset_t pending;
  sigemptyset(&pending);
  sigpending(&pending);
  CHECK_FALSE(sigismember(&pending, SIGPIPE));

  // The rate limiter's sleep hint.
  preforkd_rate rate = PREFORKD_RATE_INIT(100u * 1000 * 1000);
  CHECK(preforkd_rate_wait_ns(&rate) == 0);
  CHECK(preforkd_rate_due(&rate) == 1);
  CHECK(preforkd_rate_wait_ns(&rate) > 0);
  CHECK(preforkd_rate_wait_ns(&rate) <= 100u * 1000 * 1000);
  CHECK(preforkd_rate_due(&rate) == 0);
}

TEST_CASE("echo_stats: echo mode counts connections served, bytes, and active connections") {
  TempDir dir;
  NotifyReader n;
  auto echo = start_echo(dir, n, {"--io-threads", "3"});  // the sums span threads
  uint16_t port = listening_port(*echo);
  REQUIRE(port != 0);
  REQUIRE(n.wait_for([&] { return !n.lines().empty(); }));
  CHECK(n.lines().front() == "READY=1");

  // Round-robin over the 3 I/O threads: every thread serves two of them.
  const std::vector<std::string> msgs = {"hello", "preforkd", std::string(100000, 'x'),
                                         "a",     "bb",       std::string(3000, 'y')};
  uint64_t total = 0;
  for (const auto& m : msgs) {
    REQUIRE(echo_roundtrip(port, m));
    total += m.size();
  }
  // A connection counts as served once the worker saw the client's FIN.
  CHECK(n.wait_for([&] {
    return n.counter("requests") == 6 && n.counter("connections") == 6 &&
           n.gauge("active_connections") == 0;
  }));
  CHECK(n.counter("bytes_in") == static_cast<long long>(total));
  CHECK(n.counter("bytes_out") == static_cast<long long>(total));

  REQUIRE(stop_echo(*echo));
  REQUIRE(n.read_to_eof());
  CHECK(n.count_prefix("STOPPING=1") == 1);
  CHECK(n.counter("requests") == 6);
  CHECK(n.gauge("active_connections") == 0);
  CHECK_MESSAGE(n.errors().empty(), n.errors_text());
}

TEST_CASE("echo_stats: http mode counts requests, reports at most every 100 ms, and at exit") {
  TempDir dir;
  NotifyReader n;
  const auto started = Clock::now();
  auto echo = start_echo(dir, n, {"--http"});
  uint16_t port = listening_port(*echo);
  REQUIRE(port != 0);
  REQUIRE(n.wait_for([&] { return !n.lines().empty(); }));
  CHECK(n.lines().front() == "READY=1");

  // 5 requests, one after the other, on one keep-alive connection.
  const std::string req = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
  int fd = connect_tcp(port);
  REQUIRE(fd >= 0);
  std::string got;
  for (size_t i = 1; i <= 5; ++i) {
    REQUIRE(send_all(fd, req));
    REQUIRE(read_replies(fd, got, i));
  }
  CHECK(n.wait_for([&] {
    return n.counter("requests") == 5 && n.counter("connections") == 1 &&
           n.gauge("active_connections") == 1;
  }));
  CHECK(n.counter("bytes_in") == static_cast<long long>(5 * req.size()));
  CHECK(n.counter("bytes_out") == static_cast<long long>(got.size()));
  ::close(fd);
  CHECK(n.wait_for([&] { return n.gauge("active_connections") == 0; }));

  // 200 pipelined requests in one send: counted one by one, reported in a few lines.
  fd = connect_tcp(port);
  REQUIRE(fd >= 0);
  std::string burst;
  for (int i = 0; i < 200; ++i) burst += req;
  REQUIRE(send_all(fd, burst));
  std::string got2;
  REQUIRE(read_replies(fd, got2, 200));
  ::close(fd);
  CHECK(n.wait_for([&] {
    return n.counter("requests") == 205 && n.counter("connections") == 2 &&
           n.gauge("active_connections") == 0;
  }));
  CHECK(n.counter("bytes_in") == static_cast<long long>(205 * req.size()));
  CHECK(n.counter("bytes_out") == static_cast<long long>(got.size() + got2.size()));
  // At most one report per 100 ms (plus the first one, and slack for the coarse clock).
  auto elapsed_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started).count();
  CHECK(n.count_prefix("COUNTER_requests=") <= static_cast<size_t>(2 + elapsed_ms / 90));
  // Only what changed is sent: nothing moves while idle.
  size_t before = n.lines().size();
  n.wait_for([] { return false; }, 300ms);
  CHECK(n.lines().size() == before);

  REQUIRE(stop_echo(*echo));
  REQUIRE(n.read_to_eof());
  CHECK(n.count_prefix("STOPPING=1") == 1);
  CHECK(n.counter("requests") == 205);
  CHECK(n.gauge("active_connections") == 0);
  CHECK_MESSAGE(n.errors().empty(), n.errors_text());
}

TEST_CASE("echo_stats: the final report comes after the drain, without waiting for the interval") {
  TempDir dir;
  NotifyReader n;
  auto echo = start_echo(dir, n, {"--http"});
  uint16_t port = listening_port(*echo);
  REQUIRE(port != 0);
  // Half a request, in flight when TERM comes: the drain waits for the rest.
  const std::string head = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n";
  int fd = connect_tcp(port);
  REQUIRE(fd >= 0);
  REQUIRE(send_all(fd, head));
  REQUIRE(n.wait_for([&] { return n.counter("bytes_in") == static_cast<long long>(head.size()); }));
  echo->signal(SIGTERM);
  REQUIRE(n.wait_for([&] { return n.count_prefix("STOPPING=1") == 1; }));
  REQUIRE(send_all(fd, "\r\n"));
  std::string got;
  REQUIRE(read_replies(fd, got, 1));
  ::close(fd);
  auto st = echo->wait(10s);
  REQUIRE(st);
  CHECK(WIFEXITED(*st));
  REQUIRE(n.read_to_eof());
  // The request answered during the drain is in the report that follows STOPPING=1.
  auto stopping = std::find(n.lines().begin(), n.lines().end(), "STOPPING=1");
  CHECK(std::find(stopping, n.lines().end(), "COUNTER_requests=1") != n.lines().end());
  CHECK(n.counter("bytes_in") == static_cast<long long>(head.size() + 2));
  CHECK(n.counter("bytes_out") == static_cast<long long>(got.size()));
  CHECK(n.gauge("active_connections") == 0);
  CHECK_MESSAGE(n.errors().empty(), n.errors_text());
}

TEST_CASE("echo_stats: --no-stats sends READY=1 and STOPPING=1 but no COUNTER_ or GAUGE_ line") {
  TempDir dir;
  NotifyReader n;
  auto echo = start_echo(dir, n, {"--no-stats"});
  uint16_t port = listening_port(*echo);
  REQUIRE(port != 0);
  REQUIRE(n.wait_for([&] { return !n.lines().empty(); }));
  CHECK(n.lines().front() == "READY=1");
  REQUIRE(echo_roundtrip(port, "hello"));
  // Reading to EOF covers the whole life, the exit-time report included.
  REQUIRE(stop_echo(*echo));
  REQUIRE(n.read_to_eof());
  CHECK(n.count_prefix("STOPPING=1") == 1);
  CHECK(n.count_prefix("COUNTER_") == 0);
  CHECK(n.count_prefix("GAUGE_") == 0);
  CHECK_MESSAGE(n.errors().empty(), n.errors_text());
}
