#!/bin/bash
# tests/packaging/deb.sh - build, lint, install, run, remove and purge the .deb.
#
#   tests/packaging/deb.sh [DEB]
#
# Builds the package with packaging/build-deb (or takes DEB, a .deb built
# before, with its .changes beside it), runs lintian on it (any E: or W:
# fails), installs it with dpkg -i, checks where its files are, runs the
# installed /usr/sbin/kvd with the installed /etc/kvd/kvd.conf in the
# foreground as a temporary system user (CI has no systemd), PUTs and GETs a
# key, stops it with SIGTERM, then removes and purges the package and checks
# that nothing is left.
#
# Needs root and refuses to touch a kvd package that was installed before it
# ran.  While the package is installed, a policy-rc.d keeps dpkg from
# starting kvd.service on a machine that runs systemd.  Installs the build
# dependencies, lintian and curl when missing.  KVD_DEB_REF=REF builds
# commit REF instead of the work tree (see packaging/build-deb --ref).
# Takes about 40 s (most of it the build and lintian).
# A first run may apt-get install the build tools: allow more than 170 s.
: "${KVD_PKG_TEST_TIMEOUT:=240}"
# shellcheck source=tests/packaging/lib.sh
. "$(dirname "$0")/lib.sh"

need_root "dpkg -i needs root"

if dpkg-query -W -f='${Status}' kvd 2>/dev/null | grep -q 'installed\|config-files'; then
    not_ok "kvd is not installed before the test (remove it first: dpkg -P kvd)"
    finish
    exit 1
fi

apt_install dpkg-dev debhelper lintian curl || true

# ---- build -----------------------------------------------------------------
out=$WORK/out
if [ $# -ge 1 ]; then
    deb=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
    if [ -f "$deb" ]; then ok "using $deb"; else not_ok "$deb exists"; finish; exit 1; fi
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
changes=${deb%.deb}.changes
version=$(dpkg-deb -f "$deb" Version)
expect "the package is kvd 0.1.0-1" "kvd 0.1.0-1" "$(dpkg-deb -f "$deb" Package) $version"

# ---- lintian ---------------------------------------------------------------
target=$deb
[ -f "$changes" ] && target=$changes
timeout 120 lintian --no-tag-display-limit -EvIL +pedantic "$target" >"$WORK/lintian.txt" 2>&1
if grep -qE '^(E|W):' "$WORK/lintian.txt"; then
    not_ok "lintian reports no error and no warning"
    grep -E '^(E|W):' "$WORK/lintian.txt" | DIAG_LINES=40 diag
else
    ok "lintian reports no error and no warning ($(grep -cE '^(I|P):' "$WORK/lintian.txt") info/pedantic, $(grep -c '^O:' "$WORK/lintian.txt") overridden)"
fi

# ---- install -----------------------------------------------------------------
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\n# kvd packaging test: start no service\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 0755 /usr/sbin/policy-rc.d
    on_exit "rm -f /usr/sbin/policy-rc.d"
fi
on_exit "dpkg -P kvd"
if timeout 120 dpkg -i "$deb" >>"$LOG" 2>&1 ||
   DEBIAN_FRONTEND=noninteractive timeout 120 apt-get install -f -y -q >>"$LOG" 2>&1; then
    ok "dpkg -i installs the package"
else
    not_ok "dpkg -i installs the package"
    tail -n 20 "$LOG" | diag
    finish
    exit 1
fi
expect "dpkg says kvd is installed" "install ok installed" "$(dpkg-query -W -f='${Status}' kvd)"

missing=()
for f in /usr/sbin/kvd /usr/bin/kvdump; do [ -x "$f" ] || missing+=("$f"); done
for f in /etc/kvd/kvd.conf /lib/systemd/system/kvd.service \
         /usr/share/man/man8/kvd.8.gz /usr/share/man/man1/kvdump.1.gz \
         /usr/share/doc/kvd/copyright /usr/share/doc/kvd/changelog.Debian.gz \
         /usr/share/doc/kvd/README.Debian; do
    [ -f "$f" ] || missing+=("$f")
done
expect "every file is where it belongs" "" "${missing[*]}"
expect "/etc/kvd/kvd.conf is a conffile" "/etc/kvd/kvd.conf" \
    "$(dpkg-query -W -f='${Conffiles}\n' kvd | awk 'NF { print $1 }')"
check "the installed unit is packaging/systemd/kvd.service" \
    cmp /lib/systemd/system/kvd.service "$REPO/packaging/systemd/kvd.service"
check "the installed kvd.conf is packaging/kvd.conf" \
    cmp /etc/kvd/kvd.conf "$REPO/packaging/kvd.conf"
check "kvd.service is enabled (multi-user.target wants it)" \
    test -L /etc/systemd/system/multi-user.target.wants/kvd.service
expect "kvd --version" "kvd ${version%-*}" "$(/usr/sbin/kvd --version 2>&1)"
expect "kvdump --version" "kvdump ${version%-*}" "$(/usr/bin/kvdump --version 2>&1)"
check "man finds kvd(8) and kvdump(1)" bash -c 'man -w 8 kvd && man -w 1 kvdump'
manwarn=$( { LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -E UTF-8 8 kvd >/dev/null
             LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -E UTF-8 1 kvdump >/dev/null; } 2>&1)
expect "the man pages render without a warning" "" "$manwarn"
if command -v systemd-analyze >/dev/null; then
    vout=$(timeout 60 systemd-analyze verify /lib/systemd/system/kvd.service 2>&1)
    expect "systemd-analyze verify accepts the installed unit" "" "$vout"
else
    skip "systemd-analyze verify (systemd-analyze is missing)"
fi

# ---- the configuration file ------------------------------------------------------
check "kvd --check-config accepts /etc/kvd/kvd.conf" \
    /usr/sbin/kvd --config /etc/kvd/kvd.conf --check-config
# Every commented-out setting shows its default: uncommented, all must parse.
sed -E 's/^#([a-z-]+ = .+)$/\1/' /etc/kvd/kvd.conf >"$WORK/all.conf"
check "kvd.conf with every default uncommented is valid" \
    /usr/sbin/kvd --config "$WORK/all.conf" --check-config
# kvd.conf, kvd(8) and kvd --help name the same settings.
help_keys=$(/usr/sbin/kvd --help 2>&1 | grep -oE '^ +--[a-z-]+' | sed 's/ *--//' |
            grep -vxE 'config|check-config|help|version' | sort -u)
conf_keys=$(grep -oE '^#?[a-z-]+ =' /etc/kvd/kvd.conf | tr -d '#= ' | sort -u)
man_keys=$(zcat /usr/share/man/man8/kvd.8.gz | grep -oE '^\.BI? \\-\\-[a-z\\-]+' |
           sed 's/^\.BI\{0,1\} \\-\\-//; s/\\-/-/g' |
           grep -vxE 'config|check-config|help|version' | sort -u)
expect "kvd.conf documents every setting in kvd --help" "$help_keys" "$conf_keys"
expect "kvd(8) documents every setting in kvd --help" "$help_keys" "$man_keys"
printf 'listen = 127.0.0.1:8080\nbogus = 1\n' >"$WORK/bad.conf"
msg=$(/usr/sbin/kvd --config "$WORK/bad.conf" --check-config 2>&1)
rc=$?
expect "a bad key is reported as FILE:LINE with exit status 1" \
    "1 kvd: $WORK/bad.conf:2:" "$rc $(echo "$msg" | grep -oE "^kvd: [^ ]*:2:" | head -n 1)"

# ---- run the installed kvd as a system user ---------------------------------------
user=kvddeb$$
check "created the temporary system user $user" make_user "$user"
data=$WORK/srv/data
install -d -m 0755 "$WORK/srv"
install -d -m 0700 -o "$user" -g "$user" "$data"
as_user "$user" /usr/sbin/kvd --config /etc/kvd/kvd.conf --listen 127.0.0.1:0 \
    --data "$data" 2>"$WORK/kvd.log" &
pid=$!
on_exit "kill -KILL $pid; wait $pid"
if port=$(wait_listening "$WORK/kvd.log" "$pid"); then
    ok "the installed kvd runs as $user with /etc/kvd/kvd.conf"
    url=http://127.0.0.1:$port
    expect "GET /_health answers 200" 200 "$("${CURL[@]}" -o /dev/null -w '%{http_code}' "$url/_health")"
    expect "GET /_ready answers 200" 200 "$("${CURL[@]}" -o /dev/null -w '%{http_code}' "$url/_ready")"
    expect "PUT /greeting answers 201" 201 \
        "$("${CURL[@]}" -o /dev/null -w '%{http_code}' -X PUT --data-binary hello "$url/greeting")"
    expect "GET /greeting answers the value" hello "$("${CURL[@]}" "$url/greeting")"
    expect "GET / answers the map" '{"greeting":"hello"}' "$("${CURL[@]}" "$url/")"
    kill -TERM "$pid"
    wait_exit "$pid" 20
    expect "kvd stopped with SIGTERM exits 0" 0 "$?"
    expect "kvdump reads what kvd stored" '{"greeting":"hello"}' "$(/usr/bin/kvdump "$data" 2>&1)"
    expect "every file in the data directory belongs to $user" "" \
        "$(find "$data" ! -user "$user" -print)"
else
    not_ok "the installed kvd runs as $user with /etc/kvd/kvd.conf"
    diag <"$WORK/kvd.log"
fi

# ---- remove and purge ------------------------------------------------------------
# What kvd.service would have made under systemd, for the purge to remove.
for d in /var/lib/private /var/log/private; do
    [ -d "$d" ] || { install -d -m 0700 "$d"; on_exit "rmdir '$d'"; }
done
install -d -m 0700 /var/lib/private/kvd /var/log/private/kvd
ln -sfn private/kvd /var/lib/kvd
ln -sfn private/kvd /var/log/kvd
touch /var/lib/private/kvd/data.mdb /var/log/private/kvd/kvd.log

check "dpkg -r kvd removes the package" timeout 60 dpkg -r kvd
gone=()
for f in /usr/sbin/kvd /usr/bin/kvdump /lib/systemd/system/kvd.service \
         /usr/share/man/man8/kvd.8.gz /usr/share/man/man1/kvdump.1.gz; do
    [ -e "$f" ] && gone+=("$f")
done
expect "dpkg -r removed the programs, the unit and the man pages" "" "${gone[*]}"
check "dpkg -r kept the conffile /etc/kvd/kvd.conf" test -f /etc/kvd/kvd.conf
check "dpkg -r kept the data in /var/lib/kvd" test -e /var/lib/private/kvd/data.mdb

check "dpkg -P kvd purges the package" timeout 60 dpkg -P kvd
left=()
for f in /etc/kvd /var/lib/kvd /var/lib/private/kvd /var/log/kvd /var/log/private/kvd \
         /usr/share/doc/kvd /etc/systemd/system/multi-user.target.wants/kvd.service \
         /var/lib/systemd/deb-systemd-helper-enabled/kvd.service.dsh-also \
         /var/lib/systemd/deb-systemd-helper-enabled/multi-user.target.wants/kvd.service \
         /var/lib/systemd/deb-systemd-helper-masked/kvd.service; do
    { [ -e "$f" ] || [ -L "$f" ]; } && left+=("$f")
done
expect "dpkg -P left nothing behind" "" "${left[*]}"
expect "dpkg no longer knows kvd" "" "$(dpkg-query -W -f='${Status}' kvd 2>/dev/null | grep -v 'not-installed')"

finish
