// procfs.hpp — small readers of /proc, for self-checks and tests.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>

namespace preforkd::sys {

// Number of open fds of `pid` (0 = self), or -1.
int count_open_fds(pid_t pid = 0);
// "Threads:" of /proc/<pid>/status (0 = self), or -1 (T8 asserts 1 at start-up).
int thread_count(pid_t pid = 0);
// Resident set size in bytes (VmRSS), or nullopt.
std::optional<unsigned long long> rss_bytes(pid_t pid = 0);
// The absolute path of the running executable (/proc/self/exe).
std::string self_executable();

}  // namespace preforkd::sys
