// suggest.hpp — "did you mean `workers`?" for a misspelt key or value.
//
// Owns: the distance measure and the rule for when a guess is close enough to
// show. Must never: suggest something far away; a wrong hint is worse than none.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace preforkd::config {

// Optimal-string-alignment distance (Damerau-Levenshtein where a transposition
// of two adjacent characters costs 1, as in `listne` -> `listen`). Byte-wise
// and case-sensitive.
std::size_t edit_distance(std::string_view a, std::string_view b);

// The candidate nearest to `word`, compared case-insensitively, when its
// distance is at most max(1, longer length / 3): `workerz` -> `workers`,
// `stop_sig` -> `stop_signal`, but `env` gets nothing. Ties go to the
// earlier candidate. nullopt when nothing is close.
std::optional<std::string> suggest(std::string_view word,
                                   const std::vector<std::string_view>& candidates);

}  // namespace preforkd::config
