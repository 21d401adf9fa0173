#include "sys/proc_tree.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <new>
#include <unordered_set>

#include "sys/error.hpp"

namespace preforkd::sys {

namespace {

// /proc itself, open for one walk: the files of a thousand processes are
// then found from there ("<pid>/stat"), not each from the root. -1 when it
// cannot be opened: the paths are then absolute, as for a single read.
struct ProcDir {
  int fd = -1;
  ProcDir() noexcept { fd = retry_on_eintr([] { return ::open("/proc", O_RDONLY | O_DIRECTORY | O_CLOEXEC); }); }
  ~ProcDir() {
    if (fd >= 0) ::close(fd);
  }
  ProcDir(const ProcDir&) = delete;
  ProcDir& operator=(const ProcDir&) = delete;
};

// "/proc/<rest>", or "<rest>" when `proc` is open; `rest` is printf-formatted.
template <typename... Args>
void proc_path(char* buf, size_t size, int proc, const char* rest, Args... args) {
  int n = proc >= 0 ? 0 : std::snprintf(buf, size, "/proc/");
  std::snprintf(buf + n, size - static_cast<size_t>(n), rest, args...);
}

// The whole of a small /proc file (stat, children) into `out`. 0 or an errno.
int read_proc_file(int proc, const char* path, std::string& out) noexcept {
  out.clear();
  int fd = retry_on_eintr([&] { return ::openat(proc >= 0 ? proc : AT_FDCWD, path, O_RDONLY | O_CLOEXEC); });
  if (fd < 0) return errno;
  int err = 0;
  try {
    char buf[4096];
    for (;;) {
      ssize_t n = retry_on_eintr([&] { return ::read(fd, buf, sizeof buf); });
      if (n < 0) {
        err = errno;
        break;
      }
      if (n == 0) break;
      out.append(buf, static_cast<size_t>(n));
      if (out.size() > (16u << 20)) {  // a children list of millions: give up, never grow without bound
        err = EFBIG;
        break;
      }
    }
  } catch (const std::bad_alloc&) {
    err = ENOMEM;
  }
  ::close(fd);
  return err;
}

// Whitespace-separated pids of a children file.
void parse_pids(const std::string& text, std::vector<pid_t>& out) {
  const char* p = text.c_str();
  while (*p != '\0') {
    char* end = nullptr;
    long v = std::strtol(p, &end, 10);
    if (end == p) {
      ++p;
      continue;
    }
    if (v > 0) out.push_back(static_cast<pid_t>(v));
    p = end;
  }
}

bool all_digits(const char* s) {
  if (*s == '\0') return false;
  for (; *s != '\0'; ++s)
    if (*s < '0' || *s > '9') return false;
  return true;
}

int read_process_at(int proc, pid_t pid, ProcessFacts& out) noexcept {
  if (pid <= 0) return ESRCH;
  char path[48];
  proc_path(path, sizeof path, proc, "%d/stat", static_cast<int>(pid));
  try {
    std::string text;
    if (int err = read_proc_file(proc, path, text)) return err == ENOENT ? ESRCH : err;
    if (text.empty()) return ESRCH;  // reaped between the open and the read
    // "pid (comm) state ppid pgrp session tty_nr tpgid flags minflt cminflt
    // majflt cmajflt utime stime cutime cstime priority nice num_threads
    // itrealvalue starttime ...": comm may hold spaces and ')', so the last
    // ')' ends it.
    size_t open = text.find('(');
    size_t close = text.rfind(')');
    if (open == std::string::npos || close == std::string::npos || close < open) return EINVAL;
    char state = 0;
    int ppid = 0, pgid = 0, sid = 0;
    unsigned long long start = 0;
    int n = std::sscanf(text.c_str() + close + 1,
                        " %c %d %d %d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d %*d %*d %llu", &state,
                        &ppid, &pgid, &sid, &start);
    if (n != 5) return EINVAL;
    out.pid = pid;
    out.ppid = static_cast<pid_t>(ppid);
    out.pgid = static_cast<pid_t>(pgid);
    out.sid = static_cast<pid_t>(sid);
    out.state = state;
    out.start_time = start;
    out.comm = text.substr(open + 1, close - open - 1);
    return 0;
  } catch (const std::bad_alloc&) {
    return ENOMEM;
  }
}

// Without /proc/<pid>/task/<tid>/children: every process's parent, one by one.
int children_by_parent(int proc, pid_t pid, std::vector<pid_t>& out) noexcept {
  DIR* d = ::opendir("/proc");
  if (d == nullptr) return errno;
  try {
    while (dirent* e = ::readdir(d)) {
      if (!all_digits(e->d_name)) continue;
      ProcessFacts f;
      if (read_process_at(proc, static_cast<pid_t>(std::atol(e->d_name)), f) == 0 && f.ppid == pid)
        out.push_back(f.pid);
    }
  } catch (const std::bad_alloc&) {
    ::closedir(d);
    return ENOMEM;
  }
  ::closedir(d);
  return 0;
}

int children_of_at(int proc, pid_t pid, std::vector<pid_t>& out) noexcept {
  out.clear();
  if (pid <= 0) return ESRCH;
  const int at = proc >= 0 ? proc : AT_FDCWD;
  char path[80];
  // A process of one thread (the usual worker) has one children file, found
  // without listing the folder: /proc/<pid>/task links to 2 + its threads.
  // This is what keeps a `status` walk through 1000 workers cheap.
  proc_path(path, sizeof path, proc, "%d/task", static_cast<int>(pid));
  struct stat st {};
  if (retry_on_eintr([&] { return ::fstatat(at, path, &st, 0); }) != 0) return errno == ENOENT ? ESRCH : errno;
  if (st.st_nlink == 3) {
    proc_path(path, sizeof path, proc, "%d/task/%d/children", static_cast<int>(pid), static_cast<int>(pid));
    try {
      std::string text;
      int r = read_proc_file(proc, path, text);
      if (r == 0) {
        parse_pids(text, out);
        return 0;
      }
      if (r != ENOENT) return r;
    } catch (const std::bad_alloc&) {
      return ENOMEM;
    }
    // ENOENT: gone, or threads came and went, or no children files at
    // all: the long way below tells which.
  }
  proc_path(path, sizeof path, proc, "%d/task", static_cast<int>(pid));
  int dfd = retry_on_eintr([&] { return ::openat(at, path, O_RDONLY | O_DIRECTORY | O_CLOEXEC); });
  if (dfd < 0) return errno == ENOENT ? ESRCH : errno;
  DIR* d = ::fdopendir(dfd);
  if (d == nullptr) {
    int err = errno;
    ::close(dfd);
    return err;
  }
  int err = 0;
  bool no_children_file = false;
  try {
    std::string text;
    while (dirent* e = ::readdir(d)) {
      if (!all_digits(e->d_name)) continue;
      std::string file = std::string(e->d_name) + "/children";
      if (int r = read_proc_file(dfd, file.c_str(), text)) {
        if (r == ENOENT) {
          // The thread is gone, or the kernel has no children files at all.
          std::string stat = std::string(e->d_name) + "/stat";
          if (::faccessat(dfd, stat.c_str(), F_OK, 0) == 0) no_children_file = true;
          continue;
        }
        err = r;
        break;
      }
      parse_pids(text, out);
    }
  } catch (const std::bad_alloc&) {
    err = ENOMEM;
  }
  ::closedir(d);
  if (err != 0) return err;
  if (no_children_file) {
    out.clear();
    return children_by_parent(proc, pid, out);
  }
  return 0;
}

// Breadth first below `roots` (see subtree), each process read once.
std::vector<ProcessFacts> walk(int proc, const std::vector<pid_t>& roots, bool include_roots, size_t limit,
                               bool& all) {
  std::vector<ProcessFacts> out;
  std::unordered_set<pid_t> seen;  // a pid met twice (the tree moved while read) is walked once
  std::deque<pid_t> queue;
  std::vector<pid_t> kids;
  auto expand = [&](pid_t parent) {
    int err = children_of_at(proc, parent, kids);
    if (err != 0 && err != ESRCH) all = false;
    for (pid_t k : kids)
      if (seen.insert(k).second) queue.push_back(k);
  };
  for (pid_t r : roots) {
    if (!seen.insert(r).second) continue;
    if (include_roots)
      queue.push_back(r);
    else
      expand(r);
  }
  while (!queue.empty()) {
    if (out.size() >= limit) {
      all = false;
      break;
    }
    pid_t pid = queue.front();
    queue.pop_front();
    ProcessFacts f;
    int err = read_process_at(proc, pid, f);
    if (err != 0) {
      if (err != ESRCH) all = false;
      continue;
    }
    if (f.state == 'Z' || f.state == 'X') continue;  // dead: it holds nothing any more, and has no children
    out.push_back(std::move(f));
    expand(pid);
  }
  return out;
}

}  // namespace

int read_process(pid_t pid, ProcessFacts& out) noexcept { return read_process_at(-1, pid, out); }

int children_of(pid_t pid, std::vector<pid_t>& out) noexcept { return children_of_at(-1, pid, out); }

std::vector<ProcessFacts> subtree(const std::vector<pid_t>& roots, bool include_roots, size_t limit,
                                  bool* complete) {
  ProcDir proc;
  bool all = true;
  auto out = walk(proc.fd, roots, include_roots, limit, all);
  if (complete) *complete = all;
  return out;
}

std::vector<std::vector<ProcessFacts>> subtrees_below(const std::vector<pid_t>& roots, size_t limit,
                                                      bool* complete) {
  ProcDir proc;
  bool all = true;
  std::vector<std::vector<ProcessFacts>> out;
  out.reserve(roots.size());
  for (pid_t r : roots) {
    out.push_back(walk(proc.fd, {r}, false, limit, all));
    limit -= std::min(limit, out.back().size());
  }
  if (complete) *complete = all;
  return out;
}

bool child_exited_unreaped() noexcept {
  siginfo_t info{};
  int rc = retry_on_eintr([&] { return ::waitid(P_ALL, 0, &info, WEXITED | WNOHANG | WNOWAIT); });
  return rc == 0 && info.si_pid != 0;
}

int signal_group(pid_t pgid, int sig) noexcept {
  if (pgid <= 1) return ESRCH;  // never killpg(0) (ourselves) or killpg(1)
  return ::killpg(pgid, sig) == 0 ? 0 : errno;
}

int signal_if_same(pid_t pid, uint64_t start_time, int sig) noexcept {
  if (pid <= 1) return ESRCH;  // never kill(0), kill(-1) or init
  int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (pidfd < 0 && errno != ENOSYS) return errno;
  ProcessFacts f;
  int err = read_process(pid, f);
  if (err == 0 && f.start_time != start_time) err = ESRCH;  // the pid is someone else's now
  if (err == 0) {
    // With a pidfd the check above names the very process it refers to;
    // without one (a kernel before 5.3) a pid reused in between is the
    // remaining, tiny window.
    int rc = pidfd >= 0 ? static_cast<int>(::syscall(SYS_pidfd_send_signal, pidfd, sig, nullptr, 0))
                        : ::kill(pid, sig);
    err = rc == 0 ? 0 : errno;
  }
  if (pidfd >= 0) ::close(pidfd);
  return err;
}

}  // namespace preforkd::sys
