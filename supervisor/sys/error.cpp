#include "sys/error.hpp"

#include <cstring>

namespace preforkd::sys {

std::string errno_message(const std::string& what, int err) {
  return what + ": " + std::strerror(err);
}

void throw_errno(const std::string& what, int err) { throw SysError(err, errno_message(what, err)); }

}  // namespace preforkd::sys
