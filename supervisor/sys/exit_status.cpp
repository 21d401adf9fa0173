#include "sys/exit_status.hpp"

#include <sys/wait.h>

#include <cerrno>
#include <cstring>

#include "sys/error.hpp"

namespace preforkd::sys {

ExitStatus ExitStatus::from_wait_status(int status) {
  if (WIFSIGNALED(status)) return killed(WTERMSIG(status), WCOREDUMP(status));
  if (WIFEXITED(status)) return exited(WEXITSTATUS(status));
  return exited(0);  // stopped/continued are never requested (no WUNTRACED)
}

std::string ExitStatus::to_string() const {
  if (!signaled_) return "exited with status " + std::to_string(value_);
  std::string s = "killed by signal " + std::to_string(value_);
  if (const char* abbrev = sigabbrev_np(value_)) s += std::string(" (") + abbrev + ")";
  if (core_) s += " (core dumped)";
  return s;
}

std::vector<Reaped> reap_all() {
  bool more = false;
  return reap_some(SIZE_MAX, more);
}

std::vector<Reaped> reap_some(size_t max, bool& more) {
  std::vector<Reaped> out;
  more = false;
  for (;;) {
    if (out.size() >= max) {
      more = true;
      break;
    }
    int status = 0;
    pid_t pid = retry_on_eintr([&] { return ::waitpid(-1, &status, WNOHANG); });
    if (pid <= 0) break;  // 0: children left but none exited; -1/ECHILD: no children
    out.push_back({pid, ExitStatus::from_wait_status(status)});
  }
  return out;
}

}  // namespace preforkd::sys
