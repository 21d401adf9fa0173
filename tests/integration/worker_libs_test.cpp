// The helper libraries for workers (lib/python/preforkd, lib/node/preforkd.js)
// in real workers under preforkd: readiness, STATUS, counters, gauges and
// BUSY arrive (status, stats, metrics), the inherited sockets are found with
// their names, and outside preforkd every function is a no-op returning false.
// The workers are tests/helpers/lib_worker.{py,js}; the libraries are taken
// from the source tree.
#include <doctest/doctest.h>
#include <unistd.h>

#include <set>
#include <string>

#include "support/http.hpp"
#include "support/support.hpp"

using namespace preforkd::test;

namespace {

const std::string kSource = PREFORKD_SOURCE_DIR;

// `node` from $PATH ("" without one).
std::string find_node() {
  auto [rc, out] = run({"/bin/sh", "-c", "command -v node"}, 10s);
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  return rc == 0 && !out.empty() && out[0] == '/' ? out : "";
}

// One line read from a connection to 127.0.0.1:port ("" on failure).
std::string first_line(uint16_t port) {
  std::string got = http_exchange(port, "");
  return got.substr(0, got.find('\n'));
}

// Two workers of `command` on two named sockets: everything the library
// reports arrives, and each socket answers with its own name.
void check_library_worker(const std::string& command, const std::string& env, const std::string& lang) {
  TempDir dir;
  uint16_t a = free_port(), b = free_port();
  uint16_t mport = free_port();
  std::string yaml = "supervisor:\n  metrics: \"127.0.0.1:" + std::to_string(mport) +
                     "\"\nprograms:\n  lib:\n    command: " + command +
                     "\n    workers: 2\n    ready: notify\n    start_timeout: 30s\n"
                     "    listen: [{address: \"127.0.0.1:" + std::to_string(a) +
                     "\", name: front}, {address: \"127.0.0.1:" + std::to_string(b) +
                     "\", name: admin}]\n    environment:\n" + env;
  Preforkd d(dir, yaml);
  const std::string status = lang + " lib: front,admin";
  REQUIRE_MESSAGE(wait_until([&] { return ready_with_status(d, "lib", 2, status); }, 30s), d.log());
  CHECK(first_line(a) == "front");
  CHECK(first_line(b) == "admin");
  auto stats = program_of(d.control({{"cmd", "stats"}}), "lib");
  CHECK_MESSAGE(stats["counters"]["requests"] == 10, stats.dump());
  CHECK_MESSAGE(stats["gauges"]["connections"] == 14, stats.dump());
  CHECK_MESSAGE(stats["notify_errors"] == 0, stats.dump());
  CHECK(wait_until([&] { return metric_sample(scrape_metrics(mport), "preforkd_workers_busy{program=\"lib\"}") == 2; }));
  CHECK(metric_sample(scrape_metrics(mport), "preforkd_program_requests_total{program=\"lib\"}") == 10);
  CHECK(d.stop() == 0);
}

}  // namespace

TEST_CASE("python helper library: a worker reports readiness, status, counters, gauges and busy through the pipe") {
  check_library_worker("/usr/bin/python3 " + kSource + "/tests/helpers/lib_worker.py",
                       "      PYTHONPATH: " + kSource + "/lib/python\n", "python");
}

TEST_CASE("python helper library: without the notify pipe it sends the same lines to NOTIFY_SOCKET") {
  check_library_worker("/usr/bin/python3 " + kSource + "/tests/helpers/lib_worker.py",
                       "      PYTHONPATH: " + kSource + "/lib/python\n      LIB_TEST_NO_PIPE: \"1\"\n", "python");
}

TEST_CASE("python helper library: outside preforkd every function returns False and finds no socket") {
  auto [rc, out] = run({"/usr/bin/env", "-u", "PREFORKD_NOTIFY_FD", "-u", "NOTIFY_SOCKET", "-u", "LISTEN_FDS",
                        "-u", "LISTEN_PID", "PYTHONPATH=" + kSource + "/lib/python", "/usr/bin/python3", "-c",
                        "import preforkd as p; print(p.enabled(), p.ready(), p.status('x'), p.counter('requests'), "
                        "p.gauge('g', -1), p.busy(False), p.watchdog(), p.listen_sockets())"});
  CHECK_MESSAGE(rc == 0, out);
  CHECK(out == "False False False False False False False []\n");
  // A name the protocol does not allow is the caller's bug: an exception, not a dropped line.
  auto [rc2, out2] = run({"/usr/bin/env", "PYTHONPATH=" + kSource + "/lib/python", "/usr/bin/python3", "-c",
                          "import preforkd as p\ntry:\n  p.counter('Bad-Name')\nexcept ValueError as e:\n  print('ValueError')"});
  CHECK_MESSAGE(out2 == "ValueError\n", out2);
}

TEST_CASE("node helper library: a worker reports readiness, status, counters, gauges and busy through the pipe") {
  std::string node = find_node();
  if (node.empty()) {
    MESSAGE("SKIPPED: no `node` in $PATH (Debian's nodejs, Build-Depends); run packaging/install-build-deps.sh");
    return;
  }
  check_library_worker(node + " " + kSource + "/tests/helpers/lib_worker.js",
                       "      LIB_TEST_NODE_MODULE: " + kSource + "/lib/node/preforkd.js\n", "node");
}

TEST_CASE("node helper library: outside preforkd every function returns false and finds no socket") {
  std::string node = find_node();
  if (node.empty()) {
    MESSAGE("SKIPPED: no `node` in $PATH (Debian's nodejs, Build-Depends); run packaging/install-build-deps.sh");
    return;
  }
  auto [rc, out] = run({"/usr/bin/env", "-u", "PREFORKD_NOTIFY_FD", "-u", "LISTEN_FDS", "-u", "LISTEN_PID", node, "-e",
                        "const p = require('" + kSource + "/lib/node/preforkd.js'); console.log([p.enabled(), "
                        "p.ready(), p.status('x'), p.counter('requests'), p.gauge('g', -1), p.busy(false), "
                        "p.watchdog()].join(' '), JSON.stringify(p.listenFds()))"});
  CHECK_MESSAGE(rc == 0, out);
  CHECK(out == "false false false false false false false []\n");
}
