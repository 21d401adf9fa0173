// daemon.hpp — the supervisor: one thread, one epoll loop (STYLE 3.4).
//
// Owns: the listening sockets, every worker's pipes, the pid → slot map, the
// signalfd and the one timerfd. Routes events to the pure state machine in
// core/worker.hpp and carries out the Effects it returns (spawn, signal,
// forget). Must never: run anything in a signal handler (there are none, T1),
// block (every fd it reads is non-blocking, except the spawn error pipe,
// which returns as soon as the child has exec'd), or poll on an interval
// (T26).
//
// Order within one loop iteration: drain signals (as requests, T3) → service
// fds → reap_all() (always, T2) → expire deadlines → re-arm the timerfd.
#pragma once

#include <nlohmann/json.hpp>
#include <spdlog/logger.h>

#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <sys/resource.h>
#include <unordered_map>
#include <vector>

#include "config/config.hpp"
#include "core/line_buffer.hpp"
#include "core/notify.hpp"
#include "core/snapshot.hpp"
#include "daemon/control_server.hpp"
#include "daemon/metrics_http.hpp"
#include "core/worker.hpp"
#include "sys/event_loop_fds.hpp"
#include "sys/exit_status.hpp"
#include "sys/identity.hpp"
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
  struct Program;

  // One listening socket (shared by a program's workers, or one slot's own
  // with reuseport). Shared ownership: a reload hands a socket that appears in
  // both files to the new configuration (the very same fd), and the last
  // owner to let go closes it, after the workers that use it are gone.
  struct Listener {
    config::ListenAddress address;
    sys::UniqueFd fd;
    std::string bound;            // actual address, e.g. with the kernel-chosen port
    bool unlink_on_close = false;  // a Unix path we bound (not one systemd passed)
    Listener() = default;
    Listener(const Listener&) = delete;
    Listener& operator=(const Listener&) = delete;
    ~Listener();
  };
  using ListenerRef = std::shared_ptr<Listener>;

  // A captured pipe from a worker (notify, stdout or stderr).
  struct Pipe {
    enum class Kind { Notify, Stdout, Stderr };
    Kind kind = Kind::Notify;
    sys::UniqueFd fd;
    core::LineBuffer lines{4096, core::LineBuffer::Overflow::Split};
  };

  struct Slot {
    Program* program = nullptr;
    core::Worker worker;
    core::WorkerReport report;     // what the current process reported (reset per spawn)
    uint64_t notify_errors = 0;    // of the current process
    bool draining = false;         // it said STOPPING=1
    bool retiree = false;          // an old process that left its slot to a successor
    const char* recycle_reason = nullptr;  // set when a recycle is due (handled after I/O)
    std::vector<std::unique_ptr<Pipe>> pipes;  // of the current process
    std::vector<ListenerRef> own_listeners;    // reuseport: this slot's sockets, kept across respawns
  };

  // What a program's workers are started with; kept aside during a reload's
  // rollout so that an aborted rollout can go back to it.
  struct Shape {
    config::Program config;
    core::SlotPolicy policy;
    std::vector<ListenerRef> listeners;  // shared sockets, in `listen` order (empty with reuseport)
    std::vector<std::string> base_env;   // everything but PREFORKD_SLOT and PREFORKD_GENERATION
    std::optional<sys::UserInfo> user;
    std::optional<gid_t> group;
    uint64_t config_generation = 0;      // which file text `config` was read from (config_texts_)
  };

  // A rolling replacement of a program's workers: `preforkctl restart` (one
  // at a time) or a reload (one canary, then batches of reload.batch). Each
  // slot's successor is started, proven (ready for reload.settle) and only
  // then is its old worker stopped (the recycling mechanism).
  struct Rollout {
    enum class Kind { Restart, Reload };
    Kind kind = Kind::Restart;
    struct Item {
      int slot = 0;
      uint64_t spawn_seq = 0;      // the process to replace (a later one is already new)
      unsigned streak_before = 0;  // the slot's failure streak when its successor was started
    };
    std::vector<Item> todo;        // popped from the back
    std::vector<Item> in_flight;   // the batch being replaced
    size_t batch = 1;              // after the first (canary) replacement
    unsigned replaced = 0;
    uint32_t scale_to = 0;         // reload: workers to reach once every old one is replaced
    ControlServer::ClientId client = 0;  // restart: who waits for the answer
  };

  struct Program {
    Shape shape;                   // config, policy, sockets and environment in force
    const config::Program& config() const { return shape.config; }
    std::optional<Shape> previous;  // reload rollout: the shape being replaced
    bool removing = false;          // dropped by a reload: gone once its workers are
    std::vector<std::unique_ptr<Slot>> slots;  // index == slot number
    // Processes being replaced: they serve until their slot's successor has been
    // ready for reload.settle, then get their stop signal (new before old).
    std::vector<std::unique_ptr<Slot>> retirees;
    uint64_t starts = 0;
    uint64_t exits[5] = {};  // by core::ExitKind
    core::ProgramTotals totals;   // counters of retired workers
    uint64_t notify_errors = 0;   // all workers, ever
    std::optional<Rollout> rollout;
  };

  // A reload being carried out (HUP or `preforkctl reload`); at most one at a
  // time, later requests wait in reload_queue_ and are coalesced.
  struct ReloadRun {
    uint64_t generation = 0;
    std::vector<ControlServer::ClientId> clients;
    std::vector<std::string> touched;   // programs whose new workers must come up
    std::vector<std::string> failures;  // "<program>: why"
    std::string summary;
    core::TimePoint started{};
  };

  // An fd the loop watches; epoll's data.u64 is the fd number.
  struct Watch {
    enum class Kind { Signal, Timer, Pipe, Control, Metrics };
    Kind kind = Kind::Pipe;
    Slot* slot = nullptr;
    Pipe* pipe = nullptr;
  };

  std::unique_ptr<Program> make_program(const config::Program& cfg, std::vector<ListenerRef> listeners);
  Shape make_shape(const config::Program& cfg, std::vector<ListenerRef> listeners);
  void bind_slot_listeners(Program& p, Slot& s);
  // A listening socket for `a`: the one systemd passed for it (socket
  // activation; never with reuseport, whose sockets are per slot), else bound here.
  ListenerRef open_listener(const std::string& program, const config::ListenAddress& a, int backlog,
                            bool reuseport);
  // reuseport: lets the kernel move connections queued on a closed slot
  // socket to the others (net.ipv4.tcp_migrate_req), so scaling down drops none.
  void enable_listener_migration();
  // Sends STATUS= (workers ready / wanted) to systemd when it changed.
  void report_systemd_status();
  void start_all();

  // Loop steps.
  void on_signal(int sig);
  void on_term();
  void on_quit();
  void on_ttin();
  void on_ttou();
  void on_usr1();
  void reopen_log();
  void on_pipe_readable(Slot& slot, Pipe& pipe);
  void reap();
  void expire_deadlines();
  void arm_timer();
  bool finished() const;
  void run_recycles();
  void recycle(Slot& slot);
  void stop_retirees(Program& p, int slot_number, core::StopReason reason, core::TimePoint now);
  Slot* awaiting_retiree(Program& p, int slot_number);
  core::TimePoint retire_at(const Program& p, const Slot& retiree) const;
  void check_memory(core::TimePoint now);

  // Scaling (TTIN/TTOU and preforkctl scale).
  void add_worker(Program& p);
  void remove_worker(Program& p);
  void scale_to(Program& p, size_t target);
  size_t wanted(const Program& p) const;

  // The control socket (SPEC "Control socket and preforkctl").
  struct PendingOp {
    enum class Kind { Stop, Scale };
    Kind kind = Kind::Stop;
    Program* program = nullptr;
    size_t target = 0;
    ControlServer::ClientId client = 0;
  };
  void on_control_request(ControlServer::ClientId client, const std::string& line);
  Program* find_program(const std::string& name);
  core::Snapshot snapshot() const;
  void check_pending_ops();
  void start_rollout(Program& p, Rollout ro);
  void advance_rollouts();
  void complete_rollout(Program& p);
  void abort_rollout(Program& p, const std::string& why);
  void take_back(Slot& slot, Slot& retiree);

  // Reload (reload.cpp).
  void request_reload(std::optional<ControlServer::ClientId> client);
  void start_reload(std::vector<ControlServer::ClientId> clients);
  void fail_reload(std::vector<ControlServer::ClientId> clients, const std::vector<std::string>& errors);
  void check_reload();
  void collect_removed_programs();
  void revert_program(Program& p);
  bool busy_with_rollouts() const;
  config::Config running_config() const;

  // The in-place upgrade (upgrade.cpp).
  void on_usr2();
  void maybe_start_upgrade();
  void on_upgrade_check_exit(const sys::ExitStatus& status);
  void exec_upgrade();
  nlohmann::json serialize_state() const;
  void adopt_state(const nlohmann::json& state, const std::map<uint64_t, config::Config>& configs);

  // Effects.
  void apply(Slot& slot, const core::Effects& e);
  void spawn(Slot& slot);
  void send_signal(Slot& slot, int sig);
  void forget(Slot& slot);

  // Pipes.
  void drain(Slot& slot, Pipe& pipe, size_t budget);
  void close_pipe(Slot& slot, Pipe& pipe);
  void close_all_pipes(Slot& slot);
  void handle_line(Slot& slot, Pipe::Kind kind, std::string_view line);
  void handle_notify(Slot& slot, std::string_view line);
  void notify_error(Slot& slot, core::NotifyError error);

  sys::SpawnRequest build_request(Program& p, Slot& s, std::vector<sys::UniqueFd>& keep);
  std::string tag(const Slot& s) const;  // "echo[2]"
  double jitter();
  void write_pidfile();

  config::Config config_;
  DaemonOptions options_;
  std::shared_ptr<spdlog::logger> log_;
  std::unique_ptr<sys::SignalFd> signals_;
  sys::Epoll epoll_;
  sys::TimerFd timer_;
  sys::UniqueFd devnull_;
  rlimit original_nofile_{};
  uint64_t generation_ = 1;
  std::map<uint64_t, std::string> config_texts_;  // generation → the file text it was read from
  config::LoadOptions load_options_;
  std::optional<ReloadRun> reload_;
  bool reload_queued_ = false;
  std::vector<ControlServer::ClientId> reload_queue_;  // clients of the queued reload
  std::optional<std::string> log_file_open_;  // the file log_ writes to (nullopt: stderr)
  bool migration_checked_ = false;            // enable_listener_migration() ran
  std::string self_path_;
  bool adopted_ = false;                 // took over from a previous binary (USR2)
  sys::UniqueFd adopted_control_, adopted_metrics_;
  bool upgrade_requested_ = false;
  pid_t upgrade_check_pid_ = 0;
  sys::UniqueFd upgrade_check_output_;
  core::TimePoint upgrade_check_deadline_ = core::kNever;
  uint64_t reloads_ok_ = 0;
  uint64_t reloads_failed_ = 0;
  std::vector<std::unique_ptr<Program>> programs_;
  std::unordered_map<int, Watch> watches_;      // fd → what it is
  std::unordered_map<pid_t, Slot*> by_pid_;     // unreaped workers only (T14)
  std::optional<std::string> pidfile_;
  bool shutting_down_ = false;
  core::TimePoint shutdown_deadline_ = core::kNever;
  bool shutdown_forced_ = false;
  core::TimePoint next_memory_check_ = core::kNever;  // only with a max_memory somewhere
  std::unique_ptr<ControlServer> control_;
  std::unique_ptr<MetricsHttp> metrics_;  // only with supervisor.metrics
  std::vector<PendingOp> pending_ops_;
  std::minstd_rand rng_;
  // Sockets systemd passed (socket activation), read before setup_program() runs.
  sys::ActivatedSockets activated_ = sys::ActivatedSockets::from_environment();
  std::string systemd_status_;  // the last STATUS= sent
};

}  // namespace preforkd::daemon
