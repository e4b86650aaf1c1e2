"""Conditional requests (contract v2, section 2): If-Match and
If-None-Match on every method, 304 and 412, and their atomicity against
the writes of the same group commit."""

import threading

import harness
from harness import Conn, Kvd, case, expect

JSON = "application/json"
PRECOND = b"precondition failed\n"


def req(c, method, path, body=b"", **hdrs):
    return c.request(method, path, body, headers=list(hdrs.items()))


@case("If-Match with the current tag writes, a stale tag gets 412 with the current tag and writes nothing")
def if_match_cas():
    k = Kvd()
    with k.conn() as c:
        expect(req(c, "PUT", "/k", b"one"), 201, etag=1, rev=1)
        expect(req(c, "PUT", "/k", b"two", **{"If-Match": '"1"'}), 204, etag=2, rev=2)
        r = req(c, "PUT", "/k", b"three", **{"If-Match": '"1"'})
        expect(r, 412, PRECOND, etag=2, rev=2)
        expect(req(c, "GET", "/k"), 200, b"two", etag=2, rev=2)
        # Several tags; a weak one never matches If-Match.
        expect(req(c, "POST", "/k", b"four", **{"If-Match": '"7", "2"'}), 200, b"four", etag=3, rev=3)
        expect(req(c, "PUT", "/k", b"x", **{"If-Match": 'W/"3"'}), 412, PRECOND, etag=3, rev=3)
        expect(req(c, "DELETE", "/k", **{"If-Match": '"2"'}), 412, PRECOND, etag=3, rev=3)
        expect(req(c, "DELETE", "/k", **{"If-Match": "*"}), 204, rev=4)
        # If-Match fails on a missing key, even with *: no ETag then.
        expect(req(c, "PUT", "/k", b"y", **{"If-Match": "*"}), 412, PRECOND, rev=4)
        expect(req(c, "GET", "/k", **{"If-Match": "*"}), 412, PRECOND, rev=4)
        expect(req(c, "GET", "/k"), 404, b"key not found\n", rev=4)


@case("If-None-Match star makes PUT and POST create-only, and on GET a listed tag gives 304 with no body")
def if_none_match():
    k = Kvd()
    with k.conn() as c:
        expect(req(c, "PUT", "/n", b"1", **{"If-None-Match": "*"}), 201, etag=1, rev=1)
        expect(req(c, "PUT", "/n", b"2", **{"If-None-Match": "*"}), 412, PRECOND, etag=1, rev=1)
        expect(req(c, "POST", "/n", b"3", **{"If-None-Match": "*"}), 412, PRECOND, etag=1, rev=1)
        r = req(c, "GET", "/n", **{"If-None-Match": '"1"'})
        expect(r, 304, etag=1, rev=1)
        assert r.body == b"" and r.get("Content-Length") is None, r.summary()
        # Weak comparison: W/"1" matches "1".
        expect(req(c, "HEAD", "/n", **{"If-None-Match": 'W/"1"'}), 304, etag=1, rev=1)
        expect(req(c, "GET", "/n", **{"If-None-Match": '"9"'}), 200, b"1", etag=1, rev=1)
        # If-Match is evaluated first.
        expect(req(c, "GET", "/n", **{"If-Match": '"9"', "If-None-Match": '"1"'}),
               412, PRECOND, etag=1, rev=1)
        # A missing key passes If-None-Match.
        expect(req(c, "GET", "/none", **{"If-None-Match": "*"}), 404, b"key not found\n", rev=1)


@case("GET / and HEAD / answer 304 to If-None-Match with the image's tag")
def image_not_modified():
    k = Kvd()
    with k.conn() as c:
        expect(req(c, "GET", "/", **{"If-None-Match": '"0"'}), 304, etag=0, rev=0)
        expect(req(c, "PUT", "/a", b"x"), 201, etag=1, rev=1)
        expect(req(c, "GET", "/", **{"If-None-Match": '"0"'}), 200, b'{"a":"x"}\n', ctype=JSON, etag=1, rev=1)
        expect(req(c, "HEAD", "/", **{"If-None-Match": '"1", "0"'}), 304, etag=1, rev=1)


@case("a malformed If-Match or If-None-Match gets 400 and writes nothing")
def malformed():
    k = Kvd()
    with k.conn() as c:
        for name, value in (("If-Match", "1"), ("If-Match", '"1'), ("If-None-Match", '"1" "2"'),
                            ("If-None-Match", "*, \"1\""), ("If-Match", ""), ("If-Match", "W/1")):
            r = req(c, "PUT", "/m", b"v", **{name: value})
            expect(r, 400, b"malformed If-Match or If-None-Match\n")
        expect(req(c, "GET", "/m"), 404, b"key not found\n", rev=0)


@case("racing create-only PUTs from 16 threads: exactly one gets 201 and the others 412")
def racing_create():
    k = Kvd()
    results, lock = [], threading.Lock()
    start = threading.Barrier(16)

    def worker(i):
        with Conn(k.port, timeout=10) as c:
            start.wait(10)
            r = req(c, "PUT", "/once", b"t%d" % i, **{"If-None-Match": "*"})
            with lock:
                results.append((i, r.status))

    ts = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(16)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(20)
    statuses = sorted(s for _, s in results)
    assert statuses == [201] + [412] * 15, statuses
    winner = [i for i, s in results if s == 201][0]
    assert k.get("once") == b"t%d" % winner


@case("a read-modify-write loop with If-Match from 16 threads loses no update")
def rmw_counter():
    k = Kvd()
    k.put("counter", b"0")
    per, problems = 25, []

    def worker():
        try:
            with Conn(k.port, timeout=10) as c:
                done = tries = 0
                while done < per:
                    tries += 1
                    assert tries < 5000, "too many retries"
                    r = req(c, "GET", "/counter")
                    n = int(r.body)
                    w = req(c, "PUT", "/counter", b"%d" % (n + 1), **{"If-Match": r.get("ETag")})
                    if w.status == 204:
                        done += 1
                    else:
                        assert w.status == 412, w.summary()
        except Exception as e:
            problems.append(repr(e))

    ts = [threading.Thread(target=worker, daemon=True) for _ in range(16)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert not problems, problems[:3]
    assert k.get("counter") == b"%d" % (16 * per), k.get("counter")


@case("conditions in one pipelined batch see the writes before them in that batch")
def batch_conditions():
    k = Kvd()
    reqs = [("PUT", "/b", b"1", {"If-None-Match": "*"}),
            ("PUT", "/b", b"2", {"If-None-Match": "*"}),
            ("PUT", "/b", b"3", {"If-Match": '"1"'}),
            ("DELETE", "/b", b"", {"If-Match": '"1"'}),
            ("DELETE", "/b", b"", {"If-Match": '"2"'})]
    with k.conn() as c:
        c.send(b"".join(harness.build_request(m, p, b, headers=list(h.items()))
                        for m, p, b, h in reqs))
        rs = [c.read_response(m) for m, _, _, _ in reqs]
    assert [r.status for r in rs] == [201, 412, 204, 412, 204], [r.summary() for r in rs]
    expect(rs[0], 201, etag=1, rev=1)
    expect(rs[2], 204, etag=2, rev=2)
    expect(rs[4], 204, rev=3)
    expect(k.request("GET", "/b"), 404, b"key not found\n", rev=3)
