"""The key-value API: GET, HEAD, PUT, POST, DELETE, keys, values, GET /."""

import json
import threading
import time

from harness import (ALLOW_KEY, ALLOW_ROOT, JSON, Kvd, build_request, case,
                     chunked, expect, kpath)


# -- PUT / GET / HEAD / DELETE ----------------------------------------------

@case("PUT of a new key answers 201 with Content-Length 0, its revision as ETag and Kvd-Revision, and no Content-Type")
def put_new():
    k = Kvd()
    with k.conn() as c:
        r = c.request("PUT", "/greeting", b"hello")
        expect(r, 201, etag=1, rev=1)
        assert r.head_raw.count(b"\r\n") == 6, r.head_raw  # status, Date, CL, ETag, rev, blank
        assert r.head_raw.startswith(b"HTTP/1.1 201 Created\r\nDate: ")
        assert r.head_raw.endswith(b"\r\nContent-Length: 0\r\nETag: \"1\"\r\n"
                                   b"Kvd-Revision: 1\r\n\r\n"), r.head_raw
        c.assert_alive()


@case("PUT over an existing key answers 204 with neither Content-Type nor Content-Length, and the next revision")
def put_replace():
    k = Kvd()
    with k.conn() as c:
        expect(c.request("PUT", "/k", b"one"), 201, etag=1, rev=1)
        r = c.request("PUT", "/k", b"two")
        expect(r, 204, etag=2, rev=2)
        assert r.head_raw.startswith(b"HTTP/1.1 204 No Content\r\nDate: ")
        assert r.head_raw.count(b"\r\n") == 5, r.head_raw
        expect(c.request("GET", "/k"), 200, b"two", etag=2, rev=2)


@case("GET returns the stored bytes exactly as text/plain with charset utf-8")
def get_value():
    k = Kvd()
    with k.conn() as c:
        expect(c.request("PUT", "/k", b"hello world\n"), 201)
        r = c.request("GET", "/k")
        expect(r, 200, b"hello world\n", etag=1, rev=1)
        assert r.head_raw.startswith(b"HTTP/1.1 200 OK\r\nDate: ")
        assert r.head_raw.endswith(b"\r\nContent-Type: text/plain; charset=utf-8\r\n"
                                   b"Content-Length: 12\r\nETag: \"1\"\r\n"
                                   b"Kvd-Revision: 1\r\n\r\n"), r.head_raw


@case("GET of a missing key answers 404 key not found and keeps the connection open")
def get_missing():
    k = Kvd()
    with k.conn() as c:
        r = c.request("GET", "/nope")
        expect(r, 404, b"key not found\n")
        assert r.head_raw.startswith(b"HTTP/1.1 404 Not Found\r\nDate: ")
        c.assert_alive()


@case("HEAD has the GET status and headers and no body for a key and for a missing key")
def head_key():
    k = Kvd()
    with k.conn() as c:
        expect(c.request("PUT", "/k", b"0123456789"), 201)
        g = c.request("GET", "/k")
        h = c.request("HEAD", "/k")
        expect(h, 200, b"0123456789", head=True)
        assert h.names() == g.names()
        assert h.get("Content-Length") == "10" and h.get("Content-Type") == g.get("Content-Type")
        # Nothing after the HEAD head: the next response parses cleanly.
        c.assert_alive()
    head_missing()


def head_missing():
    k = Kvd()
    with k.conn() as c:
        h = c.request("HEAD", "/nope")
        expect(h, 404, b"key not found\n", head=True)
        c.assert_alive()


@case("DELETE answers 204 for an existing key which is then gone and 404 for a missing key")
def delete_existing():
    k = Kvd()
    with k.conn() as c:
        expect(c.request("PUT", "/k", b"v"), 201)
        r = c.request("DELETE", "/k")
        expect(r, 204)
        expect(c.request("GET", "/k"), 404, b"key not found\n")
        # A new PUT after the delete creates it again.
        expect(c.request("PUT", "/k", b"w"), 201)
    delete_missing()


def delete_missing():
    k = Kvd()
    with k.conn() as c:
        expect(c.request("DELETE", "/nope"), 404, b"key not found\n")
        c.assert_alive()


# -- POST ------------------------------------------------------------------

@case("POST answers 201 then 200 with exact headers and the stored value as the body")
def post_raw():
    k = Kvd()
    with k.conn() as c:
        r = c.request("POST", "/k", b"first", [("Content-Type", "text/plain")])
        expect(r, 201, b"first", body201=True)
        r = c.request("POST", "/k", b"second", [("Content-Type", "application/octet-stream")])
        expect(r, 200, b"second")
        expect(c.request("GET", "/k"), 200, b"second")
    post_headers()


@case("POST of a form decodes the first value field with plus as space and percent escapes")
def post_form():
    k = Kvd()
    with k.conn() as c:
        body = b"value=hello+wide%20world%21%2B%C3%A9&other=x"
        r = c.request("POST", "/k", body,
                      [("Content-Type", "application/x-www-form-urlencoded")])
        want = "hello wide world!+\u00e9".encode()
        expect(r, 201, want, body201=True)
        expect(c.request("GET", "/k"), 200, want)
    post_form_first()


@case("POST form type is matched case-insensitively with a charset parameter")
def post_form_params():
    k = Kvd()
    with k.conn() as c:
        r = c.request("POST", "/k", b"value=a+b",
                      [("Content-Type", "Application/X-WWW-Form-URLEncoded; charset=utf-8")])
        expect(r, 201, b"a b", body201=True)
        expect(c.request("GET", "/k"), 200, b"a b")


def post_form_first():
    k = Kvd()
    with k.conn() as c:
        r = c.request("POST", "/k", b"a=1&value=first&value=second",
                      [("Content-Type", "application/x-www-form-urlencoded")])
        expect(r, 201, b"first", body201=True)
        r = c.request("POST", "/k", b"value=again",
                      [("Content-Type", "application/x-www-form-urlencoded")])
        expect(r, 200, b"again")


@case("POST form without a value field answers 400 and stores nothing")
def post_form_no_value():
    k = Kvd()
    with k.conn() as c:
        r = c.request("POST", "/k", b"a=1&values=2&xvalue=3",
                      [("Content-Type", "application/x-www-form-urlencoded")])
        expect(r, 400)
        expect(c.request("GET", "/k"), 404, b"key not found\n")
        c.assert_alive()


@case("POST with another content type stores a form-looking body raw")
def post_other_type():
    k = Kvd()
    with k.conn() as c:
        r = c.request("POST", "/k", b"value=x+y%20", [("Content-Type", "text/plain")])
        expect(r, 201, b"value=x+y%20", body201=True)
        r = c.request("POST", "/j", b"value=z")  # no Content-Type at all
        expect(r, 201, b"value=z", body201=True)
        expect(c.request("GET", "/k"), 200, b"value=x+y%20")


def post_headers():
    k = Kvd()
    with k.conn() as c:
        r = c.request("POST", "/k", b"abc")
        # 201 for a POST has the value as its body, so it has a Content-Type.
        expect(r, 201, b"abc", body201=True, etag=1, rev=1)
        assert r.head_raw.startswith(b"HTTP/1.1 201 Created\r\nDate: ")
        assert r.head_raw.endswith(b"\r\nContent-Type: text/plain; charset=utf-8\r\n"
                                   b"Content-Length: 3\r\nETag: \"1\"\r\n"
                                   b"Kvd-Revision: 1\r\n\r\n"), r.head_raw
        r = c.request("POST", "/k", b"defg")
        expect(r, 200, b"defg", etag=2, rev=2)
        assert r.head_raw.startswith(b"HTTP/1.1 200 OK\r\nDate: ")
        r = c.request("POST", "/e", b"")
        expect(r, 201, b"", body201=True)


# -- values ------------------------------------------------------------------

@case("an empty value is stored and GET gives 200 with Content-Length 0")
def empty_value():
    k = Kvd()
    with k.conn() as c:
        c.send(b"PUT /e HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        expect(c.read_response(), 201)
        r = c.request("GET", "/e")
        expect(r, 200, b"")
        assert r.get("Content-Length") == "0"
        expect(c.request("HEAD", "/e"), 200, b"", head=True)


@case("NUL, control bytes and multibyte UTF-8 up to U+10FFFF in values round-trip exactly")
def control_bytes():
    k = Kvd()
    v = bytes(range(0, 128)) + b"\x00\x00end\r\n\r\n"
    with k.conn() as c:
        expect(c.request("PUT", "/ctl", v), 201)
        expect(c.request("GET", "/ctl"), 200, v)
    multibyte()


def multibyte():
    k = Kvd()
    v = "\u00e9\u20ac\ufffd\uffff\U0001F600\U0010FFFF caf\u00e9".encode()
    with k.conn() as c:
        expect(c.request("PUT", "/mb", v), 201)
        expect(c.request("GET", "/mb"), 200, v)


@case("invalid UTF-8 values in PUT, POST and forms are refused with 400 and the old value stays")
def invalid_utf8():
    k = Kvd()
    bad = [b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"ok\x80", b"\xe2\x82",
           b"\xff", b"\xc1\xbf", b"\xe0\x80\xaf", b"\xf0\x80\x80\xaf", b"\xed\xbf\xbf"]
    with k.conn() as c:
        expect(c.request("PUT", "/k", b"old"), 201)
        for b in bad:
            expect(c.request("PUT", "/k", b), 400)
            expect(c.request("POST", "/k", b), 400)
            expect(c.request("PUT", "/new", b), 400)
        expect(c.request("GET", "/k"), 200, b"old")
        expect(c.request("GET", "/new"), 404, b"key not found\n")
    form_invalid_utf8()


def form_invalid_utf8():
    k = Kvd()
    with k.conn() as c:
        expect(c.request("PUT", "/k", b"old"), 201)
        r = c.request("POST", "/k", b"value=%C0%AF",
                      [("Content-Type", "application/x-www-form-urlencoded")])
        expect(r, 400)
        expect(c.request("GET", "/k"), 200, b"old")


@case("a 4 MiB value round-trips exactly")
def big_value():
    k = Kvd()
    v = bytes((i * 7 + 13) % 95 + 32 for i in range(4096)) * 1024
    with k.conn(timeout=30) as c:
        expect(c.request("PUT", "/big", v), 201)
        expect(c.request("GET", "/big"), 200, v)


# -- --max-value, Expect ------------------------------------------------------

@case("with max-value 1K a 1024-byte value is stored and 1025 bytes get 413 and close")
def max_value_boundary():
    k = Kvd("--max-value", "1K")
    with k.conn() as c:
        expect(c.request("PUT", "/k", b"a" * 1024), 201)
        expect(c.request("POST", "/k", b"b" * 1024), 200, b"b" * 1024)
    with k.conn() as c:
        c.send(build_request("PUT", "/k", b"c" * 1025), tolerate_close=True)
        expect(c.read_response(), 413, close=True)
        c.expect_closed()
    with k.conn() as c:
        c.send(build_request("PUT", "/other", b"c" * 1025), tolerate_close=True)
        expect(c.read_response(), 413, close=True)
        c.expect_closed()
    assert k.get("k") == b"b" * 1024
    assert k.get("other") is None


@case("with max-value 1K a chunked body of 1024 bytes is stored and 1025 bytes get 413")
def max_value_chunked():
    k = Kvd("--max-value", "1K")
    te = [("Transfer-Encoding", "chunked")]
    with k.conn() as c:
        c.send(build_request("PUT", "/k", chunked(b"x" * 1024, 100), te))
        expect(c.read_response(), 201)
        c.assert_alive()
    with k.conn() as c:
        c.send(build_request("PUT", "/k", chunked(b"y" * 1025, 100), te), tolerate_close=True)
        expect(c.read_response(), 413, close=True)
        c.expect_closed()
    with k.conn() as c:
        c.send(build_request("PUT", "/k", chunked(b"z" * 1025, 1025), te), tolerate_close=True)
        expect(c.read_response(), 413, close=True)
        c.expect_closed()
    assert k.get("k") == b"x" * 1024


@case("Expect 100-continue with an acceptable length gets 100 Continue before the body")
def expect_continue():
    k = Kvd("--max-value", "1K")
    with k.conn() as c:
        c.send(b"PUT /k HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
               b"Expect: 100-continue\r\n\r\n")
        interim = c.read_exact(len(b"HTTP/1.1 100 Continue\r\n\r\n"), timeout=3)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n", interim
        c.send(b"hello")
        expect(c.read_response(), 201)
        expect(c.request("GET", "/k"), 200, b"hello")
        # A client that sends the body without waiting still gets one final
        # answer (after an optional 100 Continue) and the connection stays usable.
        c.send(b"PUT /k HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
               b"Expect: 100-continue\r\n\r\nworld")
        r = c.read_response()
        if r.status == 100:
            assert r.head_raw == b"HTTP/1.1 100 Continue\r\n\r\n", r.head_raw
            r = c.read_response()
        expect(r, 204)
        expect(c.request("GET", "/k"), 200, b"world")


@case("Expect 100-continue with a too large length gets 413 at once without the body")
def expect_too_large():
    k = Kvd("--max-value", "1K")
    with k.conn() as c:
        c.send(b"PUT /k HTTP/1.1\r\nHost: x\r\nContent-Length: 1025\r\n"
               b"Expect: 100-continue\r\n\r\n")
        expect(c.read_response(timeout=3), 413, close=True)
        c.expect_closed()
    assert k.get("k") is None


# -- keys ----------------------------------------------------------------------

@case("a percent-encoded slash and a raw slash name the same key")
def key_slash():
    k = Kvd()
    with k.conn() as c:
        expect(c.request("PUT", "/a/b", b"1"), 201)
        expect(c.request("GET", "/a%2Fb"), 200, b"1")
        expect(c.request("PUT", "/a%2fb", b"2"), 204)
        expect(c.request("GET", "/a/b"), 200, b"2")
        expect(c.request("GET", "/a"), 404, b"key not found\n")
    assert json.loads(k.dump()) == {"a/b": "2"}


@case("the query string is dropped from the key")
def key_query():
    k = Kvd()
    with k.conn() as c:
        expect(c.request("PUT", "/a?x=1", b"v"), 201)
        expect(c.request("GET", "/a"), 200, b"v")
        expect(c.request("GET", "/a?y=2&z"), 200, b"v")
        expect(c.request("DELETE", "/a?"), 204)
    assert k.dump() == b"{}\n"


@case("a plus in the path stays a plus and differs from an encoded space")
def key_plus():
    k = Kvd()
    with k.conn() as c:
        expect(c.request("PUT", "/a+b", b"plus"), 201)
        expect(c.request("PUT", "/a%20b", b"space"), 201)
        expect(c.request("GET", "/a%2Bb"), 200, b"plus")
        expect(c.request("GET", "/a+b"), 200, b"plus")
        expect(c.request("GET", "/a%20b"), 200, b"space")
    assert json.loads(k.dump()) == {"a b": "space", "a+b": "plus"}


@case("a 511-byte key works and a 512-byte decoded key gets 414")
def key_length():
    k = Kvd()
    k511 = "k" * 509 + "\u00e9"  # 511 bytes
    assert len(k511.encode()) == 511
    with k.conn() as c:
        expect(c.request("PUT", kpath(k511), b"v"), 201)
        expect(c.request("GET", kpath(k511)), 200, b"v")
        expect(c.request("PUT", "/" + "x" * 511, b"w"), 201)
        expect(c.request("PUT", "/" + "%41" * 512, b"v"), 414, close=None)
    with k.conn() as c:
        expect(c.request("GET", "/" + "y" * 512), 414, close=None)
    with k.conn() as c:
        expect(c.request("PUT", kpath("k" * 510 + "\u00e9"), b"v"), 414, close=None)
    assert sorted(json.loads(k.dump())) == sorted([k511, "x" * 511])


@case("a key that is not valid UTF-8 gets 400 and the connection stays open")
def key_bad_utf8():
    k = Kvd()
    with k.conn() as c:
        for p in ["/%FF", "/a%C0%AFb", "/%ED%A0%80", "/%F4%90%80%80"]:
            expect(c.request("PUT", p, b"v"), 400)
            expect(c.request("GET", p), 400)
        c.assert_alive()
    assert k.dump() == b"{}\n"


@case("invalid percent-encoding gets 400 on every method and keeps the connection open")
def key_bad_percent():
    k = Kvd()
    with k.conn() as c:
        for p in ["/a%zz", "/ab%4", "/ab%", "/%", "/%g0"]:
            for m in ["GET", "HEAD", "PUT", "POST", "DELETE"]:
                body = b"body" if m in ("PUT", "POST") else b""
                r = c.request(m, p, body)
                expect(r, 400, head=(m == "HEAD"))
        c.assert_alive()
    assert k.dump() == b"{}\n"


@case("a request target over 8 KiB gets 414 and the connection closes")
def target_too_long():
    k = Kvd()
    with k.conn() as c:
        c.send(build_request("GET", "/" + "a" * 9000), tolerate_close=True)
        expect(c.read_response(), 414, close=True)
        c.expect_closed()
    with k.conn() as c:
        c.send(build_request("PUT", "/" + "%41" * 3000, b"v"), tolerate_close=True)
        expect(c.read_response(), 414, close=True)
        c.expect_closed()


@case("NUL, quote and backslash bytes in keys work as encoded paths")
def key_odd_bytes():
    k = Kvd()
    keys = ["a\x00b", "q\"uote", "back\\slash", "tab\tnl\n", "\u00fcber/\u00e9t\u00e9"]
    with k.conn() as c:
        for i, key in enumerate(keys):
            expect(c.request("PUT", kpath(key), str(i).encode()), 201)
        for i, key in enumerate(keys):
            expect(c.request("GET", kpath(key)), 200, str(i).encode())
    assert json.loads(k.dump()) == {key: str(i) for i, key in enumerate(keys)}


# -- server endpoints --------------------------------------------------------

def health():
    k = Kvd()
    with k.conn() as c:
        expect(c.request("GET", "/_health"), 200, b"ok\n")
        expect(c.request("HEAD", "/_health"), 200, b"ok\n", head=True)


@case("GET /_health answers ok, an unknown underscore endpoint 404 and an encoded underscore reaches the key")
def underscore():
    k = Kvd()
    with k.conn() as c:
        expect(c.request("GET", "/_x"), 404)
        expect(c.request("GET", "/_nothing/here"), 404)
        expect(c.request("GET", "/%5Fhealth"), 404, b"key not found\n")
        expect(c.request("PUT", "/%5Fname", b"u"), 201)
        expect(c.request("GET", "/%5fname"), 200, b"u")
        expect(c.request("GET", "/_name"), 404)
        c.assert_alive()
    assert k.dump() == b'{"_name":"u"}\n'
    health()


# -- GET / -----------------------------------------------------------------

def root_empty():
    k = Kvd()
    with k.conn() as c:
        r = c.request("GET", "/")
        expect(r, 200, b"{}\n", ctype=JSON)
        expect(c.request("HEAD", "/"), 200, b"{}\n", ctype=JSON, head=True)


@case("GET / is compact JSON of every key sorted by key bytes and an empty object when empty")
def root_sorted():
    k = Kvd()
    data = {"b": "2", "a": "1", "a/b": "3", "A": "0", "ab": "4", "a0": "5", "zz": "", "Z": "6"}
    for key, v in data.items():
        k.put(key, v.encode())
    want = "{" + ",".join('"%s":"%s"' % (key, data[key])
                          for key in sorted(data, key=lambda s: s.encode())) + "}\n"
    with k.conn() as c:
        expect(c.request("GET", "/"), 200, want.encode(), ctype=JSON)
        expect(c.request("GET", "/?x=1"), 200, want.encode(), ctype=JSON)
    root_empty()


@case("GET / escapes control and special characters so json.loads round-trips every value")
def root_escapes():
    k = Kvd()
    data = {
        "nul": "a\x00b",
        "ctl": "".join(chr(i) for i in range(32)) + "\x7f",
        "q": 'say "hi" \\ back / slash',
        "u": "\u00e9\u2028\u2029\U0001F600\U0010FFFF",
        "k\x01\"\\": "key has escapes",
        "empty": "",
        "\u00e9": "accent key sorts after ascii",
    }
    for key, v in data.items():
        k.put(key, v.encode())
    body = k.dump()
    assert body.endswith(b"}\n") and body.count(b"\n") == 1, body
    assert json.loads(body) == data
    keys = list(json.loads(body, object_pairs_hook=lambda p: [a for a, _ in p]))
    assert keys == sorted(data, key=lambda s: s.encode()), keys


@case("GET / reflects every acknowledged write at once on another connection")
def root_fresh():
    k = Kvd()
    with k.conn() as a, k.conn() as b:
        for i in range(40):
            expect(a.request("PUT", "/k%d" % (i % 7), b"v%d" % i), 201 if i < 7 else 204)
            got = json.loads(b.request("GET", "/").body)
            assert got.get("k%d" % (i % 7)) == "v%d" % i, (i, got)
            if i % 5 == 4:
                expect(a.request("DELETE", "/k%d" % (i % 7)), 204)
                got = json.loads(b.request("GET", "/").body)
                assert "k%d" % (i % 7) not in got, (i, got)
                expect(a.request("PUT", "/k%d" % (i % 7), b"v%d" % i), 201)


@case("GET / under concurrent writers is valid JSON that reflects every write acknowledged before it", timeout=60)
def root_concurrent():
    k = Kvd()
    nwriters = 4
    acked = {}          # key -> (counter, ack time), one writer per key
    lock = threading.Lock()
    stop = threading.Event()
    errors = []

    def writer(t):
        try:
            with k.conn() as c:
                for n in range(1, 100_000):
                    if stop.is_set():
                        break
                    key = "w%d-%d" % (t, n % 5)
                    r = c.request("PUT", "/" + key, b"%d" % n)
                    assert r.status in (201, 204), r.summary()
                    with lock:
                        acked[key] = (n, time.monotonic())
        except BaseException as e:
            errors.append(repr(e))

    threads = [threading.Thread(target=writer, args=(t,), daemon=True) for t in range(nwriters)]
    for th in threads:
        th.start()
    checked = 0
    try:
        with k.conn() as c:
            deadline = time.monotonic() + 2.0
            for _ in range(10_000):
                if time.monotonic() > deadline or errors:
                    break
                t0 = time.monotonic()
                with lock:
                    floor = {key: n for key, (n, at) in acked.items() if at < t0}
                r = c.request("GET", "/")
                expect(r, 200, r.body, ctype=JSON)
                got = json.loads(r.body)
                for key, n in floor.items():
                    assert key in got and int(got[key]) >= n, \
                        "GET / shows %s=%r but %d was acknowledged before it" % (key, got.get(key), n)
                checked += 1
    finally:
        stop.set()
        for th in threads:
            th.join(10)
    assert not errors, errors
    assert checked >= 5, "only %d GET / completed" % checked
    print("%d GET / checked against %d keys" % (checked, len(acked)))


@case("two GET / of the same data are byte-identical and HEAD / has the same length")
def root_identical():
    k = Kvd()
    for i in range(50):
        k.put("key-%03d" % (49 - i), ("value %d \u00e9" % i).encode())
    with k.conn() as a, k.conn() as b:
        r1 = a.request("GET", "/")
        r2 = b.request("GET", "/")
        assert r1.body == r2.body
        h = a.request("HEAD", "/")
        expect(h, 200, r1.body, ctype=JSON, head=True)
    assert len(json.loads(r1.body)) == 50


@case("PUT, POST and DELETE on the root answer 405 with Allow GET, HEAD")
def root_methods():
    k = Kvd()
    with k.conn() as c:
        for m in ["PUT", "POST", "DELETE"]:
            r = c.request(m, "/", b"x" if m != "DELETE" else b"")
            expect(r, 405, allow=ALLOW_ROOT)
        c.assert_alive()
    assert k.dump() == b"{}\n"


@case("PATCH and OPTIONS on a key answer 405 with the key Allow list and keep-alive")
def key_methods():
    k = Kvd()
    with k.conn() as c:
        expect(c.request("PUT", "/k", b"v"), 201)
        expect(c.request("PATCH", "/k", b"w"), 405, allow=ALLOW_KEY)
        expect(c.request("OPTIONS", "/k"), 405, allow=ALLOW_KEY)
        expect(c.request("OPTIONS", "/other"), 405, allow=ALLOW_KEY)
        c.assert_alive()
        expect(c.request("GET", "/k"), 200, b"v")


@case("a made-up method FOO answers 501 and the connection closes")
def unknown_method():
    k = Kvd()
    with k.conn() as c:
        c.send(b"FOO /k HTTP/1.1\r\nHost: x\r\n\r\n", tolerate_close=True)
        expect(c.read_response(), 501, close=True)
        c.expect_closed()
