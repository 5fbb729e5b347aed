"""The real tools, unmodified, against a real node and `xsc s3 serve`: rclone, the AWS CLI, s3cmd.

They are Debian packages (scripts/ci-deps.sh installs them); a test whose tool is missing is skipped
and says which package to install."""

from __future__ import annotations

import filecmp
import os
import shutil
import subprocess
from pathlib import Path

import pytest


pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]  # real processes and tools: slow on a loaded machine
MiB = 1024 * 1024


def tool(name: str, package: str) -> str:
    """The path of a working `name`, or skip saying how to get it."""
    for candidate in (f"/usr/bin/{name}", shutil.which(name)):
        if candidate and os.path.exists(candidate):
            try:
                if subprocess.run([candidate, "--version"], capture_output=True, timeout=60).returncode == 0:
                    return candidate
            except (OSError, subprocess.TimeoutExpired):
                continue
    pytest.skip(f"{name} is not installed: install the Debian package {package!r} (scripts/ci-deps.sh does)")



@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """A directory tree: nested dirs, a space and non-ASCII in names, an empty file, a multipart-sized file."""
    root = tmp_path_factory.mktemp("tree") / "tree"
    files = {"a/b/one.bin": 70_000, "a/b/two.bin": 1, "a/three.txt": 1000, "c/sp ace é.txt": 5, "empty": 0,
             "big.bin": 12 * MiB + 3}
    for name, size in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(size))
    return root


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without the machine's AWS/proxy settings (a CA bundle breaks plain-HTTP rclone)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "RCLONE_")) and "proxy" not in k.lower()}
    return {**env, **extra}


def run(cmd: list[str], env: dict[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, timeout=300)
    assert result.returncode == 0, f"{cmd[:3]} failed: {result.stderr.decode()[-2000:]}"
    return result


def same_tree(a: Path, b: Path) -> None:
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert files_a == files_b
    for rel in files_a:
        assert filecmp.cmp(a / rel, b / rel, shallow=False), rel


def test_rclone_sync_there_and_back_and_check(gateway, tree, tmp_path) -> None:
    rclone = tool("rclone", "rclone")
    env = clean_env(RCLONE_CONFIG_XSC_TYPE="s3", RCLONE_CONFIG_XSC_PROVIDER="Other",
                    RCLONE_CONFIG_XSC_ENDPOINT=gateway.front.url, RCLONE_CONFIG_XSC_REGION="us-east-1",
                    RCLONE_CONFIG_XSC_ACCESS_KEY_ID=gateway.key["access_key"],
                    RCLONE_CONFIG_XSC_SECRET_ACCESS_KEY=gateway.key["secret_key"],
                    RCLONE_CONFIG=str(tmp_path / "rclone.conf"))
    run([rclone, "mkdir", "xsc:rclone"], env)
    # Files over 5 MiB go up in 5 MiB parts (multipart), the others in one PutObject.
    run([rclone, "sync", "--s3-upload-cutoff", "5M", "--s3-chunk-size", "5M", str(tree), "xsc:rclone/tree"], env)
    run([rclone, "check", str(tree), "xsc:rclone/tree"], env)
    run([rclone, "sync", "xsc:rclone/tree", str(tmp_path / "back")], env)
    same_tree(tree, tmp_path / "back")
    (tree / "a" / "three.txt").write_bytes(b"changed")
    run([rclone, "sync", str(tree), "xsc:rclone/tree"], env)  # an overwrite
    run([rclone, "check", str(tree), "xsc:rclone/tree"], env)
    listing = run([rclone, "lsf", "-R", "xsc:rclone/tree"], env).stdout.decode().split()
    assert "c/sp" in listing and "big.bin" in listing


def test_aws_cli_cp_sync_ls(gateway, tree, tmp_path) -> None:
    aws = tool("aws", "awscli")
    env = clean_env(AWS_ACCESS_KEY_ID=gateway.key["access_key"], AWS_SECRET_ACCESS_KEY=gateway.key["secret_key"],
                    AWS_DEFAULT_REGION="us-east-1", AWS_CONFIG_FILE=str(tmp_path / "none"),
                    AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"), AWS_EC2_METADATA_DISABLED="true",
                    AWS_PAGER="", HOME=str(tmp_path))
    base = [aws, "--endpoint-url", gateway.front.url]
    run([*base, "s3", "mb", "s3://awscli"], env)
    run([*base, "s3", "cp", str(tree / "big.bin"), "s3://awscli/one/big.bin"], env)  # multipart: 8 MiB parts
    run([*base, "s3", "cp", "s3://awscli/one/big.bin", str(tmp_path / "big.bin")], env)  # ranged GETs
    assert filecmp.cmp(tree / "big.bin", tmp_path / "big.bin", shallow=False)
    run([*base, "s3", "sync", str(tree), "s3://awscli/tree"], env)
    run([*base, "s3", "sync", "s3://awscli/tree", str(tmp_path / "back")], env)
    same_tree(tree, tmp_path / "back")
    top = run([aws, "--endpoint-url", gateway.front.url, "s3", "ls", "s3://awscli/tree/"], env).stdout.decode()
    assert "PRE a/" in top and "PRE c/" in top and "big.bin" in top  # a delimited listing


def test_s3cmd_put_get_ls(gateway, tree, tmp_path) -> None:
    s3cmd = tool("s3cmd", "s3cmd")
    host = gateway.front.url.removeprefix("http://")
    config = tmp_path / "s3cfg"
    config.write_text(f"[default]\naccess_key = {gateway.key['access_key']}\nsecret_key = {gateway.key['secret_key']}\n"
                      f"host_base = {host}\nhost_bucket = {host}\nuse_https = False\nsignature_v2 = False\n"
                      f"bucket_location = us-east-1\n")
    env = clean_env(HOME=str(tmp_path))
    base = [s3cmd, "-c", str(config)]
    run([*base, "mb", "s3://s3cmd"], env)
    run([*base, "put", str(tree / "a" / "three.txt"), str(tree / "big.bin"), "s3://s3cmd/dir/"], env)
    run([*base, "get", "--force", "s3://s3cmd/dir/big.bin", str(tmp_path / "big.bin")], env)
    assert filecmp.cmp(tree / "big.bin", tmp_path / "big.bin", shallow=False)
    listed = run([*base, "ls", "s3://s3cmd/dir/"], env).stdout.decode()
    assert "s3://s3cmd/dir/big.bin" in listed and "s3://s3cmd/dir/three.txt" in listed
    assert "s3://s3cmd" in run([*base, "ls"], env).stdout.decode()
    run([*base, "del", "s3://s3cmd/dir/three.txt"], env)
    assert "three.txt" not in run([*base, "ls", "s3://s3cmd/dir/"], env).stdout.decode()
