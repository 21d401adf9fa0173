// config schema — the key tables (config/schema.hpp) against the man page
// that documents them: every key of preforkd.yaml has an entry in
// man/preforkd.yaml.5 with its type, its default and its reload effect, and
// the man page documents no key the loader does not know.
#include <doctest/doctest.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "config/schema.hpp"

using namespace preforkd::config;

namespace {

const std::string kManPage = std::string(PREFORKD_TEST_DATA) + "/../../man/preforkd.yaml.5";

// One `.TP` of the man page: its tag and the text up to the first paragraph
// break (the "Type; default X; on reload: Y." line), as rendered words.
struct ManEntry {
  std::string section;  // .SH
  int depth = 0;        // .RS nesting
  std::string tag;      // "log.level", "stdout, stderr", "up_after (duration, default 1s)"
  std::string summary;  // tag + " " + the lines after it
};

void replace_all(std::string& s, const std::string& from, const std::string& to) {
  for (std::size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size()))
    s.replace(at, from.size(), to);
}

// The words one line of roff renders to, without fonts (enough for these lines).
std::string render(const std::string& line) {
  std::string out;
  if (!line.empty() && line[0] == '.') {
    std::istringstream in(line.substr(1));
    std::string macro;
    in >> macro;
    std::vector<std::string> args;
    std::string rest;
    std::getline(in, rest);
    for (std::size_t i = 0; i < rest.size();) {
      if (rest[i] == ' ') {
        ++i;
      } else if (rest[i] == '"') {
        const std::size_t end = rest.find('"', i + 1);
        args.push_back(rest.substr(i + 1, end - i - 1));
        i = end == std::string::npos ? rest.size() : end + 1;
      } else {
        const std::size_t end = std::min(rest.find(' ', i), rest.size());
        args.push_back(rest.substr(i, end - i));
        i = end;
      }
    }
    const bool alternating = macro.size() == 2 && std::string("BIR").find(macro[0]) != std::string::npos &&
                             std::string("BIR").find(macro[1]) != std::string::npos;
    if (!alternating && macro != "B" && macro != "I") return "";
    for (const auto& a : args) out += (out.empty() || alternating ? "" : " ") + a;
  } else {
    out = line;
  }
  for (const char* font : {"\\fB", "\\fI", "\\fR", "\\fP"}) replace_all(out, font, "");
  replace_all(out, "\\-", "-");
  replace_all(out, "\\(dq", "\"");
  replace_all(out, "\\(aq", "'");
  replace_all(out, "\\(ga", "`");
  replace_all(out, "\\~", " ");
  replace_all(out, "\\&", "");
  replace_all(out, "\\e", "\\");
  return out;
}

std::string lower(std::string s) {
  for (char& c : s)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return s;
}

std::vector<ManEntry> man_entries() {
  std::ifstream in(kManPage);
  REQUIRE_MESSAGE(in.good(), kManPage);
  std::vector<std::string> lines;
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  std::vector<ManEntry> out;
  std::string section;
  int depth = 0;
  auto breaks = [](const std::string& l) {
    for (const char* m : {".IP", ".RS", ".RE", ".TP", ".PP", ".SH", ".SS"})
      if (l.rfind(m, 0) == 0) return true;
    return false;
  };
  for (std::size_t i = 0; i < lines.size(); ++i) {
    const std::string& l = lines[i];
    if (l.rfind(".SH ", 0) == 0) section = l.substr(4);
    if (l.rfind(".RS", 0) == 0) ++depth;
    if (l.rfind(".RE", 0) == 0) --depth;
    if (l != ".TP" || i + 1 >= lines.size()) continue;
    ManEntry e{section, depth, render(lines[i + 1]), render(lines[i + 1])};
    for (std::size_t j = i + 2; j < lines.size() && !breaks(lines[j]); ++j) {
      const std::string words = render(lines[j]);
      if (!words.empty()) e.summary += " " + words;
    }
    out.push_back(e);
  }
  return out;
}

bool names(const ManEntry& e, const std::string& key) {
  std::string tag = e.tag + ",";
  for (std::size_t start = 0, comma; (comma = tag.find(',', start)) != std::string::npos; start = comma + 1) {
    std::string word = tag.substr(start, comma - start);
    while (!word.empty() && word[0] == ' ') word.erase(0, 1);
    word = word.substr(0, word.find(' '));  // "up_after (duration, ..." -> "up_after"
    if (word == key) return true;
  }
  return false;
}

// `text` contains "default <value>" followed by the end of a word.
bool has_default(const std::string& text, const std::string& value) {
  const std::string want = lower("default " + value);
  const std::string t = lower(text);
  for (std::size_t at = t.find(want); at != std::string::npos; at = t.find(want, at + 1)) {
    const std::size_t end = at + want.size();
    if (end == t.size() || std::string(" ;.,)").find(t[end]) != std::string::npos) return true;
  }
  return false;
}

template <class S>
void check_entry(const schema::Field<S>& f, const ManEntry& e, bool with_reload) {
  CAPTURE(f.key);
  CAPTURE(e.summary);
  CHECK_MESSAGE(lower(e.summary).find(lower(f.type)) != std::string::npos, "type `", f.type, "`");
  if (f.default_doc == "required") {
    CHECK(e.summary.find("required") != std::string::npos);
  } else if (f.default_doc != "-") {
    const std::string value = f.default_doc.empty() ? f.show(S{}) : f.default_doc;
    CHECK_MESSAGE(has_default(e.summary, value), "default `", value, "`");
  }
  if (with_reload) {
    const std::string want = std::string("on reload: ") + schema::to_string(f.reload);
    CHECK_MESSAGE(e.summary.find(want) != std::string::npos, want);
  }
}

// The top-level entries of a man section against a table; for map keys, the
// entries nested under theirs against `sub`.
template <class S>
void check_section(const std::vector<ManEntry>& man, const std::string& section,
                   const std::vector<schema::Field<S>>& fields) {
  std::vector<const ManEntry*> top;
  for (const auto& e : man)
    if (e.section == section && e.depth == 0) top.push_back(&e);
  REQUIRE_FALSE(top.empty());
  for (const auto& f : fields) {
    const ManEntry* found = nullptr;
    for (const ManEntry* e : top)
      if (names(*e, f.key)) found = e;
    CHECK_MESSAGE(found != nullptr, "`", f.key, "` is not documented in ", section);
    if (found) check_entry(f, *found, true);
  }
  for (const ManEntry* e : top) {
    bool known = false;
    for (const auto& f : fields) known = known || names(*e, f.key);
    CHECK_MESSAGE(known, "the man page documents `", e->tag, "`, which is not a key of ", section);
  }
}

// The entries nested under `parent` (backoff, reload, autoscale) against its table.
template <class Sub>
void check_map(const std::vector<ManEntry>& man, const std::string& parent, const std::vector<schema::Field<Sub>>& sub) {
  std::vector<const ManEntry*> nested;
  bool inside = false;
  for (const auto& e : man) {
    if (e.section != "PROGRAMS") continue;
    if (e.depth == 0) inside = names(e, parent);
    if (inside && e.depth == 1) nested.push_back(&e);
  }
  CAPTURE(parent);
  for (const auto& f : sub) {
    const ManEntry* found = nullptr;
    for (const ManEntry* e : nested)
      if (names(*e, f.key)) found = e;
    CHECK_MESSAGE(found != nullptr, "`", parent, ".", f.key, "` is not documented");
    if (found) check_entry(f, *found, false);
  }
  CHECK(nested.size() == sub.size());
}

}  // namespace

TEST_CASE("config schema: man/preforkd.yaml.5 gives every key its type, default and reload effect") {
  const auto man = man_entries();
  check_section(man, "SUPERVISOR", schema::supervisor_fields());
  check_section(man, "PROGRAMS", schema::program_fields());
  check_map(man, "backoff", schema::backoff_fields());
  check_map(man, "reload", schema::reload_fields());
  check_map(man, "autoscale", schema::autoscale_fields());
}

TEST_CASE("config schema: the man check notices a wrong default, type or reload effect") {
  const auto& f = *schema::find(schema::program_fields(), "stop_timeout");
  ManEntry good{"PROGRAMS", 0, "stop_timeout", "stop_timeout Duration; default 10s; on reload: applies in place."};
  CHECK(has_default(good.summary, f.show(Program{})));
  CHECK_FALSE(has_default("x Duration; default 100s; on reload", "10s"));
  CHECK(lower(good.summary).find(lower(f.type)) != std::string::npos);
  CHECK(good.summary.find(std::string("on reload: ") + schema::to_string(f.reload)) != std::string::npos);
  CHECK(render(".BR stdout \", \" stderr") == "stdout, stderr");
  CHECK(render(".BI \"{min: \" m \", max: \" n }\\fR;") == "{min: m, max: n};");
  CHECK(names(ManEntry{"PROGRAMS", 0, "stdout, stderr", ""}, "stderr"));
}

TEST_CASE("config schema: every row is complete and every key is unique") {
  auto check = [](const auto& fields) {
    std::vector<std::string> seen;
    for (const auto& f : fields) {
      CAPTURE(f.key);
      CHECK_FALSE(f.type.empty());
      CHECK_FALSE(f.doc.empty());
      CHECK(static_cast<bool>(f.same));
      CHECK((static_cast<bool>(f.show) || static_cast<bool>(f.print)));
      CHECK(std::find(seen.begin(), seen.end(), f.key) == seen.end());
      seen.push_back(f.key);
    }
  };
  check(schema::supervisor_fields());
  check(schema::program_fields());
  check(schema::backoff_fields());
  check(schema::reload_fields());
  check(schema::autoscale_fields());
  CHECK(schema::keys(schema::supervisor_fields()) ==
        std::vector<std::string_view>{"control_socket", "control_group", "pidfile", "log", "metrics",
                                      "shutdown_timeout"});
  CHECK(schema::keys(schema::supervisor_fields(), "log") == std::vector<std::string_view>{"level", "file"});
}

namespace {

// The one diagnostic of loading `text`, or "" when there is not exactly one.
std::string only_error(const std::string& text) {
  LoadOptions options;
  options.check_executables = false;
  const LoadResult r = load_string(text, "schema.yaml", options);
  return r.errors.size() == 1 ? r.errors[0].message : "";
}

// `parent.key: [1, 2]` in YAML, nested one map per dot.
std::string nested(const std::string& path, const std::string& indent) {
  const std::size_t dot = path.find('.');
  if (dot == std::string::npos) return indent + path + ": [1, 2]\n";
  return indent + path.substr(0, dot) + ":\n" + nested(path.substr(dot + 1), indent + "  ");
}

}  // namespace

TEST_CASE("config schema: the loader reads every key of every table, and reports it by its path") {
  const std::string program = "programs:\n  a:\n    command: x\n";
  auto check = [](const std::string& text, const std::string& kp) {
    CAPTURE(text);
    CHECK(only_error(text) == kp + ": expected a single value, got a list");
  };
  for (const auto& f : schema::supervisor_fields())
    if (f.load) check("supervisor:\n" + nested(f.key, "  "), "supervisor." + f.key);
  for (const auto& f : schema::program_fields())
    if (f.load) check(program + nested(f.key, "    "), "programs.a." + f.key);
  for (const auto& f : schema::backoff_fields())
    check(program + nested("backoff." + f.key, "    "), "programs.a.backoff." + f.key);
  for (const auto& f : schema::reload_fields())
    check(program + nested("reload." + f.key, "    "), "programs.a.reload." + f.key);
  for (const auto& f : schema::autoscale_fields())
    check(program + "    workers: {min: 1, max: 2}\n" + nested("autoscale." + f.key, "    "),
          "programs.a.autoscale." + f.key);
}

TEST_CASE("config schema: an unknown key is suggested from the table") {
  CHECK(only_error("programs:\n  a:\n    command: x\n    stop_timout: 1s\n") ==
        "unknown key `stop_timout` (did you mean `stop_timeout`?)");
  CHECK(only_error("supervisor:\n  log:\n    levle: info\n") == "unknown key `levle` (did you mean `level`?)");
  CHECK(only_error("programs:\n  a:\n    command: x\n    backoff: {reset_afer: 1s}\n") ==
        "unknown key `reset_afer` (did you mean `reset_after`?)");
}
