"""A long operation's answer read as lines of its progress (xsc.client.sync.NodeClient.request_with_progress): each
progress line told as it comes, the result returned, a problem raised as its error; a node that answers plain JSON
answered as before; a stream cut before its result is an error, never a result."""

from __future__ import annotations

import pytest

from xsc import errors
from xsc.client.sync import NodeClient

from tests.support.http_stub import QuietHandler, serving

ANSWERS = {
    "/whole": (b'{"progress": {"done": 1, "total": 2}}\n{"progress": {"done": 2, "total": 2}}\n{"result": {"ok": 1}}\n',
               "application/x-ndjson"),
    "/failed": (b'{"progress": {"done": 1, "total": 2}}\n{"problem": {"type": "urn:xsc:problem:not-enough-shares", '
                b'"code": "not-enough-shares", "status": 503, "detail": "only 3 of 6", "hint": "retry"}}\n',
                "application/x-ndjson"),
    "/cut": (b'{"progress": {"done": 1, "total": 2}}\n', "application/x-ndjson"),
    "/plain": (b'{"ok": 2}', "application/json"),
}


class _Lines(QuietHandler):
    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body, kind = ANSWERS[self.path]
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def client():
    with serving(_Lines) as url:
        yield NodeClient(url, "token")


def test_progress_lines_are_told_and_the_result_returned(client: NodeClient) -> None:
    told: list[dict] = []
    assert client.request_with_progress("POST", "/whole", told.append) == {"ok": 1}
    assert told == [{"done": 1, "total": 2}, {"done": 2, "total": 2}]


def test_a_problem_line_is_raised_as_its_error(client: NodeClient) -> None:
    with pytest.raises(errors.NotEnoughShares) as raised:
        client.request_with_progress("POST", "/failed", lambda p: None)
    assert raised.value.message == "only 3 of 6" and raised.value.hint == "retry"


def test_lines_cut_before_their_result_are_an_error(client: NodeClient) -> None:
    with pytest.raises(errors.NodeNotRunning, match="before it was done"):
        client.request_with_progress("POST", "/cut", lambda p: None)


def test_a_plain_json_answer_is_returned_as_it_is(client: NodeClient) -> None:
    assert client.request_with_progress("POST", "/plain", lambda p: None) == {"ok": 2}
