#include "daemon/control_protocol.hpp"

#include <nlohmann/json.hpp>

namespace preforkd::daemon {

namespace {

using json = nlohmann::json;

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

bool needs_program(const std::string& cmd) {
  return cmd == "scale" || cmd == "restart" || cmd == "stop" || cmd == "start" || cmd == "signal" || cmd == "rollback";
}

bool known(const std::string& cmd) {
  for (const char* c : {"status", "stats", "metrics", "reload", "scale", "restart", "stop", "start", "signal",
                        "rollback", "shutdown", "version"})
    if (cmd == c) return true;
  return false;
}

// The listeners' accept queues, for `status` and `stats`.
json listeners_json(const std::vector<core::ListenerSnapshot>& list) {
  json a = json::array();
  for (const auto& l : list) {
    json o = {{"listen", l.listen}, {"address", l.address}};
    if (l.known) {
      o["queue"] = l.length;
      o["queue_max"] = l.max;
    } else {
      o["queue"] = nullptr;
      o["queue_max"] = nullptr;
    }
    a.push_back(std::move(o));
  }
  return a;
}

// The orphans being stopped (or kept), for `status`.
json orphans_json(const std::vector<core::OrphanSnapshot>& list) {
  json out = json::array();
  for (const auto& o : list) {
    json j = {{"pid", o.pid}, {"command", o.command}, {"state", o.state}, {"age_s", o.age_s}};
    if (!o.program.empty()) j["program"] = o.program;
    if (o.left_by > 0) j["left_by"] = o.left_by;
    out.push_back(std::move(j));
  }
  return out;
}

}  // namespace

std::variant<ControlRequest, std::string> parse_control_request(std::string_view line) {
  json j = json::parse(line.begin(), line.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return std::string("malformed JSON");
  if (!j.is_object()) return std::string("a request is a JSON object");
  auto cmd = j.find("cmd");
  if (cmd == j.end() || !cmd->is_string()) return std::string("missing \"cmd\" (a string)");
  ControlRequest r;
  r.cmd = cmd->get<std::string>();
  if (!known(r.cmd)) return "unknown command `" + r.cmd + "`";
  if (needs_program(r.cmd)) {
    auto p = j.find("program");
    if (p == j.end() || !p->is_string()) return r.cmd + ": missing \"program\" (a string)";
    r.program = p->get<std::string>();
  }
  if (r.cmd == "scale") {
    auto w = j.find("workers");
    if (w == j.end() || !w->is_number_integer()) return std::string("scale: missing \"workers\" (a whole number)");
    r.workers = w->get<int64_t>();
    if (r.workers < 0 || r.workers > 10000) return std::string("scale: \"workers\" must be 0..10000");
  }
  if (r.cmd == "signal") {
    auto s = j.find("signal");
    if (s != j.end() && s->is_string())
      r.signal = s->get<std::string>();
    else if (s != j.end() && s->is_number_integer())
      r.signal = std::to_string(s->get<int64_t>());
    else
      return std::string("signal: missing \"signal\" (a name or a number)");
  }
  return r;
}

std::string reply_error(const std::string& message) { return dump({{"ok", false}, {"error", message}}); }

std::string reply_ok(const std::string& message) {
  json j = {{"ok", true}};
  if (!message.empty()) j["message"] = message;
  return dump(j);
}

std::string reply_version(const core::Snapshot& s) {
  return dump({{"ok", true}, {"version", s.version}, {"pid", s.pid}});
}

std::string reply_text(const std::string& text) { return dump({{"ok", true}, {"text", text}}); }

std::string reply_status(const core::Snapshot& s) {
  json programs = json::array();
  for (const auto& p : s.programs) {
    json workers = json::array();
    for (const auto& w : p.workers) {
      json o = {{"slot", w.slot},         {"pid", w.pid},           {"state", w.state},
                {"generation", w.generation}, {"uptime_s", w.uptime_s}, {"restarts", w.restarts},
                {"status", w.status}};
      if (w.retiring) o["retiring"] = true;
      o["busy"] = w.busy == "unknown" ? json(nullptr) : json(w.busy == "busy");
      o["descendants"] = w.descendants;  // pids below it: who serves under a master
      workers.push_back(std::move(o));
    }
    json autoscale = nullptr;
    if (p.workers_min && p.workers_max)
      autoscale = {{"min", *p.workers_min}, {"max", *p.workers_max}, {"up", p.autoscale_up}, {"down", p.autoscale_down}};
    json o = {{"name", p.name},
              {"state", p.state},
              {"generation", p.generation},
              {"phase", p.phase},
              {"rollbacks", p.rollbacks},
              {"autoscale", std::move(autoscale)},
              {"workers_busy", p.workers_busy},
              {"workers_reporting_busy", p.workers_reporting},
              {"workers_wanted", p.workers_wanted},
              {"workers", std::move(workers)},
              {"listeners", listeners_json(p.listeners)},
              {"orphans", orphans_json(p.orphans)}};
    if (!p.rollout.empty()) o["rollout"] = p.rollout;
    if (p.previous_generation != 0) o["previous_generation"] = p.previous_generation;
    if (p.guard_left_s >= 0) o["guard_left_s"] = p.guard_left_s;
    programs.push_back(std::move(o));
  }
  return dump({{"ok", true},
               {"version", s.version},
               {"pid", s.pid},
               {"generation", s.generation},
               {"programs", std::move(programs)},
               {"orphans", orphans_json(s.orphans)}});
}

std::string reply_stats(const core::Snapshot& s) {
  json programs = json::array();
  for (const auto& p : s.programs) {
    json exits = json::object();
    for (size_t i = 0; i < core::kExitReasonNames.size(); ++i) exits[core::kExitReasonNames[i]] = p.exits[i];
    json workers = json::array();
    for (const auto& w : p.workers) {
      json o = {{"slot", w.slot}, {"pid", w.pid}, {"counters", w.counters}, {"gauges", w.gauges}};
      if (w.retiring) o["retiring"] = true;
      workers.push_back(std::move(o));
    }
    programs.push_back({{"name", p.name},
                        {"counters", p.counters},
                        {"gauges", p.gauges},
                        {"notify_errors", p.notify_errors},
                        {"busy_seconds", p.busy_seconds},
                        {"starts", p.starts},
                        {"exits", std::move(exits)},
                        {"listeners", listeners_json(p.listeners)},
                        {"workers", std::move(workers)}});
  }
  json r = {{"ok", true}, {"notify_unattributed", s.notify_unattributed}, {"programs", std::move(programs)}};
  if (s.host_listen_overflows) r["host_listen_overflows"] = *s.host_listen_overflows;
  return dump(r);
}

}  // namespace preforkd::daemon
