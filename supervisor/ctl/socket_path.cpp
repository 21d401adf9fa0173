#include "ctl/socket_path.hpp"

#include <cerrno>

#include "config/config.hpp"
#include "ctl/client.hpp"
#include "sys/io.hpp"
#include "sys/runtime_dir.hpp"

namespace preforkd::ctl {

std::string control_socket_path(const Options& options) {
  if (options.socket) return *options.socket;
  config::LoadOptions load_options;
  load_options.check_executables = false;
  // The folder preforkd itself would choose for this user (sys/runtime_dir.hpp).
  load_options.runtime_dir = sys::runtime_dir();
  const std::string file = options.config.value_or(kDefaultConfig);
  config::LoadResult loaded = config::load_file(file, load_options);
  if (loaded.config) {
    const std::string& socket = loaded.config->supervisor.control_socket;
    // Never talk to a socket in a folder someone else could have made for
    // us (/tmp/preforkd-$UID): whoever answers there is not our preforkd.
    if (sys::effective_uid() != 0 && socket == load_options.runtime_dir + "/preforkd.sock") {
      std::string why = sys::check_private_dir(load_options.runtime_dir, false);
      if (!why.empty()) throw UnreachableError(why);
      // No preforkd of this user, but the system's (root's) runs: a member
      // of its control_group asks that one, as before.
      const std::string system = std::string(sys::kRootRuntimeDir) + "/preforkd.sock";
      sys::FileType type{};
      if (sys::file_type(socket, type) == ENOENT && sys::file_type(system, type) == 0 &&
          type == sys::FileType::Socket)
        return system;
    }
    return socket;
  }

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
