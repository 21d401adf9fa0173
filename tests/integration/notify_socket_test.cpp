// NOTIFY_SOCKET end to end: workers that speak only sd_notify(3) — through
// libsystemd, or by hand in Python — become ready and report STATUS=; a
// datagram from a process that is no worker is dropped and counted;
// `notify_socket: false` withholds the variable.
#include <doctest/doctest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstddef>
#include <cstring>
#include <string>

#include "support/support.hpp"

using namespace preforkd::test;
using json = nlohmann::json;

namespace {

std::string notify_socket_of(const Preforkd& d) { return "@preforkd-" + std::to_string(d.pid()) + "-notify"; }

uint64_t notify_errors(const Preforkd& d, const std::string& program) {
  auto p = program_of(d.control({{"cmd", "stats"}}), program);
  return p.is_null() ? 0 : p["notify_errors"].get<uint64_t>();
}

// One datagram to "@name" from this process (or, with `from_child`, from a
// forked child of it): what any local process can do.
void send_datagram(const std::string& notify_socket, const std::string& message, bool from_child = false) {
  auto send_it = [&] {
    int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return false;
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path + 1, notify_socket.data() + 1, notify_socket.size() - 1);
    auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + notify_socket.size());
    bool ok = ::sendto(fd, message.data(), message.size(), 0, reinterpret_cast<sockaddr*>(&addr), len) ==
              static_cast<ssize_t>(message.size());
    ::close(fd);
    return ok;
  };
  if (!from_child) {
    REQUIRE(send_it());
    return;
  }
  pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) ::_exit(send_it() ? 0 : 1);
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);
}

}  // namespace

TEST_CASE("NOTIFY_SOCKET: libsystemd's sd_notify from a worker or from a process of its group makes it ready with "
          "its STATUS") {
  TempDir dir;
  Preforkd d(dir, "programs:\n"
                  "  lib:\n"
                  "    command: " + bin("preforkd-sd-notify-worker") + "\n"
                  "    workers: 2\n"
                  "    ready: notify\n"
                  "  kid:\n"
                  "    command: [" + bin("preforkd-sd-notify-worker") + ", --from-child, \"READY=1\\nSTATUS=from a child\"]\n"
                  "    ready: notify\n");
  CHECK_MESSAGE(wait_until([&] { return ready_with_status(d, "lib", 2, "serving"); }, 10s), d.log());
  CHECK_MESSAGE(wait_until([&] { return ready_with_status(d, "kid", 1, "from a child"); }, 10s), d.log());
  CHECK(notify_errors(d, "lib") == 0);
  CHECK(notify_errors(d, "kid") == 0);
  CHECK(d.log().find("no READY=1 within start_timeout") == std::string::npos);
  CHECK(d.stop() == 0);
}

TEST_CASE("NOTIFY_SOCKET: a datagram line over 4096 bytes is one notify error, the lines before it count") {
  TempDir dir;
  std::string script = std::string(PREFORKD_SOURCE_DIR) + "/tests/helpers/notify_by_hand.py";
  Preforkd d(dir, "programs:\n"
                  "  py:\n"
                  "    command: [" + script + ", --long-line]\n"
                  "    ready: notify\n");
  CHECK_MESSAGE(wait_until([&] { return ready_with_status(d, "py", 1, "by hand"); }, 15s), d.log());
  CHECK(notify_errors(d, "py") == 1);  // the 6000-byte STATUS= line
  CHECK(d.wait_for_log("dropped a notify line (line too long)") != std::string::npos);
  auto stats = d.control({{"cmd", "stats"}});
  CHECK_MESSAGE(stats.dump().find("\"before_long\":1") != std::string::npos, stats.dump());
  CHECK(d.stop() == 0);
}

TEST_CASE("NOTIFY_SOCKET: a Python worker sending the datagram by hand becomes ready - an oversized one is dropped "
          "and counted") {
  TempDir dir;
  std::string script = std::string(PREFORKD_SOURCE_DIR) + "/tests/helpers/notify_by_hand.py";
  Preforkd d(dir, "programs:\n"
                  "  py:\n"
                  "    command: [" + script + ", --oversized]\n"
                  "    ready: notify\n");
  CHECK_MESSAGE(wait_until([&] { return ready_with_status(d, "py", 1, "by hand"); }, 15s), d.log());
  CHECK(notify_errors(d, "py") == 1);  // the 10000-byte datagram, whole
  CHECK(d.wait_for_log("dropped a notify line (line too long)") != std::string::npos);
  CHECK(d.stop() == 0);
}

TEST_CASE("NOTIFY_SOCKET: a datagram from a process that is no worker is dropped and counted, and readies nobody") {
  TempDir dir;
  Preforkd d(dir, "programs:\n"
                  "  w:\n"
                  "    command: " + bin("preforkd-test-worker") + "\n"
                  "    ready: notify\n"
                  "    start_timeout: 60s\n");
  REQUIRE(d.wait_workers(1));
  send_datagram(notify_socket_of(d), "READY=1\nSTATUS=not yours");
  send_datagram(notify_socket_of(d), "READY=1", true);
  REQUIRE(wait_until([&] { return d.control({{"cmd", "stats"}})["notify_unattributed"] == 2; }, 10s));
  CHECK(d.log().find("dropped a NOTIFY_SOCKET datagram from pid " + std::to_string(::getpid())) != std::string::npos);
  auto w = program_of(d.control({{"cmd", "status"}}), "w")["workers"][0];
  CHECK(w["state"] == "starting");
  CHECK(w["status"] == "");
  CHECK(notify_errors(d, "w") == 0);
  CHECK(d.control({{"cmd", "metrics"}})["text"].get<std::string>().find("preforkd_notify_unattributed_total 2\n") !=
        std::string::npos);
  CHECK(d.stop() == 0);
}

TEST_CASE("NOTIFY_SOCKET: notify_socket: false withholds it, true (the default) gives it") {
  TempDir dir;
  Preforkd d(dir, "programs:\n"
                  "  with:\n"
                  "    command: [" + bin("preforkd-test-worker") + ", --dump-state, " + dir.file("with.json") + "]\n"
                  "  without:\n"
                  "    command: [" + bin("preforkd-test-worker") + ", --dump-state, " + dir.file("without.json") + "]\n"
                  "    notify_socket: false\n");
  REQUIRE(wait_until([&] { return file_exists(dir.file("with.json")) && file_exists(dir.file("without.json")); }));
  CHECK(read_json(dir.file("with.json"))["env"]["NOTIFY_SOCKET"] == notify_socket_of(d));
  CHECK_FALSE(read_json(dir.file("without.json"))["env"].contains("NOTIFY_SOCKET"));
  CHECK(d.stop() == 0);
}
