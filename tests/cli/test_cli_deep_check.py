"""`xsc store verify --all` and `repair --all`: every file the node lists, a table of each one's state that fits 80
columns with every capability whole, `--json` the node's answer, and an exit status that says whether all are well."""

from __future__ import annotations

import asyncio
import json
import os
import threading

from xsc.node.appkeys import NODE
from xsc.storage import Capability

from tests.support.blocks import corrupt_block
from tests.support.cli import xsc

SEG = 4096
NARROW = {"COLUMNS": "80"}


def _rows(output: str, caps: dict[str, str]) -> dict[str, list[str]]:
    """Each file's lines in the table, by its name: its row, then the lines under it (its capability, its detail)."""
    rows: dict[str, list[str]] = {}
    name = None
    for line in output.splitlines()[1:]:
        if not line.startswith(" "):
            name = next((n for n in caps if line.split()[-1] == n), None)
            if name is None:  # the summary under the table
                break
        rows.setdefault(name, []).append(line)
    return rows


def test_verify_all_names_each_files_state_and_repair_all_mends_what_it_can(thread_node) -> None:
    node = thread_node(storage={"segment_size": SEG})
    caps = {name: node.xsc("store", "put", "-", "--name", name, input=os.urandom(5 * SEG)).stdout.strip()
            for name in ("whole", "flipped", "lost")}
    corrupt_block(node.node, Capability.parse(caps["flipped"]).storage_index, 2, segment=1)
    for share in (0, 1, 4):
        assert node.app[NODE].store.delete_share(Capability.parse(caps["lost"]).storage_index, share)

    checked = node.xsc("store", "verify", "--all", env=NARROW)
    assert checked.exit_code == 1, checked.output
    rows = _rows(checked.stdout, caps)
    assert {name: lines[0].split()[0] for name, lines in rows.items()} == {
        "whole": "healthy", "flipped": "damaged", "lost": "not"}, checked.stdout  # "not recoverable"
    for name, lines in rows.items():  # the capability whole, on its own line under its file
        assert lines[1].strip() == caps[name], lines
    assert all(len(line) <= 80 for line in checked.stdout.splitlines() if line.strip() not in caps.values())
    assert " ".join(checked.stdout.split()).endswith(
        "3 files: 1 healthy, 1 damaged, 1 not recoverable; `xsc store repair --all` repairs the damaged ones")

    repaired = node.xsc("store", "repair", "--all", env=NARROW)
    assert repaired.exit_code == 1, repaired.output  # one file could not be repaired: the others were
    rows = _rows(repaired.stdout, caps)
    assert rows["flipped"][0].split()[0] == "repaired", rows
    assert " ".join(rows["flipped"][1:]).split() == [caps["flipped"], "share", "2", "rebuilt"], rows
    assert rows["lost"][0].startswith("not recoverable") and "only 3 of 6 shares are intact" in " ".join(rows["lost"])

    answer = node.xsc("store", "verify", "--all", "--json")
    assert answer.exit_code == 1
    states = {f["name"]: f["state"] for f in json.loads(answer.stdout)["files"]}
    assert states == {"whole": "healthy", "flipped": "healthy", "lost": "not recoverable"}
    node.xsc("store", "rm", caps["lost"])
    assert node.xsc("store", "verify", "--all").exit_code == 0


def test_a_capability_or_all_one_or_the_other(tmp_path) -> None:
    cap = str(Capability(key=os.urandom(32), manifest_hash=os.urandom(32), size=10))
    for action in ("verify", "repair"):
        for args, said in [((), f"{action} needs the capability of a file, or --all for every file"),
                           ((cap, "--all"), f"{action} takes a capability or --all, not both")]:
            done = xsc("--data-dir", str(tmp_path), "store", action, *args)
            assert done.exit_code == 2 and done.stdout == ""  # a usage error, as a missing argument is
            assert done.stderr.splitlines() == [
                f"xsc: usage error: {said}",
                f"usage: xsc store {action} [OPTIONS] [CAP] (more: xsc store {action} --help)"], done.stderr


def test_a_run_over_every_file_asked_for_while_one_goes_is_refused_in_one_line(thread_node, monkeypatch) -> None:
    """`xsc store verify --all` while the dashboard's Repair damaged goes (the node's run, started here)."""
    node = thread_node(storage={"segment_size": SEG})
    node.xsc("store", "put", "-", "--name", "f", input=os.urandom(SEG))
    storage = node.app[NODE].storage
    begun, go_on, verify = threading.Event(), threading.Event(), storage.verify

    async def held(cap, progress=None):
        if not begun.is_set():  # the first run's verify, held until the CLI was refused
            begun.set()
            await asyncio.to_thread(go_on.wait, 60)
        return await verify(cap, progress)

    monkeypatch.setattr(storage, "verify", held)
    running = node.submit(storage.deep_check(True))
    try:
        assert begun.wait(60)
        for action in ("verify", "repair"):
            done = node.xsc("store", action, "--all")
            assert done.exit_code == 1 and done.stdout == "", done.output
            (line,) = done.stderr.splitlines()
            assert line.startswith("xsc: error: a repair of every file is running already (started "), line
            assert line.endswith("(wait for it to end, then start this run again)"), line
    finally:
        go_on.set()
    assert running.result(60)["healthy"]
