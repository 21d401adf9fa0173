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

#include <spdlog/logger.h>

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
#include "sys/unique_fd.hpp"

namespace preforkd::daemon {

struct DaemonOptions {
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

  // One listening socket (shared by a program's workers, or one slot's own with reuseport).
  struct Listener {
    config::ListenAddress address;
    sys::UniqueFd fd;
    std::string bound;  // actual address, e.g. with the kernel-chosen port
  };

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
    std::vector<Listener> own_listeners;       // reuseport: this slot's sockets, kept across respawns
  };

  struct Program {
    config::Program config;
    core::SlotPolicy policy;
    std::vector<Listener> listeners;  // shared sockets, in `listen` order (empty with reuseport)
    std::vector<std::unique_ptr<Slot>> slots;  // index == slot number
    // Processes being replaced: they serve until their slot's successor has been
    // ready for reload.settle, then get their stop signal (new before old).
    std::vector<std::unique_ptr<Slot>> retirees;
    std::vector<std::string> base_env;         // everything but PREFORKD_SLOT
    std::optional<sys::UserInfo> user;
    std::optional<gid_t> group;
    uint64_t starts = 0;
    uint64_t exits[5] = {};  // by core::ExitKind
    core::ProgramTotals totals;   // counters of retired workers
    uint64_t notify_errors = 0;   // all workers, ever
    // A rolling restart in progress (preforkctl restart): slots still to
    // replace, the one being replaced, and who waits for the answer.
    struct Rollout {
      std::vector<int> todo;
      int current = -1;
      unsigned streak_before = 0;  // the slot's failure streak when its successor was started
      unsigned replaced = 0;
      ControlServer::ClientId client = 0;
    };
    std::optional<Rollout> rollout;
  };

  // An fd the loop watches; epoll's data.u64 is the fd number.
  struct Watch {
    enum class Kind { Signal, Timer, Pipe, Control, Metrics };
    Kind kind = Kind::Pipe;
    Slot* slot = nullptr;
    Pipe* pipe = nullptr;
  };

  void setup_program(const config::Program& cfg);
  void bind_slot_listeners(Program& p, Slot& s);
  void start_all();

  // Loop steps.
  void on_signal(int sig);
  void on_term();
  void on_quit();
  void on_ttin();
  void on_ttou();
  void on_usr1();
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
  void advance_rollouts();
  void abort_rollout(Program& p, const std::string& why);
  void take_back(Slot& slot, Slot& retiree);

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
};

}  // namespace preforkd::daemon
