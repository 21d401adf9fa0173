/* syncworker.c — a classic synchronous preforked HTTP worker, for
 * bench/autoscale.sh WORKER=sync: one request at a time per process, and a
 * connection is accepted only when the process is free (gunicorn's sync
 * worker, PHP-FPM, Apache prefork), so the connections nobody can serve yet
 * wait in the kernel's accept queue, where preforkd sees them and any worker,
 * new ones included, takes the next one. (preforkd-echo, by contrast, accepts
 * in a thread of its own whatever arrives and queues it behind its one I/O
 * thread.)
 *
 *   syncworker DELAY_MS
 *
 * Takes the first socket preforkd passes (fd 3, LISTEN_FDS), says READY=1,
 * then per connection: reads the request head, sleeps DELAY_MS, answers
 * "200 ok" with Connection: close, closes. BUSY=1 when it has accepted a
 * connection and BUSY=0 when it is done (preforkd-worker(7)). SIGTERM (and
 * SIGINT): exits once the request in hand is answered. Not for production:
 * no keep-alive, no request bodies, one socket.
 */
#define _GNU_SOURCE
#include <preforkd/worker.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int serving;  /* under lock: a request is in hand */
static int stopping; /* under lock: SIGTERM came */

static const char kReply[] =
    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n";

/* Waits for SIGTERM/SIGINT (blocked in every thread): exits at once when no
 * request is in hand, else lets the main thread exit after it. */
static void* signals(void* arg) {
  sigset_t* set = arg;
  for (;;) {
    int sig = 0;
    if (sigwait(set, &sig) != 0) continue;
    pthread_mutex_lock(&lock);
    stopping = 1;
    if (!serving) {
      preforkd_notify_line("STOPPING=1", 10);
      /* The main thread is in accept(), or has just got a connection and not
       * yet said so: that one (a rare race, in light load) is reset. */
      _exit(0);
    }
    pthread_mutex_unlock(&lock);
  }
  return NULL;
}

static void serve(int fd, unsigned delay_ms) {
  char buf[4096];
  size_t got = 0;
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  struct timeval tv = {5, 0};  /* a silent client never holds the worker for long */
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  while (got < sizeof buf) {
    ssize_t n = read(fd, buf + got, sizeof buf - got);
    if (n <= 0) return;
    got += (size_t)n;
    if (memmem(buf, got, "\r\n\r\n", 4) != NULL) break;
  }
  struct timespec d = {delay_ms / 1000, (long)(delay_ms % 1000) * 1000000L};
  while (nanosleep(&d, &d) != 0 && errno == EINTR) {
  }
  ssize_t w = send(fd, kReply, sizeof kReply - 1, MSG_NOSIGNAL);
  (void)w;
}

int main(int argc, char** argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: syncworker DELAY_MS\n");
    return 2;
  }
  unsigned delay_ms = (unsigned)strtoul(argv[1], NULL, 10);
  if (preforkd_listen_fds(1) < 1) {
    fprintf(stderr, "syncworker: no listening socket passed (LISTEN_FDS)\n");
    return 1;
  }
  static sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, NULL);
  pthread_t t;
  if (pthread_create(&t, NULL, signals, &set) != 0) {
    fprintf(stderr, "syncworker: pthread_create failed\n");
    return 1;
  }
  preforkd_notify_line("READY=1", 7);
  preforkd_notify_busy(0);
  for (;;) {
    int fd = accept4(3, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        struct timespec pause = {0, 100000000};
        nanosleep(&pause, NULL);
        continue;
      }
      fprintf(stderr, "syncworker: accept: %s\n", strerror(errno));
      return 1;
    }
    pthread_mutex_lock(&lock);
    serving = 1;
    pthread_mutex_unlock(&lock);
    preforkd_notify_busy(1);
    serve(fd, delay_ms);
    close(fd);
    preforkd_notify_busy(0);
    pthread_mutex_lock(&lock);
    serving = 0;
    if (stopping) {
      preforkd_notify_line("STOPPING=1", 10);
      _exit(0);
    }
    pthread_mutex_unlock(&lock);
  }
}
