// preforkd-test-master — an nginx-style master/worker program, for the
// process-tree tests: preforkd starts the master, the master forks its own
// worker processes, and they serve the listening socket on fd 3.
//
//   preforkd-test-master --tag TAG [--workers N]
//
// The master accepts nothing itself: it forks N (default 1) workers, which
// stay in its process group (as nginx's do) and answer every connection
// with "TAG <pid>\n", then close it. A worker that dies is forked again. On
// SIGTERM or SIGINT the master sends SIGTERM to its workers, waits for them
// and exits 0. Killed with SIGKILL, it leaves its workers behind, still
// serving: what preforkd does with them is the point of the tests.
//
// Standard C++17 and POSIX only, one file (tests/CMakeLists.txt).
#include <signal.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

volatile sig_atomic_t g_stop = 0;

extern "C" void on_stop(int) { g_stop = 1; }

[[noreturn]] void usage(const char* why) {
  std::fprintf(stderr, "preforkd-test-master: %s\nusage: preforkd-test-master --tag TAG [--workers N]\n", why);
  std::exit(2);
}

[[noreturn]] void worker_main(const std::string& tag) {
  struct sigaction dfl {};
  sigemptyset(&dfl.sa_mask);
  dfl.sa_handler = SIG_DFL;
  ::sigaction(SIGTERM, &dfl, nullptr);
  ::sigaction(SIGINT, &dfl, nullptr);
  const std::string reply = tag + " " + std::to_string(::getpid()) + "\n";
  for (;;) {
    int c = ::accept4(3, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) {
      if (errno == EINTR || errno == ECONNABORTED || errno == EAGAIN) continue;
      std::fprintf(stderr, "preforkd-test-master: worker %d: accept on fd 3: %s\n", ::getpid(), std::strerror(errno));
      ::_exit(1);
    }
    ssize_t ignored = ::send(c, reply.data(), reply.size(), MSG_NOSIGNAL);
    (void)ignored;
    ::close(c);
  }
}

pid_t fork_worker(const std::string& tag) {
  pid_t pid = ::fork();
  if (pid == 0) worker_main(tag);
  return pid;
}

}  // namespace

int main(int argc, char** argv) {
  std::string tag;
  long workers = 1;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (i + 1 >= argc) usage("an option needs a value");
    if (arg == "--tag") {
      tag = argv[++i];
    } else if (arg == "--workers") {
      workers = std::strtol(argv[++i], nullptr, 10);
      if (workers < 1 || workers > 64) usage("--workers: 1..64");
    } else {
      usage("unknown option");
    }
  }
  if (tag.empty()) usage("--tag is required");

  struct sigaction sa {};
  sigemptyset(&sa.sa_mask);
  sa.sa_handler = on_stop;  // no SA_RESTART: wait() returns EINTR
  ::sigaction(SIGTERM, &sa, nullptr);
  ::sigaction(SIGINT, &sa, nullptr);

  std::vector<pid_t> kids;
  for (long i = 0; i < workers; ++i) {
    pid_t pid = fork_worker(tag);
    if (pid > 0) kids.push_back(pid);
  }
  while (!g_stop) {
    int status = 0;
    pid_t pid = ::wait(&status);
    if (pid < 0) {
      if (errno == EINTR) continue;
      break;  // ECHILD: every fork failed
    }
    auto it = std::find(kids.begin(), kids.end(), pid);
    if (it == kids.end() || g_stop) continue;
    *it = fork_worker(tag);  // as nginx does: a dead worker is replaced
  }
  for (pid_t pid : kids)
    if (pid > 0) ::kill(pid, SIGTERM);
  while (::wait(nullptr) > 0 || errno == EINTR) {
  }
  return 0;
}
