// listen_queue.hpp — the kernel's accept queue of a listening socket.
//
// Read on demand (a /metrics scrape, `preforkctl status/stats`), never by a
// timer. Sources:
//   TCP (v4, v6)  getsockopt(TCP_INFO) on the listener: for a socket in
//                 LISTEN state the kernel puts the current accept-queue
//                 length in tcpi_unacked and its limit (the effective
//                 backlog, min(listen backlog, net.core.somaxconn)) in
//                 tcpi_sacked.
//   Unix stream   sock_diag (NETLINK_SOCK_DIAG, AF_UNIX, UDIAG_SHOW_RQLEN)
//                 looked up by the socket's inode: for a listener,
//                 udiag_rqueue is the number of connections waiting to be
//                 accepted and udiag_wqueue its limit. Needs the unix_diag
//                 module (autoloaded); without it the figure is unknown.
// Dropped connections: the kernel counts them per host only
// (TcpExt ListenOverflows in /proc/net/netstat, TCP only, every socket of
// the network namespace), so that figure is host-wide and labelled as such.
#pragma once

#include <cstdint>
#include <optional>

namespace preforkd::sys {

struct ListenQueue {
  uint32_t length = 0;  // connections waiting to be accepted now
  uint32_t max = 0;     // the limit (effective backlog)
};

// nullopt when the fd is not a listening TCP or Unix stream socket or the
// kernel does not tell (errno is set).
std::optional<ListenQueue> listen_queue(int fd);

// TcpExt ListenOverflows of the network namespace, or nullopt.
std::optional<uint64_t> host_listen_overflows();

}  // namespace preforkd::sys
