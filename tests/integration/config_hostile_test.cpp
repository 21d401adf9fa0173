// config_hostile_test.cpp — a configuration file must never stall or bloat
// the running loop. With yaml-cpp 0.7's LoadAll, a one-byte `,` file sent
// by SIGHUP froze preforkd for 22 s while it grew to 2.5 GB, until
// std::bad_alloc ended the reload (or the OOM killer took every worker).
//
// preforkd runs here under an address-space limit (not under ASan, which
// reserves terabytes of it), so a regression fails these checks quickly
// with a refused reload that does not name the `,`, instead of eating the
// machine's memory.
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/resource.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include "support/support.hpp"

#if defined(__SANITIZE_ADDRESS__)
#define PREFORKD_TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define PREFORKD_TEST_ASAN 1
#endif
#endif

using namespace preforkd::test;

namespace {

void limit_memory() {
#ifndef PREFORKD_TEST_ASAN
  rlimit as{2ul << 30, 2ul << 30};
  ::setrlimit(RLIMIT_AS, &as);
#endif
}

// The exact bytes, atomically (Preforkd::rewrite would add a control_socket).
void write_raw(const std::string& path, const std::string& bytes) {
  const std::string tmp = path + ".new";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << bytes;
  }
  std::filesystem::rename(tmp, path);
}

const std::string kComma = "invalid YAML: unexpected `,` (a comma separates items only inside [ ] or { })";

}  // namespace

TEST_CASE("hostile config: a HUP with a one-byte `,` file is refused with its position, the loop keeps answering") {
  TempDir dir;
  const std::string yaml = "programs:\n  w:\n    command: " + bin("preforkd-test-worker") + "\n    workers: 2\n";
  Preforkd d(dir, yaml, {}, true, limit_memory);
  REQUIRE(d.wait_workers(2));
  const auto before = pids_of(d.control({{"cmd", "status"}}), "w");
  REQUIRE(before.size() == 2);
  const long rss_before = rss_kib(d.pid());

  write_raw(d.config_path(), ",");
  size_t mark = d.log().size();
  REQUIRE(::kill(d.pid(), SIGHUP) == 0);
  CHECK(d.wait_for_log("reload failed", 20s, mark) != std::string::npos);
  CHECK_MESSAGE(d.log().find(d.config_path() + ":1:1: " + kComma, mark) != std::string::npos, d.log());

  // The loop answers preforkctl at once, and nothing changed.
  auto [code, out] = run({bin("preforkctl"), "-s", d.control_socket(), "status"}, 20s);
  CHECK_MESSAGE(code == 0, out);
  CHECK(pids_of(d.control({{"cmd", "status"}}), "w") == before);

  // `preforkctl reload` gets the same refusal, and exits 1.
  auto [rc, text] = run({bin("preforkctl"), "-s", d.control_socket(), "reload"}, 20s);
  CHECK(rc == 1);
  CHECK_MESSAGE(text.find(d.config_path() + ":1:1: " + kComma) != std::string::npos, text);

  // The rest of the class: after a scalar, after a valid document, and the
  // first hang libFuzzer found in the old loader.
  std::ifstream found(PREFORKD_SOURCE_DIR "/fuzz/corpus/config/regress-1040-1.yaml", std::ios::binary);
  const std::string fuzzed((std::istreambuf_iterator<char>(found)), std::istreambuf_iterator<char>());
  REQUIRE_FALSE(fuzzed.empty());
  for (const std::string& hostile : {std::string("\"a\","), yaml + "---\n,", fuzzed}) {
    CAPTURE(hostile);
    write_raw(d.config_path(), hostile);
    auto [rc2, text2] = run({bin("preforkctl"), "-s", d.control_socket(), "reload"}, 20s);
    CHECK(rc2 == 1);
    CHECK_MESSAGE(text2.find(d.config_path() + ":") != std::string::npos, text2);
  }
  CHECK(pids_of(d.control({{"cmd", "status"}}), "w") == before);
  CHECK(d.control({{"cmd", "metrics"}})["text"].get<std::string>().find(
            "preforkd_reloads_total{result=\"failed\"} 5") != std::string::npos);
  // Nothing of it stayed in memory (the bug took gigabytes).
  CHECK(rss_kib(d.pid()) < rss_before + 64 * 1024);

  // And the file, made valid again, reloads.
  d.rewrite(yaml);
  auto ok = d.control({{"cmd", "reload"}});
  CHECK_MESSAGE(ok["ok"] == true, ok.dump());
  CHECK(d.stop() == 0);
}
