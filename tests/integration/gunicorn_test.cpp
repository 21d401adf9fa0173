// Debian's gunicorn, unmodified, under preforkd: the README's configuration
// as written (only paths, the port and the worker count made local to the
// test) becomes ready through gunicorn's own sd_notify on NOTIFY_SOCKET,
// with no hook and no wrapper, and serves.
//
// Needs /usr/bin/gunicorn (Debian's gunicorn and python3-gunicorn,
// Build-Depends <!nocheck>); without it each test says so and passes.
#include <doctest/doctest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <pwd.h>

#include <string>

#include "support/support.hpp"

using namespace preforkd::test;

namespace {

const char* const kGunicorn = "/usr/bin/gunicorn";

bool have_gunicorn() {
  if (::access(kGunicorn, X_OK) != 0) return false;
  return run({"/usr/bin/python3", "-c", "import gunicorn"}, 20s).first == 0;
}

#define REQUIRE_GUNICORN()                                                                                  \
  if (!have_gunicorn()) {                                                                                   \
    MESSAGE("SKIPPED: " << kGunicorn << " (Debian's gunicorn + python3-gunicorn, Build-Depends) is not "    \
                        "installed; run packaging/install-build-deps.sh");                                   \
    return;                                                                                                 \
  }

// The ```yaml block of README.md that runs gunicorn.
std::string readme_gunicorn_example() {
  std::string readme = read_file(std::string(PREFORKD_SOURCE_DIR) + "/README.md");
  for (size_t at = readme.find("```yaml\n"); at != std::string::npos; at = readme.find("```yaml\n", at + 1)) {
    size_t start = at + 8, end = readme.find("```", start);
    if (end == std::string::npos) break;
    std::string block = readme.substr(start, end - start);
    if (block.find("gunicorn") != std::string::npos) return block;
  }
  return "";
}

void replace(std::string& text, const std::string& from, const std::string& to) {
  size_t at = text.find(from);
  REQUIRE_MESSAGE(at != std::string::npos, "`" << from << "` is not in:\n" << text);
  text.replace(at, from.size(), to);
}

// GET / over HTTP/1.0 on 127.0.0.1:port; the whole response ("" on failure).
std::string http_get(uint16_t port) {
  int fd = connect_tcp(port);
  if (fd < 0) return "";
  const std::string req = "GET / HTTP/1.0\r\nHost: localhost\r\n\r\n";
  std::string out;
  timeval tv{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(req.size())) {
    char buf[4096];
    for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;) out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

size_t count(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

const char* const kApp =
    "def wsgi(environ, start_response):\n"
    "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
    "    return [b'hello from gunicorn\\n']\n";

// Every worker of `program` is ready with STATUS `status`, and there are `n`.
bool all_ready(const Preforkd& d, const std::string& program, size_t n, const std::string& status) {
  auto p = program_of(d.control({{"cmd", "status"}}), program);
  if (p.is_null() || p["workers"].size() != n) return false;
  for (const auto& w : p["workers"])
    if (w["state"] != "ready" || w["status"] != status || w.value("retiring", false)) return false;
  return true;
}

}  // namespace

TEST_CASE("gunicorn: the README's example, as written, becomes ready through gunicorn's own sd_notify and serves") {
  REQUIRE_GUNICORN();
  TempDir dir;
  std::string yaml = readme_gunicorn_example();
  REQUIRE_MESSAGE(!yaml.empty(), "no gunicorn example in README.md");
  CHECK(yaml.find("ready: notify") != std::string::npos);
  CHECK(yaml.find("command: /usr/bin/gunicorn app:wsgi") != std::string::npos);
  // Made local to the test: the paths, the port, two workers instead of one per CPU.
  std::string app_dir = dir.path() + "/web";
  REQUIRE(::mkdir(app_dir.c_str(), 0755) == 0);
  dir.write("web/app.py", kApp);
  uint16_t port = free_port();
  replace(yaml, "/run/preforkd.pid", dir.file("preforkd.pid"));
  replace(yaml, "/srv/web", app_dir);
  replace(yaml, "127.0.0.1:8000", "127.0.0.1:" + std::to_string(port));
  replace(yaml, "/run/web.sock", dir.file("web.sock"));
  replace(yaml, "workers: auto", "workers: 2");
  if (::geteuid() == 0 && ::getpwnam("www-data") != nullptr) {
    REQUIRE(::chmod(dir.path().c_str(), 0755) == 0);  // www-data reads app.py
  } else {
    replace(yaml, "    user: www-data\n", "");  // cannot switch users: run as ourselves
  }
  Preforkd d(dir, yaml);
  CHECK_MESSAGE(wait_until([&] { return all_ready(d, "web", 2, "Gunicorn arbiter booted"); }, 30s), d.log());
  std::string response = http_get(port);
  CHECK_MESSAGE(response.find("200 OK") != std::string::npos, response);
  CHECK_MESSAGE(response.find("hello from gunicorn") != std::string::npos, response);
  CHECK(program_of(d.control({{"cmd", "stats"}}), "web")["notify_errors"] == 0);
  CHECK(d.log().find("no READY=1 within start_timeout") == std::string::npos);
  // gunicorn's arbiter says READY=1 before it boots its own workers, and a
  // TERM that arrives while it boots one can leave it hanging until
  // stop_timeout (gunicorn's behaviour, not preforkd's): stop once both did.
  CHECK(wait_until([&] { return count(d.log(), "Booting worker with pid") >= 2; }, 30s));
  CHECK(d.stop() == 0);
}

TEST_CASE("gunicorn: a reload to an app that does not load (app:nosuch) never takes the old generation down") {
  REQUIRE_GUNICORN();
  TempDir dir;
  std::string app_dir = dir.path() + "/web";
  REQUIRE(::mkdir(app_dir.c_str(), 0755) == 0);
  dir.write("web/app.py", kApp);
  uint16_t port = free_port();
  auto yaml = [&](const std::string& app) {
    return "programs:\n  web:\n    command: " + std::string(kGunicorn) + " " + app + "\n    directory: " + app_dir +
           "\n    workers: 2\n    listen: [\"127.0.0.1:" + std::to_string(port) + "\"]\n    ready: notify\n";
  };
  Preforkd d(dir, yaml("app:wsgi"));
  REQUIRE_MESSAGE(wait_until([&] { return all_ready(d, "web", 2, "Gunicorn arbiter booted"); }, 30s), d.log());
  REQUIRE(wait_until([&] { return count(d.log(), "Booting worker with pid") >= 2; }, 30s));
  d.rewrite(yaml("app:nosuch"));
  // gunicorn says READY=1, then its worker fails to load the app and it
  // exits 4: within settle the rollout aborts, after it the guard rolls back.
  auto r = d.control({{"cmd", "reload"}}, 120s);
  INFO(d.log());
  CHECK(r["ok"] == false);
  CHECK_MESSAGE(r["error"].get<std::string>().find("web") != std::string::npos, r.dump());
  CHECK(wait_until([&] { return all_ready(d, "web", 2, "Gunicorn arbiter booted"); }, 30s));
  auto p = program_of(d.control({{"cmd", "status"}}), "web");
  CHECK(p["generation"] == 1);
  for (const auto& w : p["workers"]) CHECK(w["generation"] == 1);
  std::string response = http_get(port);
  CHECK_MESSAGE(response.find("hello from gunicorn") != std::string::npos, response);
  // Every arbiter has booted its worker (see above: a TERM meanwhile can hang gunicorn).
  CHECK(wait_until([&] {
    std::string log = d.log();
    return count(log, "Booting worker with pid") >= count(log, "Listening at:");
  }, 30s));
  CHECK(d.stop() == 0);
}
