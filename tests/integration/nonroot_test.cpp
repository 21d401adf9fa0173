// preforkd and preforkctl run by a user without privileges (issue #15 item
// 4): the default control socket in $XDG_RUNTIME_DIR/preforkd or
// /tmp/preforkd-$UID, the refusal of a folder that is not ours, the
// warnings of `preforkd -t`, and a worker that cannot switch users counted
// as a failed start. The suite runs as root (CI), so each test drops its
// privileges explicitly with setpriv(1) (util-linux); not as root, or
// without setpriv, the tests are skipped with a message.
#include <doctest/doctest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>
#include <string>

#include "support/support.hpp"

using namespace preforkd::test;

namespace {

const char* kSetpriv = "/usr/bin/setpriv";

bool can_drop_privileges() {
  if (geteuid() != 0) {
    MESSAGE("skipped: needs root to run preforkd as another user (setpriv)");
    return false;
  }
  if (access(kSetpriv, X_OK) != 0) {
    MESSAGE("skipped: ", kSetpriv, " (util-linux) is not installed");
    return false;
  }
  return true;
}

// argv run as `uid` (and gid = uid, no supplementary groups), with
// XDG_RUNTIME_DIR set to `xdg`, or removed when `xdg` is empty.
std::vector<std::string> as_user(uid_t uid, const std::string& xdg, std::vector<std::string> argv) {
  std::vector<std::string> out = {kSetpriv, "--reuid=" + std::to_string(uid), "--regid=" + std::to_string(uid),
                                  "--clear-groups", "/usr/bin/env", "-u", "XDG_RUNTIME_DIR"};
  if (!xdg.empty()) out.push_back("XDG_RUNTIME_DIR=" + xdg);
  out.insert(out.end(), argv.begin(), argv.end());
  return out;
}

// A TempDir the unprivileged user can read (its config) and traverse.
void open_up(const TempDir& dir) { REQUIRE(chmod(dir.path().c_str(), 0755) == 0); }

// `uid`'s own XDG_RUNTIME_DIR inside `dir`: made 0700 and given to it.
std::string runtime_dir_of(const TempDir& dir, uid_t uid) {
  std::string xdg = dir.file("xdg");
  REQUIRE(mkdir(xdg.c_str(), 0700) == 0);
  REQUIRE(chown(xdg.c_str(), uid, uid) == 0);
  return xdg;
}

std::string worker_program(const std::string& extra = "") {
  return "programs:\n  web:\n    command: " + bin("preforkd-test-worker") + "\n    workers: 2\n" + extra;
}

// /tmp/preforkd-<uid> removed now and when the test ends (each test has its own uid).
struct TmpRuntimeDir {
  std::string path;
  explicit TmpRuntimeDir(uid_t uid) : path("/tmp/preforkd-" + std::to_string(uid)) {
    std::filesystem::remove_all(path);
  }
  ~TmpRuntimeDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

nlohmann::json ctl_status(uid_t uid, const std::string& xdg, const std::string& config) {
  auto [code, out] = run(as_user(uid, xdg, {bin("preforkctl"), "-c", config, "--json", "status"}));
  auto j = nlohmann::json::parse(out, nullptr, false);
  if (code != 0 || j.is_discarded()) return nlohmann::json{{"exit", code}, {"output", out}};
  return j;
}

}  // namespace

TEST_CASE("non-root: default control socket in XDG_RUNTIME_DIR/preforkd, made 0700, found by preforkctl") {
  if (!can_drop_privileges()) return;
  const uid_t uid = 64101;
  TempDir dir;
  open_up(dir);
  std::string xdg = runtime_dir_of(dir, uid);
  std::string config = dir.write("preforkd.yaml", worker_program());
  Process d(as_user(uid, xdg, {bin("preforkd"), "-c", config}), dir.file("preforkd.log"));
  std::string socket = xdg + "/preforkd/preforkd.sock";
  REQUIRE_MESSAGE(wait_until([&] { return file_exists(socket); }), d.log());
  struct stat st {};
  REQUIRE(stat((xdg + "/preforkd").c_str(), &st) == 0);
  CHECK(st.st_uid == uid);
  CHECK((st.st_mode & 0777) == 0700);
  nlohmann::json s;
  REQUIRE_MESSAGE(wait_until([&] {
                    s = ctl_status(uid, xdg, config);
                    return s.value("ok", false) && pids_of(s).size() == 2;
                  }),
                  s.dump(), "\n", d.log());
  CHECK(d.signal(SIGTERM));
  auto st_exit = d.wait(20s);
  REQUIRE(st_exit);
  CHECK(WIFEXITED(*st_exit));
  CHECK(WEXITSTATUS(*st_exit) == 0);
  CHECK_FALSE(file_exists(socket));
}

TEST_CASE("non-root: without XDG_RUNTIME_DIR the socket goes to /tmp/preforkd-UID, and preforkctl finds it") {
  if (!can_drop_privileges()) return;
  const uid_t uid = 64102;
  TmpRuntimeDir runtime(uid);
  TempDir dir;
  open_up(dir);
  std::string config = dir.write("preforkd.yaml", worker_program());
  Process d(as_user(uid, "", {bin("preforkd"), "-c", config}), dir.file("preforkd.log"));
  std::string socket = runtime.path + "/preforkd.sock";
  REQUIRE_MESSAGE(wait_until([&] { return file_exists(socket); }), d.log());
  struct stat st {};
  REQUIRE(lstat(runtime.path.c_str(), &st) == 0);
  CHECK(S_ISDIR(st.st_mode));
  CHECK(st.st_uid == uid);
  CHECK((st.st_mode & 0777) == 0700);
  nlohmann::json s;
  REQUIRE_MESSAGE(wait_until([&] {
                    s = ctl_status(uid, "", config);
                    return s.value("ok", false) && pids_of(s).size() == 2;
                  }),
                  s.dump(), "\n", d.log());
  CHECK(d.signal(SIGTERM));
  auto st_exit = d.wait(20s);
  REQUIRE(st_exit);
  CHECK(WIFEXITED(*st_exit));
  CHECK(WEXITSTATUS(*st_exit) == 0);
}

TEST_CASE("non-root: a /tmp/preforkd-UID that is not ours, a symlink or group-writable is refused by both") {
  if (!can_drop_privileges()) return;
  TempDir dir;
  open_up(dir);
  std::string config = dir.write("preforkd.yaml", worker_program());
  auto refused = [&](uid_t uid, const std::string& why) {
    auto [code, out] = run(as_user(uid, "", {bin("preforkd"), "-c", config}), 20s);
    CHECK_MESSAGE(code == 1, out);
    CHECK_MESSAGE(out.find(why) != std::string::npos, out);
    CHECK_MESSAGE(out.find("refuses to use it") != std::string::npos, out);
    auto [ccode, cout] = run(as_user(uid, "", {bin("preforkctl"), "-c", config, "status"}), 20s);
    CHECK_MESSAGE(ccode == 3, cout);
    CHECK_MESSAGE(cout.find(why) != std::string::npos, cout);
  };
  {
    const uid_t uid = 64103;
    TmpRuntimeDir runtime(uid);
    REQUIRE(mkdir(runtime.path.c_str(), 0700) == 0);  // root's, made before the user's preforkd
    refused(uid, runtime.path + " is owned by uid 0, not by uid " + std::to_string(uid));
  }
  {
    const uid_t uid = 64104;
    TmpRuntimeDir runtime(uid);
    std::string elsewhere = dir.file("elsewhere");
    REQUIRE(mkdir(elsewhere.c_str(), 0700) == 0);
    REQUIRE(chown(elsewhere.c_str(), uid, uid) == 0);
    REQUIRE(symlink(elsewhere.c_str(), runtime.path.c_str()) == 0);
    refused(uid, runtime.path + " is a symbolic link");
  }
  {
    const uid_t uid = 64105;
    TmpRuntimeDir runtime(uid);
    REQUIRE(mkdir(runtime.path.c_str(), 0700) == 0);
    REQUIRE(chmod(runtime.path.c_str(), 0770) == 0);
    REQUIRE(chown(runtime.path.c_str(), uid, uid) == 0);
    refused(uid, runtime.path + " is writable by its group or by others (mode 770)");
  }
}

TEST_CASE("non-root: preforkd -t warns about a low port, user: and an unwritable pidfile folder, still ok") {
  if (!can_drop_privileges()) return;
  const uid_t uid = 65534;  // nobody
  TempDir dir;
  open_up(dir);
  std::string locked = dir.file("locked");
  REQUIRE(mkdir(locked.c_str(), 0755) == 0);  // root's: the user cannot write in it
  std::string yaml = "supervisor:\n  control_socket: " + dir.file("ctl/preforkd.sock") +
                     "\n  pidfile: " + locked + "/preforkd.pid\n"
                     "programs:\n  web:\n    command: " + bin("preforkd-test-worker") +
                     "\n    listen: 127.0.0.1:80\n    user: root\n";
  std::string config = dir.write("preforkd.yaml", yaml);
  auto [code, out] = run(as_user(uid, "", {bin("preforkd"), "-t", "-c", config}));
  CHECK_MESSAGE(code == 0, out);
  CHECK_MESSAGE(out.find(config + ": ok") != std::string::npos, out);
  CHECK_MESSAGE(out.find(config + ": warning: programs.web.listen: 127.0.0.1:80: port 80 is below") != std::string::npos,
                out);
  CHECK_MESSAGE(out.find("without CAP_NET_BIND_SERVICE: binding it will fail") != std::string::npos, out);
  CHECK_MESSAGE(out.find(config + ": warning: programs.web.user: root has gid 0 and preforkd runs as uid 65534") !=
                    std::string::npos,
                out);
  CHECK_MESSAGE(out.find("every worker of web will fail to start (setgid 0: Operation not permitted)") !=
                    std::string::npos,
                out);
  CHECK_MESSAGE(out.find(config + ": warning: supervisor.pidfile: " + locked + ": Permission denied: writing the pidfile") !=
                    std::string::npos,
                out);
  // The control socket's folder, to be made in root's TempDir, cannot be made either.
  CHECK_MESSAGE(out.find("warning: supervisor.control_socket: cannot create " + dir.file("ctl")) != std::string::npos,
                out);
  // Root may do all of it: no warning.
  auto [rcode, rout] = run({bin("preforkd"), "-t", "-c", config});
  CHECK_MESSAGE(rcode == 0, rout);
  CHECK_MESSAGE(rout.find("warning") == std::string::npos, rout);
}

TEST_CASE("non-root: a worker that cannot switch to its user is a failed start that counts") {
  if (!can_drop_privileges()) return;
  const uid_t uid = 64106;
  TempDir dir;
  open_up(dir);
  std::string xdg = runtime_dir_of(dir, uid);
  std::string config = dir.write(
      "preforkd.yaml", "programs:\n  web:\n    command: " + bin("preforkd-test-worker") +
                           "\n    user: root\n    backoff: { min: 100ms, max: 200ms, reset_after: 1s }\n");
  Process d(as_user(uid, xdg, {bin("preforkd"), "-c", config}), dir.file("preforkd.log"));
  nlohmann::json s;
  REQUIRE_MESSAGE(wait_until(
                      [&] {
                        s = ctl_status(uid, xdg, config);
                        if (!s.value("ok", false)) return false;  // not up yet
                        auto p = program_of(s, "web");
                        return !p.is_null() && p.value("state", "") == "crash-looping" &&
                               p["workers"].size() == 1 && p["workers"][0].value("restarts", 0) >= 2;
                      },
                      20s),
                  s.dump(), "\n", d.log());
  CHECK(d.wait_for_log("(3 failures in a row)") != std::string::npos);
  std::string log = d.log();
  // The reason, at error level, once; the retries after it (each an exit
  // with status 127 before exec) only count.
  std::string reason = ": cannot start: setgid 0: Operation not permitted (preforkd runs as uid " +
                       std::to_string(uid) + ", not root";
  size_t first = log.find(reason);
  CHECK_MESSAGE(first != std::string::npos, log);
  CHECK_MESSAGE(log.rfind("error: web[0] ", first) != std::string::npos, log);
  size_t errors = 0;
  for (size_t pos = 0; (pos = log.find(reason, pos)) != std::string::npos; ++pos) ++errors;
  CHECK_MESSAGE(errors == 1, log);
  CHECK(d.signal(SIGTERM));
  auto st_exit = d.wait(20s);
  REQUIRE(st_exit);
  CHECK(WIFEXITED(*st_exit));
  CHECK(WEXITSTATUS(*st_exit) == 0);
}
