"""HTTP/1.1 framing: keep-alive, pipelining, chunked bodies, errors that
close the connection, limits, slow clients."""

import json
import socket
import threading
import time

from harness import Conn, Kvd, build_request, case, chunked, expect

H = b"Host: 127.0.0.1\r\n"


def bad_request_closes(k, data, statuses=(400,)):
    """Sends data on a new connection; expects exactly one error response
    with Connection: close, then the close, and nothing else."""
    with k.conn() as c:
        c.send(data, tolerate_close=True)
        r = c.read_response()
        assert r.status in statuses, "for %r expected %r, got %s" % (data[:80], statuses, r.summary())
        expect(r, r.status, close=True)
        c.expect_closed()
        return r


def all_bad_requests_close(k, cases):
    """bad_request_closes for every (data, statuses) pair; reports every
    mismatch at once rather than only the first."""
    failures = []
    for data, statuses in cases:
        try:
            bad_request_closes(k, data, statuses)
        except AssertionError as e:
            failures.append(str(e))
    assert not failures, "\n".join(failures)


# -- keep-alive and Connection ----------------------------------------------

@case("HTTP/1.1 connections are kept alive across many requests by default")
def keepalive_default():
    k = Kvd()
    with k.conn() as c:
        for i in range(20):
            expect(c.request("PUT", "/k%d" % i, b"v"), 201)
            expect(c.request("GET", "/k%d" % i), 200, b"v")
            expect(c.request("GET", "/missing"), 404, b"key not found\n")
        c.expect_silent(0.2)
        c.assert_alive()


@case("Connection close from the client gets Connection close and the server closes")
def client_close():
    k = Kvd()
    with k.conn() as c:
        r = c.request("GET", "/_health", headers=[("Connection", "close")])
        expect(r, 200, b"ok\n", close=True)
        c.expect_closed()
    with k.conn() as c:
        r = c.request("PUT", "/k", b"v", headers=[("Connection", "close")])
        expect(r, 201, close=True)
        c.expect_closed()
    with k.conn() as c:
        r = c.request("GET", "/nope", headers=[("connection", "Close")])
        expect(r, 404, b"key not found\n", close=True)
        c.expect_closed()
    assert k.get("k") == b"v"


@case("HTTP/1.0 without keep-alive is closed after the response")
def http10_close():
    k = Kvd()
    with k.conn() as c:
        c.send(b"GET /_health HTTP/1.0\r\n\r\n")
        r = c.read_response()
        expect(r, 200, b"ok\n", close=True)
        c.expect_closed()
    with k.conn() as c:
        c.send(b"PUT /k HTTP/1.0\r\nContent-Length: 2\r\n\r\nhi")
        expect(c.read_response(), 201, close=True)
        c.expect_closed()
    assert k.get("k") == b"hi"


@case("HTTP/1.0 with Connection keep-alive stays open")
def http10_keepalive():
    k = Kvd()
    with k.conn() as c:
        for i in range(3):
            c.send(b"GET /_health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            r = c.read_response()
            assert r.status == 200 and r.body == b"ok\n", r.summary()
            assert r.get("Connection", "").lower() != "close", r.summary()
        c.expect_silent(0.2)
        c.assert_alive()


@case("Connection close in the middle of a pipeline ends it after that response")
def pipeline_close_middle():
    k = Kvd()
    with k.conn() as c:
        c.send(b"GET /_health HTTP/1.1\r\n" + H + b"\r\n"
               b"PUT /a HTTP/1.1\r\n" + H + b"Connection: close\r\nContent-Length: 1\r\n\r\n1"
               b"PUT /b HTTP/1.1\r\n" + H + b"Content-Length: 1\r\n\r\n2", tolerate_close=True)
        expect(c.read_response(), 200, b"ok\n")
        expect(c.read_response(), 201, close=True)
        c.expect_closed()
    assert k.get("a") == b"1"
    assert k.get("b") is None


@case("a request with an Upgrade header is answered without upgrading and the connection stays usable")
def upgrade_ignored():
    k = Kvd()
    with k.conn() as c:
        # What curl --http2 sends on an http:// URL.
        c.send(b"GET /k HTTP/1.1\r\n" + H + b"Connection: Upgrade, HTTP2-Settings\r\n"
               b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n")
        expect(c.read_response(), 404, b"key not found\n")
        c.assert_alive()
        c.send(b"PUT /k HTTP/1.1\r\n" + H + b"Connection: Upgrade\r\nUpgrade: websocket\r\n"
               b"Content-Length: 2\r\n\r\nok")
        expect(c.read_response(), 201)
        expect(c.request("GET", "/k"), 200, b"ok")


@case("CONNECT is refused without breaking the framing of the connection")
def connect_method():
    k = Kvd()
    for target in (b"/k", b"127.0.0.1:80"):
        with k.conn() as c:
            c.send(b"CONNECT " + target + b" HTTP/1.1\r\n" + H + b"\r\n")
            r = c.read_response()
            assert r.status in (400, 405), r.summary()
            if r.get("Connection") == "close":
                expect(r, r.status, close=True, allow=r.get("Allow"))
                c.expect_closed()
            else:
                # No Connection: close, so the connection must go on working.
                expect(r, r.status, allow=r.get("Allow"))
                c.assert_alive()


# -- pipelining -------------------------------------------------------------

@case("a GET pipelined after a PUT of the same key in one send sees the new value")
def pipeline_put_get():
    k = Kvd()
    with k.conn() as c:
        c.send(build_request("PUT", "/k", b"one") + build_request("GET", "/k")
               + build_request("PUT", "/k", b"two") + build_request("GET", "/k")
               + build_request("DELETE", "/k") + build_request("GET", "/k")
               + build_request("GET", "/"))
        expect(c.read_response(), 201)
        expect(c.read_response(), 200, b"one")
        expect(c.read_response(), 204)
        expect(c.read_response(), 200, b"two")
        expect(c.read_response(), 204)
        expect(c.read_response(), 404, b"key not found\n")
        expect(c.read_response(), 200, b"{}\n", ctype="application/json")
        c.expect_silent(0.2)


@case("100 pipelined requests in one send are all answered in order")
def pipeline_100():
    k = Kvd()
    reqs = []
    for i in range(50):
        reqs.append(build_request("PUT", "/p%d" % (i % 10), b"v%d" % i))
        reqs.append(build_request("GET", "/p%d" % (i % 10)))
    with k.conn(timeout=15) as c:
        c.send(b"".join(reqs))
        for i in range(50):
            expect(c.read_response(), 201 if i < 10 else 204)
            expect(c.read_response(), 200, b"v%d" % i)
        c.expect_silent(0.2)


@case("pipelined HEAD, errors and 405 keep their order and framing")
def pipeline_mixed():
    k = Kvd()
    with k.conn() as c:
        c.send(build_request("PUT", "/k", b"12345") + build_request("HEAD", "/k")
               + build_request("GET", "/nope") + build_request("PATCH", "/k", b"xx")
               + build_request("GET", "/bad%zz") + build_request("HEAD", "/")
               + build_request("GET", "/k", b"a GET body is read and ignored")
               + build_request("DELETE", "/nope", b"xyz") + build_request("GET", "/k"))
        expect(c.read_response("PUT"), 201)
        expect(c.read_response("HEAD"), 200, b"12345", head=True)
        expect(c.read_response(), 404, b"key not found\n")
        expect(c.read_response(), 405, allow="GET, HEAD, PUT, POST, DELETE")
        expect(c.read_response(), 400)
        r = c.read_response("HEAD")
        expect(r, 200, ctype="application/json", head=True, length=len(b'{"k":"12345"}\n'))
        expect(c.read_response(), 200, b"12345")
        expect(c.read_response(), 404, b"key not found\n")
        expect(c.read_response(), 200, b"12345")
        c.expect_silent(0.2)


@case("pipelined GETs of a large value are all delivered to a slow reader")
def pipeline_backpressure():
    k = Kvd()
    v = b"0123456789abcdef" * 16384  # 256 KiB
    k.put("big", v)
    n = 40
    with k.conn(timeout=30) as c:
        errors = []

        def sender():
            try:
                c.send(build_request("GET", "/big") * n)
            except Exception as e:  # reported below
                errors.append(e)

        t = threading.Thread(target=sender, daemon=True)
        t.start()
        time.sleep(0.3)  # let the server's output back up
        for _ in range(n):
            expect(c.read_response(timeout=30), 200, v)
        t.join(10)
        assert not t.is_alive() and not errors, errors


@case("a client that half-closes after an incomplete request gets every complete answer in full")
def half_close_after_partial():
    k = Kvd()
    v = b"0123456789abcdef" * 16384  # 256 KiB: the answers back up
    k.put("big", v)
    n = 40
    partials = [b"GET /big HTTP/1.1\r\nHost: x\r\n",                    # in the head
                b"PUT /half HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc"]  # body
    for partial in partials:
        with k.conn(timeout=30) as c:
            c.send(build_request("GET", "/_metrics") + build_request("GET", "/big") * n
                   + partial)
            c.sock.shutdown(socket.SHUT_WR)
            time.sleep(0.5)  # the FIN arrives while answers are still queued
            r = c.read_response(timeout=30)
            expect(r, 200, ctype="text/plain; version=0.0.4; charset=utf-8")
            for i in range(n):
                expect(c.read_response(timeout=30), 200, v)
            c.expect_closed()
    assert k.get("half") is None


@case("a request sent one byte at a time is answered")
def byte_at_a_time():
    k = Kvd()
    data = build_request("PUT", "/slow/key", b"value=s+v",
                         [("Content-Type", "application/x-www-form-urlencoded")])
    with k.conn() as c:
        for i in range(len(data)):
            c.send(data[i:i + 1])
            if i % 16 == 0:
                time.sleep(0.002)
        # PUT stores the raw body whatever the Content-Type.
        expect(c.read_response(), 201)
        expect(c.request("GET", "/slow/key"), 200, b"value=s+v")


@case("header names and Connection values are case-insensitive")
def header_case():
    k = Kvd()
    with k.conn() as c:
        c.send(b"PUT /k HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\nabc")
        expect(c.read_response(), 201)
        c.send(b"POST /f HTTP/1.1\r\nHOST: x\r\nCONTENT-TYPE: application/x-www-form-urlencoded"
               b"\r\nCONTENT-LENGTH: 7\r\n\r\nvalue=z")
        expect(c.read_response(), 201, b"z", body201=True)
        c.send(b"GET /k HTTP/1.1\r\nHost: x\r\nCONNECTION: CLOSE\r\n\r\n")
        expect(c.read_response(), 200, b"abc", close=True)
        c.expect_closed()


# -- chunked request bodies --------------------------------------------------

@case("chunked bodies of many small chunks and of no chunks are stored exactly")
def chunked_many():
    k = Kvd()
    v = bytes((i % 26) + 65 for i in range(3000))
    with k.conn() as c:
        c.send(build_request("PUT", "/k", chunked(v, 1), [("Transfer-Encoding", "chunked")]))
        expect(c.read_response(), 201)
        c.send(build_request("PUT", "/k", chunked(v[:777], 13), [("Transfer-Encoding", "chunked")]))
        expect(c.read_response(), 204)
        expect(c.request("GET", "/k"), 200, v[:777])
    chunked_empty()


@case("chunk extensions, upper-case hex sizes and trailers are accepted")
def chunked_ext_trailers():
    k = Kvd()
    body = (b"5;name=value\r\nhello\r\n"
            b"1;a;b=\"q\"\r\n \r\n"
            b"A\r\n0123456789\r\n"
            b"0\r\nX-Trailer: yes\r\nX-Other: 1\r\n\r\n")
    with k.conn() as c:
        c.send(b"PUT /k HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n" + body)
        expect(c.read_response(), 201)
        expect(c.request("GET", "/k"), 200, b"hello 0123456789")
        c.send(b"POST /f HTTP/1.1\r\n" + H + b"Content-Type: application/x-www-form-urlencoded\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n3\r\nval\r\n6\r\nue=a+b\r\n0\r\n\r\n")
        expect(c.read_response(), 201, b"a b", body201=True)
        c.assert_alive()


def chunked_empty():
    k = Kvd()
    with k.conn() as c:
        c.send(b"PUT /k HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
        expect(c.read_response(), 201)
        expect(c.request("GET", "/k"), 200, b"")


# -- errors that close ---------------------------------------------------------

@case("a malformed request line gets 400 with Connection close and the connection closes")
def malformed_request_line():
    k = Kvd()
    all_bad_requests_close(k, [
        (b"GET /k HTTP/1.1 extra\r\n" + H + b"\r\n", (400,)),
        (b"/k HTTP/1.1\r\n" + H + b"\r\n", (400,)),          # no method
        (b"GET /k HTTP/1.1\r\r\n" + H + b"\r\n", (400,)),
        # Not a well-formed HTTP-version: 400 (505 is for an unknown one).
        (b"GET /k\r\n\r\n", (400,)),
        (b"GET /k HTTP/1.x\r\n" + H + b"\r\n", (400,)),
        # A lower-case method is a valid token but no known method.
        (b"get /k HTTP/1.1\r\n" + H + b"\r\n", (400, 501)),
    ])
    k.request("GET", "/_health")


def bad_line_closes(k, line, status=400, byte_at_a_time=False):
    """Sends line (a request line and CRLF), a Host header and a pipelined
    PUT of /smuggled; expects exactly one error with Connection close, then
    the close.  byte_at_a_time sends the request line one byte per send."""
    put = build_request("PUT", "/smuggled", b"x")
    with k.conn() as c:
        if byte_at_a_time:
            for i in range(len(line)):
                c.send(line[i:i + 1], tolerate_close=True)
                time.sleep(0.005)
            c.send(H + b"\r\n" + put, tolerate_close=True)
        else:
            c.send(line + H + b"\r\n" + put, tolerate_close=True)
        r = c.read_response()
        msg = b"malformed request\n" if status == 400 else b"HTTP version not supported\n"
        expect(r, status, msg, close=True)
        c.expect_closed()
    assert k.get("smuggled") is None, "the request behind %r was executed" % line


@case("two spaces after the method get 400 and close and a pipelined PUT is not executed")
def double_space_after_method():
    k = Kvd()
    bad_line_closes(k, b"GET  /_health HTTP/1.1\r\n")
    bad_line_closes(k, b"PUT  /k HTTP/1.1\r\n")
    bad_line_closes(k, b"GET  /_health HTTP/1.1\r\n", byte_at_a_time=True)
    assert k.dump() == b"{}\n"


@case("two spaces before the version get 400 and close and a pipelined PUT is not executed")
def double_space_before_version():
    k = Kvd()
    bad_line_closes(k, b"GET /_health  HTTP/1.1\r\n")
    bad_line_closes(k, b"GET /_health      HTTP/1.1\r\n")
    bad_line_closes(k, b"GET /_health  HTTP/1.1\r\n", byte_at_a_time=True)
    assert k.dump() == b"{}\n"


@case("a request line without a version gets 400 and close, not 505")
def missing_version():
    k = Kvd()
    bad_line_closes(k, b"GET /_health\r\n")
    bad_line_closes(k, b"GET /_health\r\n", byte_at_a_time=True)
    bad_line_closes(k, b"GET /_health \r\n")
    bad_line_closes(k, b"GET /_health HTTP/\r\n")
    all_bad_requests_close(k, [(b"GET /_health\r\n\r\n", (400,))])
    # Not HTTP: llhttp knows ICE and RTSP request lines too.
    bad_line_closes(k, b"GET /_health RTSP/1.0\r\n")
    bad_line_closes(k, b"SOURCE /_health ICE/1.0\r\n")
    assert k.dump() == b"{}\n"


@case("well-formed versions other than 1.0 and 1.1 get 505 and close")
def unsupported_versions_505():
    k = Kvd()
    for v in [b"HTTP/2.0", b"HTTP/1.2", b"HTTP/3.0", b"HTTP/0.9"]:
        bad_line_closes(k, b"GET /_health " + v + b"\r\n", 505)
    bad_line_closes(k, b"GET /_health HTTP/1.2\r\n", 505, byte_at_a_time=True)
    # Broken versions are malformed lines.
    for v in [b"HTTP/1.x", b"HTTP/2", b"HTTP/1.1 junk", b"HTTP/1.10"]:
        bad_line_closes(k, b"GET /_health " + v + b"\r\n")
    assert k.dump() == b"{}\n"


@case("pipelined requests sent one byte per read are all answered")
def byte_at_a_time_pipeline():
    k = Kvd()
    data = (build_request("GET", "/_health") + build_request("PUT", "/k", b"v")
            + build_request("GET", "/k"))
    with k.conn() as c:
        for i in range(len(data)):
            c.send(data[i:i + 1])
            time.sleep(0.002)
        expect(c.read_response(), 200, b"ok\n")
        expect(c.read_response(), 201)
        expect(c.read_response(), 200, b"v")
        c.expect_silent(0.2)


@case("garbage bytes get 400 with Connection close and the connection closes")
def garbage():
    k = Kvd()
    all_bad_requests_close(k, [(data, (400,)) for data in [
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",  # a TLS ClientHello
        b"\x00\x01\x02\x03garbage\r\n\r\n",
        b"GET /k HTTP/1.1\r\nHost: x\r\nBad Header Name: v\r\n\r\n",
        b"GET /k HTTP/1.1\r\nHost: x\r\nNoColon\r\n\r\n",
        b"GET /k HTTP/1.1\r\n Host: folded\r\n\r\n"]])
    assert k.dump() == b"{}\n"


@case("a good request followed by garbage in one send gets its answer and then 400 and close")
def good_then_garbage():
    k = Kvd()
    with k.conn() as c:
        c.send(build_request("PUT", "/k", b"v") + b"\x01\x02 garbage\r\n\r\n"
               + build_request("PUT", "/never", b"x"), tolerate_close=True)
        expect(c.read_response(), 201)
        expect(c.read_response(), 400, close=True)
        c.expect_closed()
    assert json.loads(k.dump()) == {"k": "v"}


@case("Content-Length with Transfer-Encoding gets 400 and a smuggled request is never answered")
def cl_and_te():
    k = Kvd()
    smuggled = b"PUT /smuggled HTTP/1.1\r\n" + H + b"Content-Length: 1\r\n\r\nx"
    body = b"0\r\n\r\n" + smuggled
    for hdrs in [b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n" % len(body),
                 b"Transfer-Encoding: chunked\r\nContent-Length: %d\r\n" % len(body)]:
        bad_request_closes(k, b"POST /k HTTP/1.1\r\n" + H + hdrs + b"\r\n" + body)
    assert k.dump() == b"{}\n"


@case("two different Content-Length headers get 400 and close")
def two_content_lengths():
    k = Kvd()
    for hdrs in [b"Content-Length: 5\r\nContent-Length: 6\r\n",
                 b"Content-Length: 5, 6\r\n"]:
        bad_request_closes(k, b"PUT /k HTTP/1.1\r\n" + H + hdrs + b"\r\nhello!"
                           + build_request("PUT", "/smuggled", b"x"))
    assert k.dump() == b"{}\n"


@case("an invalid Content-Length value gets 400 and close")
def bad_content_length():
    k = Kvd()
    for v in [b"abc", b"-1", b"5x", b"0x5"]:
        bad_request_closes(k, b"PUT /k HTTP/1.1\r\n" + H + b"Content-Length: " + v
                           + b"\r\n\r\nhello")
    assert k.dump() == b"{}\n"


@case("an invalid chunk size gets 400 and close and nothing is stored")
def bad_chunk_size():
    k = Kvd()
    te = b"PUT /k HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
    for body in [b"zz\r\nhello\r\n0\r\n\r\n",
                 b"-5\r\nhello\r\n0\r\n\r\n",
                 b"5\r\nhelloXX0\r\n\r\n",
                 b"fffffffffffffffffffff\r\nx\r\n0\r\n\r\n"]:
        bad_request_closes(k, te + body + build_request("PUT", "/smuggled", b"x"), (400, 413))
    assert k.dump() == b"{}\n"


# -- limits --------------------------------------------------------------------

@case("a header section over 16 KiB gets 431 and close")
def headers_too_large():
    k = Kvd()
    big = b"X-Big: " + b"a" * 17000 + b"\r\n"
    bad_request_closes(k, b"GET /k HTTP/1.1\r\n" + H + big + b"\r\n", (431,))
    many = b"".join(b"X-H%d: %s\r\n" % (i, b"b" * 200) for i in range(90))  # ~18 KiB
    bad_request_closes(k, b"GET /k HTTP/1.1\r\n" + H + many + b"\r\n", (431,))


@case("more than 100 header fields get 431 and close while 100 are accepted")
def header_count():
    k = Kvd()
    ok = b"".join(b"X-H%d: v\r\n" % i for i in range(99))  # + Host = 100
    with k.conn() as c:
        c.send(b"GET /_health HTTP/1.1\r\n" + H + ok + b"\r\n")
        expect(c.read_response(), 200, b"ok\n")
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(101))
    bad_request_closes(k, b"GET /_health HTTP/1.1\r\n" + H + many + b"\r\n", (431,))


@case("HTTP/2.0 and HTTP/3.0 request lines get 505 or 400 and close")
def bad_versions():
    k = Kvd()
    for v in [b"HTTP/2.0", b"HTTP/3.0", b"HTTP/2"]:
        bad_request_closes(k, b"GET /_health " + v + b"\r\n" + H + b"\r\n", (505, 400))


@case("300 half-sent request lines do not delay a new client beyond 1 s")
def slow_clients():
    k = Kvd()
    half = []
    try:
        for _ in range(300):
            c = Conn(k.port, timeout=5)
            c.send(b"GET /ke")
            half.append(c)
        k.put("key", b"value")  # on a fresh connection
        t0 = time.monotonic()
        with k.conn() as c:
            r = c.request("GET", "/key")
        elapsed = time.monotonic() - t0
        expect(r, 200, b"value")
        assert elapsed < 1.0, "new client took %.2fs" % elapsed
        # The half-open ones are harmless: finishing a few of them works.
        for c in half[:3]:
            c.send(b"y HTTP/1.1\r\n" + H + b"\r\n")
            expect(c.read_response(), 200, b"value")
        for c in half[3:]:
            assert not c.buf
    finally:
        for c in half:
            c.close()
    k.request("GET", "/_health")
