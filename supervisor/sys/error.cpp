#include "sys/error.hpp"

#include <cstring>

namespace preforkd::sys {

std::string errno_message(const std::string& what, int err) {
  return what + ": " + std::strerror(err);
}

// std::system_error appends ": strerror(err)" to `what` itself.
void throw_errno(const std::string& what, int err) { throw SysError(err, what); }

}  // namespace preforkd::sys
