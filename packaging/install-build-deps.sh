#!/bin/sh
# Installs the build dependencies listed in packaging/debian/control
# (Build-Depends, the one list), and the fuzzing tools (below), with
# apt-get. Run as root on Debian 12.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
# Build-Depends spans continuation lines; drop version constraints, build
# profiles (<!nocheck>: the tests are built here, so those are wanted too),
# architecture lists, comments and debhelper-compat (a virtual package only
# dpkg-buildpackage needs; packaging/check-package.sh installs debhelper).
pkgs=$(sed -n '/^Build-Depends:/,/^[A-Z][A-Za-z-]*:/p' "$here/debian/control" \
  | sed -e 's/^Build-Depends://' -e '/^[A-Z][A-Za-z-]*:/d' -e '/^#/d' \
  | tr ',' '\n' | sed -e 's/([^)]*)//g' -e 's/<[^>]*>//g' -e 's/\[[^]]*\]//g' -e 's/[[:space:]]//g' \
  | grep -v '^$' | grep -v '^debhelper-compat$')
# Not needed to build the package, only for fuzz/run.sh (and so .ci/run):
# clang with libFuzzer's runtime (libclang-rt-dev, a mere Recommends of
# clang, which --no-install-recommends skips) and llvm-symbolizer (llvm),
# which turns sanitizer reports into file:line.
pkgs="$pkgs clang libclang-rt-dev llvm"
if [ "$(id -u)" -ne 0 ]; then
  echo "install-build-deps.sh: run as root (apt-get install)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $pkgs >/dev/null
echo "build dependencies installed: $(echo $pkgs | tr '\n' ' ')"
