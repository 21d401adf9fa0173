#include "ctl/socket_path.hpp"

#include "config/config.hpp"
#include "ctl/client.hpp"

namespace preforkd::ctl {

std::string control_socket_path(const Options& options) {
  if (options.socket) return *options.socket;
  config::LoadOptions load_options;
  load_options.check_executables = false;
  const std::string file = options.config.value_or(kDefaultConfig);
  config::LoadResult loaded = config::load_file(file, load_options);
  if (loaded.config) return loaded.config->supervisor.control_socket;

  if (options.config) {
    std::string all;
    for (const auto& d : loaded.errors) {
      if (!all.empty()) all += "\n";
      all += d.to_string();
    }
    throw ConfigError(all);
  }
  std::string reason = loaded.errors.empty() ? file + ": cannot be loaded"
                                             : loaded.errors.front().to_string();
  if (loaded.errors.size() > 1)
    reason += " (and " + std::to_string(loaded.errors.size() - 1) + " more errors)";
  throw UnreachableError("cannot find the control socket: " + reason + " (use -s SOCKET)");
}

}  // namespace preforkd::ctl
