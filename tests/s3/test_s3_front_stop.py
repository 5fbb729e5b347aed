"""`xsc s3 serve` stops as a node does (serve/stop.py), signalled as a user's Ctrl-C or systemd's SIGTERM signals it:
a PutObject under way ends and is stored, a new request on a connection already open is refused 503
ServiceUnavailable (naming the front, which stops, not its node), it listens no more, and it exits 0; a second signal
cuts what is under way short, the reconcile before it listens among it (the next start finishes that); a reconcile
under way once it listens is cut short as the stop begins, not waited for."""

from __future__ import annotations

import hashlib
import http.client
import os
import signal
import socket

import pytest

from xsc.buckets.marks import FileMarks

from tests.support.s3 import Gateway, half_sent_put, signed_answer, signed_exchange, store_files
from tests.support.waiting import eventually

PUT = 4 * 1024 * 1024  # half of it is more than the front joins into one write to its node (remote.JOINED)
WAITING = b"stopping: waiting for 1 request in flight (S3 PUT /{tail})"


def _s3(gateway: Gateway, conn: http.client.HTTPConnection, method: str, path: str,
        body: bytes = b"") -> tuple[int, bytes]:
    return signed_exchange(conn, gateway.front.url, gateway.key, method, path, body)


def _connection(gateway: Gateway) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", gateway.front.port, timeout=60)


def _stopping(gateway: Gateway, sig: signal.Signals) -> None:
    """Signal the front, and wait until its stop says it waits for the put under way."""
    gateway.front.proc.send_signal(sig)
    eventually(lambda: WAITING in gateway.front.log.read_bytes(), "the stop to wait for the put under way", 60)


@pytest.fixture
def gateway(tmp_path):
    started = Gateway(tmp_path).start()
    yield started
    started.stop()


@pytest.mark.timeout(180)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_lets_a_put_under_way_end_and_refuses_new_requests(gateway, sig) -> None:
    kept = _connection(gateway)
    assert _s3(gateway, kept, "PUT", "/bkt")[0] == 200  # a connection kept open after a first request
    body = os.urandom(PUT)
    put = half_sent_put(gateway, "/bkt/o", PUT)

    _stopping(gateway, sig)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", gateway.front.port), timeout=5).close()  # it listens no more
    refused, error = signed_answer(kept, gateway.front.url, gateway.key, "PUT", "/bkt/during", b"during")
    assert refused.status == 503 and b"<Code>ServiceUnavailable</Code>" in error, error
    assert b"this S3 front is stopping" in error and b"node" not in error, error  # the node is not
    assert int(refused.getheader("Retry-After", "0")) > 0 and refused.getheader("Connection") == "close"
    put.send(body[PUT // 2:])  # half_sent_put sent other bytes first: the object is what it sent, checked below
    stored = put.getresponse()
    assert stored.status == 200, stored.read()
    etag = stored.getheader("ETag")
    assert gateway.front.proc.wait(60) == 0
    assert b"Traceback" not in gateway.front.log.read_bytes()

    gateway.front.start()
    again = _connection(gateway)
    status, got = _s3(gateway, again, "GET", "/bkt/o")
    assert status == 200 and len(got) == PUT and etag == f'"{hashlib.md5(got).hexdigest()}"'
    assert got[PUT // 2:] == body[PUT // 2:]
    assert _s3(gateway, again, "GET", "/bkt/during")[0] == 404  # refused, not stored


@pytest.mark.timeout(180)
def test_a_second_signal_cuts_a_put_under_way_short(gateway) -> None:
    assert _s3(gateway, _connection(gateway), "PUT", "/bkt")[0] == 200
    put = half_sent_put(gateway, "/bkt/o", PUT)
    _stopping(gateway, signal.SIGINT)
    gateway.front.proc.send_signal(signal.SIGTERM)
    assert gateway.front.proc.wait(30) == 0  # (a deadline against a hang: unforced, it would wait 30 s)
    with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError)):
        put.getresponse()  # cut short, unanswered
    log = gateway.front.log.read_bytes()
    assert b"stopping: cutting short 1 request in flight" in log and b"Traceback" not in log


@pytest.mark.timeout(180)
def test_a_second_signal_cuts_the_first_reconcile_short_and_the_next_start_finishes_it(gateway) -> None:
    gateway.front.stop()
    lost = gateway.node.data_dir.parent / "lost"
    lost.write_bytes(b"left by a write whose record never came")
    name = FileMarks.load(gateway.node.data_dir).name("bkt/lost")  # the front's file, no object refers to it
    assert gateway.node.xsc("store", "put", str(lost), "--name", name).returncode == 0
    gateway.node.send(signal.SIGSTOP)  # the node answers nothing: the front's first reconcile waits for it
    try:
        offset = gateway.front.spawn()

        def said(line: bytes) -> bool:
            return line in gateway.front.log.read_bytes()[offset:]

        eventually(lambda: said(b"reconciling the node's store"), "the front to reconcile", 60)
        gateway.front.proc.send_signal(signal.SIGINT)
        eventually(lambda: said(b"stopping once the reconcile under way ends"), "the front to say it waits", 60)
        gateway.front.proc.send_signal(signal.SIGTERM)
        assert gateway.front.proc.wait(30) == 0  # (a deadline against a hang: unforced, it waits for the node)
    finally:
        gateway.node.send(signal.SIGCONT)
    log = gateway.front.log.read_bytes()[offset:]
    assert b"the reconcile is cut short" in log and b"Traceback" not in log and b"xsc s3 serving" not in log
    assert name in {f["name"] for f in store_files(gateway.node)}

    offset = gateway.front.log.stat().st_size
    gateway.front.start()
    started = gateway.front.log.read_bytes()[offset:]
    assert b"removed 1 file(s) left by an interrupted write" in started
    assert started.count(b"removed 1 file") == 1, started  # said once, not again in the log by the reconcile itself
    assert name not in {f["name"] for f in store_files(gateway.node)}


def _unread_at(port: int) -> bool:
    """Whether bytes sent to `port` on this machine wait there unread (a request its stopped process does not read).
    (Linux: /proc's tables of TCP sockets, their receive queues.)"""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as rows:
            next(rows)
            for row in rows:
                fields = row.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01" \
                        and int(fields[4].split(":")[1], 16) > 0:
                    return True
    return False


@pytest.mark.timeout(180)
def test_a_stop_cuts_a_reconcile_under_way_short_rather_than_wait_for_the_node(tmp_path) -> None:
    gateway = Gateway(tmp_path, front_args=["--reconcile-interval", "1"]).start()
    try:
        gateway.node.send(signal.SIGSTOP)  # the node answers nothing: the front's next reconcile waits for it
        try:
            eventually(lambda: _unread_at(gateway.node.port), "the front's reconcile to wait for the node", 60)
            gateway.front.proc.send_signal(signal.SIGTERM)
            assert gateway.front.proc.wait(30) == 0  # (a deadline against a hang: unforced, it waits for the node)
        finally:
            gateway.node.send(signal.SIGCONT)
        assert b"Traceback" not in gateway.front.log.read_bytes()
    finally:
        gateway.stop()
