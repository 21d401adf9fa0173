// config_hostile_test.cpp — texts that hung or bloated the loader (yaml-cpp
// 0.7's LoadAll loops on a `,` where a document should start, #1040) and the
// size bounds that keep any text cheap (config/yaml_stream.hpp).
//
// Each text is loaded in a child process under a deadline, and (without
// ASan, which reserves terabytes of address space) an address-space limit:
// a regression fails these tests with "did not finish" instead of hanging
// them or eating the machine's memory, as the bug did (1.2 GB in 5 s).
#include <doctest/doctest.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "config/config.hpp"
#include "config/yaml_stream.hpp"
#include "daemon/upgrade_state.hpp"

#if defined(__SANITIZE_ADDRESS__)
#define PREFORKD_TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define PREFORKD_TEST_ASAN 1
#endif
#endif

using namespace preforkd::config;
using namespace std::chrono_literals;

namespace {

const std::string kFile = "/etc/preforkd/hostile.yaml";

// Runs `work` in a child; what it returns comes back through a pipe. nullopt
// when the child did not finish within `deadline` (it is killed) or died.
std::optional<std::string> guarded(const std::function<std::string()>& work,
                                   std::chrono::milliseconds deadline = 20s) {
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::close(fds[0]);
#ifndef PREFORKD_TEST_ASAN
    rlimit as{1ul << 30, 1ul << 30};  // 1 GiB: the fixed loader needs a few MiB
    ::setrlimit(RLIMIT_AS, &as);
#endif
    std::string out;
    try {
      out = work();
    } catch (...) {
      ::_exit(3);
    }
    for (size_t at = 0; at < out.size();) {
      ssize_t n = ::write(fds[1], out.data() + at, out.size() - at);
      if (n <= 0) ::_exit(4);
      at += static_cast<size_t>(n);
    }
    ::_exit(0);
  }
  ::close(fds[1]);
  std::string out;
  bool eof = false;
  const auto end = std::chrono::steady_clock::now() + deadline;
  while (!eof) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - std::chrono::steady_clock::now());
    if (left <= 0ms) break;
    pollfd p{fds[0], POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
    char buf[4096];
    ssize_t n = ::read(fds[0], buf, sizeof buf);
    if (n > 0) out.append(buf, static_cast<size_t>(n));
    else eof = true;
  }
  ::close(fds[0]);
  if (!eof) ::kill(pid, SIGKILL);
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (!eof) {
    MESSAGE("the child did not finish within ", deadline.count(), " ms: killed");
    return std::nullopt;
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    MESSAGE("the child failed: wait status ", status);
    return std::nullopt;
  }
  return out;
}

const std::string kUnfinished = "<did not finish: a hang or a memory blow-up>";

// The diagnostics of load_string(text), one per line, "ok" if it loads;
// kUnfinished if the load did not finish (the regression these tests are for).
std::string load_guarded(const std::string& text) {
  auto result = guarded([&] {
    LoadOptions options;
    options.check_executables = false;
    const LoadResult r = load_string(text, kFile, options);
    if (r.config) return std::string("ok");
    std::string out;
    for (const auto& d : r.errors) out += d.to_string() + "\n";
    return out;
  });
  return result.value_or(kUnfinished);
}

const std::string kComma = "invalid YAML: unexpected `,` (a comma separates items only inside [ ] or { })";

}  // namespace

TEST_CASE("yaml-cpp #1040: a `,` where a document starts is an error at its position, never a loop") {
  // Each of these made YAML::LoadAll return the same empty document forever.
  // The first five are what a libFuzzer run on the old loader found first;
  // the others reach the same stuck token after a scalar, a collection, a
  // tag, an anchor, a document marker, a directive or a byte-order mark.
  const std::vector<std::pair<std::string, std::string>> cases = {
      {",", "1:1"},
      {"\"a\",", "1:4"},
      {"[a],", "1:4"},
      {"{a: 1},", "1:7"},
      {"!t ,", "1:4"},
      {"'a' ,", "1:5"},
      {"&x ,", "1:4"},
      {"&x [a] ,", "1:8"},
      {"- a\n,", "2:1"},
      {"---\n,", "2:1"},
      {"...\n,", "2:1"},
      {"%YAML 1.2\n---\n,", "3:1"},
      {"\xEF\xBB\xBF,", "1:1"},
      {"programs: {}\n---\n,", "3:1"},
      {"programs: {e: {command: /bin/true}}\n---\n\n---\n  ,", "5:3"},
      {"[programs],", "1:11"},
      {"{programs: {}},", "1:15"},
  };
  for (const auto& [text, where] : cases) {
    CAPTURE(text);
    CHECK(load_guarded(text) == kFile + ":" + where + ": " + kComma + "\n");
  }
}

TEST_CASE("yaml-cpp #1040: every hang libFuzzer found (fuzz/corpus/config/regress-*) is an error with a position") {
  const std::string dir = PREFORKD_TEST_DATA "/../../fuzz/corpus/config";
  int inputs = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    if (e.path().filename().string().rfind("regress-", 0) != 0) continue;
    ++inputs;
    std::ifstream in(e.path(), std::ios::binary);
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    CAPTURE(e.path().string());
    const std::string got = load_guarded(text);
    CHECK(got != kUnfinished);
    CHECK(got != "ok");
    // Every diagnostic is file:line:column: message.
    CHECK(got.rfind(kFile + ":", 0) == 0);
    CHECK(std::isdigit(static_cast<unsigned char>(got[kFile.size() + 1])));
  }
  CHECK(inputs >= 8);
}

TEST_CASE("yaml-cpp #1040: the upgrade state's configuration texts are refused the same way") {
  const auto got = guarded([] {
    nlohmann::json state = {{"format", preforkd::daemon::kStateFormat},
                            {"version", preforkd::daemon::kStateVersion},
                            {"config_path", kFile},
                            {"generation", 1},
                            {"texts", {{"1", ","}}},
                            {"programs", nlohmann::json::array()}};
    LoadOptions options;
    options.check_executables = false;
    std::string error;
    auto configs = preforkd::daemon::validate_state(state, options, error);
    return configs ? std::string("accepted") : error;
  });
  REQUIRE_MESSAGE(got.has_value(), "validate_state did not finish (hang or memory blow-up)");
  CHECK(*got == "the configuration of generation 1 does not load:\n" + kFile + ":1:1: " + kComma);
}

TEST_CASE("a stream of empty documents is still an empty configuration, and a second one an error") {
  CHECK(load_guarded("") == "ok");
  CHECK(load_guarded("# nothing\n") == "ok");
  CHECK(load_guarded("---\n---\n...\n---\n") == "ok");
  CHECK(load_guarded("programs: {}\n---\n---\n") == "ok");
  CHECK(load_guarded("programs: {}\n---\nprograms: {}\n") ==
        kFile + ":3:1: only one YAML document is allowed\n");
  // The first document is still checked when a second one is refused.
  CHECK(load_guarded("programz: {}\n---\n[x]\n") ==
        kFile + ":1:1: unknown key `programz` (did you mean `programs`?)\n" + kFile +
            ":3:1: only one YAML document is allowed\n");
}

TEST_CASE("a text over 256 KiB is refused before yaml-cpp reads it") {
  std::string big = "programs: {}\n#";
  big.resize(detail::kMaxYamlBytes + 1, 'x');
  CHECK(load_guarded(big) ==
        kFile + ": too large for a configuration: 262145 bytes (at most 256 KiB)\n");
  big.resize(detail::kMaxYamlBytes);  // a comment up to the limit is fine
  CHECK(load_guarded(big) == "ok");
}

TEST_CASE("more than 50000 YAML nodes are refused at the first one too many, before a tree is built") {
  // yaml-cpp's tree of 1 MiB of `[,,,...]` took 0.5 GB and seconds to build.
  // Node 1 is the list, node k + 1 the null before the k-th comma, at column k + 1.
  const std::string nulls = "[" + std::string(detail::kMaxYamlBytes - 2, ',') + "]";
  CHECK(load_guarded(nulls) == kFile + ":1:" + std::to_string(detail::kMaxYamlNodes + 1) +
                                   ": too many YAML nodes for a configuration (more than 50000)\n");
  std::string lines;
  while (lines.size() + 4 <= detail::kMaxYamlBytes) lines += "- a\n";
  CHECK(load_guarded(lines) ==
        kFile + ":50000:3: too many YAML nodes for a configuration (more than 50000)\n");
  // Every document counts: a stream of empty documents is a stream of nulls
  // (each one's null is where the next `---` is).
  std::string docs;
  while (docs.size() + 4 <= detail::kMaxYamlBytes) docs += "---\n";
  CHECK(load_guarded(docs) ==
        kFile + ":50002:1: too many YAML nodes for a configuration (more than 50000)\n");
}

TEST_CASE("a configuration of thousands of programs is far below the node limit") {
  std::string text = "programs:\n";
  for (int i = 0; i < 1000; ++i) {
    text += "  p" + std::to_string(i) +
            ":\n    command: [/bin/true, -x]\n    workers: 2\n    listen: [\"127.0.0.1:0\"]\n"
            "    environment: {A: b, C: d}\n    backoff: {min: 1s, max: 2s}\n";
  }
  CHECK(load_guarded(text) == "ok");
}
