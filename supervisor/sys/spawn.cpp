#include "sys/spawn.hpp"

#include <fcntl.h>
#include <grp.h>
#include <sched.h>
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

// The child shares preforkd's memory (CLONE_VM) and preforkd sleeps until it
// has exec'd or exited (CLONE_VFORK), so a failure is reported by writing it
// here before _exit: no error pipe, no read.
struct ChildReport {
  int failed;
  int stage;
  int err;
};

// Code that runs on the child's stack, in preforkd's memory: no sanitizer
// instrumentation (ASan would account it to preforkd's own stack), no
// allocation, no locks, raw syscalls only (T22).
#define PREFORKD_CHILD_CODE __attribute__((no_sanitize("address", "undefined")))

// The child side. Only async-signal-safe calls from here to execve.
[[noreturn]] PREFORKD_CHILD_CODE void report_and_exit(ChildReport* report, SpawnError::Stage stage, int err) {
  report->stage = static_cast<int>(stage);
  report->err = err;
  report->failed = 1;
  _exit(127);
}

// T12: LISTEN_PID must be the worker's own pid; no snprintf in the child.
PREFORKD_CHILD_CODE void write_pid(char* out, pid_t pid) {
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
  ChildReport* report;
};

// The process credentials, by raw syscall: glibc's wrappers would, in a
// process it believes multi-threaded, broadcast the change to every thread
// (setxid), and this child shares the parent's memory and thread state.
PREFORKD_CHILD_CODE int raw_setgroups(size_t n, const gid_t* list) {
  return static_cast<int>(syscall(SYS_setgroups, n, list));
}
PREFORKD_CHILD_CODE int raw_setgid(gid_t gid) { return static_cast<int>(syscall(SYS_setgid, gid)); }
PREFORKD_CHILD_CODE int raw_setuid(uid_t uid) { return static_cast<int>(syscall(SYS_setuid, uid)); }

PREFORKD_CHILD_CODE int run_child(void* arg) {
  using Stage = SpawnError::Stage;
  const ChildPlan& plan = *static_cast<const ChildPlan*>(arg);
  const SpawnRequest& req = *plan.req;
  ChildReport* report = plan.report;

  // T17: lead our own process group (the parent does the same, shell idiom).
  if (setpgid(0, 0) != 0) report_and_exit(report, Stage::Setpgid, errno);

  // T11: move every source that lies in the target range above it first,
  // then dup2 into place: dup2 onto a fresh number clears FD_CLOEXEC, and no
  // source can be clobbered by an earlier dup2. (preforkd's own fds are
  // above the range but for 0-2, so this is usually one dup2 per fd.)
  int tmp[64];
  size_t nfds = req.fds.size();
  if (nfds > 64) report_and_exit(report, Stage::Fds, EMFILE);
  for (size_t i = 0; i < nfds; ++i) {
    tmp[i] = req.fds[i].src;
    if (tmp[i] > plan.max_dst) continue;
    tmp[i] = fcntl(req.fds[i].src, F_DUPFD_CLOEXEC, plan.max_dst + 1);
    if (tmp[i] < 0) report_and_exit(report, Stage::Fds, errno);
  }
  for (size_t i = 0; i < nfds; ++i) {
    if (dup2(tmp[i], req.fds[i].dst) < 0) report_and_exit(report, Stage::Fds, errno);
  }

  // T5: nothing above the mapped range survives exec (close-on-exec rather
  // than closed: fewer syscalls, same effect at execve).
  if (syscall(SYS_close_range, plan.max_dst + 1, ~0U, CLOSE_RANGE_CLOEXEC) != 0) {
    // Pre-5.11 kernels: close them.
    if (syscall(SYS_close_range, plan.max_dst + 1, ~0U, 0) != 0) report_and_exit(report, Stage::CloseRange, errno);
  }

  if (plan.listen_pid_entry != nullptr)
    write_pid(plan.listen_pid_entry + sizeof kListenPidPrefix - 1, static_cast<pid_t>(syscall(SYS_getpid)));

  if (req.umask) ::umask(*req.umask);
  if (!req.directory.empty() && chdir(req.directory.c_str()) != 0)
    report_and_exit(report, Stage::Chdir, errno);
  if (req.nofile_restore && setrlimit(RLIMIT_NOFILE, &*req.nofile_restore) != 0)
    report_and_exit(report, Stage::Rlimit, errno);
  for (const auto& [resource, value] : req.rlimits) {
    if (setrlimit(static_cast<__rlimit_resource>(resource), &value) != 0)
      report_and_exit(report, Stage::Rlimit, errno);
  }
  if (req.groups && raw_setgroups(req.groups->size(), req.groups->data()) != 0)
    report_and_exit(report, Stage::Groups, errno);
  if (req.gid && raw_setgid(*req.gid) != 0) report_and_exit(report, Stage::Gid, errno);
  if (req.uid) {
    if (raw_setuid(*req.uid) != 0) report_and_exit(report, Stage::Uid, errno);
    if (getuid() != *req.uid || geteuid() != *req.uid) report_and_exit(report, Stage::Uid, EPERM);
  }

  // T15: die with preforkd; if it already died, the check catches the race.
  // After setgid/setuid: a change of effective uid or gid clears the setting
  // (prctl(2)), so a worker run as `user:` set earlier would outlive us.
  if (req.pdeathsig != 0) {
    if (prctl(PR_SET_PDEATHSIG, req.pdeathsig) != 0) report_and_exit(report, Stage::Pdeathsig, errno);
    if (getppid() != plan.parent_pid) _exit(128 + req.pdeathsig);
  }

  // T7: dispositions back to default (1..31 only: glibc owns the RT signals);
  // T6: then the empty mask. Without CLONE_SIGHAND these are the child's own.
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  for (int s = 1; s < 32; ++s) {
    if (s == SIGKILL || s == SIGSTOP) continue;
    sigaction(s, &dfl, nullptr);
  }
  sigset_t empty;
  sigemptyset(&empty);
  if (sigprocmask(SIG_SETMASK, &empty, nullptr) != 0) report_and_exit(report, Stage::Signals, errno);

  execve(req.path.c_str(), plan.argv, plan.envp);
  report_and_exit(report, Stage::Exec, errno);
}

// The child's stack. preforkd sleeps while a child runs on it and the child
// leaves it at execve or _exit, so one serves every spawn; only the pages a
// child touches (a few) count in preforkd's RSS.
alignas(64) char child_stack[64 * 1024];

const char* stage_name(SpawnError::Stage s) {
  switch (s) {
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
  std::string text = errno_message(what, err);
  // The usual cause (issue #15): `user:` or `group:` in a config run without root.
  if ((stage == Stage::Uid || stage == Stage::Gid || stage == Stage::Groups) && err == EPERM && ::geteuid() != 0)
    text += " (preforkd runs as uid " + std::to_string(::geteuid()) +
            ", not root: it cannot switch workers to another user or group; see preforkd -t)";
  return text;
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

  ChildReport report{0, 0, 0};
  ChildPlan plan{&req, argv.data(), envp.data(), req.set_listen_pid ? listen_pid : nullptr, 2, getpid(), &report};
  for (const auto& m : req.fds) plan.max_dst = std::max(plan.max_dst, m.dst);

  SpawnResult result;
  if (int err = fault::injected("fork")) {  // tests only (sys/fault.hpp): as if clone() failed
    result.error = SpawnError{SpawnError::Stage::Fork, err};
    return result;
  }

  // No copy of preforkd's page tables (and no copy-on-write faults for it
  // afterwards): the child borrows preforkd's memory until its execve, and
  // preforkd sleeps until then (CLONE_VFORK). What the exec'd program then
  // does (loading its libraries...) runs in parallel with preforkd.
  // T9: no signal may reach the child between clone and its own reset.
  sigset_t all, saved;
  sigfillset(&all);
  sigprocmask(SIG_SETMASK, &all, &saved);
  pid_t pid = clone(run_child, child_stack + sizeof child_stack, CLONE_VM | CLONE_VFORK | SIGCHLD, &plan);
  int clone_errno = errno;
  sigprocmask(SIG_SETMASK, &saved, nullptr);
  if (pid < 0) {
    result.error = SpawnError{SpawnError::Stage::Fork, clone_errno};
    return result;
  }
  setpgid(pid, pid);  // T17: whichever side runs first wins; EACCES after exec is fine

  if (!report.failed) {  // the child reached execve, and it worked
    result.pid = pid;
    return result;
  }
  // The child failed before or at exec and has exited: reap it here so it
  // never shows up as a worker exit.
  int status = 0;
  retry_on_eintr([&] { return ::waitpid(pid, &status, 0); });
  result.error = SpawnError{static_cast<SpawnError::Stage>(report.stage), report.err};
  return result;
}

}  // namespace preforkd::sys
