// The test support's own measurements, where a mistake would make other
// tests pass for nothing.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "support/support.hpp"

using namespace preforkd::test;

TEST_CASE("support: context_switches counts a process's wake-ups and nothing while it sleeps") {
  int p[2];
  REQUIRE(::pipe2(p, O_CLOEXEC) == 0);
  pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {  // blocks in read(); each byte is one wake-up
    ::close(p[1]);
    char c;
    while (::read(p[0], &c, 1) == 1) {
    }
    ::_exit(0);
  }
  ::close(p[0]);
  REQUIRE(wait_until([&] { return proc_state(child) == 'S'; }));
  REQUIRE(wait_quiet(child));
  long long asleep = wakeups_over(child, 300ms);
  CHECK(asleep == 0);
  long long start = context_switches(child);
  REQUIRE(start >= 0);
  for (int i = 0; i < 10; ++i) {
    long long before = context_switches(child);
    REQUIRE(::write(p[1], "x", 1) == 1);
    // Read, and asleep again in the next read().
    REQUIRE(wait_until([&] { return context_switches(child) > before && proc_state(child) == 'S'; }));
  }
  long long woken = context_switches(child) - start;
  MESSAGE("asleep 300 ms: " << asleep << " switches; woken 10 times: " << woken);
  CHECK(woken >= 10);
  CHECK(woken <= 30);  // one per wake-up, and at most a preemption or two more
  ::close(p[1]);
  int st = 0;
  REQUIRE(::waitpid(child, &st, 0) == child);
  CHECK(WIFEXITED(st));
  CHECK(context_switches(child) == -1);  // gone
}
