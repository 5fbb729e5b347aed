"""MinIO's own functional test program (minio-py's tests/functional/tests.py, release 7.2.20, read unmodified
from its source package, which `make` downloads into .venv/sdists; RUNNER draws its random data faster) against a
real node and `xsc s3 serve`: every result PASS or NA (NotImplemented), never FAIL.  Its default set of tests:
MINT_MODE=full adds, among others, a listing of 2,000 objects put and removed one by one, which takes longer than a
test may on a loaded machine."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

# The program imports minio in its own process: this one only asks whether it is installed (importing it would cost
# every test process's collection ~0.2 s of CPU).
pytestmark = [pytest.mark.skipif(importlib.util.find_spec("minio") is None,
                                 reason="minio is in the test extra: pip install -e '.[test]'"),
              pytest.mark.slow, pytest.mark.timeout(1800)]  # an 11 MiB multipart put, a loaded machine
SDIST = Path(sys.prefix) / "sdists" / "minio-7.2.20.tar.gz"
PROGRAM = "minio-7.2.20/tests/functional/tests.py"


# The program as its `__main__` runs it, but with its objects' random letters drawn from os.urandom: its own
# generator shuffles a list of one letter object per byte, ~1 s of the client's CPU per MiB of the 12 MiB puts.
RUNNER = """
import importlib.util, os, sys
spec = importlib.util.spec_from_file_location("minio_functional", sys.argv[1])
program = importlib.util.module_from_spec(spec)
spec.loader.exec_module(program)
LETTERS = bytes(97 + i % 26 for i in range(256))
program._get_random_string = lambda size: os.urandom(size).translate(LETTERS).decode()
try:
    program.main()
except program.TestFailed:
    sys.exit(1)
"""


def functional_tests(into: Path) -> Path:
    assert SDIST.exists(), f"{SDIST} is missing: `make .venv/.installed` downloads minio-py's source package"
    with tarfile.open(SDIST) as sdist:
        program = into / "minio_functional.py"
        program.write_bytes(sdist.extractfile(PROGRAM).read())
    return program


def test_minio_functional_tests_pass_or_are_not_applicable(gateway, tmp_path) -> None:
    program = functional_tests(tmp_path)
    env = {"SERVER_ENDPOINT": gateway.front.url.removeprefix("http://"), "ACCESS_KEY": gateway.key["access_key"],
           "SECRET_KEY": gateway.key["secret_key"], "ENABLE_HTTPS": "0",
           "DATA_DIR": str(tmp_path / "no-mint-data"), "PATH": "/usr/bin:/bin"}
    run = subprocess.run([sys.executable, "-c", RUNNER, str(program)], env=env, cwd=tmp_path, capture_output=True, text=True,
                         timeout=1700)
    results = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    failed = [(r["name"], r.get("message", "")[:300]) for r in results if r["status"] not in ("PASS", "NA")]
    assert failed == [] and run.returncode == 0, (failed, run.stdout[-3000:], run.stderr[-3000:])
    assert len(results) >= 22 and sum(r["status"] == "PASS" for r in results) >= 13, results
