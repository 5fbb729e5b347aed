"""A streamed answer of unknown length (xsc.client.sync.Download: `ledger export`): read whole, or chunk by chunk,
every byte in order, past the size of the buffer its chunks are read into."""

from __future__ import annotations

import os

import pytest

from xsc.client.sync import CHUNK, NodeClient

from tests.support.http_stub import QuietHandler, serving

BODY = os.urandom(9 * CHUNK + 4321)  # more than two of the 4 MiB reads a chunk comes from


class _Chunked(QuietHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for start in range(0, len(BODY), 65536):
            piece = BODY[start:start + 65536]
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        self.wfile.write(b"0\r\n\r\n")


@pytest.fixture
def client():
    with serving(_Chunked) as url:
        yield NodeClient(url, "token")


def test_a_streamed_answer_read_whole_is_every_byte(client: NodeClient) -> None:
    assert client.download("/v1/ledger/export").read() == BODY


def test_a_streamed_answer_read_chunk_by_chunk_is_every_byte(client: NodeClient) -> None:
    assert b"".join(bytes(chunk) for chunk in client.download("/v1/ledger/export")) == BODY
