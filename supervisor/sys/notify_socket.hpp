// notify_socket.hpp — the AF_UNIX datagram socket behind NOTIFY_SOCKET.
//
// Workers that speak sd_notify(3) (libsystemd, gunicorn, a few lines of
// Python) send datagrams of `KEY=VALUE` lines to the socket named by
// NOTIFY_SOCKET. preforkd owns one such socket for all of its workers, bound
// in the Linux abstract namespace (no file, so no permission or cleanup
// question when workers run as other users; the name starts with '@' in
// NOTIFY_SOCKET, as sd_notify expects). SO_PASSCRED makes the kernel attach
// the sender's pid, uid and gid to every datagram (SCM_CREDENTIALS), which
// is how the daemon tells which worker a datagram is from: a sender cannot
// claim someone else's pid without CAP_SYS_ADMIN.
//
// Owns: the socket calls. Must never: decide who a sender is (daemon), keep
// what was received, or leave a file descriptor a sender passed (SCM_RIGHTS)
// open in preforkd.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <string>

#include "sys/unique_fd.hpp"

namespace preforkd::sys {

// socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK) with
// SO_PASSCRED, bound to the abstract name `wanted` (without the leading
// NUL). If that name is taken (EADDRINUSE: another process squats it), the
// kernel picks a free abstract name instead (autobind). `name` gets the name
// for NOTIFY_SOCKET, "@" + the abstract name. Returns 0 or an errno value.
// Fault point "socket".
int open_notify_socket(const std::string& wanted, UniqueFd& out, std::string& name);

// The NOTIFY_SOCKET name of an abstract AF_UNIX datagram socket (one handed
// over by an in-place upgrade), or "" if `fd` is not one.
std::string notify_socket_name(int fd);

// One datagram as received.
struct Datagram {
  size_t size = 0;          // its real length (more than the buffer when truncated)
  bool truncated = false;   // longer than the buffer: the rest is lost
  bool credentials = false; // SCM_CREDENTIALS came with it (always, with SO_PASSCRED)
  pid_t pid = 0;            // the sender, in our pid namespace (0: unknown)
  uid_t uid = static_cast<uid_t>(-1);
  gid_t gid = static_cast<gid_t>(-1);
  int fds_closed = 0;       // descriptors the sender passed (SCM_RIGHTS), closed at once
};

// recvmsg(MSG_DONTWAIT | MSG_TRUNC | MSG_CMSG_CLOEXEC) of one datagram into
// `buf`; EINTR retried. Returns the bytes stored (at most `cap`), or -1 with
// errno (EAGAIN: nothing waiting). Descriptors passed along are closed
// before it returns (the kernel closes those that do not fit the control
// buffer). Fault point "recvmsg".
ssize_t receive_datagram(int fd, char* buf, size_t cap, Datagram& out) noexcept;

}  // namespace preforkd::sys
