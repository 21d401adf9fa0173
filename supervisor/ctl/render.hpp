// render.hpp — preforkd's control replies as text for a terminal.
//
// Owns: the human output of preforkctl: pure functions, a parsed reply in,
// the exact text to print out (with its final newline).
// Must never: do I/O, throw on a reply of an unexpected shape, or pass a
// worker's bytes to the terminal unfiltered.
// Traps: replies gain fields over time and any field may be missing (SPEC:
// "fields may be added, never renamed"): a missing or mistyped field is shown
// as "-", never an exception. A worker's STATUS= text is untrusted: control
// characters (C0, DEL and UTF-8-encoded C1, which some terminals obey as
// escape sequences) are shown as '?'. Alignment counts UTF-8 code points.
#pragma once

#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "ctl/command_line.hpp"

namespace preforkd::ctl {

struct RenderOptions {
  bool colour = false;  // ANSI colours for states: only on a terminal without NO_COLOR
};

// "12s", "3m04s", "2h05m", "1d03h"; "-" for a negative or non-finite value.
std::string format_uptime(double seconds);

// `text` with every control character replaced by '?'.
std::string sanitize(std::string_view text);

// True when some worker with a process in a status reply carries no
// "counters": the REQUESTS column then needs a stats reply as well.
bool status_lacks_counters(const nlohmann::json& status);

// The status reply: a header line, one row per program (state, ready/wanted)
// and one row per worker (PROGRAM SLOT PID STATE UPTIME RESTARTS REQUESTS
// STATUS). REQUESTS comes from the worker's own counters, else from `stats`
// (a stats reply, or null), matched by program and pid, else "-". Then, when
// there are any, the orphans being stopped or kept (PROGRAM ORPHAN COMMAND
// LEFT BY STATE SINCE), those of unknown origin under program "-".
std::string render_status(const nlohmann::json& status, const nlohmann::json& stats,
                          const RenderOptions& options = {});

// The stats reply: per program its counters and gauges (sorted by name),
// notify_errors and exits, then one block per worker.
std::string render_stats(const nlohmann::json& stats);

// The metrics reply's "text", unchanged, ending in a newline.
std::string render_metrics(const nlohmann::json& reply);

// "preforkd 1.2.3 (pid 100)\npreforkctl 1.2.3\n".
std::string render_version(const nlohmann::json& reply, std::string_view client_version);

// One line confirming reload, scale, restart, stop, start, signal or
// shutdown: the reply's "message" when it has one.
std::string render_confirmation(const Request& request, const nlohmann::json& reply);

// "preforkctl: <error>\n" for a reply with "ok": false.
std::string render_error(const nlohmann::json& reply);

}  // namespace preforkd::ctl
