// The USR2 hand-over format names every enum and carries a version: a state
// this binary cannot read exactly is refused by --upgrade-check, with the
// reason, before the running binary execs anything.
#include <doctest/doctest.h>

#include "daemon/upgrade_state.hpp"

using nlohmann::json;
using preforkd::daemon::kStateVersion;
using preforkd::daemon::validate_state;

namespace {

const char* kConfig =
    "programs:\n"
    "  echo:\n"
    "    command: /bin/true\n";

json worker(const char* state, const char* want, const char* reason) {
  return json{{"slot", 0},        {"state", state},     {"want", want},       {"pid", 0},
              {"spawn_seq", 1},   {"generation", 1},    {"started_at", 0},    {"ready_at", 0},
              {"last_seen", 0},   {"deadline", 0},      {"streak", 0},        {"restarts", 0},
              {"stop_reason", reason}, {"status", ""}};
}

json state_with(json slot) {
  return json{{"format", "preforkd-state"},
              {"version", kStateVersion},
              {"config_path", "/etc/preforkd/preforkd.yaml"},
              {"generation", 1},
              {"texts", {{"1", kConfig}}},
              {"programs",
               json::array({{{"name", "echo"},
                             {"config_generation", 1},
                             {"listeners", json::array()},
                             {"exits", {0, 0, 0, 0, 0}},
                             {"slots", json::array({slot})},
                             {"retirees", json::array()}}})}};
}

json slot(json w, const char* phase = "active", const char* pipe_kind = "notify") {
  return json{{"worker", std::move(w)},
              {"phase", phase},
              {"replacing_for", "restart"},
              {"report", {{"counters", json::object()}, {"gauges", json::object()}}},
              {"pipes", json::array({{{"kind", pipe_kind}, {"fd", 7}}})},
              {"own_listeners", json::array()}};
}

std::string refusal(const json& st) {
  std::string error;
  preforkd::config::LoadOptions options;
  options.check_executables = false;
  auto configs = validate_state(st, options, error);
  return configs ? "" : error;
}

}  // namespace

TEST_CASE("T21 upgrade state: a state with every enum by name is accepted") {
  CHECK(refusal(state_with(slot(worker("ready", "up", "none")))) == "");
  CHECK(refusal(state_with(slot(worker("killing", "remove", "recycle"), "replacing", "stderr"))) == "");
}

TEST_CASE("T21 upgrade state: an unknown version is refused with the reason") {
  json st = state_with(slot(worker("ready", "up", "none")));
  st["version"] = 1;
  CHECK(refusal(st).find("state version 1 is not supported") != std::string::npos);
  st["version"] = kStateVersion + 1;
  CHECK(refusal(st).find("is not supported") != std::string::npos);
}

TEST_CASE("T21 upgrade state: an unknown or numeric enum is refused, naming the field") {
  CHECK(refusal(state_with(slot(worker("sleeping", "up", "none")))).find("state: unknown name `sleeping`") !=
        std::string::npos);
  CHECK(refusal(state_with(slot(worker("ready", "sideways", "none")))).find("want: unknown name") != std::string::npos);
  CHECK(refusal(state_with(slot(worker("ready", "up", "boredom")))).find("stop_reason: unknown name") !=
        std::string::npos);
  CHECK(refusal(state_with(slot(worker("ready", "up", "none"), "floating"))).find("phase: unknown name") !=
        std::string::npos);
  CHECK(refusal(state_with(slot(worker("ready", "up", "none"), "active", "stdin"))).find("kind: unknown name") !=
        std::string::npos);
  json numeric = worker("ready", "up", "none");
  numeric["state"] = 2;  // version 1 wrote enums as numbers
  CHECK(refusal(state_with(slot(numeric))).find("state: missing or not a name") != std::string::npos);
}

TEST_CASE("T21 upgrade state: orphans being stopped are optional, and their state goes by name") {
  json st = state_with(slot(worker("ready", "up", "none")));
  CHECK(refusal(st) == "");  // a state from before the process tree has none
  json orphan = {{"pid", 4711},      {"start_time", 123456}, {"comm", "sleep"},   {"program", "echo"},
                 {"tag", "echo[0]"}, {"left_by", 4700},      {"keep", false},     {"stop_signal", 15},
                 {"stop_timeout_ms", 10000}, {"since", 1},   {"state", "stopping"}, {"deadline", 2}};
  st["orphans"] = json::array({orphan});
  st["orphans_total"] = {{"echo", 3}};
  CHECK(refusal(st) == "");
  st["orphans"][0]["state"] = "lingering";
  CHECK(refusal(st).find("orphans.state: unknown name `lingering`") != std::string::npos);
  st["orphans"][0]["state"] = 1;
  CHECK(refusal(st).find("orphans.state: missing or not a string") != std::string::npos);
  st["orphans"][0] = orphan;
  st["orphans"][0].erase("start_time");
  CHECK(refusal(st).find("orphans.start_time: missing or not an integer") != std::string::npos);
}

TEST_CASE("T21 upgrade state: a reload.guard is handed over with its previous configuration, checked like the rest") {
  json st = state_with(slot(worker("ready", "up", "none")));
  st["texts"]["2"] = std::string(kConfig) + "    workers: 2\n";
  st["generation"] = 2;
  st["programs"][0]["config_generation"] = 2;
  st["programs"][0]["rollbacks"] = 1;
  st["programs"][0]["slots"][0]["proc"] = 12;
  st["programs"][0]["guard"] = {{"previous_generation", 1},
                                {"previous_listeners", json::array()},
                                {"first_proc", 12},
                                {"started", 100},
                                {"ended", 200}};
  CHECK(refusal(st) == "");
  json no_text = st;
  no_text["programs"][0]["guard"]["previous_generation"] = 7;
  CHECK(refusal(no_text).find("guard: no configuration text for generation 7") != std::string::npos);
  json bad = st;
  bad["programs"][0]["guard"].erase("first_proc");
  CHECK(refusal(bad).find("guard.first_proc: missing or not an integer") != std::string::npos);
  json twice = st;
  twice["programs"][0]["slots"].push_back(twice["programs"][0]["slots"][0]);
  CHECK(refusal(twice).find("process id 12 twice") != std::string::npos);
  // A state from before guards were handed over: no guard, no process ids.
  json older = state_with(slot(worker("ready", "up", "none")));
  CHECK(refusal(older) == "");
}

TEST_CASE("T21 upgrade state: a number with a fraction where an integer belongs is refused, naming the key") {
  // libFuzzer found this: nlohmann casts 8.9e115 to uint64_t, which is undefined.
  json st = state_with(slot(worker("ready", "up", "none")));
  st["generation"] = 8.9e115;
  CHECK(refusal(st).find("generation: 8.9e+115 is not an integer") != std::string::npos);
  st = state_with(slot(worker("ready", "up", "none")));
  st["version"] = 1e300;
  CHECK(refusal(st).find("version: 1e+300 is not an integer") != std::string::npos);
  st = state_with(slot(worker("ready", "up", "none")));
  st["programs"][0]["exits"][2] = 0.5;
  CHECK(refusal(st).find("exits: 0.5 is not an integer") != std::string::npos);
  st = state_with(slot(worker("ready", "up", "none")));
  st["programs"][0]["slots"][0]["proc"] = 1e20;
  CHECK(refusal(st).find("proc: 1e+20 is not an integer") != std::string::npos);
  // The one number written with a fraction.
  st = state_with(slot(worker("ready", "up", "none")));
  st["programs"][0]["busy_seconds"] = 12.25;
  CHECK(refusal(st) == "");
}
