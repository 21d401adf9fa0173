// error.hpp — system errors that name their object, and EINTR retry.
//
// SysError is what start-up failures throw (exit 1): its message reads
// "cannot bind 127.0.0.1:7000: Address already in use". In the event loop,
// callers use the errno-returning twins and log instead of throwing.
#pragma once

#include <cerrno>
#include <stdexcept>
#include <string>
#include <system_error>

namespace preforkd::sys {

class SysError : public std::system_error {
 public:
  SysError(int err, const std::string& what) : std::system_error(err, std::generic_category(), what) {}
};

// "what: strerror(err)" without the "generic:" noise of std::system_error::what().
std::string errno_message(const std::string& what, int err);

// A broken invariant of preforkd itself (e.g. its own epoll fd is invalid):
// the one kind of error the loop does not contain; preforkd exits 1, loudly.
class FatalError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

[[noreturn]] void throw_errno(const std::string& what, int err = errno);

// T16: retry a syscall interrupted by a signal. Never use this for close().
template <typename F>
auto retry_on_eintr(F&& f) -> decltype(f()) {
  decltype(f()) r;
  do {
    r = f();
  } while (r == -1 && errno == EINTR);
  return r;
}

}  // namespace preforkd::sys
