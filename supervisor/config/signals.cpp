// signals.cpp — see signals.hpp. Numbers come from <signal.h>, not from a
// table of integers, so the names stay right on every architecture.
#include "config/signals.hpp"

#include <signal.h>

#include <array>
#include <string>

#include "config/units.hpp"

namespace preforkd::config {
namespace {

struct SignalName {
  int number;
  const char* name;
};

// Canonical names first; signal_name() returns the first match.
constexpr std::array kSignals{
    SignalName{SIGHUP, "HUP"},
    SignalName{SIGINT, "INT"},
    SignalName{SIGQUIT, "QUIT"},
    SignalName{SIGILL, "ILL"},
    SignalName{SIGTRAP, "TRAP"},
    SignalName{SIGABRT, "ABRT"},
    SignalName{SIGBUS, "BUS"},
    SignalName{SIGFPE, "FPE"},
    SignalName{SIGKILL, "KILL"},
    SignalName{SIGUSR1, "USR1"},
    SignalName{SIGSEGV, "SEGV"},
    SignalName{SIGUSR2, "USR2"},
    SignalName{SIGPIPE, "PIPE"},
    SignalName{SIGALRM, "ALRM"},
    SignalName{SIGTERM, "TERM"},
#ifdef SIGSTKFLT
    SignalName{SIGSTKFLT, "STKFLT"},
#endif
    SignalName{SIGCHLD, "CHLD"},
    SignalName{SIGCONT, "CONT"},
    SignalName{SIGSTOP, "STOP"},
    SignalName{SIGTSTP, "TSTP"},
    SignalName{SIGTTIN, "TTIN"},
    SignalName{SIGTTOU, "TTOU"},
    SignalName{SIGURG, "URG"},
    SignalName{SIGXCPU, "XCPU"},
    SignalName{SIGXFSZ, "XFSZ"},
    SignalName{SIGVTALRM, "VTALRM"},
    SignalName{SIGPROF, "PROF"},
    SignalName{SIGWINCH, "WINCH"},
    SignalName{SIGIO, "IO"},
#ifdef SIGPWR
    SignalName{SIGPWR, "PWR"},
#endif
    SignalName{SIGSYS, "SYS"},
    // Aliases, accepted when parsing only.
    SignalName{SIGABRT, "IOT"},
    SignalName{SIGIO, "POLL"},
    SignalName{SIGCHLD, "CLD"},
};

constexpr int kMaxStandardSignal = 31;

std::string upper(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
  }
  return out;
}

}  // namespace

std::optional<int> parse_signal(std::string_view text) {
  if (auto n = parse_uint(text)) {
    if (*n >= 1 && *n <= kMaxStandardSignal) return static_cast<int>(*n);
    return std::nullopt;
  }
  std::string name = upper(text);
  if (name.size() > 3 && name.compare(0, 3, "SIG") == 0) name.erase(0, 3);
  for (const auto& s : kSignals) {
    if (name == s.name) return s.number;
  }
  return std::nullopt;
}

const char* signal_name(int sig) {
  for (const auto& s : kSignals) {
    if (s.number == sig) return s.name;
  }
  return "UNKNOWN";
}

}  // namespace preforkd::config
