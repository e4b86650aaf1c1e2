"""Operating kvd: the config file, --check-config, SIGHUP, readiness,
metrics and the systemd readiness protocol."""

import os
import shutil
import signal
import socket
import subprocess
import time

from harness import Kvd, case, expect, kvd_run, mkdtemp


def write_conf(text):
    path = os.path.join(mkdtemp(), "kvd.conf")
    with open(path, "w") as f:
        f.write(text)
    return path


def wait_for(pred, what, timeout=5.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting for " + what)


def put_status(k, key, size):
    """A fresh connection each time: a 413 closes its connection."""
    with k.conn() as c:
        return c.request("PUT", "/" + key, b"v" * size).status


@case("the config file sets limits and a flag on the command line wins over it")
def config_file_and_flags():
    conf = write_conf("# limits\nmax-value = 1K\n\n  sync = none  \nlog-level = \"debug\"\n")
    k = Kvd("--config", conf)
    assert put_status(k, "a", 1024) == 201
    assert put_status(k, "b", 1025) == 413
    k.stop_ok()
    k2 = Kvd("--config", conf, "--max-value", "2K", data=k.data)
    assert put_status(k2, "c", 2048) == 201


@case("check-config accepts a good file and names the line of a bad one")
def check_config():
    good = write_conf("listen = 127.0.0.1:9999\nmax-value = 4M\naccess-log = true\n")
    res = kvd_run("--config", good, "--check-config")
    assert res.rc == 0, res
    bad = write_conf("listen = 127.0.0.1:9999\n# fine\nmax-value = 0\n")
    res = kvd_run("--config", bad, "--check-config")
    assert res.rc == 1, res
    assert res.err.decode() == ("kvd: %s:3: max-value: expected 1 byte to 4G, like 16M, "
                                "got '0'\n" % bad), res
    unknown = write_conf("colour = blue\n")
    res = kvd_run("--config", unknown, "--check-config")
    assert res.rc == 1 and res.err.decode() == "kvd: %s:1: unknown setting 'colour'\n" % unknown, res
    noeq = write_conf("max-value 4M\n")
    res = kvd_run("--config", noeq)
    assert res.rc == 1 and res.err.decode() == "kvd: %s:1: expected 'key = value'\n" % noeq, res
    res = kvd_run("--config", "/nonexistent/kvd.conf", "--check-config")
    assert res.rc == 1 and b"/nonexistent/kvd.conf: cannot read" in res.err, res


@case("SIGHUP reloads limits from the config file and says what needs a restart")
def sighup_reload():
    conf = write_conf("max-value = 1K\n")
    k = Kvd("--config", conf)
    assert put_status(k, "a", 2000) == 413
    with open(conf, "w") as f:
        f.write("max-value = 4K\nsync = none\n")
    k.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "configuration reloaded" in k.stderr_text(), "the reload")
    assert "sync changed: needs a restart" in k.stderr_text(), k.stderr_text()
    assert put_status(k, "b", 2000) == 201
    # A broken file keeps the running configuration.
    with open(conf, "w") as f:
        f.write("max-value = lots\n")
    k.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "configuration not reloaded" in k.stderr_text(), "the refusal")
    assert put_status(k, "c", 3000) == 201
    assert put_status(k, "d", 5000) == 413


@case("SIGHUP reopens the log file after it was rotated away")
def sighup_reopens_log():
    logdir = mkdtemp()
    log = os.path.join(logdir, "kvd.log")
    k = Kvd("--log-file", log, "--access-log", "true")
    k.put("a", b"1")
    wait_for(lambda: os.path.exists(log) and b"PUT /a" in open(log, "rb").read(), "the access line")
    os.rename(log, log + ".1")
    k.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: os.path.exists(log), "a new log file")
    k.put("b", b"2")
    wait_for(lambda: b"PUT /b" in open(log, "rb").read(), "the line in the new file")
    assert b"PUT /b" not in open(log + ".1", "rb").read()


def fds_to(pid, path):
    """The descriptor numbers of pid that point at path."""
    d = "/proc/%d/fd" % pid
    out = []
    for n in os.listdir(d):
        try:
            if os.readlink(os.path.join(d, n)) == path:
                out.append(int(n))
        except OSError:
            pass
    return sorted(out)


@case("SIGHUP reopens the log file on the same descriptor number, so a worker thread never writes into a reused one")
def sighup_keeps_log_fd():
    logdir = mkdtemp()
    log = os.path.join(logdir, "kvd.log")
    k = Kvd("--log-file", log)
    pid = k.proc.pid
    before = fds_to(pid, log)
    assert len(before) == 1, before
    for i in range(3):
        os.rename(log, log + ".%d" % i)
        # Connections opened now take the lowest free numbers: the ones a
        # close-then-open reopen would free and hand out.
        with k.conn() as c:
            expect(c.request("GET", "/_health"), 200, b"ok\n")
            k.proc.send_signal(signal.SIGHUP)
            wait_for(lambda: fds_to(pid, log) == before, "the new log file on fd %d" % before[0])
            expect(c.request("GET", "/_health"), 200, b"ok\n")
        assert fds_to(pid, log + ".%d" % i) == [], "the rotated file is still open"
    wait_for(lambda: b"SIGHUP: configuration reloaded" in open(log, "rb").read(), "a line in the new file")


@case("ready answers 200 and health needs no token even with auth all")
def ready_and_health():
    tok = os.path.join(mkdtemp(), "token")
    with open(tok, "w") as f:
        f.write("t0k3n\n")
    k = Kvd("--token-file", tok, "--auth", "all")
    with k.conn() as c:
        c.send(b"GET /_ready HTTP/1.1\r\nHost: a\r\n\r\n")
        expect(c.read_response(), 200, b"ready\n")
        c.send(b"GET /_health HTTP/1.1\r\nHost: a\r\n\r\n")
        expect(c.read_response(), 200, b"ok\n")
        c.send(b"GET /_metrics HTTP/1.1\r\nHost: a\r\n\r\n")
        r = c.read_response()
        assert r.status == 401, r.summary()


def metrics_text(k):
    r = k.request("GET", "/_metrics")
    assert r.status == 200, r.summary()
    assert r.get("Content-Type") == "text/plain; version=0.0.4; charset=utf-8", r.summary()
    return r.body.decode()


def metric(text, line_prefix):
    for line in text.splitlines():
        if line.startswith(line_prefix + " "):
            return float(line.split()[-1])
    raise AssertionError("no %s in:\n%s" % (line_prefix, text))


@case("metrics count requests by method and status and track keys and commits")
def metrics_counts():
    k = Kvd()
    for i in range(5):
        k.put("k%d" % i, b"x" * 10)
    k.get("k1")
    assert k.get("missing") is None
    k.delete("k0")
    k.request("PATCH", "/k1")
    text = metrics_text(k)
    assert metric(text, 'kvd_requests_total{method="PUT",code="201"}') == 5
    assert metric(text, 'kvd_requests_total{method="GET",code="200"}') == 1
    assert metric(text, 'kvd_requests_total{method="GET",code="404"}') == 1
    assert metric(text, 'kvd_requests_total{method="DELETE",code="204"}') == 1
    assert metric(text, 'kvd_requests_total{method="other",code="405"}') == 1
    assert metric(text, "kvd_keys") == 4
    assert metric(text, "kvd_stored_bytes") == 4 * (2 + 10)
    assert metric(text, "kvd_commit_batch_size_count") == 6
    assert metric(text, 'kvd_errors_total{kind="notfound"}') == 1
    assert metric(text, "kvd_open_connections") >= 1
    assert metric(text, "kvd_ready") == 1


@case("the metrics exposition passes promtool check metrics")
def metrics_promtool():
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: tools/test installs Debian's prometheus package"
    k = Kvd()
    k.put("a", b"1")
    k.dump()
    k.request("GET", "/%zz")
    text = metrics_text(k)
    res = subprocess.run([promtool, "check", "metrics"], input=text.encode(),
                         capture_output=True, timeout=30)
    assert res.returncode == 0, (res.stdout + res.stderr).decode()


@case("kvd tells systemd READY once it listens and STOPPING when it shuts down")
def sd_notify():
    d = mkdtemp()
    path = os.path.join(d, "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    os.environ["NOTIFY_SOCKET"] = path
    try:
        k = Kvd()
    finally:
        del os.environ["NOTIFY_SOCKET"]
    assert sock.recv(256) == b"READY=1"
    k.stop_ok()
    assert sock.recv(256) == b"STOPPING=1"
    sock.close()
