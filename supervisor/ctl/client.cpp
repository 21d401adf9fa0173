#include "ctl/client.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>

#include <cerrno>
#include <cstring>

#include "sys/error.hpp"
#include "sys/unique_fd.hpp"

namespace preforkd::ctl {

namespace {

using Clock = std::chrono::steady_clock;

[[noreturn]] void unreachable(const std::string& path, int err) {
  throw UnreachableError("cannot reach preforkd at " + path + ": " + std::strerror(err));
}

sys::UniqueFd connect_to(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) unreachable(path, ENAMETOOLONG);
  std::memcpy(addr.sun_path, path.data(), path.size());

  sys::UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) unreachable(path, errno);
  // For AF_UNIX, SO_SNDTIMEO also bounds connect() waiting on a full backlog
  // (unix_stream_connect uses the send timeout) and the write of the request.
  timeval tv{};
  tv.tv_sec = kConnectTimeout.count();
  ::setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  // No signal handler is installed, so connect() cannot fail with EINTR
  // (which, unlike read(), must not simply be retried: connect(2)).
  if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0)
    unreachable(path, errno == EAGAIN ? ETIMEDOUT : errno);
  return fd;
}

// Writes all of `data`, or stops quietly when the peer has gone (EPIPE,
// ECONNRESET): it may have replied before closing, and read_line() says.
void send_all(int fd, const std::string& path, const std::string& data) {
  std::size_t done = 0;
  while (done < data.size()) {
    ssize_t n = sys::retry_on_eintr(
        [&] { return ::send(fd, data.data() + done, data.size() - done, MSG_NOSIGNAL); });
    if (n < 0) {
      if (errno == EPIPE || errno == ECONNRESET) return;
      unreachable(path, errno == EAGAIN ? ETIMEDOUT : errno);
    }
    done += static_cast<std::size_t>(n);
  }
}

std::string read_line(int fd, const std::string& path,
                      std::optional<std::chrono::milliseconds> timeout) {
  const auto deadline = timeout ? Clock::now() + *timeout : Clock::time_point::max();
  std::string buf;
  char chunk[65536];
  for (;;) {
    int wait_ms = -1;
    if (timeout) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (left.count() <= 0)
        throw UnreachableError("no reply from preforkd at " + path + " within " +
                               std::to_string(timeout->count() / 1000) + "s");
      wait_ms = static_cast<int>(std::min<long long>(left.count() + 1, 1 << 30));
    }
    pollfd p{fd, POLLIN, 0};
    int r = ::poll(&p, 1, wait_ms);
    if (r < 0) {
      if (errno == EINTR) continue;
      unreachable(path, errno);
    }
    if (r == 0) continue;  // the deadline check above reports it
    ssize_t n = sys::retry_on_eintr([&] { return ::recv(fd, chunk, sizeof chunk, 0); });
    if (n < 0 && errno != ECONNRESET) unreachable(path, errno);
    if (n <= 0) {  // closed (or reset): a final line without '\n' still counts
      if (buf.empty())
        throw UnreachableError("preforkd at " + path + " closed the connection without a reply");
      return buf;
    }
    const std::size_t old = buf.size();
    buf.append(chunk, static_cast<std::size_t>(n));
    auto nl = buf.find('\n', old);
    if (nl != std::string::npos) {
      buf.resize(nl);
      return buf;
    }
    if (buf.size() > kMaxReply)
      throw UnreachableError("reply from preforkd at " + path + " is longer than 16 MiB");
  }
}

}  // namespace

Reply parse_reply(const std::string& path, std::string line) {
  if (!line.empty() && line.back() == '\r') line.pop_back();
  Reply reply;
  try {
    reply.body = nlohmann::json::parse(line);
  } catch (const nlohmann::json::exception& e) {
    throw UnreachableError("bad reply from preforkd at " + path + ": " + e.what());
  }
  if (!reply.body.is_object() || !reply.body.contains("ok") || !reply.body["ok"].is_boolean())
    throw UnreachableError("bad reply from preforkd at " + path +
                           ": not an object with a boolean \"ok\"");
  reply.line = std::move(line);
  return reply;
}

Reply exchange(const std::string& path, const nlohmann::json& request,
               std::optional<std::chrono::milliseconds> timeout) {
  sys::UniqueFd fd = connect_to(path);
  // No shutdown(SHUT_WR) after the request: a server may take EOF for a
  // client that gave up and abandon the reply.
  const std::string line =
      request.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  send_all(fd.get(), path, line);
  return parse_reply(path, read_line(fd.get(), path, timeout));
}

}  // namespace preforkd::ctl
