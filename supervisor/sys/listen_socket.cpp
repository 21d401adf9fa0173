#include "sys/listen_socket.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <cstring>

#include "sys/error.hpp"
#include "sys/fault.hpp"

namespace preforkd::sys {

namespace {

[[noreturn]] void fail(const ListenSpec& spec, const char* step, int err) {
  throw SysError(err, std::string("cannot ") + step + " " + spec.text);
}

void set_flag(int fd, int level, int opt, const ListenSpec& spec) {
  int one = 1;
  if (setsockopt(fd, level, opt, &one, sizeof one) != 0) fail(spec, "set socket options on", errno);
}

// A Unix socket path that exists: replace it only if nobody accepts on it.
void clear_stale_unix_path(const ListenSpec& spec, const sockaddr_un& addr) {
  struct stat st {};
  if (lstat(spec.path.c_str(), &st) != 0) return;  // nothing there
  if (!S_ISSOCK(st.st_mode)) throw SysError(EEXIST, "cannot bind " + spec.text + ": file exists and is not a socket");
  UniqueFd probe(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!probe) fail(spec, "probe", errno);
  if (connect(probe.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0)
    fail(spec, "bind", EADDRINUSE);
  if (unlink(spec.path.c_str()) != 0 && errno != ENOENT) fail(spec, "replace stale socket", errno);
}

}  // namespace

UniqueFd bind_listener(const ListenSpec& spec) {
  sockaddr_storage ss{};
  socklen_t len = 0;
  int domain = AF_INET;
  switch (spec.family) {
    case ListenSpec::Family::Inet: {
      auto* sin = reinterpret_cast<sockaddr_in*>(&ss);
      sin->sin_family = AF_INET;
      sin->sin_port = htons(spec.port);
      if (inet_pton(AF_INET, spec.host.c_str(), &sin->sin_addr) != 1) fail(spec, "parse", EINVAL);
      len = sizeof *sin;
      break;
    }
    case ListenSpec::Family::Inet6: {
      auto* sin6 = reinterpret_cast<sockaddr_in6*>(&ss);
      sin6->sin6_family = AF_INET6;
      sin6->sin6_port = htons(spec.port);
      if (inet_pton(AF_INET6, spec.host.c_str(), &sin6->sin6_addr) != 1) fail(spec, "parse", EINVAL);
      len = sizeof *sin6;
      domain = AF_INET6;
      break;
    }
    case ListenSpec::Family::Unix: {
      auto* sun = reinterpret_cast<sockaddr_un*>(&ss);
      sun->sun_family = AF_UNIX;
      if (spec.path.size() >= sizeof sun->sun_path) fail(spec, "bind", ENAMETOOLONG);
      std::memcpy(sun->sun_path, spec.path.c_str(), spec.path.size() + 1);
      len = sizeof *sun;
      domain = AF_UNIX;
      clear_stale_unix_path(spec, *sun);
      break;
    }
  }
  if (int err = fault::injected("socket")) fail(spec, "create a socket for", err);  // tests only
  UniqueFd fd(socket(domain, SOCK_STREAM | SOCK_CLOEXEC, 0));  // T5; blocking on purpose (T19)
  if (!fd) fail(spec, "create a socket for", errno);
  if (domain != AF_UNIX) set_flag(fd.get(), SOL_SOCKET, SO_REUSEADDR, spec);
  if (domain == AF_INET6) set_flag(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, spec);
  if (spec.reuseport) set_flag(fd.get(), SOL_SOCKET, SO_REUSEPORT, spec);
  if (bind(fd.get(), reinterpret_cast<const sockaddr*>(&ss), len) != 0) fail(spec, "bind", errno);
  if (listen(fd.get(), spec.backlog) != 0) fail(spec, "listen on", errno);
  return fd;
}

std::string local_address(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return "?";
  char host[INET6_ADDRSTRLEN] = {};
  if (ss.ss_family == AF_INET) {
    auto* sin = reinterpret_cast<sockaddr_in*>(&ss);
    inet_ntop(AF_INET, &sin->sin_addr, host, sizeof host);
    return std::string(host) + ":" + std::to_string(ntohs(sin->sin_port));
  }
  if (ss.ss_family == AF_INET6) {
    auto* sin6 = reinterpret_cast<sockaddr_in6*>(&ss);
    inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof host);
    return "[" + std::string(host) + "]:" + std::to_string(ntohs(sin6->sin6_port));
  }
  if (ss.ss_family == AF_UNIX) return std::string("unix:") + reinterpret_cast<sockaddr_un*>(&ss)->sun_path;
  return "?";
}

}  // namespace preforkd::sys
