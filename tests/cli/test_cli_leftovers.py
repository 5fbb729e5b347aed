"""`make demo` leaves nothing in the temp dir, however it ends (the node's single
"listening" line is checked in test_cli_options)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_demo_removes_its_temp_dir(tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    log = tmp_path / "calls"
    # An xsc that records its calls and fails the first `devnet up`: the demo stops there, as on any error.
    fake = tmp_path / "xsc"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {log}\n[ "$1 $2" = "devnet up" ] && exit 1\nexit 0\n')
    fake.chmod(0o755)
    result = subprocess.run(["bash", str(REPO / "scripts" / "demo.sh")], capture_output=True, timeout=60,
                            env={**os.environ, "TMPDIR": str(tmp), "XSC": str(fake)})
    assert result.returncode != 0
    calls = log.read_text().splitlines()
    assert calls[0].startswith("devnet up") and calls[-1].startswith("devnet down")  # it stopped the nodes
    assert list(tmp.iterdir()) == []
