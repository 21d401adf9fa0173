#include "config/yaml_stream.hpp"

#include <fmt/format.h>
#include <yaml-cpp/depthguard.h>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/exceptions.h>
#include <yaml-cpp/mark.h>
#include <yaml-cpp/parser.h>

#include <algorithm>
#include <optional>
#include <sstream>
#include <vector>

namespace preforkd::config::detail {

namespace {

// Thrown from inside yaml-cpp's parser to stop it at the first node too many
// (yaml-cpp unwinds its own exceptions from the same places).
struct TooManyNodes {
  YAML::Mark mark;
};

// Records, per document, where it started and what its root is; counts
// every node of the stream.
class Shape : public YAML::EventHandler {
 public:
  YAML::Mark start;      // the document's first token
  YAML::Mark root_mark;  // its root node
  bool root_seen = false;
  bool root_null = true;
  std::size_t nodes = 0;

  void OnDocumentStart(const YAML::Mark& mark) override {
    start = mark;
    root_seen = false;
    root_null = true;
  }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark& mark, YAML::anchor_t) override { node(mark, true); }
  void OnAlias(const YAML::Mark& mark, YAML::anchor_t) override { node(mark, false); }
  void OnScalar(const YAML::Mark& mark, const std::string&, YAML::anchor_t, const std::string&) override {
    node(mark, false);
  }
  void OnSequenceStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t,
                       YAML::EmitterStyle::value) override {
    node(mark, false);
  }
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {
    node(mark, false);
  }
  void OnMapEnd() override {}

 private:
  void node(const YAML::Mark& mark, bool null) {
    if (++nodes > kMaxYamlNodes) throw TooManyNodes{mark};
    if (!root_seen) {
      root_seen = true;
      root_null = null;
      root_mark = mark;
    }
  }
};

// The first tab in a line's leading blanks, on lines 0..upto (0-based;
// -1: all), as a 1-based {line, column}.
std::optional<std::pair<int, int>> indentation_tab(const std::string& text, int upto) {
  int line = 0;
  size_t start = 0;
  while (start <= text.size() && (upto < 0 || line <= upto)) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    for (size_t i = start; i < end && (text[i] == ' ' || text[i] == '\t'); ++i)
      if (text[i] == '\t') return std::make_pair(line + 1, static_cast<int>(i - start) + 1);
    start = end + 1;
    ++line;
  }
  return std::nullopt;
}

// yaml-cpp's "end of map not found" on a line indented to no level that
// is open above it (a key dedented by one space, say): say that.
std::optional<std::string> misaligned(const std::string& text, const YAML::Exception& e) {
  if (e.mark.is_null() || e.msg != YAML::ErrorMsg::END_OF_MAP) return std::nullopt;
  std::istringstream in(text);
  std::string line;
  std::vector<size_t> levels;
  for (int n = 0; std::getline(in, line); ++n) {
    size_t indent = line.find_first_not_of(' ');
    if (indent == std::string::npos || line[indent] == '#') continue;  // blank or a comment
    if (n < e.mark.line) {
      levels.push_back(indent);
      continue;
    }
    if (n > e.mark.line || std::find(levels.begin(), levels.end(), indent) != levels.end()) return std::nullopt;
    return fmt::format("invalid YAML: this line is indented by {} space(s), which lines it up with no key above "
                       "it (the keys of one map must start in the same column)",
                       indent);
  }
  return std::nullopt;
}

YamlIssue at(const YAML::Mark& mark, std::string message, bool fatal = true) {
  YamlIssue i;
  if (!mark.is_null() && mark.line >= 0 && mark.column >= 0) {
    i.line = mark.line + 1;
    i.column = mark.column + 1;
  }
  i.message = std::move(message);
  i.fatal = fatal;
  return i;
}

// The token a stuck document starts with, as the text has it. yaml-cpp's
// positions count the bytes of UTF-8 input after a byte-order mark.
std::string stuck_message(const std::string& text, const YAML::Mark& mark) {
  std::size_t pos = static_cast<std::size_t>(mark.pos);
  if (text.compare(0, 3, "\xEF\xBB\xBF") == 0) pos += 3;
  const char c = pos < text.size() ? text[pos] : '\0';
  if (c == ',') return "invalid YAML: unexpected `,` (a comma separates items only inside [ ] or { })";
  if (c > ' ' && c < 0x7f) return fmt::format("invalid YAML: unexpected `{}`", c);
  return "invalid YAML: unexpected token where a document should start";
}

}  // namespace

YamlStream scan_yaml(const std::string& text) {
  YamlStream out;
  if (text.size() > kMaxYamlBytes) {
    out.issues.push_back(YamlIssue{0, 0,
                                   fmt::format("too large for a configuration: {} bytes (at most {} KiB)",
                                               text.size(), kMaxYamlBytes >> 10),
                                   true});
    return out;
  }
  try {
    std::istringstream in(text);
    YAML::Parser parser(in);
    Shape shape;
    int previous_start = -1;
    while (parser.HandleNextDocument(shape)) {
      ++out.documents;
      // A document that starts where the previous one did consumed nothing:
      // the parser would return the same empty document forever (#1040).
      if (shape.start.pos == previous_start) {
        out.issues.push_back(at(shape.start, stuck_message(text, shape.start)));
        break;
      }
      previous_start = shape.start.pos;
      if (out.documents == 1) {
        out.first_empty = shape.root_null;
      } else if (!shape.root_null) {
        out.issues.push_back(at(shape.root_mark, "only one YAML document is allowed", /*fatal=*/false));
        break;
      }
    }
  } catch (const TooManyNodes& e) {
    out.issues.push_back(at(e.mark, fmt::format("too many YAML nodes for a configuration (more than {})",
                                                kMaxYamlNodes)));
  } catch (const YAML::DeepRecursion&) {
    // yaml-cpp 0.7 reports this as "bad file" at 1:1; neither is helpful.
    out.issues.push_back(YamlIssue{0, 0, "invalid YAML: nested too deeply", true});
  } catch (const YAML::Exception& e) {  // ParserException (syntax errors) and friends
    // yaml-cpp says "end of map not found" for a tab in the indentation;
    // name the tab instead, at the first one up to the error's line.
    if (auto tab = indentation_tab(text, e.mark.is_null() ? -1 : e.mark.line))
      out.issues.push_back(YamlIssue{tab->first, tab->second,
                                     "a tab character is not allowed for indentation in YAML; use spaces", true});
    else if (auto why = misaligned(text, e))
      out.issues.push_back(at(e.mark, *why));
    else
      out.issues.push_back(at(e.mark, "invalid YAML: " + e.msg));
  }
  return out;
}

}  // namespace preforkd::config::detail
