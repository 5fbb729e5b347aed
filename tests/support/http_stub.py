"""A stand-in for a node: an http.server handler answering on a free port, for client tests that need answers no
node gives (chunked streams of unknown length, cut lines of progress, answers past the client's bounds)."""

from __future__ import annotations

import contextlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator


class QuietHandler(BaseHTTPRequestHandler):
    """Keep-alive HTTP/1.1, as a node answers, and no access log on the test's output."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """`handler` answering at the yielded http://127.0.0.1:PORT until the block ends."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
