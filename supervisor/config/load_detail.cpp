// load_detail.cpp — the loader's pure rules (load_detail.hpp): paths,
// addresses, umask, names, and the search for a command's executable.
#include "config/load_detail.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "config/units.hpp"
#include "sys/io.hpp"

namespace preforkd::config {

namespace detail {

std::string resolve_path(const std::string& folder, const std::string& path) {
  std::filesystem::path p(path);
  if (p.is_relative()) p = std::filesystem::path(folder) / p;
  std::string out = p.lexically_normal().string();
  // lexically_normal keeps a trailing separator ("/run/x/"); drop it.
  if (out.size() > 1 && out.back() == '/') out.pop_back();
  return out;
}

std::optional<ListenAddress> parse_address(std::string_view text, const std::string& folder,
                                           bool allow_unix, std::string* error) {
  auto fail = [&](std::string message) -> std::optional<ListenAddress> {
    if (error) *error = std::move(message);
    return std::nullopt;
  };
  auto generic = [&] {
    return fail(
        fmt::format("bad address `{}`: expected {}", text,
                    allow_unix ? "host:port, [v6]:port or unix:/path" : "host:port or [v6]:port"));
  };

  ListenAddress a;
  a.text = std::string(text);
  constexpr std::string_view kUnix = "unix:";
  if (text.substr(0, kUnix.size()) == kUnix) {
    const std::string_view rest = text.substr(kUnix.size());
    if (!allow_unix || rest.empty()) return generic();
    a.family = ListenAddress::Family::Unix;
    a.path = resolve_path(folder, std::string(rest));
    if (a.path.size() > kMaxUnixPath) {
      return fail(fmt::format("unix socket path `{}` is too long ({} bytes, at most {})", a.path,
                              a.path.size(), kMaxUnixPath));
    }
    return a;
  }

  std::string_view port;
  if (!text.empty() && text[0] == '[') {
    const std::size_t close = text.find("]:");
    if (close == std::string_view::npos) return generic();
    const std::string host(text.substr(1, close - 1));
    port = text.substr(close + 2);
    auto canonical = sys::canonical_ipv6(host);
    if (!canonical) {
      return fail(fmt::format("bad address `{}`: `{}` is not a numeric IPv6 address", text, host));
    }
    a.family = ListenAddress::Family::Inet6;
    a.host = *canonical;
  } else {
    const std::size_t colon = text.rfind(':');
    if (colon == std::string_view::npos || colon == 0) return generic();
    const std::string host(text.substr(0, colon));
    port = text.substr(colon + 1);
    if (host.find(':') != std::string::npos) return generic();  // IPv6 needs brackets
    a.family = ListenAddress::Family::Inet;
    if (host == "*") {
      a.host = "0.0.0.0";
    } else if (host == "localhost") {
      a.host = "127.0.0.1";
    } else {
      auto canonical = sys::canonical_ipv4(host);
      if (!canonical) {
        return fail(fmt::format(
            "bad address `{}`: the host must be a numeric IPv4 address, `*` or `localhost` "
            "(names are not resolved)",
            text));
      }
      a.host = *canonical;
    }
  }
  const auto p = parse_uint(port);
  if (!p || *p > 65535) {
    return fail(fmt::format("bad address `{}`: the port must be a number from 0 to 65535", text));
  }
  a.port = static_cast<uint16_t>(*p);
  return a;
}

std::optional<mode_t> parse_umask(std::string_view text, std::string* error) {
  auto fail = [&](std::string message) -> std::optional<mode_t> {
    if (error) *error = std::move(message);
    return std::nullopt;
  };
  const bool octal =
      !text.empty() && text.size() <= 12 &&
      std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '7'; });
  if (!octal) return fail(fmt::format("expected an octal mode like `022`, got `{}`", text));
  uint64_t value = 0;
  for (char c : text) value = value * 8 + static_cast<uint64_t>(c - '0');
  if (value > 0777) return fail(fmt::format("must be at most 0777, got `{}`", text));
  return static_cast<mode_t>(value);
}

bool valid_program_name(std::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || c == '-';
  });
}

bool valid_env_name(std::string_view name) {
  if (name.empty() || (name[0] >= '0' && name[0] <= '9')) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
  });
}

bool reserved_env_name(std::string_view name) {
  static constexpr std::array<std::string_view, 6> kReserved{"LISTEN_FDS",     "LISTEN_PID",
                                                             "LISTEN_FDNAMES", "WATCHDOG_USEC",
                                                             "WATCHDOG_PID",   "NOTIFY_SOCKET"};
  if (std::find(kReserved.begin(), kReserved.end(), name) != kReserved.end()) return true;
  return name.substr(0, 9) == "PREFORKD_";
}

bool valid_socket_name(std::string_view name) {
  if (name.empty() || name.size() > 255) return false;
  return std::all_of(name.begin(), name.end(),
                     [](char c) { return c > ' ' && c < 0x7f && c != ':'; });
}

namespace {

// Why `path` cannot be exec'd, or "" when it can.
std::string exec_problem(const std::string& path) {
  sys::FileType type{};
  if (int err = sys::file_type(path, type)) return std::strerror(err);
  if (type == sys::FileType::Directory) return "is a directory";
  if (type != sys::FileType::Regular) return "not a regular file";
  if (!sys::can_execute(path)) return "not executable";
  return {};
}

}  // namespace

std::string current_dir() {
  std::error_code ec;
  const auto cwd = std::filesystem::current_path(ec);
  return ec ? std::string("/") : cwd.string();
}

std::optional<std::string> find_executable(const std::string& command0, const std::string& folder,
                                           const std::vector<std::string>& extra_dirs,
                                           std::string* error) {
  if (command0.find('/') != std::string::npos) {
    std::string path = resolve_path(folder, command0);
    const std::string problem = exec_problem(path);
    if (problem.empty()) return path;
    if (error) *error = fmt::format("`{}`: {}", path, problem);
    return std::nullopt;
  }
  // Like execvp, but done once at load time so the daemon execs an absolute
  // path. Empty $PATH entries (the current directory to sh) are skipped: the
  // current directory of a daemon is not a place to find programs in.
  const char* env = std::getenv("PATH");
  const std::string path_var =
      env ? env : "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
  std::vector<std::string> dirs;
  std::size_t start = 0;
  while (start <= path_var.size()) {
    std::size_t end = path_var.find(':', start);
    if (end == std::string::npos) end = path_var.size();
    if (end > start) dirs.push_back(path_var.substr(start, end - start));
    start = end + 1;
  }
  dirs.insert(dirs.end(), extra_dirs.begin(), extra_dirs.end());
  const std::string cwd = current_dir();
  for (const auto& dir : dirs) {
    if (dir.empty()) continue;
    std::string candidate = resolve_path(cwd, dir + "/" + command0);
    if (exec_problem(candidate).empty()) return candidate;
  }
  if (error) *error = fmt::format("`{}`: not found in $PATH or next to preforkd", command0);
  return std::nullopt;
}

}  // namespace detail

}  // namespace preforkd::config
