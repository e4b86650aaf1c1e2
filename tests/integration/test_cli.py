"""kvd's command line: flags, defaults, usage errors, bad data dirs."""

import os
import socket

from harness import Kvd, case, expect, kvd_run, mkdtemp, skip


def usage_error(*args):
    """kvd exits 2 at once with exactly one 'kvd: ' line on stderr."""
    d = mkdtemp()
    res = kvd_run(*args, cwd=d, timeout=10)
    text = res.err.decode("utf-8", "replace")
    assert res.rc == 2, "kvd %s: expected exit 2, got %r" % (" ".join(args), res)
    assert text.startswith("kvd: ") and text.endswith("\n") and text.count("\n") == 1, \
        "kvd %s: stderr should be one 'kvd: ' line: %r" % (" ".join(args), text)
    return res


def data_arg():
    return os.path.join(mkdtemp(), "data")


@case("kvd --version prints kvd 0.1.0 and exits 0")
def version():
    res = kvd_run("--version")
    assert res.rc == 0, res
    assert res.out == b"kvd 0.1.0\n", res


@case("kvd --help prints usage with every flag to stdout and exits 0")
def help_flag():
    res = kvd_run("--help")
    assert res.rc == 0, res
    out = res.out.decode()
    for flag in ("--listen", "--data", "--sync", "--max-value", "--help", "--version"):
        assert flag in out, "usage lacks %s: %r" % (flag, out)


@case("an unknown flag exits 2 with one kvd line on stderr")
def unknown_flag():
    usage_error("--listen", "127.0.0.1:0", "--data", data_arg(), "--bogus")
    usage_error("--frobnicate")
    usage_error("-x")
    usage_error("extra-positional")


@case("a flag without its value exits 2 with one kvd line on stderr")
def missing_value():
    for flag in ("--listen", "--data", "--sync", "--max-value"):
        usage_error("--data", data_arg(), flag)


def bad_sync():
    usage_error("--listen", "127.0.0.1:0", "--data", data_arg(), "--sync", "sometimes")
    usage_error("--listen", "127.0.0.1:0", "--data", data_arg(), "--sync", "")


def bad_max_value():
    for v in ("abc", "0", "", "-1", "1X", "K", "0K", "12abc"):
        usage_error("--listen", "127.0.0.1:0", "--data", data_arg(), "--max-value", v)


def bad_listen():
    for v in ("nohostport", "127.0.0.1:99999", "127.0.0.1:", "127.0.0.1:abc", "127.0.0.1:-1"):
        usage_error("--listen", v, "--data", data_arg())


@case("invalid sync, max-value and listen values exit 2 with one kvd line on stderr")
def bad_values():
    failures = []
    for check in (bad_sync, bad_max_value, bad_listen):
        try:
            check()
        except AssertionError as e:
            failures.append(str(e))
    assert not failures, "\n".join(failures)


@case("a data dir that is a regular file exits 1 with one line naming it")
def data_is_file():
    path = os.path.join(mkdtemp(), "afile")
    with open(path, "w") as f:
        f.write("not a dir\n")
    res = kvd_run("--listen", "127.0.0.1:0", "--data", path)
    text = res.err.decode("utf-8", "replace")
    assert res.rc == 1, res
    assert text.startswith("kvd: ") and text.count("\n") == 1 and text.endswith("\n"), text
    assert path in text, text
    with open(path) as f:
        assert f.read() == "not a dir\n"


@case("a non-empty dir that is not a kvd dir exits 1 with one line naming it")
def data_not_kvd():
    path = os.path.join(mkdtemp(), "other")
    os.mkdir(path)
    with open(os.path.join(path, "notes.txt"), "w") as f:
        f.write("unrelated\n")
    res = kvd_run("--listen", "127.0.0.1:0", "--data", path)
    text = res.err.decode("utf-8", "replace")
    assert res.rc == 1, res
    assert text.startswith("kvd: ") and text.count("\n") == 1 and text.endswith("\n"), text
    assert path in text, text
    assert os.listdir(path) == ["notes.txt"]


@case("listening on port 0 reports the real bound port")
def port_zero():
    k = Kvd()
    assert 0 < k.port < 65536
    assert "listening on http://127.0.0.1:%d" % k.port in k.stderr_text()
    with k.conn() as c:
        expect(c.request("GET", "/_health"), 200, b"ok\n")


@case("an explicit listen port is used and reported")
def explicit_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    k = Kvd(listen="127.0.0.1:%d" % port)
    assert k.port == port
    k.put("k", b"v")
    assert k.get("k") == b"v"


@case("without flags kvd listens on 127.0.0.1 port 8080 with data in ./kvd-data")
def defaults():
    probe = socket.socket()
    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        probe.bind(("127.0.0.1", 8080))
    except OSError:
        skip("port 8080 is busy here")
    finally:
        probe.close()
    cwd = mkdtemp()
    k = Kvd(argv=[], cwd=cwd)
    assert k.port == 8080, k.stderr_text()
    k.put("k", b"v")
    assert os.path.isdir(os.path.join(cwd, "kvd-data"))
    k.stop_ok()
    assert os.listdir(os.path.join(cwd, "kvd-data")), "./kvd-data is empty"


@case("max-value takes a plain byte count")
def max_value_plain():
    k = Kvd("--max-value", "100")
    with k.conn() as c:
        expect(c.request("PUT", "/k", b"x" * 100), 201)
    with k.conn() as c:
        c.send(b"PUT /k HTTP/1.1\r\nHost: x\r\nContent-Length: 101\r\n\r\n" + b"y" * 101,
               tolerate_close=True)
        expect(c.read_response(), 413, close=True)
        c.expect_closed()
    assert k.get("k") == b"x" * 100


def continue_or_413(k, length):
    """Sends headers with Expect: 100-continue and Content-Length length;
    returns 100 or 413 (the body is never sent)."""
    with k.conn() as c:
        c.send(b"PUT /k HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n"
               b"Expect: 100-continue\r\n\r\n" % length)
        r = c.read_response(timeout=3)
        if r.status == 100:
            assert r.head_raw == b"HTTP/1.1 100 Continue\r\n\r\n", r.head_raw
            return 100
        expect(r, 413, close=True)
        c.expect_closed()
        return 413


@case("max-value takes K, M and G suffixes as powers of 1024")
def max_value_suffixes():
    for arg, n in (("2M", 2 * 1024 * 1024), ("1G", 1024 ** 3), ("3K", 3 * 1024)):
        k = Kvd("--max-value", arg)
        assert continue_or_413(k, n) == 100, arg
        assert continue_or_413(k, n + 1) == 413, arg
        k.stop_ok()


@case("the default max-value is 16 MiB")
def max_value_default():
    k = Kvd()
    assert continue_or_413(k, 16 * 1024 * 1024) == 100
    assert continue_or_413(k, 16 * 1024 * 1024 + 1) == 413


@case("sync always and sync none are accepted")
def sync_modes():
    for mode in ("always", "none"):
        k = Kvd("--sync", mode)
        k.put("k", mode.encode())
        assert k.get("k") == mode.encode()
        k.stop_ok()


@case("a second kvd on a data dir in use exits 1 and the first keeps serving")
def data_dir_in_use():
    k = Kvd()
    k.put("a", b"1")
    res = kvd_run("--listen", "127.0.0.1:0", "--data", k.data)
    text = res.err.decode("utf-8", "replace")
    assert res.rc == 1, res
    assert text == "kvd: %s: another kvd is using this data directory\n" % k.data, text
    assert k.get("a") == b"1"
