// http.cpp — see http.hpp. A deliberately small subset of RFC 9112: enough to
// frame keep-alive and pipelined requests correctly (head, Content-Length body,
// Connection), and to refuse everything else explicitly rather than guess.
#include "http.hpp"

#include <algorithm>
#include <cstring>

namespace preforkd::echo::http {
namespace {

// The replies are string literals: no allocation, no static initialisation.
constexpr std::string_view kOkKeepAlive =
    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nok\n";
constexpr std::string_view kOkKeepAlive10 =
    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n"
    "Connection: keep-alive\r\n\r\nok\n";
constexpr std::string_view kOkClose =
    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n"
    "Connection: close\r\n\r\nok\n";
constexpr std::size_t kOkBodyLen = 3;  // "ok\n", dropped for HEAD

constexpr std::string_view kBadRequest =
    "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n"
    "Connection: close\r\n\r\nbad request\n";
constexpr std::string_view kTooLarge =
    "HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: text/plain\r\n"
    "Content-Length: 17\r\nConnection: close\r\n\r\nheader too large\n";
constexpr std::string_view kNotImplemented =
    "HTTP/1.1 501 Not Implemented\r\nContent-Type: text/plain\r\nContent-Length: 16\r\n"
    "Connection: close\r\n\r\nnot implemented\n";

// RFC 9110 5.6.2 token characters.
bool is_tchar(unsigned char c) {
  if (c >= '0' && c <= '9') return true;
  if ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') return true;
  return c != '\0' && std::strchr("!#$%&'*+-.^_`|~", c) != nullptr;
}

bool is_token(std::string_view s) {
  if (s.empty()) return false;
  for (unsigned char c : s)
    if (!is_tchar(c)) return false;
  return true;
}

// Case-insensitive equality against an all-lowercase ASCII literal.
bool iequals(std::string_view s, std::string_view lower) {
  if (s.size() != lower.size()) return false;
  for (std::size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c + ('a' - 'A'));
    if (c != lower[i]) return false;
  }
  return true;
}

std::string_view trim_ows(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// Does the comma-separated list contain `lower` (case-insensitively)?
bool has_token(std::string_view list, std::string_view lower) {
  while (!list.empty()) {
    std::size_t comma = list.find(',');
    std::string_view item = trim_ows(list.substr(0, comma));
    if (iequals(item, lower)) return true;
    if (comma == std::string_view::npos) break;
    list.remove_prefix(comma + 1);
  }
  return false;
}

bool parse_u64(std::string_view s, std::uint64_t& out) {
  if (s.empty()) return false;
  std::uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    auto d = static_cast<std::uint64_t>(c - '0');
    if (v > (UINT64_MAX - d) / 10) return false;
    v = v * 10 + d;
  }
  out = v;
  return true;
}

// "METHOD SP request-target SP HTTP/1.x"
bool parse_request_line(std::string_view line, Request& req) {
  std::size_t sp1 = line.find(' ');
  if (sp1 == std::string_view::npos) return false;
  std::string_view method = line.substr(0, sp1);
  std::size_t sp2 = line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || sp2 == sp1 + 1) return false;
  std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  std::string_view version = line.substr(sp2 + 1);
  if (!is_token(method)) return false;
  for (unsigned char c : target)
    if (c <= 0x20 || c == 0x7f) return false;
  if (version.size() != 8 || version.substr(0, 7) != "HTTP/1." || version[7] < '0' ||
      version[7] > '9')
    return false;
  req.http10 = version[7] == '0';
  req.head_method = method == "HEAD";
  return true;
}

}  // namespace

ParseStatus parse_request(const char* data, std::size_t len, Request& req) {
  req = Request{};
  const std::size_t limit = std::min(len, kMaxHeaderBlock);

  // RFC 9112 2.2: a server SHOULD ignore empty lines before the request-line
  // (clients send a stray CRLF after a body).
  std::size_t start = 0;
  while (start < limit && (data[start] == '\r' || data[start] == '\n')) ++start;

  // Find the blank line ending the head. Bare LF line ends are accepted (RFC 9112 2.2).
  std::size_t end = 0;
  for (std::size_t line = start;;) {
    const void* nl = std::memchr(data + line, '\n', limit - line);
    if (nl == nullptr) return len >= kMaxHeaderBlock ? ParseStatus::TooLarge : ParseStatus::Incomplete;
    std::size_t i = static_cast<std::size_t>(static_cast<const char*>(nl) - data);
    std::size_t content = i - line;
    if (content > 0 && data[i - 1] == '\r') --content;
    if (content == 0 && line > start) {
      end = i + 1;
      break;
    }
    line = i + 1;
  }

  // Walk the lines of [start, end).
  bool first = true, have_length = false, chunked = false;
  bool conn_close = false, conn_keep_alive = false;
  for (std::size_t pos = start; pos < end;) {
    std::size_t nl = static_cast<std::size_t>(
        static_cast<const char*>(std::memchr(data + pos, '\n', end - pos)) - data);
    std::string_view line(data + pos, nl - pos);
    pos = nl + 1;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) break;  // the blank line
    if (first) {
      if (!parse_request_line(line, req)) return ParseStatus::Bad;
      first = false;
      continue;
    }
    // Obsolete line folding is refused, as RFC 9112 5.2 allows.
    if (line.front() == ' ' || line.front() == '\t') return ParseStatus::Bad;
    std::size_t colon = line.find(':');
    if (colon == std::string_view::npos) return ParseStatus::Bad;
    std::string_view name = line.substr(0, colon);
    std::string_view value = trim_ows(line.substr(colon + 1));
    if (!is_token(name)) return ParseStatus::Bad;  // also refuses "Name :" (RFC 9112 5.1)
    if (iequals(name, "content-length")) {
      std::uint64_t n = 0;
      if (!parse_u64(value, n)) return ParseStatus::Bad;
      // Differing duplicates are a request-smuggling vector: refuse them.
      if (have_length && n != req.content_length) return ParseStatus::Bad;
      req.content_length = n;
      have_length = true;
    } else if (iequals(name, "transfer-encoding")) {
      chunked = true;
    } else if (iequals(name, "connection")) {
      conn_close = conn_close || has_token(value, "close");
      conn_keep_alive = conn_keep_alive || has_token(value, "keep-alive");
    }
  }
  if (chunked) return ParseStatus::Unsupported;
  req.head_len = end;
  req.keep_alive = req.http10 ? (conn_keep_alive && !conn_close) : !conn_close;
  return ParseStatus::Complete;
}

std::string_view ok_reply(const Request& req, bool keep_alive) {
  std::string_view r = !keep_alive ? kOkClose : req.http10 ? kOkKeepAlive10 : kOkKeepAlive;
  if (req.head_method) r.remove_suffix(kOkBodyLen);
  return r;
}

std::string_view error_reply(ParseStatus status) {
  switch (status) {
    case ParseStatus::TooLarge:
      return kTooLarge;
    case ParseStatus::Unsupported:
      return kNotImplemented;
    default:
      return kBadRequest;
  }
}

std::size_t max_reply_size() {
  return std::max({kOkKeepAlive.size(), kOkKeepAlive10.size(), kOkClose.size(),
                   kBadRequest.size(), kTooLarge.size(), kNotImplemented.size()});
}

}  // namespace preforkd::echo::http
