// The worker contract (SPEC "The worker contract"): what a worker sees when
// it starts, checked from inside real workers through the test worker's
// --dump-state JSON.
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <set>
#include <sstream>

#include "support/support.hpp"

using namespace preforkd::test;

namespace {

std::vector<nlohmann::json> wait_dumps(const TempDir& dir, size_t n) {
  std::vector<nlohmann::json> dumps;
  wait_until([&] {
    dumps.clear();
    for (const auto& e : std::filesystem::directory_iterator(dir.path()))
      if (e.path().filename().string().rfind("state-", 0) == 0 && e.path().extension() == ".json")
        dumps.push_back(read_json(e.path().string()));
    return dumps.size() >= n;
  });
  return dumps;
}

std::string two_socket_program(const TempDir& dir, int workers) {
  return "supervisor: { shutdown_timeout: 10s }\n"
         "programs:\n"
         "  w:\n"
         "    command: [" + bin("preforkd-test-worker") + ", --dump-state, " + dir.file("state-%p.json") + "]\n"
         "    workers: " + std::to_string(workers) + "\n"
         "    listen: [\"127.0.0.1:0\", {address: \"unix:" + dir.file("w.sock") + "\", name: api}]\n"
         "    stop_timeout: 5s\n"
         "    stdout: null\n"
         "    stderr: inherit\n";
}

}  // namespace

TEST_CASE("T5 T11 T12 contract: workers see exactly fds 0-2, their sockets and the notify pipe") {
  TempDir dir;
  Preforkd d(dir, two_socket_program(dir, 3));
  char link[512] = {};
  REQUIRE(readlink(("/proc/" + std::to_string(d.pid()) + "/fd/2").c_str(), link, sizeof link - 1) > 0);
  const std::string preforkd_stderr = link;
  auto dumps = wait_dumps(dir, 3);
  REQUIRE(dumps.size() == 3);
  std::set<std::string> slots;
  for (const auto& j : dumps) {
    std::set<long> fds;
    for (const auto& f : j["fds"]) {
      fds.insert(f["fd"].get<long>());
      CHECK_MESSAGE(!f["cloexec"].get<bool>(), "fd " << f["fd"] << " is close-on-exec");
      long fd = f["fd"].get<long>();
      if (fd == 3 || fd == 4) {
        CHECK(f["socket_type"] == "stream");
        CHECK(f["listening"] == true);
        CHECK_MESSAGE(!f["nonblock"].get<bool>(), "T19: listening sockets are handed over blocking");
      }
      if (fd == 5) CHECK(f["target"].get<std::string>().rfind("pipe:", 0) == 0);
      if (fd == 0 || fd == 1) CHECK(f["target"] == "/dev/null");  // stdin; stdout: null
      if (fd == 2) CHECK(f["target"] == preforkd_stderr);         // stderr: inherit
    }
    CHECK(fds == std::set<long>{0, 1, 2, 3, 4, 5});
    const auto& env = j["env"];
    CHECK(env["LISTEN_FDS"] == "2");
    CHECK(env["LISTEN_PID"] == std::to_string(j["pid"].get<long>()));  // T12
    CHECK(env["LISTEN_FDNAMES"] == "w:api");
    CHECK(env["PREFORKD_NOTIFY_FD"] == "5");
    CHECK(env["PREFORKD_PROGRAM"] == "w");
    CHECK(env["PREFORKD_GENERATION"] == "1");
    // sd_notify(3)'s socket, preforkd's own (abstract: no file); not an fd of the worker's.
    CHECK(env["NOTIFY_SOCKET"] == "@preforkd-" + std::to_string(d.pid()) + "-notify");
    CHECK(env.contains("PATH"));
    slots.insert(env["PREFORKD_SLOT"].get<std::string>());
    // T17: each worker leads its own process group; its parent is preforkd.
    CHECK(j["pgid"] == j["pid"]);
    CHECK(j["ppid"].get<long>() == d.pid());
  }
  CHECK(slots == std::set<std::string>{"0", "1", "2"});
  CHECK(d.stop() == 0);
}

TEST_CASE("T6 T7 T18 contract: empty signal mask, default dispositions, original fd limit") {
  TempDir dir;
  // Start preforkd the way nohup or a careless shell would: with signals
  // ignored and blocked, and a lowered fd limit that preforkd raises for itself.
  rlimit lowered{};
  getrlimit(RLIMIT_NOFILE, &lowered);
  lowered.rlim_cur = std::min<rlim_t>(lowered.rlim_max, 1000);
  auto in_child = [lowered] {
    signal(SIGPIPE, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    signal(SIGTERM, SIG_IGN);
    signal(SIGUSR1, SIG_IGN);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR2);
    sigaddset(&set, SIGALRM);
    sigprocmask(SIG_BLOCK, &set, nullptr);
    setrlimit(RLIMIT_NOFILE, &lowered);
  };
  Preforkd d(dir, two_socket_program(dir, 1), {}, true, in_child);
  auto dumps = wait_dumps(dir, 1);
  REQUIRE(dumps.size() == 1);
  const auto& j = dumps[0];
  CHECK(j["sigblk"] == "0000000000000000");
  CHECK(j["sigign"] == "0000000000000000");
  CHECK(j["rlimit_nofile"]["soft"].get<unsigned long long>() == lowered.rlim_cur);
  // preforkd itself raised its own soft limit to the hard one.
  std::string limits = read_file("/proc/" + std::to_string(d.pid()) + "/limits");
  auto row = limits.find("Max open files");
  REQUIRE(row != std::string::npos);
  std::istringstream fields(limits.substr(row + 14));
  unsigned long long soft = 0, hard = 0;
  fields >> soft >> hard;
  CHECK(soft == hard);
  CHECK(hard == lowered.rlim_max);
  // TERM was ignored by preforkd's parent, yet preforkd still shuts down on it.
  CHECK(d.stop() == 0);
}

TEST_CASE("contract: environment, directory, umask and rlimits from the config") {
  TempDir dir;
  std::string yaml =
      "programs:\n"
      "  w:\n"
      "    command: [" + bin("preforkd-test-worker") + ", --dump-state, " + dir.file("state-%p.json") + "]\n"
      "    environment: { GREETING: hello, PORT_NAME: \"x y\" }\n"
      "    directory: " + dir.path() + "\n"
      "    umask: \"027\"\n"
      "    rlimits: { core: 0, nofile: 4096 }\n";
  Preforkd d(dir, yaml, {}, true, [] { setenv("PREFORKD_TEST_SECRET", "1", 1); });
  auto dumps = wait_dumps(dir, 1);
  REQUIRE(dumps.size() == 1);
  const auto& j = dumps[0];
  CHECK(j["env"]["GREETING"] == "hello");
  CHECK(j["env"]["PORT_NAME"] == "x y");
  CHECK(!j["env"].contains("LISTEN_FDS"));  // no sockets: no socket-activation variables
  CHECK(j["cwd"] == dir.path());
  CHECK(j["umask"] == "0027");
  CHECK(j["rlimit_nofile"]["soft"] == 4096);
  CHECK(j["rlimit_core"]["hard"] == 0);
  // preforkd's own environment is not passed on: the worker's is minimal.
  CHECK(!j["env"].contains("PREFORKD_TEST_SECRET"));
  CHECK(d.stop() == 0);
}

TEST_CASE("contract: user and group are applied when preforkd runs as root") {
  if (geteuid() != 0) {
    MESSAGE("skipped: needs root to change user");
    return;
  }
  TempDir dir;
  chmod(dir.path().c_str(), 0777);
  std::string yaml =
      "programs:\n"
      "  w:\n"
      "    command: [" + bin("preforkd-test-worker") + ", --dump-state, " + dir.file("state-%p.json") + "]\n"
      "    user: nobody\n"
      "    group: nogroup\n";
  Preforkd d(dir, yaml);
  auto dumps = wait_dumps(dir, 1);
  REQUIRE(dumps.size() == 1);
  CHECK(dumps[0]["uid"] == 65534);
  CHECK(dumps[0]["gid"] == 65534);
  CHECK(dumps[0]["env"]["USER"] == "nobody");
  CHECK(d.stop() == 0);
}

TEST_CASE("output: stdout and stderr lines land in preforkd's log, prefixed, none lost at exit") {
  TempDir dir;
  std::string yaml =
      "programs:\n"
      "  talk:\n"
      "    command: [" + bin("preforkd-test-worker") +
      ", --stdout, first line, --stderr, to stderr, --stdout, last words, --exit, 0]\n"
      "    restart: never\n"
      "  file:\n"
      "    command: [" + bin("preforkd-test-worker") + ", --stdout, into a file, --exit, 0]\n"
      "    restart: never\n"
      "    stdout: " + dir.file("out.txt") + "\n";
  Preforkd d(dir, yaml);
  CHECK(d.wait_for_log("talk[0]: not restarted") != std::string::npos);
  std::string log = d.log();
  CHECK(log.find("talk[0] ") != std::string::npos);
  CHECK(log.find(": first line") != std::string::npos);
  CHECK(log.find(": to stderr") != std::string::npos);
  CHECK(log.find(": last words") != std::string::npos);
  CHECK(wait_until([&] { return read_file(dir.file("out.txt")) == "into a file\n"; }));
  CHECK(d.stop() == 0);
}
