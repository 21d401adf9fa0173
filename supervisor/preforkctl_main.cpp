// preforkctl — the control client of preforkd. main() is a table of contents:
// parse the command line, find the socket, send one request, print the reply,
// map the outcome to an exit code (0 ok, 1 the command failed, 2 usage,
// 3 preforkd cannot be reached).
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>

#include "ctl/client.hpp"
#include "ctl/command_line.hpp"
#include "ctl/render.hpp"
#include "ctl/socket_path.hpp"
#include "version.hpp"

namespace {

constexpr int kExitFailed = 1;
constexpr int kExitUsage = 2;
constexpr int kExitUnreachable = 3;

// Colour only for a terminal, and never against NO_COLOR (no-color.org: set
// and not empty) or TERM=dumb.
bool use_colour() {
  const char* no_colour = std::getenv("NO_COLOR");
  const char* term = std::getenv("TERM");
  return ::isatty(STDOUT_FILENO) == 1 && (no_colour == nullptr || *no_colour == '\0') &&
         !(term != nullptr && std::strcmp(term, "dumb") == 0);
}

std::optional<std::chrono::milliseconds> reply_timeout(const preforkd::ctl::Request& request) {
  if (preforkd::ctl::waits_for_completion(request)) return std::nullopt;
  return preforkd::ctl::kReplyTimeout;
}

// status fills its REQUESTS column from a stats reply when the status reply
// carries no counters; without one the column shows "-".
nlohmann::json stats_for_status(const std::string& socket, const nlohmann::json& status) {
  using namespace preforkd::ctl;
  if (!status_lacks_counters(status)) return nullptr;
  try {
    Reply stats = exchange(socket, {{"cmd", "stats"}}, kReplyTimeout);
    if (stats.body["ok"].get<bool>()) return std::move(stats.body);
  } catch (const UnreachableError&) {
  }
  return nullptr;
}

std::string render(const preforkd::ctl::Request& request, const std::string& socket,
                   const nlohmann::json& reply) {
  using namespace preforkd::ctl;
  const std::string& c = request.command;
  if (c == "status") {
    RenderOptions options;
    options.colour = use_colour();
    return render_status(reply, stats_for_status(socket, reply), options);
  }
  if (c == "stats") return render_stats(reply);
  if (c == "metrics") return render_metrics(reply);
  if (c == "version") return render_version(reply, preforkd::kVersion);
  return render_confirmation(request, reply);
}

}  // namespace

int main(int argc, char** argv) {
  using namespace preforkd::ctl;
  Options options;
  std::string socket;
  try {
    options = parse_preforkctl_options(argc, argv);
    if (options.help) {
      std::cout << preforkctl_usage();
      return 0;
    }
    if (options.version) {
      std::cout << "preforkctl " << preforkd::kVersion << "\n";
      return 0;
    }
    socket = control_socket_path(options);
  } catch (const ConfigError& e) {
    std::cerr << e.what() << "\n";
    return kExitUsage;
  } catch (const UsageError& e) {
    std::cerr << "preforkctl: " << e.what() << "\n(see preforkctl --help)\n";
    return kExitUsage;
  } catch (const UnreachableError& e) {
    std::cerr << "preforkctl: " << e.what() << "\n";
    return kExitUnreachable;
  }

  Reply reply;
  try {
    reply = exchange(socket, to_json(options.request), reply_timeout(options.request));
  } catch (const UnreachableError& e) {
    std::cerr << "preforkctl: " << e.what() << "\n";
    return kExitUnreachable;
  }
  const bool ok = reply.body["ok"].get<bool>();
  if (options.json)
    std::cout << reply.line << "\n";
  else if (!ok)
    std::cerr << render_error(reply.body);
  else
    std::cout << render(options.request, socket, reply.body);
  std::cout.flush();
  if (!std::cout) {
    std::cerr << "preforkctl: cannot write to standard output\n";
    return kExitFailed;
  }
  return ok ? 0 : kExitFailed;
}
