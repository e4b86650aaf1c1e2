#!/bin/bash
# tests/packaging/unit.sh - static checks of packaging/systemd/kvd.service.
#
#   tests/packaging/unit.sh
#
# Checks that the unit has the settings the package promises, that
# "systemd-analyze security --offline=yes" rates it 2.0 or lower, and that
# "systemd-analyze verify" accepts it without a warning.  Needs no running
# systemd, only systemd-analyze (Debian's systemd package, installed when
# missing and run as root).  Takes about 2 s.
#
# verify checks that ExecStart= is executable and that the Documentation=
# man pages exist: it uses the installed /usr/sbin/kvd if there is one, else
# $KVD_BIN, else a copy of the unit whose ExecStart runs /bin/true (noted),
# and packaging/man/ for the man pages.
# shellcheck source=tests/packaging/lib.sh
. "$(dirname "$0")/lib.sh"

UNIT=${KVD_UNIT:-$REPO/packaging/systemd/kvd.service}
MAX_EXPOSURE=2.0

if ! command -v systemd-analyze >/dev/null; then
    apt_install systemd || true
fi
if ! command -v systemd-analyze >/dev/null; then
    skip "systemd-analyze is missing (apt-get install systemd)"
    finish
    exit
fi

# ---- the settings the package promises -------------------------------------
required=(
    "Type=notify"
    "ExecStart=/usr/sbin/kvd --config /etc/kvd/kvd.conf"
    'ExecReload=/bin/kill -HUP $MAINPID'
    "Restart=on-failure"
    "TimeoutStopSec=30"
    "LimitNOFILE=65536"
    "DynamicUser=yes"
    "StateDirectory=kvd"
    "UMask=0077"
    "ProtectSystem=strict"
    "ProtectHome=yes"
    "PrivateTmp=yes"
    "PrivateDevices=yes"
    "NoNewPrivileges=yes"
    "CapabilityBoundingSet="
    "AmbientCapabilities="
    "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX"
    "SystemCallFilter=@system-service"
    "SystemCallArchitectures=native"
    "WantedBy=multi-user.target"
)
missing=()
for line in "${required[@]}"; do
    grep -qxF -- "$line" "$UNIT" || missing+=("$line")
done
if [ ${#missing[@]} -eq 0 ]; then
    ok "the unit sets all ${#required[@]} required settings"
else
    not_ok "the unit sets all ${#required[@]} required settings"
    printf 'missing: %s\n' "${missing[@]}" | diag
fi

# ---- exposure score ----------------------------------------------------------
# systemd 252 reads --threshold in tenths: 20 means an exposure of 2.0.
out=$WORK/security.txt
timeout 60 systemd-analyze security --offline=yes --threshold=20 "$UNIT" >"$out" 2>&1
rc=$?
score=$(sed -n 's/.*Overall exposure level for kvd\.service: \([0-9.]*\).*/\1/p' "$out")
if [ -n "$score" ] && awk -v s="$score" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(s <= m) }'; then
    ok "systemd-analyze security rates the unit $score (at most $MAX_EXPOSURE)"
else
    not_ok "systemd-analyze security rates the unit ${score:-?} (at most $MAX_EXPOSURE)"
    grep -E '✗|Overall|rror' "$out" | diag
fi
expect "systemd-analyze security --threshold=20 exits 0" 0 "$rc"
if grep -qiE 'unknown|ignoring|invalid' "$out"; then
    not_ok "systemd-analyze security reads every setting"
    grep -iE 'unknown|ignoring|invalid' "$out" | diag
else
    ok "systemd-analyze security reads every setting"
fi

# ---- verify --------------------------------------------------------------------
vdir=$WORK/verify
mkdir -p "$vdir/man/man1" "$vdir/man/man8"
cp "$REPO/packaging/man/kvd.8" "$vdir/man/man8/"
cp "$REPO/packaging/man/kvdump.1" "$vdir/man/man1/"
note=
if [ -x /usr/sbin/kvd ]; then
    cp "$UNIT" "$vdir/kvd.service"
    note="with the installed /usr/sbin/kvd"
elif [ -n "${KVD_BIN:-}" ] && [ -x "$KVD_BIN" ]; then
    sed "s|^ExecStart=/usr/sbin/kvd |ExecStart=$KVD_BIN |" "$UNIT" >"$vdir/kvd.service"
    note="with ExecStart=$KVD_BIN"
else
    sed "s|^ExecStart=/usr/sbin/kvd .*|ExecStart=/bin/true|" "$UNIT" >"$vdir/kvd.service"
    note="with ExecStart=/bin/true: no kvd installed and KVD_BIN unset"
fi
vout=$WORK/verify.txt
MANPATH=$vdir/man timeout 60 systemd-analyze verify "$vdir/kvd.service" >"$vout" 2>&1
rc=$?
if [ "$rc" = 0 ] && [ ! -s "$vout" ]; then
    ok "systemd-analyze verify accepts the unit without a warning ($note)"
else
    not_ok "systemd-analyze verify accepts the unit without a warning ($note)"
    diag <"$vout"
fi

finish
