#include "sys/spawn.hpp"

#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <linux/close_range.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <memory>

#include "sys/error.hpp"
#include "sys/fault.hpp"
#include "sys/io.hpp"
#include "sys/unique_fd.hpp"

namespace preforkd::sys {

namespace {

constexpr const char kListenPidPrefix[] = "LISTEN_PID=";
constexpr size_t kListenPidSize = sizeof kListenPidPrefix + 20;

// The child shares preforkd's memory (CLONE_VM). A failure is reported by
// writing it here before _exit: spawn() (CLONE_VFORK) reads it when clone
// returns; spawn_async() when the child has left (StartingChild).
struct ChildReport {
  volatile int failed;
  volatile int stage;
  volatile int err;
};

// Code that runs on the child's stack, in preforkd's memory: no sanitizer
// instrumentation (ASan would account it to preforkd's own stack), no
// allocation, no locks, no libc call (T22).
#define PREFORKD_CHILD_CODE __attribute__((no_sanitize("address", "undefined")))

// Raw system calls for the child: -errno on failure, and never a write to
// errno. With spawn_async() preforkd runs on while the child runs, and the
// two share preforkd's thread-local storage (no CLONE_SETTLS): a glibc
// wrapper's errno write in the child would land in preforkd's errno.
#if defined(__x86_64__)
#define PREFORKD_RAW_SYSCALLS 1
PREFORKD_CHILD_CODE __attribute__((always_inline)) inline long raw(long n, long a = 0, long b = 0, long c = 0,
                                                                   long d = 0) {
  long ret;
  register long r10 __asm__("r10") = d;
  __asm__ volatile("syscall" : "=a"(ret) : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10) : "rcx", "r11", "memory");
  return ret;
}
#elif defined(__aarch64__)
#define PREFORKD_RAW_SYSCALLS 1
PREFORKD_CHILD_CODE __attribute__((always_inline)) inline long raw(long n, long a = 0, long b = 0, long c = 0,
                                                                   long d = 0) {
  register long x8 __asm__("x8") = n;
  register long x0 __asm__("x0") = a;
  register long x1 __asm__("x1") = b;
  register long x2 __asm__("x2") = c;
  register long x3 __asm__("x3") = d;
  __asm__ volatile("svc 0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2), "r"(x3) : "memory");
  return x0;
}
#else
// Elsewhere: syscall(2), which sets errno on failure; spawn_async() then
// falls back to spawn() (preforkd waits, as with vfork).
#define PREFORKD_RAW_SYSCALLS 0
PREFORKD_CHILD_CODE inline long raw(long n, long a = 0, long b = 0, long c = 0, long d = 0) {
  long r = syscall(n, a, b, c, d);
  return r < 0 ? -errno : r;
}
#endif

// The child side, from here to execve.
[[noreturn]] PREFORKD_CHILD_CODE void report_and_exit(ChildReport* report, SpawnError::Stage stage, long err) {
  report->stage = static_cast<int>(stage);
  report->err = static_cast<int>(err);
  report->failed = 1;
  for (;;) raw(SYS_exit, 127);
}

// T12: LISTEN_PID must be the worker's own pid; no snprintf in the child.
PREFORKD_CHILD_CODE void write_pid(char* out, long pid) {
  char digits[24];
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
  int keep_fd;  // spawn_async: the write end of the watch pipe (CLOEXEC, above max_dst); else -1
  pid_t parent_pid;
  ChildReport* report;
};

PREFORKD_CHILD_CODE int run_child(void* arg) {
  using Stage = SpawnError::Stage;
  const ChildPlan& plan = *static_cast<const ChildPlan*>(arg);
  const SpawnRequest& req = *plan.req;
  ChildReport* report = plan.report;
  long r = 0;

  // T17: lead our own process group (the parent does the same, shell idiom).
  if ((r = raw(SYS_setpgid, 0, 0)) != 0) report_and_exit(report, Stage::Setpgid, -r);

  // T11: move every source that lies in the target range above it first,
  // then dup3 into place: dup3 onto a fresh number clears FD_CLOEXEC, and no
  // source can be clobbered by an earlier dup3. (preforkd's own fds are
  // above the range but for 0-2, so this is usually one dup3 per fd; a
  // source is never its own target after the move, as dup3 requires.)
  int tmp[64];
  size_t nfds = req.fds.size();
  if (nfds > 64) report_and_exit(report, Stage::Fds, EMFILE);
  for (size_t i = 0; i < nfds; ++i) {
    tmp[i] = req.fds[i].src;
    if (tmp[i] > plan.max_dst) continue;
    r = raw(SYS_fcntl, req.fds[i].src, F_DUPFD_CLOEXEC, plan.max_dst + 1);
    if (r < 0) report_and_exit(report, Stage::Fds, -r);
    tmp[i] = static_cast<int>(r);
  }
  for (size_t i = 0; i < nfds; ++i) {
    if ((r = raw(SYS_dup3, tmp[i], req.fds[i].dst, 0)) < 0) report_and_exit(report, Stage::Fds, -r);
  }

  // spawn_async: the watch pipe's end moves to the first number above the
  // range, so that execve, which closes close-on-exec fds in ascending
  // order, closes it first: once any other fd of preforkd's is gone from
  // the child, preforkd can already read EOF (tests rely on that order).
  int keep = plan.keep_fd;
  if (keep >= 0 && keep != plan.max_dst + 1) {
    if ((r = raw(SYS_dup3, keep, plan.max_dst + 1, O_CLOEXEC)) < 0) report_and_exit(report, Stage::Fds, -r);
    raw(SYS_close, keep);
    keep = plan.max_dst + 1;
  }

  // T5: nothing above the mapped range survives exec (close-on-exec rather
  // than closed: fewer syscalls, same effect at execve).
  if (raw(SYS_close_range, plan.max_dst + 1, ~0U, CLOSE_RANGE_CLOEXEC) != 0) {
    // Pre-5.11 kernels: close them, but the watch pipe, which must stay open
    // until execve closes it.
    r = raw(SYS_close_range, keep < 0 ? plan.max_dst + 1 : keep + 1, ~0U, 0);
    if (r != 0) report_and_exit(report, Stage::CloseRange, -r);
  }

  if (plan.listen_pid_entry != nullptr)
    write_pid(plan.listen_pid_entry + sizeof kListenPidPrefix - 1, raw(SYS_getpid));

  if (req.umask) raw(SYS_umask, static_cast<long>(*req.umask));
  if (!req.directory.empty() && (r = raw(SYS_chdir, reinterpret_cast<long>(req.directory.c_str()))) != 0)
    report_and_exit(report, Stage::Chdir, -r);
  if (req.nofile_restore &&
      (r = raw(SYS_prlimit64, 0, RLIMIT_NOFILE, reinterpret_cast<long>(&*req.nofile_restore), 0)) != 0)
    report_and_exit(report, Stage::Rlimit, -r);
  for (const auto& limit : req.rlimits) {
    if ((r = raw(SYS_prlimit64, 0, limit.first, reinterpret_cast<long>(&limit.second), 0)) != 0)
      report_and_exit(report, Stage::Rlimit, -r);
  }
  // The credentials by raw syscall too: glibc's wrappers would, in a process
  // it believes multi-threaded, broadcast the change to every thread (setxid).
  if (req.groups &&
      (r = raw(SYS_setgroups, static_cast<long>(req.groups->size()), reinterpret_cast<long>(req.groups->data()))) != 0)
    report_and_exit(report, Stage::Groups, -r);
  if (req.gid && (r = raw(SYS_setgid, static_cast<long>(*req.gid))) != 0) report_and_exit(report, Stage::Gid, -r);
  if (req.uid) {
    if ((r = raw(SYS_setuid, static_cast<long>(*req.uid))) != 0) report_and_exit(report, Stage::Uid, -r);
    if (raw(SYS_getuid) != static_cast<long>(*req.uid) || raw(SYS_geteuid) != static_cast<long>(*req.uid))
      report_and_exit(report, Stage::Uid, EPERM);
  }

  // T15: die with preforkd; if it already died, the check catches the race.
  // After setgid/setuid: a change of effective uid or gid clears the setting
  // (prctl(2)), so a worker run as `user:` set earlier would outlive us.
  if (req.pdeathsig != 0) {
    if ((r = raw(SYS_prctl, PR_SET_PDEATHSIG, req.pdeathsig)) != 0) report_and_exit(report, Stage::Pdeathsig, -r);
    if (raw(SYS_getppid) != plan.parent_pid)
      for (;;) raw(SYS_exit, 128 + req.pdeathsig);
  }

  // T7: dispositions back to default (1..31 only: glibc owns the RT signals);
  // T6: then the empty mask. Without CLONE_SIGHAND these are the child's own.
  // The kernel's sigaction: handler first, then flags, restorer and mask on
  // x86-64, flags and mask elsewhere; all zero but the handler (SIG_DFL = 0)
  // reads the same in both layouts.
  unsigned long dfl[4] = {0, 0, 0, 0};
  unsigned long empty_mask = 0;
  for (int s = 1; s < 32; ++s) {
    if (s == SIGKILL || s == SIGSTOP) continue;
    raw(SYS_rt_sigaction, s, reinterpret_cast<long>(dfl), 0, sizeof empty_mask);
  }
  if ((r = raw(SYS_rt_sigprocmask, SIG_SETMASK, reinterpret_cast<long>(&empty_mask), 0, sizeof empty_mask)) != 0)
    report_and_exit(report, Stage::Signals, -r);

  r = raw(SYS_execve, reinterpret_cast<long>(req.path.c_str()), reinterpret_cast<long>(plan.argv),
          reinterpret_cast<long>(plan.envp));
  report_and_exit(report, Stage::Exec, -r);
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

namespace {

// argv and envp for execve, built in the parent (may allocate); the strings
// stay in `req`, which must not change until the child has left.
void build_arrays(const SpawnRequest& req, char* listen_pid, std::vector<char*>& argv, std::vector<char*>& envp) {
  argv.reserve(req.argv.size() + 1);
  for (const auto& a : req.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  std::memcpy(listen_pid, kListenPidPrefix, sizeof kListenPidPrefix);
  envp.reserve(req.env.size() + 2);
  for (const auto& e : req.env) envp.push_back(const_cast<char*>(e.c_str()));
  if (req.set_listen_pid) envp.push_back(listen_pid);
  envp.push_back(nullptr);
}

int max_target(const SpawnRequest& req) {
  int max_dst = 2;
  for (const auto& m : req.fds) max_dst = std::max(max_dst, m.dst);
  return max_dst;
}

// T9: no signal may reach the child between clone and its own reset.
pid_t clone_blocked(void* stack_top, int flags, ChildPlan* plan, int& err) {
  sigset_t all, saved;
  sigfillset(&all);
  sigprocmask(SIG_SETMASK, &all, &saved);
  pid_t pid = clone(run_child, stack_top, flags, plan);
  err = errno;
  sigprocmask(SIG_SETMASK, &saved, nullptr);
  if (pid > 0) setpgid(pid, pid);  // T17: whichever side runs first wins; EACCES after exec is fine
  return pid;
}

}  // namespace

SpawnResult spawn(const SpawnRequest& req) {
  std::vector<char*> argv, envp;
  char listen_pid[kListenPidSize];
  build_arrays(req, listen_pid, argv, envp);
  ChildReport report{0, 0, 0};
  ChildPlan plan{&req, argv.data(), envp.data(), req.set_listen_pid ? listen_pid : nullptr, max_target(req), -1,
                 getpid(), &report};

  SpawnResult result;
  if (int err = fault::injected("fork")) {  // tests only (sys/fault.hpp): as if clone() failed
    result.error = SpawnError{SpawnError::Stage::Fork, err};
    return result;
  }

  // No copy of preforkd's page tables (and no copy-on-write faults for it
  // afterwards): the child borrows preforkd's memory until its execve, and
  // preforkd sleeps until then (CLONE_VFORK). What the exec'd program then
  // does (loading its libraries...) runs in parallel with preforkd.
  int clone_errno = 0;
  pid_t pid = clone_blocked(child_stack + sizeof child_stack, CLONE_VM | CLONE_VFORK | SIGCHLD, &plan, clone_errno);
  if (pid < 0) {
    result.error = SpawnError{SpawnError::Stage::Fork, clone_errno};
    return result;
  }
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

// ---- spawn_async ----

struct StartingChild::State {
  SpawnRequest req;
  std::vector<char*> argv, envp;
  char listen_pid[kListenPidSize];
  ChildReport report{0, 0, 0};
  ChildPlan plan{};
  alignas(64) char stack[kStartingStackSize];
};

namespace {

// States are kept for reuse (at most kStatePool): a start's 16 KiB stack
// allocated and freed for each worker, between the allocations that worker
// keeps, fragmented the heap (preforkd's RSS with 1000 workers went from
// 9.6 to 22 MB).
constexpr size_t kStatePool = 64;
std::vector<std::unique_ptr<StartingChild::State>>& state_pool() {
  static std::vector<std::unique_ptr<StartingChild::State>> pool;
  return pool;
}

std::unique_ptr<StartingChild::State> take_state() {
  auto& pool = state_pool();
  if (pool.empty()) return std::unique_ptr<StartingChild::State>(new StartingChild::State);  // stack not zeroed
  auto st = std::move(pool.back());
  pool.pop_back();
  return st;
}

void give_back(std::unique_ptr<StartingChild::State> st) {
  if (!st) return;
  st->req = SpawnRequest{};
  st->argv.clear();
  st->envp.clear();
  st->report.failed = 0;
  st->report.stage = 0;
  st->report.err = 0;
  auto& pool = state_pool();
  if (pool.size() < kStatePool) pool.push_back(std::move(st));
}

}  // namespace

StartingChild::StartingChild() = default;

StartingChild::~StartingChild() {
  if (state_ == nullptr) return;
  if (left_ || pid_ <= 0 || !watch_) {  // no child runs on this memory
    give_back(std::move(state_));
    return;
  }
  // Destroyed while the child may still run on this memory (preforkd is
  // going away with a start in flight): wait for it to leave, briefly; if it
  // does not (stopped by SIGSTOP?), leak the memory rather than pull it from
  // under the child.
  pollfd p{watch_.get(), POLLIN, 0};
  for (int i = 0; i < 100; ++i) {
    int n = ::poll(&p, 1, 10);
    if (n > 0) {
      char c;
      if (::read(watch_.get(), &c, 1) == 0) {
        give_back(std::move(state_));
        return;
      }
    }
  }
  (void)state_.release();
}

bool StartingChild::left() {
  if (left_) return true;
  char c;
  ssize_t n = ::read(watch_.get(), &c, 1);
  left_ = n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
  return left_;
}

std::optional<SpawnError> StartingChild::failure() const {
  if (!left_ || !state_->report.failed) return std::nullopt;
  return SpawnError{static_cast<SpawnError::Stage>(state_->report.stage), state_->report.err};
}

const SpawnRequest& StartingChild::request() const { return state_->req; }

AsyncSpawnResult spawn_async(SpawnRequest req) {
  AsyncSpawnResult result;
#if !PREFORKD_RAW_SYSCALLS
  {
    SpawnResult r = spawn(req);
    if (r.error) {
      result.error = r.error->describe(req);
      return result;
    }
    // Already exec'd: a child whose watch fd reads EOF at once.
    auto child = std::unique_ptr<StartingChild>(new StartingChild());
    child->state_ = take_state();
    child->state_->req = std::move(req);
    child->pid_ = r.pid;
    child->left_ = true;
    result.child = std::move(child);
    return result;
  }
#else
  if (int err = fault::injected("fork")) {  // tests only (sys/fault.hpp): as if clone() failed
    result.error = SpawnError{SpawnError::Stage::Fork, err}.describe(req);
    return result;
  }
  auto child = std::unique_ptr<StartingChild>(new StartingChild());
  child->state_ = take_state();
  StartingChild::State& st = *child->state_;
  st.req = std::move(req);
  build_arrays(st.req, st.listen_pid, st.argv, st.envp);
  int max_dst = max_target(st.req);

  // The watch pipe: the child holds the write end (close-on-exec) until its
  // execve or its exit, so the read end reads EOF once the child has left
  // preforkd's memory. The write end sits above the fds the child maps, so
  // none of its dup3s closes it early.
  PipeEnds ends;
  if (int err = make_pipe(ends, true, false); err != 0) {
    result.error = errno_message("pipe", err);
    return result;
  }
  if (ends.write.get() <= max_dst) {
    int moved = ::fcntl(ends.write.get(), F_DUPFD_CLOEXEC, max_dst + 1);
    if (moved < 0) {
      result.error = errno_message("fcntl(F_DUPFD_CLOEXEC)", errno);
      return result;
    }
    ends.write = UniqueFd(moved);
  }
  st.plan = ChildPlan{&st.req, st.argv.data(), st.envp.data(), st.req.set_listen_pid ? st.listen_pid : nullptr,
                      max_dst, ends.write.get(), getpid(), &st.report};

  // As spawn(), without CLONE_VFORK: preforkd goes on while the child sets
  // itself up and execs, on a stack of its own; N children exec in parallel.
  int clone_errno = 0;
  pid_t pid = clone_blocked(st.stack + sizeof st.stack, CLONE_VM | SIGCHLD, &st.plan, clone_errno);
  if (pid < 0) {
    result.error = SpawnError{SpawnError::Stage::Fork, clone_errno}.describe(st.req);
    return result;
  }
  child->pid_ = pid;
  child->watch_ = std::move(ends.read);
  result.child = std::move(child);
  return result;  // `ends.write` closes here: from now on only the child holds it
#endif
}

size_t starts_in_flight() noexcept {
  cpu_set_t set;
  CPU_ZERO(&set);
  long cpus = ::sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : ::sysconf(_SC_NPROCESSORS_ONLN);
  return std::clamp<size_t>(static_cast<size_t>(std::max(1L, cpus)) * 4, 8, 64);
}

}  // namespace preforkd::sys
