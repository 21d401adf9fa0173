// preforkd-echo — the reference worker: the TCP echo server of the classic
// multiprocess-server texts, serving many clients at once in one process on the
// listening sockets it inherits from preforkd (or systemd), speaking the worker
// protocol (READY=1, STOPPING=1, WATCHDOG=1, STATUS=, and the COUNTER_/GAUGE_
// lines described in server.hpp). `--http` answers every HTTP/1.x
// request with a fixed 200 instead, for load tests; `--http --serial` serves one
// request at a time and accepts only when free (serial.cpp). Run standalone with
// `--listen ADDR` to compare against the supervised setup.
//
// main() is the table of contents: parse, open sockets, serve, map errors to exit
// codes (0 drained, 1 runtime failure, 2 usage, 4 drained by --fail-after).
#include <getopt.h>
#include <preforkd/worker.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "listeners.hpp"
#include "server.hpp"

namespace {

using preforkd::echo::Listener;
using preforkd::echo::UsageError;

constexpr int kBacklog = 1024;

constexpr char kUsage[] =
    "usage: preforkd-echo [--http [--serial]] [--delay-ms N] [--io-threads N] [--no-stats] [--fail-after MS]\n"
    "                     [--listen ADDR]...\n"
    "\n"
    "Echoes every byte back to each client (or, with --http, answers every HTTP/1.x\n"
    "request with a fixed 200), on the listening sockets inherited from preforkd or\n"
    "systemd (LISTEN_FDS, fds 3..), or standalone on the --listen addresses.\n"
    "\n"
    "  -l, --listen ADDR    host:port, [v6]:port or unix:/path (repeatable); used only\n"
    "                       when no socket is inherited\n"
    "      --http           HTTP/1.1 mode: keep-alive, pipelining, fixed \"ok\" body\n"
    "      --delay-ms N     http: spend N ms on each request before answering, holding\n"
    "                       its I/O thread (a slow synchronous worker, for load tests)\n"    "      --serial         http: one request at a time, one thread, and accept a\n"
    "                       connection only when free, so what cannot be served yet\n"
    "                       waits in the kernel's accept queue (like gunicorn's sync\n"
    "                       worker or PHP-FPM); BUSY=1/BUSY=0 around each request;\n"
    "                       every reply says \"Connection: close\" (no keep-alive);\n"
    "                       SIGTERM is taken between two requests\n"
    "  -t, --io-threads N   epoll I/O threads (default 1; preforkd scales by workers)\n"
    "      --no-stats       neither count nor send the requests, connections, bytes_in,\n"
    "                       bytes_out counters, the active_connections gauge and BUSY=\n"
    "      --fail-after MS  after serving MS milliseconds, drain as on SIGTERM and exit 4:\n"
    "                       a build that breaks after it started (to try reload.guard)\n"
    "  -h, --help           this text\n"
    "\n"
    "SIGTERM or SIGINT drains: stop accepting, finish in-flight work, exit 0 (within 5 s).\n";

struct Options {
  std::vector<std::string> listen;
  preforkd::echo::ServerOptions server;
};

Options parse_options(int argc, char** argv) {
  enum { kHttp = 256, kNoStats, kDelay, kFailAfter, kSerial };
  static const option long_options[] = {
      {"listen", required_argument, nullptr, 'l'},
      {"http", no_argument, nullptr, kHttp},
      {"serial", no_argument, nullptr, kSerial},
      {"io-threads", required_argument, nullptr, 't'},
      {"no-stats", no_argument, nullptr, kNoStats},
      {"delay-ms", required_argument, nullptr, kDelay},
      {"fail-after", required_argument, nullptr, kFailAfter},
      {"help", no_argument, nullptr, 'h'},
      {nullptr, 0, nullptr, 0},
  };
  Options opt;
  opterr = 0;  // we word the errors ourselves
  for (;;) {
    int c = getopt_long(argc, argv, ":l:t:h", long_options, nullptr);
    if (c == -1) break;
    switch (c) {
      case 'l':
        opt.listen.emplace_back(optarg);
        break;
      case kHttp:
        opt.server.mode = preforkd::echo::Mode::Http;
        break;
      case kSerial:
        opt.server.serial = true;
        break;
      case kNoStats:
        opt.server.stats = false;
        break;
      case kDelay: {
        char* end = nullptr;
        long n = std::strtol(optarg, &end, 10);
        if (end == optarg || *end != '\0' || n < 0 || n > 60000)
          throw UsageError(std::string("--delay-ms: expected 0..60000, got '") + optarg + "'");
        opt.server.delay = std::chrono::milliseconds(n);
        break;
      }
      case kFailAfter: {
        char* end = nullptr;
        long long ms = std::strtoll(optarg, &end, 10);
        if (end == optarg || *end != '\0' || ms < 0 || ms > 86400000LL)
          throw UsageError(std::string("--fail-after: expected milliseconds 0..86400000, got '") + optarg + "'");
        opt.server.fail_after = std::chrono::milliseconds(ms);
        break;
      }
      case 't': {
        char* end = nullptr;
        long n = std::strtol(optarg, &end, 10);
        if (end == optarg || *end != '\0' || n < 1 || n > 256)
          throw UsageError(std::string("--io-threads: expected 1..256, got '") + optarg + "'");
        opt.server.io_threads = static_cast<int>(n);
        break;
      }
      case 'h':
        std::fputs(kUsage, stdout);
        std::exit(0);
      case ':':
        throw UsageError(std::string("option '") + argv[optind - 1] + "' needs a value");
      default:
        throw UsageError(std::string("unknown option '") + argv[optind - 1] + "'");
    }
  }
  if (optind < argc) throw UsageError(std::string("unexpected argument '") + argv[optind] + "'");
  if (opt.server.serial && opt.server.mode != preforkd::echo::Mode::Http) throw UsageError("--serial needs --http");
  return opt;
}

std::vector<Listener> open_listeners(const Options& opt) {
  // Leave LISTEN_* in place: we never exec, and LISTEN_PID guards forked children.
  int n = preforkd_listen_fds(0);
  if (n < 0)
    throw std::runtime_error(std::string("inherited sockets (LISTEN_PID/LISTEN_FDS): ") +
                             std::strerror(-n));
  if (n > 0) {
    if (!opt.listen.empty())
      std::fprintf(stderr, "preforkd-echo: serving %d inherited socket(s); --listen ignored\n", n);
    return preforkd::echo::adopt_inherited(n);
  }
  if (opt.listen.empty()) throw UsageError("no socket: none inherited (LISTEN_FDS) and no --listen");
  std::vector<Listener> out;
  try {
    for (const std::string& spec : opt.listen) {
      out.push_back(preforkd::echo::bind_listener(spec, kBacklog));
      // Standalone runs often use port 0: say where we are.
      std::fprintf(stderr, "preforkd-echo: listening on %s\n",
                   preforkd::echo::local_address(out.back().fd).c_str());
    }
  } catch (...) {
    preforkd::echo::close_listeners(out);
    throw;
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    Options opt = parse_options(argc, argv);
    std::vector<Listener> listeners = open_listeners(opt);
    if (opt.server.serial) return preforkd::echo::serve_serial(listeners, opt.server);  // closes them too
    return preforkd::echo::serve(listeners, opt.server);  // closes the listeners
  } catch (const UsageError& e) {
    std::fprintf(stderr, "preforkd-echo: %s\nTry 'preforkd-echo --help'.\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "preforkd-echo: %s\n", e.what());
    return 1;
  }
}
