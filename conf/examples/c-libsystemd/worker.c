/* A C HTTP worker on libsystemd: sd_listen_fds(3) for the socket, sd_notify(3)
 * for readiness, status and a counter. It runs unchanged under preforkd and
 * under systemd socket activation. Answers every request with the pid that
 * served it ($GREETING first), one connection at a time.
 *
 *   cc -o worker worker.c $(pkg-config --cflags --libs libsystemd)
 */
#define _GNU_SOURCE /* accept4() */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

static volatile sig_atomic_t stop;

/* No SA_RESTART: a signal makes a blocked accept4() fail with EINTR.
 * SIGALRM repeats the request in case TERM came just before accept4()
 * blocked. */
static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
    alarm(1);
}

static void serve(int c, const char *greeting)
{
    char buf[8192], body[256], head[256];
    size_t have = 0;
    ssize_t n;
    int blen, hlen;

    /* Read the request head (a GET has no body). */
    while (have < sizeof buf - 1) {
        n = read(c, buf + have, sizeof buf - 1 - have);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return;
        have += (size_t)n;
        buf[have] = '\0';
        if (strstr(buf, "\r\n\r\n"))
            break;
    }
    blen = snprintf(body, sizeof body, "%s from c pid %ld\n", greeting, (long)getpid());
    hlen = snprintf(head, sizeof head,
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                    "Content-Length: %d\r\nConnection: close\r\n\r\n", blen);
    if (send(c, head, (size_t)hlen, MSG_NOSIGNAL | MSG_MORE) == hlen)
        send(c, body, (size_t)blen, MSG_NOSIGNAL);
}

int main(void)
{
    struct sigaction sa = { .sa_handler = on_signal };
    const char *greeting = getenv("GREETING") ? getenv("GREETING") : "hello";
    unsigned long long served = 0;
    struct timeval tv = { 10, 0 };
    int c;

    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGALRM, &sa, NULL);

    if (sd_listen_fds(1) < 1) {
        fprintf(stderr, "no listening socket: run me under preforkd or systemd\n");
        return 2;
    }
    sd_notify(0, "READY=1\nSTATUS=idle");

    while (!stop) {
        c = accept4(SD_LISTEN_FDS_START, NULL, NULL, SOCK_CLOEXEC);
        if (c < 0)
            continue; /* EINTR, ECONNABORTED... */
        setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        serve(c, greeting);
        close(c);
        served++;
        sd_notifyf(0, "COUNTER_requests=%llu\nSTATUS=served %llu requests", served, served);
    }
    return 0;
}
