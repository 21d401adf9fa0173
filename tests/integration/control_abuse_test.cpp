// The control socket and /metrics under abuse (issue #14): out of file
// descriptors for real (RLIMIT_NOFILE lowered before exec), clients that
// connect and say nothing, clients that drip a byte at a time, and a batch
// of requests over the limit. preforkd must not spin, must not flood its
// log, must keep room for preforkctl and a scrape, and a request it says it
// refused must never take effect.
#include <doctest/doctest.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <regex>
#include <set>
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

// Runs in preforkd's child before exec: soft and hard limit, so that
// preforkd's own raise to the hard limit (T18) changes nothing.
std::function<void()> fd_limit(rlim_t n) {
  return [n] {
    rlimit r{n, n};
    setrlimit(RLIMIT_NOFILE, &r);
  };
}

// The lowest fd number `pid` does not use: with its soft RLIMIT_NOFILE set
// to that, every new fd it asks for fails with EMFILE.
int lowest_free_fd(pid_t pid) {
  std::set<int> used;
  for (const auto& e : std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd"))
    used.insert(std::stoi(e.path().filename().string()));
  int fd = 0;
  while (used.count(fd)) ++fd;
  return fd;
}

bool set_soft_fd_limit(pid_t pid, rlim_t soft) {
  rlimit old{};
  if (prlimit(pid, RLIMIT_NOFILE, nullptr, &old) != 0) return false;
  rlimit r{soft, old.rlim_max};
  return prlimit(pid, RLIMIT_NOFILE, &r, nullptr) == 0;
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

// `n` clients that connect and send nothing. Stops early (returns fewer)
// when preforkd stops taking connections for `patience`.
std::vector<int> idle_unix_clients(const std::string& path, size_t n, std::chrono::milliseconds patience = 3s) {
  std::vector<int> fds;
  for (size_t i = 0; i < n; ++i) {
    int fd = connect_unix(path, Clock::now() + patience);
    if (fd < 0) break;
    fds.push_back(fd);
  }
  return fds;
}

std::vector<int> idle_tcp_clients(uint16_t port, size_t n) {
  std::vector<int> fds;
  for (size_t i = 0; i < n; ++i) {
    int fd = connect_tcp(port);
    if (fd < 0) break;
    fds.push_back(fd);
  }
  return fds;
}

void close_all(std::vector<int>& fds) {
  for (int fd : fds) ::close(fd);
  fds.clear();
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

// A whole HTTP exchange on 127.0.0.1:`port`: the response, or "" if none
// came (refused, or no answer within `timeout`: a hang).
std::string http_get(uint16_t port, std::chrono::milliseconds timeout = 10s) {
  int fd = connect_tcp(port);
  if (fd < 0) return "";
  const std::string req = "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
  send(fd, req.data(), req.size(), MSG_NOSIGNAL);
  std::string got = read_to_end(fd, timeout);
  ::close(fd);
  return got;
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

size_t lines_with(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (const auto& line : lines_of(text))
    if (line.find(needle) != npos) ++n;
  return n;
}

// Summed over the episode summaries that start with `subject` ("control:
// out of file descriptors (EMFILE) for"): the numbers before `what` ("idle
// connection"); -1 when there is no such summary.
long counted(const std::string& log, const std::string& subject, const std::string& what) {
  long total = -1;
  const std::regex number("([0-9]+) " + what);
  for (const auto& line : lines_of(log)) {
    if (line.find(subject) == npos) continue;
    std::smatch m;
    if (std::regex_search(line, m, number)) total = std::max(total, 0L) + std::stol(m[1].str());
  }
  return total;
}

std::pair<int, std::string> preforkctl(const Preforkd& d, const std::string& cmd) {
  return run({bin("preforkctl"), "-s", d.control_socket(), cmd}, 30s);
}

// preforkd's CPU time over a window, as a share of the window's wall time.
class CpuShare {
 public:
  explicit CpuShare(pid_t pid) : pid_(pid), ticks_(cpu_ticks(pid)), start_(Clock::now()) {}
  double share() const {
    double cpu = static_cast<double>(cpu_ticks(pid_) - ticks_) / static_cast<double>(sysconf(_SC_CLK_TCK));
    double wall = std::chrono::duration<double>(Clock::now() - start_).count();
    return cpu / wall;
  }

 private:
  pid_t pid_;
  unsigned long long ticks_;
  Clock::time_point start_;
};

}  // namespace

TEST_CASE("control abuse: out of fds (RLIMIT_NOFILE 64) under idle clients, no spin, preforkctl still served") {
  TempDir dir;
  Preforkd d(dir, one_program(), {}, true, fd_limit(64));
  CpuShare cpu(d.pid());
  // Far more clients than preforkd has fds: each connection after the last
  // free fd finds accept() failing with EMFILE.
  auto idle = idle_unix_clients(d.control_socket(), 200);
  CHECK_MESSAGE(d.wait_for_log("control: accept: Too many open files") != npos, d.log());
  CHECK_MESSAGE(idle.size() == 200, "preforkd stopped taking connections after ", idle.size(), "\n", d.log());
  // preforkctl still gets in: out of fds, the control socket takes fewer
  // clients, its oldest idle ones make room for the new ones, and 16 of the
  // fds they held stay free for preforkd itself (a status reads /proc).
  for (int i = 0; i < 3; ++i) {
    auto [code, out] = preforkctl(d, "status");
    CHECK_MESSAGE(code == 0, out, "\n", d.log());
  }
  size_t idle_held = idle.size();
  close_all(idle);
  // One summary for the whole episode, with its count, once it is over.
  CHECK_MESSAGE(d.wait_for_log("control: out of file descriptors (EMFILE) for") != npos, d.log());
  CHECK_MESSAGE(counted(d.log(), "control: out of file descriptors (EMFILE) for", "idle connection") > 0, d.log());
  auto [code, out] = preforkctl(d, "status");
  CHECK_MESSAGE(code == 0, out);
  // A spinning loop burns a whole core; this one did work per connection.
  double share = cpu.share();
  CHECK_MESSAGE(share < 0.5, "preforkd used ", share * 100, "% of a core over the episode");
  // Thousands of failed accepts would be thousands of lines; an episode is
  // two (out of fds, and at the limit lowered meanwhile: four).
  CHECK_MESSAGE(d.log().find(" clients (64 lowered while out of fds)") != npos, d.log());
  size_t lines = lines_with(d.log(), "control:");
  CHECK_MESSAGE(lines <= 6, lines, " lines about the control socket for ", idle_held, " clients:\n", d.log());
  CHECK(d.process().running());
  CHECK(d.stop() == 0);
}

TEST_CASE("control abuse: out of fds (RLIMIT_NOFILE 40) under idle /metrics connections, a scrape still served") {
  TempDir dir;
  uint16_t mport = free_port();
  Preforkd d(dir, "supervisor:\n  metrics: \"127.0.0.1:" + std::to_string(mport) + "\"\n" + one_program(), {}, true,
             fd_limit(40));
  CpuShare cpu(d.pid());
  // The metrics limit is 32 connections; preforkd has fds for fewer.
  auto idle = idle_tcp_clients(mport, 100);
  CHECK(idle.size() == 100);
  CHECK_MESSAGE(d.wait_for_log("metrics: accept: Too many open files") != npos, d.log());
  for (int i = 0; i < 3; ++i) {
    std::string got = http_get(mport);
    CHECK_MESSAGE(got.rfind("HTTP/1.1 200", 0) == 0, "got: ", got.substr(0, 200), "\n", d.log());
  }
  close_all(idle);
  CHECK_MESSAGE(d.wait_for_log("metrics: out of file descriptors (EMFILE) for") != npos, d.log());
  CHECK_MESSAGE(counted(d.log(), "metrics: out of file descriptors (EMFILE) for", "idle connection") > 0, d.log());
  CHECK(http_get(mport).rfind("HTTP/1.1 200", 0) == 0);
  double share = cpu.share();
  CHECK_MESSAGE(share < 0.5, "preforkd used ", share * 100, "% of a core over the episode");
  size_t lines = lines_with(d.log(), "metrics:");
  CHECK_MESSAGE(lines <= 6, lines, " lines about metrics:\n", d.log());
  CHECK(d.stop() == 0);
}

TEST_CASE("control abuse: with no fd left at all, preforkctl and scrapes are refused at once, then served again") {
  TempDir dir;
  uint16_t mport = free_port();
  Preforkd d(dir, "supervisor:\n  metrics: \"127.0.0.1:" + std::to_string(mport) + "\"\n" + one_program());
  REQUIRE(d.wait_workers(1));
  CpuShare cpu(d.pid());
  // No client holds an fd preforkd could give back: each listener's spare
  // fd is all there is, and it takes a waiting connection to refuse it.
  REQUIRE(set_soft_fd_limit(d.pid(), static_cast<rlim_t>(lowest_free_fd(d.pid()))));
  for (int i = 0; i < 10; ++i) {
    std::string got = http_get(mport);  // a hang would be "" after 10 s
    if (got.rfind("HTTP/1.1 503", 0) != 0) {
      FAIL_CHECK("scrape ", i, " got: ", got.substr(0, 200), "\n", d.log());
      break;  // one hang says it all
    }
  }
  auto [code, out] = preforkctl(d, "status");
  CHECK_MESSAGE(code == 1, out);
  CHECK_MESSAGE(out.find("preforkd is out of file descriptors") != npos, out);
  REQUIRE(set_soft_fd_limit(d.pid(), 64));
  // Recovered by itself: nothing was paused for good.
  CHECK(http_get(mport).rfind("HTTP/1.1 200", 0) == 0);
  auto [code2, out2] = preforkctl(d, "status");
  CHECK_MESSAGE(code2 == 0, out2);
  CHECK_MESSAGE(wait_until([&] {
                  return counted(d.log(), "metrics: out of file descriptors (EMFILE) for", "new connection") == 10;
                }),
                d.log());
  CHECK_MESSAGE(wait_until([&] {
                  return counted(d.log(), "control: out of file descriptors (EMFILE) for", "new connection") == 1;
                }),
                d.log());
  double share = cpu.share();
  CHECK_MESSAGE(share < 0.5, "preforkd used ", share * 100, "% of a core over the episode");
  CHECK_MESSAGE(lines_with(d.log(), "metrics:") <= 4, d.log());
  CHECK_MESSAGE(lines_with(d.log(), "control:") <= 4, d.log());
  CHECK(d.stop() == 0);
}

TEST_CASE("control abuse: 32+ idle /metrics connections do not lock a scrape out") {
  TempDir dir;
  uint16_t mport = free_port();
  Preforkd d(dir, "supervisor:\n  metrics: \"127.0.0.1:" + std::to_string(mport) + "\"\n" + one_program());
  auto idle = idle_tcp_clients(mport, 100);
  REQUIRE(idle.size() == 100);
  for (int i = 0; i < 3; ++i) {
    std::string got = http_get(mport);
    CHECK_MESSAGE(got.rfind("HTTP/1.1 200", 0) == 0, "got: ", got.substr(0, 200), "\n", d.log());
  }
  close_all(idle);
  CHECK_MESSAGE(d.wait_for_log("metrics: at the limit of 32 connections for") != npos, d.log());
  CHECK_MESSAGE(counted(d.log(), "metrics: at the limit of 32 connections for", "idle connection") > 0, d.log());
  size_t lines = lines_with(d.log(), "metrics:");
  CHECK_MESSAGE(lines <= 4, lines, " lines about metrics:\n", d.log());
  CHECK(d.stop() == 0);
}

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

TEST_CASE("control abuse: 64+ idle connections do not lock preforkctl out, and are logged once") {
  TempDir dir;
  Preforkd d(dir, one_program());
  auto idle = idle_unix_clients(d.control_socket(), 300);
  CHECK_MESSAGE(idle.size() == 300, "preforkd stopped taking connections after ", idle.size(), "\n", d.log());
  for (int i = 0; i < 3; ++i) {
    auto [code, out] = preforkctl(d, "status");
    CHECK_MESSAGE(code == 0, out, "\n", d.log());
  }
  close_all(idle);
  CHECK_MESSAGE(d.wait_for_log("control: at the limit of 64 clients for") != npos, d.log());
  CHECK_MESSAGE(counted(d.log(), "control: at the limit of 64 clients for", "idle connection") > 0, d.log());
  size_t lines = lines_with(d.log(), "control:");
  CHECK_MESSAGE(lines <= 4, lines, " lines about the control socket:\n", d.log());
  CHECK(d.stop() == 0);
}

TEST_CASE("control abuse: 64 clients dripping a byte every 100 ms neither lock preforkctl out nor stay forever") {
  TempDir dir;
  Preforkd d(dir, one_program());
  auto drip = idle_unix_clients(d.control_socket(), 64);
  REQUIRE(drip.size() == 64);
  // Each drips a request that never ends, a byte every 100 ms, and notes
  // when preforkd closes it. A silence timer would never fire.
  std::vector<bool> closed(drip.size(), false);
  std::atomic<bool> stop{false};
  std::atomic<size_t> n_closed{0};
  std::thread dripper([&] {
    while (!stop && n_closed < drip.size()) {
      for (size_t i = 0; i < drip.size(); ++i) {
        if (closed[i]) continue;
        char buf[256];
        ssize_t r = recv(drip[i], buf, sizeof buf, MSG_DONTWAIT);  // an error line, then EOF
        bool gone = r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
        if (!gone && send(drip[i], "{", 1, MSG_NOSIGNAL | MSG_DONTWAIT) < 0 && errno != EAGAIN) gone = true;
        if (gone) {
          closed[i] = true;
          ++n_closed;
        }
      }
      std::this_thread::sleep_for(100ms);
    }
  });
  std::this_thread::sleep_for(300ms);  // let the drip start (not what is asserted)
  for (int i = 0; i < 3; ++i) {
    auto [code, out] = preforkctl(d, "status");
    CHECK_MESSAGE(code == 0, out, "\n", d.log());
  }
  // The request deadline runs from connect, however the bytes trickle: every
  // dripper is cut off (10 s), none holds its slot for ever.
  bool all_cut = wait_until([&] { return n_closed == drip.size(); }, 30s);
  stop = true;
  dripper.join();
  CHECK_MESSAGE(all_cut, n_closed.load(), " of ", drip.size(), " dripping clients were closed\n", d.log());
  close_all(drip);
  CHECK(preforkctl(d, "status").first == 0);
  CHECK_MESSAGE(d.wait_for_log("control: at the limit of 64 clients for") != npos, d.log());
  CHECK_MESSAGE(counted(d.log(), "control: at the limit of 64 clients for", "idle connection") > 0, d.log());
  size_t lines = lines_with(d.log(), "control:");
  CHECK_MESSAGE(lines <= 4, lines, " lines about the control socket:\n", d.log());
  CHECK(d.stop() == 0);
}
