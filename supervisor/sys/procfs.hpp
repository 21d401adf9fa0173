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
// Sets FD_CLOEXEC on every open fd >= `from_fd` (T5): for fds that a library
// opened without O_CLOEXEC (spdlog's log file, from Debian's compiled spdlog).
void mark_all_cloexec(int from_fd = 3);
// The absolute path of the running executable (/proc/self/exe).
std::string self_executable();
// The first 4 KiB of a /proc or /sys file ("" if it cannot be read).
std::string read_small_file(const std::string& path);
// Writes `text` to a /proc/sys file; false with errno set on failure.
bool write_small_file(const std::string& path, const std::string& text);

}  // namespace preforkd::sys
