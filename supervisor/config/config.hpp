// config.hpp — the validated configuration, as plain value types.
//
// Owns: what a preforkd.yaml means once it has been parsed and checked, with
// every default filled in. Produced only by config::load(); consumed by the
// daemon, and later diffed (old x new) by the reload work, so every type here
// is a regular value type with operator== and no pointers into the YAML tree.
// Must never: touch the system beyond what validation needs (load() checks
// that commands are executable and that users/groups exist).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace preforkd::config {

using Duration = std::chrono::milliseconds;

enum class LogLevel { Trace, Debug, Info, Warn, Error };
enum class Restart { Always, OnFailure, Never };
enum class ReadyMode { Exec, Notify };
// What happens to the processes a worker leaves behind (SPEC "Process tree").
enum class OrphanMode { Stop, Keep };

// Where a worker's stdout or stderr goes.
struct Output {
  enum class Kind { Log, Inherit, Null, File };
  Kind kind = Kind::Log;
  std::string path;  // Kind::File only: absolute (resolved against the config folder)
  bool operator==(const Output& o) const { return kind == o.kind && path == o.path; }
};

// One `listen` entry. `key()` identifies a socket across reloads.
struct ListenAddress {
  enum class Family { Inet, Inet6, Unix };
  Family family = Family::Inet;
  std::string host;    // numeric, canonical (inet_ntop): "127.0.0.1", "::1"; Inet/Inet6 only
  uint16_t port = 0;   // 0 = the kernel picks (the chosen port is logged)
  std::string path;    // Unix only: absolute (resolved against the config folder)
  std::string name;    // LISTEN_FDNAMES entry: explicit, or "<program>" / "<program>-<i>"
  std::string text;    // the address as written, for messages ("127.0.0.1:7000", "unix:/x")

  // Canonical identity: "tcp:127.0.0.1:7000", "tcp6:[::1]:7000", "unix:/run/x.sock".
  std::string key() const;
  bool operator==(const ListenAddress& o) const {
    return family == o.family && host == o.host && port == o.port && path == o.path &&
           name == o.name;
  }
};

// `workers: {min, max}` and its `autoscale:` tunables (preforkd.yaml(5)).
struct Autoscale {
  uint32_t min = 1;
  uint32_t max = 1;
  Duration up_after{1000};
  Duration down_after{30000};
  Duration cooldown{10000};
  uint32_t step = 1;
  uint32_t target_utilization = 50;  // percent: scale down only if the rest stay at most this busy
  bool operator==(const Autoscale& o) const {
    return min == o.min && max == o.max && up_after == o.up_after && down_after == o.down_after &&
           cooldown == o.cooldown && step == o.step && target_utilization == o.target_utilization;
  }
  bool operator!=(const Autoscale& o) const { return !(*this == o); }
};

struct Backoff {
  Duration min{100};
  Duration max{30000};
  Duration reset_after{10000};
  bool operator==(const Backoff& o) const {
    return min == o.min && max == o.max && reset_after == o.reset_after;
  }
};

struct ReloadPolicy {
  uint32_t batch = 1;          // workers at a time, or a percentage when batch_percent
  bool batch_percent = false;  // "25%" -> batch = 25, batch_percent = true
  Duration settle{1000};
  // After a rollout, how long the previous configuration is kept so that a
  // failing new generation is rolled back to it (0: no guard, no rollback).
  Duration guard{30000};
  bool operator==(const ReloadPolicy& o) const {
    return batch == o.batch && batch_percent == o.batch_percent && settle == o.settle && guard == o.guard;
  }
};

// One `rlimits` entry, e.g. nofile: 65536. Values are applied as soft = hard = value.
struct Rlimit {
  int resource = 0;       // RLIMIT_NOFILE, ...
  std::string name;       // "nofile"
  uint64_t value = 0;     // RLIM_INFINITY for "unlimited"
  bool operator==(const Rlimit& o) const { return resource == o.resource && value == o.value; }
};

struct Program {
  std::string name;
  std::vector<std::string> command;  // argv as written (argv[0] unchanged)
  std::string executable;            // resolved absolute path of command[0]
  uint32_t workers = 1;              // "auto" is resolved to the number of CPUs at load time; {min, max}: min
  std::optional<Autoscale> autoscale;  // with workers: {min, max}
  std::vector<ListenAddress> listen;
  int backlog = 1024;
  bool reuseport = false;
  std::vector<std::pair<std::string, std::string>> environment;  // in file order
  std::optional<std::string> directory;                         // absolute
  std::optional<std::string> user;
  std::optional<std::string> group;
  std::optional<mode_t> umask;
  std::vector<Rlimit> rlimits;
  Restart restart = Restart::Always;
  Backoff backoff;
  ReloadPolicy reload;
  ReadyMode ready = ReadyMode::Exec;
  Duration start_timeout{30000};
  Duration watchdog_timeout{0};
  int stop_signal = 15;  // SIGTERM
  Duration stop_timeout{10000};
  bool kill_group = true;
  OrphanMode orphans = OrphanMode::Stop;
  bool notify_socket = true;  // NOTIFY_SOCKET (sd_notify) in the worker's environment
  uint64_t max_requests = 0;
  uint64_t max_memory = 0;  // bytes
  uint32_t ready_min = 1;   // GET /readyz: ready workers this program needs (at most its wanted count)
  Output stdout_target;
  Output stderr_target;

  bool operator==(const Program& o) const;
};

struct Supervisor {
  std::string control_socket = "/run/preforkd/preforkd.sock";  // absolute after load; default <LoadOptions::runtime_dir>/preforkd.sock
  std::optional<std::string> control_group;
  std::optional<std::string> pidfile;  // absolute after load
  LogLevel log_level = LogLevel::Info;
  std::optional<std::string> log_file;  // absolute after load; nullopt = stderr
  std::optional<std::string> metrics;   // "127.0.0.1:9464", "[::1]:9464" (canonical host)
  std::optional<ListenAddress> metrics_address;  // the same, parsed (Inet/Inet6, port 1..65535)
  Duration shutdown_timeout{30000};
  bool operator==(const Supervisor& o) const;
};

struct Config {
  std::string path;  // the file it came from (absolute)
  Supervisor supervisor;
  std::vector<Program> programs;  // in file order
  bool operator==(const Config& o) const {
    return path == o.path && supervisor == o.supervisor && programs == o.programs;
  }
};

// One problem found in a file. `to_string()` is "file:line:column: message".
struct Diagnostic {
  std::string file;
  int line = 0;    // 1-based; 0 when the problem has no position (e.g. cannot open)
  int column = 0;  // 1-based
  std::string message;
  std::string to_string() const;
};

struct LoadOptions {
  bool check_executables = true;  // resolve command[0] and require it to be executable
  // Folders searched, after $PATH, for a command without a slash. The daemon
  // passes the folder of its own binary and <that>/../lib/preforkd, so the
  // shipped config finds preforkd-echo in the build tree and in the package.
  std::vector<std::string> extra_command_dirs;
  // Folder of the default control socket (`<runtime_dir>/preforkd.sock`) when
  // the file does not set `supervisor.control_socket`. preforkd and preforkctl
  // pass the same folder, so the client finds the daemon.
  std::string runtime_dir = "/run/preforkd";
};

struct LoadResult {
  std::optional<Config> config;      // set iff errors is empty
  std::vector<Diagnostic> errors;
};

// Reads, parses and validates `path`. Never throws; never starts anything.
// With `text`, the bytes read are stored there too (the daemon keeps the text
// of the configuration it runs, for the in-place upgrade).
LoadResult load_file(const std::string& path, const LoadOptions& options = {}, std::string* text = nullptr);

// Same, from text; `file` names it in diagnostics and its folder anchors relative paths.
LoadResult load_string(const std::string& text, const std::string& file,
                       const LoadOptions& options = {});

const char* to_string(LogLevel level);
const char* to_string(Restart restart);
const char* to_string(ReadyMode ready);
const char* to_string(OrphanMode mode);         // "stop", "keep"
const char* to_string(Output::Kind kind);        // "log", "inherit", "null", "file"
const char* to_string(ListenAddress::Family f);  // "inet", "inet6", "unix"

// Every field of `config`, one per line, YAML-like and stable: for `--check`
// style output, debugging and golden tests. Not meant to be parsed back.
std::string dump(const Config& config);

}  // namespace preforkd::config
