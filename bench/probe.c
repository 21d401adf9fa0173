/* probe — the benchmark suite's measuring client and floor launcher
 * (bench/run.sh). Every manager (preforkd, supervisord, gunicorn, Node
 * cluster) and the floor are measured by the same code. 127.0.0.1 only.
 *
 *   probe floor SAMPLES -- WORKER [ARG...]
 *       The respawn floor: bind 127.0.0.1:0, then SAMPLES times: fork + exec
 *       WORKER with the socket at fd 3 (LISTEN_FDS=1), time until it answered
 *       one HTTP GET, SIGKILL it. One latency (ms) per line.
 *   probe respawn PORT MANAGER_PID SAMPLES
 *       SAMPLES times: SIGKILL the manager's only child (its worker), time
 *       until an HTTP GET on PORT is answered 200 (the replacement serves;
 *       an attempt unanswered after 100 ms is retried on a new connection),
 *       wait 20 ms. One latency (ms) per line.
 *   probe start N FIFO -- MANAGER [ARG...]
 *       Creates FIFO, execs MANAGER (in its own session, output to
 *       $PROBE_LOG or /dev/null) and times until N bytes came through FIFO
 *       (each worker writes one when it accepts: BENCH_READY_FIFO), then
 *       prints "MS RSS_KIB" (the manager's VmRSS then), TERMs the manager and
 *       waits for it (KILLs its session after 60 s).
 *   probe launch N PORT -- WORKER [ARG...]
 *       The floor launcher: bind 127.0.0.1:PORT (0: any; the port is printed),
 *       fork + exec N copies of WORKER with the socket at fd 3, no waiting in
 *       between; then wait for TERM/INT and TERM them. Used as "the same
 *       workers started by hand on one shared socket".
 *   probe wait PORT SECONDS
 *       Until an HTTP GET on PORT is answered 200; exit 1 after SECONDS.
 *   probe children PID
 *       The live children of PID, one per line.
 *
 * Build: cc -O2 -o probe bench/probe.c (bench/run.sh does). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void die(const char* what) {
  fprintf(stderr, "probe: %s: %s\n", what, strerror(errno));
  exit(1);
}

static void sleep_ms(double ms) {
  struct timespec ts = {(time_t)(ms / 1000), (long)((ms - (double)(long)(ms / 1000) * 1000) * 1e6)};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

/* One GET on a new connection; 1 when the reply was a 200, 0 otherwise
 * (refused, reset, closed early, no reply within timeout_ms). */
static int get_ok(int port, int timeout_ms) {
  int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s < 0) die("socket");
  int one = 1;
  setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(s, (struct sockaddr*)&sin, sizeof sin) != 0) {
    close(s);
    return 0;
  }
  static const char req[] = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
  if (write(s, req, sizeof req - 1) != (ssize_t)(sizeof req - 1)) {
    close(s);
    return 0;
  }
  char buf[512];
  size_t got = 0;
  struct pollfd p = {.fd = s, .events = POLLIN};
  while (got < 12) {
    if (poll(&p, 1, timeout_ms) <= 0) break;
    ssize_t n = read(s, buf + got, sizeof buf - 1 - got);
    if (n <= 0) break;
    got += (size_t)n;
  }
  close(s);
  buf[got] = 0;
  return got >= 12 && strncmp(buf, "HTTP/1.", 7) == 0 && strncmp(buf + 9, "200", 3) == 0;
}

/* Until a GET is answered. An attempt that failed (refused: supervisord
 * between copies; reset) waits 0.2 ms before the next; one with no reply
 * after 100 ms is abandoned for a new connection: Node's cluster primary can
 * hand a connection to a worker that has just died, and that connection
 * never gets a reply, while the next one is served by the replacement. A
 * request queued behind a slow start loses nothing by it: the new
 * connection waits in the same accept queue. */
static void until_served(int port) {
  while (!get_ok(port, 100)) sleep_ms(0.2);
}

static int listen_on(int port, int* bound) {
  int ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (ls < 0) die("socket");
  int one = 1;
  setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(ls, (struct sockaddr*)&sin, sizeof sin) != 0) die("bind 127.0.0.1");
  if (listen(ls, 4096) != 0) die("listen");
  socklen_t len = sizeof sin;
  getsockname(ls, (struct sockaddr*)&sin, &len);
  *bound = ntohs(sin.sin_port);
  return ls;
}

/* fork + exec argv with ls at fd 3 (not close-on-exec), output to /dev/null. */
static pid_t spawn_worker(int ls, char** argv) {
  pid_t pid = fork();
  if (pid < 0) die("fork");
  if (pid == 0) {
    if (ls == 3) fcntl(3, F_SETFD, 0); /* dup2(3, 3) would keep FD_CLOEXEC */
    else dup2(ls, 3);
    char lp[64];
    snprintf(lp, sizeof lp, "%d", getpid());
    setenv("LISTEN_FDS", "1", 1);
    setenv("LISTEN_PID", lp, 1);
    int null = open("/dev/null", O_RDWR);
    dup2(null, 1);
    dup2(null, 2);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    execv(argv[0], argv);
    _exit(127);
  }
  return pid;
}

/* The live (not zombie) children of pid; returns how many (up to max). */
static int children(pid_t pid, pid_t* out, int max) {
  char path[96];
  snprintf(path, sizeof path, "/proc/%d/task/%d/children", pid, pid);
  FILE* f = fopen(path, "re");
  if (f == NULL) return -1;
  int n = 0, c;
  while (n < max && fscanf(f, "%d", &c) == 1) {
    char sp[64], st[512];
    snprintf(sp, sizeof sp, "/proc/%d/stat", c);
    FILE* s = fopen(sp, "re");
    if (s == NULL) continue;
    size_t got = fread(st, 1, sizeof st - 1, s);
    fclose(s);
    st[got] = 0;
    char* rp = strrchr(st, ')');
    if (rp != NULL && rp[1] == ' ' && rp[2] != 'Z' && rp[2] != 'X') out[n++] = c;
  }
  fclose(f);
  return n;
}

static long vmrss_kib(pid_t pid) {
  char path[64], line[256];
  snprintf(path, sizeof path, "/proc/%d/status", pid);
  FILE* f = fopen(path, "re");
  if (f == NULL) return -1;
  long v = -1;
  while (fgets(line, sizeof line, f) != NULL)
    if (strncmp(line, "VmRSS:", 6) == 0) v = atol(line + 6);
  fclose(f);
  return v;
}

static int cmd_floor(int samples, char** argv) {
  int port;
  int ls = listen_on(0, &port);
  for (int i = 0; i < samples; ++i) {
    double t0 = now_ms();
    pid_t pid = spawn_worker(ls, argv);
    until_served(port);
    printf("%.3f\n", now_ms() - t0);
    fflush(stdout);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    sleep_ms(20);
  }
  return 0;
}

static int cmd_respawn(int port, pid_t mgr, int samples) {
  pid_t last = 0, kids[4];
  until_served(port);
  for (int i = 0; i < samples; ++i) {
    double deadline = now_ms() + 30000;
    int n;
    /* exactly one live child, not the one killed last */
    while ((n = children(mgr, kids, 4)) != 1 || kids[0] == last) {
      if (n < 0) {
        fprintf(stderr, "probe: manager %d is gone\n", mgr);
        return 1;
      }
      if (now_ms() > deadline) {
        fprintf(stderr, "probe: manager %d has %d children, not 1 new one, after 30 s\n", mgr, n);
        return 1;
      }
      sleep_ms(1);
    }
    last = kids[0];
    double t0 = now_ms();
    kill(last, SIGKILL);
    until_served(port);
    printf("%.3f\n", now_ms() - t0);
    fflush(stdout);
    sleep_ms(20);
  }
  return 0;
}

static int cmd_start(int n, const char* fifo, char** argv) {
  unlink(fifo);
  if (mkfifo(fifo, 0600) != 0) die("mkfifo");
  int rd = open(fifo, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  int keep = open(fifo, O_WRONLY | O_CLOEXEC); /* no EOF while no worker has it open */
  if (rd < 0 || keep < 0) die("open fifo");
  setenv("BENCH_READY_FIFO", fifo, 1);
  const char* log = getenv("PROBE_LOG");
  double t0 = now_ms();
  pid_t pid = fork();
  if (pid < 0) die("fork");
  if (pid == 0) {
    setsid();
    int out = open(log != NULL ? log : "/dev/null", O_WRONLY | O_CREAT | O_APPEND, 0644);
    dup2(out, 1);
    dup2(out, 2);
    execvp(argv[0], argv);
    fprintf(stderr, "probe: exec %s: %s\n", argv[0], strerror(errno));
    _exit(127);
  }
  int got = 0, rc = 0;
  struct pollfd p = {.fd = rd, .events = POLLIN};
  while (got < n) {
    if (poll(&p, 1, 180000) <= 0) {
      fprintf(stderr, "probe: %d of %d workers accepting after 180 s\n", got, n);
      rc = 1;
      break;
    }
    char buf[4096];
    ssize_t r = read(rd, buf, sizeof buf);
    if (r > 0) got += (int)r;
    int st;
    if (waitpid(pid, &st, WNOHANG) == pid) {
      fprintf(stderr, "probe: %s exited (status %d) with %d of %d workers accepting\n", argv[0], st, got, n);
      return 1;
    }
  }
  double ms = now_ms() - t0;
  long rss = vmrss_kib(pid);
  if (rc == 0) printf("%.3f %ld\n", ms, rss);
  fflush(stdout);
  kill(pid, SIGTERM);
  double deadline = now_ms() + 60000;
  int st;
  while (waitpid(pid, &st, WNOHANG) == 0) {
    if (now_ms() > deadline) {
      kill(-pid, SIGKILL);
      kill(pid, SIGKILL);
    }
    sleep_ms(5);
  }
  /* workers the manager left behind (none should) */
  sleep_ms(50);
  kill(-pid, SIGKILL);
  close(rd);
  close(keep);
  unlink(fifo);
  return rc;
}

static int cmd_launch(int n, int port, char** argv) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigprocmask(SIG_BLOCK, &set, NULL);
  int bound;
  int ls = listen_on(port, &bound);
  if (port == 0) {
    printf("%d\n", bound);
    fflush(stdout);
  }
  pid_t* pids = calloc((size_t)n, sizeof *pids);
  for (int i = 0; i < n; ++i) pids[i] = spawn_worker(ls, argv);
  int sig;
  sigwait(&set, &sig);
  for (int i = 0; i < n; ++i) kill(pids[i], SIGTERM);
  for (int i = 0; i < n; ++i) waitpid(pids[i], NULL, 0);
  return 0;
}

int main(int argc, char** argv) {
  const char* usage =
      "usage: probe floor SAMPLES -- WORKER [ARG...] | respawn PORT MANAGER_PID SAMPLES |\n"
      "       start N FIFO -- MANAGER [ARG...] | launch N PORT -- WORKER [ARG...] |\n"
      "       wait PORT SECONDS | children PID\n";
  if (argc < 2) goto bad;
  signal(SIGPIPE, SIG_IGN);
  if (strcmp(argv[1], "floor") == 0 && argc >= 5 && strcmp(argv[3], "--") == 0)
    return cmd_floor(atoi(argv[2]), argv + 4);
  if (strcmp(argv[1], "respawn") == 0 && argc == 5) return cmd_respawn(atoi(argv[2]), atoi(argv[3]), atoi(argv[4]));
  if (strcmp(argv[1], "start") == 0 && argc >= 6 && strcmp(argv[4], "--") == 0)
    return cmd_start(atoi(argv[2]), argv[3], argv + 5);
  if (strcmp(argv[1], "launch") == 0 && argc >= 6 && strcmp(argv[4], "--") == 0)
    return cmd_launch(atoi(argv[2]), atoi(argv[3]), argv + 5);
  if (strcmp(argv[1], "wait") == 0 && argc == 4) {
    double deadline = now_ms() + atof(argv[3]) * 1000;
    while (!get_ok(atoi(argv[2]), 5000)) {
      if (now_ms() > deadline) return 1;
      sleep_ms(10);
    }
    return 0;
  }
  if (strcmp(argv[1], "children") == 0 && argc == 3) {
    pid_t kids[65536];
    int n = children(atoi(argv[2]), kids, 65536);
    for (int i = 0; i < n; ++i) printf("%d\n", kids[i]);
    return n < 0;
  }
bad:
  fputs(usage, stderr);
  return 2;
}
