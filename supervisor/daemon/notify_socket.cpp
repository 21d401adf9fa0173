// notify_socket.cpp — NOTIFY_SOCKET, the daemon's part: one AF_UNIX
// datagram socket (sys/notify_socket) for every worker that speaks
// sd_notify(3). Each datagram is attributed to a worker by the sender's
// credentials (SCM_CREDENTIALS, filled in by the kernel): the worker's own
// pid, or a process whose process group is a worker's (a worker leads its
// group: gunicorn's workers, a shell's children). Its lines then go to
// Policy::notify_line exactly as the notify pipe's do. Anything else is
// dropped and counted (Policy::notify_unattributed).
//
// Bounded like the pipes (T24): at most PREFORKD_NOTIFY_DATAGRAM_MAX bytes
// per datagram (a longer one is dropped whole, one notify error for its
// worker), at most kDatagramsPerWake datagrams per wake-up (the epoll is
// level-triggered: the rest waits for the next iteration, after every other
// fd had its turn), and the kernel's socket buffer bounds what waits.
#include <cerrno>
#include <cstring>
#include <string_view>

#include "daemon/daemon.hpp"
#include "preforkd/worker.h"
#include "sys/error.hpp"
#include "sys/notify_socket.hpp"
#include "sys/procfs.hpp"

namespace preforkd::daemon {

namespace {

constexpr int kDatagramsPerWake = 64;

}  // namespace

void Daemon::open_notify_socket(int adopted_fd) {
  if (adopted_fd >= 3) {
    // The in-place upgrade hands the very socket over: workers keep the
    // name they were given. Taken only if it is what it claims to be.
    std::string name = sys::notify_socket_name(adopted_fd);
    if (!name.empty()) {
      notify_socket_ = sys::UniqueFd(adopted_fd);
      notify_socket_name_ = std::move(name);
    } else {
      log_->warn("preforkd: the handed-over NOTIFY_SOCKET fd {} is not a datagram socket; opening a new one",
                 adopted_fd);
    }
  }
  if (!notify_socket_) {
    std::string wanted = "preforkd-" + std::to_string(sys::self_pid()) + "-notify";
    if (int err = sys::open_notify_socket(wanted, notify_socket_, notify_socket_name_)) {
      // Not fatal: workers still have their notify pipe.
      log_->error("preforkd: cannot open the NOTIFY_SOCKET socket: {}; workers get no NOTIFY_SOCKET",
                  std::strerror(err));
      notify_socket_name_.clear();
      return;
    }
    if (notify_socket_name_ != "@" + wanted)
      log_->warn("preforkd: the abstract socket name {} is taken; NOTIFY_SOCKET is {}", wanted, notify_socket_name_);
  }
  Handler h;
  h.kind = Handler::Kind::NotifySocket;
  if (watch(notify_socket_.get(), std::move(h)) == 0) {
    log_->error("preforkd: cannot watch the NOTIFY_SOCKET socket; workers get no NOTIFY_SOCKET");
    notify_socket_.reset();
    notify_socket_name_.clear();
  }
}

// The worker a datagram from `pid` is for: the worker itself, or the worker
// leading the sender's process group.
std::optional<core::ProcId> Daemon::notify_sender(pid_t pid) const {
  if (pid <= 0) return std::nullopt;  // another pid namespace: cannot be told
  if (auto proc = policy_.proc_of_pid(pid)) return proc;
  pid_t group = sys::process_group_of(pid);
  if (group <= 0 || group == pid) return std::nullopt;
  return policy_.proc_of_pid(group);
}

void Daemon::on_notify_socket_readable() {
  char buf[PREFORKD_NOTIFY_DATAGRAM_MAX];
  for (int i = 0; i < kDatagramsPerWake; ++i) {
    sys::Datagram d;
    ssize_t n = sys::receive_datagram(notify_socket_.get(), buf, sizeof buf, d);
    if (n < 0) {
      if (errno != EAGAIN && errno != EWOULDBLOCK)
        log_once(std::string("recvmsg: ") + std::strerror(errno),
                 std::string("preforkd: NOTIFY_SOCKET: recvmsg: ") + std::strerror(errno));
      return;
    }
    auto t = now();
    std::optional<core::ProcId> proc = d.credentials ? notify_sender(d.pid) : std::nullopt;
    if (!proc) {
      policy_.notify_unattributed(d.pid, actions_);
      continue;
    }
    if (d.truncated) {  // one error for the whole datagram: none of it is trusted
      policy_.notify_too_long(*proc, 1, t, actions_);
      continue;
    }
    std::string_view data(buf, static_cast<size_t>(n));
    while (!data.empty()) {
      size_t nl = data.find('\n');
      std::string_view line = data.substr(0, nl);
      // The pipe's limit holds here too (SPEC: lines of at most 4096 bytes,
      // the newline included): a longer line is one notify error, not read.
      if (line.size() + 1 > core::kNotifyLineMax)
        policy_.notify_too_long(*proc, 1, t, actions_);
      else if (!line.empty())
        policy_.notify_line(*proc, line, t, actions_);  // "READY=1\n": no empty line to count
      if (nl == std::string_view::npos) break;
      data.remove_prefix(nl + 1);
    }
  }
}

}  // namespace preforkd::daemon
