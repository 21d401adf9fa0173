// Master-style servers (issue #15 item 2): how preforkctl draws a worker's
// descendants under it (ctl/render). Finding them is tested end to end
// (tests/integration/master_tree_test.cpp).
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include "core/orphans.hpp"
#include "ctl/render.hpp"

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
