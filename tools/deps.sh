# deps.sh - installs the Debian packages kvd needs, if any are missing.
# Sourced by tools/run and tools/test; pass the package lists to kv_deps.

KV_BUILD_DEPS="cmake make gcc pkg-config libuv1-dev node-llhttp libyajl-dev
  liblmdb-dev libxxhash-dev"
# The tests' tools.  Every tool a test would skip without is here, so that
# CI (root, CI=true), where a durability, fault or packaging test may not
# skip, has them all on a fresh Debian machine:
#   strace, util-linux (setpriv, prlimit, mountpoint): EIO injection, limits
#   lmdb-utils (mdb_stat, mdb_load): stale readers, foreign environments
#   xfsprogs, mount (losetup, mount): the power cut on a loop-mounted XFS
#   slowhttptest: the slow-client limit test
#   chromium: a real browser's EventSource on the change feed (test_changes.py)
#   rpm, cpio, dpkg-dev, debhelper, lintian, systemd, systemd-container,
#   kmod (modprobe overlay): the packaging tests
KV_TEST_DEPS="python3 curl clang prometheus strace util-linux lmdb-utils
  xfsprogs mount slowhttptest chromium rpm cpio dpkg-dev debhelper lintian
  systemd systemd-container kmod"

kv_deps() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' \
      || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "kvd: installing ${missing[*]}" >&2
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  # Packages such as prometheus would start their daemons on install:
  # policy-rc.d says no, for the duration of the install only.
  local policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    policy=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
    $sudo chmod +x "$policy"
  fi
  local rc=0
  $sudo apt-get update -q >&2 &&
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q \
      --no-install-recommends "${missing[@]}" >&2 || rc=$?
  [ -n "$policy" ] && $sudo rm -f "$policy"
  return $rc
}
