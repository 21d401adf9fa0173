#include "sys/io.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <netinet/in.h>
#include <pwd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <new>

#include "sys/error.hpp"
#include "sys/fault.hpp"

extern char** environ;

namespace preforkd::sys {

static_assert(RLIM_INFINITY == kRlimitInfinity, "config::Rlimit stores RLIM_INFINITY as ~0");

namespace {

// errno of the failed call as the result (0 stays 0).
int result_of(int rc) noexcept { return rc == 0 ? 0 : errno; }

}  // namespace

// ---- fds ----

int make_pipe(PipeEnds& out, bool nonblock_read, bool nonblock_write) noexcept {
  if (int err = fault::injected("pipe2")) return err;
  int p[2];
  // O_NONBLOCK at creation when both ends want it (the notify pipe); else
  // the one end that does gets it by F_SETFL: a fresh pipe end's status
  // flags are known (O_RDONLY / O_WRONLY), so no F_GETFL is needed.
  bool both = nonblock_read && nonblock_write;
  if (::pipe2(p, O_CLOEXEC | (both ? O_NONBLOCK : 0)) != 0) return errno;  // T5
  UniqueFd r(p[0]), w(p[1]);
  if (!both && nonblock_read && ::fcntl(r.get(), F_SETFL, O_RDONLY | O_NONBLOCK) != 0) return errno;
  if (!both && nonblock_write && ::fcntl(w.get(), F_SETFL, O_WRONLY | O_NONBLOCK) != 0) return errno;
  out.read = std::move(r);
  out.write = std::move(w);
  return 0;
}

int open_file(UniqueFd& out, const std::string& path, int flags, unsigned mode) noexcept {
  if (int err = fault::injected("open")) return err;
  // EINTR: a FIFO's open blocks until its other end shows up, and a signal may cut that short.
  int fd = retry_on_eintr([&] { return ::open(path.c_str(), flags | O_CLOEXEC, static_cast<mode_t>(mode)); });
  if (fd < 0) return errno;
  out.reset(fd);
  return 0;
}

int accept_client(int listen_fd, UniqueFd& out) noexcept {
  if (int err = fault::injected("accept4")) return err;
  for (;;) {
    int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
      out.reset(fd);
      return 0;
    }
    if (errno == EINTR || errno == ECONNABORTED) continue;  // ECONNABORTED: that client left; maybe not the next
    return errno == EWOULDBLOCK ? EAGAIN : errno;
  }
}

int open_spare_fd(UniqueFd& out) noexcept {
  int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);  // T5; never blocks, so no EINTR
  if (fd < 0) return errno;
  out.reset(fd);
  return 0;
}

ssize_t read_some(int fd, void* buf, size_t n) noexcept {
  return retry_on_eintr([&] { return ::read(fd, buf, n); });
}

ssize_t send_some(int fd, const void* buf, size_t n) noexcept {
  if (int err = fault::injected("write")) {
    errno = err;
    return -1;
  }
  return retry_on_eintr([&] { return ::send(fd, buf, n, MSG_NOSIGNAL); });  // T13
}

ssize_t write_some(int fd, const void* buf, size_t n) noexcept {
  if (int err = fault::injected("write")) {
    errno = err;
    return -1;
  }
  return retry_on_eintr([&] { return ::write(fd, buf, n); });
}

int read_whole(int fd, std::string& out, size_t max_bytes) noexcept {
  out.clear();
  try {
    char buf[65536];
    off_t offset = 0;
    bool positional = true;
    for (;;) {
      ssize_t n = positional ? retry_on_eintr([&] { return ::pread(fd, buf, sizeof buf, offset); })
                             : read_some(fd, buf, sizeof buf);
      if (n < 0 && positional && errno == ESPIPE && offset == 0) {
        positional = false;  // a pipe or FIFO has no offsets: read it as a stream
        continue;
      }
      if (n < 0) {
        int err = errno;
        out.clear();
        return err;
      }
      if (n == 0) return 0;
      if (out.size() + static_cast<size_t>(n) > max_bytes) {
        out.clear();
        return EFBIG;
      }
      out.append(buf, static_cast<size_t>(n));
      offset += n;
    }
  } catch (const std::bad_alloc&) {
    out.clear();
    return ENOMEM;
  }
}

int write_whole(int fd, const std::string& text) noexcept {
  size_t done = 0;
  while (done < text.size()) {
    ssize_t n = write_some(fd, text.data() + done, text.size() - done);
    if (n < 0) return errno;
    if (n == 0) return EIO;  // cannot happen for a regular file; never loop on it
    done += static_cast<size_t>(n);
  }
  return 0;
}

int set_inheritable(int fd, bool inheritable) noexcept {
  int flags = ::fcntl(fd, F_GETFD);
  if (flags < 0) return errno;
  int want = inheritable ? (flags & ~FD_CLOEXEC) : (flags | FD_CLOEXEC);
  return want == flags ? 0 : result_of(::fcntl(fd, F_SETFD, want));
}

int set_nonblocking(int fd) noexcept {
  int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0) return errno;
  return (flags & O_NONBLOCK) ? 0 : result_of(::fcntl(fd, F_SETFL, flags | O_NONBLOCK));
}

bool fd_is_open(int fd) noexcept { return ::fcntl(fd, F_GETFD) >= 0; }

int memfd(const char* name, UniqueFd& out) noexcept {
  int fd = ::memfd_create(name, MFD_CLOEXEC);
  if (fd < 0) return errno;
  out.reset(fd);
  return 0;
}

// ---- sockets ----

int relisten(int fd, int backlog) noexcept { return result_of(::listen(fd, backlog)); }

bool is_listening_socket(int fd) noexcept {
  int v = 0;
  socklen_t len = sizeof v;
  return ::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &v, &len) == 0 && v != 0;
}

int shutdown_write(int fd) noexcept { return result_of(::shutdown(fd, SHUT_WR)); }

int peer_credentials(int fd, PeerCredentials& out) noexcept {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return errno;
  out.pid = cred.pid;
  out.uid = cred.uid;
  out.gid = cred.gid;
  return 0;
}

// ---- paths ----

int unlink_path(const std::string& path) noexcept { return result_of(::unlink(path.c_str())); }

int write_file_atomic(const std::string& path, const std::string& text) noexcept {
  try {
    const std::string tmp = path + ".tmp";
    UniqueFd fd;
    if (int err = open_file(fd, tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644)) return err;
    if (int err = write_whole(fd.get(), text)) {
      fd.reset();
      ::unlink(tmp.c_str());
      return err;
    }
    fd.reset();  // a close error on a local file we just wrote: nothing to learn from it
    if (::rename(tmp.c_str(), path.c_str()) != 0) {
      int err = errno;
      ::unlink(tmp.c_str());
      return err;
    }
    return 0;
  } catch (const std::bad_alloc&) {
    return ENOMEM;
  }
}

int make_directories(const std::string& dir, unsigned mode, std::string* failed) noexcept {
  try {
    if (dir.empty()) return 0;
    struct stat st {};
    if (::stat(dir.c_str(), &st) == 0) {
      if (S_ISDIR(st.st_mode)) return 0;
      if (failed) *failed = dir;
      return ENOTDIR;
    }
    auto slash = dir.find_last_not_of('/');
    slash = slash == std::string::npos ? std::string::npos : dir.rfind('/', slash);
    if (slash != std::string::npos && slash > 0)
      if (int err = make_directories(dir.substr(0, slash), mode, failed)) return err;
    if (::mkdir(dir.c_str(), static_cast<mode_t>(mode)) != 0 && errno != EEXIST) {
      int err = errno;
      if (failed) *failed = dir;
      return err;
    }
    return 0;
  } catch (const std::bad_alloc&) {
    return ENOMEM;
  }
}

int change_mode(const std::string& path, unsigned mode) noexcept {
  return result_of(::chmod(path.c_str(), static_cast<mode_t>(mode)));
}

int change_group(const std::string& path, gid_t gid) noexcept {
  return result_of(::chown(path.c_str(), static_cast<uid_t>(-1), gid));
}

int file_type(const std::string& path, FileType& out) noexcept {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return errno;
  if (S_ISREG(st.st_mode))
    out = FileType::Regular;
  else if (S_ISDIR(st.st_mode))
    out = FileType::Directory;
  else if (S_ISSOCK(st.st_mode))
    out = FileType::Socket;
  else
    out = FileType::Other;
  return 0;
}

bool can_execute(const std::string& path) noexcept { return ::access(path.c_str(), X_OK) == 0; }

// ---- processes ----

int kill_process(pid_t pid, int sig, bool group) noexcept {
  if (pid <= 0) return ESRCH;  // never kill(0) / kill(-1): that would be everyone
  if (!group) return result_of(::kill(pid, sig));
  if (::kill(-pid, sig) == 0) return 0;
  if (errno != ESRCH) return errno;
  return result_of(::kill(pid, sig));  // no group (yet/any more): the process alone
}

int wait_readable(int fd, int timeout_ms) noexcept {
  pollfd p{fd, POLLIN, 0};
  for (;;) {
    int n = ::poll(&p, 1, timeout_ms);
    if (n >= 0) return n > 0 ? 1 : 0;
    if (errno != EINTR) return -errno;
  }
}

pid_t self_pid() noexcept { return ::getpid(); }
uid_t effective_uid() noexcept { return ::geteuid(); }
gid_t effective_gid() noexcept { return ::getegid(); }

pid_t parent_of(pid_t pid) noexcept {
  if (pid <= 0) return 0;
  char path[32];
  std::snprintf(path, sizeof path, "/proc/%d/stat", static_cast<int>(pid));
  int fd = retry_on_eintr([&] { return ::open(path, O_RDONLY | O_CLOEXEC); });
  if (fd < 0) return 0;
  char buf[1024];
  ssize_t n = read_some(fd, buf, sizeof buf - 1);
  ::close(fd);
  if (n <= 0) return 0;
  buf[n] = '\0';
  // "pid (comm) state ppid ...": comm may hold spaces and ')', so the last ')' ends it.
  char* end = std::strrchr(buf, ')');
  if (end == nullptr) return 0;
  char state = 0;
  int ppid = 0;
  if (std::sscanf(end + 1, " %c %d", &state, &ppid) != 2) return 0;
  return static_cast<pid_t>(ppid);
}

FdLimit raise_fd_limit() noexcept {
  rlimit now{};
  if (::getrlimit(RLIMIT_NOFILE, &now) != 0) return {};
  FdLimit was{now.rlim_cur, now.rlim_max};
  if (now.rlim_cur != now.rlim_max) {
    rlimit raised = now;
    raised.rlim_cur = raised.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &raised);  // best effort: we run with what we have
  }
  return was;
}

void become_child_subreaper() noexcept {
  if (::getpid() != 1) ::prctl(PR_SET_CHILD_SUBREAPER, 1);
}

std::vector<std::string> environment_strings() {
  std::vector<std::string> out;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) out.emplace_back(*e);
  return out;
}

int exec_replace(const std::string& path, const std::vector<std::string>& argv,
                 const std::vector<std::string>& env) noexcept {
  try {
    std::vector<char*> args, envp;
    args.reserve(argv.size() + 1);
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    envp.reserve(env.size() + 1);
    for (const auto& e : env) envp.push_back(const_cast<char*>(e.c_str()));
    envp.push_back(nullptr);
    ::execve(path.c_str(), args.data(), envp.data());
    return errno;
  } catch (const std::bad_alloc&) {
    return ENOMEM;
  }
}

// ---- facts the configuration checks against ----

bool user_exists(const std::string& name) {
  std::vector<char> buf(16384);
  passwd pw{};
  passwd* result = nullptr;
  while (getpwnam_r(name.c_str(), &pw, buf.data(), buf.size(), &result) == ERANGE && buf.size() < (1u << 22))
    buf.resize(buf.size() * 2);
  return result != nullptr;
}

bool group_exists(const std::string& name) {
  std::vector<char> buf(16384);
  group gr{};
  group* result = nullptr;
  while (getgrnam_r(name.c_str(), &gr, buf.data(), buf.size(), &result) == ERANGE && buf.size() < (1u << 22))
    buf.resize(buf.size() * 2);
  return result != nullptr;
}

std::optional<std::string> canonical_ipv4(const std::string& text) {
  in_addr addr{};
  char buf[INET_ADDRSTRLEN] = {};
  if (inet_pton(AF_INET, text.c_str(), &addr) != 1 || inet_ntop(AF_INET, &addr, buf, sizeof buf) == nullptr)
    return std::nullopt;
  return std::string(buf);
}

std::optional<std::string> canonical_ipv6(const std::string& text) {
  in6_addr addr{};
  char buf[INET6_ADDRSTRLEN] = {};
  if (inet_pton(AF_INET6, text.c_str(), &addr) != 1 || inet_ntop(AF_INET6, &addr, buf, sizeof buf) == nullptr)
    return std::nullopt;
  return std::string(buf);
}

const std::vector<RlimitResource>& rlimit_resources() {
  static const std::vector<RlimitResource> table{
      {"as", RLIMIT_AS},           {"core", RLIMIT_CORE},       {"cpu", RLIMIT_CPU},
      {"data", RLIMIT_DATA},       {"fsize", RLIMIT_FSIZE},     {"locks", RLIMIT_LOCKS},
      {"memlock", RLIMIT_MEMLOCK}, {"msgqueue", RLIMIT_MSGQUEUE}, {"nice", RLIMIT_NICE},
      {"nofile", RLIMIT_NOFILE},   {"nproc", RLIMIT_NPROC},     {"rss", RLIMIT_RSS},
      {"rtprio", RLIMIT_RTPRIO},   {"rttime", RLIMIT_RTTIME},   {"sigpending", RLIMIT_SIGPENDING},
      {"stack", RLIMIT_STACK},
  };
  return table;
}

}  // namespace preforkd::sys
