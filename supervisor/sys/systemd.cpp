#include "sys/systemd.hpp"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <systemd/sd-daemon.h>

#include <algorithm>
#include <cstddef>
#include <cstdlib>
#include <cstring>

#include "sys/error.hpp"
#include "sys/listen_socket.hpp"

namespace preforkd::sys {

namespace {

// How local_address() would print `a`, or "" when an address cannot identify
// a passed socket (a port of 0 means "any port the kernel picks").
std::string expected_address(const config::ListenAddress& a) {
  switch (a.family) {
    case config::ListenAddress::Family::Inet:
      return a.port == 0 ? "" : a.host + ":" + std::to_string(a.port);
    case config::ListenAddress::Family::Inet6:
      return a.port == 0 ? "" : "[" + a.host + "]:" + std::to_string(a.port);
    case config::ListenAddress::Family::Unix:
      return "unix:" + a.path;
  }
  return "";
}

}  // namespace

void notify_systemd(const std::string& state) noexcept {
  // Not sd_notify(3): it sends on a blocking socket, so a service manager
  // that stops reading (its queue holds 10 datagrams by default) would stall
  // the whole loop. Here a full queue drops the message (EAGAIN) instead.
  // NOTIFY_SOCKET stays set: every later notification needs it too. Workers
  // never see it: theirs names preforkd's own socket (preforkd-worker(7)).
  const char* path = std::getenv("NOTIFY_SOCKET");
  if (path == nullptr || (path[0] != '/' && path[0] != '@')) return;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  size_t len = std::strlen(path);
  if (len < 2 || len >= sizeof addr.sun_path) return;
  std::memcpy(addr.sun_path, path, len);
  if (path[0] == '@') addr.sun_path[0] = '\0';  // abstract namespace
  auto addr_len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + len + (path[0] == '/' ? 1 : 0));
  int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return;
  (void)retry_on_eintr([&] {
    return ::sendto(fd, state.data(), state.size(), MSG_NOSIGNAL | MSG_DONTWAIT,
                    reinterpret_cast<const sockaddr*>(&addr), addr_len);
  });
  ::close(fd);
}

bool systemd_notify_enabled() noexcept {
  const char* s = std::getenv("NOTIFY_SOCKET");
  return s != nullptr && *s != '\0';
}

ActivatedSockets ActivatedSockets::from_environment() {
  ActivatedSockets out;
  char** names = nullptr;
  // unset_environment = 1: a re-exec'd preforkd or a worker must not take
  // these variables for its own.
  int n = sd_listen_fds_with_names(1, &names);
  if (n < 0) throw SysError(-n, "invalid socket activation variables (LISTEN_FDS, LISTEN_FDNAMES)");
  for (int i = 0; i < n; ++i) {
    int fd = SD_LISTEN_FDS_START + i;
    fcntl(fd, F_SETFD, FD_CLOEXEC);  // sd_listen_fds sets it too; T5 does not rely on that
    Passed p;
    p.fd.reset(fd);
    p.name = names != nullptr && names[i] != nullptr ? names[i] : "unknown";
    p.address = local_address(fd);
    out.passed_.push_back(std::move(p));
  }
  if (names != nullptr) {
    for (int i = 0; i < n; ++i) std::free(names[i]);
    std::free(names);
  }
  return out;
}

std::optional<UniqueFd> ActivatedSockets::take(const config::ListenAddress& a) {
  const std::string address = expected_address(a);
  auto available = [](const Passed& p) { return static_cast<bool>(p.fd); };
  auto found = std::find_if(passed_.begin(), passed_.end(), [&](const Passed& p) {
    return available(p) && p.name == a.name && !address.empty() && p.address == address;
  });
  if (found == passed_.end())
    found = std::find_if(passed_.begin(), passed_.end(),
                         [&](const Passed& p) { return available(p) && p.name == a.name; });
  if (found == passed_.end() && !address.empty())
    found = std::find_if(passed_.begin(), passed_.end(),
                         [&](const Passed& p) { return available(p) && p.address == address; });
  if (found == passed_.end()) return std::nullopt;

  int fd = found->fd.get();
  if (sd_is_socket(fd, AF_UNSPEC, SOCK_STREAM, 1) <= 0)
    throw SysError(EINVAL, "the socket systemd passed as fd " + std::to_string(fd) + " (name \"" +
                                 found->name + "\") for " + a.text +
                                 " is not a listening stream socket");
  // T19: every worker shares this open file description; hand it out blocking,
  // whatever NonBlocking= the service unit asked for.
  int fl = fcntl(fd, F_GETFL);
  if (fl >= 0 && (fl & O_NONBLOCK)) fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
  taken_.push_back(a);
  return std::move(found->fd);
}

bool ActivatedSockets::provided(const config::ListenAddress& a) const {
  return std::find(taken_.begin(), taken_.end(), a) != taken_.end();
}

std::vector<std::string> ActivatedSockets::close_unused() {
  std::vector<std::string> out;
  for (auto& p : passed_) {
    if (!p.fd) continue;
    out.push_back("fd " + std::to_string(p.fd.get()) + " (name \"" + p.name + "\", " + p.address + ")");
    p.fd.reset();
  }
  return out;
}

}  // namespace preforkd::sys
