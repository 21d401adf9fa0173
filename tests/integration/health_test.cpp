// GET /healthz and GET /readyz on the metrics listener (SPEC "Health
// endpoints"): what Kubernetes probes and load balancers ask.
#include <doctest/doctest.h>
#include <signal.h>

#include <set>
#include <string>

#include "support/http.hpp"
#include "support/support.hpp"

using namespace preforkd::test;

namespace {

std::string get(uint16_t port, const std::string& path) {
  return http_exchange(port, "GET " + path + " HTTP/1.1\r\nHost: x\r\n\r\n");
}

bool status_is(const std::string& response, const std::string& code) {
  return response.rfind("HTTP/1.1 " + code, 0) == 0;
}

std::string metrics_line(uint16_t port) {
  return "supervisor:\n  metrics: \"127.0.0.1:" + std::to_string(port) + "\"\n";
}

}  // namespace

TEST_CASE("health: /healthz is 200 while the loop runs; /readyz is 200 once every program has a ready worker") {
  TempDir dir;
  uint16_t mport = free_port();
  // `late` becomes ready only when told to (ready: notify, it never says READY=1).
  Preforkd d(dir, metrics_line(mport) +
                      "programs:\n"
                      "  web:\n    command: [" + bin("preforkd-test-worker") + ", --notify, READY=1]\n"
                      "    workers: 2\n    ready: notify\n"
                      "  late:\n    command: [" + bin("preforkd-test-worker") + "]\n"
                      "    workers: 2\n    ready: notify\n    ready_min: 2\n    start_timeout: 1h\n");
  std::string h = get(mport, "/healthz");
  CHECK_MESSAGE(status_is(h, "200"), h);
  CHECK(http_body(h) == "ok\n");
  // `late` has no ready worker and needs 2: 503, with the reason; `web`
  // is not named once a worker of it said READY=1 (ready_min: 1 default).
  std::string r;
  REQUIRE_MESSAGE(wait_until([&] {
    r = get(mport, "/readyz");
    return status_is(r, "503") && http_body(r) == "late: 0 worker(s) ready, 2 needed\n";
  }), r);
  CHECK(r.find("Content-Type: text/plain") != std::string::npos);

  // ready_min: 0 asks nothing of `late`: applies in place on reload.
  std::string yaml = read_file(d.config_path());
  yaml.replace(yaml.find("ready_min: 2"), 12, "ready_min: 0");
  d.rewrite(yaml);
  REQUIRE(d.control({{"cmd", "reload"}}, 30s).value("ok", false));
  REQUIRE(wait_until([&] { return status_is(r = get(mport, "/readyz"), "200"); }));
  CHECK(http_body(r) == "ready\n");
  CHECK(status_is(http_exchange(mport, "HEAD /readyz HTTP/1.1\r\n\r\n"), "200"));
  CHECK(d.stop() == 0);
}

TEST_CASE("health: /readyz is 503 while a program is crash-looping, and while preforkd shuts down") {
  TempDir dir;
  uint16_t mport = free_port();
  Preforkd d(dir, metrics_line(mport) +
                      "programs:\n"
                      "  ok:\n    command: [" + bin("preforkd-test-worker") + ", --ignore-term]\n"
                      "    workers: 1\n    stop_timeout: 30s\n"
                      "  crash:\n    command: [" + bin("preforkd-test-worker") + ", --exit, 3]\n"
                      "    workers: 1\n    backoff: { min: 10ms, max: 50ms, reset_after: 1h }\n");
  std::string r;
  REQUIRE_MESSAGE(wait_until([&] {
    r = get(mport, "/readyz");
    return r.find("crash: 0 worker(s) ready, 1 needed (crash-looping)") != std::string::npos;
  }), r);
  CHECK(status_is(r, "503"));
  CHECK(status_is(get(mport, "/healthz"), "200"));  // alive, though not ready

  // Stop `crash`: what is stopped on purpose is not waited for.
  REQUIRE(d.control({{"cmd", "stop"}, {"program", "crash"}}, 30s).value("ok", false));
  REQUIRE(wait_until([&] { return status_is(r = get(mport, "/readyz"), "200"); }));

  // TERM: `ok` ignores it for stop_timeout, so preforkd stays in its
  // shutdown; /readyz says so (load balancers stop sending), /healthz is 200.
  // `ok` is ready at its exec (ready: exec), before it ignores TERM: wait.
  std::set<pid_t> ok = pids_of(d.control({{"cmd", "status"}}), "ok");
  REQUIRE(ok.size() == 1);
  REQUIRE(all_ignore_term({ok.begin(), ok.end()}));
  REQUIRE(d.process().signal(SIGTERM));
  REQUIRE_MESSAGE(wait_until([&] {
    r = get(mport, "/readyz");
    return status_is(r, "503") && http_body(r) == "preforkd is shutting down\n";
  }), r);
  CHECK(status_is(get(mport, "/healthz"), "200"));
  REQUIRE(d.process().signal(SIGQUIT));  // fast stop: SIGKILL to what is left
  auto st = d.process().wait(20s);
  REQUIRE(st.has_value());
}
