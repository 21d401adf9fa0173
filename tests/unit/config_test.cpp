// config_test.cpp — preforkd.yaml loading: goldens under tests/data/configs,
// SPEC defaults, path resolution, command lookup and the value types.
//
// Goldens: tests/data/configs/bad/X.yaml.expected holds the exact diagnostics
// of X.yaml, and ok/X.yaml.expected the dump() of its Config. Both are written
// with every occurrence of "<PREFORKD_TEST_DATA>/configs/" removed, so they
// read "bad/X.yaml:3:5: ..." and do not depend on where the tree lives.
#include "config/config.hpp"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>

#include "config/load_detail.hpp"

using namespace preforkd::config;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

const std::string kConfigs = PREFORKD_TEST_DATA "/configs/";
const std::string kConf = PREFORKD_TEST_DATA "/../../conf/";
// load_string() texts pretend to live here; the folder need not exist.
const std::string kFakeFile = "/etc/preforkd/test.yaml";

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

std::string strip_data(std::string s) {
  for (std::size_t at; (at = s.find(kConfigs)) != std::string::npos;) s.erase(at, kConfigs.size());
  return s;
}

std::vector<fs::path> yaml_files(const std::string& dir) {
  std::vector<fs::path> out;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().extension() == ".yaml") out.push_back(e.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::string diagnostics(const LoadResult& r) {
  std::string out;
  for (const auto& d : r.errors) out += d.to_string() + "\n";
  return out;
}

LoadOptions unchecked() {
  LoadOptions o;
  o.check_executables = false;
  return o;
}

LoadResult load(const std::string& yaml, const LoadOptions& options = unchecked()) {
  return load_string(yaml, kFakeFile, options);
}

// The one program of a config that must load.
Program only_program(const std::string& yaml, const LoadOptions& options = unchecked()) {
  const LoadResult r = load(yaml, options);
  INFO(diagnostics(r));
  REQUIRE(r.config.has_value());
  REQUIRE(r.config->programs.size() == 1);
  return r.config->programs[0];
}

// The diagnostics of a config that must fail, each as "line:col: message".
std::vector<std::string> errors_of(const std::string& yaml,
                                   const LoadOptions& options = unchecked()) {
  const LoadResult r = load(yaml, options);
  CHECK_FALSE(r.config.has_value());
  std::vector<std::string> out;
  for (const auto& d : r.errors) {
    CHECK(d.file == kFakeFile);
    out.push_back(std::to_string(d.line) + ":" + std::to_string(d.column) + ": " + d.message);
  }
  return out;
}

struct TempDir {
  fs::path path;
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "preforkd-config-test-XXXXXX").string();
    REQUIRE(mkdtemp(tmpl.data()) != nullptr);
    path = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  std::string file(const std::string& rel, mode_t mode) const {
    const fs::path p = path / rel;
    fs::create_directories(p.parent_path());
    std::ofstream(p) << "#!/bin/sh\n";
    REQUIRE(chmod(p.c_str(), mode) == 0);
    return p.string();
  }
};

// Sets (or unsets, for nullptr) an environment variable for one scope.
struct ScopedEnv {
  std::string name;
  std::optional<std::string> old;
  ScopedEnv(std::string n, const char* value) : name(std::move(n)) {
    if (const char* v = std::getenv(name.c_str())) old = v;
    if (value) {
      setenv(name.c_str(), value, 1);
    } else {
      unsetenv(name.c_str());
    }
  }
  ~ScopedEnv() {
    if (old) {
      setenv(name.c_str(), old->c_str(), 1);
    } else {
      unsetenv(name.c_str());
    }
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;
};

}  // namespace

// ---------------------------------------------------------------------------
// goldens
// ---------------------------------------------------------------------------

TEST_CASE("every bad/*.yaml yields exactly the diagnostics of its .expected file, and no config") {
  const auto files = yaml_files(kConfigs + "bad");
  REQUIRE(files.size() >= 30);
  for (const auto& file : files) {
    const std::string name = file.filename().string();
    CAPTURE(name);
    const LoadResult r = load_file(file.string());
    CHECK_FALSE(r.config.has_value());
    CHECK(strip_data(diagnostics(r)) == read_text(file.string() + ".expected"));
  }
}

TEST_CASE(
    "every ok/*.yaml loads with executables checked and dumps exactly as its .expected file") {
  const auto files = yaml_files(kConfigs + "ok");
  REQUIRE(files.size() >= 5);
  for (const auto& file : files) {
    const std::string name = file.filename().string();
    CAPTURE(name);
    const LoadResult r = load_file(file.string());
    INFO(diagnostics(r));
    REQUIRE(r.config.has_value());
    CHECK(r.errors.empty());
    CHECK(strip_data(dump(*r.config)) == read_text(file.string() + ".expected"));
  }
}

TEST_CASE("every golden config has an .expected file, and every bad one expects a diagnostic") {
  for (const char* dir : {"ok", "bad"}) {
    for (const auto& file : yaml_files(kConfigs + dir)) {
      const std::string expected = file.string() + ".expected";
      CAPTURE(expected);
      REQUIRE(fs::exists(expected));
      const std::string text = read_text(expected);
      CHECK_FALSE(text.empty());
      if (std::string(dir) == "bad") {
        // Each line names its own file, relative to tests/data/configs.
        const std::string prefix = "bad/" + file.filename().string() + ":";
        std::istringstream lines(text);
        for (std::string line; std::getline(lines, line);) CHECK(line.rfind(prefix, 0) == 0);
      }
    }
  }
}

TEST_CASE("the shipped conf/preforkd.yaml loads and runs echo on 127.0.0.1:7000 with 4 workers as nobody") {
  const LoadResult r = load_file(kConf + "preforkd.yaml", unchecked());
  INFO(diagnostics(r));
  REQUIRE(r.config.has_value());
  REQUIRE(r.config->programs.size() == 1);
  const Program& echo = r.config->programs[0];
  CHECK(echo.name == "echo");
  CHECK(echo.command == std::vector<std::string>{"preforkd-echo"});
  CHECK(echo.executable == "preforkd-echo");  // looked up only when checking executables
  CHECK(echo.workers == 4);
  REQUIRE(echo.listen.size() == 1);
  CHECK(echo.listen[0].key() == "tcp:127.0.0.1:7000");
  CHECK(echo.user == std::optional<std::string>("nobody"));  // the package: root binds, nobody serves
  CHECK(r.config->supervisor.control_socket == "/run/preforkd/preforkd.sock");
}

TEST_CASE("the examples in conf/examples load") {
  const auto files = yaml_files(kConf + "examples");
  CHECK(files.size() >= 3);
  for (const auto& file : files) {
    CAPTURE(file.string());
    const LoadResult r = load_file(file.string(), unchecked());
    INFO(diagnostics(r));
    CHECK(r.config.has_value());
    CHECK(r.errors.empty());
  }
}

TEST_CASE("the shipped config finds preforkd-echo through extra_command_dirs") {
  TempDir dir;
  const std::string echo = dir.file("bin/preforkd-echo", 0755);
  ScopedEnv path("PATH", "/nonexistent");
  LoadOptions options;
  options.extra_command_dirs = {(dir.path / "lib").string(), (dir.path / "bin").string()};
  const LoadResult r = load_file(kConf + "preforkd.yaml", options);
  INFO(diagnostics(r));
  REQUIRE(r.config.has_value());
  CHECK(r.config->programs[0].executable == echo);
}

// ---------------------------------------------------------------------------
// defaults
// ---------------------------------------------------------------------------

TEST_CASE("a minimal program gets every SPEC default") {
  const Program p = only_program("programs:\n  echo:\n    command: /bin/true\n");
  CHECK(p.name == "echo");
  CHECK(p.command == std::vector<std::string>{"/bin/true"});
  CHECK(p.executable == "/bin/true");
  CHECK(p.workers == 1);
  CHECK(p.listen.empty());
  CHECK(p.backlog == 1024);
  CHECK(p.reuseport == false);
  CHECK(p.environment.empty());
  CHECK_FALSE(p.directory.has_value());
  CHECK_FALSE(p.user.has_value());
  CHECK_FALSE(p.group.has_value());
  CHECK_FALSE(p.umask.has_value());
  CHECK(p.rlimits.empty());
  CHECK(p.restart == Restart::Always);
  CHECK(p.backoff.min == 100ms);
  CHECK(p.backoff.max == 30s);
  CHECK(p.backoff.reset_after == 10s);
  CHECK(p.reload.batch == 1);
  CHECK(p.reload.batch_percent == false);
  CHECK(p.reload.settle == 1s);
  CHECK(p.reload.guard == 30s);
  CHECK(p.ready == ReadyMode::Exec);
  CHECK(p.start_timeout == 30s);
  CHECK(p.watchdog_timeout == 0s);
  CHECK(p.stop_signal == SIGTERM);
  CHECK(p.stop_timeout == 10s);
  CHECK(p.kill_group == true);
  CHECK(p.orphans == OrphanMode::Stop);
  CHECK(p.notify_socket == true);
  CHECK(p.max_requests == 0);
  CHECK(p.max_memory == 0);
  CHECK(p.stdout_target.kind == Output::Kind::Log);
  CHECK(p.stderr_target.kind == Output::Kind::Log);
}

TEST_CASE("the supervisor section gets every SPEC default, with or without being written") {
  for (const char* yaml : {"", "supervisor:\n", "supervisor: {}\nprograms: {}\n"}) {
    CAPTURE(yaml);
    const LoadResult r = load(yaml);
    INFO(diagnostics(r));
    REQUIRE(r.config.has_value());
    const Supervisor& s = r.config->supervisor;
    CHECK(s.control_socket == "/run/preforkd/preforkd.sock");
    CHECK_FALSE(s.control_group.has_value());
    CHECK_FALSE(s.pidfile.has_value());
    CHECK(s.log_level == LogLevel::Info);
    CHECK_FALSE(s.log_file.has_value());
    CHECK_FALSE(s.metrics.has_value());
    CHECK_FALSE(s.metrics_address.has_value());
    CHECK(s.shutdown_timeout == 30s);
    CHECK(r.config->programs.empty());
  }
}

// ---------------------------------------------------------------------------
// load_file and diagnostics
// ---------------------------------------------------------------------------

TEST_CASE("a file that cannot be opened gives `file: cannot open: strerror` without a position") {
  const std::string missing = kConfigs + "no-such-file.yaml";
  const LoadResult r = load_file(missing);
  CHECK_FALSE(r.config.has_value());
  REQUIRE(r.errors.size() == 1);
  CHECK(r.errors[0].file == missing);
  CHECK(r.errors[0].line == 0);
  CHECK(r.errors[0].to_string() == missing + ": cannot open: No such file or directory");
}

TEST_CASE("a folder or an endless file is refused, not read forever") {
  const LoadResult dir = load_file(kConfigs + "ok");
  REQUIRE(dir.errors.size() == 1);
  CHECK(dir.errors[0].to_string() == kConfigs + "ok: cannot read: Is a directory");

  const LoadResult zero = load_file("/dev/zero");
  REQUIRE(zero.errors.size() == 1);
  CHECK(zero.errors[0].to_string() == "/dev/zero: too large (more than 16 MiB)");
}

TEST_CASE("diagnostics name the file exactly as it was passed") {
  TempDir dir;
  std::ofstream(dir.path / "p.yaml") << "programs:\n  e:\n    workerz: 1\n    command: /bin/true\n";
  const std::string odd = (dir.path / "." / "p.yaml").string();
  const LoadResult r = load_file(odd);
  REQUIRE(r.errors.size() == 1);
  CHECK(r.errors[0].to_string() == odd + ":3:5: unknown key `workerz` (did you mean `workers`?)");
}

TEST_CASE("Diagnostic::to_string is file:line:column: message, or file: message without a line") {
  CHECK(Diagnostic{"a.yaml", 3, 5, "boom"}.to_string() == "a.yaml:3:5: boom");
  CHECK(Diagnostic{"a.yaml", 0, 0, "cannot open: x"}.to_string() == "a.yaml: cannot open: x");
  CHECK(Diagnostic{"a.yaml", 7, 0, "m"}.to_string() == "a.yaml:7: m");
}

TEST_CASE("errors in several programs are all reported, in file order, and no config is returned") {
  const auto errors = errors_of(
      "programs:\n"
      "  b:\n"
      "    command: /bin/true\n"
      "    workers: -1\n"
      "  a:\n"
      "    stop_timeout: 10\n"
      "    command: /bin/true\n"
      "supervisor:\n"
      "  shutdown_timeout: x\n");
  CHECK(errors == std::vector<std::string>{
                      "4:14: programs.b.workers: must be a whole number >= 0 or `auto`, got `-1`",
                      "6:19: programs.a.stop_timeout: expected a duration like `10s`, got `10`",
                      "9:21: supervisor.shutdown_timeout: expected a duration like `10s`, got `x`",
                  });
}

TEST_CASE("an empty value is reported at its key, a bad value at the value") {
  CHECK(errors_of("programs:\n  e:\n    command: /bin/true\n    backlog:\n") ==
        std::vector<std::string>{"4:5: programs.e.backlog: expected a single value, got null"});
  CHECK(errors_of("programs:\n  e:\n    command: /bin/true\n    backlog:     0\n") ==
        std::vector<std::string>{
            "4:18: programs.e.backlog: must be a whole number from 1 to 65535, got `0`"});
}

TEST_CASE("load_string never throws and always explains hostile input") {
  const std::string deep(100000, '[');
  std::string binary;
  for (int i = 0; i < 256; ++i) binary += static_cast<char>(i);
  std::string many_keys = "programs:\n  e:\n    command: /bin/true\n";
  for (int i = 0; i < 2000; ++i) many_keys += "    k" + std::to_string(i) + ": 1\n";
  const std::string aliases =
      "a: &a [x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\n"
      "c: &c [*b, *b, *b, *b, *b, *b, *b, *b]\nprograms: *c\n";
  for (const std::string& text : {deep, binary, many_keys, aliases, std::string("\0", 1),
                                  std::string("programs: {e: {command: \"\\0\"}}")}) {
    LoadResult r;
    CHECK_NOTHROW(r = load(text));
    CHECK_FALSE(r.config.has_value());
    CHECK_FALSE(r.errors.empty());
  }
  LoadResult r;
  CHECK_NOTHROW(r = load(many_keys));
  CHECK(r.errors.size() == 2000);
  CHECK_NOTHROW(r = load(deep));
  REQUIRE(r.errors.size() == 1);
  CHECK(r.errors[0].to_string() == kFakeFile + ": invalid YAML: nested too deeply");
}

// ---------------------------------------------------------------------------
// paths and commands
// ---------------------------------------------------------------------------

TEST_CASE("relative paths resolve against the config file's folder and are normalised") {
  const LoadResult r = load(
      "supervisor:\n"
      "  control_socket: run/ctl.sock\n"
      "  pidfile: ../preforkd.pid\n"
      "  log: { file: ./log//preforkd.log }\n"
      "programs:\n"
      "  e:\n"
      "    command: bin/worker --x\n"
      "    listen: [\"unix:sock/e.sock\", \"unix:/abs/../e.sock\"]\n"
      "    stdout: out.log\n"
      "    stderr: /var/log/e.err\n");
  INFO(diagnostics(r));
  REQUIRE(r.config.has_value());
  const Supervisor& s = r.config->supervisor;
  CHECK(s.control_socket == "/etc/preforkd/run/ctl.sock");
  CHECK(s.pidfile == std::optional<std::string>("/etc/preforkd.pid"));
  CHECK(s.log_file == std::optional<std::string>("/etc/preforkd/log/preforkd.log"));
  const Program& p = r.config->programs[0];
  CHECK(p.command == std::vector<std::string>{"bin/worker", "--x"});  // argv[0] unchanged
  CHECK(p.executable == "/etc/preforkd/bin/worker");
  CHECK(p.listen[0].path == "/etc/preforkd/sock/e.sock");
  CHECK(p.listen[0].key() == "unix:/etc/preforkd/sock/e.sock");
  CHECK(p.listen[0].text == "unix:sock/e.sock");
  CHECK(p.listen[1].path == "/e.sock");
  CHECK(p.stdout_target == Output{Output::Kind::File, "/etc/preforkd/out.log"});
  CHECK(p.stderr_target == Output{Output::Kind::File, "/var/log/e.err"});
}

TEST_CASE("Config.path is absolute even when the file name is relative") {
  const LoadResult r = load_string("", "conf/x.yaml", {});
  REQUIRE(r.config.has_value());
  CHECK(r.config->path == (fs::current_path() / "conf/x.yaml").string());
}

TEST_CASE("a command with a slash resolves against the config folder and must be executable") {
  TempDir dir;
  const std::string worker = dir.file("bin/worker", 0755);
  dir.file("bin/data", 0644);
  const std::string file = (dir.path / "p.yaml").string();
  auto exe = [&](const std::string& command) {
    return load_string("programs:\n  e:\n    command: " + command + "\n", file, {});
  };
  const LoadResult ok = exe("./bin/worker");
  REQUIRE(ok.config.has_value());
  CHECK(ok.config->programs[0].executable == worker);

  const LoadResult data = exe("bin/data");
  REQUIRE(data.errors.size() == 1);
  CHECK(data.errors[0].message ==
        "programs.e.command: `" + (dir.path / "bin/data").string() + "`: not executable");

  const LoadResult dirs = exe("[./bin, --flag]");  // a folder is not a program
  REQUIRE(dirs.errors.size() == 1);
  CHECK(dirs.errors[0].message ==
        "programs.e.command: `" + (dir.path / "bin").string() + "`: is a directory");
}

TEST_CASE("a bare command is searched in PATH first, then in extra_command_dirs in order") {
  TempDir dir;
  const std::string in_path = dir.file("path/worker", 0755);
  const std::string extra1 = dir.file("extra1/worker", 0755);
  const std::string extra2 = dir.file("extra2/only-extra2", 0755);
  dir.file("extra1/only-extra2", 0644);  // not executable: skipped, like execvp does
  ScopedEnv path(
      "PATH", ("::" + (dir.path / "empty").string() + ":" + (dir.path / "path").string()).c_str());
  LoadOptions options;
  options.extra_command_dirs = {(dir.path / "extra1").string(), (dir.path / "extra2").string()};
  CHECK(only_program("programs:\n  e:\n    command: worker\n", options).executable == in_path);
  CHECK(only_program("programs:\n  e:\n    command: only-extra2 -v\n", options).executable ==
        extra2);
  CHECK(errors_of("programs:\n  e:\n    command: nothing-here\n", options) ==
        std::vector<std::string>{
            "3:14: programs.e.command: `nothing-here`: not found in $PATH or next to preforkd"});
  ScopedEnv no_path("PATH", "/nonexistent");
  CHECK(only_program("programs:\n  e:\n    command: worker\n", options).executable == extra1);
}

TEST_CASE("with PATH unset the standard search path is used") {
  ScopedEnv path("PATH", nullptr);
  const Program p = only_program("programs:\n  e:\n    command: sleep 1\n", LoadOptions{});
  CHECK(p.executable.front() == '/');
  CHECK(fs::path(p.executable).filename() == "sleep");
  CHECK(access(p.executable.c_str(), X_OK) == 0);
}

TEST_CASE("check_executables=false keeps a bare command as written and checks nothing") {
  ScopedEnv path("PATH", "/nonexistent");
  const Program p = only_program("programs:\n  e:\n    command: [no-such-prog, a]\n");
  CHECK(p.executable == "no-such-prog");
  CHECK(p.command == std::vector<std::string>{"no-such-prog", "a"});
}

// ---------------------------------------------------------------------------
// values
// ---------------------------------------------------------------------------

TEST_CASE("workers: auto is the number of online CPUs, at least 1") {
  const long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  const Program p = only_program("programs:\n  e:\n    command: x\n    workers: auto\n");
  CHECK(p.workers == static_cast<uint32_t>(std::max(1L, cpus)));
  CHECK(only_program("programs:\n  e:\n    command: x\n    workers: 10000\n").workers == 10000);
  CHECK(only_program("programs:\n  e:\n    command: x\n    workers: 0\n").workers == 0);
}

TEST_CASE("umask digits are octal whether written 022 or 22 or as the string 0022") {
  for (const char* u : {"022", "22", "\"0022\"", "'022'", "0000022"}) {
    CAPTURE(u);
    const Program p =
        only_program(std::string("programs:\n  e:\n    command: x\n    umask: ") + u + "\n");
    CHECK(p.umask == std::optional<mode_t>(022));
  }
  CHECK(only_program("programs:\n  e:\n    command: x\n    umask: 777\n").umask ==
        std::optional<mode_t>(0777));
  CHECK(only_program("programs:\n  e:\n    command: x\n    umask: 0\n").umask ==
        std::optional<mode_t>(0));
}

TEST_CASE("YAML booleans: true/false, yes/no, on/off in any of yaml-cpp's cases") {
  for (const char* t : {"true", "True", "TRUE", "yes", "Yes", "on", "ON", "y"}) {
    CAPTURE(t);
    CHECK(only_program(std::string("programs:\n  e:\n    command: x\n    reuseport: ") + t + "\n")
              .reuseport == true);
  }
  for (const char* f : {"false", "no", "off", "Off", "n"}) {
    CAPTURE(f);
    CHECK(only_program(std::string("programs:\n  e:\n    command: x\n    kill_group: ") + f + "\n")
              .kill_group == false);
  }
}

TEST_CASE("every rlimit name maps to its RLIMIT_* resource and unlimited is RLIM_INFINITY") {
  const std::pair<const char*, int> names[] = {
      {"as", RLIMIT_AS},           {"core", RLIMIT_CORE},         {"cpu", RLIMIT_CPU},
      {"data", RLIMIT_DATA},       {"fsize", RLIMIT_FSIZE},       {"locks", RLIMIT_LOCKS},
      {"memlock", RLIMIT_MEMLOCK}, {"msgqueue", RLIMIT_MSGQUEUE}, {"nice", RLIMIT_NICE},
      {"nofile", RLIMIT_NOFILE},   {"nproc", RLIMIT_NPROC},       {"rss", RLIMIT_RSS},
      {"rtprio", RLIMIT_RTPRIO},   {"rttime", RLIMIT_RTTIME},     {"sigpending", RLIMIT_SIGPENDING},
      {"stack", RLIMIT_STACK}};
  std::string yaml = "programs:\n  e:\n    command: x\n    rlimits:\n";
  for (const auto& [name, resource] : names) yaml += std::string("      ") + name + ": 7\n";
  const Program p = only_program(yaml);
  REQUIRE(p.rlimits.size() == std::size(names));
  for (std::size_t i = 0; i < p.rlimits.size(); ++i) {
    CAPTURE(names[i].first);
    CHECK(p.rlimits[i].name == names[i].first);  // file order
    CHECK(p.rlimits[i].resource == names[i].second);
    CHECK(p.rlimits[i].value == 7);
  }
  const Program q = only_program(
      "programs:\n  e:\n    command: x\n    rlimits: {core: unlimited, memlock: 64M, nofile: 0}\n");
  CHECK(q.rlimits[0].value == RLIM_INFINITY);
  CHECK(q.rlimits[1].value == 64ull << 20);
  CHECK(q.rlimits[2].value == 0);
}

TEST_CASE("environment keeps file order and each scalar's text as written") {
  const Program p = only_program(
      "programs:\n  e:\n    command: x\n    environment:\n"
      "      Z: last-but-first\n      A: 1.50\n      B: yes\n      C: \"\"\n      _D: ~x\n");
  CHECK(p.environment ==
        std::vector<std::pair<std::string, std::string>>{
            {"Z", "last-but-first"}, {"A", "1.50"}, {"B", "yes"}, {"C", ""}, {"_D", "~x"}});
}

TEST_CASE("preforkd's own variables cannot be set in environment") {
  for (const char* name : {"LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "WATCHDOG_USEC",
                           "WATCHDOG_PID", "NOTIFY_SOCKET", "PREFORKD_NOTIFY_FD", "PREFORKD_X"}) {
    CAPTURE(name);
    CHECK(errors_of(std::string("programs:\n  e:\n    command: x\n    environment: {") + name +
                    ": a}\n") ==
          std::vector<std::string>{std::string("4:19: programs.e.environment: `") + name +
                                   "` is set by preforkd"});
  }
  CHECK(only_program("programs:\n  e:\n    command: x\n    environment: {PREFORKD: 1, LISTEN: 2}\n")
            .environment.size() == 2);
}

TEST_CASE("user and group accept known names and numeric ids") {
  const Program p =
      only_program("programs:\n  e:\n    command: x\n    user: root\n    group: root\n");
  CHECK(p.user == std::optional<std::string>("root"));
  CHECK(p.group == std::optional<std::string>("root"));
  const Program q =
      only_program("programs:\n  e:\n    command: x\n    user: 65534\n    group: \"4242\"\n");
  CHECK(q.user == std::optional<std::string>("65534"));
  CHECK(q.group == std::optional<std::string>("4242"));
}

TEST_CASE("directory must be an existing folder and relative ones resolve against the config") {
  TempDir dir;
  fs::create_directories(dir.path / "work");
  const std::string file = (dir.path / "p.yaml").string();
  const LoadResult r =
      load_string("programs:\n  e:\n    command: x\n    directory: work/.\n", file, unchecked());
  INFO(diagnostics(r));
  REQUIRE(r.config.has_value());
  CHECK(r.config->programs[0].directory ==
        std::optional<std::string>((dir.path / "work").string()));
}

TEST_CASE("stop_signal takes names with or without SIG, in any case, and numbers") {
  for (const auto& [text, sig] : std::vector<std::pair<std::string, int>>{
           {"TERM", SIGTERM}, {"SIGINT", SIGINT}, {"quit", SIGQUIT}, {"15", 15}, {"9", SIGKILL}}) {
    CAPTURE(text);
    CHECK(only_program("programs:\n  e:\n    command: x\n    stop_signal: " + text + "\n")
              .stop_signal == sig);
  }
}

TEST_CASE("reload.batch is a count or a percentage and settle is a duration") {
  const Program p =
      only_program("programs:\n  e:\n    command: x\n    reload: {batch: 100%, settle: 1m30s}\n");
  CHECK(p.reload.batch == 100);
  CHECK(p.reload.batch_percent);
  CHECK(p.reload.settle == 90s);
  const Program q = only_program("programs:\n  e:\n    command: x\n    reload: {batch: 3}\n");
  CHECK(q.reload.batch == 3);
  CHECK_FALSE(q.reload.batch_percent);
  CHECK(q.reload.settle == 1s);
}

TEST_CASE("backoff keys are independent and min may equal max") {
  const Program p =
      only_program("programs:\n  e:\n    command: x\n    backoff: {min: 5s, max: 5s}\n");
  CHECK(p.backoff.min == 5s);
  CHECK(p.backoff.max == 5s);
  CHECK(p.backoff.reset_after == 10s);
}

TEST_CASE("stdout and stderr: log, inherit, null (bare or quoted) or a file") {
  auto out = [](const std::string& v) {
    return only_program("programs:\n  e:\n    command: x\n    stdout: " + v + "\n").stdout_target;
  };
  CHECK(out("log") == Output{Output::Kind::Log, ""});
  CHECK(out("inherit") == Output{Output::Kind::Inherit, ""});
  CHECK(out("null") == Output{Output::Kind::Null, ""});
  CHECK(out("~") == Output{Output::Kind::Null, ""});
  CHECK(out("\"null\"") == Output{Output::Kind::Null, ""});
  CHECK(out("/dev/null") == Output{Output::Kind::File, "/dev/null"});
  CHECK(out("\"log \"") == Output{Output::Kind::File, "/etc/preforkd/log "});
}

TEST_CASE("listen: a single scalar is one entry and names default to program, then program-i") {
  const Program one = only_program("programs:\n  web:\n    command: x\n    listen: \"*:80\"\n");
  REQUIRE(one.listen.size() == 1);
  CHECK(one.listen[0].name == "web");
  CHECK(one.listen[0].host == "0.0.0.0");
  CHECK(one.listen[0].family == ListenAddress::Family::Inet);

  const Program many = only_program(
      "programs:\n  web:\n    command: x\n    listen:\n"
      "      - \"127.0.0.1:80\"\n      - {address: \"[::1]:80\", name: v6}\n      - "
      "\"unix:/run/w\"\n");
  REQUIRE(many.listen.size() == 3);
  CHECK(many.listen[0].name == "web");
  CHECK(many.listen[1].name == "v6");
  CHECK(many.listen[1].family == ListenAddress::Family::Inet6);
  CHECK(many.listen[1].host == "::1");
  CHECK(many.listen[1].port == 80);
  CHECK(many.listen[2].name == "web-2");
  CHECK(many.listen[2].family == ListenAddress::Family::Unix);
}

TEST_CASE("the same address twice is refused, however it is spelled") {
  CHECK(errors_of("programs:\n  a:\n    command: x\n    listen: [\"127.0.0.1:7000\"]\n"
                  "  b:\n    command: x\n    listen: [\"localhost:7000\"]\n") ==
        std::vector<std::string>{"7:14: programs.b.listen[0]: address `localhost:7000` is already "
                                 "used by program `a`"});
  CHECK(errors_of("programs:\n  a:\n    command: x\n    listen: [\"[::1]:1\", "
                  "\"[0:0:0:0:0:0:0:1]:1\"]\n") ==
        std::vector<std::string>{"4:25: programs.a.listen[1]: address `[0:0:0:0:0:0:0:1]:1` is "
                                 "already used by program `a`"});
  // The default control socket counts even when `supervisor` is not written.
  CHECK(
      errors_of(
          "programs:\n  a:\n    command: x\n    listen: \"unix:/run/preforkd/preforkd.sock\"\n") ==
      std::vector<std::string>{"4:13: programs.a.listen: address "
                               "`unix:/run/preforkd/preforkd.sock` is already used by "
                               "supervisor.control_socket"});
}

TEST_CASE("port 0 may repeat across programs but not within one") {
  const LoadResult r = load(
      "programs:\n  a:\n    command: x\n    listen: \"127.0.0.1:0\"\n"
      "  b:\n    command: x\n    listen: \"127.0.0.1:0\"\n");
  INFO(diagnostics(r));
  CHECK(r.config.has_value());
  CHECK(errors_of(
            "programs:\n  a:\n    command: x\n    listen: [\"127.0.0.1:0\", \"127.0.0.1:0\"]\n") ==
        std::vector<std::string>{
            "4:29: programs.a.listen[1]: address `127.0.0.1:0` is already used by program `a`"});
}

TEST_CASE("metrics is stored in canonical form with its parsed address") {
  const LoadResult r = load("supervisor:\n  metrics: \"[0::1]:9464\"\n");
  REQUIRE(r.config.has_value());
  const Supervisor& s = r.config->supervisor;
  CHECK(s.metrics == std::optional<std::string>("[::1]:9464"));
  REQUIRE(s.metrics_address.has_value());
  CHECK(s.metrics_address->key() == "tcp6:[::1]:9464");
  const LoadResult star = load("supervisor:\n  metrics: \"*:9464\"\n");
  REQUIRE(star.config.has_value());
  CHECK(star.config->supervisor.metrics == std::optional<std::string>("0.0.0.0:9464"));
}

TEST_CASE("control_group accepts a known group or a numeric id") {
  const LoadResult r = load("supervisor:\n  control_group: root\n");
  REQUIRE(r.config.has_value());
  CHECK(r.config->supervisor.control_group == std::optional<std::string>("root"));
  const LoadResult n = load("supervisor:\n  control_group: 1234\n");
  REQUIRE(n.config.has_value());
  CHECK(n.config->supervisor.control_group == std::optional<std::string>("1234"));
}

// ---------------------------------------------------------------------------
// detail
// ---------------------------------------------------------------------------

TEST_CASE("parse_address: unix paths fit sun_path exactly up to 107 bytes") {
  std::string error;
  const std::string fits = "/" + std::string(106, 'a');
  const auto a = detail::parse_address("unix:" + fits, "/", true, &error);
  REQUIRE(a.has_value());
  CHECK(a->path.size() == 107);
  CHECK_FALSE(detail::parse_address("unix:" + fits + "b", "/", true, &error).has_value());
  CHECK(error == "unix socket path `" + fits + "b` is too long (108 bytes, at most 107)");
}

TEST_CASE("parse_address canonicalises hosts and refuses names and out-of-range ports") {
  std::string error;
  CHECK(detail::parse_address("[::ffff:127.0.0.1]:1", "/", true, &error)->host ==
        "::ffff:127.0.0.1");
  CHECK(detail::parse_address("[2001:DB8::0:1]:1", "/", true, &error)->host == "2001:db8::1");
  CHECK(detail::parse_address("127.0.0.1:65535", "/", true, &error)->port == 65535);
  CHECK(detail::parse_address("127.0.0.1:007", "/", true, &error)->port == 7);
  CHECK_FALSE(detail::parse_address("127.1:80", "/", true, &error).has_value());
  CHECK_FALSE(detail::parse_address("localhost6:80", "/", true, &error).has_value());
  CHECK_FALSE(detail::parse_address("127.0.0.1:-1", "/", true, &error).has_value());
  CHECK_FALSE(detail::parse_address("127.0.0.1:+80", "/", true, &error).has_value());
  CHECK(detail::parse_address("[::1]:80", "/", false, nullptr).has_value());  // error is optional
  CHECK_FALSE(detail::parse_address("x", "/", true, nullptr).has_value());
  CHECK_FALSE(detail::parse_address("unix:/x", "/", false, &error).has_value());
  CHECK(error == "bad address `unix:/x`: expected host:port or [v6]:port");
}

TEST_CASE("name rules: programs, variables and socket names") {
  CHECK(detail::valid_program_name("a"));
  CHECK(detail::valid_program_name("web.api-2_x"));
  CHECK(detail::valid_program_name(std::string(64, 'a')));
  CHECK_FALSE(detail::valid_program_name(std::string(65, 'a')));
  CHECK_FALSE(detail::valid_program_name(""));
  CHECK_FALSE(detail::valid_program_name("a/b"));
  CHECK_FALSE(detail::valid_program_name("a:b"));
  CHECK(detail::valid_env_name("_"));
  CHECK(detail::valid_env_name("A1_b"));
  CHECK_FALSE(detail::valid_env_name("1A"));
  CHECK_FALSE(detail::valid_env_name("A=B"));
  CHECK_FALSE(detail::valid_env_name(""));
  CHECK(detail::valid_socket_name("x"));
  CHECK(detail::valid_socket_name(std::string(255, '~')));
  CHECK_FALSE(detail::valid_socket_name(std::string(256, 'x')));
  CHECK_FALSE(detail::valid_socket_name("a\tb"));
  CHECK_FALSE(detail::valid_socket_name("caf\xc3\xa9"));
}

// ---------------------------------------------------------------------------
// value types
// ---------------------------------------------------------------------------

TEST_CASE("ListenAddress::key is tcp:host:port, tcp6:(host in brackets):port or unix:path") {
  ListenAddress a;
  a.family = ListenAddress::Family::Inet;
  a.host = "127.0.0.1";
  a.port = 7000;
  CHECK(a.key() == "tcp:127.0.0.1:7000");
  a.family = ListenAddress::Family::Inet6;
  a.host = "::1";
  CHECK(a.key() == "tcp6:[::1]:7000");
  a.family = ListenAddress::Family::Unix;
  a.path = "/run/x.sock";
  CHECK(a.key() == "unix:/run/x.sock");
}

TEST_CASE("enum names are the spellings the config file uses") {
  CHECK(std::string(to_string(LogLevel::Trace)) == "trace");
  CHECK(std::string(to_string(LogLevel::Debug)) == "debug");
  CHECK(std::string(to_string(LogLevel::Info)) == "info");
  CHECK(std::string(to_string(LogLevel::Warn)) == "warn");
  CHECK(std::string(to_string(LogLevel::Error)) == "error");
  CHECK(std::string(to_string(Restart::Always)) == "always");
  CHECK(std::string(to_string(Restart::OnFailure)) == "on-failure");
  CHECK(std::string(to_string(Restart::Never)) == "never");
  CHECK(std::string(to_string(ReadyMode::Exec)) == "exec");
  CHECK(std::string(to_string(ReadyMode::Notify)) == "notify");
  CHECK(std::string(to_string(Output::Kind::Inherit)) == "inherit");
  CHECK(std::string(to_string(ListenAddress::Family::Inet6)) == "inet6");
}

TEST_CASE("Program::operator== notices a change in any single field") {
  const Program base;
  using Change = std::function<void(Program&)>;
  const std::vector<std::pair<std::string, Change>> changes = {
      {"name", [](Program& p) { p.name = "x"; }},
      {"command", [](Program& p) { p.command = {"x"}; }},
      {"executable", [](Program& p) { p.executable = "/x"; }},
      {"workers", [](Program& p) { p.workers = 2; }},
      {"listen", [](Program& p) { p.listen.emplace_back(); }},
      {"listen name",
       [](Program& p) {
         p.listen.emplace_back();
         p.listen.back().name = "n";
       }},
      {"backlog", [](Program& p) { p.backlog = 1; }},
      {"reuseport", [](Program& p) { p.reuseport = true; }},
      {"environment", [](Program& p) { p.environment.emplace_back("A", "1"); }},
      {"directory", [](Program& p) { p.directory = "/"; }},
      {"user", [](Program& p) { p.user = "root"; }},
      {"group", [](Program& p) { p.group = "root"; }},
      {"umask", [](Program& p) { p.umask = 022; }},
      {"rlimits",
       [](Program& p) {
         p.rlimits.push_back(Rlimit{RLIMIT_NOFILE, "nofile", 1});
       }},
      {"restart", [](Program& p) { p.restart = Restart::Never; }},
      {"backoff.min", [](Program& p) { p.backoff.min = 1ms; }},
      {"backoff.max", [](Program& p) { p.backoff.max = 1ms; }},
      {"backoff.reset_after", [](Program& p) { p.backoff.reset_after = 1ms; }},
      {"reload.batch", [](Program& p) { p.reload.batch = 2; }},
      {"reload.batch_percent", [](Program& p) { p.reload.batch_percent = true; }},
      {"reload.settle", [](Program& p) { p.reload.settle = 1ms; }},
      {"reload.guard", [](Program& p) { p.reload.guard = 0ms; }},
      {"ready", [](Program& p) { p.ready = ReadyMode::Notify; }},
      {"start_timeout", [](Program& p) { p.start_timeout = 1ms; }},
      {"watchdog_timeout", [](Program& p) { p.watchdog_timeout = 1ms; }},
      {"stop_signal", [](Program& p) { p.stop_signal = SIGINT; }},
      {"stop_timeout", [](Program& p) { p.stop_timeout = 1ms; }},
      {"kill_group", [](Program& p) { p.kill_group = false; }},
      {"orphans", [](Program& p) { p.orphans = OrphanMode::Keep; }},
      {"notify_socket", [](Program& p) { p.notify_socket = false; }},
      {"max_requests", [](Program& p) { p.max_requests = 1; }},
      {"max_memory", [](Program& p) { p.max_memory = 1; }},
      {"stdout", [](Program& p) { p.stdout_target.kind = Output::Kind::Null; }},
      {"stderr",
       [](Program& p) {
         p.stderr_target = Output{Output::Kind::File, "/x"};
       }},
  };
  CHECK(base == Program{});
  for (const auto& [field, change] : changes) {
    CAPTURE(field);
    Program p;
    change(p);
    CHECK_FALSE(p == base);
  }
}

TEST_CASE("Supervisor::operator== notices a change in any single field") {
  const Supervisor base;
  using Change = std::function<void(Supervisor&)>;
  const std::vector<std::pair<std::string, Change>> changes = {
      {"control_socket", [](Supervisor& s) { s.control_socket = "/x"; }},
      {"control_group", [](Supervisor& s) { s.control_group = "root"; }},
      {"pidfile", [](Supervisor& s) { s.pidfile = "/x"; }},
      {"log_level", [](Supervisor& s) { s.log_level = LogLevel::Debug; }},
      {"log_file", [](Supervisor& s) { s.log_file = "/x"; }},
      {"metrics", [](Supervisor& s) { s.metrics = "127.0.0.1:1"; }},
      {"metrics_address", [](Supervisor& s) { s.metrics_address = ListenAddress{}; }},
      {"shutdown_timeout", [](Supervisor& s) { s.shutdown_timeout = 1ms; }},
  };
  CHECK(base == Supervisor{});
  for (const auto& [field, change] : changes) {
    CAPTURE(field);
    Supervisor s;
    change(s);
    CHECK_FALSE(s == base);
  }
}

TEST_CASE("loading the same text twice gives equal configs but one changed value does not") {
  const std::string text = read_text(kConfigs + "ok/full.yaml");
  const std::string file = kConfigs + "ok/full.yaml";
  const LoadResult a = load_string(text, file, {});
  const LoadResult b = load_string(text, file, {});
  REQUIRE(a.config.has_value());
  REQUIRE(b.config.has_value());
  CHECK(*a.config == *b.config);
  std::string changed = text;
  changed.replace(changed.find("workers: 3"), 10, "workers: 4");
  const LoadResult c = load_string(changed, file, {});
  REQUIRE(c.config.has_value());
  CHECK_FALSE(*a.config == *c.config);
}

TEST_CASE("workers: {min, max} turns autoscaling on - a plain number keeps the fixed count") {
  Program fixed = only_program("programs:\n  w:\n    command: /bin/true\n    workers: 3\n");
  CHECK(fixed.workers == 3);
  CHECK_FALSE(fixed.autoscale.has_value());
  Program a = only_program("programs:\n  w:\n    command: /bin/true\n    workers: { min: 2, max: 16 }\n");
  REQUIRE(a.autoscale.has_value());
  CHECK(a.workers == 2);  // starts at min
  CHECK(a.autoscale->min == 2);
  CHECK(a.autoscale->max == 16);
  CHECK(a.autoscale->up_after == 1000ms);  // the documented defaults
  CHECK(a.autoscale->down_after == 30000ms);
  CHECK(a.autoscale->cooldown == 10000ms);
  CHECK(a.autoscale->step == 1);
  CHECK(a.autoscale->target_utilization == 50);
  Program t = only_program("programs:\n  w:\n    command: /bin/true\n    autoscale: { up_after: 500ms, down_after: 1m, "
                           "cooldown: 0s, step: 3, target_utilization: 40% }\n    workers: { min: 0, max: 4 }\n");
  REQUIRE(t.autoscale.has_value());
  CHECK(t.autoscale->up_after == 500ms);
  CHECK(t.autoscale->down_after == 60000ms);
  CHECK(t.autoscale->cooldown == 0ms);
  CHECK(t.autoscale->step == 3);
  CHECK(t.autoscale->target_utilization == 40);
  CHECK_FALSE(a == t);
  Program u = t;
  u.autoscale->target_utilization = 41;
  CHECK_FALSE(u == t);
}
