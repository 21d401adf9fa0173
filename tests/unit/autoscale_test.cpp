// core::Autoscaler (core/autoscale.hpp) on a fake clock: when it scales up
// and down, its bounds, its cooldown, and no oscillation under a square wave;
// with workers that say BUSY=, down only after one was idle for down_after
// and only if the rest would have been at most target_utilization busy.
#include <doctest/doctest.h>

#include <functional>
#include <vector>

#include "core/autoscale.hpp"

using namespace preforkd::core;
using namespace std::chrono_literals;
using Dir = ScaleDecision::Direction;

namespace {

struct Event {
  TimePoint at;
  Dir direction;
  uint32_t target;
};

// Samples every period() from `start` for `length`, the wanted count
// following each decision at once (all live), the load given by `load(t)`
// (time since start) with `wanted` filled in.
struct Run {
  Autoscaler a;
  uint32_t wanted;
  TimePoint now = TimePoint{} + 1000s;
  std::vector<Event> events;
  uint32_t highest = 0, lowest = UINT32_MAX;

  Run(AutoscaleSettings s, uint32_t start) : a(s), wanted(start) {}

  void go(Duration length, const std::function<LoadSample(Duration)>& load) {
    TimePoint start = now, end = now + length;
    for (; now < end; now += a.period()) {
      LoadSample s = load(std::chrono::duration_cast<Duration>(now - start));
      s.wanted = wanted;
      if (s.live == 0) s.live = wanted;
      auto d = a.sample(s, now);
      if (d.direction != Dir::None) {
        events.push_back({now, d.direction, d.target});
        wanted = d.target;
      }
      highest = std::max(highest, wanted);
      lowest = std::min(lowest, wanted);
    }
  }
};

LoadSample queue(uint64_t n) {
  LoadSample s;
  s.queue = n;
  return s;
}

AutoscaleSettings settings(uint32_t min, uint32_t max) {
  AutoscaleSettings s;
  s.min = min;
  s.max = max;
  return s;
}

}  // namespace

TEST_CASE("autoscale: up by one once the queue has been non-empty for up_after, with the reason") {
  Autoscaler a(settings(2, 8));
  TimePoint t = TimePoint{} + 100s;
  LoadSample s = queue(37);
  s.wanted = s.live = 4;
  CHECK(a.sample(s, t).direction == Dir::None);
  CHECK(a.sample(s, t + 750ms).direction == Dir::None);
  auto d = a.sample(s, t + 1000ms);
  CHECK(d.direction == Dir::Up);
  CHECK(d.target == 5);
  CHECK(d.reason == "queue 37 for 1.0s");
  CHECK(a.ups() == 1);
  // The next step needs a full up_after of its own.
  s.wanted = s.live = 5;
  CHECK(a.sample(s, t + 1500ms).direction == Dir::None);
  CHECK(a.sample(s, t + 2000ms).target == 6);
}

TEST_CASE("autoscale: a queue that empties before up_after does nothing") {
  Autoscaler a(settings(2, 8));
  TimePoint t = TimePoint{} + 100s;
  LoadSample busy = queue(5), empty = queue(0);
  busy.wanted = empty.wanted = busy.live = empty.live = 2;
  for (int i = 0; i < 20; ++i) {
    CHECK(a.sample(busy, t).direction == Dir::None);
    CHECK(a.sample(empty, t + 900ms).direction == Dir::None);
    t += 1000ms;
  }
}

TEST_CASE("autoscale: every reporting worker busy is pressure - unknown workers are not") {
  Autoscaler a(settings(1, 4));
  TimePoint t = TimePoint{} + 100s;
  LoadSample s;
  s.wanted = s.live = 2;
  s.busy = 2;
  s.reporting = 2;
  a.sample(s, t);
  auto d = a.sample(s, t + 1s);
  CHECK(d.direction == Dir::Up);
  CHECK(d.reason == "every reporting worker busy (2) for 1.0s");
  // Nobody reports and the queue is empty: calm, never pressure.
  Autoscaler b(settings(1, 4));
  LoadSample quiet;
  quiet.wanted = quiet.live = 2;
  b.sample(quiet, t);
  CHECK(b.sample(quiet, t + 5s).direction == Dir::None);
}

TEST_CASE("autoscale: step, and never above max under endless load") {
  auto s = settings(2, 7);
  s.step = 2;
  Run r(s, 2);
  r.go(60s, [](Duration) { return queue(100); });
  CHECK(r.highest == 7);
  CHECK(r.wanted == 7);
  REQUIRE(r.events.size() == 3);  // 4, 6, 7
  CHECK(r.events[0].target == 4);
  CHECK(r.events[1].target == 6);
  CHECK(r.events[2].target == 7);
}

TEST_CASE("autoscale: down one at a time after down_after of calm, never below min") {
  Run r(settings(2, 8), 8);
  r.go(600s, [](Duration) { return queue(0); });
  CHECK(r.wanted == 2);
  CHECK(r.lowest == 2);
  REQUIRE(r.events.size() == 6);
  for (size_t i = 0; i < r.events.size(); ++i) {
    CHECK(r.events[i].direction == Dir::Down);
    CHECK(r.events[i].target == 7 - i);
    if (i > 0) CHECK(r.events[i].at - r.events[i - 1].at >= 30s);
  }
}

TEST_CASE("autoscale: a worker in backoff is not capacity - no scale-down while one is") {
  Autoscaler a(settings(1, 8));
  TimePoint t = TimePoint{} + 100s;
  LoadSample s = queue(0);
  s.wanted = 4;
  s.live = 3;  // one in backoff
  a.sample(s, t);
  CHECK(a.sample(s, t + 60s).direction == Dir::None);
  s.live = 4;
  CHECK(a.sample(s, t + 61s).direction == Dir::Down);
}

TEST_CASE("autoscale: no oscillation under a square-wave load") {
  SUBCASE("defaults: 2 s of queue, 2 s of calm - it only ever goes up") {
    Run r(settings(2, 10), 2);
    r.go(300s, [](Duration t) { return queue((t / 2s) % 2 == 0 ? 20 : 0); });
    for (const auto& e : r.events) CHECK(e.direction == Dir::Up);
    CHECK(r.highest <= 10);
  }
  SUBCASE("short down_after: direction changes at least a cooldown apart") {
    auto s = settings(2, 10);
    s.down_after = 1s;
    s.cooldown = 10s;
    Run r(s, 2);
    r.go(300s, [](Duration t) { return queue((t / 3s) % 2 == 0 ? 20 : 0); });
    int changes = 0;
    for (size_t i = 1; i < r.events.size(); ++i)
      if (r.events[i].direction != r.events[i - 1].direction) {
        ++changes;
        CHECK(r.events[i].at - r.events[i - 1].at >= 10s);
      }
    CHECK(changes >= 2);  // it does go both ways, just not back and forth
    CHECK(changes <= 300 / 10);
    CHECK(r.highest <= 10);
    CHECK(r.lowest >= 2);
  }
}

TEST_CASE("autoscale: preforkctl scale restarts the cooldown - no decision within it") {
  Autoscaler a(settings(1, 8));
  TimePoint t = TimePoint{} + 100s;
  a.manual(t);
  LoadSample s = queue(50);
  s.wanted = s.live = 3;
  for (Duration d = 0ms; d < 10s; d += 250ms) CHECK(a.sample(s, t + d).direction == Dir::None);
  CHECK(a.sample(s, t + 10s).direction == Dir::Up);
}

TEST_CASE("autoscale: a count outside new bounds goes back inside at once") {
  Autoscaler a(settings(1, 8));
  a.set_settings(settings(2, 4));
  TimePoint t = TimePoint{} + 100s;
  LoadSample s = queue(0);
  s.wanted = s.live = 6;
  auto d = a.sample(s, t);
  CHECK(d.direction == Dir::Down);
  CHECK(d.target == 4);
  s.wanted = s.live = 1;
  d = a.sample(s, t);
  CHECK(d.direction == Dir::Up);
  CHECK(d.target == 2);
}

TEST_CASE("autoscale: the sampling period is up_after / 4, between 50 ms and 1 s") {
  auto s = settings(1, 2);
  CHECK(Autoscaler(s).period() == 250ms);
  s.up_after = 100ms;
  CHECK(Autoscaler(s).period() == 50ms);
  s.up_after = 10s;
  CHECK(Autoscaler(s).period() == 1000ms);
}

namespace {

// Workers that say BUSY=: `wanted` of them, worker i busy when busy(i, t)
// says so (t: time since the start); idle_since is when the longest-idle one
// last went idle, as core/policy computes it from the workers' BUSY= lines.
// busy_seconds integrates the busy count between samples, as the program's
// counter does between BUSY= lines.
struct Workers {
  std::vector<bool> busy;
  std::vector<TimePoint> idle_since;
  double busy_seconds = 0;
  TimePoint last = kNever;
  uint32_t last_busy = 0;
  LoadSample sample(uint32_t wanted, TimePoint now, Duration t, uint64_t q,
                    const std::function<bool(uint32_t, Duration)>& is_busy) {
    if (last != kNever) busy_seconds += last_busy * std::chrono::duration<double>(now - last).count();
    busy.resize(wanted, false);
    idle_since.resize(wanted, now);
    LoadSample s = queue(q);
    s.reporting = wanted;
    for (uint32_t i = 0; i < wanted; ++i) {
      bool b = is_busy(i, t);
      if (!b && busy[i]) idle_since[i] = now;
      busy[i] = b;
      if (b) ++s.busy;
      else s.idle_since = std::min(s.idle_since, idle_since[i]);
    }
    last = now;
    last_busy = s.busy;
    s.busy_seconds = busy_seconds;
    return s;
  }
};

}  // namespace

TEST_CASE("autoscale: a steady 70% load - every worker busy part of each second - does not scale down") {
  auto s = settings(2, 16);
  s.up_after = 500ms;
  s.down_after = 1s;  // even a short one
  s.cooldown = 0ms;
  Run r(s, 16);
  Workers w;
  // Worker i busy 700 ms of every second, the workers staggered: some are
  // always idle and the queue is always empty, but none is idle for long.
  auto busy = [](uint32_t i, Duration t) { return (t + Duration{i * 61}) % 1000ms < 700ms; };
  r.go(300s, [&](Duration t) { return w.sample(r.wanted, r.now, t, 0, busy); });
  CHECK(r.events.empty());
  CHECK(r.wanted == 16);
  // The same load with the per-sample rule it replaces ("the queue empty and
  // some worker not busy for down_after") would have taken workers away.
  Autoscaler old_rule(s);
  LoadSample queue_only = queue(0);
  queue_only.wanted = queue_only.live = 16;
  old_rule.sample(queue_only, TimePoint{} + 10s);
  CHECK(old_rule.sample(queue_only, TimePoint{} + 11s).direction == Dir::Down);
}

TEST_CASE("autoscale: with BUSY= workers, down once one has been idle for down_after, with the reason") {
  auto s = settings(2, 8);
  s.down_after = 5s;
  Autoscaler a(s);
  TimePoint t = TimePoint{} + 100s;
  LoadSample l = queue(0);
  l.wanted = l.live = l.reporting = 4;
  l.busy = 3;
  l.idle_since = t + 2s;  // the one idle worker went idle 2 s after the queue emptied
  CHECK(a.sample(l, t).direction == Dir::None);
  CHECK(a.sample(l, t + 5s).direction == Dir::None);  // the queue for 5 s, the worker for 3 s
  CHECK(a.sample(l, t + 6900ms).direction == Dir::None);
  auto d = a.sample(l, t + 7s);
  CHECK(d.direction == Dir::Down);
  CHECK(d.target == 3);
  CHECK(d.reason == "a worker idle for 5.0s, 0.0 busy on average over 7.0s");
  // Every further step needs a down_after of its own, even with workers
  // idle for longer.
  l.wanted = l.live = 3;
  CHECK(a.sample(l, t + 11s).direction == Dir::None);
  CHECK(a.sample(l, t + 12s).direction == Dir::Down);
  // No worker idle (all busy, or none reporting idle): no step down.
  Autoscaler b(s);
  LoadSample none = queue(0);
  none.wanted = none.live = none.reporting = 4;
  none.busy = 2;  // two busy, two that have not said BUSY=0 since: idle_since kNever
  b.sample(none, t);
  CHECK(b.sample(none, t + 60s).direction == Dir::None);
}

TEST_CASE("autoscale: BUSY= workers - never below min nor above max, one idle worker at a time") {
  auto s = settings(3, 9);
  s.down_after = 2s;
  s.step = 4;
  s.cooldown = 5s;
  Run r(s, 3);
  Workers w;
  // 60 s of every worker busy, a queue too, then 120 s of nothing.
  r.go(180s, [&](Duration t) {
    bool heavy = t < 60s;
    return w.sample(r.wanted, r.now, t, heavy ? 50 : 0, [&](uint32_t, Duration) { return heavy; });
  });
  CHECK(r.highest == 9);
  CHECK(r.lowest == 3);
  CHECK(r.wanted == 3);
  size_t downs = 0;
  for (const auto& e : r.events)
    if (e.direction == Dir::Down) ++downs;
  CHECK(downs == 6);
}

TEST_CASE("autoscale: BUSY= workers under a square wave - no oscillation") {
  SUBCASE("busy and idle phases shorter than down_after: it only ever goes up") {
    auto s = settings(2, 10);
    s.down_after = 5s;
    s.cooldown = 0ms;
    Run r(s, 2);
    Workers w;
    r.go(300s, [&](Duration t) {
      bool on = (t / 3s) % 2 == 0;
      return w.sample(r.wanted, r.now, t, on ? 20 : 0, [&](uint32_t, Duration) { return on; });
    });
    CHECK(!r.events.empty());
    for (const auto& e : r.events) CHECK(e.direction == Dir::Up);
    CHECK(r.highest <= 10);
  }
  SUBCASE("longer phases: direction changes at least a cooldown apart, within min and max") {
    auto s = settings(2, 10);
    s.down_after = 1s;
    s.cooldown = 10s;
    Run r(s, 2);
    Workers w;
    r.go(300s, [&](Duration t) {
      bool on = (t / 4s) % 2 == 0;
      return w.sample(r.wanted, r.now, t, on ? 20 : 0, [&](uint32_t, Duration) { return on; });
    });
    int changes = 0;
    for (size_t i = 1; i < r.events.size(); ++i)
      if (r.events[i].direction != r.events[i - 1].direction) {
        ++changes;
        CHECK(r.events[i].at - r.events[i - 1].at >= 10s);
      }
    CHECK(changes >= 2);
    CHECK(changes <= 300 / 10);
    CHECK(r.highest <= 10);
    CHECK(r.lowest >= 2);
  }
}

namespace {

// 8 workers busy at any time, the way an accept order that favours the first
// workers spreads it over a pool of n (> 8): workers 0-5 always busy, and of
// workers 6..n-1 two at a time, for a second each in turn; with n = 16 each
// of those is idle for 4 s of every 5 (far longer than down_after). From
// `light_from` on: only worker 0 busy.
bool eight_busy(uint32_t i, Duration t, uint32_t n, Duration light_from = Duration::max()) {
  if (t >= light_from) return i == 0;
  if (i < 6) return true;
  const auto k = static_cast<uint32_t>(t / 1s);
  return i == 6 + (2 * k) % (n - 6) || i == 6 + (2 * k + 1) % (n - 6);
}

AutoscaleSettings bench_like(uint32_t min, uint32_t max) {
  auto s = settings(min, max);
  s.up_after = 50ms;
  s.down_after = 1s;
  s.cooldown = 2s;
  s.step = max - min;
  return s;
}

}  // namespace

TEST_CASE("autoscale: a steady 50% load on 16 workers, some idle for seconds, does not scale down") {
  auto s = bench_like(4, 16);
  REQUIRE(s.target_utilization == 50);  // the default
  Run r(s, 16);
  Workers w;
  r.go(120s, [&](Duration t) { return w.sample(r.wanted, r.now, t, 0, [&](uint32_t i, Duration at) { return eight_busy(i, at, r.wanted); }); });
  CHECK(r.events.empty());
  CHECK(r.wanted == 16);
  // What stops it is the utilization bound: 15 workers would be 53% busy.
  // Allowing 60%, the same load gives back the workers beyond 8 / 0.6 + 1.
  s.target_utilization = 60;
  Run loose(s, 16);
  Workers w2;
  loose.go(120s, [&](Duration t) {
    return w2.sample(loose.wanted, loose.now, t, 0, [&](uint32_t i, Duration at) { return eight_busy(i, at, loose.wanted); });
  });
  REQUIRE(loose.events.size() == 2);  // 15 left would be 53% busy, 14 57%, 13 62%
  for (const auto& e : loose.events) CHECK(e.direction == Dir::Down);
  CHECK(loose.wanted == 14);
}

TEST_CASE("autoscale: with a steady load it settles at the smallest pool the rest carry at target_utilization") {
  // 8 busy all the time, the others idle for ever: down while
  // 8 <= (n - 1) x 75%, i.e. to 11 (10 left would be 80% busy).
  auto s = settings(2, 24);
  s.down_after = 2s;
  s.cooldown = 0ms;
  s.target_utilization = 75;
  Run r(s, 24);
  Workers w;
  r.go(200s, [&](Duration t) { return w.sample(r.wanted, r.now, t, 0, [](uint32_t i, Duration) { return i < 8; }); });
  CHECK(r.wanted == 11);
  CHECK(r.lowest == 11);
  REQUIRE(!r.events.empty());
  CHECK(r.events.back().target == 11);
  // The reason names the load it went by.
  Autoscaler a(s);
  Workers w3;
  TimePoint t0 = TimePoint{} + 50s;
  ScaleDecision d;
  for (TimePoint t = t0; t < t0 + 10s && d.direction == Dir::None; t += a.period())
    d = a.sample([&] {
      auto l = w3.sample(24, t, std::chrono::duration_cast<Duration>(t - t0), 0, [](uint32_t i, Duration) { return i < 8; });
      l.wanted = l.live = 24;
      return l;
    }(), t);
  CHECK(d.direction == Dir::Down);
  CHECK(d.reason.find(", 8.0 busy on average over 2.") != std::string::npos);
}

TEST_CASE("autoscale: after a drop to light load, down to min one step per down_after") {
  auto s = bench_like(4, 16);
  Run r(s, 16);
  Workers w;
  r.go(60s, [&](Duration t) {
    return w.sample(r.wanted, r.now, t, 0, [&](uint32_t i, Duration at) { return eight_busy(i, at, r.wanted, 30s); });
  });
  CHECK(r.wanted == 4);
  CHECK(r.lowest == 4);
  REQUIRE(r.events.size() == 12);
  for (size_t i = 0; i < r.events.size(); ++i) {
    CHECK(r.events[i].direction == Dir::Down);
    CHECK(r.events[i].target == 15 - i);
    CHECK(r.events[i].at >= TimePoint{} + 1000s + 30s);  // none under the heavy load
    if (i > 0) CHECK(r.events[i].at - r.events[i - 1].at >= 1s);
  }
  // One step per down_after (and a sample period), not slower.
  CHECK(r.events.back().at - r.events.front().at <= 11 * (1s + s.up_after));
}

TEST_CASE("autoscale: BUSY= workers, heavy and light phases - up at once, no scale-down under the heavy load") {
  // 10 s heavy (the pool short of 16: a queue and every worker busy; at 16,
  // 8 busy), 10 s light (one busy), over and over.
  auto s = bench_like(4, 16);
  Run r(s, 4);
  Workers w;
  r.go(200s, [&](Duration t) {
    const bool heavy = (t / 10s) % 2 == 1;
    if (heavy && r.wanted < 16)
      return w.sample(r.wanted, r.now, t, 10, [](uint32_t, Duration) { return true; });
    return w.sample(r.wanted, r.now, t, 0, [&](uint32_t i, Duration at) { return heavy ? eight_busy(i, at, r.wanted) : i == 0; });
  });
  CHECK(r.highest == 16);
  CHECK(r.lowest == 4);
  int changes = 0;
  for (size_t i = 0; i < r.events.size(); ++i) {
    const auto t = r.events[i].at - (TimePoint{} + 1000s);
    const bool heavy = (t / 10s) % 2 == 1;
    if (r.events[i].direction == Dir::Down) CHECK_FALSE(heavy);  // never gives back a worker the load needs
    if (r.events[i].direction == Dir::Up) CHECK(heavy);
    if (i > 0 && r.events[i].direction != r.events[i - 1].direction) {
      ++changes;
      CHECK(r.events[i].at - r.events[i - 1].at >= s.cooldown);
    }
  }
  // One up per heavy phase, downs only in the light ones: 2 changes a cycle at most.
  CHECK(changes <= 200 / 10);
  CHECK(r.a.ups() == 10);
}
