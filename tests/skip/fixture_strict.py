"""Skip fixture, not a test of kvd: a module whose cases must not skip in CI,
like test_faults.py.  tests/integration/test_skips.py runs it through
run.py."""

from harness import Kvd, case, skip

CI_STRICT = True


@case("skips")
def skips():
    skip("the fixture needs a tool that is missing")
    raise AssertionError("skip() returned")


@case("skips after starting a kvd")
def skips_with_kvd():
    k = Kvd()
    k.put("a", b"1")
    skip("the fixture skips with a kvd running")


@case("passes")
def passes():
    pass
