#include "daemon/logging.hpp"

#include <spdlog/details/null_mutex.h>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/sinks/stdout_sinks.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "sys/error.hpp"
#include "sys/io.hpp"

namespace preforkd::daemon {

namespace {

// log.file, written with write(2) through sys (fault point "write") rather
// than stdio: a full disk (ENOSPC, EDQUOT, EIO) is then an errno preforkd
// handles, not a stdio error that spdlog reports on stderr once a second for
// as long as the disk stays full. Lines are buffered and written at flush
// (warn and above at once, the rest when the loop goes idle, or when
// kFlushAt bytes are waiting). While writes fail, lines are dropped and
// counted; stderr (the journal under systemd) is told once per episode, and
// the first write that works again starts with how many lines were lost.
// Nothing is retried on a timer: the next line tries again. The file is
// opened with O_CLOEXEC (T5).
class FileSink final : public spdlog::sinks::base_sink<spdlog::details::null_mutex> {
 public:
  FileSink(sys::UniqueFd fd, std::string path) : fd_(std::move(fd)), path_(std::move(path)) {}
  ~FileSink() override {
    try {
      flush_();
    } catch (...) {  // nothing to report to any more
    }
  }

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    spdlog::memory_buf_t formatted;
    formatter_->format(msg, formatted);
    pending_.append(formatted.data(), formatted.size());
    if (pending_.size() >= kFlushAt) flush_();
  }

  void flush_() override {
    if (pending_.empty()) return;
    std::string out;
    if (lost_ > 0) {
      if (torn_) out = "\n";  // a line was cut short by the failure: start on a line of our own
      out += format(spdlog::level::warn, "preforkd: could not write to this file for a while (" +
                                             std::string(std::strerror(lost_errno_)) + "): " +
                                             std::to_string(lost_) + " log line(s) lost");
    }
    size_t notice = out.size();
    out += pending_;
    size_t done = 0;
    int err = 0;
    while (done < out.size()) {
      ssize_t n = sys::write_some(fd_.get(), out.data() + done, out.size() - done);
      if (n < 0) err = errno;
      if (n == 0) err = EIO;  // cannot happen for a file; never loop on it
      if (err != 0) break;
      done += static_cast<size_t>(n);
    }
    if (err == 0) {
      if (lost_ > 0)
        tell_stderr("preforkd: writing to the log file " + path_ + " works again; " + std::to_string(lost_) +
                    " line(s) were lost\n");
      lost_ = 0;
      torn_ = false;
      told_ = false;  // the episode is over: the next one is told again
      pending_.clear();
      return;
    }
    // Every line whose end was not written is lost (a torn one included).
    size_t written_of_pending = done > notice ? done - notice : 0;
    lost_ += static_cast<uint64_t>(std::count(pending_.begin() + static_cast<std::ptrdiff_t>(written_of_pending),
                                              pending_.end(), '\n'));
    torn_ = torn_ ? done == 0 || out[done - 1] != '\n' : done > 0 && out[done - 1] != '\n';
    pending_.clear();
    if (!told_) {
      tell_stderr("preforkd: cannot write to the log file " + path_ + ": " + std::strerror(err) +
                  "; dropping log lines until it works again, then it says how many were lost\n");
      told_ = true;
    }
    lost_errno_ = err;
  }

 private:
  static constexpr size_t kFlushAt = 64 * 1024;

  std::string format(spdlog::level::level_enum level, const std::string& text) {
    spdlog::memory_buf_t buf;
    formatter_->format(spdlog::details::log_msg("preforkd", level, text), buf);
    return std::string(buf.data(), buf.size());
  }

  // Not through sys::write_some: a fault injected into the log file's
  // writes must not silence the one report about them.
  void tell_stderr(const std::string& text) {
    std::fputs(text.c_str(), stderr);
    std::fflush(stderr);
  }

  sys::UniqueFd fd_;
  std::string path_;
  std::string pending_;
  uint64_t lost_ = 0;   // lines dropped since the last write that worked
  int lost_errno_ = 0;  // why
  bool torn_ = false;   // the file ends in the middle of a line
  bool told_ = false;   // stderr knows about this episode
};

std::string parent_folder(const std::string& path) {
  auto slash = path.rfind('/');
  return slash == std::string::npos || slash == 0 ? std::string() : path.substr(0, slash);
}

}  // namespace

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
    std::string failed;
    if (int err = sys::make_directories(parent_folder(*file), 0755, &failed))
      throw sys::SysError(err, "cannot open log file " + *file + ": cannot create " + failed);
    sys::UniqueFd fd;
    if (int err = sys::open_file(fd, *file, O_WRONLY | O_APPEND | O_CREAT, 0644))
      throw sys::SysError(err, "cannot open log file " + *file);
    sink = std::make_shared<FileSink>(std::move(fd), *file);
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
