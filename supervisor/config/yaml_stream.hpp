// yaml_stream.hpp — what a YAML text may cost before yaml-cpp builds a tree.
//
// Owns: reading a whole YAML stream with yaml-cpp's event parser (no tree is
// built) and refusing, with a position, what would hang or bloat the loader:
//
// - No progress. yaml-cpp 0.7 (Debian 12) parses a document whose first
//   token no node can start with (a `,` outside [ ] or { }: ",", "\"a\",",
//   "[a],", "!t ,", "---\n,") into a null node without consuming that token,
//   so YAML::LoadAll() parses the same empty document forever, a node more
//   each time (yaml-cpp issue #1040; upstream fix: PR #1319, then f25f110,
//   which stop when a document started where the previous one did). Here the
//   same test is an error naming the token, for every such token, instead
//   of a silent stop.
// - Size. yaml-cpp's tree costs about 0.5 KiB and a few µs per node (1 MiB
//   of `[,,,...]`: 0.5 GB and seconds), and its scanner holds every token of
//   a flow collection (`[...]`, `{...}`) until its end, about 150 bytes per
//   token, before the parser sees any of it. So a text over kMaxYamlBytes is
//   refused unread, and a stream with more than kMaxYamlNodes nodes (counted
//   as the parser reports them) is refused at the first node too many,
//   before a tree is built. Real configurations are a few KiB and a few
//   hundred nodes; 1000 programs fit in both limits.
//
// A stream that passes has a first document that YAML::Load() reads in
// bounded time and memory (the same parser, the same document).
// Must never: throw (syntax errors are issues too), or build a tree.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace preforkd::config::detail {

inline constexpr std::size_t kMaxYamlBytes = 256 << 10;
inline constexpr std::size_t kMaxYamlNodes = 50000;

struct YamlIssue {
  int line = 0;    // 1-based; 0: no position
  int column = 0;  // 1-based; 0: no position
  std::string message;
  // false: the first document can still be read and checked (a second,
  // non-empty document); true: nothing more can be read from this text.
  bool fatal = true;
};

struct YamlStream {
  std::size_t documents = 0;
  bool first_empty = true;  // no document, or the first one is empty (null)
  std::vector<YamlIssue> issues;
};

YamlStream scan_yaml(const std::string& text);

}  // namespace preforkd::config::detail
