// logging.hpp — preforkd's one logger (spdlog, synchronous, single-threaded).
//
// No async logger and no flush_every: both start threads, and signalfd needs
// every thread to block our signals (T8). Lines at warn and above are
// flushed at once; the loop flushes the rest when it goes idle.
#pragma once

#include <spdlog/logger.h>

#include <memory>
#include <optional>
#include <string>

#include "config/config.hpp"

namespace preforkd::daemon {

// Sets up the "preforkd" logger writing to `file` (appended) or to stderr.
// Throws sys::SysError if the file cannot be opened.
std::shared_ptr<spdlog::logger> make_logger(const std::optional<std::string>& file,
                                            config::LogLevel level);

spdlog::level::level_enum to_spdlog(config::LogLevel level);
config::LogLevel parse_level(const std::string& name);  // "warn" -> Warn; unknown -> Info

}  // namespace preforkd::daemon
