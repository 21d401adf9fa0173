#include "daemon/logging.hpp"

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_sinks.h>

#include "sys/error.hpp"

namespace preforkd::daemon {

spdlog::level::level_enum to_spdlog(config::LogLevel level) {
  switch (level) {
    case config::LogLevel::Trace: return spdlog::level::trace;
    case config::LogLevel::Debug: return spdlog::level::debug;
    case config::LogLevel::Info: return spdlog::level::info;
    case config::LogLevel::Warn: return spdlog::level::warn;
    case config::LogLevel::Error: return spdlog::level::err;
  }
  return spdlog::level::info;
}

config::LogLevel parse_level(const std::string& name) {
  if (name == "trace") return config::LogLevel::Trace;
  if (name == "debug") return config::LogLevel::Debug;
  if (name == "warn") return config::LogLevel::Warn;
  if (name == "error") return config::LogLevel::Error;
  return config::LogLevel::Info;
}

std::shared_ptr<spdlog::logger> make_logger(const std::optional<std::string>& file,
                                            config::LogLevel level) {
  spdlog::sink_ptr sink;
  if (file) {
    try {
      // T5: spdlog opens without O_CLOEXEC; the spawn path closes every fd
      // above the worker's range anyway, so the log file never leaks.
      sink = std::make_shared<spdlog::sinks::basic_file_sink_st>(*file);
    } catch (const spdlog::spdlog_ex& e) {
      throw sys::SysError(EIO, "cannot open log file " + *file + ": " + e.what());
    }
  } else {
    sink = std::make_shared<spdlog::sinks::stderr_sink_st>();
  }
  auto logger = std::make_shared<spdlog::logger>("preforkd", std::move(sink));
  logger->set_pattern("%Y-%m-%d %H:%M:%S.%e %l: %v");
  logger->set_level(to_spdlog(level));
  logger->flush_on(spdlog::level::warn);
  return logger;
}

}  // namespace preforkd::daemon
