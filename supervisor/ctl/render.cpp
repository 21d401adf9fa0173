#include "ctl/render.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <map>
#include <utility>
#include <vector>

namespace preforkd::ctl {

namespace {

using nlohmann::json;

constexpr const char* kGreen = "\033[32m";
constexpr const char* kYellow = "\033[33m";
constexpr const char* kRed = "\033[31m";
constexpr const char* kReset = "\033[0m";

// SPEC's exit reasons, in SPEC's order; any others follow sorted.
constexpr const char* kExitReasons[] = {"exit", "signal", "watchdog", "start_timeout",
                                        "recycled"};

// Code points, not bytes: UTF-8 continuation bytes take no column.
std::size_t display_width(std::string_view s) {
  return static_cast<std::size_t>(
      std::count_if(s.begin(), s.end(), [](char c) { return (c & 0xC0) != 0x80; }));
}

std::string pad_right(std::string s, std::size_t width) {
  std::size_t w = display_width(s);
  if (w < width) s.append(width - w, ' ');
  return s;
}

std::string pad_left(const std::string& s, std::size_t width) {
  std::size_t w = display_width(s);
  return w < width ? std::string(width - w, ' ') + s : s;
}

// A field of `obj`, or null when `obj` is not an object or lacks it.
const json& field(const json& obj, const char* key) {
  static const json kNull;
  if (!obj.is_object()) return kNull;
  auto it = obj.find(key);
  return it == obj.end() ? kNull : *it;
}

// A scalar as text: strings sanitized, numbers in decimal, anything else "-".
std::string text(const json& v) {
  if (v.is_string()) {
    const auto& s = v.get_ref<const std::string&>();
    return s.empty() ? "-" : sanitize(s);
  }
  if (v.is_number_unsigned()) return std::to_string(v.get<uint64_t>());
  if (v.is_number_integer()) return std::to_string(v.get<int64_t>());
  if (v.is_number_float()) {
    double d = v.get<double>();
    if (!std::isfinite(d)) return "-";
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.15g", d);
    return buf;
  }
  if (v.is_boolean()) return v.get<bool>() ? "true" : "false";
  return "-";
}

std::string text(const json& obj, const char* key) { return text(field(obj, key)); }

// A pid field: 0 or missing means "no process".
// Descendant rows shown under one worker in `status` (all are in --json).
constexpr size_t kDescendantRows = 16;

int64_t pid_of(const json& worker) {
  const json& p = field(worker, "pid");
  return p.is_number_integer() ? p.get<int64_t>() : 0;
}

bool is_retiring(const json& worker) {
  const json& r = field(worker, "retiring");
  return r.is_boolean() && r.get<bool>();
}

const json& array_field(const json& obj, const char* key) {
  static const json kEmpty = json::array();
  const json& v = field(obj, key);
  return v.is_array() ? v : kEmpty;
}

const char* state_colour(const std::string& state) {
  if (state == "ready" || state == "running") return kGreen;
  if (state == "starting" || state == "stopping" || state == "retiring" || state == "stopped")
    return kYellow;
  if (state == "backoff" || state == "crash-looping") return kRed;
  return nullptr;
}

struct Cell {
  std::string text;
  const char* colour = nullptr;
};
using Row = std::vector<Cell>;

// Columns separated by two spaces; the last one is not padded, so a long
// STATUS text leaves no trailing blanks.
std::string table(const std::vector<Row>& rows, bool colour) {
  std::vector<std::size_t> widths;
  for (const auto& row : rows)
    for (std::size_t i = 0; i < row.size(); ++i) {
      if (widths.size() <= i) widths.push_back(0);
      widths[i] = std::max(widths[i], display_width(row[i].text));
    }
  std::string out;
  for (const auto& row : rows) {
    std::string line;
    for (std::size_t i = 0; i < row.size(); ++i) {
      const bool last = i + 1 == row.size();
      const Cell& c = row[i];
      if (colour && c.colour != nullptr)
        line += std::string(c.colour) + c.text + kReset;
      else
        line += c.text;
      if (!last) line.append(widths[i] - display_width(c.text) + 2, ' ');
    }
    out += line + "\n";
  }
  return out;
}

// The worker's `requests` counter: its own, else the stats reply's worker
// with the same program and pid, else "-".
std::string requests_of(const json& worker, const std::string& program, const json& stats) {
  const json& own = field(worker, "counters");
  if (own.is_object()) return text(own, "requests");
  const int64_t pid = pid_of(worker);
  if (pid == 0) return "-";
  for (const auto& p : array_field(stats, "programs")) {
    const json& name = field(p, "name");
    if (!name.is_string() || name.get_ref<const std::string&>() != program) continue;
    for (const auto& w : array_field(p, "workers"))
      if (pid_of(w) == pid) return text(field(w, "counters"), "requests");
  }
  return "-";
}

std::string worker_state(const json& worker) {
  std::string state = text(worker, "state");
  // The old process of a rollout or recycling serves until its successor is
  // proven: "retiring" says why a slot shows up twice.
  if (is_retiring(worker) && state == "ready") return "retiring";
  return state;
}

// What a program is in the middle of: a rollout, a rollback, or the guard
// that keeps its previous configuration (reload.guard); "-" otherwise.
std::string rollout_text(const json& program) {
  const std::string phase = text(program, "phase");
  const std::string generation = text(program, "generation");
  const std::string previous = text(program, "previous_generation");
  if (phase == "guarding") {
    const json& left = field(program, "guard_left_s");
    std::string more = left.is_number() ? std::to_string(static_cast<long long>(std::ceil(std::max(
                                              0.0, std::min(left.get<double>(), 1e12))))) + "s more"
                                        : "a while";
    return "guarding generation " + generation + " for " + more;
  }
  const std::string kind = text(program, "rollout");
  if (kind == "rollback") return "rolling back to generation " + generation + " from " + previous;
  if (kind == "restart") return "restarting generation " + generation;
  if (kind == "reload" || phase == "rolling-out")
    return "rolling out generation " + generation + (previous != "-" ? " (replacing " + previous + ")" : "");
  return "-";
}

// "configuration generation 3", and which programs run another one
// (an aborted or rolled-back reload leaves a program on the older one).
std::string generation_text(const json& status) {
  std::string out = "configuration generation " + text(status, "generation");
  std::string others;
  for (const auto& p : array_field(status, "programs")) {
    const json& g = field(p, "generation");
    if (!g.is_number() || g == field(status, "generation")) continue;
    others += (others.empty() ? "" : ", ") + text(p, "name") + " runs generation " + text(g);
  }
  return others.empty() ? out : out + "; " + others;
}

std::string ready_text(const json& program) {
  unsigned ready = 0;
  for (const auto& w : array_field(program, "workers"))
    if (!is_retiring(w) && text(w, "state") == "ready") ++ready;
  return std::to_string(ready) + "/" + text(program, "workers_wanted");
}

// "37/1024": the accept queues of a program's listeners, summed (the kernel's
// figures, read when status asked); "?" when the kernel did not tell for
// one of them, "-" without listeners.
std::string queue_text(const json& program) {
  const json& list = array_field(program, "listeners");
  if (list.empty()) return "-";
  uint64_t length = 0, max = 0;
  for (const auto& l : list) {
    const json& q = field(l, "queue");
    const json& m = field(l, "queue_max");
    if (!q.is_number_integer() || !m.is_number_integer() || q.get<int64_t>() < 0 || m.get<int64_t>() < 0)
      return "?";
    length += q.get<uint64_t>();
    max += m.get<uint64_t>();
  }
  return std::to_string(length) + "/" + std::to_string(max);
}

// "3/8": workers whose last word was BUSY=1 over those that report BUSY=
// at all; "-" when none does (a worker that never says is unknown, not idle).
std::string busy_text(const json& program) {
  const json& busy = field(program, "workers_busy");
  const json& reporting = field(program, "workers_reporting_busy");
  if (!busy.is_number_integer() || !reporting.is_number_integer() || reporting.get<int64_t>() <= 0) return "-";
  return text(busy) + "/" + text(reporting);
}

// Name/value lines of one counters or gauges object, values right-aligned.
void append_values(std::vector<std::pair<std::string, std::string>>& lines, const json& values) {
  if (!values.is_object()) return;
  for (const auto& [name, value] : values.items()) lines.emplace_back("    " + sanitize(name), text(value));
}

std::string inline_values(const json& values) {
  if (!values.is_object() || values.empty()) return "-";
  std::string out;
  for (const auto& [name, value] : values.items()) {
    if (!out.empty()) out += ' ';
    out += sanitize(name) + "=" + text(value);
  }
  return out;
}

std::string exits_text(const json& exits) {
  if (!exits.is_object() || exits.empty()) return "-";
  std::string out;
  auto add = [&](const std::string& reason, const json& n) {
    if (!out.empty()) out += ", ";
    out += sanitize(reason) + " " + text(n);
  };
  for (const char* reason : kExitReasons)
    if (exits.contains(reason)) add(reason, exits[reason]);
  for (const auto& [reason, n] : exits.items())
    if (std::find_if(std::begin(kExitReasons), std::end(kExitReasons),
                     [&](const char* r) { return reason == r; }) == std::end(kExitReasons))
      add(reason, n);
  return out;
}

std::string worker_title(const std::string& program, const json& worker) {
  std::string title = program + "[" + text(worker, "slot") + "]";
  const int64_t pid = pid_of(worker);
  title += pid != 0 ? " pid " + std::to_string(pid) : std::string(" (no process)");
  if (is_retiring(worker)) title += " (retiring)";
  return title;
}

std::string program_stats(const json& program) {
  const std::string name = text(program, "name");
  std::string out = name + "\n";

  // Label/value lines; blocks with no value ("counters" with none) show "-".
  std::vector<std::pair<std::string, std::string>> lines;
  for (const char* kind : {"counters", "gauges"}) {
    const json& values = field(program, kind);
    if (values.is_object() && !values.empty()) {
      lines.emplace_back(std::string("  ") + kind, "");
      append_values(lines, values);
    } else {
      lines.emplace_back(std::string("  ") + kind, "-");
    }
  }
  lines.emplace_back("  notify_errors", text(program, "notify_errors"));
  std::size_t label_width = 0;
  std::size_t value_width = 0;
  for (const auto& [label, value] : lines) {
    label_width = std::max(label_width, display_width(label));
    value_width = std::max(value_width, display_width(value));
  }
  for (const auto& [label, value] : lines) {
    if (value.empty())
      out += label + "\n";
    else
      out += pad_right(label, label_width) + "  " + pad_left(value, value_width) + "\n";
  }
  out += pad_right("  exits", label_width) + "  " + exits_text(field(program, "exits")) + "\n";

  for (const auto& w : array_field(program, "workers")) {
    out += "  " + worker_title(name, w) + "\n";
    out += "    counters  " + inline_values(field(w, "counters")) + "\n";
    out += "    gauges    " + inline_values(field(w, "gauges")) + "\n";
  }
  return out;
}

}  // namespace

std::string format_uptime(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0 || seconds > 1e15) return "-";
  const auto s = static_cast<unsigned long long>(seconds);
  char buf[64];
  if (s < 60)
    std::snprintf(buf, sizeof buf, "%llus", s);
  else if (s < 3600)
    std::snprintf(buf, sizeof buf, "%llum%02llus", s / 60, s % 60);
  else if (s < 86400)
    std::snprintf(buf, sizeof buf, "%lluh%02llum", s / 3600, s % 3600 / 60);
  else
    std::snprintf(buf, sizeof buf, "%llud%02lluh", s / 86400, s % 86400 / 3600);
  return buf;
}

std::string sanitize(std::string_view in) {
  std::string out;
  out.reserve(in.size());
  for (std::size_t i = 0; i < in.size(); ++i) {
    const auto c = static_cast<unsigned char>(in[i]);
    if (c < 0x20 || c == 0x7F) {
      out += '?';
    } else if (c == 0xC2 && i + 1 < in.size() &&
               static_cast<unsigned char>(in[i + 1]) >= 0x80 &&
               static_cast<unsigned char>(in[i + 1]) <= 0x9F) {
      out += '?';  // U+0080..U+009F: C1 controls (0x9B is CSI on some terminals)
      ++i;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

bool status_lacks_counters(const nlohmann::json& status) {
  for (const auto& p : array_field(status, "programs"))
    for (const auto& w : array_field(p, "workers"))
      if (pid_of(w) != 0 && !field(w, "counters").is_object()) return true;
  return false;
}

std::string render_status(const nlohmann::json& status, const nlohmann::json& stats,
                          const RenderOptions& options) {
  std::string out = "preforkd";
  if (field(status, "version").is_string()) out += " " + text(status, "version");
  if (field(status, "pid").is_number()) out += " (pid " + text(status, "pid") + ")";
  if (field(status, "generation").is_number()) out += ", " + generation_text(status);
  out += "\n";

  const json& programs = array_field(status, "programs");
  if (programs.empty()) return out + "no programs\n";

  // QUEUE only when preforkd reports listeners (an older one does not).
  const bool show_queue = std::any_of(programs.begin(), programs.end(),
                                      [](const json& p) { return field(p, "listeners").is_array(); });
  std::vector<Row> summary = {{{"PROGRAM"}, {"STATE"}, {"READY"}}};
  if (show_queue) summary[0].push_back({"QUEUE"});
  const bool show_busy = std::any_of(programs.begin(), programs.end(),
                                     [](const json& p) { return field(p, "workers_busy").is_number(); });
  if (show_busy) summary[0].push_back({"BUSY"});
  summary[0].push_back({"GENERATION"});
  summary[0].push_back({"ROLLOUT"});
  std::vector<Row> workers = {{{"PROGRAM"}, {"SLOT"}, {"PID"}, {"STATE"}, {"GEN"}, {"UPTIME"},
                               {"RESTARTS"}, {"REQUESTS"}, {"STATUS"}}};
  for (const auto& p : programs) {
    const std::string name = text(p, "name");
    const std::string state = text(p, "state");
    summary.push_back({{name}, {state, state_colour(state)}, {ready_text(p)}});
    if (show_queue) summary.back().push_back({queue_text(p)});
    if (show_busy) summary.back().push_back({busy_text(p)});
    summary.back().push_back({text(p, "generation")});
    summary.back().push_back({rollout_text(p)});

    // Slot order, keeping a retiring process next to its slot's new one
    // (preforkd lists slots first, then the retiring processes).
    std::vector<const json*> rows;
    for (const auto& w : array_field(p, "workers")) rows.push_back(&w);
    auto slot_key = [](const json* w) {
      const json& slot = field(*w, "slot");
      return slot.is_number_integer() ? slot.get<int64_t>() : INT64_MAX;  // unknown: last
    };
    std::stable_sort(rows.begin(), rows.end(),
                     [&](const json* a, const json* b) { return slot_key(a) < slot_key(b); });
    for (const json* w : rows) {
      const int64_t pid = pid_of(*w);
      const json& uptime = field(*w, "uptime_s");
      const std::string wstate = worker_state(*w);
      workers.push_back({{name},
                         {text(*w, "slot")},
                         {pid != 0 ? std::to_string(pid) : "-"},
                         {wstate, state_colour(wstate)},
                         {text(*w, "generation")},
                         {pid != 0 && uptime.is_number() ? format_uptime(uptime.get<double>())
                                                         : "-"},
                         {text(*w, "restarts")},
                         {requests_of(*w, name, stats)},
                         {text(*w, "status")}});
      // What runs below the worker (a master's children: who serves), one
      // row each, as `ps f` draws them; a long list is cut.
      const json& below = field(*w, "descendants");
      if (pid == 0 || !below.is_array()) continue;
      size_t shown = 0;
      for (const auto& d : below) {
        if (!d.is_number_integer()) continue;
        if (shown == kDescendantRows) {
          workers.push_back({{""}, {""}, {"\\_ +" + std::to_string(below.size() - shown) + " more"}});
          break;
        }
        workers.push_back({{""}, {""}, {"\\_ " + std::to_string(d.get<int64_t>())}});
        ++shown;
      }
    }
  }
  out += "\n" + table(summary, options.colour);
  if (workers.size() > 1) out += "\n" + table(workers, options.colour);
  // Processes the workers left behind, while preforkd stops (or keeps) them.
  std::vector<Row> orphans = {{{"PROGRAM"}, {"ORPHAN"}, {"COMMAND"}, {"LEFT BY"}, {"STATE"}, {"SINCE"}}};
  auto add_orphans = [&](const json& list, const std::string& program) {
    for (const auto& o : array_field(list, "orphans")) {
      const json& age = field(o, "age_s");
      const std::string state = text(o, "state");
      const json& from = field(o, "program");
      orphans.push_back({{from.is_string() ? text(from) : program},
                         {text(o, "pid")},
                         {text(o, "command")},
                         {text(o, "left_by")},
                         {state, state == "kept" ? nullptr : kYellow},
                         {age.is_number() ? format_uptime(age.get<double>()) : "-"}});
    }
  };
  for (const auto& p : programs) add_orphans(p, text(p, "name"));
  add_orphans(status, "-");
  if (orphans.size() > 1) out += "\n" + table(orphans, options.colour);
  return out;
}

std::string render_stats(const nlohmann::json& stats) {
  const json& programs = array_field(stats, "programs");
  if (programs.empty()) return "no programs\n";
  std::string out;
  for (const auto& p : programs) {
    if (!out.empty()) out += "\n";
    out += program_stats(p);
  }
  return out;
}

std::string render_metrics(const nlohmann::json& reply) {
  const json& t = field(reply, "text");
  if (!t.is_string()) return "";
  std::string out = t.get<std::string>();
  if (!out.empty() && out.back() != '\n') out += '\n';
  return out;
}

std::string render_version(const nlohmann::json& reply, std::string_view client_version) {
  return "preforkd " + text(reply, "version") + " (pid " + text(reply, "pid") + ")\n" +
         "preforkctl " + std::string(client_version) + "\n";
}

std::string render_confirmation(const Request& request, const nlohmann::json& reply) {
  const json& message = field(reply, "message");
  if (message.is_string() && !message.get_ref<const std::string&>().empty())
    return sanitize(message.get<std::string>()) + "\n";
  const std::string program = sanitize(request.program);
  const std::string& c = request.command;
  if (c == "reload") {
    const json& generation = field(reply, "generation");
    return generation.is_number() ? "configuration reloaded (generation " + text(generation) + ")\n"
                                  : "configuration reloaded\n";
  }
  if (c == "scale")
    return program + ": scaled to " + std::to_string(request.workers) +
           (request.workers == 1 ? " worker\n" : " workers\n");
  if (c == "restart") return program + ": restarted\n";
  if (c == "stop") return program + ": stopped\n";
  if (c == "start") return program + ": started\n";
  if (c == "signal") return program + ": sent SIG" + request.signal + "\n";
  if (c == "shutdown") return "preforkd is shutting down\n";
  return "ok\n";
}

std::string render_error(const nlohmann::json& reply) {
  const json& error = field(reply, "error");
  if (error.is_string() && !error.get_ref<const std::string&>().empty())
    return "preforkctl: " + sanitize(error.get<std::string>()) + "\n";
  return "preforkctl: the command failed (preforkd gave no reason)\n";
}

}  // namespace preforkd::ctl
