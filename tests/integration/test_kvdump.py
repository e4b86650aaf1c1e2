"""kvdump [--image] [--prefix P] [--ndjson] DIR"""

import json
import os

from harness import Kvd, case, kvdump, mkdtemp

DATA = {
    "alpha": "1",
    "alps": "mountains",
    "al": "",
    "beta": "two\nlines",
    "b\u00eata": "\u00e9\x00\x1f\"\\",
    "user/1": "ann",
    "user/2": "bob",
    "users": "list",
    "_meta": "underscore",
}


def filled(*extra):
    k = Kvd(*extra)
    for key, v in DATA.items():
        k.put(key, v.encode())
    return k


def ok(res):
    assert res.rc == 0, "kvdump failed: %r" % res
    return res.out


def one_line_error(res, prefix):
    assert res.rc == 1, "expected exit 1: %r" % res
    text = res.err.decode("utf-8", "replace")
    assert text.startswith(prefix), "stderr should start with %r: %r" % (prefix, text)
    assert text.endswith("\n") and text.count("\n") == 1, "not one line: %r" % text
    assert res.out == b"", res


@case("kvdump of a live server dir prints exactly the GET / body")
def live():
    k = filled()
    out = ok(kvdump(k.data))
    assert out == k.dump(), (out[:200], k.dump()[:200])
    k.put("late", b"write")
    assert ok(kvdump(k.data)) == k.dump()
    assert json.loads(out) == DATA


@case("kvdump of a SIGTERM-stopped dir prints the GET / body from before the stop")
def stopped():
    k = filled()
    before = k.dump()
    k.stop_ok()
    assert ok(kvdump(k.data)) == before


@case("kvdump of a SIGKILLed dir prints the GET / body from before the kill")
def killed():
    k = filled()
    k.put("extra", b"after")
    k.delete("alpha")
    before = k.dump()
    k.sigkill()
    assert ok(kvdump(k.data)) == before
    k.restart()
    assert k.dump() == before


@case("kvdump of an empty kvd dir prints an empty object")
def empty():
    k = Kvd()
    assert ok(kvdump(k.data)) == b"{}\n"
    k.stop_ok()
    assert ok(kvdump(k.data)) == b"{}\n"


@case("kvdump creates no file and chowns nothing in a stopped dir")
def read_only():
    k = filled()
    k.stop_ok()
    root = os.geteuid() == 0
    if root:  # hand the files to another owner to see a chown or a re-creation
        for name in os.listdir(k.data):
            os.chown(os.path.join(k.data, name), 65534, 65534)
        os.chown(k.data, 65534, 65534)

    def snapshot():
        st = {}
        for name in sorted(os.listdir(k.data)):
            s = os.stat(os.path.join(k.data, name))
            st[name] = (s.st_ino, s.st_uid, s.st_gid, s.st_mode)
        d = os.stat(k.data)
        return st, (d.st_ino, d.st_uid, d.st_gid, d.st_mode)

    before = snapshot()
    assert "lock.mdb" in before[0], before
    for args in [(), ("--ndjson",), ("--prefix", "al"), ("--image",)]:
        ok(kvdump(*args, k.data))
        after = snapshot()
        assert after == before, "kvdump %r changed the dir:\n%r\n%r" % (args, before, after)


@case("kvdump prefix prints only the keys that start with it")
def prefix():
    k = filled()
    out = ok(kvdump("--prefix", "al", k.data))
    assert json.loads(out) == {"al": "", "alpha": "1", "alps": "mountains"}
    assert out == b'{"al":"","alpha":"1","alps":"mountains"}\n', out
    assert json.loads(ok(kvdump("--prefix", "user/", k.data))) == {"user/1": "ann",
                                                                   "user/2": "bob"}
    assert ok(kvdump("--prefix", "zzz", k.data)) == b"{}\n"
    assert ok(kvdump("--prefix", "", k.data)) == k.dump()
    assert json.loads(ok(kvdump("--prefix", "b\u00ea", k.data))) == {"b\u00eata": DATA["b\u00eata"]}


@case("kvdump ndjson prints one key, value and modification revision object per line in key order")
def ndjson():
    k = filled()
    out = ok(kvdump("--ndjson", k.data))
    lines = out.split(b"\n")
    assert lines[-1] == b"", out
    recs = [json.loads(line) for line in lines[:-1]]
    # filled() PUTs DATA's keys in order: the i-th gets revision i + 1.
    revs = {key: i + 1 for i, key in enumerate(DATA)}
    assert recs == [{"key": key, "value": DATA[key], "rev": revs[key]}
                    for key in sorted(DATA, key=lambda s: s.encode())], recs
    for line in lines[:-1]:
        assert line.startswith(b'{"key":"') and b'","value":"' in line and b'","rev":' in line \
            and line.endswith(b'}')
    assert b'{"key":"alpha","value":"1","rev":%d}\n' % revs["alpha"] in out
    out = ok(kvdump("--ndjson", "--prefix", "user/", k.data))
    assert out == b'{"key":"user/1","value":"ann","rev":%d}\n{"key":"user/2","value":"bob","rev":%d}\n' % (
        revs["user/1"], revs["user/2"]), out
    k2 = Kvd()
    assert ok(kvdump("--ndjson", k2.data)) == b""


@case("kvdump image prints image.json after a SIGTERM shutdown equal to GET /")
def image():
    k = filled()
    before = k.dump()
    k.stop_ok()
    out = ok(kvdump("--image", k.data))
    assert out == before, (out[:200], before[:200])
    with open(os.path.join(k.data, "image.json"), "rb") as f:
        assert f.read() == out


@case("kvdump image of a truncated image.json exits 1 naming the file")
def image_corrupt():
    k = filled()
    k.stop_ok()
    path = os.path.join(k.data, "image.json")
    size = os.path.getsize(path)
    for n in (size - 2, size // 2, 1):
        with open(path, "r+b") as f:
            f.truncate(n)
        one_line_error(kvdump("--image", k.data), "kvdump: %s/image.json: " % k.data)


def missing_dir():
    d = os.path.join(mkdtemp(), "nothing-here")
    one_line_error(kvdump(d), "kvdump: %s: " % d)
    assert not os.path.exists(d)


@case("kvdump of a missing, empty or non-kvd dir exits 1 naming the dir and creates nothing")
def not_kvd_dir():
    d = os.path.join(mkdtemp(), "other")
    os.mkdir(d)
    with open(os.path.join(d, "notes.txt"), "w") as f:
        f.write("unrelated\n")
    one_line_error(kvdump(d), "kvdump: %s: " % d)
    assert os.listdir(d) == ["notes.txt"]
    e = os.path.join(mkdtemp(), "empty")
    os.mkdir(e)
    one_line_error(kvdump(e), "kvdump: %s: " % e)
    assert os.listdir(e) == []

    missing_dir()