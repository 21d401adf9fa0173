// sys/notify_socket: the abstract AF_UNIX datagram socket behind
// NOTIFY_SOCKET, the sender's credentials on every datagram, the size bound,
// descriptors a sender passes being closed, and process_group_of().
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstring>
#include <string>

#include "support/support.hpp"
#include "sys/notify_socket.hpp"
#include "sys/procfs.hpp"

using namespace preforkd;
using namespace preforkd::test;

namespace {

std::string unique_name(const std::string& what) {
  return "preforkd-test-" + std::to_string(::getpid()) + "-" + what;
}

// A client socket connected to "@name", as sd_notify(3) connects.
int connect_to(const std::string& notify_socket) {
  REQUIRE(notify_socket.size() > 1);
  REQUIRE(notify_socket[0] == '@');
  int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path + 1, notify_socket.data() + 1, notify_socket.size() - 1);
  auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + notify_socket.size());
  REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&addr), len) == 0);
  return fd;
}

// Waits (bounded) for a datagram: the socket is non-blocking.
ssize_t receive(int fd, char* buf, size_t cap, sys::Datagram& d) {
  ssize_t n = -1;
  wait_until([&] {
    n = sys::receive_datagram(fd, buf, cap, d);
    return n >= 0 || errno != EAGAIN;
  }, 5s);
  return n;
}

}  // namespace

TEST_CASE("notify socket: abstract, close-on-exec, non-blocking, and a taken name falls back to one the kernel picks") {
  sys::UniqueFd a, b;
  std::string name_a, name_b;
  REQUIRE(sys::open_notify_socket(unique_name("a"), a, name_a) == 0);
  CHECK(name_a == "@" + unique_name("a"));
  CHECK((::fcntl(a.get(), F_GETFD) & FD_CLOEXEC) != 0);  // T5
  CHECK((::fcntl(a.get(), F_GETFL) & O_NONBLOCK) != 0);
  CHECK(sys::notify_socket_name(a.get()) == name_a);
  // Someone squats the name: preforkd still gets a socket, under another name.
  REQUIRE(sys::open_notify_socket(unique_name("a"), b, name_b) == 0);
  CHECK(name_b != name_a);
  CHECK(name_b.size() > 1);
  CHECK(name_b[0] == '@');
  // Nothing waiting: EAGAIN, never a block.
  char buf[64];
  sys::Datagram d;
  errno = 0;
  CHECK(sys::receive_datagram(a.get(), buf, sizeof buf, d) == -1);
  CHECK(errno == EAGAIN);
  // Not a datagram socket: no name.
  int pipe_fds[2];
  REQUIRE(::pipe(pipe_fds) == 0);
  CHECK(sys::notify_socket_name(pipe_fds[0]).empty());
  ::close(pipe_fds[0]);
  ::close(pipe_fds[1]);
}

TEST_CASE("notify socket: every datagram carries its sender's pid, whoever sends it") {
  sys::UniqueFd s;
  std::string name;
  REQUIRE(sys::open_notify_socket(unique_name("creds"), s, name) == 0);
  int c = connect_to(name);
  const std::string msg = "READY=1\nSTATUS=serving\n";
  REQUIRE(::send(c, msg.data(), msg.size(), 0) == static_cast<ssize_t>(msg.size()));
  char buf[4096];
  sys::Datagram d;
  ssize_t n = receive(s.get(), buf, sizeof buf, d);
  REQUIRE(n == static_cast<ssize_t>(msg.size()));
  CHECK(std::string(buf, static_cast<size_t>(n)) == msg);
  CHECK(d.credentials);
  CHECK(d.pid == ::getpid());
  CHECK(d.uid == ::geteuid());
  CHECK_FALSE(d.truncated);

  // Another process: its own pid, not ours.
  pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    const char m[] = "WATCHDOG=1";
    ::_exit(::send(c, m, sizeof m - 1, 0) == static_cast<ssize_t>(sizeof m - 1) ? 0 : 1);
  }
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);
  n = receive(s.get(), buf, sizeof buf, d);
  REQUIRE(n == 10);
  CHECK(d.pid == child);
  ::close(c);
}

TEST_CASE("T24 notify socket: an oversized datagram is cut at the buffer and says so, with its real size") {
  sys::UniqueFd s;
  std::string name;
  REQUIRE(sys::open_notify_socket(unique_name("big"), s, name) == 0);
  int c = connect_to(name);
  std::string big(10000, 'x');
  REQUIRE(::send(c, big.data(), big.size(), 0) == static_cast<ssize_t>(big.size()));
  char buf[4096];
  sys::Datagram d;
  ssize_t n = receive(s.get(), buf, sizeof buf, d);
  CHECK(n == 4096);
  CHECK(d.truncated);
  CHECK(d.size == 10000);
  // The next one is whole: nothing of the first is left over.
  REQUIRE(::send(c, "READY=1", 7, 0) == 7);
  n = receive(s.get(), buf, sizeof buf, d);
  CHECK(n == 7);
  CHECK_FALSE(d.truncated);
  ::close(c);
}

TEST_CASE("T5 notify socket: descriptors a sender passes are closed at once") {
  sys::UniqueFd s;
  std::string name;
  REQUIRE(sys::open_notify_socket(unique_name("fds"), s, name) == 0);
  int c = connect_to(name);
  int p[2];
  REQUIRE(::pipe(p) == 0);
  int fds_before = count_fds(::getpid());
  // sd_notify_barrier(3) style: BARRIER=1 with a pipe's write end.
  char payload[] = "BARRIER=1";
  iovec iov{payload, sizeof payload - 1};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  cmsghdr* cm = CMSG_FIRSTHDR(&msg);
  cm->cmsg_level = SOL_SOCKET;
  cm->cmsg_type = SCM_RIGHTS;
  cm->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(cm), &p[1], sizeof(int));
  REQUIRE(::sendmsg(c, &msg, 0) == 9);
  ::close(p[1]);  // now only the copy in flight (then preforkd's) holds the write end
  char buf[64];
  sys::Datagram d;
  ssize_t n = receive(s.get(), buf, sizeof buf, d);
  REQUIRE(n == 9);
  CHECK(d.fds_closed == 1);
  CHECK(count_fds(::getpid()) == fds_before - 1);  // p[1] is closed, nothing was added
  // The barrier is over: every write end is gone, the read end sees EOF.
  char byte;
  CHECK(::read(p[0], &byte, 1) == 0);
  ::close(p[0]);
  ::close(c);
}

TEST_CASE("notify socket: process_group_of reads a process's group from /proc") {
  CHECK(sys::process_group_of(::getpid()) == ::getpgrp());
  CHECK(sys::process_group_of(0) == 0);  // never "self"
  CHECK(sys::process_group_of(-1) == 0);
  pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    ::setpgid(0, 0);
    ::pause();
    ::_exit(0);
  }
  CHECK(wait_until([&] { return sys::process_group_of(child) == child; }, 5s));
  ::kill(child, SIGKILL);
  ::waitpid(child, nullptr, 0);
  CHECK(sys::process_group_of(child) == 0);  // gone
}
