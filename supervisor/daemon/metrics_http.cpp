#include "daemon/metrics_http.hpp"

#include <cerrno>

#include "sys/error.hpp"
#include "sys/io.hpp"

namespace preforkd::daemon {

namespace {

std::string response(const char* status, const std::string& body, const std::string& content_type,
                     bool head_only, const std::string& extra = "") {
  std::string r = std::string("HTTP/1.1 ") + status + "\r\nContent-Type: " + content_type +
                  "\r\nContent-Length: " + std::to_string(body.size()) + "\r\nConnection: close\r\n" + extra +
                  "\r\n";
  if (!head_only) r += body;
  return r;
}

std::string unavailable(const std::string& why) {
  return response("503 Service Unavailable", why + "\n", "text/plain", false, "Retry-After: 1\r\n");
}

// Best effort, one non-blocking write (T13), to a client about to be closed.
void say(int fd, const std::string& text) { (void)sys::send_some(fd, text.data(), text.size()); }

}  // namespace

MetricsHttp::MetricsHttp(const sys::ListenSpec& spec, Pages pages, Logger warn)
    : MetricsHttp(sys::bind_listener(spec), std::move(pages), std::move(warn)) {}

MetricsHttp::MetricsHttp(sys::UniqueFd adopted, Pages pages, Logger warn)
    : listen_(std::move(adopted)),
      pages_(std::move(pages)),
      warn_(std::move(warn)),
      guard_("metrics", warn_, unavailable("preforkd is out of file descriptors")),
      crowded_(warn_) {
  bound_ = sys::local_address(listen_.get());
  // Ours alone (not shared with workers): non-blocking is safe here.
  if (int err = sys::set_nonblocking(listen_.get())) sys::throw_errno("metrics socket " + bound_, err);
}

void MetricsHttp::attach(sys::Epoll& epoll) {
  epoll_ = &epoll;
  epoll.add(listen_.get(), EPOLLIN, static_cast<uint64_t>(listen_.get()));
}

std::string MetricsHttp::respond(const std::string& head, const Pages& pages) {
  auto line_end = head.find("\r\n");
  std::string line = head.substr(0, line_end);
  auto sp1 = line.find(' ');
  auto sp2 = sp1 == std::string::npos ? std::string::npos : line.find(' ', sp1 + 1);
  if (sp2 == std::string::npos || line.compare(sp2 + 1, 5, "HTTP/") != 0)
    return response("400 Bad Request", "bad request\n", "text/plain", false);
  std::string method = line.substr(0, sp1), target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  bool head_only = method == "HEAD";
  if (method != "GET" && !head_only)
    return response("405 Method Not Allowed", "only GET and HEAD\n", "text/plain", false, "Allow: GET, HEAD\r\n");
  std::string path = target.substr(0, target.find('?'));
  if (path == "/metrics")
    return response("200 OK", pages.metrics(), "text/plain; version=0.0.4; charset=utf-8", head_only);
  if (path == "/healthz") return response("200 OK", "ok\n", "text/plain", head_only);
  if (path == "/readyz") {
    auto [ready, why] = pages.readiness();
    return response(ready ? "200 OK" : "503 Service Unavailable", why, "text/plain", head_only);
  }
  return response("404 Not Found", "try /metrics, /healthz or /readyz\n", "text/plain", head_only);
}

void MetricsHttp::on_listen_readable() {
  guard_.accept_all(
      *epoll_, listen_.get(), [this](sys::UniqueFd fd) { on_accepted(std::move(fd)); },
      [this] { return make_room_for_fds(); });
}

void MetricsHttp::on_accepted(sys::UniqueFd fd) {
  auto now = Clock::now();
  if (clients_.size() >= limit_.value()) {
    if (crowded_.occur(now, "metrics: at the limit of " + limit_.describe("connections")) && warn_)
      warn_("metrics: at the limit of " + limit_.describe("connections") +
            ": each new one closes the oldest idle one, or is refused if none is idle (one summary when it is "
            "over)");
    if (!close_oldest_idle()) {
      ++crowded_.refused;
      say(fd.get(), unavailable("too many connections"));
      return;  // closed at once
    }
    ++crowded_.closed;
  }
  int raw = fd.get();
  if (int err = epoll_->try_add(raw, EPOLLIN, static_cast<uint64_t>(raw))) {
    guard_.warn_once("watch a client", err, ", dropping it");
    return;
  }
  Client c;
  c.fd = std::move(fd);
  c.seq = next_seq_++;
  c.deadline = now + kTimeout;
  Client& added = clients_.emplace(raw, std::move(c)).first->second;
  // A request already sent is read now, before the next connection is
  // accepted: being answered, this one can no longer be closed to make room.
  read_request(raw, added);
  auto it = clients_.find(raw);
  if (it != clients_.end() && it->second.answered) flush(raw, it->second);
}

size_t MetricsHttp::make_room_for_fds() {
  limit_.lower(clients_.size());
  size_t closed = 0;
  while (clients_.size() >= limit_.value() && close_oldest_idle()) ++closed;
  return closed;
}

bool MetricsHttp::close_oldest_idle() {
  auto victim = clients_.end();
  for (auto it = clients_.begin(); it != clients_.end(); ++it) {
    const Client& c = it->second;
    if (c.answered && !c.lingering) continue;  // its response is being written
    if (victim == clients_.end() || c.seq < victim->second.seq) victim = it;
  }
  if (victim == clients_.end()) return false;
  if (!victim->second.answered) say(victim->first, unavailable("too many connections: closed to make room"));
  drop(victim->first);
  return true;
}

bool MetricsHttp::answer(Client& c, std::string r) {
  c.answered = true;
  c.in.clear();
  c.out = std::move(r);
  int fd = c.fd.get();
  if (int err = epoll_->try_modify(fd, EPOLLOUT, static_cast<uint64_t>(fd))) {
    guard_.warn_once("watch a client", err, ", dropping it");
    drop(fd);
    return false;
  }
  return true;
}

void MetricsHttp::on_client_event(int fd, uint32_t events) {
  auto it = clients_.find(fd);
  if (it == clients_.end()) return;
  Client& c = it->second;
  // Accepted while this batch of events was handled: the event was collected
  // for an fd closed meanwhile (a connection closed to make room) whose
  // number this one reuses. Its own events come with the next epoll_wait.
  if (c.fresh) return;
  if (c.lingering) {
    // Response sent: read and discard until the client closes, so that closing
    // with unread input never turns into a reset that eats the response.
    char buf[4096];
    ssize_t n;
    while ((n = sys::read_some(fd, buf, sizeof buf)) > 0) {
    }
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) drop(fd);
    return;
  }
  if ((events & EPOLLIN) && !c.answered) {
    read_request(fd, c);
    it = clients_.find(fd);
    if (it == clients_.end()) return;  // dropped
  }
  if (events & (EPOLLERR | EPOLLHUP)) {
    if (!c.answered) return drop(fd);
  }
  if (c.answered) flush(fd, c);
}

void MetricsHttp::read_request(int fd, Client& c) {
  char buf[4096];
  for (;;) {
    ssize_t n = sys::read_some(fd, buf, sizeof buf);
    if (n > 0) {
      c.in.append(buf, static_cast<size_t>(n));
      auto end = c.in.find("\r\n\r\n");
      if (end != std::string::npos && end + 4 <= kMaxHead) {
        answer(c, respond(c.in, pages_));
        return;
      }
      if (end != std::string::npos || c.in.size() > kMaxHead) {
        answer(c, response("431 Request Header Fields Too Large", "too large\n", "text/plain", false));
        return;
      }
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    return drop(fd);  // EOF before a whole request, or an error
  }
}

void MetricsHttp::flush(int fd, Client& c) {
  while (!c.out.empty()) {
    ssize_t n = sys::send_some(fd, c.out.data(), c.out.size());  // T13
    if (n > 0) {
      c.out.erase(0, static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    return drop(fd);  // the peer is gone
  }
  // All written; one request per connection. Linger until the peer closes.
  sys::shutdown_write(fd);
  c.lingering = true;
  if (int err = epoll_->try_modify(fd, EPOLLIN, static_cast<uint64_t>(fd))) {
    guard_.warn_once("watch a client", err, ", dropping it");
    drop(fd);  // the response is out; only the polite close is lost
  }
}

void MetricsHttp::drop(int fd) {
  epoll_->remove(fd);
  clients_.erase(fd);  // closes it
}

MetricsHttp::Clock::time_point MetricsHttp::expire(Clock::time_point now) {
  auto next = epoll_ != nullptr ? guard_.resume(*epoll_, listen_.get(), now) : Clock::time_point::max();
  next = std::min(next, crowded_.tick(now));
  limit_.maybe_restore(guard_.in_trouble(), clients_.size());
  for (auto it = clients_.begin(); it != clients_.end();) {
    it->second.fresh = false;  // the batch it was accepted in is over
    if (now >= it->second.deadline) {
      int fd = it->first;
      ++it;
      drop(fd);  // slow or stuck: cut off
      continue;
    }
    next = std::min(next, it->second.deadline);
    ++it;
  }
  return next;
}

}  // namespace preforkd::daemon
