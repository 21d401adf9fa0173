#include "core/config_diff.hpp"

#include <algorithm>

namespace preforkd::core {

namespace {

const config::Program* find(const std::vector<config::Program>& list, const std::string& name) {
  auto it = std::find_if(list.begin(), list.end(), [&](const config::Program& p) { return p.name == name; });
  return it == list.end() ? nullptr : &*it;
}

ProgramDiff compare(const config::Program& a, const config::Program& b) {
  ProgramDiff d;
  d.kind = ProgramDiff::Kind::Changed;
  d.name = a.name;
  d.workers_before = a.workers;
  d.workers_after = b.workers;
  auto check = [&](bool differs, const char* key, std::vector<std::string>& into) {
    if (differs) into.emplace_back(key);
  };
  // What a worker is started with: a running process cannot take these on.
  check(a.command != b.command || a.executable != b.executable, "command", d.replace);
  check(a.listen != b.listen, "listen", d.replace);
  check(a.environment != b.environment, "environment", d.replace);
  check(a.directory != b.directory, "directory", d.replace);
  check(a.user != b.user, "user", d.replace);
  check(a.group != b.group, "group", d.replace);
  check(a.umask != b.umask, "umask", d.replace);
  check(a.rlimits != b.rlimits, "rlimits", d.replace);
  check(!(a.stdout_target == b.stdout_target), "stdout", d.replace);
  check(!(a.stderr_target == b.stderr_target), "stderr", d.replace);
  check(a.watchdog_timeout != b.watchdog_timeout, "watchdog_timeout", d.replace);  // WATCHDOG_USEC
  check(a.notify_socket != b.notify_socket, "notify_socket", d.replace);           // NOTIFY_SOCKET
  // What preforkd does around the workers: applied to the running ones.
  check(a.workers != b.workers || a.autoscale != b.autoscale, "workers", d.in_place);
  check(a.backlog != b.backlog, "backlog", d.in_place);
  check(a.restart != b.restart, "restart", d.in_place);
  check(!(a.backoff == b.backoff), "backoff", d.in_place);
  check(!(a.reload == b.reload), "reload", d.in_place);
  check(a.ready != b.ready, "ready", d.in_place);
  check(a.start_timeout != b.start_timeout, "start_timeout", d.in_place);
  check(a.stop_signal != b.stop_signal, "stop_signal", d.in_place);
  check(a.stop_timeout != b.stop_timeout, "stop_timeout", d.in_place);
  check(a.kill_group != b.kill_group, "kill_group", d.in_place);
  check(a.orphans != b.orphans, "orphans", d.in_place);  // read at each worker's exit
  check(a.max_requests != b.max_requests, "max_requests", d.in_place);
  check(a.max_memory != b.max_memory, "max_memory", d.in_place);
  check(a.ready_min != b.ready_min, "ready_min", d.in_place);  // read by each GET /readyz
  if (d.replace.empty() && d.in_place.empty()) d.kind = ProgramDiff::Kind::Unchanged;
  return d;
}

}  // namespace

bool ConfigDiff::changes_anything() const {
  return !supervisor_in_place.empty() ||
         std::any_of(programs.begin(), programs.end(),
                     [](const ProgramDiff& p) { return p.kind != ProgramDiff::Kind::Unchanged; });
}

ConfigDiff diff(const config::Config& running, const config::Config& next) {
  ConfigDiff out;
  for (const auto& p : running.programs) {
    if (find(next.programs, p.name) != nullptr) continue;
    ProgramDiff d;
    d.kind = ProgramDiff::Kind::Removed;
    d.name = p.name;
    d.workers_before = p.workers;
    out.programs.push_back(std::move(d));
  }
  for (const auto& p : next.programs) {
    const config::Program* old = find(running.programs, p.name);
    if (old == nullptr) {
      ProgramDiff d;
      d.kind = ProgramDiff::Kind::Added;
      d.name = p.name;
      d.workers_after = p.workers;
      out.programs.push_back(std::move(d));
      continue;
    }
    // reuseport decides whether the kernel socket is shared or one per slot; a
    // socket cannot switch, and a new one cannot be bound beside the old kind.
    if (old->reuseport != p.reuseport)
      out.errors.push_back("programs." + p.name +
                           ".reuseport: cannot be changed by a reload (restart preforkd for it)");
    out.programs.push_back(compare(*old, p));
  }
  const auto& a = running.supervisor;
  const auto& b = next.supervisor;
  if (a.log_level != b.log_level) out.supervisor_in_place.emplace_back("log.level");
  if (a.log_file != b.log_file) out.supervisor_in_place.emplace_back("log.file");
  if (a.shutdown_timeout != b.shutdown_timeout) out.supervisor_in_place.emplace_back("shutdown_timeout");
  if (a.control_group != b.control_group) out.supervisor_kept.emplace_back("control_group");
  if (a.control_socket != b.control_socket) out.supervisor_kept.emplace_back("control_socket");
  if (a.metrics != b.metrics) out.supervisor_kept.emplace_back("metrics");
  if (a.pidfile != b.pidfile) out.supervisor_kept.emplace_back("pidfile");
  return out;
}

uint32_t batch_size(const config::ReloadPolicy& r, uint32_t workers) {
  uint64_t n = r.batch;
  if (r.batch_percent) n = (static_cast<uint64_t>(workers) * r.batch + 99) / 100;
  return static_cast<uint32_t>(std::max<uint64_t>(1, std::min<uint64_t>(n, workers == 0 ? 1 : workers)));
}

}  // namespace preforkd::core
