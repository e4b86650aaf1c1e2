"""Limits and timeouts, each set small and tested at its edge: --max-uri,
--max-header-bytes, --max-headers, --max-value, --max-connections,
--header-timeout, --body-timeout, --idle-timeout.  Memory stays flat under
oversized requests, and slow clients (slowloris, slowhttptest) do not
delay a normal client."""

import os
import re
import select
import shutil
import subprocess
import sys
import threading
import time

from harness import (Conn, ConnectionClosed, Kvd, build_request, case, check_error_body,
                     chunked, expect, skip)

H = b"Host: 127.0.0.1\r\n"


def refused(c, statuses, what):
    """Reads one error answer with Connection: close, then the close."""
    r = c.read_response()
    assert r.status in statuses, "%s: expected %r, got %s" % (what, statuses, r.summary())
    expect(r, r.status, close=True)
    c.expect_closed(timeout=3)
    return r


# -- sizes ---------------------------------------------------------------------

@case("max-uri 64 serves a request target of exactly 64 bytes and answers 65 with 414 and close")
def max_uri_edge():
    k = Kvd("--max-uri", "64")
    target = b"/" + b"u" * 63
    assert len(target) == 64
    with k.conn() as c:
        c.send(b"PUT " + target + b" HTTP/1.1\r\n" + H + b"Content-Length: 1\r\n\r\nv")
        expect(c.read_response(), 201)
        c.send(b"GET " + target + b" HTTP/1.1\r\n" + H + b"\r\n")
        expect(c.read_response(), 200, b"v")
        # The query string counts: it is part of the request target.
        q = b"/k?" + b"q" * 61
        assert len(q) == 64
        c.send(b"GET " + q + b" HTTP/1.1\r\n" + H + b"\r\n")
        expect(c.read_response(), 404, b"key not found\n")
    for t in (target + b"u", b"/k?" + b"q" * 62, b"/" + b"u" * 5000):
        with k.conn() as c:
            c.send(b"GET " + t + b" HTTP/1.1\r\n" + H + b"\r\n", tolerate_close=True)
            refused(c, (414,), "a %d-byte target" % len(t))
    k.request("GET", "/_health")


def head_with_fields(nbytes, count=None):
    """A GET whose header field lines (name: value CRLF, Host included)
    add up to exactly nbytes, over count fields."""
    host = b"Host: h\r\n"
    count = count or 1 + (nbytes - len(host)) // 1000 + 1
    rest = nbytes - len(host)
    per = rest // (count - 1)
    fields = []
    for i in range(count - 1):
        size = per if i < count - 2 else rest - per * (count - 2)
        name = b"X-F%03d: " % i
        assert size >= len(name) + 3, size
        fields.append(name + b"v" * (size - len(name) - 2) + b"\r\n")
    head = host + b"".join(fields)
    assert len(head) == nbytes, (len(head), nbytes)
    return b"GET /k HTTP/1.1\r\n" + head + b"\r\n"


@case("max-header-bytes 1K accepts 960 bytes of header fields and answers 1025 with 431 and close")
def max_header_bytes_edge():
    # Whether the request line or the final CRLF count is the server's
    # choice: the edge is tested to within 64 bytes.
    k = Kvd("--max-header-bytes", "1K")
    with k.conn() as c:
        for n in (200, 900, 960):
            c.send(head_with_fields(n))
            expect(c.read_response(), 404, b"key not found\n")
    for n in (1025, 1100, 4000, 200000):
        with k.conn() as c:
            c.send(head_with_fields(n), tolerate_close=True)
            refused(c, (431,), "%d bytes of fields" % n)
    # One field value alone over the limit.
    with k.conn() as c:
        c.send(b"GET /k HTTP/1.1\r\n" + H + b"X-Big: " + b"b" * 1100 + b"\r\n\r\n",
               tolerate_close=True)
        refused(c, (431,), "one big field")
    k.request("GET", "/_health")


@case("max-headers 5 accepts 5 header fields and answers 6 with 431 and close")
def max_headers_edge():
    k = Kvd("--max-headers", "5")
    five = H + b"".join(b"X-H%d: v\r\n" % i for i in range(4))
    with k.conn() as c:
        c.send(b"GET /_health HTTP/1.1\r\n" + five + b"\r\n")
        expect(c.read_response(), 200, b"ok\n")
        c.send(b"PUT /k HTTP/1.1\r\n" + H + b"X-A: 1\r\nX-B: 2\r\nX-C: 3\r\nContent-Length: 1\r\n\r\nv")
        expect(c.read_response(), 201)
    for extra in (5, 6, 50):
        with k.conn() as c:
            c.send(b"GET /_health HTTP/1.1\r\n" + H
                   + b"".join(b"X-H%d: v\r\n" % i for i in range(extra)) + b"\r\n",
                   tolerate_close=True)
            refused(c, (431,), "%d fields" % (extra + 1))
    # Repeated names count one each.
    with k.conn() as c:
        c.send(b"GET /_health HTTP/1.1\r\n" + H + b"X-Same: v\r\n" * 5 + b"\r\n", tolerate_close=True)
        refused(c, (431,), "6 fields with one repeated name")
    assert k.get("k") == b"v"


@case("max-value 1K stores exactly 1 KiB and answers one byte more with 413 by Content-Length, chunked and form")
def max_value_edge():
    k = Kvd("--max-value", "1K")
    n = 1024
    exact = bytes(65 + i % 26 for i in range(n))
    with k.conn() as c:
        expect(c.request("PUT", "/k", exact), 201)
        expect(c.request("GET", "/k"), 200, exact)
        c.send(build_request("PUT", "/c", chunked(exact, 100), [("Transfer-Encoding", "chunked")]))
        expect(c.read_response(), 201)
        expect(c.request("GET", "/c"), 200, exact)
        form = [("Content-Type", "application/x-www-form-urlencoded")]
        expect(c.request("POST", "/f", b"value=" + exact, form), 201, exact, body201=True)
        # A form body may be three times --max-value: n - 2 bytes, each
        # percent-encoded, in a body of exactly 3n bytes.
        enc = b"value=" + b"%41" * (n - 2)
        assert len(enc) == 3 * n
        expect(c.request("POST", "/f", enc, form), 200, b"A" * (n - 2))
    # Content-Length says too much: answered before the body is sent.
    with k.conn() as c:
        c.send(b"PUT /k HTTP/1.1\r\n" + H + b"Content-Length: %d\r\n\r\n" % (n + 1))
        refused(c, (413,), "Content-Length n+1")
    with k.conn() as c:
        c.send(b"PUT /k HTTP/1.1\r\n" + H + b"Content-Length: 1000000000\r\n\r\n")
        refused(c, (413,), "Content-Length 1e9")
    # Chunked: refused once the chunks pass the limit.
    for size in (n + 1, 5000):
        with k.conn() as c:
            c.send(build_request("PUT", "/k", chunked(b"z" * size, 300),
                                 [("Transfer-Encoding", "chunked")]), tolerate_close=True)
            r = c.read_response()
            assert r.status == 413, "chunked %d: %s" % (size, r.summary())
            if r.get("Connection") == "close":
                expect(r, 413, close=True)
                c.expect_closed(timeout=3)
            else:
                expect(r, 413)
                c.assert_alive()
    # Forms whose decoded value is n + 1 bytes.
    form = [("Content-Type", "application/x-www-form-urlencoded")]
    for body in (b"value=" + b"a" * (n + 1), b"value=" + b"+" * (n + 1),
                 b"other=1&value=" + b"%42" * (n + 1)):
        with k.conn() as c:
            c.send(build_request("POST", "/f", body, form), tolerate_close=True)
            r = c.read_response()
            assert r.status == 413, "form of %d bytes: %s" % (len(body), r.summary())
            expect(r, 413, close=None)
    # Nothing was replaced by a refused write.
    assert k.get("k") == exact
    assert k.get("f") == b"A" * (n - 2)


# -- connections -------------------------------------------------------------

def refused_or_closed(port, what):
    """A new connection gets 503 with Retry-After and Connection: close, or
    is closed without a byte.  Returns how."""
    c = Conn(port, timeout=3)
    try:
        c.send(b"GET /_health HTTP/1.1\r\n" + H + b"\r\n", tolerate_close=True)
        try:
            r = c.read_response()
        except ConnectionClosed as e:
            assert "have b''" in str(e), "%s: closed after partial bytes: %s" % (what, e)
            return "closed"
        except TimeoutError:
            raise AssertionError("%s: neither an answer nor a close within 3 s "
                                 "(the connection waits in the backlog?)" % what) from None
        assert r.status == 503 and r.reason == "Service Unavailable", \
            "%s: expected 503, got %s" % (what, r.summary())
        ra = r.get("Retry-After")
        assert ra is not None and re.fullmatch(r"[0-9]+", ra), "%s: no Retry-After: %s" % (what, r.summary())
        assert r.get("Connection") == "close", "%s: no Connection: close: %s" % (what, r.summary())
        check_error_body(r.body)
        c.expect_closed(timeout=3)
        return "503"
    finally:
        c.close()


@case("with max-connections 4 a fifth connection gets 503 or a clean close and a slot freed is reused")
def max_connections():
    k = Kvd("--max-connections", "4")
    conns = [Conn(k.port) for _ in range(4)]
    try:
        for c in conns:
            c.assert_alive()
        how = [refused_or_closed(k.port, "connection %d" % (5 + i)) for i in range(3)]
        print("over the limit:", how)
        for c in conns:
            c.assert_alive()  # the four are unaffected
        conns.pop().close()
        # The server notices the close asynchronously: retry, bounded.
        served = False
        deadline = time.monotonic() + 3
        for _ in range(60):
            if time.monotonic() > deadline:
                break
            c = Conn(k.port, timeout=3)
            try:
                c.send(b"GET /_health HTTP/1.1\r\n" + H + b"\r\n", tolerate_close=True)
                r = c.read_response()
                if r.status == 200:
                    served = True
                    conns.append(c)
                    c = None
                    break
            except (ConnectionClosed, OSError):
                pass
            finally:
                if c is not None:
                    c.close()
            time.sleep(0.05)
        assert served, "no new connection was served within 3 s of closing one"
        assert refused_or_closed(k.port, "again over the limit") in ("503", "closed")
    finally:
        for c in conns:
            c.close()


# -- timeouts ------------------------------------------------------------------

def timed_408(c, since, limit, what):
    r = c.read_response(timeout=limit + 2)
    took = time.monotonic() - since
    expect(r, 408, close=True)
    c.expect_closed(timeout=2)
    assert took <= limit, "%s: 408 after %.2fs, limit %.1fs" % (what, took, limit)
    return took


@case("header-timeout 0.5 answers a half-sent head with 408 and closes within 2 s")
def header_timeout():
    k = Kvd("--header-timeout", "0.5")
    with k.conn() as c:
        c.send(b"GET /k HTTP/1.1\r\nHo")
        took = timed_408(c, time.monotonic(), 2.0, "half a first head")
        assert took >= 0.4, "408 after only %.2fs" % took
    with k.conn() as c:
        # A keep-alive connection that starts a second request and stalls.
        c.assert_alive()
        c.send(b"GET /k HTTP/1.1\r\n" + H)
        timed_408(c, time.monotonic(), 2.0, "half a second head")
    with k.conn() as c:
        # Trickling does not extend the deadline for the head.
        t0 = time.monotonic()
        answered = None
        for b in b"GET /k HTTP/1.1\r\nX-Long: " + b"a" * 100:
            if not c.send(bytes([b]), tolerate_close=True) or time.monotonic() - t0 > 4:
                break
            readable, _, _ = select.select([c.sock], [], [], 0.05)
            if readable:
                answered = time.monotonic() - t0
                break
        assert answered is not None, "a head trickled for %.1fs was not answered" % (time.monotonic() - t0)
        expect(c.read_response(timeout=3), 408, close=True)
        assert answered <= 2.0, "trickled head answered after %.2fs" % answered
    with k.conn() as c:
        # A connection that says nothing at all is closed too (408 or not).
        t0 = time.monotonic()
        try:
            r = c.read_response(timeout=3)
            expect(r, 408, close=True)
            c.expect_closed(timeout=1)
        except ConnectionClosed as e:
            assert "have b''" in str(e), e
        assert time.monotonic() - t0 <= 2.0, "silent connection closed after %.2fs" % (time.monotonic() - t0)
    k.request("GET", "/_health")


@case("body-timeout 0.5 answers a stalled body with 408 and closes and stores nothing")
def body_timeout():
    k = Kvd("--body-timeout", "0.5")
    with k.conn() as c:
        c.send(b"PUT /k HTTP/1.1\r\n" + H + b"Content-Length: 10\r\n\r\nabc")
        timed_408(c, time.monotonic(), 2.0, "stalled Content-Length body")
    with k.conn() as c:
        c.send(b"PUT /k HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
        timed_408(c, time.monotonic(), 2.0, "stalled chunked body")
    with k.conn() as c:
        # Expect: 100-continue, then no body at all.
        c.send(b"PUT /k HTTP/1.1\r\n" + H + b"Expect: 100-continue\r\nContent-Length: 5\r\n\r\n")
        r = c.read_response()
        assert r.status == 100, r.summary()
        timed_408(c, time.monotonic(), 2.0, "no body after 100 Continue")
    # A body that keeps flowing, slower than the timeout overall, is fine.
    with k.conn() as c:
        c.send(b"PUT /slow HTTP/1.1\r\n" + H + b"Content-Length: 6\r\n\r\n")
        for b in b"abcdef":
            time.sleep(0.25)
            c.send(bytes([b]))
        expect(c.read_response(), 201)
    assert k.get("k") is None
    assert k.get("slow") == b"abcdef"


@case("idle-timeout 1 closes an idle keep-alive connection without an answer but not a busy one")
def idle_timeout():
    k = Kvd("--idle-timeout", "1")
    with k.conn() as c:
        c.assert_alive()
        t0 = time.monotonic()
        c.expect_closed(timeout=3.0)  # fails on any byte, such as a 408
        took = time.monotonic() - t0
        assert 0.8 <= took <= 2.5, "idle connection closed after %.2fs" % took
    with k.conn() as c:
        # Requests every 0.4 s for 3 s keep it open.
        t0 = time.monotonic()
        for _ in range(8):
            c.assert_alive()
            time.sleep(0.4)
        c.assert_alive()
        assert time.monotonic() - t0 < 6


# -- memory ----------------------------------------------------------------------

def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS for %d" % pid)


def oversized_round(k, count):
    """count requests of each kind: 2 MiB by Content-Length, 2 MiB chunked,
    and 20 KiB of headers.  Each must be refused (413 / 431)."""
    big = b"x" * (2 << 20)
    chunk_body = chunked(big, 64 << 10)
    hdrs = b"".join(b"X-Pad%d: %s\r\n" % (i, b"p" * 1000) for i in range(20))
    for i in range(count):
        with k.conn(timeout=10) as c:
            c.send(b"PUT /big HTTP/1.1\r\n" + H + b"Content-Length: %d\r\n\r\n" % len(big))
            r = c.read_response()
            assert r.status == 413, r.summary()
            c.send(big, tolerate_close=True)
        with k.conn(timeout=10) as c:
            sent = []
            t = threading.Thread(target=lambda: sent.append(c.send(
                b"PUT /big HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n" + chunk_body,
                tolerate_close=True)), daemon=True)
            t.start()
            try:
                r = c.read_response()
                assert r.status == 413, r.summary()
            except ConnectionClosed:
                pass  # reset while we were still sending: refused all the same
            c.close()
            t.join(10)
        with k.conn(timeout=10) as c:
            c.send(b"GET /k HTTP/1.1\r\n" + H + hdrs + b"\r\n", tolerate_close=True)
            try:
                r = c.read_response()
                assert r.status == 431, r.summary()
            except ConnectionClosed:
                pass
    assert k.get("big") is None


@case("RSS stays flat over 200 rounds of 2 MiB bodies and 20 KiB headers against max-value 1K", timeout=300)
def rss_flat():
    # Under ASan every free goes to a 256 MiB quarantine first, which grows
    # RSS by about 4.5 KiB per request whatever kvd does: measure kvd, not
    # the quarantine.  (A build without ASan ignores ASAN_OPTIONS.)
    opts = os.environ.get("ASAN_OPTIONS")
    os.environ["ASAN_OPTIONS"] = (opts + ":" if opts else "") + "quarantine_size_mb=0"
    try:
        k = Kvd("--max-value", "1K")
    finally:
        if opts is None:
            del os.environ["ASAN_OPTIONS"]
        else:
            os.environ["ASAN_OPTIONS"] = opts
    pid = k.proc.pid
    k.put("k", b"v")
    oversized_round(k, 30)   # warm-up: buffers, allocator arenas
    time.sleep(0.3)
    before = rss_kib(pid)
    t0 = time.monotonic()
    oversized_round(k, 200)
    time.sleep(0.3)
    after = rss_kib(pid)
    print("VmRSS %d KiB -> %d KiB (+%d KiB) over 600 refused requests in %.1fs"
          % (before, after, after - before, time.monotonic() - t0))
    assert after - before < 5 * 1024, "VmRSS grew by %d KiB" % (after - before)
    assert k.get("k") == b"v"


# -- slow clients ----------------------------------------------------------------

TRICKLER = r"""
import socket, sys, time, select
port, n, secs, gap = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
socks = []
for i in range(n):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.setblocking(False)
    socks.append(s)
head = b"GET /slow HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"s" * 10000
sys.stdout.write("ready\n"); sys.stdout.flush()
t0 = time.monotonic(); pos = 0; sent = 0; closed = 0
for tick in range(100000):
    if time.monotonic() - t0 > secs: break
    b = head[pos:pos + 1]; pos += 1
    for s in socks:
        if s.fileno() < 0: continue
        try:
            s.send(b); sent += 1
        except OSError:
            s.close(); closed += 1
    time.sleep(max(0.0, t0 + (tick + 1) * gap - time.monotonic()))
sys.stdout.write("sent %d closed %d\n" % (sent, closed)); sys.stdout.flush()
for s in socks: s.close()
"""


def measure_gets(port, n, gap, fresh=True):
    """n GETs (a fresh connection each when fresh) spaced by gap; returns
    the latencies.  Every GET must be answered 200."""
    lat = []
    keep = None if fresh else Conn(port, timeout=5)
    try:
        for i in range(n):
            t0 = time.monotonic()
            if fresh:
                with Conn(port, timeout=5) as c:
                    r = c.request("GET", "/key")
            else:
                r = keep.request("GET", "/key")
            lat.append(time.monotonic() - t0)
            expect(r, 200, b"value")
            time.sleep(gap)
    finally:
        if keep is not None:
            keep.close()
    return lat


@case("300 slowloris connections trickling a byte every 0.2 s do not delay 50 normal GETs beyond 200 ms", timeout=120)
def slowloris():
    k = Kvd()
    k.put("key", b"value")
    p = subprocess.Popen([sys.executable, "-c", TRICKLER, str(k.port), "300", "8", "0.2"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        line = p.stdout.readline()
        assert line == b"ready\n", "trickler did not start: %r %r" % (line, p.stderr.read()[:2000])
        time.sleep(0.5)
        lat = measure_gets(k.port, 25, 0.1, fresh=True) + measure_gets(k.port, 25, 0.1, fresh=False)
        out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(10)
    print("trickler: %s, latency max %.1f ms, mean %.1f ms"
          % (out.decode().strip(), max(lat) * 1000, sum(lat) / len(lat) * 1000))
    assert p.returncode == 0, err.decode()[:2000]
    m = re.search(rb"sent (\d+) closed (\d+)", out)
    assert m and int(m.group(2)) == 0, "the server dropped trickling connections early: %r" % out
    assert len(lat) == 50
    assert max(lat) < 0.2, "slowest GET took %.0f ms" % (max(lat) * 1000)
    k.request("GET", "/_health")


@case("slowhttptest with 300 slow-header connections for 10 s does not delay a normal client", timeout=120)
def slowhttptest():
    tool = shutil.which("slowhttptest")
    if tool is None and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "-qq", "slowhttptest"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
        tool = shutil.which("slowhttptest")
    if tool is None:
        skip("slowhttptest is not installed and could not be installed")
    k = Kvd()
    k.put("key", b"value")
    p = subprocess.Popen([tool, "-H", "-c", "300", "-i", "1", "-r", "100", "-l", "10",
                          "-x", "24", "-p", "2", "-u", "http://127.0.0.1:%d/key" % k.port],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lat = []
    try:
        time.sleep(4)  # 100 connections per second: all 300 are open by now
        lat = measure_gets(k.port, 40, 0.1, fresh=True)
        out, _ = p.communicate(timeout=40)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(10)
    text = out.decode("utf-8", "replace")
    tail = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text)[-1500:]
    print("latency max %.1f ms, mean %.1f ms\nslowhttptest tail:\n%s"
          % (max(lat) * 1000, sum(lat) / len(lat) * 1000, tail))
    assert "service available:   NO" not in tail and "service available: NO" not in tail, tail
    m = re.findall(r"connected:\s+(\d+)", tail)
    assert m and max(int(x) for x in m) >= 100, "slowhttptest did not get its connections: " + tail
    assert max(lat) < 0.2, "slowest GET took %.0f ms" % (max(lat) * 1000)


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@case("out of file descriptors kvd sheds new connections without spinning and serves again after")
def emfile():
    if not shutil.which("prlimit"):
        skip("prlimit (util-linux) is not installed")
    k = Kvd()
    k.put("a", b"1")
    pid = k.proc.pid
    res = subprocess.run(["prlimit", "--pid", str(pid), "--nofile=40:40"],
                         capture_output=True, timeout=10)
    assert res.returncode == 0, res
    conns, shed = [], 0
    try:
        for i in range(80):
            c = Conn(k.port, timeout=2)
            conns.append(c)
            c.send(b"GET /a HTTP/1.1\r\n" + H + b"\r\n", tolerate_close=True)
        for c in conns:
            try:
                r = c.read_response()
                assert r.status == 200 and r.body == b"1", r.summary()
            except (ConnectionClosed, ConnectionResetError, TimeoutError):
                shed += 1
        assert shed > 0, "80 connections fit in 40 descriptors?"
        # Holding every descriptor, an idle kvd must stay idle.
        t0 = cpu_seconds(pid)
        time.sleep(1.0)
        spent = cpu_seconds(pid) - t0
        assert spent < 0.3, "kvd used %.2f s of CPU in 1 s while out of descriptors" % spent
    finally:
        for c in conns:
            c.close()
    # With descriptors back, a new client is served at once.
    deadline = time.monotonic() + 3
    while True:
        try:
            with k.conn() as c:
                c.send(b"GET /a HTTP/1.1\r\n" + H + b"\r\n")
                expect(c.read_response(), 200, b"1")
                break
        except (ConnectionClosed, ConnectionResetError, TimeoutError):
            assert time.monotonic() < deadline, "not served within 3 s after closing"
            time.sleep(0.05)
    text = k.stderr_text()
    assert text.count("shedding connections") <= 3, text
    print("shed %d of 80 connections" % shed)
