// notify_bench — how fast preforkd ingests notify lines, and what it costs it
// (T24: a flooding pipe must not starve the loop or grow memory), measured
// with the real binaries (figures for the closing note, never assertions):
//
//   counters  100 workers of `preforkd-test-worker --flood counters`: valid
//             COUNTER_lines=<n> lines, one write() each, as fast as preforkd drains
//   mixed     100 workers of `--flood mixed`: valid, malformed, decreasing and
//             overlong lines in rotation
//
// For each: preforkd's CPU share over a fixed window (utime+stime / wall time),
// its RSS at the start and the end of the window and its peak (VmHWM), then
// TERM; each worker reports "flood: wrote N lines in M ms" on stderr, which
// preforkd logs ("flood[3] <pid>: flood: wrote ..."): the sum of N over the
// mean M is the rate at which lines went into the pipes, that is the rate at
// which preforkd took them out (the pipes stay full: the writers block on
// POLLOUT), give or take the 64 KiB each pipe holds at the end.
//
// Usage: preforkd-notify-bench [counters|mixed|all] [--seconds S] [--workers N]
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

#include "support/support.hpp"

using namespace preforkd::test;
using Ms = std::chrono::duration<double, std::milli>;

namespace {

long status_kib(pid_t pid, const char* key) {
  std::string s = read_file("/proc/" + std::to_string(pid) + "/status");
  auto p = s.find(key);
  return p == std::string::npos ? -1 : std::atol(s.c_str() + p + std::strlen(key));
}

double mib(long kib) { return static_cast<double>(kib) / 1024.0; }

struct Reports {
  int workers = 0;
  unsigned long long lines = 0;
  double ms_sum = 0;
};

// Every "flood: wrote N lines in M ms" of the log.
Reports flood_reports(const std::string& log) {
  Reports r;
  const std::string needle = "flood: wrote ";
  for (size_t pos = log.find(needle); pos != std::string::npos; pos = log.find(needle, pos)) {
    pos += needle.size();
    unsigned long long n = 0;
    double ms = 0;
    if (std::sscanf(log.c_str() + pos, "%llu lines in %lf ms", &n, &ms) == 2) {
      ++r.workers;
      r.lines += n;
      r.ms_sum += ms;
    }
  }
  return r;
}

void bench_flood(const std::string& kind, int workers, int seconds) {
  TempDir dir;
  Preforkd d(dir,
             "supervisor: { shutdown_timeout: 60s }\n"
             "programs:\n  flood:\n    command: " +
                 bin("preforkd-test-worker") + " --flood " + kind + "\n    workers: " +
                 std::to_string(workers) + "\n    stop_timeout: 20s\n");
  if (!d.wait_workers(static_cast<size_t>(workers), 30s)) {
    std::fprintf(stderr, "%s: %d workers did not start\n", kind.c_str(), workers);
    return;
  }
  const long rss0 = rss_kib(d.pid());
  const auto cpu0 = cpu_ticks(d.pid());
  const auto t0 = Clock::now();
  std::this_thread::sleep_for(std::chrono::seconds(seconds));
  const auto cpu1 = cpu_ticks(d.pid());
  const double wall_s = Ms(Clock::now() - t0).count() / 1000.0;
  const long rss1 = rss_kib(d.pid());
  const long hwm = status_kib(d.pid(), "VmHWM:");
  const double cpu_share =
      static_cast<double>(cpu1 - cpu0) / static_cast<double>(sysconf(_SC_CLK_TCK)) / wall_s * 100.0;

  const auto s0 = Clock::now();
  const int rc = d.stop(90s);
  const double stop_ms = Ms(Clock::now() - s0).count();
  const std::string log = d.log();
  const Reports r = flood_reports(log);
  const double mean_s = r.workers > 0 ? r.ms_sum / r.workers / 1000.0 : 0;
  const double rate = mean_s > 0 ? static_cast<double>(r.lines) / mean_s : 0;

  std::printf("%-8s %d workers, %.1f s window: %.0f lines/s ingested (%llu lines from %d reports, mean %.2f s of flooding)\n",
              kind.c_str(), workers, wall_s, rate, r.lines, r.workers, mean_s);
  std::printf("%-8s preforkd CPU %.1f %% of one core; RSS %.2f MiB at the start, %.2f MiB at the end, peak %.2f MiB\n",
              kind.c_str(), cpu_share, mib(rss0), mib(rss1), mib(hwm));
  std::printf("%-8s TERM -> exit %d in %.0f ms; log %.1f KiB\n", kind.c_str(), rc, stop_ms,
              static_cast<double>(log.size()) / 1024.0);
  if (r.workers != workers)
    std::printf("%-8s warning: %d of %d workers reported\n", kind.c_str(), r.workers, workers);
}

}  // namespace

int main(int argc, char** argv) {
  std::string what = "all";
  int seconds = 5, workers = 100;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--seconds" && i + 1 < argc) {
      seconds = std::atoi(argv[++i]);
    } else if (a == "--workers" && i + 1 < argc) {
      workers = std::atoi(argv[++i]);
    } else if (a == "counters" || a == "mixed" || a == "all") {
      what = a;
    } else {
      std::fprintf(stderr, "usage: preforkd-notify-bench [counters|mixed|all] [--seconds S] [--workers N]\n");
      return 2;
    }
  }
  if (seconds < 1 || workers < 1) {
    std::fprintf(stderr, "preforkd-notify-bench: --seconds and --workers must be positive\n");
    return 2;
  }
  if (what == "counters" || what == "all") bench_flood("counters", workers, seconds);
  if (what == "mixed" || what == "all") bench_flood("mixed", workers, seconds);
  return 0;
}
