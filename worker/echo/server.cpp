// server.cpp — see server.hpp for the design; this file is its mechanics.
#include "server.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <preforkd/worker.h>
#include <pthread.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>

#include "http.hpp"

namespace preforkd::echo {
namespace {

using Clock = std::chrono::steady_clock;

// steady_clock in nanoseconds (never 0 in practice: the clock counts from boot).
std::uint64_t monotonic_ns() {
  return static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count());
}

constexpr std::size_t kEchoBufferSize = 64 * 1024;     // per connection; full → stop reading
constexpr std::size_t kHttpReplyBufferSize = 8 * 1024; // ~90 pipelined replies
constexpr std::size_t kCloseDiscardMax = 64 * 1024;    // unread bytes swallowed before close()
constexpr int kMaxEvents = 256;
constexpr std::uint64_t kStatsIntervalNs = 100 * 1000 * 1000;  // counters at most every 100 ms

// One line to stderr in a single write(), so threads never interleave halves.
PREFORKD_PRINTF_LIKE(1, 2) void log_line(const char* fmt, ...) {
  char buf[512];
  int n = std::snprintf(buf, sizeof buf, "preforkd-echo[%d]: ", static_cast<int>(::getpid()));
  va_list ap;
  va_start(ap, fmt);
  int m = std::vsnprintf(buf + n, sizeof buf - static_cast<std::size_t>(n) - 1, fmt, ap);
  va_end(ap);
  std::size_t len = std::min(static_cast<std::size_t>(n) + static_cast<std::size_t>(std::max(m, 0)),
                             sizeof buf - 2);
  buf[len++] = '\n';
  ssize_t ignored = ::write(STDERR_FILENO, buf, len);
  (void)ignored;
}

// The signal that interrupts a blocked accept4(). Its handler does nothing: its
// only job is to make accept4() return EINTR (installed without SA_RESTART).
int wake_signal() { return SIGRTMIN; }
extern "C" void on_wake_signal(int) {}

std::string errno_text(int err) { return std::strerror(err); }

// A fixed-capacity byte queue: data lives in [start_, end_) of one allocation
// made when the connection is accepted, never per request.
class Buffer {
 public:
  explicit Buffer(std::size_t capacity)
      : data_(capacity > 0 ? new char[capacity] : nullptr), capacity_(capacity) {}

  const char* data() const { return data_.get() + start_; }
  std::size_t size() const { return end_ - start_; }
  bool empty() const { return start_ == end_; }
  std::size_t free_space() const { return capacity_ - size(); }

  // Room at the tail for a read; moves the data to the front first if the tail is full.
  char* tail() {
    if (end_ == capacity_) compact();
    return data_.get() + end_;
  }
  std::size_t tail_space() const { return capacity_ - end_; }
  void produce(std::size_t n) { end_ += n; }

  void consume(std::size_t n) {
    start_ += n;
    if (start_ == end_) start_ = end_ = 0;
  }

  // Appends s; the caller checked free_space() >= s.size().
  void append(std::string_view s) {
    if (tail_space() < s.size()) compact();
    std::memcpy(data_.get() + end_, s.data(), s.size());
    end_ += s.size();
  }

  void compact() {
    if (start_ == 0) return;
    std::memmove(data_.get(), data_.get() + start_, size());
    end_ -= start_;
    start_ = 0;
  }

 private:
  std::unique_ptr<char[]> data_;
  std::size_t capacity_;
  std::size_t start_ = 0;
  std::size_t end_ = 0;
};

struct Conn {
  Conn(int socket_fd, Mode mode)
      : fd(socket_fd),
        in(mode == Mode::Http ? http::kMaxHeaderBlock : 0),
        out(mode == Mode::Http ? kHttpReplyBufferSize : kEchoBufferSize) {}

  int fd;                     // -1 once closed (its events later in the same batch are skipped)
  std::uint32_t interest = 0; // events registered with epoll
  bool read_eof = false;      // the peer sent FIN
  bool close_after_flush = false;
  bool draining = false;      // no new work: echo stops reading, http answers with close
  bool served = false;        // has sent us something: a connection that has not may
                              // still be carrying its first request when a drain starts
  std::uint64_t body_left = 0; // http: request body bytes still to discard
  Buffer in;   // http: request bytes not yet parsed (echo: unused)
  Buffer out;  // echo: bytes read, not yet echoed; http: replies not yet sent
  Conn* prev = nullptr;
  Conn* next = nullptr;
};

// What one I/O thread counts (server.hpp lists the meanings). Only that thread
// writes the cells, with relaxed load+store (no locked instruction); the main
// thread reads them when it reports. The alignment gives the cells cache lines of
// their own: the members other threads write (the queue's mutex, ping_) never
// share a line with them, so counting causes no cache-line bouncing.
struct alignas(PREFORKD_CACHE_LINE) IoStats {
  std::uint64_t requests = 0;
  std::uint64_t connections = 0;
  std::uint64_t bytes_in = 0;
  std::uint64_t bytes_out = 0;
  std::int64_t active_connections = 0;  // gauge: connections this thread has open
};

// One epoll loop and the connections it owns. post(), drain(), ping() and stats()
// are the only members other threads call.
class IoThread {
 public:
  IoThread(Mode mode, bool stats, std::chrono::milliseconds delay)
      : mode_(mode), max_reply_(http::max_reply_size()), stats_on_(stats), delay_(delay) {
    epfd_ = ::epoll_create1(EPOLL_CLOEXEC);
    evfd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (epfd_ < 0 || evfd_ < 0) {
      int err = errno;
      close_fds();
      throw std::runtime_error("cannot create the I/O loop: " + errno_text(err));
    }
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.ptr = nullptr;  // nullptr tags the eventfd; connections are never null
    if (::epoll_ctl(epfd_, EPOLL_CTL_ADD, evfd_, &ev) < 0) {
      int err = errno;
      close_fds();
      throw std::runtime_error("cannot create the I/O loop: " + errno_text(err));
    }
  }
  ~IoThread() { close_fds(); }
  IoThread(const IoThread&) = delete;
  IoThread& operator=(const IoThread&) = delete;

  void start() {
    thread_ = std::thread([this] { run(); });
    ::pthread_setname_np(thread_.native_handle(), "echo-io");
  }
  void join() {
    if (thread_.joinable()) thread_.join();
  }

  // Any thread: hands over an accepted, non-blocking socket.
  void post(int fd) {
    bool was_empty;
    {
      std::lock_guard<std::mutex> lock(mu_);
      was_empty = incoming_.empty();
      incoming_.push_back(fd);
    }
    // The loop empties the whole queue per wake-up, so one write per burst is enough.
    if (was_empty) wake();
  }

  // Main thread, after every acceptor has stopped: finish, then exit by `deadline`.
  void drain(Clock::time_point deadline) {
    deadline_ = deadline;
    drain_requested_.store(true, std::memory_order_release);
    wake();
  }

  // Main thread: the loop answers by copying ping into pong when it next wakes.
  void ping(std::uint64_t seq) {
    ping_.store(seq, std::memory_order_relaxed);
    wake();
  }
  std::uint64_t pong() const { return pong_.load(std::memory_order_relaxed); }

  // Any thread: the cells, to be read with preforkd_counter_load/preforkd_gauge_load.
  const IoStats& stats() const { return stats_; }
  // Any thread: nanoseconds this loop has spent serving (not waiting in
  // epoll_wait), the period running now included. Approximate (two relaxed
  // loads), which is all a busy fraction needs.
  std::uint64_t busy_ns(std::uint64_t now_ns) const {
    std::uint64_t since = serving_since_.load(std::memory_order_relaxed);
    std::uint64_t done = busy_ns_.load(std::memory_order_relaxed);
    return done + (since != 0 && now_ns > since ? now_ns - since : 0);
  }

 private:
  // The hot path's whole telemetry cost: a predictable branch and, with stats on,
  // an add to a cell in this thread's own cache line.
  void count(std::uint64_t IoStats::*cell, std::uint64_t n) {
    if (stats_on_) preforkd_counter_add_owned(&(stats_.*cell), n);
  }
  void count_active() {
    if (stats_on_) preforkd_gauge_store(&stats_.active_connections, static_cast<std::int64_t>(count_));
  }

  void close_fds() {
    if (evfd_ >= 0) ::close(evfd_);
    if (epfd_ >= 0) ::close(epfd_);
    evfd_ = epfd_ = -1;
  }

  void wake() {
    std::uint64_t one = 1;
    while (::write(evfd_, &one, sizeof one) < 0 && errno == EINTR) {
    }
  }

  void run() {
    epoll_event events[kMaxEvents];
    for (;;) {
      int timeout = -1;
      if (draining_) {
        if (count_ == 0) break;
        auto now = Clock::now();
        if (now >= deadline_) {
          log_line("grace period over, closing %zu connection(s)", count_);
          break;
        }
        auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline_ - now).count();
        timeout = static_cast<int>(std::min<decltype(left)>(left, 60000));
      }
      int n = ::epoll_wait(epfd_, events, kMaxEvents, timeout);
      if (n < 0) {
        if (errno == EINTR) continue;  // T16: SIGSTOP/SIGCONT interrupt epoll_wait too
        log_line("epoll_wait: %s", std::strerror(errno));
        std::abort();  // a broken invariant (EBADF/EINVAL on our own epoll fd)
      }
      // Busy time: two vDSO clock reads and relaxed stores per wake-up, no
      // system call; the main thread turns it into BUSY= at its stats report.
      std::uint64_t t0 = stats_on_ ? monotonic_ns() : 0;
      if (stats_on_) serving_since_.store(t0, std::memory_order_relaxed);
      for (int i = 0; i < n; ++i) {
        auto* c = static_cast<Conn*>(events[i].data.ptr);
        if (c == nullptr)
          on_wake();
        else
          on_io(c, events[i].events);
      }
      free_closed();
      if (stats_on_) {
        busy_ns_.store(busy_ns_.load(std::memory_order_relaxed) + (monotonic_ns() - t0), std::memory_order_relaxed);
        serving_since_.store(0, std::memory_order_relaxed);
      }
    }
    for (Conn* c = head_; c != nullptr;) {
      Conn* next = c->next;
      close_conn(c, false);
      c = next;
    }
    free_closed();
  }

  void on_wake() {
    std::uint64_t count;
    ssize_t ignored = ::read(evfd_, &count, sizeof count);  // resets it; EAGAIN is fine
    (void)ignored;
    pong_.store(ping_.load(std::memory_order_relaxed), std::memory_order_relaxed);
    // Read the drain flag before taking the queue: every fd an acceptor posted
    // happened before the flag was set, so this swap is guaranteed to see them.
    bool drain_now = !draining_ && drain_requested_.load(std::memory_order_acquire);
    if (drain_now) draining_ = true;
    {
      std::lock_guard<std::mutex> lock(mu_);
      batch_.swap(incoming_);  // both keep their capacity: no allocation per wake-up
    }
    for (int fd : batch_) adopt(fd);
    batch_.clear();
    if (drain_now) {
      for (Conn* c = head_; c != nullptr;) {
        Conn* next = c->next;  // c may be closed (unlinked) by its own on_io
        c->draining = true;
        on_io(c, 0);
        c = next;
      }
    }
  }

  void adopt(int fd) {
    auto* c = new Conn(fd, mode_);
    c->draining = draining_;
    c->next = head_;
    if (head_ != nullptr) head_->prev = c;
    head_ = c;
    ++count_;
    count(&IoStats::connections, 1);
    count_active();
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.ptr = c;
    if (::epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev) < 0) {
      log_line("epoll_ctl: %s", std::strerror(errno));
      close_conn(c, false);
      return;
    }
    c->interest = EPOLLIN;
    // Optimistic first read: clients usually send at once, which saves a round
    // through epoll; during a drain it also answers a request that was already sent.
    on_io(c, EPOLLIN);
  }

  void on_io(Conn* c, std::uint32_t events) {
    if (c->fd < 0) return;
    // ERR/HUP on a stream socket: reset or fully closed, nothing can be delivered.
    if (events & (EPOLLERR | EPOLLHUP)) {
      close_conn(c, false);
      return;
    }
    if (mode_ == Mode::Echo)
      echo_io(c, events);
    else
      http_io(c, events);
  }

  // Reads once per readiness event (level-triggered: epoll reports again if more
  // is waiting), which spares the EAGAIN read a drain-until-EAGAIN loop costs.
  // Returns false if the connection was closed.
  bool read_into(Conn* c, Buffer& b) {
    char* tail = b.tail();
    if (b.tail_space() == 0) return true;
    ssize_t n = ::recv(c->fd, tail, b.tail_space(), 0);
    if (n > 0) {
      b.produce(static_cast<std::size_t>(n));
      c->served = true;
      count(&IoStats::bytes_in, static_cast<std::uint64_t>(n));
    } else if (n == 0) {
      c->read_eof = true;
    } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
      close_conn(c, false);
      return false;
    }
    return true;
  }

  // Sends what is buffered; returns false if the connection was closed.
  bool flush(Conn* c) {
    Buffer& b = c->out;
    while (!b.empty()) {
      ssize_t n = ::send(c->fd, b.data(), b.size(), MSG_NOSIGNAL);  // T13: no SIGPIPE
      if (n >= 0) {
        count(&IoStats::bytes_out, static_cast<std::uint64_t>(n));
        bool partial = static_cast<std::size_t>(n) < b.size();
        b.consume(static_cast<std::size_t>(n));
        if (partial) break;  // socket buffer full: EPOLLOUT will say when to go on
        continue;
      }
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      close_conn(c, false);
      return false;
    }
    return true;
  }

  // Draining, echo mode: what was read is echoed, then the connection closes. A
  // connection accepted just before the drain that has sent nothing yet is given
  // until the grace deadline to send its first bytes, so that a client whose
  // connect raced the drain is still served rather than cut off.
  void echo_io(Conn* c, std::uint32_t events) {
    const bool may_read = !c->read_eof && (!c->draining || !c->served);
    if ((events & EPOLLIN) && may_read && c->out.free_space() > 0 && !read_into(c, c->out)) return;
    if (!flush(c)) return;
    if (c->out.empty() && (c->read_eof || (c->draining && c->served))) {
      count(&IoStats::requests, 1);  // echo: a connection served to completion
      close_conn(c, true);
      return;
    }
    // Backpressure: with a full buffer (the peer does not read) we stop reading.
    set_interest(c, !c->read_eof && (!c->draining || !c->served) && c->out.free_space() > 0,
                 !c->out.empty());
  }

  bool http_can_read(const Conn* c) const {
    return !c->read_eof && !c->close_after_flush && c->in.free_space() > 0 &&
           c->out.free_space() >= max_reply_;  // no room for replies: stop reading
  }

  void http_io(Conn* c, std::uint32_t events) {
    if ((events & EPOLLIN) && http_can_read(c) && !read_into(c, c->in)) return;
    // Pipelined requests already read can outnumber the replies that fit in `out`:
    // when a flush empties it, answer the next ones now, since no EPOLLIN will ever
    // come for bytes that have already left the socket. Each round answers at least
    // one request, so this ends.
    bool more;
    do {
      more = answer_requests(c);
      if (!flush(c)) return;
    } while (more && c->out.empty());
    if (c->out.empty()) {
      // Peer gone (a partial request can never complete), or last reply sent: done.
      // Draining, an idle keep-alive connection is NOT closed: its next request
      // may already be on the wire, and closing would reset it. It is answered
      // with `Connection: close` instead (close_after_flush), or cut off at the
      // grace deadline (preforkd-worker(7): the graceful-stop contract).
      if (c->close_after_flush || c->read_eof) {
        close_conn(c, true);
        return;
      }
    }
    set_interest(c, http_can_read(c), !c->out.empty());
  }

  // Answers every complete request in `in` (pipelining) while replies fit; returns
  // true if it stopped only for lack of room in `out` (more may be waiting in `in`).
  bool answer_requests(Conn* c) {
    Buffer& in = c->in;
    bool out_full = false;
    while (!c->close_after_flush) {
      if (c->body_left > 0) {
        auto skip = static_cast<std::size_t>(std::min<std::uint64_t>(c->body_left, in.size()));
        in.consume(skip);
        c->body_left -= skip;
        if (c->body_left > 0) break;
      }
      if (in.empty()) break;
      if (c->out.free_space() < max_reply_) {
        out_full = true;
        break;
      }
      http::Request req;
      http::ParseStatus status = http::parse_request(in.data(), in.size(), req);
      if (status == http::ParseStatus::Incomplete) break;
      if (status == http::ParseStatus::Complete) {
        const bool keep_alive = req.keep_alive && !c->draining;
        c->out.append(http::ok_reply(req, keep_alive));
        in.consume(req.head_len);
        c->body_left = req.content_length;
        c->close_after_flush = !keep_alive;
      } else {
        c->out.append(http::error_reply(status));
        c->close_after_flush = true;
      }
      count(&IoStats::requests, 1);
      if (delay_.count() > 0) std::this_thread::sleep_for(delay_);  // --delay-ms: a slow request
    }
    // Keep the whole capacity available to the next head (the 16 KiB bound).
    in.compact();
    return out_full;
  }

  void set_interest(Conn* c, bool want_in, bool want_out) {
    std::uint32_t want = (want_in ? EPOLLIN : 0u) | (want_out ? EPOLLOUT : 0u);
    if (want == c->interest) return;
    epoll_event ev{};
    ev.events = want;
    ev.data.ptr = c;
    if (::epoll_ctl(epfd_, EPOLL_CTL_MOD, c->fd, &ev) < 0) {
      log_line("epoll_ctl: %s", std::strerror(errno));
      close_conn(c, false);
      return;
    }
    c->interest = want;
  }

  // graceful: first swallow what the peer already sent, so close() sends FIN and
  // not RST, which could destroy our last reply still in flight (RFC 9112 9.6).
  void close_conn(Conn* c, bool graceful) {
    if (graceful) {
      char scratch[4096];
      for (std::size_t total = 0; total < kCloseDiscardMax;) {
        ssize_t n = ::recv(c->fd, scratch, sizeof scratch, 0);
        if (n <= 0) break;
        total += static_cast<std::size_t>(n);
        count(&IoStats::bytes_in, static_cast<std::uint64_t>(n));
      }
    }
    ::close(c->fd);  // also leaves the epoll set; T16: never retried
    c->fd = -1;
    if (c->prev != nullptr) c->prev->next = c->next;
    if (c->next != nullptr) c->next->prev = c->prev;
    if (head_ == c) head_ = c->next;
    --count_;
    count_active();
    closed_.push_back(c);  // freed after the batch: later events may still point at it
  }

  void free_closed() {
    for (Conn* c : closed_) delete c;
    closed_.clear();
  }

  const Mode mode_;
  const std::size_t max_reply_;
  const bool stats_on_;
  int epfd_ = -1;
  int evfd_ = -1;
  std::thread thread_;

  std::mutex mu_;
  std::vector<int> incoming_;  // guarded by mu_
  std::atomic<bool> drain_requested_{false};
  Clock::time_point deadline_{};  // written before drain_requested_ (release)
  std::atomic<std::uint64_t> ping_{0};
  std::atomic<std::uint64_t> pong_{0};

  IoStats stats_;  // written by the loop thread only
  std::chrono::milliseconds delay_{0};
  std::atomic<std::uint64_t> busy_ns_{0};         // written by the loop thread only
  std::atomic<std::uint64_t> serving_since_{0};   // monotonic ns; 0 while waiting in epoll_wait

  // Loop-thread only.
  std::vector<int> batch_;
  bool draining_ = false;
  Conn* head_ = nullptr;
  std::size_t count_ = 0;
  std::vector<Conn*> closed_;
};

// One thread blocked in accept4() on one listening socket.
class Acceptor {
 public:
  Acceptor(const Listener& listener, std::vector<std::unique_ptr<IoThread>>& io,
           std::atomic<bool>& stopping, std::atomic<bool>& failed)
      : listener_(listener), io_(io), stopping_(stopping), failed_(failed) {}

  void start() {
    thread_ = std::thread([this] { run(); });
    ::pthread_setname_np(thread_.native_handle(), "echo-accept");
  }

  // Called with the stop flag set. A signal sent just before the thread blocks
  // in accept4() would be lost, so it is re-sent until the thread is out.
  void stop() {
    if (!thread_.joinable()) return;
    while (!done_.load(std::memory_order_acquire)) {
      ::pthread_kill(thread_.native_handle(), wake_signal());
      for (int i = 0; i < 10 && !done_.load(std::memory_order_acquire); ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    thread_.join();
  }

 private:
  void run() {
    // Only acceptors take the wake signal; it stays blocked everywhere else.
    sigset_t wake;
    sigemptyset(&wake);
    sigaddset(&wake, wake_signal());
    ::pthread_sigmask(SIG_UNBLOCK, &wake, nullptr);

    bool resource_logged = false;
    std::size_t next = 0;
    while (!stopping_.load(std::memory_order_acquire)) {
      // T19: the new socket is ours, so SOCK_NONBLOCK here is safe; the
      // listening socket's own flags are never touched.
      int fd = ::accept4(listener_.fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd >= 0) {
        resource_logged = false;
        if (listener_.tcp) {
          int one = 1;  // small replies and echoes must not wait for Nagle + delayed ACK
          ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        }
        io_[next++ % io_.size()]->post(fd);
        continue;
      }
      if (!handle_accept_error(errno, resource_logged)) break;
    }
    done_.store(true, std::memory_order_release);
  }

  // nginx's classification; returns false when this acceptor must give up.
  bool handle_accept_error(int err, bool& resource_logged) {
    switch (err) {
      case EINTR:  // the wake signal, or a stray one: the loop re-checks the stop flag
        return true;
      case EAGAIN: {  // == EWOULDBLOCK on Linux
        // Only if some other program made the shared socket non-blocking (T19):
        // wait for a connection instead of spinning. EINTR ends the wait too.
        pollfd p{listener_.fd, POLLIN, 0};
        ::poll(&p, 1, -1);
        return true;
      }
      case EMFILE:
      case ENFILE:
      case ENOBUFS:
      case ENOMEM: {
        // Out of fds or memory: the connection stays queued; pause instead of
        // spinning on it, and say so once per episode.
        if (!resource_logged) {
          log_line("accept on %s: %s; pausing accepts", listener_.name.c_str(), std::strerror(err));
          resource_logged = true;
        }
        timespec pause{0, 100 * 1000 * 1000};
        ::nanosleep(&pause, nullptr);  // the wake signal cuts it short
        return true;
      }
      case ECONNABORTED:
      case EPROTO:
      // accept(2): Linux passes pending network errors of the new socket to accept().
      case EPERM:
      case ENETDOWN:
      case ENOPROTOOPT:
      case EHOSTDOWN:
      case ENONET:
      case EHOSTUNREACH:
      case EOPNOTSUPP:
      case ENETUNREACH:
      case ETIMEDOUT:
        return true;
      default:
        log_line("accept on %s: %s; stopping", listener_.name.c_str(), std::strerror(err));
        failed_.store(true);
        ::kill(::getpid(), SIGTERM);  // the main thread drains the rest, then exits 1
        return false;
    }
  }

  const Listener& listener_;
  std::vector<std::unique_ptr<IoThread>>& io_;
  std::atomic<bool>& stopping_;
  std::atomic<bool>& failed_;
  std::atomic<bool> done_{false};
  std::thread thread_;
};

// All threads of the server; the destructor stops whatever is still running so an
// exception during start-up never destroys a joinable std::thread.
class Threads {
 public:
  std::vector<std::unique_ptr<IoThread>> io;
  std::vector<std::unique_ptr<Acceptor>> acceptors;
  std::atomic<bool> stopping{false};
  std::atomic<bool> failed{false};

  void stop_accepting() {
    stopping.store(true, std::memory_order_release);
    for (auto& a : acceptors) a->stop();
  }
  void drain(Clock::time_point deadline) {
    for (auto& t : io) t->drain(deadline);
    for (auto& t : io) t->join();
  }
  ~Threads() {
    stop_accepting();
    drain(Clock::now());
  }
};

// Sums the I/O threads' cells and sends the lines whose value changed since the
// last report that went through (all of them the first time, announcing the names),
// whole lines in one write (preforkd_notify_batch). Main thread only.
class StatsReporter {
 public:
  explicit StatsReporter(const std::vector<std::unique_ptr<IoThread>>& io) : io_(io) {}

  void report() {
    Totals now{};
    for (const auto& t : io_) {
      const IoStats& s = t->stats();
      now.requests += preforkd_counter_load(&s.requests);
      now.connections += preforkd_counter_load(&s.connections);
      now.bytes_in += preforkd_counter_load(&s.bytes_in);
      now.bytes_out += preforkd_counter_load(&s.bytes_out);
      now.active_connections += preforkd_gauge_load(&s.active_connections);
    }
    // Each cell only grows and is read after its previous reading, so every
    // counter sum is >= the one reported before: counters never decrease.
    preforkd_notify_batch batch;
    preforkd_batch_init(&batch);
    auto counter = [&](const char* name, std::uint64_t Totals::*field) {
      if (!sent_ || (*sent_).*field != now.*field) preforkd_batch_counter(&batch, name, now.*field);
    };
    // BUSY=: busy when the loops spent at least half of the interval since the
    // last report serving; said on a change only (and once at first, as idle).
    std::uint64_t now_ns = monotonic_ns(), busy_total = 0;
    for (const auto& t : io_) busy_total += t->busy_ns(now_ns);
    bool busy = busy_;
    if (last_ns_ != 0 && now_ns > last_ns_) {
      double span = static_cast<double>(now_ns - last_ns_) * static_cast<double>(io_.size());
      double spent = busy_total > last_busy_ ? static_cast<double>(busy_total - last_busy_) : 0.0;
      busy = spent * 2 >= span;
    }
    last_ns_ = now_ns;
    last_busy_ = std::max(busy_total, last_busy_);
    if (!busy_sent_ || busy != busy_) preforkd_batch_busy(&batch, busy ? 1 : 0);
    counter("requests", &Totals::requests);
    counter("connections", &Totals::connections);
    counter("bytes_in", &Totals::bytes_in);
    counter("bytes_out", &Totals::bytes_out);
    if (!sent_ || sent_->active_connections != now.active_connections)
      preforkd_batch_gauge(&batch, "active_connections", now.active_connections);
    // A full pipe dropped the lines (-EAGAIN): keep the old values so that the next
    // report sends them again.
    if (preforkd_batch_flush(&batch) >= 0) {
      sent_ = now;
      busy_sent_ = true;
      busy_ = busy;
    }
  }

 private:
  struct Totals {
    std::uint64_t requests, connections, bytes_in, bytes_out;
    std::int64_t active_connections;
  };
  const std::vector<std::unique_ptr<IoThread>>& io_;
  std::optional<Totals> sent_;  // what the supervisor last received
  bool busy_ = false;           // the BUSY= it last received
  bool busy_sent_ = false;
  std::uint64_t last_ns_ = 0, last_busy_ = 0;  // the previous report's time and busy total
};

timespec to_timespec(std::chrono::nanoseconds d) {
  auto ns = std::max<std::int64_t>(d.count(), 0);
  return timespec{static_cast<time_t>(ns / 1000000000), static_cast<long>(ns % 1000000000)};
}

// Waits for SIGTERM/SIGINT (blocked in every thread). Meanwhile it sends
// WATCHDOG=1 at a third of WATCHDOG_USEC, but only while every I/O loop answers
// its pings (a stuck loop must let the supervisor's watchdog fire), and, with
// `stats`, the counters that changed at most every kStatsIntervalNs.
// Returns the signal, or -1 when `fail_at` came first (--fail-after).
int wait_for_stop(const sigset_t& stop_signals, Threads& threads, StatsReporter* stats,
                  std::optional<Clock::time_point> fail_at) {
  const std::uint64_t watchdog_usec = preforkd_watchdog_usec();
  const std::chrono::microseconds tick(std::max<std::uint64_t>(watchdog_usec / 3, 1000));
  Clock::time_point next_watchdog = Clock::now() + tick;
  preforkd_rate stats_rate = PREFORKD_RATE_INIT(kStatsIntervalNs);  // first report: at once
  std::uint64_t seq = 0;
  for (;;) {
    if (fail_at && Clock::now() >= *fail_at) return -1;
    // Sleep until the next thing is due, or until a signal if nothing ever is.
    std::optional<std::chrono::nanoseconds> wait;
    if (fail_at) wait = *fail_at - Clock::now();
    if (watchdog_usec > 0) {
      std::chrono::nanoseconds until_watchdog = next_watchdog - Clock::now();
      wait = wait ? std::min(*wait, until_watchdog) : until_watchdog;
    }
    if (stats != nullptr) {
      std::chrono::nanoseconds until_report(preforkd_rate_wait_ns(&stats_rate));
      wait = wait ? std::min(*wait, until_report) : until_report;
    }
    int sig;
    if (wait) {
      timespec ts = to_timespec(*wait);
      sig = ::sigtimedwait(&stop_signals, nullptr, &ts);
    } else {
      sig = ::sigwaitinfo(&stop_signals, nullptr);
    }
    if (sig > 0) return sig;
    // EAGAIN (time is up) or EINTR (e.g. after SIGSTOP/SIGCONT, T16): do what is due.
    if (watchdog_usec > 0 && Clock::now() >= next_watchdog) {
      next_watchdog = Clock::now() + tick;
      bool alive = std::all_of(threads.io.begin(), threads.io.end(),
                               [seq](const auto& t) { return t->pong() == seq; });
      if (alive) {
        preforkd_notify("WATCHDOG=1");
        ++seq;
        for (auto& t : threads.io) t->ping(seq);
      }
    }
    if (stats != nullptr && preforkd_rate_due(&stats_rate)) stats->report();
  }
}

}  // namespace

int serve(std::vector<Listener>& listeners, const ServerOptions& options) {
  // Block before any thread exists, so every thread inherits the mask: TERM/INT
  // are only ever taken by wait_for_stop(), SIGPIPE never kills us (T13), and the
  // wake signal reaches only the acceptors, which unblock it.
  sigset_t stop_signals, blocked;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  blocked = stop_signals;
  sigaddset(&blocked, SIGPIPE);
  sigaddset(&blocked, wake_signal());
  ::pthread_sigmask(SIG_BLOCK, &blocked, nullptr);
  struct sigaction sa {};
  sa.sa_handler = on_wake_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART: accept4() must return EINTR
  ::sigaction(wake_signal(), &sa, nullptr);

  Threads threads;
  for (int i = 0; i < std::max(options.io_threads, 1); ++i) {
    threads.io.push_back(std::make_unique<IoThread>(options.mode, options.stats, options.delay));
    threads.io.back()->start();
  }
  for (const Listener& l : listeners) {
    threads.acceptors.push_back(
        std::make_unique<Acceptor>(l, threads.io, threads.stopping, threads.failed));
    threads.acceptors.back()->start();
  }
  std::optional<StatsReporter> stats;
  if (options.stats) stats.emplace(threads.io);
  preforkd_notify("READY=1");
  preforkd_notify("STATUS=%s on %zu socket(s)", options.mode == Mode::Http ? "http" : "echo",
                  listeners.size());

  std::optional<Clock::time_point> fail_at;
  if (options.fail_after.count() >= 0) fail_at = Clock::now() + options.fail_after;
  const bool failing = wait_for_stop(stop_signals, threads, stats ? &*stats : nullptr, fail_at) < 0;
  if (failing) std::fprintf(stderr, "preforkd-echo: --fail-after: draining, then exiting with status 4\n");
  const Clock::time_point deadline = Clock::now() + options.grace;
  if (stats) stats->report();  // what the last interval counted
  preforkd_notify("STOPPING=1");
  threads.stop_accepting();
  // Standalone, this refuses connections still queued instead of leaving them
  // hanging for the grace period; an inherited socket only loses our reference.
  close_listeners(listeners);
  threads.drain(deadline);
  if (stats) stats->report();  // the final values (active_connections back to 0)
  if (threads.failed.load()) return 1;
  return failing ? 4 : 0;
}

}  // namespace preforkd::echo
