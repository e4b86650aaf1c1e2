"""Backup and restore (contract v2, section 6): GET /_backup, a new data
directory that holds only its file as data.mdb, and kvdump --backup FILE
DIR, on live, stopped and killed servers, under concurrent writes, on a
full disk and after a failed checkpoint.

Every case here is a durability case: under CI=true a skip fails it (see
harness.skip).  The full-disk and failed-checkpoint cases reuse
test_faults.py's tmpfs and strace helpers."""

import json
import os
import random
import re
import socket
import struct
import threading
import time

from harness import Conn, Kvd, case, check_error_body, expect, kpath, kvdump, metric, mkdtemp, skip
from test_faults import ROOT, StracedKvd, Tmpfs, expect_5xx, need_strace, wait_stderr

CI_STRICT = True

OCTETS = "application/octet-stream"
JSON = "application/json"
TOKEN = "kvd-backup-token-81d3"
LMDB_MAGIC = 0xBEEFC0DE  # every LMDB meta page starts with it, after the page header

DATA = {
    "alpha": "1",
    "al": "",
    "beta": "two\nlines",
    "b\u00eata": "\u00e9\x00\x1f\"\\",
    "user/1": "ann",
    "_meta": "underscore",
}




def rev_of(r):
    return int(r.get("Kvd-Revision"))


def backup(c, rev=None, headers=None, timeout=30):
    """GET /_backup on connection c: a 200 of LMDB bytes, exactly."""
    r = c.request("GET", "/_backup", headers=headers, timeout=timeout)
    expect(r, 200, ctype=OCTETS, rev=rev)
    assert "ETag" not in r.names(), r.summary()
    assert len(r.body) >= 2 * 4096 and len(r.body) % 4096 == 0, len(r.body)
    assert struct.unpack_from("<I", r.body, 16)[0] == LMDB_MAGIC, r.body[:64]
    return r


def restore(data):
    """A new, empty data directory holding only data as data.mdb."""
    d = os.path.join(mkdtemp(), "restored")
    os.mkdir(d)
    with open(os.path.join(d, "data.mdb"), "wb") as f:
        f.write(data)
    return d


def ndjson(d):
    """kvdump --ndjson d as {key: (value bytes, rev)}."""
    res = kvdump("--ndjson", d)
    assert res.rc == 0, res
    out = {}
    for line in res.out.decode().splitlines():
        o = json.loads(line)
        out[o["key"]] = (o["value"].encode(), o["rev"])
    return out


SUMMARY = re.compile(r"kvdump: (.+): revision (\d+), (\d+) keys, (\d+) bytes, from (.+)\n")


def kvdump_backup(file, d):
    """kvdump --backup file d: exit 0 and its one summary line.  Returns
    the revision it names."""
    res = kvdump("--backup", file, d, timeout=60)
    assert res.rc == 0 and res.out == b"", res
    m = SUMMARY.fullmatch(res.err.decode())
    assert m, "not one summary line: %r" % res.err
    assert m.group(1) == file and m.group(5) == d, res.err
    assert int(m.group(4)) == os.path.getsize(file), (res.err, os.path.getsize(file))
    return int(m.group(2)), int(m.group(3))


def fill(k):
    """DATA, two keys with a time to live, an overwrite and a delete."""
    with k.conn() as c:
        for key, v in DATA.items():
            assert c.request("PUT", kpath(key), v.encode()).status == 201
        expect(c.request("PUT", kpath("ttl/long") + "?ttl=3000", b"t1"), 201)
        expect(c.request("PUT", kpath("ttl/short") + "?ttl=1000", b"t2"), 201)
        expect(c.request("PUT", kpath("alpha"), b"again"), 204)
        expect(c.request("DELETE", kpath("user/1")), 204)


def key_heads(k, keys):
    """{key: (ETag, Kvd-TTL or None)} from GET of each key."""
    out = {}
    with k.conn() as c:
        for key in keys:
            r = c.request("GET", kpath(key))
            assert r.status == 200, r.summary()
            out[key] = (r.get("ETag"), r.get("Kvd-TTL"))
    return out


@case("GET /_backup answers 200 with application/octet-stream, Content-Length and Kvd-Revision, HEAD the same head, and other methods 405")
def headers():
    k = Kvd()
    with k.conn() as c:
        r = backup(c, rev=0)  # an empty store backs up too
        for i in range(20):
            expect(c.request("PUT", "/k%d" % i, b"v%d" % i), 201, rev=i + 1)
        expect(c.request("DELETE", "/k3"), 204, rev=21)
        r = backup(c, rev=21)
        expect(c.request("HEAD", "/_backup"), 200, ctype=OCTETS, rev=21, head=True,
               length=len(r.body))
        # Two copies of the same state are the same bytes; a query is ignored.
        expect(c.request("GET", "/_backup?_=123"), 200, r.body, ctype=OCTETS, rev=21)
        for method in ("PUT", "POST", "DELETE", "PATCH", "OPTIONS"):
            body = b"x" if method in ("PUT", "POST") else b""
            expect(c.request(method, "/_backup", body), 405, allow="GET, HEAD")
        expect(c.request("GET", "/_backups"), 404, b"no such endpoint\n")
        c.assert_alive()
    assert metric(k, "kvd_backups_total") == 4
    assert metric(k, "kvd_backup_duration_seconds_count") == 4
    assert "backup copy at revision 21" in k.stderr_text()


@case("with a token file /_backup needs the bearer token under auth writes as under auth all")
def token():
    tf = os.path.join(mkdtemp(), "token")
    with open(tf, "w") as f:
        f.write(TOKEN + "\n")
    os.chmod(tf, 0o600)
    for auth in ("writes", "all"):
        k = Kvd("--token-file", tf, "--auth", auth)
        with k.conn() as c:
            for method in ("GET", "HEAD"):
                for hdrs in ([], [("Authorization", "Bearer wrong")],
                             [("Authorization", "Bearer " + TOKEN[:-1])]):
                    r = c.request(method, "/_backup", headers=hdrs)
                    assert r.status == 401, "%s %r: %s" % (method, hdrs, r.summary())
                    assert r.get("WWW-Authenticate") == 'Bearer realm="kvd"', r.summary()
                    if method == "GET":
                        check_error_body(r.body)
            backup(c, rev=0, headers=[("Authorization", "Bearer " + TOKEN)])
            expect(c.request("HEAD", "/_backup", headers=[("Authorization", "Bearer " + TOKEN)]),
                   200, ctype=OCTETS, rev=0, head=True)
        assert metric(k, "kvd_backups_total", [("Authorization", "Bearer " + TOKEN)]) == 2
        k.stop_ok()


@case("a backup restored as data.mdb of an empty directory serves the same GET / bytes, ETags, TTLs and revision, and kvdump reads it")
def restore_same():
    k = Kvd()
    fill(k)
    with k.conn() as c:
        root = expect(c.request("GET", "/"), 200, ctype=JSON)
        rev = rev_of(root)
        keys = list(json.loads(root.body))
        heads = key_heads(k, keys)
        r = backup(c, rev=rev)
    d = restore(r.body)
    # kvdump reads it without its lock file, and creates none.
    res = kvdump(d)
    assert res.rc == 0 and res.out == root.body, res
    assert os.listdir(d) == ["data.mdb"], os.listdir(d)
    k.stop_ok()
    k2 = Kvd(data=d)
    with k2.conn() as c:
        expect(c.request("GET", "/"), 200, root.body, ctype=JSON, etag=rev, rev=rev)
    got = key_heads(k2, keys)
    for key in keys:
        etag, ttl = heads[key]
        assert got[key][0] == etag, "%r: ETag %r, was %r" % (key, got[key][0], etag)
        assert (got[key][1] is None) == (ttl is None), (key, got[key][1], ttl)
        if ttl is not None:
            assert 0 <= int(ttl) - int(got[key][1]) <= 5, (key, got[key][1], ttl)
    assert heads["ttl/long"][1] is not None and heads["ttl/short"][1] is not None
    assert metric(k2, "kvd_revision") == rev
    # The restored store goes on from its revision.
    expect(k2.request("PUT", "/after", b"x"), 201, etag=rev + 1, rev=rev + 1)
    k2.stop_ok()


def writer(port, tid, stop, recs, lock, errors):
    """PUTs (some with a TTL) and DELETEs of 40 shared keys until stop;
    records every acknowledged write as (rev, key, value or None)."""
    rnd = random.Random(tid)
    try:
        with Conn(port, timeout=30) as c:
            for n in range(10_000_000):
                if stop.is_set():
                    break
                key = "w%02d" % rnd.randrange(40)
                x = rnd.random()
                if x < 0.2:
                    r = c.request("DELETE", kpath(key))
                    if r.status == 404:
                        continue
                    assert r.status == 204, r.summary()
                    rec = (rev_of(r), key, None)
                else:
                    value = b"t%d-%d" % (tid, n)
                    path = kpath(key) + ("?ttl=3000" if x > 0.9 else "")
                    r = c.request("PUT", path, value)
                    assert r.status in (201, 204), r.summary()
                    rec = (rev_of(r), key, value)
                with lock:
                    recs.append(rec)
    except BaseException as e:  # reported by the main thread
        errors.append("writer %d: %r" % (tid, e))


def feed_recorder(port, changes, want, errors):
    """Records GET /_changes?since=0 (HTTP/1.0: the body runs to the close)
    as it streams, until it has seen revision want[0] (set by the main
    thread once the writers stop), for at most 120 s."""
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"GET /_changes?since=0&heartbeat=1 HTTP/1.0\r\n\r\n")
        buf, head, deadline = b"", None, time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                data = s.recv(65536)
            except socket.timeout:
                continue
            assert data, "the feed ended"
            buf += data
            if head is None:
                if b"\r\n\r\n" not in buf:
                    continue
                head, buf = buf.split(b"\r\n\r\n", 1)
                assert head.startswith(b"HTTP/1.1 200 "), head
            *lines, buf = buf.split(b"\n")
            for line in lines:
                c = json.loads(line)
                if c["op"] != "progress":
                    changes.append(c)
            if want[0] and changes and changes[-1]["rev"] >= want[0]:
                break
        s.close()
    except BaseException as e:  # reported by the main thread
        errors.append("feed: %r" % (e,))


def feed_state_at(changes, n):
    """The store after every change of the feed up to revision n, as
    ndjson() gives a restored directory: key -> (value bytes, rev)."""
    st = {}
    for c in changes:
        if c["rev"] > n:
            break
        if c["op"] == "put":
            st[c["key"]] = (c["value"].encode(), c["rev"])
        else:
            st.pop(c["key"], None)
    return st


def state_at(recs, n):
    """The store after every recorded write up to revision n."""
    st = {}
    for rev, key, value in sorted(recs):
        if rev > n:
            break
        if value is None:
            st.pop(key, None)
        else:
            st[key] = (value, rev)
    return st


@case("a backup taken while 4 threads write restores to exactly the state at its Kvd-Revision, rebuilt both from the acknowledged writes and from a change feed recorded meanwhile, and so does kvdump --backup", timeout=180)
def under_writes():
    k = Kvd()
    stop, lock = threading.Event(), threading.Lock()
    recs, errors, taken = [], [], []  # taken: (kind, N, acked before, path)
    changes, want = [], [0]
    recorder = threading.Thread(target=feed_recorder, args=(k.port, changes, want, errors))
    recorder.start()
    threads = [threading.Thread(target=writer, args=(k.port, t, stop, recs, lock, errors))
               for t in range(4)]
    for t in threads:
        t.start()
    try:
        with k.conn(timeout=30) as c:
            for i in range(5):
                time.sleep(0.4)
                with lock:
                    before = max((r[0] for r in recs), default=0)
                if i % 2:
                    path = os.path.join(mkdtemp(), "live.mdb")
                    n, _ = kvdump_backup(path, k.data)
                    taken.append(("kvdump --backup", n, before, path))
                else:
                    r = backup(c)
                    path = os.path.join(mkdtemp(), "http.mdb")
                    with open(path, "wb") as f:
                        f.write(r.body)
                    taken.append(("GET /_backup", rev_of(r), before, path))
            time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
        want[0] = max((r[0] for r in recs), default=0) or 1
        recorder.join(130)
    assert not errors, errors
    revs = sorted(r[0] for r in recs)
    assert [c["rev"] for c in changes] == revs, "the feed is not every acknowledged write once, in order"
    assert revs == list(range(1, len(revs) + 1)), "revisions with gaps or repeats"
    print("%d writes; backups at %s" % (len(revs), [(t[0], t[1]) for t in taken]))
    for kind, n, before, path in taken:
        # Every write acknowledged before the backup was asked for is in it.
        assert before <= n <= len(revs), (kind, before, n, len(revs))
        with open(path, "rb") as f:
            d = restore(f.read())
        want = state_at(recs, n)
        got = ndjson(d)
        assert got == want, "%s at %d: %d keys, want %d; differing: %r" % (
            kind, n, len(got), len(want),
            sorted(set(got.items()) ^ set(want.items()))[:6])
        assert got == feed_state_at(changes, n), "%s at %d differs from the feed's state" % (kind, n)
    assert len({t[1] for t in taken}) > 1, "every backup at the same revision: no writes between?"
    # One restored in full: kvd starts at the backup's revision.
    kind, n, _, path = taken[-1]
    with open(path, "rb") as f:
        k2 = Kvd(data=restore(f.read()))
    assert metric(k2, "kvd_revision") == n
    assert json.loads(k2.dump()) == {key: v.decode() for key, (v, _) in state_at(recs, n).items()}
    k2.stop_ok()
    k.stop_ok()


@case("kvdump --backup of a live, a SIGKILLed and a stopped server, with a log tail, restores to the same GET / body", timeout=120)
def kvdump_backup_cases():
    k = Kvd()
    fill(k)
    with k.conn() as c:
        c.request("GET", "/")  # a checkpoint: what follows is only in the log
        for i in range(50):
            expect(c.request("PUT", "/tail%02d" % i, b"%d" % i), 201)
        expect(c.request("DELETE", kpath("alpha")), 204)
        expect(c.request("PUT", kpath("ttl/tail") + "?ttl=3000", b"t"), 201)
    assert metric(k, "kvd_checkpoint_revision") < metric(k, "kvd_revision"), "no log tail"
    names = sorted(os.listdir(k.data))

    # Live: everything acknowledged, the log tail included.
    file = os.path.join(mkdtemp(), "live.mdb")
    n, keys = kvdump_backup(file, k.data)
    root = k.request("GET", "/")
    assert n == rev_of(root) and keys == len(json.loads(root.body)), (n, keys, root.summary())
    assert oct(os.stat(file).st_mode & 0o777) == "0o600"
    assert k.running() and sorted(os.listdir(k.data)) == names
    with open(file, "rb") as f:
        d = restore(f.read())
    assert kvdump(d).out == root.body
    heads = key_heads(k, json.loads(root.body))
    k2 = Kvd(data=d)
    with k2.conn() as c:
        expect(c.request("GET", "/"), 200, root.body, ctype=JSON, etag=n, rev=n)
    assert {key: h[0] for key, h in key_heads(k2, heads).items()} == \
        {key: h[0] for key, h in heads.items()}
    assert key_heads(k2, ["ttl/tail"])["ttl/tail"][1] is not None
    k2.stop_ok()

    # SIGKILLed, with writes after the last checkpoint.
    for i in range(20):
        k.put("killed%02d" % i, b"k")
    before = k.dump()  # checkpoints ...
    k.put("last", b"only in the log")  # ... so this is the tail
    k.delete("killed00")
    want = json.loads(before)
    want["last"] = "only in the log"
    del want["killed00"]
    k.sigkill()
    file = os.path.join(mkdtemp(), "killed.mdb")
    n, _ = kvdump_backup(file, k.data)
    with open(file, "rb") as f:
        d = restore(f.read())
    assert json.loads(kvdump(d).out) == want
    assert ndjson(d) == ndjson(k.data)

    # Stopped by SIGTERM: a backup creates nothing in the directory.
    k.restart()
    root = k.request("GET", "/")
    k.stop_ok()
    names = {x: os.stat(os.path.join(k.data, x)).st_ino for x in os.listdir(k.data)}
    file = os.path.join(mkdtemp(), "stopped.mdb")
    n, _ = kvdump_backup(file, k.data)
    assert n == rev_of(root)
    assert {x: os.stat(os.path.join(k.data, x)).st_ino for x in os.listdir(k.data)} == names
    with open(file, "rb") as f:
        k3 = Kvd(data=restore(f.read()))
    expect(k3.request("GET", "/"), 200, root.body, ctype=JSON, rev=n)
    k3.stop_ok()

    # Refused: into the data directory itself, or from no directory.
    res = kvdump("--backup", os.path.join(k.data, "x.mdb"), k.data)
    assert res.rc == 1 and res.err.count(b"\n") == 1 and b"data directory" in res.err, res
    assert not os.path.exists(os.path.join(k.data, "x.mdb"))
    res = kvdump("--backup", os.path.join(mkdtemp(), "x.mdb"), os.path.join(mkdtemp(), "none"))
    assert res.rc == 1 and res.err.count(b"\n") == 1, res
    res = kvdump("--backup", file, "--ndjson", k.data)
    assert res.rc == 2, res


@case("backups asked for at once of an unchanged store are the same bytes at the same revision")
def shared():
    k = Kvd()
    fill(k)
    rev = rev_of(k.request("GET", "/"))
    results, errors = [], []

    def ask():
        try:
            with Conn(k.port, timeout=30) as c:
                r = backup(c, rev=rev)
                results.append(r.body)
        except BaseException as e:
            errors.append(repr(e))

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert len(results) == 4 and len(set(results)) == 1
    assert 1 <= metric(k, "kvd_backups_total") <= 4


@case("a backup on a full disk answers 507, leaves no file behind, and kvd keeps serving and backs up once space is freed", timeout=120)
def full_disk():
    if not ROOT:
        skip("needs root to mount a tmpfs")
    fs = Tmpfs(6 << 20)
    if not fs.ok:
        skip("cannot mount a tmpfs: " + fs.why)
    k = None
    try:
        k = Kvd("--log-segment", "64K", data=os.path.join(fs.dir, "data"))
        with k.conn(timeout=20) as c:
            for i in range(400):
                expect(c.request("PUT", "/f%04d" % i, b"%04d" % i * 500), 201)
            root = c.request("GET", "/")  # the image is written now, not later
            ok = backup(c, rev=rev_of(root))
        time.sleep(0.5)
        names = sorted(os.listdir(k.data))
        filler = os.path.join(fs.dir, "filler")
        with open(filler, "wb") as f:
            f.write(b"\0" * max(0, fs.free() - len(ok.body) // 2))
        with k.conn(timeout=20) as c:
            r = c.request("GET", "/_backup")
            expect_5xx(r, 507, "GET /_backup on a full disk")
            assert r.body == b"insufficient storage\n", r.body
            wait_stderr(k, "cannot make a backup: insufficient storage")
            assert sorted(os.listdir(k.data)) == names, os.listdir(k.data)
            # Reads go on.
            expect(c.request("GET", "/f0007"), 200, b"0007" * 500)
            expect(c.request("GET", "/"), 200, root.body, ctype=JSON)
            c.assert_alive()
            os.remove(filler)
            expect(c.request("GET", "/_backup"), 200, ok.body, ctype=OCTETS, rev=rev_of(root))
            expect(c.request("PUT", "/after", b"x"), 201)
        k.stop_ok()
    finally:
        if k is not None and k.running():
            k.sigkill()
        fs.umount()


@case("after a checkpoint failed GET /_backup answers 503 rather than a stale copy, and reads go on", timeout=120)
def checkpoint_failed():
    need_strace()
    # As in test_faults.py: with --sync none, on a directory that exists,
    # the first fdatasync is the checkpoint's LMDB commit.
    first = Kvd()
    first.stop_ok()
    k = StracedKvd("fdatasync:error=EIO:when=1", "--sync", "none", data=first.data)
    try:
        with k.conn() as c:
            for i in range(20):
                expect(c.request("PUT", "/c%02d" % i, b"v%d" % i), 201)
            r = c.request("GET", "/_backup")
            expect_5xx(r, 503, "GET /_backup after a failed checkpoint")
            assert r.body == b"no backup: LMDB checkpoints failed; restart kvd\n", r.body
            wait_stderr(k, "checkpoint failed (storage I/O error)")
            expect(c.request("GET", "/c07"), 200, b"v7")
            r = c.request("HEAD", "/_backup")
            assert r.status == 503 and r.body == b"", r.summary()
        assert k.injected() == ["fdatasync"], k.injected()
    finally:
        if k.running():
            k.sigkill()
