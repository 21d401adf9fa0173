#include "ctl/command_line.hpp"

#include <boost/program_options.hpp>
#include <limits>
#include <sstream>
#include <vector>

#include "cli/help_text.hpp"
#include "config/signals.hpp"

namespace po = boost::program_options;

namespace preforkd::ctl {

namespace {

po::options_description visible_options() {
  po::options_description d("Options");
  d.add_options()
      ("socket,s", po::value<std::string>()->value_name("SOCKET"),
       "control socket of preforkd (wins over -c)")
      ("config,c", po::value<std::string>()->value_name("CONFIG"),
       "read supervisor.control_socket from CONFIG; default: /etc/preforkd/preforkd.yaml")
      ("json", "print preforkd's reply as it came: one JSON object, one line")
      ("help,h", "show this help and exit")
      ("version,V", "show preforkctl's version and exit");
  return d;
}

struct CommandSpec {
  const char* name;
  int arguments;  // after the command name
  const char* synopsis;
};

constexpr CommandSpec kCommands[] = {
    {"status", 0, "status"},          {"stats", 0, "stats"},
    {"metrics", 0, "metrics"},        {"reload", 0, "reload"},
    {"shutdown", 0, "shutdown"},      {"version", 0, "version"},
    {"scale", 2, "scale PROGRAM N"},  {"restart", 1, "restart PROGRAM"},
    {"stop", 1, "stop PROGRAM"},      {"start", 1, "start PROGRAM"},
    {"signal", 2, "signal PROGRAM SIG"}, {"rollback", 1, "rollback PROGRAM"},
};

const CommandSpec* find_command(const std::string& name) {
  for (const auto& c : kCommands)
    if (name == c.name) return &c;
  return nullptr;
}

uint32_t parse_workers(const std::string& text) {
  if (text.empty() || text.size() > 10 ||
      text.find_first_not_of("0123456789") != std::string::npos)
    throw UsageError("scale: N must be a whole number >= 0, got `" + text + "`");
  unsigned long long n = std::stoull(text);
  if (n > std::numeric_limits<uint32_t>::max())
    throw UsageError("scale: N is too large: " + text);
  return static_cast<uint32_t>(n);
}

Request make_request(const std::string& command, const std::vector<std::string>& args) {
  const CommandSpec* spec = find_command(command);
  if (spec == nullptr) throw UsageError("unknown command `" + command + "`");
  if (static_cast<int>(args.size()) != spec->arguments)
    throw UsageError(std::string("usage: preforkctl [options] ") + spec->synopsis);
  Request r;
  r.command = command;
  if (spec->arguments == 0) return r;
  r.program = args[0];
  if (r.program.empty()) throw UsageError(command + ": PROGRAM must not be empty");
  if (command == "scale") r.workers = parse_workers(args[1]);
  if (command == "signal") {
    std::optional<int> sig = config::parse_signal(args[1]);
    if (!sig)
      throw UsageError("signal: unknown signal `" + args[1] + "`" +
                       (args[1].rfind('-', 0) == 0 ? " (write it without the dash)" : ""));
    r.signal = config::signal_name(*sig);
  }
  return r;
}

// "-1" or "-9" is an argument (a bad N, a signal number written like kill's),
// not an unknown option: it reaches make_request, which says what is wrong.
std::vector<po::option> negative_numbers_are_arguments(std::vector<std::string>& args) {
  if (args.empty() || args[0].size() < 2 || args[0][0] != '-' ||
      args[0].find_first_not_of("0123456789", 1) != std::string::npos)
    return {};
  po::option positional;  // no string_key, position_key -1: the next positional
  positional.value.push_back(args[0]);
  positional.original_tokens.push_back(args[0]);
  args.erase(args.begin());
  return {positional};
}

}  // namespace

std::string preforkctl_usage() {
  std::ostringstream out;
  out << "usage: preforkctl [-s SOCKET] [-c CONFIG] [--json] COMMAND [ARGS]\n\n"
         "Commands:\n"
         "  status              programs and workers: state, uptime, restarts, requests\n"
         "  stats               counters and gauges per program and per worker\n"
         "  metrics             the Prometheus text, as GET /metrics serves it\n"
         "  reload              reload the configuration file (waits until done)\n"
         "  shutdown            stop every worker and preforkd gracefully\n"
         "  version             versions of preforkd and preforkctl\n"
         "  scale PROGRAM N     run N workers of PROGRAM (waits until done)\n"
         "  restart PROGRAM     rolling restart of PROGRAM's workers (waits until done)\n"
         "  stop PROGRAM        stop PROGRAM's workers (waits until done)\n"
         "  start PROGRAM       start a stopped PROGRAM again\n"
         "  signal PROGRAM SIG  send SIG (HUP, SIGUSR1, 10...) to PROGRAM's workers\n"
         "  rollback PROGRAM    back to PROGRAM's previous configuration while its\n"
         "                      reload.guard holds it (waits until done)\n\n"
      << cli::help_table(visible_options())
      << "\nExit status: 0 ok, 1 the command failed (also: permission denied),\n"
         "2 bad command line, 3 preforkd cannot be reached.\n"
         "See preforkctl(1).\n";
  return out.str();
}

Options parse_preforkctl_options(int argc, const char* const* argv) {
  po::options_description hidden;
  hidden.add_options()
      ("command", po::value<std::string>())
      ("args", po::value<std::vector<std::string>>());
  po::options_description all;
  all.add(visible_options()).add(hidden);
  po::positional_options_description positional;
  positional.add("command", 1).add("args", -1);

  po::variables_map vm;
  try {
    po::store(po::command_line_parser(argc, argv)
                  .options(all)
                  .positional(positional)
                  .extra_style_parser(negative_numbers_are_arguments)
                  .run(),
              vm);
    po::notify(vm);
  } catch (const po::error& e) {
    throw UsageError(e.what());
  }
  Options o;
  if (vm.count("socket")) o.socket = vm["socket"].as<std::string>();
  if (vm.count("config")) o.config = vm["config"].as<std::string>();
  if (o.socket && o.socket->empty()) throw UsageError("-s: SOCKET must not be empty");
  if (o.config && o.config->empty()) throw UsageError("-c: CONFIG must not be empty");
  o.json = vm.count("json") > 0;
  o.help = vm.count("help") > 0;
  o.version = vm.count("version") > 0;
  if (o.help || o.version) return o;
  if (!vm.count("command")) throw UsageError("no command given");
  std::vector<std::string> args;
  if (vm.count("args")) args = vm["args"].as<std::vector<std::string>>();
  o.request = make_request(vm["command"].as<std::string>(), args);
  return o;
}

nlohmann::json to_json(const Request& request) {
  nlohmann::json j = {{"cmd", request.command}};
  if (!request.program.empty()) j["program"] = request.program;
  if (request.command == "scale") j["workers"] = request.workers;
  if (request.command == "signal") j["signal"] = request.signal;
  return j;
}

bool waits_for_completion(const Request& request) {
  const std::string& c = request.command;
  return c == "restart" || c == "scale" || c == "reload" || c == "stop" || c == "start" || c == "rollback";
}

}  // namespace preforkd::ctl
