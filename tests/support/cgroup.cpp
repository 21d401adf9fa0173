#include "support/cgroup.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "support/support.hpp"

namespace preforkd::test {

namespace {

bool write_text(const std::string& path, const std::string& text) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return false;
  bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  ::close(fd);
  return ok;
}


}  // namespace

std::unique_ptr<PidsCgroup> PidsCgroup::create(const std::string& name, std::string& why) {
  std::string leaf = "preforkd-test-" + name + "-" + std::to_string(::getpid());
  std::vector<std::string> parents;
  if (file_exists("/sys/fs/cgroup/pids/cgroup.procs")) parents.push_back("/sys/fs/cgroup/pids");  // v1
  for (const char* v2 : {"/sys/fs/cgroup", "/sys/fs/cgroup/unified"})
    if (read_file(std::string(v2) + "/cgroup.subtree_control").find("pids") != std::string::npos)
      parents.push_back(v2);
  if (parents.empty()) {
    why = "no pids cgroup controller: neither /sys/fs/cgroup/pids (v1) nor a v2 hierarchy with pids in "
          "cgroup.subtree_control";
    return nullptr;
  }
  for (const auto& parent : parents) {
    std::string path = parent + "/" + leaf;
    if (::mkdir(path.c_str(), 0755) != 0 && errno != EEXIST) {
      why = "cannot create " + path + ": " + std::strerror(errno);
      continue;
    }
    if (!file_exists(path + "/pids.max") || !write_text(path + "/pids.max", "max")) {
      why = path + "/pids.max is not writable";
      ::rmdir(path.c_str());
      continue;
    }
    return std::unique_ptr<PidsCgroup>(new PidsCgroup(path));
  }
  return nullptr;
}

PidsCgroup::~PidsCgroup() {
  // Whatever a failed test left behind is killed first: a cgroup with
  // processes cannot be removed.
  wait_until(
      [&] {
        auto left = procs();
        for (pid_t p : left) ::kill(p, SIGKILL);
        return left.empty();
      },
      10s);
  wait_until([&] { return ::rmdir(path_.c_str()) == 0 || errno == ENOENT; }, 10s);
}

bool PidsCgroup::set_max(const std::string& value) const { return write_text(path_ + "/pids.max", value); }

std::vector<pid_t> PidsCgroup::procs() const {
  std::vector<pid_t> out;
  std::istringstream in(read_file(procs_file_));
  pid_t p;
  while (in >> p) out.push_back(p);
  return out;
}

long PidsCgroup::refused_forks() const {
  std::istringstream in(read_file(path_ + "/pids.events"));
  std::string key;
  long n = 0;
  while (in >> key >> n)
    if (key == "max") return n;
  return 0;
}

void PidsCgroup::enter_from_child() const {
  char digits[24];
  int len = 0;
  pid_t pid = ::getpid();
  char rev[24];
  int k = 0;
  do {
    rev[k++] = static_cast<char>('0' + pid % 10);
    pid /= 10;
  } while (pid > 0);
  while (k > 0) digits[len++] = rev[--k];
  int fd = ::open(procs_file_.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) ::_exit(125);
  if (::write(fd, digits, static_cast<size_t>(len)) != len) ::_exit(125);
  ::close(fd);
}

}  // namespace preforkd::test
