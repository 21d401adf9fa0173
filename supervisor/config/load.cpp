// load.cpp — preforkd.yaml (yaml-cpp) -> Config, with every diagnostic.
//
// Rules (SPEC "Configuration"; the decisions below are the loader's own):
// - Never throws: every problem becomes a Diagnostic, and all of them are
//   collected (a bad program does not stop the others from being checked).
//   The result holds a Config only when there is no diagnostic at all.
// - Positions: yaml-cpp Marks are 0-based; diagnostics are 1-based. Unknown
//   and duplicate keys point at the key, bad values at the value. An empty
//   value (`key:` with nothing after it) has no position of its own, so it
//   points at its key. Diagnostics are sorted by position before returning.
// - Which keys a map has, and how a plain value (duration, size, number,
//   boolean, name from a list, path, signal) is read, is the schema's
//   (schema.hpp); this file reads the rest and checks across keys.
// - Unknown keys are errors everywhere, with "did you mean" when one is close.
//   When a key appears twice in one map, the first occurrence is validated and
//   the second is a `duplicate key` error.
// - null: for a map or list value (supervisor, programs, a program's
//   environment, rlimits, listen, backoff, reload, log) it means "empty" /
//   "defaults", so `environment:` with every entry commented out is fine.
//   For a scalar it is an error unless the key is documented as nullable
//   (its schema type says "or null": directory, user, group, umask, pidfile,
//   control_group, log.file, metrics; and stdout, stderr).
// - Relative paths resolve against the config file's folder and are then
//   lexically normalised; symlinks are left alone.
// - `supervisor` is read before `programs` wherever it appears, so a socket
//   path or address owned by the supervisor (control socket, metrics) is
//   known when the programs claim theirs. Every address (ListenAddress::key)
//   may be used once in the whole file. Exception: `host:0` (the kernel picks
//   a port) may appear in several programs, since those sockets never collide;
//   it is still rejected twice within one program, where key() must identify
//   each socket across reloads.
#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>

#include "config/argv_split.hpp"
#include "config/config.hpp"
#include "config/load_detail.hpp"
#include "config/schema.hpp"
#include "config/suggest.hpp"
#include "config/units.hpp"
#include "config/yaml_stream.hpp"
#include "sys/io.hpp"
#include "sys/unique_fd.hpp"

namespace preforkd::config {

namespace {

using Keys = std::vector<std::string_view>;

const Keys kTopKeys{"supervisor", "programs"};
const Keys kWorkersKeys{"min", "max"};
const Keys kListenKeys{"address", "name"};
// The other keys, and what each holds, are the schema's (config/schema.hpp).
const Keys kSupervisorKeys = schema::keys(schema::supervisor_fields());
const Keys kProgramKeys = schema::keys(schema::program_fields());

// One `key: value` of a map. Held by value: yaml-cpp Nodes are cheap handles.
// (Never assign one Node to another: yaml-cpp's operator= writes through
// into the document. Entries are only ever copy-constructed.)
struct Entry {
  std::string key;
  YAML::Node key_node;
  YAML::Node value;
};

const Entry* find(const std::vector<Entry>& entries, std::string_view key) {
  for (const auto& e : entries) {
    if (e.key == key) return &e;
  }
  return nullptr;
}

const char* kind_of(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Null: return "null";
    case YAML::NodeType::Scalar: return "a single value";
    case YAML::NodeType::Sequence: return "a list";
    case YAML::NodeType::Map: return "a map";
    case YAML::NodeType::Undefined: break;
  }
  return "nothing";
}

std::string did_you_mean(std::string_view word, const Keys& candidates) {
  const auto s = suggest(word, candidates);
  return s ? fmt::format(" (did you mean `{}`?)", *s) : std::string();
}

class Loader {
 public:
  Loader(std::string file, const LoadOptions& options) : file_(std::move(file)), options_(options) {
    path_ = detail::resolve_path(detail::current_dir(), file_.empty() ? "." : file_);
    folder_ = file_.empty() ? path_ : std::filesystem::path(path_).parent_path().string();
    if (folder_.empty()) folder_ = "/";
  }

  LoadResult run(const std::string& text) {
    Config config;
    config.path = path_;
    try {
      parse(text, config);
    } catch (const std::exception& e) {  // bad_alloc, or a yaml-cpp surprise: still no throw
      add(0, 0, fmt::format("internal error while loading: {}", e.what()));
    }
    return finish(std::move(config));
  }

  // For load_file: a diagnostic without a document.
  LoadResult fail(std::string message) {
    add(0, 0, std::move(message));
    return finish(Config{});
  }

 private:
  // ---- diagnostics -------------------------------------------------------
  void add(int line, int column, std::string message) {
    errors_.push_back(Diagnostic{file_, line, column, std::move(message)});
  }
  void error(const YAML::Mark& mark, std::string message) {
    if (mark.is_null() || mark.line < 0) {
      add(0, 0, std::move(message));
    } else {
      add(mark.line + 1, mark.column + 1, std::move(message));
    }
  }

  // Where a problem with e.value is reported: the value itself, except for an
  // empty value, whose mark is wherever the next token happens to be.
  static YAML::Mark value_mark(const Entry& e) {
    const YAML::Mark m = e.value.Mark();
    if (e.value.IsNull() && (m.is_null() || m.line != e.key_node.Mark().line)) {
      return e.key_node.Mark();
    }
    return m;
  }

  LoadResult finish(Config config) {
    std::stable_sort(errors_.begin(), errors_.end(), [](const Diagnostic& a, const Diagnostic& b) {
      return a.line != b.line ? a.line < b.line : a.column < b.column;
    });
    LoadResult result;
    if (errors_.empty()) result.config = std::move(config);
    result.errors = std::move(errors_);
    return result;
  }

  // ---- structure ---------------------------------------------------------

  // The entries of `map` in file order. Reports keys that are not strings,
  // not in `allowed` (when given) or seen before in this map, and drops them.
  std::vector<Entry> entries(const YAML::Node& map, const Keys* allowed) {
    std::vector<Entry> out;
    std::set<std::string> seen;
    for (auto it = map.begin(); it != map.end(); ++it) {
      // Copies: it-> returns a proxy that dies at the end of the statement.
      const YAML::Node key(it->first);
      const YAML::Node value(it->second);
      if (!key.IsScalar()) {
        error(key.Mark().is_null() ? map.Mark() : key.Mark(),
              fmt::format("expected a name as key, got {}", kind_of(key)));
        continue;
      }
      const std::string& name = key.Scalar();
      if (allowed && std::find(allowed->begin(), allowed->end(), name) == allowed->end()) {
        if (name == "<<") {
          error(key.Mark(), "merge keys (`<<`) are not supported");
        } else {
          error(key.Mark(), fmt::format("unknown key `{}`{}", name, did_you_mean(name, *allowed)));
        }
        continue;
      }
      if (!seen.insert(name).second) {
        error(key.Mark(), fmt::format("duplicate key `{}`", name));
        continue;
      }
      out.push_back(Entry{name, key, value});
    }
    return out;
  }

  // True when e.value is a map to walk. null is an empty map (false, no error).
  bool is_map(const Entry& e, const std::string& kp) {
    if (e.value.IsMap()) return true;
    if (!e.value.IsNull()) error(value_mark(e), kp + ": expected a map");
    return false;
  }

  std::optional<std::string> scalar_node(const YAML::Node& n, const YAML::Mark& mark,
                                         const std::string& kp) {
    if (!n.IsScalar()) {
      error(mark, fmt::format("{}: expected a single value, got {}", kp, kind_of(n)));
      return std::nullopt;
    }
    const std::string& s = n.Scalar();
    if (s.find('\0') != std::string::npos) {  // "\0" in a quoted scalar; exec and paths stop there
      error(mark, kp + ": must not contain a NUL character");
      return std::nullopt;
    }
    return s;
  }
  std::optional<std::string> scalar(const Entry& e, const std::string& kp) {
    return scalar_node(e.value, value_mark(e), kp);
  }

  // A non-empty string, resolved against the config folder.
  std::optional<std::string> path_value(const Entry& e, const std::string& kp) {
    auto s = scalar(e, kp);
    if (!s) return std::nullopt;
    if (s->empty()) {
      error(value_mark(e), kp + ": must not be empty");
      return std::nullopt;
    }
    return detail::resolve_path(folder_, *s);
  }

  std::optional<uint64_t> whole(const Entry& e, const std::string& kp, uint64_t min, uint64_t max) {
    auto s = scalar(e, kp);
    if (!s) return std::nullopt;
    const auto n = parse_uint(*s);
    if (!n || *n < min || *n > max) {
      error(value_mark(e),
            fmt::format("{}: must be a whole number from {} to {}, got `{}`", kp, min, max, *s));
      return std::nullopt;
    }
    return n;
  }

  // Records that `key` is used by `owner`; a second use is an error at `mark`.
  void claim(const std::string& key, const YAML::Mark& mark, const std::string& label,
             const std::string& text, const std::string& owner) {
    auto [it, inserted] = owners_.emplace(key, owner);
    if (!inserted) {
      error(mark, fmt::format("{}: address `{}` is already used by {}", label, text, it->second));
    }
  }

  // ---- the schema's keys -----------------------------------------------

  // One entry's value as the schema reads it.
  class EntryValue final : public schema::Value {
   public:
    EntryValue(Loader& loader, const Entry& e, std::string kp) : l_(loader), e_(e), kp_(std::move(kp)) {}
    bool is_null() const override { return e_.value.IsNull(); }
    std::optional<std::string> scalar() override { return l_.scalar(e_, kp_); }
    std::optional<std::string> path() override { return l_.path_value(e_, kp_); }
    std::optional<bool> boolean() override {
      auto s = scalar();
      if (!s) return std::nullopt;
      bool b = false;
      // yaml-cpp's reading: true/false, yes/no, on/off, y/n (lower, Title or UPPER case).
      if (!YAML::convert<bool>::decode(e_.value, b)) {
        error(fmt::format("expected true or false, got `{}`", *s));
        return std::nullopt;
      }
      return b;
    }
    void error(const std::string& message) override { l_.error(value_mark(e_), kp_ + ": " + message); }

   private:
    Loader& l_;
    const Entry& e_;
    std::string kp_;
  };

  // Reads e with its schema row. False when the row has no reader (load.cpp's own keys).
  template <class S>
  bool load_field(const std::vector<schema::Field<S>>& fields, const std::string& key, const Entry& e,
                  const std::string& kp, S& target) {
    const schema::Field<S>* f = schema::find(fields, key);
    if (f == nullptr || !f->load) return false;
    EntryValue v(*this, e, kp);
    f->load(v, target);
    return true;
  }

  // A map whose every key is a row of `fields` (backoff, reload, autoscale).
  // False when a value was refused (not for unknown or duplicate keys).
  template <class S>
  bool load_map(const Entry& map, const std::string& kp, const std::vector<schema::Field<S>>& fields,
                S& target) {
    if (!is_map(map, kp)) return false;
    static const Keys keys = schema::keys(fields);
    bool ok = true;
    for (const Entry& e : entries(map.value, &keys)) {
      const std::size_t before = errors_.size();
      load_field(fields, e.key, e, kp + "." + e.key, target);
      ok = ok && errors_.size() == before;
    }
    return ok;
  }

  // ---- document ---  // ---- document ----------------------------------------------------------

  void parse(const std::string& text, Config& config) {
    config.supervisor.control_socket = options_.runtime_dir + "/preforkd.sock";
    // Never YAML::LoadAll: on a `,` where a document should start, yaml-cpp
    // 0.7 loops forever, a node more each time (yaml_stream.hpp). The whole
    // stream is read first without building a tree, bounded in size and
    // nodes; then the first document alone is built.
    const detail::YamlStream stream = detail::scan_yaml(text);
    bool fatal = false;
    for (const detail::YamlIssue& issue : stream.issues) {
      add(issue.line, issue.column, issue.message);
      fatal = fatal || issue.fatal;
    }
    if (fatal || stream.first_empty) return;  // an empty file: no programs
    YAML::Node root;
    try {
      root = YAML::Load(text);  // the first document, which scan_yaml read whole
    } catch (const YAML::Exception& e) {  // not expected: the same parser passed it above
      error(e.mark, "invalid YAML: " + e.msg);
      return;
    }
    if (!root.IsMap()) {
      error(root.Mark(), "expected a map at the top level (with `supervisor` and `programs`)");
      return;
    }
    const auto top = entries(root, &kTopKeys);
    if (const Entry* e = find(top, "supervisor")) load_supervisor(*e, config.supervisor);
    // The control socket is a unix socket path like any listen one, default or not.
    owners_.emplace("unix:" + config.supervisor.control_socket, "supervisor.control_socket");
    if (const Entry* e = find(top, "programs")) load_programs(*e, config.programs);
  }

  // ---- supervisor --------------------------------------------------------

  void load_supervisor(const Entry& sup, Supervisor& s) {
    const std::string base = "supervisor";
    if (!is_map(sup, base)) return;
    const auto& fields = schema::supervisor_fields();
    for (const Entry& e : entries(sup.value, &kSupervisorKeys)) {
      const std::string kp = base + "." + e.key;
      if (e.key == "log") {  // log.level and log.file
        if (!is_map(e, kp)) continue;
        static const Keys log_keys = schema::keys(fields, "log");
        for (const Entry& l : entries(e.value, &log_keys)) load_field(fields, "log." + l.key, l, kp + "." + l.key, s);
      } else if (e.key == "control_socket") {
        if (auto p = path_value(e, kp)) {
          if (p->size() > detail::kMaxUnixPath) {
            error(value_mark(e),
                  fmt::format("{}: unix socket path `{}` is too long ({} bytes, at most {})", kp,
                              *p, p->size(), detail::kMaxUnixPath));
          } else {
            s.control_socket = *p;
            claim("unix:" + *p, value_mark(e), kp, *p, kp);
          }
        }
      } else if (e.key == "metrics") {
        load_metrics(e, kp, s);
      } else {
        load_field(fields, e.key, e, kp, s);
      }
    }
  }

  void load_metrics(const Entry& e, const std::string& kp, Supervisor& s) {
    if (e.value.IsNull()) return;
    auto text = scalar(e, kp);
    if (!text) return;
    std::string why;
    auto a = detail::parse_address(*text, folder_, /*allow_unix=*/false, &why);
    if (a && a->port == 0) {
      a.reset();
      why = fmt::format("bad address `{}`: the port must be a number from 1 to 65535", *text);
    }
    if (!a) {
      error(value_mark(e), kp + ": " + why);
      return;
    }
    s.metrics = a->family == ListenAddress::Family::Inet6 ? fmt::format("[{}]:{}", a->host, a->port)
                                                          : fmt::format("{}:{}", a->host, a->port);
    claim(a->key(), value_mark(e), kp, a->text, kp);
    s.metrics_address = std::move(a);
  }

  // ---- programs ----------------------------------------------------------

  void load_programs(const Entry& programs, std::vector<Program>& out) {
    if (!is_map(programs, "programs")) return;
    std::string settingless;  // the last program written with no settings (`web:` alone)
    for (const Entry& e : entries(programs.value, nullptr)) {
      // A program's key under-indented to the level of the programs reads
      // as a program of that name: say what was most likely meant.
      bool is_key = std::find(kProgramKeys.begin(), kProgramKeys.end(), e.key) != kProgramKeys.end();
      if (is_key && !e.value.IsMap()) {
        error(e.key_node.Mark(),
              fmt::format("program \"{}\" has no settings (is \"{}:\" {})", e.key, e.key,
                          settingless.empty() ? "meant to be indented under a program?"
                                              : "indented under \"" + settingless + ":\"?"));
        continue;
      }
      if (e.value.IsNull()) settingless = e.key;
      bool ok = true;
      if (!detail::valid_program_name(e.key)) {
        error(e.key_node.Mark(),
              fmt::format("programs: invalid program name `{}`: use 1 to 64 letters, digits, "
                          "`_`, `.` or `-`",
                          e.key));
        ok = false;  // still check its body: every error in one pass
      }
      Program p;
      if (load_program(e, p) && ok) out.push_back(std::move(p));
    }
  }

  bool load_program(const Entry& prog, Program& p) {
    p.name = prog.key;
    const std::string base = "programs." + p.name;
    const std::size_t errors_before = errors_.size();
    if (!prog.value.IsMap() && !prog.value.IsNull()) {
      error(value_mark(prog), base + ": expected a map");
      return false;
    }
    const auto fields =
        prog.value.IsNull() ? std::vector<Entry>{} : entries(prog.value, &kProgramKeys);
    std::optional<Entry> autoscale_entry;  // read after `workers`, wherever it is written
    for (const Entry& e : fields) {
      const std::string kp = base + "." + e.key;
      const std::string& k = e.key;
      if (load_field(schema::program_fields(), k, e, kp, p)) continue;
      // The keys the schema leaves to the loader (schema.hpp).
      if (k == "command") {
        load_command(e, kp, p);
      } else if (k == "workers") {
        load_workers(e, kp, p);
      } else if (k == "autoscale") {
        autoscale_entry.emplace(e);
      } else if (k == "listen") {
        load_listen(e, kp, p);
      } else if (k == "environment") {
        load_environment(e, kp, p);
      } else if (k == "rlimits") {
        load_rlimits(e, kp, p);
      } else if (k == "backoff") {
        load_backoff(e, kp, p);
      } else if (k == "reload") {
        load_map(e, kp, schema::reload_fields(), p.reload);
      }
    }
    if (autoscale_entry) load_autoscale(*autoscale_entry, base + ".autoscale", p);
    if (!find(fields, "command"))
      error(prog.key_node.Mark(), base + ": missing required key `command`");
    // SO_REUSEPORT load-balances TCP only; the kernel refuses it on a unix socket.
    if (const Entry* r = find(fields, "reuseport"); r && p.reuseport) {
      for (const auto& a : p.listen)
        if (a.family == ListenAddress::Family::Unix)
          error(value_mark(*r), fmt::format("{}.reuseport: not possible with the unix socket `{}`",
                                            base, a.text));
    }
    return errors_.size() == errors_before;
  }

  void load_command(const Entry& e, const std::string& kp, Program& p) {
    const YAML::Node& v = e.value;
    YAML::Mark at = value_mark(e);
    if (v.IsScalar()) {
      auto s = scalar(e, kp);
      if (!s) return;
      std::string why;
      auto words = argv_split(*s, &why);
      if (!words) {
        error(at, fmt::format("{}: {}", kp, why));
        return;
      }
      p.command = std::move(*words);
    } else if (v.IsSequence()) {
      std::size_t i = 0;
      bool ok = true;
      for (auto it = v.begin(); it != v.end(); ++it, ++i) {
        auto s = scalar_node(*it, it->Mark(), fmt::format("{}[{}]", kp, i));
        if (!s) {
          ok = false;
          continue;
        }
        if (i == 0) at = it->Mark();  // point at the program, not at the `[`
        p.command.push_back(*s);
      }
      if (!ok) return;
    } else {
      error(at, fmt::format("{}: expected a string or a list, got {}", kp, kind_of(v)));
      return;
    }
    if (p.command.empty()) {
      error(at, kp + ": must not be empty");
      return;
    }
    const std::string& argv0 = p.command[0];
    if (argv0.empty()) {
      error(at, kp + ": the program to run must not be empty");
      return;
    }
    if (!options_.check_executables) {
      p.executable =
          argv0.find('/') != std::string::npos ? detail::resolve_path(folder_, argv0) : argv0;
      return;
    }
    std::string why;
    if (auto exe = detail::find_executable(argv0, folder_, options_.extra_command_dirs, &why)) {
      p.executable = *exe;
    } else {
      error(at, kp + ": " + why);
    }
  }

  void load_autoscale(const Entry& as, const std::string& kp, Program& p) {
    if (!p.autoscale) {
      error(as.key_node.Mark(), kp + ": only with `workers: {min, max}`");
      return;
    }
    load_map(as, kp, schema::autoscale_fields(), *p.autoscale);
  }

  void load_workers(const Entry& e, const std::string& kp, Program& p) {
    constexpr uint64_t kMaxWorkers = 10000;
    if (e.value.IsMap()) {  // { min, max }: autoscaling
      Autoscale a;
      bool ok = true, have_min = false, have_max = false;
      for (const Entry& m : entries(e.value, &kWorkersKeys)) {
        auto n = whole(m, kp + "." + m.key, 0, kMaxWorkers);
        if (!n) {
          ok = false;
          continue;
        }
        (m.key == "min" ? a.min : a.max) = static_cast<uint32_t>(*n);
        (m.key == "min" ? have_min : have_max) = true;
      }
      if (ok && (!have_min || !have_max)) {
        error(value_mark(e), kp + ": needs both `min` and `max`");
        ok = false;
      }
      if (ok && a.min > a.max) {
        error(value_mark(e), fmt::format("{}: min ({}) must not be greater than max ({})", kp, a.min, a.max));
        ok = false;
      }
      if (ok && a.max == 0) {
        error(value_mark(e), kp + ": max must be at least 1");
        ok = false;
      }
      if (ok) {
        p.autoscale = a;
        p.workers = a.min;
      }
      return;
    }
    auto s = scalar(e, kp);
    if (!s) return;
    if (*s == "auto") {
      const long cpus = sysconf(_SC_NPROCESSORS_ONLN);
      p.workers = static_cast<uint32_t>(std::clamp<long>(cpus, 1, kMaxWorkers));
      return;
    }
    const auto n = parse_uint(*s);
    if (!n) {
      error(value_mark(e),
            fmt::format("{}: must be a whole number >= 0 or `auto`, got `{}`", kp, *s));
    } else if (*n > kMaxWorkers) {
      error(value_mark(e), fmt::format("{}: must be at most {}, got `{}`", kp, kMaxWorkers, *s));
    } else {
      p.workers = static_cast<uint32_t>(*n);
    }
  }

  void load_listen(const Entry& e, const std::string& kp, Program& p) {
    const YAML::Node& v = e.value;
    if (v.IsNull()) return;
    if (v.IsScalar()) {  // `listen: "127.0.0.1:7000"` is a list of one
      load_listen_entry(v, value_mark(e), kp, 0, p);
      return;
    }
    if (!v.IsSequence()) {
      error(value_mark(e), kp + ": expected a list");
      return;
    }
    std::size_t i = 0;
    for (auto it = v.begin(); it != v.end(); ++it, ++i) {
      load_listen_entry(*it, it->Mark(), fmt::format("{}[{}]", kp, i), i, p);
    }
  }

  void load_listen_entry(const YAML::Node& node, const YAML::Mark& mark, const std::string& label,
                         std::size_t index, Program& p) {
    std::string text;
    std::optional<std::string> name;
    YAML::Mark at = mark;
    if (node.IsScalar()) {
      auto s = scalar_node(node, mark, label);
      if (!s) return;
      text = *s;
    } else if (node.IsMap()) {
      const auto fields = entries(node, &kListenKeys);
      const Entry* address = find(fields, "address");
      if (!address) {
        error(mark, label + ": missing required key `address`");
        return;
      }
      auto s = scalar(*address, label + ".address");
      if (!s) return;
      text = *s;
      at = value_mark(*address);
      if (const Entry* n = find(fields, "name")) {
        auto nm = scalar(*n, label + ".name");
        if (!nm) return;
        if (!detail::valid_socket_name(*nm)) {
          error(value_mark(*n),
                fmt::format("{}.name: must be 1 to 255 printable characters without `:` or "
                            "spaces, got `{}`",
                            label, *nm));
          return;
        }
        name = *nm;
      }
    } else {
      error(mark, fmt::format("{}: expected an address or a map with `address`, got {}", label,
                              kind_of(node)));
      return;
    }
    std::string why;
    auto a = detail::parse_address(text, folder_, /*allow_unix=*/true, &why);
    if (!a) {
      error(at, label + ": " + why);
      return;
    }
    // LISTEN_FDNAMES: the program's name, then "<program>-<i>" (SPEC).
    a->name = name ? *name : index == 0 ? p.name : fmt::format("{}-{}", p.name, index);
    // Port 0 asks the kernel for a fresh port, so such sockets never collide
    // across programs; within one program key() must still tell them apart.
    const std::string key = a->port == 0 && a->family != ListenAddress::Family::Unix
                                ? a->key() + " in " + p.name
                                : a->key();
    claim(key, at, label, a->text, fmt::format("program `{}`", p.name));
    p.listen.push_back(std::move(*a));
  }

  void load_environment(const Entry& env, const std::string& kp, Program& p) {
    if (!is_map(env, kp)) return;
    for (const Entry& e : entries(env.value, nullptr)) {
      if (!detail::valid_env_name(e.key)) {
        error(e.key_node.Mark(),
              fmt::format("{}: `{}` is not a valid variable name (letters, digits and `_`, not "
                          "starting with a digit)",
                          kp, e.key));
        continue;
      }
      if (detail::reserved_env_name(e.key)) {
        error(e.key_node.Mark(), fmt::format("{}: `{}` is set by preforkd", kp, e.key));
        continue;
      }
      // The scalar as written: `DEBUG: true` gives "true", `PORT: 080` gives "080".
      if (auto v = scalar(e, kp + "." + e.key)) p.environment.emplace_back(e.key, *v);
    }
  }

  void load_rlimits(const Entry& limits, const std::string& kp, Program& p) {
    if (!is_map(limits, kp)) return;
    static const Keys names = [] {
      Keys out;
      for (const auto& r : sys::rlimit_resources()) out.push_back(r.name);
      return out;
    }();
    for (const Entry& e : entries(limits.value, &names)) {
      const std::string key_path = kp + "." + e.key;
      auto s = scalar(e, key_path);
      if (!s) continue;
      Rlimit r;
      r.name = e.key;
      const auto& known = sys::rlimit_resources();
      r.resource = std::find_if(known.begin(), known.end(), [&](const sys::RlimitResource& n) {
                     return n.name == e.key;
                   })->resource;
      if (*s == "unlimited") {
        r.value = sys::kRlimitInfinity;
      } else {
        UnitError why;
        auto n = parse_size(*s, &why);
        if (!n) {
          error(value_mark(e),
                why.kind == UnitError::Kind::Range
                    ? fmt::format("{}: {}", key_path, why.message)
                    : fmt::format("{}: expected a whole number, a size like `64M` or "
                                  "`unlimited`, got `{}`",
                                  key_path, *s));
          continue;
        }
        r.value = *n;
      }
      p.rlimits.push_back(std::move(r));
    }
  }

  void load_backoff(const Entry& backoff, const std::string& kp, Program& p) {
    if (load_map(backoff, kp, schema::backoff_fields(), p.backoff) && p.backoff.min > p.backoff.max) {
      error(value_mark(backoff),
            fmt::format("{}: min ({}) must not be greater than max ({})", kp,
                        format_duration(p.backoff.min), format_duration(p.backoff.max)));
    }
  }

  std::string file_;
  LoadOptions options_;
  std::string path_;    // absolute path of the file
  std::string folder_;  // its folder: relative paths resolve against it
  std::vector<Diagnostic> errors_;
  std::map<std::string, std::string> owners_;  // ListenAddress::key() -> who uses it
};

}  // namespace

LoadResult load_string(const std::string& text, const std::string& file,
                       const LoadOptions& options) {
  try {
    return Loader(file, options).run(text);
  } catch (const std::exception& e) {  // only bad_alloc can get here
    LoadResult r;
    r.errors.push_back(
        Diagnostic{file, 0, 0, fmt::format("internal error while loading: {}", e.what())});
    return r;
  }
}

LoadResult load_file(const std::string& path, const LoadOptions& options, std::string* text_out) {
  // Anything bigger is not a config file (and /dev/zero must not hang us).
  constexpr std::size_t kMaxFileSize = 16 << 20;
  try {
    sys::UniqueFd fd;
    if (int err = sys::open_file(fd, path, O_RDONLY)) {
      return Loader(path, options).fail(fmt::format("cannot open: {}", std::strerror(err)));
    }
    std::string text;
    if (int err = sys::read_whole(fd.get(), text, kMaxFileSize)) {
      if (err == EFBIG) {
        return Loader(path, options)
            .fail(fmt::format("too large (more than {} MiB)", kMaxFileSize >> 20));
      }
      return Loader(path, options).fail(fmt::format("cannot read: {}", std::strerror(err)));
    }
    if (text_out != nullptr) *text_out = text;
    return load_string(text, path, options);
  } catch (const std::exception& e) {
    LoadResult r;
    r.errors.push_back(
        Diagnostic{path, 0, 0, fmt::format("internal error while loading: {}", e.what())});
    return r;
  }
}

}  // namespace preforkd::config
