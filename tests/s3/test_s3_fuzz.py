"""Random requests against a real front and node (the long run: make fuzz-s3): every answer a success, a 501, or an
error with its S3 XML document; the front and its node stay up.  A failure prints the request: python -m
bench.s3_fuzz --seed SEED replays the run."""

from __future__ import annotations

import pytest
import requests

from bench import s3_fuzz
from tests.support.s3 import Gateway


@pytest.fixture(scope="module")
def own_gateway(tmp_path_factory):
    """A front of its own: the fuzz makes and removes buckets the package's other tests would see listed."""
    gateway = Gateway(tmp_path_factory.mktemp("s3-fuzz"), s3_fuzz.UNTHROTTLED).start()
    yield gateway
    gateway.stop()


def test_random_requests_get_answers_s3_clients_understand(own_gateway) -> None:
    g = own_gateway
    stats = s3_fuzz.fuzz(g.front.url, g.key, 1500, seed=20261126, progress=False,
                         alive=lambda: g.front.proc.poll() is None and g.node.proc.poll() is None)
    assert stats.failures == []
    assert {200, 400, 403, 404, 501} <= set(stats.statuses)  # it reached successes, refusals and the unsupported


def _answer(status: int, body: bytes) -> requests.Response:
    response = requests.Response()
    response.status_code, response._content = status, body
    return response


def test_the_check_names_a_server_error_and_an_error_without_its_document() -> None:
    case = s3_fuzz.Case("GET", "/fuzz-a/k", "", {}, b"", True)
    assert "500" in s3_fuzz.check(case, _answer(500, b"<Error><Code>InternalError</Code></Error>"))
    assert "without an S3 error document" in s3_fuzz.check(case, _answer(404, b'{"code": "not-found"}'))
    assert s3_fuzz.check(case, _answer(501, b"<Error><Code>NotImplemented</Code></Error>")) is None
    assert s3_fuzz.check(case, _answer(404, b"<Error><Code>NoSuchKey</Code></Error>")) is None
    assert s3_fuzz.check(s3_fuzz.Case("HEAD", "/fuzz-a/k", "", {}, b"", True), _answer(404, b"")) is None
