// systemd integration (SPEC "Packaging"): the Type=notify messages, read from a
// real NOTIFY_SOCKET the test binds, and socket activation: listening sockets
// passed as fds 3.. with LISTEN_FDS/LISTEN_PID/LISTEN_FDNAMES, set in the
// child between fork and exec exactly as systemd sets them.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>

#include "support/support.hpp"

using namespace preforkd::test;

namespace {

// The receiving end of NOTIFY_SOCKET: a Unix datagram socket, as systemd's.
class NotifySocket {
 public:
  explicit NotifySocket(const std::string& path) : path_(path) {
    fd_ = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    sockaddr_un sun{};
    sun.sun_family = AF_UNIX;
    std::snprintf(sun.sun_path, sizeof sun.sun_path, "%s", path.c_str());
    REQUIRE(bind(fd_, reinterpret_cast<sockaddr*>(&sun), sizeof sun) == 0);
  }
  ~NotifySocket() { ::close(fd_); }
  const std::string& path() const { return path_; }

  // Reads every datagram that has arrived; each is one sd_notify() call.
  const std::vector<std::string>& poll() {
    char buf[4096];
    for (ssize_t n; (n = recv(fd_, buf, sizeof buf, 0)) > 0;) messages_.emplace_back(buf, static_cast<size_t>(n));
    return messages_;
  }
  // Index of the first message from `from` on that contains `line` as one of its lines.
  std::optional<size_t> find(const std::string& line, size_t from = 0) {
    poll();
    for (size_t i = from; i < messages_.size(); ++i)
      if (("\n" + messages_[i] + "\n").find("\n" + line + "\n") != std::string::npos) return i;
    return std::nullopt;
  }
  std::optional<size_t> wait_for(const std::string& line, std::chrono::milliseconds timeout = 10s,
                                 size_t from = 0) {
    std::optional<size_t> at;
    wait_until([&] { return (at = find(line, from)).has_value(); }, timeout);
    return at;
  }
  std::string all() {
    std::string out;
    for (const auto& m : poll()) out += "[" + m + "] ";
    return out;
  }

 private:
  std::string path_;
  int fd_ = -1;
  std::vector<std::string> messages_;
};

std::string socket_inode(int fd) {
  struct stat st {};
  REQUIRE(fstat(fd, &st) == 0);
  return "socket:[" + std::to_string(st.st_ino) + "]";
}

// The targets of a process's fds ("socket:[123]", "/dev/null", ...).
std::vector<std::string> fd_targets(pid_t pid) {
  std::vector<std::string> out;
  for (const auto& e : std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd")) {
    std::error_code ec;
    auto target = std::filesystem::read_symlink(e.path(), ec);
    if (!ec) out.push_back(target.string());
  }
  return out;
}

bool holds(pid_t pid, const std::string& target) {
  auto t = fd_targets(pid);
  return std::find(t.begin(), t.end(), target) != t.end();
}

// What systemd does in the service's process before exec: the sockets at
// fds 3.., LISTEN_PID = the pid that will exec preforkd, LISTEN_FDS and
// (unless empty) LISTEN_FDNAMES. Runs in the forked child (Process::in_child).
std::function<void()> socket_activation(std::vector<int> fds, std::string names) {
  return [fds, names] {
    // Out of the way first, so that moving one to 3.. cannot clobber another (T11);
    // the copies are CLOEXEC and gone at exec, dup2 clears it on the targets.
    std::vector<int> high;
    for (int fd : fds) high.push_back(fcntl(fd, F_DUPFD_CLOEXEC, 100));
    for (size_t i = 0; i < high.size(); ++i) dup2(high[i], 3 + static_cast<int>(i));
    setenv("LISTEN_FDS", std::to_string(fds.size()).c_str(), 1);
    setenv("LISTEN_PID", std::to_string(getpid()).c_str(), 1);
    if (names.empty())
      unsetenv("LISTEN_FDNAMES");
    else
      setenv("LISTEN_FDNAMES", names.c_str(), 1);
  };
}

}  // namespace

TEST_CASE("systemd: READY=1 once every worker runs, STATUS= as workers get ready, STOPPING=1 on SIGTERM") {
  TempDir dir;
  NotifySocket sd(dir.file("notify.sock"));
  const size_t n = 20;  // spawning 20 takes long enough that an early READY=1 would be caught
  Preforkd d(dir,
             "programs:\n"
             "  w:\n"
             "    command: [" + bin("preforkd-test-worker") + ", --dump-state, " + dir.file("state-%p.json") +
                 ", --notify, READY=1]\n"
             "    workers: " + std::to_string(n) + "\n"
             "    ready: notify\n"
             "    stop_timeout: 5s\n",
             {}, false, [path = sd.path()] { setenv("NOTIFY_SOCKET", path.c_str(), 1); });

  // READY=1 means "started": by the time it is sent every worker exists.
  auto ready = sd.wait_for("READY=1", 20s);
  REQUIRE_MESSAGE(ready.has_value(), sd.all() << "\n" << d.log());
  CHECK(d.workers().size() == n);
  CHECK(d.log().find("started " + std::to_string(n) + " worker(s)") != std::string::npos);
  // STATUS= follows the workers' own READY=1 lines until all are ready.
  REQUIRE_MESSAGE(sd.wait_for("STATUS=" + std::to_string(n) + "/" + std::to_string(n) + " workers ready").has_value(),
                  sd.all());
  CHECK_FALSE(sd.find("STOPPING=1").has_value());

  // systemd's NOTIFY_SOCKET is preforkd's, not its workers' (they get a clean
  // environment): theirs names preforkd's own socket.
  std::vector<nlohmann::json> dumps;
  REQUIRE(wait_until([&] {
    dumps.clear();
    for (const auto& e : std::filesystem::directory_iterator(dir.path()))
      if (e.path().filename().string().rfind("state-", 0) == 0) dumps.push_back(read_json(e.path().string()));
    return dumps.size() == n;
  }));
  for (const auto& j : dumps) CHECK(j["env"]["NOTIFY_SOCKET"] == "@preforkd-" + std::to_string(d.pid()) + "-notify");

  size_t before = sd.poll().size();
  REQUIRE(d.process().signal(SIGTERM));
  auto stopping = sd.wait_for("STOPPING=1", 10s, before);
  REQUIRE_MESSAGE(stopping.has_value(), sd.all());
  // Read the socket while preforkd stops, as systemd does: its queue holds
  // only net.unix.max_dgram_qlen datagrams (10 here), and preforkd drops a
  // STATUS= that does not fit rather than block, so a reader that waits
  // for the exit first would miss the last ones.
  std::optional<int> st;
  wait_until([&] {
    sd.poll();
    return (st = d.process().wait(0ms)).has_value();
  }, 20s);
  REQUIRE(st.has_value());
  CHECK(WIFEXITED(*st));
  CHECK(WEXITSTATUS(*st) == 0);
  CHECK(sd.find("STATUS=shutting down, 0 worker(s) left", *stopping).has_value());
}

TEST_CASE("systemd: socket activation: a socket passed by name serves the program and preforkd binds nothing itself") {
  TempDir dir;
  uint16_t passed_port = 0, blocked_port = 0;
  int passed = listen_loopback(passed_port);
  // The configured address is taken by someone else: binding it would fail (exit 1).
  int blocker = listen_loopback(blocked_port);
  // As with NonBlocking=yes: preforkd must hand it to workers blocking (T19).
  fcntl(passed, F_SETFL, fcntl(passed, F_GETFL) | O_NONBLOCK);

  Preforkd d(dir,
             "programs:\n"
             "  echo:\n"
             "    command: " + bin("preforkd-echo") + "\n"
             "    workers: 2\n"
             "    listen: [{address: \"127.0.0.1:" + std::to_string(blocked_port) + "\", name: web}]\n"
             "    stop_timeout: 5s\n",
             {}, true, socket_activation({passed}, "web"));
  CHECK(d.log().find("echo: listening on 127.0.0.1:" + std::to_string(passed_port) + " (from systemd)") !=
        std::string::npos);
  REQUIRE(d.wait_workers(2));
  for (int i = 0; i < 20; ++i) REQUIRE(echo_roundtrip(passed_port, "hello " + std::to_string(i) + "\n"));
  CHECK(holds(d.pid(), socket_inode(passed)));
  for (pid_t w : d.workers()) CHECK(holds(w, socket_inode(passed)));
  CHECK((fcntl(passed, F_GETFL) & O_NONBLOCK) == 0);  // one open file description, shared with the test
  CHECK(d.stop() == 0);
  ::close(passed);
  ::close(blocker);
}

TEST_CASE("systemd: socket activation: an unnamed socket matches by address and a socket nobody wants is closed with a warning") {
  TempDir dir;
  uint16_t port = 0, other_port = 0;
  int passed = listen_loopback(port);       // the test holds it too: preforkd could not bind this port
  int other = listen_loopback(other_port);  // matches no listen entry
  Preforkd d(dir,
             "programs:\n"
             "  w:\n"
             "    command: [" + bin("preforkd-test-worker") + ", --dump-state, " + dir.file("state-%p.json") + "]\n"
             "    workers: 1\n"
             "    listen: [\"127.0.0.1:" + std::to_string(port) + "\"]\n"
             "    stop_timeout: 5s\n",
             {}, true, socket_activation({passed, other}, ""));
  CHECK(d.log().find("w: listening on 127.0.0.1:" + std::to_string(port) + " (from systemd)") != std::string::npos);
  CHECK(d.log().find("matches no listen entry: fd 4 (name \"unknown\", 127.0.0.1:" + std::to_string(other_port) +
                     ")") != std::string::npos);
  CHECK_FALSE(holds(d.pid(), socket_inode(other)));

  const std::string state = dir.file("state-" + std::to_string(d.workers().at(0)) + ".json");
  REQUIRE(wait_until([&] { return file_exists(state); }));
  auto j = read_json(state);
  bool saw_fd3 = false;
  for (const auto& f : j["fds"]) {
    if (f["fd"] != 3) continue;
    saw_fd3 = true;
    CHECK(f["target"] == socket_inode(passed));
    CHECK(f["listening"] == true);
  }
  CHECK(saw_fd3);
  // The worker gets preforkd's LISTEN_* for its own fds, never systemd's.
  CHECK(j["env"]["LISTEN_FDS"] == "1");
  CHECK(j["env"]["LISTEN_FDNAMES"] == "w");
  CHECK(d.stop() == 0);
  ::close(passed);
  ::close(other);
}

TEST_CASE("systemd: socket activation: a passed fd that is not a listening socket is a clear error, exit 1") {
  TempDir dir;
  int not_listening = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  Preforkd d(dir,
             "programs:\n"
             "  echo:\n"
             "    command: " + bin("preforkd-echo") + "\n"
             "    listen: [{address: \"127.0.0.1:0\", name: web}]\n",
             {}, false, socket_activation({not_listening}, "web"));
  auto st = d.process().wait(10s);
  REQUIRE(st.has_value());
  CHECK(WIFEXITED(*st));
  CHECK(WEXITSTATUS(*st) == 1);
  CHECK(d.log().find("the socket systemd passed as fd 3 (name \"web\") for 127.0.0.1:0 is not a listening stream "
                     "socket") != std::string::npos);
  ::close(not_listening);
}
