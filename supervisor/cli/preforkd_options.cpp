#include "cli/preforkd_options.hpp"

#include "cli/help_text.hpp"

#include <boost/program_options.hpp>
#include <sstream>

namespace po = boost::program_options;

namespace preforkd::cli {

namespace {

po::options_description describe() {
  po::options_description d("Options");
  d.add_options()
      ("config,c", po::value<std::string>()->value_name("FILE"),
       "the configuration; default: /etc/preforkd/preforkd.yaml")
      ("check,t", "check FILE and that every command can be run; print \"FILE: ok\" or the "
                  "errors and exit 0 or 2; binds and starts nothing")
      ("foreground,f", "stay attached (also the default: preforkd never daemonizes itself)")
      ("pidfile", po::value<std::string>()->value_name("FILE"),
       "write preforkd's pid to FILE (overrides supervisor.pidfile)")
      ("log-level", po::value<std::string>()->value_name("LEVEL"),
       "trace|debug|info|warn|error (overrides supervisor.log.level)")
      ("help,h", "show this help and exit")
      ("version,V", "show the version and exit");
  return d;
}

// Used by preforkd itself for the in-place upgrade (USR2), see preforkd(8).
po::options_description describe_internal() {
  po::options_description d("Internal (the in-place upgrade)");
  d.add_options()
      ("upgrade-state", po::value<int>()->value_name("FD"),
       "take over the workers, sockets and state handed over in FD by the previous preforkd")
      ("upgrade-check", "with --upgrade-state: exit 0 if this binary can take over that state "
                        "and FILE is valid, else 2; starts nothing");
  return d;
}

}  // namespace

std::string preforkd_usage() {
  std::ostringstream out;
  out << "usage: preforkd [-c FILE] [-t] [-f] [--pidfile FILE] [--log-level LEVEL]\n"
         "                [-h] [-V]\n\n"
         "preforkd binds the listening sockets of every program in FILE, starts N copies\n"
         "of each program's worker with those sockets inherited, and respawns them when\n"
         "they die. Signals: HUP reload, TERM/INT graceful stop, QUIT fast stop,\n"
         "TTIN/TTOU one worker more/less per program, USR1 reopen logs, USR2 upgrade\n"
         "preforkd itself in place (workers keep running).\n\n"
      << help_table(describe()) << "\n"
      << help_table(describe_internal())
      << "\nExit status: 0 clean shutdown, 1 runtime failure (e.g. cannot bind),\n"
         "2 bad command line or invalid configuration.\n"
         "See preforkd(8) and preforkd.yaml(5).\n";
  return out.str();
}

Options parse_preforkd_options(int argc, const char* const* argv) {
  po::variables_map vm;
  try {
    po::options_description all;
    all.add(describe()).add(describe_internal());
    po::store(po::command_line_parser(argc, argv).options(all).run(), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    throw UsageError(e.what());
  }
  Options o;
  if (vm.count("config")) o.config = vm["config"].as<std::string>();
  o.check = vm.count("check") > 0;
  if (vm.count("pidfile")) o.pidfile = vm["pidfile"].as<std::string>();
  if (vm.count("log-level")) {
    std::string level = vm["log-level"].as<std::string>();
    if (level != "trace" && level != "debug" && level != "info" && level != "warn" &&
        level != "error")
      throw UsageError("--log-level: expected trace|debug|info|warn|error, got `" + level + "`");
    o.log_level = level;
  }
  if (vm.count("upgrade-state")) o.upgrade_state = vm["upgrade-state"].as<int>();
  o.upgrade_check = vm.count("upgrade-check") > 0;
  if (o.upgrade_check && !o.upgrade_state) throw UsageError("--upgrade-check needs --upgrade-state FD");
  o.help = vm.count("help") > 0;
  o.version = vm.count("version") > 0;
  return o;
}

}  // namespace preforkd::cli
