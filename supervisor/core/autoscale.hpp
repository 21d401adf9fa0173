// autoscale.hpp — when to add or remove a worker, from the load (pure).
//
// Owns: the autoscaling decision for one program with `workers: {min, max}`:
// how long the pressure (a non-empty accept queue, or every reporting
// worker busy) or the calm (an empty queue and not every worker busy) has
// lasted, how long the longest-idle worker has been idle, the cooldown between direction changes, and the reason text of
// each decision. Must never: touch the OS or read the clock — samples come
// in with `now` (the daemon measures the queue when the core asks), and a
// decision is a target count that core/program applies with scale_to.
//
// Rules (preforkd(8), LOAD AWARENESS):
//  - up by `step` (at most to `max`) once the pressure has lasted `up_after`;
//  - down by one (at least to `min`) once the calm has lasted `down_after`
//    and, when some worker reports BUSY=, once some worker has been idle
//    without a break (its last word BUSY=0, no BUSY=1 since) for `down_after`
//    too: the pool shrinks only when a worker had nothing to do for that
//    long, not whenever one is between two requests (a steady load short of
//    saturation keeps every worker busy part of each second, and must not
//    make the pool flap);
//  - and, with BUSY= workers, only when the workers that would remain would
//    have carried the load of the last `down_after` at no more than
//    `target_utilization`: mean busy workers over that window (from the
//    program's busy-seconds counter) <= (wanted - 1) x target_utilization.
//    An idle worker is not proof that it is spare: under a steady load at
//    half of 16 workers, the last ones in accept order sit idle for a second
//    now and then, and taking one away makes bursts queue. Programs whose
//    workers never say BUSY= keep the queue-only rule. Scale-up does not use
//    the figure: it waits for evidence of waiting (a queue, every worker
//    busy), and a mean over a short up_after is mostly noise. Only while
//    every wanted worker is live: a worker in
//    backoff (or still starting) is not capacity, and removing a healthy one
//    then would shrink the pool twice. Which worker goes is core/program's
//    choice: the longest idle (else the highest slot);
//  - after a decision both clocks restart: each further step needs a full
//    up_after (or down_after) of its own;
//  - at most one direction change per `cooldown`; `preforkctl scale` (or a
//    reload's in-place change) restarts the cooldown, during which no
//    automatic decision is taken;
//  - sampled every up_after / 4, at least every 1 s and at most every 50 ms.
#pragma once

#include <cstdint>
#include <deque>
#include <string>

#include "core/worker.hpp"

namespace preforkd::core {

struct AutoscaleSettings {
  uint32_t min = 1;
  uint32_t max = 1;
  Duration up_after{1000};
  Duration down_after{30000};
  Duration cooldown{10000};
  uint32_t step = 1;
  uint32_t target_utilization = 50;  // percent, 1-100
};

// What the daemon and the core know at one sample.
struct LoadSample {
  uint64_t queue = 0;      // connections waiting, summed over the program's listeners
  uint32_t busy = 0;       // workers whose last word was BUSY=1
  uint32_t reporting = 0;  // workers that said BUSY= at all
  uint32_t live = 0;       // wanted workers with a process that is not in backoff
  uint32_t wanted = 0;     // the current wanted count
  // When the longest-idle worker said BUSY=0 (the earliest such time among
  // the wanted workers whose last word is BUSY=0); kNever when none is idle.
  TimePoint idle_since = kNever;
  // Seconds the program's workers have been busy, ever (a counter that only
  // grows: ProgramState::busy_seconds); its rate is the mean busy workers.
  double busy_seconds = 0;
};

struct ScaleDecision {
  enum class Direction { None, Up, Down };
  Direction direction = Direction::None;
  uint32_t target = 0;  // with Up or Down
  std::string reason;   // "queue 37 for 1.0s" / "every reporting worker busy for 1.0s" / "queue empty for 30.0s" /
                        // "a worker idle for 31.2s, 2.1 busy on average over 30.0s"
};

class Autoscaler {
 public:
  explicit Autoscaler(AutoscaleSettings s = {}) : s_(s) {}
  const AutoscaleSettings& settings() const { return s_; }
  // A reload that changes the settings applies in place; the clocks go on.
  void set_settings(const AutoscaleSettings& s) { s_ = s; }

  ScaleDecision sample(const LoadSample& load, TimePoint now);
  // The operator set the count (preforkctl scale): the cooldown restarts.
  void manual(TimePoint now);
  // How often to sample (see the rules above).
  Duration period() const;

  // Mean busy workers over the last down_after (at least; the window starts
  // at a checkpoint up to down_after / 16 older), or -1 before the samples
  // cover down_after. `window` gets the window's length.
  double mean_busy(TimePoint now, double busy_seconds, Duration* window = nullptr) const;

  uint64_t ups() const { return ups_; }
  uint64_t downs() const { return downs_; }

 private:
  AutoscaleSettings s_;
  TimePoint pressure_since_ = kNever;
  TimePoint calm_since_ = kNever;
  ScaleDecision::Direction last_ = ScaleDecision::Direction::None;
  TimePoint last_change_ = kNever;  // of the last decision taken, automatic or not
  TimePoint hold_until_{};          // after a manual change: no decision before
  uint64_t ups_ = 0, downs_ = 0;
  // Checkpoints of LoadSample::busy_seconds, one per down_after / 16 at most,
  // oldest first, the oldest the newest one at least down_after old: bounded
  // (about 18) whatever the sampling period and down_after.
  struct Mark {
    TimePoint at;
    double busy_seconds;
  };
  std::deque<Mark> marks_;
  void record(TimePoint now, double busy_seconds);
};

}  // namespace preforkd::core
