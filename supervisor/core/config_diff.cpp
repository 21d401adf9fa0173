#include "core/config_diff.hpp"

#include <algorithm>

#include "config/schema.hpp"

namespace preforkd::core {

namespace schema = config::schema;

namespace {

const config::Program* find(const std::vector<config::Program>& list, const std::string& name) {
  auto it = std::find_if(list.begin(), list.end(), [&](const config::Program& p) { return p.name == name; });
  return it == list.end() ? nullptr : &*it;
}

// A key reported once even when two fields share its name (workers, autoscale).
void add(std::vector<std::string>& into, const std::string& key) {
  if (std::find(into.begin(), into.end(), key) == into.end()) into.push_back(key);
}

// Each changed key goes where its schema row says (config/schema.cpp):
// what a worker is started with replaces the workers, the rest applies in place.
ProgramDiff compare(const config::Program& a, const config::Program& b) {
  ProgramDiff d;
  d.kind = ProgramDiff::Kind::Changed;
  d.name = a.name;
  d.workers_before = a.workers;
  d.workers_after = b.workers;
  for (const auto& f : schema::program_fields()) {
    if (f.same(a, b)) continue;
    if (f.reload == schema::Reload::RestartsWorkers) add(d.replace, f.name_on_reload());
    if (f.reload == schema::Reload::InPlace) add(d.in_place, f.name_on_reload());
  }
  if (d.replace.empty() && d.in_place.empty()) d.kind = ProgramDiff::Kind::Unchanged;
  return d;
}

}  // namespace

bool ConfigDiff::changes_anything() const {
  return !supervisor_in_place.empty() ||
         std::any_of(programs.begin(), programs.end(),
                     [](const ProgramDiff& p) { return p.kind != ProgramDiff::Kind::Unchanged; });
}

ConfigDiff diff(const config::Config& running, const config::Config& next) {
  ConfigDiff out;
  for (const auto& p : running.programs) {
    if (find(next.programs, p.name) != nullptr) continue;
    ProgramDiff d;
    d.kind = ProgramDiff::Kind::Removed;
    d.name = p.name;
    d.workers_before = p.workers;
    out.programs.push_back(std::move(d));
  }
  for (const auto& p : next.programs) {
    const config::Program* old = find(running.programs, p.name);
    if (old == nullptr) {
      ProgramDiff d;
      d.kind = ProgramDiff::Kind::Added;
      d.name = p.name;
      d.workers_after = p.workers;
      out.programs.push_back(std::move(d));
      continue;
    }
    // A key a running program cannot switch (reuseport: a shared socket or one
    // per slot, and a new one cannot be bound beside the old kind).
    for (const auto& f : schema::program_fields()) {
      if (f.reload == schema::Reload::Refused && !f.same(*old, p))
        out.errors.push_back("programs." + p.name + "." + f.key +
                             ": cannot be changed by a reload (restart preforkd for it)");
    }
    out.programs.push_back(compare(*old, p));
  }
  for (const auto& f : schema::supervisor_fields()) {
    if (f.same(running.supervisor, next.supervisor)) continue;
    if (f.reload == schema::Reload::InPlace) add(out.supervisor_in_place, f.name_on_reload());
    if (f.reload == schema::Reload::Kept) add(out.supervisor_kept, f.name_on_reload());
  }
  return out;
}

uint32_t batch_size(const config::ReloadPolicy& r, uint32_t workers) {
  uint64_t n = r.batch;
  if (r.batch_percent) n = (static_cast<uint64_t>(workers) * r.batch + 99) / 100;
  return static_cast<uint32_t>(std::max<uint64_t>(1, std::min<uint64_t>(n, workers == 0 ? 1 : workers)));
}

}  // namespace preforkd::core
