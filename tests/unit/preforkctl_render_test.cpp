// preforkctl_render_test.cpp — preforkctl's command line, reply parsing and
// human output, from reply objects shaped like SPEC's examples.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "ctl/client.hpp"
#include "ctl/command_line.hpp"
#include "ctl/render.hpp"

using namespace preforkd::ctl;
using nlohmann::json;

namespace {

// SPEC "Control socket and preforkctl", status and stats examples.
const json kSpecStatus = json::parse(R"({"ok":true,"version":"1.2.3","pid":100,"generation":3,
  "programs":[{"name":"echo","state":"running","workers_wanted":4,
    "workers":[{"slot":0,"pid":123,"state":"ready","generation":3,
                "uptime_s":12.5,"restarts":0,"status":"serving"}]}]})");

const json kSpecStats = json::parse(R"({"ok":true,"programs":[{"name":"echo",
  "counters":{"requests":42},"gauges":{"active_connections":3},"notify_errors":0,
  "exits":{"exit":0,"signal":2,"watchdog":0,"start_timeout":0,"recycled":0},
  "workers":[{"slot":0,"pid":123,"counters":{"requests":42},"gauges":{"active_connections":3}}]}]})");

// A rollout in progress: slot 1's old process (retiring) serves until its
// successor is proven; slot 2 waits to respawn; fields left out here and there.
const json kRolloutStatus = json::parse(R"({"ok":true,"version":"1.2.3","pid":100,"generation":4,
  "programs":[
    {"name":"echo","state":"running","generation":4,"phase":"rolling-out","rollout":"reload",
     "previous_generation":3,"workers_wanted":3,"workers":[
      {"slot":0,"pid":201,"state":"ready","generation":4,"uptime_s":3725,"restarts":0,"status":"serving"},
      {"slot":1,"pid":202,"state":"starting","generation":4,"uptime_s":0.4,"restarts":0,"status":""},
      {"slot":2,"pid":0,"state":"backoff","generation":4,"uptime_s":0,"restarts":7},
      {"slot":1,"pid":150,"state":"ready","generation":3,"uptime_s":97200,"restarts":2,
       "status":"serving","retiring":true}]},
    {"name":"cron-like","state":"crash-looping","workers":[{"slot":0,"state":"stopping"}]},
    {"name":"spare","state":"stopped","generation":4,"phase":"running","workers_wanted":0,"workers":[]}]})");

const json kRolloutStats = json::parse(R"({"ok":true,"programs":[{"name":"echo",
  "counters":{"requests":1500,"bytes_in":90000},"gauges":{"active_connections":5},
  "notify_errors":2,"starts":5,
  "exits":{"recycled":1,"exit":1,"signal":0,"watchdog":0,"start_timeout":0},
  "workers":[{"slot":0,"pid":201,"counters":{"requests":1000,"bytes_in":60000},"gauges":{"active_connections":4}},
             {"slot":1,"pid":202,"counters":{},"gauges":{}},
             {"slot":2,"pid":0,"counters":{},"gauges":{}},
             {"slot":1,"pid":150,"counters":{"requests":480},"gauges":{"active_connections":1},"retiring":true}]}]})");

std::string strip_ansi(const std::string& s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\033') {
      while (i < s.size() && s[i] != 'm') ++i;
      continue;
    }
    out += s[i];
  }
  return out;
}

Options parse(std::vector<const char*> args) {
  args.insert(args.begin(), "preforkctl");
  return parse_preforkctl_options(static_cast<int>(args.size()), args.data());
}

}  // namespace

TEST_CASE("format_uptime: seconds, then minutes, hours and days with two digits after") {
  CHECK(format_uptime(0) == "0s");
  CHECK(format_uptime(12.5) == "12s");
  CHECK(format_uptime(59.99) == "59s");
  CHECK(format_uptime(60) == "1m00s");
  CHECK(format_uptime(184) == "3m04s");
  CHECK(format_uptime(3599) == "59m59s");
  CHECK(format_uptime(3600) == "1h00m");
  CHECK(format_uptime(7500) == "2h05m");
  CHECK(format_uptime(86399) == "23h59m");
  CHECK(format_uptime(86400) == "1d00h");
  CHECK(format_uptime(97200) == "1d03h");
  CHECK(format_uptime(400 * 86400.0) == "400d00h");
  CHECK(format_uptime(-1) == "-");
  CHECK(format_uptime(std::nan("")) == "-");
  CHECK(format_uptime(std::numeric_limits<double>::infinity()) == "-");
}

TEST_CASE("sanitize: a worker's STATUS= text cannot reach the terminal as control characters") {
  CHECK(sanitize("serving") == "serving");
  CHECK(sanitize("\x1b[2J\x1b[31mred") == "?[2J?[31mred");
  CHECK(sanitize("a\tb\r\nc\x7f") == "a?b??c?");
  CHECK(sanitize("csi \xc2\x9b" "31m") == "csi ?31m");  // C1 CSI, UTF-8 encoded
  CHECK(sanitize("h\xc3\xa9llo \xc2\xa0 w\xc3\xb6rld") == "h\xc3\xa9llo \xc2\xa0 w\xc3\xb6rld");
  CHECK(sanitize(std::string("nul\0x", 5)) == "nul?x");
}

TEST_CASE("status: SPEC's example, REQUESTS from the stats reply") {
  CHECK(status_lacks_counters(kSpecStatus));
  CHECK(render_status(kSpecStatus, kSpecStats) ==
        "preforkd 1.2.3 (pid 100), configuration generation 3\n"
        "\n"
        "PROGRAM  STATE    READY  GENERATION  ROLLOUT\n"
        "echo     running  1/4    -           -\n"
        "\n"
        "PROGRAM  SLOT  PID  STATE  GEN  UPTIME  RESTARTS  REQUESTS  STATUS\n"
        "echo     0     123  ready  3    12s     0         42        serving\n");
}

TEST_CASE("status: QUEUE sums the listeners' accept queues - ? when one is unknown") {
  json status = kSpecStatus;
  status["programs"][0]["listeners"] = {{{"listen", "echo"}, {"queue", 30}, {"queue_max", 1024}},
                                        {{"listen", "echo-1"}, {"queue", 7}, {"queue_max", 128}}};
  CHECK(render_status(status, kSpecStats).find("PROGRAM  STATE    READY  QUEUE    GENERATION  ROLLOUT\n"
                                               "echo     running  1/4    37/1152  -           -\n") != std::string::npos);
  status["programs"][0]["listeners"][1]["queue"] = nullptr;
  CHECK(render_status(status, kSpecStats).find("echo     running  1/4    ?      -           -\n") != std::string::npos);
  status["programs"][0]["listeners"] = json::array();
  CHECK(render_status(status, kSpecStats).find("echo     running  1/4    -      -           -\n") != std::string::npos);
}

TEST_CASE("status: BUSY is busy over reporting workers - - when none reports") {
  json status = kSpecStatus;
  status["programs"][0]["workers_busy"] = 3;
  status["programs"][0]["workers_reporting_busy"] = 8;
  CHECK(render_status(status, kSpecStats).find("PROGRAM  STATE    READY  BUSY  GENERATION  ROLLOUT\n"
                                               "echo     running  1/4    3/8   -           -\n") != std::string::npos);
  status["programs"][0]["workers_busy"] = 0;
  status["programs"][0]["workers_reporting_busy"] = 0;
  CHECK(render_status(status, kSpecStats).find("echo     running  1/4    -     -           -\n") != std::string::npos);
}

TEST_CASE("status: without a stats reply REQUESTS is -") {
  const std::string out = render_status(kSpecStatus, nullptr);
  CHECK(out.find("echo     0     123  ready  3    12s     0         -         serving\n") !=
        std::string::npos);
}

TEST_CASE("status: a worker's own counters win over the stats reply") {
  json status = kSpecStatus;
  status["programs"][0]["workers"][0]["counters"] = {{"requests", 7}};
  CHECK_FALSE(status_lacks_counters(status));
  const std::string out = render_status(status, kSpecStats);
  CHECK(out.find("echo     0     123  ready  3    12s     0         7         serving\n") !=
        std::string::npos);
}

TEST_CASE("status: rollout with a retiring worker, a slot in backoff and missing fields") {
  CHECK(render_status(kRolloutStatus, kRolloutStats) ==
        "preforkd 1.2.3 (pid 100), configuration generation 4\n"
        "\n"
        "PROGRAM    STATE          READY  GENERATION  ROLLOUT\n"
        "echo       running        1/3    4           rolling out generation 4 (replacing 3)\n"
        "cron-like  crash-looping  0/-    -           -\n"
        "spare      stopped        0/0    4           -\n"
        "\n"
        "PROGRAM    SLOT  PID  STATE     GEN  UPTIME  RESTARTS  REQUESTS  STATUS\n"
        "echo       0     201  ready     4    1h02m   0         1000      serving\n"
        "echo       1     202  starting  4    0s      0         -         -\n"
        "echo       1     150  retiring  3    1d03h   2         480       serving\n"
        "echo       2     -    backoff   4    -       7         -         -\n"
        "cron-like  0     -    stopping  -    -       -         -         -\n");
}

TEST_CASE("status: the guard, a rollback, and programs that run another generation than the file's") {
  const json status = json::parse(R"({"ok":true,"version":"1.2.3","pid":100,"generation":3,
    "programs":[
      {"name":"web","state":"running","generation":2,"phase":"guarding","previous_generation":1,
       "guard_left_s":17.2,"rollbacks":0,"workers_wanted":1,"workers":[
        {"slot":0,"pid":300,"state":"ready","generation":2,"uptime_s":12,"restarts":1,"status":"ok"}]},
      {"name":"api","state":"running","generation":1,"phase":"rolling-back","rollout":"rollback",
       "previous_generation":3,"rollbacks":1,"workers_wanted":1,"workers":[
        {"slot":0,"pid":301,"state":"ready","generation":3,"uptime_s":5,"restarts":1,"status":""}]},
      {"name":"cron","state":"running","generation":3,"phase":"rolling-out","rollout":"restart",
       "workers_wanted":0,"workers":[]}]})");
  CHECK(render_status(status, nullptr) ==
        "preforkd 1.2.3 (pid 100), configuration generation 3; web runs generation 2, api runs generation 1\n"
        "\n"
        "PROGRAM  STATE    READY  GENERATION  ROLLOUT\n"
        "web      running  1/1    2           guarding generation 2 for 18s more\n"
        "api      running  1/1    1           rolling back to generation 1 from 3\n"
        "cron     running  0/0    3           restarting generation 3\n"
        "\n"
        "PROGRAM  SLOT  PID  STATE  GEN  UPTIME  RESTARTS  REQUESTS  STATUS\n"
        "web      0     300  ready  2    12s     1         -         ok\n"
        "api      0     301  ready  3    5s      1         -         -\n");
}

TEST_CASE("status: orphans being stopped or kept, with their program, command, worker and age") {
  json status = kSpecStatus;
  status["programs"][0]["orphans"] = json::parse(
      R"([{"pid":4711,"command":"sleep","program":"echo","left_by":4700,"state":"stopping","age_s":3.2},
          {"pid":4712,"command":"job\u001b[2J","program":"echo","state":"kept","age_s":75}])");
  status["orphans"] = json::parse(R"([{"pid":5000,"command":"stray","state":"killing","age_s":12}])");
  CHECK(render_status(status, kSpecStats) ==
        "preforkd 1.2.3 (pid 100), configuration generation 3\n"
        "\n"
        "PROGRAM  STATE    READY  GENERATION  ROLLOUT\n"
        "echo     running  1/4    -           -\n"
        "\n"
        "PROGRAM  SLOT  PID  STATE  GEN  UPTIME  RESTARTS  REQUESTS  STATUS\n"
        "echo     0     123  ready  3    12s     0         42        serving\n"
        "\n"
        "PROGRAM  ORPHAN  COMMAND  LEFT BY  STATE     SINCE\n"
        "echo     4711    sleep    4700     stopping  3s\n"
        "echo     4712    job?[2J  -        kept      1m15s\n"
        "-        5000    stray    -        killing   12s\n");
  // None: no orphan table at all (SPEC's example above has none).
  CHECK(render_status(kSpecStatus, kSpecStats).find("ORPHAN") == std::string::npos);
}

TEST_CASE("status: colour marks states without moving the columns") {
  RenderOptions colour;
  colour.colour = true;
  const std::string plain = render_status(kRolloutStatus, kRolloutStats);
  const std::string coloured = render_status(kRolloutStatus, kRolloutStats, colour);
  CHECK(coloured != plain);
  CHECK(strip_ansi(coloured) == plain);
  CHECK(coloured.find("\033[32mready\033[0m") != std::string::npos);
  CHECK(coloured.find("\033[33mretiring\033[0m") != std::string::npos);
  CHECK(coloured.find("\033[31mbackoff\033[0m") != std::string::npos);
  CHECK(coloured.find("\033[31mcrash-looping\033[0m") != std::string::npos);
  CHECK(plain.find('\033') == std::string::npos);
}

TEST_CASE("status: columns align on code points and hostile status text is neutralised") {
  json status = kSpecStatus;
  status["programs"][0]["workers"][0]["status"] = "\x1b]0;pwned\x07 h\xc3\xa9llo";
  status["programs"][0]["name"] = "\xc3\xa9" "cho";
  const std::string out = render_status(status, nullptr);
  CHECK(out.find('\033') == std::string::npos);
  CHECK(out.find("PROGRAM  STATE    READY  GENERATION  ROLLOUT\n\xc3\xa9" "cho     running  1/4    -           -\n") !=
        std::string::npos);
  CHECK(out.find("?]0;pwned? h\xc3\xa9llo\n") != std::string::npos);
}

TEST_CASE("status: no programs, and replies of the wrong shape never throw") {
  CHECK(render_status(json::parse(R"({"ok":true,"version":"1.2.3","pid":100,"generation":1,
                                       "programs":[]})"),
                      nullptr) ==
        "preforkd 1.2.3 (pid 100), configuration generation 1\nno programs\n");
  CHECK(render_status(json::parse(R"({"ok":true})"), nullptr) == "preforkd\nno programs\n");
  CHECK_NOTHROW(render_status(json("text"), json::array()));
  CHECK_NOTHROW(render_status(json::parse(R"({"ok":true,"programs":[1,"x",null,
      {"name":7,"workers":{"slot":0}},{"workers":[1,[],{"pid":"x","uptime_s":"y","slot":-1}]}]})"),
                              json::parse(R"({"programs":{"name":"echo"}})")));
}

TEST_CASE("stats: SPEC's example") {
  CHECK(render_stats(kSpecStats) ==
        "echo\n"
        "  counters\n"
        "    requests            42\n"
        "  gauges\n"
        "    active_connections   3\n"
        "  notify_errors          0\n"
        "  exits                 exit 0, signal 2, watchdog 0, start_timeout 0, recycled 0\n"
        "  echo[0] pid 123\n"
        "    counters  requests=42\n"
        "    gauges    active_connections=3\n");
}

TEST_CASE("stats: sorted names, a retiring worker, a slot without a process, empty maps") {
  json stats = kRolloutStats;
  stats["programs"].push_back(json::parse(R"({"name":"spare","notify_errors":0,"workers":[]})"));
  CHECK(render_stats(stats) ==
        "echo\n"
        "  counters\n"
        "    bytes_in            90000\n"
        "    requests             1500\n"
        "  gauges\n"
        "    active_connections      5\n"
        "  notify_errors             2\n"
        "  exits                 exit 1, signal 0, watchdog 0, start_timeout 0, recycled 1\n"
        "  echo[0] pid 201\n"
        "    counters  bytes_in=60000 requests=1000\n"
        "    gauges    active_connections=4\n"
        "  echo[1] pid 202\n"
        "    counters  -\n"
        "    gauges    -\n"
        "  echo[2] (no process)\n"
        "    counters  -\n"
        "    gauges    -\n"
        "  echo[1] pid 150 (retiring)\n"
        "    counters  requests=480\n"
        "    gauges    active_connections=1\n"
        "\n"
        "spare\n"
        "  counters       -\n"
        "  gauges         -\n"
        "  notify_errors  0\n"
        "  exits          -\n");
}

TEST_CASE("stats: exit reasons the client does not know yet follow SPEC's, sorted") {
  json stats = kSpecStats;
  stats["programs"][0]["exits"]["zapped"] = 4;
  stats["programs"][0]["exits"]["oom"] = 1;
  const std::string out = render_stats(stats);
  CHECK(out.find("exit 0, signal 2, watchdog 0, start_timeout 0, recycled 0, oom 1, zapped 4\n") !=
        std::string::npos);
}

TEST_CASE("stats: no programs, wrong shapes") {
  CHECK(render_stats(json::parse(R"({"ok":true,"programs":[]})")) == "no programs\n");
  CHECK(render_stats(json::parse(R"({"ok":true})")) == "no programs\n");
  CHECK_NOTHROW(render_stats(json::parse(R"({"programs":[null,{"counters":[1],"gauges":"x",
      "exits":3,"workers":[null,{"counters":{"a":"b"}}]}]})")));
}

TEST_CASE("metrics, version, confirmations and errors") {
  CHECK(render_metrics(json::parse(R"({"ok":true,"text":"preforkd_up 1\n"})")) == "preforkd_up 1\n");
  CHECK(render_metrics(json::parse(R"({"ok":true,"text":"preforkd_up 1"})")) == "preforkd_up 1\n");
  CHECK(render_metrics(json::parse(R"({"ok":true})")) == "");

  CHECK(render_version(json::parse(R"({"ok":true,"version":"1.2.3","pid":100})"), "1.2.4") ==
        "preforkd 1.2.3 (pid 100)\npreforkctl 1.2.4\n");
  CHECK(render_version(json::parse(R"({"ok":true})"), "1.2.4") ==
        "preforkd - (pid -)\npreforkctl 1.2.4\n");

  const json bare = json::parse(R"({"ok":true})");
  CHECK(render_confirmation(parse({"scale", "echo", "3"}).request, bare) ==
        "echo: scaled to 3 workers\n");
  CHECK(render_confirmation(parse({"scale", "echo", "1"}).request, bare) ==
        "echo: scaled to 1 worker\n");
  CHECK(render_confirmation(parse({"restart", "echo"}).request, bare) == "echo: restarted\n");
  CHECK(render_confirmation(parse({"stop", "echo"}).request, bare) == "echo: stopped\n");
  CHECK(render_confirmation(parse({"start", "echo"}).request, bare) == "echo: started\n");
  CHECK(render_confirmation(parse({"signal", "echo", "hup"}).request, bare) ==
        "echo: sent SIGHUP\n");
  CHECK(render_confirmation(parse({"shutdown"}).request, bare) == "preforkd is shutting down\n");
  CHECK(render_confirmation(parse({"reload"}).request, bare) == "configuration reloaded\n");
  CHECK(render_confirmation(parse({"reload"}).request,
                            json::parse(R"({"ok":true,"generation":5})")) ==
        "configuration reloaded (generation 5)\n");
  CHECK(render_confirmation(parse({"restart", "echo"}).request,
                            json::parse(R"({"ok":true,"message":"echo: 4 workers replaced\u001b"})")) ==
        "echo: 4 workers replaced?\n");

  CHECK(render_error(json::parse(R"({"ok":false,"error":"permission denied"})")) ==
        "preforkctl: permission denied\n");
  CHECK(render_error(json::parse(R"({"ok":false})")) ==
        "preforkctl: the command failed (preforkd gave no reason)\n");
}

TEST_CASE("command line: requests as sent to preforkd") {
  CHECK(to_json(parse({"status"}).request) == json::parse(R"({"cmd":"status"})"));
  CHECK(to_json(parse({"scale", "echo", "3"}).request) ==
        json::parse(R"({"cmd":"scale","program":"echo","workers":3})"));
  CHECK(to_json(parse({"scale", "echo", "0"}).request) ==
        json::parse(R"({"cmd":"scale","program":"echo","workers":0})"));
  CHECK(to_json(parse({"signal", "echo", "SIGhup"}).request) ==
        json::parse(R"({"cmd":"signal","program":"echo","signal":"HUP"})"));
  CHECK(to_json(parse({"signal", "echo", "10"}).request) ==
        json::parse(R"({"cmd":"signal","program":"echo","signal":"USR1"})"));
  CHECK(to_json(parse({"restart", "echo"}).request) ==
        json::parse(R"({"cmd":"restart","program":"echo"})"));
  CHECK(to_json(parse({"rollback", "echo"}).request) ==
        json::parse(R"({"cmd":"rollback","program":"echo"})"));

  Options o = parse({"--json", "stop", "web", "-s", "/tmp/x.sock"});
  CHECK(o.json);
  CHECK(o.socket == std::optional<std::string>("/tmp/x.sock"));
  CHECK_FALSE(o.config.has_value());
  CHECK(o.request.command == "stop");
  CHECK(o.request.program == "web");

  CHECK(parse({"-h"}).help);
  CHECK(parse({"--version"}).version);
  CHECK(parse({"-c", "/etc/x.yaml", "status"}).config == std::optional<std::string>("/etc/x.yaml"));

  for (const char* c : {"restart", "scale", "reload", "stop", "start", "rollback"}) {
    Request r;
    r.command = c;
    CHECK(waits_for_completion(r));
  }
  for (const char* c : {"status", "stats", "metrics", "version", "signal", "shutdown"}) {
    Request r;
    r.command = c;
    CHECK_FALSE(waits_for_completion(r));
  }
}

TEST_CASE("command line: usage errors") {
  const std::vector<std::vector<const char*>> bad = {
      {},
      {"bogus"},
      {"status", "extra"},
      {"scale", "echo"},
      {"scale", "echo", "3", "4"},
      {"scale", "echo", "-1"},
      {"scale", "echo", "+3"},
      {"scale", "echo", "3.0"},
      {"scale", "echo", "three"},
      {"scale", "echo", ""},
      {"scale", "echo", "99999999999"},
      {"scale", "", "3"},
      {"restart"},
      {"rollback"},
      {"rollback", "echo", "2"},
      {"signal", "echo"},
      {"signal", "echo", "FOO"},
      {"signal", "echo", "-9"},
      {"signal", "echo", "0"},
      {"--frob", "status"},
      {"-s"},
      {"-s", "", "status"},
      {"-s", "a", "-s", "b", "status"},
  };
  for (const auto& args : bad) {
    CAPTURE(args.size());
    CHECK_THROWS_AS(parse(args), UsageError);
  }
  CHECK_THROWS_WITH_AS(parse({"scale", "echo", "-1"}),
                       "scale: N must be a whole number >= 0, got `-1`", UsageError);
}

TEST_CASE("parse_reply: one JSON object with a boolean ok, or UnreachableError") {
  Reply r = parse_reply("/s", R"({"ok":false,"error":"permission denied"})" "\r");
  CHECK(r.line == R"({"ok":false,"error":"permission denied"})");
  CHECK(r.body["error"] == "permission denied");
  CHECK(parse_reply("/s", R"({"ok":true,"new_field":[1]})").body["ok"] == true);
  for (const char* bad : {"", "garbage", "[1]", "{}", R"({"ok":"yes"})", R"({"ok":true)"})
    CHECK_THROWS_AS(parse_reply("/s", bad), UnreachableError);
}
