// http_fuzz — one request head to the metrics endpoint
// (daemon::MetricsHttp::respond, the pure part of daemon/metrics_http.cpp).
//
// The daemon hands respond() a head only once it has "\r\n\r\n" within
// kMaxHead bytes (the rest gets 431); the fuzzer does the same. What must
// hold: no exception, and a response with a status line, a Content-Length
// that matches its body, and at most one page produced per request.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "daemon/metrics_http.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string in(reinterpret_cast<const char*>(data), size);
  auto end = in.find("\r\n\r\n");
  if (end == std::string::npos || end + 4 > preforkd::daemon::MetricsHttp::kMaxHead) return 0;
  const std::string head = in.substr(0, end + 4);
  int renders = 0;
  preforkd::daemon::MetricsHttp::Pages pages;
  pages.metrics = [&] { ++renders; return std::string("metric 1\n"); };
  pages.readiness = [&] { ++renders; return std::make_pair(size % 2 == 0, std::string("why\n")); };
  const std::string r = preforkd::daemon::MetricsHttp::respond(head, pages);
  if (r.compare(0, 9, "HTTP/1.1 ") != 0) std::abort();
  auto body_at = r.find("\r\n\r\n");
  if (body_at == std::string::npos) std::abort();
  auto cl = r.find("Content-Length: ");
  if (cl == std::string::npos || cl > body_at) std::abort();
  const std::string body = r.substr(body_at + 4);
  // HEAD: the length of the body GET would get, and no body.
  if (!body.empty() && std::stoul(r.substr(cl + 16)) != body.size()) std::abort();
  // At most one page produced; a 200 is always a page (or /healthz).
  if (renders > 1 || (r.compare(9, 3, "200") == 0 && renders == 0 && head.find("/healthz") == std::string::npos))
    std::abort();
  return 0;
}
