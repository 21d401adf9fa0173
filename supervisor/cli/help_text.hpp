// help_text.hpp — Boost.Program_options' option table as --help prints it,
// shared by preforkd and preforkctl (header-only: both link it).
#pragma once

#include <boost/program_options/options_description.hpp>
#include <sstream>
#include <string>

namespace preforkd::cli {

// Boost wraps descriptions at 80 columns but pads a wrapped line with a
// trailing space; this drops it. tests/help_width.sh checks the result.
inline std::string help_table(const boost::program_options::options_description& d) {
  std::ostringstream rendered;
  rendered << d;
  std::istringstream in(rendered.str());
  std::string out, line;
  while (std::getline(in, line)) {
    line.erase(line.find_last_not_of(' ') + 1);
    out += line + "\n";
  }
  return out;
}

}  // namespace preforkd::cli
