"""`xsc s3 serve` stops as a node does (serve/stop.py), signalled as a user's Ctrl-C or systemd's SIGTERM signals it:
a PutObject under way ends and is stored, a new request on a connection already open is refused 503
ServiceUnavailable (naming the front, which stops, not its node), it listens no more, and it exits 0; a second signal
cuts what is under way short."""

from __future__ import annotations

import hashlib
import http.client
import os
import signal
import socket

import pytest

from tests.support.s3 import Gateway, half_sent_put, signed_answer, signed_exchange
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
