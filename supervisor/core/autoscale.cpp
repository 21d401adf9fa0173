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

void Autoscaler::record(TimePoint now, double busy_seconds) {
  // A counter that went back (it never should): the history is useless.
  if (!marks_.empty() && (busy_seconds < marks_.back().busy_seconds || now < marks_.back().at)) marks_.clear();
  const Duration spacing = std::max<Duration>(s_.down_after / 16, Duration{1});
  if (marks_.empty() || now - marks_.back().at >= spacing) marks_.push_back({now, busy_seconds});
  // Keep one mark at least down_after old (the window's start), none older.
  while (marks_.size() >= 2 && now - marks_[1].at >= s_.down_after) marks_.pop_front();
}

double Autoscaler::mean_busy(TimePoint now, double busy_seconds, Duration* window) const {
  if (marks_.empty() || now - marks_.front().at < s_.down_after) return -1;
  const auto span = std::chrono::duration_cast<Duration>(now - marks_.front().at);
  if (window != nullptr) *window = span;
  return std::max(0.0, busy_seconds - marks_.front().busy_seconds) / std::chrono::duration<double>(span).count();
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
  // ... and the workers that would remain would have carried the last
  // down_after's load at no more than target_utilization: an idle worker is
  // not proof that it is spare (the last ones in accept order idle now and
  // then under a steady load half the pool's size).
  record(now, load.busy_seconds);
  Duration window{0};
  const double mean = mean_busy(now, load.busy_seconds, &window);
  const bool light_enough =
      load.reporting == 0 ||
      (mean >= 0 && load.wanted > 0 &&
       mean <= static_cast<double>(load.wanted - 1) * static_cast<double>(s_.target_utilization) / 100.0 + 1e-9);

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
  } else if (calm && now - calm_since_ >= s_.down_after && idle_enough && light_enough && load.wanted > s_.min &&
             load.live >= load.wanted && may_turn(Dir::Down)) {
    d.direction = Dir::Down;
    d.target = std::max<uint32_t>(s_.min, load.wanted - 1);
    if (load.reporting > 0) {
      char busy[32];
      std::snprintf(busy, sizeof busy, "%.1f", mean);
      d.reason = "a worker idle for " + seconds(std::chrono::duration_cast<Duration>(now - load.idle_since)) + ", " +
                 busy + " busy on average over " + seconds(window);
    } else {
      d.reason = "queue empty for " + seconds(std::chrono::duration_cast<Duration>(now - calm_since_));
    }
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
