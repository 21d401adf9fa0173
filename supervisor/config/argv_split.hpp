// argv_split.hpp — turn a `command:` string into argv the way a POSIX shell
// would quote it, without running a shell and without any expansion.
//
// Owns: the quoting rules only. Whitespace (space, tab, newline, CR, VT, FF)
// separates words; '...' is literal; "..." is literal except that a backslash
// escapes \" \\ \$ \` and removes a following newline; outside quotes a
// backslash makes the next character literal and backslash-newline is removed.
// Adjacent pieces join into one word (`a'b'"c"` is `abc`); '' and "" give an
// empty word.
// Must never: expand anything. `$HOME`, `~`, `*`, `;`, `|`, `>` and backticks
// are ordinary characters, so what the file says is exactly what is exec'd.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace preforkd::config {

// The words of `text` (possibly none, for a blank string), or nullopt with
// `error` (when given) set to "unterminated single quote", "unterminated
// double quote" or "trailing backslash".
std::optional<std::vector<std::string>> argv_split(std::string_view text,
                                                   std::string* error = nullptr);

}  // namespace preforkd::config
