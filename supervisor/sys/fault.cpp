#include "sys/fault.hpp"

#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <vector>

namespace preforkd::sys::fault {

namespace {

constexpr const char* kPoints[] = {"fork", "pipe2", "accept4", "epoll_ctl", "socket", "write", "open", "recvmsg"};
constexpr size_t kPointCount = sizeof kPoints / sizeof kPoints[0];

struct ErrnoName {
  const char* name;
  int value;
};
constexpr ErrnoName kErrnos[] = {
    {"EPERM", EPERM},           {"ENOENT", ENOENT},
    {"EINTR", EINTR},           {"EIO", EIO},
    {"ENXIO", ENXIO},           {"E2BIG", E2BIG},
    {"EBADF", EBADF},           {"ECHILD", ECHILD},
    {"EAGAIN", EAGAIN},         {"EWOULDBLOCK", EWOULDBLOCK},
    {"ENOMEM", ENOMEM},         {"EACCES", EACCES},
    {"EFAULT", EFAULT},         {"EBUSY", EBUSY},
    {"EEXIST", EEXIST},         {"ENODEV", ENODEV},
    {"ENOTDIR", ENOTDIR},       {"EISDIR", EISDIR},
    {"EINVAL", EINVAL},         {"ENFILE", ENFILE},
    {"EMFILE", EMFILE},         {"ENOTTY", ENOTTY},
    {"EFBIG", EFBIG},           {"ENOSPC", ENOSPC},
    {"ESPIPE", ESPIPE},         {"EROFS", EROFS},
    {"EPIPE", EPIPE},           {"ENAMETOOLONG", ENAMETOOLONG},
    {"ENOSYS", ENOSYS},         {"ELOOP", ELOOP},
    {"EPROTO", EPROTO},         {"ENOBUFS", ENOBUFS},
    {"EADDRINUSE", EADDRINUSE}, {"ECONNABORTED", ECONNABORTED},
    {"ECONNRESET", ECONNRESET}, {"ECONNREFUSED", ECONNREFUSED},
    {"ETIMEDOUT", ETIMEDOUT},   {"EDQUOT", EDQUOT},
};

struct Rule {
  size_t point;
  int err;
  uint64_t first;  // 1-based call number
  uint64_t count;  // 0: every call from `first` on
};

// The seam is process-wide by nature (it stands in for the kernel), hence
// this one function-local static; nothing else in preforkd is.
struct State {
  bool loaded = false;
  std::vector<Rule> rules;
  uint64_t calls[kPointCount] = {};
  uint64_t announced[kPointCount] = {};
};

// A rule with count 0 may fire on every call: say the first few, and that the rest are not said.
constexpr uint64_t kAnnounceMax = 10;

State& state() noexcept {
  static State s;
  return s;
}

int point_index(std::string_view name) noexcept {
  for (size_t i = 0; i < kPointCount; ++i)
    if (name == kPoints[i]) return static_cast<int>(i);
  return -1;
}

// Decimal digits only, at most 18 of them (no overflow); nullopt-like -1 otherwise.
long long parse_number(std::string_view s) noexcept {
  if (s.empty() || s.size() > 18) return -1;
  long long v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return -1;
    v = v * 10 + (c - '0');
  }
  return v;
}

std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  size_t start = 0;
  for (;;) {
    size_t end = s.find(sep, start);
    out.push_back(s.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start));
    if (end == std::string_view::npos) return out;
    start = end + 1;
  }
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// Parses every rule of `spec` into `out`; returns "" or why the spec is malformed.
std::string parse(const std::string& spec, std::vector<Rule>& out) {
  out.clear();
  for (std::string_view entry : split(spec, ',')) {
    entry = trim(entry);
    if (entry.empty()) continue;  // "a,,b" and a trailing comma are harmless
    auto bad = [&](const std::string& why) {
      out.clear();
      return "bad entry `" + std::string(entry) + "`: " + why;
    };
    auto fields = split(entry, ':');
    if (fields.size() < 3 || fields.size() > 4) return bad("expected point:ERRNO:nth[:count]");
    int point = point_index(fields[0]);
    if (point < 0) {
      std::string known;
      for (const char* p : kPoints) known += std::string(known.empty() ? "" : ", ") + p;
      return bad("unknown point `" + std::string(fields[0]) + "` (known: " + known + ")");
    }
    int err = 0;
    for (const auto& e : kErrnos)
      if (fields[1] == e.name) err = e.value;
    if (err == 0) {
      long long n = parse_number(fields[1]);
      if (n < 1 || n > 4095) return bad("unknown errno `" + std::string(fields[1]) + "`");
      err = static_cast<int>(n);
    }
    long long nth = parse_number(fields[2]);
    if (nth < 1) return bad("nth must be a number from 1");
    long long count = 1;
    if (fields.size() == 4) {
      count = parse_number(fields[3]);
      if (count < 0) return bad("count must be a number (0: every call from the nth on)");
    }
    out.push_back(Rule{static_cast<size_t>(point), err, static_cast<uint64_t>(nth), static_cast<uint64_t>(count)});
  }
  return {};
}

void say(const std::string& text) noexcept {
  ssize_t ignored = ::write(2, text.data(), text.size());  // not write_some: no fault point here
  (void)ignored;
}

void install(const std::string& spec) {
  State& s = state();
  s.loaded = true;
  for (auto& c : s.calls) c = 0;
  for (auto& a : s.announced) a = 0;
  std::string why = parse(spec, s.rules);
  if (!why.empty()) say("preforkd: PREFORKD_FAULTS ignored: " + why + "\n");
}

// "preforkd: PREFORKD_FAULTS: epoll_ctl call 5: injected ENOMEM\n", with no allocation.
void announce(size_t point, uint64_t call, int err) noexcept {
  uint64_t nth = ++state().announced[point];
  if (nth > kAnnounceMax) return;
  char buf[200];
  size_t n = 0;
  auto put = [&](const char* s) {
    while (*s != '\0' && n < sizeof buf - 1) buf[n++] = *s++;
  };
  auto put_number = [&](uint64_t v) {
    char digits[24];
    int k = 0;
    do {
      digits[k++] = static_cast<char>('0' + v % 10);
      v /= 10;
    } while (v != 0);
    while (k > 0 && n < sizeof buf - 1) buf[n++] = digits[--k];
  };
  put("preforkd: PREFORKD_FAULTS: ");
  put(kPoints[point]);
  put(" call ");
  put_number(call);
  put(": injected ");
  if (const char* name = errno_name(err))
    put(name);
  else
    put_number(static_cast<uint64_t>(err));
  if (nth == kAnnounceMax) put(" (further injections at this point are not announced)");
  put("\n");
  ssize_t ignored = ::write(2, buf, n);
  (void)ignored;
}

}  // namespace

void load_from_environment() {
  if (state().loaded) return;
  const char* spec = std::getenv("PREFORKD_FAULTS");
  install(spec != nullptr ? spec : "");
}

int injected(const char* point) noexcept {
  State& s = state();
  if (!s.loaded) {
    try {
      load_from_environment();
    } catch (...) {  // bad_alloc while parsing: inject nothing
      s.loaded = true;
      s.rules.clear();
    }
  }
  if (s.rules.empty()) return 0;
  int index = point_index(point);
  if (index < 0) return 0;
  auto i = static_cast<size_t>(index);
  uint64_t call = ++s.calls[i];
  for (const Rule& r : s.rules) {
    if (r.point != i || call < r.first) continue;
    if (r.count != 0 && call - r.first >= r.count) continue;
    announce(i, call, r.err);
    return r.err;
  }
  return 0;
}

void set_spec_for_testing(const std::string& spec) { install(spec); }

std::string check_spec(const std::string& spec) {
  std::vector<Rule> rules;
  return parse(spec, rules);
}

const char* errno_name(int err) noexcept {
  for (const auto& e : kErrnos)
    if (e.value == err) return e.name;
  return nullptr;
}

}  // namespace preforkd::sys::fault
