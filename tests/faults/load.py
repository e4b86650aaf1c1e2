#!/usr/bin/env python3
"""Write load with an acknowledged-write log, for the fault scripts.

    load.py PORT LOG SECONDS [THREADS]

THREADS writer threads (default 4) each own 40 keys, t<N>-k<I>, and PUT
the values t<N>-n<COUNT>-<padding> to them in turn, one request at a time
on a keep-alive connection to 127.0.0.1:PORT.  Every acknowledged PUT (201
or 204) is appended to LOG as one line "KEY COUNT" (flushed; LOG should not
live on the file system under test).  A thread stops after SECONDS, or at
the first error answer or broken connection (which is expected once the
disk is shut down or kvd is killed).  Prints one summary line.

    load.py --verify PORT LOG

Reads GET / from 127.0.0.1:PORT and checks every key in LOG: kvd must
hold the last acknowledged COUNT of the key, or the value of its thread's
next write (in flight, or answered with an error, when the disk or the
process died: its fate is unknown).  Prints a summary and
"LOST n" when acknowledged writes are missing; exits 0 when none is lost,
1 when some are, 2 on any other problem.
"""

import json
import re
import socket
import sys
import threading
import time

KEYS_PER_THREAD = 40


def request(sock, buf, method, path, body=b""):
    head = "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n\r\n" % (
        method, path, len(body))
    sock.sendall(head.encode() + body)
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    i = buf.index(b"\r\n\r\n")
    head, rest = bytes(buf[:i]), buf[i + 4:]
    status = int(head.split(b" ", 2)[1])
    n = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            n = int(value.strip())
    while len(rest) < n:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed in body")
        rest += chunk
    body, rest = bytes(rest[:n]), rest[n:]
    buf[:] = rest
    return status, body


def writer(port, tid, secs, log, lock, stats):
    deadline = time.monotonic() + secs
    acked = 0
    why = "time"
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = bytearray()
        for n in range(10_000_000):
            if time.monotonic() > deadline:
                break
            key = "t%d-k%d" % (tid, n % KEYS_PER_THREAD)
            value = ("t%d-n%d-" % (tid, n) + "p" * (n % 7 * 300)).encode()
            status, _ = request(sock, buf, "PUT", "/" + key, value)
            if status not in (201, 204):
                why = "status %d" % status
                with lock:
                    log.write("# %s %d %d\n" % (key, n, status))
                    log.flush()
                break
            with lock:
                log.write("%s %d\n" % (key, n))
                log.flush()
            acked += 1
    except (OSError, ConnectionError, ValueError) as e:
        why = type(e).__name__
    stats.append((tid, acked, why))


def load(port, path, secs, threads):
    lock = threading.Lock()
    stats = []
    with open(path, "a") as log:
        ts = [threading.Thread(target=writer, args=(port, t, secs, log, lock, stats), daemon=True)
              for t in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(secs + 30)
    print("load: %d acknowledged writes; threads ended by %s"
          % (sum(a for _, a, _ in stats), sorted(set(w for _, _, w in stats))))
    return 0


def verify(port, path):
    last = {}      # key -> last acknowledged count
    thread_n = {}  # thread -> its highest acknowledged count
    refused = {}   # thread -> (count, status) of the write answered with an error
    with open(path) as f:
        for line in f:
            if line.startswith("# "):
                _, key, n, status = line.split()
                refused[key.split("-")[0]] = (int(n), int(status))
                continue
            key, n = line.split()
            n = int(n)
            last[key] = max(last.get(key, -1), n)
            tid = key.split("-")[0]
            thread_n[tid] = max(thread_n.get(tid, -1), n)
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    status, body = request(sock, bytearray(), "GET", "/")
    if status != 200:
        print("verify: GET / answered %d: %r" % (status, body[:200]))
        return 2
    state = json.loads(body)
    lost, landed, landed_refused = [], 0, []
    for key in sorted(set(last) | set(state)):
        m = re.fullmatch(r"(t\d+)-k(\d+)", key)
        if not m:
            print("verify: unexpected key %r" % key)
            return 2
        tid, idx = m.group(1), int(m.group(2))
        # Each thread writes one request at a time: the only write that
        # may be on disk without an acknowledgment is its next one.
        inflight = thread_n.get(tid, -1) + 1
        want = last.get(key)
        v = state.get(key)
        got = None
        if v is not None:
            vm = re.match(r"(t\d+)-n(\d+)-", v)
            if not vm or vm.group(1) != tid or int(vm.group(2)) % KEYS_PER_THREAD != idx:
                print("verify: key %s holds a value never written: %r" % (key, v[:60]))
                return 2
            got = int(vm.group(2))
        if got is not None and got == inflight:
            landed += 1
            if refused.get(tid, (None,))[0] == got:
                landed_refused.append("%s n%d (answered %d)" % (key, got, refused[tid][1]))
            continue
        if want is None and got is None:
            continue
        if got is None or (want is not None and got < want):
            lost.append((key, want, got))
        elif got != want:
            print("verify: key %s holds n%d: acknowledged n%s, in flight n%d"
                  % (key, got, want, inflight))
            return 2
    print("verify: %d keys with acknowledged writes, %d keys in kvd, %d in-flight writes "
          "landed, LOST %d" % (len(last), len(state), landed, len(lost)))
    if landed_refused:
        print("verify: writes answered with an error that are there after the restart: %s"
              % ", ".join(landed_refused))
    for key, n, got in lost[:10]:
        print("  %s: acknowledged n%d, kvd has %s" % (key, n, "nothing" if got is None else "n%d" % got))
    return 1 if lost else 0


def main(argv):
    if len(argv) >= 2 and argv[1] == "--verify":
        return verify(int(argv[2]), argv[3])
    port, path, secs = int(argv[1]), argv[2], float(argv[3])
    threads = int(argv[4]) if len(argv) > 4 else 4
    return load(port, path, secs, threads)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
