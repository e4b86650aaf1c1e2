# shellcheck shell=bash disable=SC2034
# tests/packaging/lib.sh - shared helpers for the packaging tests (sourced).
#
# Each check prints one line: "ok - ...", "FAIL - ..." or "skip - ...".
# Lines starting with "#" are diagnostics for a failed check.  finish
# prints "N passed, N failed[, N skipped]" and returns 1 on any failure,
# else 77 if any check was skipped (ctest then reports the test as
# "Skipped": SKIP_RETURN_CODE in tests/CMakeLists.txt), else 0.  Scripts
# end with "finish" or "finish; exit", so its status is theirs.  Every
# script runs under a watchdog (KVD_PKG_TEST_TIMEOUT seconds, default 170)
# so that it always ends.
#
# The rule for CI: every packaging test must run there (CI runs as root and
# tools/deps.sh installs their tools), so with CI=true in the environment
# skip counts as a failure, with the same reason.

set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PASS=0
FAIL=0
SKIP=0
WORK=$(mktemp -d "${TMPDIR:-/tmp}/kvd-pkgtest.XXXXXX")
chmod 0755 "$WORK" # service users must be able to reach their directories
LOG=$WORK/log
: >"$LOG"
CLEANUPS=()

ok() { echo "ok - $*"; PASS=$((PASS + 1)); }
not_ok() { echo "FAIL - $*"; FAIL=$((FAIL + 1)); }
SKIP_EXIT=77
skip() {
    if [ "${CI:-}" = true ]; then
        not_ok "$* (skipped under CI=true, where this test must run)"
    else
        echo "skip - $*"
        SKIP=$((SKIP + 1))
    fi
}
diag() { sed 's/^/#   /' | head -n "${DIAG_LINES:-20}"; }

# check DESCRIPTION COMMAND...: runs COMMAND with its output in $LOG.
check() {
    local desc=$1 start
    shift
    start=$(wc -l <"$LOG")
    if "$@" >>"$LOG" 2>&1; then
        ok "$desc"
    else
        not_ok "$desc"
        tail -n +"$((start + 1))" "$LOG" | diag
    fi
}

# expect DESCRIPTION EXPECTED ACTUAL
expect() {
    if [ "$2" = "$3" ]; then
        ok "$1"
    else
        not_ok "$1"
        printf 'expected: %s\nactual:   %s\n' "$2" "$3" | diag
    fi
}

on_exit() { CLEANUPS+=("$*"); }

run_cleanups() {
    local i
    for ((i = ${#CLEANUPS[@]} - 1; i >= 0; i--)); do
        eval "${CLEANUPS[i]}" >>"$LOG" 2>&1 || true
    done
    CLEANUPS=()
}

finish() {
    run_cleanups
    if [ -n "${WATCHDOG:-}" ]; then
        kill "$WATCHDOG" 2>/dev/null # first the shell that would signal us
        wait "$WATCHDOG" 2>/dev/null
        [ -s "$WORK/.watchdog" ] && kill "$(cat "$WORK/.watchdog")" 2>/dev/null
    fi
    WATCHDOG=
    if [ "$FAIL" -gt 0 ] && [ -n "${KEEP_WORK:-}" ]; then
        echo "# work directory kept: $WORK"
    else
        rm -rf "$WORK"
    fi
    if [ "$SKIP" -gt 0 ]; then
        echo "$PASS passed, $FAIL failed, $SKIP skipped"
    else
        echo "$PASS passed, $FAIL failed"
    fi
    [ "$FAIL" -eq 0 ] || return 1
    [ "$SKIP" -eq 0 ] || return "$SKIP_EXIT"
    return 0
}

on_timeout() {
    not_ok "finished within ${KVD_PKG_TEST_TIMEOUT:-170} s (watchdog fired)"
    WATCHDOG=
    finish
    exit 1
}

trap on_timeout USR1
trap 'not_ok "interrupted"; finish; exit 1' INT TERM
# The watchdog signals this shell when its sleep ends.  finish kills the
# watchdog's shell first, so that it cannot signal, then its sleep.  (A
# trap runs once the foreground command ends, so long commands also run
# under timeout(1).)
(sleep "${KVD_PKG_TEST_TIMEOUT:-170}" &
 echo $! >"$WORK/.watchdog"
 wait $! && kill -USR1 $$) >/dev/null 2>&1 &
WATCHDOG=$!

need_root() {
    if [ "$(id -u)" != 0 ]; then
        skip "$1 (needs root)"
        finish
        exit
    fi
}

# apt_install PACKAGE...: installs the missing ones (root only).
apt_install() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed' ||
            missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    [ "$(id -u)" = 0 ] || return 1
    echo "installing ${missing[*]}" >>"$LOG"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >>"$LOG" 2>&1 ||
        { apt-get update -q >>"$LOG" 2>&1 &&
          DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >>"$LOG" 2>&1; }
}

# The port kvd picked: from its "listening on http://HOST:PORT" log line.
# wait_listening LOGFILE PID -> prints the port, or fails after 15 s.
wait_listening() {
    local logf=$1 pid=$2 i port
    for ((i = 0; i < 150; i++)); do
        port=$(sed -n 's|.*listening on http://.*:\([0-9][0-9]*\).*|\1|p' "$logf" | head -n 1)
        if [ -n "$port" ]; then echo "$port"; return 0; fi
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

# wait_exit PID SECONDS -> returns the exit status of PID (a child of this
# shell), or 124 if it did not exit in time (it is then killed).
wait_exit() {
    local pid=$1 secs=$2 i
    for ((i = 0; i < secs * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        kill -KILL "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
        return 124
    fi
    wait "$pid"
}

# A temporary system user and group for running kvd as a non-root user.
# make_user NAME -> creates it and registers its removal.
make_user() {
    useradd --system --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin "$1" >>"$LOG" 2>&1 || return 1
    on_exit "userdel '$1'; getent group '$1' >/dev/null && groupdel '$1'"
}

# as_user USER CMD... : runs CMD as USER.  setpriv execs CMD, so with
# "as_user U CMD &" $! is CMD itself: the function execs too when it runs
# in a background subshell, and must not be used in the foreground.
as_user() {
    local u=$1
    shift
    exec setpriv --reuid="$u" --regid="$u" --clear-groups --reset-env -- "$@"
}

CURL=(curl -sS --max-time 10)
