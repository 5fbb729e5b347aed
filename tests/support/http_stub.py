"""A stand-in for a node: an http.server handler answering on a free port, for client tests that need answers no
node gives (chunked streams of unknown length, cut lines of progress, answers past the client's bounds)."""

from __future__ import annotations

import contextlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator


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


def json_answer(body: Any) -> type[BaseHTTPRequestHandler]:
    """A handler answering every GET with `body` as JSON: a node's answer to a table command, say."""
    encoded = json.dumps(body).encode()

    class Answer(QuietHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(encoded)))
            self.end_headers()
            self.wfile.write(encoded)

    return Answer
