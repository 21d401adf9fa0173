#include "core/autoscale.hpp"

#include <algorithm>
#include <cstdio>

namespace preforkd::core {

namespace {

std::string seconds(Duration d) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1fs", static_cast<double>(d.count()) / 1000.0);
  return buf;
}

}  // namespace

Duration Autoscaler::period() const {
  return std::clamp<Duration>(s_.up_after / 4, Duration{50}, Duration{1000});
}

void Autoscaler::manual(TimePoint now) {
  last_change_ = now;
  hold_until_ = now + s_.cooldown;
  last_ = ScaleDecision::Direction::None;  // the operator's count is a fresh start
  pressure_since_ = calm_since_ = kNever;
}

ScaleDecision Autoscaler::sample(const LoadSample& load, TimePoint now) {
  using Dir = ScaleDecision::Direction;
  const bool all_busy = load.reporting > 0 && load.busy >= load.reporting;
  const bool pressure = load.queue > 0 || all_busy;
  const bool calm = load.queue == 0 && !all_busy;
  if (!pressure) pressure_since_ = kNever;
  else if (pressure_since_ == kNever) pressure_since_ = now;
  if (!calm) calm_since_ = kNever;
  else if (calm_since_ == kNever) calm_since_ = now;
  // Workers that say BUSY=: some one of them idle without a break for
  // down_after. Per sample "some worker not busy" would hold between any two
  // requests of a steady load and shrink a pool that is needed.
  const bool idle_enough =
      load.reporting == 0 || (load.idle_since != kNever && now >= load.idle_since && now - load.idle_since >= s_.down_after);

  ScaleDecision d;
  // Outside the bounds (a reload changed them): back inside at once.
  if (load.wanted > s_.max || load.wanted < s_.min) {
    d.direction = load.wanted > s_.max ? Dir::Down : Dir::Up;
    d.target = load.wanted > s_.max ? s_.max : s_.min;
    d.reason = std::to_string(load.wanted) + " outside min " + std::to_string(s_.min) + ", max " + std::to_string(s_.max);
    (d.direction == Dir::Up ? ups_ : downs_)++;
    last_ = d.direction;
    last_change_ = now;
    return d;
  }
  if (now < hold_until_) return d;
  auto may_turn = [&](Dir dir) {
    return last_ == Dir::None || last_ == dir || last_change_ == kNever || now - last_change_ >= s_.cooldown;
  };
  if (pressure && now - pressure_since_ >= s_.up_after && load.wanted < s_.max && may_turn(Dir::Up)) {
    d.direction = Dir::Up;
    d.target = std::min<uint32_t>(s_.max, load.wanted + std::max<uint32_t>(s_.step, 1));
    auto held = std::chrono::duration_cast<Duration>(now - pressure_since_);
    d.reason = load.queue > 0 ? "queue " + std::to_string(load.queue) + " for " + seconds(held)
                              : "every reporting worker busy (" + std::to_string(load.busy) + ") for " + seconds(held);
    ++ups_;
  } else if (calm && now - calm_since_ >= s_.down_after && idle_enough && load.wanted > s_.min &&
             load.live >= load.wanted && may_turn(Dir::Down)) {
    d.direction = Dir::Down;
    d.target = std::max<uint32_t>(s_.min, load.wanted - 1);
    d.reason = load.reporting > 0
                   ? "a worker idle for " + seconds(std::chrono::duration_cast<Duration>(now - load.idle_since))
                   : "queue empty for " + seconds(std::chrono::duration_cast<Duration>(now - calm_since_));
    ++downs_;
  } else {
    return d;
  }
  last_ = d.direction;
  last_change_ = now;
  // Each further step needs a full up_after / down_after of its own.
  if (pressure_since_ != kNever) pressure_since_ = now;
  if (calm_since_ != kNever) calm_since_ = now;
  return d;
}

}  // namespace preforkd::core
