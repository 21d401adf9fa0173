// argv_split_test.cpp — shell-like splitting of `command:` strings, no expansion.
#include "config/argv_split.hpp"

#include <doctest/doctest.h>

using preforkd::config::argv_split;
using Words = std::vector<std::string>;

namespace {

Words split(std::string_view text) {
  std::string why;
  auto words = argv_split(text, &why);
  INFO("error: " << why);
  REQUIRE(words.has_value());
  return *words;
}

std::string error_of(std::string_view text) {
  std::string why;
  CHECK_FALSE(argv_split(text, &why).has_value());
  return why;
}

}  // namespace

TEST_CASE("argv_split separates words on any run of blanks") {
  CHECK(split("a b c") == Words{"a", "b", "c"});
  CHECK(split("  a \t b\n\nc  ") == Words{"a", "b", "c"});
  CHECK(split("/usr/bin/env") == Words{"/usr/bin/env"});
  CHECK(split("").empty());
  CHECK(split(" \t\n ").empty());
}

TEST_CASE("argv_split: single quotes keep everything literal, backslashes included") {
  CHECK(split("echo 'a b'") == Words{"echo", "a b"});
  CHECK(split(R"('a\b' 'c"d')") == Words{R"(a\b)", R"(c"d)"});
  CHECK(split("'$HOME' '*' '~'") == Words{"$HOME", "*", "~"});
}

TEST_CASE(
    "argv_split: double quotes unescape only backslash before quote, backslash, dollar and "
    "backtick") {
  CHECK(split(R"("a b")") == Words{"a b"});
  CHECK(split(R"("say \"hi\"")") == Words{R"(say "hi")"});
  CHECK(split(R"("\\ \$ \`")") == Words{R"(\ $ `)"});
  CHECK(split(R"("\n\t\a")") == Words{R"(\n\t\a)"});  // other backslashes stay
  CHECK(split(R"("it's")") == Words{"it's"});
  CHECK(split("\"a\\\nb\"") == Words{"ab"});  // backslash-newline is a continuation
}

TEST_CASE("argv_split: a backslash outside quotes escapes the next character") {
  CHECK(split(R"(a\ b)") == Words{"a b"});
  CHECK(split(R"(\'x\')") == Words{"'x'"});
  CHECK(split(R"(\"x\")") == Words{R"("x")"});
  CHECK(split(R"(a\\b)") == Words{R"(a\b)"});
  CHECK(split(R"(\$HOME)") == Words{"$HOME"});
  CHECK(split("a\\\nb") == Words{"ab"});  // line continuation
  CHECK(split("a \\\n b") == Words{"a", "b"});
}

TEST_CASE("argv_split joins adjacent pieces and keeps empty quoted words") {
  CHECK(split(R"(a'b'"c"d)") == Words{"abcd"});
  CHECK(split("''") == Words{""});
  CHECK(split(R"(a "" b)") == Words{"a", "", "b"});
  CHECK(split(R"(--opt='x y')") == Words{"--opt=x y"});
}

TEST_CASE("argv_split expands nothing: variables, globs, tilde and operators stay as written") {
  CHECK(split("echo $HOME ~ *.txt a;b c|d >out `id` $(id)") ==
        Words{"echo", "$HOME", "~", "*.txt", "a;b", "c|d", ">out", "`id`", "$(id)"});
}

TEST_CASE("argv_split reports unterminated quotes and a trailing backslash") {
  CHECK(error_of("echo 'abc") == "unterminated single quote");
  CHECK(error_of("'") == "unterminated single quote");
  CHECK(error_of(R"(echo "abc)") == "unterminated double quote");
  CHECK(error_of(R"("abc\")") == "unterminated double quote");  // \" does not close
  CHECK(error_of(R"(echo abc\)") == "trailing backslash");
  CHECK_FALSE(argv_split("'").has_value());  // error pointer is optional
}
