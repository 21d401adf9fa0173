#include "sys/runtime_dir.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>

#include "sys/error.hpp"

namespace preforkd::sys {

std::string choose_runtime_dir(uid_t euid, const char* xdg_runtime_dir) {
  if (euid == 0) return kRootRuntimeDir;
  // The XDG Base Directory spec: a relative value is invalid and ignored.
  if (xdg_runtime_dir != nullptr && xdg_runtime_dir[0] == '/') {
    std::string dir = xdg_runtime_dir;
    while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
    return (dir == "/" ? "" : dir) + "/preforkd";
  }
  return "/tmp/preforkd-" + std::to_string(euid);
}

std::string runtime_dir() { return choose_runtime_dir(::geteuid(), std::getenv("XDG_RUNTIME_DIR")); }

std::string check_private_dir(const std::string& dir, bool create) {
  const std::string refuse = " (preforkd refuses to use it for its control socket: remove it, or set "
                             "supervisor.control_socket, or preforkctl -s)";
  if (create && ::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST)
    return errno_message("cannot create " + dir, errno);
  struct stat st {};
  if (::lstat(dir.c_str(), &st) != 0) {
    if (errno == ENOENT && !create) return "";
    return errno_message("cannot inspect " + dir, errno);
  }
  if (S_ISLNK(st.st_mode)) return dir + " is a symbolic link, not a folder" + refuse;
  if (!S_ISDIR(st.st_mode)) return dir + " is not a folder" + refuse;
  uid_t me = ::geteuid();
  if (st.st_uid != me)
    return dir + " is owned by uid " + std::to_string(st.st_uid) + ", not by uid " + std::to_string(me) + refuse;
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0)
    return dir + " is writable by its group or by others (mode " + std::to_string((st.st_mode >> 6) & 7) +
           std::to_string((st.st_mode >> 3) & 7) + std::to_string(st.st_mode & 7) + ")" + refuse;
  return "";
}

}  // namespace preforkd::sys
