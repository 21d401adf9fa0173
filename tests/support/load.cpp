// load.cpp — see load.hpp. One thread per client, each with non-blocking
// sockets and poll() against the request's deadline, so no read or write can
// outlive its deadline and a stop never waits much longer than one timeout.
#include "support/load.hpp"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <string_view>

namespace preforkd::test {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr size_t kMaxResponseHead = 16 * 1024;

enum class Kind { Ok, Refused, Reset, Failed };

struct Outcome {
  Kind kind = Kind::Ok;
  std::string what;           // why, when not ok
  bool server_close = false;  // http: the response said `Connection: close`
};

Outcome ok() { return {}; }
Outcome failed(std::string what) { return {Kind::Failed, std::move(what), false}; }

// ECONNREFUSED is a refusal, ECONNRESET/EPIPE a reset, anything else a failure.
Outcome from_errno(int err, const std::string& during) {
  std::string what = during + ": " + std::strerror(err);
  if (err == ECONNREFUSED) return {Kind::Refused, what, false};
  if (err == ECONNRESET || err == EPIPE) return {Kind::Reset, what, false};
  return failed(what);
}

// Bytes for a diagnostic: printable, escaped, at most 80 characters.
std::string quote(std::string_view s) {
  std::string out = "\"";
  for (unsigned char ch : s.substr(0, 80)) {
    if (ch == '\r') out += "\\r";
    else if (ch == '\n') out += "\\n";
    else if (ch == '"' || ch == '\\') out += {'\\', static_cast<char>(ch)};
    else if (ch < 0x20 || ch >= 0x7f) out += fmt::format("\\x{:02x}", ch);
    else out += static_cast<char>(ch);
  }
  return out + (s.size() > 80 ? "\"..." : "\"");
}

std::string wall_clock_now() {
  auto now = std::chrono::system_clock::now();
  std::time_t t = std::chrono::system_clock::to_time_t(now);
  std::tm tm{};
  ::localtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tm);
  auto ms = std::chrono::duration_cast<milliseconds>(now.time_since_epoch()).count() % 1000;
  return fmt::format("{}.{:03}", buf, ms);
}

constexpr milliseconds kStallSlack{1000};
constexpr int kMaxStalls = 3;

// A request's deadline, judged only while the client was running: a client
// that wakes up more than kStallSlack after it was itself not scheduled (the
// test machine stalled, and the server with it), so it cannot tell a slow
// server from its own absence. Then the deadline starts again (at most
// kMaxStalls times per request) and the stall is counted (Counts::stalls).
struct Deadline {
  Clock::time_point at;
  milliseconds timeout;
  int stalls = 0;

  Deadline(Clock::time_point start, milliseconds t) : at(start + t), timeout(t) {}
  // Has it passed? (Re-armed instead if the client overslept it.)
  bool passed() {
    auto now = Clock::now();
    if (now < at) return false;
    if (now - at > kStallSlack && stalls < kMaxStalls) {
      ++stalls;
      at = now + timeout;
      return false;
    }
    return true;
  }
};

// Waits for `events` until the deadline; the revents, or 0 once it passed.
short wait_fd(int fd, short events, Deadline& deadline) {
  for (;;) {
    auto left = std::chrono::ceil<milliseconds>(deadline.at - Clock::now()).count();
    if (left < 0) left = 0;
    pollfd p{fd, events, 0};
    int n = ::poll(&p, 1, static_cast<int>(left));
    if (n > 0) return p.revents;
    if (n == 0) {
      if (deadline.passed()) return 0;
      continue;
    }
    if (errno != EINTR) return POLLERR;  // the next syscall on fd says what
  }
}

bool iequals(std::string_view a, std::string_view lower) {
  if (a.size() != lower.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    char ch = a[i];
    if (ch >= 'A' && ch <= 'Z') ch = static_cast<char>(ch - 'A' + 'a');
    if (ch != lower[i]) return false;
  }
  return true;
}

bool has_token(std::string_view list, std::string_view lower) {
  while (!list.empty()) {
    size_t comma = list.find(',');
    std::string_view item = list.substr(0, comma);
    while (!item.empty() && (item.front() == ' ' || item.front() == '\t')) item.remove_prefix(1);
    while (!item.empty() && (item.back() == ' ' || item.back() == '\t')) item.remove_suffix(1);
    if (iequals(item, lower)) return true;
    if (comma == std::string_view::npos) break;
    list.remove_prefix(comma + 1);
  }
  return false;
}

struct Response {
  enum State { Incomplete, Complete, Bad } state = Incomplete;
  size_t size = 0;  // of the whole response, once complete
  bool close = false;
  std::string error;
};

// Frames and checks one response at the start of `b`: a 200 with a
// Content-Length (the only framing the test servers use) and, if given, `body`.
Response parse_response(std::string_view b, const std::optional<std::string>& body) {
  Response r;
  auto bad = [&](std::string why) {
    r.state = Response::Bad;
    r.error = std::move(why) + ": " + quote(b);
    return r;
  };
  const size_t k = std::min<size_t>(b.size(), 7);
  if (b.substr(0, k) != std::string_view("HTTP/1.", k)) return bad("not an HTTP/1.x response");
  size_t head_end = b.find("\r\n\r\n");
  if (head_end == std::string_view::npos) {
    if (b.size() > kMaxResponseHead) return bad("response head over 16 KiB");
    return r;
  }
  std::string_view head = b.substr(0, head_end);
  size_t eol = head.find("\r\n");
  std::string_view status = head.substr(0, eol);
  if (status.size() < 12 || status[8] != ' ') return bad("malformed status line");
  if (status.substr(9, 3) != "200") return bad("status " + std::string(status.substr(9)));
  const bool http10 = status[7] == '0';
  std::optional<uint64_t> length;
  bool close = false, keep_alive = false;
  for (size_t pos = eol == std::string_view::npos ? head.size() : eol + 2; pos < head.size();) {
    size_t end = head.find("\r\n", pos);
    if (end == std::string_view::npos) end = head.size();
    std::string_view line = head.substr(pos, end - pos);
    pos = end + 2;
    size_t colon = line.find(':');
    if (colon == std::string_view::npos) return bad("header line without a colon");
    std::string_view name = line.substr(0, colon), value = line.substr(colon + 1);
    while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
    while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.remove_suffix(1);
    if (iequals(name, "content-length")) {
      uint64_t n = 0;
      if (value.empty() || value.size() > 12) return bad("bad Content-Length");
      for (char ch : value) {
        if (ch < '0' || ch > '9') return bad("bad Content-Length");
        n = n * 10 + static_cast<uint64_t>(ch - '0');
      }
      if (length && *length != n) return bad("two different Content-Length");
      length = n;
    } else if (iequals(name, "transfer-encoding")) {
      return bad("Transfer-Encoding (not expected from the test servers)");
    } else if (iequals(name, "connection")) {
      close = close || has_token(value, "close");
      keep_alive = keep_alive || has_token(value, "keep-alive");
    }
  }
  if (!length) return bad("no Content-Length");
  const size_t total = head_end + 4 + *length;
  if (b.size() < total) return r;
  if (body && b.substr(head_end + 4, *length) != *body) return bad("unexpected body");
  r.state = Response::Complete;
  r.size = total;
  r.close = close || (http10 && !keep_alive);
  return r;
}

// One client's connection and the numbers that make its diagnostics useful.
struct Client {
  int id = 0;
  int fd = -1;
  uint64_t conns = 0;        // connections this client opened
  uint64_t on_conn = 0;      // requests written on the current connection
  uint16_t local_port = 0;
  uint64_t seq = 0;          // requests this client started
  std::string buf;           // bytes received and not yet consumed

  ~Client() { drop(); }
  void drop() {
    if (fd >= 0) ::close(fd);
    fd = -1;
    buf.clear();
  }
  std::string where() const {
    if (conns == 0 || local_port == 0) return fmt::format("client {}", id);
    return fmt::format("client {}, connection {} (local port {}), request {} on it", id, conns, local_port,
                       on_conn);
  }
};

Outcome open_connection(Client& c, uint16_t port, Deadline& deadline) {
  c.drop();
  c.local_port = 0;
  c.on_conn = 0;
  ++c.conns;
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return from_errno(errno, "socket");
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_port = htons(port);
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&sin), sizeof sin) != 0) {
    if (errno != EINPROGRESS) {
      int err = errno;
      ::close(fd);
      return from_errno(err, "connect");
    }
    if (wait_fd(fd, POLLOUT, deadline) == 0) {
      ::close(fd);
      return failed("connect: not established before the deadline");
    }
    int err = 0;
    socklen_t len = sizeof err;
    ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) {
      ::close(fd);
      return from_errno(err, "connect");
    }
  }
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  sockaddr_in local{};
  socklen_t len = sizeof local;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len) == 0) c.local_port = ntohs(local.sin_port);
  c.fd = fd;
  return ok();
}

Outcome send_all(const Client& c, std::string_view data, Deadline& deadline) {
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::send(c.fd, data.data() + off, data.size() - off, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      off += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (wait_fd(c.fd, POLLOUT, deadline) == 0)
        return failed(fmt::format("send: {} of {} bytes written before the deadline", off, data.size()));
      continue;
    }
    return from_errno(errno, fmt::format("send (after {} of {} bytes)", off, data.size()));
  }
  return ok();
}

struct ReadResult {
  enum { Data, Eof, Timeout, Error } state;
  int err = 0;
};

// Appends what arrives to c.buf, waiting until `deadline` for something.
ReadResult read_some(Client& c, Deadline& deadline) {
  char tmp[16 * 1024];
  for (;;) {
    ssize_t n = ::recv(c.fd, tmp, sizeof tmp, MSG_DONTWAIT);
    if (n > 0) {
      c.buf.append(tmp, static_cast<size_t>(n));
      return {ReadResult::Data};
    }
    if (n == 0) return {ReadResult::Eof};
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) return {ReadResult::Error, errno};
    if (wait_fd(c.fd, POLLIN, deadline) == 0) return {ReadResult::Timeout};
  }
}

// Keep-alive, before writing the next request: has the server closed (or
// reset, or written to) the idle connection? Ok with `server_close` set if it
// closed cleanly, which is not a failure: no request was in flight.
Outcome check_idle(Client& c) {
  pollfd p{c.fd, POLLIN | POLLRDHUP, 0};
  if (::poll(&p, 1, 0) <= 0) return ok();
  char ch;
  ssize_t n = ::recv(c.fd, &ch, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n == 0) return {Kind::Ok, "", true};
  if (n > 0) {
    char tmp[256];
    ssize_t m = ::recv(c.fd, tmp, sizeof tmp, MSG_DONTWAIT);
    return failed("unsolicited bytes on an idle keep-alive connection: " +
                  quote(std::string_view(tmp, static_cast<size_t>(std::max<ssize_t>(m, 0)))));
  }
  if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return ok();
  return from_errno(errno, "idle keep-alive connection, before the next request was written");
}

// Writes `request` on c's connection and reads one response to it.
Outcome http_exchange(Client& c, const std::string& request, const std::optional<std::string>& body,
                      Deadline& deadline) {
  ++c.on_conn;
  if (Outcome o = send_all(c, request, deadline); o.kind != Kind::Ok) return o;
  for (;;) {
    Response r = parse_response(c.buf, body);
    if (r.state == Response::Bad) return failed(r.error);
    if (r.state == Response::Complete) {
      if (c.buf.size() > r.size)
        return failed(fmt::format("{} bytes after the response: {}", c.buf.size() - r.size,
                                  quote(std::string_view(c.buf).substr(r.size))));
      c.buf.clear();
      return {Kind::Ok, "", r.close};
    }
    ReadResult rr = read_some(c, deadline);
    switch (rr.state) {
      case ReadResult::Data:
        continue;
      case ReadResult::Eof:
        return failed(fmt::format("connection closed (FIN) after the request was written, {} byte(s) of the "
                                  "response received{}",
                                  c.buf.size(), c.buf.empty() ? "" : ": " + quote(c.buf)));
      case ReadResult::Timeout:
        return failed(fmt::format("no complete response within {} ms, {} byte(s) received{}", deadline.timeout.count(),
                                  c.buf.size(), c.buf.empty() ? "" : ": " + quote(c.buf)));
      case ReadResult::Error:
        return from_errno(rr.err, fmt::format("recv (after the request was written, {} byte(s) of the "
                                              "response received)",
                                              c.buf.size()));
    }
  }
}

Outcome echo_exchange(Client& c, const std::string& line, Deadline& deadline) {
  ++c.on_conn;
  if (Outcome o = send_all(c, line, deadline); o.kind != Kind::Ok) return o;
  while (c.buf.size() < line.size()) {
    ReadResult rr = read_some(c, deadline);
    switch (rr.state) {
      case ReadResult::Data:
        continue;
      case ReadResult::Eof:
        return failed(fmt::format("connection closed (FIN) after {} of {} echoed bytes", c.buf.size(),
                                  line.size()));
      case ReadResult::Timeout:
        return failed(fmt::format("{} of {} echoed bytes within {} ms", c.buf.size(), line.size(),
                                  deadline.timeout.count()));
      case ReadResult::Error:
        return from_errno(rr.err, fmt::format("recv (after {} of {} echoed bytes)", c.buf.size(), line.size()));
    }
  }
  if (c.buf != line) return failed("echoed " + quote(c.buf) + ", sent " + quote(line));
  return ok();
}

}  // namespace

const char* Load::mode_name(Mode mode) {
  switch (mode) {
    case Mode::Http:
      return "http keep-alive";
    case Mode::HttpShort:
      return "http one-request-per-connection";
    case Mode::Echo:
      return "echo one-line-per-connection";
  }
  return "?";
}

Load::Load(uint16_t port, Mode mode, int clients, Options options)
    : port_(port), mode_(mode), clients_(clients), options_(std::move(options)) {}

Load::~Load() { stop(); }

void Load::start() {
  if (!threads_.empty()) return;
  stopping_ = false;
  started_ = Clock::now();
  for (int i = 0; i < clients_; ++i) threads_.emplace_back([this, i] { run_client(i); });
}

void Load::stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);  // so that rest() cannot miss the wake-up
    stopping_ = true;
  }
  cv_.notify_all();
  for (auto& t : threads_) t.join();
  if (!threads_.empty()) stopped_ = Clock::now();
  threads_.clear();
}

void Load::rest(milliseconds d) {
  if (d.count() <= 0) return;
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_for(lock, d, [this] { return stopping_.load(); });
}

void Load::count_ok(Clock::duration latency) {
  int64_t us = std::chrono::duration_cast<std::chrono::microseconds>(latency).count();
  int64_t seen = max_latency_us_.load();
  while (us > seen && !max_latency_us_.compare_exchange_weak(seen, us)) {
  }
  ++ok_;
}

void Load::count_error(std::atomic<uint64_t>& category, std::string what) {
  std::lock_guard<std::mutex> lock(mu_);
  ++category;
  if (errors_.size() < options_.keep_errors)
    errors_.push_back({std::chrono::duration_cast<milliseconds>(Clock::now() - started_), wall_clock_now(),
                       std::move(what)});
}

void Load::run_client(int id) {
  Client c;
  c.id = id;
  const std::string host = fmt::format("Host: 127.0.0.1:{}\r\n", port_);
  while (!stopping_) {
    const auto begin = Clock::now();
    Deadline deadline(begin, options_.timeout);
    ++c.seq;
    Outcome o;
    std::string during;  // what the client was doing, for the error text
    if (mode_ == Mode::Http && c.fd >= 0) {
      o = check_idle(c);
      if (o.kind == Kind::Ok && o.server_close) {
        ++closed_;  // closed while idle: reconnect, nothing was in flight
        c.drop();
      } else if (o.kind != Kind::Ok) {
        during = c.where();
      }
    }
    if (o.kind == Kind::Ok && c.fd < 0) {
      o = open_connection(c, port_, deadline);
      if (o.kind == Kind::Ok) ++connections_;
      else during = fmt::format("client {}, connecting (its connection {})", id, c.conns);
    }
    if (o.kind == Kind::Ok) {
      switch (mode_) {
        case Mode::Http:
          o = http_exchange(c, fmt::format("GET /load/{}/{} HTTP/1.1\r\n{}\r\n", id, c.seq, host),
                            options_.http_body, deadline);
          break;
        case Mode::HttpShort:
          o = http_exchange(c, fmt::format("GET /load/{}/{} HTTP/1.1\r\n{}Connection: close\r\n\r\n", id, c.seq, host),
                            options_.http_body, deadline);
          if (o.kind == Kind::Ok && !o.server_close)
            o = failed("the response to a `Connection: close` request did not say `Connection: close`");
          break;
        case Mode::Echo:
          o = echo_exchange(c, fmt::format("load client {} line {}\n", id, c.seq), deadline);
          break;
      }
      if (o.kind != Kind::Ok) during = c.where();
    }
    if (deadline.stalls > 0) {
      stalls_ += static_cast<uint64_t>(deadline.stalls);
      if (o.kind != Kind::Ok)
        o.what += fmt::format(" (this client overslept its deadline by over {} ms {} time(s), which restarted it)",
                              kStallSlack.count(), deadline.stalls);
    }
    switch (o.kind) {
      case Kind::Ok:
        count_ok(Clock::now() - begin);
        if (mode_ != Mode::Http) {
          c.drop();  // one request per connection
        } else if (o.server_close) {
          ++closed_;  // honoured: the next request goes on a new connection
          c.drop();
        }
        rest(options_.pause);
        continue;
      case Kind::Refused:
        count_error(refused_, during + ": refused: " + o.what);
        break;
      case Kind::Reset:
        count_error(reset_, during + ": reset: " + o.what);
        break;
      case Kind::Failed:
        count_error(failed_, during + ": failed: " + o.what);
        break;
    }
    c.drop();  // a connection that failed is never reused
    rest(options_.after_error);
  }
}

Load::Counts Load::counts() const {
  Counts n;
  std::lock_guard<std::mutex> lock(mu_);  // errors and their counters move together
  n.ok = ok_;
  n.refused = refused_;
  n.reset = reset_;
  n.failed = failed_;
  n.connections = connections_;
  n.closed = closed_;
  n.stalls = stalls_;
  n.max_latency = std::chrono::duration_cast<milliseconds>(std::chrono::microseconds(max_latency_us_.load()));
  n.errors = errors_;
  return n;
}

bool Load::wait_ok(uint64_t n, milliseconds timeout) const {
  const uint64_t target = ok_.load() + n;
  const auto deadline = Clock::now() + timeout;
  while (ok_.load() < target) {
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(milliseconds(2));
  }
  return true;
}

std::string Load::Counts::describe() const {
  std::string out = fmt::format(
      "ok {}, refused {}, reset {}, failed {} (connections {}, clean server closes {}, slowest ok {} ms{})", ok,
      refused, reset, failed, connections, closed, max_latency.count(),
      stalls == 0 ? "" : fmt::format(", client stalls {}", stalls));
  if (!errors.empty()) {
    out += fmt::format("; first {} of {} error(s):", errors.size(), errors_total());
    for (const Error& e : errors)
      out += fmt::format("\n  +{}.{:03}s ({}) {}", e.since_start.count() / 1000, e.since_start.count() % 1000,
                         e.wall, e.what);
  }
  return out;
}

std::string Load::describe() const {
  auto end = threads_.empty() && stopped_ != Clock::time_point{} ? stopped_ : Clock::now();
  auto ms = started_ == Clock::time_point{} ? 0 : std::chrono::duration_cast<milliseconds>(end - started_).count();
  return fmt::format("{} x{} on 127.0.0.1:{}, {}.{:03} s: {}", mode_name(mode_), clients_, port_, ms / 1000,
                     ms % 1000, counts().describe());
}

}  // namespace preforkd::test
