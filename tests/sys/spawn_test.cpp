// sys/spawn: real fork + exec of the test worker, checked from inside it.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <memory>
#include <set>
#include <vector>

#include "support/support.hpp"
#include "sys/exit_status.hpp"
#include "sys/io.hpp"
#include "sys/spawn.hpp"
#include "sys/unique_fd.hpp"

using namespace preforkd;
using namespace preforkd::test;

namespace {

sys::SpawnRequest base_request(const TempDir& dir, const std::string& dump = "state.json") {
  sys::SpawnRequest r;
  r.path = bin("preforkd-test-worker");
  r.argv = {"preforkd-test-worker", "--dump-state", dir.file(dump), "--exit", "0"};
  r.env = {"PATH=/usr/bin:/bin", "MARK=1"};
  r.fds = {{0, 0}, {1, 1}, {2, 2}};
  return r;
}

// Both ways of spawning, with the same checks: spawn() waits for the exec
// (CLONE_VFORK); spawn_async() returns at once, and the child's watch fd
// reads EOF once it has exec'd or failed.
sys::SpawnResult spawn_in(bool async, const sys::SpawnRequest& r) {
  if (!async) return sys::spawn(r);
  sys::SpawnResult out;
  auto a = sys::spawn_async(r);
  if (!a.child) {
    out.error = sys::SpawnError{sys::SpawnError::Stage::Fork, 0};
    return out;
  }
  while (!a.child->left()) REQUIRE(sys::wait_readable(a.child->watch_fd(), 10000) == 1);
  if (auto f = a.child->failure()) {
    int st = 0;
    ::waitpid(a.child->pid(), &st, 0);
    out.error = f;
    return out;
  }
  out.pid = a.child->pid();
  return out;
}

int wait_exit(pid_t pid) {
  int st = 0;
  waitpid(pid, &st, 0);
  return st;
}

std::set<long> fd_numbers(const nlohmann::json& j) {
  std::set<long> out;
  for (const auto& f : j["fds"]) out.insert(f["fd"].get<long>());
  return out;
}

}  // namespace

TEST_CASE("T11 spawn: sources already at 3 and 4, swapped, all land without CLOEXEC") {
  for (bool async : {false, true}) {
    CAPTURE(async);
    TempDir dir;
    int sv[2], sv2[2];
    REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    REQUIRE(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sv2) == 0);
    // Put a stream socket at fd 40 and a datagram socket at fd 41, then ask for
    // them swapped into 41 -> 3, 40 -> 4 while a third (fd 3's own) maps to 5.
    sys::UniqueFd a(fcntl(sv[0], F_DUPFD_CLOEXEC, 40)), b(fcntl(sv2[0], F_DUPFD_CLOEXEC, 41));
    auto r = base_request(dir);
    r.fds.push_back({b.get(), 3});
    r.fds.push_back({a.get(), 4});
    r.fds.push_back({sv[1], 5});
    auto res = spawn_in(async, r);
    REQUIRE(res.pid > 0);
    CHECK(wait_exit(res.pid) == 0);
    auto j = read_json(dir.file("state.json"));
    CHECK(fd_numbers(j) == std::set<long>{0, 1, 2, 3, 4, 5});
    for (const auto& f : j["fds"]) {
      CHECK(!f["cloexec"].get<bool>());
      if (f["fd"] == 3) CHECK(f["socket_type"] == "dgram");
      if (f["fd"] == 4) CHECK(f["socket_type"] == "stream");
    }
    for (int fd : {sv[0], sv[1], sv2[0], sv2[1]}) ::close(fd);
  }
}

TEST_CASE("T11 spawn: a source that already sits at its target keeps working (src == dst)") {
  for (bool async : {false, true}) {
    CAPTURE(async);
    TempDir dir;
    int fds[2];
    REQUIRE(pipe2(fds, O_CLOEXEC) == 0);
    int want = fds[0];
    auto r = base_request(dir);
    r.fds.push_back({want, want});
    if (want < 3) return;  // cannot happen with 0-2 open
    auto res = spawn_in(async, r);
    REQUIRE(res.pid > 0);
    wait_exit(res.pid);
    auto j = read_json(dir.file("state.json"));
    CHECK(fd_numbers(j).count(want) == 1);
    ::close(fds[0]);
    ::close(fds[1]);
  }
}

TEST_CASE("T5 spawn: fds the parent opened without CLOEXEC do not leak") {
  for (bool async : {false, true}) {
    CAPTURE(async);
    TempDir dir;
    int leaky = ::open("/dev/null", O_RDONLY);  // no O_CLOEXEC on purpose
    REQUIRE(leaky >= 0);
    auto r = base_request(dir);
    auto res = spawn_in(async, r);
    REQUIRE(res.pid > 0);
    wait_exit(res.pid);
    auto j = read_json(dir.file("state.json"));
    CHECK(fd_numbers(j) == std::set<long>{0, 1, 2});
    ::close(leaky);
  }
}

TEST_CASE("T12 spawn: LISTEN_PID is the child's own pid, written in the child") {
  for (bool async : {false, true}) {
    CAPTURE(async);
    TempDir dir;
    auto r = base_request(dir);
    r.set_listen_pid = true;
    auto res = spawn_in(async, r);
    REQUIRE(res.pid > 0);
    wait_exit(res.pid);
    auto j = read_json(dir.file("state.json"));
    CHECK(j["env"]["LISTEN_PID"] == std::to_string(res.pid));
    CHECK(j["env"]["MARK"] == "1");
    CHECK(j["env"].size() == 3);
  }
}

TEST_CASE("T6 T7 spawn: the child gets an empty mask and default dispositions") {
  for (bool async : {false, true}) {
    CAPTURE(async);
    TempDir dir;
    // Run the spawn in a forked helper that blocks and ignores signals first, so
    // the test binary itself stays clean.
    pid_t helper = fork();
    if (helper == 0) {
      signal(SIGPIPE, SIG_IGN);
      signal(SIGUSR1, SIG_IGN);
      sigset_t set;
      sigemptyset(&set);
      sigaddset(&set, SIGTERM);
      sigaddset(&set, SIGCHLD);
      sigprocmask(SIG_BLOCK, &set, nullptr);
      auto res = spawn_in(async, base_request(dir));
      if (res.pid <= 0) _exit(1);
      _exit(wait_exit(res.pid) == 0 ? 0 : 2);
    }
    CHECK(wait_exit(helper) == 0);
    auto j = read_json(dir.file("state.json"));
    CHECK(j["sigblk"] == "0000000000000000");
    CHECK(j["sigign"] == "0000000000000000");
    CHECK(j["pgid"] == j["pid"]);
  }
}

TEST_CASE("T10 spawn: exec failures come back as errors with their errno, the child reaped") {
  for (bool async : {false, true}) {
    CAPTURE(async);
    TempDir dir;
    auto r = base_request(dir);
    r.path = "/no/such/program";
    auto res = spawn_in(async, r);
    REQUIRE(res.error);
    CHECK(res.pid == -1);
    CHECK(res.error->describe(r) == "exec /no/such/program: No such file or directory");

    r = base_request(dir);
    r.path = dir.write("plain.txt", "not a program\n");
    chmod(r.path.c_str(), 0644);
    res = spawn_in(async, r);
    REQUIRE(res.error);
    CHECK(res.error->err == EACCES);

    r = base_request(dir);
    r.directory = "/no/such/dir";
    res = spawn_in(async, r);
    REQUIRE(res.error);
    CHECK(res.error->describe(r) == "chdir /no/such/dir: No such file or directory");

    int st = 0;
    CHECK(waitpid(-1, &st, WNOHANG) == -1);  // no child left behind
  }
}

TEST_CASE("spawn_async: 100 children in flight at once, each reaches its own exec") {
  // Each has its own stack and plan in preforkd's memory; none may see
  // another's. Every child dumps its state with its own argv and env.
  TempDir dir;
  std::vector<std::unique_ptr<sys::StartingChild>> kids;
  for (int i = 0; i < 100; ++i) {
    auto r = base_request(dir, "s" + std::to_string(i) + ".json");
    r.env.push_back("INDEX=" + std::to_string(i));
    r.set_listen_pid = true;
    auto a = sys::spawn_async(std::move(r));
    REQUIRE(a.child);
    kids.push_back(std::move(a.child));
  }
  for (int i = 0; i < 100; ++i) {
    auto& k = *kids[static_cast<size_t>(i)];
    while (!k.left()) REQUIRE(sys::wait_readable(k.watch_fd(), 10000) == 1);
    CHECK(!k.failure());
    CHECK(wait_exit(k.pid()) == 0);
    auto j = read_json(dir.file("s" + std::to_string(i) + ".json"));
    CHECK(j["env"]["INDEX"] == std::to_string(i));
    CHECK(j["env"]["LISTEN_PID"] == std::to_string(k.pid()));
  }
}

TEST_CASE("T5 spawn: 200 spawn/reap cycles and 50 failed spawns leak no fd in the parent") {
  for (bool async : {false, true}) {
    CAPTURE(async);
    TempDir dir;
    int before = count_fds(getpid());
    auto r = base_request(dir);
    r.argv = {"preforkd-test-worker", "--exit", "0"};
    for (int i = 0; i < 200; ++i) {
      auto res = spawn_in(async, r);
      REQUIRE(res.pid > 0);
      wait_exit(res.pid);
    }
    r.path = "/no/such/program";
    for (int i = 0; i < 50; ++i) REQUIRE(spawn_in(async, r).error);
    CHECK(count_fds(getpid()) == before);
  }
}

TEST_CASE("T4 exit status: decoded with the W* macros only") {
  CHECK(sys::ExitStatus::exited(3).to_string() == "exited with status 3");
  CHECK(sys::ExitStatus::killed(SIGKILL).to_string() == "killed by signal 9 (KILL)");
  CHECK(sys::ExitStatus::killed(SIGSEGV, true).to_string() == "killed by signal 11 (SEGV) (core dumped)");
  pid_t p = fork();
  if (p == 0) raise(SIGKILL);
  int st = 0;
  waitpid(p, &st, 0);
  auto s = sys::ExitStatus::from_wait_status(st);
  CHECK(s.signaled());
  CHECK(s.signal() == SIGKILL);
  CHECK(s.exit_code() == -1);
  p = fork();
  if (p == 0) _exit(7);
  waitpid(p, &st, 0);
  CHECK(sys::ExitStatus::from_wait_status(st).exit_code() == 7);
}
