// procfs.hpp — small readers of /proc, for self-checks and tests.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

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
// The groups of process `pid` from /proc/<pid>/status: its real and
// effective gid (`Gid:`) first, then its supplementary groups (`Groups:`),
// each once. nullopt if it cannot be read. Unlike the readers above, pid 0
// is not "self": SO_PEERCRED reports 0 for a peer in another pid namespace,
// and that must never be mistaken for us. With `uid`, nullopt also when
// neither the real nor the effective uid of the process is `uid` (the pid
// was reused by someone else since the caller learnt it).
std::optional<std::vector<gid_t>> process_groups(pid_t pid);
std::optional<std::vector<gid_t>> process_groups_of_uid(pid_t pid, uid_t uid);
// The process group of `pid` (field 5 of /proc/<pid>/stat), or 0 if it
// cannot be read (gone, or no /proc). pid 0 is not "self" here either.
pid_t process_group_of(pid_t pid);

}  // namespace preforkd::sys
