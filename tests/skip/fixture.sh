#!/bin/bash
# fixture.sh - the shell side of the skip mechanism, for test_skips.py.
#
#   tests/skip/fixture.sh pass|skip|fail
#
# Not a test of kvd: a packaging-style script on tests/packaging/lib.sh
# whose second check passes, skips or fails.
# shellcheck source=tests/packaging/lib.sh
. "$(dirname "$0")/../packaging/lib.sh"

ok "a check that passes"
case ${1:-} in
pass) ok "another check that passes" ;;
skip) skip "the fixture needs a tool that is missing" ;;
fail) not_ok "a check that fails" ;;
*) echo "usage: fixture.sh pass|skip|fail" >&2; exit 2 ;;
esac
finish
