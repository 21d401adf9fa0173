// schema.hpp — one table per map of preforkd.yaml: every key with its type,
// default, reload effect and one-line doc, and the code to read, compare and
// print its value.
//
// Owns: the list of keys. The loader dispatches on it (and suggests from it
// for an unknown key), operator== and dump() walk it, core::diff classifies a
// reload with it, and tests/unit/config_schema_test.cpp checks
// man/preforkd.yaml.5 against it. Adding a key is one row here, its field in
// config.hpp (whose initializer is the default), and its man page entry.
// Must never: need YAML. The loader hands each value over as a schema::Value.
// Keys whose value is not one scalar (command, workers, listen, environment,
// rlimits, control_socket, metrics) and the maps backoff, reload and
// autoscale have no `load` here: load.cpp reads them.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.hpp"

namespace preforkd::config::schema {

// What a reload does when the key changes (preforkd.yaml(5), "Reload").
enum class Reload {
  RestartsWorkers,  // the program's workers are replaced by a rollout
  InPlace,          // applied to the running workers
  Kept,             // the running value stays until preforkd restarts (warned)
  Refused,          // the reload fails
};
// The man page's words: "restarts workers", "applies in place",
// "kept until preforkd restarts", "cannot change".
const char* to_string(Reload reload);

// One value of the file as the loader hands it to a field. The reads report
// their own error ("<key path>: ..." at the value) and return nullopt.
class Value {
 public:
  virtual ~Value() = default;
  virtual bool is_null() const = 0;
  virtual std::optional<std::string> scalar() = 0;  // a single value without NUL
  virtual std::optional<std::string> path() = 0;    // non-empty, resolved against the config folder
  virtual std::optional<bool> boolean() = 0;        // YAML's true/false, yes/no, on/off
  virtual void error(const std::string& message) = 0;  // reported as "<key path>: message"
};

// A key of the map that S is read from.
template <class S>
struct Field {
  std::string key;     // as written in the file; "log.level" is `level` inside `log`
  std::string type;    // as the man page words it: "Duration", "Path or null"
  Reload reload = Reload::InPlace;
  std::string doc;     // one line
  // The default as the man page words it; empty: show() of a default S.
  // "required" for a key without default, "-" for a map without one.
  std::string default_doc;
  // The name a reload reports for a change (default: key).
  std::string reload_key;
  std::function<void(Value&, S&)> load;               // empty: load.cpp's own code
  std::function<bool(const S&, const S&)> same;       // equal values
  std::function<std::string(const S&)> show;          // the value as dump() writes it
  // dump()'s lines for a key that is not `key: show()` (relative indentation
  // by two spaces); empty when unset.
  std::function<std::vector<std::string>(const S&)> print;

  const std::string& name_on_reload() const { return reload_key.empty() ? key : reload_key; }
};

const std::vector<Field<Supervisor>>& supervisor_fields();
const std::vector<Field<Program>>& program_fields();
// The keys inside a program's `backoff`, `reload` and `autoscale` maps.
const std::vector<Field<Backoff>>& backoff_fields();
const std::vector<Field<ReloadPolicy>>& reload_fields();
const std::vector<Field<Autoscale>>& autoscale_fields();

// The field named `key` ("log.level"), or nullptr.
template <class S>
const Field<S>* find(const std::vector<Field<S>>& fields, std::string_view key) {
  for (const auto& f : fields)
    if (f.key == key) return &f;
  return nullptr;
}

// The keys a map accepts, in table order: the fields without a dot, and the
// part before the dot once ("log"). With `prefix` ("log"), the keys inside it.
template <class S>
std::vector<std::string_view> keys(const std::vector<Field<S>>& fields, std::string_view prefix = {}) {
  std::vector<std::string_view> out;
  for (const auto& f : fields) {
    std::string_view k = f.key;
    if (!prefix.empty()) {
      if (k.size() <= prefix.size() || k.substr(0, prefix.size()) != prefix || k[prefix.size()] != '.')
        continue;
      k.remove_prefix(prefix.size() + 1);
    } else {
      k = k.substr(0, k.find('.'));
    }
    bool seen = false;
    for (auto o : out) seen = seen || o == k;
    if (!seen) out.push_back(k);
  }
  return out;
}

// Every field of a and b equal.
template <class S>
bool same(const std::vector<Field<S>>& fields, const S& a, const S& b) {
  for (const auto& f : fields)
    if (!f.same(a, b)) return false;
  return true;
}

// A string as dump() writes it: bare when unambiguous, double-quoted otherwise.
std::string quote(const std::string& s);

}  // namespace preforkd::config::schema
