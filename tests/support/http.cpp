#include "support/http.hpp"

#include <sys/socket.h>
#include <unistd.h>

#include "support/support.hpp"

namespace preforkd::test {

std::string http_exchange(uint16_t port, const std::string& request) {
  int fd = connect_tcp(port);
  if (fd < 0) return "";
  send(fd, request.data(), request.size(), MSG_NOSIGNAL);
  std::string got;
  char buf[8192];
  for (;;) {
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    got.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return got;
}

std::string http_body(const std::string& response) {
  auto at = response.find("\r\n\r\n");
  return at == std::string::npos ? "" : response.substr(at + 4);
}

std::string scrape_metrics(uint16_t port) {
  return http_body(http_exchange(port, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"));
}

double metric_sample(const std::string& text, const std::string& name_and_labels) {
  auto at = text.find("\n" + name_and_labels + " ");
  if (at == std::string::npos) return -1;
  return std::stod(text.substr(at + name_and_labels.size() + 2));
}

bool http_get_ok(uint16_t port) {
  return http_exchange(port, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").rfind("HTTP/1.1 200", 0) == 0;
}

}  // namespace preforkd::test
