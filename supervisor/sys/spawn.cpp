#include "sys/spawn.hpp"

#include <fcntl.h>
#include <grp.h>
#include <linux/close_range.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>

#include "sys/error.hpp"
#include "sys/fault.hpp"
#include "sys/unique_fd.hpp"

namespace preforkd::sys {

namespace {

constexpr const char kListenPidPrefix[] = "LISTEN_PID=";
constexpr size_t kListenPidSize = sizeof kListenPidPrefix + 20;

struct ChildReport {
  int stage;
  int err;
};

// The child side. Only async-signal-safe calls from here to execve.
[[noreturn]] void report_and_exit(int errfd, SpawnError::Stage stage, int err) {
  ChildReport r{static_cast<int>(stage), err};
  ssize_t ignored = ::write(errfd, &r, sizeof r);
  (void)ignored;
  _exit(127);
}

// T12: LISTEN_PID must be the worker's own pid; no snprintf in the child.
void write_pid(char* out, pid_t pid) {
  char digits[16];
  int n = 0;
  auto v = static_cast<unsigned long>(pid);
  do {
    digits[n++] = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v != 0);
  while (n > 0) *out++ = digits[--n];
  *out = '\0';
}

struct ChildPlan {
  const SpawnRequest* req;
  char* const* argv;
  char* const* envp;
  char* listen_pid_entry;  // nullptr unless set_listen_pid
  int max_dst;
  pid_t parent_pid;
};

[[noreturn]] void run_child(const ChildPlan& plan, int errfd) {
  using Stage = SpawnError::Stage;
  const SpawnRequest& req = *plan.req;

  // T17: lead our own process group (the parent does the same, shell idiom).
  if (setpgid(0, 0) != 0) report_and_exit(errfd, Stage::Setpgid, errno);

  // T11: move every source (and the error pipe) above the target range first,
  // then dup2 into place: dup2 onto a fresh number clears FD_CLOEXEC, and no
  // source can be clobbered by an earlier dup2.
  if (errfd <= plan.max_dst) {
    int moved = fcntl(errfd, F_DUPFD_CLOEXEC, plan.max_dst + 1);
    if (moved < 0) report_and_exit(errfd, Stage::Fds, errno);
    errfd = moved;
  }
  int tmp[64];
  size_t nfds = req.fds.size();
  if (nfds > 64) report_and_exit(errfd, Stage::Fds, EMFILE);
  for (size_t i = 0; i < nfds; ++i) {
    tmp[i] = fcntl(req.fds[i].src, F_DUPFD_CLOEXEC, plan.max_dst + 1);
    if (tmp[i] < 0) report_and_exit(errfd, Stage::Fds, errno);
  }
  for (size_t i = 0; i < nfds; ++i) {
    if (dup2(tmp[i], req.fds[i].dst) < 0) report_and_exit(errfd, Stage::Fds, errno);
  }

  // T5: nothing above the mapped range survives exec. CLOSE_RANGE_CLOEXEC
  // keeps the error pipe usable until execve itself.
  if (syscall(SYS_close_range, plan.max_dst + 1, ~0U, CLOSE_RANGE_CLOEXEC) != 0) {
    // Pre-5.11 kernels: close everything but the error pipe.
    if (errfd > plan.max_dst + 1) syscall(SYS_close_range, plan.max_dst + 1, errfd - 1, 0);
    if (syscall(SYS_close_range, errfd + 1, ~0U, 0) != 0) report_and_exit(errfd, Stage::CloseRange, errno);
  }

  if (plan.listen_pid_entry != nullptr)
    write_pid(plan.listen_pid_entry + sizeof kListenPidPrefix - 1, getpid());

  if (req.umask) ::umask(*req.umask);
  if (!req.directory.empty() && chdir(req.directory.c_str()) != 0)
    report_and_exit(errfd, Stage::Chdir, errno);
  if (req.nofile_restore && setrlimit(RLIMIT_NOFILE, &*req.nofile_restore) != 0)
    report_and_exit(errfd, Stage::Rlimit, errno);
  for (const auto& [resource, value] : req.rlimits) {
    if (setrlimit(static_cast<__rlimit_resource>(resource), &value) != 0)
      report_and_exit(errfd, Stage::Rlimit, errno);
  }
  if (req.groups && setgroups(req.groups->size(), req.groups->data()) != 0)
    report_and_exit(errfd, Stage::Groups, errno);
  if (req.gid && setgid(*req.gid) != 0) report_and_exit(errfd, Stage::Gid, errno);
  if (req.uid) {
    if (setuid(*req.uid) != 0) report_and_exit(errfd, Stage::Uid, errno);
    if (getuid() != *req.uid || geteuid() != *req.uid) report_and_exit(errfd, Stage::Uid, EPERM);
  }

  // T15: die with preforkd; if it already died, the check catches the race.
  // After setgid/setuid: a change of effective uid or gid clears the setting
  // (prctl(2)), so a worker run as `user:` set earlier would outlive us.
  if (req.pdeathsig != 0) {
    if (prctl(PR_SET_PDEATHSIG, req.pdeathsig) != 0) report_and_exit(errfd, Stage::Pdeathsig, errno);
    if (getppid() != plan.parent_pid) _exit(128 + req.pdeathsig);
  }

  // T7: dispositions back to default (1..31 only: glibc owns the RT signals);
  // T6: then the empty mask.
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  for (int s = 1; s < 32; ++s) {
    if (s == SIGKILL || s == SIGSTOP) continue;
    sigaction(s, &dfl, nullptr);
  }
  sigset_t empty;
  sigemptyset(&empty);
  if (sigprocmask(SIG_SETMASK, &empty, nullptr) != 0) report_and_exit(errfd, Stage::Signals, errno);

  execve(req.path.c_str(), plan.argv, plan.envp);
  report_and_exit(errfd, Stage::Exec, errno);
}

const char* stage_name(SpawnError::Stage s) {
  switch (s) {
    case SpawnError::Stage::Pipe: return "pipe";
    case SpawnError::Stage::Fork: return "fork";
    case SpawnError::Stage::Setpgid: return "setpgid";
    case SpawnError::Stage::Pdeathsig: return "prctl(PR_SET_PDEATHSIG)";
    case SpawnError::Stage::Fds: return "set up fds";
    case SpawnError::Stage::CloseRange: return "close_range";
    case SpawnError::Stage::Umask: return "umask";
    case SpawnError::Stage::Chdir: return "chdir";
    case SpawnError::Stage::Rlimit: return "setrlimit";
    case SpawnError::Stage::Groups: return "setgroups";
    case SpawnError::Stage::Gid: return "setgid";
    case SpawnError::Stage::Uid: return "setuid";
    case SpawnError::Stage::Signals: return "sigprocmask";
    case SpawnError::Stage::Exec: return "exec";
  }
  return "spawn";
}

}  // namespace

std::string SpawnError::describe(const SpawnRequest& req) const {
  std::string what = stage_name(stage);
  if (stage == Stage::Exec) what += " " + req.path;
  if (stage == Stage::Chdir) what += " " + req.directory;
  if (stage == Stage::Uid && req.uid) what += " " + std::to_string(*req.uid);
  if (stage == Stage::Gid && req.gid) what += " " + std::to_string(*req.gid);
  return errno_message(what, err);
}

SpawnResult spawn(const SpawnRequest& req) {
  // Parent side: build every array the child will use (may allocate).
  std::vector<char*> argv;
  argv.reserve(req.argv.size() + 1);
  for (const auto& a : req.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);

  char listen_pid[kListenPidSize];
  std::memcpy(listen_pid, kListenPidPrefix, sizeof kListenPidPrefix);
  std::vector<char*> envp;
  envp.reserve(req.env.size() + 2);
  for (const auto& e : req.env) envp.push_back(const_cast<char*>(e.c_str()));
  if (req.set_listen_pid) envp.push_back(listen_pid);
  envp.push_back(nullptr);

  ChildPlan plan{&req, argv.data(), envp.data(), req.set_listen_pid ? listen_pid : nullptr, 2,
                 getpid()};
  for (const auto& m : req.fds) plan.max_dst = std::max(plan.max_dst, m.dst);

  SpawnResult result;
  int p[2];
  if (int err = fault::injected("pipe2")) {  // tests only (sys/fault.hpp)
    result.error = SpawnError{SpawnError::Stage::Pipe, err};
    return result;
  }
  if (pipe2(p, O_CLOEXEC) != 0) {
    result.error = SpawnError{SpawnError::Stage::Pipe, errno};
    return result;
  }
  UniqueFd err_read(p[0]), err_write(p[1]);
  if (int err = fault::injected("fork")) {  // as if fork() failed: nothing to reap
    result.error = SpawnError{SpawnError::Stage::Fork, err};
    return result;
  }

  // T9: no signal may reach the child between fork and its own reset.
  sigset_t all, saved;
  sigfillset(&all);
  sigprocmask(SIG_SETMASK, &all, &saved);
  pid_t pid = fork();
  if (pid == 0) {
    err_read.release();  // the child does not close it: it is CLOEXEC anyway
    run_child(plan, err_write.get());
  }
  int fork_errno = errno;
  sigprocmask(SIG_SETMASK, &saved, nullptr);
  if (pid < 0) {
    result.error = SpawnError{SpawnError::Stage::Fork, fork_errno};
    return result;
  }
  setpgid(pid, pid);  // T17: whichever side runs first wins; EACCES after exec is fine
  err_write.reset();

  ChildReport report{};
  ssize_t n = retry_on_eintr([&] { return ::read(err_read.get(), &report, sizeof report); });
  if (n == 0) {  // EOF: execve succeeded and closed the CLOEXEC write end
    result.pid = pid;
    return result;
  }
  // The child failed before or at exec (or the read failed): reap it here so it
  // never shows up as a worker exit.
  int status = 0;
  retry_on_eintr([&] { return ::waitpid(pid, &status, 0); });
  if (n == static_cast<ssize_t>(sizeof report))
    result.error = SpawnError{static_cast<SpawnError::Stage>(report.stage), report.err};
  else
    result.error = SpawnError{SpawnError::Stage::Pipe, n < 0 ? errno : EIO};
  return result;
}

}  // namespace preforkd::sys
