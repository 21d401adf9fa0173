#include "sys/identity.hpp"

#include <grp.h>
#include <pwd.h>

#include <cstdlib>
#include <vector>

namespace preforkd::sys {

namespace {

std::optional<unsigned long> parse_id(const std::string& s) {
  if (s.empty() || s.size() > 10) return std::nullopt;
  for (char c : s)
    if (c < '0' || c > '9') return std::nullopt;
  return std::strtoul(s.c_str(), nullptr, 10);
}

std::optional<UserInfo> from_passwd(const passwd& pw) {
  UserInfo u;
  u.uid = pw.pw_uid;
  u.gid = pw.pw_gid;
  u.name = pw.pw_name;
  u.home = pw.pw_dir ? pw.pw_dir : "/";
  u.shell = pw.pw_shell ? pw.pw_shell : "/bin/sh";
  int n = 32;
  std::vector<gid_t> groups(static_cast<size_t>(n));
  while (getgrouplist(pw.pw_name, pw.pw_gid, groups.data(), &n) < 0) groups.resize(static_cast<size_t>(n) * 2);
  groups.resize(static_cast<size_t>(n));
  u.groups = std::move(groups);
  return u;
}

}  // namespace

std::optional<UserInfo> lookup_uid(uid_t uid) {
  passwd pw{};
  passwd* found = nullptr;
  std::vector<char> buf(16384);
  if (getpwuid_r(uid, &pw, buf.data(), buf.size(), &found) != 0 || found == nullptr) return std::nullopt;
  return from_passwd(pw);
}

std::optional<UserInfo> lookup_user(const std::string& name_or_id) {
  passwd pw{};
  passwd* found = nullptr;
  std::vector<char> buf(16384);
  if (getpwnam_r(name_or_id.c_str(), &pw, buf.data(), buf.size(), &found) == 0 && found != nullptr)
    return from_passwd(pw);
  if (auto id = parse_id(name_or_id)) {
    if (auto u = lookup_uid(static_cast<uid_t>(*id))) return u;
    UserInfo u;
    u.uid = static_cast<uid_t>(*id);
    u.gid = static_cast<gid_t>(*id);
    u.name = name_or_id;
    u.home = "/";
    u.shell = "/bin/sh";
    u.groups = {u.gid};
    return u;
  }
  return std::nullopt;
}

std::optional<gid_t> lookup_group(const std::string& name_or_id) {
  group gr{};
  group* found = nullptr;
  std::vector<char> buf(16384);
  if (getgrnam_r(name_or_id.c_str(), &gr, buf.data(), buf.size(), &found) == 0 && found != nullptr)
    return gr.gr_gid;
  if (auto id = parse_id(name_or_id)) return static_cast<gid_t>(*id);
  return std::nullopt;
}

}  // namespace preforkd::sys
