/*
 * preforkd/worker.h — the worker side of the preforkd protocol.
 *
 * Header-only, C99 and C++17, links nothing beyond libc. It is the single
 * source of truth for the protocol's names and limits: the supervisor includes
 * it too, so a name or a limit changes here or nowhere.
 *
 * What a worker inherits (preforkd-worker(7), compatible with systemd socket
 * activation):
 *   - fds 3 .. 3+N-1: the program's listening sockets, in `listen` order, with
 *     LISTEN_FDS=N, LISTEN_PID=<the worker's own pid>, LISTEN_FDNAMES=a:b;
 *   - PREFORKD_NOTIFY_FD=<fd>: the write end of a pipe to the supervisor, plus
 *     PREFORKD_PROGRAM, PREFORKD_SLOT, PREFORKD_GENERATION, and WATCHDOG_USEC
 *     when a watchdog is configured.
 *
 * The notify protocol: lines of at most PREFORKD_NOTIFY_LINE_MAX bytes including
 * the final '\n', each written whole by one write() of at most PIPE_BUF bytes, so
 * that no write is ever split or interleaved with another thread's: one line per
 * write (preforkd_notify*), or several whole lines per write (preforkd_batch_*),
 * each line KEY=VALUE:
 *   READY=1                 ready to serve (programs with `ready: notify`)
 *   STOPPING=1              draining
 *   WATCHDOG=1              heartbeat (send at a third of WATCHDOG_USEC)
 *   STATUS=free text        shown by `preforkctl status`
 *   COUNTER_name=u64        cumulative since the worker started, never decreasing
 *   GAUGE_name=i64          current value
 * where name is [a-z0-9_]{1,PREFORKD_NOTIFY_NAME_MAX}; the supervisor keeps at
 * most PREFORKD_NOTIFY_MAX_NAMES names per worker and drops malformed lines.
 *
 * Rules this header keeps so that workers can't get them wrong:
 *   - Telemetry never blocks and never kills the worker: the supervisor makes
 *     the pipe non-blocking, a full pipe drops the line (-EAGAIN), and a write
 *     to a pipe whose reader is gone returns -EPIPE instead of raising SIGPIPE
 *     (trap T13).
 *   - The inherited listening sockets are open file descriptions shared by
 *     every worker: only per-fd flags (FD_CLOEXEC) are touched here, never a
 *     file-status flag such as O_NONBLOCK (trap T19).
 *   - Without PREFORKD_NOTIFY_FD every notify call is a silent no-op, so a
 *     worker also runs standalone.
 *   - Counting is not reporting: the hot path only bumps a per-thread cell
 *     (preforkd_counter_add_owned: a relaxed load and store, no locked
 *     instruction, no cache line shared with other writers); one thread sums the
 *     cells and reports them at most every interval of a preforkd_rate (e.g. 100
 *     ms), several lines per write() through a preforkd_notify_batch.
 *
 * POSIX.1-2008 is needed (sigtimedwait, pthread_sigmask, clock_gettime). In C,
 * either include this header before any system header or compile with
 * _GNU_SOURCE or _POSIX_C_SOURCE=200809L; C++ compilers define _GNU_SOURCE.
 */
#ifndef PREFORKD_WORKER_H
#define PREFORKD_WORKER_H

#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE) && !defined(_XOPEN_SOURCE) && \
    !defined(_DEFAULT_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#ifndef CLOCK_MONOTONIC
#error "preforkd/worker.h needs POSIX.1-2008: define _POSIX_C_SOURCE=200809L or _GNU_SOURCE before including any system header"
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Names and limits of the protocol ---------------------------------- */

/** First inherited listening socket; the i-th (0-based) is fd 3 + i. */
#define PREFORKD_LISTEN_FDS_START 3

/** Longest notify line in bytes, the final '\n' included (== PIPE_BUF on Linux). */
#define PREFORKD_NOTIFY_LINE_MAX 4096

/** Most COUNTER_/GAUGE_ names the supervisor keeps per worker. */
#define PREFORKD_NOTIFY_MAX_NAMES 64

/** Longest COUNTER_/GAUGE_ name (the part after the prefix), in bytes. */
#define PREFORKD_NOTIFY_NAME_MAX 48

/** Longest datagram NOTIFY_SOCKET takes (several lines, each within
 * PREFORKD_NOTIFY_LINE_MAX); a longer one is dropped whole. */
#define PREFORKD_NOTIFY_DATAGRAM_MAX 8192

#define PREFORKD_ENV_NOTIFY_FD "PREFORKD_NOTIFY_FD"
#define PREFORKD_ENV_PROGRAM "PREFORKD_PROGRAM"
#define PREFORKD_ENV_SLOT "PREFORKD_SLOT"
#define PREFORKD_ENV_GENERATION "PREFORKD_GENERATION"
#define PREFORKD_ENV_LISTEN_FDS "LISTEN_FDS"
#define PREFORKD_ENV_LISTEN_PID "LISTEN_PID"
#define PREFORKD_ENV_LISTEN_FDNAMES "LISTEN_FDNAMES"
#define PREFORKD_ENV_WATCHDOG_USEC "WATCHDOG_USEC"
/** sd_notify(3)'s socket ("@name": abstract), unless notify_socket: false. */
#define PREFORKD_ENV_NOTIFY_SOCKET "NOTIFY_SOCKET"

/* Keys of the notify protocol. */
#define PREFORKD_KEY_READY "READY"
#define PREFORKD_KEY_STOPPING "STOPPING"
#define PREFORKD_KEY_WATCHDOG "WATCHDOG"
#define PREFORKD_KEY_STATUS "STATUS"
#define PREFORKD_KEY_COUNTER_PREFIX "COUNTER_"
#define PREFORKD_KEY_GAUGE_PREFIX "GAUGE_"
#define PREFORKD_KEY_BUSY "BUSY"

#if defined(__GNUC__) || defined(__clang__)
#define PREFORKD_PRINTF_LIKE(fmt_index, args_index) \
  __attribute__((format(printf, fmt_index, args_index)))
#else
#define PREFORKD_PRINTF_LIKE(fmt_index, args_index)
#endif

/* ---- Internal helpers (preforkd__ prefix: not part of the API) ---------- */

/* Parses a decimal unsigned integer that must fill the whole string. */
static inline int preforkd__parse_u64(const char* s, uint64_t* out) {
  uint64_t v = 0;
  if (s == NULL || *s == '\0') return -EINVAL;
  for (; *s != '\0'; ++s) {
    unsigned d;
    if (*s < '0' || *s > '9') return -EINVAL;
    d = (unsigned)(*s - '0');
    if (v > (UINT64_MAX - d) / 10u) return -ERANGE;
    v = v * 10u + d;
  }
  *out = v;
  return 0;
}

/* ---- Inherited listening sockets ---------------------------------------- */

/**
 * Returns the number N of listening sockets passed at fds 3..3+N-1 (sd_listen_fds
 * semantics): 0 when LISTEN_PID is absent or not this process, -errno when the
 * variables are malformed; marks those fds FD_CLOEXEC (a per-fd flag, so the
 * other workers sharing the sockets are unaffected) and, if unset_environment is
 * non-zero, removes LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES from the environment.
 */
static inline int preforkd_listen_fds(int unset_environment) {
  const char* e;
  uint64_t pid = 0, n = 0;
  int r, fd;

  e = getenv(PREFORKD_ENV_LISTEN_PID);
  if (e == NULL) {
    r = 0;
    goto finish;
  }
  r = preforkd__parse_u64(e, &pid);
  if (r < 0) goto finish;
  /* "Is this for us?" A forked child of the worker must not serve the sockets. */
  if (pid == 0 || pid != (uint64_t)getpid()) {
    r = 0;
    goto finish;
  }
  e = getenv(PREFORKD_ENV_LISTEN_FDS);
  if (e == NULL) {
    r = 0;
    goto finish;
  }
  r = preforkd__parse_u64(e, &n);
  if (r < 0) goto finish;
  if (n > (uint64_t)(INT_MAX - PREFORKD_LISTEN_FDS_START)) {
    r = -EINVAL;
    goto finish;
  }
  for (fd = PREFORKD_LISTEN_FDS_START; fd < PREFORKD_LISTEN_FDS_START + (int)n; ++fd) {
    int flags = fcntl(fd, F_GETFD);
    if (flags < 0) {
      r = -errno;
      goto finish;
    }
    /* F_SETFD only: FD_CLOEXEC belongs to this fd, not to the shared open file
     * description. Never F_SETFL here (T19). */
    if (!(flags & FD_CLOEXEC) && fcntl(fd, F_SETFD, flags | FD_CLOEXEC) < 0) {
      r = -errno;
      goto finish;
    }
  }
  r = (int)n;

finish:
  if (unset_environment) {
    unsetenv(PREFORKD_ENV_LISTEN_PID);
    unsetenv(PREFORKD_ENV_LISTEN_FDS);
    unsetenv(PREFORKD_ENV_LISTEN_FDNAMES);
  }
  return r;
}

/**
 * Copies the name of the index-th inherited socket (0-based, fd 3 + index) from
 * LISTEN_FDNAMES (colon-separated) into buf and returns buf, or returns NULL when
 * the variable is absent, has no such entry, or the name does not fit in len bytes
 * with its NUL. Call it before preforkd_listen_fds(1), which unsets the variable.
 */
static inline const char* preforkd_listen_fd_name(int index, char* buf,
                                                                        size_t len) {
  const char* p = getenv(PREFORKD_ENV_LISTEN_FDNAMES);
  const char* end;
  size_t n;
  if (p == NULL || index < 0 || buf == NULL || len == 0) return NULL;
  for (; index > 0; --index) {
    p = strchr(p, ':');
    if (p == NULL) return NULL;
    ++p;
  }
  end = strchr(p, ':');
  n = end != NULL ? (size_t)(end - p) : strlen(p);
  if (n + 1 > len) return NULL;
  memcpy(buf, p, n);
  buf[n] = '\0';
  return buf;
}

/* ---- Notify pipe ---------------------------------------------------------- */

/**
 * Returns the notify fd from PREFORKD_NOTIFY_FD, or -1 when it is absent, not a
 * number, or not an fd open for writing; the environment is read once per
 * translation unit and cached (the variable is not expected to change).
 */
static inline int preforkd_notify_fd(void) {
  /* -2: not looked up yet. Relaxed atomics: every thread computes the same value,
   * so the race is benign, but it must not be a data race. */
  static int cached = -2;
  int fd = __atomic_load_n(&cached, __ATOMIC_RELAXED);
  if (fd == -2) {
    uint64_t v = 0;
    int fl;
    fd = -1;
    if (preforkd__parse_u64(getenv(PREFORKD_ENV_NOTIFY_FD), &v) == 0 && v <= (uint64_t)INT_MAX) {
      fl = fcntl((int)v, F_GETFL);
      if (fl >= 0 && ((fl & O_ACCMODE) == O_WRONLY || (fl & O_ACCMODE) == O_RDWR)) fd = (int)v;
    }
    __atomic_store_n(&cached, fd, __ATOMIC_RELAXED);
  }
  return fd;
}

/*
 * Issues exactly one write() of a complete line (T13 guard). SIGPIPE is blocked in
 * this thread around the write so a vanished supervisor yields EPIPE, not death;
 * if the write raised a SIGPIPE that was not already pending, it is consumed so
 * that restoring the mask cannot deliver it. Returns len, or -errno.
 */
static inline int preforkd__write_line(int fd, const char* buf, size_t len) {
  sigset_t pipe_set, old_mask, pending;
  int was_pending, err, r;
  ssize_t n;

  sigemptyset(&pipe_set);
  sigaddset(&pipe_set, SIGPIPE);
  r = pthread_sigmask(SIG_BLOCK, &pipe_set, &old_mask);
  if (r != 0) return -r;
  sigemptyset(&pending);
  was_pending = sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE) == 1;

  do {
    n = write(fd, buf, len);
  } while (n < 0 && errno == EINTR);
  err = n < 0 ? errno : 0;

  if (err == EPIPE && !was_pending) {
    struct timespec zero = {0, 0};
    while (sigtimedwait(&pipe_set, NULL, &zero) < 0 && errno == EINTR) {
    }
  }
  pthread_sigmask(SIG_SETMASK, &old_mask, NULL);

  if (n < 0) return err == EWOULDBLOCK ? -EAGAIN : -err;
  /* A pipe write of <= PIPE_BUF bytes is all or nothing; a short write means the
   * fd is not a pipe, and half a line is worse than none. */
  if ((size_t)n != len) return -EIO;
  return (int)n;
}

/* Sends buf[0..len) that already ends in '\n'; rejects embedded newlines, which
 * would split one call into several lines. */
static inline int preforkd__send_terminated(int fd, const char* buf,
                                                                  size_t len) {
  if (len < 2 || memchr(buf, '\n', len - 1) != NULL) return -EINVAL;
  return preforkd__write_line(fd, buf, len);
}

/**
 * Sends one notify line (a '\n' is appended if missing) with a single write():
 * returns the bytes written, 0 when there is no notify fd (standalone), -EMSGSIZE
 * when the line with its '\n' exceeds PREFORKD_NOTIFY_LINE_MAX, -EINVAL for an empty
 * line or one with an embedded '\n', -EAGAIN when the pipe is full (the line is
 * dropped: telemetry never blocks), -EPIPE when the supervisor is gone, or -errno.
 */
static inline int preforkd_notify_line(const char* line, size_t len) {
  char buf[PREFORKD_NOTIFY_LINE_MAX];
  int fd = preforkd_notify_fd();
  if (fd < 0) return 0;
  if (line == NULL || len == 0) return -EINVAL;
  if (line[len - 1] == '\n') {
    if (len > PREFORKD_NOTIFY_LINE_MAX) return -EMSGSIZE;
    return preforkd__send_terminated(fd, line, len);
  }
  if (len + 1 > PREFORKD_NOTIFY_LINE_MAX) return -EMSGSIZE;
  memcpy(buf, line, len);
  buf[len] = '\n';
  return preforkd__send_terminated(fd, buf, len + 1);
}

/**
 * Formats one notify line printf-style into a stack buffer and sends it as
 * preforkd_notify_line() does, with the same return values; nothing is formatted
 * when there is no notify fd.
 */
static inline PREFORKD_PRINTF_LIKE(1, 2) int preforkd_notify(
    const char* fmt, ...) {
  /* One spare byte: vsnprintf needs room for its NUL even when the formatted text
   * is exactly PREFORKD_NOTIFY_LINE_MAX bytes ending in '\n'. */
  char buf[PREFORKD_NOTIFY_LINE_MAX + 1];
  va_list ap;
  int n;
  size_t len;
  int fd = preforkd_notify_fd();
  if (fd < 0) return 0;
  if (fmt == NULL) return -EINVAL;
  va_start(ap, fmt);
  n = vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  if (n < 0) return -EINVAL;
  if (n == 0) return -EINVAL;
  if ((size_t)n > PREFORKD_NOTIFY_LINE_MAX) return -EMSGSIZE;
  len = (size_t)n;
  if (buf[len - 1] != '\n') {
    if (len + 1 > PREFORKD_NOTIFY_LINE_MAX) return -EMSGSIZE;
    buf[len++] = '\n';
  }
  return preforkd__send_terminated(fd, buf, len);
}

/* ---- Counters and gauges ----------------------------------------------------- */

/**
 * Returns 1 when name is a valid COUNTER_/GAUGE_ name, [a-z0-9_]{1,PREFORKD_NOTIFY_NAME_MAX}
 * (the part after the prefix), else 0.
 */
static inline int preforkd_metric_name_valid(const char* name) {
  size_t i;
  if (name == NULL) return 0;
  for (i = 0; name[i] != '\0'; ++i) {
    char c = name[i];
    if (i >= PREFORKD_NOTIFY_NAME_MAX) return 0;
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_')) return 0;
  }
  return i > 0;
}

/* Longest COUNTER_/GAUGE_ line: "COUNTER_" + name + "=" + sign + 20 digits + "\n". */
#define PREFORKD__METRIC_LINE_MAX (8 + PREFORKD_NOTIFY_NAME_MAX + 1 + 1 + 20 + 1)

/* Writes "<prefix><name>=[-]<magnitude>\n" into out (PREFORKD__METRIC_LINE_MAX bytes)
 * without printf; returns its length, or -EINVAL for an invalid name. */
static inline int preforkd__metric_line(char* out, const char* prefix, const char* name,
                                        int negative, uint64_t magnitude) {
  char digits[20];
  size_t n = 0, len, plen;
  if (!preforkd_metric_name_valid(name)) return -EINVAL;
  plen = strlen(prefix);
  len = strlen(name);
  memcpy(out, prefix, plen);
  memcpy(out + plen, name, len);
  len += plen;
  out[len++] = '=';
  if (negative) out[len++] = '-';
  do {
    digits[n++] = (char)('0' + (int)(magnitude % 10u));
    magnitude /= 10u;
  } while (magnitude != 0);
  while (n > 0) out[len++] = digits[--n];
  out[len++] = '\n';
  return (int)len;
}

static inline int preforkd__counter_line(char* out, const char* name, uint64_t value) {
  return preforkd__metric_line(out, PREFORKD_KEY_COUNTER_PREFIX, name, 0, value);
}

static inline int preforkd__gauge_line(char* out, const char* name, int64_t value) {
  /* -(value + 1) + 1: |INT64_MIN| without signed overflow. */
  uint64_t magnitude = value < 0 ? (uint64_t)(-(value + 1)) + 1u : (uint64_t)value;
  return preforkd__metric_line(out, PREFORKD_KEY_GAUGE_PREFIX, name, value < 0, magnitude);
}

/**
 * Sends COUNTER_<name>=<value> in one write(). value is cumulative since the worker
 * started and must never decrease (the supervisor drops a decreasing one). Returns
 * the bytes written, -EINVAL for an invalid name (checked even standalone), 0 when
 * there is no notify fd, or the errors of preforkd_notify_line().
 */
static inline int preforkd_notify_counter(const char* name, uint64_t value) {
  char line[PREFORKD__METRIC_LINE_MAX];
  int len = preforkd__counter_line(line, name, value);
  int fd;
  if (len < 0) return len;
  fd = preforkd_notify_fd();
  if (fd < 0) return 0;
  return preforkd__write_line(fd, line, (size_t)len);
}

/** Sends GAUGE_<name>=<value> (a current value) in one write(); returns as preforkd_notify_counter(). */
static inline int preforkd_notify_gauge(const char* name, int64_t value) {
  char line[PREFORKD__METRIC_LINE_MAX];
  int len = preforkd__gauge_line(line, name, value);
  int fd;
  if (len < 0) return len;
  fd = preforkd_notify_fd();
  if (fd < 0) return 0;
  return preforkd__write_line(fd, line, (size_t)len);
}

/**
 * Sends BUSY=1 (busy != 0: serving a request) or BUSY=0 (idle again) in one
 * write(), for preforkd's busy-worker figures and its autoscaler. Say it when a
 * request starts and when it ends (a worker serving many at once: when it goes
 * from none to some and back). A worker that never says it counts as neither
 * busy nor idle. Returns as preforkd_notify_line().
 */
static inline int preforkd_notify_busy(int busy) {
  return preforkd_notify_line(busy ? "BUSY=1" : "BUSY=0", 6);
}

/**
 * Several notify lines sent with as few write()s as possible: lines are buffered
 * whole, and each write() carries at most PREFORKD_NOTIFY_LINE_MAX (== PIPE_BUF)
 * bytes of complete lines, so every write, and thus every line, stays atomic. A line
 * that no longer fits first sends what is buffered (an automatic flush). About 50
 * counter lines fit in one write. Not synchronised: one batch per thread, usually on
 * the stack.
 *
 *   struct preforkd_notify_batch b;
 *   preforkd_batch_init(&b);
 *   preforkd_batch_counter(&b, "requests", requests);
 *   preforkd_batch_gauge(&b, "active_connections", active);
 *   if (preforkd_batch_flush(&b) < 0) ...  (the lines were dropped: retry next time)
 */
struct preforkd_notify_batch {
  size_t len;   /* bytes buffered in buf */
  size_t sent;  /* bytes written by automatic flushes since the last preforkd_batch_flush() */
  int error;    /* first write error (-errno) since the last preforkd_batch_flush(), or 0 */
  char buf[PREFORKD_NOTIFY_LINE_MAX];
};

/** Empties the batch. */
static inline void preforkd_batch_init(struct preforkd_notify_batch* b) {
  b->len = 0;
  b->sent = 0;
  b->error = 0;
}

/* One write() of what is buffered (dropped when there is no notify fd); records the
 * outcome for preforkd_batch_flush(). */
static inline void preforkd__batch_write(struct preforkd_notify_batch* b) {
  int fd, r;
  if (b->len == 0) return;
  fd = preforkd_notify_fd();
  r = fd < 0 ? 0 : preforkd__write_line(fd, b->buf, b->len);
  b->len = 0;
  if (r < 0) {
    if (b->error == 0) b->error = r;
  } else {
    b->sent += (size_t)r;
  }
}

/* Appends a complete line (ending in '\n', len <= PREFORKD_NOTIFY_LINE_MAX). */
static inline void preforkd__batch_append(struct preforkd_notify_batch* b, const char* line,
                                          size_t len) {
  if (b->len + len > sizeof b->buf) preforkd__batch_write(b);
  memcpy(b->buf + b->len, line, len);
  b->len += len;
}

/**
 * Adds any notify line (READY=1, WATCHDOG=1, STATUS=...; a '\n' is appended if
 * missing): 0, or -EINVAL for an empty line or one with an embedded '\n', -EMSGSIZE
 * when it exceeds PREFORKD_NOTIFY_LINE_MAX with its '\n'. Nothing is added on error.
 */
static inline int preforkd_batch_line(struct preforkd_notify_batch* b, const char* line,
                                      size_t len) {
  size_t body;
  if (line == NULL || len == 0) return -EINVAL;
  body = line[len - 1] == '\n' ? len - 1 : len;
  if (body == 0 || memchr(line, '\n', body) != NULL) return -EINVAL;
  if (body + 1 > PREFORKD_NOTIFY_LINE_MAX) return -EMSGSIZE;
  if (b->len + body + 1 > sizeof b->buf) preforkd__batch_write(b);
  memcpy(b->buf + b->len, line, body);
  b->buf[b->len + body] = '\n';
  b->len += body + 1;
  return 0;
}

/** Adds COUNTER_<name>=<value>: 0, or -EINVAL for an invalid name (nothing added). */
static inline int preforkd_batch_counter(struct preforkd_notify_batch* b, const char* name,
                                         uint64_t value) {
  char line[PREFORKD__METRIC_LINE_MAX];
  int len = preforkd__counter_line(line, name, value);
  if (len < 0) return len;
  preforkd__batch_append(b, line, (size_t)len);
  return 0;
}

/** Adds GAUGE_<name>=<value>: 0, or -EINVAL for an invalid name (nothing added). */
static inline int preforkd_batch_gauge(struct preforkd_notify_batch* b, const char* name,
                                       int64_t value) {
  char line[PREFORKD__METRIC_LINE_MAX];
  int len = preforkd__gauge_line(line, name, value);
  if (len < 0) return len;
  preforkd__batch_append(b, line, (size_t)len);
  return 0;
}

/** Adds BUSY=1 (busy != 0) or BUSY=0; see preforkd_notify_busy(). */
static inline int preforkd_batch_busy(struct preforkd_notify_batch* b, int busy) {
  return preforkd_batch_line(b, busy ? "BUSY=1" : "BUSY=0", 6);
}

/**
 * Sends what is buffered (one write()) and empties the batch. Returns the bytes
 * written since the last flush, automatic flushes included (0 when there is nothing
 * or no notify fd), or, if any of those writes failed, the first error (-EAGAIN: the
 * pipe was full and those lines were dropped; -EPIPE: the supervisor is gone).
 */
static inline int preforkd_batch_flush(struct preforkd_notify_batch* b) {
  int r;
  preforkd__batch_write(b);
  r = b->error != 0 ? b->error : (b->sent > (size_t)INT_MAX ? INT_MAX : (int)b->sent);
  b->sent = 0;
  b->error = 0;
  return r;
}

/*
 * Counter cells for the hot path. A cell is a plain uint64_t (int64_t for a gauge)
 * accessed only through these relaxed atomics, so a reporting thread may read it at
 * any time without a data race. Give each writing thread its own cells, on its own
 * cache line (PREFORKD_CACHE_ALIGNED), and let the reporter sum them: a sum of
 * per-thread counters read in any order never decreases from one report to the next.
 */

/** Cache line size assumed for PREFORKD_CACHE_ALIGNED (x86-64, most arm64). */
#define PREFORKD_CACHE_LINE 64
#if defined(__GNUC__) || defined(__clang__)
#define PREFORKD_CACHE_ALIGNED __attribute__((aligned(PREFORKD_CACHE_LINE)))
#else
#define PREFORKD_CACHE_ALIGNED
#endif

/** Adds n to a counter that only the calling thread writes: a relaxed load and store,
 *  no locked instruction (other threads may read it with preforkd_counter_load). */
static inline void preforkd_counter_add_owned(uint64_t* counter, uint64_t n) {
  __atomic_store_n(counter, __atomic_load_n(counter, __ATOMIC_RELAXED) + n, __ATOMIC_RELAXED);
}

/** Adds n to a counter that several threads write: a relaxed atomic read-modify-write. */
static inline void preforkd_counter_add(uint64_t* counter, uint64_t n) {
  (void)__atomic_fetch_add(counter, n, __ATOMIC_RELAXED);
}

/** Reads a counter cell from any thread. */
static inline uint64_t preforkd_counter_load(const uint64_t* counter) {
  return __atomic_load_n(counter, __ATOMIC_RELAXED);
}

/** Sets a gauge cell (its writer thread's current value, e.g. its open connections). */
static inline void preforkd_gauge_store(int64_t* gauge, int64_t value) {
  __atomic_store_n(gauge, value, __ATOMIC_RELAXED);
}

/** Adds delta (possibly negative) to a gauge cell that several threads write. */
static inline void preforkd_gauge_add(int64_t* gauge, int64_t delta) {
  (void)__atomic_fetch_add(gauge, delta, __ATOMIC_RELAXED);
}

/** Reads a gauge cell from any thread. */
static inline int64_t preforkd_gauge_load(const int64_t* gauge) {
  return __atomic_load_n(gauge, __ATOMIC_RELAXED);
}

/* ---- Watchdog and rate limiting -------------------------------------------- */

/**
 * Returns WATCHDOG_USEC when it is set to a positive number, else 0; a worker with
 * a watchdog sends WATCHDOG=1 (or any valid line) at least every third of it.
 */
static inline uint64_t preforkd_watchdog_usec(void) {
  uint64_t v = 0;
  if (preforkd__parse_u64(getenv(PREFORKD_ENV_WATCHDOG_USEC), &v) < 0) return 0;
  return v;
}

/**
 * A rate limiter for telemetry, e.g. COUNTER_ lines at most every 100 ms: one per
 * thread (it is not synchronised). Initialise with PREFORKD_RATE_INIT(interval_ns).
 */
struct preforkd_rate {
  uint64_t last_ns;     /* CLOCK_MONOTONIC_COARSE time of the last "due", 0 = never */
  uint64_t interval_ns; /* minimum spacing between two "due" answers */
};

#define PREFORKD_RATE_INIT(interval_ns) {0, (interval_ns)}

/** Returns the monotonic time in ns from the cheap, ~1-4 ms resolution coarse clock. */
static inline uint64_t preforkd_coarse_now_ns(void) {
  struct timespec ts;
#ifdef CLOCK_MONOTONIC_COARSE
  /* vDSO, no syscall, no TSC read: cheap enough to call per request. */
  if (clock_gettime(CLOCK_MONOTONIC_COARSE, &ts) != 0)
#endif
    clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/**
 * Returns 1 (and records now) when at least interval_ns passed since the last time
 * it returned 1, or on the first call; otherwise 0.
 */
static inline int preforkd_rate_due(struct preforkd_rate* rate) {
  uint64_t now = preforkd_coarse_now_ns();
  if (rate->last_ns != 0 && now - rate->last_ns < rate->interval_ns) return 0;
  /* The coarse clock never reads 0 after boot, but keep "0 = never" unambiguous. */
  rate->last_ns = now != 0 ? now : 1;
  return 1;
}

/**
 * Returns the ns left until preforkd_rate_due() next answers 1 (0 when it would now),
 * by the same coarse clock: a reporting thread sleeps that long, e.g. in sigtimedwait.
 */
static inline uint64_t preforkd_rate_wait_ns(const struct preforkd_rate* rate) {
  uint64_t elapsed;
  if (rate->last_ns == 0) return 0;
  elapsed = preforkd_coarse_now_ns() - rate->last_ns;
  return elapsed >= rate->interval_ns ? 0 : rate->interval_ns - elapsed;
}

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* PREFORKD_WORKER_H */
