#include "sys/procfs.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>

namespace preforkd::sys {

namespace {

std::string proc_dir(pid_t pid) { return pid == 0 ? "/proc/self" : "/proc/" + std::to_string(pid); }

std::optional<std::string> status_field(pid_t pid, const std::string& key) {
  std::ifstream in(proc_dir(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.compare(0, key.size(), key) == 0 && line.size() > key.size() && line[key.size()] == ':') {
      size_t p = line.find_first_not_of(" \t", key.size() + 1);
      return p == std::string::npos ? std::string() : line.substr(p);
    }
  }
  return std::nullopt;
}

}  // namespace

int count_open_fds(pid_t pid) {
  DIR* d = opendir((proc_dir(pid) + "/fd").c_str());
  if (d == nullptr) return -1;
  int n = 0;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] != '.') ++n;
  }
  closedir(d);
  return pid == 0 ? n - 1 : n;  // minus the directory fd itself
}

int thread_count(pid_t pid) {
  auto v = status_field(pid, "Threads");
  return v ? std::atoi(v->c_str()) : -1;
}

std::optional<unsigned long long> rss_bytes(pid_t pid) {
  auto v = status_field(pid, "VmRSS");  // "1234 kB"
  if (!v) return std::nullopt;
  return std::strtoull(v->c_str(), nullptr, 10) * 1024ULL;
}

void mark_all_cloexec(int from_fd) {
  DIR* d = opendir("/proc/self/fd");
  if (d == nullptr) return;
  int self = dirfd(d);
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] == '.') continue;
    int fd = std::atoi(e->d_name);
    if (fd < from_fd || fd == self) continue;
    int flags = fcntl(fd, F_GETFD);
    if (flags >= 0 && !(flags & FD_CLOEXEC)) fcntl(fd, F_SETFD, flags | FD_CLOEXEC);
  }
  closedir(d);
}

std::string self_executable() {
  char buf[4096];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return {};
  return std::string(buf, static_cast<size_t>(n));
}

std::string read_small_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "";
  char buf[4096];
  ssize_t n = ::read(fd, buf, sizeof buf);
  ::close(fd);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
}

bool write_small_file(const std::string& path, const std::string& text) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return false;
  ssize_t n = ::write(fd, text.data(), text.size());
  int err = errno;
  ::close(fd);
  errno = err;
  return n == static_cast<ssize_t>(text.size());
}

}  // namespace preforkd::sys
