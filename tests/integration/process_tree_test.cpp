// The process tree (SPEC "Lifecycle rules: Process tree"): preforkd owns
// every process it starts, however the worker forks. Real processes on
// 127.0.0.1; every wait has a deadline.
#include <doctest/doctest.h>
#include <dirent.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <set>
#include <sstream>

#include "support/support.hpp"

using namespace preforkd::test;

namespace {

std::string worker_program(const std::string& name, int workers, const std::string& args,
                           const std::string& extra = "") {
  return "  " + name + ":\n"
         "    command: [" + bin("preforkd-test-worker") + ", " + args + "]\n"
         "    workers: " + std::to_string(workers) + "\n" + extra;
}

// One connection: the first line the server sends ("" if none in time).
std::string reply_line(uint16_t port) {
  int fd = connect_tcp(port);
  if (fd < 0) return "";
  timeval tv{2, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::string line;
  char c;
  while (::read(fd, &c, 1) == 1 && c != '\n') line += c;
  ::close(fd);
  return line;
}

// The test worker's reply: its pid.
pid_t reply_pid(uint16_t port) { return static_cast<pid_t>(std::atol(reply_line(port).c_str())); }

// Can the test listen on 127.0.0.1:port itself? (SO_REUSEADDR: the test's own
// closed connections may have left TIME_WAIT entries; a live listener still
// makes bind fail.)
bool can_listen(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 && ::listen(fd, 1) == 0;
  ::close(fd);
  return ok;
}

bool none_alive(const std::vector<pid_t>& pids) { return std::none_of(pids.begin(), pids.end(), pid_alive); }
bool all_alive(const std::vector<pid_t>& pids) { return std::all_of(pids.begin(), pids.end(), pid_alive); }

std::vector<pid_t> children_in(const nlohmann::json& dump) {
  std::vector<pid_t> out;
  for (const auto& c : dump["children"]) out.push_back(c.get<pid_t>());
  return out;
}

// The dumps "state-<pid>.json" written in `dir` so far.
std::vector<nlohmann::json> dumps(const TempDir& dir) {
  std::vector<nlohmann::json> out;
  DIR* d = ::opendir(dir.path().c_str());
  if (d == nullptr) return out;
  while (dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name.rfind("state-", 0) == 0 && name.size() > 5 && name.substr(name.size() - 5) == ".json")
      out.push_back(read_json(dir.file(name)));
  }
  ::closedir(d);
  return out;
}

// Every process below `pid`.
std::vector<pid_t> descendants(pid_t pid) {
  std::vector<pid_t> out, todo = {pid};
  while (!todo.empty()) {
    pid_t p = todo.back();
    todo.pop_back();
    for (pid_t c : children_of(p)) {
      out.push_back(c);
      todo.push_back(c);
    }
  }
  return out;
}

std::set<pid_t> pids_in_file(const std::string& path) {
  std::set<pid_t> out;
  std::istringstream in(read_file(path));
  pid_t p;
  while (in >> p) out.insert(p);
  return out;
}

std::string orphan_line(pid_t orphan, pid_t worker, const std::string& what) {
  return "orphan pid " + std::to_string(orphan) + " (preforkd-test-w) left by pid " + std::to_string(worker) + ": " +
         what;
}

}  // namespace

TEST_CASE("T17 process tree: a SIGKILLed worker's children in a group and a session of their own are gone "
          "within stop_timeout + 1 s") {
  TempDir dir;
  // The children serve the listening socket too, and ignore TERM: only
  // SIGKILL ends them.
  Preforkd d(dir, "programs:\n" +
                      worker_program("tree", 1,
                                     "--serve, --fork-child, group, --fork-child, setsid, --child-ignore-term, "
                                     "--dump-state, " + dir.file("state.json"),
                                     "    listen: [\"127.0.0.1:0\"]\n    stop_timeout: 500ms\n"));
  REQUIRE(wait_until([&] { return file_exists(dir.file("state.json")); }));
  auto first = read_json(dir.file("state.json"));
  pid_t worker = first["pid"].get<pid_t>();
  auto kids = children_in(first);
  REQUIRE(kids.size() == 2);
  REQUIRE(all_alive(kids));
  REQUIRE(std::all_of(kids.begin(), kids.end(), [](pid_t k) { return signal_ignored(k, SIGTERM); }));
  uint16_t port = d.port();

  ::kill(worker, SIGKILL);
  auto killed = Clock::now();
  CHECK(wait_until([&] { return none_alive(kids); }, 1500ms));  // stop_timeout + 1 s
  MESSAGE("the orphans were gone after "
          << std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - killed).count() << " ms");
  for (pid_t k : kids) CHECK(d.wait_for_log("tree[0]: " + orphan_line(k, worker, "stopping it")) != std::string::npos);
  CHECK(d.wait_for_log("still running after stop_timeout, sending SIGKILL") != std::string::npos);

  // The slot is served again, and only by the current worker (or its own children).
  REQUIRE(wait_until([&] {
    auto j = read_json(dir.file("state.json"));
    return j["pid"].get<pid_t>() != worker && j["children"].size() == 2;
  }));
  auto now = read_json(dir.file("state.json"));
  std::set<pid_t> current = {now["pid"].get<pid_t>()};
  for (pid_t k : children_in(now)) current.insert(k);
  for (int i = 0; i < 30; ++i) {
    pid_t p = reply_pid(port);
    CAPTURE(p);
    CHECK(current.count(p) == 1);
  }
  auto metrics = d.control({{"cmd", "metrics"}});
  CHECK(metrics["text"].get<std::string>().find("preforkd_orphans_total{program=\"tree\"} 2\n") != std::string::npos);
  CHECK(d.stop() == 0);
}

TEST_CASE("process tree: TERM and QUIT end every descendant before preforkd exits 0, and the port is free at once") {
  bool fast = false;
  SUBCASE("TERM") { fast = false; }
  SUBCASE("QUIT") { fast = true; }
  TempDir dir;
  // Workers that ignore TERM; children in a group of their own, in a session
  // of their own, and one that landed on preforkd while its worker runs; all
  // of them ignore TERM too.
  Preforkd d(dir, "programs:\n" +
                      worker_program("tree", 2,
                                     "--serve, --ignore-term, --fork-child, group, --fork-child, setsid, "
                                     "--fork-child, landed, --child-ignore-term, --dump-state, " +
                                         dir.file("state-%p.json"),
                                     "    listen: [\"127.0.0.1:0\"]\n    stop_timeout: 300ms\n"));
  REQUIRE(wait_until([&] {
    auto all = dumps(dir);
    return all.size() == 2 && std::all_of(all.begin(), all.end(), [](const auto& j) {
             return j["children"].size() == 3;
           });
  }));
  std::vector<pid_t> run;  // every process of the run
  for (const auto& j : dumps(dir)) {
    run.push_back(j["pid"].get<pid_t>());
    for (pid_t k : children_in(j)) run.push_back(k);
  }
  REQUIRE(run.size() == 8);
  REQUIRE(wait_until([&] {
    return all_alive(run) && std::all_of(run.begin(), run.end(), [](pid_t p) { return signal_ignored(p, SIGTERM); });
  }));
  uint16_t port = d.port();
  REQUIRE(port != 0);

  d.process().signal(fast ? SIGQUIT : SIGTERM);
  auto st = d.process().wait(20s);
  REQUIRE(st);
  CHECK(WIFEXITED(*st));
  CHECK(WEXITSTATUS(*st) == 0);
  CHECK(can_listen(port));  // at once: nothing of the run holds it
  for (pid_t p : run) {
    CAPTURE(p);
    CHECK_FALSE(pid_alive(p));
  }
  CHECK(d.log().find("shutdown complete") != std::string::npos);
}

TEST_CASE("process tree: orphans: keep keeps them, reaps them when they exit, and stops them at shutdown") {
  TempDir dir;
  Preforkd d(dir, "programs:\n" + worker_program("jobs", 1,
                                                 "--fork-child, setsid, --fork-child, setsid, --dump-state, " +
                                                     dir.file("state.json"),
                                                 "    orphans: keep\n    stop_timeout: 2s\n"));
  REQUIRE(wait_until([&] { return file_exists(dir.file("state.json")); }));
  auto first = read_json(dir.file("state.json"));
  pid_t worker = first["pid"].get<pid_t>();
  auto kids = children_in(first);
  REQUIRE(kids.size() == 2);
  ::kill(worker, SIGKILL);
  for (pid_t k : kids)
    CHECK(d.wait_for_log("jobs[0]: " + orphan_line(k, worker, "kept (orphans: keep)")) != std::string::npos);
  REQUIRE(wait_until([&] { return read_json(dir.file("state.json"))["pid"].get<pid_t>() != worker; }));
  CHECK(all_alive(kids));
  auto status = d.control({{"cmd", "status"}});
  auto orphans = program_of(status, "jobs")["orphans"];
  REQUIRE(orphans.size() == 2);
  for (const auto& o : orphans) {
    CHECK(o["state"] == "kept");
    CHECK(o["left_by"] == worker);
  }

  // One ends on its own: preforkd reaps it (no zombie), and forgets it.
  ::kill(kids[0], SIGTERM);
  CHECK(wait_until([&] { return proc_state(kids[0]) == 0; }));
  CHECK(zombie_children(d.pid()) == 0);
  CHECK(program_of(d.control({{"cmd", "status"}}), "jobs")["orphans"].size() == 1);
  CHECK(pid_alive(kids[1]));

  // Shutdown: nothing preforkd started survives it, kept orphans included.
  CHECK(d.stop() == 0);
  CHECK_FALSE(pid_alive(kids[1]));
  CHECK(d.log().find("stopping it (shutdown)") != std::string::npos);
}

TEST_CASE("process tree: preforkctl status lists the orphans being stopped, --json under their program") {
  TempDir dir;
  Preforkd d(dir, "programs:\n" + worker_program("tree", 1,
                                                 "--fork-child, setsid, --child-ignore-term, --dump-state, " +
                                                     dir.file("state.json"),
                                                 "    stop_timeout: 3s\n"));
  REQUIRE(wait_until([&] { return file_exists(dir.file("state.json")); }));
  auto first = read_json(dir.file("state.json"));
  pid_t worker = first["pid"].get<pid_t>();
  pid_t kid = children_in(first).at(0);
  ::kill(worker, SIGKILL);
  REQUIRE(d.wait_for_log(orphan_line(kid, worker, "stopping it")) != std::string::npos);

  auto [rc, table] = run({bin("preforkctl"), "-s", d.control_socket(), "status"});
  CHECK(rc == 0);
  CHECK(table.find("ORPHAN") != std::string::npos);
  std::string row;  // the orphan's row
  std::istringstream lines(table);
  for (std::string line; std::getline(lines, line);)
    if (line.find(" " + std::to_string(kid) + " ") != std::string::npos) row = line;
  CAPTURE(table);
  CHECK(row.rfind("tree ", 0) == 0);
  CHECK(row.find(" preforkd-test-w ") != std::string::npos);
  CHECK(row.find(" " + std::to_string(worker) + " ") != std::string::npos);
  CHECK(row.find(" stopping ") != std::string::npos);
  auto [jrc, text] = run({bin("preforkctl"), "-s", d.control_socket(), "--json", "status"});
  CHECK(jrc == 0);
  auto j = nlohmann::json::parse(text);
  auto orphans = program_of(j, "tree")["orphans"];
  REQUIRE(orphans.size() == 1);
  CHECK(orphans[0]["pid"] == kid);
  CHECK(orphans[0]["command"] == "preforkd-test-w");
  CHECK(orphans[0]["program"] == "tree");
  CHECK(orphans[0]["left_by"] == worker);
  CHECK(orphans[0]["state"] == "stopping");
  CHECK(orphans[0]["age_s"].get<double>() >= 0.0);
  CHECK(j["orphans"].empty());  // none of unknown origin
  CHECK(wait_until([&] { return !pid_alive(kid); }, 5s));
  CHECK(d.stop() == 0);
}

TEST_CASE("T21 process tree: after USR2 preforkd goes on with the orphans it had, found and counted once") {
  TempDir dir;
  Preforkd d(dir, "programs:\n" + worker_program("jobs", 1,
                                                 "--fork-child, setsid, --dump-state, " + dir.file("state.json"),
                                                 "    orphans: keep\n"));
  REQUIRE(wait_until([&] { return file_exists(dir.file("state.json")); }));
  auto first = read_json(dir.file("state.json"));
  pid_t worker = first["pid"].get<pid_t>();
  pid_t kid = children_in(first).at(0);
  ::kill(worker, SIGKILL);
  const std::string line = orphan_line(kid, worker, "kept (orphans: keep)");
  REQUIRE(d.wait_for_log(line) != std::string::npos);
  REQUIRE(wait_until([&] { return pids_of(d.control({{"cmd", "status"}}), "jobs").size() == 1; }));

  ::kill(d.pid(), SIGUSR2);
  REQUIRE_MESSAGE(d.wait_for_log("took over 1 worker(s)", 20s) != std::string::npos, d.log());
  auto orphans = program_of(d.control({{"cmd", "status"}}), "jobs")["orphans"];  // a scan, too
  REQUIRE(orphans.size() == 1);
  CHECK(orphans[0]["pid"] == kid);
  CHECK(orphans[0]["left_by"] == worker);  // what it knew, not a guess made anew
  CHECK(orphans[0]["state"] == "kept");
  std::string log = d.log();
  CHECK(log.find(line) == log.rfind(line));  // logged once
  auto metrics = d.control({{"cmd", "metrics"}});
  CHECK(metrics["text"].get<std::string>().find("preforkd_orphans_total{program=\"jobs\"} 1\n") !=
        std::string::npos);
  CHECK(d.stop() == 0);
  CHECK_FALSE(pid_alive(kid));
}

TEST_CASE("process tree: a reload of an nginx-style master/worker program serves only the new generation") {
  TempDir dir;
  auto yaml = [&](const std::string& tag) {
    return "programs:\n  web:\n    command: [" + bin("preforkd-test-master") + ", --tag, " + tag +
           "]\n    workers: 2\n    listen: [\"127.0.0.1:0\"]\n    stop_timeout: 2s\n"
           "    reload: { batch: 1, settle: 100ms }\n";
  };
  Preforkd d(dir, yaml("v1"));
  uint16_t port = d.port();
  REQUIRE(wait_until([&] { return reply_line(port).rfind("v1 ", 0) == 0; }));
  // The master of slot 0 dies by SIGKILL: its own worker process is left
  // behind, still serving (nginx's workers keep going without their master).
  auto before = pids_of(d.control({{"cmd", "status"}}), "web");
  REQUIRE(before.size() == 2);
  pid_t master = *before.begin();
  REQUIRE(wait_until([&] { return children_of(master).size() == 1; }));  // its worker runs
  ::kill(master, SIGKILL);
  REQUIRE(wait_until([&] {
    auto now = pids_of(d.control({{"cmd", "status"}}), "web");
    return now.size() == 2 && now.count(master) == 0;
  }));
  CHECK_MESSAGE(d.wait_for_log("web[0]: orphan pid ") != std::string::npos, d.log());

  d.rewrite(yaml("v2"));
  auto r = d.control({{"cmd", "reload"}}, 60s);
  REQUIRE(r["ok"] == true);
  std::map<std::string, int> by_tag;
  for (int i = 0; i < 40; ++i) {
    std::string line = reply_line(port);
    ++by_tag[line.substr(0, line.find(' '))];
  }
  CAPTURE(by_tag.size());
  CHECK(by_tag["v2"] == 40);  // no request answered by an old-generation process
  CHECK(d.stop() == 0);
}

namespace {

const std::string kUnshare = "/usr/bin/unshare";  // util-linux, as Debian installs it

bool unshare_permitted() {
  auto [rc, out] = run({kUnshare, "--pid", "--fork", "--mount-proc", "true"}, 10s);
  return rc == 0;
}

// preforkd as pid 1 of a new pid namespace; its pid as the test sees it.
struct Pid1 {
  std::unique_ptr<Process> unshare;
  pid_t init = 0;
  Pid1(const TempDir& dir, const std::string& yaml) {
    std::string cfg = dir.write("preforkd.yaml", with_control_socket(yaml, dir.file("ctl.sock")));
    unshare = std::make_unique<Process>(
        std::vector<std::string>{kUnshare, "--pid", "--fork", "--mount-proc", bin("preforkd"), "-c", cfg},
        dir.file("preforkd.log"));
    if (unshare->wait_for_log("worker(s) in", 20s) == std::string::npos)
      throw std::runtime_error("preforkd did not start as pid 1:\n" + unshare->log());
    auto kids = children_of(unshare->pid());
    if (kids.size() != 1) throw std::runtime_error("unshare has no single child");
    init = kids[0];
  }
  ~Pid1() {
    // A test that failed half-way: pid 1's SIGKILL takes the namespace with it.
    if (init > 0 && unshare->running()) ::kill(init, SIGKILL);
  }
};

}  // namespace

TEST_CASE("T20 as pid 1 (unshare --pid): 100 double-forking worker cycles leave no zombie, TERM ends it all, exit 0") {
  if (!unshare_permitted()) {
    MESSAGE("skipped: `unshare --pid --fork --mount-proc` is not permitted here (it needs root)");
    return;
  }
  TempDir dir;
  // Each worker leaves a grandchild in its group (--double-fork) and one in a
  // session of its own that has landed on pid 1 already (landed, which
  // writes its pid to the marker file when it gets SIGTERM), then exits.
  Pid1 ns(dir, "programs:\n" +
                   worker_program("cycle", 1,
                                  "--double-fork, --fork-child, landed, --child-marker, " + dir.file("marker") +
                                      ", --dump-state, " + dir.file("state-%p.json") + ", --exit-after, 20",
                                  "    backoff: { min: 10ms, max: 20ms, reset_after: 1ms }\n"
                                  "    stop_timeout: 2s\n"));
  REQUIRE(ns.unshare->wait_for_log("started (restart 100)", 60s) != std::string::npos);
  CHECK(wait_until([&] { return zombie_children(ns.init) == 0; }));
  // Nothing piles up: at most the current worker, its grandchild and its
  // landed child (and, for a moment, those of the previous one).
  CHECK(wait_until([&] { return descendants(ns.init).size() <= 6; }));

  ::kill(ns.init, SIGTERM);
  auto st = ns.unshare->wait(30s);
  REQUIRE(st);
  CHECK(WIFEXITED(*st));
  CHECK(WEXITSTATUS(*st) == 0);
  CHECK(ns.unshare->log().find("shutdown complete") != std::string::npos);
  // The namespace was empty before pid 1 exited: every landed child got
  // preforkd's TERM (the kernel's kill of a namespace whose init exits is a
  // SIGKILL, which leaves no mark).
  // (A landed child may be stopped before it could tell its worker its pid:
  // it is an orphan from the moment its parent is gone. It is marked, not
  // listed.)
  auto marked = pids_in_file(dir.file("marker"));
  auto all = dumps(dir);
  CHECK(all.size() >= 100);
  for (const auto& j : all)
    for (pid_t k : children_in(j)) {
      CAPTURE(k);
      CHECK(marked.count(k) == 1);
    }
  CHECK(marked.size() >= 100);
}

TEST_CASE("T20 as pid 1: a second TERM does not cut the shutdown short, and SIGINT is TERM") {
  if (!unshare_permitted()) {
    MESSAGE("skipped: `unshare --pid --fork --mount-proc` is not permitted here (it needs root)");
    return;
  }
  int sig = SIGTERM;
  SUBCASE("TERM") { sig = SIGTERM; }
  SUBCASE("INT") { sig = SIGINT; }
  TempDir dir;
  Pid1 ns(dir, "programs:\n" + worker_program("stubborn", 1,
                                              "--ignore-term, --fork-child, setsid, --child-marker, " +
                                                  dir.file("marker") + ", --dump-state, " + dir.file("state.json"),
                                              "    stop_timeout: 1s\n"));
  REQUIRE(wait_until([&] { return file_exists(dir.file("state.json")); }));
  pid_t kid = children_in(read_json(dir.file("state.json"))).at(0);  // a pid of the namespace
  // The worker, as the test sees it: pid 1's only child.
  REQUIRE(wait_until([&] {
    auto kids = children_of(ns.init);
    return kids.size() == 1 && signal_ignored(kids[0], SIGTERM);
  }));
  ::kill(ns.init, sig);
  REQUIRE(ns.unshare->wait_for_log("graceful shutdown") != std::string::npos);
  ::kill(ns.init, sig);  // again, while the worker holds out
  auto st = ns.unshare->wait(30s);
  REQUIRE(st);
  CHECK(WIFEXITED(*st));
  CHECK(WEXITSTATUS(*st) == 0);
  std::string log = ns.unshare->log();
  CHECK(log.find("still running after stop_timeout, sending SIGKILL") != std::string::npos);
  CHECK(log.find("shutdown complete") != std::string::npos);
  // The worker's child (in a session of its own) had preforkd's TERM before
  // pid 1 exited.
  CHECK(pids_in_file(dir.file("marker")).count(kid) == 1);
}
