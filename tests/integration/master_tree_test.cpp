// Master-style servers (issue #15 item 2): under a worker that forks the
// processes that serve (gunicorn, nginx), `status` lists those processes
// (the worker's descendants, by parent chain), and what they send over
// NOTIFY_SOCKET counts for the worker's slot.
#include <doctest/doctest.h>

#include <set>
#include <string>

#include "support/support.hpp"

using namespace preforkd::test;

namespace {

// A master that forks two children and waits. Child A reports for the slot
// over NOTIFY_SOCKET (from the master's process group, as a gunicorn worker
// would); child B forks grandchild C, which leaves the group with setsid()
// (still below the worker by parent chain). TERM: the master stops them.
const char kMaster[] = R"PY(
import os, signal, socket, sys, time

def notify(text):
    addr = os.environ["NOTIFY_SOCKET"]
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.connect(addr)
    s.sendall(text.encode())
    s.close()

def sleep_forever():
    signal.signal(signal.SIGTERM, lambda *a: os._exit(0))
    while True:
        signal.pause()

a = os.fork()
if a == 0:
    notify("STATUS=served by %d\nCOUNTER_requests=5\nBUSY=1\n" % os.getpid())
    sleep_forever()
b = os.fork()
if b == 0:
    c = os.fork()
    if c == 0:
        os.setsid()
        sleep_forever()
    signal.signal(signal.SIGTERM, lambda *x: (os.kill(c, signal.SIGTERM), os._exit(0)))
    while True:
        signal.pause()

def stop(*_):
    for pid in (a, b):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for _ in (a, b):
        try:
            os.wait()
        except ChildProcessError:
            break
    os._exit(0)
signal.signal(signal.SIGTERM, stop)
while True:
    signal.pause()
)PY";

std::set<pid_t> tree_below(pid_t pid) {
  std::set<pid_t> out;
  for (pid_t c : children_of(pid)) {
    out.insert(c);
    for (pid_t g : tree_below(c)) out.insert(g);
  }
  return out;
}

}  // namespace

TEST_CASE("master-style worker: status lists its descendants, and its children's NOTIFY_SOCKET lines count") {
  TempDir dir;
  std::string script = dir.write("master.py", kMaster);
  Preforkd d(dir, "programs:\n  web:\n    command: [/usr/bin/python3, " + script +
                      "]\n    kill_group: true\n    stop_timeout: 5s\n");
  REQUIRE(d.wait_workers(1));
  pid_t master = d.workers().at(0);
  std::set<pid_t> expected;
  REQUIRE_MESSAGE(wait_until([&] {
                    expected = tree_below(master);
                    return expected.size() == 3;
                  }),
                  d.log());

  nlohmann::json w;
  REQUIRE_MESSAGE(wait_until([&] {
                    w = program_of(d.control({{"cmd", "status"}}), "web")["workers"][0];
                    return w.value("status", "").rfind("served by ", 0) == 0 && w["descendants"].size() == 3;
                  }),
                  w.dump(), "\n", d.log());
  CHECK(w["pid"].get<pid_t>() == master);
  std::set<pid_t> listed;
  for (const auto& p : w["descendants"]) listed.insert(p.get<pid_t>());
  CHECK(listed == expected);
  // The status came from a child, not from the master.
  pid_t sender = std::stoi(w["status"].get<std::string>().substr(10));
  CHECK(sender != master);
  CHECK(listed.count(sender) == 1);
  CHECK(w["busy"] == true);
  CHECK(program_of(d.control({{"cmd", "stats"}}), "web")["counters"].value("requests", 0) == 5);

  // preforkctl draws them under the worker.
  auto [code, out] = run({bin("preforkctl"), "-s", d.control_socket(), "status"});
  CHECK(code == 0);
  for (pid_t p : expected) CHECK_MESSAGE(out.find("\\_ " + std::to_string(p)) != std::string::npos, out);

  CHECK(d.stop() == 0);
}

TEST_CASE("a worker without children lists no descendants") {
  TempDir dir;
  Preforkd d(dir, "programs:\n  web:\n    command: " + bin("preforkd-test-worker") + "\n    workers: 2\n");
  REQUIRE(d.wait_workers(2));
  auto p = program_of(d.control({{"cmd", "status"}}), "web");
  REQUIRE(p["workers"].size() == 2);
  for (const auto& w : p["workers"]) {
    CHECK(w["descendants"].is_array());
    CHECK(w["descendants"].empty());
  }
  CHECK(d.stop() == 0);
}
