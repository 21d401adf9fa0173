// control.cpp — requests from the control socket: the read-only ones are
// answered from a snapshot at once; the others become Policy calls, whose
// Reply actions answer when the operation has finished.
#include "config/signals.hpp"
#include "core/metrics_text.hpp"
#include "daemon/control_protocol.hpp"
#include "daemon/daemon.hpp"
#include "sys/io.hpp"
#include "sys/systemd.hpp"
#include "version.hpp"

namespace preforkd::daemon {

// ---- the control socket ----

void Daemon::on_control_request(ControlServer::ClientId client, const std::string& line) {
  auto parsed = parse_control_request(line);
  if (const auto* err = std::get_if<std::string>(&parsed)) return control_->reply(client, reply_error(*err));
  const ControlRequest& r = std::get<ControlRequest>(parsed);
  if (!r.program.empty() && policy_.find(r.program) == nullptr)
    return control_->reply(client, reply_error("unknown program `" + r.program + "`"));
  const std::string& cmd = r.cmd;
  log_->debug("control: {}{}{}", cmd, r.program.empty() ? "" : " ", r.program);
  auto t = now();
  if (cmd == "status" || cmd == "stats" || cmd == "version" || cmd == "metrics") {
    // status: the orphans as they are now (its actions are applied in
    // settle), and what runs below each worker (its children files only:
    // with 1000 workers this walk is most of a status request's cost).
    std::map<pid_t, std::vector<pid_t>> below;
    if (cmd == "status") scan_orphans(&below);
    core::Snapshot s = outside_view(t);
    for (auto& p : s.programs)
      for (auto& w : p.workers)
        if (auto it = below.find(w.pid); w.pid > 0 && it != below.end()) w.descendants = it->second;
    if (cmd == "status") return control_->reply(client, reply_status(s));
    if (cmd == "stats") return control_->reply(client, reply_stats(s));
    if (cmd == "version") return control_->reply(client, reply_version(s));
    return control_->reply(client, reply_text(core::render_prometheus(s)));
  }
  if (policy_.shutting_down()) return control_->reply(client, reply_error("preforkd is shutting down"));
  if (cmd == "reload") {
    log_->info("preforkd: reload of {} requested over the control socket", config_.path);
    return policy_.request_reload(client, t, actions_);
  }
  if (cmd == "shutdown") {
    control_->reply(client, reply_ok("shutting down"));
    log_->info("preforkd: shutdown requested over the control socket");
    return policy_.shutdown(false, t, actions_);
  }
  core::ControlCommand c;
  c.program = r.program;
  if (cmd == "signal") {
    auto sig = config::parse_signal(r.signal);
    if (!sig) return control_->reply(client, reply_error("unknown signal `" + r.signal + "`"));
    c.kind = core::ControlCommand::Kind::Signal;
    c.signal = *sig;
  } else if (cmd == "start") {
    c.kind = core::ControlCommand::Kind::Start;
  } else if (cmd == "stop") {
    c.kind = core::ControlCommand::Kind::Stop;
  } else if (cmd == "scale") {
    c.kind = core::ControlCommand::Kind::Scale;
    c.workers = static_cast<size_t>(r.workers);
  } else if (cmd == "restart") {
    c.kind = core::ControlCommand::Kind::Restart;
  } else if (cmd == "rollback") {
    c.kind = core::ControlCommand::Kind::Rollback;
  } else {
    return control_->reply(client, reply_error("unknown command `" + cmd + "`"));
  }
  policy_.control(c, client, t, actions_);
}

}  // namespace preforkd::daemon
