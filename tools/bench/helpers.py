#!/usr/bin/env python3
"""helpers.py - the measuring pieces of tools/bench/run that wrk cannot do.

Standard library only.  Every loop is bounded by a count and a deadline.

  load HOST PORT FIRST LAST VSIZE CONNS TIMEOUT
      PUT the keys k%015d for FIRST <= i < LAST (16-byte keys) with value(i),
      pipelined over CONNS keep-alive connections, until every answer is in.
      Prints "LOAD n=... secs=... rate=... non2xx=...".
  load-list HOST PORT N START PER VSIZE CONNS TIMEOUT kvd|etcd
      The listing workload's N keys p%04d/k%09d (PER under each prefix,
      key i under p(i // PER)), as load does, into kvd (raw PUT /KEY) or
      into etcd's v2 keys API (form PUT /v2/keys/KEY), from key START on,
      wrapping around: the prefix that is listed goes in first.  Stops at
      TIMEOUT with what it has: n= and non2xx= say how many were stored.
  load-ttl HOST PORT FIRST LAST VSIZE CONNS TIMEOUT EXPIRE_AT SPREAD
      PUT /t%015d?ttl=S, as load does, with S chosen as each request is
      built so that key i expires at EXPIRE_AT (epoch seconds) plus
      (i % 1000) / 1000 of SPREAD seconds.  Adds late= (keys sent too late
      for their time, given ttl=1), ttl_min= and ttl_max= to the line.
  count kvd|etcd
      Entries in the listing answer on stdin (kvd: the object's or the
      array's; etcd v2: the directory node's children), or -1.
  resp FIRST LAST VSIZE
      The same keys and values as Redis SET commands (RESP) on stdout, for
      redis-cli --pipe.
  value I VSIZE
      Prints value(I), the value the loaders store under key I.
  ready-kvd PORT T0_NS KEY EXPECTED TIMEOUT
      Polls until GET /_health answers 200 and GET /KEY answers EXPECTED;
      prints the seconds since T0_NS (CLOCK_REALTIME, as date +%s%N).
  ready-redis PORT T0_NS DBSIZE TIMEOUT
      Polls until PING answers PONG and DBSIZE is DBSIZE; prints seconds.
  fsync DIR SECS
      The disk's small-commit limit: 4 KiB pwrite + fdatasync to one file in
      DIR, in a loop.  Prints "FSYNC ops=1/median p50_ms=... p99_ms=... n=...".
"""
import json
import os
import selectors
import socket
import sys
import time


def key(i):
    return "k%015d" % i


def value(i, vsize):
    s = "%015d" % i
    if vsize <= len(s):
        return s[-vsize:] if vsize > 0 else ""
    return s + "v" * (vsize - len(s))


def load_requests(host, port, first, last, conns, timeout, make):
    """Sends make(i, now) (the text of one request) for FIRST <= i < LAST,
    pipelined over CONNS keep-alive connections (connection c sends i = c,
    c + CONNS, ...), in chunks of 256 built just before they are sent, until
    every answer is in or TIMEOUT seconds have passed.  Returns (answers,
    2xx answers, seconds)."""
    total = last - first
    sel = selectors.DefaultSelector()
    state = []
    for c in range(min(conns, max(total, 1))):
        s = socket.create_connection((host, port), timeout=5)
        s.setblocking(False)
        idx = range(first + c, last, conns)
        st = {"sock": s, "idx": idx, "pos": 0, "out": b"", "want": len(idx),
              "got": 0, "ok": 0, "tail": b""}
        state.append(st)
        sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE, st)
    t0 = time.monotonic()
    deadline = t0 + timeout
    chunk = 256
    done = 0
    while done < len(state) and time.monotonic() < deadline:
        for skey, ev in sel.select(timeout=1.0):
            st = skey.data
            s = st["sock"]
            if ev & selectors.EVENT_WRITE:
                if not st["out"] and st["pos"] < len(st["idx"]):
                    part = st["idx"][st["pos"]:st["pos"] + chunk]
                    st["pos"] += len(part)
                    now = time.time()
                    st["out"] = "".join(make(i, now) for i in part).encode()
                if st["out"]:
                    try:
                        n = s.send(st["out"])
                        st["out"] = st["out"][n:]
                    except BlockingIOError:
                        pass
                if not st["out"] and st["pos"] >= len(st["idx"]):
                    sel.modify(s, selectors.EVENT_READ, st)
            if ev & selectors.EVENT_READ:
                try:
                    data = s.recv(1 << 20)
                except BlockingIOError:
                    continue
                if not data:
                    raise SystemExit("load: server closed a connection")
                # Status lines may be split across reads: count over the
                # previous read's last bytes too, minus what they held alone.
                tail = st["tail"]
                buf = tail + data
                st["got"] += buf.count(b"HTTP/1.1 ") - tail.count(b"HTTP/1.1 ")
                st["ok"] += buf.count(b"HTTP/1.1 2") - tail.count(b"HTTP/1.1 2")
                st["tail"] = buf[-9:]
                if st["got"] >= st["want"]:
                    sel.unregister(s)
                    done += 1
    secs = time.monotonic() - t0
    got = sum(st["got"] for st in state)
    ok = sum(st["ok"] for st in state)
    for st in state:
        st["sock"].close()
    return got, ok, secs


def print_load(got, ok, secs, total, extra=""):
    print("LOAD n=%d secs=%.3f rate=%.0f non2xx=%d complete=%d%s"
          % (got, secs, got / secs if secs > 0 else 0, got - ok,
             1 if got == total else 0, extra))
    return 0 if got == total and ok == got else 1


def cmd_load(host, port, first, last, vsize, conns, timeout):
    first, last, vsize = int(first), int(last), int(vsize)
    head = "PUT /%s HTTP/1.1\r\nHost: b\r\nContent-Length: %d\r\n\r\n%s"

    def make(i, now):
        return head % (key(i), vsize, value(i, vsize))
    got, ok, secs = load_requests(host, int(port), first, last,
                                  max(1, int(conns)), float(timeout), make)
    return print_load(got, ok, secs, last - first)


def list_key(i, per):
    """The listing workload's keys: PER keys under each prefix p%04d/."""
    return "p%04d/k%09d" % (i // per, i)


def cmd_load_list(host, port, n, start, per, vsize, conns, timeout, kind):
    n, start, per, vsize = int(n), int(start), int(per), int(vsize)
    if kind == "kvd":
        head = "PUT /%s HTTP/1.1\r\nHost: b\r\nContent-Length: %d\r\n\r\n%s"

        def make(j, now):
            i = (j + start) % n
            return head % (list_key(i, per), vsize, value(i, vsize))
    elif kind == "etcd":
        # etcd's v2 keys API: a form PUT; each prefix is a directory.
        head = ("PUT /v2/keys/%s HTTP/1.1\r\nHost: b\r\nContent-Type: "
                "application/x-www-form-urlencoded\r\nContent-Length: %d"
                "\r\n\r\nvalue=%s")

        def make(j, now):
            i = (j + start) % n
            return head % (list_key(i, per), vsize + 6, value(i, vsize))
    else:
        raise SystemExit("load-list: kind is kvd or etcd")
    got, ok, secs = load_requests(host, int(port), 0, n,
                                  max(1, int(conns)), float(timeout), make)
    return print_load(got, ok, secs, n)


def cmd_load_ttl(host, port, first, last, vsize, conns, timeout,
                 expire_at, spread):
    """PUT t%015d?ttl=S, S chosen when the request is built so that key i
    expires at EXPIRE_AT + (i % 1000) / 1000 * SPREAD (wall clock, give or
    take half a second: S is whole seconds).  late counts the keys sent
    less than a second before their time, whose S had to be 1."""
    first, last, vsize = int(first), int(last), int(vsize)
    expire_at, spread = float(expire_at), float(spread)
    head = ("PUT /t%015d?ttl=%d HTTP/1.1\r\nHost: b\r\nContent-Length: %d"
            "\r\n\r\n%s")
    stats = {"late": 0, "min": None, "max": None}

    def make(i, now):
        s = int(round(expire_at + (i % 1000) * spread / 1000.0 - now))
        if s < 1:
            s = 1
            stats["late"] += 1
        if stats["min"] is None or s < stats["min"]:
            stats["min"] = s
        if stats["max"] is None or s > stats["max"]:
            stats["max"] = s
        return head % (i, s, vsize, value(i, vsize))
    got, ok, secs = load_requests(host, int(port), first, last,
                                  max(1, int(conns)), float(timeout), make)
    return print_load(got, ok, secs, last - first,
                      " late=%d ttl_min=%s ttl_max=%s"
                      % (stats["late"], stats["min"], stats["max"]))


def cmd_count(kind):
    """Entries in the listing answer on stdin: kvd's object or array, or
    the children of etcd v2's directory node.  Prints -1 if it is not one."""
    try:
        doc = json.load(sys.stdin)
    except ValueError:
        print(-1)
        return 1
    if kind == "etcd":
        doc = doc.get("node", {}).get("nodes", []) if isinstance(doc, dict) \
            else None
    print(len(doc) if isinstance(doc, (dict, list)) else -1)
    return 0


def cmd_resp(first, last, vsize):
    first, last, vsize = int(first), int(last), int(vsize)
    out = sys.stdout.buffer
    batch = []
    for i in range(first, last):
        k, v = key(i), value(i, vsize)
        batch.append("*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n"
                     % (len(k), k, len(v), v))
        if len(batch) >= 10000:
            out.write("".join(batch).encode())
            batch = []
    out.write("".join(batch).encode())
    out.flush()
    return 0


def http_get(port, path, timeout=1.0):
    """One GET on a new connection: (status, body), or (0, b"")."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(("GET %s HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n"
                       % path).encode())
            buf = b""
            while len(buf) < 1 << 20:
                d = s.recv(65536)
                if not d:
                    break
                buf += d
    except OSError:
        return 0, b""
    head, _, body = buf.partition(b"\r\n\r\n")
    try:
        return int(head.split(b" ", 2)[1]), body
    except (IndexError, ValueError):
        return 0, b""


def cmd_ready_kvd(port, t0_ns, k, expected, timeout):
    port, t0, timeout = int(port), int(t0_ns), float(timeout)
    deadline = time.monotonic() + timeout
    health = False
    while time.monotonic() < deadline:
        if not health:
            health = http_get(port, "/_health")[0] == 200
        if health:
            st, body = http_get(port, "/" + k)
            if st == 200 and body == expected.encode():
                print("%.4f" % ((time.time_ns() - t0) / 1e9))
                return 0
        time.sleep(0.002)
    print("timeout")
    return 1


def redis_cmd(s, cmd):
    s.sendall(cmd.encode() + b"\r\n")
    buf = b""
    while not buf.endswith(b"\r\n") and len(buf) < 4096:
        d = s.recv(4096)
        if not d:
            break
        buf += d
    return buf.decode(errors="replace").strip()


def cmd_ready_redis(port, t0_ns, dbsize, timeout):
    port, t0, timeout = int(port), int(t0_ns), float(timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                while time.monotonic() < deadline:
                    if redis_cmd(s, "PING") == "+PONG" and \
                            redis_cmd(s, "DBSIZE") == ":%s" % dbsize:
                        print("%.4f" % ((time.time_ns() - t0) / 1e9))
                        return 0
                    time.sleep(0.002)
        except OSError:
            time.sleep(0.002)
    print("timeout")
    return 1


def cmd_fsync(d, secs):
    path = os.path.join(d, "fsync-probe")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    buf = b"x" * 4096
    os.pwrite(fd, buf, 0)
    os.fsync(fd)
    lat = []
    end = time.monotonic() + float(secs)
    while time.monotonic() < end and len(lat) < 100000:
        t = time.perf_counter()
        os.pwrite(fd, buf, 0)
        os.fdatasync(fd)
        lat.append(time.perf_counter() - t)
    os.close(fd)
    os.unlink(path)
    lat.sort()
    n = len(lat)
    med = lat[n // 2]
    print("FSYNC ops=%.0f p50_ms=%.3f p99_ms=%.3f n=%d"
          % (1 / med, med * 1e3, lat[min(n - 1, int(n * 0.99))] * 1e3, n))
    return 0


def main(argv):
    cmds = {"load": (cmd_load, 7), "resp": (cmd_resp, 3),
            "load-list": (cmd_load_list, 9), "load-ttl": (cmd_load_ttl, 9),
            "count": (cmd_count, 1),
            "ready-kvd": (cmd_ready_kvd, 5), "ready-redis": (cmd_ready_redis, 4),
            "fsync": (cmd_fsync, 2)}
    if len(argv) >= 2 and argv[1] == "value" and len(argv) == 4:
        print(value(int(argv[2]), int(argv[3])))
        return 0
    if len(argv) < 2 or argv[1] not in cmds or len(argv) - 2 != cmds[argv[1]][1]:
        sys.stderr.write(__doc__)
        return 2
    return cmds[argv[1]][0](*argv[2:])


if __name__ == "__main__":
    sys.exit(main(sys.argv))
