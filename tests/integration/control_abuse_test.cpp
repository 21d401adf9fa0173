// The control socket under abuse (issue #14): a batch of requests over the
// limit. A request preforkd says it refused must never take effect.
#include <doctest/doctest.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "support/support.hpp"

using namespace preforkd::test;
using nlohmann::json;

namespace {

constexpr auto npos = std::string::npos;

// One worker that needs no port; stdout/stderr not captured (fewer pipes).
std::string one_program(int workers = 1) {
  return "programs:\n"
         "  w:\n"
         "    command: " + bin("preforkd-test-worker") + "\n"
         "    workers: " + std::to_string(workers) + "\n"
         "    stdout: null\n"
         "    stderr: null\n";
}

// A connected Unix stream socket to `path`, or -1. Non-blocking connect:
// EAGAIN (the listen backlog is full) is retried until `deadline`, so a
// preforkd that accepts slowly is waited for, and one that stopped
// accepting is given up on.
int connect_unix(const std::string& path, Clock::time_point deadline) {
  sockaddr_un sun{};
  sun.sun_family = AF_UNIX;
  std::snprintf(sun.sun_path, sizeof sun.sun_path, "%s", path.c_str());
  for (;;) {
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    if (connect(fd, reinterpret_cast<sockaddr*>(&sun), sizeof sun) == 0) return fd;
    int err = errno;
    ::close(fd);
    if (err != EAGAIN || Clock::now() >= deadline) return -1;
    std::this_thread::sleep_for(5ms);
  }
}

// Everything the peer sends until it closes (EOF or reset), or "" plus
// `timed_out` if it neither answers nor closes before `timeout`.
std::string read_to_end(int fd, std::chrono::milliseconds timeout, bool* timed_out = nullptr) {
  std::string got;
  auto deadline = Clock::now() + timeout;
  if (timed_out) *timed_out = false;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) {
      if (timed_out) *timed_out = true;
      return got;
    }
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(left)) <= 0) continue;
    char buf[4096];
    ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n > 0) {
      got.append(buf, static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
    return got;  // EOF, or ECONNRESET after what was sent
  }
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

}  // namespace

TEST_CASE("control abuse: a batch refused as too many requests is not carried out, not even in part") {
  TempDir dir;
  Preforkd d(dir, one_program(2));
  REQUIRE(d.wait_workers(2));
  int fd = connect_unix(d.control_socket(), Clock::now() + 5s);
  REQUIRE(fd >= 0);
  std::string batch;
  for (int i = 0; i < 18; ++i) batch += R"({"cmd":"version"})" "\n";
  batch += R"({"cmd":"scale","program":"w","workers":4})" "\n";
  REQUIRE(send(fd, batch.data(), batch.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(batch.size()));
  bool timed_out = false;
  std::string got = read_to_end(fd, 10s, &timed_out);
  ::close(fd);
  CHECK_MESSAGE(!timed_out, "preforkd did not close the refused connection");
  auto replies = lines_of(got);
  REQUIRE_MESSAGE(replies.size() == 1, "replies:\n", got);
  auto reply = json::parse(replies[0], nullptr, false);
  CHECK(reply["ok"] == false);
  CHECK(reply["error"] == "request too long or too many requests");
  // The refused scale did not happen: another client sees two workers wanted.
  json st = d.control({{"cmd", "status"}});
  json w = program_of(st, "w");
  REQUIRE_MESSAGE(w.is_object(), st.dump());
  CHECK(w["workers_wanted"] == 2);
  CHECK(w["workers"].size() == 2);
  CHECK(d.workers().size() == 2);
  CHECK(d.stop() == 0);
}
