// sys/proc_tree: /proc facts, children, subtrees and the two careful signals,
// on real processes forked by the test.
#include <doctest/doctest.h>
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <utility>

#include "support/support.hpp"
#include "sys/proc_tree.hpp"

using namespace preforkd;
using namespace preforkd::test;

namespace {

// A forked child that waits in pause() until killed; reaped by the destructor.
struct Child {
  pid_t pid = -1;
  explicit Child(bool own_group = false) {
    int p[2];
    REQUIRE(::pipe(p) == 0);
    pid = ::fork();
    if (pid == 0) {
      if (own_group) ::setpgid(0, 0);
      ::close(p[0]);
      ::close(p[1]);  // ready
      for (;;) ::pause();
    }
    ::close(p[1]);
    char c;
    while (::read(p[0], &c, 1) < 0 && errno == EINTR) {
    }
    ::close(p[0]);
  }
  ~Child() {
    if (pid > 0) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
  }
};

// Forks a child that forks `n` grandchildren (which pause) and then pauses;
// returns the child's pid once the grandchildren exist. The caller kills the
// grandchildren, then kills and reaps the child.
pid_t fork_family(int n) {
  int p[2];
  REQUIRE(::pipe(p) == 0);
  pid_t child = ::fork();
  if (child == 0) {
    ::close(p[0]);
    for (int i = 0; i < n; ++i) {
      if (::fork() == 0)
        for (;;) ::pause();
    }
    char c = 'x';
    ssize_t ignored = ::write(p[1], &c, 1);
    (void)ignored;
    for (;;) ::pause();
  }
  ::close(p[1]);
  char c;
  while (::read(p[0], &c, 1) < 0 && errno == EINTR) {
  }
  ::close(p[0]);
  return child;
}

}  // namespace

TEST_CASE("sys proc_tree: read_process reads pid, parent, group, session, start time and command") {
  sys::ProcessFacts f;
  REQUIRE(sys::read_process(::getpid(), f) == 0);
  CHECK(f.pid == ::getpid());
  CHECK(f.ppid == ::getppid());
  CHECK(f.pgid == ::getpgrp());
  CHECK(f.sid == ::getsid(0));
  CHECK(f.state == 'R');
  CHECK(f.start_time > 0);
  CHECK(f.comm == "preforkd-sys-te");  // the kernel keeps 15 bytes
  sys::ProcessFacts again;
  REQUIRE(sys::read_process(::getpid(), again) == 0);
  CHECK(again.start_time == f.start_time);
  CHECK(sys::read_process(0, f) == ESRCH);
  CHECK(sys::read_process(-1, f) == ESRCH);
}

TEST_CASE("sys proc_tree: children_of and subtree, parents first, zombies left out") {
  pid_t family = fork_family(2);
  Child other;
  // A child that has exited and is not reaped yet: a zombie.
  pid_t zombie = ::fork();
  if (zombie == 0) ::_exit(0);
  REQUIRE(wait_until([&] { return proc_state(zombie) == 'Z'; }));

  std::vector<pid_t> kids;
  REQUIRE(sys::children_of(::getpid(), kids) == 0);
  for (pid_t p : {family, other.pid, zombie}) CHECK(std::count(kids.begin(), kids.end(), p) == 1);

  auto below = sys::subtree({family, zombie}, true, 100);
  REQUIRE(below.size() == 3);  // the family and its two children; not the zombie
  CHECK(below[0].pid == family);
  CHECK(below[1].ppid == family);
  CHECK(below[2].ppid == family);
  auto only_below = sys::subtree({family}, false, 100);
  CHECK(only_below.size() == 2);
  // One list per root, the roots themselves left out; the limit is shared.
  auto each = sys::subtrees_below({other.pid, family}, 100);
  REQUIRE(each.size() == 2);
  CHECK(each[0].empty());
  REQUIRE(each[1].size() == 2);
  CHECK(each[1][0].ppid == family);
  bool each_complete = true;
  auto capped = sys::subtrees_below({family, family}, 3, &each_complete);
  CHECK(capped[0].size() + capped[1].size() == 3);
  CHECK_FALSE(each_complete);
  bool complete = false;
  auto limited = sys::subtree({family}, true, 2, &complete);
  CHECK(limited.size() == 2);
  CHECK_FALSE(complete);  // the walk stopped at its limit

  // The grandchildren first: unreaped by their parent, their pids stay theirs.
  for (pid_t g : {below[1].pid, below[2].pid}) ::kill(g, SIGKILL);
  ::kill(family, SIGKILL);
  ::waitpid(family, nullptr, 0);
  ::waitpid(zombie, nullptr, 0);
}

// A child whose second thread forks a grandchild and which then has
// `extra_threads` more threads: the grandchild is in that thread's children
// file only, not in the main thread's. Returns {child, grandchild}.
std::pair<pid_t, pid_t> fork_threaded_parent() {
  int p[2];
  REQUIRE(::pipe(p) == 0);
  pid_t child = ::fork();
  if (child == 0) {
    ::close(p[0]);
    static int out;
    out = p[1];
    pthread_t t;
    ::pthread_create(
        &t, nullptr,
        [](void*) -> void* {
          pid_t g = ::fork();
          if (g == 0)
            for (;;) ::pause();
          ssize_t ignored = ::write(out, &g, sizeof g);
          (void)ignored;
          for (;;) ::pause();
        },
        nullptr);
    for (;;) ::pause();
  }
  ::close(p[1]);
  pid_t g = -1;
  while (::read(p[0], &g, sizeof g) < 0 && errno == EINTR) {
  }
  ::close(p[0]);
  return {child, g};
}

TEST_CASE("sys proc_tree: children_of reads every thread's children, not only the main thread's") {
  auto [child, grandchild] = fork_threaded_parent();
  REQUIRE(grandchild > 0);
  std::vector<pid_t> kids;
  CHECK(sys::children_of(child, kids) == 0);
  CHECK(kids == std::vector<pid_t>{grandchild});
  auto below = sys::subtree({child}, false, 100);
  REQUIRE(below.size() == 1);
  CHECK(below[0].pid == grandchild);
  ::kill(grandchild, SIGKILL);
  ::kill(child, SIGKILL);
  ::waitpid(child, nullptr, 0);
}

TEST_CASE("T14 sys proc_tree: signal_if_same signals only the process that started at that time") {
  Child c;
  sys::ProcessFacts f;
  REQUIRE(sys::read_process(c.pid, f) == 0);
  CHECK(sys::signal_if_same(c.pid, f.start_time + 1, SIGKILL) == ESRCH);  // someone else's pid by now
  CHECK(pid_alive(c.pid));
  CHECK(sys::signal_if_same(c.pid, f.start_time, SIGKILL) == 0);
  int st = 0;
  REQUIRE(::waitpid(c.pid, &st, 0) == c.pid);
  CHECK(WIFSIGNALED(st));
  CHECK(WTERMSIG(st) == SIGKILL);
  CHECK(sys::signal_if_same(c.pid, f.start_time, SIGKILL) == ESRCH);  // reaped: gone
  c.pid = -1;
  CHECK(sys::signal_if_same(1, 0, 0) == ESRCH);  // never init
  CHECK(sys::signal_if_same(0, 0, 0) == ESRCH);  // never "every process of my group"
}

TEST_CASE("T17 sys proc_tree: signal_group reaches what remains of a group whose leader is reaped") {
  // A leader in its own group forks a member, then exits and is reaped.
  int p[2];
  REQUIRE(::pipe(p) == 0);
  pid_t leader = ::fork();
  if (leader == 0) {
    ::setpgid(0, 0);
    pid_t member = ::fork();
    if (member == 0)
      for (;;) ::pause();
    ssize_t ignored = ::write(p[1], &member, sizeof member);
    (void)ignored;
    ::_exit(0);
  }
  ::close(p[1]);
  pid_t member = -1;
  REQUIRE(::read(p[0], &member, sizeof member) == static_cast<ssize_t>(sizeof member));
  ::close(p[0]);
  REQUIRE(::waitpid(leader, nullptr, 0) == leader);
  REQUIRE(pid_alive(member));
  CHECK(sys::signal_group(leader, SIGKILL) == 0);
  CHECK(wait_until([&] { return !pid_alive(member); }));
  // Once its last member is reaped (by init, its parent now), the group is gone.
  if (wait_until([&] { return proc_state(member) == 0; })) CHECK(sys::signal_group(leader, 0) == ESRCH);
  CHECK(sys::signal_group(1, 0) == ESRCH);
  CHECK(sys::signal_group(0, 0) == ESRCH);
}
