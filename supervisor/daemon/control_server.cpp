#include "daemon/control_server.hpp"

#include <algorithm>
#include <cerrno>

#include "sys/error.hpp"
#include "sys/listen_socket.hpp"
#include "sys/procfs.hpp"

namespace preforkd::daemon {

namespace {

constexpr size_t kReadBudget = 64 * 1024;

const char kPermissionDenied[] = R"({"ok":false,"error":"permission denied"})";
const char kTooMuch[] = R"({"ok":false,"error":"request too long or too many requests"})";
const char kTooManyClients[] = R"({"ok":false,"error":"too many clients, none of them idle: try again later"})";
const char kMadeRoom[] = R"({"ok":false,"error":"too many clients: closed to make room for a new one"})";
const char kTimedOut[] = R"({"ok":false,"error":"no complete request within the time limit"})";
const char kOutOfFds[] = R"({"ok":false,"error":"preforkd is out of file descriptors: try again later"})" "\n";

// Best effort, one non-blocking write (T13), to a client about to be closed.
void say(int fd, const char* json_line) {
  std::string line = std::string(json_line) + "\n";
  (void)sys::send_some(fd, line.data(), line.size());
}

void make_parent_dir(const std::string& path) {
  auto slash = path.rfind('/');
  if (slash == std::string::npos || slash == 0) return;
  std::string failed;
  if (int err = sys::make_directories(path.substr(0, slash), 0755, &failed))
    sys::throw_errno("cannot create the folder of the control socket " + failed, err);
}

}  // namespace

ControlServer::ControlServer(const std::string& path, std::optional<gid_t> gid, RequestHandler on_request,
                             Logger warn)
    : path_(path),
      gid_(gid),
      on_request_(std::move(on_request)),
      warn_(std::move(warn)),
      guard_("control", warn_, kOutOfFds),
      crowded_(warn_) {
  make_parent_dir(path_);
  sys::ListenSpec spec;
  spec.family = sys::ListenSpec::Family::Unix;
  spec.path = path_;
  spec.backlog = 64;
  spec.text = "unix:" + path_;
  try {
    listen_ = sys::bind_listener(spec);
  } catch (const sys::SysError& e) {
    if (e.code().value() == EADDRINUSE)
      throw sys::SysError(EADDRINUSE, "control socket " + path_ + " is in use: another preforkd is running");
    throw;
  }
  // Ours alone (not shared with workers): non-blocking is safe here.
  if (int err = sys::set_nonblocking(listen_.get())) sys::throw_errno("control socket " + path_, err);
  if (int err = sys::change_mode(path_, 0660)) sys::throw_errno("cannot chmod control socket " + path_, err);
  if (gid_)
    if (int err = sys::change_group(path_, *gid_))
      sys::throw_errno("cannot give control socket " + path_ + " to its control_group", err);
}

ControlServer::ControlServer(sys::UniqueFd adopted, const std::string& path, std::optional<gid_t> gid,
                             RequestHandler on_request, Logger warn)
    : path_(path),
      gid_(gid),
      listen_(std::move(adopted)),
      on_request_(std::move(on_request)),
      warn_(std::move(warn)),
      guard_("control", warn_, kOutOfFds),
      crowded_(warn_) {
  if (int err = sys::set_nonblocking(listen_.get())) sys::throw_errno("control socket " + path_, err);
}

ControlServer::~ControlServer() {
  if (listen_) sys::unlink_path(path_);
}

void ControlServer::attach(sys::Epoll& epoll) {
  epoll_ = &epoll;
  epoll.add(listen_.get(), EPOLLIN, static_cast<uint64_t>(listen_.get()));
}

bool ControlServer::peer_allowed(const sys::PeerCredentials& cred) const {
  if (cred.uid == 0 || cred.uid == sys::effective_uid()) return true;
  if (!gid_) return false;
  // The connecting process's own groups, from /proc: no NSS lookup (it may
  // block the loop), and a pid that no longer runs as that uid proves nothing.
  auto groups = sys::process_groups_of_uid(cred.pid, cred.uid);
  return groups && std::find(groups->begin(), groups->end(), *gid_) != groups->end();
}

void ControlServer::on_listen_readable() {
  guard_.accept_all(
      *epoll_, listen_.get(), [this](sys::UniqueFd fd) { on_accepted(std::move(fd)); },
      [this] { return make_room_for_fds(); });
}

void ControlServer::on_accepted(sys::UniqueFd fd) {
  auto now = Clock::now();
  if (by_fd_.size() >= limit_.value()) {
    if (crowded_.occur(now, "control: at the limit of " + limit_.describe("clients")))
      warn_("control: at the limit of " + limit_.describe("clients") +
            ": each new one closes the oldest idle one, or is refused if none is idle (one summary when it is "
            "over)");
    if (!close_oldest_idle()) {
      ++crowded_.refused;
      say(fd.get(), kTooManyClients);
      return;  // closed at once: the backlog never fills up behind busy clients
    }
    ++crowded_.closed;
  }
  sys::PeerCredentials cred;
  if (int err = sys::peer_credentials(fd.get(), cred)) {
    guard_.warn_once("read a client's credentials", err, ", dropping it");
    return;
  }
  Client c;
  c.uid = cred.uid;
  c.pid = cred.pid;
  c.allowed = peer_allowed(cred);
  int raw = fd.get();
  if (int err = epoll_->try_add(raw, EPOLLIN, static_cast<uint64_t>(raw))) {
    guard_.warn_once("watch a client", err, ", dropping it");
    return;
  }
  c.id = next_id_++;
  c.fd = std::move(fd);
  c.deadline = now + kRequestTimeout;
  by_fd_[raw] = c.id;
  Client& added = clients_.emplace(c.id, std::move(c)).first->second;
  // A client that wrote its request right after connecting (preforkctl) has
  // it read now, before the next connection is accepted: with a request
  // queued it is no longer idle, and no newcomer can close it to make room.
  if (read_input(added)) dispatch(added);
}

size_t ControlServer::make_room_for_fds() {
  limit_.lower(by_fd_.size());
  size_t closed = 0;
  while (by_fd_.size() >= limit_.value() && close_oldest_idle()) ++closed;
  return closed;
}

bool ControlServer::close_oldest_idle() {
  for (auto& [id, c] : clients_) {  // ids grow: the oldest first
    if (!c.fd || c.pending || !c.lines.empty() || !c.out.empty()) continue;
    say(c.fd.get(), kMadeRoom);
    drop(id);
    return true;
  }
  return false;
}

void ControlServer::on_client_event(int fd, uint32_t events) {
  auto it = by_fd_.find(fd);
  if (it == by_fd_.end()) return;
  ClientId id = it->second;
  Client& c = clients_.at(id);
  // Accepted while this batch of events was handled: the event was collected
  // for an fd closed meanwhile (a client closed to make room) whose number
  // this one reuses. Its own events come with the next epoll_wait.
  if (c.fresh) return;
  if (events & (EPOLLERR | EPOLLHUP)) {
    if (!(events & EPOLLIN)) return drop(id);
  }
  if (events & EPOLLOUT) {
    flush(c);
    if (!c.fd) return drop(id);
    // Done once everything asked has been answered (a request may still run).
    if (c.out.empty() && c.close_after_flush && !c.pending && c.lines.empty()) return drop(id);
  }
  if ((events & EPOLLIN) && !c.close_after_flush)
    if (!read_input(c)) return;
  dispatch(c);
}

bool ControlServer::read_input(Client& c) {
  char buf[16384];
  size_t total = 0;
  while (total < kReadBudget && !c.close_after_flush) {
    ssize_t n = sys::read_some(c.fd.get(), buf, sizeof buf);
    if (n > 0) {
      total += static_cast<size_t>(n);  // the deadline stays: it is for the whole request
      size_t too_long = c.in.feed(std::string_view(buf, static_cast<size_t>(n)),
                                  [&](std::string_view line) { c.lines.emplace_back(line); });
      if (too_long > 0 || c.lines.size() > kMaxQueuedLines) refuse(c, kTooMuch);
      continue;
    }
    if (n == 0) {  // the peer is done sending; answer what it asked, then close
      if (!c.pending && c.lines.empty() && c.out.empty()) {
        drop(c.id);
        return false;
      }
      c.close_after_flush = true;
      update_events(c);
      break;
    }
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      drop(c.id);
      return false;
    }
    break;
  }
  return true;
}

// Too long or too many: a request preforkd says it refused must never take
// effect, so nothing queued is carried out, not even the lines before the
// one over the limit, and nothing is read after it. A request already
// handed over (running: a reload) is answered first, then the refusal.
void ControlServer::refuse(Client& c, const char* json_line) {
  c.lines.clear();
  c.refused = true;
  c.close_after_flush = true;
  if (c.pending) {
    c.refusal = json_line;  // reply() adds it after the running request's answer
  } else {
    c.out += json_line;
    c.out += '\n';
    c.deadline = Clock::now() + kRequestTimeout;
  }
  update_events(c);
}

// Hands the next line to the daemon, one request at a time per client.
void ControlServer::dispatch(Client& c) {
  if (!c.fd || c.refused) return;  // dropped or refused: what it asked is not carried out
  if (!c.allowed) {
    // Refused peers are answered on their first request, then disconnected.
    if (c.lines.empty() || c.denied) return;
    c.denied = true;
    warn_("control: refused uid " + std::to_string(c.uid) + " (pid " + std::to_string(c.pid) +
          "): not root, the owner or in control_group");
    c.lines.clear();
    reply(c.id, kPermissionDenied, true);
    return;
  }
  while (!c.pending && !c.lines.empty() && c.allowed) {
    std::string line = std::move(c.lines.front());
    c.lines.pop_front();
    if (line.empty()) continue;
    c.pending = true;
    ClientId id = c.id;
    on_request_(id, line);  // may reply() at once, which clears `pending`
    auto it = clients_.find(id);
    if (it == clients_.end()) return;
  }
}

void ControlServer::reply(ClientId client, const std::string& json_line, bool close_after) {
  auto it = clients_.find(client);
  if (it == clients_.end()) return;  // gone: the operation's result is dropped
  Client& c = it->second;
  if (c.refused && !c.pending) return;  // its refusal was the last word
  c.pending = false;
  if (c.out.size() + json_line.size() + 1 > kMaxPendingOut) {
    warn_("control: a client does not read its replies, disconnecting it");
    close_fd(c);
    return;  // dropped at the next expire()
  }
  c.out += json_line;
  c.out += '\n';
  if (!c.refusal.empty()) {
    c.out += c.refusal;
    c.out += '\n';
    c.refusal.clear();
  }
  c.close_after_flush |= close_after;
  c.deadline = Clock::now() + kRequestTimeout;  // to read it
  update_events(c);  // EPOLLOUT: written from the loop, never from inside a handler
}

void ControlServer::flush(Client& c) {
  while (!c.out.empty() && c.fd) {
    ssize_t n = sys::send_some(c.fd.get(), c.out.data(), c.out.size());  // T13
    if (n > 0) {
      c.out.erase(0, static_cast<size_t>(n));  // progress does not move the deadline
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    close_fd(c);  // EPIPE, ECONNRESET: the client is gone
    return;
  }
  if (c.out.empty()) c.deadline = Clock::now() + kRequestTimeout;  // for its next request
  update_events(c);
  if (c.out.empty() && !c.pending) dispatch(c);
}

void ControlServer::update_events(Client& c) {
  if (!c.fd) return;
  uint32_t ev = (c.close_after_flush ? 0U : static_cast<uint32_t>(EPOLLIN)) | (c.out.empty() ? 0U : EPOLLOUT);
  if (int err = epoll_->try_modify(c.fd.get(), ev, static_cast<uint64_t>(c.fd.get()))) {
    guard_.warn_once("watch a client", err, ", dropping it");
    close_fd(c);  // erased by the next expire(): callers still hold `c`
  }
}

// Leaves epoll and the fd map before the fd is closed, so that a reused fd
// number can never be confused with this one.
void ControlServer::close_fd(Client& c) {
  if (!c.fd) return;
  epoll_->remove(c.fd.get());
  by_fd_.erase(c.fd.get());
  c.fd.reset();
}

void ControlServer::drop(ClientId id) {
  auto it = clients_.find(id);
  if (it == clients_.end()) return;
  close_fd(it->second);
  clients_.erase(it);
}

void ControlServer::flush_all() {
  for (auto& [id, c] : clients_) {
    while (!c.out.empty() && c.fd) {
      ssize_t n = sys::send_some(c.fd.get(), c.out.data(), c.out.size());  // T13
      if (n > 0) {
        c.out.erase(0, static_cast<size_t>(n));
        continue;
      }
      break;  // full or gone: nothing more can be done on the way out
    }
  }
}

ControlServer::Clock::time_point ControlServer::expire(Clock::time_point now) {
  auto next = epoll_ != nullptr ? guard_.resume(*epoll_, listen_.get(), now) : Clock::time_point::max();
  next = std::min(next, crowded_.tick(now));
  limit_.maybe_restore(guard_.in_trouble(), by_fd_.size());
  for (auto it = clients_.begin(); it != clients_.end();) {
    Client& c = it->second;
    c.fresh = false;  // the batch it was accepted in is over
    bool dead = !c.fd;
    bool late = !c.pending && now >= c.deadline;  // a pending reply is waited for, however long
    if (dead || late) {
      ClientId id = it->first;
      ++it;
      // Half a request sent: say why it ends (an idle client is closed quietly).
      if (!dead && c.in.buffered() > 0 && c.out.empty()) say(c.fd.get(), kTimedOut);
      drop(id);
      continue;
    }
    if (!c.pending) next = std::min(next, c.deadline);
    ++it;
  }
  return next;
}

}  // namespace preforkd::daemon
