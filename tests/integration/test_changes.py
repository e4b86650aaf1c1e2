"""The change feed (contract v2, section 5, and docs/notes issue 12's
decisions): GET /_changes as NDJSON, Server-Sent Events or a long poll,
with since, prefix and key filters, heartbeats and Last-Event-ID; the exact
bytes of each framing; list-then-watch under concurrent writes; a watcher
that never reads; resuming after SIGKILL and across a SIGTERM restart (also
from a real browser's EventSource); the collapsed history and 410 Gone."""

import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import threading
import time

import harness
from harness import Conn, Kvd, Response, build_request, case, expect, jstr, kpath, metric

# Resuming the feed after SIGKILL and a restart is a durability test, and
# the browser test has its tool installed by tools/deps.sh: under CI=true a
# skip fails (see harness.skip).
CI_STRICT = True

harness.REASONS.setdefault(410, "Gone")

NDJSON = "application/x-ndjson"
SSE = "text/event-stream"
JSON = "application/json"
TEXT = harness.TEXT


# --------------------------------------------------------------------------
# The expected bytes

def b(s):
    return s.encode("utf-8") if isinstance(s, str) else s




def put_json(rev, key, value):
    return b'{"rev":%d,"op":"put","key":%s,"value":%s}' % (rev, jstr(key), jstr(value))


def del_json(rev, key, op="delete"):
    return b'{"rev":%d,"op":"%s","key":%s}' % (rev, op.encode(), jstr(key))


def progress_json(rev):
    return b'{"op":"progress","rev":%d}' % rev


def sse_event(line):
    """The SSE frame of a change's JSON line."""
    d = json.loads(line)
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (d["rev"], d["op"].encode(), line)


def change_line(ch):
    """ch: (rev, op, key, value or None) -> its exact JSON line."""
    rev, op, key, value = ch
    return put_json(rev, key, value) if op == "put" else del_json(rev, key, op)


# --------------------------------------------------------------------------
# Writes that report their revision

def rev_of(r):
    v = r.get("Kvd-Revision")
    assert v is not None and re.fullmatch(r"0|[1-9][0-9]*", v), "no Kvd-Revision: %s" % r.summary()
    return int(v)


def wput(c, key, value, query=""):
    r = c.request("PUT", kpath(key) + query, b(value))
    assert r.status in (201, 204), "PUT %r: %s" % (key, r.summary())
    return rev_of(r)


def wdel(c, key):
    r = c.request("DELETE", kpath(key))
    assert r.status == 204, "DELETE %r: %s" % (key, r.summary())
    return rev_of(r)


def store_rev(c):
    """The store's revision, from a 404 of a key never written."""
    r = c.request("GET", "/never/written/key")
    assert r.status == 404, r.summary()
    return rev_of(r)


def listing(c, prefix):
    """GET /?prefix=P -> (dict, Kvd-Revision)."""
    r = c.request("GET", "/?prefix=" + pct(prefix))
    expect(r, 200, ctype=JSON)
    return json.loads(r.body), rev_of(r)


def pct(s):
    return "".join(chr(x) if chr(x).isalnum() or chr(x) in "-._~" else "%%%02X" % x
                   for x in b(s))


# --------------------------------------------------------------------------
# Reading a stream

_HEX = re.compile(rb"[0-9a-fA-F]{1,16}")


def parse_head(head):
    lines = head[:-4].split(b"\r\n")
    m = harness._STATUS_RE.fullmatch(lines[0])
    assert m, "bad status line %r" % head
    headers = []
    for line in lines[1:]:
        hm = harness._HEADER_RE.fullmatch(line)
        assert hm, "bad response header line %r in %r" % (line, head)
        headers.append((hm.group(1).decode("latin-1"), hm.group(2).decode("latin-1")))
    return Response("HTTP/%s.%s" % (m.group(1).decode(), m.group(2).decode()),
                    int(m.group(3)), m.group(4).decode("latin-1"), headers, b"", head)


def check_stream_head(r, ctype, rev, *, chunked=True):
    """A stream's head, exactly: 200 OK, Date, Content-Type, Kvd-Revision,
    and Transfer-Encoding: chunked (HTTP/1.1) or Connection: close
    (HTTP/1.0), plus Cache-Control: no-cache for SSE; no other header, none
    twice (their order is not part of the contract)."""
    ctx = r.summary()
    assert (r.version, r.status, r.reason) == ("HTTP/1.1", 200, "OK"), ctx
    want = {"Content-Type": ctype, "Kvd-Revision": str(rev)}
    if chunked:
        want["Transfer-Encoding"] = "chunked"
    else:
        want["Connection"] = "close"
    if ctype == SSE:
        want["Cache-Control"] = "no-cache"
    names = r.names()
    assert sorted(names) == sorted(["Date"] + list(want)), \
        "expected headers %r, got %r: %s" % (sorted(["Date"] + list(want)), names, ctx)
    harness.check_date(r.get("Date"))
    for n, v in want.items():
        assert r.get(n) == v, "expected %s: %s, got %r: %s" % (n, v, r.get(n), ctx)


class Stream:
    """A change feed on its own connection: the head, then the body with
    the chunked framing checked and removed (HTTP/1.1), or as it comes
    until the close (HTTP/1.0)."""

    def __init__(self, port, target, headers=None, version="HTTP/1.1", timeout=5.0,
                 conn=None, send=True):
        self.port = port
        self.c = conn or Conn(port, timeout)
        self.target = target
        if send:
            self.c.send(build_request("GET", target, b"", headers, version, port))
        self.head = None
        self.chunked = None
        self.body = bytearray()
        self.ended = False  # the last chunk came (1.1), or the close (1.0)
        self.closed = False

    def close(self):
        self.c.close()

    def read_head(self, timeout=5.0):
        self.head = parse_head(self.c._read_head(time.monotonic() + timeout))
        te = self.head.get("Transfer-Encoding")
        self.chunked = te is not None
        assert te in (None, "chunked"), self.head.summary()
        return self.head

    def open(self, ctype=NDJSON, rev=None, chunked=True, timeout=5.0):
        """Reads the head and checks it as check_stream_head does."""
        r = self.read_head(timeout)
        check_stream_head(r, ctype, rev if rev is not None else r.get("Kvd-Revision"),
                          chunked=chunked)
        return self

    def _more(self, deadline):
        c = self.c
        if not self.chunked:
            # Body bytes may have come with the head: take them first.
            if not c.buf:
                try:
                    c._fill(deadline, "more of the stream")
                except harness.ConnectionClosed:
                    self.ended = self.closed = True
            self.body += c.buf
            c.buf.clear()
            return
        for _ in range(100_000):
            i = c.buf.find(b"\r\n")
            if i >= 0:
                break
            assert len(c.buf) < 64, "bad chunk size line: %r" % bytes(c.buf[:80])
            c._fill(deadline, "a chunk size line")
        size = bytes(c.buf[:i])
        assert _HEX.fullmatch(size), "bad chunk size line %r" % bytes(c.buf[:80])
        del c.buf[:i + 2]
        n = int(size, 16)
        left = max(0.001, deadline - time.monotonic())
        if n == 0:
            end = c.read_exact(2, timeout=left, what="the end of the last chunk")
            assert end == b"\r\n", "bytes after the last chunk's size: %r" % end
            self.ended = True
            return
        data = c.read_exact(n + 2, timeout=left + n / 5e6, what="a %d-byte chunk" % n)
        assert data[-2:] == b"\r\n", "chunk of %d bytes not followed by CRLF: %r" % (n, data[-10:])
        self.body += data[:-2]

    def _take(self, sep, timeout, what):
        deadline = time.monotonic() + timeout
        for _ in range(10_000_000):
            i = self.body.find(sep)
            if i >= 0:
                out = bytes(self.body[:i])
                del self.body[:i + len(sep)]
                return out
            if self.ended:
                raise harness.ConnectionClosed("the stream ended while waiting for %s; have %r"
                                               % (what, bytes(self.body[:300])))
            self._more(deadline)
        raise AssertionError("no %s" % what)

    def line(self, timeout=5.0):
        """The next NDJSON line, without its newline."""
        return self._take(b"\n", timeout, "a line")

    def event(self, timeout=5.0):
        """The next SSE block, with its blank line."""
        return self._take(b"\n\n", timeout, "an event") + b"\n\n"

    def raw(self, n, timeout=5.0):
        """Exactly n bytes of the body."""
        deadline = time.monotonic() + timeout
        for _ in range(10_000_000):
            if len(self.body) >= n:
                out = bytes(self.body[:n])
                del self.body[:n]
                return out
            assert not self.ended, "stream ended with %r" % bytes(self.body)
            self._more(deadline)
        raise AssertionError("no %d bytes" % n)

    def lines_until(self, pred, timeout, limit=10_000_000):
        """Lines up to and including the first for which pred(parsed) holds."""
        deadline = time.monotonic() + timeout
        out = []
        for _ in range(limit):
            left = deadline - time.monotonic()
            assert left > 0, "timed out after %d lines, the last %r" % (len(out), out[-1:])
            ln = self.line(left)
            out.append(ln)
            if pred(json.loads(ln)):
                return out
        raise AssertionError("no matching line in %d lines" % limit)

    def silent(self, secs):
        assert not self.body, "unexpected stream data: %r" % bytes(self.body[:300])
        self.c.expect_silent(secs)

    def rest_raw(self, timeout=5.0):
        """Every raw byte left until the server closes the connection."""
        assert not self.body, "undelivered stream data: %r" % bytes(self.body[:300])
        out = bytearray(self.c.buf)
        self.c.buf.clear()
        deadline = time.monotonic() + timeout
        for _ in range(100_000):
            left = deadline - time.monotonic()
            assert left > 0, "connection not closed; got %r" % bytes(out[:300])
            self.c.sock.settimeout(left)
            try:
                chunk = self.c.sock.recv(65536)
            except socket.timeout:
                continue
            except ConnectionResetError:
                break
            if not chunk:
                break
            out += chunk
        return bytes(out)


def stream(k, target, ctype=NDJSON, rev=None, headers=None, **kw):
    return Stream(k.port, target, headers, **kw).open(ctype, rev)


# --------------------------------------------------------------------------
# Exact content, filters, heads

VAL_ESC = "q\"b\\s/\n\t\x01\x7f \u00e9\u20ac\U0001F600"
KEY_ESC = "app/\u00e9 \"k\"\\"


@case("the NDJSON feed from since=0 and from a middle revision sends every put, delete and expiry exactly, in revision order, then follows new writes", timeout=40)
def ndjson_exact():
    k = Kvd()
    with k.conn() as c:
        ch = []
        ch.append(put_json(wput(c, "a", "1"), "a", "1"))
        ch.append(put_json(wput(c, KEY_ESC, VAL_ESC), KEY_ESC, VAL_ESC))
        ch.append(put_json(wput(c, "app/y", ""), "app/y", ""))
        ch.append(put_json(wput(c, "a", "2"), "a", "2"))
        ch.append(put_json(wput(c, "a", "2"), "a", "2"))  # the same bytes: a revision too
        ch.append(del_json(wdel(c, KEY_ESC), KEY_ESC))
        r = c.request("DELETE", "/missing")
        assert r.status == 404, r.summary()          # takes no revision
        ch.append(put_json(wput(c, "t", "lease", "?ttl=1"), "t", "lease"))
        assert [json.loads(x)["rev"] for x in ch] == list(range(1, 8)), ch
        s0 = stream(k, "/_changes?since=0&heartbeat=0", rev=0)
        for want in ch:
            assert s0.line() == want
        # The expiry: its own revision, within 1 s + 5 s.
        assert s0.line(timeout=9) == del_json(8, "t", "expire")
        ch.append(del_json(8, "t", "expire"))
        assert store_rev(c) == 8
        s3 = stream(k, "/_changes?since=3&heartbeat=0", rev=3)
        for want in ch[3:]:
            assert s3.line() == want
        s8 = stream(k, "/_changes?since=8&heartbeat=0", rev=8)
        for s in (s0, s3, s8):
            s.silent(0.3)
        new = put_json(wput(c, "b", "new"), "b", "new")
        new2 = del_json(wdel(c, "a"), "a")
        for s in (s0, s3, s8):
            assert s.line() == new
            assert s.line() == new2
            s.silent(0.3)
            s.close()


@case("prefix and key filters send only the matching changes, and a write outside the filter never appears")
def filters():
    k = Kvd()
    with k.conn() as c:
        ch = {}
        for key, value in (("app/a", "1"), ("app", "2"), ("apple", "3"), ("other/x", "4"),
                           ("app/ab", "5"), ("app/a", "6"), ("a b/c", "7"),
                           ("\u00e9/k", "8"), ("app/b", "9")):
            rev = wput(c, key, value)
            ch[rev] = put_json(rev, key, value)
        rev = wdel(c, "app/ab")
        ch[rev] = del_json(rev, "app/ab")
        keys = {rev: json.loads(line)["key"] for rev, line in ch.items()}

        def want(pred, since=0):
            return [ch[r] for r in sorted(ch) if r > since and pred(keys[r])]

        cases = [
            ("prefix=app/", lambda key: key.startswith("app/")),
            ("prefix=app", lambda key: key.startswith("app")),
            ("prefix=", lambda key: True),
            ("key=app/a", lambda key: key == "app/a"),
            ("key=app%2Fab", lambda key: key == "app/ab"),
            ("prefix=a+b", lambda key: key.startswith("a b")),      # a form's + is a space
            ("prefix=%C3%A9", lambda key: key.startswith("\u00e9")),
            ("key=nothing", lambda key: key == "nothing"),
        ]
        streams = []
        for q, pred in cases:
            s = stream(k, "/_changes?since=0&heartbeat=0&" + q, rev=0)
            for line in want(pred):
                assert s.line() == line, q
            s.silent(0.05)
            streams.append((q, pred, s))
        from2 = stream(k, "/_changes?since=6&prefix=app/&heartbeat=0", rev=6)
        for line in want(lambda key: key.startswith("app/"), since=6):
            assert from2.line() == line
        streams.append(("since=6&prefix=app/", lambda key: key.startswith("app/"), from2))
        # Live writes: each stream gets exactly those that match it, in
        # revision order, and then nothing.
        live = {}
        for key in ("other/y", "ap", "zzz", "app/a", "app/c", "apple", "a b", "\u00e9x", "nothing"):
            rev = wput(c, key, "L" + key)
            live[rev] = (key, put_json(rev, key, "L" + key))
        for q, pred, s in streams:
            for rev in sorted(live):
                key, line = live[rev]
                if pred(key):
                    assert s.line() == line, q
            s.silent(0.2)
            s.close()


@case("without since the feed starts at the current revision and Kvd-Revision names it")
def no_since():
    k = Kvd()
    with k.conn() as c:
        for i in range(3):
            wput(c, "k%d" % i, "v")
        s = stream(k, "/_changes", rev=3)
        sp = stream(k, "/_changes?prefix=k", rev=3)
        sl = Conn(k.port)
        r = sl.request("GET", "/_changes?feed=longpoll&timeout=1")
        expect(r, 200, b'{"rev":3,"changes":[]}\n', ctype=JSON, rev=3)
        s.silent(0.3)
        sp.silent(0.05)
        rev = wput(c, "k9", "new")
        assert rev == 4
        assert s.line() == put_json(4, "k9", "new")
        assert sp.line() == put_json(4, "k9", "new")
        s.close()
        sp.close()
        sl.close()


@case("a stream's head is exactly 200 with Content-Type, chunked Transfer-Encoding and Kvd-Revision, and HTTP/1.0 gets no chunks and Connection close")
def heads():
    k = Kvd()
    with k.conn() as c:
        a = put_json(wput(c, "a", "1"), "a", "1")
        bb = put_json(wput(c, "b", "2"), "b", "2")
    s = Stream(k.port, "/_changes?since=0")
    check_stream_head(s.read_head(), NDJSON, 0)
    assert s.head.head_raw.startswith(b"HTTP/1.1 200 OK\r\n"), s.head.summary()
    # Stream checks the chunk framing itself: hex size, CRLF, data, CRLF.
    assert s.line() == a
    assert s.line() == bb
    s.silent(0.2)
    s.close()
    # HTTP/1.0: no chunks, the body ends at the close.
    s10 = Stream(k.port, "/_changes?since=1", version="HTTP/1.0")
    check_stream_head(s10.read_head(), NDJSON, 1, chunked=False)
    assert s10.chunked is False
    assert s10.raw(len(bb) + 1) == bb + b"\n"
    with k.conn() as c:
        cc = put_json(wput(c, "c", "3"), "c", "3")
    assert s10.raw(len(cc) + 1) == cc + b"\n"
    s10.silent(0.3)
    s10.close()
    # HTTP/1.0 asking for keep-alive still gets a close: the body has no end.
    s10k = Stream(k.port, "/_changes?since=2", [("Connection", "keep-alive")], version="HTTP/1.0")
    check_stream_head(s10k.read_head(), NDJSON, 2, chunked=False)
    assert s10k.raw(len(cc) + 1) == cc + b"\n"
    s10k.close()
    # HEAD: the head only, and the connection goes on.
    with k.conn() as c:
        c.send(build_request("HEAD", "/_changes?since=1", port=k.port))
        r = parse_head(c._read_head(time.monotonic() + 5))
        assert (r.status, r.reason) == (200, "OK"), r.summary()
        assert r.get("Content-Type") == NDJSON and r.get("Kvd-Revision") == "1", r.summary()
        assert r.get("Transfer-Encoding") in (None, "chunked"), r.summary()
        c.assert_alive()


@case("with heartbeat=1 a progress line with the current revision comes after 1 to 2.5 s of silence, and heartbeat=0 sends none in 3 s", timeout=40)
def heartbeat():
    k = Kvd()
    with k.conn() as c:
        wput(c, "app/a", "1")
        wput(c, "app/b", "2")
        s = stream(k, "/_changes?since=0&heartbeat=1&prefix=app/", rev=0)
        off = stream(k, "/_changes?since=0&heartbeat=0&prefix=app/", rev=0)
        s.line()
        s.line()
        t0 = time.monotonic()
        assert s.line(timeout=4) == progress_json(2)
        dt = time.monotonic() - t0
        assert 0.9 <= dt <= 2.5, "heartbeat after %.2fs of silence" % dt
        # A write outside the filter: the next heartbeat names the store's
        # revision, which includes it.
        assert wput(c, "other", "x") == 3
        t0 = time.monotonic()
        assert s.line(timeout=4) == progress_json(3)
        dt = time.monotonic() - t0
        assert dt <= 2.5, "heartbeat %.2fs after the last" % dt
        # And after a matching change, silence restarts the clock.
        assert wput(c, "app/c", "3") == 4
        assert s.line() == put_json(4, "app/c", "3")
        t0 = time.monotonic()
        assert s.line(timeout=4) == progress_json(4)
        dt = time.monotonic() - t0
        assert 0.9 <= dt <= 2.5, "heartbeat after %.2fs of silence" % dt
        s.close()
        off.line()
        off.line()
        assert off.line() == put_json(4, "app/c", "3")
        off.silent(3.0)
        off.close()


BAD_QUERIES = (
    "since=-1", "since=abc", "since=", "since=1x", "since=+1", "since=1.0", "since=%201",
    "since=9223372036854775808", "since=99999999999999999999999",
    "heartbeat=-1", "heartbeat=", "heartbeat=3601", "heartbeat=1.5", "heartbeat=x",
    "timeout=0", "timeout=", "timeout=3601", "timeout=-1", "timeout=1s",
    "feed=", "feed=foo", "feed=LONGPOLL", "feed=websocket",
    "prefix=a&key=b", "key=a&prefix=", "key=", "prefix=%FF", "prefix=%zz", "since=%zz",
)


@case("bad since, heartbeat, timeout, feed, Last-Event-ID and prefix with key get 400 with a one-line body")
def bad_params():
    k = Kvd()
    with k.conn() as c:
        wput(c, "k", "v")
        for q in BAD_QUERIES:
            for feed in ("", "&feed=longpoll", "&feed=eventsource"):
                if q.startswith("feed=") and feed:
                    continue
                r = c.request("GET", "/_changes?" + q + feed)
                assert r.status == 400, "%s%s: %s" % (q, feed, r.summary())
                expect(r, 400)
        for v in ("abc", "-1", "1x", "1.5", "+1", "99999999999999999999"):
            r = c.request("GET", "/_changes?since=0", headers=[("Last-Event-ID", v)])
            assert r.status == 400, "Last-Event-ID %r: %s" % (v, r.summary())
            expect(r, 400)
        c.assert_alive()
        # Nothing was written, and the limits themselves are fine.
        assert store_rev(c) == 1
        r = c.request("GET", "/_changes?since=0&feed=longpoll&timeout=3600&heartbeat=3600")
        expect(r, 200, b'{"rev":1,"changes":[%s]}\n' % put_json(1, "k", "v"), ctype=JSON, rev=0)
    s = stream(k, "/_changes?since=0&heartbeat=0&feed=continuous&_=123", rev=0)
    assert s.line() == put_json(1, "k", "v")
    s.close()


# --------------------------------------------------------------------------
# Long poll

@case("a long poll with changes above since answers at once with every matching change and Content-Length, and keeps the connection alive")
def longpoll_now():
    k = Kvd()
    with k.conn() as c:
        a = put_json(wput(c, "app/a", "1"), "app/a", "1")
        wput(c, "other", "2")
        d = put_json(wput(c, "app/b", VAL_ESC), "app/b", VAL_ESC)
        e = del_json(wdel(c, "app/a"), "app/a")
    with Conn(k.port) as lp:
        t0 = time.monotonic()
        r = lp.request("GET", "/_changes?feed=longpoll&since=0&prefix=app/")
        assert time.monotonic() - t0 < 1.0
        expect(r, 200, b'{"rev":4,"changes":[%s,%s,%s]}\n' % (a, d, e), ctype=JSON, rev=0)
        # The same connection: the next poll from the answer's rev.
        r = lp.request("GET", "/_changes?feed=longpoll&since=1&prefix=app/")
        expect(r, 200, b'{"rev":4,"changes":[%s,%s]}\n' % (d, e), ctype=JSON, rev=1)
        r = lp.request("GET", "/_changes?feed=longpoll&since=2&key=app/b")
        expect(r, 200, b'{"rev":4,"changes":[%s]}\n' % d, ctype=JSON, rev=2)
        # feed=longpoll wins over Accept: text/event-stream.
        r = lp.request("GET", "/_changes?feed=longpoll&since=3", headers=[("Accept", SSE)])
        expect(r, 200, b'{"rev":4,"changes":[%s]}\n' % e, ctype=JSON, rev=3)
        # Last-Event-ID means since for a long poll too.
        r = lp.request("GET", "/_changes?feed=longpoll&since=0", headers=[("Last-Event-ID", "3")])
        expect(r, 200, b'{"rev":4,"changes":[%s]}\n' % e, ctype=JSON, rev=3)
        lp.assert_alive()
        # HTTP/1.0: the same answer, then the close.
        r = lp.request("GET", "/_changes?feed=longpoll&since=3", version="HTTP/1.0")
        expect(r, 200, b'{"rev":4,"changes":[%s]}\n' % e, ctype=JSON, rev=3, close=True)
        lp.expect_closed()


@case("a long poll waits for a matching write, ignores a write outside its filter, and on timeout=1 answers rev and no changes", timeout=40)
def longpoll_wait():
    k = Kvd()
    with k.conn() as c:
        wput(c, "app/a", "1")
        with Conn(k.port) as lp:
            lp.send(build_request("GET", "/_changes?feed=longpoll&since=1&prefix=app/&timeout=20",
                                  port=k.port))
            lp.expect_silent(0.5)
            assert wput(c, "other/x", "2") == 2
            lp.expect_silent(1.2)
            t0 = time.monotonic()
            rev = wput(c, "app/b", "3")
            r = lp.read_response(timeout=3)
            assert time.monotonic() - t0 < 1.5, "answered %.2fs after the write" % (time.monotonic() - t0)
            expect(r, 200, b'{"rev":3,"changes":[%s]}\n' % put_json(rev, "app/b", "3"),
                   ctype=JSON, rev=1)
            # Timeout: {"rev":N,"changes":[]} with N the store's revision,
            # which counts a write outside the filter made meanwhile.
            t0 = time.monotonic()
            lp.send(build_request("GET", "/_changes?feed=longpoll&since=3&prefix=app/&timeout=1",
                                  port=k.port))
            time.sleep(0.2)
            assert wput(c, "other/y", "4") == 4
            r = lp.read_response(timeout=5)
            dt = time.monotonic() - t0
            assert 0.9 <= dt <= 2.5, "timeout=1 answered after %.2fs" % dt
            expect(r, 200, b'{"rev":4,"changes":[]}\n', ctype=JSON, rev=3)
            # Without since: from the current revision.
            t0 = time.monotonic()
            r = lp.request("GET", "/_changes?feed=longpoll&timeout=1", timeout=5)
            dt = time.monotonic() - t0
            assert 0.9 <= dt <= 2.5, "timeout=1 answered after %.2fs" % dt
            expect(r, 200, b'{"rev":4,"changes":[]}\n', ctype=JSON, rev=4)
            # A key filter waits for its key only.
            lp.send(build_request("GET", "/_changes?feed=longpoll&key=app/k&timeout=20", port=k.port))
            time.sleep(0.2)
            wput(c, "app/k2", "x")
            wput(c, "app/", "x")
            lp.expect_silent(0.5)
            rev = wdel(c, "app/a")
            rev2 = wput(c, "app/k", "yes")
            r = lp.read_response(timeout=3)
            expect(r, 200, b'{"rev":%d,"changes":[%s]}\n' % (rev2, put_json(rev2, "app/k", "yes")),
                   ctype=JSON, rev=4)
            assert rev2 == rev + 1 == 8
            lp.assert_alive()


# --------------------------------------------------------------------------
# Server-Sent Events

@case("Server-Sent Events frame each change as id, event and data with comment heartbeats, with feed=eventsource or Accept text/event-stream", timeout=40)
def sse():
    k = Kvd()
    with k.conn() as c:
        lines = [put_json(wput(c, "a", VAL_ESC), "a", VAL_ESC),
                 del_json(wdel(c, "a"), "a"),
                 put_json(wput(c, "t", "x", "?ttl=1"), "t", "x")]
        s = stream(k, "/_changes?since=0&feed=eventsource&heartbeat=1", SSE, rev=0)
        for line in lines:
            assert s.event() == sse_event(line)
        assert s.event(timeout=9) == b'id: 4\nevent: expire\ndata: {"rev":4,"op":"expire","key":"t"}\n\n'
        lines.append(del_json(4, "t", "expire"))
        t0 = time.monotonic()
        assert s.event(timeout=4) == b': {"op":"progress","rev":4}\n\n'
        assert 0.9 <= time.monotonic() - t0 <= 2.5
        s.close()
        # Accept: text/event-stream, among other types.
        for accept in (SSE, "text/html, text/event-stream;q=0.9"):
            s = stream(k, "/_changes?since=1&heartbeat=0", SSE, rev=1, headers=[("Accept", accept)])
            for line in lines[1:]:
                assert s.event() == sse_event(line)
            s.silent(0.2)
            s.close()
        # Last-Event-ID wins over the URL's since, as EventSource repeats the URL.
        s = stream(k, "/_changes?since=0&heartbeat=0", SSE, rev=2,
                   headers=[("Accept", SSE), ("Last-Event-ID", "2")])
        for line in lines[2:]:
            assert s.event() == sse_event(line)
        s2 = stream(k, "/_changes?feed=eventsource&heartbeat=0", SSE, rev=3,
                    headers=[("Last-Event-ID", "3")])
        assert s2.event() == sse_event(lines[3])
        nd = stream(k, "/_changes?since=0&heartbeat=0", NDJSON, rev=3,
                    headers=[("Last-Event-ID", "3")])
        assert nd.line() == lines[3]
        new = put_json(wput(c, "b", "line1\nline2"), "b", "line1\nline2")
        assert s.event() == sse_event(new)
        assert s2.event() == sse_event(new)
        assert nd.line() == new
        for x in (s, s2, nd):
            x.silent(0.2)
            x.close()


# --------------------------------------------------------------------------
# List, then watch, under concurrent writes

def random_writer(port, tid, prefixes, stop, errors, counts):
    rng = random.Random(tid)
    c = None
    try:
        c = Conn(port, timeout=10)
        for n in range(100_000):
            if stop.is_set():
                break
            key = rng.choice(prefixes) + "k%d" % rng.randrange(12)
            if rng.random() < 0.25:
                r = c.request("DELETE", kpath(key))
                assert r.status in (204, 404), r.summary()
            else:
                value = "t%d-n%d%s" % (tid, n, "." * rng.choice((0, 10, 300)))
                r = c.request("PUT", kpath(key), value.encode())
                assert r.status in (201, 204), r.summary()
            counts[tid] = n + 1
    except BaseException as e:
        errors.append("writer %d: %r" % (tid, e))
    finally:
        if c is not None:
            c.close()


def apply_change(state, d, strict=True):
    if d["op"] == "put":
        state[d["key"]] = d["value"]
    else:
        assert d["op"] in ("delete", "expire"), d
        if strict:
            assert d["key"] in state, "%s of %r, which the listing and feed do not hold" % (d["op"], d["key"])
        state.pop(d["key"], None)


@case("list then watch since the listing's revision, under concurrent writes, ends equal to a final listing with no revision twice", timeout=60)
def list_then_watch():
    k = Kvd()
    stop = threading.Event()
    errors, counts = [], [0] * 4
    prefixes = ["app/", "app/", "apq/", "other/"]
    threads = [threading.Thread(target=random_writer, args=(k.port, t, prefixes, stop, errors, counts),
                                daemon=True) for t in range(4)]
    for th in threads:
        th.start()
    try:
        time.sleep(0.4)
        with k.conn() as c:
            state, L = listing(c, "app/")
        s = stream(k, "/_changes?since=%d&prefix=app/&heartbeat=1" % L, rev=L)
        last = L
        seen = 0
        t_end = time.monotonic() + 2.5
        for _ in range(1_000_000):
            if time.monotonic() > t_end:
                break
            d = json.loads(s.line())
            if d["op"] == "progress":
                continue
            assert d["rev"] > last, "revision %d after %d" % (d["rev"], last)
            assert d["key"].startswith("app/"), d
            last = d["rev"]
            apply_change(state, d)
            seen += 1
    finally:
        stop.set()
        for th in threads:
            th.join(10)
    assert not any(th.is_alive() for th in threads), "writer thread hung"
    assert not errors, "\n".join(errors)
    with k.conn() as c:
        final, F = listing(c, "app/")
    # Catch up to F: a progress line at F or later says every matching
    # change up to it has been sent.
    for _ in range(1_000_000):
        d = json.loads(s.line(timeout=5))
        if d["op"] == "progress":
            assert d["rev"] >= last
            if d["rev"] >= F:
                break
            continue
        assert last < d["rev"] <= F, "revision %d after %d (final %d)" % (d["rev"], last, F)
        assert d["key"].startswith("app/"), d
        last = d["rev"]
        apply_change(state, d)
        seen += 1
    s.close()
    print("listing at %d, %d changes applied up to %d, final listing at %d (%d writes)"
          % (L, seen, last, F, sum(counts)))
    assert seen > 50, "too few changes to mean anything: %d" % seen
    assert state == final, "watched state differs from the final listing: %r" % (
        {x: (state.get(x), final.get(x)) for x in set(state) | set(final) if state.get(x) != final.get(x)})


# --------------------------------------------------------------------------
# A watcher that never reads

def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS for %d" % pid)


def read_all(s, expected, what, allow_end=False):
    """Reads lines that must be exactly expected[0], expected[1], ...; with
    allow_end, the stream may end early (kvd may end a slow watcher's
    stream).  Returns how many came."""
    n = 0
    for want in expected:
        try:
            got = s.line(timeout=20)
        except harness.ConnectionClosed:
            if allow_end:
                return n
            raise
        if got != want:
            raise AssertionError("%s: line %d is %r..., expected %r..." % (what, n, got[:100], want[:100]))
        n += 1
    return n


@case("a watcher that never reads holds kvd's memory below start plus 64 MiB while 50 MB are written, and every change then comes exactly once", timeout=150)
def stalled_watcher():
    # Under ASan every free first goes to a 256 MiB quarantine, which would
    # grow RSS with the request bodies whatever kvd does (see test_limits).
    opts = os.environ.get("ASAN_OPTIONS")
    os.environ["ASAN_OPTIONS"] = (opts + ":" if opts else "") + "quarantine_size_mb=0"
    try:
        k = Kvd()
    finally:
        if opts is None:
            del os.environ["ASAN_OPTIONS"]
        else:
            os.environ["ASAN_OPTIONS"] = opts
    pid = k.proc.pid
    with k.conn() as c:
        wput(c, "warm", "x" * 1000)
    # The watcher: sends its request, never calls recv().
    stalled = Conn(k.port, timeout=20)
    stalled.send(build_request("GET", "/_changes?since=0&heartbeat=1", port=k.port))
    time.sleep(0.3)
    start = rss_kib(pid)
    size = 256 << 10
    rounds = 200
    expected = [put_json(1, "warm", "x" * 1000)]
    peak = start
    worst = 0.0
    t0 = time.monotonic()
    with k.conn(timeout=30) as c, k.conn() as other:
        for i in range(rounds):
            key = "big/%d" % (i % 8)
            value = ("%06d" % i) * (size // 6)
            rev = wput(c, key, value)
            assert rev == i + 2, (rev, i)
            expected.append(put_json(rev, key, value))
            if i % 10 == 0:
                # Other clients are answered meanwhile, promptly.
                t1 = time.monotonic()
                other.assert_alive()
                r = other.request("GET", "/warm")
                assert r.status == 200 and r.body == b"x" * 1000, r.summary()
                worst = max(worst, time.monotonic() - t1)
            peak = max(peak, rss_kib(pid))
    time.sleep(1.5)  # a heartbeat or two for the watcher, unread
    peak = max(peak, rss_kib(pid))
    print("VmRSS %d KiB at the start, peak %d KiB (+%d KiB) over %d MiB written in %.1fs; "
          "slowest other request %.3fs"
          % (start, peak, peak - start, rounds * size >> 20, time.monotonic() - t0, worst))
    assert peak - start < 64 * 1024, "VmRSS grew by %d KiB with a watcher that never reads" % (peak - start)
    assert worst < 2.0, "another client waited %.2fs" % worst
    # A new client from since=0 gets every change exactly once.
    s = stream(k, "/_changes?since=0&heartbeat=0", rev=0, timeout=20)
    assert read_all(s, expected, "since=0") == len(expected)
    s.silent(0.2)
    s.close()
    # The watcher that did not read: what it gets now is a prefix of the
    # changes, each once; if kvd ended its stream, resuming from the last
    # revision it saw gives the rest.
    ws = Stream(k.port, "", conn=stalled, send=False)
    check_stream_head(ws.read_head(), NDJSON, 0)
    n = 0
    for _ in range(len(expected) + 100):
        try:
            got = ws.line(timeout=20)
        except harness.ConnectionClosed:
            break
        d = json.loads(got)
        if d["op"] == "progress":
            # Every change up to it was sent: never one not yet read.
            assert d["rev"] <= n, "progress at %d after %d changes" % (d["rev"], n)
            continue
        assert got == expected[n], "the stalled watcher's line %d is %r..." % (n, got[:100])
        n += 1
        if n == len(expected):
            break
    ws.close()
    print("the stalled watcher then read %d of %d changes" % (n, len(expected)))
    if n < len(expected):
        s = stream(k, "/_changes?since=%d&heartbeat=0" % n, rev=n, timeout=20)
        assert read_all(s, expected[n:], "resumed") == len(expected) - n
        s.close()


# --------------------------------------------------------------------------
# Resuming after SIGKILL

class Ops:
    """Every write sent: (tid, seq, op, key, value) -> rev when acknowledged."""

    def __init__(self):
        self.lock = threading.Lock()
        self.sent = {}     # (tid, seq) -> (op, key, value)
        self.acked = {}    # (tid, seq) -> rev (None: a DELETE answered 404)
        self.by_value = {}  # put value -> (tid, seq)


def sk_writer(port, tid, rnd, ops, stop, killing, errors):
    rng = random.Random(rnd * 100 + tid)
    c = None
    exists = set()
    try:
        c = Conn(port, timeout=5)
        for n in range(1_000_000):
            if stop.is_set():
                break
            key = "w%d/k%d" % (tid, rng.randrange(6))
            seq = (rnd, n)
            if key in exists and rng.random() < 0.3:
                with ops.lock:
                    ops.sent[(tid, seq)] = ("delete", key, None)
                r = c.request("DELETE", kpath(key))
                assert r.status in (204, 404), r.summary()
                with ops.lock:
                    ops.acked[(tid, seq)] = rev_of(r) if r.status == 204 else None
                exists.discard(key)
            else:
                value = "r%d-t%d-n%d%s" % (rnd, tid, n, "." * rng.choice((0, 0, 40, 2000)))
                with ops.lock:
                    ops.sent[(tid, seq)] = ("put", key, value)
                    ops.by_value[value] = (tid, seq)
                r = c.request("PUT", kpath(key), value.encode())
                assert r.status in (201, 204), r.summary()
                with ops.lock:
                    ops.acked[(tid, seq)] = rev_of(r)
                exists.add(key)
    except BaseException as e:
        if not killing.is_set():
            errors.append("writer %d: %r" % (tid, e))
    finally:
        if c is not None:
            c.close()


def feed_reader(port, since, out, killing, errors):
    """Reads /_changes?since= until the connection dies; appends each
    change (parsed) to out."""
    s = None
    try:
        s = Stream(port, "/_changes?since=%d&heartbeat=0" % since, timeout=10)
        check_stream_head(s.read_head(), NDJSON, since)
        for _ in range(10_000_000):
            out.append(json.loads(s.line(timeout=30)))
    except BaseException as e:
        if not killing.is_set():
            errors.append("feed reader: %r" % e)
    finally:
        if s is not None:
            s.close()


@case("a feed resumed with since=last after SIGKILL and a restart gives exactly the acknowledged changes after it, each once and in order", timeout=90)
def sigkill_resume():
    k = Kvd()
    ops = Ops()
    history = []     # every change seen, over all rounds, in order
    for rnd in range(3):
        with k.conn() as c:
            base = store_rev(c)
        stop, killing = threading.Event(), threading.Event()
        errors, pre = [], []
        reader = threading.Thread(target=feed_reader, args=(k.port, base, pre, killing, errors),
                                  daemon=True)
        reader.start()
        writers = [threading.Thread(target=sk_writer, args=(k.port, t, rnd, ops, stop, killing, errors),
                                    daemon=True) for t in range(4)]
        for th in writers:
            th.start()
        time.sleep(random.uniform(0.8, 1.6))
        killing.set()
        k.sigkill()
        stop.set()
        for th in writers + [reader]:
            th.join(10)
            assert not th.is_alive(), "a thread hung"
        assert not errors, "round %d:\n%s" % (rnd, "\n".join(errors))
        last = pre[-1]["rev"] if pre else base
        k.restart()
        with k.conn() as c:
            now = store_rev(c)
        assert now >= last, "the store restarted at %d, below %d which the feed sent" % (now, last)
        s = stream(k, "/_changes?since=%d&heartbeat=1" % last, rev=last)
        post = []
        if now > last:
            post = [json.loads(x) for x in s.lines_until(lambda d: d.get("rev") == now and d["op"] != "progress", 20)]
        assert s.line(timeout=4) == progress_json(now)
        s.close()
        # No gap and no duplicate: without a filter every revision is one change.
        revs = [d["rev"] for d in pre + post]
        assert revs == list(range(base + 1, now + 1)), \
            "round %d: revisions seen %r... (base %d, last %d, now %d)" % (rnd, revs[:20], base, last, now)
        history += pre + post
        # Every acknowledged write after base is in it, at its revision;
        # every change in it is a write that was sent, at most once.
        by_rev = {d["rev"]: d for d in pre + post}
        with ops.lock:
            for (tid, seq), rev in ops.acked.items():
                if seq[0] != rnd or rev is None:
                    continue
                op, key, value = ops.sent[(tid, seq)]
                d = by_rev.get(rev)
                assert d is not None, "acknowledged %s of %r at %d is missing" % (op, key, rev)
                assert (d["op"], d["key"], d.get("value")) == (op, key, value), \
                    "revision %d is %r, but %s %r=%r was acknowledged with it" % (rev, d, op, key, value)
            used = set()
            landed = 0
            for d in pre + post:
                if d["op"] == "put":
                    who = ops.by_value.get(d["value"])
                    assert who is not None and ops.sent[who][1] == d["key"], "a put never sent: %r" % d
                    assert who not in used, "the same write twice: %r" % d
                    used.add(who)
                    if ops.acked.get(who) is None:
                        landed += 1
                        # In flight at the kill: its writer's last write.
                        tid, seq = who
                        assert not any(t == tid and s2 > seq for t, s2 in ops.sent), \
                            "unacknowledged write %r was not its writer's last" % d
                else:
                    assert d["op"] == "delete", d
                    tid = int(d["key"][1:d["key"].index("/")])
                    assert any(t == tid and s2[0] == rnd and o[0] == "delete" and o[1] == d["key"]
                               for (t, s2), o in ops.sent.items()), "a delete never sent: %r" % d
            # Each writer's writes land in the order it sent them.
            for tid in range(4):
                mine = sorted((s2, r) for (t, s2), r in ops.acked.items()
                              if t == tid and s2[0] == rnd and r is not None)
                assert [r for _, r in mine] == sorted(r for _, r in mine), "writer %d out of order" % tid
            acked = sum(1 for (t, s2), r in ops.acked.items() if s2[0] == rnd and r is not None)
        print("round %d: revisions %d..%d, the feed had reached %d at the kill; "
              "%d acknowledged, %d in-flight writes landed" % (rnd, base + 1, now, last, acked, landed))
        assert acked > 20, "round %d: only %d writes acknowledged" % (rnd, acked)
    # Applying the whole feed gives the store.
    state = {}
    for d in history:
        apply_change(state, d)
    with k.conn() as c:
        r = c.request("GET", "/")
        assert r.status == 200
        assert state == json.loads(r.body), "the feed applied differs from GET /"


# --------------------------------------------------------------------------
# History: collapsed, then exact; and 410 Gone

def log_first_revision(data):
    """The first revision the log holds: segments are named by it, in hex."""
    names = [n for n in os.listdir(os.path.join(data, "log")) if n.endswith(".seg")]
    return min(int(n[:-4], 16) for n in names) if names else None


def wait_trimmed(k, c, deadline):
    """Forces checkpoints (GET /) until the log no longer starts at 1."""
    for _ in range(200):
        r = c.request("GET", "/")
        assert r.status == 200, r.summary()
        first = log_first_revision(k.data)
        if first is not None and first > 1:
            return first
        assert time.monotonic() < deadline, "the log was never trimmed: it starts at %r" % first
        time.sleep(0.2)
    raise AssertionError("the log was never trimmed")


def check_collapsed(s, model, since, now, H):
    """Reads a feed from since up to now and checks it against the
    contract: revision order, each at most once, each the exact change at
    that revision, the latest change of every key changed after since,
    every change above now - H; then the stream follows live writes."""
    raw = []
    if now > since:
        raw = s.lines_until(lambda d: d["op"] != "progress" and d["rev"] == now, 20)
    got = [json.loads(x) for x in raw]
    raw = [x for x, d in zip(raw, got) if d["op"] != "progress"]
    got = [d for d in got if d["op"] != "progress"]
    revs = [d["rev"] for d in got]
    assert revs == sorted(set(revs)), "since=%d: revisions out of order or twice: %r" % (since, revs)
    assert all(since < r <= now for r in revs), revs
    for line, d in zip(raw, got):
        assert line == change_line(model[d["rev"]]), \
            "since=%d: revision %d is %r, the write was %r" % (since, d["rev"], line[:100], model[d["rev"]][:3])
    latest = {}
    for rev in sorted(model):
        if rev > since:
            latest[model[rev][2]] = rev
    missing = sorted(set(latest.values()) - set(revs))
    assert not missing, "since=%d: the latest change of keys %r is missing" % (
        since, [model[r][2] for r in missing[:10]])
    exact = [r for r in range(max(since, now - H) + 1, now + 1)]
    assert set(exact) <= set(revs), "since=%d: not exact above %d: missing %r" % (
        since, now - H, sorted(set(exact) - set(revs))[:10])
    return got


@case("with a trimmed log since=0 gets the collapsed history: the latest change of each key in revision order, each once, then exact", timeout=60)
def history_collapsed():
    H = 10
    k = Kvd("--log-segment", "64K", "--history", str(H))
    model = {}  # rev -> (rev, op, key, value)
    rng = random.Random(12)
    with k.conn() as c:
        live = set()
        for i in range(400):
            key = "h/%d" % rng.randrange(40)
            if key in live and rng.random() < 0.2:
                rev = wdel(c, key)
                model[rev] = (rev, "delete", key, None)
                live.discard(key)
            else:
                value = "%d-" % i + "v" * 1000
                rev = wput(c, key, value)
                model[rev] = (rev, "put", key, value)
                live.add(key)
        now = max(model)
        first = wait_trimmed(k, c, time.monotonic() + 15)
        print("%d writes; the log now starts at revision %d" % (now, first))
        image = json.loads(c.request("GET", "/").body)
    for since in (0, 5, first - 2, now - H - 1, now - H, now - 3):
        s = Stream(k.port, "/_changes?since=%d&heartbeat=1" % since)
        r = s.read_head()
        assert r.status == 200, "since=%d (the log starts at %d, history %d, revision %d): %s" % (
            since, first, H, now, r.summary())
        check_stream_head(r, NDJSON, since)
        got = check_collapsed(s, model, since, now, H)
        if since == 0:
            state = {}
            for d in got:
                apply_change(state, d, strict=False)
            assert state == image, "the collapsed feed from 0 applied differs from GET /"
        assert s.line(timeout=4) == progress_json(now)
        s.close()
    # A long poll from 0 gets the same, and then the stream is exact again.
    with k.conn() as c:
        r = c.request("GET", "/_changes?feed=longpoll&since=0")
        assert r.status == 200, r.summary()
        body = json.loads(r.body)
        assert body["rev"] == now, body["rev"]
        revs = [d["rev"] for d in body["changes"]]
        assert revs == sorted(set(revs)) and set(range(now - H + 1, now + 1)) <= set(revs), revs
        s = stream(k, "/_changes?since=0&heartbeat=0", rev=0)
        s.lines_until(lambda d: d["rev"] == now, 20)
        rev = wput(c, "h/new", "x")
        assert s.line() == put_json(rev, "h/new", "x")
        s.close()


@case("a since below a forgotten deletion gets 410 with Kvd-Revision, and since at the current revision or a listing's works", timeout=60)
def history_gone():
    H, RETAIN = 10, 3
    k = Kvd("--log-segment", "64K", "--history", str(H), "--tombstone-retention", str(RETAIN))
    with k.conn() as c:
        wput(c, "d", "1")
        D = wdel(c, "d")
        t_del = time.monotonic()
        for i in range(300):
            wput(c, "x/%d" % (i % 30), "%d-" % i + "v" * 1000)
        now = store_rev(c)
        first = wait_trimmed(k, c, time.monotonic() + 15)
        # Outside the history, but younger than the retention: remembered,
        # so since=0 is the collapsed feed, with the deletion in it.
        age = time.monotonic() - t_del
        if age < RETAIN - 0.5:
            r = c.request("GET", "/_changes?feed=longpoll&since=0&timeout=1")
            assert r.status == 200, "since=0 %.1fs after the delete (retention %d s, the log starts at %d): %s" % (
                age, RETAIN, first, r.summary())
            assert del_json(D, "d") in r.body, r.body[:300]
        else:
            print("the writes took %.1fs: no check before the deletion is %d s old" % (age, RETAIN))
        # Forgotten once outside the history (now) and older than RETAIN,
        # within 5 s of that.
        deadline = max(time.monotonic(), t_del + RETAIN) + 5 + 2
        got = None
        for _ in range(200):
            r = c.request("GET", "/_changes?feed=longpoll&since=0&timeout=1")
            if r.status == 410:
                got = r
                break
            assert r.status == 200, r.summary()
            assert time.monotonic() < deadline, "since=0 still answered 200 (not 410) %.1fs after the delete" % (
                time.monotonic() - t_del)
            time.sleep(0.3)
        assert got is not None
        print("410 for since=0 %.1fs after the delete" % (time.monotonic() - t_del))
        expect(got, 410, rev=now)
        for since in (0, D - 1):
            r = c.request("GET", "/_changes?since=%d" % since)
            expect(r, 410, rev=now)
            r = c.request("GET", "/_changes?since=%d&feed=eventsource" % since)
            expect(r, 410, rev=now)
            r = c.request("GET", "/_changes?since=%d&feed=longpoll&prefix=x/" % since)
            expect(r, 410, rev=now)
        c.assert_alive()
        # Since the current revision: a stream that follows new writes.
        s = stream(k, "/_changes?since=%d&heartbeat=0" % now, rev=now)
        # The client's way back: list, then resume from the listing's revision.
        state, L = listing(c, "x/")
        assert L == now
        s2 = stream(k, "/_changes?since=%d&prefix=x/&heartbeat=0" % L, rev=L)
        rev = wput(c, "x/0", "after")
        assert s.line() == put_json(rev, "x/0", "after")
        assert s2.line() == put_json(rev, "x/0", "after")
        s.close()
        s2.close()


# --------------------------------------------------------------------------
# SIGTERM

@case("a feed whose client closes or half-closes ends its watch at once, properly, after the answers queued before it are sent in full")
def client_leaves():
    k = Kvd()
    for i in range(3):
        expect(k.request("PUT", "/p%d" % i, b"v"), 201)
    # A closed socket: the watch goes within a second, not at a heartbeat.
    socks = []
    for _ in range(5):
        s = socket.create_connection(("127.0.0.1", k.port), timeout=5)
        s.sendall(b"GET /_changes?key=nobody&heartbeat=0 HTTP/1.1\r\nHost: a\r\n\r\n")
        socks.append(s)
    deadline = time.monotonic() + 5
    while metric(k, "kvd_watches") != 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert metric(k, "kvd_watches") == 5
    for s in socks:
        s.close()
    deadline = time.monotonic() + 1.0
    while metric(k, "kvd_watches") != 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert metric(k, "kvd_watches") == 0, "watches of closed clients still open"
    # Pipelined answers before the feed, then a half-close: every answer
    # before it arrives whole, then the feed's head and its last chunk.
    s = socket.create_connection(("127.0.0.1", k.port), timeout=5)
    s.sendall(b"GET /p0 HTTP/1.1\r\nHost: a\r\n\r\n" * 50 +
              b"GET /_changes?since=0 HTTP/1.1\r\nHost: a\r\n\r\n")
    s.shutdown(socket.SHUT_WR)
    out, deadline = b"", time.monotonic() + 5
    while time.monotonic() < deadline:
        x = s.recv(65536)
        if not x:
            break
        out += x
    s.close()
    assert out.count(b"HTTP/1.1 200 OK\r\n") == 51, out[-300:]
    feed = out[out.index(b"application/x-ndjson"):]
    assert feed.endswith(b"0\r\n\r\n"), feed[-100:]
    # The client went away before its history was read: what was sent is
    # a prefix of it, in order (it resumes from the last revision seen).
    revs = [int(m) for m in re.findall(rb'\{"rev":(\d+),', feed)]
    assert revs == list(range(1, len(revs) + 1)), revs
    k.stop_ok()


@case("SIGTERM ends every open stream with the last chunk and kvd exits 0 within a few seconds")
def sigterm_streams():
    k = Kvd()
    with k.conn() as c:
        a = put_json(wput(c, "a", "1"), "a", "1")
    nd = stream(k, "/_changes?since=0", rev=0)
    ev = stream(k, "/_changes?since=0", SSE, rev=0, headers=[("Accept", SSE)])
    pre = stream(k, "/_changes?since=1&prefix=z/", rev=1)
    old = Stream(k.port, "/_changes?since=0", version="HTTP/1.0")
    check_stream_head(old.read_head(), NDJSON, 0, chunked=False)
    lp = Conn(k.port)
    lp.send(build_request("GET", "/_changes?feed=longpoll&since=1&timeout=60", port=k.port))
    assert nd.line() == a
    assert ev.event() == sse_event(a)
    assert old.raw(len(a) + 1) == a + b"\n"
    time.sleep(0.2)
    t0 = time.monotonic()
    rc = k.sigterm(timeout=5)
    dt = time.monotonic() - t0
    assert rc == 0, "exit status %r; stderr:\n%s" % (rc, k.stderr_text())
    assert dt < 5, "exit took %.1fs" % dt
    for s in (nd, ev, pre):
        rest = s.rest_raw()
        assert rest == b"0\r\n\r\n", "after SIGTERM the stream sent %r, not the last chunk and the close" % rest
        s.close()
    rest = old.rest_raw()
    assert rest == b"", "after SIGTERM the HTTP/1.0 stream sent %r before the close" % rest
    old.close()
    # The waiting long poll: an answer or the close, never a hang.
    data = bytearray(lp.buf)
    lp.sock.settimeout(3)
    for _ in range(1000):
        try:
            chunk = lp.sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    print("the waiting long poll got %r" % bytes(data[:200]))
    lp.close()


# --------------------------------------------------------------------------
# A real browser's EventSource across a restart

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>kvd feed</title></head><body><pre id="log"></pre><script>
var seen = [], seq = 0, sending = false, again = false;
function report() {
  if (sending) { again = true; return; }
  sending = true; again = false; seq++;
  fetch('/report', {method: 'POST', body: JSON.stringify({seq: seq, seen: seen})})
    .catch(function () {}).then(function () { sending = false; if (again) report(); });
}
function note(x) { seen.push(x); document.getElementById('log').textContent += JSON.stringify(x) + '\\n'; report(); }
var es = new EventSource('http://127.0.0.1:%(port)d/_changes?prefix=app/');
es.onopen = function () { note({t: 'open'}); };
es.onerror = function () { note({t: 'error', state: es.readyState}); };
['put', 'delete', 'expire'].forEach(function (name) {
  es.addEventListener(name, function (e) { note({t: name, id: e.lastEventId, data: e.data}); });
});
es.onmessage = function (e) { note({t: 'message', id: e.lastEventId, data: e.data}); };
</script></body></html>
"""


class PageServer:
    """A tiny http.server on 127.0.0.1 that serves the page and keeps the
    newest report the page POSTs."""

    def __init__(self, page):
        import http.server
        outer = self
        self.lock = threading.Lock()
        self.report = {"seq": 0, "seen": []}
        self.page = page.encode()

        class H(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                if self.path != "/":
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(outer.page)))
                self.end_headers()
                self.wfile.write(outer.page)

            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(n))
                with outer.lock:
                    if body["seq"] > outer.report["seq"]:
                        outer.report = body
                self.send_response(204)
                self.end_headers()

        self.httpd = http.server.ThreadingHTTPServer((harness.HOST, 0), H)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def seen(self):
        with self.lock:
            return list(self.report["seen"])

    def wait(self, pred, timeout, what):
        deadline = time.monotonic() + timeout
        for _ in range(100_000):
            s = self.seen()
            if pred(s):
                return s
            assert time.monotonic() < deadline, "the page did not %s within %.0fs; it saw %r" % (
                what, timeout, s)
            time.sleep(0.05)
        raise AssertionError(what)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def find_chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        p = shutil.which(name)
        if p:
            return p
    return None


@case("a headless Chromium EventSource sees every change exactly once across a kvd restart on the same port", timeout=90)
def browser_eventsource():
    chromium = find_chromium()
    if chromium is None:
        harness.skip("chromium is not installed (tools/deps.sh installs it)")
    k = Kvd()
    k.listen = "%s:%d" % (harness.HOST, k.port)  # restart on the same port
    page = PageServer(PAGE % {"port": k.port})
    tmp = harness.mkdtemp()
    log = open(os.path.join(tmp, "chromium.log"), "wb")
    with k.conn() as c:
        wput(c, "app/before", "not seen")      # before the page: not in its feed
    argv = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-web-security",
            "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check",
            "--disable-extensions", "--disable-background-networking",
            "--user-data-dir=" + os.path.join(tmp, "profile"),
            "http://%s:%d/" % (harness.HOST, page.port)]
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True, preexec_fn=harness._child_setup)
    except OSError as e:
        log.close()
        page.close()
        harness.skip("chromium cannot start: %s" % e)
    try:
        try:
            page.wait(lambda s: any(x["t"] == "open" for x in s), 30, "open its EventSource")
        except AssertionError:
            if proc.poll() is not None:
                log.flush()
                with open(os.path.join(tmp, "chromium.log"), "rb") as f:
                    tail = f.read()[-2000:].decode("utf-8", "replace")
                harness.skip("chromium exited with %r before the page ran:\n%s" % (proc.poll(), tail))
            raise
        expected = []
        with k.conn() as c:
            for i in range(5):
                rev = wput(c, "app/%d" % i, "v%d" % i)
                expected.append(("put", rev, put_json(rev, "app/%d" % i, "v%d" % i)))
                wput(c, "other/%d" % i, "x")          # outside the prefix
            rev = wdel(c, "app/0")
            expected.append(("delete", rev, del_json(rev, "app/0")))

        def events(s):
            return [x for x in s if x["t"] not in ("open", "error")]

        page.wait(lambda s: len(events(s)) >= len(expected), 15, "see the first %d changes" % len(expected))
        # SIGTERM: kvd ends the stream; EventSource reconnects by itself
        # (after about 3 s) with Last-Event-ID.  kvd is back before that.
        k.stop_ok(timeout=5)
        k.start()
        with k.conn() as c:
            for i in range(5, 8):
                rev = wput(c, "app/%d" % i, "after restart %d" % i)
                expected.append(("put", rev, put_json(rev, "app/%d" % i, "after restart %d" % i)))
                wput(c, "other/%d" % i, "x")
        # Written before the page reconnected: only Last-Event-ID brings them.
        early = sum(1 for x in page.seen() if x["t"] == "open") < 2
        page.wait(lambda s: sum(1 for x in s if x["t"] == "open") >= 2, 20, "reconnect")
        with k.conn() as c:
            for i in range(8, 10):
                rev = wput(c, "app/%d" % i, "live %d" % i)
                expected.append(("put", rev, put_json(rev, "app/%d" % i, "live %d" % i)))
        seen = page.wait(lambda s: len(events(s)) >= len(expected), 15,
                         "see all %d changes" % len(expected))
        time.sleep(0.5)
        seen = page.seen()
        got = [(x["t"], int(x["id"]), x["data"].encode()) for x in events(seen)]
        print("the page saw: %r" % [(x["t"], x.get("id"), x.get("state")) for x in seen])
        assert got == expected, "the page saw %r, expected %r" % (got, expected)
        assert [x["t"] for x in seen if x["t"] in ("open", "error")][:3] == ["open", "error", "open"], seen
        if not early:
            print("the page reconnected before the writes after the restart: "
                  "Last-Event-ID was not needed this time")
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # any helper left in its group
        except ProcessLookupError:
            pass
        log.close()
        page.close()
