#include "sys/notify_socket.hpp"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstring>

#include "sys/error.hpp"
#include "sys/fault.hpp"

namespace preforkd::sys {

namespace {

// "@" + the abstract name of a bound socket, or "" if it has none.
std::string abstract_name(const sockaddr_un& addr, socklen_t len) {
  size_t path_len = len > offsetof(sockaddr_un, sun_path) ? len - offsetof(sockaddr_un, sun_path) : 0;
  if (addr.sun_family != AF_UNIX || path_len < 2 || addr.sun_path[0] != '\0') return "";
  return "@" + std::string(addr.sun_path + 1, path_len - 1);
}

}  // namespace

int open_notify_socket(const std::string& wanted, UniqueFd& out, std::string& name) {
  if (int err = fault::injected("socket")) return err;
  UniqueFd fd(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd) return errno;
  int on = 1;
  if (::setsockopt(fd.get(), SOL_SOCKET, SO_PASSCRED, &on, sizeof on) != 0) return errno;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (wanted.empty() || wanted.size() > sizeof addr.sun_path - 1) return ENAMETOOLONG;
  std::memcpy(addr.sun_path + 1, wanted.data(), wanted.size());  // sun_path[0] = '\0': abstract
  auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + wanted.size());
  if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&addr), len) != 0) {
    if (errno != EADDRINUSE) return errno;
    // Autobind (unix(7)): only the family given, the kernel picks a free abstract name.
    sa_family_t family = AF_UNIX;
    if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&family), sizeof family) != 0) return errno;
  }
  name = notify_socket_name(fd.get());
  if (name.empty()) return EINVAL;
  out = std::move(fd);
  return 0;
}

std::string notify_socket_name(int fd) {
  int type = 0;
  socklen_t type_len = sizeof type;
  if (::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &type_len) != 0 || type != SOCK_DGRAM) return "";
  sockaddr_un addr{};
  socklen_t len = sizeof addr;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) return "";
  return abstract_name(addr, len);
}

ssize_t receive_datagram(int fd, char* buf, size_t cap, Datagram& out) noexcept {
  out = Datagram{};
  if (int err = fault::injected("recvmsg")) {
    errno = err;
    return -1;
  }
  iovec iov{buf, cap};
  // Room for the credentials and a few descriptors: those that do not fit
  // are closed by the kernel (MSG_CTRUNC), those that do are closed below.
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(ucred)) + CMSG_SPACE(8 * sizeof(int))];
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t n = retry_on_eintr([&] { return ::recvmsg(fd, &msg, MSG_DONTWAIT | MSG_TRUNC | MSG_CMSG_CLOEXEC); });
  if (n < 0) return -1;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET) continue;
    if (c->cmsg_type == SCM_CREDENTIALS && c->cmsg_len >= CMSG_LEN(sizeof(ucred))) {
      ucred cred{};
      std::memcpy(&cred, CMSG_DATA(c), sizeof cred);
      out.credentials = true;
      out.pid = cred.pid;
      out.uid = cred.uid;
      out.gid = cred.gid;
    } else if (c->cmsg_type == SCM_RIGHTS && c->cmsg_len >= CMSG_LEN(0)) {
      size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < count; ++i) {
        int passed = -1;
        std::memcpy(&passed, CMSG_DATA(c) + i * sizeof(int), sizeof passed);
        if (passed >= 0) {
          ::close(passed);
          ++out.fds_closed;
        }
      }
    }
  }
  out.size = static_cast<size_t>(n);
  out.truncated = (msg.msg_flags & MSG_TRUNC) != 0 || static_cast<size_t>(n) > cap;
  return static_cast<ssize_t>(static_cast<size_t>(n) < cap ? static_cast<size_t>(n) : cap);
}

}  // namespace preforkd::sys
