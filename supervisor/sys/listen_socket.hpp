// listen_socket.hpp — binding the listening sockets the workers inherit.
//
// preforkd binds every socket before any worker starts, so a busy port is a
// start-up error (exit 1) and not a crash loop. Sockets stay in BLOCKING mode
// (as systemd socket activation hands them out): O_NONBLOCK is a property of
// the one open file description that every worker shares, so preforkd sets it
// once here and never again (T19). Workers that want non-blocking accept use
// poll + accept4 or their own per-connection flags.
#pragma once

#include <cstdint>
#include <string>

#include "sys/unique_fd.hpp"

namespace preforkd::sys {

struct ListenSpec {
  enum class Family { Inet, Inet6, Unix };
  Family family = Family::Inet;
  std::string host;  // numeric
  uint16_t port = 0;
  std::string path;  // Unix
  int backlog = 1024;
  bool reuseport = false;
  std::string text;  // for messages: "127.0.0.1:7000"
};

// socket(SOCK_CLOEXEC) + SO_REUSEADDR (+ SO_REUSEPORT) + bind + listen.
// A stale Unix socket file (nobody accepting) is replaced; a live one is not.
// Throws SysError "cannot bind 127.0.0.1:7000: Address already in use".
UniqueFd bind_listener(const ListenSpec& spec);

// The bound address as "127.0.0.1:41234", "[::1]:7000" or "unix:/path".
std::string local_address(int fd);

}  // namespace preforkd::sys
