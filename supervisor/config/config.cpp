// config.cpp — the value types' comparisons, names and renderings (config.hpp).
#include "config/config.hpp"

#include <fmt/format.h>

#include "config/signals.hpp"
#include "config/units.hpp"
#include "sys/io.hpp"

namespace preforkd::config {

bool Program::operator==(const Program& o) const {
  return name == o.name && command == o.command && executable == o.executable &&
         workers == o.workers && autoscale == o.autoscale && listen == o.listen && backlog == o.backlog &&
         reuseport == o.reuseport && environment == o.environment && directory == o.directory &&
         user == o.user && group == o.group && umask == o.umask && rlimits == o.rlimits &&
         restart == o.restart && backoff == o.backoff && reload == o.reload && ready == o.ready &&
         start_timeout == o.start_timeout && watchdog_timeout == o.watchdog_timeout &&
         stop_signal == o.stop_signal && stop_timeout == o.stop_timeout &&
         kill_group == o.kill_group && orphans == o.orphans && notify_socket == o.notify_socket && max_requests == o.max_requests &&
         max_memory == o.max_memory && ready_min == o.ready_min && stdout_target == o.stdout_target &&
         stderr_target == o.stderr_target;
}

bool Supervisor::operator==(const Supervisor& o) const {
  return control_socket == o.control_socket && control_group == o.control_group &&
         pidfile == o.pidfile && log_level == o.log_level && log_file == o.log_file &&
         metrics == o.metrics && metrics_address == o.metrics_address &&
         shutdown_timeout == o.shutdown_timeout;
}

std::string ListenAddress::key() const {
  switch (family) {
    case Family::Inet: return fmt::format("tcp:{}:{}", host, port);
    case Family::Inet6: return fmt::format("tcp6:[{}]:{}", host, port);
    case Family::Unix: return "unix:" + path;
  }
  return {};
}

std::string Diagnostic::to_string() const {
  if (line <= 0) return fmt::format("{}: {}", file, message);
  if (column <= 0) return fmt::format("{}:{}: {}", file, line, message);
  return fmt::format("{}:{}:{}: {}", file, line, column, message);
}

const char* to_string(LogLevel level) {
  switch (level) {
    case LogLevel::Trace: return "trace";
    case LogLevel::Debug: return "debug";
    case LogLevel::Info: return "info";
    case LogLevel::Warn: return "warn";
    case LogLevel::Error: return "error";
  }
  return "?";
}

const char* to_string(Restart restart) {
  switch (restart) {
    case Restart::Always: return "always";
    case Restart::OnFailure: return "on-failure";
    case Restart::Never: return "never";
  }
  return "?";
}

const char* to_string(ReadyMode ready) {
  switch (ready) {
    case ReadyMode::Exec: return "exec";
    case ReadyMode::Notify: return "notify";
  }
  return "?";
}

const char* to_string(OrphanMode mode) {
  switch (mode) {
    case OrphanMode::Stop: return "stop";
    case OrphanMode::Keep: return "keep";
  }
  return "?";
}

const char* to_string(Output::Kind kind) {
  switch (kind) {
    case Output::Kind::Log: return "log";
    case Output::Kind::Inherit: return "inherit";
    case Output::Kind::Null: return "null";
    case Output::Kind::File: return "file";
  }
  return "?";
}

const char* to_string(ListenAddress::Family f) {
  switch (f) {
    case ListenAddress::Family::Inet: return "inet";
    case ListenAddress::Family::Inet6: return "inet6";
    case ListenAddress::Family::Unix: return "unix";
  }
  return "?";
}

namespace {

// A string as a YAML-ish scalar: bare when unambiguous, double-quoted otherwise.
std::string quote(const std::string& s) {
  bool plain = !s.empty() && s != "null" && s != "true" && s != "false";
  for (char c : s) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '-' || c == '.' || c == '/' || c == '+' || c == '@' ||
                    c == '%' || c == '=' || c == ',';
    if (!ok) plain = false;
  }
  if (plain) return s;
  std::string out = "\"";
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (u < 0x20 || u == 0x7f) {
      out += fmt::format("\\x{:02x}", u);
    } else {
      out += c;
    }
  }
  return out + "\"";
}

std::string opt(const std::optional<std::string>& s) { return s ? quote(*s) : "null"; }

std::string output(const Output& o) {
  return o.kind == Output::Kind::File ? quote(o.path) : to_string(o.kind);
}

}  // namespace

std::string dump(const Config& config) {
  std::string out;
  auto line = [&out](int indent, const std::string& text) {
    out.append(static_cast<std::size_t>(indent) * 2, ' ');
    out += text;
    out += '\n';
  };
  const Supervisor& s = config.supervisor;
  line(0, "path: " + quote(config.path));
  line(0, "supervisor:");
  line(1, "control_socket: " + quote(s.control_socket));
  line(1, "control_group: " + opt(s.control_group));
  line(1, "pidfile: " + opt(s.pidfile));
  line(1, fmt::format("log: {{level: {}, file: {}}}", to_string(s.log_level), opt(s.log_file)));
  line(1, "metrics: " + opt(s.metrics));
  line(1, "shutdown_timeout: " + format_duration(s.shutdown_timeout));
  line(0, config.programs.empty() ? "programs: {}" : "programs:");
  for (const Program& p : config.programs) {
    line(1, quote(p.name) + ":");
    std::string argv;
    for (const auto& a : p.command) argv += (argv.empty() ? "" : ", ") + quote(a);
    line(2, "command: [" + argv + "]");
    line(2, "executable: " + quote(p.executable));
    line(2, fmt::format("workers: {}", p.workers));
    if (p.autoscale) {
      const Autoscale& a = *p.autoscale;
      line(2, fmt::format("autoscale: {{min: {}, max: {}, up_after: {}, down_after: {}, cooldown: {}, step: {}, "
                          "target_utilization: {}%}}",
                          a.min, a.max, format_duration(a.up_after), format_duration(a.down_after),
                          format_duration(a.cooldown), a.step, a.target_utilization));
    }
    line(2, p.listen.empty() ? "listen: []" : "listen:");
    for (const auto& l : p.listen) {
      line(3, fmt::format("- {{key: {}, name: {}, text: {}}}", quote(l.key()), quote(l.name),
                          quote(l.text)));
    }
    line(2, fmt::format("backlog: {}", p.backlog));
    line(2, fmt::format("reuseport: {}", p.reuseport));
    line(2, p.environment.empty() ? "environment: {}" : "environment:");
    for (const auto& [k, v] : p.environment) line(3, quote(k) + ": " + quote(v));
    line(2, "directory: " + opt(p.directory));
    line(2, "user: " + opt(p.user));
    line(2, "group: " + opt(p.group));
    line(2, "umask: " + (p.umask ? fmt::format("{:04o}", *p.umask) : std::string("null")));
    line(2, p.rlimits.empty() ? "rlimits: {}" : "rlimits:");
    for (const auto& r : p.rlimits) {
      line(3, r.name + ": " +
                  (r.value == sys::kRlimitInfinity ? std::string("unlimited") : std::to_string(r.value)));
    }
    line(2, fmt::format("restart: {}", to_string(p.restart)));
    line(2, fmt::format("backoff: {{min: {}, max: {}, reset_after: {}}}",
                        format_duration(p.backoff.min), format_duration(p.backoff.max),
                        format_duration(p.backoff.reset_after)));
    line(2, fmt::format("reload: {{batch: {}{}, settle: {}, guard: {}}}", p.reload.batch,
                        p.reload.batch_percent ? "%" : "", format_duration(p.reload.settle),
                        format_duration(p.reload.guard)));
    line(2, fmt::format("ready: {}", to_string(p.ready)));
    line(2, "start_timeout: " + format_duration(p.start_timeout));
    line(2, "watchdog_timeout: " + format_duration(p.watchdog_timeout));
    line(2, fmt::format("stop_signal: {}", signal_name(p.stop_signal)));
    line(2, "stop_timeout: " + format_duration(p.stop_timeout));
    line(2, fmt::format("kill_group: {}", p.kill_group));
    line(2, fmt::format("orphans: {}", to_string(p.orphans)));
    line(2, fmt::format("notify_socket: {}", p.notify_socket));
    line(2, fmt::format("max_requests: {}", p.max_requests));
    line(2, fmt::format("max_memory: {}", p.max_memory));
    line(2, fmt::format("ready_min: {}", p.ready_min));
    line(2, "stdout: " + output(p.stdout_target));
    line(2, "stderr: " + output(p.stderr_target));
  }
  return out;
}

}  // namespace preforkd::config
