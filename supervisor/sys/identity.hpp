// identity.hpp — users and groups resolved in the parent, never in a child
// (getpwnam may open files and take locks: T22).
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

namespace preforkd::sys {

struct UserInfo {
  uid_t uid = 0;
  gid_t gid = 0;
  std::string name;
  std::string home;
  std::string shell;
  std::vector<gid_t> groups;  // supplementary, from getgrouplist (includes gid)
};

// A user by name or numeric id; nullopt if unknown. A numeric id without a
// passwd entry gets gid = that same number and no supplementary groups.
std::optional<UserInfo> lookup_user(const std::string& name_or_id);
std::optional<UserInfo> lookup_uid(uid_t uid);
std::optional<gid_t> lookup_group(const std::string& name_or_id);

}  // namespace preforkd::sys
