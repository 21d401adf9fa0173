// config.cpp — the value types' comparisons, names and renderings (config.hpp).
#include "config/config.hpp"

#include <fmt/format.h>

#include "config/schema.hpp"

namespace preforkd::config {

// Both walk the schema's tables, so a new key cannot be left out.
bool Program::operator==(const Program& o) const {
  return name == o.name && schema::same(schema::program_fields(), *this, o);
}

bool Supervisor::operator==(const Supervisor& o) const {
  return schema::same(schema::supervisor_fields(), *this, o);
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

// The fields of one map at `indent`, in table order: `key: value`, the keys
// inside a map written as one line (`log: {level: info, file: null}`), or the
// field's own lines.
template <class S>
void dump_fields(const std::vector<schema::Field<S>>& fields, const S& s, int indent, std::string& out) {
  auto line = [&out](int depth, const std::string& text) {
    out.append(static_cast<std::size_t>(depth) * 2, ' ');
    out += text;
    out += '\n';
  };
  for (std::size_t i = 0; i < fields.size(); ++i) {
    const auto& f = fields[i];
    if (f.print) {
      for (const auto& text : f.print(s)) line(indent, text);
      continue;
    }
    const std::size_t dot = f.key.find('.');
    if (dot == std::string::npos) {
      line(indent, f.key + ": " + f.show(s));
      continue;
    }
    const std::string prefix = f.key.substr(0, dot + 1);
    std::string text;
    for (; i < fields.size() && fields[i].key.compare(0, prefix.size(), prefix) == 0; ++i)
      text += (text.empty() ? "{" : ", ") + fields[i].key.substr(prefix.size()) + ": " + fields[i].show(s);
    --i;
    line(indent, prefix.substr(0, dot) + ": " + text + "}");
  }
}

}  // namespace

std::string dump(const Config& config) {
  using schema::quote;
  std::string out = "path: " + quote(config.path) + "\nsupervisor:\n";
  dump_fields(schema::supervisor_fields(), config.supervisor, 1, out);
  out += config.programs.empty() ? "programs: {}\n" : "programs:\n";
  for (const Program& p : config.programs) {
    out += "  " + quote(p.name) + ":\n";
    dump_fields(schema::program_fields(), p, 2, out);
  }
  return out;
}

}  // namespace preforkd::config
