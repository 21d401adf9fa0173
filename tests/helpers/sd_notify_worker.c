/* preforkd-sd-notify-worker — a worker that speaks only sd_notify(3), the way
 * programs built on libsystemd do: no preforkd header, no PREFORKD_NOTIFY_FD.
 *
 *   preforkd-sd-notify-worker [--from-child] [MESSAGE]
 *
 * Sends MESSAGE (default "READY=1\nSTATUS=serving") with sd_notify(0, ...),
 * which reads NOTIFY_SOCKET, then waits for SIGTERM and exits 0. With
 * --from-child the message is sent by a forked child in the worker's
 * process group (as a server's own workers would), which then waits with
 * sd_notify_barrier(3) until preforkd has read it before it exits (as
 * systemd-notify(1) does: a sender already gone when its datagram is read
 * cannot be told), and the worker waits for that child first. Exits 3 if
 * sd_notify() or the barrier fails, or there is no NOTIFY_SOCKET
 * (sd_notify returns 0 then), saying why on stderr. */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

static int notify(const char *message) {
  int r = sd_notify(0, message);
  if (r > 0) return 0;
  fprintf(stderr, "preforkd-sd-notify-worker: sd_notify: %s\n",
          r == 0 ? "no NOTIFY_SOCKET" : strerror(-r));
  return 3;
}

int main(int argc, char **argv) {
  int from_child = argc > 1 && strcmp(argv[1], "--from-child") == 0;
  const char *message = argc > 1 + from_child ? argv[1 + from_child] : "READY=1\nSTATUS=serving";
  sigset_t term;
  sigemptyset(&term);
  sigaddset(&term, SIGTERM);
  sigprocmask(SIG_BLOCK, &term, NULL);
  if (from_child) {
    pid_t child = fork();
    if (child < 0) return 3;
    if (child == 0) {
      if (notify(message) != 0) _exit(3);
      int r = sd_notify_barrier(0, 10 * 1000000ULL);
      if (r < 0) fprintf(stderr, "preforkd-sd-notify-worker: sd_notify_barrier: %s\n", strerror(-r));
      _exit(r < 0 ? 3 : 0);
    }
    int status = 0;
    if (waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status) != 0) return 3;
  } else if (notify(message) != 0) {
    return 3;
  }
  int sig = 0;
  sigwait(&term, &sig);
  return 0;
}
