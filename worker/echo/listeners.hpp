// listeners.hpp — where preforkd-echo's listening sockets come from.
//
// Owns: adopting the sockets inherited at fds 3.. (LISTEN_FDS, from preforkd or
// systemd) after checking each really is a listening stream socket, and binding
// `--listen` addresses when run standalone.
// Must never: change a file-status flag (O_NONBLOCK...) of an inherited socket:
// its open file description is shared with every other worker (T19). A socket
// we bind ourselves is left blocking too, so both paths behave the same.
#pragma once

#include <stdexcept>
#include <string>
#include <vector>

namespace preforkd::echo {

struct Listener {
  int fd = -1;
  bool tcp = false;        // AF_INET/AF_INET6: accepted sockets get TCP_NODELAY
  std::string name;        // for messages: LISTEN_FDNAMES entry or the address
  std::string unix_path;   // a unix socket path we bound ourselves, unlinked at exit
};

// A `--listen` value or the command line itself is wrong: exit 2.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Returns the n sockets at fds 3..3+n-1, named from LISTEN_FDNAMES; throws
// std::runtime_error naming the fd if one is not a listening stream socket.
std::vector<Listener> adopt_inherited(int n);

// Binds and listens on `spec` ("host:port", "[v6]:port", "unix:/path", "unix:@abstract")
// with SO_REUSEADDR and `backlog`; throws UsageError for a malformed spec and
// std::runtime_error ("cannot bind ADDR: reason") when the system refuses.
Listener bind_listener(const std::string& spec, int backlog);

// The bound address of a socket as "127.0.0.1:7000", "[::1]:7000" or "unix:/path".
std::string local_address(int fd);

// Closes the listeners and unlinks the unix socket paths we created.
void close_listeners(std::vector<Listener>& listeners);

}  // namespace preforkd::echo
