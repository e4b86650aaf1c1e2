#!/bin/bash
# tests/packaging/rpm.sh - packaging/rpm/kvd.spec parses and builds.
#
#   tests/packaging/rpm.sh
#
# Checks that rpmspec -P parses the spec, makes a source tarball of the
# work tree (files git tracks plus untracked ones .gitignore does not
# exclude; KVD_RPM_REF=REF takes commit REF instead, with packaging/ from
# the work tree), builds it with rpmbuild -bb in a temporary _topdir, and
# checks the binary package's files, config file and scriptlets.  On Debian
# the BuildRequires are Fedora names that Debian's rpm database does not
# know, so it builds with --nodeps (the Debian build dependencies of
# packaging/debian/control are what it needs).  Installs Debian's rpm
# package when missing (as root).  Takes about 20 s.
# shellcheck source=tests/packaging/lib.sh
. "$(dirname "$0")/lib.sh"

SPEC=$REPO/packaging/rpm/kvd.spec

if ! command -v rpmbuild >/dev/null || ! command -v cpio >/dev/null; then
    apt_install rpm cpio || true
fi
if ! command -v rpmbuild >/dev/null || ! command -v rpmspec >/dev/null ||
   ! command -v cpio >/dev/null; then
    skip "rpmbuild, rpmspec or cpio is missing (apt-get install rpm cpio)"
    finish
    exit
fi

check "rpmspec -P parses packaging/rpm/kvd.spec" rpmspec -P "$SPEC"
version=$(rpmspec -q --srpm --qf '%{VERSION}' "$SPEC" 2>>"$LOG")
release=$(rpmspec -q --srpm --qf '%{RELEASE}' "$SPEC" 2>>"$LOG")
cmake_version=$(sed -n 's/^project(kvd VERSION \([0-9.]*\).*/\1/p' "$REPO/CMakeLists.txt")
expect "the spec's version is CMakeLists.txt's" "$cmake_version" "$version"
deb_version=$(dpkg-parsechangelog -l "$REPO/packaging/debian/changelog" -S Version 2>/dev/null)
expect "the spec's version is debian/changelog's" "${deb_version%-*}" "$version"

# ---- the source tarball ---------------------------------------------------------
top=$WORK/rpmbuild
mkdir -p "$top/SOURCES" "$WORK/src/kvd-$version"
if [ -n "${KVD_RPM_REF:-}" ]; then
    git -C "$REPO" archive --format=tar "$KVD_RPM_REF" | tar -xf - -C "$WORK/src/kvd-$version"
    rm -rf "$WORK/src/kvd-$version/packaging"
    (cd "$REPO" && tar -cf - packaging) | tar -xf - -C "$WORK/src/kvd-$version"
elif git -C "$REPO" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    (cd "$REPO" && git ls-files -z --cached --others --exclude-standard |
     while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
     tar --null --no-recursion -T - -cf -) | tar -xf - -C "$WORK/src/kvd-$version"
else
    (cd "$REPO" && tar --exclude='./build*' --exclude=./kvd-data --exclude=./.git -cf - .) |
        tar -xf - -C "$WORK/src/kvd-$version"
fi
check "made kvd-$version.tar.gz" \
    bash -c "test -f '$WORK/src/kvd-$version/CMakeLists.txt' &&
             tar -C '$WORK/src' -czf '$top/SOURCES/kvd-$version.tar.gz' 'kvd-$version'"

# ---- rpmbuild -bb ------------------------------------------------------------------
nodeps=()
[ -r /etc/debian_version ] && nodeps=(--nodeps)
if timeout 150 rpmbuild -bb "${nodeps[@]}" --define "_topdir $top" "$SPEC" >"$WORK/rpmbuild.log" 2>&1; then
    ok "rpmbuild -bb ${nodeps[*]} builds the package"
else
    not_ok "rpmbuild -bb ${nodeps[*]} builds the package"
    tail -n 30 "$WORK/rpmbuild.log" | diag
    finish
    exit 1
fi
arch=$(rpm --eval '%{_arch}')
rpmfile=$top/RPMS/$arch/kvd-$version-$release.$arch.rpm
check "it wrote $(basename "$rpmfile")" test -f "$rpmfile"

files=$(rpm -qlp "$rpmfile" 2>>"$LOG")
missing=()
for f in /usr/sbin/kvd /usr/bin/kvdump /etc/kvd/kvd.conf \
         /usr/lib/systemd/system/kvd.service /usr/share/man/man8/kvd.8 \
         /usr/share/man/man1/kvdump.1 /usr/share/doc/kvd-$version/README.md; do
    grep -qE "^$f(\.gz)?$" <<<"$files" || missing+=("$f")
done
expect "the package has every file" "" "${missing[*]}"
expect "/etc/kvd/kvd.conf is %config(noreplace)" "/etc/kvd/kvd.conf" "$(rpm -qcp "$rpmfile" 2>>"$LOG")"
check "the packaged unit is packaging/systemd/kvd.service" \
    bash -c "rpm2cpio '$rpmfile' | (mkdir -p '$WORK/x' && cd '$WORK/x' && cpio -idm --quiet) &&
             cmp '$WORK/x/usr/lib/systemd/system/kvd.service' '$REPO/packaging/systemd/kvd.service'"
check "the packaged kvd runs: kvd --version" \
    test "$("$WORK/x/usr/sbin/kvd" --version 2>&1)" = "kvd $version"
scripts=$(rpm -qp --scripts "$rpmfile" 2>>"$LOG")
for s in postinstall preuninstall postuninstall; do
    if grep -q "^$s scriptlet" <<<"$scripts" && grep -q kvd.service <<<"$scripts"; then
        ok "the $s scriptlet handles kvd.service"
    else
        not_ok "the $s scriptlet handles kvd.service"
    fi
done

finish
