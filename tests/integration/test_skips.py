"""The skip mechanism itself: a test that cannot run exits 77, ctest reports
that as skipped (SKIP_RETURN_CODE on every test), and under CI=true a
durability, fault or packaging test that would skip fails instead.

The fixtures in tests/skip/ are run as ctest runs them: the Python ones
through run.py, the C one (built plain and with KV_CI_STRICT) directly, the
shell one with bash.  Each is run without CI and with CI=true, whatever the
environment of this test."""

import json
import os
import subprocess
import sys

import harness
from harness import case

SKIP_DIR = os.path.join(harness.REPO, "tests", "skip")
RUN_PY = os.path.join(harness.HERE, "run.py")


def run(argv, ci):
    """Runs argv with CI=true (ci) or without CI.  Returns (rc, output)."""
    env = dict(os.environ)
    env.pop("CI", None)
    if ci:
        env["CI"] = "true"
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                       timeout=60, preexec_fn=harness._child_setup)
    out = p.stdout.decode("utf-8", "replace")
    print("$ %s%s\n%s(exit %d)" % ("CI=true " if ci else "", " ".join(argv), out, p.returncode))
    return p.returncode, out


def run_py(fixture, sentence, ci):
    return run([sys.executable, RUN_PY, os.path.join(SKIP_DIR, fixture), sentence], ci)


def fixture_bin(strict):
    path = os.environ.get("KV_SKIP_FIXTURE_STRICT" if strict else "KV_SKIP_FIXTURE")
    assert path and os.access(path, os.X_OK), \
        "KV_SKIP_FIXTURE[_STRICT] is not set to the built fixture (run under ctest)"
    return path


@case("a Python case that calls skip exits 77 after teardown and prints the reason")
def python_skip():
    rc, out = run_py("fixture_strict.py", "skips", ci=False)
    assert rc == 77, "exit %d, expected 77:\n%s" % (rc, out)
    assert "skipped: the fixture needs a tool that is missing\n" in out, out
    assert "\nok\n" not in "\n" + out and "Traceback" not in out, out
    rc, out = run_py("fixture_plain.py", "skips", ci=False)
    assert rc == 77, "exit %d, expected 77:\n%s" % (rc, out)
    assert "skipped: port 8080 is busy in the fixture\n" in out, out
    # A kvd the case started is stopped and checked first: still 77.
    rc, out = run_py("fixture_strict.py", "skips after starting a kvd", ci=False)
    assert rc == 77, "exit %d, expected 77:\n%s" % (rc, out)
    assert "skipped: the fixture skips with a kvd running\n" in out, out
    assert "PROBLEM" not in out, out
    # And a case that does not skip still passes.
    rc, out = run_py("fixture_strict.py", "passes", ci=False)
    assert rc == 0 and out.startswith("ok\n"), "exit %d:\n%s" % (rc, out)


@case("under CI=true a skip fails a case of a CI_STRICT module and still skips any other case")
def python_skip_ci():
    for sentence in ("skips", "skips after starting a kvd"):
        rc, out = run_py("fixture_strict.py", sentence, ci=True)
        assert rc == 1, "exit %d, expected 1:\n%s" % (rc, out)
        assert "AssertionError: skipped under CI=true, where this case must run: " in out, out
        assert not any(line.startswith("skipped: ") for line in out.splitlines()), out
        assert "FAILED" in out, out
    rc, out = run_py("fixture_plain.py", "skips", ci=True)
    assert rc == 77, "exit %d, expected 77 (not a CI_STRICT module):\n%s" % (rc, out)
    assert "skipped: port 8080 is busy in the fixture\n" in out, out
    rc, out = run_py("fixture_strict.py", "passes", ci=True)
    assert rc == 0, "exit %d:\n%s" % (rc, out)


@case("a C unit test that calls KV_SKIP exits 77, and 1 under CI=true in a KV_CI_STRICT file")
def c_skip():
    for strict in (False, True):
        exe = fixture_bin(strict)
        rc, out = run([exe, "skips"], ci=False)
        assert rc == 77, "%s: exit %d, expected 77:\n%s" % (exe, rc, out)
        assert out == "skipped: the fixture needs a tool that is missing\nskip skips\n", out
        rc, out = run([exe, "passes"], ci=True)
        assert (rc, out) == (0, "ok passes\n"), "%s: exit %d:\n%s" % (exe, rc, out)
        # Run without a name: every test runs, and a skip makes it 77.
        rc, out = run([exe], ci=False)
        assert rc == 77, "%s: exit %d, expected 77:\n%s" % (exe, rc, out)
        assert "ok passes\n" in out and "skip skips\n" in out, out
    rc, out = run([fixture_bin(False), "skips"], ci=True)
    assert rc == 77, "plain file under CI=true: exit %d, expected 77:\n%s" % (rc, out)
    rc, out = run([fixture_bin(True), "skips"], ci=True)
    assert rc == 1, "KV_CI_STRICT file under CI=true: exit %d, expected 1:\n%s" % (rc, out)
    assert ("skipped under CI=true, where this test must run: "
            "the fixture needs a tool that is missing\n") in out, out
    assert "skip skips" not in out, out


@case("a packaging script that skips a check exits 77, and 1 under CI=true")
def shell_skip():
    script = os.path.join(SKIP_DIR, "fixture.sh")
    rc, out = run(["bash", script, "skip"], ci=False)
    assert rc == 77, "exit %d, expected 77:\n%s" % (rc, out)
    assert "skip - the fixture needs a tool that is missing\n" in out, out
    assert out.endswith("1 passed, 0 failed, 1 skipped\n"), out
    rc, out = run(["bash", script, "skip"], ci=True)
    assert rc == 1, "exit %d, expected 1:\n%s" % (rc, out)
    assert ("FAIL - the fixture needs a tool that is missing "
            "(skipped under CI=true, where this test must run)\n") in out, out
    assert out.endswith("1 passed, 1 failed\n"), out
    for ci in (False, True):
        rc, out = run(["bash", script, "pass"], ci=ci)
        assert rc == 0 and out.endswith("2 passed, 0 failed\n"), "exit %d:\n%s" % (rc, out)
        rc, out = run(["bash", script, "fail"], ci=ci)
        assert rc == 1 and out.endswith("1 passed, 1 failed\n"), "exit %d:\n%s" % (rc, out)


@case("every registered test reports exit code 77 to ctest as a skip")
def skip_return_code():
    build, ctest = os.environ.get("KV_BUILD_DIR"), os.environ.get("KV_CTEST")
    assert build and ctest, "KV_BUILD_DIR and KV_CTEST are not set (run under ctest)"
    p = subprocess.run([ctest, "--test-dir", build, "--show-only=json-v1"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    assert p.returncode == 0, p.stderr.decode("utf-8", "replace")
    tests = json.loads(p.stdout)["tests"]
    labels, missing = {}, []
    for t in tests:
        props = {pr["name"]: pr["value"] for pr in t.get("properties", [])}
        for label in props.get("LABELS", []):
            labels[label] = labels.get(label, 0) + 1
        if str(props.get("SKIP_RETURN_CODE")) != "77":
            missing.append(t["name"])
    print("%d tests, by label: %r" % (len(tests), labels))
    assert not missing, "tests without SKIP_RETURN_CODE 77:\n" + "\n".join(missing)
    for label in ("unit", "integration", "fuzz", "packaging"):
        assert labels.get(label), "no %s test registered: %r" % (label, labels)
