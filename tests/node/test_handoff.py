"""Files handed to the node over its Unix socket (xsc/serve/handoff.py): held under a token until a put takes them,
read up to the size they had when handed over, and every refusal answered."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

import pytest

from xsc import errors
from xsc.client.sync import hand_over
from xsc.serve import handoff as handoff_module
from xsc.serve.handoff import HandOff, caller_allowed

from tests.support.waiting import eventually_async

MiB = 1024 * 1024


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
async def serving(tmp_path: Path):
    """serving(**limits) -> a started HandOff on tmp_path/node.sock, its loop running; closed at teardown."""
    started: list[tuple[HandOff, asyncio.Task]] = []

    def start(**limits) -> HandOff:
        handoff = HandOff(tmp_path / "node.sock", **limits)
        handoff.start()
        started.append((handoff, asyncio.create_task(handoff.accept())))
        return handoff

    yield start
    for handoff, task in started:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        handoff.close()


async def _hand(handoff: HandOff, fd: int) -> tuple[str, int] | None:
    return await asyncio.to_thread(hand_over, str(handoff.path), fd)


async def _read_all(held) -> bytes:
    parts = []
    while chunk := await held.read(256 * 1024):
        parts.append(chunk)
    return b"".join(parts)


async def test_a_file_handed_over_is_read_whole_and_taken_once(serving, tmp_path: Path) -> None:
    handoff = serving()
    data = os.urandom(3 * MiB + 11)
    (tmp_path / "f").write_bytes(data)
    with open(tmp_path / "f", "rb") as f:
        token, size = await _hand(handoff, f.fileno())
        assert size == len(data) and handoff.status()["held"] == 1
        held = handoff.take(token)
        try:
            assert await _read_all(held) == data
            assert os.lseek(f.fileno(), 0, os.SEEK_CUR) == len(data)  # read through the caller's own open file
        finally:
            await held.close()
    assert handoff.status() == {"socket": str(tmp_path / "node.sock"), "held": 0, "taken": 1}
    with pytest.raises(errors.NotFound, match="a put took it already"):
        handoff.take(token)
    with pytest.raises(errors.NotFound, match="no file is held under that token"):
        handoff.take("never-handed-over")


async def test_a_file_is_read_up_to_its_size_when_handed_over(serving, tmp_path: Path) -> None:
    handoff = serving()
    path = tmp_path / "f"
    path.write_bytes(b"a" * (2 * MiB))
    with open(path, "rb") as f:
        grown, _ = await _hand(handoff, f.fileno())
        with open(path, "ab") as more:
            more.write(b"b" * MiB)
        held = handoff.take(grown)
        try:
            assert await _read_all(held) == b"a" * (2 * MiB)  # what came after the hand-over is not read
        finally:
            await held.close()
    with open(path, "rb") as f:
        shrunk, size = await _hand(handoff, f.fileno())
        os.truncate(path, MiB + 5)
        held = handoff.take(shrunk)
        try:
            assert size == 3 * MiB and len(await _read_all(held)) == MiB + 5  # the put says it ended early
        finally:
            await held.close()


def test_only_the_nodes_own_user_or_root_may_hand_it_files() -> None:
    assert caller_allowed(1000, 1000) and caller_allowed(0, 1000)
    assert not caller_allowed(1001, 1000) and not caller_allowed(1000, 0)


@pytest.mark.parametrize("sends", ["at once", "after the node closed"])
async def test_a_caller_of_another_user_is_refused(serving, tmp_path: Path, monkeypatch, sends: str) -> None:
    """The node refuses before reading what the caller sends: a caller whose descriptor goes out after the node has
    answered and closed (a broken pipe) still reads the refusal."""
    handoff = serving()
    monkeypatch.setattr(handoff_module, "caller_allowed", lambda uid, own: False)
    if sends == "after the node closed":
        loop, send_fds, hear = asyncio.get_running_loop(), socket.send_fds, handoff._hear
        closed = loop.create_future()

        async def hear_then_close(conn: socket.socket) -> None:
            await hear(conn)
            conn.close()
            closed.set_result(None)

        def send_late(sock, *args):
            asyncio.run_coroutine_threadsafe(asyncio.wait_for(asyncio.shield(closed), 10), loop).result()
            return send_fds(sock, *args)

        monkeypatch.setattr(handoff, "_hear", hear_then_close)
        monkeypatch.setattr(socket, "send_fds", send_late)
    (tmp_path / "f").write_bytes(b"x")
    with open(tmp_path / "f", "rb") as f, pytest.raises(errors.Forbidden, match="handed over by its own user"):
        await _hand(handoff, f.fileno())
    assert handoff.status()["held"] == 0


async def test_what_is_not_a_regular_file_open_for_reading_is_refused(serving, tmp_path: Path) -> None:
    handoff = serving()
    (tmp_path / "f").write_bytes(b"x")
    before = _open_fds()
    read_end, write_end = os.pipe()
    folder = os.open(tmp_path, os.O_RDONLY)
    written = os.open(tmp_path / "f", os.O_WRONLY)
    path_only = os.open(tmp_path / "f", os.O_PATH)
    try:
        for fd in (read_end, folder):
            with pytest.raises(errors.BadRequest, match="not a regular file"):
                await _hand(handoff, fd)
        for fd in (written, path_only):
            with pytest.raises(errors.BadRequest, match="not open for reading"):
                await _hand(handoff, fd)
    finally:
        for fd in (read_end, write_end, folder, written, path_only):
            os.close(fd)
    assert handoff.status()["held"] == 0 and _open_fds() == before  # the node's copies were closed


def _send(path: Path, fds: list[int]) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(path))
        socket.send_fds(sock, [b"put"], fds) if fds else sock.sendall(b"put")
        return sock.recv(4096)


async def test_a_caller_must_send_one_descriptor(serving, tmp_path: Path) -> None:
    handoff = serving()
    (tmp_path / "f").write_bytes(b"x")
    with open(tmp_path / "f", "rb") as f:
        for fds in ([], [f.fileno(), f.fileno()]):
            answer = await asyncio.to_thread(_send, handoff.path, fds)
            assert b'"code":"bad-request"' in answer and b"one open file at a time" in answer
    assert handoff.status()["held"] == 0


async def test_at_most_so_many_files_are_held_and_each_expires(serving, tmp_path: Path) -> None:
    handoff = serving(held_max=2, hold_seconds=0.2)
    (tmp_path / "f").write_bytes(b"x")
    before = _open_fds()
    with open(tmp_path / "f", "rb") as f:
        first, _ = await _hand(handoff, f.fileno())
        await _hand(handoff, f.fileno())
        with pytest.raises(errors.QuotaExceeded, match="holds 2 handed-over files"):
            await _hand(handoff, f.fileno())
    await eventually_async(lambda: handoff.status()["held"] == 0, "the held files to expire")
    assert _open_fds() == before  # each closed as it expired
    with pytest.raises(errors.NotFound, match="expired"):
        handoff.take(first)


async def test_its_stop_closes_what_it_holds_and_removes_its_socket(tmp_path: Path) -> None:
    path = tmp_path / "node.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))  # a socket a killed node left behind
    stale.close()
    handoff = HandOff(path)
    handoff.start()
    task = asyncio.create_task(handoff.accept())
    (tmp_path / "f").write_bytes(b"x")
    before = _open_fds()
    try:
        with open(tmp_path / "f", "rb") as f:
            token, _ = await _hand(handoff, f.fileno())
        assert oct(path.stat().st_mode & 0o777) == oct(0o600)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        handoff.close()
    assert not path.exists() and _open_fds() < before  # the held file, the listener and the reading thread's none
    with pytest.raises(errors.NotFound):
        handoff.take(token)


async def test_no_socket_where_its_path_is_too_long(tmp_path: Path) -> None:
    handoff = HandOff(tmp_path / ("x" * 120) / "node.sock")
    handoff.start()
    assert handoff.loops() == {} and handoff.status()["socket"] is None
    assert hand_over(str(handoff.path), 0) is None  # the CLI puts over HTTP
    handoff.close()
