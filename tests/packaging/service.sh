#!/bin/bash
# tests/packaging/service.sh - the packaged kvd.service under a real systemd.
#
#   tests/packaging/service.sh [DEB]
#
# CI has no running systemd, so this boots one: systemd-nspawn runs the
# machine's own systemd as PID 1 in a container whose root is a throwaway
# overlay of / (changes go to a tmpfs) with a private network (loopback
# only).  Inside it the test installs the .deb (built with
# packaging/build-deb, or DEB), starts kvd.service with the sandbox exactly
# as shipped, and checks: Type=notify readiness, the dynamic user, PUT and
# GET, reload (SIGHUP), kvdump as root on the live directory, restart with
# the data kept, a config error failing the start at once, a clean stop
# (exit 0), the online "systemd-analyze security" score, and purge.
#
# Needs root, overlayfs and systemd-nspawn (package systemd-container,
# installed when missing); skips when they cannot be had.  The host is not
# changed.  Takes about 30 s, plus the package build.
# A first run may apt-get install the build tools: allow more than 170 s.
: "${KVD_PKG_TEST_TIMEOUT:=240}"
# shellcheck source=tests/packaging/lib.sh
. "$(dirname "$0")/lib.sh"

need_root "systemd-nspawn needs root"

apt_install systemd-container >/dev/null 2>&1 || true
if ! command -v systemd-nspawn >/dev/null || [ ! -x /lib/systemd/systemd ]; then
    skip "systemd-nspawn and systemd are not available"
    finish
    exit
fi
if ! grep -qw overlay /proc/filesystems && ! modprobe overlay 2>/dev/null; then
    skip "the kernel has no overlayfs"
    finish
    exit
fi

# ---- the package -----------------------------------------------------------------
out=$WORK/out
mkdir -p "$out"
if [ $# -ge 1 ]; then
    if cp "$1" "$out/"; then ok "using $1"; else not_ok "$1 exists"; finish; exit 1; fi
else
    args=(--install-deps)
    [ -n "${KVD_DEB_REF:-}" ] && args+=(--ref "$KVD_DEB_REF")
    if deb=$(timeout 150 "$REPO/packaging/build-deb" "${args[@]}" "$out" 2>>"$LOG"); then
        ok "packaging/build-deb built $(basename "$deb")"
    else
        not_ok "packaging/build-deb built the package"
        tail -n 30 "$LOG" | diag
        finish
        exit 1
    fi
fi
debname=$(basename "$(find "$out" -maxdepth 1 -name 'kvd_*.deb' | head -n 1)")

# ---- boot a container on an overlay of / ------------------------------------------
ovl=$WORK/ovl
mkdir -p "$ovl"
mount -t tmpfs -o mode=0755 kvd-pkgtest "$ovl" || { not_ok "mounted a tmpfs"; finish; exit 1; }
on_exit "umount '$ovl'"
mkdir -p "$ovl/upper" "$ovl/work" "$ovl/root"
if ! mount -t overlay kvd-pkgtest -o "lowerdir=/,upperdir=$ovl/upper,workdir=$ovl/work" "$ovl/root"; then
    skip "cannot mount an overlay of / here"
    finish
    exit
fi
on_exit "umount '$ovl/root'"

machine=kvdpkg$$
setsid systemd-nspawn -D "$ovl/root" --register=no --keep-unit --private-network \
    -M "$machine" --bind-ro="$out:/mnt/kvd-deb" -b systemd.unit=basic.target \
    </dev/null >"$WORK/console.log" 2>&1 &
nspawn=$!
on_exit "stop_container"
stop_container() {
    local i
    kill -TERM "$nspawn" 2>/dev/null || return 0
    for ((i = 0; i < 300; i++)); do kill -0 "$nspawn" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$nspawn" 2>/dev/null
    wait "$nspawn" 2>/dev/null
}

leader=
for ((i = 0; i < 200; i++)); do
    leader=$(pgrep -P "$nspawn" | head -n 1)
    [ -n "$leader" ] && [ "$(cat "/proc/$leader/comm" 2>/dev/null)" = systemd ] && break
    leader=
    kill -0 "$nspawn" 2>/dev/null || break
    sleep 0.1
done
ct() { timeout 60 nsenter -a -t "$leader" "$@"; }
# systemctl can talk to PID 1 once it made its private socket.
for ((i = 0; i < 300; i++)); do
    [ -n "$leader" ] || break
    ct test -S /run/systemd/private 2>/dev/null && break
    sleep 0.1
done
if [ -n "$leader" ] &&
   state=$(ct systemctl is-system-running --wait 2>&1) &&
   [ "$state" = running ] || [ "${state:-}" = degraded ]; then
    ok "booted systemd in a container ($state)"
else
    not_ok "booted systemd in a container (${state:-no init})"
    tail -n 20 "$WORK/console.log" | diag
    finish
    exit 1
fi

ctcurl() { ct curl -sS --max-time 10 "$@"; }
code() { ctcurl -o /dev/null -w '%{http_code}' "$@"; }
url=http://127.0.0.1:8080

# ---- install and start ----------------------------------------------------------
check "dpkg -i installs the package" ct dpkg -i "/mnt/kvd-deb/$debname"
check "systemctl start kvd returns: kvd sent READY=1 (Type=notify)" ct systemctl start kvd
expect "kvd.service is active" active "$(ct systemctl is-active kvd)"
pid=$(ct systemctl show -P MainPID kvd)
uid=$(ct stat -c %u "/proc/$pid" 2>/dev/null)
expect "kvd runs as the dynamic user kvd" kvd "$(ct stat -c %U "/proc/$pid" 2>&1)"
if [ -n "$uid" ] && [ "$uid" -ge 61184 ] && [ "$uid" -le 65519 ]; then
    ok "its uid $uid is in systemd's dynamic range"
else
    not_ok "its uid ${uid:-?} is in systemd's dynamic range"
fi
expect "GET /_ready answers 200" 200 "$(code $url/_ready)"
expect "PUT /greeting answers 201" 201 "$(code -X PUT --data-binary hello $url/greeting)"
expect "GET /greeting answers the value" hello "$(ctcurl $url/greeting)"
expect "GET / answers the map" '{"greeting":"hello"}' "$(ctcurl $url/)"
if ctcurl $url/_metrics | grep '^kvd_' >/dev/null; then
    ok "GET /_metrics answers Prometheus text"
else
    not_ok "GET /_metrics answers Prometheus text"
fi
check "/var/lib/kvd is the StateDirectory symlink to private/kvd" \
    test "$(ct readlink /var/lib/kvd)" = private/kvd
expect "the data files belong to kvd, mode 600" \
    "data.mdb kvd 600 image.json kvd 600 lock.mdb kvd 600" \
    "$(ct sh -c 'cd /var/lib/private/kvd && stat -c "%n %U %a" data.mdb image.json lock.mdb' 2>&1 | tr '\n' ' ' | sed 's/ $//')"

# ---- reload, kvdump, security ------------------------------------------------------
check "systemctl reload kvd (SIGHUP) succeeds" ct systemctl reload kvd
sleep 0.5
expect "kvd is still active with the same PID after reload" "active $pid" \
    "$(ct systemctl is-active kvd) $(ct systemctl show -P MainPID kvd)"
expect "kvdump as root reads the live /var/lib/kvd" '{"greeting":"hello"}' "$(ct kvdump /var/lib/kvd 2>&1)"
expect "nothing in the data directory belongs to root" "" \
    "$(ct find /var/lib/private/kvd -mindepth 1 -user root 2>&1)"
check "kvd takes writes after root's kvdump" \
    test "$(code -X PUT --data-binary 2 $url/second)" = 201
sec=$(ct systemd-analyze security kvd 2>&1 | sed -n 's/.*Overall exposure level for kvd\.service: \([0-9.]*\).*/\1/p')
if [ -n "$sec" ] && awk -v s="$sec" 'BEGIN { exit !(s <= 2.0) }'; then
    ok "systemd-analyze security kvd rates the running service $sec (at most 2.0)"
else
    not_ok "systemd-analyze security kvd rates the running service ${sec:-?} (at most 2.0)"
fi

# ---- restart keeps the data; a config error fails the start --------------------------
check "systemctl restart kvd succeeds" ct systemctl restart kvd
expect "the keys survive the restart" "hello 2" "$(ctcurl $url/greeting) $(ctcurl $url/second)"
ct cp -p /etc/kvd/kvd.conf /etc/kvd/kvd.conf.good
ct sh -c 'echo "bogus = 1" >> /etc/kvd/kvd.conf'
badline=$(ct sh -c 'wc -l < /etc/kvd/kvd.conf')
start=$(date +%s)
if ct systemctl restart kvd >>"$LOG" 2>&1; then
    not_ok "a config error fails systemctl restart"
else
    ok "a config error fails systemctl restart, after $(($(date +%s) - start)) s"
fi
if ct journalctl -u kvd --no-pager -o cat 2>&1 | grep "kvd.conf:$badline: " >/dev/null; then
    ok "the journal names the bad line, kvd.conf:$badline"
else
    not_ok "the journal names the bad line, kvd.conf:$badline"
    ct journalctl -u kvd --no-pager -o cat 2>&1 | tail -n 5 | diag
fi
ct mv /etc/kvd/kvd.conf.good /etc/kvd/kvd.conf
ct systemctl reset-failed kvd >>"$LOG" 2>&1
check "kvd starts again with the config fixed" ct systemctl start kvd
expect "the keys are still there" "hello 2" "$(ctcurl $url/greeting) $(ctcurl $url/second)"

# ---- a token as a credential, and a log file: as README.Debian says ---------------------
ct sh -c '(umask 077; echo s3cret-token > /etc/kvd/token)
          mkdir -p /etc/systemd/system/kvd.service.d
          printf "[Service]\nLoadCredential=token:/etc/kvd/token\n" \
              > /etc/systemd/system/kvd.service.d/token.conf
          cp -p /etc/kvd/kvd.conf /etc/kvd/kvd.conf.good
          printf "token-file = /run/credentials/kvd.service/token\nlog-file = /var/log/kvd/kvd.log\n" \
              >> /etc/kvd/kvd.conf
          systemctl daemon-reload' >>"$LOG" 2>&1
check "kvd restarts with the token as a credential and a log file" ct systemctl restart kvd
expect "a PUT without the token answers 401" 401 "$(code -X PUT --data-binary x $url/third)"
expect "a PUT with the token answers 201" 201 \
    "$(code -X PUT -H 'Authorization: Bearer s3cret-token' --data-binary x $url/third)"
expect "a GET needs no token (auth = writes)" hello "$(ctcurl $url/greeting)"
check "kvd logs to /var/log/kvd/kvd.log" ct grep -q "listening on" /var/log/kvd/kvd.log
ct mv /var/log/kvd/kvd.log /var/log/kvd/kvd.log.1
check "systemctl reload kvd reopens the rotated log file" \
    bash -c "timeout 60 nsenter -a -t $leader systemctl reload kvd &&
             sleep 0.5 && timeout 60 nsenter -a -t $leader grep -q reloaded /var/log/kvd/kvd.log"
ct sh -c 'mv /etc/kvd/kvd.conf.good /etc/kvd/kvd.conf; rm -f /etc/kvd/token
          rm -rf /etc/systemd/system/kvd.service.d; systemctl daemon-reload' >>"$LOG" 2>&1
check "kvd restarts without the token" ct systemctl restart kvd

# ---- stop and purge -----------------------------------------------------------------
check "systemctl stop kvd succeeds" ct systemctl stop kvd
expect "kvd exited 0 on SIGTERM (Result=success)" "success 0" \
    "$(ct systemctl show -P Result kvd) $(ct systemctl show -P ExecMainStatus kvd)"
check "dpkg -P kvd purges the package" ct dpkg -P kvd
left=$(ct sh -c 'for f in /etc/kvd /var/lib/kvd /var/lib/private/kvd /var/log/kvd /var/log/private/kvd \
                        /etc/systemd/system/multi-user.target.wants/kvd.service; do
                   [ -e "$f" ] || [ -L "$f" ] && echo "$f"; done' 2>&1)
expect "dpkg -P left nothing behind" "" "$left"

finish
