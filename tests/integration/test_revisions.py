"""Revisions (contract v2, section 1): every write that changes the store
takes the next revision, answers carry Kvd-Revision and ETag, and the
numbering survives restarts.  Also the kvd-1 to kvd-2 migration."""

import json
import os
import subprocess

import harness
from harness import Kvd, case, expect, kvdump, metric, mkdtemp

JSON = "application/json"




@case("a new store is at revision 0: a missing key and GET / say so, and the empty image's ETag is 0")
def new_store():
    k = Kvd()
    with k.conn() as c:
        expect(c.request("GET", "/nope"), 404, b"key not found\n", rev=0)
        expect(c.request("HEAD", "/nope"), 404, head=True, rev=0)
        expect(c.request("GET", "/"), 200, b"{}\n", ctype=JSON, etag=0, rev=0)
        expect(c.request("HEAD", "/"), 200, head=True, length=3, ctype=JSON, etag=0, rev=0)
    assert metric(k, "kvd_revision") == 0


@case("writes are numbered 1, 2, 3 with no gaps, and a DELETE of a missing key takes no revision")
def numbering():
    k = Kvd()
    with k.conn() as c:
        expect(c.request("PUT", "/a", b"x"), 201, etag=1, rev=1)
        expect(c.request("PUT", "/a", b"x"), 204, etag=2, rev=2)  # same bytes: still a write
        expect(c.request("DELETE", "/missing"), 404, b"key not found\n", rev=2)
        expect(c.request("POST", "/b", b"y"), 201, b"y", body201=True, etag=3, rev=3)
        expect(c.request("POST", "/b", b"z"), 200, b"z", etag=4, rev=4)
        expect(c.request("DELETE", "/a"), 204, rev=5)
        expect(c.request("DELETE", "/a"), 404, b"key not found\n", rev=5)
        # A refused write takes no revision either.
        expect(c.request("PUT", "/c", b"\xff"), 400)
        expect(c.request("PUT", "/d", b"ok"), 201, etag=6, rev=6)
        # A read names the store's revision and the value's own.
        expect(c.request("GET", "/b"), 200, b"z", etag=4, rev=6)
        expect(c.request("HEAD", "/b"), 200, head=True, length=1, etag=4, rev=6)
        expect(c.request("GET", "/a"), 404, b"key not found\n", rev=6)
        expect(c.request("GET", "/"), 200, b'{"b":"z","d":"ok"}\n', ctype=JSON, etag=6, rev=6)
    assert metric(k, "kvd_revision") == 6


@case("a pipelined batch numbers its writes in order and counts earlier writes of the same batch")
def batch_numbering():
    k = Kvd()
    reqs = [("PUT", "/k", b"1"), ("DELETE", "/k", b""), ("DELETE", "/k", b""),
            ("PUT", "/k", b"2"), ("PUT", "/k", b"3"), ("DELETE", "/j", b""), ("POST", "/j", b"4")]
    with k.conn() as c:
        c.send(b"".join(harness.build_request(m, p, b) for m, p, b in reqs))
        rs = [c.read_response(m) for m, _, _ in reqs]
    expect(rs[0], 201, etag=1, rev=1)
    expect(rs[1], 204, rev=2)
    expect(rs[2], 404, b"key not found\n")
    expect(rs[3], 201, etag=3, rev=3)
    expect(rs[4], 204, etag=4, rev=4)
    expect(rs[5], 404, b"key not found\n")
    expect(rs[6], 201, b"4", body201=True, etag=5, rev=5)
    # A 404 inside a batch names a revision that includes the writes
    # before it: here the whole batch, applied before any answer.
    assert int(rs[2].get("Kvd-Revision")) >= 2 and int(rs[5].get("Kvd-Revision")) >= 4
    expect(k.request("GET", "/k"), 200, b"3", etag=4, rev=5)


@case("revisions and ETags survive SIGTERM and SIGKILL restarts and are never handed out twice")
def restarts():
    k = Kvd()
    for i in range(5):
        k.put("k%d" % i, b"v")
    k.delete("k0")
    k.stop_ok()
    k.restart()
    expect(k.request("GET", "/k3"), 200, b"v", etag=4, rev=6)
    expect(k.request("PUT", "/k3", b"w"), 204, etag=7, rev=7)
    k.sigkill()
    k.restart()
    expect(k.request("GET", "/k3"), 200, b"w", etag=7, rev=7)
    expect(k.request("PUT", "/new", b"n"), 201, etag=8, rev=8)
    assert metric(k, "kvd_revision") == 8
    lines = [json.loads(x) for x in kvdump("--ndjson", k.data).out.splitlines()]
    assert [(x["key"], x["rev"]) for x in lines] == [
        ("k1", 2), ("k2", 3), ("k3", 7), ("k4", 5), ("new", 8)], lines


def mdb_load(env, name, pairs):
    """Writes pairs into the named database of env with mdb_load -T."""
    text = "".join("%s\n%s\n" % (key, v) for key, v in pairs)
    r = subprocess.run(["mdb_load", "-T", "-s", name, env], input=text.encode(),
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=20)
    assert r.returncode == 0, r.stdout


@case("a kvd-1 data directory opens, keeps its keys and numbers them 1..N in key order")
def migrate_v1():
    if not harness.shutil.which("mdb_load"):
        harness.skip("mdb_load (lmdb-utils) is not installed")
    data = os.path.join(mkdtemp(), "old")
    os.mkdir(data)
    mdb_load(data, "meta", [("format", "kvd-1")])
    mdb_load(data, "data", [("b", "two"), ("a", "one"), ("c", "")])
    os.unlink(os.path.join(data, "lock.mdb"))
    # kvdump reads it as it is, without changing it.
    out = kvdump("--ndjson", data).out
    assert out == (b'{"key":"a","value":"one","rev":0}\n{"key":"b","value":"two","rev":0}\n'
                   b'{"key":"c","value":"","rev":0}\n'), out
    k = Kvd(data=data)
    assert "migrated 3 keys from format kvd-1 to kvd-2" in k.stderr_text(), k.stderr_text()
    expect(k.request("GET", "/a"), 200, b"one", etag=1, rev=3)
    expect(k.request("GET", "/c"), 200, b"", etag=3, rev=3)
    expect(k.request("PUT", "/d", b"four"), 201, etag=4, rev=4)
    k.stop_ok()
    k.restart()
    assert "migrated" not in k.stderr_text()
    expect(k.request("GET", "/"), 200, b'{"a":"one","b":"two","c":"","d":"four"}\n',
           ctype=JSON, etag=4, rev=4)
