// Master-style servers (issue #15 item 2): one walk below preforkd split
// into each worker's descendants and the rest (core/orphans), and how
// preforkctl draws the descendants under their worker (ctl/render).
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include "core/orphans.hpp"
#include "ctl/render.hpp"

using preforkd::core::ProcessSeen;
using preforkd::core::split_by_worker;

TEST_CASE("split_by_worker: descendants by parent chain, across groups; orphans and the skipped pid apart") {
  const pid_t self = 10;
  // Workers 100 and 200; 100 → 101 → 102 (102 has a session of its own);
  // 200 has none; 300 is an orphan with a child 301; 400 is the upgrade check
  // with a child 401; 999's parent is gone from the walk.
  std::vector<ProcessSeen> procs = {
      {100, self, 100, 1, "master"}, {200, self, 200, 1, "w"},     {300, self, 300, 1, "orphan"},
      {400, self, 400, 1, "check"},  {101, 100, 100, 1, "child"},  {301, 300, 300, 1, "o2"},
      {401, 400, 400, 1, "c2"},      {102, 101, 102, 1, "setsid"}, {999, 998, 999, 1, "stray"},
  };
  auto split = split_by_worker(procs, self, [](pid_t p) { return p == 100 || p == 200; }, 400);
  REQUIRE(split.below.count(100) == 1);
  CHECK(split.below[100] == std::vector<pid_t>{101, 102});
  CHECK(split.below.count(200) == 0);
  std::vector<pid_t> outside;
  for (const auto& p : split.outside) outside.push_back(p.pid);
  CHECK(outside == std::vector<pid_t>{300, 301, 999});
}

TEST_CASE("split_by_worker: without workers, everything is outside (the orphan scan's facts unchanged)") {
  std::vector<ProcessSeen> procs = {{300, 1, 300, 1, "o"}, {301, 300, 300, 1, "o2"}};
  auto split = split_by_worker(procs, 1, [](pid_t) { return false; }, 0);
  CHECK(split.below.empty());
  CHECK(split.outside.size() == 2);
}

TEST_CASE("preforkctl status: a worker's descendants are drawn under it, a long list cut") {
  nlohmann::json below = nlohmann::json::array();
  for (int i = 0; i < 20; ++i) below.push_back(2000 + i);
  auto status = nlohmann::json::parse(R"({"ok":true,"version":"1","pid":1,"programs":[{"name":"web",
      "state":"running","workers_wanted":2,"workers":[
      {"slot":0,"pid":201,"state":"ready","generation":1,"uptime_s":1,"restarts":0,"status":"",
       "descendants":[1201,1202]},
      {"slot":1,"pid":202,"state":"ready","generation":1,"uptime_s":1,"restarts":0,"status":"",
       "descendants":[]}]}]})");
  status["programs"][0]["workers"][1]["descendants"] = below;
  std::string out = preforkd::ctl::render_status(status, nlohmann::json::object());
  auto at = out.find(" 201 ");
  REQUIRE(at != std::string::npos);
  auto first = out.find("\\_ 1201", at);
  auto second = out.find("\\_ 1202", at);
  auto next = out.find(" 202 ", at);
  CHECK(first != std::string::npos);
  CHECK(first < second);
  CHECK(second < next);  // under its own worker, before the next one
  CHECK(out.find("\\_ 2015") != std::string::npos);
  CHECK(out.find("\\_ 2016") == std::string::npos);
  CHECK(out.find("\\_ +4 more") != std::string::npos);
}
