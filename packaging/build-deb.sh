#!/usr/bin/env bash
# build-deb.sh — builds preforkd_<version>_<arch>.deb from a clean copy of the
# repository, so that nothing untracked or left in build folders leaks in.
#
#   packaging/build-deb.sh [--worktree] OUTDIR
#
# Default: the committed tree (git archive HEAD). --worktree: the working
# tree as git sees it, uncommitted edits included (tracked files and
# untracked ones that .gitignore does not exclude).
# The Debian files live in packaging/debian; dpkg-buildpackage wants them at
# ./debian, so they are copied there in the clean copy. The package build
# runs the unit tests and the man-page lint unless DEB_BUILD_OPTIONS has
# nocheck (packaging/check-package.sh sets it: CI ran every test already).
# Needs the build dependencies and debhelper (packaging/check-package.sh
# installs them). Prints the path of the .deb on the last line.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
mode=head
if [ "${1:-}" = "--worktree" ]; then
  mode=worktree
  shift
fi
if [ $# -ne 1 ]; then
  echo "usage: packaging/build-deb.sh [--worktree] OUTDIR" >&2
  exit 2
fi
mkdir -p "$1"
out=$(cd "$1" && pwd)

version=$(sed -n 's/^project(preforkd VERSION \([0-9.]*\).*/\1/p' "$repo/CMakeLists.txt")
arch=$(dpkg --print-architecture)
work=$(mktemp -d /tmp/preforkd-deb.XXXXXX)
trap 'rm -rf "$work"' EXIT
src="$work/preforkd-$version"
mkdir "$src"

if [ "$mode" = head ]; then
  git -C "$repo" archive --format=tar HEAD | tar -x -C "$src"
else
  (cd "$repo" && git ls-files -z --cached --others --exclude-standard \
     | while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done \
     | tar --null -T - -cf -) | tar -x -C "$src"
fi
cp -a "$src/packaging/debian" "$src/debian"

log="$out/preforkd_${version}_${arch}.build.log"
if ! (cd "$src" && dpkg-buildpackage -us -uc -b) >"$log" 2>&1; then
  tail -n 60 "$log" >&2
  echo "build-deb.sh: dpkg-buildpackage failed; the whole log is $log" >&2
  exit 1
fi
for f in "$work"/preforkd_"${version}"_"${arch}".{deb,changes,buildinfo} "$work"/preforkd-dbgsym_"${version}"_"${arch}".deb; do
  [ -e "$f" ] && mv "$f" "$out/"
done
echo "$out/preforkd_${version}_${arch}.deb"
