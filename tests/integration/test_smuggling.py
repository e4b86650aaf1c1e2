"""Request smuggling and framing ambiguity: every request whose length or
routing two HTTP implementations could read differently gets one 400 with
Connection: close, the connection closes, and the part a confused server
would take for a second request (always a GET of the missing key
/smuggled, which would answer 404) is never answered.  Also: a legitimate
pipeline split at every byte boundary gives the same answers."""

import json
import re
import time

from harness import Kvd, build_request, case, chunked, expect

H = b"Host: 127.0.0.1\r\n"
# What a confused server would answer as a request of its own: a 404.
SMUGGLED = b"GET /smuggled HTTP/1.1\r\n" + H + b"\r\n"


def one_answer_then_close(k, data, statuses=(400,), what=""):
    """Sends data on a fresh connection.  Exactly one error response with
    Connection: close, then the server closes and sends nothing else (so
    the smuggled request is never answered).  Returns the status."""
    with k.conn() as c:
        c.send(data, tolerate_close=True)
        try:
            r = c.read_response()
        except AssertionError as e:
            raise AssertionError("%s: no response to %r: %s" % (what, data[:120], e)) from None
        assert r.status in statuses, "%s: for %r expected %r, got %s" % (
            what, data[:120], statuses, r.summary())
        try:
            expect(r, r.status, close=True)
            c.expect_closed(timeout=2.5)
        except AssertionError as e:
            raise AssertionError("%s: for %r: %s" % (what, data[:120], e)) from None
        return r.status


def check_all(k, vectors):
    """one_answer_then_close for every (what, data, statuses); reports every
    failing vector at once.  Nothing may have been stored."""
    failures = []
    stored = []
    for what, data, statuses in vectors:
        try:
            one_answer_then_close(k, data, statuses, what)
        except AssertionError as e:
            failures.append(str(e))
    body = k.dump()
    if body != b"{}\n":
        stored.append("something was stored: GET / is %r" % body[:300])
    assert not failures and not stored, "%d of %d vectors failed:\n%s" % (
        len(failures), len(vectors), "\n".join(failures + stored))
    # The server is fine afterwards.
    expect(k.request("GET", "/smuggled"), 404, b"key not found\n")


def post(headers, body):
    return b"POST /k HTTP/1.1\r\n" + H + headers + b"\r\n" + body


# -- Content-Length and Transfer-Encoding ------------------------------------

@case("Content-Length together with Transfer-Encoding chunked is refused in either order and either length reading")
def cl_te():
    chunk_body = b"0\r\n\r\n" + SMUGGLED
    vectors = []
    # CL.TE: CL covers everything, chunked ends early.  TE.CL: CL short.
    for cl in (len(chunk_body), 3, 0):
        vectors.append(("CL %d then TE" % cl, post(
            b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n" % cl, chunk_body), (400,)))
        vectors.append(("TE then CL %d" % cl, post(
            b"Transfer-Encoding: chunked\r\nContent-Length: %d\r\n" % cl, chunk_body), (400,)))
    # A body that is a request under the CL reading and a chunk under TE.
    te_body = b"%x\r\n" % len(SMUGGLED) + SMUGGLED + b"\r\n0\r\n\r\n"
    vectors.append(("CL 0 with a chunked smuggle", post(
        b"Content-Length: 0\r\nTransfer-Encoding: chunked\r\n", te_body), (400,)))
    check_all(Kvd(), vectors)


@case("two different Content-Length values in two fields or one list are refused")
def two_cls():
    body = b"hello" + SMUGGLED
    check_all(Kvd(), [
        ("5 then 6", post(b"Content-Length: 5\r\nContent-Length: 6\r\n", body), (400,)),
        ("6 then 5", post(b"Content-Length: 6\r\nContent-Length: 5\r\n", body), (400,)),
        ("list 5, 50", post(b"Content-Length: 5, 50\r\n", body), (400,)),
        ("list 50, 5", post(b"Content-Length: 50, 5\r\n", body), (400,)),
        ("0 then 5", post(b"Content-Length: 0\r\nContent-Length: 5\r\n", body), (400,)),
    ])


@case("a Content-Length with a plus sign or other non-digits is refused")
def cl_plus():
    body = b"hello" + SMUGGLED
    check_all(Kvd(), [
        ("plus", post(b"Content-Length: +5\r\n", body), (400,)),
        ("minus zero", post(b"Content-Length: -0\r\n", body), (400,)),
        ("hex", post(b"Content-Length: 0x5\r\n", body), (400,)),
        ("inner space", post(b"Content-Length: 5 5\r\n", body), (400,)),
        ("empty", post(b"Content-Length: \r\n", body), (400,)),
        ("overflow", post(b"Content-Length: 18446744073709551621\r\n", body), (400, 413)),
    ])


@case("Content-Length 5, 5 is either refused or read as 5 and never desynchronizes the connection")
def cl_same_list():
    k = Kvd()
    for hdr in (b"Content-Length: 5, 5\r\n", b"Content-Length: 5\r\nContent-Length: 5\r\n"):
        with k.conn() as c:
            # If the server read the length as 55 or as the first digit,
            # the GET would be eaten as body or answered from the wrong
            # offset.  Read as 5, the GET is a proper next request.
            c.send(b"PUT /k HTTP/1.1\r\n" + H + hdr + b"\r\nhello"
                   + build_request("GET", "/k"), tolerate_close=True)
            r = c.read_response()
            if r.status == 400:
                expect(r, 400, close=True)
                c.expect_closed(timeout=2.5)
                continue
            assert r.status in (201, 204), "for %r: %s" % (hdr, r.summary())
            expect(r, r.status)
            expect(c.read_response(), 200, b"hello")
            c.expect_silent(0.3)
            c.assert_alive()
    body = k.dump()
    assert body in (b"{}\n", b'{"k":"hello"}\n'), body


@case("Transfer-Encoding chunked followed by identity and identity alone are refused")
def te_not_final_chunked():
    # A server that ignored the TE would read no body and take the rest for
    # the next request.
    chunk_body = b"0\r\n\r\n" + SMUGGLED
    check_all(Kvd(), [
        ("chunked, identity", post(b"Transfer-Encoding: chunked, identity\r\n", chunk_body), (400,)),
        ("identity", post(b"Transfer-Encoding: identity\r\n", SMUGGLED), (400, 501)),
        ("identity with CL", post(b"Transfer-Encoding: identity\r\nContent-Length: 5\r\n",
                                  b"hello" + SMUGGLED), (400, 501)),
        ("chunked then identity fields",
         post(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n", chunk_body), (400,)),
    ])


@case("Transfer-Encoding gzip, chunked gets 400 or 501 and closes")
def te_gzip_chunked():
    chunk_body = b"0\r\n\r\n" + SMUGGLED
    check_all(Kvd(), [
        ("gzip, chunked", post(b"Transfer-Encoding: gzip, chunked\r\n", chunk_body), (400, 501)),
        ("gzip", post(b"Transfer-Encoding: gzip\r\n", SMUGGLED), (400, 501)),
        ("xchunked", post(b"Transfer-Encoding: xchunked\r\n", chunk_body), (400, 501)),
    ])


# -- malformed header lines --------------------------------------------------

@case("whitespace between a header name and its colon is refused")
def space_before_colon():
    body = b"hello" + SMUGGLED
    check_all(Kvd(), [
        ("Host space colon", b"GET /k HTTP/1.1\r\nHost : a\r\n\r\n" + SMUGGLED, (400,)),
        ("Host tab colon", b"GET /k HTTP/1.1\r\nHost\t: a\r\n\r\n" + SMUGGLED, (400,)),
        ("Content-Length space colon", post(b"Content-Length : 5\r\n", body), (400,)),
        ("Transfer-Encoding space colon",
         post(b"Transfer-Encoding : chunked\r\n", b"0\r\n\r\n" + SMUGGLED), (400,)),
    ])


@case("obsolete line folding in a header value is refused with 400")
def obs_fold():
    # RFC 9112 5.2: a server must reject obs-fold with 400 or unfold it.
    # kvd's contract is 400.
    check_all(Kvd(), [
        ("fold with SP", b"GET /k HTTP/1.1\r\n" + H + b"X-A: a\r\n b\r\n\r\n" + SMUGGLED, (400,)),
        ("fold with HT", b"GET /k HTTP/1.1\r\n" + H + b"X-A: a\r\n\tb\r\n\r\n" + SMUGGLED, (400,)),
        ("folded Content-Length", post(b"X-A: a\r\nContent-Length: 5\r\n 0\r\n",
                                       b"hello" + SMUGGLED), (400,)),
        ("folded Transfer-Encoding", post(b"Content-Length: 5\r\nTransfer-Encoding: \r\n chunked\r\n",
                                          b"0\r\n\r\n" + SMUGGLED), (400,)),
    ])


@case("a bare CR or a NUL inside a header is refused")
def cr_nul():
    check_all(Kvd(), [
        ("bare CR in value", b"GET /k HTTP/1.1\r\n" + H + b"X-A: a\rb\r\n\r\n" + SMUGGLED, (400,)),
        ("bare CR ends a line", b"GET /k HTTP/1.1\r\n" + H + b"X-A: a\rX-B: b\r\n\r\n" + SMUGGLED, (400,)),
        ("bare CR in name", b"GET /k HTTP/1.1\r\n" + H + b"X\rA: a\r\n\r\n" + SMUGGLED, (400,)),
        ("NUL in value", b"GET /k HTTP/1.1\r\n" + H + b"X-A: a\x00b\r\n\r\n" + SMUGGLED, (400,)),
        ("NUL in name", b"GET /k HTTP/1.1\r\n" + H + b"X-\x00A: a\r\n\r\n" + SMUGGLED, (400,)),
        ("bare LF line end", b"GET /k HTTP/1.1\r\n" + H + b"X-A: a\nX-B: b\r\n\r\n" + SMUGGLED, (400,)),
    ])


@case("a chunk size that overflows 64 bits is refused and nothing after it is answered")
def chunk_overflow():
    te = b"Transfer-Encoding: chunked\r\n"
    check_all(Kvd(), [
        ("18 f", post(te, b"ffffffffffffffffff\r\n" + SMUGGLED + b"\r\n0\r\n\r\n"), (400,)),
        # 2**64 + 5 would wrap to 5 in a 64-bit accumulator.
        ("wraps to 5", post(te, b"10000000000000005\r\nhello\r\n0\r\n\r\n" + SMUGGLED), (400,)),
        ("wraps to 0", post(te, b"10000000000000000\r\n\r\n" + SMUGGLED), (400,)),
        ("32 digits", post(te, b"0000000000000000000000000000000f\r\nhello\r\n0\r\n\r\n"
                           + SMUGGLED), (400, 413)),
    ])


# -- request target and Host ---------------------------------------------------

@case("an absolute-form request target gets 400 and the framing stays intact")
def absolute_form():
    k = Kvd()
    k.put("k", b"v")
    for target in (b"http://127.0.0.1/k", b"http://127.0.0.1:%d/k" % k.port,
                   b"HTTP://127.0.0.1/k"):
        with k.conn() as c:
            c.send(b"GET " + target + b" HTTP/1.1\r\n" + H + b"\r\n", tolerate_close=True)
            r = c.read_response()
            assert r.status == 400, "GET %r: expected 400, got %s" % (target, r.summary())
            if r.get("Connection") == "close":
                expect(r, 400, close=True)
                c.expect_closed()
            else:
                expect(r, 400)
                c.assert_alive()
    # The key was not read through the absolute form: a PUT did not store.
    with k.conn() as c:
        c.send(b"PUT http://127.0.0.1/k HTTP/1.1\r\n" + H + b"Content-Length: 3\r\n\r\nnew",
               tolerate_close=True)
        r = c.read_response()
        assert r.status == 400, r.summary()
    assert k.get("k") == b"v"


@case("HTTP/1.0 keep-alive requests are answered on one connection and the last one closes it")
def http10_keepalive_pipeline():
    k = Kvd()
    ka = b"Connection: keep-alive\r\n"
    with k.conn() as c:
        c.send(b"PUT /a HTTP/1.0\r\n" + ka + b"Content-Length: 2\r\n\r\nv1"
               + b"GET /a HTTP/1.0\r\n" + ka + b"\r\n"
               + b"GET /missing HTTP/1.0\r\n" + ka + b"\r\n"
               + b"GET /a HTTP/1.0\r\n\r\n", tolerate_close=True)
        for status, body in ((201, None), (200, b"v1"), (404, b"key not found\n")):
            r = c.read_response()
            assert r.status == status, r.summary()
            assert r.get("Connection", "").lower() != "close", r.summary()
            if body is not None:
                assert r.body == body, r.summary()
        expect(c.read_response(), 200, b"v1", close=True)
        c.expect_closed()


@case("HTTP/1.1 without Host gets 400 and closes while HTTP/1.0 without Host is fine")
def no_host():
    k = Kvd()
    check_all(k, [
        ("GET no Host", b"GET /k HTTP/1.1\r\n\r\n" + SMUGGLED, (400,)),
        ("PUT no Host", b"PUT /k HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello" + SMUGGLED, (400,)),
        ("health no Host", b"GET /_health HTTP/1.1\r\nX-A: b\r\n\r\n" + SMUGGLED, (400,)),
    ])
    with k.conn() as c:
        c.send(b"GET /_health HTTP/1.0\r\n\r\n")
        expect(c.read_response(), 200, b"ok\n", close=True)
        c.expect_closed()


@case("two Host fields get 400 and close, whether they agree or not")
def duplicate_host():
    check_all(Kvd(), [
        ("different", b"GET /k HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n" + SMUGGLED, (400,)),
        ("same", b"GET /k HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n" + SMUGGLED, (400,)),
        ("apart", b"GET /k HTTP/1.1\r\nHost: a\r\nX-A: 1\r\nhost: a\r\n\r\n" + SMUGGLED, (400,)),
    ])


# -- a legitimate pipeline at every split point -------------------------------

# What differs between two runs of the same pipeline: the date, and the
# revisions, which go on counting from one run to the next.
_DATE_LINE = re.compile(rb"\r\n(?:Date|ETag|Kvd-Revision): [^\r\n]*")


def pipeline_bytes():
    chunk = chunked(b"chunked value", 5)
    return (b"PUT /a HTTP/1.1\r\n" + H + b"Content-Length: 5\r\n\r\nhello"
            + b"GET /a HTTP/1.1\r\n" + H + b"\r\n"
            + b"DELETE /a HTTP/1.1\r\n" + H + b"\r\n"
            + b"GET /a HTTP/1.1\r\n" + H + b"\r\n"
            + b"PUT /b HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n" + chunk
            + b"GET / HTTP/1.1\r\n" + H + b"\r\n"
            + b"DELETE /b HTTP/1.1\r\n" + H + b"\r\n")


def read_pipeline(c, n=7):
    out = []
    for _ in range(n):
        r = c.read_response()
        out.append(_DATE_LINE.sub(b"", r.raw))
    c.expect_silent(0.05)
    return out


@case("a pipeline split in two at every byte boundary gets the same answers in order", timeout=240)
def split_everywhere():
    k = Kvd()
    data = pipeline_bytes()
    assert 250 <= len(data) <= 350, len(data)
    with k.conn() as c:
        c.send(data)
        rs = [c.read_response() for _ in range(7)]
        expect(rs[0], 201)
        expect(rs[1], 200, b"hello")
        expect(rs[2], 204)
        expect(rs[3], 404, b"key not found\n")
        expect(rs[4], 201)
        expect(rs[5], 200, b'{"b":"chunked value"}\n', ctype="application/json")
        expect(rs[6], 204)
        want = [_DATE_LINE.sub(b"", r.raw) for r in rs]
        c.expect_silent(0.1)
    failures = []
    t0 = time.monotonic()
    for i in range(1, len(data)):
        if time.monotonic() - t0 > 180:
            raise AssertionError("split loop took over 180 s at split %d" % i)
        with k.conn() as c:
            c.send(data[:i])
            time.sleep(0.001)
            c.send(data[i:])
            try:
                got = read_pipeline(c)
            except AssertionError as e:
                failures.append("split at %d (%r|%r): %s" % (i, data[max(0, i - 12):i],
                                                             data[i:i + 12], e))
                continue
            if got != want:
                bad = [j for j in range(7) if got[j] != want[j]]
                failures.append("split at %d: response %d is %r, expected %r"
                                % (i, bad[0], got[bad[0]][:200], want[bad[0]][:200]))
        if len(failures) > 10:
            break
    assert not failures, "%d split points failed:\n%s" % (len(failures), "\n".join(failures))
    assert json.loads(k.dump()) == {}
