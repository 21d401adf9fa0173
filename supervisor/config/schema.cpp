// schema.cpp — the tables of schema.hpp and the readers of the plain kinds of
// value (durations, sizes, whole numbers, booleans, names from a list, paths,
// signals).
#include "config/schema.hpp"

#include <fmt/format.h>

#include <cstring>

#include "config/load_detail.hpp"
#include "config/signals.hpp"
#include "config/suggest.hpp"
#include "config/units.hpp"
#include "sys/io.hpp"

namespace preforkd::config::schema {

const char* to_string(Reload reload) {
  switch (reload) {
    case Reload::RestartsWorkers: return "restarts workers";
    case Reload::InPlace: return "applies in place";
    case Reload::Kept: return "kept until preforkd restarts";
    case Reload::Refused: return "cannot change";
  }
  return "?";
}

std::string quote(const std::string& s) {
  bool plain = !s.empty() && s != "null" && s != "true" && s != "false";
  for (char c : s) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '-' || c == '.' || c == '/' || c == '+' || c == '@' ||
                    c == '%' || c == '=' || c == ',';
    if (!ok) plain = false;
  }
  if (plain) return s;
  std::string out = "\"";
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (u < 0x20 || u == 0x7f) {
      out += fmt::format("\\x{:02x}", u);
    } else {
      out += c;
    }
  }
  return out + "\"";
}

namespace {

using Names = std::vector<std::string_view>;

// ---- readers: Value -> T, or nullopt after reporting why ------------------

std::optional<Duration> duration(Value& v) {
  auto s = v.scalar();
  if (!s) return std::nullopt;
  UnitError why;
  auto d = parse_duration(*s, &why);
  if (!d) v.error(why.message);
  return d;
}

std::optional<Duration> positive_duration(Value& v) {
  auto d = duration(v);
  if (d && d->count() == 0) {
    v.error("must be greater than 0");
    return std::nullopt;
  }
  return d;
}

std::optional<uint64_t> size(Value& v) {
  auto s = v.scalar();
  if (!s) return std::nullopt;
  UnitError why;
  auto n = parse_size(*s, &why);
  if (!n) v.error(why.message);
  return n;
}

std::function<std::optional<uint64_t>(Value&)> whole(uint64_t min, uint64_t max) {
  return [min, max](Value& v) -> std::optional<uint64_t> {
    auto s = v.scalar();
    if (!s) return std::nullopt;
    const auto n = parse_uint(*s);
    if (!n || *n < min || *n > max) {
      v.error(fmt::format("must be a whole number from {} to {}, got `{}`", min, max, *s));
      return std::nullopt;
    }
    return n;
  };
}

std::optional<uint64_t> any_whole(Value& v) {
  auto s = v.scalar();
  if (!s) return std::nullopt;
  auto n = parse_uint(*s);
  if (!n) v.error(fmt::format("must be a whole number >= 0, got `{}`", *s));
  return n;
}

// "`a`, `b` or `c`" (quoted) or "a, b or c" (the man page's type).
std::string one_of(const Names& names, bool backticks) {
  std::string out;
  for (std::size_t i = 0; i < names.size(); ++i) {
    if (i > 0) out += i + 1 == names.size() ? " or " : ", ";
    out += backticks ? fmt::format("`{}`", names[i]) : std::string(names[i]);
  }
  return out;
}

std::string did_you_mean(std::string_view word, const Names& candidates) {
  const auto s = suggest(word, candidates);
  return s ? fmt::format(" (did you mean `{}`?)", *s) : std::string();
}

std::optional<int> signal_number(Value& v) {
  auto s = v.scalar();
  if (!s) return std::nullopt;
  if (auto sig = parse_signal(*s)) return sig;
  Names names;
  for (int i = 1; i <= 31; ++i) names.push_back(signal_name(i));
  std::string_view word = *s;
  if (word.size() > 3 && (word[0] == 'S' || word[0] == 's') && (word[1] == 'I' || word[1] == 'i') &&
      (word[2] == 'G' || word[2] == 'g')) {
    word.remove_prefix(3);  // suggest `TERM` for `SIGTREM` too
  }
  const std::string hint = did_you_mean(word, names);
  v.error(fmt::format("unknown signal `{}`{}", *s,
                      hint.empty() ? ": expected a name like `TERM` or a number from 1 to 31" : hint));
  return std::nullopt;
}

// A numeric uid/gid: any 32-bit value but (id_t)-1, which means "no change" to set*id().
bool numeric_id(const std::string& text) {
  const auto n = parse_uint(text);
  return n && *n < 0xffffffffULL;
}

// A user or group: a numeric id, or a name the system knows.
std::function<std::optional<std::string>(Value&)> identity(bool user) {
  return [user](Value& v) -> std::optional<std::string> {
    auto name = v.scalar();
    if (!name) return std::nullopt;
    if (numeric_id(*name) || (user ? sys::user_exists(*name) : sys::group_exists(*name))) return name;
    v.error(fmt::format("unknown {} `{}`", user ? "user" : "group", *name));
    return std::nullopt;
  };
}

std::optional<mode_t> octal_mode(Value& v) {
  auto s = v.scalar();
  if (!s) return std::nullopt;
  std::string why;
  auto m = detail::parse_umask(*s, &why);
  if (!m) v.error(why);
  return m;
}

std::optional<std::string> directory(Value& v) {
  auto dir = v.path();
  if (!dir) return std::nullopt;
  sys::FileType type{};
  if (int err = sys::file_type(*dir, type)) {
    v.error(fmt::format("`{}`: {}", *dir, std::strerror(err)));
  } else if (type != sys::FileType::Directory) {
    v.error(fmt::format("`{}`: not a directory", *dir));
  } else {
    return dir;
  }
  return std::nullopt;
}

std::optional<Output> output(Value& v) {
  if (v.is_null()) return Output{Output::Kind::Null, {}};
  auto s = v.scalar();
  if (!s) return std::nullopt;
  if (*s == "log") return Output{Output::Kind::Log, {}};
  if (*s == "inherit") return Output{Output::Kind::Inherit, {}};
  if (*s == "null") return Output{Output::Kind::Null, {}};  // `"null"` quoted, or `!!str null`
  if (auto path = v.path()) return Output{Output::Kind::File, *path};
  return std::nullopt;
}

// "25%" -> 25, or nullopt (and no error) when it is not a percentage at all.
std::optional<uint64_t> percent(const std::string& s) {
  if (s.empty() || s.back() != '%') return std::nullopt;
  return parse_uint(std::string_view(s).substr(0, s.size() - 1));
}

// ---- printers ------------------------------------------------------------

std::string show_duration(const Duration& d) { return format_duration(d); }
std::string show_bool(const bool& b) { return b ? "true" : "false"; }
std::string show_opt(const std::optional<std::string>& s) { return s ? quote(*s) : "null"; }
template <class T>
std::string show_number(const T& n) {
  return fmt::format("{}", n);
}
std::string show_output(const Output& o) {
  return o.kind == Output::Kind::File ? quote(o.path) : to_string(o.kind);
}

// ---- field builders --------------------------------------------------------

// A key whose value is one member of S, read by `parse` and printed by `print`.
template <class S, class T, class R>
Field<S> plain(std::string key, T S::*member, std::string type, Reload reload, std::string doc, R parse,
               std::string (*print)(const T&)) {
  Field<S> f;
  f.key = std::move(key);
  f.type = std::move(type);
  f.reload = reload;
  f.doc = std::move(doc);
  f.load = [member, parse](Value& v, S& s) {
    if (auto x = parse(v)) s.*member = static_cast<T>(*x);
  };
  f.same = [member](const S& a, const S& b) { return a.*member == b.*member; };
  f.show = [member, print](const S& s) { return print(s.*member); };
  return f;
}

template <class S>
Field<S> duration_field(std::string key, Duration S::*m, Reload r, std::string doc,
                        std::string type = "Duration") {
  return plain(std::move(key), m, std::move(type), r, std::move(doc), duration, show_duration);
}

template <class S>
Field<S> bool_field(std::string key, bool S::*m, Reload r, std::string doc) {
  return plain(std::move(key), m, "Boolean", r, std::move(doc), [](Value& v) { return v.boolean(); },
               show_bool);
}

// A value that may be null: null keeps the default (nullopt).
template <class S, class T, class R>
Field<S> nullable(std::string key, std::optional<T> S::*m, std::string type, Reload r, std::string doc, R parse,
                  std::string (*print)(const std::optional<T>&)) {
  auto f = plain(std::move(key), m, std::move(type), r, std::move(doc), parse, print);
  f.load = [m, parse](Value& v, S& s) {
    if (v.is_null()) return;
    if (auto x = parse(v)) s.*m = *x;
  };
  return f;
}

template <class S>
Field<S> path_or_null(std::string key, std::optional<std::string> S::*m, Reload r, std::string doc) {
  return nullable(std::move(key), m, "Path or null", r, std::move(doc), [](Value& v) { return v.path(); },
                  show_opt);
}

// One of `names`, stored as the enum of the same index in `values`.
template <class S, class E>
Field<S> choice(std::string key, E S::*m, Names names, std::vector<E> values, Reload r, std::string doc) {
  auto parse = [names, values](Value& v) -> std::optional<E> {
    auto s = v.scalar();
    if (!s) return std::nullopt;
    for (std::size_t i = 0; i < names.size(); ++i)
      if (*s == names[i]) return values[i];
    v.error(fmt::format("expected {}, got `{}`{}", one_of(names, true), *s, did_you_mean(*s, names)));
    return std::nullopt;
  };
  return plain(std::move(key), m, one_of(names, false), r, std::move(doc), parse,
               +[](const E& e) { return std::string(to_string(e)); });
}

// A key that load.cpp reads; compared by `same`, printed by `print` (or show).
template <class S>
Field<S> custom(std::string key, std::string type, std::string default_doc, Reload r, std::string doc,
                std::function<bool(const S&, const S&)> same,
                std::function<std::vector<std::string>(const S&)> print) {
  Field<S> f;
  f.key = std::move(key);
  f.type = std::move(type);
  f.default_doc = std::move(default_doc);
  f.reload = r;
  f.doc = std::move(doc);
  f.same = std::move(same);
  f.print = std::move(print);
  return f;
}

// A map key (backoff, reload) whose own keys are the table `sub`.
template <class S, class Sub>
Field<S> map_field(std::string key, Sub S::*m, const std::vector<Field<Sub>>& sub, std::string type, Reload r,
                   std::string doc) {
  Field<S> f;
  f.key = std::move(key);
  f.type = std::move(type);
  f.default_doc = "-";
  f.reload = r;
  f.doc = std::move(doc);
  f.same = [m, &sub](const S& a, const S& b) { return same(sub, a.*m, b.*m); };
  // {min: 100ms, max: 30s, reset_after: 10s}
  f.show = [m, &sub](const S& s) {
    std::string out;
    for (const auto& x : sub) out += (out.empty() ? "{" : ", ") + x.key + ": " + x.show(s.*m);
    return out + "}";
  };
  return f;
}

}  // namespace

// ---------------------------------------------------------------------------
// the tables: in the order dump() prints them
// ---------------------------------------------------------------------------

const std::vector<Field<Backoff>>& backoff_fields() {
  static const std::vector<Field<Backoff>> fields{
      duration_field("min", &Backoff::min, Reload::InPlace, "delay before the second respawn of a streak"),
      duration_field("max", &Backoff::max, Reload::InPlace, "longest delay between respawns",
                     "Duration, not less than min"),
      duration_field("reset_after", &Backoff::reset_after, Reload::InPlace,
                     "readiness held this long ends a failure streak"),
  };
  return fields;
}

const std::vector<Field<ReloadPolicy>>& reload_fields() {
  static const std::vector<Field<ReloadPolicy>> fields = [] {
    Field<ReloadPolicy> batch;
    batch.key = "batch";
    batch.type = "Whole number from 1, or a percentage from 1% to 100% of workers";
    batch.reload = Reload::InPlace;
    batch.doc = "workers a rollout replaces at a time after the canary";
    batch.load = [](Value& v, ReloadPolicy& r) {
      auto s = v.scalar();
      if (!s) return;
      if (!s->empty() && s->back() == '%') {
        const auto n = percent(*s);
        if (!n || *n < 1 || *n > 100) {
          v.error(fmt::format("a percentage must be from 1% to 100%, got `{}`", *s));
          return;
        }
        r.batch = static_cast<uint32_t>(*n);
        r.batch_percent = true;
        return;
      }
      const auto n = parse_uint(*s);
      if (!n || *n < 1 || *n > UINT32_MAX) {
        v.error(fmt::format("expected a whole number >= 1 or a percentage like `25%`, got `{}`", *s));
        return;
      }
      r.batch = static_cast<uint32_t>(*n);
      r.batch_percent = false;
    };
    batch.same = [](const ReloadPolicy& a, const ReloadPolicy& b) {
      return a.batch == b.batch && a.batch_percent == b.batch_percent;
    };
    batch.show = [](const ReloadPolicy& r) { return fmt::format("{}{}", r.batch, r.batch_percent ? "%" : ""); };
    return std::vector<Field<ReloadPolicy>>{
        batch,
        duration_field("settle", &ReloadPolicy::settle, Reload::InPlace,
                       "how long a new worker stays ready before an old one stops"),
        duration_field("guard", &ReloadPolicy::guard, Reload::InPlace,
                       "how long after a rollout a failure rolls the program back"),
    };
  }();
  return fields;
}

const std::vector<Field<Autoscale>>& autoscale_fields() {
  static const std::vector<Field<Autoscale>> fields = [] {
    Field<Autoscale> target = plain(
        "target_utilization", &Autoscale::target_utilization, "percentage, 1% to 100%", Reload::InPlace,
        "scale down only if the remaining workers stay at most this busy",
        [](Value& v) -> std::optional<uint64_t> {
          auto s = v.scalar();
          if (!s) return std::nullopt;
          const auto n = percent(*s);
          if (!n || *n < 1 || *n > 100) {
            v.error(fmt::format("expected a percentage from 1% to 100% like `50%`, got `{}`", *s));
            return std::nullopt;
          }
          return n;
        },
        +[](const uint32_t& n) { return fmt::format("{}%", n); });
    return std::vector<Field<Autoscale>>{
        plain("up_after", &Autoscale::up_after, "duration", Reload::InPlace,
              "queues non-empty (or every worker busy) this long: scale up", positive_duration, show_duration),
        plain("down_after", &Autoscale::down_after, "duration", Reload::InPlace,
              "queues empty and a worker idle this long: scale down by one", positive_duration,
              show_duration),
        duration_field("cooldown", &Autoscale::cooldown, Reload::InPlace,
                       "at most one change of direction per cooldown", "duration"),
        plain("step", &Autoscale::step, "1 to 10000", Reload::InPlace, "workers added per scale-up",
              whole(1, 10000), show_number<uint32_t>),
        target,
    };
  }();
  return fields;
}

const std::vector<Field<Supervisor>>& supervisor_fields() {
  using S = Supervisor;
  static const std::vector<Field<S>> fields{
      [] {  // load.cpp: a unix socket path, claimed like a listen address
        auto f = custom<S>(
            "control_socket", "Path", "", Reload::Kept, "the unix socket preforkctl talks to",
            [](const S& a, const S& b) { return a.control_socket == b.control_socket; }, nullptr);
        f.show = [](const S& s) { return quote(s.control_socket); };
        return f;
      }(),
      nullable("control_group", &S::control_group, "Group name or numeric gid, or null", Reload::Kept,
               "a group that may use the control socket", identity(false), show_opt),
      path_or_null("pidfile", &S::pidfile, Reload::Kept, "file preforkd writes its pid into"),
      choice("log.level", &S::log_level, {"trace", "debug", "info", "warn", "error"},
             {LogLevel::Trace, LogLevel::Debug, LogLevel::Info, LogLevel::Warn, LogLevel::Error},
             Reload::InPlace, "the lowest level logged"),
      path_or_null("log.file", &S::log_file, Reload::InPlace, "file preforkd logs to; null: standard error"),
      [] {  // load.cpp: an address, claimed like a listen one
        auto f = custom<S>(
            "metrics", "host:port or [v6]:port, or null", "", Reload::Kept,
            "address of the /metrics and /readyz HTTP listener",
            [](const S& a, const S& b) { return a.metrics == b.metrics && a.metrics_address == b.metrics_address; },
            nullptr);
        f.show = [](const S& s) { return show_opt(s.metrics); };
        return f;
      }(),
      duration_field("shutdown_timeout", &S::shutdown_timeout, Reload::InPlace,
                     "bound on a graceful shutdown, then SIGKILL"),
  };
  return fields;
}

const std::vector<Field<Program>>& program_fields() {
  using P = Program;
  static const std::vector<Field<P>> fields{
      custom<P>(
          "command", "String or list of strings", "required", Reload::RestartsWorkers,
          "the program and its arguments",
          [](const P& a, const P& b) { return a.command == b.command && a.executable == b.executable; },
          [](const P& p) {
            std::string argv;
            for (const auto& a : p.command) argv += (argv.empty() ? "" : ", ") + quote(a);
            return std::vector<std::string>{"command: [" + argv + "]", "executable: " + quote(p.executable)};
          }),
      [] {
        auto f = custom<P>(
            "workers", "Whole number 0 to 10000, auto, or {min: m, max: n}", "", Reload::InPlace,
            "how many copies run, or the autoscaling bounds",
            [](const P& a, const P& b) { return a.workers == b.workers; }, nullptr);
        f.show = [](const P& p) { return fmt::format("{}", p.workers); };
        return f;
      }(),
      [] {  // its keys: autoscale_fields(); min and max come from `workers`
        auto f = custom<P>(
            "autoscale", "Map; only with workers: {min, max}", "-", Reload::InPlace,
            "the autoscaler's tunables", [](const P& a, const P& b) { return a.autoscale == b.autoscale; },
            [](const P& p) -> std::vector<std::string> {
              if (!p.autoscale) return {};
              std::string out = fmt::format("autoscale: {{min: {}, max: {}", p.autoscale->min, p.autoscale->max);
              for (const auto& x : autoscale_fields()) out += ", " + x.key + ": " + x.show(*p.autoscale);
              return {out + "}"};
            });
        f.reload_key = "workers";  // a reload reports both as a change of `workers`
        return f;
      }(),
      custom<P>(
          "listen", "List of addresses", "empty", Reload::RestartsWorkers, "the program's listening sockets",
          [](const P& a, const P& b) { return a.listen == b.listen; },
          [](const P& p) {
            std::vector<std::string> out{p.listen.empty() ? "listen: []" : "listen:"};
            for (const auto& l : p.listen)
              out.push_back(fmt::format("  - {{key: {}, name: {}, text: {}}}", quote(l.key()), quote(l.name),
                                        quote(l.text)));
            return out;
          }),
      plain("backlog", &P::backlog, "Whole number 1 to 65535", Reload::InPlace, "listen(2) backlog",
            whole(1, 65535), show_number<int>),
      bool_field("reuseport", &P::reuseport, Reload::Refused, "one SO_REUSEPORT socket per worker slot"),
      custom<P>(
          "environment", "Map of names to strings", "empty", Reload::RestartsWorkers,
          "variables added to the worker's environment",
          [](const P& a, const P& b) { return a.environment == b.environment; },
          [](const P& p) {
            std::vector<std::string> out{p.environment.empty() ? "environment: {}" : "environment:"};
            for (const auto& [k, v] : p.environment) out.push_back("  " + quote(k) + ": " + quote(v));
            return out;
          }),
      nullable("directory", &P::directory, "Path or null", Reload::RestartsWorkers,
               "the worker's working directory", directory, show_opt),
      nullable("user", &P::user, "User name or numeric uid, or null", Reload::RestartsWorkers,
               "run the worker as this user", identity(true), show_opt),
      nullable("group", &P::group, "Group name or numeric gid, or null", Reload::RestartsWorkers,
               "the worker's primary group", identity(false), show_opt),
      nullable("umask", &P::umask, "Octal number or null", Reload::RestartsWorkers, "the worker's umask", octal_mode,
               +[](const std::optional<mode_t>& m) {
                 return m ? fmt::format("{:04o}", *m) : std::string("null");
               }),
      custom<P>(
          "rlimits", "Map of resource names to limits", "empty", Reload::RestartsWorkers,
          "resource limits set for the worker", [](const P& a, const P& b) { return a.rlimits == b.rlimits; },
          [](const P& p) {
            std::vector<std::string> out{p.rlimits.empty() ? "rlimits: {}" : "rlimits:"};
            for (const auto& r : p.rlimits)
              out.push_back("  " + r.name + ": " +
                            (r.value == sys::kRlimitInfinity ? std::string("unlimited") : std::to_string(r.value)));
            return out;
          }),
      choice("restart", &P::restart, {"always", "on-failure", "never"},
             {Restart::Always, Restart::OnFailure, Restart::Never}, Reload::InPlace,
             "when a worker that exits on its own is respawned"),
      map_field("backoff", &P::backoff, backoff_fields(), "Map of min, max, reset_after", Reload::InPlace,
                "delays between respawns after failures"),
      map_field("reload", &P::reload, reload_fields(), "Map of batch, settle and guard", Reload::InPlace,
                "how a rollout replaces workers"),
      choice("ready", &P::ready, {"exec", "notify"}, {ReadyMode::Exec, ReadyMode::Notify}, Reload::InPlace,
             "when a worker counts as ready"),
      plain("start_timeout", &P::start_timeout, "Duration, more than 0", Reload::InPlace,
            "with ready: notify, how long a worker may take to say READY=1", positive_duration, show_duration),
      duration_field("watchdog_timeout", &P::watchdog_timeout, Reload::RestartsWorkers,
                     "a ready worker silent this long is killed (0s: off)"),
      plain("stop_signal", &P::stop_signal, "Signal name or number", Reload::InPlace,
            "the signal that asks a worker to stop", signal_number,
            +[](const int& sig) { return std::string(signal_name(sig)); }),
      duration_field("stop_timeout", &P::stop_timeout, Reload::InPlace,
                     "how long a worker may take to exit before SIGKILL"),
      bool_field("kill_group", &P::kill_group, Reload::InPlace, "signal the worker's process group"),
      choice("orphans", &P::orphans, {"stop", "keep"}, {OrphanMode::Stop, OrphanMode::Keep}, Reload::InPlace,
             "what happens to the processes a worker leaves behind"),
      bool_field("notify_socket", &P::notify_socket, Reload::RestartsWorkers,
                 "set NOTIFY_SOCKET in the worker's environment"),
      plain("max_requests", &P::max_requests, "Whole number", Reload::InPlace,
            "recycle a worker after this many requests (0: off)", any_whole, show_number<uint64_t>),
      plain("max_memory", &P::max_memory, "Size", Reload::InPlace,
            "recycle a worker above this resident size (0: off)", size, show_number<uint64_t>),
      plain("ready_min", &P::ready_min, "Whole number from 0 to 100000", Reload::InPlace,
            "ready workers GET /readyz needs from this program", whole(0, 100000), show_number<uint32_t>),
      plain("stdout", &P::stdout_target, "log, inherit, null or a path", Reload::RestartsWorkers,
            "where the worker's fd 1 goes", output, show_output),
      plain("stderr", &P::stderr_target, "log, inherit, null or a path", Reload::RestartsWorkers,
            "where the worker's fd 2 goes", output, show_output),
  };
  return fields;
}

}  // namespace preforkd::config::schema
