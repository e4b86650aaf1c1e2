#!/usr/bin/env python3
"""report.py RESULTS.jsonl META.txt OUTDIR - the table and the plots.

Reads the records tools/bench/run wrote (one JSON object per measurement),
prints one table (median and range over the repetitions, kvd/peer ratios,
targets met or not), writes it to OUTDIR/bench-latest.txt, and draws
OUTDIR/{conns,vsize,keys}.png with gnuplot.  Standard library only.
"""
import json
import os
import shutil
import statistics
import subprocess
import sys

# Workloads in table order: id -> (label, the peer whose numbers are "kvd").
WORKLOADS = [
    ("get64", "1 GET hit, 11 B, c64", "kvd"),
    ("get1", "2 GET, c1", "kvd"),
    ("put64", "3 durable PUT, c64", "kvd"),
    ("put1", "4 durable PUT, c1", "kvd"),
    ("mixed", "5 90% GET/10% PUT, c64", "kvd 90/10"),
    ("load", "6 load 1M keys", None),
    ("restart", "6 restart-to-ready, 1M", "kvd"),
    ("rss", "6 RSS after restart, 1M", "kvd"),
    ("image-mbs", "7 GET / of 1M keys", "kvd"),
    ("regen", "7 image rebuild, 1M", "kvd"),
    ("p99", "7 GET c64 vs rebuilds", "kvd regenerating"),
    ("cas", "8 If-Match PUT, c64", "kvd If-Match"),
    ("list-load", "9 load for listing", None),
    ("list", "9 list 1000 of 1M, c1", "kvd"),
    ("ttl-load", "10 load 1M keys w/ TTL", None),
    ("ttl", "10 GET c64 in expiry", "kvd expiring"),
    ("ttl-gone", "10 expired keys removed", "kvd"),
    ("watchidle", "11 PUT c64 w/ watchers", "kvd watchers"),
    ("watchmem", "11 memory per watcher", "kvd"),
    ("fanout", "12 fan-out, 1k watchers", "kvd"),
    ("backup-mbs", "13 GET /_backup of 1M", "kvd"),
    ("backup-p99", "13 GET c64 vs backups", "kvd backing up"),
]
CURVES = [("conns-%d" % c, "C GET, %d conns" % c, "kvd")
          for c in (1, 16, 64, 256, 1024)]
CURVES += [("vsize-get-%d" % s, "V GET, %s value" % n, "kvd")
           for s, n in ((16, "16 B"), (1024, "1 KiB"), (65536, "64 KiB"))]
CURVES += [("vsize-put-%d" % s, "V durable PUT, %s" % n, "kvd")
           for s, n in ((16, "16 B"), (1024, "1 KiB"), (65536, "64 KiB"))]
KEYS = (1000, 100000, 1000000)

PEER_ORDER = ["kvd", "kvd --sync none", "kvd GET-only", "kvd idle",
              "kvd no watchers",
              "kvd after expiry", "kvd PUT", "kvd PUT /k, wrk", "nginx",
              "webdis+redis", "redis AOF always", "redis", "etcd v2",
              "disk fdatasync"]
# What a run's background hook counted (the record's bg), by workload.
BG_LABEL = {"p99": "rebuilds/run", "ttl": "expired in run",
            "watchidle": "kvd_watches mid-run", "backup-p99": "backups/run"}

# The targets.  (workload, peer row, metric, op, threshold, text).  The
# ratio is kvd's metric over the peer row's; with peer None the threshold
# is an absolute value of kvd's row.  Metrics: rps, p50, p99, val.
# Issue 3's targets, with issue 10's for durable writes: a write is one
# append to the revision log and one fdatasync, so the disk probe (4 KiB
# overwritten and flushed, in a loop) is the physical limit of one flush
# per request.
TARGETS = [
    ("get64", "nginx", "rps", ">=", 1.0, "req/s >= 1.0x nginx"),
    ("get64", "webdis+redis", "rps", ">=", 2.0, "req/s >= 2x webdis"),
    ("get64", "etcd v2", "rps", ">=", 3.0, "req/s >= 3x etcd"),
    ("get1", "nginx", "p50", "<=", 1.2, "p50 <= 1.2x nginx"),
    ("put64", "redis AOF always", "rps", ">=", 1.25, ">= 1.25x redis AOF"),
    ("put64", "etcd v2", "rps", ">=", 5.0, "req/s >= 5x etcd"),
    ("put1", "etcd v2", "rps", ">=", 2.0, "req/s >= 2x etcd"),
    ("put1", "disk fdatasync", "rps", ">=", 0.6, ">= 0.6x disk flush"),
    ("mixed", "kvd GET-only", "rps", ">=", 0.8, ">= 0.8x GET-only"),
    ("restart", "redis", "val", "<=", 1.0, "time <= redis"),
    ("rss", "redis", "val", "<=", 1.0, "RSS <= redis"),
    ("image-mbs", None, "val", ">=", 477, ">= 500 MB/s"),
    ("regen", None, "val", "<=", 0.5, "<= 0.5 s"),
    ("p99", "kvd idle", "p99", "<=", 2.0, "p99 <= 2x idle"),
    # Issue 11: a compare-and-set costs about what a plain durable write
    # does, expiring a million keys never stalls the readers.
    ("cas", "kvd PUT", "rps", ">=", 0.9, "req/s >= 0.9x PUT"),
    ("ttl", "kvd idle", "p99", "<=", 2.0, "p99 <= 2x idle"),
    # Issue 12: idle watchers cost the writers little and little memory;
    # a backup does not stall the readers.  (fanout has no target: it
    # compares the delivery latency with etcd's.)
    ("watchidle", "kvd no watchers", "rps", ">=", 0.9, "req/s >= 0.9x none"),
    ("watchmem", None, "val", "<=", 8.0, "<= 8 KiB/watcher"),
    ("backup-p99", "kvd idle", "p99", "<=", 2.0, "p99 <= 2x idle"),
]


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt_num(v, unit=""):
    if v is None:
        return "-"
    if unit == "s":
        return "%.3f s" % v
    if unit in ("ms", "KiB") and v < 100:
        return "%.2f %s" % (v, unit)
    if unit:
        return "%.0f %s" % (v, unit)
    if v >= 100:
        return "%.0f" % v
    if v >= 10:
        return "%.1f" % v
    return "%.2f" % v


def fmt_ms(v):
    if v is None:
        return "-"
    return "%.3f" % v if v < 10 else "%.1f" % v


class Row:
    def __init__(self, wl, peer, recs):
        self.wl, self.peer = wl, peer
        # A measurement that cannot be made yet (a missing endpoint).
        self.na = next((r["na"] for r in recs if "na" in r), None)
        recs = [r for r in recs if "na" not in r]
        ok = [r for r in recs if "fail" not in r]
        self.fail = [r["fail"] for r in recs if "fail" in r]
        self.n = len(ok)
        self.unit = next((r.get("unit") for r in ok if r.get("unit")), "")
        key = "val" if any("val" in r for r in ok) else "rps"
        vals = [r[key] for r in ok if key in r]
        self.main = med(vals)
        self.lo = min(vals) if vals else None
        self.hi = max(vals) if vals else None
        self.rps = med([r.get("rps") for r in ok])
        self.val = med([r.get("val") for r in ok])
        self.p50 = med([r.get("p50_ms") for r in ok])
        self.p99 = med([r.get("p99_ms") for r in ok])
        self.cpu = med([r.get("cpu_us") for r in ok])
        self.oth = med([r.get("oth") for r in ok])
        notes = []
        errs = sum(r.get("errs", 0) for r in ok)
        non2xx = sum(r.get("non2xx", 0) for r in ok)
        if errs:
            notes.append("sock errs %d" % errs)
        if non2xx:
            notes.append("non-2xx %d" % non2xx)
        wb = med([r.get("wb_req") for r in ok])
        if wb and (wl.startswith("put") or wl in ("cas", "watchidle")):
            notes.append("disk %.0f B/req" % wb)
        if any("bg" in r for r in ok):
            notes.append("%s %s" % (BG_LABEL.get(wl, "hook"), "/".join(
                str(r["bg"]) for r in ok if "bg" in r)))
        if any(r.get("gets") for r in ok):  # casload's compare-and-set
            notes.append("412s %d" % sum(r.get("n412", 0) for r in ok))
        if any(r.get("bad") for r in ok):
            notes.append("other errors %d" % sum(r.get("bad", 0) for r in ok))
        hist = med([r.get("hist_us") for r in ok])
        if hist is not None:
            notes.append("server %.3f ms (%s mean)"
                         % (hist / 1000, next(r["hist"] for r in ok
                                              if "hist" in r)))
        use = [(n, med([r.get(f) for r in ok])) for n, f in
               (("srv", "srv_pct"), ("cli", "cli_pct"), ("oth", "oth"))]
        if any(v is not None for _, v in use):
            notes.insert(0, " ".join("%s %.0f%%" % (n, v) for n, v in use
                                     if v is not None))
        for r in ok:
            if r.get("note") and r["note"] not in notes:
                notes.append(r["note"])
                break
        if self.fail and not ok:
            notes.append("FAIL: " + self.fail[0])
        elif self.na and not ok:
            notes.append("n/a: " + self.na)
        self.notes = "; ".join(notes)

    def metric(self, m):
        return {"rps": self.rps, "p50": self.p50, "p99": self.p99,
                "val": self.val}[m]


def load(path):
    recs = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    recs.append(json.loads(line))
                except ValueError:
                    pass
    return recs


def build_rows(recs):
    """{wl: [Row...]} in the order the peers first appear."""
    rows = {}
    for r in recs:
        rows.setdefault(r["wl"], {}).setdefault(r["peer"], []).append(r)
    return {wl: [Row(wl, p, rs) for p, rs in peers.items()]
            for wl, peers in rows.items()}


def judge(rows):
    """{(wl, peer): (target text, ratio, 'yes'/'no'/'-')}."""
    out = {}
    for wl, peer, m, op, thr, text in TARGETS:
        subject = dict((w, s) for w, _, s in WORKLOADS).get(wl, "kvd")
        byp = {r.peer: r for r in rows.get(wl, [])}
        k = byp.get(subject)
        ref = byp.get(peer) if peer else k
        key = (wl, peer or subject)
        if not k or not ref or k.metric(m) is None or ref.metric(m) is None:
            if ref or k:
                out[key] = (text, None, "n/a")
            continue
        v = k.metric(m) if peer is None else (
            k.metric(m) / ref.metric(m) if ref.metric(m) else None)
        if v is None:
            out[key] = (text, None, "n/a")
            continue
        met = v >= thr if op == ">=" else v <= thr
        out[key] = (text, v if peer else None, "yes" if met else "no")
    return out


def table(rows, meta):
    verdict = judge(rows)
    fmt = "%-23s %-16s %11s %-15s %7s %7s %6s %8s  %-19s %-8s %s"
    head = (fmt % ("workload", "peer", "req/s|value", "range", "p50 ms",
                   "p99 ms", "cpu us", "kvd/peer", "target", "met", "notes"))
    lines = [head, "-" * len(head)]
    order = WORKLOADS + CURVES + [("keys-%d" % n, "K random GET, %s keys"
                                   % {1000: "1k", 100000: "100k",
                                      1000000: "1M"}.get(n, n), "kvd")
                                  for n in KEYS]
    known = set(w for w, _, _ in order)
    order += [(w, w, "kvd") for w in rows if w not in known]
    summary = []
    for wl, label, subject in order:
        rs = rows.get(wl)
        if not rs:
            continue
        k = next((r for r in rs if r.peer == subject), None)
        # kvd's own row first, then the peers in a fixed order.
        rs = sorted(rs, key=lambda r: (r.peer != subject,
                                       PEER_ORDER.index(r.peer)
                                       if r.peer in PEER_ORDER else 99))
        for r in rs:
            if r.main is None:
                val, rng = ("n/a" if r.na and not r.fail else "FAIL"), "-"
            else:
                val = fmt_num(r.main, r.unit)
                rng = ("%s..%s" % (fmt_num(r.lo), fmt_num(r.hi))
                       if r.n > 1 else "n=1")
            ratio = "-"
            if k and r is not k and k.main and r.main:
                ratio = "%.2f" % (k.main / r.main)
            tgt, tv, met = verdict.get((wl, r.peer), ("", None, ""))
            if tgt:
                summary.append((label, r.peer, tgt, met))
                if tv is not None:
                    met = "%s %.2f" % (met, tv)
            lines.append(fmt % (label[:23], r.peer[:16], val, rng,
                                fmt_ms(r.p50), fmt_ms(r.p99),
                                "%.1f" % r.cpu if r.cpu else "-", ratio,
                                tgt, met, r.notes))
            label = ""
    hdr = [
        "# kvd benchmark %s   %s" % (meta.get("date", ""), meta.get("cmd", "")),
        "# host: %s; disk %s" % (meta.get("host", ""), meta.get("disk", "")),
        "# kvd %s; %s" % (meta.get("kvd", ""), meta.get("versions", "")),
        "# %s" % meta.get("run", ""),
        "# Servers pinned to CPU 0, load generators to CPU 1, loopback only. wrk -t1 keep-alive;",
        "# redis-benchmark for redis. req/s|value: median over the runs, range = min..max;",
        "# p50/p99/cpu: medians. cpu us = server CPU time (utime+stime, every process",
        "# of that peer) per request. kvd/peer = kvd's median / this row's (req/s or value).",
        "# target/met: kvd's row against this row (the ratio follows yes/no); see TARGETS in",
        "# tools/bench/report.py.",
        "# notes: srv/cli/oth = CPU used by the server, the load generator and every other process",
        "# on this shared machine during the run (100% = one core; oth above ~10% means noise).",
        "",
    ]
    count = {v: sum(1 for s in summary if s[3] == v) for v in ("yes", "no", "n/a")}
    foot = ["", "# targets: %d met, %d not met, %d not measured"
            % (count["yes"], count["no"], count["n/a"])]
    return "\n".join(hdr + lines + foot) + "\n"


def plots(rows, outdir):
    """Throughput (left axis, median with the range as bars) and the server's
    CPU time per request (right axis, dotted), which the noise of a shared
    machine disturbs far less than throughput."""
    gp = shutil.which("gnuplot")
    if not gp:
        sys.stderr.write("report: no gnuplot, no plots\n")
        return

    def pt(wl, peer="kvd"):
        r = next((r for r in rows.get(wl, []) if r.peer == peer), None)
        if not r or not r.main:
            return None
        return (r.main, r.lo, r.hi, r.cpu if r.cpu else float("nan"))

    def write(name, xs, series):
        """NAME.dat: x, then per series: median, low, high, cpu us/req."""
        path = os.path.join(outdir, name + ".dat")
        with open(path, "w") as f:
            f.write("# x " + " ".join("%s_med %s_lo %s_hi %s_cpu_us"
                                      % ((s,) * 4) for s, _ in series) + "\n")
            for x in xs:
                cols = []
                for _, fn in series:
                    p = fn(x)
                    cols.append("%g %g %g %g" % p if p else "NaN NaN NaN NaN")
                f.write("%s %s\n" % (x, " ".join(cols)))
        return path

    def curves(path, series):
        """gnuplot plot clauses for [(title, first column)] of PATH."""
        out = []
        for i, (title, c) in enumerate(series):
            out.append("'%s' u 1:%d:%d:%d w yerrorlines lw 2 lc %d t '%s req/s'"
                       % (path if i == 0 else "", c, c + 1, c + 2, i + 1, title))
            out.append("'' u 1:%d axes x1y2 w linespoints dt 3 lw 2 lc %d "
                       "t '%s cpu us/req'" % (c + 3, i + 1, title))
        return ", ".join(out)

    probe = subprocess.run([gp, "-e", "set terminal"], capture_output=True,
                           text=True)
    term = ("set terminal pngcairo size 860,520 font 'sans,10'\n"
            if "pngcairo" in probe.stdout + probe.stderr
            else "set terminal png size 860,520\n")
    common = term + (
        "set grid\nset key outside bottom center horizontal\n"
        "set logscale x\nset format y '%.0s%c'\nset yrange [0:*]\n"
        "set ylabel 'requests/s (median; bars: min..max)'\n"
        "set y2label 'server CPU us per request (dotted)'\n"
        "set y2range [0:*]\nset y2tics\nset ytics nomirror\n")
    jobs = []
    conns = [1, 16, 64, 256, 1024]
    d = write("conns", conns, [("kvd", lambda c: pt("conns-%d" % c)),
                               ("nginx", lambda c: pt("conns-%d" % c, "nginx"))])
    if any(pt("conns-%d" % c) for c in conns):
        jobs.append(common + (
            "set output '%s'\nset title 'GET, 11-byte value: throughput vs "
            "keep-alive connections'\nset xlabel 'connections'\n"
            "set xtics (1,16,64,256,1024)\nset xrange [0.7:1500]\nplot "
            % os.path.join(outdir, "conns.png"))
            + curves(d, [("kvd GET", 2), ("nginx return 200", 6)]) + "\n")
    sizes = [16, 1024, 65536]
    d = write("vsize", sizes, [("get", lambda s: pt("vsize-get-%d" % s)),
                               ("put", lambda s: pt("vsize-put-%d" % s))])
    if any(pt("vsize-get-%d" % s) for s in sizes):
        jobs.append(common + (
            "set output '%s'\nset title 'kvd, 64 connections: throughput vs "
            "value size'\nset xlabel 'value size'\n"
            "set xtics ('16 B' 16, '1 KiB' 1024, '64 KiB' 65536)\n"
            "set xrange [10:100000]\nplot " % os.path.join(outdir, "vsize.png"))
            + curves(d, [("GET", 2), ("durable PUT", 6)]) + "\n")
    d = write("keys", KEYS, [("kvd", lambda n: pt("keys-%d" % n))])
    if any(pt("keys-%d" % n) for n in KEYS):
        jobs.append(common + (
            "set output '%s'\nset title 'kvd, 64 connections: GET of random "
            "keys vs number of keys'\n"
            "set xlabel 'keys in the store (16-byte keys, 100-byte values)'\n"
            "set xtics ('1k' 1000, '100k' 100000, '1M' 1000000)\n"
            "set xrange [500:2000000]\nplot " % os.path.join(outdir, "keys.png"))
            + curves(d, [("kvd GET", 2)]) + "\n")
    for j in jobs:
        r = subprocess.run([gp], input=j, text=True, capture_output=True)
        if r.returncode != 0:
            sys.stderr.write("report: gnuplot: %s\n" % r.stderr.strip())


def main(argv):
    if len(argv) != 4:
        sys.stderr.write(__doc__)
        return 2
    recs = load(argv[1])
    meta = {}
    with open(argv[2]) as f:
        for line in f:
            k, _, v = line.rstrip("\n").partition("=")
            meta[k] = v
    outdir = argv[3]
    rows = build_rows(recs)
    text = table(rows, meta)
    with open(os.path.join(outdir, "bench-latest.txt"), "w") as f:
        f.write(text)
    sys.stdout.write(text)
    for old in ("conns.png", "vsize.png", "keys.png"):
        p = os.path.join(outdir, old)
        if os.path.exists(p):
            os.unlink(p)
    plots(rows, outdir)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
