"""Time to live (contract v2, section 4, and docs issue 11's decisions):
PUT and POST with ttl=S (or a form field ttl), Kvd-TTL on reads, expiry
that hides a key from every reader at once, its removal as one durable
write with its own revision within 5 s, the kvd_ttl_keys and
kvd_expired_total metrics, and expiry across SIGTERM and SIGKILL restarts."""

import json
import math
import time

import harness
from harness import Kvd, build_request, case, expect, kvdump, metric

# Expiry is durable state: the restart cases here are durability tests, so
# under CI=true a skip fails (see harness.skip).
CI_STRICT = True

JSON = "application/json"
FORM = [("Content-Type", "application/x-www-form-urlencoded")]
NOT_FOUND = b"key not found\n"
EPS = 0.05      # slack between this process's clock and kvd's
MAX_TTL = 315360000

BAD_TTLS = ("0", "315360001", "", "1.5", "-1", "abc", "+5", "%2B5", "1e3", "0x10", "%201", "1%20",
            "1,5", "99999999999999999999999", "18446744073709551617", "%EF%BC%91", "%FF", "%zz", "%3")




def store_rev(k):
    """The store's revision, from a 404 of a key never written."""
    r = k.request("GET", "/never-written")
    expect(r, 404, NOT_FOUND)
    return int(r.get("Kvd-Revision"))


def without_ttl(r):
    return harness.Response(r.version, r.status, r.reason,
                            [(n, v) for n, v in r.headers if n.lower() != "kvd-ttl"],
                            r.body, r.head_raw)


def expect_key(r, status, body=None, *, ttl=None, **kw):
    """expect() for a read of a key, plus its Kvd-TTL (its place among the
    headers is not fixed): ttl None = no Kvd-TTL, an int = exactly that, a
    (lo, hi) pair = a value in that range."""
    expect(without_ttl(r), status, body, **kw)
    got = r.get_all("Kvd-TTL")
    if ttl is None:
        assert not got, "unexpected Kvd-TTL %r: %s" % (got, r.summary())
    else:
        lo, hi = (ttl, ttl) if isinstance(ttl, int) else ttl
        assert len(got) == 1 and got[0].isdigit() and got[0][0] != "0", \
            "expected one Kvd-TTL with a positive whole number, got %r: %s" % (got, r.summary())
        assert lo <= int(got[0]) <= hi, "Kvd-TTL %s, expected %s: %s" % (
            got[0], lo if lo == hi else "%d..%d" % (lo, hi), r.summary())
    return r


def expect_write(r, status, body=None, **kw):
    """expect() for a write's answer; a Kvd-TTL on it is neither required
    nor refused (the contract puts it on reads)."""
    assert len(r.get_all("Kvd-TTL")) <= 1, r.summary()
    return expect(without_ttl(r), status, body, **kw)


def timed(c, method, path, body=b"", headers=None):
    t0 = time.monotonic()
    r = c.request(method, path, body, headers)
    return r, t0, time.monotonic()


def ttl_range(s, put0, put1, get0, get1):
    """The Kvd-TTL a read sent at get0 and answered at get1 may carry, for
    a key written with ttl=s by a request sent at put0 and answered at
    put1: the remaining seconds rounded up, at least 1, at most s."""
    lo = math.ceil(s - (get1 - put0) - EPS)
    hi = math.ceil(s - (get0 - put1) + EPS)
    return max(1, min(lo, s)), max(1, min(hi, s))


def pipelined(c, reqs):
    """Sends reqs [(method, path, body, headers)] in one write; returns the
    responses and the times just before the send and after the last answer."""
    t0 = time.monotonic()
    c.send(b"".join(build_request(m, p, bd, h) for m, p, bd, h in reqs))
    rs = [c.read_response(m) for m, _, _, _ in reqs]
    return rs, t0, time.monotonic()


def wait_gone(k, key_path, deadline):
    """Polls GET key_path until 404; returns the time of the first 404."""
    with k.conn() as c:
        for _ in range(2000):
            t = time.monotonic()
            r = c.request("GET", key_path)
            if r.status == 404:
                expect(r, 404, NOT_FOUND)
                return t
            assert r.status == 200, r.summary()
            assert t < deadline, "%s still readable: %s" % (key_path, r.summary())
            time.sleep(0.02)
    raise AssertionError("%s never expired" % key_path)


def wait_rev(k, want, deadline, what):
    """Polls kvd_revision until it is want (never above it) before deadline."""
    for _ in range(2000):
        rev = metric(k, "kvd_revision")
        assert rev <= want, "%s: the revision is %d, above %d" % (what, rev, want)
        if rev == want:
            return
        assert time.monotonic() < deadline, "%s: the revision is still %d, not %d" % (what, rev, want)
        time.sleep(0.05)
    raise AssertionError("%s: gave up polling" % what)


def hold_rev(k, want, until):
    """Asserts kvd_revision stays want until the time until."""
    for _ in range(2000):
        rev = metric(k, "kvd_revision")
        assert rev == want, "the revision moved from %d to %d" % (want, rev)
        if time.monotonic() >= until:
            return
        time.sleep(0.1)


def sleep_until(t):
    left = t - time.monotonic()
    if left > 0:
        time.sleep(left)


# -- the ttl parameter -----------------------------------------------------------

@case("a ttl that is not whole seconds from 1 to 315360000 gets 400, writes nothing and takes no revision")
def ttl_invalid():
    k = Kvd()
    with k.conn() as c:
        expect_write(c.request("PUT", "/keep", b"old"), 201, etag=1, rev=1)
        for bad in BAD_TTLS:
            for method in ("PUT", "POST"):
                expect(c.request(method, "/new?ttl=" + bad, b"v"), 400)
                expect(c.request(method, "/keep?ttl=" + bad, b"v"), 400)
                expect(c.request(method, "/new?x=1&ttl=" + bad, b"v"), 400)
        # A bare ttl has the empty value.
        expect(c.request("PUT", "/new?ttl", b"v"), 400)
        expect(c.request("POST", "/keep?ttl", b"v"), 400)
        c.assert_alive()
        expect(c.request("GET", "/new"), 404, NOT_FOUND, rev=1)
        expect_key(c.request("GET", "/keep"), 200, b"old", etag=1, rev=1)
    assert store_rev(k) == 1
    assert metric(k, "kvd_revision") == 1
    assert metric(k, "kvd_ttl_keys") == 0
    assert k.dump() == b'{"keep":"old"}\n'


@case("ttl on GET, HEAD and DELETE is ignored")
def ttl_ignored_on_reads():
    k = Kvd()
    with k.conn() as c:
        expect_write(c.request("PUT", "/k", b"v"), 201, etag=1, rev=1)
        for q in ("abc", "0", "5", ""):
            expect_key(c.request("GET", "/k?ttl=" + q), 200, b"v", etag=1, rev=1)
            expect_key(c.request("HEAD", "/k?ttl=" + q), 200, b"v", head=True, etag=1, rev=1)
        expect(c.request("GET", "/missing?ttl=abc"), 404, NOT_FOUND, rev=1)
        expect(c.request("DELETE", "/k?ttl=0"), 204, rev=2)
        expect(c.request("DELETE", "/k?ttl=abc"), 404, NOT_FOUND, rev=2)
    assert metric(k, "kvd_ttl_keys") == 0


@case("right after a write with ttl=S, GET and HEAD carry Kvd-TTL: S, and it counts down in whole seconds rounded up")
def ttl_header():
    k = Kvd()
    with k.conn() as c:
        # The read is pipelined after the write, so it is served well within
        # a second of it: the remaining time rounds up to S itself.
        times = {}
        for i, (method, s) in enumerate((("PUT", 100), ("POST", MAX_TTL), ("PUT", 1), ("POST", 2))):
            path = "/k%d" % i
            rs, t0, t1 = pipelined(c, [(method, "%s?ttl=%d" % (path, s), b"v", None),
                                       ("GET", path, b"", None), ("HEAD", path, b"", None)])
            if method == "PUT":
                expect_write(rs[0], 201, etag=i + 1, rev=i + 1)
            else:
                expect_write(rs[0], 201, b"v", body201=True, etag=i + 1, rev=i + 1)
            times[path] = (t0, t1)
            want = ttl_range(s, t0, t1, t0, t1)
            assert want == (s, s) or t1 - t0 > 0.9, (want, t1 - t0)
            expect_key(rs[1], 200, b"v", ttl=want, etag=i + 1, rev=i + 1)
            expect_key(rs[2], 200, b"v", ttl=want, head=True, etag=i + 1, rev=i + 1)
        # A second and a bit later, 100 became 99.
        rs, p0, p1 = pipelined(c, [("PUT", "/later?ttl=100", b"v", None)])
        expect_write(rs[0], 201, etag=5)
        time.sleep(1.3)
        r, g0, g1 = timed(c, "GET", "/later")
        want = ttl_range(100, p0, p1, g0, g1)
        assert want[1] <= 99, want
        expect_key(r, 200, b"v", ttl=want, etag=5)
        h, g0, g1 = timed(c, "HEAD", "/later")
        expect_key(h, 200, b"v", ttl=ttl_range(100, p0, p1, g0, g1), head=True, etag=5)
        r, g0, g1 = timed(c, "GET", "/k1")
        want = ttl_range(MAX_TTL, times["/k1"][0], times["/k1"][1], g0, g1)
        assert want[1] <= MAX_TTL - 1, want
        expect_key(r, 200, b"v", ttl=want, etag=2)


@case("a key without a TTL has no Kvd-TTL, a write without ttl clears it, one with a new ttl replaces it, and DELETE removes it")
def ttl_replace_clear():
    k = Kvd()
    with k.conn() as c:
        def ttl_of(path, s, put0, put1):
            r, g0, g1 = timed(c, "GET", path)
            return expect_key(r, 200, ttl=ttl_range(s, put0, put1, g0, g1))

        expect_write(c.request("PUT", "/a", b"1"), 201, etag=1)
        expect_key(c.request("GET", "/a"), 200, b"1", etag=1, rev=1)
        expect_key(c.request("HEAD", "/a"), 200, b"1", head=True, etag=1, rev=1)
        r, t0, t1 = timed(c, "PUT", "/b?ttl=100", b"x")
        expect_write(r, 201, etag=2)
        ttl_of("/b", 100, t0, t1)
        r, t0, t1 = timed(c, "PUT", "/b?ttl=5000", b"x")
        expect_write(r, 204, etag=3)
        ttl_of("/b", 5000, t0, t1)
        expect_write(c.request("PUT", "/b", b"y"), 204, etag=4)
        expect_key(c.request("GET", "/b"), 200, b"y", etag=4)
        r, t0, t1 = timed(c, "POST", "/b?ttl=7", b"z")
        expect_write(r, 200, b"z", etag=5)
        ttl_of("/b", 7, t0, t1)
        expect_write(c.request("POST", "/b", b"w"), 200, b"w", etag=6)
        expect_key(c.request("GET", "/b"), 200, b"w", etag=6)
        expect_write(c.request("PUT", "/b?ttl=9", b"q"), 204, etag=7)
        expect(c.request("DELETE", "/b"), 204, rev=8)
        expect_write(c.request("PUT", "/b", b"r"), 201, etag=9)
        expect_key(c.request("GET", "/b"), 200, b"r", etag=9, rev=9)
        # A cleared TTL and a replaced one never expire the key at the old time.
        rs, t0, t1 = pipelined(c, [("PUT", "/c?ttl=1", b"c1", None), ("PUT", "/c", b"c2", None),
                                   ("PUT", "/d?ttl=1", b"d1", None), ("PUT", "/d?ttl=100", b"d2", None)])
        assert [r.status for r in rs] == [201, 204, 201, 204], [r.summary() for r in rs]
        assert metric(k, "kvd_ttl_keys") == 1
        hold_rev(k, 13, t1 + 1 + 5.5)
        expect_key(c.request("GET", "/c"), 200, b"c2", etag=11, rev=13)
        r, g0, g1 = timed(c, "GET", "/d")
        expect_key(r, 200, b"d2", ttl=ttl_range(100, t0, t1, g0, g1), etag=13, rev=13)
    assert metric(k, "kvd_expired_total") == 0


@case("a form POST may send ttl as a field, and the URL's ttl wins over the form's")
def ttl_form():
    k = Kvd()
    with k.conn() as c:
        def ttl_of(path, body, s, put0, put1):
            r, g0, g1 = timed(c, "GET", path)
            return expect_key(r, 200, body, ttl=ttl_range(s, put0, put1, g0, g1))

        r, t0, t1 = timed(c, "POST", "/f", b"value=x&ttl=50", FORM)
        expect_write(r, 201, b"x", body201=True, etag=1, rev=1)
        ttl_of("/f", b"x", 50, t0, t1)
        r, t0, t1 = timed(c, "POST", "/g?ttl=30", b"value=y&ttl=50", FORM)
        expect_write(r, 201, b"y", body201=True, etag=2, rev=2)
        ttl_of("/g", b"y", 30, t0, t1)
        r, t0, t1 = timed(c, "POST", "/h", b"ttl=70&value=z+z", FORM)
        expect_write(r, 201, b"z z", body201=True, etag=3, rev=3)
        ttl_of("/h", b"z z", 70, t0, t1)
        # A form POST without the field clears the TTL.
        expect_write(c.request("POST", "/f", b"value=x2", FORM), 200, b"x2", etag=4, rev=4)
        expect_key(c.request("GET", "/f"), 200, b"x2", etag=4)
        for bad in ("0", "abc", "", "1.5", "315360001", "-1", "%2B5", "%zz"):
            expect(c.request("POST", "/i", b"value=w&ttl=" + bad.encode(), FORM), 400)
            expect(c.request("POST", "/f", b"value=w&ttl=" + bad.encode(), FORM), 400)
        expect(c.request("GET", "/i"), 404, NOT_FOUND, rev=4)
        expect_key(c.request("GET", "/f"), 200, b"x2", etag=4, rev=4)
        # Not a form: the body is the value, ttl and all.
        expect_write(c.request("POST", "/j", b"value=x&ttl=5"), 201, b"value=x&ttl=5", body201=True,
                     etag=5, rev=5)
        expect_key(c.request("GET", "/j"), 200, b"value=x&ttl=5", etag=5)
        expect_write(c.request("PUT", "/p", b"value=x&ttl=5", FORM), 201, etag=6, rev=6)
        expect_key(c.request("GET", "/p"), 200, b"value=x&ttl=5", etag=6)
    assert metric(k, "kvd_ttl_keys") == 2


# -- expiry ---------------------------------------------------------------------

@case("an expiring key reads 200 until its expiry time and 404 within the second after it, for GET and HEAD")
def expiry_reads():
    k = Kvd()
    with k.conn() as c:
        rs, t0, t1 = pipelined(c, [("PUT", "/e?ttl=1", b"v", None), ("GET", "/e", b"", None)])
        expect_write(rs[0], 201, etag=1, rev=1)
        expect_key(rs[1], 200, b"v", ttl=1, etag=1, rev=1)
        first404 = None
        for _ in range(500):
            s = time.monotonic()
            g = c.request("GET", "/e")
            h = c.request("HEAD", "/e")
            e = time.monotonic()
            if e < t0 + 1 - EPS:
                # Its expiry is at least a second after the write was sent.
                expect_key(g, 200, b"v", ttl=1, etag=1)
                expect_key(h, 200, b"v", ttl=1, head=True, etag=1)
            if g.status == 404:
                expect(g, 404, NOT_FOUND)
                expect(h, 404, NOT_FOUND, head=True)
                first404 = first404 or s
            else:
                assert first404 is None, "the key came back after a 404: %s" % g.summary()
                expect_key(g, 200, b"v", ttl=1, etag=1)
                if h.status == 404:
                    first404 = s   # the HEAD came just after the expiry
                    continue
                expect_key(h, 200, b"v", ttl=1, head=True, etag=1)
                # It expired at most a second after the write was answered.
                assert s < t1 + 2, "still readable %.2fs after its expiry: %s" % (s - t1 - 1, g.summary())
            if first404 is not None and s > first404 + 0.5:
                break
            time.sleep(0.02)
        assert first404 is not None, "the key never expired"


@case("an expired key is gone from GET /, listings and kvdump as soon as GET gives 404, before and after its removal")
def expiry_everywhere():
    k = Kvd()
    with k.conn() as c:
        for key in ("keep", "a", "c"):
            expect_write(c.request("PUT", "/" + key, key.encode()), 201)
        rs, t0, t1 = pipelined(c, [("PUT", "/b?ttl=1", b"b", None), ("PUT", "/z?ttl=1", b"z", None)])
        assert [r.status for r in rs] == [201, 201], rs
    live = b'{"a":"a","c":"c","keep":"keep"}\n'
    wait_gone(k, "/b", t1 + 2)
    wait_gone(k, "/z", t1 + 2)
    for rounds in range(2):
        with k.conn() as c:
            expect(c.request("GET", "/b"), 404, NOT_FOUND)
            expect(c.request("GET", "/z"), 404, NOT_FOUND)
            r = c.request("GET", "/")
            expect(r, 200, live, ctype=JSON)
            for q in ("prefix=", "after=", "limit=100000", "prefix=b", "prefix=z"):
                r = c.request("GET", "/?" + q)
                assert r.status == 200 and r.body == (b"{}\n" if "=b" in q or "=z" in q else live), \
                    (q, r.summary())
            r = c.request("GET", "/?keys")
            assert r.status == 200 and r.body == b'["a","c","keep"]\n', r.summary()
            # An expired key counts neither as listed nor as remaining.
            r = c.request("GET", "/?limit=2")
            assert r.body == b'{"a":"a","c":"c"}\n', r.summary()
            assert r.get("Link") == '</?prefix=&limit=2&after=c>; rel="next"', r.summary()
            r = c.request("GET", "/?limit=2&after=c")
            assert r.body == b'{"keep":"keep"}\n' and r.get("Link") is None, r.summary()
            r = c.request("GET", "/?limit=1&after=a&keys")
            assert r.body == b'["c"]\n', r.summary()
        out = kvdump(k.data)
        assert out.rc == 0 and out.out == live, out
        out = kvdump("--ndjson", k.data)
        assert out.rc == 0 and [json.loads(x)["key"] for x in out.out.splitlines()] == \
            ["a", "c", "keep"], out
        out = kvdump("--prefix", "b", k.data)
        assert out.rc == 0 and out.out == b"{}\n", out
        if rounds == 0:
            wait_rev(k, 7, t1 + 1 + 5 + 0.5, "two removals")
    expect(k.request("GET", "/"), 200, live, ctype=JSON, etag=7, rev=7)


@case("each expired key's removal takes exactly one revision, written within 5 s of its expiry and not before it")
def expiry_revision():
    k = Kvd()
    with k.conn() as c:
        expect_write(c.request("PUT", "/keep", b"k"), 201, etag=1, rev=1)
        rs, t0, t1 = pipelined(c, [("PUT", "/a?ttl=1", b"a", None), ("PUT", "/b?ttl=1", b"b", None),
                                   ("PUT", "/c?ttl=2", b"c", None), ("PUT", "/l?ttl=1000", b"l", None)])
        for i, r in enumerate(rs):
            expect_write(r, 201, etag=i + 2, rev=i + 2)
    for _ in range(1000):
        now = time.monotonic()
        rev = metric(k, "kvd_revision")
        assert 5 <= rev <= 8, rev
        if time.monotonic() < t0 + 1 - EPS:
            assert rev == 5, "a removal before any key expired: revision %d" % rev
        if now > t1 + 1 + 5 + 0.3:
            assert rev >= 7, "a and b expired more than 5 s ago, the revision is %d" % rev
        if rev == 8:
            break
        assert now < t1 + 2 + 5 + 0.3, "c expired more than 5 s ago, the revision is %d" % rev
        time.sleep(0.05)
    assert metric(k, "kvd_revision") == 8
    hold_rev(k, 8, time.monotonic() + 1.5)
    assert metric(k, "kvd_expired_total") == 3
    assert metric(k, "kvd_ttl_keys") == 1
    expect(k.request("GET", "/a"), 404, NOT_FOUND, rev=8)
    expect(k.request("GET", "/"), 200, b'{"keep":"k","l":"l"}\n', ctype=JSON, etag=8, rev=8)
    out = kvdump("--ndjson", k.data)
    assert out.rc == 0 and out.out == (b'{"key":"keep","value":"k","rev":1}\n'
                                       b'{"key":"l","value":"l","rev":5}\n'), out


@case("kvd_ttl_keys counts the keys that have a TTL and kvd_expired_total the removals written")
def ttl_metrics():
    k = Kvd()
    text = k.request("GET", "/_metrics").body.decode()
    assert "# TYPE kvd_ttl_keys gauge\n" in text, "no kvd_ttl_keys gauge in /_metrics"
    assert "# TYPE kvd_expired_total counter\n" in text, "no kvd_expired_total counter in /_metrics"
    assert metric(k, "kvd_ttl_keys") == 0 and metric(k, "kvd_expired_total") == 0
    with k.conn() as c:
        rs, t0, t1 = pipelined(c, [("PUT", "/x?ttl=100", b"x", None), ("PUT", "/y?ttl=100", b"y", None),
                                   ("PUT", "/z?ttl=1", b"z", None), ("PUT", "/w", b"w", None)])
        assert [r.status for r in rs] == [201] * 4, rs
        assert metric(k, "kvd_ttl_keys") == 3
        expect_write(c.request("PUT", "/x", b"x2"), 204)
        assert metric(k, "kvd_ttl_keys") == 2
        expect(c.request("DELETE", "/y"), 204)
        assert metric(k, "kvd_ttl_keys") == 1
        expect_write(c.request("PUT", "/w?ttl=100", b"w2"), 204)
        assert metric(k, "kvd_ttl_keys") == 2
        expect_write(c.request("POST", "/w", b"w3"), 200, b"w3")
        assert metric(k, "kvd_ttl_keys") == 1
        assert metric(k, "kvd_expired_total") == 0
    wait_rev(k, 9, t1 + 1 + 5 + 0.5, "the removal of z")
    assert metric(k, "kvd_expired_total") == 1
    assert metric(k, "kvd_ttl_keys") == 0


@case("a create-only PUT on an expired key gets 201, If-Match star gets 412, and the removal leaves the new value alone")
def expired_create_only():
    k = Kvd()
    with k.conn() as c:
        rs, t0, t1 = pipelined(c, [("PUT", "/c?ttl=1", b"old", None), ("PUT", "/d?ttl=1", b"d", None)])
        assert [r.status for r in rs] == [201, 201], rs
    wait_gone(k, "/c", t1 + 2)
    with k.conn() as c:
        r = c.request("PUT", "/c", b"x", headers=[("If-Match", "*")])
        expect(r, 412, b"precondition failed\n")
        assert r.get("ETag") is None, r.summary()
        r = c.request("PUT", "/c", b"new", headers=[("If-None-Match", "*")])
        expect_write(r, 201)
        tag = r.get("ETag")
        assert tag == '"%s"' % r.get("Kvd-Revision"), r.summary()
        expect_key(c.request("GET", "/c"), 200, b"new")
        assert c.request("GET", "/c").get("ETag") == tag
        expect(c.request("DELETE", "/d"), 404, NOT_FOUND)
        expect(c.request("GET", "/d", headers=[("If-Match", "*")]), 412, b"precondition failed\n")
        # Past the time by which the old value's removal is written.
        sleep_until(t1 + 1 + 5.5)
        r = c.request("GET", "/c")
        expect_key(r, 200, b"new")
        assert r.get("ETag") == tag, r.summary()
        expect(c.request("GET", "/d"), 404, NOT_FOUND)
    assert metric(k, "kvd_ttl_keys") == 0


# -- restarts -------------------------------------------------------------------

@case("a key that expired before a SIGTERM never comes back after restart, and its removal takes one revision in all", timeout=90)
def expired_sigterm():
    k = Kvd()
    with k.conn() as c:
        expect_write(c.request("PUT", "/keep", b"k"), 201, etag=1, rev=1)
        r, t0, t1 = timed(c, "PUT", "/gone?ttl=1", b"g")
        expect_write(r, 201, etag=2, rev=2)
    wait_gone(k, "/gone", t1 + 2)
    k.stop_ok()       # its removal may or may not be written by now
    k.restart()
    started = time.monotonic()
    expect(k.request("GET", "/gone"), 404, NOT_FOUND)
    expect(k.request("GET", "/"), 200, b'{"keep":"k"}\n', ctype=JSON)
    wait_rev(k, 3, started + 5.5, "the removal of gone")
    hold_rev(k, 3, started + 6.5)
    k.stop_ok()
    k.restart()
    expect(k.request("GET", "/gone"), 404, NOT_FOUND, rev=3)
    expect(k.request("GET", "/"), 200, b'{"keep":"k"}\n', ctype=JSON, etag=3, rev=3)
    expect_write(k.request("PUT", "/next", b"n"), 201, etag=4, rev=4)


@case("a key that expired before a SIGKILL never comes back after restart, and its removal takes one revision in all", timeout=90)
def expired_sigkill():
    k = Kvd()
    with k.conn() as c:
        expect_write(c.request("PUT", "/keep", b"k"), 201, etag=1, rev=1)
        r, t0, t1 = timed(c, "PUT", "/a?ttl=1", b"a")
        expect_write(r, 201, etag=2, rev=2)
    # Its removal written, then a SIGKILL: it is neither back nor removed twice.
    wait_rev(k, 3, t1 + 1 + 5.5, "the removal of a")
    k.sigkill()
    k.restart()
    expect(k.request("GET", "/a"), 404, NOT_FOUND, rev=3)
    r, t0, t1 = timed(k, "PUT", "/b?ttl=1", b"b")
    expect_write(r, 201, etag=4, rev=4)
    # Expired, then a SIGKILL right away, before or after its removal.
    wait_gone(k, "/b", t1 + 2)
    k.sigkill()
    k.restart()
    started = time.monotonic()
    expect(k.request("GET", "/b"), 404, NOT_FOUND)
    expect(k.request("GET", "/a"), 404, NOT_FOUND)
    expect(k.request("GET", "/"), 200, b'{"keep":"k"}\n', ctype=JSON)
    wait_rev(k, 5, started + 5.5, "the removal of b")
    hold_rev(k, 5, started + 6.5)
    k.sigkill()
    k.restart()
    expect(k.request("GET", "/"), 200, b'{"keep":"k"}\n', ctype=JSON, etag=5, rev=5)
    expect_write(k.request("PUT", "/next", b"n"), 201, etag=6, rev=6)


@case("a key whose expiry passes while kvd is down is 404 right after start, absent from kvdump, and removed with one revision after start", timeout=90)
def expired_while_down():
    k = Kvd()
    with k.conn() as c:
        expect_write(c.request("PUT", "/keep", b"k"), 201, etag=1, rev=1)
        r, t0, t1 = timed(c, "PUT", "/d?ttl=4", b"d")
        expect_write(r, 201, etag=2, rev=2)
        r, l0, l1 = timed(c, "PUT", "/long?ttl=1000", b"l")
        expect_write(r, 201, etag=3, rev=3)
        expect_key(c.request("GET", "/d"), 200, b"d", ttl=(3, 4), rev=3)
    assert metric(k, "kvd_revision") == 3
    k.stop_ok()
    assert time.monotonic() < t0 + 4 - 0.2, "stopping kvd took too long: d expired while it ran"
    sleep_until(t1 + 4 + 0.3)
    # Down, and past d's expiry: kvdump already leaves it out.
    out = kvdump(k.data)
    assert out.rc == 0 and out.out == b'{"keep":"k","long":"l"}\n', out
    out = kvdump("--ndjson", k.data)
    assert out.rc == 0 and out.out == (b'{"key":"keep","value":"k","rev":1}\n'
                                       b'{"key":"long","value":"l","rev":3}\n'), out
    k.restart()
    started = time.monotonic()
    with k.conn() as c:
        r = c.request("GET", "/d")
        expect(r, 404, NOT_FOUND)
        assert r.get("Kvd-Revision") in ("3", "4"), r.summary()
        r = c.request("GET", "/")
        expect(r, 200, b'{"keep":"k","long":"l"}\n', ctype=JSON)
        r = c.request("GET", "/?keys")
        assert r.status == 200 and r.body == b'["keep","long"]\n', r.summary()
    wait_rev(k, 4, started + 5.5, "the removal of d")
    hold_rev(k, 4, started + 6.5)
    assert metric(k, "kvd_ttl_keys") == 1
    r, g0, g1 = timed(k, "GET", "/long")
    expect_key(r, 200, b"l", ttl=ttl_range(1000, l0, l1, g0, g1), etag=3, rev=4)
    k.sigkill()
    k.restart()
    expect(k.request("GET", "/d"), 404, NOT_FOUND, rev=4)
    expect(k.request("GET", "/"), 200, b'{"keep":"k","long":"l"}\n', ctype=JSON, etag=4, rev=4)


@case("a key with a long TTL survives SIGTERM and SIGKILL restarts with its Kvd-TTL counting down from its write time", timeout=90)
def long_ttl_restart():
    k = Kvd()
    with k.conn() as c:
        r, l0, l1 = timed(c, "PUT", "/l?ttl=100", b"l")
        expect_write(r, 201, etag=1, rev=1)
        expect_write(c.request("PUT", "/m?ttl=100", b"m"), 201, etag=2, rev=2)
        expect_write(c.request("PUT", "/m", b"m2"), 204, etag=3, rev=3)
        expect_write(c.request("POST", "/n?ttl=50", b"n"), 201, b"n", body201=True, etag=4, rev=4)
        r, n0, n1 = timed(c, "POST", "/n?ttl=200", b"n2")
        expect_write(r, 200, b"n2", etag=5, rev=5)
    time.sleep(2.2)
    k.stop_ok()
    k.restart()
    with k.conn() as c:
        r, g0, g1 = timed(c, "GET", "/l")
        want = ttl_range(100, l0, l1, g0, g1)
        assert want[1] <= 98, want
        expect_key(r, 200, b"l", ttl=want, etag=1, rev=5)
        r, g0, g1 = timed(c, "HEAD", "/l")
        expect_key(r, 200, b"l", ttl=ttl_range(100, l0, l1, g0, g1), head=True, etag=1, rev=5)
        expect_key(c.request("GET", "/m"), 200, b"m2", etag=3, rev=5)
        r, g0, g1 = timed(c, "GET", "/n")
        expect_key(r, 200, b"n2", ttl=ttl_range(200, n0, n1, g0, g1), etag=5, rev=5)
        assert metric(k, "kvd_ttl_keys") == 2
        # Written just before a SIGKILL: it comes back from the log with
        # its expiry time.
        r, o0, o1 = timed(c, "PUT", "/o?ttl=100", b"o")
        expect_write(r, 201, etag=6, rev=6)
    time.sleep(1.1)
    k.sigkill()
    k.restart()
    with k.conn() as c:
        r, g0, g1 = timed(c, "GET", "/o")
        want = ttl_range(100, o0, o1, g0, g1)
        assert want[1] <= 99, want
        expect_key(r, 200, b"o", ttl=want, etag=6, rev=6)
        r, g0, g1 = timed(c, "GET", "/l")
        want = ttl_range(100, l0, l1, g0, g1)
        assert want[1] <= 97, want
        expect_key(r, 200, b"l", ttl=want, etag=1, rev=6)
        expect_key(c.request("GET", "/m"), 200, b"m2", etag=3, rev=6)
        expect(c.request("GET", "/"), 200, b'{"l":"l","m":"m2","n":"n2","o":"o"}\n', ctype=JSON,
               etag=6, rev=6)
    assert metric(k, "kvd_ttl_keys") == 3
    assert metric(k, "kvd_expired_total") == 0
