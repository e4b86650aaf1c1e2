"""Integration-test harness for kvd.

Starts the real kvd binary (KVD_BIN) on an ephemeral loopback port with a
fresh temporary data directory, and talks to it over raw sockets with a
strict HTTP/1.1 response reader, so tests can check the exact bytes of the
contract.  Every wait is bounded in time and every loop in count.  Only
127.0.0.1 is ever contacted.

Cases are plain functions registered with @case("sentence"); run.py runs one
of them and then calls teardown(), which stops every kvd this process
started (SIGTERM, bounded, then SIGKILL), fails the case if a server did not
exit 0, died on its own, or printed a sanitizer report, and removes the
temporary directories.
"""

import calendar
import ctypes
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

KVD_BIN = os.environ.get("KVD_BIN") or os.path.join(REPO, "build", "kvd")
KVDUMP_BIN = os.environ.get("KVDUMP_BIN") or os.path.join(REPO, "build", "kvdump")

HOST = "127.0.0.1"
START_TIMEOUT = float(os.environ.get("KVD_START_TIMEOUT", "10"))
IO_TIMEOUT = float(os.environ.get("KVD_IO_TIMEOUT", "5"))
STOP_TIMEOUT = 10.0

TEXT = "text/plain; charset=utf-8"
JSON = "application/json"
ALLOW_ROOT = "GET, HEAD"
ALLOW_KEY = "GET, HEAD, PUT, POST, DELETE"

REASONS = {
    100: "Continue",
    200: "OK",
    201: "Created",
    204: "No Content",
    304: "Not Modified",
    400: "Bad Request",
    404: "Not Found",
    412: "Precondition Failed",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Content Too Large",
    414: "URI Too Long",
    417: "Expectation Failed",
    431: "Request Header Fields Too Large",
    501: "Not Implemented",
    505: "HTTP Version Not Supported",
    507: "Insufficient Storage",
}

SANITIZER_PATTERNS = (
    "ERROR: AddressSanitizer",
    "ERROR: LeakSanitizer",
    "runtime error:",
    "WARNING: ThreadSanitizer",
    "ERROR: UndefinedBehaviorSanitizer",
)

LISTEN_RE = re.compile(rb"listening on http://127\.0\.0\.1:(\d+)")


class CaseTimeout(Exception):
    pass


# --------------------------------------------------------------------------
# Skipping
#
# A case that cannot run here (no root, a tool missing) calls skip(reason).
# That raises Skip, and run.py, after the usual teardown, prints "skipped:
# reason" and exits SKIP_EXIT (77), which ctest reports as "Skipped"
# (tests/CMakeLists.txt sets SKIP_RETURN_CODE 77 on every test): a skipped
# case never counts as passed.
#
# The rule for CI: a module that sets CI_STRICT = True (test_faults.py and
# test_durability.py: every durability and fault test) must not skip in CI.
# With CI=true in the environment, skip() in such a case fails it instead,
# with the same reason: CI runs as root and tools/deps.sh installs every
# tool these cases use, so a skip there means the test is broken.  Other
# cases (a busy port 8080, slowhttptest missing) skip in CI too, visibly.

SKIP_EXIT = 77
CURRENT_CASE = None  # the case function run.py is running


class Skip(BaseException):
    """Raised by skip().  A BaseException, so that no "except Exception" in
    a case or a helper thread swallows it."""


def ci():
    """True when CI=true is in the environment."""
    return os.environ.get("CI") == "true"


def ci_strict(fn=None):
    """True if the module of case fn (default: the running case) sets
    CI_STRICT = True."""
    fn = fn or CURRENT_CASE
    if fn is None:
        return False
    return bool(getattr(sys.modules.get(fn.__module__), "CI_STRICT", False))


def skip(why):
    """Ends the running case as skipped (see above).  Never returns."""
    if ci() and ci_strict():
        raise AssertionError("skipped under CI=true, where this case must run: " + why)
    raise Skip(why)


# --------------------------------------------------------------------------
# Case registry

_CASES = {}  # module name -> {sentence: function}


def case(sentence, timeout=60):
    """Registers the decorated function as the case named by sentence."""
    if '"' in sentence or ";" in sentence:
        raise ValueError("case sentence may not contain quotes or semicolons: "
                         + sentence)

    def deco(fn):
        table = _CASES.setdefault(fn.__module__, {})
        if sentence in table:
            raise ValueError("duplicate case sentence: " + sentence)
        fn.sentence = sentence
        fn.timeout = timeout
        table[sentence] = fn
        return fn

    return deco


def cases_of(module_name):
    return dict(_CASES.get(module_name, {}))


# --------------------------------------------------------------------------
# Processes

_INSTANCES = []   # every Kvd created by this process
_TEMPDIRS = []    # every temporary directory to remove at teardown
_OTHER_STDERR = []  # stderr of helper runs (kvdump, short kvd runs)

try:
    _LIBC = ctypes.CDLL("libc.so.6", use_errno=True)
except OSError:  # pragma: no cover
    _LIBC = None


def _child_setup():
    # Die with the test process even if it is SIGKILLed (ctest timeout).
    if _LIBC is not None:
        _LIBC.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _child_env():
    env = dict(os.environ)
    env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
    return env


def mkdtemp():
    d = tempfile.mkdtemp(prefix="kvd-itest-")
    _TEMPDIRS.append(d)
    return d


class _Run:
    """One kvd process and the thread draining its stderr."""

    def __init__(self, argv, cwd):
        self.argv = argv
        self.buf = bytearray()
        self.cond = threading.Condition()
        self.eof = False
        self.expected_exit = False
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, cwd=cwd, env=_child_env(),
            preexec_fn=_child_setup)
        self.thread = threading.Thread(target=self._drain, daemon=True)
        self.thread.start()

    def _drain(self):
        fd = self.proc.stderr.fileno()
        try:
            for _ in range(10_000_000):
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                with self.cond:
                    self.buf += chunk
                    self.cond.notify_all()
        except OSError:
            pass
        finally:
            with self.cond:
                self.eof = True
                self.cond.notify_all()

    def text(self):
        with self.cond:
            return bytes(self.buf).decode("utf-8", "replace")

    def wait_listening(self, timeout):
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                m = LISTEN_RE.search(self.buf)
                if m:
                    return int(m.group(1))
                if self.eof or self.proc.poll() is not None:
                    # Let the drain thread catch up with the last bytes.
                    self.cond.wait(0.2)
                    m = LISTEN_RE.search(self.buf)
                    if m:
                        return int(m.group(1))
                    raise AssertionError(
                        "kvd exited (status %r) before listening; stderr:\n%s"
                        % (self.proc.poll(), bytes(self.buf).decode("utf-8", "replace")))
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(min(left, 0.1))
        self.expected_exit = True
        self.proc.kill()
        self.proc.wait(STOP_TIMEOUT)
        raise AssertionError("kvd did not print 'listening on' within %.0fs; stderr:\n%s"
                             % (timeout, self.text()))

    def finish(self):
        self.thread.join(STOP_TIMEOUT)
        try:
            self.proc.stderr.close()
        except OSError:
            pass


class Kvd:
    """A kvd server on 127.0.0.1:<ephemeral> with its own data directory.

    Kvd("--sync", "none")            extra arguments after --listen/--data
    Kvd(data=path)                   an existing data directory
    Kvd(listen="127.0.0.1:1234")     a fixed address instead of port 0
    Kvd(argv=[...], cwd=dir)         the full argument list (no defaults)
    """

    def __init__(self, *extra, data=None, listen="127.0.0.1:0", argv=None,
                 cwd=None, start=True, start_timeout=START_TIMEOUT):
        self.root = mkdtemp()
        if data is None:
            data = os.path.join(self.root, "data")
            os.mkdir(data)
        self.data = data
        self.listen = listen
        self.extra = list(extra)
        self.custom_argv = argv
        self.cwd = cwd or self.root
        self.start_timeout = start_timeout
        self.runs = []
        self.port = None
        self._conn = None
        _INSTANCES.append(self)
        if start:
            self.start()

    # -- lifecycle ---------------------------------------------------------
    def argv(self):
        if self.custom_argv is not None:
            return [KVD_BIN] + list(self.custom_argv)
        return [KVD_BIN, "--listen", self.listen, "--data", self.data] + self.extra

    @property
    def proc(self):
        return self.runs[-1].proc if self.runs else None

    def running(self):
        return bool(self.runs) and self.runs[-1].proc.poll() is None

    def start(self):
        if self.running():
            raise AssertionError("kvd is already running")
        self._drop_conn()
        run = _Run(self.argv(), self.cwd)
        self.runs.append(run)
        self.port = run.wait_listening(self.start_timeout)
        return self

    def restart(self):
        """Starts kvd again on the same data directory (it must be stopped)."""
        return self.start()

    def _signal(self, sig, timeout):
        run = self.runs[-1]
        self._drop_conn()
        run.expected_exit = True
        if run.proc.poll() is None:
            run.proc.send_signal(sig)
        try:
            rc = run.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            run.proc.kill()
            run.proc.wait(STOP_TIMEOUT)
            run.finish()
            raise AssertionError("kvd did not exit within %.0fs of signal %d; stderr:\n%s"
                                 % (timeout, sig, run.text()))
        run.finish()
        return rc

    def sigterm(self, timeout=STOP_TIMEOUT):
        """Sends SIGTERM, waits (bounded) and returns the exit status."""
        return self._signal(signal.SIGTERM, timeout)

    def sigint(self, timeout=STOP_TIMEOUT):
        return self._signal(signal.SIGINT, timeout)

    def sigkill(self):
        return self._signal(signal.SIGKILL, STOP_TIMEOUT)

    def stop_ok(self, timeout=STOP_TIMEOUT):
        """SIGTERM and assert a clean exit."""
        rc = self.sigterm(timeout)
        assert rc == 0, "kvd exited with %r on SIGTERM; stderr:\n%s" % (rc, self.stderr_text())
        return rc

    def stderr_text(self):
        """stderr of the current (or last) run."""
        return self.runs[-1].text() if self.runs else ""

    def all_stderr(self):
        return "".join(r.text() for r in self.runs)

    # -- clients -----------------------------------------------------------
    def conn(self, timeout=IO_TIMEOUT):
        return Conn(self.port, timeout)

    def _drop_conn(self):
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def request(self, method, path, body=b"", headers=None):
        """A request on this server's cached keep-alive connection."""
        if self._conn is None:
            self._conn = self.conn()
        try:
            return self._conn.request(method, path, body, headers)
        except BaseException:
            self._drop_conn()
            raise

    def put(self, key, value):
        r = self.request("PUT", kpath(key), value)
        assert r.status in (201, 204), "PUT %r: %s" % (key, r.summary())
        return r

    def get(self, key):
        """The value of key as bytes, or None on 404."""
        r = self.request("GET", kpath(key))
        if r.status == 404:
            return None
        assert r.status == 200, "GET %r: %s" % (key, r.summary())
        return r.body

    def delete(self, key):
        r = self.request("DELETE", kpath(key))
        assert r.status in (204, 404), "DELETE %r: %s" % (key, r.summary())
        return r

    def dump(self):
        """The GET / body (bytes)."""
        r = self.request("GET", "/")
        assert r.status == 200, "GET /: %s" % r.summary()
        return r.body


def _scan_sanitizer(text):
    for p in SANITIZER_PATTERNS:
        i = text.find(p)
        if i >= 0:
            return text[max(0, i - 200):i + 4000]
    return None


def kill_all():
    """atexit safety net: SIGKILL every kvd still running."""
    for k in _INSTANCES:
        for run in k.runs:
            if run.proc.poll() is None:
                try:
                    run.proc.kill()
                    run.proc.wait(STOP_TIMEOUT)
                except Exception:
                    pass
    for d in _TEMPDIRS:
        shutil.rmtree(d, ignore_errors=True)


def teardown():
    """Stops every server; returns a list of problems (empty if clean)."""
    problems = []
    for k in _INSTANCES:
        k._drop_conn()
        for i, run in enumerate(k.runs):
            before = len(problems)
            rc = run.proc.poll()
            if rc is None:
                run.expected_exit = True
                run.proc.send_signal(signal.SIGTERM)
                try:
                    rc = run.proc.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    run.proc.kill()
                    run.proc.wait(STOP_TIMEOUT)
                    problems.append("kvd did not exit within %.0fs of SIGTERM at teardown"
                                    % STOP_TIMEOUT)
                    rc = 0
                if rc != 0:
                    problems.append("kvd exited with status %r on SIGTERM at teardown"
                                    % rc)
            elif not run.expected_exit:
                problems.append("kvd (run %d) died unexpectedly with status %r" % (i, rc))
            run.finish()
            report = _scan_sanitizer(run.text())
            if report:
                problems.append("sanitizer report from kvd %s:\n%s"
                                % (" ".join(run.argv[1:]), report))
            elif len(problems) > before:
                problems.append("kvd stderr (last 4000 characters):\n" + run.text()[-4000:])
    for text in _OTHER_STDERR:
        report = _scan_sanitizer(text)
        if report:
            problems.append("sanitizer report from a helper run:\n" + report)
    _INSTANCES.clear()
    _OTHER_STDERR.clear()
    for d in _TEMPDIRS:
        shutil.rmtree(d, ignore_errors=True)
    _TEMPDIRS.clear()
    return problems


class Result:
    def __init__(self, rc, out, err):
        self.rc, self.out, self.err = rc, out, err

    def __repr__(self):
        return "Result(rc=%r, out=%r, err=%r)" % (self.rc, self.out[:400], self.err[:2000])


def run_bin(argv, timeout=20, cwd=None):
    """Runs a program to completion (bounded); returns Result(rc, out, err)."""
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, cwd=cwd, env=_child_env(),
                         preexec_fn=_child_setup)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate(timeout=STOP_TIMEOUT)
        raise AssertionError("%s did not exit within %ds; stderr:\n%s"
                             % (" ".join(argv), timeout, err.decode("utf-8", "replace")))
    text = err.decode("utf-8", "replace")
    _OTHER_STDERR.append(text)
    report = _scan_sanitizer(text)
    assert report is None, "sanitizer report from %s:\n%s" % (" ".join(argv), report)
    return Result(p.returncode, out, err)


def kvd_run(*args, timeout=10, cwd=None):
    """Runs kvd with exactly args (for flag tests); cwd defaults to a temp dir."""
    return run_bin([KVD_BIN] + list(args), timeout=timeout, cwd=cwd or mkdtemp())


def kvdump(*args, timeout=20):
    return run_bin([KVDUMP_BIN] + list(args), timeout=timeout)


# --------------------------------------------------------------------------
# Keys

_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-")


def kpath(key):
    """'/' + key with every byte but [A-Za-z0-9-] percent-encoded."""
    if isinstance(key, str):
        key = key.encode("utf-8")
    return "/" + "".join(chr(b) if b in _SAFE else "%%%02X" % b for b in key)


# --------------------------------------------------------------------------
# HTTP over raw sockets

class ConnectionClosed(AssertionError):
    pass


class Response:
    def __init__(self, version, status, reason, headers, body, head_raw):
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers      # [(name, value)] in order, names as sent
        self.body = body
        self.head_raw = head_raw    # status line + headers + blank line

    @property
    def raw(self):
        return self.head_raw + self.body

    def names(self):
        return [n for n, _ in self.headers]

    def get(self, name, default=None):
        """First value of a header, name compared case-insensitively."""
        low = name.lower()
        for n, v in self.headers:
            if n.lower() == low:
                return v
        return default

    def get_all(self, name):
        low = name.lower()
        return [v for n, v in self.headers if n.lower() == low]

    def summary(self):
        return repr(self.raw[:600])

    def __repr__(self):
        return "<Response %s>" % self.summary()


_STATUS_RE = re.compile(rb"HTTP/(\d)\.(\d) (\d{3}) ([^\r\n]*)")
_HEADER_RE = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+): ([^\r\n]*)")
MAX_HEAD = 65536
MAX_HEADERS = 200


class Conn:
    """A client connection to 127.0.0.1:port with a buffered strict reader."""

    def __init__(self, port, timeout=IO_TIMEOUT):
        self.port = port
        self.timeout = timeout
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    # -- sending -----------------------------------------------------------
    def send(self, data, tolerate_close=False):
        """Sends all of data.  With tolerate_close, a reset or broken pipe
        (the server answered early and closed) is ignored."""
        if isinstance(data, str):
            data = data.encode("latin-1")
        self.sock.settimeout(self.timeout)
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            if not tolerate_close:
                raise
            return False
        return True

    # -- receiving ---------------------------------------------------------
    def _fill(self, deadline, what):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("timed out waiting for %s; have %r" % (what, bytes(self.buf[:300])))
        self.sock.settimeout(left)
        try:
            chunk = self.sock.recv(262144)
        except socket.timeout:
            raise TimeoutError("timed out waiting for %s; have %r"
                               % (what, bytes(self.buf[:300]))) from None
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            raise ConnectionClosed("server closed the connection while waiting for %s; have %r"
                                   % (what, bytes(self.buf[:300])))
        self.buf += chunk

    def read_exact(self, n, timeout=None, what="bytes"):
        deadline = time.monotonic() + (timeout or self.timeout)
        for _ in range(10_000_000):
            if len(self.buf) >= n:
                break
            self._fill(deadline, what)
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def _read_head(self, deadline):
        for _ in range(100_000):
            i = self.buf.find(b"\r\n\r\n")
            if i >= 0:
                head = bytes(self.buf[:i + 4])
                del self.buf[:i + 4]
                return head
            if len(self.buf) > MAX_HEAD:
                raise AssertionError("response head over %d bytes: %r" % (MAX_HEAD, bytes(self.buf[:300])))
            self._fill(deadline, "a response head")
        raise AssertionError("response head never ended")

    def read_response(self, method="GET", timeout=None):
        """Reads one response strictly: HTTP/1.x status line, 'Name: value'
        header lines, and a body of exactly Content-Length bytes (none for
        HEAD, 1xx, 204 and 304)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        head = self._read_head(deadline)
        lines = head[:-4].split(b"\r\n")
        m = _STATUS_RE.fullmatch(lines[0])
        assert m, "bad status line %r in %r" % (lines[0], head)
        version = "HTTP/%s.%s" % (m.group(1).decode(), m.group(2).decode())
        status = int(m.group(3))
        reason = m.group(4).decode("latin-1")
        headers = []
        assert len(lines) - 1 <= MAX_HEADERS, "too many response headers: %r" % head
        for line in lines[1:]:
            hm = _HEADER_RE.fullmatch(line)
            assert hm, "bad response header line %r in %r" % (line, head)
            assert not hm.group(2).endswith((b" ", b"\t")), \
                "trailing whitespace in header %r" % line
            headers.append((hm.group(1).decode("latin-1"), hm.group(2).decode("latin-1")))
        resp = Response(version, status, reason, headers, b"", head)
        cls = [v for n, v in headers if n.lower() == "content-length"]
        assert not any(n.lower() == "transfer-encoding" for n, _ in headers), \
            "unexpected Transfer-Encoding in response %r" % head
        assert len(cls) <= 1, "several Content-Length headers in %r" % head
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            return resp
        assert cls, "response with a body but no Content-Length: %r" % head
        assert re.fullmatch(r"[0-9]+", cls[0]), "bad Content-Length in %r" % head
        n = int(cls[0])
        resp.body = self.read_exact(n, timeout=max(0.001, deadline - time.monotonic()) + n / 5e6,
                                    what="a %d-byte response body" % n)
        return resp

    def expect_closed(self, timeout=2.0):
        """Asserts the server closes the connection within timeout and sends
        nothing more (any unread byte is an error)."""
        assert not self.buf, "unexpected bytes after the response: %r" % bytes(self.buf[:300])
        deadline = time.monotonic() + timeout
        for _ in range(100_000):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                return
            if not chunk:
                return
            raise AssertionError("server sent more bytes instead of closing: %r" % chunk[:300])
        raise AssertionError("server did not close the connection within %.1fs" % timeout)

    def expect_silent(self, timeout=0.3):
        """Asserts nothing arrives (and the connection is not closed) for timeout."""
        assert not self.buf, "unexpected bytes: %r" % bytes(self.buf[:300])
        self.sock.settimeout(timeout)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            return
        raise AssertionError("expected silence, got %r" % chunk[:300])

    def assert_alive(self):
        """The connection is still usable: GET /_health answers 200 ok."""
        r = self.request("GET", "/_health")
        assert r.status == 200 and r.body == b"ok\n", \
            "connection not usable after the previous response: %s" % r.summary()

    # -- requests ----------------------------------------------------------
    def request(self, method, path, body=b"", headers=None, version="HTTP/1.1",
                timeout=None):
        self.send(build_request(method, path, body, headers, version, self.port))
        return self.read_response(method, timeout)


def build_request(method, path, body=b"", headers=None, version="HTTP/1.1", port=None):
    """Builds request bytes.  headers is a list of (name, value) or a dict;
    Host is added unless given, and Content-Length for a body (or for PUT and
    POST) unless Content-Length or Transfer-Encoding is given."""
    if isinstance(body, str):
        body = body.encode("utf-8")
    if isinstance(path, str):
        path = path.encode("utf-8")
    if isinstance(headers, dict):
        headers = list(headers.items())
    headers = list(headers or [])
    lower = [n.lower() for n, _ in headers]
    out = [method.encode() + b" " + path + b" " + version.encode() + b"\r\n"]
    if "host" not in lower and version == "HTTP/1.1":
        out.append(b"Host: 127.0.0.1:%d\r\n" % (port or 80))
    for n, v in headers:
        if isinstance(v, str):
            v = v.encode("latin-1")
        out.append(n.encode("latin-1") + b": " + v + b"\r\n")
    if ("content-length" not in lower and "transfer-encoding" not in lower
            and (body or method in ("PUT", "POST"))):
        out.append(b"Content-Length: %d\r\n" % len(body))
    out.append(b"\r\n")
    out.append(body)
    return b"".join(out)


def chunked(data, size):
    """data as a chunked body with chunks of at most size bytes."""
    out = []
    for i in range(0, len(data), size):
        c = data[i:i + size]
        out.append(b"%x\r\n" % len(c) + c + b"\r\n")
    out.append(b"0\r\n\r\n")
    return b"".join(out)


# --------------------------------------------------------------------------
# Assertions on responses

_DATE_RE = re.compile(r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), (\d{2}) "
                      r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) "
                      r"(\d{4}) (\d{2}):(\d{2}):(\d{2}) GMT")
_MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct",
           "Nov", "Dec"]
_DAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]


def check_date(value):
    m = _DATE_RE.fullmatch(value)
    assert m, "Date is not an IMF-fixdate: %r" % value
    day, mon, year = int(m.group(2)), _MONTHS.index(m.group(3)) + 1, int(m.group(4))
    hh, mm, ss = int(m.group(5)), int(m.group(6)), int(m.group(7))
    t = calendar.timegm((year, mon, day, hh, mm, ss, 0, 0, 0))
    assert time.gmtime(t)[:6] == (year, mon, day, hh, mm, ss), "Date is not a real time: %r" % value
    assert _DAYS[time.gmtime(t).tm_wday] == m.group(1), "Date has the wrong weekday: %r" % value
    assert abs(t - time.time()) < 300, "Date is far from now: %r" % value


def check_error_body(body):
    assert body.endswith(b"\n") and body.count(b"\n") == 1 and len(body) > 1, \
        "error body is not a one-line message ending in a newline: %r" % body


def expect(resp, status, body=None, *, ctype=TEXT, close=False, allow=None,
           head=False, length=None, body201=False, etag=None, rev=None):
    """Asserts the exact response: status line, header names in order,
    header values, and body.

    close: True = 'Connection: close' must be there, False = must not,
           None = either.
    head:  the response to a HEAD: no body, Content-Length of body/length.
    body:  None checks an error body's one-line form (for 4xx/5xx), or
           nothing (for 2xx).
    body201: a 201 that carries a body (POST of a new key answers 201 with
           the stored value as text/plain), instead of Content-Length: 0.
    etag, rev: the exact ETag ("N") and Kvd-Revision (N) an answer about
           the data carries.  Left as None, each may be there or not, but
           only in its place and well-formed.
    """
    ctx = resp.summary()
    assert resp.version == "HTTP/1.1", "bad version %s: %s" % (resp.version, ctx)
    assert resp.status == status, "expected status %d, got %d: %s" % (status, resp.status, ctx)
    assert resp.reason == REASONS[status], \
        "expected reason %r, got %r: %s" % (REASONS[status], resp.reason, ctx)
    names = ["Date"]
    if status == 201 and not body201:
        names.append("Content-Length")
    elif status not in (204, 304) and status >= 200:
        names += ["Content-Type", "Content-Length"]
    got = resp.names()
    for name, want in (("ETag", etag), ("Kvd-Revision", rev)):
        if want is not None or name in got:
            names.append(name)
    if allow is not None:
        names.append("Allow")
    if close is None and "Connection" in got:
        close = True
    if close:
        names.append("Connection")
    assert got == names, "expected headers %r, got %r: %s" % (names, got, ctx)
    check_date(resp.get("Date"))
    if "ETag" in names:
        assert re.fullmatch(r'"(?:0|[1-9][0-9]*)"', resp.get("ETag")), "bad ETag: %s" % ctx
        if etag is not None:
            assert resp.get("ETag") == '"%d"' % etag, "expected ETag \"%d\": %s" % (etag, ctx)
    if "Kvd-Revision" in names:
        assert re.fullmatch(r"0|[1-9][0-9]*", resp.get("Kvd-Revision")), "bad Kvd-Revision: %s" % ctx
        if rev is not None:
            assert resp.get("Kvd-Revision") == str(rev), "expected Kvd-Revision %d: %s" % (rev, ctx)
    if "Content-Type" in names:
        assert resp.get("Content-Type") == ctype, \
            "expected Content-Type %r, got %r" % (ctype, resp.get("Content-Type"))
    if status == 201 and not body201:
        assert resp.get("Content-Length") == "0", "201 must have Content-Length: 0: %s" % ctx
    if allow is not None:
        assert resp.get("Allow") == allow, "expected Allow %r, got %r" % (allow, resp.get("Allow"))
    if close:
        assert resp.get("Connection") == "close", "expected Connection: close: %s" % ctx
    if head:
        assert resp.body == b"", "HEAD response had a body: %s" % ctx
        want = length if length is not None else (len(body) if body is not None else None)
        if want is not None and "Content-Length" in names:
            assert resp.get("Content-Length") == str(want), \
                "HEAD Content-Length %r, expected %d" % (resp.get("Content-Length"), want)
        return resp
    if "Content-Length" in names:
        assert resp.get("Content-Length") == str(len(resp.body))
    if body is not None:
        assert resp.body == body, "expected body %r, got %r" % (body[:300], resp.body[:300])
    elif status >= 400:
        check_error_body(resp.body)
    elif status == 204 or (status == 201 and not body201):
        assert resp.body == b""
    return resp


def metric(k, name, headers=None):
    """The value of an unlabelled metric in k's /_metrics: an int when it
    is whole, else a float."""
    body = k.request("GET", "/_metrics", headers=headers).body.decode()
    for line in body.splitlines():
        if line.startswith(name + " "):
            v = line.split()[1]
            return int(v) if v.lstrip("-").isdigit() else float(v)
    raise AssertionError("no %s in /_metrics" % name)


def jstr(s):
    """s (str or bytes) as a JSON string, escaped as kvd's yajl encoder
    escapes it: \\" \\\\ \\b \\f \\n \\r \\t, other bytes below 0x20 as \\u00XX
    with upper-case hex, everything else (DEL, '/', UTF-8) as it is."""
    short = {0x22: b'\\"', 0x5C: b"\\\\", 0x08: b"\\b", 0x0C: b"\\f", 0x0A: b"\\n",
             0x0D: b"\\r", 0x09: b"\\t"}
    out = bytearray(b'"')
    for c in (s.encode() if isinstance(s, str) else s):
        if c in short:
            out += short[c]
        elif c < 0x20:
            out += b"\\u%04X" % c
        else:
            out.append(c)
    out += b'"'
    return bytes(out)
