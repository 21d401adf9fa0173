// The load generator (support/load.hpp) against a real preforkd: a rolling
// restart under load in every mode costs no client a request; and, so that
// those zeros mean something, servers that misbehave on purpose (reset,
// close without answering, no listener, every worker killed) are seen and
// counted as what they are.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <string>
#include <thread>

#include "support/load.hpp"
#include "support/support.hpp"

using namespace preforkd::test;

namespace {

std::string echo_yaml(int workers, const std::string& args, const std::string& extra = "") {
  return "programs:\n  echo:\n    command: [" + bin("preforkd-echo") + args + "]\n    workers: " +
         std::to_string(workers) + "\n    listen: [\"127.0.0.1:0\"]\n    reload: { settle: 100ms }\n" + extra;
}

// A plain server on 127.0.0.1 that misbehaves on purpose, one connection at a
// time: it waits for the request (a first line), then acts.
class BadServer {
 public:
  enum class Act {
    Reset,          // SO_LINGER 0 + close: RST with the request unanswered
    Close,          // close: FIN with the request unanswered
    AnswerThenClose // a keep-alive 200, then FIN on the now idle connection
  };

  explicit BadServer(Act act) : act_(act) {
    fd_ = listen_loopback(port_, 128);
    REQUIRE(::pipe2(stop_, O_CLOEXEC) == 0);
    thread_ = std::thread([this] { run(); });
  }
  ~BadServer() {
    char b = 1;
    (void)!::write(stop_[1], &b, 1);
    thread_.join();
    ::close(fd_);
    ::close(stop_[0]);
    ::close(stop_[1]);
  }
  uint16_t port() const { return port_; }
  int served() const { return served_; }

 private:
  void run() {
    for (;;) {
      pollfd p[2] = {{fd_, POLLIN, 0}, {stop_[0], POLLIN, 0}};
      if (::poll(p, 2, -1) < 0) continue;
      if (p[1].revents != 0) return;
      int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) continue;
      timeval tv{5, 0};
      ::setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      // The whole request (an echo line, or an HTTP head), so that a close()
      // with nothing unread sends a FIN, not an RST.
      std::string got;
      char buf[4096];
      auto complete = [&] {
        if (got.rfind("GET ", 0) == 0) return got.find("\r\n\r\n") != std::string::npos;
        return got.find('\n') != std::string::npos;
      };
      while (!complete()) {
        ssize_t n = ::recv(c, buf, sizeof buf, 0);
        if (n <= 0) break;
        got.append(buf, static_cast<size_t>(n));
      }
      if (act_ == Act::Reset) {
        linger l{1, 0};
        ::setsockopt(c, SOL_SOCKET, SO_LINGER, &l, sizeof l);
      } else if (act_ == Act::AnswerThenClose) {
        const std::string reply = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n";
        (void)!::send(c, reply.data(), reply.size(), MSG_NOSIGNAL);
      }
      ::close(c);
      ++served_;
    }
  }

  Act act_;
  int fd_ = -1;
  int stop_[2] = {-1, -1};
  uint16_t port_ = 0;
  std::atomic<int> served_{0};
  std::thread thread_;
};

Load::Options quick() {
  Load::Options o;
  o.timeout = std::chrono::milliseconds(1000);
  return o;
}

}  // namespace

TEST_CASE("load: a rolling restart of preforkd-echo --http under keep-alive and short-connection load fails no request") {
  TempDir dir;
  Preforkd d(dir, echo_yaml(4, ", --http"));
  REQUIRE(d.wait_workers(4));
  // Each keep-alive client thinks 1 ms between requests: every connection
  // still has its next request on the wire within a millisecond of a drain,
  // but the CPUs are not saturated. Saturated (2 CPUs), reaping an old
  // worker can spin for seconds in the kernel (wait4 -> release_task ->
  // proc_invalidate_siblings_dcache -> shrink_dcache_parent), so the
  // rollout, not the clients, crawls while the load lasts.
  Load::Options paced;
  paced.pause = 1ms;
  Load keep(d.port(), Load::Mode::Http, 24, paced);
  Load shorts(d.port(), Load::Mode::HttpShort, 8);
  keep.start();
  shorts.start();
  REQUIRE_MESSAGE(keep.wait_ok(500, 30s), keep.describe());
  REQUIRE_MESSAGE(shorts.wait_ok(100, 30s), shorts.describe());
  auto r = d.control({{"cmd", "restart"}, {"program", "echo"}}, 60s);
  CHECK(r["ok"] == true);
  CHECK(r["message"] == "restarted 4 worker(s) of echo");
  // Load flows on the new workers too.
  CHECK_MESSAGE(keep.wait_ok(500, 30s), keep.describe());
  CHECK_MESSAGE(shorts.wait_ok(100, 30s), shorts.describe());
  keep.stop();
  shorts.stop();
  auto k = keep.counts(), s = shorts.counts();
  MESSAGE(keep.describe());
  MESSAGE(shorts.describe());
  CHECK_MESSAGE(k.refused == 0, keep.describe());
  CHECK_MESSAGE(k.reset == 0, keep.describe());
  CHECK_MESSAGE(k.failed == 0, keep.describe());
  CHECK_MESSAGE(s.errors_total() == 0, shorts.describe());
  // Every keep-alive connection began on a worker that was then replaced: the
  // drain closed them (`Connection: close`), and the clients moved on.
  CHECK(k.closed >= 1);
  CHECK(k.connections > 24);
  CHECK(d.stop() == 0);
}

TEST_CASE("load: a rolling restart of preforkd-echo under line-echo load fails no round-trip") {
  TempDir dir;
  Preforkd d(dir, echo_yaml(4, ""));
  REQUIRE(d.wait_workers(4));
  Load echo(d.port(), Load::Mode::Echo, 32);
  echo.start();
  REQUIRE_MESSAGE(echo.wait_ok(300, 30s), echo.describe());
  auto r = d.control({{"cmd", "restart"}, {"program", "echo"}}, 60s);
  CHECK(r["ok"] == true);
  CHECK_MESSAGE(echo.wait_ok(300, 30s), echo.describe());
  echo.stop();
  MESSAGE(echo.describe());
  auto e = echo.counts();
  CHECK_MESSAGE(e.errors_total() == 0, echo.describe());
  CHECK(e.ok == e.connections);
  CHECK(d.stop() == 0);
}

TEST_CASE("load: a server that resets connections is counted as reset, in every mode") {
  BadServer bad(BadServer::Act::Reset);
  for (auto mode : {Load::Mode::Http, Load::Mode::HttpShort, Load::Mode::Echo}) {
    std::string mode_name = Load::mode_name(mode);
    CAPTURE(mode_name);
    Load load(bad.port(), mode, 4, quick());
    load.start();
    REQUIRE(wait_until([&] { return load.counts().reset >= 8; }));
    load.stop();
    auto c = load.counts();
    CHECK_MESSAGE(c.ok == 0, load.describe());
    CHECK_MESSAGE(c.failed == 0, load.describe());
    CHECK_MESSAGE(c.refused == 0, load.describe());
    REQUIRE(!c.errors.empty());
    CHECK(c.errors[0].what.find("reset: recv") != std::string::npos);
    CHECK(c.errors[0].what.find("Connection reset by peer") != std::string::npos);
    CHECK(c.errors[0].wall.size() == 23);  // "2026-11-21 21:14:46.316", as preforkd logs
  }
}

TEST_CASE("load: a server that closes a connection with the request unanswered is counted as failed") {
  BadServer bad(BadServer::Act::Close);
  for (auto mode : {Load::Mode::Http, Load::Mode::HttpShort, Load::Mode::Echo}) {
    std::string mode_name = Load::mode_name(mode);
    CAPTURE(mode_name);
    Load load(bad.port(), mode, 4, quick());
    load.start();
    REQUIRE(wait_until([&] { return load.counts().failed >= 8; }));
    load.stop();
    auto c = load.counts();
    CHECK_MESSAGE(c.ok == 0, load.describe());
    CHECK_MESSAGE(c.reset == 0, load.describe());
    CHECK_MESSAGE(c.refused == 0, load.describe());
    REQUIRE(!c.errors.empty());
    CHECK(c.errors[0].what.find("connection closed (FIN) after") != std::string::npos);
  }
}

TEST_CASE("load: a port nobody listens on is counted as refused") {
  uint16_t port = free_port();  // bound and closed: nothing listens there
  Load load(port, Load::Mode::Http, 4, quick());
  load.start();
  REQUIRE(wait_until([&] { return load.counts().refused >= 8; }));
  load.stop();
  auto c = load.counts();
  CHECK_MESSAGE(c.ok + c.reset + c.failed == 0, load.describe());
  CHECK(c.connections == 0);
  REQUIRE(!c.errors.empty());
  CHECK(c.errors[0].what.find("refused: connect: Connection refused") != std::string::npos);
}

TEST_CASE("load: a keep-alive connection closed while idle is not a failure, and the client reconnects") {
  BadServer bad(BadServer::Act::AnswerThenClose);
  Load::Options o = quick();
  o.pause = std::chrono::milliseconds(100);  // idle long enough for the server's FIN to arrive first
  Load load(bad.port(), Load::Mode::Http, 2, o);
  load.start();
  REQUIRE_MESSAGE(load.wait_ok(10), load.describe());
  load.stop();
  auto c = load.counts();
  CHECK_MESSAGE(c.errors_total() == 0, load.describe());
  CHECK(c.closed >= c.ok - 2);  // every connection but the last of each client
  CHECK(c.connections >= c.ok);
}

TEST_CASE("load: every worker of a program killed (restart: never) shows up as failed requests, not refusals") {
  TempDir dir;
  Preforkd d(dir, echo_yaml(2, ", --http", "    restart: never\n"));
  REQUIRE(d.wait_workers(2));
  Load::Options o = quick();
  o.keep_errors = 64;  // past the requests cut in flight, to the timeouts
  Load load(d.port(), Load::Mode::Http, 8, o);
  load.start();
  REQUIRE_MESSAGE(load.wait_ok(200, 30s), load.describe());
  REQUIRE(load.counts().errors_total() == 0);
  for (pid_t w : d.workers()) ::kill(w, SIGKILL);
  REQUIRE(d.wait_workers(0));
  // Requests in flight are cut (reset or closed unanswered); new connections
  // are queued on the listening socket that preforkd keeps open, and time out.
  CHECK_MESSAGE(wait_until([&] { return load.counts().failed >= 8; }, 30s), load.describe());
  CHECK_FALSE(load.wait_ok(1, 1500ms));
  load.stop();
  auto c = load.counts();
  MESSAGE(load.describe());
  CHECK(c.refused == 0);  // the socket outlives its workers
  CHECK(c.errors_total() >= 8);
  bool timed_out = false;
  for (const auto& e : c.errors) timed_out = timed_out || e.what.find("no complete response within") != std::string::npos;
  CHECK_MESSAGE(timed_out, load.describe());
  CHECK(d.stop() == 0);
}
