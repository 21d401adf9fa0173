// preforkd — the preforking supervisor. main() is a table of contents:
// parse the command line, load the configuration, bind, run, map errors to
// exit codes (0 clean shutdown, 1 runtime failure, 2 usage or configuration).
#include <unistd.h>

#include <iostream>
#include <map>
#include <string>

#include "cli/preforkd_options.hpp"
#include "config/config.hpp"
#include "daemon/daemon.hpp"
#include "daemon/logging.hpp"
#include "daemon/preflight.hpp"
#include "daemon/upgrade_state.hpp"
#include "sys/error.hpp"
#include "sys/fault.hpp"
#include "sys/io.hpp"
#include "sys/procfs.hpp"
#include "sys/runtime_dir.hpp"
#include "version.hpp"

namespace {

constexpr int kExitRuntime = 1;
constexpr int kExitUsage = 2;

// A command without a slash is looked up in $PATH, then beside this binary
// (the build tree keeps every binary in one folder), then in ../lib/preforkd
// relative to it (the package: /usr/sbin/preforkd → /usr/lib/preforkd).
std::vector<std::string> command_dirs() {
  std::string exe = preforkd::sys::self_executable();
  auto slash = exe.rfind('/');
  if (slash == std::string::npos) return {};
  std::string dir = exe.substr(0, slash);
  return {dir, dir + "/../lib/preforkd"};
}

}  // namespace

int main(int argc, char** argv) {
  using namespace preforkd;
  sys::fault::load_from_environment();  // tests only (sys/fault.hpp); before any syscall it can fail
  cli::Options options;
  try {
    options = cli::parse_preforkd_options(argc, argv);
  } catch (const cli::UsageError& e) {
    std::cerr << "preforkd: " << e.what() << "\n(see preforkd --help)\n";
    return kExitUsage;
  }
  if (options.help) {
    std::cout << cli::preforkd_usage();
    return 0;
  }
  if (options.version) {
    std::cout << "preforkd " << kVersion << "\n";
    return 0;
  }

  config::LoadOptions load_options;
  load_options.extra_command_dirs = command_dirs();
  // Root: /run/preforkd; anyone else: $XDG_RUNTIME_DIR/preforkd or
  // /tmp/preforkd-$UID (sys/runtime_dir.hpp). preforkctl computes the same.
  const std::string runtime_dir = sys::runtime_dir();
  load_options.runtime_dir = runtime_dir;
  daemon::DaemonOptions daemon_options;
  if (options.upgrade_state) {
    // USR2: take over from the previous binary (or, with --upgrade-check, only
    // say whether this binary could).
    std::string error;
    auto state = daemon::read_state(*options.upgrade_state, error);
    std::optional<std::map<uint64_t, config::Config>> configs;
    if (state) configs = daemon::validate_state(*state, load_options, error);
    if (options.upgrade_check) {
      config::LoadResult file = config::load_file(options.config, load_options);
      for (const auto& d : file.errors) std::cerr << d.to_string() << "\n";
      if (!configs) std::cerr << "preforkd " << kVersion << " cannot take over: " << error << "\n";
      if (!configs || !file.config) return kExitUsage;
      std::cout << "preforkd " << kVersion << ": can take over\n";
      return 0;
    }
    ::close(*options.upgrade_state);
    if (!configs) {
      std::cerr << "preforkd " << kVersion << ": cannot take over: " << error << "\n";
      return kExitRuntime;
    }
    uint64_t generation = (*state)["generation"].get<uint64_t>();
    config::Config running = (*configs)[generation];
    daemon_options.pidfile = options.pidfile;
    if (options.log_level) daemon_options.log_level = daemon::parse_level(*options.log_level);
    daemon_options.load_options = load_options;
    daemon_options.upgrade_state = std::move(*state);
    daemon_options.upgrade_configs = std::move(*configs);
    try {
      daemon::Daemon d(std::move(running), daemon_options);
      return d.run();
    } catch (const std::exception& e) {
      std::cerr << "preforkd: cannot take over: " << e.what() << "\n";
      return kExitRuntime;
    }
  }
  std::string text;
  config::LoadResult loaded = config::load_file(options.config, load_options, &text);
  if (!loaded.config) {
    for (const auto& d : loaded.errors) std::cerr << d.to_string() << "\n";
    return kExitUsage;
  }
  if (options.check) {
    // Valid, but perhaps not for this user: say what will fail, still exit 0.
    for (const auto& w : daemon::preflight(*loaded.config, options.pidfile, daemon::system_facts(runtime_dir)))
      std::cerr << options.config << ": warning: " << w << "\n";
    std::cout << options.config << ": ok\n";
    return 0;
  }
  // The default folder of a non-root preforkd may be in /tmp: made 0700,
  // and refused if someone else could have prepared it for us.
  if (sys::effective_uid() != 0 && loaded.config->supervisor.control_socket == runtime_dir + "/preforkd.sock") {
    std::string why = sys::check_private_dir(runtime_dir, true);
    if (!why.empty()) {
      std::cerr << "preforkd: " << why << "\n";
      return kExitRuntime;
    }
  }

  daemon_options.pidfile = options.pidfile;
  daemon_options.config_text = std::move(text);
  daemon_options.load_options = load_options;
  if (options.log_level) daemon_options.log_level = daemon::parse_level(*options.log_level);
  try {
    daemon::Daemon d(std::move(*loaded.config), daemon_options);
    return d.run();
  } catch (const std::exception& e) {
    std::cerr << "preforkd: " << e.what() << "\n";
    return kExitRuntime;
  }
}
