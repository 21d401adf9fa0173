// unique_fd.hpp — a move-only owner of one file descriptor.
//
// Closes exactly once and never retries close() (T16: on Linux the fd is gone
// even when close() reports EINTR; retrying could close a fd that another
// part of the program has just been given).
#pragma once

#include <unistd.h>

#include <utility>

namespace preforkd::sys {

class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) noexcept : fd_(fd) {}
  UniqueFd(UniqueFd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept {
    if (this != &o) reset(std::exchange(o.fd_, -1));
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { reset(); }

  int get() const noexcept { return fd_; }
  explicit operator bool() const noexcept { return fd_ >= 0; }
  int release() noexcept { return std::exchange(fd_, -1); }
  void reset(int fd = -1) noexcept {
    if (fd_ >= 0) ::close(fd_);  // T16: not retried
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

}  // namespace preforkd::sys
