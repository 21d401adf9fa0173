#include "sys/listen_queue.hpp"

#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <linux/unix_diag.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "sys/unique_fd.hpp"

namespace preforkd::sys {

namespace {

constexpr int kTcpListen = 10;  // TCP_LISTEN in the kernel's state numbering

std::optional<ListenQueue> tcp_queue(int fd) {
  struct tcp_info info {};
  socklen_t len = sizeof info;
  if (::getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) != 0) return std::nullopt;
  if (info.tcpi_state != kTcpListen) {
    errno = EINVAL;
    return std::nullopt;
  }
  return ListenQueue{info.tcpi_unacked, info.tcpi_sacked};
}

std::optional<ListenQueue> unix_queue(int fd) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return std::nullopt;
  UniqueFd nl(::socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG));
  if (!nl) return std::nullopt;
  struct {
    nlmsghdr nlh;
    unix_diag_req req;
  } msg{};
  msg.nlh.nlmsg_len = sizeof msg;
  msg.nlh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  msg.nlh.nlmsg_flags = NLM_F_REQUEST;  // one socket, by inode (no dump)
  msg.req.sdiag_family = AF_UNIX;
  msg.req.udiag_states = 1U << kTcpListen;
  msg.req.udiag_ino = static_cast<uint32_t>(st.st_ino);
  msg.req.udiag_show = UDIAG_SHOW_RQLEN;
  msg.req.udiag_cookie[0] = msg.req.udiag_cookie[1] = ~0U;  // INET_DIAG_NOCOOKIE
  sockaddr_nl to{};
  to.nl_family = AF_NETLINK;
  ssize_t sent;
  do sent = ::sendto(nl.get(), &msg, sizeof msg, 0, reinterpret_cast<sockaddr*>(&to), sizeof to);
  while (sent < 0 && errno == EINTR);
  if (sent < 0) return std::nullopt;
  alignas(nlmsghdr) char buf[8192];
  ssize_t n;
  do n = ::recv(nl.get(), buf, sizeof buf, 0);
  while (n < 0 && errno == EINTR);
  if (n < 0) return std::nullopt;
  int len = static_cast<int>(n);
  for (auto* h = reinterpret_cast<nlmsghdr*>(buf); NLMSG_OK(h, len); h = NLMSG_NEXT(h, len)) {
    if (h->nlmsg_type == NLMSG_ERROR) {
      const auto* e = static_cast<const nlmsgerr*>(NLMSG_DATA(h));
      errno = e->error != 0 ? -e->error : ENOENT;
      return std::nullopt;
    }
    if (h->nlmsg_type != SOCK_DIAG_BY_FAMILY) continue;
    const auto* m = static_cast<const unix_diag_msg*>(NLMSG_DATA(h));
    if (m->udiag_ino != msg.req.udiag_ino) continue;
    int alen = static_cast<int>(h->nlmsg_len - NLMSG_LENGTH(sizeof *m));
    for (auto* a = reinterpret_cast<const rtattr*>(m + 1); RTA_OK(a, alen); a = RTA_NEXT(a, alen)) {
      if (a->rta_type != UNIX_DIAG_RQLEN || RTA_PAYLOAD(a) < sizeof(unix_diag_rqlen)) continue;
      const auto* q = static_cast<const unix_diag_rqlen*>(RTA_DATA(a));
      return ListenQueue{q->udiag_rqueue, q->udiag_wqueue};
    }
  }
  errno = ENOENT;
  return std::nullopt;
}

}  // namespace

std::optional<ListenQueue> listen_queue(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return std::nullopt;
  if (ss.ss_family == AF_INET || ss.ss_family == AF_INET6) return tcp_queue(fd);
  if (ss.ss_family == AF_UNIX) return unix_queue(fd);
  errno = EAFNOSUPPORT;
  return std::nullopt;
}

std::optional<uint64_t> host_listen_overflows() {
  // Two "TcpExt:" lines: the names, then the values, in the same order.
  std::ifstream in("/proc/net/netstat");  // larger than read_small_file's 4 KiB
  std::string names, values;
  while (std::getline(in, names)) {
    if (names.rfind("TcpExt:", 0) != 0) continue;
    if (!std::getline(in, values) || values.rfind("TcpExt:", 0) != 0) return std::nullopt;
    std::istringstream ns(names), vs(values);
    std::string name, value;
    while (ns >> name && vs >> value)
      if (name == "ListenOverflows") return std::stoull(value);
    return std::nullopt;
  }
  return std::nullopt;
}

}  // namespace preforkd::sys
