// signals_test.cpp — signal names for stop_signal, preforkctl and logs.
#include "config/signals.hpp"

#include <doctest/doctest.h>
#include <signal.h>

#include <string>

using namespace preforkd::config;

TEST_CASE("parse_signal accepts NAME, SIGNAME in any case, and numbers 1..31") {
  CHECK(parse_signal("TERM") == SIGTERM);
  CHECK(parse_signal("SIGTERM") == SIGTERM);
  CHECK(parse_signal("term") == SIGTERM);
  CHECK(parse_signal("sigterm") == SIGTERM);
  CHECK(parse_signal("SigInt") == SIGINT);
  CHECK(parse_signal("KILL") == SIGKILL);
  CHECK(parse_signal("USR2") == SIGUSR2);
  CHECK(parse_signal("WINCH") == SIGWINCH);
  CHECK(parse_signal("15") == 15);
  CHECK(parse_signal("1") == 1);
  CHECK(parse_signal("31") == 31);
  CHECK(parse_signal("IOT") == SIGABRT);  // aliases
  CHECK(parse_signal("POLL") == SIGIO);
  CHECK(parse_signal("CLD") == SIGCHLD);
}

TEST_CASE("parse_signal refuses 0, real-time numbers, unknown names and decorations") {
  const char* bad[] = {"0",          "32",       "64",    "-15",   "+15", "",      "SIG",  "TREM",
                       "SIGSIGTERM", "SIG TERM", " TERM", "TERM ", "15s", "RTMIN", "sig15"};
  for (const char* text : bad) {
    CAPTURE(text);
    CHECK_FALSE(parse_signal(text).has_value());
  }
}

TEST_CASE("signal_name gives the bare name and never returns nullptr") {
  CHECK(std::string(signal_name(SIGTERM)) == "TERM");
  CHECK(std::string(signal_name(SIGKILL)) == "KILL");
  CHECK(std::string(signal_name(SIGABRT)) == "ABRT");  // not the IOT alias
  CHECK(std::string(signal_name(SIGCHLD)) == "CHLD");
  CHECK(std::string(signal_name(SIGIO)) == "IO");
  CHECK(std::string(signal_name(0)) == "UNKNOWN");
  CHECK(std::string(signal_name(SIGRTMIN)) == "UNKNOWN");
  CHECK(std::string(signal_name(-1)) == "UNKNOWN");
}

TEST_CASE("every standard signal 1..31 has a name that parses back to its number") {
  for (int sig = 1; sig <= 31; ++sig) {
    CAPTURE(sig);
    const std::string name = signal_name(sig);
    CHECK(name != "UNKNOWN");
    CHECK(parse_signal(name) == sig);
    CHECK(parse_signal("SIG" + name) == sig);
  }
}
