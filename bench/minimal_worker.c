/* minimal_worker — the benchmark suite's HTTP worker (bench/run.sh): one
 * thread, one epoll loop, accepts on an inherited listening socket (fd 3, or
 * --fd N: supervisord's fcgi-program passes it as fd 0) and answers every
 * request (a head ending in an empty line) with a fixed "200 ok". A request
 * that says "Connection: close" gets "Connection: close" back and the
 * connection is closed after the reply; otherwise it stays open (keep-alive).
 *
 * BENCH_READY_FIFO=PATH: once the listening socket is in the epoll set (the
 * worker accepts from then on), write one byte to that FIFO; the bench counts
 * the bytes to know when N workers are accepting.
 *
 * SIGTERM/SIGINT (through a signalfd, so nothing runs in a handler): stop
 * accepting, close idle keep-alive connections, answer the connections that
 * have not had their reply yet, exit 0 (after 2 s at the latest). The same the workers of every manager do, so a
 * reload measures the manager, not the worker.
 *
 * Build: cc -O2 -o minimal_worker bench/minimal_worker.c (bench/run.sh does). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_FDS 65536

static const char ok_keep[] =
    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nok\n";
static const char ok_close[] =
    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n";

static unsigned char matched[MAX_FDS]; /* bytes of "\r\n\r\n" matched so far, per connection */
static unsigned char open_fd[MAX_FDS];
static unsigned char answered[MAX_FDS]; /* at least one reply sent: idle means keep-alive */
static int open_conns;

static void drop(int ep, int fd) {
  epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
  close(fd);
  if (open_fd[fd]) {
    open_fd[fd] = 0;
    --open_conns;
  }
}

/* Reads what the connection has, answers each complete request. */
static void serve(int ep, int fd) {
  char buf[16384];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
      drop(ep, fd);
      return;
    }
    if (n < 0) return;
    int close_after = memmem(buf, (size_t)n, "lose\r\n", 6) != NULL; /* "Connection: close" */
    int replies = 0;
    for (ssize_t i = 0; i < n; ++i) {
      static const char end[] = "\r\n\r\n";
      if (buf[i] == end[matched[fd]]) {
        if (++matched[fd] == 4) {
          matched[fd] = 0;
          ++replies;
        }
      } else {
        matched[fd] = buf[i] == '\r' ? 1 : 0;
      }
    }
    if (replies > 0) answered[fd] = 1;
    for (int r = 0; r < replies; ++r) {
      const char* rsp = close_after ? ok_close : ok_keep;
      size_t len = close_after ? sizeof ok_close - 1 : sizeof ok_keep - 1;
      if (write(fd, rsp, len) < 0) {
        drop(ep, fd);
        return;
      }
    }
    if (close_after && replies > 0) {
      drop(ep, fd);
      return;
    }
    if ((size_t)n < sizeof buf) return;
  }
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char** argv) {
  int ls = 3;
  for (int i = 1; i < argc; ++i) {
    if (strcmp(argv[i], "--fd") == 0 && i + 1 < argc) {
      ls = atoi(argv[++i]);
    } else {
      fprintf(stderr, "usage: minimal_worker [--fd N]\n");
      return 2;
    }
  }
  int sockflags = 0;
  socklen_t sl = sizeof sockflags;
  if (getsockopt(ls, SOL_SOCKET, SO_ACCEPTCONN, &sockflags, &sl) != 0 || !sockflags) {
    fprintf(stderr, "minimal_worker: fd %d is not a listening socket\n", ls);
    return 2;
  }
  fcntl(ls, F_SETFL, fcntl(ls, F_GETFL) | O_NONBLOCK);
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigprocmask(SIG_BLOCK, &set, NULL);
  signal(SIGPIPE, SIG_IGN);
  int sfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
  int ep = epoll_create1(EPOLL_CLOEXEC);
  struct epoll_event ev = {.events = EPOLLIN, .data.fd = ls};
  epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
  ev.data.fd = sfd;
  epoll_ctl(ep, EPOLL_CTL_ADD, sfd, &ev);

  const char* fifo = getenv("BENCH_READY_FIFO");
  if (fifo != NULL && *fifo != '\0') {
    int f = open(fifo, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    if (f >= 0) {
      if (write(f, "r", 1) < 0) perror("minimal_worker: BENCH_READY_FIFO");
      close(f);
    }
  }

  int stopping = 0;
  double stop_by = 0;
  for (;;) {
    struct epoll_event evs[64];
    int n = epoll_wait(ep, evs, 64, stopping ? 50 : -1);
    if (n < 0 && errno != EINTR) return 1;
    for (int i = 0; i < n; ++i) {
      int fd = evs[i].data.fd;
      if (fd == ls) {
        for (;;) {
          int c = accept4(ls, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
          if (c < 0) break;
          if (c >= MAX_FDS) {
            close(c);
            continue;
          }
          matched[c] = 0;
          answered[c] = 0;
          open_fd[c] = 1;
          ++open_conns;
          struct epoll_event cev = {.events = EPOLLIN | EPOLLRDHUP, .data.fd = c};
          epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev);
          serve(ep, c); /* the request often came with the connection */
        }
      } else if (fd == sfd) {
        struct signalfd_siginfo si;
        while (read(sfd, &si, sizeof si) == (ssize_t)sizeof si) {
        }
        if (!stopping) {
          stopping = 1;
          stop_by = now_s() + 2.0;
          epoll_ctl(ep, EPOLL_CTL_DEL, ls, NULL);
          close(ls);
          /* idle keep-alive connections (a reply sent, nothing half-read)
           * close now; the others get their reply first */
          for (int c = 0; c < MAX_FDS; ++c)
            if (open_fd[c] && answered[c] && matched[c] == 0) serve(ep, c);
          for (int c = 0; c < MAX_FDS; ++c)
            if (open_fd[c] && answered[c] && matched[c] == 0) drop(ep, c);
        }
      } else {
        serve(ep, fd);
      }
    }
    if (stopping && (open_conns == 0 || now_s() > stop_by)) return 0;
  }
}
