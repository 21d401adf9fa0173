#include "sys/privileges.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <sstream>

#include "sys/error.hpp"
#include "sys/procfs.hpp"

namespace preforkd::sys {

std::optional<uint64_t> parse_cap_eff(const std::string& status_text) {
  std::istringstream in(status_text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("CapEff:", 0) != 0) continue;
    std::string hex = line.substr(7);
    size_t start = hex.find_first_not_of(" \t");
    if (start == std::string::npos) return std::nullopt;
    char* end = nullptr;
    errno = 0;
    unsigned long long v = std::strtoull(hex.c_str() + start, &end, 16);
    if (errno != 0 || end == hex.c_str() + start) return std::nullopt;
    return static_cast<uint64_t>(v);
  }
  return std::nullopt;
}

Privileges current_privileges() {
  Privileges p;
  p.euid = ::geteuid();
  p.egid = ::getegid();
  uint64_t caps = parse_cap_eff(read_small_file("/proc/self/status")).value_or(p.euid == 0 ? ~0ULL : 0ULL);
  p.setuid = (caps >> kCapSetuid) & 1;
  p.setgid = (caps >> kCapSetgid) & 1;
  p.net_bind_service = (caps >> kCapNetBindService) & 1;
  std::string floor = read_small_file("/proc/sys/net/ipv4/ip_unprivileged_port_start");
  char* end = nullptr;
  unsigned long v = std::strtoul(floor.c_str(), &end, 10);
  if (end != floor.c_str()) p.unprivileged_port_start = static_cast<unsigned>(v);
  return p;
}

namespace {

bool may_write(const std::string& path, int& err) {
  if (::faccessat(AT_FDCWD, path.c_str(), W_OK, AT_EACCESS) == 0) return true;
  err = errno;
  return false;
}

std::string parent_of_path(const std::string& path) {
  auto slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

}  // namespace

std::string cannot_create_in(const std::string& dir) {
  // The nearest folder that exists is the one written to (a new entry, or
  // the first missing folder on the way).
  std::string at = dir.empty() ? "." : dir;
  while (::access(at.c_str(), F_OK) != 0) {
    if (errno != ENOENT) return errno_message(at, errno);
    std::string up = parent_of_path(at);
    if (up == at) break;
    at = up;
  }
  int err = 0;
  if (may_write(at, err)) return "";
  if (at == dir) return errno_message(dir, err);
  return errno_message("cannot create " + dir + " in " + at, err);
}

std::string cannot_write_file(const std::string& file) {
  if (::access(file.c_str(), F_OK) == 0) {
    int err = 0;
    return may_write(file, err) ? "" : errno_message(file, err);
  }
  return cannot_create_in(parent_of_path(file));
}

}  // namespace preforkd::sys
