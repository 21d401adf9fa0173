// core_bench — the core's speed targets, measured with the real binaries on
// 127.0.0.1 (figures for the closing note, never assertions in tests):
//
//   respawn   SIGKILL of the only worker → first echo served by its
//             replacement, vs the floor: a bare fork + exec of the same
//             worker on an inherited socket → its first echo, in the same run.
//   start     1000 workers of a trivial program: time until preforkd has
//             exec'd them all, and preforkd's RSS.
//   idle      preforkd's context switches over a quiet period with 100
//             workers (target: 0 — no periodic wake-ups), and its RSS.
//   storm     1000 workers of a trivial program, all SIGKILLed at once: time
//             until every one is replaced, and the latency of the control
//             socket's `status` request sampled back to back meanwhile.
//
// Lines starting with "@" are one JSON object each, for bench/run.sh.
// (bench/compare.sh measures respawn and start against the anchors.)
//
// Usage: preforkd-core-bench [respawn|start|idle|storm|all] [--rounds N] [--workers N]
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <set>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "support/support.hpp"

using namespace preforkd::test;
using Ms = std::chrono::duration<double, std::milli>;

namespace {

// Connect + echo one line, retrying until it succeeds; returns when served.
void first_echo(uint16_t port) {
  for (;;) {
    if (echo_roundtrip(port, "x\n")) return;
  }
}

struct Stats {
  double median, p99, mean, max;
};

Stats stats(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  double sum = 0;
  for (double x : v) sum += x;
  auto at = [&](double q) { return v[std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size())))]; };
  return {at(0.5), at(0.99), sum / static_cast<double>(v.size()), v.back()};
}

void print(const char* what, const Stats& s) {
  std::printf("%-44s median %7.3f ms  p99 %7.3f ms  mean %7.3f ms  max %7.3f ms\n", what, s.median,
              s.p99, s.mean, s.max);
}

// The floor: we bind, fork + exec preforkd-echo with the socket at fd 3, and
// time until it answers.
std::vector<double> bare_fork_exec(int rounds) {
  int ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(ls, reinterpret_cast<sockaddr*>(&sin), sizeof sin);
  listen(ls, 128);
  socklen_t len = sizeof sin;
  getsockname(ls, reinterpret_cast<sockaddr*>(&sin), &len);
  uint16_t port = ntohs(sin.sin_port);
  std::string echo = bin("preforkd-echo");
  std::vector<double> out;
  for (int i = 0; i < rounds; ++i) {
    auto t0 = Clock::now();
    pid_t pid = fork();
    if (pid == 0) {
      if (ls == 3) fcntl(3, F_SETFD, 0);  // T11: dup2(3, 3) would keep FD_CLOEXEC
      else dup2(ls, 3);
      std::string lp = "LISTEN_PID=" + std::to_string(getpid());
      char* envp[] = {const_cast<char*>("LISTEN_FDS=1"), lp.data(), nullptr};
      char* argv[] = {echo.data(), nullptr};
      int null = ::open("/dev/null", O_RDWR);
      dup2(null, 1);
      dup2(null, 2);
      execve(echo.c_str(), argv, envp);
      _exit(127);
    }
    first_echo(port);
    out.push_back(Ms(Clock::now() - t0).count());
    kill(pid, SIGKILL);
    int st;
    waitpid(pid, &st, 0);
  }
  ::close(ls);
  return out;
}

void bench_respawn(int rounds) {
  TempDir dir;
  Preforkd d(dir,
             "programs:\n  echo:\n    command: " + bin("preforkd-echo") +
                 "\n    workers: 1\n    listen: [\"127.0.0.1:0\"]\n"
                 "    backoff: { min: 100ms, max: 1s, reset_after: 0s }\n",
             {});
  d.wait_workers(1);
  uint16_t port = d.port();
  if (port == 0) {
    std::fprintf(stderr, "respawn: no port\n");
    return;
  }
  first_echo(port);
  std::vector<double> lat;
  for (int i = 0; i < rounds; ++i) {
    auto workers = d.workers();
    if (workers.size() != 1) {
      wait_until([&] { return d.workers().size() == 1 && pid_alive(d.workers()[0]); }, 5s);
      workers = d.workers();
    }
    auto t0 = Clock::now();
    kill(workers[0], SIGKILL);
    first_echo(port);
    lat.push_back(Ms(Clock::now() - t0).count());
  }
  auto floor = bare_fork_exec(rounds);
  Stats s = stats(lat), f = stats(floor);
  print("respawn: SIGKILL -> replacement serves", s);
  print("floor: bare fork+exec -> first response", f);
  std::printf("respawn median / floor median = %.2f\n", s.median / f.median);
}

void bench_start(int workers) {
  TempDir dir;
  auto t0 = Clock::now();
  Preforkd d(dir,
             "programs:\n  t:\n    command: " + bin("preforkd-test-worker") + "\n    workers: " +
                 std::to_string(workers) + "\n");
  double ms = Ms(Clock::now() - t0).count();
  long rss = rss_kib(d.pid());
  std::printf("start: %d workers exec'd in %.1f ms; preforkd RSS %.2f MiB, %d fds\n", workers, ms,
              static_cast<double>(rss) / 1024.0, count_fds(d.pid()));
  auto s0 = Clock::now();
  d.stop(60s);
  std::printf("stop:  %d workers stopped (TERM) in %.1f ms\n", workers, Ms(Clock::now() - s0).count());
}

long ctx_switches(pid_t pid) {
  std::string s = read_file("/proc/" + std::to_string(pid) + "/status");
  long total = 0;
  for (const char* key : {"voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:"}) {
    auto p = s.find(key);
    if (p != std::string::npos) total += std::atol(s.c_str() + p + std::strlen(key));
  }
  return total;
}

void bench_idle(int seconds) {
  TempDir dir;
  Preforkd d(dir, "programs:\n  t:\n    command: " + bin("preforkd-test-worker") + "\n    workers: 100\n");
  d.wait_workers(100);
  std::this_thread::sleep_for(200ms);
  long before = ctx_switches(d.pid());
  auto cpu0 = cpu_ticks(d.pid());
  std::this_thread::sleep_for(std::chrono::seconds(seconds));
  long after = ctx_switches(d.pid());
  const unsigned long long ticks = cpu_ticks(d.pid()) - cpu0;
  const long rss = rss_kib(d.pid());
  std::printf("idle: %ld wake-ups of preforkd in %d s with 100 workers, %llu CPU ticks, RSS %.2f MiB\n",
              after - before, seconds, ticks, static_cast<double>(rss) / 1024.0);
  std::printf("@{\"bench\":\"idle\",\"workers\":100,\"seconds\":%d,\"wakeups\":%ld,\"cpu_ticks\":%llu,"
              "\"rss_kib\":%ld}\n",
              seconds, after - before, ticks, rss);
  d.stop();
}

// SIGKILL of all `workers` at once; until every slot has a live worker that
// is not one of the killed ones, the control socket's status request is sent
// back to back (one connection each, like preforkctl) and timed from connect
// to the reply's last byte.
void bench_storm(int workers) {
  TempDir dir;
  Preforkd d(dir,
             "supervisor: { shutdown_timeout: 60s }\n"
             "programs:\n  t:\n    command: " + bin("preforkd-test-worker") + "\n    workers: " +
                 std::to_string(workers) + "\n    backoff: { reset_after: 0s }\n");
  if (!d.wait_workers(static_cast<size_t>(workers), 60s)) {
    std::fprintf(stderr, "storm: %d workers did not start\n", workers);
    return;
  }
  std::this_thread::sleep_for(500ms);
  auto victims = d.workers();
  std::set<pid_t> killed(victims.begin(), victims.end());
  std::vector<double> status_ms;
  auto replaced = [&] {
    auto now = d.workers();
    if (now.size() != static_cast<size_t>(workers)) return false;
    for (pid_t p : now)
      if (killed.count(p) != 0) return false;
    return true;
  };
  const auto t0 = Clock::now();
  for (pid_t p : victims) kill(p, SIGKILL);
  double all_ms = -1;
  size_t failed = 0;
  while (Ms(Clock::now() - t0).count() < 60000) {
    auto s0 = Clock::now();
    std::string reply = unix_request(d.control_socket(), R"({"cmd":"status"})", 30s);
    status_ms.push_back(Ms(Clock::now() - s0).count());
    if (reply.empty()) ++failed;
    if (replaced()) {
      all_ms = Ms(Clock::now() - t0).count();
      break;
    }
  }
  Stats s = stats(status_ms);
  std::printf("storm: SIGKILL of %d workers -> all replaced in %.1f ms\n", workers, all_ms);
  print("storm: status latency meanwhile", s);
  std::printf("storm: %zu status requests, %zu without a reply; preforkd RSS %.2f MiB\n", status_ms.size(), failed,
              static_cast<double>(rss_kib(d.pid())) / 1024.0);
  std::string list;
  char buf[32];
  for (double v : status_ms) {
    std::snprintf(buf, sizeof buf, "%s%.3f", list.empty() ? "" : ",", v);
    list += buf;
  }
  std::printf("@{\"bench\":\"storm\",\"workers\":%d,\"replaced_ms\":%.3f,\"status_failed\":%zu,"
              "\"status_ms\":[%s]}\n",
              workers, all_ms, failed, list.c_str());
  d.stop(60s);
}

}  // namespace

int main(int argc, char** argv) {
  std::string what = argc > 1 ? argv[1] : "all";
  int rounds = 200, workers = 1000;
  for (int i = 2; i + 1 < argc; ++i) {
    if (std::string(argv[i]) == "--rounds") rounds = std::atoi(argv[i + 1]);
    if (std::string(argv[i]) == "--workers") workers = std::atoi(argv[i + 1]);
  }
  if (what != "respawn" && what != "start" && what != "idle" && what != "storm" && what != "all") {
    std::fprintf(stderr, "usage: preforkd-core-bench [respawn|start|idle|storm|all] [--rounds N] [--workers N]\n");
    return 2;
  }
  if (what == "respawn" || what == "all") bench_respawn(rounds);
  if (what == "start" || what == "all") bench_start(1000);
  if (what == "idle" || what == "all") bench_idle(10);
  if (what == "storm" || what == "all") bench_storm(workers);
  return 0;
}
