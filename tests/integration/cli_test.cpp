// The preforkd command line: --help, --version, --check, invalid
// configurations (exit 2, nothing started) and runtime failures (exit 1).
#include <doctest/doctest.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>

#include "support/support.hpp"

using namespace preforkd::test;

TEST_CASE("cli: --version and --help") {
  auto [code, out] = run({bin("preforkd"), "--version"});
  CHECK(code == 0);
  CHECK(out.rfind("preforkd ", 0) == 0);
  auto [hcode, help] = run({bin("preforkd"), "-h"});
  CHECK(hcode == 0);
  CHECK(help.find("--check") != std::string::npos);
  CHECK(help.find("--log-level") != std::string::npos);
}

TEST_CASE("cli: an unknown option or a bad level is a usage error (exit 2)") {
  CHECK(run({bin("preforkd"), "--frobnicate"}).first == 2);
  auto [code, out] = run({bin("preforkd"), "--log-level", "loud"});
  CHECK(code == 2);
  CHECK(out.find("--log-level") != std::string::npos);
}

TEST_CASE("cli: -t validates the shipped configuration") {
  std::string conf = std::string(PREFORKD_SOURCE_DIR) + "/conf/preforkd.yaml";
  auto [code, out] = run({bin("preforkd"), "-t", "-c", conf});
  CHECK(code == 0);
  CHECK(out == conf + ": ok\n");
}

TEST_CASE("cli: every shipped example configuration is valid") {
  for (const auto& e : std::filesystem::directory_iterator(std::string(PREFORKD_SOURCE_DIR) + "/conf/examples")) {
    // Folders hold one server's example each, run by examples_test.cpp.
    if (!e.is_regular_file()) continue;
    auto [code, out] = run({bin("preforkd"), "-t", "-c", e.path().string()});
    CHECK_MESSAGE(code == 0, e.path().string() << ": " << out);
  }
}

TEST_CASE("cli: an invalid file exits 2 with file:line:column and starts nothing") {
  TempDir dir;
  uint16_t port = free_port();
  std::string path = dir.write("bad.yaml",
                               "programs:\n"
                               "  echo:\n"
                               "    command: " + bin("preforkd-echo") + "\n"
                               "    listen: [\"127.0.0.1:" + std::to_string(port) + "\"]\n"
                               "    workerz: 4\n");
  for (bool check : {true, false}) {
    std::vector<std::string> argv = {bin("preforkd"), "-c", path};
    if (check) argv.push_back("-t");
    auto [code, out] = run(argv);
    CHECK(code == 2);
    CHECK(out.find(path + ":5:5: ") != std::string::npos);
    CHECK(out.find("did you mean `workers`?") != std::string::npos);
  }
  CHECK(connect_tcp(port) == -ECONNREFUSED);  // nothing was bound, nothing started
}

TEST_CASE("cli: a missing command is an error of the file, exit 2") {
  TempDir dir;
  std::string path = dir.write("bad.yaml", "programs:\n  x:\n    command: /no/such/program\n");
  auto [code, out] = run({bin("preforkd"), "-t", "-c", path});
  CHECK(code == 2);
  CHECK(out.find(path + ":3:") != std::string::npos);
  CHECK(out.find("/no/such/program") != std::string::npos);
}

TEST_CASE("cli: a missing file exits 2 naming it") {
  auto [code, out] = run({bin("preforkd"), "-c", "/no/such/preforkd.yaml"});
  CHECK(code == 2);
  CHECK(out.find("/no/such/preforkd.yaml") != std::string::npos);
}

TEST_CASE("cli: a busy port is a runtime failure: exit 1 naming the address, no worker left") {
  uint16_t busy = 0;
  int fd = listen_loopback(busy, 1);
  std::string addr = "127.0.0.1:" + std::to_string(busy);
  TempDir dir;
  std::string path = dir.write("busy.yaml",
                               "programs:\n"
                               "  a:\n    command: " + bin("preforkd-test-worker") + "\n"
                               "  echo:\n    command: " + bin("preforkd-echo") + "\n"
                               "    listen: [\"" + addr + "\"]\n");
  auto [code, out] = run({bin("preforkd"), "-c", path});
  CHECK(code == 1);
  CHECK(out.find("cannot bind " + addr + ": Address already in use") != std::string::npos);
  CHECK(out.find("started") == std::string::npos);
  // -t binds nothing, so the same file checks fine.
  CHECK(run({bin("preforkd"), "-t", "-c", path}).first == 0);
  ::close(fd);
}

TEST_CASE("cli: the pidfile holds preforkd's pid while it runs and is removed at exit") {
  TempDir dir;
  std::string pidfile = dir.file("preforkd.pid");
  Preforkd d(dir, "programs:\n  a:\n    command: " + bin("preforkd-test-worker") + "\n", {"--pidfile", pidfile});
  CHECK(read_file(pidfile) == std::to_string(d.pid()) + "\n");
  CHECK(d.stop() == 0);
  CHECK(!file_exists(pidfile));
}
