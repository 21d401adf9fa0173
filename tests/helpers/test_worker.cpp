// preforkd-test-worker — a scriptable worker for the sys and integration tests.
//
// It reports what it inherited (fds with their flags, environment, signal mask
// and dispositions, process group, credentials, limits) as JSON, then does what
// the command line scripts: hold memory, print lines, send notify lines, leave a
// grandchild behind, ignore SIGTERM, exit, crash, or serve connections on fd 3.
//
// Standard C++17 and POSIX only, one file, no libraries (tests/CMakeLists.txt
// builds it alone): on purpose it does not use preforkd/worker.h, so it speaks
// the protocol "by hand" like a worker in any language, and can send malformed
// lines too.
//
// Steps, always in this order whatever the order of the options:
//   1. --dump-state FILE     the state as inherited, captured before anything else
//                            changes it (no handler installed, no fd opened yet)
//   2. --rss-mb N            N MiB malloc()ed and written, held until the end: VmRSS
//                            grows by N MiB (before READY=1 can be sent, at step 4)
//   3. --stdout/--stderr     lines, in command-line order
//   4. --notify LINE         LINE + "\n" in one write() to PREFORKD_NOTIFY_FD
//   5. --double-fork         a grandchild in our process group that sleeps forever
//      --fork-child MODE     a child of ours (repeatable), after the grandchild:
//                            group   in a process group of its own (setpgid)
//                            setsid  in a session of its own (setsid)
//                            landed  a grandchild in a session of its own whose
//                                    parent (our child) exits at once: it lands on
//                                    the subreaper while we still run
//                            Each one serves fd 3 like --serve (when --serve is given,
//                            replying with its own pid), else waits; on SIGTERM it
//                            dies, or with --child-ignore-term ignores it, or with
//                            --child-marker FILE appends "<pid>\n" to FILE, then exits 0.
//                            Their pids are the dump's "children".
//   6. signals               --ignore-term: SIGTERM ignored; else SIGTERM → _exit(0)
//                            (with --flood: SIGTERM → the flood report line, then _exit(0));
//                            with --flood or --watchdog-every, SIGPIPE is ignored
//   7. the action            --exit N | --exit-after MS | --kill-self SIG | --flood KIND |
//                            --serve | pause()
// With --double-fork or --fork-child, the dump file is written after step 5 (with
// the grandchild's and the children's pids) instead of at step 1; its content is
// still the state captured at step 1.
//
// Timed duties, run by the action's own loop (MS counted from the start of step 7;
// --exit and --kill-self act at once, so they never get to them):
//   --watchdog-every MS  "WATCHDOG=1" to the notify fd at once, then every MS
//                        (never in the middle of a line the flood is writing)
//   --hang-after MS      after MS: an endless busy loop, nothing more is written
//                        (a worker stuck in a loop; SIGABRT and SIGKILL keep their
//                        default actions, SIGTERM still acts as set at step 6)
//   --flood-for MS       with --flood: stop flooding after MS, then wait like pause()
// With --serve they are done between accepts: SIGALRM (no SA_RESTART) interrupts
// accept() at the next deadline. With --flood garbage the heartbeat is written as
// "\nWATCHDOG=1\n", so that it is a line of its own. Without PREFORKD_NOTIFY_FD,
// --flood and --watchdog-every say so on stderr and do nothing.
//
// --flood KIND writes to PREFORKD_NOTIFY_FD as fast as the supervisor drains it
// (the fd is non-blocking: on EAGAIN, poll() for POLLOUT):
//   counters  "COUNTER_lines=<n>", n = 1, 2, 3, ..., one write() per line
//   garbage   random bytes (NULs and newlines included), writes of 1..4096 bytes;
//             each write counts as one line
//   long      10000 bytes of 'x' (no '=') then '\n', in writes of 4000, 4000, 2001
//   names     "COUNTER_n<k>=1" for k = 0, 1, 2, ...: ever new names
//   mixed     a rotation of "COUNTER_mixed=<n>" (valid, n = 1, 2, ...), "no equals
//             sign", "COUNTER_Bad-Name=1", "COUNTER_x=abc", "COUNTER_down=5",
//             "COUNTER_down=4", and an overlong line ("COUNTER_overlong=999..." of
//             8000 bytes, in writes of at most 4000)
// A line counts once all its bytes are written. The report, on SIGTERM or when
// --exit-after ends the flood, is one line on stderr:
//   flood: wrote N lines in M ms
// M being the time spent flooding (until SIGTERM, --flood-for, --hang-after or a
// write error other than EAGAIN; such an error is reported on stderr at once).
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <utility>
#include <vector>

extern char** environ;

namespace {

constexpr char kUsage[] =
    "usage: preforkd-test-worker [--dump-state FILE] [--stdout TEXT]... [--stderr TEXT]...\n"
    "                            [--notify LINE]... [--double-fork] [--ignore-term]\n"
    "                            [--exit N] [--exit-after MS] [--kill-self SIG] [--serve]\n"
    "                            [--flood KIND [--flood-for MS]] [--hang-after MS]\n"
    "                            [--watchdog-every MS] [--rss-mb N]\n"
    "                            [--fork-child group|setsid|landed]... [--child-ignore-term]\n"
    "                            [--child-marker FILE]\n"
    "FILE may contain %p (the pid). Default action: pause() until SIGTERM (exit 0).\n"
    "  --flood KIND          flood PREFORKD_NOTIFY_FD as fast as it is drained, KIND one of\n"
    "                        counters|garbage|long|names|mixed; on SIGTERM print\n"
    "                        'flood: wrote N lines in M ms' on stderr and exit 0\n"
    "                        (an action: not with --serve, --kill-self, or --exit without\n"
    "                        --exit-after; with --exit-after, flood until then)\n"
    "  --flood-for MS        stop flooding after MS, then wait (the report still comes on TERM)\n"
    "  --hang-after MS       after MS, spin in an endless busy loop\n"
    "  --watchdog-every MS   send WATCHDOG=1 at once, then every MS\n"
    "MS of these three count from the start of the action.\n"
    "  --rss-mb N            at start, allocate and write N MiB and hold them (VmRSS grows)\n";

struct Options {
  std::string dump_file;
  long rss_mb = 0;
  std::vector<std::pair<int, std::string>> prints;  // (fd 1 or 2, text), in order
  std::vector<std::string> notify;
  bool double_fork = false;
  bool ignore_term = false;
  bool has_exit = false;
  int exit_code = 0;
  long exit_after_ms = -1;
  int kill_self = 0;
  bool serve = false;
  std::string flood;  // "" = no flood, else the KIND
  long flood_for_ms = -1;
  long hang_after_ms = -1;
  long watchdog_every_ms = -1;
  std::vector<std::string> fork_children;  // --fork-child MODE, in order
  bool child_ignore_term = false;
  std::string child_marker;
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
    if (arg == "--child-ignore-term") {
      opt.child_ignore_term = true;
      continue;
    }
    static const char* const kWithValue[] = {"--dump-state", "--stdout",     "--stderr",
                                             "--notify",     "--exit",       "--exit-after",
                                             "--kill-self",  "--flood",      "--flood-for",
                                             "--hang-after", "--watchdog-every", "--rss-mb",
                                             "--fork-child", "--child-marker"};
    if (std::find(std::begin(kWithValue), std::end(kWithValue), arg) == std::end(kWithValue))
      usage_error("unknown option '" + arg + "'");
    if (i + 1 >= argc) usage_error("option '" + arg + "' needs a value");
    const char* value = argv[i + 1];
    if (arg == "--dump-state") {
      opt.dump_file = value;
    } else if (arg == "--rss-mb") {
      opt.rss_mb = parse_long(arg, value, 0, 65536);
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
    } else if (arg == "--kill-self") {
      opt.kill_self = static_cast<int>(parse_long(arg, value, 1, SIGRTMAX));
    } else if (arg == "--flood") {
      static const char* const kKinds[] = {"counters", "garbage", "long", "names", "mixed"};
      if (std::find(std::begin(kKinds), std::end(kKinds), std::string(value)) == std::end(kKinds))
        usage_error("--flood: expected counters, garbage, long, names or mixed, got '" +
                    std::string(value) + "'");
      opt.flood = value;
    } else if (arg == "--flood-for") {
      opt.flood_for_ms = parse_long(arg, value, 0, LONG_MAX / 1000000);
    } else if (arg == "--fork-child") {
      std::string mode = value;
      if (mode != "group" && mode != "setsid" && mode != "landed")
        usage_error("--fork-child: expected group, setsid or landed, got '" + mode + "'");
      opt.fork_children.push_back(mode);
    } else if (arg == "--child-marker") {
      opt.child_marker = value;
    } else if (arg == "--hang-after") {
      opt.hang_after_ms = parse_long(arg, value, 0, LONG_MAX / 1000000);
    } else {  // --watchdog-every
      opt.watchdog_every_ms = parse_long(arg, value, 1, LONG_MAX / 1000000);
    }
    ++i;
  }
  if (opt.flood_for_ms >= 0 && opt.flood.empty()) usage_error("--flood-for needs --flood");
  if (!opt.flood.empty() &&
      (opt.serve || opt.kill_self != 0 || (opt.has_exit && opt.exit_after_ms < 0)))
    usage_error("--flood is the action: not with --serve, --kill-self, or --exit without --exit-after");
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
void write_dump(std::string path, const std::string& state, pid_t grandchild,
                const std::vector<pid_t>& children = {}) {
  const std::string pid = std::to_string(::getpid());
  for (std::size_t pos; (pos = path.find("%p")) != std::string::npos;) path.replace(pos, 2, pid);
  std::string kids;
  for (pid_t c : children) kids += (kids.empty() ? "" : ",") + std::to_string(c);
  std::string json = state + ",\"grandchild\":" + (grandchild > 0 ? std::to_string(grandchild) : "null") +
                     ",\"children\":[" + kids + "]}\n";
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

// --fork-child --------------------------------------------------------------

const char* g_child_marker = nullptr;  // --child-marker FILE, for the handler below

// SIGTERM in a --fork-child child with --child-marker: "<pid>\n" appended to
// the file, then exit 0. Async-signal-safe: open, write, _exit only.
extern "C" void on_term_marker(int) {
  char buf[24];
  std::size_t n = 0;
  char digits[16];
  int k = 0;
  for (unsigned long v = static_cast<unsigned long>(::getpid()); v != 0 || k == 0; v /= 10)
    digits[k++] = static_cast<char>('0' + v % 10);
  while (k > 0) buf[n++] = digits[--k];
  buf[n++] = '\n';
  int fd = ::open(g_child_marker, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd >= 0) {
    ssize_t ignored = ::write(fd, buf, n);
    (void)ignored;
    ::close(fd);
  }
  ::_exit(0);
}

// A --fork-child child's SIGTERM disposition, set before it reports back, so
// that a test that has read the dump can rely on it.
void child_setup(const Options& opt) {
  struct sigaction sa {};
  sigemptyset(&sa.sa_mask);
  if (opt.child_ignore_term) {
    sa.sa_handler = SIG_IGN;
  } else if (!opt.child_marker.empty()) {
    g_child_marker = opt.child_marker.c_str();
    sa.sa_handler = on_term_marker;
  } else {
    sa.sa_handler = SIG_DFL;
  }
  ::sigaction(SIGTERM, &sa, nullptr);
}

// What a --fork-child child does: serve fd 3 (with --serve) or wait, forever.
[[noreturn]] void child_main(const Options& opt) {
  if (!opt.serve)
    for (;;) ::pause();
  const std::string reply = std::to_string(::getpid()) + "\n";
  for (;;) {
    int c = ::accept4(3, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) {
      if (errno == EINTR || errno == ECONNABORTED || errno == EAGAIN) continue;
      ::_exit(1);
    }
    ssize_t ignored = ::send(c, reply.data(), reply.size(), MSG_NOSIGNAL);
    (void)ignored;
    ::close(c);
  }
}

// Forks one --fork-child child; returns its pid once it has left our process
// group or session (so that a test that reads the dump sees it done), or -1.
pid_t fork_child(const std::string& mode, const Options& opt) {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) return -1;
  pid_t child = ::fork();
  if (child < 0) return -1;
  if (child == 0) {
    ::close(p[0]);
    pid_t me = -1;
    child_setup(opt);
    if (mode == "group") {
      if (::setpgid(0, 0) == 0) me = ::getpid();
    } else if (mode == "setsid") {
      if (::setsid() >= 0) me = ::getpid();
    } else {  // landed: the grandchild, in a session of its own, outlives us
      pid_t grandchild = ::fork();
      if (grandchild == 0) {
        pid_t gme = ::setsid() >= 0 ? ::getpid() : -1;
        ssize_t ignored = ::write(p[1], &gme, sizeof gme);
        (void)ignored;
        ::close(p[1]);
        child_main(opt);
      }
      ::_exit(0);
    }
    ssize_t ignored = ::write(p[1], &me, sizeof me);
    (void)ignored;
    ::close(p[1]);
    child_main(opt);
  }
  ::close(p[1]);
  pid_t result = -1;
  ssize_t n;
  do {
    n = ::read(p[0], &result, sizeof result);
  } while (n < 0 && errno == EINTR);
  ::close(p[0]);
  if (mode == "landed")
    while (::waitpid(child, nullptr, 0) < 0 && errno == EINTR) {
    }
  return n == static_cast<ssize_t>(sizeof result) ? result : -1;
}

// --rss-mb: the memory held until the end. A volatile global, so that the
// compiler cannot drop the allocation and the writes as unused.
char* volatile g_ballast = nullptr;

// N MiB, every page written (malloc()'s fresh pages are not resident until then).
void hold_memory(long mib) {
  const std::size_t size = static_cast<std::size_t>(mib) << 20;
  auto* p = static_cast<char*>(std::malloc(size));
  if (p == nullptr) {
    std::fprintf(stderr, "preforkd-test-worker: --rss-mb %ld: out of memory\n", mib);
    std::exit(1);
  }
  std::memset(p, 0x5a, size);
  g_ballast = p;
}

void sleep_ms(long ms) {
  timespec ts{static_cast<time_t>(ms / 1000), (ms % 1000) * 1000000L};
  while (::nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

// ---- Timed duties and the flood --------------------------------------------

long long now_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<long long>(ts.tv_sec) * 1000000000LL + ts.tv_nsec;
}

// The notify fd from PREFORKD_NOTIFY_FD, or -1.
int notify_fd_from_env() {
  const char* env = std::getenv("PREFORKD_NOTIFY_FD");
  if (env == nullptr || *env == '\0') return -1;
  return std::atoi(env);
}

// What the SIGTERM handler reports: plain lock-free atomics, read from the handler.
std::atomic<unsigned long long> g_flood_lines{0};
std::atomic<long long> g_flood_start_ns{0};
std::atomic<long long> g_flood_end_ns{0};  // 0 while still flooding
static_assert(std::atomic<unsigned long long>::is_always_lock_free &&
                  std::atomic<long long>::is_always_lock_free,
              "the SIGTERM handler reads these");

// "flood: wrote N lines in M ms\n" on stderr in one write(); async-signal-safe.
void report_flood() {
  long long end = g_flood_end_ns.load(std::memory_order_relaxed);
  if (end == 0) end = now_ns();
  long long ms = (end - g_flood_start_ns.load(std::memory_order_relaxed)) / 1000000;
  char buf[96];
  std::size_t n = 0;
  auto text = [&](const char* t) {
    while (*t != '\0') buf[n++] = *t++;
  };
  auto number = [&](unsigned long long v) {
    char digits[24];
    int k = 0;
    do {
      digits[k++] = static_cast<char>('0' + v % 10);
      v /= 10;
    } while (v != 0);
    while (k > 0) buf[n++] = digits[--k];
  };
  text("flood: wrote ");
  number(g_flood_lines.load(std::memory_order_relaxed));
  text(" lines in ");
  number(static_cast<unsigned long long>(ms < 0 ? 0 : ms));
  text(" ms\n");
  ssize_t w;
  do {
    w = ::write(STDERR_FILENO, buf, n);
  } while (w < 0 && errno == EINTR);
}

extern "C" void on_term_flood(int) {
  report_flood();
  ::_exit(0);
}

// The flood's lines, generated one at a time; a line may be written in chunks.
class Flood {
 public:
  explicit Flood(const std::string& kind) : kind_(kind) {
    rng_ = static_cast<std::uint64_t>(now_ns()) ^ (static_cast<std::uint64_t>(::getpid()) << 32);
    if (rng_ == 0) rng_ = 0x9e3779b97f4a7c15ULL;
  }

  // True when no line is half written (so another line may be sent in between).
  bool at_boundary() const { return off_ == line_.size(); }
  bool garbage() const { return kind_ == "garbage"; }

  // One write() of the next chunk: > 0 bytes written, or -1 with errno set.
  ssize_t write_chunk(int fd) {
    if (at_boundary()) next_line();
    std::size_t chunk = std::min(line_.size() - off_, chunk_max_);
    ssize_t n = ::write(fd, line_.data() + off_, chunk);
    if (n > 0) {
      off_ += static_cast<std::size_t>(n);
      if (at_boundary())
        g_flood_lines.store(g_flood_lines.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    }
    return n;
  }

 private:
  static constexpr std::size_t kWhole = 4096;  // a line of at most PIPE_BUF: one atomic write
  static constexpr std::size_t kChunk = 4000;  // the chunks of the long and overlong lines

  std::uint64_t random() {  // xorshift64*
    rng_ ^= rng_ >> 12;
    rng_ ^= rng_ << 25;
    rng_ ^= rng_ >> 27;
    return rng_ * 0x2545f4914f6cdd1dULL;
  }

  void number_line(const char* prefix, unsigned long long v, const char* suffix) {
    line_ = prefix;
    char digits[24];
    auto r = std::to_chars(digits, digits + sizeof digits, v);
    line_.append(digits, r.ptr);
    line_ += suffix;
  }

  void next_line() {
    off_ = 0;
    chunk_max_ = kWhole;
    if (kind_ == "counters") {
      number_line("COUNTER_lines=", ++seq_, "\n");
    } else if (kind_ == "names") {
      number_line("COUNTER_n", seq_++, "=1\n");
    } else if (kind_ == "long") {
      line_.assign(10000, 'x');
      line_ += '\n';
      chunk_max_ = kChunk;
    } else if (kind_ == "garbage") {
      std::size_t len = 1 + static_cast<std::size_t>(random() % 4096);
      line_.resize(len);
      for (std::size_t i = 0; i < len; i += 8) {
        std::uint64_t r = random();
        for (std::size_t k = 0; k < 8 && i + k < len; ++k, r >>= 8)
          line_[i + k] = static_cast<char>(r & 0xff);
      }
    } else {  // mixed
      switch (step_++ % 7) {
        case 0: number_line("COUNTER_mixed=", ++seq_, "\n"); break;
        case 1: line_ = "no equals sign\n"; break;
        case 2: line_ = "COUNTER_Bad-Name=1\n"; break;
        case 3: line_ = "COUNTER_x=abc\n"; break;
        case 4: line_ = "COUNTER_down=5\n"; break;
        case 5: line_ = "COUNTER_down=4\n"; break;
        default:
          line_ = "COUNTER_overlong=";
          line_.append(8000 - line_.size() - 1, '9');
          line_ += '\n';
          chunk_max_ = kChunk;
          break;
      }
    }
  }

  std::string kind_;
  std::string line_;
  std::size_t off_ = 0;
  std::size_t chunk_max_ = kWhole;
  unsigned long long seq_ = 0;
  unsigned step_ = 0;
  std::uint64_t rng_;
};

[[noreturn]] void hang() {
  volatile unsigned long spin = 0;
  for (;;) spin = spin + 1;
}

// The action's loop for --watchdog-every, --hang-after and --flood[-for]: every
// deadline is absolute (CLOCK_MONOTONIC ns); nothing due means pause().
class Ticker {
 public:
  Ticker(const Options& opt, int fd) : fd_(fd), start_(now_ns()) {
    const long long start = start_;
    if (opt.hang_after_ms >= 0) hang_at_ = start + opt.hang_after_ms * 1000000LL;
    if (opt.watchdog_every_ms > 0) {
      wd_every_ = opt.watchdog_every_ms * 1000000LL;
      next_wd_ = start;
    }
    if (!opt.flood.empty()) {
      flood_ = std::make_unique<Flood>(opt.flood);
      g_flood_start_ns.store(start, std::memory_order_relaxed);
      if (opt.flood_for_ms >= 0) flood_stop_at_ = start + opt.flood_for_ms * 1000000LL;
    }
    if (fd_ < 0 && (flood_ || wd_every_ > 0)) {
      std::fprintf(stderr, "preforkd-test-worker: %s without PREFORKD_NOTIFY_FD\n",
                   flood_ ? "--flood" : "--watchdog-every");
      stop_flood(start);
      wd_every_ = -1;
    }
  }

  long long start() const { return start_; }
  bool has_duties() const { return hang_at_ >= 0 || wd_every_ > 0 || flood_; }
  bool flooding() const { return flood_ && g_flood_end_ns.load(std::memory_order_relaxed) == 0; }

  // Does what is due; returns when `until` (-1: never) has passed.
  void run_until(long long until) {
    for (;;) {
      const long long now = now_ns();
      if (hang_at_ >= 0 && now >= hang_at_) {
        stop_flood(now);
        hang();
      }
      if (flooding() && flood_stop_at_ >= 0 && now >= flood_stop_at_) stop_flood(now);
      if (wd_every_ > 0 && now >= next_wd_) {
        wd_pending_ = true;
        next_wd_ += wd_every_;
        if (next_wd_ <= now) next_wd_ = now + wd_every_;  // late: no burst to catch up
      }
      const bool wd_now = wd_pending_ && (!flooding() || flood_->at_boundary());
      if (wd_now) send_watchdog();  // one attempt; still pending after EAGAIN
      if (until >= 0 && now >= until) return;
      const long long wake = next_deadline(until);
      if (wd_now && wd_pending_) {  // the pipe is full: the heartbeat goes first
        wait_writable(wake);
        continue;
      }
      if (flooding()) {
        ssize_t n = flood_->write_chunk(fd_);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
          wait_writable(wake);
        } else if (n < 0 && errno != EINTR) {
          std::fprintf(stderr, "preforkd-test-worker: flood: %s\n", std::strerror(errno));
          stop_flood(now_ns());
        }
        continue;
      }
      sleep_until(wake);
    }
  }

  // The earliest pending deadline, `until` included; -1 when there is none.
  long long next_deadline(long long until = -1) const {
    long long d = until;
    auto take = [&d](long long t) {
      if (t >= 0 && (d < 0 || t < d)) d = t;
    };
    take(hang_at_);
    if (wd_every_ > 0) take(next_wd_);
    if (flooding()) take(flood_stop_at_);
    return d;
  }

 private:
  static void stop_flood(long long now) {
    long long expected = 0;
    g_flood_end_ns.compare_exchange_strong(expected, now == 0 ? 1 : now);
  }

  // poll() for POLLOUT until `wake` (-1: no limit); a signal also ends the wait.
  void wait_writable(long long wake) const {
    int timeout = -1;
    if (wake >= 0) {
      long long left = wake - now_ns();
      timeout = left <= 0 ? 0 : static_cast<int>(std::min<long long>((left + 999999) / 1000000, INT_MAX));
    }
    pollfd p{fd_, POLLOUT, 0};
    ::poll(&p, 1, timeout);
  }

  static void sleep_until(long long wake) {
    if (wake < 0) {
      ::pause();
      return;
    }
    long long left = wake - now_ns();
    if (left <= 0) return;
    timespec ts{static_cast<time_t>(left / 1000000000LL), static_cast<long>(left % 1000000000LL)};
    ::nanosleep(&ts, nullptr);  // EINTR: the caller's loop looks again
  }

  void send_watchdog() {
    const char* line = flood_ && flood_->garbage() ? "\nWATCHDOG=1\n" : "WATCHDOG=1\n";
    ssize_t n = ::write(fd_, line, std::strlen(line));
    if (n >= 0) {
      wd_pending_ = false;
    } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
      std::fprintf(stderr, "preforkd-test-worker: watchdog: %s\n", std::strerror(errno));
      wd_pending_ = false;
      wd_every_ = -1;
    }
  }

  int fd_;
  long long start_;
  long long hang_at_ = -1;
  long long wd_every_ = -1;
  long long next_wd_ = -1;
  bool wd_pending_ = false;
  std::unique_ptr<Flood> flood_;
  long long flood_stop_at_ = -1;
};

extern "C" void on_alarm(int) {}

// For --serve with timed duties: SIGALRM (no SA_RESTART) at the next deadline
// interrupts the blocking accept(); a short repeat covers an alarm that fires
// just before accept() is entered.
void arm_alarm(long long deadline) {
  itimerval it{};
  if (deadline >= 0) {
    long long left = std::max(deadline - now_ns(), 1000LL);
    it.it_value = {static_cast<time_t>(left / 1000000000LL), static_cast<suseconds_t>(left % 1000000000LL / 1000)};
    if (it.it_value.tv_sec == 0 && it.it_value.tv_usec == 0) it.it_value.tv_usec = 1;
    it.it_interval = {0, 5000};
  }
  ::setitimer(ITIMER_REAL, &it, nullptr);
}

// Blocking accept loop on fd 3: each client gets "<pid>\n", then the connection
// is closed. SIGTERM ends it through on_term (exit 0). With timed duties, they
// are done between accepts, and SIGALRM cuts a wait for a client short.
[[noreturn]] void serve(Ticker& ticker) {
  const std::string reply = std::to_string(::getpid()) + "\n";
  if (ticker.has_duties()) {
    struct sigaction sa {};
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = on_alarm;  // no SA_RESTART: accept() returns EINTR
    ::sigaction(SIGALRM, &sa, nullptr);
  }
  for (;;) {
    if (ticker.has_duties()) {
      ticker.run_until(now_ns());
      arm_alarm(ticker.next_deadline());
    }
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
  const bool dump_later = opt.double_fork || !opt.fork_children.empty();
  if (!opt.dump_file.empty()) {
    state = capture_state(argc, argv);
    if (!dump_later) write_dump(opt.dump_file, state, -1);
  }

  // 2. Memory held.
  if (opt.rss_mb > 0) hold_memory(opt.rss_mb);

  // 3. Output lines.
  for (const auto& [fd, text] : opt.prints) write_all(fd, text + "\n");

  // 4. Notify lines.
  for (const std::string& line : opt.notify) send_notify(line);

  // 5. A grandchild left behind, children of our own.
  pid_t grandchild = -1;
  if (opt.double_fork) {
    grandchild = double_fork();
    if (grandchild < 0) std::fprintf(stderr, "preforkd-test-worker: double fork failed\n");
  }
  std::vector<pid_t> children;
  for (const std::string& mode : opt.fork_children) {
    pid_t c = fork_child(mode, opt);
    if (c < 0) std::fprintf(stderr, "preforkd-test-worker: --fork-child %s failed\n", mode.c_str());
    else children.push_back(c);
  }
  if (dump_later && !opt.dump_file.empty()) write_dump(opt.dump_file, state, grandchild, children);

  // 6. Signals. The timed duties count from here (the start of the action).
  Ticker ticker(opt, notify_fd_from_env());
  struct sigaction sa {};
  sigemptyset(&sa.sa_mask);
  sa.sa_handler = opt.ignore_term ? SIG_IGN : opt.flood.empty() ? on_term : on_term_flood;
  ::sigaction(SIGTERM, &sa, nullptr);
  if (!opt.flood.empty() || opt.watchdog_every_ms > 0) {
    struct sigaction ign {};
    sigemptyset(&ign.sa_mask);
    ign.sa_handler = SIG_IGN;  // a closed read end is EPIPE, reported, not a silent death
    ::sigaction(SIGPIPE, &ign, nullptr);
  }

  // 7. The action.
  if (opt.exit_after_ms >= 0) {
    if (!ticker.has_duties()) {
      sleep_ms(opt.exit_after_ms);
      return opt.exit_code;
    }
    ticker.run_until(ticker.start() + opt.exit_after_ms * 1000000LL);
    if (!opt.flood.empty()) {
      sigset_t term;
      sigemptyset(&term);
      sigaddset(&term, SIGTERM);
      ::sigprocmask(SIG_BLOCK, &term, nullptr);  // one report, not two
      if (ticker.flooding()) g_flood_end_ns.store(now_ns());
      report_flood();
    }
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
  if (opt.serve) serve(ticker);
  ticker.run_until(-1);  // without duties: pause() until SIGTERM
  return 0;
}
