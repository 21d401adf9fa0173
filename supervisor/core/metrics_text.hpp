// metrics_text.hpp — a Snapshot as Prometheus text exposition format 0.0.4.
//
// Owns: the family names, HELP texts, label escaping and the order of the
// `/metrics` body (SPEC "Metrics"). Pure: Snapshot in, text out; the daemon's
// metrics_http only serves the string.
#pragma once

#include <string>
#include <string_view>

#include "core/snapshot.hpp"

namespace preforkd::core {

// The Content-Type that goes with render_prometheus()'s output.
inline constexpr const char* kPrometheusContentType = "text/plain; version=0.0.4; charset=utf-8";

// The whole exposition, ending with '\n'. Families, in this order:
//   preforkd_up, preforkd_build_info, preforkd_workers,
//   preforkd_worker_starts_total, preforkd_worker_exits_total,
//   preforkd_reloads_total, preforkd_notify_errors_total   (always, even with no program)
//   preforkd_program_<N>_total  per worker-reported counter name, names sorted
//   preforkd_program_<G>        per worker-reported gauge name, names sorted
// Samples inside a family follow the snapshot's program order; every label set
// of the fixed families is present with 0 from the start. See the .cpp for the
// rules on invalid and colliding worker-reported names.
std::string render_prometheus(const Snapshot& s);

// Label value escaping of the text format: '\' -> "\\", '"' -> "\"", LF -> "\n".
std::string escape_label_value(std::string_view v);

}  // namespace preforkd::core
