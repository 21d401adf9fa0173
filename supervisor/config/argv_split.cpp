// argv_split.cpp — see argv_split.hpp. The rules are those of POSIX sh
// "Quoting" (XCU 2.2), with every expansion left out.
#include "config/argv_split.hpp"

namespace preforkd::config {
namespace {

bool is_blank(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

}  // namespace

std::optional<std::vector<std::string>> argv_split(std::string_view text, std::string* error) {
  auto fail = [&](const char* why) -> std::optional<std::vector<std::string>> {
    if (error) *error = why;
    return std::nullopt;
  };

  std::vector<std::string> words;
  std::string word;
  bool in_word = false;  // true once a word started, even if it is still empty ('')
  std::size_t i = 0;
  const std::size_t n = text.size();
  while (i < n) {
    const char c = text[i];
    if (is_blank(c)) {
      if (in_word) words.push_back(std::move(word));
      word.clear();
      in_word = false;
      ++i;
    } else if (c == '\'') {
      const std::size_t close = text.find('\'', i + 1);
      if (close == std::string_view::npos) return fail("unterminated single quote");
      word.append(text.substr(i + 1, close - i - 1));
      in_word = true;
      i = close + 1;
    } else if (c == '"') {
      in_word = true;
      ++i;
      bool closed = false;
      while (i < n) {
        const char d = text[i];
        if (d == '"') {
          closed = true;
          ++i;
          break;
        }
        if (d == '\\' && i + 1 < n) {
          const char e = text[i + 1];
          if (e == '"' || e == '\\' || e == '$' || e == '`') {
            word += e;
            i += 2;
            continue;
          }
          if (e == '\n') {  // line continuation
            i += 2;
            continue;
          }
        }
        word += d;  // any other backslash stays, as in sh: "\n" is backslash + n
        ++i;
      }
      if (!closed) return fail("unterminated double quote");
    } else if (c == '\\') {
      if (i + 1 >= n) return fail("trailing backslash");
      if (text[i + 1] != '\n') {  // backslash-newline is a line continuation
        word += text[i + 1];
        in_word = true;
      }
      i += 2;
    } else {
      word += c;
      in_word = true;
      ++i;
    }
  }
  if (in_word) words.push_back(std::move(word));
  return words;
}

}  // namespace preforkd::config
