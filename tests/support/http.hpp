// http.hpp — the few HTTP exchanges the integration tests make with
// preforkd's /metrics endpoint and with HTTP workers, on 127.0.0.1.
#pragma once

#include <cstdint>
#include <string>

namespace preforkd::test {

// Sends `request` as is and reads until the peer closes: the whole
// response, or "" when nothing could connect.
std::string http_exchange(uint16_t port, const std::string& request);

// What follows the header of a response ("" when it has none).
std::string http_body(const std::string& response);

// GET /metrics: the exposition text, or "".
std::string scrape_metrics(uint16_t port);

// The value of one sample (`name{labels}` exactly as exposed), or -1 when absent.
double metric_sample(const std::string& text, const std::string& name_and_labels);

// GET / with Connection: close; true on a 200.
bool http_get_ok(uint16_t port);

}  // namespace preforkd::test
