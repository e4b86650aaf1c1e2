"""Storage faults: I/O errors injected into LMDB's commit with strace, a full
disk (a small tmpfs), a tiny LMDB map, stale readers of killed kvdump
processes, a SIGKILL loop checked against the history of every write, a
power cut on XFS (tests/faults/powercut.sh), and corrupt, truncated or
foreign data directories.

Cases that need root, strace, setpriv, lmdb-utils, xfsprogs or a loop device
skip (ctest shows them as skipped, not passed) when they are not available,
and fail instead under CI=true: see harness.skip."""

import json
import os
import random
import re
import shutil
import signal
import subprocess
import threading
import time

import harness
from harness import (KVD_BIN, KVDUMP_BIN, Conn, Kvd, case, check_error_body, expect, kpath,
                     mkdtemp, skip)

# Every case here is a fault test: under CI=true a skip fails it.
CI_STRICT = True

FAULTS = os.path.join(harness.REPO, "tests", "faults")
ROOT = os.geteuid() == 0


def have(tool, package):
    """True if tool is on PATH, installing package with apt-get if root."""
    if shutil.which(tool):
        return True
    if ROOT and shutil.which("apt-get"):
        try:
            subprocess.run(["apt-get", "install", "-y", "-qq", package], timeout=120,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired):
            pass
    return shutil.which(tool) is not None


def wait_stderr(k, text, timeout=5.0):
    """Waits until kvd's stderr (read by a thread) shows text."""
    end = time.monotonic() + timeout
    while text not in k.stderr_text():
        assert time.monotonic() < end, "kvd never said %r:\n%s" % (text, k.stderr_text())
        time.sleep(0.05)


def status_ok(method, status):
    return status in ((204, 404) if method == "DELETE" else (200, 201, 204))


def expect_5xx(r, status, what):
    """An error answer with status (500 or 503): one-line body, connection
    kept open (the request's framing was fine)."""
    reasons = {500: "Internal Server Error", 503: "Service Unavailable", 507: "Insufficient Storage"}
    assert r.status == status, "%s: expected %d, got %s" % (what, status, r.summary())
    assert r.reason == reasons[status], "%s: reason %r" % (what, r.reason)
    assert r.get("Content-Type") == "text/plain; charset=utf-8", r.summary()
    check_error_body(r.body)
    assert r.get("Connection") is None, "%s: an error answer closed the connection: %s" % (
        what, r.summary())


# -- strace fault injection ------------------------------------------------------

class StracedKvd(Kvd):
    """kvd under strace -f with one -e inject=SPEC.  Signals go to kvd itself
    (not to strace); kvd dies with strace (setpriv --pdeathsig)."""

    TRACE = "openat,pwrite64,fdatasync"

    def __init__(self, inject, *extra, **kw):
        self.inject = inject
        self.pids = []
        self.trace = os.path.join(mkdtemp(), "strace.log")
        super().__init__(*extra, **kw)

    def argv(self):
        opts = os.environ.get("ASAN_OPTIONS")
        # LeakSanitizer cannot run under ptrace; these runs end by SIGKILL.
        asan = (opts + ":" if opts else "") + "detect_leaks=0"
        inject = ["-e", "inject=" + self.inject] if self.inject else []
        return (["strace", "-f", "-qq", "-o", self.trace, "-e", "trace=" + self.TRACE] + inject
                + ["setpriv", "--pdeathsig", "KILL", "env", "ASAN_OPTIONS=" + asan]
                + super().argv())

    def injected(self):
        """What the injected faults hit: a list of 'fdatasync', 'log
        pwrite', 'meta page pwrite' or 'data page pwrite'.  Descriptors
        are followed through the trace, since numbers are reused."""
        with open(self.trace, errors="replace") as f:
            text = f.read()
        kinds, hits = {}, []
        for line in text.splitlines():
            m = re.search(r'openat\([^,]+, "([^"]*)", ([^)]*)\) = (\d+)', line)
            if m:
                path, flags, fd = m.groups()
                if re.search(r"(^|/)([0-9a-f]{16}\.seg|spare\.tmp)$", path):
                    kinds[fd] = "log pwrite"
                elif path.endswith("/data.mdb"):
                    kinds[fd] = "meta page pwrite" if "O_DSYNC" in flags else "data page pwrite"
                else:
                    kinds[fd] = "other pwrite"
                continue
            m = re.search(r'(fdatasync|pwrite64)\((\d+)(, "(\\0)*)?.*INJECTED', line)
            if m:
                kind = ("fdatasync" if m.group(1) == "fdatasync"
                        else kinds.get(m.group(2), "other pwrite"))
                # A segment being zero-filled, not a record being logged.
                if kind == "log pwrite" and m.group(3) and m.group(3).startswith(', "\\0\\0'):
                    kind = "log zero-fill pwrite"
                hits.append(kind)
        return hits

    def start(self):
        super().start()
        sp = self.runs[-1].proc.pid
        with open("/proc/%d/task/%d/children" % (sp, sp)) as f:
            kids = [int(x) for x in f.read().split()]
        assert len(kids) == 1, "strace has children %r" % kids
        exe = os.path.realpath("/proc/%d/exe" % kids[0])
        assert exe == os.path.realpath(KVD_BIN), "strace's child is %s" % exe
        self.pids.append(kids[0])
        return self

    def _signal(self, sig, timeout):
        run = self.runs[-1]
        self._drop_conn()
        run.expected_exit = True
        if run.proc.poll() is None:
            try:
                os.kill(self.pids[-1], sig)
            except ProcessLookupError:
                pass
        try:
            rc = run.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            run.proc.kill()
            run.proc.wait(10)
            rc = None
        run.finish()
        return rc


def need_strace():
    """Skips the case unless strace can inject faults here."""
    if not have("strace", "strace"):
        skip("strace is not installed")
    if not shutil.which("setpriv"):
        skip("setpriv (util-linux) is not installed")
    r = subprocess.run(["strace", "-f", "-qq", "-o", "/dev/null", "-e",
                        "inject=fdatasync:error=EIO:when=1", "true"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=20)
    if r.returncode != 0:
        skip("strace cannot trace here: %r" % r.stderr[:300])


def write_until_failure(k, limit=80):
    """Sequential PUTs and DELETEs on one connection until one is not
    acknowledged.  Returns (model of acknowledged state, failed op, answer)."""
    model = {}
    with k.conn() as c:
        for i in range(limit):
            key = "k%d" % (i % 7)
            if i % 5 == 4:
                op = ("DELETE", key, None)
                r = c.request("DELETE", kpath(key))
            else:
                op = ("PUT", key, b"v%d-" % i + b"x" * (i % 3 * 3000))
                r = c.request("PUT", kpath(key), op[2])
            if not status_ok(op[0], r.status):
                return model, op, r
            if op[0] == "PUT":
                model[key] = op[2]
            else:
                model.pop(key, None)
    raise AssertionError("no write failed in %d writes: was the fault injected?" % limit)


def check_state(k, model, what):
    for key in ["k%d" % i for i in range(7)] + ["fresh"]:
        got = k.get(key)
        assert got == model.get(key), "%s: GET %s is %r, acknowledged state %r" % (
            what, key, None if got is None else got[:40], None if model.get(key) is None else model[key][:40])
    want = {key: v.decode() for key, v in model.items()}
    got = json.loads(k.dump())
    assert got == want, "%s: GET / is %r, expected %r" % (what, sorted(got), sorted(want))


def io_error_scenario(inject):
    """Runs the checks with one injected fault.  Returns (what the fault
    hit, see StracedKvd.injected, and the failure message or None)."""
    k = StracedKvd(inject)
    error = None
    try:
        io_error_checks(k, inject)
    except AssertionError as e:
        error = str(e)
    finally:
        if k.running():
            k.sigkill()
    hits = k.injected()
    print("%s hit: %s" % (inject, hits))
    if len(hits) != 1:
        error = (error or "") + "\nexpected one injected fault, strace reports %r" % hits
    return (hits[0] if hits else None), error


def io_error_checks(k, inject):
    model, op, r = write_until_failure(k)
    print("%s: %d writes acknowledged, then %s %s answered %d"
          % (inject, len(model), op[0], op[1], r.status))
    expect_5xx(r, 500, "the write whose commit failed")
    assert r.body == b"storage I/O error\n", r.body
    # Every later write is refused, even though a retry would now succeed
    # (the fault was injected once).
    for attempt in range(2):
        with k.conn() as c:
            for method, key, body in (("PUT", "fresh", b"new"), ("PUT", op[1], b"again"),
                                      ("POST", "fresh", b"post"), ("DELETE", "k0", b""),
                                      ("DELETE", "fresh", b"")):
                w = c.request(method, kpath(key), body)
                expect_5xx(w, 503, "%s %s after the failure" % (method, key))
        check_state(k, model, "reads after the failure")
        time.sleep(1.2)  # past an image rebuild and a sweep: still refused
    k.sigkill()
    # Restart without the fault: exactly the acknowledged state.
    plain = Kvd(data=k.data)
    check_state(plain, model, "after SIGKILL and a restart")
    plain.put("fresh", b"works")
    assert plain.get("fresh") == b"works"
    model["fresh"] = b"works"
    plain.stop_ok()
    plain.restart()
    check_state(plain, model, "after a second restart")


@case("EIO from fdatasync at commit answers 500 then 503 to every write while reads serve the acknowledged state")
def eio_fdatasync():
    need_strace()
    # strace counts calls per thread: the 3rd fdatasync of one of libuv's
    # pool threads, a few commits in.
    hit, error = io_error_scenario("fdatasync:error=EIO:when=3")
    assert error is None, error
    assert hit == "fdatasync", hit


@case("EIO from the log's pwrite at commit answers 500 then 503 and loses no acknowledged write")
def eio_pwrite():
    need_strace()
    # The first commit's thread zero-fills the first 1 MiB segment (256
    # pwrites of a page) and writes its header: its 260th pwrite is a
    # record.
    hit, error = io_error_scenario("pwrite64:error=EIO:when=260")
    assert error is None, error
    assert hit == "log pwrite", hit


@case("EIO during a checkpoint keeps the log: writes go on, GET / is served, and a restart loses nothing", timeout=120)
def eio_checkpoint():
    need_strace()
    # With --sync none the log never calls fdatasync, so on a directory
    # that already exists the first one is the checkpoint's LMDB commit.
    first = Kvd()
    first.stop_ok()
    k = StracedKvd("fdatasync:error=EIO:when=1", "--sync", "none", data=first.data)
    model = {}
    try:
        with k.conn() as c:
            for i in range(50):
                expect(c.request("PUT", kpath("c%02d" % i), b"v%d" % i), 201)
                model["c%02d" % i] = b"v%d" % i
            # GET / needs LMDB caught up: it asks for a checkpoint, which
            # fails, and is then built from memory.
            r = c.request("GET", "/")
            assert r.status == 200, r.summary()
            assert json.loads(r.body) == {key: v.decode() for key, v in model.items()}
            wait_stderr(k, "checkpoint failed (storage I/O error)")
            for i in range(50, 60):
                expect(c.request("PUT", kpath("c%02d" % i), b"v%d" % i), 201)
                model["c%02d" % i] = b"v%d" % i
            r = c.request("GET", "/")
            assert json.loads(r.body) == {key: v.decode() for key, v in model.items()}
        assert k.injected() == ["fdatasync"], k.injected()
        assert [n for n in os.listdir(os.path.join(k.data, "log")) if n.endswith(".seg")], \
            "the log was not kept"
        k.sigkill()
        plain = Kvd(data=k.data)
        for key, v in model.items():
            assert plain.get(key) == v, "after a restart: GET %s" % key
        plain.stop_ok()
    finally:
        if k.running():
            k.sigkill()


@case("EIO under concurrent writers fails the whole batch and every acknowledged write survives a restart", timeout=120)
def eio_concurrent():
    need_strace()
    k = StracedKvd("fdatasync:error=EIO:when=25")
    lock = threading.Lock()
    acked, failed, problems = {}, [], []

    def worker(tid):
        own = {}
        seen_failure = None
        try:
            with Conn(k.port, timeout=10) as c:
                for n in range(400):
                    key = "t%d-%d" % (tid, n % 6)
                    value = b"t%d-n%d" % (tid, n)
                    r = c.request("PUT", kpath(key), value)
                    if r.status in (201, 204):
                        if seen_failure:
                            problems.append("thread %d: PUT %s acknowledged after a %d"
                                            % (tid, key, seen_failure))
                        own[key] = value
                        continue
                    if r.status not in (500, 503):
                        problems.append("thread %d: unexpected %s" % (tid, r.summary()))
                        break
                    with lock:
                        failed.append((tid, key, value, r.status))
                    if seen_failure:
                        if r.status != 503:
                            problems.append("thread %d: %d after an earlier failure" % (tid, r.status))
                        if sum(1 for f in failed if f[0] == tid) >= 4:
                            break
                    seen_failure = r.status
        except Exception as e:
            problems.append("thread %d: %r" % (tid, e))
        with lock:
            acked.update(own)

    threads = [threading.Thread(target=worker, args=(t,), daemon=True) for t in range(6)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
            assert not t.is_alive(), "a writer hung"
        assert not problems, "\n".join(problems[:20])
        n500 = sum(1 for f in failed if f[3] == 500)
        print("%d keys acknowledged, %d writes failed with 500 (the failing batch), %d with 503"
              % (len(acked), n500, len(failed) - n500))
        assert n500 >= 1, "no write got 500: %r" % failed[:10]
        want = {key: v.decode() for key, v in acked.items()}
        assert json.loads(k.dump()) == want, "GET / differs from the acknowledged state"
    finally:
        k.sigkill()
    plain = Kvd(data=k.data)
    got = json.loads(plain.dump())
    assert got == want, "after a restart: %r vs %r" % (sorted(got.items())[:10], sorted(want.items())[:10])


# -- full disk -------------------------------------------------------------------

class Tmpfs:
    """A tmpfs of size bytes mounted on a fresh directory; None if mount
    fails (not root, no permission in this container)."""

    def __init__(self, size):
        self.dir = os.path.join(mkdtemp(), "fs")
        os.mkdir(self.dir)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%d" % size, "tmpfs", self.dir],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=20)
        self.ok = r.returncode == 0
        self.why = r.stdout.decode("utf-8", "replace").strip()

    def free(self):
        st = os.statvfs(self.dir)
        return st.f_bavail * st.f_frsize

    def umount(self):
        if not self.ok:
            return
        for _ in range(10):
            if subprocess.run(["umount", self.dir], stderr=subprocess.DEVNULL).returncode == 0:
                self.ok = False
                return
            time.sleep(0.3)
        subprocess.run(["umount", "-l", self.dir], stderr=subprocess.DEVNULL)
        self.ok = False


def fill_until_507(k, size, limit, prefix="f"):
    """PUTs size-byte values under new keys until one gets 507.  Returns the
    acknowledged {key: value}.  Any answer but 201 and 507 is an error."""
    model = {}
    with k.conn(timeout=20) as c:
        for i in range(limit):
            key = "%s%05d" % (prefix, i)
            value = (b"%s-%d-" % (prefix.encode(), i)) * (size // 8)
            r = c.request("PUT", kpath(key), value)
            if r.status == 201:
                model[key] = value
                continue
            expect_5xx(r, 507, "PUT %s on a full disk" % key)
            assert r.body == b"insufficient storage\n", r.body
            return model
    raise AssertionError("the disk never filled in %d writes" % limit)


def check_model(k, model, what):
    with k.conn(timeout=20) as c:
        for key, v in model.items():
            r = c.request("GET", kpath(key))
            assert r.status == 200 and r.body == v, "%s: GET %s: %s" % (what, key, r.summary())


@case("a full disk answers 507 to writes without crashing, GET / and reads go on from memory, and writes work again once space is freed", timeout=120)
def full_disk():
    if not ROOT:
        skip("needs root to mount a tmpfs")
    fs = Tmpfs(2 << 20)
    if not fs.ok:
        skip("cannot mount a tmpfs: " + fs.why)
    k = None
    try:
        filler = os.path.join(fs.dir, "filler")
        with open(filler, "wb") as f:
            f.write(b"\0" * (512 << 10))
        data = os.path.join(fs.dir, "data")
        k = Kvd("--log-segment", "64K", data=data)
        model = fill_until_507(k, 6000, 2000)
        print("507 after %d values; %d bytes free on the tmpfs" % (len(model), fs.free()))
        assert len(model) >= 20, "507 after only %d writes" % len(model)
        assert k.running(), "kvd died on a full disk"
        # Further writes, also small ones and deletes, give 507 or succeed;
        # never anything else, and kvd stays up.
        with k.conn() as c:
            for i in range(20):
                r = c.request("PUT", kpath("small%d" % i), b"s")
                if r.status == 201:
                    model["small%d" % i] = b"s"
                else:
                    expect_5xx(r, 507, "a small PUT on a full disk")
        check_model(k, model, "reads on a full disk")
        # The map is in memory: GET / is served from it even though the
        # image file cannot be written.
        r = k.request("GET", "/")
        assert r.status == 200, "GET / on a full disk: %s" % r.summary()
        assert json.loads(r.body) == {key: v.decode() for key, v in model.items()}, \
            "GET / on a full disk is not the acknowledged state"
        wait_stderr(k, "serving GET / from memory")
        # Free space: writes work again (LMDB never shrinks its file).
        os.remove(filler)
        more = {}
        with k.conn() as c:
            for i in range(10):
                r = c.request("PUT", kpath("again%d" % i), b"after freeing space")
                assert r.status == 201, "PUT after freeing space: %s" % r.summary()
                more["again%d" % i] = b"after freeing space"
        model.update(more)
        r = k.request("GET", "/")
        assert r.status == 200, "GET / after freeing space: %s" % r.summary()
        assert json.loads(r.body) == {key: v.decode() for key, v in model.items()}
        k.sigkill()
        k.restart()
        check_model(k, model, "after SIGKILL and a restart")
        k.stop_ok()
    finally:
        if k is not None and k.running():
            k.sigkill()
        fs.umount()


@case("with map-size 64K writing 4 MiB keeps working as the map grows", timeout=120)
def map_grows():
    k = Kvd("--map-size", "64K")
    model = {}
    with k.conn(timeout=20) as c:
        for i in range(200):
            key = "m%03d" % i
            value = b"%04d" % i * 5000   # 20 KB
            r = c.request("PUT", kpath(key), value)
            assert r.status == 201, "PUT %d (%d KiB stored): %s" % (i, i * 20, r.summary())
            model[key] = value
        for i in range(0, 200, 3):
            key = "m%03d" % i
            value = b"over%d" % i * 3000
            expect(c.request("PUT", kpath(key), value), 204)
            model[key] = value
    check_model(k, model, "after growing")
    k.sigkill()
    k.restart()
    check_model(k, model, "after SIGKILL and a restart")
    assert json.loads(k.dump()) == {key: v.decode() for key, v in model.items()}
    k.stop_ok()
    k.restart()
    k.put("later", b"x")


@case("with map-size 64K on a 4 MiB tmpfs only a really full disk gives 507", timeout=120)
def map_small_disk_full():
    if not ROOT:
        skip("needs root to mount a tmpfs")
    fs = Tmpfs(4 << 20)
    if not fs.ok:
        skip("cannot mount a tmpfs: " + fs.why)
    k = None
    try:
        k = Kvd("--map-size", "64K", "--log-segment", "64K", data=os.path.join(fs.dir, "data"))
        model = fill_until_507(k, 8000, 2000)
        stored = sum(len(v) for v in model.values())
        free = fs.free()
        print("507 after %d values (%d KiB); %d KiB free on the 4 MiB tmpfs"
              % (len(model), stored >> 10, free >> 10))
        assert stored >= 1 << 20, "507 after only %d KiB stored: the map did not grow" % (stored >> 10)
        assert free < 1 << 20, "507 with %d KiB still free on the disk" % (free >> 10)
        check_model(k, model, "reads after 507")
        k.sigkill()
        k.restart()
        check_model(k, model, "after SIGKILL and a restart")
        k.stop_ok()
    finally:
        if k is not None and k.running():
            k.sigkill()
        fs.umount()


# -- stale readers --------------------------------------------------------------

def big_store(k, n=3000, size=500):
    """n keys of size bytes, PUT pipelined on one connection."""
    with k.conn(timeout=60) as c:
        for start in range(0, n, 500):
            reqs = b"".join(harness.build_request("PUT", "/big%05d" % i, b"%05d" % i * (size // 5))
                            for i in range(start, min(n, start + 500)))
            c.send(reqs)
            for i in range(start, min(n, start + 500)):
                r = c.read_response(timeout=60)
                assert r.status in (201, 204), r.summary()


def reader_pids(data):
    r = subprocess.run(["mdb_stat", "-r", data], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=20)
    text = r.stdout.decode("utf-8", "replace")
    # mdb_stat -r exits 1 after printing "(no active readers)".
    assert r.returncode in (0, 1) and text.startswith("Reader Table Status"), \
        "mdb_stat -r %s: %s" % (data, text)
    return [int(m) for m in re.findall(r"^\s+(\d+)\s+[0-9a-f]+\s+\d+\s*$", text, re.M)], text


def alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def kill_kvdump_mid_dump(data):
    """Starts kvdump with a stdout pipe nobody reads, so it blocks inside its
    read transaction; SIGKILLs it once it shows in the reader table."""
    p = subprocess.Popen([KVDUMP_BIN, data], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                         preexec_fn=harness._child_setup)
    try:
        for _ in range(100):
            pids, _ = reader_pids(data)
            if p.pid in pids:
                break
            if p.poll() is not None:
                raise AssertionError("kvdump exited %r before blocking" % p.returncode)
            time.sleep(0.05)
        else:
            raise AssertionError("kvdump never showed in the reader table")
    finally:
        p.kill()
        p.wait(10)
        p.stdout.close()
    return p.pid


def overwrite(k, n, rnd, size=500):
    with k.conn(timeout=60) as c:
        reqs = b"".join(harness.build_request("PUT", "/big%05d" % i, b"r%04d" % rnd * (size // 5))
                        for i in range(n))
        c.send(reqs)
        for i in range(n):
            r = c.read_response(timeout=60)
            assert r.status == 204, r.summary()


@case("kvdump processes SIGKILLed mid-dump leave no stale reader once kvd restarts and writes keep succeeding", timeout=180)
def stale_readers_restart():
    if not have("mdb_stat", "lmdb-utils"):
        skip("mdb_stat (lmdb-utils) is not installed")
    k = Kvd()
    big_store(k)
    killed = []
    for rnd in range(5):
        killed.append(kill_kvdump_mid_dump(k.data))
        overwrite(k, 200, rnd)
    pids, text = reader_pids(k.data)
    stale = [p for p in pids if not alive(p)]
    print("while kvd runs, the reader table holds %d stale readers (killed %r)" % (len(stale), killed))
    k.sigkill()
    k.restart()
    pids, text = reader_pids(k.data)
    stale = [p for p in pids if not alive(p)]
    assert not stale, "stale readers after a restart:\n" + text
    overwrite(k, 3000, 9)
    k.put("after", b"restart")
    res = harness.kvdump(k.data, timeout=60)
    assert res.rc == 0, res
    assert json.loads(res.out)["big00000"] == "r0009" * 100
    k.stop_ok()
    k.restart()
    pids, text = reader_pids(k.data)
    assert not [p for p in pids if not alive(p)], text


@case("stale readers of killed kvdump processes do not make data.mdb grow while kvd keeps running", timeout=180)
def stale_readers_growth():
    if not have("mdb_stat", "lmdb-utils"):
        skip("mdb_stat (lmdb-utils) is not installed")
    k = Kvd()
    big_store(k)

    def pages_used():
        r = subprocess.run(["mdb_stat", "-e", k.data], stdout=subprocess.PIPE, timeout=20)
        return int(re.search(rb"Number of pages used: (\d+)", r.stdout).group(1))

    def round_with_checkpoint(rnd):
        overwrite(k, 3000, rnd)
        # GET / needs LMDB caught up with the map: one checkpoint, one LMDB
        # commit of the whole round.
        assert k.request("GET", "/").status == 200

    # Control: once LMDB holds the tree and a copy of it, overwriting
    # everything without readers reuses pages.
    for rnd in range(4):
        round_with_checkpoint(rnd)
    base = pages_used()
    for rnd in range(4, 6):
        round_with_checkpoint(rnd)
    control = pages_used() - base
    # The same after kvdump was killed inside its read transaction, and
    # also after a kvdump killed by SIGPIPE (kvdump DIR | head).
    kill_kvdump_mid_dump(k.data)
    sh = subprocess.run("%s %s | head -c 100 >/dev/null" % (KVDUMP_BIN, k.data), shell=True,
                        timeout=60)
    assert sh.returncode == 0
    base = pages_used()
    for rnd in range(6, 8):
        round_with_checkpoint(rnd)
    growth = pages_used() - base
    pids, text = reader_pids(k.data)
    stale = [p for p in pids if not alive(p)]
    print("LMDB pages added over 2 full overwrites, each one checkpoint: %d without readers, "
          "%d after 2 kvdump kills, %d stale readers left" % (control, growth, len(stale)))
    assert not stale, "stale reader slots are not cleared while kvd runs:\n" + text
    # A pinned snapshot keeps every page of the old tree (about 2 MB here)
    # from being reused, so each checkpoint would add a whole tree.
    assert growth <= control + 64, (
        "LMDB grew by %d pages over 2 overwrites with stale readers %r (vs %d without): "
        "stale reader slots are not cleared while kvd runs" % (growth, stale, control))


# -- SIGKILL loop with a history checker --------------------------------------------

class Op:
    __slots__ = ("key", "kind", "value", "sent", "acked")

    def __init__(self, key, kind, value, sent, acked=None):
        self.key, self.kind, self.value, self.sent, self.acked = key, kind, value, sent, acked


def check_round(base, ops, kill_time, state, round_start):
    """base: the state at the round's start; ops: every op sent in the round;
    state: the state after the restart.  An op in flight at the kill took
    effect before the kill or never.  A key may hold the effect of op X only
    if no acknowledged op on it was sent after X was acknowledged (or after
    the kill, for an op in flight).  Returns (problems, lost) where lost
    counts keys whose acknowledged state is gone."""
    by_key = {}
    for o in ops:
        by_key.setdefault(o.key, []).append(o)
    problems, lost = [], 0
    for key in set(by_key) | set(base) | set(state):
        cands = [Op(key, "PUT" if key in base else "DELETE", base.get(key), round_start, round_start)]
        cands += by_key.get(key, [])
        acked = [o for o in cands if o.acked is not None]
        got = state.get(key)
        if got is None:
            matching = [o for o in cands if o.kind == "DELETE"]
        else:
            matching = [o for o in cands if o.kind == "PUT" and o.value == got]
        ok = False
        for o in matching:
            eff = o.acked if o.acked is not None else kill_time
            if not any(x is not o and x.sent > eff for x in acked):
                ok = True
                break
        if ok:
            continue
        last = max(acked, key=lambda o: o.acked)
        if not matching:
            problems.append("key %r holds %r which was never written" % (key, got))
        else:
            problems.append("key %r holds %r, ruled out by the acknowledged %s %r (sent %.3f s, "
                            "acknowledged %.3f s into the round)"
                            % (key, got, last.kind, last.value, last.sent - round_start,
                               last.acked - round_start))
        lost += 1
    return problems, lost


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
                v = "r%d-t%d-n%d%s" % (rnd, tid, n, "." * rng.choice((0, 0, 10, 2000)))
                o = Op(key, "PUT", v.encode(), 0.0)
                data = "PUT %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (
                    kpath(key), len(v), v)
            o.sent = time.monotonic()
            with lock:
                ops.append(o)
            c.send(data.encode())
            r = c.read_response()
            if not status_ok(o.kind, r.status):
                raise AssertionError("%s %s answered %s" % (o.kind, key, r.summary()))
            o.acked = time.monotonic()
    except BaseException as e:
        if not stop.is_set():
            errors.append("writer %d: %r" % (tid, e))
    finally:
        if c is not None:
            c.close()


@case("100 rounds of SIGKILL under PUT and DELETE load never lose an acknowledged write", timeout=400)
def sigkill_loop():
    rounds_wanted = 100
    k = Kvd()
    keys = ["key-%d" % i for i in range(10)] + ["sl/%d" % i for i in range(2)]
    state = {}
    t_start = time.monotonic()
    totals = {"acked": 0, "inflight": 0, "landed": 0, "ops": 0, "lost": 0}
    rng = random.Random(4242)
    for rnd in range(rounds_wanted):
        if time.monotonic() - t_start > 330:
            raise AssertionError("only %d rounds in 330 s" % rnd)
        nthreads = rng.randint(4, 8)
        ops, lock, stop, errors = [], threading.Lock(), threading.Event(), []
        round_start = time.monotonic()
        threads = [threading.Thread(target=loop_writer,
                                    args=(k.port, t, rnd, keys, ops, lock, stop, errors),
                                    daemon=True) for t in range(nthreads)]
        for t in threads:
            t.start()
        time.sleep(rng.uniform(0.2, 0.5))
        stop.set()
        k.sigkill()
        kill_time = time.monotonic()  # every acknowledgment came before this
        for t in threads:
            t.join(10)
            assert not t.is_alive(), "a writer hung"
        assert not errors, "round %d: writers failed before the kill:\n%s" % (rnd, "\n".join(errors))
        # kvdump reads the killed directory exactly as the restarted kvd does.
        res = harness.kvdump(k.data)
        assert res.rc == 0, res
        k.restart()
        body = k.dump()
        assert res.out == body, "round %d: kvdump %r differs from GET / %r" % (rnd, res.out[:200], body[:200])
        new = {key: v.encode() for key, v in json.loads(body).items()}
        problems, lost = check_round(state, ops, kill_time, new, round_start)
        acked = sum(1 for o in ops if o.acked is not None)
        inflight = [o for o in ops if o.acked is None]
        totals["acked"] += acked
        totals["ops"] += len(ops)
        totals["inflight"] += len(inflight)
        totals["landed"] += sum(1 for o in inflight if o.kind == "PUT" and new.get(o.key) == o.value)
        totals["lost"] += lost
        assert not problems, "round %d (%d threads, %d ops, %d acknowledged):\n%s" % (
            rnd, nthreads, len(ops), acked, "\n".join(problems[:20]))
        assert acked > 0, "round %d: nothing was acknowledged" % rnd
        state = new
    print("rounds %d, SIGKILLs injected %d, ops sent %d, acknowledged %d, in flight at a kill %d "
          "(of which PUTs that landed %d), acknowledged writes lost %d, %.0f s"
          % (rounds_wanted, rounds_wanted, totals["ops"], totals["acked"], totals["inflight"],
             totals["landed"], totals["lost"], time.monotonic() - t_start))


# -- power cut on XFS ---------------------------------------------------------------

def powercut(sync, secs):
    script = os.path.join(FAULTS, "powercut.sh")
    p = subprocess.run(["bash", script, KVD_BIN, sync, str(secs)], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=150, preexec_fn=harness._child_setup)
    out = p.stdout.decode("utf-8", "replace")
    print(out)
    return p.returncode, out


@case("a power cut on XFS under write load with sync always loses no acknowledged write", timeout=200)
def powercut_always():
    if not have("mkfs.xfs", "xfsprogs"):
        skip("xfsprogs is not installed")
    for secs in (1, 3):
        rc, out = powercut("always", secs)
        if rc == 77:
            skip(out.strip().splitlines()[-1])
        assert rc == 0, "power cut after %ds of load (exit %d):\n%s" % (secs, rc, out)
        assert "LOST 0" in out, out


@case("the power-cut check detects loss with sync none so it can fail", timeout=200)
def powercut_control():
    if not have("mkfs.xfs", "xfsprogs"):
        skip("xfsprogs is not installed")
    rc, out = powercut("none", 2)
    if rc == 77:
        skip(out.strip().splitlines()[-1])
    assert rc == 1, ("with --sync none the power cut lost no acknowledged write (exit %d): "
                     "the power-cut test proves nothing\n%s" % (rc, out))
    m = re.search(r"LOST (\d+|unknown)", out)
    assert m, out


# -- corrupt, truncated and foreign data -----------------------------------------------

def start_or_refuse(data, what, allow_start=False):
    """kvd on data either exits 1 with exactly one 'kvd: ' line, or (when
    allow_start) starts and serves GET /.  Never a signal, never a
    sanitizer report."""
    argv = [KVD_BIN, "--listen", "127.0.0.1:0", "--data", data]
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, env=harness._child_env(),
                         preexec_fn=harness._child_setup)
    try:
        err = b""
        deadline = time.monotonic() + 10
        port = None
        os.set_blocking(p.stderr.fileno(), False)
        while time.monotonic() < deadline:
            try:
                chunk = p.stderr.read()
            except (BlockingIOError, TypeError):
                chunk = None
            if chunk:
                err += chunk
            m = harness.LISTEN_RE.search(err)
            if m:
                port = int(m.group(1))
                break
            if p.poll() is not None:
                time.sleep(0.1)
                try:
                    err += p.stderr.read() or b""
                except (BlockingIOError, TypeError):
                    pass
                break
            time.sleep(0.05)
        text = err.decode("utf-8", "replace")
        assert harness._scan_sanitizer(text) is None, "%s: sanitizer report:\n%s" % (what, text)
        if port is not None:
            assert allow_start, "%s: kvd started on it:\n%s" % (what, text)
            with Conn(port) as c:
                r = c.request("GET", "/")
                assert r.status == 200, "%s: GET /: %s" % (what, r.summary())
                json.loads(r.body)
            p.send_signal(signal.SIGTERM)
            rc = p.wait(10)
            assert rc == 0, "%s: exit %r after SIGTERM" % (what, rc)
            return "started"
        if p.poll() is None:
            raise AssertionError("%s: kvd neither listened nor exited in 10 s:\n%s" % (what, text))
        rc = p.returncode
        assert rc == 1, "%s: expected exit 1, got %r (negative: a signal):\n%s" % (what, rc, text)
        assert text.startswith("kvd: ") and text.endswith("\n") and text.count("\n") == 1, \
            "%s: stderr is not one kvd line: %r" % (what, text)
        return text.strip()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(10)
        p.stderr.close()


@case("a corrupt, truncated, empty or stale image.json is rebuilt from LMDB at startup")
def image_rebuilt():
    k = Kvd()
    data = {"a": b"1", "b": b"two", "c\n": b"\x00ctl", "u\u00e9": "\u20ac".encode()}
    for key, v in data.items():
        k.put(key, v)
    want = k.dump()
    k.stop_ok()
    path = os.path.join(k.data, "image.json")
    with open(path, "rb") as f:
        assert f.read() == want
    variants = [
        ("truncated to half", want[:len(want) // 2]),
        ("truncated to 1 byte", want[:1]),
        ("empty", b""),
        ("random bytes", bytes(random.Random(7).randrange(256) for _ in range(5000))),
        ("valid JSON of other data", b'{"stale":"image"}\n'),
        ("the right JSON plus garbage", want + b"\x00garbage"),
    ]
    for what, content in variants:
        with open(path, "wb") as f:
            f.write(content)
        with open(os.path.join(k.data, ".image.json.tmp"), "wb") as f:
            f.write(b"{\"half\":")
        k.restart()
        assert k.dump() == want, "image.json %s: GET / is %r" % (what, k.dump()[:200])
        assert k.get("a") == b"1"
        k.stop_ok()
        with open(path, "rb") as f:
            assert f.read() == want, "image.json %s was not rewritten at shutdown" % what


@case("an image.json path taken by a directory gives one kvd line or a working GET /")
def image_is_dir():
    k = Kvd()
    k.put("a", b"1")
    k.stop_ok()
    path = os.path.join(k.data, "image.json")
    os.remove(path)
    os.mkdir(path)
    res = start_or_refuse(k.data, "image.json is a directory", allow_start=True)
    print("image.json as a directory:", res)
    os.rmdir(path)
    k.restart()
    assert k.dump() == b'{"a":"1"}\n'


def mdb_load_env(dirpath, records, subdb=None):
    """An LMDB environment made by mdb_load (not by kvd) with records."""
    os.makedirs(dirpath, exist_ok=True)
    lines = ["VERSION=3", "format=bytevalue", "type=btree", "mapsize=1048576",
             "maxreaders=126", "db_pagesize=4096", "HEADER=END"]
    for key, v in records:
        lines.append(" " + key.hex())
        lines.append(" " + v.hex())
    lines.append("DATA=END")
    argv = ["mdb_load", "-f", "/dev/stdin"] + (["-s", subdb] if subdb else []) + [dirpath]
    r = subprocess.run(argv, input=("\n".join(lines) + "\n").encode(), stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=20)
    assert r.returncode == 0, r.stdout


@case("foreign LMDB environments and directories of random files give one kvd line and exit 1, never a crash")
def foreign_dirs():
    results = []
    lmdb_utils = have("mdb_load", "lmdb-utils")
    if lmdb_utils:
        d = os.path.join(mkdtemp(), "plain")
        mdb_load_env(d, [(b"key", b"value"), (b"other", b"x")])
        results.append(("an LMDB env with only a main database", start_or_refuse(d, "plain env")))
        d = os.path.join(mkdtemp(), "wrongmeta")
        mdb_load_env(d, [(b"format", b"kvd-9")], subdb="meta")
        mdb_load_env(d, [(b"k", b"v")], subdb="data")
        results.append(("an LMDB env with format kvd-9", start_or_refuse(d, "format kvd-9")))
        d = os.path.join(mkdtemp(), "othersub")
        mdb_load_env(d, [(b"a", b"b")], subdb="users")
        results.append(("an LMDB env with a database named users",
                        start_or_refuse(d, "env with other named db")))
    rng = random.Random(99)
    d = os.path.join(mkdtemp(), "random")
    os.mkdir(d)
    with open(os.path.join(d, "data.mdb"), "wb") as f:
        f.write(bytes(rng.randrange(256) for _ in range(65536)))
    results.append(("random data.mdb", start_or_refuse(d, "random data.mdb")))
    with open(os.path.join(d, "lock.mdb"), "wb") as f:
        f.write(bytes(rng.randrange(256) for _ in range(8192)))
    results.append(("random data.mdb and lock.mdb", start_or_refuse(d, "random data.mdb and lock.mdb")))
    d = os.path.join(mkdtemp(), "files")
    os.mkdir(d)
    for name in ("a.bin", "image.json"):
        with open(os.path.join(d, name), "wb") as f:
            f.write(bytes(rng.randrange(256) for _ in range(3000)))
    results.append(("random files", start_or_refuse(d, "random files")))
    d = os.path.join(mkdtemp(), "zero")
    os.mkdir(d)
    with open(os.path.join(d, "data.mdb"), "wb") as f:
        f.write(b"\0" * 65536)
    results.append(("zero-filled data.mdb", start_or_refuse(d, "zero-filled data.mdb")))
    for what, res in results:
        print("%s: %s" % (what, res))
    if not lmdb_utils:
        skip("mdb_load (lmdb-utils) is not installed: the random directories passed, "
             "foreign LMDB environments were not checked")


@case("a kvd data.mdb truncated or damaged after a clean stop gives one kvd line or starts, never a crash")
def truncated_lmdb():
    k = Kvd()
    big_store(k, n=1500, size=500)
    k.stop_ok()
    src = os.path.join(k.data, "data.mdb")
    with open(src, "rb") as f:
        orig = f.read()
    results = []
    rng = random.Random(5)
    variants = [("truncated to 12 KiB", orig[:12288]),
                ("truncated to half", orig[:len(orig) // 2 // 4096 * 4096]),
                ("truncated mid-page", orig[:len(orig) // 3]),
                ("the meta pages zeroed", b"\0" * 8192 + orig[8192:])]
    junk = bytearray(orig)
    for _ in range(40):
        i = rng.randrange(8192, len(junk) - 4096)
        junk[i:i + 16] = bytes(rng.randrange(256) for _ in range(16))
    variants.append(("40 random 16-byte smudges in data pages", bytes(junk)))
    failures = []
    for what, content in variants:
        d = os.path.join(mkdtemp(), "copy")
        os.mkdir(d)
        with open(os.path.join(d, "data.mdb"), "wb") as f:
            f.write(content)
        try:
            results.append((what, start_or_refuse(d, what, allow_start=True)))
        except AssertionError as e:
            failures.append(str(e)[:1500])
    for what, res in results:
        print("%s: %s" % (what, res))
    assert not failures, "%d of %d damaged copies:\n%s" % (len(failures), len(variants),
                                                          "\n".join(failures))


# -- failed flushes ----------------------------------------------------------------

@case("ENOSPC from fdatasync at commit is a failed flush: 500 then 503 to every write, never 507")
def enospc_fdatasync():
    need_strace()
    # NFS and thin-provisioned volumes report a full disk at fsync, after
    # the pages were accepted: whether they reached the disk is unknown.
    hit, error = io_error_scenario("fdatasync:error=ENOSPC:when=3")
    assert error is None, error
    assert hit == "fdatasync", hit


@case("EIO at commit while the disk is full is a failed flush: 500 then 503, not 507", timeout=120)
def eio_on_full_disk():
    need_strace()
    if not ROOT:
        skip("needs root to mount a tmpfs")
    fs = Tmpfs(4 << 20)
    if not fs.ok:
        skip("cannot mount a tmpfs: " + fs.why)
    k = None
    try:
        data = os.path.join(fs.dir, "data")
        # The 4th fdatasync of a pool thread: after the format commit and
        # the PUTs below, on the overwrites once the disk is full.
        k = StracedKvd("fdatasync:error=EIO:when=6", data=data)
        model = {}
        with k.conn() as c:
            for i in range(3):
                r = c.request("PUT", kpath("k%d" % i), b"v%d" % i * 100)
                expect(r, 201)
                model["k%d" % i] = b"v%d" % i * 100
        # Fill the file system to its last block.
        fd = os.open(os.path.join(fs.dir, "filler"), os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            for size in (65536, 4096, 1):
                while True:
                    try:
                        os.write(fd, b"\0" * size)
                    except OSError:
                        break
        finally:
            os.close(fd)
        assert fs.free() == 0, "the tmpfs still has %d bytes free" % fs.free()
        # Overwrites reuse LMDB's pages and kvd's reserved blocks, so the
        # pages are written; then the flush fails.
        with k.conn() as c:
            for i in range(40):
                key = "k%d" % (i % 3)
                r = c.request("PUT", kpath(key), b"w%d" % i * 100)
                if r.status == 204:
                    model[key] = b"w%d" % i * 100
                    continue
                expect_5xx(r, 500, "the write whose flush failed on a full disk")
                assert r.body == b"storage I/O error\n", r.body
                break
            else:
                raise AssertionError("no write failed: was the fault injected?")
            expect_5xx(c.request("PUT", kpath("k0"), b"again"), 503, "a write after the failure")
        for key, v in model.items():
            assert k.get(key) == v, "GET %s after the failure" % key
        assert k.injected() == ["fdatasync"], k.injected()
    finally:
        if k is not None and k.running():
            k.sigkill()
        fs.umount()


# -- the reader table ----------------------------------------------------------------

def blocked_kvdump(data, *args):
    """A kvdump whose stdout is a pipe nobody reads: it blocks inside its
    read transaction once the pipe is full.  Returns the process once it
    holds a reader slot."""
    p = subprocess.Popen([KVDUMP_BIN] + list(args) + [data], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, preexec_fn=harness._child_setup)
    for _ in range(100):
        pids, _ = reader_pids(data)
        if p.pid in pids:
            return p
        if p.poll() is not None:
            raise AssertionError("kvdump exited %r before blocking: %r"
                                 % (p.returncode, p.stderr.read()))
        time.sleep(0.05)
    p.kill()
    raise AssertionError("kvdump never showed in the reader table")


@case("with LMDB's reader table full GET / answers 200 from memory, the connection goes on and SIGTERM exits 0", timeout=120)
def readers_full():
    if not have("mdb_stat", "lmdb-utils"):
        skip("mdb_stat (lmdb-utils) is not installed")
    k = Kvd("--max-readers", "4")
    big_store(k, n=400, size=500)  # 200 KB: more than a pipe holds
    dumps = []
    try:
        for _ in range(4):
            dumps.append(blocked_kvdump(k.data))
        # One more finds no slot and says so in one line.
        r = harness.kvdump(k.data)
        assert r.rc == 1, r
        assert r.err.decode() == "kvdump: %s: cannot initialise: MDB_READERS_FULL: Environment " \
                        "maxreaders limit reached\n" % k.data, r.err
        with k.conn() as c:
            expect(c.request("PUT", "/fresh", b"after the table filled"), 201)
            r = c.request("GET", "/")
            assert r.status == 200, r.summary()
            got = json.loads(r.body)
            assert len(got) == 401 and got["fresh"] == "after the table filled", len(got)
            assert list(got) == sorted(got, key=lambda key: key.encode()), "not in key order"
            expect(c.request("GET", "/_health"), 200, b"ok\n")
        wait_stderr(k, "building it from memory")
        t0 = time.monotonic()
        rc = k.sigterm()
        assert rc == 0 and time.monotonic() - t0 < 5, "SIGTERM: exit %r after %.1f s" % (
            rc, time.monotonic() - t0)
    finally:
        for p in dumps:
            p.kill()
            p.wait(10)
            p.stdout.close()
            p.stderr.close()


@case("kvdump stopped by SIGTERM, SIGINT, SIGHUP or a closed pipe while blocked ends its read transaction and frees its reader slot", timeout=120)
def kvdump_signals():
    if not have("mdb_stat", "lmdb-utils"):
        skip("mdb_stat (lmdb-utils) is not installed")
    k = Kvd()
    big_store(k, n=400, size=500)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGPIPE):
        p = blocked_kvdump(k.data)
        if sig == signal.SIGPIPE:
            p.stdout.close()  # the next write gets EPIPE and SIGPIPE
            os.kill(p.pid, signal.SIGCONT)
        else:
            os.kill(p.pid, sig)
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            raise AssertionError("kvdump ignored %s" % sig.name)
        err = p.stderr.read().decode()
        p.stderr.close()
        if sig != signal.SIGPIPE:
            p.stdout.close()
        assert p.returncode == -sig, "%s: exit %r" % (sig.name, p.returncode)
        want = "" if sig == signal.SIGPIPE else "kvdump: interrupted by %s\n" % signal.strsignal(sig)
        assert err == want, "%s: stderr %r" % (sig.name, err)
        pids, text = reader_pids(k.data)
        assert p.pid not in pids, "%s left its reader slot:\n%s" % (sig.name, text)
    k.stop_ok()


# -- directory entries ---------------------------------------------------------------

class DirTracedKvd(StracedKvd):
    TRACE = "mkdir,openat,rename,fsync"


def synced_after(text, start, path):
    """True if, after offset start of an strace log, path is opened as a
    directory and that descriptor is fsynced."""
    for m in re.finditer(r'openat\(AT_FDCWD, "%s", [^)]*O_DIRECTORY[^)]*\) = (\d+)' % re.escape(path),
                         text[start:]):
        if re.search(r"\bfsync\(%s\)\s*= 0" % m.group(1), text[start + m.end():]):
            return True
    return False


@case("kvd fsyncs the directories whose entries it creates: a new data directory, data.mdb and image.json")
def directory_fsync():
    need_strace()
    root = mkdtemp()
    data = os.path.join(root, "new")
    k = DirTracedKvd(None, data=data)
    k.put("a", b"1")
    expect(k.request("GET", "/"), 200, b'{"a":"1"}\n', ctype="application/json")
    k.sigkill()
    with open(k.trace, errors="replace") as f:
        text = f.read()
    made = text.find('mkdir("%s", 0700) = 0' % data)
    assert made >= 0, "kvd did not create %s:\n%s" % (data, text[:3000])
    assert synced_after(text, made, root), "the parent of the new data directory was not fsynced"
    created = re.search(r'openat\(AT_FDCWD, "%s/data\.mdb", [^)]*O_CREAT' % re.escape(data), text)
    assert created, "data.mdb was not created"
    # The directory descriptor kvd holds (for its flock) is opened before
    # data.mdb exists, and synced after.
    dirfds = re.findall(r'openat\(AT_FDCWD, "%s", [^)]*O_DIRECTORY[^)]*\) = (\d+)' % re.escape(data),
                        text[:created.start()])
    assert any(re.search(r"\bfsync\(%s\)\s*= 0" % fd, text[created.end():]) for fd in dirfds), \
        "the data directory was not fsynced after data.mdb was created"
    renamed = text.find('rename("%s/.image.json.tmp", "%s/image.json") = 0' % (data, data))
    assert renamed >= 0, "image.json was never renamed into place"
    assert synced_after(text, renamed, data), "the data directory was not fsynced after the image rename"
