"""The snippets of docs/s3.md ("Use XSC from S3 tools"), run as written against a real gateway."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .test_s3_tools import clean_env, tool

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]  # real processes and tools: slow on a loaded machine
DOC = Path(__file__).resolve().parents[2] / "docs" / "s3.md"
MARKED = re.compile(r"<!-- s3-docs-test: (\w+) -->\n```(\w+)\n(.*?)\n```", re.S)
TOOLS = {"rclone": ("rclone", "rclone"), "awscli": ("aws", "awscli"), "s3cmd": ("s3cmd", "s3cmd")}


def snippets() -> dict[str, tuple[str, str]]:
    return {name: (lang, code) for name, lang, code in MARKED.findall(DOC.read_text())}


def test_every_tool_has_a_marked_snippet() -> None:
    assert set(snippets()) == {"rclone", "awscli", "s3cmd", "boto3"}



@pytest.mark.parametrize("name", ["rclone", "awscli", "s3cmd", "boto3"])
def test_snippet_runs(gateway, tmp_path, name: str) -> None:
    lang, code = snippets()[name]
    import certifi

    # A user's shell may name a CA bundle for the AWS CLI (rclone will not start with one set: its snippet says so).
    env = clean_env(XSC_S3_URL=gateway.front.url, XSC_S3_ACCESS_KEY=gateway.key["access_key"],
                    XSC_S3_SECRET_KEY=gateway.key["secret_key"], HOME=str(tmp_path),
                    AWS_CONFIG_FILE=str(tmp_path / "none"), AWS_EC2_METADATA_DISABLED="true", AWS_PAGER="",
                    AWS_CA_BUNDLE=certifi.where())
    if name in TOOLS:
        binary = tool(*TOOLS[name])
        env["PATH"] = f"{os.path.dirname(binary)}:{env['PATH']}"
    command = ["bash", "-euo", "pipefail", "-c", code] if lang == "sh" else [sys.executable, "-c", code]
    result = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, timeout=300)
    assert result.returncode == 0, result.stderr.decode()[-2000:]
