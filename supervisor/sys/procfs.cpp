#include "sys/procfs.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
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

// Whitespace-separated unsigned numbers; nullopt if anything else is there.
std::optional<std::vector<unsigned long>> numbers(const std::string& text) {
  std::vector<unsigned long> out;
  size_t i = 0;
  while (i < text.size()) {
    if (text[i] == ' ' || text[i] == '\t') {
      ++i;
      continue;
    }
    size_t j = i;
    unsigned long v = 0;
    while (j < text.size() && text[j] >= '0' && text[j] <= '9' && j - i < 10)
      v = v * 10 + static_cast<unsigned long>(text[j++] - '0');
    if (j == i || (j < text.size() && text[j] != ' ' && text[j] != '\t')) return std::nullopt;
    out.push_back(v);
    i = j;
  }
  return out;
}

// The `Uid:`, `Gid:` and `Groups:` lines of one read of /proc/<pid>/status.
struct StatusIds {
  std::vector<unsigned long> uids, gids, groups;
};

std::optional<StatusIds> status_ids(pid_t pid) {
  if (pid <= 0) return std::nullopt;  // never /proc/self by accident
  std::ifstream in(proc_dir(pid) + "/status");
  if (!in) return std::nullopt;
  StatusIds ids;
  bool have_uid = false, have_gid = false, have_groups = false;
  std::string line;
  while (std::getline(in, line)) {
    auto take = [&](const char* key, std::vector<unsigned long>& into, bool& have) {
      size_t n = std::strlen(key);
      if (line.compare(0, n, key) != 0) return true;
      auto v = numbers(line.substr(n));
      if (!v) return false;
      into = std::move(*v);
      have = true;
      return true;
    };
    if (!take("Uid:", ids.uids, have_uid) || !take("Gid:", ids.gids, have_gid) ||
        !take("Groups:", ids.groups, have_groups))
      return std::nullopt;
  }
  // Uid/Gid: real, effective, saved, filesystem.
  if (!have_uid || !have_gid || !have_groups || ids.uids.size() < 2 || ids.gids.size() < 2) return std::nullopt;
  return ids;
}

std::vector<gid_t> groups_of(const StatusIds& ids) {
  std::vector<gid_t> out;
  auto add = [&](unsigned long g) {
    auto gid = static_cast<gid_t>(g);
    if (std::find(out.begin(), out.end(), gid) == out.end()) out.push_back(gid);
  };
  add(ids.gids[0]);
  add(ids.gids[1]);
  for (unsigned long g : ids.groups) add(g);
  return out;
}

}  // namespace

std::optional<std::vector<gid_t>> process_groups(pid_t pid) {
  auto ids = status_ids(pid);
  if (!ids) return std::nullopt;
  return groups_of(*ids);
}

std::optional<std::vector<gid_t>> process_groups_of_uid(pid_t pid, uid_t uid) {
  auto ids = status_ids(pid);
  if (!ids || (ids->uids[0] != uid && ids->uids[1] != uid)) return std::nullopt;
  return groups_of(*ids);
}

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

pid_t process_group_of(pid_t pid) {
  if (pid <= 0) return 0;
  std::string stat = read_small_file(proc_dir(pid) + "/stat");
  // "pid (comm) state ppid pgrp ...": comm may hold spaces and ')', so the last ')' ends it.
  size_t end = stat.rfind(')');
  if (end == std::string::npos) return 0;
  char state = 0;
  int ppid = 0, pgrp = 0;
  if (std::sscanf(stat.c_str() + end + 1, " %c %d %d", &state, &ppid, &pgrp) != 3 || pgrp <= 0) return 0;
  return static_cast<pid_t>(pgrp);
}

}  // namespace preforkd::sys
