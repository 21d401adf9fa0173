// suggest_test.cpp — "did you mean" for misspelt keys and values.
#include "config/suggest.hpp"

#include <doctest/doctest.h>

using namespace preforkd::config;

namespace {
const std::vector<std::string_view> kKeys{
    "command",       "workers",     "listen",  "stop_signal", "stop_timeout",
    "start_timeout", "environment", "restart", "reload",      "ready"};
}

TEST_CASE("edit_distance counts insertions, deletions, substitutions and adjacent swaps as 1") {
  CHECK(edit_distance("", "") == 0);
  CHECK(edit_distance("abc", "abc") == 0);
  CHECK(edit_distance("", "abc") == 3);
  CHECK(edit_distance("abc", "") == 3);
  CHECK(edit_distance("workerz", "workers") == 1);   // substitution
  CHECK(edit_distance("worker", "workers") == 1);    // insertion
  CHECK(edit_distance("workerss", "workers") == 1);  // deletion
  CHECK(edit_distance("listne", "listen") == 1);     // transposition (Damerau)
  CHECK(edit_distance("ca", "abc") == 3);            // OSA: no edits inside a swap
  CHECK(edit_distance("kitten", "sitting") == 3);
  CHECK(edit_distance("Workers", "workers") == 1);  // case-sensitive
}

TEST_CASE("suggest finds the nearest key for typical typos") {
  CHECK(suggest("workerz", kKeys) == std::optional<std::string>("workers"));
  CHECK(suggest("listne", kKeys) == std::optional<std::string>("listen"));
  CHECK(suggest("comand", kKeys) == std::optional<std::string>("command"));
  CHECK(suggest("stop_sig", kKeys) == std::optional<std::string>("stop_signal"));
  CHECK(suggest("enviroment", kKeys) == std::optional<std::string>("environment"));
  CHECK(suggest("WORKERS", kKeys) == std::optional<std::string>("workers"));  // case-insensitive
  CHECK(suggest("stop_timout", kKeys) == std::optional<std::string>("stop_timeout"));
}

TEST_CASE("suggest stays silent when nothing is close") {
  CHECK_FALSE(suggest("color", kKeys).has_value());
  CHECK_FALSE(suggest("env", kKeys).has_value());
  CHECK_FALSE(suggest("x", kKeys).has_value());
  CHECK_FALSE(suggest("timeout", kKeys).has_value());
  CHECK_FALSE(suggest("", kKeys).has_value());
  CHECK_FALSE(suggest("workers", {}).has_value());
}

TEST_CASE("suggest prefers the smaller distance, then the earlier candidate") {
  CHECK(suggest("ready", {"reload", "ready"}) == std::optional<std::string>("ready"));
  CHECK(suggest("reaxy", {"reads", "ready"}) == std::optional<std::string>("ready"));
  CHECK(suggest("cat", {"bat", "hat"}) == std::optional<std::string>("bat"));
  CHECK(suggest("cat", {"hat", "bat"}) == std::optional<std::string>("hat"));
}

TEST_CASE("suggest allows about one edit per three characters") {
  // 9 characters: up to 3 edits.
  CHECK(suggest("abcdefxyz", {"abcdefghi"}) == std::optional<std::string>("abcdefghi"));
  CHECK_FALSE(suggest("abcdewxyz", {"abcdefghi"}).has_value());
  // Short words still get a one-letter fix.
  CHECK(suggest("as", {"at"}) == std::optional<std::string>("at"));
  CHECK_FALSE(suggest("ab", {"cd"}).has_value());
}
