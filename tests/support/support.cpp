#include "support/support.hpp"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace preforkd::test {

std::string bin(const std::string& name) { return std::string(PREFORKD_BIN_DIR) + "/" + name; }

bool wait_until(const std::function<bool()>& pred, std::chrono::milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  for (;;) {
    if (pred()) return true;
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(2ms);
  }
}

// ---- files ----

TempDir::TempDir() {
  std::string tmpl = (std::filesystem::temp_directory_path() / "preforkd-test-XXXXXX").string();
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  if (mkdtemp(buf.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  path_ = buf.data();
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

std::string TempDir::write(const std::string& name, const std::string& content) const {
  std::string p = file(name);
  std::ofstream(p, std::ios::trunc) << content;
  return p;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool file_exists(const std::string& path) { return ::access(path.c_str(), F_OK) == 0; }

nlohmann::json read_json(const std::string& path) { return nlohmann::json::parse(read_file(path)); }

// ---- processes ----

namespace {

[[noreturn]] void exec_child(const std::vector<std::string>& argv, int out_fd,
                             const std::map<std::string, std::string>& extra_env,
                             const std::function<void()>& in_child) {
  // If the test runner dies (a ctest timeout), what it started goes too.
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  dup2(out_fd, 1);
  dup2(out_fd, 2);
  int null = ::open("/dev/null", O_RDONLY);
  dup2(null, 0);
  for (const auto& [k, v] : extra_env) setenv(k.c_str(), v.c_str(), 1);
  sigset_t empty;
  sigemptyset(&empty);
  sigprocmask(SIG_SETMASK, &empty, nullptr);
  if (in_child) in_child();
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  execv(args[0], args.data());
  _exit(127);
}

}  // namespace

Process::Process(const std::vector<std::string>& argv, const std::string& log_path,
                 const std::map<std::string, std::string>& extra_env,
                 const std::function<void()>& in_child)
    : log_path_(log_path) {
  int fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) throw std::runtime_error("cannot open " + log_path);
  pid_ = fork();
  if (pid_ == 0) exec_child(argv, fd, extra_env, in_child);
  ::close(fd);
  if (pid_ < 0) throw std::runtime_error("fork failed");
}

Process::~Process() {
  if (!reaped_ && pid_ > 0) {
    ::kill(pid_, SIGKILL);
    int st;
    waitpid(pid_, &st, 0);
  }
}

size_t Process::wait_for_log(const std::string& needle, std::chrono::milliseconds timeout,
                             size_t from) const {
  size_t found = std::string::npos;
  wait_until(
      [&] {
        std::string text = log();
        found = text.size() > from ? text.find(needle, from) : std::string::npos;
        return found != std::string::npos;
      },
      timeout);
  return found;
}

bool Process::signal(int sig) const { return pid_ > 0 && !reaped_ && ::kill(pid_, sig) == 0; }

std::optional<int> Process::wait(std::chrono::milliseconds timeout) {
  std::optional<int> result;
  wait_until(
      [&] {
        int st = 0;
        pid_t r = waitpid(pid_, &st, WNOHANG);
        if (r == pid_) {
          reaped_ = true;
          result = st;
          return true;
        }
        return false;
      },
      timeout);
  return result;
}

bool Process::running() {
  if (reaped_) return false;
  int st = 0;
  if (waitpid(pid_, &st, WNOHANG) == pid_) {
    reaped_ = true;
    return false;
  }
  return true;
}

std::pair<int, std::string> run(const std::vector<std::string>& argv, std::chrono::milliseconds timeout) {
  TempDir dir;
  std::string log_path = dir.file("out");
  Process p(argv, log_path);
  auto st = p.wait(timeout);
  if (!st) return {-1, p.log()};
  int code = WIFEXITED(*st) ? WEXITSTATUS(*st) : 128 + WTERMSIG(*st);
  return {code, p.log()};
}

// ---- /proc ----

namespace {

// Fields of /proc/<pid>/stat after the command name: state is [0], ppid [1].
std::vector<std::string> stat_fields(pid_t pid) {
  std::string s = read_file("/proc/" + std::to_string(pid) + "/stat");
  auto close = s.rfind(')');
  if (close == std::string::npos) return {};
  std::istringstream in(s.substr(close + 2));
  std::vector<std::string> out;
  std::string f;
  while (in >> f) out.push_back(f);
  return out;
}

}  // namespace

std::vector<pid_t> children_of(pid_t parent) {
  std::vector<pid_t> out;
  // /proc/<pid>/task/<pid>/children lists the children of the main thread.
  std::istringstream in(read_file("/proc/" + std::to_string(parent) + "/task/" +
                                  std::to_string(parent) + "/children"));
  pid_t p;
  while (in >> p) out.push_back(p);
  return out;
}

char proc_state(pid_t pid) {
  auto f = stat_fields(pid);
  return f.empty() ? 0 : f[0][0];
}

int zombie_children(pid_t parent) {
  int n = 0;
  for (pid_t c : children_of(parent))
    if (proc_state(c) == 'Z') ++n;
  return n;
}

bool pid_alive(pid_t pid) {
  char s = proc_state(pid);
  return s != 0 && s != 'Z' && s != 'X';
}

int count_fds(pid_t pid) {
  DIR* d = opendir(("/proc/" + std::to_string(pid) + "/fd").c_str());
  if (d == nullptr) return -1;
  int n = 0;
  while (dirent* e = readdir(d))
    if (e->d_name[0] != '.') ++n;
  closedir(d);
  return n;
}

long rss_kib(pid_t pid) {
  std::istringstream in(read_file("/proc/" + std::to_string(pid) + "/status"));
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::atol(line.c_str() + 6);
  return -1;
}

unsigned long long cpu_ticks(pid_t pid) {
  auto f = stat_fields(pid);
  if (f.size() < 13) return 0;
  return std::stoull(f[11]) + std::stoull(f[12]);  // utime, stime (fields 14 and 15)
}

bool signal_ignored(pid_t pid, int sig) {
  std::istringstream in(read_file("/proc/" + std::to_string(pid) + "/status"));
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("SigIgn:", 0) == 0) return (std::stoull(line.substr(7), nullptr, 16) >> (sig - 1)) & 1U;
  return false;
}

bool all_ignore_term(const std::vector<pid_t>& pids) {
  return wait_until([&] {
    return std::all_of(pids.begin(), pids.end(), [](pid_t p) { return signal_ignored(p, SIGTERM); });
  });
}

long long context_switches(pid_t pid) {
  const std::string task_dir = "/proc/" + std::to_string(pid) + "/task";
  DIR* d = opendir(task_dir.c_str());
  if (d == nullptr) return -1;
  long long total = 0;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] == '.') continue;
    std::istringstream in(read_file(task_dir + "/" + e->d_name + "/status"));
    std::string line;
    while (std::getline(in, line))
      if (line.rfind("voluntary_ctxt_switches:", 0) == 0 || line.rfind("nonvoluntary_ctxt_switches:", 0) == 0)
        total += std::atoll(line.c_str() + line.find(':') + 1);
  }
  closedir(d);
  return total;
}

bool wait_quiet(pid_t pid, std::chrono::milliseconds quiet, std::chrono::milliseconds timeout) {
  long long last = context_switches(pid);
  auto since = Clock::now();
  return wait_until(
      [&] {
        long long now = context_switches(pid);
        if (now != last) {
          last = now;
          since = Clock::now();
        }
        return now >= 0 && Clock::now() - since >= quiet;
      },
      timeout);
}

long long wakeups_over(pid_t pid, std::chrono::milliseconds window) {
  long long before = context_switches(pid);
  std::this_thread::sleep_until(Clock::now() + window);
  long long after = context_switches(pid);
  return before < 0 || after < 0 ? -1 : after - before;
}

// ---- sockets ----

int connect_tcp(uint16_t port, std::chrono::milliseconds timeout) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return -errno;
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_port = htons(port);
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&sin), sizeof sin) != 0) {
    if (errno != EINPROGRESS) {
      int err = errno;
      ::close(fd);
      return -err;
    }
    pollfd p{fd, POLLOUT, 0};
    if (poll(&p, 1, static_cast<int>(timeout.count())) != 1) {
      ::close(fd);
      return -ETIMEDOUT;
    }
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) {
      ::close(fd);
      return -err;
    }
  }
  int fl = fcntl(fd, F_GETFL);
  fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
  timeval tv{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  return fd;
}

bool echo_roundtrip(uint16_t port, const std::string& msg) {
  int fd = connect_tcp(port);
  if (fd < 0) return false;
  bool ok = send(fd, msg.data(), msg.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(msg.size());
  std::string got;
  char buf[4096];
  while (ok && got.size() < msg.size()) {
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n <= 0) {
      ok = false;
      break;
    }
    got.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return ok && got == msg;
}

uint16_t free_port() {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&sin), sizeof sin);
  socklen_t len = sizeof sin;
  getsockname(fd, reinterpret_cast<sockaddr*>(&sin), &len);
  ::close(fd);
  return ntohs(sin.sin_port);
}

int listen_loopback(uint16_t& port, int backlog) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&sin), sizeof sin) != 0 || listen(fd, backlog) != 0) {
    if (fd >= 0) ::close(fd);
    throw std::runtime_error("cannot listen on 127.0.0.1");
  }
  socklen_t len = sizeof sin;
  getsockname(fd, reinterpret_cast<sockaddr*>(&sin), &len);
  port = ntohs(sin.sin_port);
  return fd;
}

// ---- preforkd ----

Preforkd::Preforkd(const TempDir& dir, const std::string& yaml, const std::vector<std::string>& extra_args,
                   bool wait_started, const std::function<void()>& in_child, const std::string& binary,
                   const std::map<std::string, std::string>& env) {
  control_socket_ = dir.file("ctl.sock");
  config_path_ = dir.write("preforkd.yaml", with_control_socket(yaml, control_socket_));
  std::vector<std::string> argv = {binary.empty() ? bin("preforkd") : binary, "-c", config_path_};
  argv.insert(argv.end(), extra_args.begin(), extra_args.end());
  proc_ = std::make_unique<Process>(argv, dir.file("preforkd.log"), env, in_child);
  if (wait_started && proc_->wait_for_log("worker(s) in", 20s) == std::string::npos)
    throw std::runtime_error("preforkd did not start:\n" + proc_->log());
}

void Preforkd::rewrite(const std::string& yaml) const {
  // Written beside and renamed: preforkd never reads half a file.
  std::string tmp = config_path_ + ".new";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << with_control_socket(yaml, control_socket_);
  }
  if (::rename(tmp.c_str(), config_path_.c_str()) != 0) throw std::runtime_error("rename " + tmp);
}

Preforkd::~Preforkd() {
  if (proc_ && proc_->running()) {
    proc_->signal(SIGQUIT);
    if (!proc_->wait(10s)) proc_->signal(SIGKILL);
  }
}

std::string with_control_socket(const std::string& yaml, const std::string& socket_path) {
  if (yaml.find("control_socket:") != std::string::npos) return yaml;
  const std::string flow = "supervisor: {", block = "supervisor:\n";
  std::string out = yaml;
  if (auto at = out.find(flow); at != std::string::npos)
    return out.insert(at + flow.size(), " control_socket: \"" + socket_path + "\",");
  if (auto at = out.find(block); at != std::string::npos)
    return out.insert(at + block.size(), "  control_socket: \"" + socket_path + "\"\n");
  return "supervisor:\n  control_socket: \"" + socket_path + "\"\n" + out;
}

std::string unix_request(const std::string& socket_path, const std::string& line,
                         std::chrono::milliseconds timeout) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un sun{};
  sun.sun_family = AF_UNIX;
  std::snprintf(sun.sun_path, sizeof sun.sun_path, "%s", socket_path.c_str());
  timeval tv{static_cast<time_t>(timeout.count() / 1000), static_cast<suseconds_t>((timeout.count() % 1000) * 1000)};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::string reply;
  if (connect(fd, reinterpret_cast<sockaddr*>(&sun), sizeof sun) == 0) {
    std::string msg = line + "\n";
    if (send(fd, msg.data(), msg.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(msg.size())) {
      char buf[65536];
      while (reply.find('\n') == std::string::npos) {
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n <= 0) break;
        reply.append(buf, static_cast<size_t>(n));
      }
    }
  }
  ::close(fd);
  if (auto nl = reply.find('\n'); nl != std::string::npos) reply.resize(nl);
  return reply;
}

std::set<pid_t> pids_of(const nlohmann::json& status, const std::string& program) {
  std::set<pid_t> out;
  for (const auto& p : status["programs"])
    if (program.empty() || p["name"] == program)
      for (const auto& w : p["workers"])
        if (w["pid"].get<pid_t>() > 0) out.insert(w["pid"].get<pid_t>());
  return out;
}

nlohmann::json program_of(const nlohmann::json& reply, const std::string& name) {
  for (const auto& p : reply["programs"])
    if (p["name"] == name) return p;
  return nlohmann::json{};
}

bool ready_with_status(const Preforkd& d, const std::string& program, size_t n, const std::string& status) {
  auto p = program_of(d.control({{"cmd", "status"}}), program);
  if (p.is_null() || p["workers"].size() != n) return false;
  for (const auto& w : p["workers"])
    if (w["state"] != "ready" || w["status"] != status) return false;
  return true;
}

nlohmann::json Preforkd::control(const nlohmann::json& request, std::chrono::milliseconds timeout) const {
  std::string reply = unix_request(control_socket_, request.dump(), timeout);
  auto j = nlohmann::json::parse(reply, nullptr, false);
  return j.is_discarded() ? nlohmann::json{{"ok", false}, {"error", "no reply: " + reply}} : j;
}

uint16_t Preforkd::port(size_t n) const {
  std::string text = log();
  size_t pos = 0;
  const std::string needle = "listening on 127.0.0.1:";
  for (size_t i = 0;; ++i) {
    pos = text.find(needle, pos);
    if (pos == std::string::npos) return 0;
    pos += needle.size();
    if (i == n) return static_cast<uint16_t>(std::atoi(text.c_str() + pos));
  }
}

bool Preforkd::wait_workers(size_t n, std::chrono::milliseconds timeout) const {
  return wait_until(
      [&] {
        size_t live = 0;
        for (pid_t c : workers())
          if (pid_alive(c)) ++live;
        return live == n;
      },
      timeout);
}

int Preforkd::stop(std::chrono::milliseconds timeout) {
  proc_->signal(SIGTERM);
  auto st = proc_->wait(timeout);
  if (!st || !WIFEXITED(*st)) return -1;
  return WEXITSTATUS(*st);
}

}  // namespace preforkd::test
