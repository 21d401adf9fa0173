#include "daemon/metrics_http.hpp"

#include <fcntl.h>
#include <sys/socket.h>

#include <cerrno>

#include "sys/error.hpp"

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

}  // namespace

MetricsHttp::MetricsHttp(const sys::ListenSpec& spec, std::function<std::string()> render)
    : listen_(sys::bind_listener(spec)), render_(std::move(render)) {
  fcntl(listen_.get(), F_SETFL, fcntl(listen_.get(), F_GETFL) | O_NONBLOCK);  // ours alone
  bound_ = sys::local_address(listen_.get());
}

MetricsHttp::MetricsHttp(sys::UniqueFd adopted, std::function<std::string()> render)
    : listen_(std::move(adopted)), render_(std::move(render)) {
  fcntl(listen_.get(), F_SETFL, fcntl(listen_.get(), F_GETFL) | O_NONBLOCK);
  bound_ = sys::local_address(listen_.get());
}

void MetricsHttp::attach(sys::Epoll& epoll) {
  epoll_ = &epoll;
  epoll.add(listen_.get(), EPOLLIN, static_cast<uint64_t>(listen_.get()));
}

std::string MetricsHttp::respond(const std::string& head, const std::function<std::string()>& render) {
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
  if (path != "/metrics") return response("404 Not Found", "try /metrics\n", "text/plain", head_only);
  return response("200 OK", render(), "text/plain; version=0.0.4; charset=utf-8", head_only);
}

void MetricsHttp::on_listen_readable() {
  for (;;) {
    int fd = ::accept4(listen_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      return;  // EAGAIN, or EMFILE: try again at the next wake-up
    }
    if (clients_.size() >= kMaxClients) {
      ::close(fd);
      continue;
    }
    Client c;
    c.fd.reset(fd);
    c.deadline = Clock::now() + kTimeout;
    epoll_->add(fd, EPOLLIN, static_cast<uint64_t>(fd));
    clients_.emplace(fd, std::move(c));
  }
}

void MetricsHttp::answer(Client& c, std::string r) {
  c.answered = true;
  c.in.clear();
  c.out = std::move(r);
  epoll_->modify(c.fd.get(), EPOLLOUT, static_cast<uint64_t>(c.fd.get()));
}

void MetricsHttp::on_client_event(int fd, uint32_t events) {
  auto it = clients_.find(fd);
  if (it == clients_.end()) return;
  Client& c = it->second;
  if (c.lingering) {
    // Response sent: read and discard until the client closes, so that closing
    // with unread input never turns into a reset that eats the response.
    char buf[4096];
    ssize_t n;
    while ((n = ::recv(fd, buf, sizeof buf, 0)) > 0) {
    }
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) drop(fd);
    return;
  }
  if ((events & EPOLLIN) && !c.answered && !c.lingering) {
    char buf[4096];
    for (;;) {
      ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n > 0) {
        c.in.append(buf, static_cast<size_t>(n));
        auto end = c.in.find("\r\n\r\n");
        if (end != std::string::npos && end + 4 <= kMaxHead) {
          answer(c, respond(c.in, render_));
          break;
        }
        if (end != std::string::npos || c.in.size() > kMaxHead) {
          answer(c, response("431 Request Header Fields Too Large", "too large\n", "text/plain", false));
          break;
        }
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
      return drop(fd);  // EOF before a whole request, or an error
    }
  }
  if (events & (EPOLLERR | EPOLLHUP)) {
    if (!c.answered) return drop(fd);
  }
  if (c.answered) flush(fd, c);
}

void MetricsHttp::flush(int fd, Client& c) {
  while (!c.out.empty()) {
    ssize_t n = ::send(fd, c.out.data(), c.out.size(), MSG_NOSIGNAL);  // T13
    if (n > 0) {
      c.out.erase(0, static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    return drop(fd);  // the peer is gone
  }
  // All written; one request per connection. Linger until the peer closes.
  ::shutdown(fd, SHUT_WR);
  c.lingering = true;
  epoll_->modify(fd, EPOLLIN, static_cast<uint64_t>(fd));
}

void MetricsHttp::drop(int fd) {
  epoll_->remove(fd);
  clients_.erase(fd);  // closes it
}

MetricsHttp::Clock::time_point MetricsHttp::expire(Clock::time_point now) {
  auto next = Clock::time_point::max();
  for (auto it = clients_.begin(); it != clients_.end();) {
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
