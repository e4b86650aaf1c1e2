#!/bin/bash
# tests/packaging/lockfile.sh - kvdump run by root leaves nothing that the
# service's user cannot open.
#
#   tests/packaging/lockfile.sh [BUILD_DIR]
#
# The packaged service runs kvd as an unprivileged user that owns the data
# directory, and an administrator runs kvdump as root.  If kvdump created
# LMDB's lock.mdb, or changed the owner of a file, kvd could no longer open
# its own directory.  kvdump opens a directory without lock.mdb with
# MDB_NOLOCK and uses an existing lock.mdb as it is.  This test proves it
# with a temporary system user: kvdump as root on the stopped directory
# without lock.mdb, then with lock.mdb, then on the live directory, and
# after each, kvd as that user must start on the directory and serve it.
# A negative control shows that a root-owned lock.mdb does stop kvd, so the
# test would notice.
#
# Uses BUILD_DIR/kvd and BUILD_DIR/kvdump (or $KVD_BUILD_DIR), else builds
# them into a temporary directory.  Needs root (useradd, setpriv).  Takes
# about 3 s, plus about 20 s when it has to build.
# shellcheck source=tests/packaging/lib.sh
. "$(dirname "$0")/lib.sh"

need_root "kvdump as root, kvd as a service user"

build=${1:-${KVD_BUILD_DIR:-}}
if [ -z "$build" ]; then
    build=$WORK/build
    if timeout 150 cmake -S "$REPO" -B "$build" -DKV_TESTS=OFF \
           -DCMAKE_BUILD_TYPE=RelWithDebInfo >>"$LOG" 2>&1 &&
       timeout 150 cmake --build "$build" -j "$(nproc)" >>"$LOG" 2>&1; then
        ok "built kvd and kvdump"
    else
        not_ok "built kvd and kvdump"
        tail -n 20 "$LOG" | diag
        finish
        exit 1
    fi
fi
build=$(cd "$build" && pwd)
KVD=$build/kvd
KVDUMP=$build/kvdump
# The service user must be able to run the binaries.
if ! [ -x "$KVD" ] || ! [ -x "$KVDUMP" ]; then
    not_ok "kvd and kvdump exist in $build"
    finish
    exit 1
fi
bindir=$WORK/bin
install -d -m 0755 "$bindir"
install -m 0755 "$KVD" "$KVDUMP" "$bindir/"
KVD=$bindir/kvd
KVDUMP=$bindir/kvdump

user=kvdlock$$
check "created the temporary system user $user" make_user "$user"

data=$WORK/srv/data
install -d -m 0755 "$WORK/srv"
install -d -m 0700 -o "$user" -g "$user" "$data"

KVD_PID=
# start_kvd: kvd as $user on $data, on a free loopback port -> PORT.
start_kvd() {
    local log=$WORK/kvd.$1.log
    as_user "$user" "$KVD" --listen 127.0.0.1:0 --data "$data" 2>"$log" &
    KVD_PID=$!
    on_exit "kill -KILL $KVD_PID; wait $KVD_PID"
    if PORT=$(wait_listening "$log" "$KVD_PID"); then
        URL=http://127.0.0.1:$PORT
        return 0
    fi
    cat "$log" >>"$LOG"
    return 1
}

stop_kvd() {
    local rc
    kill -TERM "$KVD_PID"
    wait_exit "$KVD_PID" 20
    rc=$?
    KVD_PID=
    return "$rc"
}

put() { [ "$("${CURL[@]}" -o /dev/null -w '%{http_code}' -X PUT --data-binary "$2" "$URL/$1")" = 201 ]; }
get() { "${CURL[@]}" "$URL/$1"; }

# Owner, group and mode of every file in the data directory.
owners() { (cd "$data" && stat -c '%n %U %G %a' -- * .[!.]* 2>/dev/null | sort); }
root_owned() { find "$data" \( -user root -o -group root \) -print; }

# ---- a directory with data, written by kvd as the service user ----------------
if start_kvd first; then
    ok "kvd runs as $user on a directory that $user owns"
    check "PUT a stores a key" put a 1
    stop_kvd
    expect "kvd stopped with SIGTERM exits 0" 0 "$?"
else
    not_ok "kvd runs as $user on a directory that $user owns"
    tail -n 5 "$WORK/kvd.first.log" | diag
    finish
    exit 1
fi
expect "kvd left lock.mdb, owned by $user" "$user" "$(stat -c %U "$data/lock.mdb" 2>&1)"

# ---- 1: kvdump as root on the stopped directory without lock.mdb --------------
rm -f "$data/lock.mdb"
before=$(owners)
expect "kvdump as root prints the store (no lock.mdb)" '{"a":"1"}' "$("$KVDUMP" "$data" 2>&1)"
"$KVDUMP" --ndjson "$data" >/dev/null 2>>"$LOG"
"$KVDUMP" --prefix a "$data" >/dev/null 2>>"$LOG"
"$KVDUMP" --image "$data" >/dev/null 2>>"$LOG"
expect "kvdump as root created no lock.mdb" "absent" "$([ -e "$data/lock.mdb" ] && echo present || echo absent)"
expect "kvdump as root changed no file, owner or mode (no lock.mdb)" "$before" "$(owners)"
expect "no file in the data directory belongs to root" "" "$(root_owned)"
if start_kvd second; then
    ok "kvd as $user starts after root's kvdump (no lock.mdb)"
    expect "kvd serves the key written before" 1 "$(get a 2>&1)"
    check "PUT b stores a key" put b 2
    stop_kvd
    expect "kvd stopped with SIGTERM exits 0" 0 "$?"
else
    not_ok "kvd as $user starts after root's kvdump (no lock.mdb)"
    tail -n 5 "$WORK/kvd.second.log" | diag
fi

# ---- 2: kvdump as root on the stopped directory with lock.mdb -----------------
expect "lock.mdb exists again, owned by $user" "$user" "$(stat -c %U "$data/lock.mdb" 2>&1)"
before=$(owners)
expect "kvdump as root prints the store (with lock.mdb)" '{"a":"1","b":"2"}' "$("$KVDUMP" "$data" 2>&1)"
expect "kvdump as root changed no file, owner or mode (with lock.mdb)" "$before" "$(owners)"
expect "no file in the data directory belongs to root" "" "$(root_owned)"
if start_kvd third; then
    ok "kvd as $user starts after root's kvdump (with lock.mdb)"
    expect "kvd serves both keys" "1 2" "$(get a) $(get b)"

    # ---- 3: kvdump as root while kvd runs ---------------------------------------
    check "PUT c stores a key" put c 3
    expect "kvdump as root reads the live directory" '{"a":"1","b":"2","c":"3"}' "$("$KVDUMP" "$data" 2>&1)"
    check "kvd still takes writes after root's live kvdump" put d 4
    expect "no file in the data directory belongs to root" "" "$(root_owned)"
    stop_kvd
    expect "kvd stopped with SIGTERM exits 0" 0 "$?"
else
    not_ok "kvd as $user starts after root's kvdump (with lock.mdb)"
    tail -n 5 "$WORK/kvd.third.log" | diag
fi

# ---- negative control: a root-owned lock.mdb would lock the user out ----------
rm -f "$data/lock.mdb"
install -m 0600 -o root -g root /dev/null "$data/lock.mdb"
as_user "$user" "$KVD" --listen 127.0.0.1:0 --data "$data" >"$WORK/kvd.neg.log" 2>&1 &
neg=$!
wait_exit "$neg" 15
rc=$?
if [ "$rc" != 0 ] && [ "$rc" != 124 ]; then
    ok "control: kvd as $user refuses a root-owned lock.mdb (exit $rc)"
else
    not_ok "control: kvd as $user refuses a root-owned lock.mdb (exit $rc)"
    diag <"$WORK/kvd.neg.log"
fi
rm -f "$data/lock.mdb"
expect "kvdump as root still reads it after the control" '{"a":"1","b":"2","c":"3","d":"4"}' "$("$KVDUMP" "$data" 2>&1)"

finish
