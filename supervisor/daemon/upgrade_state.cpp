#include "daemon/upgrade_state.hpp"

#include <cstring>
#include <set>
#include <utility>
#include <vector>

#include "core/lifecycle.hpp"
#include "core/orphans.hpp"
#include "core/program.hpp"
#include "core/worker.hpp"
#include "sys/error.hpp"
#include "sys/io.hpp"

namespace preforkd::daemon {

using nlohmann::json;

std::optional<json> read_state(int fd, std::string& error) {
  constexpr size_t kMax = 256u << 20;  // far beyond any real state
  std::string text;
  if (int err = sys::read_whole(fd, text, kMax)) {
    error = err == EFBIG ? "the state is too large" : std::string("cannot read the state: ") + std::strerror(err);
    return std::nullopt;
  }
  return parse_state(text, error);
}

std::optional<json> parse_state(const std::string& text, std::string& error) {
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    error = "the state is not a JSON object";
    return std::nullopt;
  }
  return j;
}

int write_state(const json& state) {
  sys::UniqueFd fd;
  if (int err = sys::memfd("preforkd-state", fd)) sys::throw_errno("memfd_create", err);
  std::string text = state.dump(-1, ' ', false, json::error_handler_t::replace);
  if (int err = sys::write_whole(fd.get(), text)) throw sys::SysError(err, "cannot write the state");
  return fd.release();
}

const char* pipe_kind_name(int kind) {
  switch (kind) {
    case 0: return "notify";
    case 1: return "stdout";
    case 2: return "stderr";
  }
  return "?";
}

std::optional<int> pipe_kind_from(const std::string& name) {
  for (int k = 0; k < 3; ++k)
    if (name == pipe_kind_name(k)) return k;
  return std::nullopt;
}

namespace {

// Throws std::runtime_error naming the first thing that is missing or wrong.
void require(bool ok, const std::string& what) {
  if (!ok) throw std::runtime_error(what);
}

// nlohmann converts a floating-point number to an integer with a plain
// cast, which is undefined for 1e300: every number that is read as an
// integer must be one, and only busy_seconds is written with a fraction.
// Iterative, so a deeply nested document cannot exhaust the stack.
void require_integers(const json& state) {
  static const std::string kTop = "the state";
  std::vector<std::pair<const json*, const std::string*>> todo{{&state, &kTop}};
  while (!todo.empty()) {
    auto [j, key] = todo.back();
    todo.pop_back();
    if (j->is_number_float()) {
      require(*key == "busy_seconds", *key + ": " + j->dump() + " is not an integer");
    } else if (j->is_object()) {
      for (auto it = j->begin(); it != j->end(); ++it) todo.emplace_back(&*it, &it.key());
    } else if (j->is_array()) {
      for (const auto& v : *j) todo.emplace_back(&v, key);  // an entry goes by its list's name
    }
  }
}

void check_slot(const json& s, const std::string& where, bool slot) {
  require(s.is_object(), where + ": not an object");
  const json& w = s.at("worker");
  for (const char* k : {"slot", "pid", "spawn_seq", "generation", "started_at", "ready_at", "last_seen", "deadline",
                        "streak", "restarts"})
    require(w.contains(k) && w[k].is_number_integer(), where + ".worker." + k + ": missing or not an integer");
  auto name = [&](const json& j, const char* key, auto from) {
    require(j.contains(key) && j[key].is_string(), where + "." + key + ": missing or not a name");
    require(from(j[key].template get<std::string>()).has_value(),
            where + "." + key + ": unknown name `" + j[key].template get<std::string>() + "`");
  };
  name(w, "state", core::worker_state_from);
  name(w, "want", core::want_from);
  name(w, "stop_reason", core::stop_reason_from);
  if (slot) {
    name(s, "phase", core::slot_phase_from);
    name(s, "replacing_for", core::recycle_from);
  }
  for (const auto& p : s.at("pipes")) {
    require(p.at("fd").is_number_integer(), where + ".pipes: bad entry");
    name(p, "kind", pipe_kind_from);
  }
  require(s.at("report").at("counters").is_object() && s["report"].at("gauges").is_object(),
          where + ".report: bad");
}

}  // namespace

std::optional<std::map<uint64_t, config::Config>> validate_state(const json& state, const config::LoadOptions& options,
                                                                 std::string& error) {
  try {
    require(state.value("format", "") == kStateFormat, "not a preforkd state (format)");
    require_integers(state);
    int version = state.value("version", -1);
    require(version == kStateVersion, "state version " + std::to_string(version) + " is not supported (this binary reads " +
                                          std::to_string(kStateVersion) + ")");
    std::string path = state.at("config_path").get<std::string>();
    std::map<uint64_t, config::Config> configs;
    for (const auto& [gen, text] : state.at("texts").items()) {
      config::LoadResult r = config::load_string(text.get<std::string>(), path, options);
      if (!r.config) {
        std::string why;
        for (const auto& d : r.errors) why += "\n" + d.to_string();
        throw std::runtime_error("the configuration of generation " + gen + " does not load:" + why);
      }
      configs.emplace(std::stoull(gen), std::move(*r.config));
    }
    uint64_t generation = state.at("generation").get<uint64_t>();
    require(configs.count(generation) == 1, "no configuration text for the current generation");
    std::set<uint64_t> procs;  // process ids kept by the previous binary: unique over all programs
    for (const auto& p : state.at("programs")) {
      std::string name = p.at("name").get<std::string>();
      uint64_t g = p.at("config_generation").get<uint64_t>();
      require(configs.count(g) == 1, "program " + name + ": no configuration text for generation " + std::to_string(g));
      const auto& programs = configs[g].programs;
      require(std::any_of(programs.begin(), programs.end(), [&](const config::Program& c) { return c.name == name; }),
              "program " + name + ": not in the configuration of generation " + std::to_string(g));
      require(p.at("exits").is_array() && p["exits"].size() == 5, "program " + name + ": exits");
      for (const auto& l : p.at("listeners")) require(l.at("fd").is_number_integer(), "program " + name + ": listeners");
      for (const auto& s : p.at("slots")) check_slot(s, "program " + name + " slot", true);
      for (const auto& s : p.at("retirees")) check_slot(s, "program " + name + " retiree", false);
      if (const json& jg = p.value("guard", json()); !jg.is_null()) {
        std::string where = "program " + name + " guard";
        require(jg.is_object(), where + ": not an object");
        for (const char* k : {"previous_generation", "first_proc", "started", "ended"})
          require(jg.contains(k) && jg[k].is_number_integer(), where + "." + k + ": missing or not an integer");
        uint64_t pg = jg["previous_generation"].get<uint64_t>();
        require(configs.count(pg) == 1, where + ": no configuration text for generation " + std::to_string(pg));
        const auto& previous = configs[pg].programs;
        require(std::any_of(previous.begin(), previous.end(), [&](const config::Program& c) { return c.name == name; }),
                where + ": not in the configuration of generation " + std::to_string(pg));
        for (const auto& l : jg.at("previous_listeners")) require(l.at("fd").is_number_integer(), where + ": listeners");
      }
      for (const char* list : {"slots", "retirees"})
        for (const auto& s : p.at(list)) {
          uint64_t proc = s.value("proc", uint64_t{0});
          require(proc == 0 || procs.insert(proc).second, "program " + name + ": process id " +
                                                              std::to_string(proc) + " twice");
        }
    }
    // Orphans being stopped: optional (a state from before the process tree has none).
    for (const auto& o : state.value("orphans", json::array())) {
      for (const char* k : {"pid", "start_time", "left_by", "stop_signal", "stop_timeout_ms", "since", "deadline"})
        require(o.contains(k) && o[k].is_number_integer(), std::string("orphans.") + k + ": missing or not an integer");
      for (const char* k : {"comm", "program", "tag", "state"})
        require(o.contains(k) && o[k].is_string(), std::string("orphans.") + k + ": missing or not a string");
      require(o.contains("keep") && o["keep"].is_boolean(), "orphans.keep: missing or not a boolean");
      require(core::orphan_state_from(o["state"].get<std::string>()).has_value(),
              "orphans.state: unknown name `" + o["state"].get<std::string>() + "`");
    }
    return configs;
  } catch (const std::exception& e) {
    error = e.what();
    return std::nullopt;
  }
}

}  // namespace preforkd::daemon
