#!/bin/bash
# powercut.sh - a simulated power cut under write load, on XFS.
#
#   powercut.sh KVD_BIN SYNC [SECONDS]
#
# Makes a 512 MiB XFS image, mounts it on a loop device, runs kvd (--sync
# SYNC, always or none) with its data there, and runs tests/faults/load.py
# against it, which logs every acknowledged write outside the image.  After
# SECONDS (default 3) of load, `xfs_io -x -c shutdown` (without -f, so the
# log is not flushed first) stops the file system dead: nothing more reaches
# the disk, as if the power went.  Then kvd is SIGKILLed, the image is
# unmounted and mounted again (XFS replays its log), kvd starts on it again,
# and load.py --verify checks that every acknowledged write is there.
#
# Exit status: 0 no acknowledged write lost, 1 some lost (or kvd could not
# read its data back), 2 a setup or harness error, 77 skipped (not root, no
# xfsprogs, no loop devices).  The last line says which.  test_faults.py
# turns 77 into harness.skip(), which fails the case under CI=true.
#
# With --sync always this must exit 0.  With --sync none it is the mutation
# control: kvd then acknowledges writes that are only in the page cache, so
# the power cut should lose some; if it never does, the test proves nothing.

set -u
KVD=${1:?usage: powercut.sh KVD_BIN always|none [SECONDS]}
SYNC=${2:?usage: powercut.sh KVD_BIN always|none [SECONDS]}
SECS=${3:-3}
HERE=$(cd "$(dirname "$0")" && pwd)
PY=${PYTHON:-python3}

skip() { echo "SKIPPED: $*"; exit 77; }
fail() { echo "ERROR: $*"; exit 2; }

[ "$(id -u)" = 0 ] || skip "needs root to mount a loop device"
for t in mkfs.xfs xfs_io mount umount losetup timeout; do
  command -v "$t" >/dev/null 2>&1 || skip "$t is not installed (apt-get install xfsprogs)"
done
[ -x "$KVD" ] || fail "no kvd binary at $KVD"

work=$(mktemp -d /tmp/kvd-powercut.XXXXXX) || fail "mktemp"
mnt=$work/mnt
mkdir "$mnt"
kvdpid=
loadpid=
mounted=0

stop_kvd() {
  if [ -n "$kvdpid" ]; then
    kill -9 "$kvdpid" 2>/dev/null
    wait "$kvdpid" 2>/dev/null
    kvdpid=
  fi
}

cleanup() {
  stop_kvd
  if [ -n "$loadpid" ]; then kill -9 "$loadpid" 2>/dev/null; wait "$loadpid" 2>/dev/null; fi
  if [ "$mounted" = 1 ]; then
    for _ in 1 2 3 4 5; do umount "$mnt" 2>/dev/null && break; sleep 0.5; done
    mountpoint -q "$mnt" && umount -l "$mnt"
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# Starts kvd on $mnt/data; sets kvdpid and port.
start_kvd() {
  : >"$work/kvd.err"
  "$KVD" --listen 127.0.0.1:0 --data "$mnt/data" --sync "$SYNC" 2>>"$work/kvd.err" &
  kvdpid=$!
  port=
  for _ in $(seq 1 100); do
    port=$(sed -n 's/.*listening on http:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p' "$work/kvd.err" | head -1)
    [ -n "$port" ] && return 0
    kill -0 "$kvdpid" 2>/dev/null || break
    sleep 0.1
  done
  return 1
}

sanitizer_check() {
  if grep -q -E 'ERROR: (Address|Leak|UndefinedBehavior)Sanitizer|runtime error:' "$work/kvd.err"; then
    echo "kvd printed a sanitizer report:"
    cat "$work/kvd.err"
    echo "LOST unknown (sanitizer report)"
    exit 1
  fi
}

truncate -s 512M "$work/img" || fail "truncate"
mkfs.xfs -q "$work/img" 2>"$work/mkfs.err" || skip "mkfs.xfs failed: $(cat "$work/mkfs.err")"
mount -o loop "$work/img" "$mnt" 2>"$work/mount.err" || skip "cannot mount a loop device: $(cat "$work/mount.err")"
mounted=1

start_kvd || { cat "$work/kvd.err"; fail "kvd did not start"; }
echo "kvd --sync $SYNC on XFS at $mnt, port $port"

"$PY" "$HERE/load.py" "$port" "$work/acked.log" "$((SECS + 3))" 4 &
loadpid=$!
sleep "$SECS"
# The power cut: the file system stops writing, the log is not flushed.
xfs_io -x -c shutdown "$mnt" || fail "xfs_io shutdown failed"
echo "file system shut down after ${SECS}s of load"
sleep 0.5
stop_kvd
sanitizer_check
timeout 40 tail --pid="$loadpid" -f /dev/null
wait "$loadpid"
loadpid=
acked=$(wc -l <"$work/acked.log")
echo "acknowledged writes logged: $acked"
[ "$acked" -gt 0 ] || fail "no write was acknowledged before the power cut"

# Power back: unmount (nothing more is written), mount again (log replay).
for _ in 1 2 3 4 5 6 7 8 9 10; do umount "$mnt" 2>/dev/null && break; sleep 0.5; done
mountpoint -q "$mnt" && fail "cannot unmount the shut-down file system"
mounted=0
mount -o loop "$work/img" "$mnt" 2>"$work/mount.err" || {
  echo "the image does not mount again: $(cat "$work/mount.err")"
  echo "LOST unknown (no file system)"
  exit 1
}
mounted=1

if ! start_kvd; then
  echo "kvd does not start on the recovered data:"
  cat "$work/kvd.err"
  sanitizer_check
  echo "LOST unknown (kvd cannot read its data)"
  exit 1
fi
"$PY" "$HERE/load.py" --verify "$port" "$work/acked.log"
rc=$?
stop_kvd
sanitizer_check
case $rc in
  0) echo "RESULT: no acknowledged write lost" ;;
  1) echo "RESULT: acknowledged writes lost" ;;
  *) echo "RESULT: verification error"; exit 2 ;;
esac
exit $rc
