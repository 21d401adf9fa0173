// spawn_worker.cpp — carrying out a Spawn action: the slot's sockets, the
// pipes (watched before the fork, so a worker whose notify pipe cannot be
// read is never started), the SpawnRequest, the clone (sys::spawn_async),
// and the answer to the policy once the child has exec'd or failed.
#include <cstdio>
#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "daemon/daemon.hpp"
#include "preforkd/worker.h"
#include "sys/error.hpp"
#include "sys/listen_socket.hpp"
#include "sys/procfs.hpp"

namespace preforkd::daemon {

void Daemon::spawn(const core::Action& a) {
  if (!policy_.spawn_pending(a)) return policy_.spawn_dropped(a);  // stopped or replaced since it was decided
  try {
    spawn_now(a);
  } catch (const std::exception& e) {
    // Whatever went wrong, the slot must not wait for this spawn forever:
    // it is a failed start, and the worker's backoff retries it.
    if (policy_.spawn_pending(a))
      policy_.spawn_failed(a.program, a.slot, a.proc, std::string("cannot start a worker: ") + e.what(), now(), actions_);
  }
}

void Daemon::spawn_now(const core::Action& a) {
  const core::ProgramState& p = *policy_.program(a.program);
  auto fail = [&](const std::string& what) { policy_.spawn_failed(a.program, a.slot, a.proc, what, now(), actions_); };
  auto res = resources_.find({p.name(), a.generation});
  if (res == resources_.end()) return fail("cannot prepare a worker: no resources for generation " + std::to_string(a.generation));
  std::vector<ListenerRef> own;
  if (p.config().reuseport) {
    auto& sockets = slot_sockets_[{a.program, a.slot}];
    const auto& want = p.config().listen;
    bool same = sockets.size() == want.size();
    for (size_t i = 0; same && i < sockets.size(); ++i) same = sockets[i]->address == want[i];
    if (!same) {
      // New slot, reclaimed slot, or `listen` changed by a reload: the old
      // worker keeps its copies of the old sockets until it is gone.
      try {
        sockets = bind_slot(p.config(), a.program, a.slot);
      } catch (const sys::SysError& e) {
        sockets.clear();
        return fail(std::string("cannot bind its sockets: ") + e.what());
      }
    }
    own = sockets;
  }
  std::vector<sys::UniqueFd> child_ends;  // closed when this function returns
  std::vector<std::unique_ptr<Pipe>> pipes;
  int err = 0;
  std::string what;
  sys::SpawnRequest req = build_request(p, res->second, a.slot, own, child_ends, pipes, err, what);
  if (err != 0) return fail("cannot prepare a worker: " + what);
  // Watch the pipes before forking: a worker whose notify pipe preforkd
  // cannot read is not started (the spawn backs off instead).
  std::vector<uint64_t> tokens;
  for (auto& pipe : pipes) {
    pipe->proc = a.proc;
    int fd = pipe->fd.get();
    Handler h;
    h.kind = Handler::Kind::Pipe;
    h.pipe = std::move(pipe);
    uint64_t token = watch(fd, std::move(h));
    if (token == 0) {
      for (auto t : tokens) unwatch(t);
      return fail("cannot prepare a worker: cannot watch its pipes (epoll_ctl failed, see above)");
    }
    tokens.push_back(token);
  }
  // The clone returns at once, with the pid: the policy hears of the worker
  // now, as after a fork. The child may still fail before or at its execve;
  // that shows as its exit (status 127), and the reason it wrote is logged
  // then (finish_start, reap).
  sys::AsyncSpawnResult result = sys::spawn_async(std::move(req));
  child_ends.clear();
  if (!result.child) {
    for (auto t : tokens) unwatch(t);
    return fail(result.error.value_or("spawn failed"));
  }
  pid_t pid = result.child->pid();
  std::string who = p.tag(a.slot) + " " + std::to_string(pid);
  for (auto t : tokens) handlers_.at(t).pipe->who = who;
  proc_pipes_[a.proc] = std::move(tokens);
  Starting& st = starting_[pid];
  st.who = who;
  st.slot_tag = p.tag(a.slot);
  st.child = std::move(result.child);
  Handler h;
  h.kind = Handler::Kind::Starting;
  h.pid = pid;
  h.fd = st.child->watch_fd();
  // Watched even if it may have exec'd already: one epoll_ctl per start,
  // always (the fault tests count them).
  st.watch_token = st.child->watch_fd() >= 0 ? watch(st.child->watch_fd(), std::move(h)) : 0;
  if (st.watch_token == 0) {
    // Cannot watch it (or nothing to watch): wait for it here, as spawn() would.
    if (!st.child->left()) sys::wait_readable(st.child->watch_fd(), -1);
    finish_start(pid, false);
  }
  policy_.spawned(a.program, a.slot, a.proc, pid, now(), actions_);
}

void Daemon::finish_start(pid_t pid, bool reaped) {
  auto it = starting_.find(pid);
  if (it == starting_.end()) return;
  Starting& st = it->second;
  if (reaped) st.child->reaped();
  else if (!st.child->left()) return;  // a wake-up without EOF: not yet
  if (st.watch_token != 0) unwatch(st.watch_token);  // before its fd closes with st.child
  if (auto failure = st.child->failure()) {
    // The exit that follows (status 127) is the failed start the policy
    // counts and backs off. The reason is said once while it repeats (at
    // debug after that), and again when it changes or after a start that
    // worked.
    std::string what = failure->describe(st.child->request());
    std::string& last = start_failures_[st.slot_tag];
    if (last != what) log_->error("{}: cannot start: {}", st.who, what);
    else log_->debug("{}: cannot start: {}", st.who, what);
    last = std::move(what);
  } else {
    start_failures_.erase(st.slot_tag);
  }
  starting_.erase(it);  // the child has left: its stack and plan go
}

sys::SpawnRequest Daemon::build_request(const core::ProgramState& p, const Resources& res, int slot,
                                        const std::vector<ListenerRef>& own, std::vector<sys::UniqueFd>& keep,
                                        std::vector<std::unique_ptr<Pipe>>& pipes, int& err, std::string& what) {
  const config::Program& cfg = p.config();
  sys::SpawnRequest req;
  req.path = cfg.executable;
  req.argv = cfg.command;
  req.env = res.base_env;
  req.env.push_back(std::string(PREFORKD_ENV_GENERATION) + "=" + std::to_string(p.shape.generation));
  req.env.push_back(std::string(PREFORKD_ENV_SLOT) + "=" + std::to_string(slot));
  req.set_listen_pid = !cfg.listen.empty();

  // fds 0, 1, 2.
  req.fds.push_back({devnull_.get(), 0});
  auto output = [&](const config::Output& o, int dst, Pipe::Kind kind) {
    if (err != 0) return;
    switch (o.kind) {
      case config::Output::Kind::Inherit: req.fds.push_back({dst, dst}); break;
      case config::Output::Kind::Null: req.fds.push_back({devnull_.get(), dst}); break;
      case config::Output::Kind::File: {
        sys::UniqueFd fd;
        if ((err = sys::open_file(fd, o.path, O_WRONLY | O_APPEND | O_CREAT, 0644)) != 0) {
          what = sys::errno_message("cannot open " + o.path, err);
          return;
        }
        req.fds.push_back({fd.get(), dst});
        keep.push_back(std::move(fd));
        break;
      }
      case config::Output::Kind::Log: {
        sys::PipeEnds ends;
        // Our end only is non-blocking: the worker's stdout stays blocking.
        if ((err = sys::make_pipe(ends, true, false)) != 0) {
          what = sys::errno_message("pipe", err);
          return;
        }
        auto pipe = std::make_unique<Pipe>();
        pipe->kind = kind;
        pipe->fd = std::move(ends.read);
        pipes.push_back(std::move(pipe));
        req.fds.push_back({ends.write.get(), dst});
        keep.push_back(std::move(ends.write));
        break;
      }
    }
  };
  output(cfg.stdout_target, 1, Pipe::Kind::Stdout);
  output(cfg.stderr_target, 2, Pipe::Kind::Stderr);
  if (err != 0) return req;

  // fds 3.. : the listening sockets, in `listen` order.
  int next = 3;
  for (const auto& l : cfg.reuseport ? own : res.listeners) req.fds.push_back({l->fd.get(), next++});

  // Then the notify pipe. Non-blocking on both ends: a worker must never
  // block on telemetry, and we never block reading it.
  sys::PipeEnds ends;
  if ((err = sys::make_pipe(ends, true, true)) != 0) {
    what = sys::errno_message("pipe", err);
    return req;
  }
  auto notify = std::make_unique<Pipe>();
  notify->kind = Pipe::Kind::Notify;
  notify->fd = std::move(ends.read);
  notify->lines = core::LineBuffer(PREFORKD_NOTIFY_LINE_MAX, core::LineBuffer::Overflow::Discard);
  pipes.push_back(std::move(notify));
  req.fds.push_back({ends.write.get(), next});
  keep.push_back(std::move(ends.write));

  // Identity and limits.
  bool root = sys::effective_uid() == 0;
  if (res.user && (root || res.user->uid != sys::effective_uid())) {
    req.uid = res.user->uid;
    req.gid = res.group.value_or(res.user->gid);
    if (root) req.groups = res.user->groups;
  } else if (res.group && (root || *res.group != sys::effective_gid())) {
    req.gid = *res.group;
    if (root) req.groups = std::vector<gid_t>{*res.group};
  }
  req.umask = cfg.umask;
  if (cfg.directory) req.directory = *cfg.directory;
  bool nofile_configured = false;
  for (const auto& r : cfg.rlimits) {
    rlimit v{static_cast<rlim_t>(r.value), static_cast<rlim_t>(r.value)};
    req.rlimits.emplace_back(r.resource, v);
    nofile_configured |= r.resource == RLIMIT_NOFILE;
  }
  if (!nofile_configured)  // T18
    req.nofile_restore = rlimit{static_cast<rlim_t>(original_nofile_.soft), static_cast<rlim_t>(original_nofile_.hard)};
  req.pdeathsig = SIGTERM;
  return req;
}

}  // namespace preforkd::daemon
