"""The revision log (DIR/log/) against the real kvd: writes that were never
checkpointed come back after SIGKILL with their revisions, a torn tail is
zeroed with one warning, damage stops kvd with one line, kvdump of a live
server shows the log's tail, small segments switch and are trimmed by
checkpoints, and a SIGKILL loop with checkpoints and segment switches in
flight loses no acknowledged write and hands out no revision twice.

The segments are read and edited here with the format of
include/kv/revlog.h: a 32-byte header ("KVDLOG01", the first revision, a
checksum), then 8-byte aligned records (u32 length, u32 0, u64 checksum,
body: u64 rev, u64 batch, u64 expires, u8 op, u8 0, u16 klen, u32 vlen,
key, value)."""

import json
import os
import random
import re
import shutil
import struct
import threading
import time

from harness import Conn, Kvd, case, expect, kpath, kvd_run, kvdump, metric, mkdtemp

# The log is kvd's durability: under CI=true a skip here fails.
CI_STRICT = True

JSON = "application/json"
SEG_HDR = 32
SEG_RE = re.compile(r"[0-9a-f]{16}\.seg")


# -- the log on disk ------------------------------------------------------------

class Rec:
    __slots__ = ("off", "size", "rev", "batch", "op", "key", "value")

    def __init__(self, off, size, rev, batch, op, key, value):
        self.off, self.size, self.rev, self.batch = off, size, rev, batch
        self.op, self.key, self.value = op, key, value


def segments(data):
    """The segment files of data's log, by first revision."""
    names = sorted(n for n in os.listdir(os.path.join(data, "log")) if SEG_RE.fullmatch(n))
    return [os.path.join(data, "log", n) for n in names]


def parse_segment(path):
    """(first revision, records, where the data ends) of a segment whose
    records are all whole (checksums are not checked here)."""
    with open(path, "rb") as f:
        b = f.read()
    assert b[:8] == b"KVDLOG01", "%s: bad magic %r" % (path, b[:8])
    first = struct.unpack_from("<Q", b, 8)[0]
    assert os.path.basename(path) == "%016x.seg" % first, (path, first)
    recs, off = [], SEG_HDR
    for _ in range(1_000_000):
        if off + 16 > len(b):
            break
        n, zero = struct.unpack_from("<II", b, off)
        if n == 0:
            break
        assert zero == 0 and off + 16 + n <= len(b), "%s: bad record at %d" % (path, off)
        rev, batch, _expires, op, _z, klen, vlen = struct.unpack_from("<QQQBBHI", b, off + 16)
        body = b[off + 16:off + 16 + n]
        size = 16 + ((n + 7) & ~7)
        recs.append(Rec(off, size, rev, batch, op, body[32:32 + klen],
                        body[32 + klen:32 + klen + vlen]))
        off += size
    return first, recs, off




def lmdb_only_revs(data):
    """kvdump --ndjson of a copy of data.mdb without the log: what the
    checkpoint alone holds, as {key: rev}."""
    d = os.path.join(mkdtemp(), "lmdb-only")
    os.mkdir(d)
    shutil.copy(os.path.join(data, "data.mdb"), d)
    res = kvdump("--ndjson", d)
    assert res.rc == 0, res
    return {x["key"]: x["rev"] for x in map(json.loads, res.out.splitlines())}


def loaded_line(k):
    """(keys, revision, writes from the log) of kvd's 'loaded' line."""
    m = re.search(r"kvd: loaded (\d+) keys \(\d+ bytes\) at revision (\d+) from .* "
                  r"\((\d+) from the log\)\n", k.stderr_text())
    assert m, "no loaded line:\n%s" % k.stderr_text()
    return tuple(int(x) for x in m.groups())


class Model:
    """key -> (value, revision) of every acknowledged write, from the
    answers' ETag and Kvd-Revision."""

    def __init__(self):
        self.kv = {}
        self.rev = 0

    def put(self, c, key, value):
        r = c.request("PUT", kpath(key), value)
        expect(r, 204 if key in self.kv else 201, etag=self.rev + 1, rev=self.rev + 1)
        self.rev += 1
        self.kv[key] = (value, self.rev)

    def delete(self, c, key):
        r = c.request("DELETE", kpath(key))
        expect(r, 204, rev=self.rev + 1)
        self.rev += 1
        del self.kv[key]

    def check(self, k, what):
        """Every key with its exact value and ETag, GET / as a whole, and
        the store's revision."""
        with k.conn() as c:
            for key, (value, rev) in sorted(self.kv.items()):
                r = c.request("GET", kpath(key))
                assert r.status == 200, "%s: GET %r: %s" % (what, key, r.summary())
                expect(r, 200, value, etag=rev, rev=self.rev)
            r = c.request("GET", "/")
            expect(r, 200, ctype=JSON, etag=self.rev, rev=self.rev)
        got = {key: v.encode() for key, v in json.loads(r.body).items()}
        want = {key: v for key, (v, _) in self.kv.items()}
        assert got == want, "%s: GET / differs from the acknowledged writes" % what
        assert metric(k, "kvd_revision") == self.rev, what


# -- restart after SIGKILL ----------------------------------------------------------

@case("kvd restarted after SIGKILL replays writes that were never checkpointed with every value and ETag intact")
def sigkill_replays_log():
    k = Kvd()
    m = Model()
    with k.conn() as c:
        for i in range(20):
            m.put(c, "base/%02d" % i, b"checkpointed %d" % i)
        expect(c.request("GET", "/"), 200, ctype=JSON, etag=20, rev=20)  # LMDB catches up
    assert metric(k, "kvd_checkpoint_revision") == 20
    with k.conn() as c:
        for i in range(0, 20, 3):
            m.delete(c, "base/%02d" % i)
        for i in range(1, 20, 4):
            m.put(c, "base/%02d" % i, b"overwritten %d" % i)
        m.put(c, "empty", b"")
        m.put(c, "utf8 \u00e9", "\u00e9\u20ac\U0001F600 \x00\x1f".encode())
        m.put(c, "big", b"0123456789abcdef" * 20000)
        for i in range(30):
            m.put(c, "new/%02d" % i, b"v%d" % i * (i + 1))
    # Right after the writes: the checkpoint is still at 20.
    assert metric(k, "kvd_checkpoint_revision") == 20
    assert metric(k, "kvd_revision") == m.rev > 20
    k.sigkill()
    # data.mdb alone holds exactly the first 20 writes.
    assert lmdb_only_revs(k.data) == {"base/%02d" % i: i + 1 for i in range(20)}
    k.restart()
    keys, rev, from_log = loaded_line(k)
    assert (keys, rev, from_log) == (len(m.kv), m.rev, m.rev - 20), \
        (keys, rev, from_log, len(m.kv), m.rev)
    deleted = ["base/%02d" % i for i in range(20) if "base/%02d" % i not in m.kv]
    assert len(deleted) == 6, deleted
    for key in deleted:
        expect(k.request("GET", kpath(key)), 404, b"key not found\n", rev=m.rev)
    m.check(k, "after SIGKILL and a restart")
    # The next write takes the next revision: none is handed out twice.
    with k.conn() as c:
        m.put(c, "after", b"restart")
    k.sigkill()
    k.restart()
    m.check(k, "after a second SIGKILL")


# -- a torn tail ----------------------------------------------------------------------

@case("a torn tail appended by hand to the last segment is zeroed at start-up with one warning line and every acknowledged write is served")
def torn_tail_zeroed():
    k = Kvd()
    m = Model()
    with k.conn() as c:
        for i in range(40):
            m.put(c, "k%02d" % i, b"value %d" % i)
        m.delete(c, "k07")
    k.sigkill()
    seg = segments(k.data)[-1]
    first, recs, end = parse_segment(seg)
    assert recs[-1].rev == m.rev, (recs[-1].rev, m.rev)
    size = os.path.getsize(seg)
    # Half a record of a batch that was never answered: a plausible
    # length, a checksum, a revision, then the write stopped.
    junk = struct.pack("<IIQQQ", 60, 0, 0x1234567890abcdef, m.rev + 1, m.rev + 1) + b"\xa5" * 13
    with open(seg, "r+b") as f:
        f.seek(end)
        f.write(junk)
    k.restart()
    lines = k.stderr_text().splitlines()
    warnings = [x for x in lines if not x.startswith("kvd: ") or
                x.startswith(("kvd: warning:", "kvd: error:"))]
    assert warnings == ["kvd: warning: %s/log: zeroed a torn tail of %d bytes at offset %d: "
                        "a batch that was never acknowledged" % (k.data, len(junk), end)], lines
    with open(seg, "rb") as f:
        b = f.read()
    assert len(b) == size and b[end:] == bytes(size - end), "the tail was not zeroed"
    m.check(k, "after the torn tail")
    # Appends go on where the good records end; a restart is quiet.
    with k.conn() as c:
        m.put(c, "k07", b"again")
    first2, recs2, _ = parse_segment(seg)
    assert first2 == first and recs2[-1].off == end and recs2[-1].rev == m.rev
    k.sigkill()
    k.restart()
    assert "warning" not in k.stderr_text(), k.stderr_text()
    m.check(k, "after the next restart")


# -- damage ---------------------------------------------------------------------------

@case("a damaged record in the middle of the log makes kvd refuse to start with exit status 1 and one line naming the segment and the offset")
def damage_refused():
    k = Kvd()
    with k.conn() as c:
        for i in range(30):
            expect(c.request("PUT", "/k%d" % i, b"value number %d" % i), 201, etag=i + 1)
    k.sigkill()
    seg = segments(k.data)[0]
    _, recs, _ = parse_segment(seg)
    assert [r.rev for r in recs] == list(range(1, 31))
    assert [r.batch for r in recs] == list(range(1, 31))  # one write per batch
    bad = recs[4]  # revision 5, with 25 later batches after it
    assert bad.key == b"k4" and bad.value == b"value number 4"
    pos = bad.off + 16 + 32 + 2 + 6  # the 'n' of its value
    with open(seg, "r+b") as f:
        f.seek(pos)
        c = f.read(1)
        f.seek(pos)
        f.write(bytes([c[0] ^ 0x01]))
    with open(seg, "rb") as f:
        before = f.read()
    line = ("%s/log/0000000000000001.seg: damaged record at offset %d (revision 5 expected) "
            "with revision 6 written after it; restore the data directory from a backup\n"
            % (k.data, bad.off))
    for _ in range(2):
        res = kvd_run("--listen", "127.0.0.1:0", "--data", k.data, timeout=20)
        assert res.rc == 1, res
        assert res.err.decode() == "kvd: %s: %s" % (k.data, line), res
    # kvdump refuses it too, and nothing was changed or removed.
    res = kvdump(k.data)
    assert res.rc == 1 and res.out == b"", res
    assert res.err.decode() == "kvdump: " + line, res
    with open(seg, "rb") as f:
        assert f.read() == before, "the damaged segment was modified"
    assert segments(k.data) == [seg]


# -- kvdump of a live server -------------------------------------------------------------

@case("kvdump of a live server right after writes prints every acknowledged write with its revision, including deletes of checkpointed keys, and filters by prefix")
def kvdump_live_tail():
    k = Kvd()
    m = Model()
    with k.conn() as c:
        for i in range(10):
            m.put(c, "a/%d" % i, b"A%d" % i)
            m.put(c, "b/%d" % i, b"B%d" % i)
        expect(c.request("GET", "/"), 200, ctype=JSON, etag=20, rev=20)
        m.delete(c, "a/3")
        m.delete(c, "b/0")
        m.put(c, "a/5", b"A5 again")
        m.put(c, "a/10", b"new")
        m.put(c, "c", b"")
        m.delete(c, "a/10")
        m.put(c, "a/10", b"newer")
        m.put(c, "b/9", "\u00e9".encode())
    assert metric(k, "kvd_checkpoint_revision") == 20 < m.rev

    def ndjson(prefix):
        return b"".join(
            b'{"key":"%s","value":"%s","rev":%d}\n' % (key.encode(), v, rev)
            for key, (v, rev) in sorted(m.kv.items()) if key.startswith(prefix))

    res = kvdump("--ndjson", k.data)
    assert res.rc == 0, res
    assert res.out == ndjson(""), res.out
    res = kvdump("--ndjson", "--prefix", "a/", k.data)
    assert res.rc == 0 and res.out == ndjson("a/"), res.out
    res = kvdump("--prefix", "b/", k.data)
    assert res.rc == 0, res
    assert json.loads(res.out) == {key: v.decode() for key, (v, _) in m.kv.items()
                                   if key.startswith("b/")}, res.out
    whole = kvdump(k.data)
    assert whole.rc == 0, whole
    # The log's tail was not checkpointed by any of this.
    assert metric(k, "kvd_checkpoint_revision") == 20
    # GET / (which checkpoints first) gives the very same bytes.
    r = k.request("GET", "/")
    expect(r, 200, ctype=JSON, etag=m.rev, rev=m.rev)
    assert r.body == whole.out, (r.body, whole.out)
    assert metric(k, "kvd_checkpoint_revision") == m.rev


# -- small segments ----------------------------------------------------------------------

@case("with log-segment 64K and history 0 segments switch, checkpoints forced by GET / remove the old ones, and a restart keeps everything")
def small_segments():
    # No change feed history: a checkpoint may remove every segment it covers.
    k = Kvd("--log-segment", "64K", "--history", "0")
    m = Model()
    rng = random.Random(64)
    with k.conn() as c:
        for i in range(200):
            m.put(c, "s%03d" % rng.randrange(150), b"%d:" % i + b"x" * rng.randrange(1000, 3000))
    assert metric(k, "kvd_checkpoint_revision") == 0
    segs = segments(k.data)
    assert len(segs) >= 5, segs
    revs = []
    for path in segs:
        assert os.path.getsize(path) == 65536, path
        first, recs, _ = parse_segment(path)
        assert recs and recs[0].rev == first, path
        revs += [r.rev for r in recs]
    assert revs == list(range(1, m.rev + 1)), "the segments do not hold 1..%d in order" % m.rev
    # GET / checkpoints everything: only the segment being appended to stays.
    expect(k.request("GET", "/"), 200, ctype=JSON, etag=m.rev, rev=m.rev)
    assert metric(k, "kvd_checkpoint_revision") == m.rev
    assert segments(k.data) == segs[-1:], (segments(k.data), segs[-1])
    left = [n for n in os.listdir(os.path.join(k.data, "log"))
            if not SEG_RE.fullmatch(n) and n != "spare.tmp"]
    assert not left, left
    ckpt = m.rev
    # More segments, a SIGKILL, and a restart that replays them.
    with k.conn() as c:
        for i in range(120):
            key = "s%03d" % rng.randrange(150)
            if key in m.kv and rng.random() < 0.2:
                m.delete(c, key)
            else:
                m.put(c, key, b"second %d:" % i + b"y" * rng.randrange(1000, 3000))
    assert len(segments(k.data)) >= 3
    assert segments(k.data)[0] == segs[-1]
    k.sigkill()
    k.restart()
    assert loaded_line(k) == (len(m.kv), m.rev, m.rev - ckpt), (loaded_line(k), m.rev, ckpt)
    m.check(k, "after SIGKILL and a restart")
    # A SIGTERM stop checkpoints and trims too; the restart still has all.
    k.stop_ok()
    assert len(segments(k.data)) == 1
    k.restart()
    assert loaded_line(k) == (len(m.kv), m.rev, 0)
    m.check(k, "after SIGTERM and a restart")


# -- SIGKILL loop -------------------------------------------------------------------------

class Op:
    """One write: check_round (below) reads key, kind, value, sent, acked;
    rev is the revision its answer named."""
    __slots__ = ("key", "kind", "value", "sent", "acked", "rev")

    def __init__(self, key, kind, value, sent, acked=None):
        self.key, self.kind, self.value, self.sent, self.acked = key, kind, value, sent, acked
        self.rev = None


def check_round(base, ops, kill_time, state, round_start):
    """As in test_faults.py: base is the state at the round's start, ops
    every op sent in the round, state the state after the restart.  An op
    in flight at the kill took effect before the kill or never; a key may
    hold the effect of op X only if no acknowledged op on it was sent after
    X was acknowledged (or after the kill, for an op in flight)."""
    by_key = {}
    for o in ops:
        by_key.setdefault(o.key, []).append(o)
    problems = []
    for key in set(by_key) | set(base) | set(state):
        cands = [Op(key, "PUT" if key in base else "DELETE", base.get(key), round_start,
                    round_start)]
        cands += by_key.get(key, [])
        acked = [o for o in cands if o.acked is not None]
        got = state.get(key)
        if got is None:
            matching = [o for o in cands if o.kind == "DELETE"]
        else:
            matching = [o for o in cands if o.kind == "PUT" and o.value == got]
        if any(not any(x is not o and x.sent > (o.acked if o.acked is not None else kill_time)
                       for x in acked) for o in matching):
            continue
        last = max(acked, key=lambda o: o.acked)
        problems.append("key %r holds %r, ruled out by the acknowledged %s %r" % (
            key, got, last.kind, last.value))
    return problems


def loop_writer(port, tid, rnd, keys, ops, lock, stop, errors):
    rng = random.Random(rnd * 100 + tid)
    c = None
    try:
        c = Conn(port, timeout=5)
        for n in range(1_000_000):
            if stop.is_set():
                break
            key = rng.choice(keys)
            if rng.random() < 0.25:
                o = Op(key, "DELETE", None, 0.0)
                data = "DELETE %s HTTP/1.1\r\nHost: x\r\n\r\n" % kpath(key)
            else:
                v = "r%d-t%d-n%d%s" % (rnd, tid, n, "." * rng.choice((0, 10, 2000, 6000)))
                o = Op(key, "PUT", v.encode(), 0.0)
                data = "PUT %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (
                    kpath(key), len(v), v)
            o.sent = time.monotonic()
            with lock:
                ops.append(o)
            c.send(data.encode())
            r = c.read_response()
            if o.kind == "DELETE" and r.status == 404:
                o.acked = time.monotonic()  # no revision: nothing changed
                continue
            if r.status not in (201, 204):
                raise AssertionError("%s %s answered %s" % (o.kind, key, r.summary()))
            o.rev = int(r.get("Kvd-Revision"))
            if o.kind == "PUT":
                assert r.get("ETag") == '"%d"' % o.rev, r.summary()
            o.acked = time.monotonic()
    except BaseException as e:
        if not stop.is_set():
            errors.append("writer %d: %r" % (tid, e))
    finally:
        if c is not None:
            c.close()


def checkpointer(port, rnd, stop, counts):
    """GET / every 50-300 ms: each one makes LMDB catch up and trims."""
    rng = random.Random(rnd)
    try:
        with Conn(port, timeout=5) as c:
            for _ in range(1000):
                if stop.wait(rng.uniform(0.05, 0.3)):
                    break
                r = c.request("GET", "/")
                if r.status == 200:
                    counts["gets"] += 1
    except BaseException:
        pass  # killed under it


@case("30 rounds of SIGKILL with log-segment 64K, writes and GET / checkpoints in flight lose no acknowledged write and reuse no revision", timeout=150)
def sigkill_loop_small_segments():
    rounds = 30
    k = Kvd("--log-segment", "64K")
    keys = ["key-%d" % i for i in range(10)] + ["sl/%d" % i for i in range(2)]
    state, etags = {}, {}  # key -> value, key -> revision, after each restart
    acked_revs = {}  # revision -> (round, key, kind) of every acknowledged write
    last_rev = 0
    rng = random.Random(3030)
    t0 = time.monotonic()
    totals = {"acked": 0, "gets": 0, "segments": 0, "landed": 0}
    for rnd in range(rounds):
        assert time.monotonic() - t0 < 100, "only %d rounds in 100 s" % rnd
        ops, lock, stop, errors = [], threading.Lock(), threading.Event(), []
        counts = {"gets": 0}
        round_start = time.monotonic()
        threads = [threading.Thread(target=loop_writer,
                                    args=(k.port, t, rnd, keys, ops, lock, stop, errors),
                                    daemon=True) for t in range(rng.randint(3, 6))]
        threads.append(threading.Thread(target=checkpointer, args=(k.port, rnd, stop, counts),
                                        daemon=True))
        for t in threads:
            t.start()
        time.sleep(rng.uniform(0.3, 0.9))
        stop.set()
        k.sigkill()
        kill_time = time.monotonic()
        for t in threads:
            t.join(10)
            assert not t.is_alive(), "a client thread hung"
        assert not errors, "round %d: writers failed before the kill:\n%s\nkvd:\n%s" % (
            rnd, "\n".join(errors), k.stderr_text()[-3000:])
        totals["segments"] += len(segments(k.data))
        dumped = kvdump(k.data)
        assert dumped.rc == 0, dumped
        k.restart()
        with k.conn() as c:
            r = c.request("GET", "/")
            assert r.status == 200, r.summary()
            assert r.body == dumped.out, "round %d: kvdump and GET / differ" % rnd
            store_rev = int(r.get("Kvd-Revision"))
            new = {key: v.encode() for key, v in json.loads(r.body).items()}
            new_etags = {}
            for key in new:
                g = c.request("GET", kpath(key))
                assert g.status == 200 and g.body == new[key], g.summary()
                new_etags[key] = int(g.get("ETag").strip('"'))
        problems = check_round(state, ops, kill_time, new, round_start)
        assert not problems, "round %d:\n%s" % (rnd, "\n".join(problems[:20]))
        # Revisions: every acknowledged one is new, above all earlier rounds'
        # and at most the store's after the restart.
        acked = [o for o in ops if o.rev is not None]
        for o in acked:
            assert o.rev not in acked_revs, "round %d: revision %d handed out twice: %r and %r" % (
                rnd, o.rev, acked_revs[o.rev], (rnd, o.key, o.kind))
            assert o.rev > last_rev, "round %d: revision %d after %d" % (rnd, o.rev, last_rev)
            acked_revs[o.rev] = (rnd, o.key, o.kind)
        if acked:
            assert store_rev >= max(o.rev for o in acked), (store_rev, max(o.rev for o in acked))
        # Each key's ETag is the revision its value was written at: the
        # acknowledged answer's, or, for a write in flight at the kill, one
        # that no acknowledged write got.
        by_value = {(o.key, o.value): o for o in ops if o.kind == "PUT"}
        for key, v in new.items():
            o = by_value.get((key, v))
            if o is None:
                assert state.get(key) == v and new_etags[key] == etags[key], \
                    "round %d: %r holds %r at %d, not its earlier %r at %r" % (
                        rnd, key, v, new_etags[key], state.get(key), etags.get(key))
            elif o.rev is not None:
                assert new_etags[key] == o.rev, "round %d: %r ETag %d, answered %d" % (
                    rnd, key, new_etags[key], o.rev)
            else:
                assert new_etags[key] not in acked_revs and new_etags[key] > last_rev, \
                    "round %d: %r landed at revision %d, which was answered to %r" % (
                        rnd, key, new_etags[key], acked_revs.get(new_etags[key]))
                totals["landed"] += 1
        last_rev = store_rev
        state, etags = new, new_etags
        totals["acked"] += len(acked)
        totals["gets"] += counts["gets"]
        assert acked, "round %d: nothing was acknowledged" % rnd
    print("rounds %d, acknowledged writes %d, GET / checkpoints %d, segments at the kills %d, "
          "in-flight PUTs that landed %d, last revision %d, %.0f s"
          % (rounds, totals["acked"], totals["gets"], totals["segments"], totals["landed"],
             last_rev, time.monotonic() - t0))
    assert totals["gets"] >= rounds, totals
    assert totals["segments"] > rounds, totals
