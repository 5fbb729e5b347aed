"""Two people's nodes (real processes, own data dirs): a get whose holder goes away once the file is under way says
which shares the node can no longer read and where, not only that the connection closed."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.support.nodes import start_xsc
from tests.support.people import TRUSTING, join, person, put, started  # noqa: F401 (a fixture)
from xsc.storage.remote import READ_AHEAD, READ_BATCH

SEGMENT = 64 * 1024  # A's segments: small, so that what B fetches ahead of what it sends is small in bytes


def _most_held_on_the_way() -> int:
    """The most bytes of the file that B can have fetched from A and that its user's get has not read yet, however
    long the test is held up before the kill: B's segments fetched and decoded ahead of what it sends (its share
    readers' ranges, its decode pipeline: 2 x compute threads + 2, node/services.py), the two socket buffers of its
    connection to the CLI (at most the kernel's tcp_wmem and tcp_rmem maxima), and the CLI's splice pipe and
    stdout pipe (each at most fs.pipe-max-size)."""
    def most(path: str) -> int:
        return int(Path("/proc/sys", path).read_text().split()[-1])

    segments = (READ_AHEAD + 1) * READ_BATCH + 2 * max(2, os.cpu_count() or 2) + 2
    return segments * SEGMENT + most("net/ipv4/tcp_wmem") + most("net/ipv4/tcp_rmem") + 2 * most("fs/pipe-max-size")


# More than all that can be on its way, so the get is cut at the kill however late the kill comes.
SIZE = _most_held_on_the_way() + 8 * 2**20


def test_a_get_cut_short_by_its_holder_going_away_names_the_shares_it_cannot_read(tmp_path, started) -> None:
    a, id_a = person(tmp_path, "A", started, env={**TRUSTING, "XSC_STORAGE_SEGMENT_SIZE": str(SEGMENT)})
    b, id_b = person(tmp_path, "B", started, peer=a, env=TRUSTING)
    join(a, b, [id_b])
    join(b, a, [id_a])
    done = put(a, os.urandom(SIZE))
    on_a = [s for s, node in enumerate(done["placement"]) if node == id_a]
    assert len(on_a) == 4 and done["placement"].count(id_b) == 2, done["placement"]

    # B's user reads the file to a pipe this test holds still: the get is begun, and waits, when A goes away.
    reader = start_xsc("--data-dir", str(b.data_dir), "store", "get", done["capability"], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE)
    first = reader.stdout.read(65536)
    a.kill()
    rest = reader.stdout.read()
    said = " ".join(reader.stderr.read().decode().split())
    assert reader.wait(60) == 1 and len(first) + len(rest) < SIZE, said
    assert said.startswith("xsc: error: the download stopped after "), said
    assert (f"only 2 of 6 shares can be read now (4 are needed): 4 shares ({', '.join(map(str, on_a))}) unreadable "
            f"on node {id_a}: ") in said, said
    assert said.endswith("(get it again once the nodes that hold its shares are back (`xsc health status` shows "
                         "them))"), said
