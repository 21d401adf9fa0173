// preforkd-test-worker — a scriptable worker for the sys and integration tests.
//
// It reports what it inherited (fds with their flags, environment, signal mask
// and dispositions, process group, credentials, limits) as JSON, then does what
// the command line scripts: print lines, send notify lines, leave a grandchild
// behind, ignore SIGTERM, exit, crash, or serve connections on fd 3.
//
// Standard C++17 and POSIX only, one file, no libraries (tests/CMakeLists.txt
// builds it alone): on purpose it does not use preforkd/worker.h, so it speaks
// the protocol "by hand" like a worker in any language, and can send malformed
// lines too.
//
// Steps, always in this order whatever the order of the options:
//   1. --dump-state FILE     the state as inherited, captured before anything else
//                            changes it (no handler installed, no fd opened yet)
//   2. --stdout/--stderr     lines, in command-line order
//   3. --notify LINE         LINE + "\n" in one write() to PREFORKD_NOTIFY_FD
//   4. --double-fork         a grandchild in our process group that sleeps forever
//   5. signals               --ignore-term: SIGTERM ignored; else SIGTERM → _exit(0)
//   6. the action            --exit N | --exit-after MS | --kill-self SIG | --serve | pause()
// With --double-fork, the dump file is written after step 4 (with the grandchild's
// pid) instead of at step 1; its content is still the state captured at step 1.
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <utility>
#include <vector>

extern char** environ;

namespace {

constexpr char kUsage[] =
    "usage: preforkd-test-worker [--dump-state FILE] [--stdout TEXT]... [--stderr TEXT]...\n"
    "                            [--notify LINE]... [--double-fork] [--ignore-term]\n"
    "                            [--exit N] [--exit-after MS] [--kill-self SIG] [--serve]\n"
    "FILE may contain %p (the pid). Default action: pause() until SIGTERM (exit 0).\n";

struct Options {
  std::string dump_file;
  std::vector<std::pair<int, std::string>> prints;  // (fd 1 or 2, text), in order
  std::vector<std::string> notify;
  bool double_fork = false;
  bool ignore_term = false;
  bool has_exit = false;
  int exit_code = 0;
  long exit_after_ms = -1;
  int kill_self = 0;
  bool serve = false;
};

[[noreturn]] void usage_error(const std::string& message) {
  std::fprintf(stderr, "preforkd-test-worker: %s\n%s", message.c_str(), kUsage);
  std::exit(2);
}

long parse_long(const std::string& option, const char* text, long min, long max) {
  char* end = nullptr;
  errno = 0;
  long v = std::strtol(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0' || v < min || v > max)
    usage_error(option + ": expected a number in " + std::to_string(min) + ".." +
                std::to_string(max) + ", got '" + text + "'");
  return v;
}

Options parse_options(int argc, char** argv) {
  Options opt;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    }
    if (arg == "--double-fork") {
      opt.double_fork = true;
      continue;
    }
    if (arg == "--ignore-term") {
      opt.ignore_term = true;
      continue;
    }
    if (arg == "--serve") {
      opt.serve = true;
      continue;
    }
    static const char* const kWithValue[] = {"--dump-state", "--stdout", "--stderr", "--notify",
                                             "--exit", "--exit-after", "--kill-self"};
    if (std::find(std::begin(kWithValue), std::end(kWithValue), arg) == std::end(kWithValue))
      usage_error("unknown option '" + arg + "'");
    if (i + 1 >= argc) usage_error("option '" + arg + "' needs a value");
    const char* value = argv[i + 1];
    if (arg == "--dump-state") {
      opt.dump_file = value;
    } else if (arg == "--stdout") {
      opt.prints.emplace_back(STDOUT_FILENO, value);
    } else if (arg == "--stderr") {
      opt.prints.emplace_back(STDERR_FILENO, value);
    } else if (arg == "--notify") {
      opt.notify.emplace_back(value);
    } else if (arg == "--exit") {
      opt.has_exit = true;
      opt.exit_code = static_cast<int>(parse_long(arg, value, 0, 255));
    } else if (arg == "--exit-after") {
      opt.exit_after_ms = parse_long(arg, value, 0, LONG_MAX / 1000000);
    } else {  // --kill-self
      opt.kill_self = static_cast<int>(parse_long(arg, value, 1, SIGRTMAX));
    }
    ++i;
  }
  return opt;
}

// ---- JSON writing -----------------------------------------------------------

// Appends s as a JSON string: quotes, backslash and control characters escaped;
// bytes that are not valid UTF-8 become U+FFFD, so the output is always valid JSON.
void json_string(std::string& out, const std::string& s) {
  static const char kHex[] = "0123456789abcdef";
  out += '"';
  for (std::size_t i = 0; i < s.size();) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
      ++i;
    } else if (c == '\n') {
      out += "\\n";
      ++i;
    } else if (c == '\t') {
      out += "\\t";
      ++i;
    } else if (c == '\r') {
      out += "\\r";
      ++i;
    } else if (c < 0x20 || c == 0x7f) {
      out += "\\u00";
      out += kHex[c >> 4];
      out += kHex[c & 0xf];
      ++i;
    } else if (c < 0x80) {
      out += static_cast<char>(c);
      ++i;
    } else {
      // A well-formed UTF-8 sequence is copied as is (no overlongs, no surrogates).
      std::size_t len = c >= 0xf0 && c <= 0xf4 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 && c <= 0xdf ? 2 : 0;
      bool ok = len > 0 && c < 0xf5 && i + len <= s.size();
      for (std::size_t k = 1; ok && k < len; ++k)
        ok = (static_cast<unsigned char>(s[i + k]) & 0xc0) == 0x80;
      if (ok && len >= 3) {
        auto c1 = static_cast<unsigned char>(s[i + 1]);
        if ((c == 0xe0 && c1 < 0xa0) || (c == 0xed && c1 > 0x9f) || (c == 0xf0 && c1 < 0x90) ||
            (c == 0xf4 && c1 > 0x8f))
          ok = false;
      }
      if (ok) {
        out.append(s, i, len);
        i += len;
      } else {
        out += "\\ufffd";
        ++i;
      }
    }
  }
  out += '"';
}

std::string json_str(const std::string& s) {
  std::string out;
  json_string(out, s);
  return out;
}

// ---- The inherited state ----------------------------------------------------

// The value of "Key:" in /proc/self/status, whitespace-trimmed, or "".
std::string proc_status_field(const std::string& status, const char* key) {
  std::string k = std::string("\n") + key + ":";
  std::size_t pos = status.find(k);
  if (pos == std::string::npos) return "";
  pos += k.size();
  std::size_t end = status.find('\n', pos);
  std::string v = status.substr(pos, end == std::string::npos ? std::string::npos : end - pos);
  std::size_t b = v.find_first_not_of(" \t");
  std::size_t e = v.find_last_not_of(" \t");
  return b == std::string::npos ? "" : v.substr(b, e - b + 1);
}

std::string rlimit_json(int resource) {
  rlimit rl{};
  if (::getrlimit(resource, &rl) != 0) return "null";
  // Raw rlim_t values: RLIM_INFINITY is 18446744073709551615, as getrlimit() reports it.
  return "{\"soft\":" + std::to_string(static_cast<unsigned long long>(rl.rlim_cur)) +
         ",\"hard\":" + std::to_string(static_cast<unsigned long long>(rl.rlim_max)) + "}";
}

std::string socket_type_name(int type) {
  switch (type) {
    case SOCK_STREAM:
      return "stream";
    case SOCK_DGRAM:
      return "dgram";
    case SOCK_SEQPACKET:
      return "seqpacket";
    case SOCK_RAW:
      return "raw";
    case SOCK_RDM:
      return "rdm";
    default:
      return std::to_string(type);
  }
}

std::string fds_json() {
  std::vector<int> fds;
  if (DIR* dir = ::opendir("/proc/self/fd")) {
    const int self = ::dirfd(dir);
    while (dirent* e = ::readdir(dir)) {
      if (e->d_name[0] == '.') continue;
      int fd = std::atoi(e->d_name);
      if (fd != self) fds.push_back(fd);
    }
    ::closedir(dir);
  }
  std::sort(fds.begin(), fds.end());
  std::string out = "[";
  for (int fd : fds) {
    const int fd_flags = ::fcntl(fd, F_GETFD);
    const int fl_flags = ::fcntl(fd, F_GETFL);
    char target[PATH_MAX];
    std::string path = "/proc/self/fd/" + std::to_string(fd);
    ssize_t n = ::readlink(path.c_str(), target, sizeof target - 1);
    int type = 0, listening = 0;
    socklen_t len = sizeof type;
    const bool is_socket = ::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == 0;
    len = sizeof listening;
    if (!is_socket || ::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) != 0)
      listening = 0;
    if (out.size() > 1) out += ',';
    out += "{\"fd\":" + std::to_string(fd);
    out += ",\"cloexec\":" + std::string(fd_flags >= 0 && (fd_flags & FD_CLOEXEC) ? "true" : "false");
    out += ",\"nonblock\":" + std::string(fl_flags >= 0 && (fl_flags & O_NONBLOCK) ? "true" : "false");
    out += ",\"target\":" + (n >= 0 ? json_str(std::string(target, static_cast<std::size_t>(n))) : "null");
    out += ",\"socket_type\":" + (is_socket ? json_str(socket_type_name(type)) : "null");
    out += ",\"listening\":" + std::string(listening ? "true" : "false") + "}";
  }
  return out + "]";
}

// Everything is read into one string before anything is written, so the dump's
// own file is never in it, and the listing's directory fd is excluded.
std::string capture_state(int argc, char** argv) {
  std::string status;
  {
    std::ifstream in("/proc/self/status");
    status.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    status.insert(0, "\n");
  }
  std::string j = "{";
  j += "\"pid\":" + std::to_string(::getpid());
  j += ",\"ppid\":" + std::to_string(::getppid());
  j += ",\"pgid\":" + std::to_string(::getpgid(0));
  j += ",\"sid\":" + std::to_string(::getsid(0));
  j += ",\"uid\":" + std::to_string(::getuid());
  j += ",\"euid\":" + std::to_string(::geteuid());
  j += ",\"gid\":" + std::to_string(::getgid());
  j += ",\"egid\":" + std::to_string(::getegid());

  j += ",\"groups\":[";
  int ngroups = ::getgroups(0, nullptr);
  std::vector<gid_t> groups(static_cast<std::size_t>(ngroups > 0 ? ngroups : 0));
  ngroups = ngroups > 0 ? ::getgroups(ngroups, groups.data()) : 0;
  for (int i = 0; i < ngroups; ++i) j += (i ? "," : "") + std::to_string(groups[static_cast<std::size_t>(i)]);
  j += "]";

  char cwd[PATH_MAX];
  j += ",\"cwd\":" + (::getcwd(cwd, sizeof cwd) != nullptr ? json_str(cwd) : std::string("null"));
  j += ",\"umask\":" + json_str(proc_status_field(status, "Umask"));
  j += ",\"sigblk\":" + json_str(proc_status_field(status, "SigBlk"));
  j += ",\"sigign\":" + json_str(proc_status_field(status, "SigIgn"));
  j += ",\"sigcgt\":" + json_str(proc_status_field(status, "SigCgt"));
  j += ",\"rlimit_nofile\":" + rlimit_json(RLIMIT_NOFILE);
  j += ",\"rlimit_core\":" + rlimit_json(RLIMIT_CORE);

  j += ",\"argv\":[";
  for (int i = 0; i < argc; ++i) j += (i ? "," : "") + json_str(argv[i]);
  j += "]";

  j += ",\"env\":{";
  bool first = true;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    std::string kv = *e;
    std::size_t eq = kv.find('=');
    if (!first) j += ",";
    first = false;
    j += json_str(kv.substr(0, eq)) + ":" +
         json_str(eq == std::string::npos ? std::string() : kv.substr(eq + 1));
  }
  j += "}";

  j += ",\"fds\":" + fds_json();
  return j;  // not closed: write_dump() adds "grandchild" and the final brace
}

// Writes FILE.tmp then renames it over FILE, so a reader never sees half a dump.
void write_dump(std::string path, const std::string& state, pid_t grandchild) {
  const std::string pid = std::to_string(::getpid());
  for (std::size_t pos; (pos = path.find("%p")) != std::string::npos;) path.replace(pos, 2, pid);
  std::string json = state + ",\"grandchild\":" + (grandchild > 0 ? std::to_string(grandchild) : "null") + "}\n";
  const std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    std::fprintf(stderr, "preforkd-test-worker: cannot open %s: %s\n", tmp.c_str(), std::strerror(errno));
    std::exit(1);
  }
  std::size_t done = 0;
  while (done < json.size()) {
    ssize_t n = ::write(fd, json.data() + done, json.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      std::fprintf(stderr, "preforkd-test-worker: cannot write %s: %s\n", tmp.c_str(), std::strerror(errno));
      std::exit(1);
    }
    done += static_cast<std::size_t>(n);
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    std::fprintf(stderr, "preforkd-test-worker: cannot rename %s: %s\n", tmp.c_str(), std::strerror(errno));
    std::exit(1);
  }
}

// ---- Actions ----------------------------------------------------------------

void write_all(int fd, const std::string& s) {
  std::size_t done = 0;
  while (done < s.size()) {
    ssize_t n = ::write(fd, s.data() + done, s.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    done += static_cast<std::size_t>(n);
  }
}

// One write() per line, as the protocol requires; no validation, so tests can
// send malformed lines on purpose.
void send_notify(const std::string& line) {
  const char* env = std::getenv("PREFORKD_NOTIFY_FD");
  if (env == nullptr || *env == '\0') {
    std::fprintf(stderr, "preforkd-test-worker: --notify without PREFORKD_NOTIFY_FD\n");
    return;
  }
  const int fd = std::atoi(env);
  const std::string data = line + "\n";
  ssize_t n;
  do {
    n = ::write(fd, data.data(), data.size());
  } while (n < 0 && errno == EINTR);
  if (n < 0) std::fprintf(stderr, "preforkd-test-worker: notify: %s\n", std::strerror(errno));
}

// Forks a child that forks the grandchild and exits at once, so the grandchild
// is reparented (to the subreaper or init) while staying in our process group.
// Returns the grandchild's pid.
pid_t double_fork() {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) return -1;
  pid_t child = ::fork();
  if (child < 0) return -1;
  if (child == 0) {
    pid_t grandchild = ::fork();
    if (grandchild == 0) {
      // Holds no pipe, socket or terminal of ours: only the process lingers.
      for (int fd = 0; fd < 1024; ++fd) ::close(fd);
      for (;;) ::pause();
    }
    ssize_t ignored = ::write(p[1], &grandchild, sizeof grandchild);
    (void)ignored;
    ::_exit(0);
  }
  ::close(p[1]);
  pid_t grandchild = -1;
  ssize_t n;
  do {
    n = ::read(p[0], &grandchild, sizeof grandchild);
  } while (n < 0 && errno == EINTR);
  ::close(p[0]);
  while (::waitpid(child, nullptr, 0) < 0 && errno == EINTR) {
  }
  return n == static_cast<ssize_t>(sizeof grandchild) ? grandchild : -1;
}

extern "C" void on_term(int) { ::_exit(0); }

void sleep_ms(long ms) {
  timespec ts{static_cast<time_t>(ms / 1000), (ms % 1000) * 1000000L};
  while (::nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

// Blocking accept loop on fd 3: each client gets "<pid>\n", then the connection
// is closed. SIGTERM ends it through on_term (exit 0).
[[noreturn]] void serve() {
  const std::string reply = std::to_string(::getpid()) + "\n";
  for (;;) {
    int c = ::accept4(3, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) {
      if (errno == EINTR || errno == ECONNABORTED || errno == EAGAIN) continue;
      std::fprintf(stderr, "preforkd-test-worker: accept on fd 3: %s\n", std::strerror(errno));
      std::exit(1);
    }
    ssize_t ignored = ::send(c, reply.data(), reply.size(), MSG_NOSIGNAL);
    (void)ignored;
    ::close(c);
  }
}

}  // namespace

int main(int argc, char** argv) {
  const Options opt = parse_options(argc, argv);

  // 1. First of all: the state as inherited.
  std::string state;
  if (!opt.dump_file.empty()) {
    state = capture_state(argc, argv);
    if (!opt.double_fork) write_dump(opt.dump_file, state, -1);
  }

  // 2. Output lines.
  for (const auto& [fd, text] : opt.prints) write_all(fd, text + "\n");

  // 3. Notify lines.
  for (const std::string& line : opt.notify) send_notify(line);

  // 4. A grandchild left behind.
  if (opt.double_fork) {
    pid_t grandchild = double_fork();
    if (grandchild < 0) std::fprintf(stderr, "preforkd-test-worker: double fork failed\n");
    if (!opt.dump_file.empty()) write_dump(opt.dump_file, state, grandchild);
  }

  // 5. Signals.
  struct sigaction sa {};
  sigemptyset(&sa.sa_mask);
  sa.sa_handler = opt.ignore_term ? SIG_IGN : on_term;
  ::sigaction(SIGTERM, &sa, nullptr);

  // 6. The action.
  if (opt.exit_after_ms >= 0) {
    sleep_ms(opt.exit_after_ms);
    return opt.exit_code;
  }
  if (opt.has_exit) return opt.exit_code;
  if (opt.kill_self != 0) {
    struct sigaction dfl {};
    sigemptyset(&dfl.sa_mask);
    dfl.sa_handler = SIG_DFL;
    ::sigaction(opt.kill_self, &dfl, nullptr);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, opt.kill_self);
    ::sigprocmask(SIG_UNBLOCK, &set, nullptr);
    ::raise(opt.kill_self);
    return 0;  // a signal whose default action is to ignore it
  }
  if (opt.serve) serve();
  for (;;) ::pause();
}
