// core_bench — the core's speed targets, measured with the real binaries on
// 127.0.0.1 (figures for the closing note, never assertions in tests):
//
//   respawn   SIGKILL of the only worker → first echo served by its
//             replacement, vs the floor: a bare fork + exec of the same
//             worker on an inherited socket → its first echo, in the same run.
//   start     1000 workers of a trivial program: time until preforkd has
//             exec'd them all, and preforkd's RSS.
//   idle      preforkd's context switches over a quiet period with 100
//             workers (target: 0 — no periodic wake-ups).
//
// Usage: preforkd-core-bench [respawn|start|idle|all] [--rounds N]
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
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
  std::printf("idle: %ld wake-ups of preforkd in %d s with 100 workers, %llu CPU ticks\n",
              after - before, seconds, cpu_ticks(d.pid()) - cpu0);
  d.stop();
}

}  // namespace

int main(int argc, char** argv) {
  std::string what = argc > 1 ? argv[1] : "all";
  int rounds = 200;
  for (int i = 2; i + 1 < argc; ++i)
    if (std::string(argv[i]) == "--rounds") rounds = std::atoi(argv[i + 1]);
  if (what == "respawn" || what == "all") bench_respawn(rounds);
  if (what == "start" || what == "all") bench_start(1000);
  if (what == "idle" || what == "all") bench_idle(10);
  return 0;
}
