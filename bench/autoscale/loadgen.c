/* loadgen.c — the load of bench/autoscale.sh: HTTP/1.1 requests to
 * 127.0.0.1:PORT, one connection each ("Connection: close", as new clients
 * arrive), following a schedule of phases, and every request's times.
 *
 *   loadgen open   PORT TIMEOUT_MS OUT RATE:SECONDS[,RATE:SECONDS]...
 *   loadgen closed PORT TIMEOUT_MS OUT CONNS:SECONDS[,CONNS:SECONDS]...
 *
 * open:   Poisson arrivals at RATE requests/s, whatever the server does
 *         (open loop): a request's latency is counted from the moment it was
 *         due, so a late client or a full queue is never hidden.
 * closed: CONNS clients, each sending its next request as soon as the last
 *         one is answered (closed loop): a slow server gets fewer requests.
 *
 * OUT gets one line per request:  phase due_us start_us end_us status
 * (microseconds since the start; status 0 = a 200 reply, 1 = another reply,
 * 2 = connect failed, 3 = no reply within TIMEOUT_MS (then the connection is
 * reset), 4 = another socket error), after a header line
 * "# start_monotonic_ns N" (CLOCK_MONOTONIC, the clock of time.monotonic()).
 * Single-threaded, one epoll loop. Only 127.0.0.1 is ever contacted.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { ST_OK = 0, ST_HTTP = 1, ST_CONNECT = 2, ST_TIMEOUT = 3, ST_IO = 4 };

typedef struct {
  int phase;
  int64_t due, start, end;  /* ns since t0 */
  int status;
} Record;

typedef struct {
  int fd;              /* -1: slot free */
  int connected;
  int64_t due, start;
  int phase;
  char head[16];
  size_t got;
} Conn;

static const char kRequest[] = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void die(const char* what) {
  fprintf(stderr, "loadgen: %s: %s\n", what, strerror(errno));
  exit(1);
}

static Record* records;
static size_t n_records, cap_records;
static Conn* conns;
static int n_slots, n_inflight;
static int epfd, port;
static int64_t t0;
static struct sockaddr_in target;

static void record(const Conn* c, int64_t end, int status) {
  if (n_records == cap_records) {
    cap_records = cap_records ? cap_records * 2 : 65536;
    records = realloc(records, cap_records * sizeof *records);
    if (!records) die("realloc");
  }
  records[n_records++] = (Record){c->phase, c->due, c->start, end, status};
}

static void finish(int slot, int status, int reset) {
  Conn* c = &conns[slot];
  record(c, now_ns() - t0, status);
  if (reset) {  /* abort: no TIME_WAIT left behind on our side */
    struct linger l = {1, 0};
    setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
  }
  close(c->fd);
  c->fd = -1;
  --n_inflight;
}

/* Starts a request due at `due` (ns since t0); returns 0 if no socket could be had. */
static int launch(int64_t due, int phase) {
  int slot = -1;
  for (int i = 0; i < n_slots; ++i)
    if (conns[i].fd < 0) { slot = i; break; }
  if (slot < 0) {
    int old = n_slots;
    n_slots = n_slots ? n_slots * 2 : 1024;
    conns = realloc(conns, (size_t)n_slots * sizeof *conns);
    if (!conns) die("realloc");
    for (int i = old; i < n_slots; ++i) conns[i].fd = -1;
    slot = old;
  }
  Conn* c = &conns[slot];
  memset(c, 0, sizeof *c);
  c->due = due;
  c->start = now_ns() - t0;
  c->phase = phase;
  c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (c->fd < 0) {
    c->fd = -1;
    record(c, now_ns() - t0, ST_IO);
    return 0;
  }
  ++n_inflight;
  int one = 1;
  setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (connect(c->fd, (struct sockaddr*)&target, sizeof target) < 0 && errno != EINPROGRESS) {
    finish(slot, ST_CONNECT, 0);
    return 1;
  }
  struct epoll_event ev = {.events = EPOLLOUT, .data.u32 = (uint32_t)slot};
  if (epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0) die("epoll_ctl");
  return 1;
}

/* Returns 1 when the request is over (recorded). */
static int on_event(int slot, uint32_t events) {
  Conn* c = &conns[slot];
  if (!c->connected) {
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) { finish(slot, ST_CONNECT, 0); return 1; }
    c->connected = 1;
    /* Small enough for any empty send buffer: written whole or not at all. */
    if (send(c->fd, kRequest, sizeof kRequest - 1, MSG_NOSIGNAL) != (ssize_t)(sizeof kRequest - 1)) {
      finish(slot, ST_IO, 1);
      return 1;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)slot};
    if (epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0) die("epoll_ctl");
    return 0;
  }
  (void)events;
  char buf[4096];
  for (;;) {
    ssize_t n = read(c->fd, buf, sizeof buf);
    if (n > 0) {
      size_t keep = sizeof c->head - 1 - c->got;
      if (keep > (size_t)n) keep = (size_t)n;
      memcpy(c->head + c->got, buf, keep);
      c->got += keep;
      continue;
    }
    if (n == 0) {  /* the server closed after its reply (Connection: close) */
      int ok = c->got >= 12 && memcmp(c->head, "HTTP/1.", 7) == 0 && memcmp(c->head + 9, "200", 3) == 0;
      finish(slot, ok ? ST_OK : (c->got ? ST_HTTP : ST_IO), 0);
      return 1;
    }
    if (errno == EAGAIN || errno == EINTR) return 0;
    finish(slot, ST_IO, 0);
    return 1;
  }
}

typedef struct {
  double level;  /* requests/s (open) or clients (closed) */
  double secs;
} Phase;

static Phase phases[32];
static int64_t phase_end[32];  /* ns since t0 */
static int n_phases;

/* Open loop: the first arrival after `from` in phase *ap or a later one
 * (Poisson: memoryless, so a phase's arrivals start afresh at its start);
 * *ap = n_phases when there is none. Arrivals follow the schedule, not the
 * clock: a client that fell behind sends the ones it owes, late. */
static void next_arrival(int* ap, int64_t* due, int64_t from) {
  while (*ap < n_phases) {
    if (phases[*ap].level > 0) {
      int64_t d = from + (int64_t)(-log(1.0 - drand48()) / phases[*ap].level * 1e9);
      if (d < phase_end[*ap]) {
        *due = d;
        return;
      }
    }
    from = phase_end[*ap];
    ++*ap;
  }
}

int main(int argc, char** argv) {
  if (argc != 6 || (strcmp(argv[1], "open") != 0 && strcmp(argv[1], "closed") != 0)) {
    fprintf(stderr, "usage: loadgen open|closed PORT TIMEOUT_MS OUT LEVEL:SECONDS[,LEVEL:SECONDS]...\n");
    return 2;
  }
  const int open_loop = strcmp(argv[1], "open") == 0;
  port = atoi(argv[2]);
  const int64_t timeout = (int64_t)atoll(argv[3]) * 1000000;
  const char* out = argv[4];
  for (char* p = argv[5]; *p && n_phases < 32;) {
    char* end;
    phases[n_phases].level = strtod(p, &end);
    if (*end != ':') { fprintf(stderr, "loadgen: bad schedule at '%s'\n", p); return 2; }
    phases[n_phases].secs = strtod(end + 1, &end);
    if (phases[n_phases].secs <= 0 || phases[n_phases].level < 0) {
      fprintf(stderr, "loadgen: bad schedule '%s'\n", argv[5]);
      return 2;
    }
    ++n_phases;
    p = *end == ',' ? end + 1 : end;
  }
  if (port <= 0 || port > 65535 || timeout <= 0 || n_phases == 0) {
    fprintf(stderr, "loadgen: bad port, timeout or schedule\n");
    return 2;
  }
  double total = 0;
  for (int i = 0; i < n_phases; ++i) {
    total += phases[i].secs;
    phase_end[i] = (int64_t)(total * 1e9);
  }

  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  memset(&target, 0, sizeof target);
  target.sin_family = AF_INET;
  target.sin_port = htons((uint16_t)port);
  target.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  epfd = epoll_create1(EPOLL_CLOEXEC);
  if (epfd < 0) die("epoll_create1");

  srand48(12);  /* the same arrivals every run */
  t0 = now_ns();
  int phase = 0;         /* the phase the clock is in */
  int ap = 0;            /* open: the phase of the next arrival */
  int64_t next_due = 0;  /* open: the next arrival */
  if (open_loop) next_arrival(&ap, &next_due, 0);
  int64_t last_scan = 0;
  struct epoll_event evs[256];

  for (;;) {
    int64_t now = now_ns() - t0;
    while (phase < n_phases && now >= phase_end[phase]) ++phase;
    if ((open_loop ? ap : phase) >= n_phases && n_inflight == 0) break;
    if (open_loop) {
      while (ap < n_phases && next_due <= now) {
        launch(next_due, ap);
        next_arrival(&ap, &next_due, next_due);
      }
    } else if (phase < n_phases) {
      while (n_inflight < (int)phases[phase].level) launch(now, phase);
    }
    if (now - last_scan >= 5000000) {  /* timeouts, every 5 ms at most */
      last_scan = now;
      for (int i = 0; i < n_slots; ++i)
        if (conns[i].fd >= 0 && now - conns[i].due >= timeout) finish(i, ST_TIMEOUT, 1);
    }
    /* Sleep until the next arrival (to the nanosecond: epoll_pwait2), at most 5 ms. */
    int64_t until = 5000000;
    if (open_loop && ap < n_phases) {
      int64_t d = next_due - (now_ns() - t0);
      if (d < until) until = d < 0 ? 0 : d;
    }
    struct timespec wait = {0, (long)until};
    int n = epoll_pwait2(epfd, evs, 256, &wait, NULL);
    if (n < 0 && errno != EINTR) die("epoll_pwait2");
    for (int i = 0; i < n; ++i) {
      int slot = (int)evs[i].data.u32;
      if (conns[slot].fd < 0) continue;
      if (on_event(slot, evs[i].events) && !open_loop) {
        int64_t t = now_ns() - t0;
        /* closed: the client whose request ended sends the next one, if its phase still runs */
        int p = phase;
        while (p < n_phases && t >= phase_end[p]) ++p;
        if (p < n_phases && n_inflight < (int)phases[p].level) launch(t, p);
      }
    }
  }

  FILE* f = fopen(out, "w");
  if (!f) die(out);
  fprintf(f, "# start_monotonic_ns %lld\n", (long long)t0);
  for (size_t i = 0; i < n_records; ++i) {
    const Record* r = &records[i];
    fprintf(f, "%d %lld %lld %lld %d\n", r->phase, (long long)(r->due / 1000), (long long)(r->start / 1000),
            (long long)(r->end / 1000), r->status);
  }
  if (fclose(f) != 0) die(out);
  return 0;
}
