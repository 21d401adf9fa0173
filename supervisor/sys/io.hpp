// io.hpp — the kernel calls the daemon, core and config need, as
// non-throwing twins (STYLE 3.9: "system wrappers used in the loop have
// error-returning twins"), so that no file outside sys/ calls the kernel.
//
// Owns nothing. Contract: every function is noexcept unless it returns an
// allocated value; an `int` result is 0 or an errno value (never -1), a
// `ssize_t` result is a count or -1 with errno set. EINTR is retried where
// that is safe (T16), never for close (UniqueFd). Every fd made here is
// close-on-exec (T5). The calls that can be made to fail on purpose name
// their fault point (sys/fault.hpp, tests only).
// Must never: throw, log, or retry a call whose retry could do harm.
#pragma once

#include <fcntl.h>  // the O_* flags of open_file(), for its callers
#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "sys/unique_fd.hpp"

namespace preforkd::sys {

// ---- fds ----

struct PipeEnds {
  UniqueFd read;
  UniqueFd write;
};
// pipe2(O_CLOEXEC), then O_NONBLOCK on the ends asked for. Fault point "pipe2".
int make_pipe(PipeEnds& out, bool nonblock_read, bool nonblock_write) noexcept;

// open(path, flags | O_CLOEXEC, mode). Fault point "open".
int open_file(UniqueFd& out, const std::string& path, int flags, unsigned mode = 0) noexcept;

// accept4(SOCK_NONBLOCK | SOCK_CLOEXEC); EINTR and ECONNABORTED (a client
// gone before we took it) are retried; EAGAIN when nobody is waiting.
// Fault point "accept4".
int accept_client(int listen_fd, UniqueFd& out) noexcept;

// A spare fd (/dev/null, read-only, close-on-exec) held in reserve: when
// accept() fails with EMFILE, closing it frees the one fd that accepting
// and closing a waiting client needs (libuv's uv__emfile_trick). No fault
// point: it stands in for an fd, it is not an operation that can fail alone.
int open_spare_fd(UniqueFd& out) noexcept;

// read(); EINTR retried. -1 + errno, 0 at EOF.
ssize_t read_some(int fd, void* buf, size_t n) noexcept;
// send(MSG_NOSIGNAL) (T13: a gone peer is EPIPE, never SIGPIPE); EINTR
// retried. -1 + errno. Fault point "write".
ssize_t send_some(int fd, const void* buf, size_t n) noexcept;
// write(); EINTR retried. -1 + errno. Fault point "write".
ssize_t write_some(int fd, const void* buf, size_t n) noexcept;

// Reads from offset 0 to EOF with pread (the file offset is left alone: the
// upgrade's memfd is read twice). A pipe or FIFO (ESPIPE) is read with
// read() instead. EFBIG when there is more than `max_bytes`; `out` is
// empty after any failure.
int read_whole(int fd, std::string& out, size_t max_bytes) noexcept;
// Writes all of `text`, looping over short writes (write_some).
int write_whole(int fd, const std::string& text) noexcept;

int set_inheritable(int fd, bool inheritable) noexcept;  // clears / sets FD_CLOEXEC
int set_nonblocking(int fd) noexcept;                     // O_NONBLOCK on (never on a shared listener: T19)
bool fd_is_open(int fd) noexcept;                         // fcntl(F_GETFD) >= 0

// memfd_create(MFD_CLOEXEC).
int memfd(const char* name, UniqueFd& out) noexcept;

// ---- sockets ----

// listen() again on a bound socket: how a new backlog takes effect.
int relisten(int fd, int backlog) noexcept;
// getsockopt(SO_ACCEPTCONN): a listening stream socket.
bool is_listening_socket(int fd) noexcept;
// shutdown(SHUT_WR): "no more from us", the peer reads EOF after the data.
int shutdown_write(int fd) noexcept;

struct PeerCredentials {
  pid_t pid = 0;  // 0 when the peer is in another pid namespace
  uid_t uid = static_cast<uid_t>(-1);
  gid_t gid = static_cast<gid_t>(-1);
};
// SO_PEERCRED of a connected Unix socket: who was connecting, at connect().
int peer_credentials(int fd, PeerCredentials& out) noexcept;

// ---- paths ----

int unlink_path(const std::string& path) noexcept;
// Writes `text` to `path`.tmp, then renames it over `path`: readers see the
// old or the new file, never half of one (the pidfile).
int write_file_atomic(const std::string& path, const std::string& text) noexcept;
// mkdir -p of `dir` (each missing folder with `mode`). On failure `failed`
// gets the folder that could not be made.
int make_directories(const std::string& dir, unsigned mode, std::string* failed = nullptr) noexcept;
int change_mode(const std::string& path, unsigned mode) noexcept;  // chmod
int change_group(const std::string& path, gid_t gid) noexcept;     // chown(path, -1, gid)

enum class FileType { Regular, Directory, Socket, Other };
// stat() (symlinks followed): what `path` is, or the errno why not.
int file_type(const std::string& path, FileType& out) noexcept;
// access(X_OK) with the real ids, as a shell's `test -x`.
bool can_execute(const std::string& path) noexcept;

// ---- processes ----

// group: kill(-pid, sig) (the worker's process group, T17), then kill(pid,
// sig) if the group is gone (ESRCH) but the process may not be.
int kill_process(pid_t pid, int sig, bool group) noexcept;
// poll(fd, POLLIN) for up to timeout_ms (-1: no limit). 1 ready, 0 timed
// out, or -errno.
int wait_readable(int fd, int timeout_ms) noexcept;
pid_t self_pid() noexcept;
uid_t effective_uid() noexcept;
gid_t effective_gid() noexcept;
// The parent pid from /proc/<pid>/stat; 0 if unknown (gone, or no /proc).
pid_t parent_of(pid_t pid) noexcept;

struct FdLimit {
  unsigned long long soft = 0, hard = 0;
};
// T18: raises our soft RLIMIT_NOFILE to the hard limit (for thousands of
// pipes) and returns the limit as it was, which the workers get back.
FdLimit raise_fd_limit() noexcept;
// T20: PR_SET_CHILD_SUBREAPER, so that our workers' orphans are reaped by
// us; not as pid 1, which gets them anyway.
void become_child_subreaper() noexcept;

// A copy of our environment ("NAME=value").
std::vector<std::string> environment_strings();
// execve(path, argv, env): replaces this process. Returns only on failure,
// with the errno.
int exec_replace(const std::string& path, const std::vector<std::string>& argv,
                 const std::vector<std::string>& env) noexcept;

// ---- facts the configuration checks against ----

// A passwd / group entry by name (getpwnam_r / getgrnam_r; no numeric fallback).
bool user_exists(const std::string& name);
bool group_exists(const std::string& name);

// A numeric address in its canonical text ("127.000.0.1" is refused,
// "::FFFF:1.2.3.4" becomes "::ffff:1.2.3.4"), or nullopt if not numeric.
std::optional<std::string> canonical_ipv4(const std::string& text);
std::optional<std::string> canonical_ipv6(const std::string& text);

// setrlimit resources by their `rlimits:` key ("nofile" → RLIMIT_NOFILE).
struct RlimitResource {
  std::string_view name;
  int resource;
};
const std::vector<RlimitResource>& rlimit_resources();
// RLIM_INFINITY, as stored in config::Rlimit::value.
inline constexpr unsigned long long kRlimitInfinity = ~0ULL;

}  // namespace preforkd::sys
