// http.hpp — the bounded HTTP/1.x request parser and the fixed replies of
// `preforkd-echo --http`.
//
// Owns: recognising one request head in a byte range and choosing the canned
// reply. It is pure (no fds, no allocation per call), so the I/O loop can run it
// on every pipelined request at no cost and tests can feed it any bytes.
// Must never: read past `len`, accept a head larger than kMaxHeaderBlock, or
// pretend to support request bodies it cannot frame (chunked is refused, 501).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace preforkd::echo::http {

// Largest request head (request line + headers + blank line) we buffer. Above it
// the client gets 431 and the connection is closed, so memory stays bounded.
constexpr std::size_t kMaxHeaderBlock = 16 * 1024;

enum class ParseStatus {
  Incomplete,   // no blank line yet; read more (the caller enforces kMaxHeaderBlock)
  Complete,     // a full head; see Request
  Bad,          // malformed → 400, close
  TooLarge,     // head exceeds kMaxHeaderBlock → 431, close
  Unsupported,  // Transfer-Encoding (we can't frame such a body) → 501, close
};

struct Request {
  std::size_t head_len = 0;         // bytes of the head, leading blank lines included
  std::uint64_t content_length = 0; // body bytes that follow the head (discarded)
  bool keep_alive = false;          // HTTP/1.1 unless "Connection: close"; 1.0 only with keep-alive
  bool http10 = false;              // the reply must say "Connection: keep-alive" explicitly
  bool head_method = false;         // HEAD: the reply carries no body
};

// Parses the request head at the start of data[0..len): Complete fills `req`.
ParseStatus parse_request(const char* data, std::size_t len, Request& req);

// The fixed 200 reply for `req`; `keep_alive` false adds "Connection: close".
std::string_view ok_reply(const Request& req, bool keep_alive);

// The reply for a failed parse (Bad, TooLarge or Unsupported); always "Connection: close".
std::string_view error_reply(ParseStatus status);

// The longest reply either function returns, for output-buffer space checks.
std::size_t max_reply_size();

}  // namespace preforkd::echo::http
