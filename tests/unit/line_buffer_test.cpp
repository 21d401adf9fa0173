#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "core/line_buffer.hpp"

using preforkd::core::LineBuffer;

namespace {
std::vector<std::string> feed_all(LineBuffer& b, const std::vector<std::string>& chunks, size_t* dropped = nullptr) {
  std::vector<std::string> out;
  size_t d = 0;
  for (const auto& c : chunks) d += b.feed(c, [&](std::string_view l) { out.emplace_back(l); });
  if (dropped) *dropped = d;
  return out;
}
}  // namespace

TEST_CASE("line buffer: lines split across reads are joined") {
  LineBuffer b(16, LineBuffer::Overflow::Split);
  auto lines = feed_all(b, {"hel", "lo\nwor", "ld\n\nx"});
  CHECK(lines == std::vector<std::string>{"hello", "world", ""});
  CHECK(b.buffered() == 1);
  std::vector<std::string> rest;
  b.flush([&](std::string_view l) { rest.emplace_back(l); });
  CHECK(rest == std::vector<std::string>{"x"});
}

TEST_CASE("T24 line buffer: split mode cuts an oversized line into bounded pieces, losing nothing") {
  LineBuffer b(4, LineBuffer::Overflow::Split);
  auto lines = feed_all(b, {"abcdefghij\nok\n"});
  CHECK(lines == std::vector<std::string>{"abcd", "efgh", "ij", "ok"});
  CHECK(b.buffered() == 0);
}

TEST_CASE("T24 line buffer: discard mode drops an oversized line up to its newline and counts it") {
  LineBuffer b(4, LineBuffer::Overflow::Discard);
  size_t dropped = 0;
  auto lines = feed_all(b, {"ab", "cdefgh", "ijk", "l\nok\n"}, &dropped);
  CHECK(lines == std::vector<std::string>{"ok"});
  CHECK(dropped == 1);
  CHECK(b.buffered() <= 4);
}
