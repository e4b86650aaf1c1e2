#!/usr/bin/env python3
"""Runs one integration case:  run.py FILE SENTENCE

Imports FILE (tests/integration/test_<area>.py), runs the case registered
with @case("SENTENCE"), then stops every kvd the case started and checks
their exit status and stderr for sanitizer reports.  Prints "ok" and exits 0,
or prints the traceback / problems and exits 1.  A case that called
harness.skip(reason) and had no problem at teardown prints "skipped: reason"
and exits 77, which ctest reports as skipped (see harness.skip for when a
skip fails instead, under CI=true).

run.py FILE          lists the sentences of FILE.
"""

import atexit
import importlib.util
import os
import signal
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True  # keep the source tree clean

import harness  # noqa: E402


def load(path):
    path = os.path.abspath(path)
    name = os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return harness.cases_of(name)


def _on_alarm(signum, frame):
    raise harness.CaseTimeout("case ran out of time")


def _on_term(signum, frame):
    raise KeyboardInterrupt("run.py got signal %d" % signum)


def main(argv):
    if len(argv) not in (2, 3):
        sys.stderr.write("usage: run.py FILE [SENTENCE]\n")
        return 2
    atexit.register(harness.kill_all)
    cases = load(argv[1])
    if len(argv) == 2:
        for s in cases:
            print(s)
        return 0
    fn = cases.get(argv[2])
    if fn is None:
        print("no case %r in %s" % (argv[2], argv[1]))
        return 1
    signal.signal(signal.SIGTERM, _on_term)
    signal.signal(signal.SIGHUP, _on_term)
    signal.signal(signal.SIGALRM, _on_alarm)
    # Fail with a traceback a little before ctest would kill us.
    signal.alarm(max(5, fn.timeout - max(5, fn.timeout // 10)))
    ok = True
    skipped = None
    t0 = time.monotonic()
    harness.CURRENT_CASE = fn
    try:
        fn()
    except harness.Skip as e:
        skipped = str(e) or "(no reason given)"
    except BaseException:
        ok = False
        traceback.print_exc()
    finally:
        signal.alarm(0)
        try:
            problems = harness.teardown()
        except BaseException:
            ok = False
            problems = []
            traceback.print_exc()
        finally:
            harness.kill_all()
    for p in problems:
        ok = False
        print("PROBLEM: " + p)
    if ok and skipped is not None:
        print("skipped: " + skipped, flush=True)
        sys.stderr.write("%.2fs\n" % (time.monotonic() - t0))
        return harness.SKIP_EXIT
    if ok:
        print("ok", flush=True)
        sys.stderr.write("%.2fs\n" % (time.monotonic() - t0))
        return 0
    print("FAILED (%.2fs)" % (time.monotonic() - t0))
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
