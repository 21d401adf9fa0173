/* soak-client — continuous, checked HTTP load on one 127.0.0.1 port for
 * bench/soak.sh. Each thread opens a connection, sends up to --keepalive
 * GET requests on it (fewer if the server says "Connection: close") and
 * checks every response: status 200 and exactly the --expect body. Every
 * outcome is counted:
 *
 *   connections  connect() succeeded
 *   ok           a complete, correct response
 *   refused      connect() got ECONNREFUSED: nobody holds the listening
 *                socket (preforkd holds it, so this must never happen)
 *   reset        ECONNRESET/EPIPE, or EOF before a complete response, on
 *                a fresh connection or in the middle of a response: a
 *                worker killed (or stopped) with the connection in hand
 *   idle_close   EOF/RST on a reused keep-alive connection before any byte
 *                of the response: the server closed an idle connection (a
 *                worker stopping, or killed, between two requests). As any
 *                HTTP client does, the request is retried once on a new
 *                connection; not a failure by itself
 *   timeout      no complete response within --timeout-ms (or no connect)
 *   bad          a response that is not 200 with the expected body
 *   client_error anything else on our side (EADDRNOTAVAIL...)
 *
 * Counts are kept per phase: phase 0 until SIGUSR1, phase 1 after it
 * (bench/soak.sh switches when the SIGKILLs stop). SIGTERM or SIGINT ends
 * the run: one JSON object on stdout, then exit 0.
 *
 * Usage: soak-client --port P --expect BODY [--threads N] [--keepalive K]
 *                    [--timeout-ms T] [--pause-us U] [--name NAME]
 * Only 127.0.0.1 is ever connected to.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { C_CONN, C_OK, C_REFUSED, C_RESET, C_IDLE, C_TIMEOUT, C_BAD, C_CLIENT, C_COUNT };
static const char* const kNames[C_COUNT] = {"connections", "ok",      "refused", "reset",
                                            "idle_close",  "timeout", "bad",     "client_error"};

static atomic_ullong counts[2][C_COUNT];
static atomic_int phase;
static atomic_int stopping;
static uint16_t port;
static const char* expect = "";
static size_t expect_len;
static int threads = 2, keepalive = 1, timeout_ms = 10000, pause_us = 0;
static const char* name = "client";

/* The first few bad responses, for the report. */
static pthread_mutex_t bad_lock = PTHREAD_MUTEX_INITIALIZER;
static char bad_examples[3][160];
static int bad_kept;

static void count(int what) { atomic_fetch_add(&counts[atomic_load(&phase)][what], 1); }

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void keep_bad(const char* text, size_t n) {
  pthread_mutex_lock(&bad_lock);
  if (bad_kept < 3) {
    size_t k = n < sizeof bad_examples[0] - 1 ? n : sizeof bad_examples[0] - 1;
    for (size_t i = 0; i < k; ++i) bad_examples[bad_kept][i] = (text[i] >= 32 && text[i] < 127) ? text[i] : '.';
    bad_examples[bad_kept][k] = '\0';
    ++bad_kept;
  }
  pthread_mutex_unlock(&bad_lock);
}

/* A connected socket, or -1 with the outcome counted. */
static int open_connection(void) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) {
    count(C_CLIENT);
    return -1;
  }
  struct sockaddr_in sin = {0};
  sin.sin_family = AF_INET;
  sin.sin_port = htons(port);
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (connect(fd, (struct sockaddr*)&sin, sizeof sin) != 0 && errno != EINPROGRESS) {
    int err = errno;
    close(fd);
    count(err == ECONNREFUSED ? C_REFUSED : C_CLIENT);
    return -1;
  }
  struct pollfd p = {fd, POLLOUT, 0};
  int r = poll(&p, 1, timeout_ms);
  if (r == 0) {
    close(fd);
    count(C_TIMEOUT);
    return -1;
  }
  int err = 0;
  socklen_t len = sizeof err;
  getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
  if (r < 0 || err != 0) {
    close(fd);
    count(err == ECONNREFUSED ? C_REFUSED : err == ECONNRESET ? C_RESET : C_CLIENT);
    return -1;
  }
  count(C_CONN);
  return fd;
}

/* Outcomes of one exchange. */
enum { XC_OK, XC_CLOSED_BEFORE, XC_RESET, XC_TIMEOUT, XC_BAD, XC_CLOSE_AFTER };

/* Sends one request and reads one response with a deadline. XC_CLOSE_AFTER:
 * correct, and the server will close the connection. */
static int exchange(int fd) {
  static const char req[] = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: preforkd-soak\r\n\r\n";
  long long deadline = now_ms() + timeout_ms;
  size_t sent = 0;
  while (sent < sizeof req - 1) {
    ssize_t n = send(fd, req + sent, sizeof req - 1 - sent, MSG_NOSIGNAL);
    if (n > 0) {
      sent += (size_t)n;
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      long long left = deadline - now_ms();
      struct pollfd p = {fd, POLLOUT, 0};
      if (left <= 0 || poll(&p, 1, (int)left) == 0) return XC_TIMEOUT;
      continue;
    }
    return XC_CLOSED_BEFORE;  /* EPIPE / ECONNRESET before any byte came back */
  }
  char buf[4096];
  size_t got = 0;
  long content_length = -1;
  size_t head_end = 0;
  int close_after = 0;
  for (;;) {
    if (head_end > 0 && content_length >= 0 && got >= head_end + (size_t)content_length) break;
    if (got == sizeof buf) {
      keep_bad(buf, got);
      return XC_BAD;
    }
    ssize_t n = recv(fd, buf + got, sizeof buf - got, 0);
    if (n > 0) {
      got += (size_t)n;
      if (head_end == 0) {
        char* end = memmem(buf, got, "\r\n\r\n", 4);
        if (end != NULL) {
          head_end = (size_t)(end - buf) + 4;
          char* cl = memmem(buf, head_end, "Content-Length:", 15);
          if (cl == NULL) cl = memmem(buf, head_end, "content-length:", 15);
          if (cl != NULL) content_length = strtol(cl + 15, NULL, 10);
          if (memmem(buf, head_end, "Connection: close", 17) != NULL ||
              memmem(buf, head_end, "connection: close", 17) != NULL)
            close_after = 1;
          if (content_length < 0) close_after = 1;  /* body until EOF */
        }
      }
      continue;
    }
    if (n == 0) {
      if (head_end > 0 && content_length < 0) break;  /* EOF-delimited body: complete */
      return got == 0 ? XC_CLOSED_BEFORE : XC_RESET;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      long long left = deadline - now_ms();
      struct pollfd p = {fd, POLLIN, 0};
      if (left <= 0 || poll(&p, 1, (int)left) == 0) return XC_TIMEOUT;
      continue;
    }
    if (errno == EINTR) continue;
    return got == 0 ? XC_CLOSED_BEFORE : XC_RESET;
  }
  size_t body_len = got - head_end;
  if (strncmp(buf, "HTTP/1.1 200", 12) != 0 && strncmp(buf, "HTTP/1.0 200", 12) != 0) {
    keep_bad(buf, got);
    return XC_BAD;
  }
  if (body_len != expect_len || memcmp(buf + head_end, expect, expect_len) != 0) {
    keep_bad(buf, got);
    return XC_BAD;
  }
  return close_after ? XC_CLOSE_AFTER : XC_OK;
}

static void* run(void* arg) {
  (void)arg;
  while (!atomic_load(&stopping)) {
    int fd = open_connection();
    if (fd < 0) {
      usleep(1000);  /* never spin on a failing connect */
      continue;
    }
    int n = 1 + rand() % keepalive;
    for (int i = 0; i < n && !atomic_load(&stopping); ++i) {
      int x = exchange(fd);
      if (x == XC_CLOSED_BEFORE && i > 0) {
        /* An idle keep-alive connection closed by the server: retry the
         * request once on a fresh connection, as HTTP clients do. */
        count(C_IDLE);
        close(fd);
        fd = open_connection();
        if (fd < 0) break;
        x = exchange(fd);
      }
      if (x == XC_OK || x == XC_CLOSE_AFTER) count(C_OK);
      else if (x == XC_TIMEOUT) count(C_TIMEOUT);
      else if (x == XC_BAD) count(C_BAD);
      else count(C_RESET);
      if (x != XC_OK) break;
      if (pause_us > 0) usleep((useconds_t)pause_us);
    }
    if (fd >= 0) close(fd);
    if (pause_us > 0) usleep((useconds_t)pause_us);
  }
  return NULL;
}

int main(int argc, char** argv) {
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!strcmp(argv[i], "--port")) port = (uint16_t)atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "--expect")) expect = argv[i + 1];
    else if (!strcmp(argv[i], "--threads")) threads = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "--keepalive")) keepalive = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "--timeout-ms")) timeout_ms = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "--pause-us")) pause_us = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "--name")) name = argv[i + 1];
    else {
      fprintf(stderr, "soak-client: unknown option %s\n", argv[i]);
      return 2;
    }
  }
  if (port == 0 || threads < 1 || keepalive < 1) {
    fprintf(stderr, "usage: soak-client --port P --expect BODY [--threads N] [--keepalive K] "
                    "[--timeout-ms T] [--pause-us U] [--name NAME]\n");
    return 2;
  }
  /* The body as given, with \n written as two characters unescaped. */
  static char body[256];
  size_t k = 0;
  for (const char* s = expect; *s && k < sizeof body - 1; ++s) {
    if (s[0] == '\\' && s[1] == 'n') {
      body[k++] = '\n';
      ++s;
    } else {
      body[k++] = *s;
    }
  }
  expect = body;
  expect_len = k;

  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGUSR1);
  sigaddset(&set, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &set, NULL);  /* the threads inherit it; main waits for them */
  pthread_t* ids = calloc((size_t)threads, sizeof *ids);
  for (int i = 0; i < threads; ++i) pthread_create(&ids[i], NULL, run, NULL);
  for (;;) {
    int sig = 0;
    sigwait(&set, &sig);
    if (sig == SIGUSR1) atomic_store(&phase, 1);
    if (sig == SIGTERM || sig == SIGINT) break;
  }
  atomic_store(&stopping, 1);
  for (int i = 0; i < threads; ++i) pthread_join(ids[i], NULL);

  printf("{\"name\": \"%s\", \"port\": %u", name, (unsigned)port);
  for (int ph = 0; ph < 2; ++ph) {
    printf(", \"phase%d\": {", ph);
    for (int c = 0; c < C_COUNT; ++c)
      printf("%s\"%s\": %llu", c ? ", " : "", kNames[c], (unsigned long long)atomic_load(&counts[ph][c]));
    printf("}");
  }
  printf(", \"bad_examples\": [");
  for (int i = 0; i < bad_kept; ++i) {
    printf("%s\"", i ? ", " : "");
    for (const char* s = bad_examples[i]; *s; ++s) {
      if (*s == '"' || *s == '\\') putchar('\\');
      putchar(*s);
    }
    printf("\"");
  }
  printf("]}\n");
  return 0;
}
