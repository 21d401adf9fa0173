// Load awareness, part 1: the kernel's accept queue of each listener, read by
// preforkd on demand, with no worker's help. Every worker is stopped, so only
// preforkd can answer, and the queue fills up.
#include <doctest/doctest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <csignal>
#include <cstring>
#include <functional>
#include <regex>
#include <string>
#include <vector>

#include "support/http.hpp"
#include "support/support.hpp"

using namespace preforkd::test;

namespace {

int connect_unix(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un sun{};
  sun.sun_family = AF_UNIX;
  std::strncpy(sun.sun_path, path.c_str(), sizeof sun.sun_path - 1);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&sun), sizeof sun) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

void signal_all(const std::vector<pid_t>& pids, int sig) {
  for (pid_t p : pids) ::kill(p, sig);
}

// Stops every worker, opens 50 connections, and checks the queue through
// /metrics, `status` and `stats`; then lets the workers go and waits for 0.
void check_queue(Preforkd& d, uint16_t mport, const std::function<int()>& connect_one) {
  const std::string q = "preforkd_listen_queue{program=\"w\",listen=\"w\"}";
  const std::string qmax = "preforkd_listen_queue_max{program=\"w\",listen=\"w\"}";
  std::string text = scrape_metrics(mport);
  CHECK(metric_sample(text, q) == 0);
  CHECK(metric_sample(text, qmax) == 100);  // the configured backlog (below somaxconn)

  auto workers = d.workers();
  REQUIRE(workers.size() == 2);
  signal_all(workers, SIGSTOP);
  REQUIRE(wait_until([&] {
    for (pid_t p : workers)
      if (proc_state(p) != 'T') return false;
    return true;
  }));
  std::vector<int> clients;
  for (int i = 0; i < 50; ++i) {
    int fd = connect_one();
    REQUIRE(fd >= 0);
    clients.push_back(fd);
  }
  // The scrape answers while every worker is stopped.
  REQUIRE(wait_until([&] { return metric_sample(scrape_metrics(mport), q) >= 45; }));
  text = scrape_metrics(mport);
  CHECK(metric_sample(text, q) >= 45);
  CHECK(metric_sample(text, q) <= 50);
  CHECK(metric_sample(text, qmax) == 100);

  auto status = d.control({{"cmd", "status"}});
  auto l = program_of(status, "w")["listeners"];
  REQUIRE(l.size() == 1);
  CHECK(l[0]["listen"] == "w");
  CHECK(l[0]["queue"].get<int>() >= 45);
  CHECK(l[0]["queue_max"] == 100);
  auto stats = d.control({{"cmd", "stats"}});
  CHECK(program_of(stats, "w")["listeners"][0]["queue"].get<int>() >= 45);
  auto [code, out] = run({bin("preforkctl"), "-s", d.control_socket(), "status"});
  CHECK(code == 0);
  CHECK_MESSAGE(std::regex_search(out, std::regex("QUEUE.*\n\\S+ +running +2/2 +(4[5-9]|50)/100\\b")), out);

  signal_all(workers, SIGCONT);
  CHECK(wait_until([&] { return metric_sample(scrape_metrics(mport), q) == 0; }));
  for (int fd : clients) ::close(fd);
  CHECK(metric_sample(scrape_metrics(mport), q) == 0);
  CHECK(d.stop() == 0);
}

}  // namespace

TEST_CASE("listen_queue: TCP - every worker stopped, 50 connections queue up, 0 once served") {
  TempDir dir;
  uint16_t mport = free_port();
  Preforkd d(dir, "supervisor:\n  metrics: \"127.0.0.1:" + std::to_string(mport) + "\"\n"
                  "programs:\n  w:\n    command: [" + bin("preforkd-echo") + "]\n"
                  "    listen: 127.0.0.1:0\n    backlog: 100\n    workers: 2\n");
  uint16_t port = d.port();
  check_queue(d, mport, [&] { return connect_tcp(port); });
}

TEST_CASE("listen_queue: Unix socket - every worker stopped, 50 connections queue up, 0 once served") {
  TempDir dir;
  uint16_t mport = free_port();
  std::string path = dir.path() + "/w.sock";
  Preforkd d(dir, "supervisor:\n  metrics: \"127.0.0.1:" + std::to_string(mport) + "\"\n"
                  "programs:\n  w:\n    command: [" + bin("preforkd-echo") + "]\n"
                  "    listen: \"unix:" + path + "\"\n    backlog: 100\n    workers: 2\n");
  check_queue(d, mport, [&] { return connect_unix(path); });
}

TEST_CASE("listen_queue: every program and listener has its queue samples from the start") {
  TempDir dir;
  uint16_t mport = free_port();
  Preforkd d(dir, "supervisor:\n  metrics: \"127.0.0.1:" + std::to_string(mport) + "\"\n"
                  "programs:\n  w:\n    command: [" + bin("preforkd-echo") + "]\n"
                  "    listen: [127.0.0.1:" + std::to_string(free_port()) + ", 127.0.0.1:" +
                  std::to_string(free_port()) + "]\n    workers: 2\n    reuseport: true\n"
                  "  none:\n    command: [" + bin("preforkd-test-worker") + "]\n    workers: 0\n");
  std::string text = scrape_metrics(mport);
  CHECK(metric_sample(text, "preforkd_listen_queue{program=\"w\",listen=\"w\"}") == 0);
  CHECK(metric_sample(text, "preforkd_listen_queue{program=\"w\",listen=\"w-1\"}") == 0);
  // reuseport: the two slots' sockets, summed (1024 each by default).
  CHECK(metric_sample(text, "preforkd_listen_queue_max{program=\"w\",listen=\"w-1\"}") == 2048);
  CHECK(text.find("program=\"none\",listen") == std::string::npos);  // no listen: no sample
  CHECK(text.find("# TYPE preforkd_listen_queue gauge") != std::string::npos);
  CHECK(d.stop() == 0);
}
