// daemon.hpp — the supervisor's shell: one thread, one epoll loop (STYLE 3.4).
//
// Owns: the OS side of everything core::Policy decides — the listening
// sockets (per program shape, and per slot with reuseport), every worker's
// pipes (keyed by the process, core::ProcId, so they never move when a
// process leaves its slot to a successor), the signalfd, the one timerfd,
// the control and metrics servers, the fd registry. It collects events
// (signals, pipe bytes, reaped children, control requests), hands them to
// core::Policy, then applies the Actions it returns (core/action.hpp).
// Must never: decide policy (that is core/), call the kernel directly (that
// is sys/), run anything in a signal handler (there are none, T1), block, or
// poll on an interval (T26).
//
// After start-up the loop cannot die: every iteration runs inside a boundary
// that logs and contains an exception, and the kernel calls in it use the
// errno-returning twins of sys/io.hpp, so a failing epoll_ctl, pipe2, fork
// or accept4 degrades one operation (a spawn backs off, a client is
// dropped), logged once per cause.
#pragma once

#include <nlohmann/json.hpp>
#include <spdlog/logger.h>

#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "config/config.hpp"
#include "core/line_buffer.hpp"
#include "core/policy.hpp"
#include "daemon/control_server.hpp"
#include "daemon/metrics_http.hpp"
#include "sys/event_loop_fds.hpp"
#include "sys/exit_status.hpp"
#include "sys/identity.hpp"
#include "sys/io.hpp"
#include "sys/listen_queue.hpp"
#include "sys/listen_socket.hpp"
#include "sys/signal_fd.hpp"
#include "sys/spawn.hpp"
#include "sys/systemd.hpp"
#include "sys/unique_fd.hpp"

namespace preforkd::daemon {

struct DaemonOptions {
  std::string config_text;                    // the text `config` was parsed from
  config::LoadOptions load_options;           // for reloads
  std::string self_path;                      // the binary USR2 re-execs (as started)
  // The in-place upgrade: the state handed over by the previous binary and
  // its configurations by generation (both validated), instead of binding.
  std::optional<nlohmann::json> upgrade_state;
  std::map<uint64_t, config::Config> upgrade_configs;
  std::optional<std::string> pidfile;         // --pidfile, overrides the config
  std::optional<config::LogLevel> log_level;  // --log-level, overrides the config
};

// A ListenSpec for sys::bind_listener from a configured address.
sys::ListenSpec to_spec(const config::ListenAddress& a, int backlog, bool reuseport);

class Daemon {
 public:
  // Sets up logging, signals and the loop, and binds every listening socket
  // (throws sys::SysError on failure: exit 1). Starts nothing yet.
  Daemon(config::Config config, DaemonOptions options);
  ~Daemon();
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  // Starts the workers and runs until shutdown. Returns the exit code.
  int run();

 private:
  // One listening socket (shared by a program's workers, or one slot's own
  // with reuseport). Shared ownership: a reload hands a socket that appears in
  // both files to the new configuration (the very same fd), and the last
  // owner to let go closes it, after the workers that use it are gone.
  struct Listener {
    config::ListenAddress address;
    sys::UniqueFd fd;
    std::string bound;             // actual address, e.g. with the kernel-chosen port
    bool unlink_on_close = false;  // a Unix path we bound (not one systemd passed)
    Listener() = default;
    Listener(const Listener&) = delete;
    Listener& operator=(const Listener&) = delete;
    ~Listener();
  };
  using ListenerRef = std::shared_ptr<Listener>;

  // The OS side of a core::Shape: what a program's workers of one
  // configuration generation start with. Keyed by (program name, generation).
  struct Resources {
    std::vector<ListenerRef> listeners;  // shared sockets, in `listen` order (empty with reuseport)
    std::vector<std::string> base_env;   // everything but PREFORKD_SLOT and PREFORKD_GENERATION
    std::optional<sys::UserInfo> user;
    std::optional<gid_t> group;
  };
  using ShapeKey = std::pair<std::string, uint64_t>;
  using SlotKey = std::pair<core::ProgramId, int>;

  // A captured pipe of one process (notify, stdout or stderr).
  struct Pipe {
    enum class Kind { Notify, Stdout, Stderr };
    Kind kind = Kind::Notify;
    core::ProcId proc = 0;
    std::string who;  // "echo[2] 1234" for output lines
    sys::UniqueFd fd;
    core::LineBuffer lines{4096, core::LineBuffer::Overflow::Split};
  };

  // The fd registry: what an epoll token stands for. Tokens are never
  // reused, so an event for something closed earlier in the same batch
  // finds nothing. Control and metrics clients use their fd as token (below
  // kHandlerBit) and are routed to their servers.
  struct Handler {
    enum class Kind { Signal, Timer, Pipe, NotifySocket, Starting };
    Kind kind = Kind::Pipe;
    std::unique_ptr<Pipe> pipe;  // Kind::Pipe
    pid_t pid = 0;               // Kind::Starting: the child whose watch fd this is
    int fd = -1;                 // Kind::Starting: that fd (owned by the StartingChild)
  };
  static constexpr uint64_t kHandlerBit = uint64_t{1} << 40;

  // A worker between clone and execve (sys::spawn_async): its stack and
  // plan live here until it has left preforkd's memory (watch fd EOF, or
  // reaped). The policy knows it from the clone on.
  struct Starting {
    std::string who;       // "web[2] 1234"
    std::string slot_tag;  // "web[2]"
    std::unique_ptr<sys::StartingChild> child;
    uint64_t watch_token = 0;  // its watch fd
  };

  // ---- set-up (daemon.cpp) ----
  Resources make_resources(const config::Program& cfg, std::vector<ListenerRef> listeners);
  std::vector<ListenerRef> bind_shared(const config::Program& cfg, std::map<std::string, ListenerRef>* reuse);
  std::vector<ListenerRef> bind_slot(const config::Program& cfg, core::ProgramId id, int slot);
  ListenerRef open_listener(const std::string& program, const config::ListenAddress& a, int backlog, bool reuseport);
  void enable_listener_migration();
  void write_pidfile();
  uint64_t watch(int fd, Handler h);  // registers in epoll; 0 (logged) on failure
  void unwatch(uint64_t token);

  // ---- the loop ----
  void iteration();
  void dispatch(uint64_t token, uint32_t events);
  void on_signal(int sig);
  void on_pipe_readable(uint64_t token, size_t budget);
  void close_pipe(uint64_t token);
  void drain_proc(core::ProcId proc, size_t budget);  // reads what a process's notify/output pipes hold
  void close_proc_pipes(core::ProcId proc);
  // ---- NOTIFY_SOCKET (notify_socket.cpp) ----
  void open_notify_socket(int adopted_fd);  // the upgrade's socket if >= 0, else a new one
  void on_notify_socket_readable();
  std::optional<core::ProcId> notify_sender(pid_t pid) const;
  void reap();
  void settle();
  void begin_acting(core::Duration collected_for);  // a fresh spawn slice; what was deferred goes first  // applies pending actions and ticks the policy until nothing is left to do
  void apply(const core::Action& a);
  void spawn(const core::Action& a);
  void spawn_now(const core::Action& a);
  // The child has left preforkd's memory (watch fd EOF, or reaped): logs
  // why it failed, if it did, and releases what it ran on.
  void finish_start(pid_t pid, bool reaped);
  void on_control_request(ControlServer::ClientId client, const std::string& line);
  void report_systemd_status();
  void reopen_log();
  void collect_resources();

  // ---- load awareness (load.cpp) ----
  void measure_queues(core::Snapshot& s) const;  // the kernel's accept-queue figures
  std::vector<std::optional<sys::ListenQueue>> program_queues(const core::ProgramState& p) const;
  void measure_load(core::ProgramId program);  // MeasureLoad
  core::Snapshot outside_view(core::TimePoint t) const;  // snapshot + version, pid, queues
  void log_once(const std::string& cause, const std::string& message);

  // ---- the process tree (orphans.cpp) ----
  // ScanOrphans: preforkd's processes that are not workers. With
  // `below_workers` (status), also each worker's descendants, by worker pid.
  void scan_orphans(std::map<pid_t, std::vector<pid_t>>* below_workers = nullptr);
  void walk_worker(pid_t worker);    // WalkWorker: a worker's descendants, before its stop signal
  void signal_orphan(const core::Action& a);  // SignalOrphan, SignalGroup

  // ---- reload (reload.cpp) ----
  void begin_reload(std::vector<core::ClientId> clients);
  config::Config running_config() const;

  // ---- the in-place upgrade (upgrade.cpp) ----
  void on_usr2();
  void maybe_start_upgrade();
  void on_upgrade_check_exit(const sys::ExitStatus& status);
  void exec_upgrade();
  nlohmann::json serialize_state() const;
  void adopt_state(const nlohmann::json& state, const std::map<uint64_t, config::Config>& configs);

  sys::SpawnRequest build_request(const core::ProgramState& p, const Resources& res, int slot,
                                  const std::vector<ListenerRef>& own, std::vector<sys::UniqueFd>& keep,
                                  std::vector<std::unique_ptr<Pipe>>& pipes, int& err, std::string& what);
  core::TimePoint now() const;

  config::Config config_;
  DaemonOptions options_;
  std::shared_ptr<spdlog::logger> log_;
  std::unique_ptr<sys::SignalFd> signals_;
  sys::Epoll epoll_;
  sys::TimerFd timer_;
  sys::UniqueFd devnull_;
  sys::FdLimit original_nofile_{};
  core::Policy policy_;
  std::map<uint64_t, std::string> config_texts_;  // generation → the file text it was read from
  config::LoadOptions load_options_;
  std::optional<std::string> log_file_open_;  // the file log_ writes to (nullopt: stderr)
  bool migration_checked_ = false;
  std::string self_path_;
  bool adopted_ = false;  // took over from a previous binary (USR2)
  sys::UniqueFd adopted_control_, adopted_metrics_;
  bool upgrade_requested_ = false;
  bool upgrade_checked_ = false;  // the check passed: exec at the end of an iteration (maybe_start_upgrade)
  pid_t upgrade_check_pid_ = 0;
  sys::UniqueFd upgrade_check_output_;
  core::TimePoint upgrade_check_deadline_ = core::kNever;
  std::map<ShapeKey, Resources> resources_;
  std::map<SlotKey, std::vector<ListenerRef>> slot_sockets_;  // reuseport, kept across respawns
  std::unordered_map<uint64_t, Handler> handlers_;              // token → what it is
  std::unordered_map<core::ProcId, std::vector<uint64_t>> proc_pipes_;  // tokens of a process's pipes
  uint64_t next_token_ = kHandlerBit;
  core::Actions actions_;                 // collected, not yet applied
  // Once one iteration has spawned for its time slice (kSpawnSlice), the
  // next spawn and every action after it wait here, in order, for the next
  // iteration, which polls without blocking first: a storm of deaths or a
  // start of 1000 workers never holds the loop for long, and control
  // requests, signals and pipes are served in between.
  core::Actions deferred_;
  core::TimePoint spawn_slice_end_{};
  int spawns_this_iteration_ = 0;
  // Starts in flight, by pid; at most max_starting_ at a time (a Spawn
  // waits in deferred_ beyond that): 4 per CPU (sys::starts_in_flight), so
  // that a storm of respawns leaves the loop its share of the CPUs, and the
  // stacks they hold stay bounded.
  const size_t max_starting_ = sys::starts_in_flight();
  std::map<pid_t, Starting> starting_;
  // Per slot ("web[2]"): the reason its last start failed at or before
  // execve, while that repeats (said once).
  std::map<std::string, std::string> start_failures_;
  bool reap_more_ = false;  // the last reap() stopped at kReapBatch: poll, do not block
  std::set<std::string> causes_logged_;   // log_once
  std::optional<std::string> pidfile_;
  std::unique_ptr<ControlServer> control_;
  std::unique_ptr<MetricsHttp> metrics_;  // only with supervisor.metrics
  // Sockets systemd passed (socket activation), read before the programs are set up.
  sys::ActivatedSockets activated_ = sys::ActivatedSockets::from_environment();
  std::string systemd_status_;  // the last STATUS= sent
  // NOTIFY_SOCKET: one datagram socket for every worker (empty name: none).
  sys::UniqueFd notify_socket_;
  std::string notify_socket_name_;  // "@preforkd-<pid>-notify", as workers get it
};

}  // namespace preforkd::daemon
