// listeners.cpp — see listeners.hpp.
#include "listeners.hpp"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <preforkd/worker.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace preforkd::echo {
namespace {

std::string errno_text(int err) { return std::strerror(err); }

// The socket is closed if binding fails half-way.
class FdGuard {
 public:
  explicit FdGuard(int fd) : fd_(fd) {}
  ~FdGuard() {
    if (fd_ >= 0) ::close(fd_);  // T16: close is never retried
  }
  FdGuard(const FdGuard&) = delete;
  FdGuard& operator=(const FdGuard&) = delete;
  int get() const { return fd_; }
  int release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }

 private:
  int fd_;
};

bool parse_port(const std::string& s, unsigned& port) {
  if (s.empty() || s.size() > 5) return false;
  unsigned v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + static_cast<unsigned>(c - '0');
  }
  if (v > 65535) return false;
  port = v;
  return true;
}

Listener bind_unix(const std::string& spec, const std::string& path, int backlog) {
  sockaddr_un sun{};
  sun.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof sun.sun_path)
    throw UsageError("--listen " + spec + ": unix socket path is empty or too long");
  std::memcpy(sun.sun_path, path.data(), path.size());
  const bool abstract = path[0] == '@';
  if (abstract) sun.sun_path[0] = '\0';
  auto addrlen = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size());

  FdGuard guard(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  const int raw = guard.get();
  if (raw < 0) throw std::runtime_error("cannot bind " + spec + ": " + errno_text(errno));
  // A socket file left by a previous run makes bind fail with EADDRINUSE; only a
  // socket is removed, never a regular file someone mistyped.
  struct stat st {};
  if (!abstract && ::lstat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) ::unlink(path.c_str());
  if (::bind(raw, reinterpret_cast<sockaddr*>(&sun), addrlen) < 0 || ::listen(raw, backlog) < 0)
    throw std::runtime_error("cannot bind " + spec + ": " + errno_text(errno));
  Listener l;
  l.fd = guard.release();
  l.tcp = false;
  l.name = spec;
  if (!abstract) l.unix_path = path;
  return l;
}

Listener bind_inet(const std::string& spec, std::string host, const std::string& port_text,
                   int backlog) {
  unsigned port = 0;
  if (!parse_port(port_text, port))
    throw UsageError("--listen " + spec + ": expected host:port, [v6]:port or unix:/path");
  if (host.empty() || host == "*") host = "0.0.0.0";

  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  int rc = ::getaddrinfo(host.c_str(), port_text.c_str(), &hints, &res);
  if (rc != 0) throw std::runtime_error("cannot bind " + spec + ": " + ::gai_strerror(rc));
  std::string error = "no address";
  for (addrinfo* ai = res; ai != nullptr; ai = ai->ai_next) {
    FdGuard guard(::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol));
    const int raw = guard.get();
    if (raw < 0) {
      error = errno_text(errno);
      continue;
    }
    int one = 1;
    ::setsockopt(raw, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    // [::]:port serves IPv6 only, as nginx does, so 0.0.0.0:port can be bound beside it.
    if (ai->ai_family == AF_INET6) ::setsockopt(raw, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (::bind(raw, ai->ai_addr, ai->ai_addrlen) < 0 || ::listen(raw, backlog) < 0) {
      error = errno_text(errno);
      continue;
    }
    ::freeaddrinfo(res);
    Listener l;
    l.fd = guard.release();
    l.tcp = true;
    l.name = local_address(l.fd);
    return l;
  }
  ::freeaddrinfo(res);
  throw std::runtime_error("cannot bind " + spec + ": " + error);
}

}  // namespace

std::vector<Listener> adopt_inherited(int n) {
  std::vector<Listener> out;
  for (int i = 0; i < n; ++i) {
    const int fd = PREFORKD_LISTEN_FDS_START + i;
    int type = 0, listening = 0;
    socklen_t len = sizeof type;
    if (::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0)
      throw std::runtime_error("inherited fd " + std::to_string(fd) +
                               " is not a socket: " + errno_text(errno));
    len = sizeof listening;
    if (type != SOCK_STREAM ||
        ::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) < 0 || !listening)
      throw std::runtime_error("inherited fd " + std::to_string(fd) +
                               " is not a listening stream socket");
    sockaddr_storage ss{};
    len = sizeof ss;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
    Listener l;
    l.fd = fd;
    l.tcp = ss.ss_family == AF_INET || ss.ss_family == AF_INET6;
    char name[256];
    l.name = preforkd_listen_fd_name(i, name, sizeof name) != nullptr && name[0] != '\0'
                 ? std::string(name) + " (" + local_address(fd) + ")"
                 : local_address(fd);
    out.push_back(std::move(l));
  }
  return out;
}

Listener bind_listener(const std::string& spec, int backlog) {
  if (spec.compare(0, 5, "unix:") == 0) return bind_unix(spec, spec.substr(5), backlog);
  if (!spec.empty() && spec[0] == '[') {
    std::size_t close = spec.find(']');
    if (close == std::string::npos || close + 1 >= spec.size() || spec[close + 1] != ':')
      throw UsageError("--listen " + spec + ": expected [v6]:port");
    return bind_inet(spec, spec.substr(1, close - 1), spec.substr(close + 2), backlog);
  }
  std::size_t colon = spec.rfind(':');
  if (colon == std::string::npos)
    throw UsageError("--listen " + spec + ": expected host:port, [v6]:port or unix:/path");
  return bind_inet(spec, spec.substr(0, colon), spec.substr(colon + 1), backlog);
}

std::string local_address(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) < 0) return "fd " + std::to_string(fd);
  char host[INET6_ADDRSTRLEN] = "";
  switch (ss.ss_family) {
    case AF_INET: {
      auto* sin = reinterpret_cast<sockaddr_in*>(&ss);
      ::inet_ntop(AF_INET, &sin->sin_addr, host, sizeof host);
      return std::string(host) + ":" + std::to_string(ntohs(sin->sin_port));
    }
    case AF_INET6: {
      auto* sin6 = reinterpret_cast<sockaddr_in6*>(&ss);
      ::inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof host);
      return "[" + std::string(host) + "]:" + std::to_string(ntohs(sin6->sin6_port));
    }
    case AF_UNIX: {
      auto* sun = reinterpret_cast<sockaddr_un*>(&ss);
      std::size_t n = len > offsetof(sockaddr_un, sun_path) ? len - offsetof(sockaddr_un, sun_path) : 0;
      if (n == 0) return "unix:(unnamed)";
      if (sun->sun_path[0] == '\0') return "unix:@" + std::string(sun->sun_path + 1, n - 1);
      return "unix:" + std::string(sun->sun_path, ::strnlen(sun->sun_path, n));
    }
    default:
      return "fd " + std::to_string(fd);
  }
}

void close_listeners(std::vector<Listener>& listeners) {
  for (Listener& l : listeners) {
    if (!l.unix_path.empty()) ::unlink(l.unix_path.c_str());
    if (l.fd >= 0) ::close(l.fd);
    l.fd = -1;
  }
}

}  // namespace preforkd::echo
