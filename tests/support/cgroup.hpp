// cgroup.hpp — a child cgroup of the `pids` controller for the tests that
// run preforkd under a real limit on its processes (tests/integration/
// limits_test.cpp). cgroup v1 (/sys/fs/cgroup/pids, as on the CI machine)
// or, failing that, cgroup v2 with `pids` enabled in the subtree (the
// unified hierarchy at /sys/fs/cgroup or /sys/fs/cgroup/unified).
// Needs root; a test that cannot have one says why and skips.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace preforkd::test {

class PidsCgroup {
 public:
  // A fresh cgroup named `name` (made unique with our pid), or nullptr with
  // `why` set when there is no writable pids controller.
  static std::unique_ptr<PidsCgroup> create(const std::string& name, std::string& why);
  // Kills what is left in it (SIGKILL), waits until it is empty, removes it.
  ~PidsCgroup();
  PidsCgroup(const PidsCgroup&) = delete;
  PidsCgroup& operator=(const PidsCgroup&) = delete;

  const std::string& path() const { return path_; }
  // pids.max: a number, or "max".
  bool set_max(const std::string& value) const;
  std::vector<pid_t> procs() const;
  // The "max" count of pids.events: how many forks the limit refused.
  long refused_forks() const;
  // For Process's in_child hook: moves the calling process into the cgroup.
  // Async-signal-safe (open, write, close): it runs between fork and exec.
  void enter_from_child() const;

 private:
  explicit PidsCgroup(std::string path) : path_(std::move(path)), procs_file_(path_ + "/cgroup.procs") {}
  std::string path_;
  std::string procs_file_;
};

}  // namespace preforkd::test
