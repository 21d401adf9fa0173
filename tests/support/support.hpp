// support.hpp — what the sys and integration tests share: temporary folders,
// real processes with captured output, deadline-bounded waits (never fixed
// sleeps), loopback sockets and /proc readers.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace preforkd::test {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// Path of a built binary: bin("preforkd").
std::string bin(const std::string& name);

// Polls `pred` every few milliseconds until it holds or `timeout` passes.
bool wait_until(const std::function<bool()>& pred, std::chrono::milliseconds timeout = 10s);

class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }
  std::string write(const std::string& name, const std::string& content) const;

 private:
  std::string path_;
};

std::string read_file(const std::string& path);
bool file_exists(const std::string& path);

// A child process whose stdout+stderr go to a log file.
class Process {
 public:
  // `in_child` runs in the forked child just before exec (e.g. to ignore a
  // signal or lower a limit that the program under test must not pass on).
  Process(const std::vector<std::string>& argv, const std::string& log_path,
          const std::map<std::string, std::string>& extra_env = {},
          const std::function<void()>& in_child = {});
  ~Process();  // SIGKILLs and reaps the process if still running
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  pid_t pid() const { return pid_; }
  std::string log() const { return read_file(log_path_); }
  // Waits until the log contains `needle` (from offset `from`); returns its offset or npos.
  size_t wait_for_log(const std::string& needle, std::chrono::milliseconds timeout = 10s,
                      size_t from = 0) const;
  bool signal(int sig) const;
  // Waits for the exit; returns the raw wait status, or nullopt on timeout.
  std::optional<int> wait(std::chrono::milliseconds timeout = 10s);
  bool running();

 private:
  pid_t pid_ = -1;
  bool reaped_ = false;
  std::string log_path_;
};

// Runs a command to completion; returns {exit code (or 128+sig), stdout+stderr}.
std::pair<int, std::string> run(const std::vector<std::string>& argv,
                                std::chrono::milliseconds timeout = 30s);

// ---- /proc ----
std::vector<pid_t> children_of(pid_t parent);    // direct children
int zombie_children(pid_t parent);               // children in state Z
int count_fds(pid_t pid);                        // entries of /proc/<pid>/fd
bool pid_alive(pid_t pid);                       // exists and is not a zombie
char proc_state(pid_t pid);                      // 'R', 'S', 'Z', ... or 0
long rss_kib(pid_t pid);
unsigned long long cpu_ticks(pid_t pid);         // utime + stime
bool signal_ignored(pid_t pid, int sig);         // SigIgn of /proc/<pid>/status has `sig`
// The test worker ignores TERM only once it has run that far (its step 6):
// waits (10 s at most) until every one of `pids` does.
bool all_ignore_term(const std::vector<pid_t>& pids);
// voluntary_ctxt_switches + nonvoluntary_ctxt_switches summed over the threads
// of /proc/<pid>/task; -1 if the process is gone. A process asleep in
// epoll_wait() adds at least one per wake-up (it blocks again after it), and
// nothing while it sleeps: the difference over a window counts its wake-ups.
long long context_switches(pid_t pid);
// Waits until `pid` has not been switched in or out for `quiet`: whatever it
// was doing is over and it sleeps. A 1 s timer leaves such gaps; anything
// waking it more often than every `quiet` does not, and the wait fails.
bool wait_quiet(pid_t pid, std::chrono::milliseconds quiet = 300ms, std::chrono::milliseconds timeout = 10s);
// context_switches() over `window`, -1 if `pid` is gone by its end. The
// window is the measurement itself (nothing else may talk to `pid` during
// it), not a wait for something to happen.
long long wakeups_over(pid_t pid, std::chrono::milliseconds window);

// ---- loopback sockets (127.0.0.1 only) ----
int connect_tcp(uint16_t port, std::chrono::milliseconds timeout = 2s);  // fd or -errno
// Sends `msg`, reads until the same number of bytes came back; true if echoed.
bool echo_roundtrip(uint16_t port, const std::string& msg);
// A port that was free a moment ago (bind 127.0.0.1:0, read it, close).
uint16_t free_port();
// A listening TCP socket on 127.0.0.1 with a kernel-chosen port, stored in
// `port`; the caller closes it. Throws std::runtime_error on failure.
int listen_loopback(uint16_t& port, int backlog = 64);

// ---- preforkd under test ----
// Writes a config into `dir`, starts build/bin/preforkd on it and waits until
// it has started its workers. `env` is added to preforkd's environment (e.g.
// PREFORKD_FAULTS).
class Preforkd {
 public:
  Preforkd(const TempDir& dir, const std::string& yaml, const std::vector<std::string>& extra_args = {},
           bool wait_started = true, const std::function<void()>& in_child = {},
           const std::string& binary = "",  // default: build/bin/preforkd
           const std::map<std::string, std::string>& env = {});
  ~Preforkd();

  Process& process() { return *proc_; }
  pid_t pid() const { return proc_->pid(); }
  std::string log() const { return proc_->log(); }
  size_t wait_for_log(const std::string& needle, std::chrono::milliseconds timeout = 10s,
                      size_t from = 0) const {
    return proc_->wait_for_log(needle, timeout, from);
  }
  // The control socket (each test's preforkd has its own, in its TempDir).
  const std::string& control_socket() const { return control_socket_; }
  // One request line over the control socket; the reply, parsed.
  nlohmann::json control(const nlohmann::json& request, std::chrono::milliseconds timeout = 30s) const;
  // The config file; `rewrite` replaces it (for a reload), keeping the control socket.
  const std::string& config_path() const { return config_path_; }
  void rewrite(const std::string& yaml) const;
  // The port of the n-th "listening on 127.0.0.1:PORT" line.
  uint16_t port(size_t n = 0) const;
  std::vector<pid_t> workers() const { return children_of(pid()); }
  // Waits until exactly `n` live (non-zombie) children exist.
  bool wait_workers(size_t n, std::chrono::milliseconds timeout = 10s) const;
  // TERM, then waits; returns the exit code (or -1 on timeout / signal).
  int stop(std::chrono::milliseconds timeout = 20s);

 private:
  std::string config_path_;
  std::string control_socket_;
  std::unique_ptr<Process> proc_;
};

// Gives a test config its own control socket (unless it names one): parallel
// tests must not share preforkd's default /run/preforkd/preforkd.sock.
std::string with_control_socket(const std::string& yaml, const std::string& socket_path);

// Sends one line to a Unix socket and reads one line back ("" on failure).
std::string unix_request(const std::string& socket_path, const std::string& line,
                         std::chrono::milliseconds timeout = 30s);

// From a `status` reply: the pids of one program's workers (all programs'
// with an empty name), and one program's entry (null if absent).
std::set<pid_t> pids_of(const nlohmann::json& status, const std::string& program = "");
nlohmann::json program_of(const nlohmann::json& reply, const std::string& name);
// Every worker of `program` is ready with STATUS `status`, and there are `n`.
bool ready_with_status(const Preforkd& d, const std::string& program, size_t n, const std::string& status);

// The test worker's --dump-state JSON, parsed (nlohmann-json).
nlohmann::json read_json(const std::string& path);

}  // namespace preforkd::test
