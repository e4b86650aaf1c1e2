"""Skip fixture, not a test of kvd: a module without CI_STRICT, like
test_limits.py, whose cases skip visibly in CI too.
tests/integration/test_skips.py runs it through run.py."""

from harness import case, skip


@case("skips")
def skips():
    skip("port 8080 is busy in the fixture")
    raise AssertionError("skip() returned")
