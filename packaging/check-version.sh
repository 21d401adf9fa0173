#!/bin/sh
# One version (STYLE 3.12): CMake's project version, the top entry of
# packaging/debian/changelog and `preforkd -V` must agree.
# Usage: check-version.sh CMAKE_VERSION [PREFORKD_BINARY]
set -eu
here=$(cd "$(dirname "$0")" && pwd)
cmake_version=$1
# "preforkd (0.1.0) unstable; urgency=medium": the native package's version
# is the upstream one; a Debian revision (-N) or an epoch (N:) would not count.
changelog=$(sed -n '1s/^[^ ]* (\([^)]*\)).*/\1/p' "$here/debian/changelog")
upstream=$(echo "$changelog" | sed -e 's/^[0-9]*://' -e 's/-[^-]*$//')
status=0
if [ "$upstream" != "$cmake_version" ]; then
  echo "packaging/debian/changelog says $changelog, CMakeLists.txt says $cmake_version" >&2
  status=1
fi
if [ $# -ge 2 ]; then
  said=$("$2" -V)
  if [ "$said" != "preforkd $cmake_version" ]; then
    echo "$2 -V says \"$said\", CMakeLists.txt says $cmake_version" >&2
    status=1
  fi
fi
[ $status -eq 0 ] && echo "version $cmake_version everywhere"
exit $status
