// rollout.hpp — replacing a program's running workers, new before old.
//
// Owns: the order of a rolling replacement (`preforkctl restart`, a reload,
// or a rollback to the previous configuration, core/guard): one canary alone, then batches of reload.batch; each slot's
// successor must be ready for reload.settle (proven) before its old worker
// is stopped and the next batch starts; a successor that fails aborts the
// rollout and gives its slot back to the old worker, which never stopped
// serving. Pure: advance() is called after every event (Policy::tick).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/action.hpp"

namespace preforkd::core {

struct ProgramState;
struct Ctx;

struct Rollout {
  enum class Kind { Restart, Reload, Rollback };
  Kind kind = Kind::Restart;
  struct Item {
    int slot = 0;
    uint64_t spawn_seq = 0;      // the process to replace (a later one is new already)
    unsigned streak_before = 0;  // the slot's failure streak when its successor was started
  };
  std::vector<Item> todo;        // popped from the back: slot 0 first
  std::vector<Item> in_flight;   // the batch being replaced
  size_t batch = 1;              // after the canary
  unsigned replaced = 0;
  uint32_t scale_to = 0;         // reload: the count to reach once every old worker is replaced
  ClientId client = 0;           // restart, rollback: who waits for the answer (0: nobody)

  bool canary() const { return replaced == 0; }
};

// A rollout over the program's wanted workers, slot 0 first.
Rollout plan_rollout(const ProgramState& p, Rollout::Kind kind, size_t batch);

struct RolloutStep {
  enum class Result { Running, Done, Failed };
  Result result = Result::Running;
  std::string why;  // Failed
};

RolloutStep advance(ProgramState& p, Rollout& ro, Ctx& c);

}  // namespace preforkd::core
