// Every example of conf/examples/<server>/ runs as written, with only its
// port made local (and the worker count made 2, and the in-tree helper
// libraries put in reach), on the Debian package of its server, and:
// - is served by several workers (distinct pids answer, all slots ready);
// - a worker killed with SIGKILL is replaced, and serving goes on;
// - a reload that changes the environment rolls every worker to a new
//   process with no failed request under a small load;
// - TERM leaves no process of the example and the port closed.
// A server whose package is missing is SKIPPED with a message saying so.
#include <doctest/doctest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "support/http.hpp"
#include "support/load.hpp"
#include "support/support.hpp"

using namespace preforkd::test;
namespace fs = std::filesystem;

namespace {

const std::string kSource = PREFORKD_SOURCE_DIR;

void replace_all(std::string& text, const std::string& from, const std::string& to) {
  size_t at = text.find(from);
  REQUIRE_MESSAGE(at != std::string::npos, "`" << from << "` is not in:\n" << text);
  for (; at != std::string::npos; at = text.find(from, at + to.size())) text.replace(at, from.size(), to);
}

size_t count(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

std::string trimmed(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

std::string find_node() {
  auto [rc, out] = run({"/bin/sh", "-c", "command -v node"}, 10s);
  out = trimmed(out);
  return rc == 0 && !out.empty() && out[0] == '/' ? out : "";
}

bool python_has(const std::string& module) {
  return run({"/usr/bin/python3", "-c", "import " + module}, 30s).first == 0;
}

struct Example {
  std::string folder;             // conf/examples/<folder>
  std::string program;            // its program's name
  std::string greeting;           // the body starts with it: "hello from gunicorn pid "
  std::string default_listen;     // the address in its files: "127.0.0.1:8000"
  std::vector<std::string> port_files;  // other files naming that address
  bool python_lib = false;        // needs lib/python (PYTHONPATH)
  bool counts_requests = false;   // reports COUNTER_requests
  // Whatever the example needs besides the copy: a file edited, a binary built.
  std::function<void(const TempDir&, std::string& yaml)> prepare;
  // Holds once the server has finished starting whatever it starts after its
  // READY=1 (gunicorn boots its worker then; a TERM meanwhile can hang it).
  std::function<bool(const std::string& log, size_t slots)> settled;
};

// The pids of every descendant of `root`.
std::set<pid_t> descendants(pid_t root) {
  std::set<pid_t> out;
  std::vector<pid_t> todo{root};
  while (!todo.empty()) {
    pid_t p = todo.back();
    todo.pop_back();
    for (pid_t c : children_of(p))
      if (out.insert(c).second) todo.push_back(c);
  }
  return out;
}

// The pid in "... pid 1234" of a response body, or 0.
pid_t pid_in(const std::string& response, const std::string& greeting) {
  std::string body = http_body(response);
  if (body.rfind(greeting, 0) != 0) return 0;
  try {
    return static_cast<pid_t>(std::stol(body.substr(greeting.size())));
  } catch (...) {
    return 0;
  }
}

// Eight requests at once (so that servers which hand a light load to the
// same worker still spread); the pids that answered.
std::set<pid_t> answering_pids(uint16_t port, const std::string& greeting) {
  std::vector<int> fds;
  const std::string req = "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
  for (int i = 0; i < 8; ++i) {
    int fd = connect_tcp(port);
    if (fd < 0) continue;
    timeval tv{5, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::send(fd, req.data(), req.size(), MSG_NOSIGNAL);
    fds.push_back(fd);
  }
  std::set<pid_t> pids;
  for (int fd : fds) {
    std::string got;
    char buf[4096];
    for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;) got.append(buf, static_cast<size_t>(n));
    ::close(fd);
    if (pid_t p = pid_in(got, greeting)) pids.insert(p);
  }
  return pids;
}

// `n` workers, all ready, none retiring, all of `generation` (0: any).
bool all_ready(const Preforkd& d, const std::string& program, size_t n, int generation = 0) {
  auto p = program_of(d.control({{"cmd", "status"}}), program);
  if (p.is_null() || p["workers"].size() != n) return false;
  for (const auto& w : p["workers"]) {
    if (w["state"] != "ready" || w.value("retiring", false)) return false;
    if (generation != 0 && w["generation"] != generation) return false;
  }
  return true;
}

std::set<pid_t> worker_pids(const Preforkd& d, const std::string& program) {
  return pids_of(d.control({{"cmd", "status"}}), program);
}

void run_example(const Example& ex) {
  const size_t kWorkers = 2;
  TempDir dir;
  const std::string from = kSource + "/conf/examples/" + ex.folder;
  // The example's folder, as is, beside the config the test writes.
  for (const auto& entry : fs::directory_iterator(from))
    if (entry.path().filename() != "preforkd.yaml")
      fs::copy_file(entry.path(), dir.file(entry.path().filename().string()));
  std::string yaml = read_file(from + "/preforkd.yaml");
  REQUIRE(!yaml.empty());
  const uint16_t port = free_port();
  const std::string listen = "127.0.0.1:" + std::to_string(port);
  replace_all(yaml, ex.default_listen, listen);
  for (const auto& file : ex.port_files) {
    std::string text = read_file(dir.file(file));
    replace_all(text, ex.default_listen, listen);
    dir.write(file, text);
  }
  replace_all(yaml, "    workers: ", "    workers: " + std::to_string(kWorkers) + "  # was ");
  if (ex.python_lib) replace_all(yaml, "    environment:\n", "    environment:\n      PYTHONPATH: " + kSource + "/lib/python\n");
  if (ex.prepare) ex.prepare(dir, yaml);
  INFO("example conf/examples/" << ex.folder << ", run as:\n" << yaml);

  Preforkd d(dir, yaml);
  INFO("preforkd's log: " << dir.file("preforkd.log"));
  // Served by several workers.
  REQUIRE_MESSAGE(wait_until([&] { return all_ready(d, ex.program, kWorkers); }, 60s), d.log());
  std::set<pid_t> answered;
  CHECK_MESSAGE(wait_until([&] {
    for (pid_t p : answering_pids(port, ex.greeting)) answered.insert(p);
    return answered.size() >= 2;
  }, 60s), "pids that answered: " << answered.size() << "\n" << d.log());
  std::set<pid_t> tree = descendants(d.pid());
  for (pid_t p : answered) CHECK_MESSAGE(tree.count(p) == 1, "pid " << p << " is not a process of preforkd's");
  if (ex.settled) REQUIRE(wait_until([&] { return ex.settled(d.log(), kWorkers); }, 60s));

  // SIGKILL of a worker: replaced, and serving goes on.
  std::set<pid_t> before = worker_pids(d, ex.program);
  REQUIRE(before.size() == kWorkers);
  pid_t victim = *before.begin();
  REQUIRE(::kill(victim, SIGKILL) == 0);
  CHECK_MESSAGE(wait_until([&] {
    auto now = worker_pids(d, ex.program);
    return now.count(victim) == 0 && now.size() == kWorkers && all_ready(d, ex.program, kWorkers);
  }, 60s), d.log());
  CHECK(wait_until([&] { return !answering_pids(port, ex.greeting).empty(); }, 30s));
  if (ex.settled) REQUIRE(wait_until([&] { return ex.settled(d.log(), kWorkers + 1); }, 60s));

  // A reload that changes how workers start rolls them all, under load, with no failed request.
  before = worker_pids(d, ex.program);
  Load::Options options = Load::Options::paced(10ms);
  options.http_body = std::nullopt;  // each worker says its pid
  Load load(port, Load::Mode::HttpShort, 4, options);
  load.start();
  CHECK_MESSAGE(load.wait_ok(20, 30s), load.describe());
  std::string rolled = yaml;
  replace_all(rolled, "    environment:\n", "    environment:\n      EXAMPLE_RELOADED: \"yes\"\n");
  d.rewrite(rolled);
  auto reply = d.control({{"cmd", "reload"}}, 120s);
  CHECK_MESSAGE(reply["ok"] == true, reply.dump() << "\n" << d.log());
  CHECK_MESSAGE(wait_until([&] { return all_ready(d, ex.program, kWorkers, 2); }, 60s), d.log());
  CHECK_MESSAGE(load.wait_ok(20, 30s), load.describe());
  load.stop();
  auto counts = load.counts();
  CHECK_MESSAGE(counts.errors_total() == 0, load.describe() << "\n" << d.log());
  CHECK(counts.ok > 0);
  for (pid_t p : worker_pids(d, ex.program)) CHECK_MESSAGE(before.count(p) == 0, "worker " << p << " was not replaced");
  if (ex.counts_requests) {  // the app reports COUNTER_requests (helper library or sd_notify)
    auto stats = program_of(d.control({{"cmd", "stats"}}), ex.program);
    CHECK_MESSAGE(stats["counters"].value("requests", 0) > 0, stats.dump());
    CHECK_MESSAGE(stats["notify_errors"] == 0, stats.dump());
  }
  if (ex.settled) REQUIRE(wait_until([&] { return ex.settled(d.log(), 2 * kWorkers + 1); }, 60s));

  // TERM leaves nothing behind.
  tree = descendants(d.pid());
  CHECK(tree.size() >= kWorkers);
  CHECK_MESSAGE(d.stop(30s) == 0, d.log());
  for (pid_t p : tree) CHECK_MESSAGE(!pid_alive(p), "pid " << p << " outlived preforkd");
  CHECK_MESSAGE(connect_tcp(port, 1s) < 0, "something still listens on " << listen);
}

#define SKIP_UNLESS(condition, what)                                                                        \
  if (!(condition)) {                                                                                       \
    MESSAGE("SKIPPED: " << what << " is not installed; run packaging/install-build-deps.sh");               \
    return;                                                                                                 \
  }

}  // namespace

TEST_CASE("examples: gunicorn (conf/examples/gunicorn) serves from several workers, heals, rolls, stops clean") {
  SKIP_UNLESS(::access("/usr/bin/gunicorn", X_OK) == 0 && python_has("gunicorn"), "Debian's gunicorn (/usr/bin/gunicorn)");
  Example ex{"gunicorn", "web", "hello from gunicorn pid ", "127.0.0.1:8000", {}, false, false, nullptr, nullptr};
  // Every arbiter (one per start) has booted its worker.
  ex.settled = [](const std::string& log, size_t starts) {
    return count(log, "Booting worker with pid") >= starts && count(log, "Booting worker with pid") >= count(log, "Listening at:");
  };
  run_example(ex);
}

TEST_CASE("examples: uvicorn (conf/examples/uvicorn) serves from several workers, heals, rolls, stops clean") {
  SKIP_UNLESS(python_has("uvicorn"), "Debian's python3-uvicorn");
  run_example({"uvicorn", "web", "hello from uvicorn pid ", "127.0.0.1:8000", {}, true, true, nullptr, nullptr});
}

TEST_CASE("examples: Node.js (conf/examples/node) serves from several workers, heals, rolls, stops clean") {
  std::string node = find_node();
  SKIP_UNLESS(!node.empty(), "`node` (Debian's nodejs)");
  Example ex{"node", "web", "hello from node pid ", "127.0.0.1:8000", {}, false, true, nullptr, nullptr};
  ex.prepare = [node](const TempDir& dir, std::string& yaml) {
    replace_all(yaml, "/usr/bin/node", node);
    std::string js = read_file(dir.file("server.js"));
    replace_all(js, "/usr/share/preforkd/preforkd.js", kSource + "/lib/node/preforkd.js");
    dir.write("server.js", js);
  };
  run_example(ex);
}

TEST_CASE("examples: aiohttp (conf/examples/aiohttp) serves from several workers, heals, rolls, stops clean") {
  SKIP_UNLESS(python_has("aiohttp"), "Debian's python3-aiohttp");
  run_example({"aiohttp", "web", "hello from aiohttp pid ", "127.0.0.1:8000", {}, true, true, nullptr, nullptr});
}

TEST_CASE("examples: nginx (conf/examples/nginx) serves from several masters, heals, rolls, stops clean") {
  SKIP_UNLESS(::access("/usr/sbin/nginx", X_OK) == 0, "Debian's nginx (nginx-light or nginx, /usr/sbin/nginx)");
  run_example({"nginx", "nginx", "hello from nginx pid ", "127.0.0.1:8080", {"nginx.conf"}, false, false, nullptr, nullptr});
}

TEST_CASE("examples: plain Python worker (conf/examples/python) serves from several workers, heals, rolls, stops clean") {
  run_example({"python", "web", "hello from python pid ", "127.0.0.1:8000", {}, true, true, nullptr, nullptr});
}

TEST_CASE("examples: C worker on libsystemd (conf/examples/c-libsystemd) serves from several workers, heals, rolls, stops clean") {
  Example ex{"c-libsystemd", "web", "hello from c pid ", "127.0.0.1:8000", {}, false, true, nullptr, nullptr};
  ex.prepare = [](const TempDir& dir, std::string&) {
    // Built by CMake from the example's worker.c, as its preforkd.yaml says.
    fs::copy_file(bin("preforkd-example-c-worker"), dir.file("worker"));
    REQUIRE(::chmod(dir.file("worker").c_str(), 0755) == 0);
  };
  ex.greeting = "hello from c pid ";
  run_example(ex);
}
